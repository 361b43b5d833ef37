//! The simulator's email event journal: an append-only list of events with opaque positions, read
//! forward with `since` and `limit` (the shape is documented in `docs/campaign-event-journal.md`).
//! It also converts host [`EmailEvent`]s to the journal's event JSON.

use serde_json::{Value, json};

use super::wire::{datetime_text, parse_datetime};
use conduit_model::{EmailEvent, EmailEventKind};

/// The journal's events, oldest first.
#[derive(Debug, Default)]
pub struct Journal {
    events: Vec<Value>,
}

/// One read: the events with their positions, and the last position.
pub struct JournalRead {
    /// `(position, event)` pairs.
    pub entries: Vec<(String, Value)>,
    /// The position of the last entry returned.
    pub last: Option<String>,
}

impl Journal {
    /// Appends an event (any JSON: tests may append malformed ones on purpose).
    pub fn append(&mut self, event: Value) {
        self.events.push(event);
    }

    /// How many events the journal holds.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// The position just after the newest event (for `latest=true`).
    pub fn latest_position(&self) -> Option<String> {
        self.events.len().checked_sub(1).map(position)
    }

    /// Up to `limit` events after position `since` (from the oldest when `None`).
    pub fn read(&self, since: Option<&str>, limit: usize) -> Result<JournalRead, String> {
        let start = match since {
            None => 0,
            Some(text) => parse_position(text)
                .filter(|index| *index < self.events.len())
                .map(|index| index + 1)
                .ok_or_else(|| format!("Invalid journal position '{text}'."))?,
        };
        let entries: Vec<(String, Value)> = self
            .events
            .iter()
            .enumerate()
            .skip(start)
            .take(limit)
            .map(|(index, event)| (position(index), event.clone()))
            .collect();
        let last = entries.last().map(|(position, _)| position.clone());
        Ok(JournalRead { entries, last })
    }
}

fn position(index: usize) -> String {
    format!(
        "pos-{}",
        hex::encode((index as u64 ^ 0x5eed_cafe).to_be_bytes())
    )
}

fn parse_position(text: &str) -> Option<usize> {
    let bytes = hex::decode(text.strip_prefix("pos-")?).ok()?;
    let raw = u64::from_be_bytes(bytes.try_into().ok()?);
    usize::try_from(raw ^ 0x5eed_cafe).ok()
}

/// The journal JSON of a host email event (timestamp as Campaign date text).
pub fn event_json(event: &EmailEvent) -> Value {
    let kind = match event.kind {
        EmailEventKind::Send => "send",
        EmailEventKind::Open => "open",
        EmailEventKind::Click => "click",
        EmailEventKind::Bounce => "bounce",
    };
    let timestamp =
        parse_datetime(&event.timestamp).map_or_else(|| event.timestamp.clone(), datetime_text);
    let mut json = json!({
        "id": event.id,
        "kind": kind,
        "profileCrmId": event.contact_key,
        "campaignId": event.campaign_id,
        "campaignName": event.campaign_name,
        "deliveryId": event.delivery_id,
        "deliveryName": event.delivery_name,
        "timestamp": timestamp,
    });
    if let Some(url) = &event.url {
        json["url"] = json!(url);
    }
    if let Some(mirror) = &event.mirror_page_url {
        json["mirrorPageUrl"] = json!(mirror);
    }
    if let Some(bounce) = &event.bounce {
        json["bounceType"] = json!(if bounce.hard { "hard" } else { "soft" });
        json["bounceReason"] = json!(bounce.reason);
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_continue_after_the_given_position() {
        let mut journal = Journal::default();
        for index in 0..5 {
            journal.append(json!({ "n": index }));
        }
        let first = journal.read(None, 2).unwrap();
        assert_eq!(first.entries.len(), 2);
        let second = journal.read(first.last.as_deref(), 10).unwrap();
        assert_eq!(second.entries[0].1["n"], 2);
        assert_eq!(second.entries.len(), 3);
        let empty = journal.read(second.last.as_deref(), 10).unwrap();
        assert!(empty.entries.is_empty());
        assert!(journal.read(Some("garbage"), 1).is_err());
    }

    #[test]
    fn events_round_trip_through_the_connector_parser() {
        let event = EmailEvent {
            id: "e-1".into(),
            kind: EmailEventKind::Bounce,
            contact_key: "c-1".into(),
            campaign_id: "CMP1".into(),
            campaign_name: "Spring".into(),
            delivery_id: "DM1".into(),
            delivery_name: "Newsletter".into(),
            timestamp: "2026-01-02T03:04:05.006Z".into(),
            url: None,
            mirror_page_url: Some("https://m.example.com/1".into()),
            bounce: Some(conduit_model::BounceDetail {
                hard: true,
                reason: "User unknown".into(),
            }),
        };
        let json = event_json(&event);
        assert_eq!(json["timestamp"], "2026-01-02 03:04:05.006Z");
        let back = conduit_connectors::campaign::parse_journal_event(&json).unwrap();
        assert_eq!(back, event);
    }
}
