//! `builtin:opt-out`: decides which opt-out flags to write to which side (Opt-in/out), in one
//! of the product's directions. Bidirectional conflicts follow the product's rule: Campaign's
//! value wins when its attribute changed after the Dynamics 365 record; otherwise an opt-out
//! (true) on either side wins.
//!
//! The logic here is plain Rust (tested natively); `guest` is the wit-bindgen glue compiled
//! only for Wasm.

use std::collections::HashSet;

use conduit_plugin::{
    ContactOptOut, MappedBatch, MappedBatchBuilder, Operation, OptOutValue, Outcome, OutputRecord,
    System, Target, Value, datetime,
};
use serde::Deserialize;

#[cfg(target_arch = "wasm32")]
mod guest;

/// The Campaign opt-out attributes the product lets a pair use ("No longer contact by ..."
/// and CCPA), by their REST names.
pub const CAMPAIGN_ATTRIBUTES: [&str; 8] = [
    "blackList",
    "blackListEmail",
    "blackListFax",
    "blackListMobile",
    "blackListPhone",
    "blackListPostalMail",
    "blackListPushnotification",
    "ccpaOptOut",
];

/// Which way opt-outs flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Nothing moves.
    Disabled,
    /// Dynamics 365 values are copied to Campaign.
    DynamicsToCampaign,
    /// Campaign values are copied to Dynamics 365.
    CampaignToDynamics,
    /// Both ways, with the conflict rule.
    Bidirectional,
}

/// One Dynamics 365 boolean paired with one Campaign opt-out attribute.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    /// The contact's boolean field, e.g. `donotbulkemail`.
    pub dynamics: String,
    /// The profile's attribute, e.g. `blackListEmail`.
    pub campaign: String,
}

/// The Opt-in/out workflow's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Which way opt-outs flow.
    pub direction: Direction,
    /// The attribute pairs.
    #[serde(default)]
    pub pairs: Vec<Pair>,
    /// The plugin's own settings table (`settings` in the config): this plugin takes none, so
    /// any key there is reported.
    #[serde(default)]
    pub settings: conduit_plugin::settings::NoSettings,
}

/// A configured resolver.
#[derive(Debug, Clone)]
pub struct Resolver {
    settings: Settings,
}

/// One side's value of one attribute: `None` when that side did not report it.
type Known<'a> = Option<&'a OptOutValue>;

impl Resolver {
    /// Validates the settings JSON; the error names the offending setting.
    pub fn configure(settings_json: &str) -> Result<Resolver, String> {
        let settings: Settings = conduit_plugin::settings::parse(settings_json)?;
        if settings.direction != Direction::Disabled && settings.pairs.is_empty() {
            return Err(
                "invalid setting `pairs`: at least one pair is needed unless direction is `disabled`"
                    .to_owned(),
            );
        }
        let mut dynamics_seen = HashSet::new();
        let mut campaign_seen = HashSet::new();
        for (index, pair) in settings.pairs.iter().enumerate() {
            if pair.dynamics.trim().is_empty() {
                return Err(format!(
                    "invalid setting `pairs[{index}].dynamics`: must not be empty"
                ));
            }
            if !CAMPAIGN_ATTRIBUTES.contains(&pair.campaign.as_str()) {
                return Err(format!(
                    "invalid setting `pairs[{index}].campaign`: `{}` is not a Campaign opt-out attribute; expected one of {}",
                    pair.campaign,
                    CAMPAIGN_ATTRIBUTES.join(", ")
                ));
            }
            if !dynamics_seen.insert(pair.dynamics.as_str()) {
                return Err(format!(
                    "invalid setting `pairs[{index}].dynamics`: `{}` is paired twice",
                    pair.dynamics
                ));
            }
            if !campaign_seen.insert(pair.campaign.as_str()) {
                return Err(format!(
                    "invalid setting `pairs[{index}].campaign`: `{}` is paired twice",
                    pair.campaign
                ));
            }
        }
        Ok(Resolver { settings })
    }

    /// Resolves one batch of contacts: one outcome per contact.
    pub fn resolve(&self, contacts: Vec<ContactOptOut>) -> MappedBatch {
        let mut builder = MappedBatchBuilder::with_capacity(contacts.len());
        let dynamics = builder.target(&Target {
            system: System::Dynamics,
            table: "contacts".to_owned(),
            key_field: "contactid".to_owned(),
        });
        let campaign = builder.target(&Target {
            system: System::Campaign,
            table: "profile".to_owned(),
            key_field: "externalId".to_owned(),
        });
        for contact in contacts {
            let outcome = self.resolve_contact(&mut builder, [dynamics, campaign], contact);
            builder.push(outcome);
        }
        builder.finish()
    }

    fn resolve_contact(
        &self,
        builder: &mut MappedBatchBuilder,
        [dynamics_target, campaign_target]: [u32; 2],
        contact: ContactOptOut,
    ) -> Outcome {
        if self.settings.direction == Direction::Disabled {
            return Outcome::Skip("opt-out synchronization is disabled".to_owned());
        }
        if contact.contact_key.is_empty() {
            return Outcome::Reject("the contact has an empty key".to_owned());
        }
        let mut to_dynamics = Vec::new();
        let mut to_campaign = Vec::new();
        for pair in &self.settings.pairs {
            let dynamics = find(&contact.dynamics, &pair.dynamics);
            let campaign = find(&contact.campaign, &pair.campaign);
            let resolved = match self.decide(dynamics, campaign) {
                Ok(Some(resolved)) => resolved,
                Ok(None) => continue,
                Err(reason) => {
                    return Outcome::Reject(format!(
                        "{} / {}: {reason}",
                        pair.dynamics, pair.campaign
                    ));
                }
            };
            let writes_dynamics = self.settings.direction != Direction::DynamicsToCampaign;
            let writes_campaign = self.settings.direction != Direction::CampaignToDynamics;
            if writes_dynamics && dynamics.map(|v| v.value) != Some(resolved) {
                to_dynamics.push((builder.column(&pair.dynamics), Value::Boolean(resolved)));
            }
            if writes_campaign && campaign.map(|v| v.value) != Some(resolved) {
                to_campaign.push((builder.column(&pair.campaign), Value::Boolean(resolved)));
            }
        }
        if to_dynamics.is_empty() && to_campaign.is_empty() {
            return Outcome::Skip("opt-out values already agree".to_owned());
        }
        let mut records = Vec::with_capacity(2);
        // Opt-out writes are updates: a flag must never create a contact or profile.
        for (target, fields) in [
            (dynamics_target, to_dynamics),
            (campaign_target, to_campaign),
        ] {
            if !fields.is_empty() {
                records.push(OutputRecord {
                    target,
                    key: contact.contact_key.clone(),
                    op: Operation::Update,
                    fields,
                });
            }
        }
        Outcome::Write(records)
    }

    /// The value both sides should hold, or `None` when nothing is known to copy.
    fn decide(&self, dynamics: Known<'_>, campaign: Known<'_>) -> Result<Option<bool>, String> {
        Ok(match self.settings.direction {
            Direction::Disabled => None,
            Direction::DynamicsToCampaign => dynamics.map(|v| v.value),
            Direction::CampaignToDynamics => campaign.map(|v| v.value),
            Direction::Bidirectional => match (dynamics, campaign) {
                (None, None) => None,
                (Some(known), None) | (None, Some(known)) => Some(known.value),
                (Some(d), Some(c)) => {
                    if campaign_is_newer(d, c)? {
                        Some(c.value)
                    } else {
                        Some(d.value || c.value)
                    }
                }
            },
        })
    }
}

/// The value of attribute `name` on one side, when that side reported it.
fn find<'a>(side: &'a [OptOutValue], name: &str) -> Known<'a> {
    side.iter().find(|value| value.attribute == name)
}

/// True when Campaign's attribute changed strictly after the Dynamics 365 record; an unknown
/// Campaign time is never newer, and a known one beats an unknown Dynamics time.
fn campaign_is_newer(dynamics: &OptOutValue, campaign: &OptOutValue) -> Result<bool, String> {
    let instant = |value: &OptOutValue, side: &str| {
        value
            .changed_at
            .as_deref()
            .map(datetime::parse)
            .transpose()
            .map_err(|error| format!("{side} changed-at {error}"))
    };
    Ok(
        match (
            instant(dynamics, "Dynamics 365")?,
            instant(campaign, "Campaign")?,
        ) {
            (Some(d), Some(c)) => c > d,
            (None, Some(_)) => true,
            (_, None) => false,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(attribute: &str, value: bool, at: &str) -> OptOutValue {
        OptOutValue {
            attribute: attribute.into(),
            value,
            changed_at: Some(at.into()),
        }
    }

    #[test]
    fn bidirectional_equal_times_let_opt_out_win_on_the_side_that_differs() {
        let resolver = Resolver::configure(
            r#"{"direction": "bidirectional", "pairs": [{"dynamics": "donotbulkemail", "campaign": "blackListEmail"}]}"#,
        )
        .unwrap();
        let mapped = resolver.resolve(vec![ContactOptOut {
            contact_key: "c1".into(),
            dynamics: vec![value("donotbulkemail", false, "2026-01-01T00:00:00Z")],
            campaign: vec![value("blackListEmail", true, "2026-01-01T00:00:00Z")],
        }]);
        let Outcome::Write(records) = &mapped.outcomes[0] else {
            panic!("{:?}", mapped.outcomes)
        };
        assert_eq!(records.len(), 1);
        assert_eq!(
            mapped.targets[records[0].target as usize].system,
            System::Dynamics
        );
        assert_eq!(records[0].op, Operation::Update);
        assert_eq!(records[0].fields[0].1, Value::Boolean(true));
    }

    #[test]
    fn unknown_campaign_attribute_is_refused_by_name() {
        let error = Resolver::configure(
            r#"{"direction": "bidirectional", "pairs": [{"dynamics": "donotemail", "campaign": "noEmail"}]}"#,
        )
        .unwrap_err();
        assert!(error.contains("pairs[0].campaign"), "{error}");
        assert!(error.contains("noEmail"), "{error}");
    }
}
