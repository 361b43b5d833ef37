//! `{name}`: records Campaign email events as Dynamics 365 activities (an event-mapper
//! plugin). The `[egress]` switches `send`, `open`, `click` and `bounce` choose the kinds;
//! its own setting `entity_set` names the Dataverse entity set written.

use conduit_plugin::{
    EmailEvent, EmailEventKind, EventMapper, MappedBatch, MappedBatchBuilder, Outcome,
    OutputRecord, Target, settings,
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
    /// The Dataverse entity set to write, e.g. `tasks`.
    entity_set: String,
}

/// The configured mapping.
pub struct Plugin {
    switches: Switches,
    target: Target,
}

impl EventMapper for Plugin {
    fn configure(json: &str) -> Result<Self, String> {
        let Own { entity_set } = settings::own(json)?;
        Ok(Plugin {
            switches: settings::host(json)?,
            target: Target::dynamics(&entity_set, "activityid"),
        })
    }

    fn map(&self, events: Vec<EmailEvent>) -> Result<MappedBatch, String> {
        let mut out = MappedBatchBuilder::with_capacity(events.len());
        let target = out.target(&self.target);
        let (subject, regarding) = (out.column("subject"), out.column("regardingobjectid"));
        for event in &events {
            let on = match event.kind {
                EmailEventKind::Send => self.switches.send,
                EmailEventKind::Open => self.switches.open,
                EmailEventKind::Click => self.switches.click,
                EmailEventKind::Bounce => self.switches.bounce,
            };
            out.push(if !on {
                Outcome::skip(format!("{} events are switched off", event.kind.name()))
            } else if event.contact_key.is_empty() {
                Outcome::reject("the event names no contact")
            } else {
                Outcome::write(
                    OutputRecord::upsert(target, &event.id)
                        .field(subject, format!("{} {}", event.kind.name(), event.delivery_name))
                        .field(regarding, event.contact_key.as_str()),
                )
            });
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
            r#"{"send": false, "open": true, "click": false, "bounce": false,
                "settings": {"entity_set": "tasks"}}"#,
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
            url: None,
            mirror_page_url: None,
            bounce: None,
        };
        let events = vec![event(EmailEventKind::Click, "c"), event(EmailEventKind::Open, "")];
        let mapped = plugin.map(events).unwrap();
        assert!(matches!(mapped.outcomes[0], Outcome::Skip(_)));
        assert!(matches!(mapped.outcomes[1], Outcome::Reject(_)));
    }
}
