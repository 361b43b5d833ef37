//! The on-disk cache of compiled components, so a restart does not recompile.
//!
//! An entry's file name carries sha256(component bytes) and a key of the engine (wasmtime's
//! version and its compatibility hash of every compilation setting), so an entry built under
//! other settings is never picked. Each entry also carries a CRC-32 of its payload: a torn or
//! corrupt file is deleted and recompiled, never handed to `Component::deserialize`. (A CRC
//! catches accidental damage and is several times cheaper to check than sha256 on a ~1 MB
//! artifact; against deliberate forgery no checksum stored beside the data would help.)
//!
//! The cache directory must be as trusted as the binary: a deliberately forged entry with a
//! matching checksum would run as native code.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The wasmtime release the host is pinned to (`=48.0.8` in host/Cargo.toml).
const WASMTIME_VERSION: &str = "48.0.8";

/// Marks the start of an entry: format name and version.
const MAGIC: &[u8; 8] = b"CNDTCW02";

/// Compiled components on disk for one engine configuration.
#[derive(Debug)]
pub(super) struct CompiledCache {
    dir: PathBuf,
    engine_key: String,
}

/// Feeds `Hash` output into sha256, giving a hash that is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Only the sha256 digest is used; `finish` is required by the trait.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// A short key of everything that makes compiled code incompatible: wasmtime's version and
/// the engine's compilation settings.
pub(super) fn engine_key(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    WASMTIME_VERSION.hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..12])
}

impl CompiledCache {
    /// Opens (creating when needed, private to the host's user) the cache directory for `engine`.
    pub(super) fn open(dir: &Path, engine: &Engine) -> Result<CompiledCache, String> {
        conduit_base::private::create_dir(dir).map_err(|error| {
            format!("cannot create the plugin cache {}: {error}", dir.display())
        })?;
        Ok(CompiledCache {
            dir: dir.to_path_buf(),
            engine_key: engine_key(engine),
        })
    }

    /// The entry file of a component with `fingerprint` under this engine.
    pub(super) fn entry_path(&self, fingerprint: &str) -> PathBuf {
        self.dir
            .join(format!("{fingerprint}-{}.cwasm", self.engine_key))
    }

    /// The cached component, or `None` (after deleting a bad entry) when there is no usable one.
    pub(super) fn load(&self, engine: &Engine, fingerprint: &str) -> Option<Component> {
        let path = self.entry_path(fingerprint);
        let bytes = fs::read(&path).ok()?;
        let Some(payload) = verified_payload(&bytes) else {
            tracing::warn!(entry = %path.display(), "corrupt plugin cache entry; recompiling");
            let _ = fs::remove_file(&path);
            return None;
        };
        // SAFETY: the payload was written by `store` below from `Component::serialize` and its
        // checksum matches, so it is wasmtime's own artifact; `deserialize` additionally checks
        // that it was built by this wasmtime version with compatible settings.
        match unsafe { Component::deserialize(engine, payload) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(entry = %path.display(), %error, "unusable plugin cache entry; recompiling");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Writes the compiled component; a failure only costs a recompile later, so it is logged.
    pub(super) fn store(&self, fingerprint: &str, component: &Component) {
        let path = self.entry_path(fingerprint);
        if let Err(error) = self.try_store(&path, component) {
            tracing::warn!(entry = %path.display(), %error, "cannot write the plugin cache entry");
        }
    }

    fn try_store(&self, path: &Path, component: &Component) -> Result<(), String> {
        let payload = component.serialize().map_err(|error| error.to_string())?;
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        // Private: a compiled plugin may embed mapping tables (names, values) from its author.
        let mut file =
            conduit_base::private::create_file(&temporary).map_err(|error| error.to_string())?;
        file.write_all(&entry_bytes(&payload))
            .and_then(|()| file.sync_all())
            .map_err(|error| error.to_string())?;
        // A rename is atomic: concurrent loaders see the old entry or the whole new one.
        fs::rename(&temporary, path).map_err(|error| {
            let _ = fs::remove_file(&temporary);
            error.to_string()
        })
    }
}

/// MAGIC, CRC-32 of the payload (little endian), payload.
fn entry_bytes(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(MAGIC.len() + 4 + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn verified_payload(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    let (checksum, payload) = rest.split_first_chunk::<4>()?;
    (crc32fast::hash(payload) == u32::from_le_bytes(*checksum)).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_any_flipped_byte_is_refused() {
        let entry = entry_bytes(b"compiled code");
        assert_eq!(verified_payload(&entry), Some(&b"compiled code"[..]));
        for index in 0..entry.len() {
            let mut corrupt = entry.clone();
            corrupt[index] ^= 0x40;
            assert_eq!(verified_payload(&corrupt), None, "byte {index}");
        }
        assert_eq!(verified_payload(&entry[..entry.len() - 1]), None);
    }

    #[test]
    fn engines_with_other_settings_get_other_keys() {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        let plain = Engine::new(&config).unwrap();
        config.epoch_interruption(true);
        let interruptible = Engine::new(&config).unwrap();
        assert_ne!(engine_key(&plain), engine_key(&interruptible));
        assert_eq!(
            engine_key(&plain),
            engine_key(
                &Engine::new(&{
                    let mut same = wasmtime::Config::new();
                    same.wasm_component_model(true);
                    same
                })
                .unwrap()
            )
        );
    }
}
