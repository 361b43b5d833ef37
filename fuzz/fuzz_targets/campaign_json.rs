//! Any bytes as a Campaign response (the first byte picks list page, key lookup or resource
//! metadata; the rest is the body) and as date text: the readers never panic, and a date the
//! host reads writes out and reads back as the same instant.
#![no_main]

use conduit_connectors::FieldKind;
use conduit_connectors::campaign::{
    parse_campaign_instant as parse_instant, rfc3339_from_campaign, to_campaign_json,
};
use conduit::fuzzing::{campaign_list_page, campaign_lookup, campaign_resource_fields};
use conduit_model::Value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            if let Ok((content, next)) = campaign_list_page(body) {
                assert!(
                    next.is_none() || !content.is_empty(),
                    "an empty page links on"
                );
            }
        }
        1 => {
            let _ = campaign_lookup(body);
        }
        2 => {
            let _ = campaign_resource_fields(body);
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let Some(instant) = parse_instant(&text) else {
                return;
            };
            let rfc3339 = rfc3339_from_campaign(&text).expect("a readable date converts");
            let millis = instant.timestamp_millis();
            assert_eq!(
                parse_instant(&rfc3339).map(|again| again.timestamp_millis()),
                Some(millis)
            );
            let written = to_campaign_json("f", &Value::Datetime(text.to_string()), None)
                .expect("a readable date writes");
            let written = written.as_str().expect("dates are written as text");
            assert_eq!(
                parse_instant(written).map(|again| again.timestamp_millis()),
                Some(millis)
            );
            let _ = to_campaign_json(
                "f",
                &Value::Datetime(text.to_string()),
                Some(&FieldKind::Date),
            );
        }
    }
});
