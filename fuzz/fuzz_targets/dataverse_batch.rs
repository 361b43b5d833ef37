//! Any bytes as a Dataverse `$batch` response (first line: the Content-Type header, the rest:
//! the body): the reader never panics, and whatever it reads writes back and reads again the
//! same.
#![no_main]

use conduit_connectors::dynamics365::multipart::{
    parse_http_message, split_parts, write_end, write_http_part,
};
use conduit::fuzzing::dataverse_batch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|byte| *byte == b'\n') {
        Some(newline) => (&data[..newline], &data[newline + 1..]),
        None => (data, &[][..]),
    };
    let Ok(messages) = dataverse_batch(content_type, body) else {
        return;
    };
    // Only messages the writer can frame unambiguously are expected to survive a round trip:
    // like any multipart writer (the connector uses a random UUID), it needs a boundary that
    // occurs nowhere in the content.
    let holds_boundary = |text: &str| text.contains("fuzz_boundary");
    let framable = messages.iter().all(|message| {
        !message.start_line.is_empty()
            && !message.start_line.contains(['\r', '\n'])
            && !holds_boundary(&message.start_line)
            && !message
                .headers
                .iter()
                .any(|(name, value)| holds_boundary(name) || holds_boundary(value))
            && !holds_boundary(&message.body)
            && !message.body.ends_with(['\r', '\n'])
    });
    if !framable {
        return;
    }
    let mut written = String::new();
    for message in &messages {
        write_http_part(&mut written, "fuzz_boundary", &[], message);
    }
    write_end(&mut written, "fuzz_boundary");
    let parts = split_parts(&written, "fuzz_boundary").expect("written parts split");
    assert_eq!(parts.len(), messages.len());
    for (part, message) in parts.iter().zip(&messages) {
        let again = parse_http_message(&part.content).expect("written message parses");
        assert_eq!(&again, message);
    }
});
