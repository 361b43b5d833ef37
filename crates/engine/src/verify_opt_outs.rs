//! `conduit verify optinout`: reads every contact's paired opt-out columns from Dynamics 365
//! and every profile's paired attributes from Campaign, and for each contact whose two sides
//! disagree asks the opt-out resolver in force (the configured direction and conflict rule)
//! which side it would write: a flag the rule would change is a difference, named by contact,
//! side and attribute. A contact whose write still waits in the backlog, or whose states sit
//! in a dead letter, is reported as such. Campaign's attribute change times come only with its
//! exports, so the rule is applied as at a first reconcile (no Campaign time known).
//!
//! `--repair` writes no flag itself: a blind write of a compared value could undo a change
//! made since the comparison. It adds the differing contacts' keys to the Opt-in/out re-read
//! list (durable, counted in the workflow's backlog); the reader reads both sides of each
//! again when it gets to it and resolves them with the rule in force, so the writer writes
//! what the flags are then.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use conduit_config::Config;
use conduit_connectors::ChangeRequest;
use conduit_model::{ContactOptOut, OptOutValue, Outcome, System, Value, WorkflowId, WriteRecord};

use super::reader::{isolate, on_plugin_thread};
use super::services::{OptOutResolution, PluginBuild};
use super::verify::{
    FieldDifference, KeyList, MappingCheck, SourcePages, StaleRecord, VerifyError, VerifyOptions,
    VerifyProgress, step_reason,
};
use super::workflows::opt_in_out::{OPT_OUT_REREAD, flags_of};
use super::workflows::{OptInOut, load_in_force};
use super::{EngineError, Services, Supervisor};

/// The Campaign field holding a profile's CRM ID.
const PROFILE_KEY_FIELD: &str = "externalId";

/// The name the report gives the pairs' comparison.
pub(super) const PAIRS: &str = "opt-out pairs";

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
        let attributes: Vec<String> = section.pairs.iter().map(|p| p.campaign.clone()).collect();
        let campaign = read_campaign_flags(services, &attributes, &mut |read| {
            check.destination_records = read;
            progress(VerifyProgress {
                mapping: PAIRS.into(),
                side: "destination".into(),
                records: read,
            });
        })
        .await?;
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
                disagreeing.push(contact_of(key, values, held));
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
        let (contacts, results) = resolve_contacts(&mut resolver, disagreeing).await?;
        let pending = self.store().pending_keys(id)?;
        let queued: HashSet<&str> = pending.queued.iter().map(|(_, key)| key.as_str()).collect();
        // Contacts a repair asked to resolve again are work in progress too.
        let rereads: HashSet<String> = self
            .store()
            .rereads(OPT_OUT_REREAD, usize::MAX)?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let mut stale = KeyList::default();
        let mut differing = Vec::new();
        for (contact, result) in contacts.iter().zip(results) {
            let key = contact.contact_key.as_str();
            let fields = match result {
                Ok(Outcome::Write { records }) => flag_writes(contact, &records)
                    .into_iter()
                    .map(|flag| FieldDifference {
                        field: flag.field,
                        expected: serde_json::Value::Bool(flag.want),
                        actual: serde_json::Value::Bool(flag.have),
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
            } else if queued.contains(key) || rereads.contains(key) {
                check.in_backlog.push(key);
            } else if pending.dead_lettered("opt-out", "profile", key) {
                check.dead_lettered.push(key);
            } else {
                stale.push(key);
                differing.push(key.to_owned());
                if check.stale.len() < super::verify::EXAMPLES {
                    check.stale.push(StaleRecord {
                        key: key.to_owned(),
                        fields,
                    });
                }
            }
        }
        check.stale_count = stale.count;
        if options.repair && !differing.is_empty() {
            check.repaired = self.store().request_rereads(OPT_OUT_REREAD, &differing)?;
        }
        Ok(check)
    }
}

/// One flag a resolution writes where the side holds another value.
pub(super) struct FlagWrite {
    /// `campaign ATTRIBUTE` or `dynamics COLUMN`.
    pub(super) field: String,
    /// The value written.
    pub(super) want: bool,
    /// The value the side holds (false when it reports none).
    pub(super) have: bool,
}

/// The flags `records` (a resolution of `contact`) would change, on either side, in order.
pub(super) fn flag_writes(contact: &ContactOptOut, records: &[WriteRecord]) -> Vec<FlagWrite> {
    records
        .iter()
        .flat_map(|record| {
            let (side, held) = match record.target.system {
                System::Campaign => ("campaign", &contact.campaign),
                System::Dynamics => ("dynamics", &contact.dynamics),
            };
            record.fields.iter().filter_map(move |(field, value)| {
                let Value::Boolean(want) = value else {
                    return None;
                };
                let have = held
                    .iter()
                    .find(|v| v.attribute == *field)
                    .is_some_and(|v| v.value);
                (have != *want).then(|| FlagWrite {
                    field: format!("{side} {field}"),
                    want: *want,
                    have,
                })
            })
        })
        .collect()
}

/// What every Campaign profile holds in `attributes`, by CRM ID; `read` hears the count so far.
pub(super) async fn read_campaign_flags(
    services: &Services,
    attributes: &[String],
    read: &mut (dyn FnMut(u64) + Send),
) -> Result<HashMap<String, Vec<(String, bool)>>, VerifyError> {
    let Some(profiles) = services.profile_opt_outs.clone() else {
        return Err(VerifyError::NoReader("Campaign"));
    };
    let mut campaign: HashMap<String, Vec<(String, bool)>> = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = profiles
            .read_profile_opt_outs(PROFILE_KEY_FIELD, attributes, cursor.as_deref(), 1000)
            .await
            .map_err(|source| VerifyError::Destination {
                table: "profile".into(),
                source,
            })?;
        for profile in page.profiles {
            campaign.insert(profile.contact_key, profile.values);
        }
        read(campaign.len() as u64);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(campaign),
        }
    }
}

/// Resolves `contacts` with `resolver` on a plugin thread, one contact at a time after a
/// failing batch, as the reader does.
pub(super) async fn resolve_contacts(
    resolver: &mut Option<Box<dyn OptOutResolution>>,
    contacts: Vec<ContactOptOut>,
) -> Result<(Vec<ContactOptOut>, Vec<Result<Outcome, String>>), VerifyError> {
    on_plugin_thread(
        resolver,
        "resolver",
        WorkflowId::OptInOut,
        contacts,
        |plugin, contacts| isolate(contacts, |items| plugin.resolve(items)),
    )
    .await
    .map_err(|error| VerifyError::Plugin {
        mapping: PAIRS.into(),
        reason: step_reason(error),
    })
}

/// A contact as the resolver sees it: its Dynamics 365 flags as read, and the flags its
/// profile holds (Campaign reports no change times outside its exports).
pub(super) fn contact_of(
    key: &str,
    dynamics: &[OptOutValue],
    campaign: &[(String, bool)],
) -> ContactOptOut {
    ContactOptOut {
        contact_key: key.to_owned(),
        dynamics: dynamics.to_vec(),
        campaign: campaign
            .iter()
            .map(|(attribute, value)| OptOutValue {
                attribute: attribute.clone(),
                value: *value,
                changed_at: None,
            })
            .collect(),
    }
}
