//! `{name}`: keeps opt-out flags in step between Dynamics 365 contacts and Campaign profiles
//! (an opt-out-resolver plugin). The `[optinout]` keys `direction` and `pairs` say what is
//! copied which way; its own setting `key_field` names the Campaign profile field holding the
//! contact's key (the CRM ID, `externalId` unless a custom identification key is used).
//!
//! Every direction is handled: `disabled` moves nothing, `dynamics-to-campaign` and
//! `campaign-to-dynamics` copy one side's value to the other, and `bidirectional` applies the
//! conflict rule: Campaign's value wins when its attribute changed after the contact, else an
//! opt-out (true) on either side wins. Only a side whose value differs is written, as an
//! update (an opt-out never creates a contact or a profile).

use conduit_plugin::{
    ContactOptOut, MappedBatch, MappedBatchBuilder, OptOutResolver, OptOutValue, Outcome,
    OutputRecord, Target, datetime, settings,
};

/// The host's keys this plugin reads (from `[optinout]`); others are ignored.
#[derive(serde::Deserialize)]
struct Section {
    /// `disabled`, `dynamics-to-campaign`, `campaign-to-dynamics` or `bidirectional`.
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
    /// The Campaign profile field holding the contact's key, e.g. `externalId`.
    key_field: String,
}

/// Which sides a direction writes.
#[derive(Clone, Copy, PartialEq)]
enum Direction {
    Disabled,
    DynamicsToCampaign,
    CampaignToDynamics,
    Bidirectional,
}

/// The configured resolver.
pub struct Plugin {
    direction: Direction,
    pairs: Vec<Pair>,
    key_field: String,
}

impl OptOutResolver for Plugin {
    fn configure(json: &str) -> Result<Self, String> {
        let Own { key_field } = settings::own(json)?;
        let section: Section = settings::host(json)?;
        let direction = match section.direction.as_str() {
            "disabled" => Direction::Disabled,
            "dynamics-to-campaign" => Direction::DynamicsToCampaign,
            "campaign-to-dynamics" => Direction::CampaignToDynamics,
            "bidirectional" => Direction::Bidirectional,
            other => return Err(format!("unknown direction `{other}`")),
        };
        Ok(Plugin {
            direction,
            pairs: section.pairs,
            key_field,
        })
    }

    fn resolve(&self, contacts: Vec<ContactOptOut>) -> Result<MappedBatch, String> {
        let mut out = MappedBatchBuilder::with_capacity(contacts.len());
        let to_dynamics = out.target(&Target::dynamics("contacts", "contactid"));
        let to_campaign = out.target(&Target::campaign("profile", &self.key_field));
        for contact in &contacts {
            if self.direction == Direction::Disabled {
                out.push(Outcome::skip("opt-out synchronization is disabled"));
                continue;
            }
            if contact.contact_key.is_empty() {
                out.push(Outcome::reject("the contact has no key"));
                continue;
            }
            let mut dynamics = OutputRecord::update(to_dynamics, &contact.contact_key);
            let mut campaign = OutputRecord::update(to_campaign, &contact.contact_key);
            let mut failed = None;
            for pair in &self.pairs {
                let d = contact
                    .dynamics
                    .iter()
                    .find(|v| v.attribute == pair.dynamics);
                let c = contact
                    .campaign
                    .iter()
                    .find(|v| v.attribute == pair.campaign);
                let wanted = match self.wanted(d, c) {
                    Ok(Some(wanted)) => wanted,
                    Ok(None) => continue,
                    Err(error) => {
                        failed = Some(format!("{} / {}: {error}", pair.dynamics, pair.campaign));
                        break;
                    }
                };
                if self.direction != Direction::DynamicsToCampaign
                    && d.map(|v| v.value) != Some(wanted)
                {
                    dynamics = dynamics.field(out.column(&pair.dynamics), wanted);
                }
                if self.direction != Direction::CampaignToDynamics
                    && c.map(|v| v.value) != Some(wanted)
                {
                    campaign = campaign.field(out.column(&pair.campaign), wanted);
                }
            }
            let records: Vec<OutputRecord> = [dynamics, campaign]
                .into_iter()
                .filter(|record| !record.fields.is_empty())
                .collect();
            out.push(match failed {
                Some(reason) => Outcome::reject(reason),
                None if records.is_empty() => Outcome::skip("already equal"),
                None => Outcome::Write(records),
            });
        }
        Ok(out.finish())
    }
}

impl Plugin {
    /// The value both sides should hold, or `None` when there is nothing to copy.
    fn wanted(
        &self,
        dynamics: Option<&OptOutValue>,
        campaign: Option<&OptOutValue>,
    ) -> Result<Option<bool>, String> {
        Ok(match (self.direction, dynamics, campaign) {
            (Direction::Disabled, ..) => None,
            (Direction::DynamicsToCampaign, d, _) => d.map(|v| v.value),
            (Direction::CampaignToDynamics, _, c) => c.map(|v| v.value),
            (Direction::Bidirectional, Some(d), Some(c)) => {
                if campaign_is_newer(d, c)? {
                    Some(c.value)
                } else {
                    Some(d.value || c.value)
                }
            }
            (Direction::Bidirectional, d, c) => d.or(c).map(|v| v.value),
        })
    }
}

/// True when Campaign's attribute changed strictly after the contact; an unknown Campaign
/// time is never newer, and a known one beats an unknown contact time.
fn campaign_is_newer(dynamics: &OptOutValue, campaign: &OptOutValue) -> Result<bool, String> {
    let at = |value: &OptOutValue| {
        value
            .changed_at
            .as_deref()
            .map(datetime::parse)
            .transpose()
            .map_err(|error| error.to_string())
    };
    Ok(match (at(dynamics)?, at(campaign)?) {
        (Some(d), Some(c)) => c > d,
        (None, Some(_)) => true,
        (_, None) => false,
    })
}

conduit_plugin::export_opt_out_resolver!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(direction: &str) -> Plugin {
        Plugin::configure(&format!(
            r#"{{"direction": "{direction}",
                "pairs": [{{"dynamics": "donotbulkemail", "campaign": "blackListEmail"}}],
                "settings": {{"key_field": "externalId"}}}}"#
        ))
        .unwrap()
    }

    fn contact(dynamics: (bool, &str), campaign: (bool, &str)) -> ContactOptOut {
        let value = |attribute: &str, (value, at): (bool, &str)| OptOutValue {
            attribute: attribute.into(),
            value,
            changed_at: Some(at.into()),
        };
        ContactOptOut {
            contact_key: "c-1".into(),
            dynamics: vec![value("donotbulkemail", dynamics)],
            campaign: vec![value("blackListEmail", campaign)],
        }
    }

    /// The (system, field, value) each side gets, in order.
    fn writes(plugin: &Plugin, contact: ContactOptOut) -> Vec<(String, String, bool)> {
        let mapped = plugin.resolve(vec![contact]).unwrap();
        let Outcome::Write(records) = &mapped.outcomes[0] else {
            return Vec::new();
        };
        let mut writes = Vec::new();
        for record in records {
            let table = &mapped.targets[record.target as usize].table;
            for (column, value) in &record.fields {
                let field = &mapped.columns[*column as usize];
                let value = value.as_bool().unwrap();
                writes.push((table.clone(), field.clone(), value));
            }
        }
        writes
    }

    #[test]
    fn each_direction_writes_only_its_side_and_bidirectional_follows_the_rule() {
        let (early, late) = ("2026-11-29T05:00:00Z", "2026-11-29T06:00:00Z");
        let both = |d, c| contact((d, early), (c, late));
        let to_campaign = vec![("profile".into(), "blackListEmail".into(), true)];
        let to_dynamics = |value| vec![("contacts".into(), "donotbulkemail".into(), value)];
        assert_eq!(
            writes(&plugin("dynamics-to-campaign"), both(true, false)),
            to_campaign
        );
        assert_eq!(
            writes(&plugin("campaign-to-dynamics"), both(false, true)),
            to_dynamics(true)
        );
        // Campaign changed later: its value wins, even an opt-in.
        assert_eq!(
            writes(&plugin("bidirectional"), both(true, false)),
            to_dynamics(false)
        );
        // Same time: an opt-out wins.
        let tie = contact((false, early), (true, early));
        assert_eq!(writes(&plugin("bidirectional"), tie), to_dynamics(true));
        assert!(writes(&plugin("disabled"), both(true, false)).is_empty());
    }
}
