//! `{name}`: copies Dynamics 365 opt-outs to Campaign profiles (an opt-out-resolver plugin).
//! The `[optinout]` keys `direction` and `pairs` say what is copied; its own setting
//! `key_field` names the Campaign profile field holding the contact's key.

use conduit_plugin::{
    ContactOptOut, MappedBatch, MappedBatchBuilder, OptOutResolver, Outcome, OutputRecord,
    Target, settings,
};

/// The host's keys this plugin reads (from `[optinout]`); others are ignored.
#[derive(serde::Deserialize)]
struct Section {
    /// `dynamics-to-campaign`, `campaign-to-dynamics`, `bidirectional` or `disabled`.
    direction: String,
    /// The attribute pairs.
    pairs: Vec<Pair>,
}

#[derive(serde::Deserialize)]
struct Pair {
    dynamics: String,
    campaign: String,
}

/// The plugin's own settings: `[optinout.settings]`, parsed strictly.
#[derive(serde::Deserialize)]
struct Own {
    /// The Campaign profile field holding the contact's key, e.g. `crmId`.
    key_field: String,
}

/// The configured resolver.
pub struct Plugin {
    section: Section,
    target: Target,
}

impl OptOutResolver for Plugin {
    fn configure(json: &str) -> Result<Self, String> {
        let Own { key_field } = settings::own(json)?;
        Ok(Plugin {
            section: settings::host(json)?,
            target: Target::campaign("profile", &key_field),
        })
    }

    fn resolve(&self, contacts: Vec<ContactOptOut>) -> Result<MappedBatch, String> {
        let mut out = MappedBatchBuilder::with_capacity(contacts.len());
        let target = out.target(&self.target);
        for contact in &contacts {
            if self.section.direction != "dynamics-to-campaign" {
                out.push(Outcome::skip(format!(
                    "direction {} is not handled by this plugin",
                    self.section.direction
                )));
                continue;
            }
            let mut record = OutputRecord::update(target, &contact.contact_key);
            let mut changed = false;
            for pair in &self.section.pairs {
                let wanted = contact.dynamics.iter().find(|v| v.attribute == pair.dynamics);
                let current = contact.campaign.iter().find(|v| v.attribute == pair.campaign);
                if let Some(wanted) = wanted
                    && current.map(|c| c.value) != Some(wanted.value)
                {
                    record = record.field(out.column(&pair.campaign), wanted.value);
                    changed = true;
                }
            }
            out.push(if changed {
                Outcome::write(record)
            } else {
                Outcome::skip("already equal")
            });
        }
        Ok(out.finish())
    }
}

conduit_plugin::export_opt_out_resolver!(Plugin);

#[cfg(test)]
mod tests {
    use conduit_plugin::OptOutValue;

    use super::*;

    #[test]
    fn equal_sides_are_skipped() {
        let plugin = Plugin::configure(
            r#"{"direction": "dynamics-to-campaign",
                "pairs": [{"dynamics": "donotbulkemail", "campaign": "blackListEmail"}],
                "settings": {"key_field": "crmId"}}"#,
        )
        .unwrap();
        let value = |attribute: &str| OptOutValue {
            attribute: attribute.into(),
            value: true,
            changed_at: None,
        };
        let contact = ContactOptOut {
            contact_key: "c-1".into(),
            dynamics: vec![value("donotbulkemail")],
            campaign: vec![value("blackListEmail")],
        };
        let mapped = plugin.resolve(vec![contact]).unwrap();
        assert!(matches!(mapped.outcomes[0], Outcome::Skip(_)));
    }
}
