//! `builtin:email-events`: turns Campaign email events into Dynamics 365 activities on the
//! contact's timeline (Egress). One activity per enabled event, upserted by `activityid` =
//! the event id, so a re-delivered event never creates a second activity.
//!
//! The logic here is plain Rust (tested natively); `guest` is the wit-bindgen glue compiled
//! only for Wasm.

use conduit_plugin::{
    EmailEvent, EmailEventKind, MappedBatch, MappedBatchBuilder, Operation, Outcome, OutputRecord,
    System, Target, Value, datetime,
};
use serde::Deserialize;

#[cfg(target_arch = "wasm32")]
mod guest;

/// Which event kinds are sent to Dynamics 365; each is off unless switched on, like the product.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Email sends.
    #[serde(default)]
    pub send: bool,
    /// Email opens.
    #[serde(default)]
    pub open: bool,
    /// Tracked link clicks.
    #[serde(default)]
    pub click: bool,
    /// Hard bounces.
    #[serde(default)]
    pub bounce: bool,
    /// The plugin's own settings table (`settings` in the config): this plugin takes none, so
    /// any key there is reported.
    #[serde(default)]
    pub settings: conduit_plugin::settings::NoSettings,
}

/// The activity entity set and its kind-specific date field, per event kind (the simulated
/// Adobe AppSource solution's names).
fn activity_of(kind: EmailEventKind) -> (&'static str, &'static str) {
    match kind {
        EmailEventKind::Send => ("adobe_emailsends", "adobe_datesent"),
        EmailEventKind::Open => ("adobe_emailopens", "adobe_dateopened"),
        EmailEventKind::Click => ("adobe_emailclicks", "adobe_dateclicked"),
        EmailEventKind::Bounce => ("adobe_emailbounces", "adobe_datebounced"),
    }
}

/// A configured event mapper.
#[derive(Debug, Clone, Copy)]
pub struct EventMapper {
    settings: Settings,
}

impl EventMapper {
    /// Validates the settings JSON; the error names the offending setting.
    pub fn configure(settings_json: &str) -> Result<EventMapper, String> {
        Ok(EventMapper {
            settings: conduit_plugin::settings::parse(settings_json)?,
        })
    }

    fn enabled(&self, kind: EmailEventKind) -> bool {
        match kind {
            EmailEventKind::Send => self.settings.send,
            EmailEventKind::Open => self.settings.open,
            EmailEventKind::Click => self.settings.click,
            EmailEventKind::Bounce => self.settings.bounce,
        }
    }

    /// Maps one page of events: one outcome per event.
    pub fn map(&self, events: Vec<EmailEvent>) -> MappedBatch {
        let mut builder = MappedBatchBuilder::with_capacity(events.len());
        for event in events {
            let outcome = self.map_event(&mut builder, event);
            builder.push(outcome);
        }
        builder.finish()
    }

    fn map_event(&self, builder: &mut MappedBatchBuilder, event: EmailEvent) -> Outcome {
        let kind = event.kind;
        if !self.enabled(kind) {
            return Outcome::Skip(format!("{} events are switched off", kind.name()));
        }
        if event.id.is_empty() {
            return Outcome::Reject("the event has an empty id".to_owned());
        }
        if event.contact_key.is_empty() {
            return Outcome::Reject(format!(
                "event {} has no contact key (the profile has no CRM ID)",
                event.id
            ));
        }
        if let Err(error) = datetime::parse(&event.timestamp) {
            return Outcome::Reject(format!("event {}: timestamp {error}", event.id));
        }
        let (entity_set, date_field) = activity_of(kind);
        let mut fields = Vec::with_capacity(9);
        match kind {
            EmailEventKind::Bounce => match &event.bounce {
                Some(bounce) if !bounce.hard => {
                    return Outcome::Skip(format!("soft bounce: {}", bounce.reason));
                }
                Some(bounce) => fields.push((
                    builder.column("adobe_bouncereason"),
                    Value::Text(bounce.reason.clone()),
                )),
                None => {
                    return Outcome::Reject(format!(
                        "bounce event {} carries no bounce detail",
                        event.id
                    ));
                }
            },
            EmailEventKind::Click => match &event.url {
                Some(url) => fields.push((
                    builder.column("adobe_trackingurl"),
                    Value::Text(url.clone()),
                )),
                None => {
                    return Outcome::Reject(format!(
                        "click event {} carries no clicked url",
                        event.id
                    ));
                }
            },
            EmailEventKind::Send | EmailEventKind::Open => {}
        }
        let target = builder.target(&Target {
            system: System::Dynamics,
            table: entity_set.to_owned(),
            key_field: "activityid".to_owned(),
        });
        fields.push((
            builder.column("subject"),
            Value::Text(format!(
                "Campaign Name: {}; Delivery Name: {}",
                event.campaign_name, event.delivery_name
            )),
        ));
        // The product fills its "Campaign Name" / "Delivery Name" activity fields with
        // Campaign's ids (reference section 5.2); the names are in the subject.
        fields.push((
            builder.column("adobe_campaignname"),
            Value::Text(event.campaign_id),
        ));
        fields.push((
            builder.column("adobe_deliveryname"),
            Value::Text(event.delivery_id),
        ));
        fields.push((builder.column(date_field), Value::Datetime(event.timestamp)));
        if let Some(url) = event.mirror_page_url {
            fields.push((builder.column("adobe_mirrorpageurl"), Value::Text(url)));
        }
        fields.push((
            builder.column("regardingobjectid_contact"),
            Value::Lookup {
                table: "contacts".to_owned(),
                id: event.contact_key,
            },
        ));
        Outcome::Write(vec![OutputRecord {
            target,
            key: event.id,
            op: Operation::Upsert,
            fields,
        }])
    }
}

#[cfg(test)]
mod tests {
    use conduit_plugin::BounceDetail;

    use super::*;

    fn event(kind: EmailEventKind) -> EmailEvent {
        EmailEvent {
            id: "e1".into(),
            kind,
            contact_key: "c1".into(),
            campaign_id: "CAM1".into(),
            campaign_name: "Loyalty".into(),
            delivery_id: "DM1".into(),
            delivery_name: "Welcome".into(),
            timestamp: "2026-11-29T04:57:52Z".into(),
            url: Some("https://example.com/x".into()),
            mirror_page_url: None,
            bounce: Some(BounceDetail {
                hard: true,
                reason: "User unknown".into(),
            }),
        }
    }

    #[test]
    fn its_own_settings_table_must_be_empty() {
        assert!(EventMapper::configure(r#"{"open": true, "settings": {}}"#).is_ok());
        let error =
            EventMapper::configure(r#"{"open": true, "settings": {"opne": true}}"#).unwrap_err();
        assert!(error.contains("`settings.opne`"), "{error}");
    }

    #[test]
    fn kinds_are_off_unless_switched_on() {
        let mapper = EventMapper::configure("{}").unwrap();
        let mapped = mapper.map(vec![event(EmailEventKind::Open)]);
        assert_eq!(
            mapped.outcomes,
            vec![Outcome::Skip("open events are switched off".into())]
        );
    }

    #[test]
    fn click_becomes_a_click_activity_keyed_by_event_id() {
        let mapper = EventMapper::configure(r#"{"click": true}"#).unwrap();
        let mapped = mapper.map(vec![event(EmailEventKind::Click)]);
        assert_eq!(mapped.targets[0].table, "adobe_emailclicks");
        assert_eq!(mapped.targets[0].key_field, "activityid");
        let Outcome::Write(records) = &mapped.outcomes[0] else {
            panic!("{:?}", mapped.outcomes)
        };
        assert_eq!(records[0].key, "e1");
        let names: Vec<&str> = records[0]
            .fields
            .iter()
            .map(|(i, _)| mapped.columns[*i as usize].as_str())
            .collect();
        assert!(names.contains(&"adobe_trackingurl"));
        assert!(names.contains(&"adobe_dateclicked"));
    }

    #[test]
    fn unknown_setting_is_named() {
        let error = EventMapper::configure(r#"{"opens": true}"#).unwrap_err();
        assert!(error.contains("opens"), "{error}");
    }
}
