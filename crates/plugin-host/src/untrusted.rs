//! The one capping function for plugin-provided text the host keeps or shows: error messages,
//! reject and skip reasons, trap reasons, captured stdout/stderr and log lines. Everything a
//! plugin hands back is untrusted, so text is cut here, where it enters the host, and the
//! store, the admin API, the CLI, the page and the logs only ever see the capped form.

/// The most bytes of a plugin's message the host keeps (a reason, an error, a trap message).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// `text` cut to at most [`MAX_MESSAGE_BYTES`] (plus a short note), see [`cap_to`].
pub fn cap(text: &str) -> String {
    cap_to(text, MAX_MESSAGE_BYTES)
}

/// `text` cut to at most `max_bytes` on a character boundary; a cut text ends with
/// `… [truncated, N bytes in all]` so that readers know how much there was.
pub fn cap_to(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [truncated, {} bytes in all]", &text[..end], text.len())
}

/// Bytes (e.g. captured stderr) as text of at most `max_bytes` (plus the note of
/// [`cap_to`]), decoded lossily.
pub fn cap_bytes(bytes: &[u8], max_bytes: usize) -> String {
    // Decode no more than is kept: a lossy decode of a huge buffer would copy all of it.
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max_bytes)]);
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if bytes.len() <= max_bytes && end == text.len() {
        return text.into_owned();
    }
    format!(
        "{}… [truncated, {} bytes in all]",
        &text[..end],
        bytes.len()
    )
}

/// A panic payload as capped text (panics carry a `&str` or a `String`).
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        cap(text)
    } else if let Some(text) = payload.downcast_ref::<String>() {
        cap(text)
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(cap("a reason"), "a reason");
        assert_eq!(cap_to("abc", 3), "abc");
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary_and_notes_its_length() {
        let capped = cap_to("héllo world", 2);
        assert_eq!(capped, "h… [truncated, 12 bytes in all]");
        let huge = "x".repeat(60_000_000);
        let capped = cap(&huge);
        assert!(capped.len() < MAX_MESSAGE_BYTES + 64, "{}", capped.len());
        assert!(capped.ends_with("… [truncated, 60000000 bytes in all]"));
    }

    #[test]
    fn captured_bytes_are_capped_without_decoding_all_of_them() {
        let bytes = vec![b'e'; 10_000];
        let capped = cap_bytes(&bytes, 100);
        assert!(capped.starts_with(&"e".repeat(100)));
        assert!(
            capped.ends_with("[truncated, 10000 bytes in all]"),
            "{capped}"
        );
        assert_eq!(cap_bytes(b"short", 100), "short");
    }
}
