//! `conduit verify optinout`: reads every contact's paired opt-out columns from Dynamics 365
//! and every profile's paired attributes from Campaign, and for each contact whose two sides
//! disagree asks the opt-out resolver in force (the configured direction and conflict rule)
//! which side it would write: a flag the rule would change is a difference, named by contact,
//! side and attribute. A contact whose write still waits in the backlog, or whose states sit
//! in a dead letter, is reported as such. Campaign's attribute change times come only with its
//! exports, so the rule is applied as at a first reconcile (no Campaign time known).
//!
//! There is no `--repair` here: the workflow's own reconcile (a restart after clearing its
//! state) is the way to resolve flags again, and a blind write of a flag could undo an
//! operator's change made since the comparison.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use conduit_config::Config;
use conduit_connectors::ChangeRequest;
use conduit_model::{ContactOptOut, OptOutValue, Outcome, System, Value, WorkflowId};

use super::reader::{isolate, on_plugin_thread};
use super::services::PluginBuild;
use super::verify::{
    FieldDifference, KeyList, MappingCheck, SourcePages, StaleRecord, VerifyError, VerifyOptions,
    VerifyProgress, step_reason,
};
use super::workflows::opt_in_out::flags_of;
use super::workflows::{OptInOut, load_in_force};
use super::{EngineError, Services, Supervisor};

/// The Campaign field holding a profile's CRM ID.
const PROFILE_KEY_FIELD: &str = "externalId";

/// The name the report gives the pairs' comparison.
const PAIRS: &str = "opt-out pairs";

impl Supervisor {
    /// Compares the opt-out flags of both sides under the resolver in force.
    pub(super) async fn verify_opt_outs(
        &self,
        config: &Config,
        build: Option<Arc<dyn PluginBuild>>,
        services: &Services,
        options: &VerifyOptions,
        progress: &(dyn Fn(VerifyProgress) + Send + Sync),
    ) -> Result<MappingCheck, VerifyError> {
        let id = WorkflowId::OptInOut;
        let section = config
            .optinout()
            .ok_or(EngineError::NotConfigured(id))?
            .clone();
        let mut check = MappingCheck {
            mapping: PAIRS.into(),
            source: "contact".into(),
            destination: "profile".into(),
            ..MappingCheck::default()
        };
        if !section.direction.is_active() || section.pairs.is_empty() {
            return Ok(check);
        }
        // Dynamics 365 side: every contact's paired columns and its change time.
        let mut columns: Vec<String> = section.pairs.iter().map(|p| p.dynamics.clone()).collect();
        columns.push("modifiedon".into());
        let page_size = config.pacing(id).page_size.max(1);
        let request = ChangeRequest {
            table: "contact".into(),
            columns,
            page_size,
        };
        let mut dynamics: BTreeMap<String, Vec<OptOutValue>> = BTreeMap::new();
        let mut pages = SourcePages::new(services, request, options.sample);
        while let Some(batch) = pages.next().await? {
            for row in &batch.rows {
                let values = flags_of(&batch.columns, &row.values, row.modified_at.as_ref());
                dynamics.insert(row.key.clone(), values);
            }
            check.source_records = dynamics.len() as u64;
            progress(VerifyProgress {
                mapping: PAIRS.into(),
                side: "source".into(),
                records: check.source_records,
            });
        }
        // Campaign side: every profile's paired attributes.
        let Some(profiles) = services.profile_opt_outs.clone() else {
            return Err(VerifyError::NoReader("Campaign"));
        };
        let attributes: Vec<String> = section.pairs.iter().map(|p| p.campaign.clone()).collect();
        let mut campaign: HashMap<String, Vec<(String, bool)>> = HashMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = profiles
                .read_profile_opt_outs(PROFILE_KEY_FIELD, &attributes, cursor.as_deref(), 1000)
                .await
                .map_err(|source| VerifyError::Destination {
                    table: "profile".into(),
                    source,
                })?;
            for profile in page.profiles {
                campaign.insert(profile.contact_key, profile.values);
            }
            check.destination_records = campaign.len() as u64;
            progress(VerifyProgress {
                mapping: PAIRS.into(),
                side: "destination".into(),
                records: check.destination_records,
            });
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        // The contacts whose two sides disagree on a pair (a contact without a profile is
        // Ingress's to create, not a flag to compare).
        let mut disagreeing = Vec::new();
        for (key, values) in &dynamics {
            let Some(held) = campaign.get(key) else {
                continue;
            };
            let differs = section.pairs.iter().any(|pair| {
                let left = values
                    .iter()
                    .find(|v| v.attribute == pair.dynamics)
                    .map(|v| v.value);
                let right = held
                    .iter()
                    .find(|(attribute, _)| *attribute == pair.campaign)
                    .map(|(_, value)| *value);
                left.unwrap_or(false) != right.unwrap_or(false)
            });
            if differs {
                disagreeing.push(ContactOptOut {
                    contact_key: key.clone(),
                    dynamics: values.clone(),
                    campaign: held
                        .iter()
                        .map(|(attribute, value)| OptOutValue {
                            attribute: attribute.clone(),
                            value: *value,
                            changed_at: None,
                        })
                        .collect(),
                });
            } else {
                check.matching += 1;
            }
        }
        if disagreeing.is_empty() {
            return Ok(check);
        }
        // What the rule in force writes for each of them.
        let plugin =
            load_in_force::<OptInOut>(&self.inner.env, config, section.plugin_settings(), build)
                .await
                .map_err(|reason| VerifyError::Load {
                    mapping: PAIRS.into(),
                    reason,
                })?;
        let mut resolver = Some(plugin);
        let (contacts, results) = on_plugin_thread(
            &mut resolver,
            "resolver",
            id,
            disagreeing,
            |plugin, contacts| isolate(contacts, |items| plugin.resolve(items)),
        )
        .await
        .map_err(|error| VerifyError::Plugin {
            mapping: PAIRS.into(),
            reason: step_reason(error),
        })?;
        let pending = self.store().pending_keys(id)?;
        let queued: HashSet<&str> = pending.queued.iter().map(|(_, key)| key.as_str()).collect();
        let mut stale = KeyList::default();
        for (contact, result) in contacts.iter().zip(results) {
            let key = contact.contact_key.as_str();
            let fields = match result {
                Ok(Outcome::Write { records }) => records
                    .iter()
                    .flat_map(|record| {
                        record.fields.iter().filter_map(|(field, value)| {
                            let Value::Boolean(want) = value else {
                                return None;
                            };
                            let (side, have) = match record.target.system {
                                System::Campaign => (
                                    "campaign",
                                    contact
                                        .campaign
                                        .iter()
                                        .find(|v| v.attribute == *field)
                                        .map(|v| v.value),
                                ),
                                System::Dynamics => (
                                    "dynamics",
                                    contact
                                        .dynamics
                                        .iter()
                                        .find(|v| v.attribute == *field)
                                        .map(|v| v.value),
                                ),
                            };
                            (have.unwrap_or(false) != *want).then(|| FieldDifference {
                                field: format!("{side} {field}"),
                                expected: serde_json::Value::Bool(*want),
                                actual: serde_json::Value::Bool(have.unwrap_or(false)),
                            })
                        })
                    })
                    .collect::<Vec<_>>(),
                // The rule leaves this disagreement as it is (e.g. a one-way direction the
                // other side's value does not travel): not a difference.
                Ok(Outcome::Skip { .. }) => Vec::new(),
                Ok(Outcome::Reject { .. }) | Err(_) => {
                    if pending.dead_lettered("opt-out", "profile", key) {
                        check.dead_lettered.push(key);
                    } else {
                        check.rejected.push(key);
                    }
                    continue;
                }
            };
            if fields.is_empty() {
                check.matching += 1;
            } else if queued.contains(key) {
                check.in_backlog.push(key);
            } else if pending.dead_lettered("opt-out", "profile", key) {
                check.dead_lettered.push(key);
            } else {
                stale.push(key);
                if check.stale.len() < super::verify::EXAMPLES {
                    check.stale.push(StaleRecord {
                        key: key.to_owned(),
                        fields,
                    });
                }
            }
        }
        check.stale_count = stale.count;
        Ok(check)
    }
}
