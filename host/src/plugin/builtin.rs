//! The reference plugins compiled into the binary (built by `host/build.rs`), served as
//! `builtin:<name>`.

use super::World;

/// The names `builtin:` accepts.
pub const BUILTIN_NAMES: [&str; 3] = ["table-mapper", "email-events", "opt-out"];

/// The component bytes and world of builtin `name`, if there is one.
pub(super) fn builtin(name: &str) -> Option<(&'static [u8], World)> {
    match name {
        "table-mapper" => Some((
            include_bytes!(env!("CONDUIT_BUILTIN_TABLE_MAPPER")),
            World::RecordMapper,
        )),
        "email-events" => Some((
            include_bytes!(env!("CONDUIT_BUILTIN_EMAIL_EVENTS")),
            World::EventMapper,
        )),
        "opt-out" => Some((
            include_bytes!(env!("CONDUIT_BUILTIN_OPT_OUT")),
            World::OptOutResolver,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_builtin_is_a_component() {
        for name in BUILTIN_NAMES {
            let (bytes, _) = builtin(name).unwrap();
            // Component binaries carry layer 1 in the version field; core modules layer 0.
            assert_eq!(&bytes[..4], b"\0asm", "{name}");
            assert_eq!(&bytes[6..8], &[1, 0], "{name}");
        }
    }
}
