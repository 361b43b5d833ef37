//! `{name}`: records Campaign email events as activities on the contact's timeline in
//! Dynamics 365 (an event-mapper plugin). The `[egress]` switches `send`, `open`, `click` and
//! `bounce` choose the kinds; its own setting `subject_prefix` starts each activity's subject.
//!
//! Each kind goes to its activity table of the Adobe Campaign solution (`adobe_emailopens`
//! for opens...), keyed by `activityid` = the event's id, so a re-delivered event updates its
//! activity instead of adding one; `regardingobjectid_contact` binds the activity to the
//! contact whose key (the profile's CRM ID) the event carries.

use conduit_plugin::{
    EmailEvent, EmailEventKind, EventMapper, MappedBatch, MappedBatchBuilder, Outcome,
    OutputRecord, Target, Value, settings,
};

/// The host's keys this plugin reads (the `[egress]` switches); others are ignored.
#[derive(serde::Deserialize)]
struct Switches {
    send: bool,
    open: bool,
    click: bool,
    bounce: bool,
}

/// The plugin's own settings: `[egress.settings]`, parsed strictly.
#[derive(serde::Deserialize)]
struct Own {
    /// The text each activity's subject starts with, e.g. `Campaign`.
    subject_prefix: String,
}

/// The activity entity set and its date field, per kind.
fn activity_of(kind: EmailEventKind) -> (&'static str, &'static str) {
    match kind {
        EmailEventKind::Send => ("adobe_emailsends", "adobe_datesent"),
        EmailEventKind::Open => ("adobe_emailopens", "adobe_dateopened"),
        EmailEventKind::Click => ("adobe_emailclicks", "adobe_dateclicked"),
        EmailEventKind::Bounce => ("adobe_emailbounces", "adobe_datebounced"),
    }
}

/// The configured mapping.
pub struct Plugin {
    switches: Switches,
    subject_prefix: String,
}

impl EventMapper for Plugin {
    fn configure(json: &str) -> Result<Self, String> {
        let Own { subject_prefix } = settings::own(json)?;
        Ok(Plugin {
            switches: settings::host(json)?,
            subject_prefix,
        })
    }

    fn map(&self, events: Vec<EmailEvent>) -> Result<MappedBatch, String> {
        let mut out = MappedBatchBuilder::with_capacity(events.len());
        for event in events {
            let kind = event.kind;
            let on = match kind {
                EmailEventKind::Send => self.switches.send,
                EmailEventKind::Open => self.switches.open,
                EmailEventKind::Click => self.switches.click,
                EmailEventKind::Bounce => self.switches.bounce,
            };
            if !on {
                out.push(Outcome::skip(format!(
                    "{} events are switched off",
                    kind.name()
                )));
                continue;
            }
            if event.contact_key.is_empty() {
                out.push(Outcome::reject("the event names no contact"));
                continue;
            }
            let (entity_set, date_field) = activity_of(kind);
            let target = out.target(&Target::dynamics(entity_set, "activityid"));
            let subject = format!(
                "{} {}: {}",
                self.subject_prefix,
                kind.name(),
                event.delivery_name
            );
            let mut record = OutputRecord::upsert(target, &event.id)
                .field(out.column("subject"), subject)
                .field(out.column(date_field), Value::Datetime(event.timestamp))
                // A lookup is bound through its navigation property, to a row of a table.
                .field(
                    out.column("regardingobjectid_contact"),
                    Value::Lookup {
                        table: "contact".into(),
                        id: event.contact_key,
                    },
                );
            if let (EmailEventKind::Click, Some(url)) = (kind, event.url) {
                record = record.field(out.column("adobe_trackingurl"), url);
            }
            if let (EmailEventKind::Bounce, Some(bounce)) = (kind, event.bounce) {
                record = record.field(out.column("adobe_bouncereason"), bounce.reason);
            }
            out.push(Outcome::write(record));
        }
        Ok(out.finish())
    }
}

conduit_plugin::export_event_mapper!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switched_off_kinds_are_skipped_and_events_without_a_contact_rejected() {
        let plugin = Plugin::configure(
            r#"{"send": false, "open": true, "click": true, "bounce": false,
                "settings": {"subject_prefix": "Campaign"}}"#,
        )
        .unwrap();
        let event = |kind, contact: &str| EmailEvent {
            id: "e-1".into(),
            kind,
            contact_key: contact.into(),
            campaign_id: "k".into(),
            campaign_name: "K".into(),
            delivery_id: "d".into(),
            delivery_name: "D".into(),
            timestamp: "2026-11-29T00:00:00Z".into(),
            url: Some("https://example.com/".into()),
            mirror_page_url: None,
            bounce: None,
        };
        let events = vec![
            event(EmailEventKind::Click, "c"),
            event(EmailEventKind::Send, "c"),
            event(EmailEventKind::Open, ""),
        ];
        let mapped = plugin.map(events).unwrap();
        assert_eq!(mapped.targets[0].table, "adobe_emailclicks");
        let Outcome::Write(records) = &mapped.outcomes[0] else {
            panic!("{:?}", mapped.outcomes[0])
        };
        let written: Vec<&str> = records[0]
            .fields
            .iter()
            .map(|(column, _)| mapped.columns[*column as usize].as_str())
            .collect();
        let expected = [
            "subject",
            "adobe_dateclicked",
            "regardingobjectid_contact",
            "adobe_trackingurl",
        ];
        assert_eq!(written, expected);
        assert!(matches!(mapped.outcomes[1], Outcome::Skip(_)));
        assert!(matches!(mapped.outcomes[2], Outcome::Reject(_)));
    }
}
