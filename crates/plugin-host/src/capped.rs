//! [`CappedText`]: the error string of a plugin's result, read where it lies in the
//! instance's memory and copied only up to [`MAX_MESSAGE_BYTES`], with its full length kept.
//!
//! Why not a `String`: wasmtime copies every string of a result into the host before the host
//! sees it, and each call's copy is bounded by its hostcall fuel, which `sandbox::new_store`
//! sets to the output budget (16 MiB by default) so that strings shared by pointer cannot
//! amplify a result. A plugin's error message can be larger than that (a 60 MB dump); as a
//! `String` it would either be copied whole or, under the fuel, lost entirely. Read this way,
//! the host keeps its first few KiB and notes how long it was, and spends fuel only on what it
//! copies.
//!
//! This implements wasmtime's `ComponentType`/`Lift` by hand, which the wasmtime docs reserve
//! for its derive macros: the items used are `#[doc(hidden)]` and may change between wasmtime
//! versions, which is one reason the version is pinned exactly (`=48.0.8`). The ABI mirrors
//! wasmtime's own `string`: a pointer and a length, lifted from two flat values or eight bytes
//! of memory.

use wasmtime::ValRaw;
use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift};

use super::untrusted::{MAX_MESSAGE_BYTES, cap_bytes};

/// A plugin's `string`, kept capped: at most [`MAX_MESSAGE_BYTES`] of it, plus a note of its
/// full length when it was longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CappedText(pub(super) String);

impl CappedText {
    /// Reads the string at `pointer`/`length`, copying no more than the kept bytes.
    fn read(cx: &mut LiftContext<'_>, pointer: u32, length: u32) -> wasmtime::Result<CappedText> {
        let (pointer, length) = (pointer as usize, length as usize);
        if cx.options().string_encoding != StringEncoding::Utf8 {
            // UTF-16 plugins are rare; wasmtime's own lift (bounded by the call's fuel) and
            // then the cap is good enough for them.
            let whole = String::linear_lift_from_flat(
                cx,
                InterfaceType::String,
                &[ValRaw::u32(pointer as u32), ValRaw::u32(length as u32)],
            )?;
            return Ok(CappedText(super::untrusted::cap(&whole)));
        }
        let memory = cx.memory();
        let Some(bytes) = pointer
            .checked_add(length)
            .and_then(|end| memory.get(pointer..end))
        else {
            wasmtime::bail!("string pointer/length out of bounds of memory");
        };
        let kept = length.min(MAX_MESSAGE_BYTES);
        cx.consume_fuel(kept)?;
        Ok(CappedText(cap_bytes(bytes, MAX_MESSAGE_BYTES)))
    }
}

// SAFETY: the same lowered form and ABI as wasmtime's `str`/`String` (a pointer and a length
// as two `ValRaw`s, `POINTER_PAIR`), and the type check accepts exactly `string`.
unsafe impl ComponentType for CappedText {
    type Lower = [ValRaw; 2];

    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

    fn typecheck(ty: &InterfaceType, _types: &InstanceType<'_>) -> wasmtime::Result<()> {
        match ty {
            InterfaceType::String => Ok(()),
            _ => wasmtime::bail!("expected `string`"),
        }
    }
}

// SAFETY: lifting only reads: the pointer and length are checked against the memory before
// any byte is read.
unsafe impl Lift for CappedText {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        _ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        CappedText::read(cx, src[0].get_u32(), src[1].get_u32())
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        _ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let word = |at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|word| <[u8; 4]>::try_from(word).ok())
                .map(u32::from_le_bytes)
        };
        match (word(0), word(4)) {
            (Some(pointer), Some(length)) => CappedText::read(cx, pointer, length),
            _ => wasmtime::bail!("a string's pointer and length are cut short"),
        }
    }
}
