//! The reference plugins compiled into the binary (built by `crates/plugin-host/build.rs`), served as
//! `builtin:<name>`.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use conduit_model::BUILTINS;

use super::World;

/// The component bytes of each builtin, in `conduit_model::BUILTINS` order (the table that
/// names them and their worlds).
const BYTES: [&[u8]; 3] = [
    include_bytes!(env!("CONDUIT_BUILTIN_TABLE_MAPPER")),
    include_bytes!(env!("CONDUIT_BUILTIN_EMAIL_EVENTS")),
    include_bytes!(env!("CONDUIT_BUILTIN_OPT_OUT")),
];

/// A builtin component.
pub(super) struct Builtin {
    /// The component bytes.
    pub(super) bytes: &'static [u8],
    /// The world it implements.
    pub(super) world: World,
    /// sha256 hex of `bytes`, computed once per process (it is a fixed part of the binary).
    pub(super) fingerprint: &'static str,
}

/// Builtin `name`, if there is one.
pub(super) fn builtin(name: &str) -> Option<Builtin> {
    static FINGERPRINTS: [OnceLock<String>; 3] = [const { OnceLock::new() }; 3];
    let index = BUILTINS.iter().position(|known| known.name == name)?;
    let bytes = BYTES[index];
    let fingerprint = FINGERPRINTS[index].get_or_init(|| hex::encode(Sha256::digest(bytes)));
    Some(Builtin {
        bytes,
        world: BUILTINS[index].world,
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_builtin_is_a_component() {
        for listed in BUILTINS {
            let name = listed.name;
            let bytes = builtin(name).unwrap().bytes;
            // Component binaries carry layer 1 in the version field; core modules layer 0.
            assert_eq!(&bytes[..4], b"\0asm", "{name}");
            assert_eq!(&bytes[6..8], &[1, 0], "{name}");
        }
    }
}
