//! Opt-in/out: the opt-out flags of a contact and its Campaign profile, kept in step in the
//! configured direction (off, one way either way, or both ways with the documented conflict
//! rule, which the resolver plugin applies). It reads Dynamics 365's contact changes and
//! Campaign's opt-out exports, and, at the first start, what every profile holds now, so that
//! the first pass writes only where the two sides disagree.
//!
//! `conduit verify optinout --repair` adds contact keys to a durable re-resolve list (the
//! store's re-read list, under [`OPT_OUT_REREAD`]). The reader takes them before any change:
//! it reads each contact's flags from Dynamics 365 and its profile's from Campaign as they are
//! then, resolves them with the resolver and direction in force, and queues the writes in the
//! same commit that takes the keys off the list. Nothing remembered from the comparison is
//! written, so a flag changed since then keeps its new value.

use std::collections::HashMap;

use conduit_config::{Config, ConfigKey, EffectiveLimits};
use conduit_connectors::{ChangeRequest, ConnectorError};
use conduit_model::{
    ContactOptOut, Operation, OptOutValue, Outcome, Phase, System, Value, WorkflowId,
};
use conduit_store::{CursorState, DeadLetterPayload, OptOutSnapshot, ReadCommit};

use super::super::reader::{
    ReaderCore, StepError, collect, isolate, on_plugin_thread, single_outcome,
};
use super::super::services::{LoadFailed, Loaded, OptOutResolution, PluginBuild, PluginFactory};
use super::super::stage::{PrepareError, StageContext};
use super::{Ready, RemapError, Start, Workflow, load, located};

/// The source name of the opt-out contacts cursor.
const OPT_OUT_CONTACTS_SOURCE: &str = "contacts";
/// The source name of the opt-out exports cursor.
const OPT_OUT_EXPORTS_SOURCE: &str = "exports";
/// The source name of the first start's pass over Campaign's profiles.
const OPT_OUT_PROFILES_SOURCE: &str = "profiles";
/// The Campaign field holding a profile's CRM ID.
const PROFILE_KEY_FIELD: &str = "externalId";
/// The origin of the opt-out workflow's dead letters.
const OPT_OUT_ORIGIN: &str = "opt-out";
/// The owner of Opt-in/out's keys in the store's re-read list: contacts to resolve again. The
/// `/` keeps it apart from every Ingress mapping name (letters, digits, `-` and `_`).
pub(crate) const OPT_OUT_REREAD: &str = "opt-in/out";

/// The Opt-in/out workflow: its resolver and what it reads.
pub(crate) struct OptInOut {
    resolver: Option<Box<dyn OptOutResolution>>,
    /// The contacts' paired columns, when the direction reads Dynamics 365.
    contacts: Option<ChangeRequest>,
    /// Whether the direction reads Campaign's opt-out exports.
    read_exports: bool,
    /// The paired Campaign attributes, read from every profile at the first start.
    campaign_attributes: Vec<String>,
}

impl Workflow for OptInOut {
    const ID: WorkflowId = WorkflowId::OptInOut;
    type Plugin = Box<dyn OptOutResolution>;

    fn load(
        factory: &dyn PluginFactory,
        plugin: &str,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Loaded<Self::Plugin>, LoadFailed> {
        factory.opt_out_resolver(plugin, settings, limits)
    }

    fn configure(
        build: &dyn PluginBuild,
        settings: &serde_json::Value,
        limits: &EffectiveLimits,
    ) -> Result<Self::Plugin, LoadFailed> {
        build.opt_out_resolver(settings, limits)
    }

    async fn prepare(start: Start<'_>) -> Result<Ready<Self>, PrepareError> {
        let Start {
            env,
            config,
            services,
            page_size,
        } = start;
        let section = config.optinout().ok_or("optinout is not configured")?;
        let loaded = load::<Self>(env, config, section.plugin_settings())
            .await
            .map_err(|error| located(config, ConfigKey::Plugin(Self::ID), error))?;
        let active = section.direction.is_active();
        let mut columns: Vec<String> = section.pairs.iter().map(|p| p.dynamics.clone()).collect();
        columns.push("modifiedon".into());
        let contacts = active.then(|| ChangeRequest {
            table: "contact".into(),
            columns,
            page_size,
        });
        let read_exports = section.direction.reads_exports();
        if read_exports && services.opt_out_exports.is_none() {
            return Err("the opt-out direction reads Campaign's exports, but campaign.opt_out_exports is not set".into());
        }
        let campaign_attributes: Vec<String> =
            section.pairs.iter().map(|p| p.campaign.clone()).collect();
        let needed = if active && !campaign_attributes.is_empty() {
            vec![(
                System::Campaign,
                "profile".to_string(),
                campaign_attributes.clone(),
            )]
        } else {
            Vec::new()
        };
        Ok(Ready {
            workflow: OptInOut {
                resolver: Some(loaded.plugin),
                contacts,
                read_exports,
                campaign_attributes,
            },
            needed,
            plugin_fingerprint: loaded.fingerprint,
            build: loaded.build,
        })
    }

    async fn step(&mut self, core: &mut ReaderCore, ctx: &StageContext) -> Result<bool, StepError> {
        // The first start learns what Campaign holds now before it reads any change, so that
        // its first pass over the contacts reconciles both sides and writes only where they
        // disagree.
        if self.contacts.is_some() && !Self::profiles_known(core)? {
            let attributes = self.campaign_attributes.clone();
            return Self::step_profiles(core, ctx, &attributes).await;
        }
        // Contacts a repair asked to resolve again go first: an operator is waiting on them.
        if let Some(request) = self.contacts.clone()
            && self.step_rereads(core, ctx, &request).await?
        {
            return Ok(true);
        }
        let mut worked = false;
        if let Some(request) = self.contacts.clone() {
            worked |= self.step_contacts(core, ctx, &request).await?;
        }
        if self.read_exports {
            worked |= self.step_exports(core, ctx).await?;
        }
        Ok(worked)
    }

    fn remap_settings(config: &Config, _origin: &str) -> Result<serde_json::Value, RemapError> {
        let section = config
            .optinout()
            .ok_or(RemapError::NotConfigured(Self::ID))?;
        Ok(section.plugin_settings())
    }

    fn remap(
        plugin: &mut Self::Plugin,
        payload: &DeadLetterPayload,
    ) -> Result<Outcome, RemapError> {
        match payload {
            DeadLetterPayload::OptOut { contact } => {
                single_outcome(plugin.resolve(std::slice::from_ref(contact)))
                    .map_err(RemapError::Plugin)
            }
            _ => Err(RemapError::OtherWorkflow(Self::ID)),
        }
    }
}

impl OptInOut {
    /// True once Campaign's profiles were read, or when they need not be: no source of them,
    /// or a store whose contacts were read before this pass existed.
    fn profiles_known(core: &ReaderCore) -> Result<bool, StepError> {
        if core.services.profile_opt_outs.is_none() {
            return Ok(true);
        }
        if let Some(done) = core.store.cursor(core.workflow, OPT_OUT_PROFILES_SOURCE)? {
            return Ok(done.phase == Phase::Incremental);
        }
        let contacts = core.store.cursor(core.workflow, OPT_OUT_CONTACTS_SOURCE)?;
        Ok(contacts.is_some_and(|c| c.phase == Phase::Incremental))
    }

    /// One page of Campaign's profiles: their paired attributes become the known Campaign
    /// values (with no change time, so the conflict rule lets an opt-out win).
    async fn step_profiles(
        core: &mut ReaderCore,
        ctx: &StageContext,
        attributes: &[String],
    ) -> Result<bool, StepError> {
        let Some(source) = core.services.profile_opt_outs.clone() else {
            return Ok(false);
        };
        let cursor = core
            .store
            .cursor(core.workflow, OPT_OUT_PROFILES_SOURCE)?
            .and_then(|c| c.cursor);
        let page = source
            .read_profile_opt_outs(
                PROFILE_KEY_FIELD,
                attributes,
                cursor.as_deref(),
                core.pacing.page_size,
            )
            .await
            .map_err(|error| StepError::from_source("Campaign profiles", error))?;
        let mut states = Vec::with_capacity(page.profiles.len());
        for profile in page.profiles {
            let mut snapshot = core
                .store
                .opt_out_snapshot(&profile.contact_key)?
                .unwrap_or_default();
            for (attribute, value) in profile.values {
                snapshot
                    .campaign
                    .retain(|known| known.attribute != attribute);
                snapshot.campaign.push(OptOutValue {
                    attribute,
                    value,
                    changed_at: None,
                });
            }
            states.push((profile.contact_key, snapshot));
        }
        let cursor = match page.next {
            Some(next) => CursorState::new(Some(next), Phase::Initial),
            None => CursorState::new(None, Phase::Incremental),
        };
        let commit = ReadCommit {
            source: OPT_OUT_PROFILES_SOURCE.into(),
            cursor: Some(cursor),
            opt_out_states: states,
            ..ReadCommit::default()
        };
        core.commit(ctx, commit, false).await?;
        Ok(true)
    }

    /// Dynamics 365 side: every contact of the first pass is reconciled with what Campaign
    /// holds; later, a contact whose paired values did not change is not resolved again.
    async fn step_contacts(
        &mut self,
        core: &mut ReaderCore,
        ctx: &StageContext,
        request: &ChangeRequest,
    ) -> Result<bool, StepError> {
        let stored = core.store.cursor(core.workflow, OPT_OUT_CONTACTS_SOURCE)?;
        let phase = stored.as_ref().map_or(Phase::Initial, |c| c.phase);
        let cursor = stored.and_then(|c| c.cursor);
        let page = match core
            .services
            .dynamics_source
            .read_changes(request, cursor.as_deref())
            .await
        {
            Ok(page) => page,
            Err(ConnectorError::CursorExpired { .. }) => {
                core.store.set_cursor(
                    core.workflow,
                    OPT_OUT_CONTACTS_SOURCE,
                    &CursorState::new(None, Phase::Initial),
                )?;
                return Ok(true);
            }
            Err(error) => return Err(StepError::from_source(OPT_OUT_CONTACTS_SOURCE, error)),
        };
        let batch = page.batch;
        let modified_column = batch.columns.iter().position(|c| c == "modifiedon");
        let mut contacts = Vec::new();
        // States of the contacts to resolve (in `contacts` order), and of the others.
        let mut states = Vec::new();
        let mut other_states = Vec::new();
        let mut unchanged_contacts = 0u64;
        for row in &batch.rows {
            if row.op == Operation::Delete {
                continue;
            }
            let changed_at = row.modified_at.clone().or_else(|| {
                modified_column.and_then(|i| match &row.values[i] {
                    Value::Datetime(at) => Some(at.clone()),
                    _ => None,
                })
            });
            let dynamics = flags_of(&batch.columns, &row.values, changed_at.as_ref());
            let mut snapshot = core.store.opt_out_snapshot(&row.key)?.unwrap_or_default();
            let unchanged = phase == Phase::Incremental
                && !snapshot.dynamics.is_empty()
                && same_values(&snapshot.dynamics, &dynamics);
            snapshot.dynamics = dynamics.clone();
            if unchanged {
                // Another column of the contact changed: nothing new to resolve.
                unchanged_contacts += 1;
                other_states.push((row.key.clone(), snapshot));
            } else {
                contacts.push(ContactOptOut {
                    contact_key: row.key.clone(),
                    dynamics,
                    campaign: snapshot.campaign.clone(),
                });
                states.push((row.key.clone(), snapshot));
            }
        }
        let next_phase = if page.caught_up {
            Phase::Incremental
        } else {
            phase
        };
        let mut commit = ReadCommit {
            source: OPT_OUT_CONTACTS_SOURCE.into(),
            cursor: Some(CursorState::new(Some(page.cursor), next_phase)),
            read: batch.rows.len() as u64,
            skipped: unchanged_contacts,
            ..ReadCommit::default()
        };
        let rows = batch.rows.len();
        if contacts.is_empty() {
            commit.opt_out_states = other_states;
            core.commit(ctx, commit, false).await?;
        } else {
            // `resolve_into` lines the states up with the contacts it resolves.
            commit.opt_out_states = states;
            let all_failed = self
                .resolve_into(core.workflow, &mut commit, contacts)
                .await?;
            commit.opt_out_states.extend(other_states);
            core.commit(ctx, commit, all_failed).await?;
        }
        Ok(rows > 0 || !page.caught_up)
    }

    /// A page of the contacts a repair asked to resolve again: both sides read afresh by key,
    /// resolved with the rule in force, the writes queued in the commit that takes the keys
    /// off the list. False when none wait.
    async fn step_rereads(
        &mut self,
        core: &mut ReaderCore,
        ctx: &StageContext,
        request: &ChangeRequest,
    ) -> Result<bool, StepError> {
        let waiting = core
            .store
            .rereads(OPT_OUT_REREAD, request.page_size.max(1) as usize)?;
        if waiting.is_empty() {
            return Ok(false);
        }
        let keys: Vec<String> = waiting.into_iter().map(|(key, _)| key).collect();
        let batch = core
            .services
            .dynamics_source
            .read_rows(request, &keys)
            .await
            .map_err(|error| StepError::from_source(OPT_OUT_CONTACTS_SOURCE, error))?;
        // What each profile holds now; without a reader of Campaign's records, what the
        // store last learnt of it.
        let profiles: Option<HashMap<String, Vec<(String, bool)>>> =
            match core.services.campaign_records.clone() {
                Some(reader) => Some(
                    reader
                        .read_stored_keys("profile", PROFILE_KEY_FIELD, &keys)
                        .await
                        .map_err(|error| StepError::from_source("Campaign profiles", error))?
                        .into_iter()
                        .map(|record| {
                            let flags = self
                                .campaign_attributes
                                .iter()
                                .filter_map(|attribute| {
                                    let flag = record.fields.get(attribute)?.as_bool()?;
                                    Some((attribute.clone(), flag))
                                })
                                .collect();
                            (record.key, flags)
                        })
                        .collect(),
                ),
                None => None,
            };
        let modified_column = batch.columns.iter().position(|c| c == "modifiedon");
        let mut contacts = Vec::new();
        let mut states = Vec::new();
        for row in &batch.rows {
            if row.op == Operation::Delete {
                continue;
            }
            // A contact without a profile is Ingress's to create, not a flag to resolve.
            let held = match &profiles {
                Some(profiles) => match profiles.get(&row.key) {
                    Some(held) => Some(held.as_slice()),
                    None => continue,
                },
                None => None,
            };
            let changed_at = row.modified_at.clone().or_else(|| {
                modified_column.and_then(|i| match &row.values[i] {
                    Value::Datetime(at) => Some(at.clone()),
                    _ => None,
                })
            });
            let dynamics = flags_of(&batch.columns, &row.values, changed_at.as_ref());
            let mut snapshot = core.store.opt_out_snapshot(&row.key)?.unwrap_or_default();
            snapshot.dynamics = dynamics.clone();
            if let Some(held) = held {
                refresh_campaign(&mut snapshot, held);
            }
            contacts.push(ContactOptOut {
                contact_key: row.key.clone(),
                dynamics,
                campaign: snapshot.campaign.clone(),
            });
            states.push((row.key.clone(), snapshot));
        }
        let mut commit = ReadCommit {
            source: OPT_OUT_REREAD.into(),
            read: batch.rows.len() as u64,
            // Keys gone from Dynamics 365 leave the list too: nothing is left to resolve.
            rereads_done: keys
                .iter()
                .map(|key| (OPT_OUT_REREAD.to_owned(), key.clone()))
                .collect(),
            opt_out_states: states,
            ..ReadCommit::default()
        };
        let all_failed = self
            .resolve_into(core.workflow, &mut commit, contacts)
            .await?;
        core.commit(ctx, commit, all_failed).await?;
        Ok(true)
    }

    /// Campaign side: each export file's changes update Campaign's known values and are
    /// resolved against Dynamics 365's.
    async fn step_exports(
        &mut self,
        core: &mut ReaderCore,
        ctx: &StageContext,
    ) -> Result<bool, StepError> {
        let Some(exports) = core.services.opt_out_exports.clone() else {
            return Ok(false);
        };
        let cursor = core
            .store
            .cursor(core.workflow, OPT_OUT_EXPORTS_SOURCE)?
            .and_then(|c| c.cursor);
        let page = exports
            .read_next_export(cursor.as_deref())
            .await
            .map_err(|error| StepError::from_source(OPT_OUT_EXPORTS_SOURCE, error))?;
        let Some(next_cursor) = page.cursor else {
            return Ok(false);
        };
        let mut by_contact: Vec<(String, OptOutSnapshot)> = Vec::new();
        for change in &page.changes {
            let position = match by_contact
                .iter()
                .position(|(k, _)| *k == change.contact_key)
            {
                Some(position) => position,
                None => {
                    let snapshot = core
                        .store
                        .opt_out_snapshot(&change.contact_key)?
                        .unwrap_or_default();
                    by_contact.push((change.contact_key.clone(), snapshot));
                    by_contact.len() - 1
                }
            };
            let snapshot = &mut by_contact[position].1;
            snapshot
                .campaign
                .retain(|v| v.attribute != change.attribute);
            snapshot
                .sent_to_campaign
                .retain(|(attribute, _)| *attribute != change.attribute);
            snapshot.campaign.push(OptOutValue {
                attribute: change.attribute.clone(),
                value: change.value,
                changed_at: Some(change.changed_at.clone()),
            });
        }
        let contacts: Vec<ContactOptOut> = by_contact
            .iter()
            .map(|(key, snapshot)| ContactOptOut {
                contact_key: key.clone(),
                dynamics: snapshot.dynamics.clone(),
                campaign: snapshot.campaign.clone(),
            })
            .collect();
        let mut commit = ReadCommit {
            source: OPT_OUT_EXPORTS_SOURCE.into(),
            cursor: Some(CursorState::new(Some(next_cursor), Phase::Incremental)),
            read: page.changes.len() as u64,
            opt_out_states: by_contact,
            ..ReadCommit::default()
        };
        let all_failed = self
            .resolve_into(core.workflow, &mut commit, contacts)
            .await?;
        core.commit(ctx, commit, all_failed).await?;
        Ok(true)
    }

    async fn resolve_into(
        &mut self,
        workflow: WorkflowId,
        commit: &mut ReadCommit,
        contacts: Vec<ContactOptOut>,
    ) -> Result<bool, StepError> {
        // Nothing to resolve is not a plugin failing on every record.
        if contacts.is_empty() {
            return Ok(false);
        }
        let (contacts, results) = on_plugin_thread(
            &mut self.resolver,
            "resolver",
            workflow,
            contacts,
            |plugin, contacts| isolate(contacts, |items| plugin.resolve(items)),
        )
        .await?;
        let mut results = results;
        skip_campaign_values_that_agree(&mut results, &mut commit.opt_out_states);
        Ok(collect(commit, OPT_OUT_ORIGIN, results, |index| {
            DeadLetterPayload::OptOut {
                contact: contacts[index].clone(),
            }
        }))
    }
}

/// A Dynamics row's opt-out flags: each boolean column as a value changed at `changed_at`.
pub(crate) fn flags_of(
    columns: &[String],
    values: &[Value],
    changed_at: Option<&String>,
) -> Vec<OptOutValue> {
    columns
        .iter()
        .zip(values)
        .filter_map(|(column, value)| match value {
            Value::Boolean(flag) => Some(OptOutValue {
                attribute: column.clone(),
                value: *flag,
                changed_at: changed_at.cloned(),
            }),
            _ => None,
        })
        .collect()
}

/// Sets what Campaign holds to `held`, as read from the profile just now: a value the store
/// already knew keeps its change time, a different one has none (as at the first start's
/// read), and what this workflow last queued no longer stands in for what Campaign holds.
fn refresh_campaign(snapshot: &mut OptOutSnapshot, held: &[(String, bool)]) {
    for (attribute, value) in held {
        let known = snapshot
            .campaign
            .iter()
            .any(|v| v.attribute == *attribute && v.value == *value);
        if !known {
            snapshot.campaign.retain(|v| v.attribute != *attribute);
            snapshot.campaign.push(OptOutValue {
                attribute: attribute.clone(),
                value: *value,
                changed_at: None,
            });
        }
        snapshot
            .sent_to_campaign
            .retain(|(sent, _)| sent != attribute);
    }
}

/// True when two sides' readings hold the same values, whatever their change times.
fn same_values(before: &[OptOutValue], now: &[OptOutValue]) -> bool {
    before.len() == now.len()
        && now.iter().all(|value| {
            before
                .iter()
                .any(|old| old.attribute == value.attribute && old.value == value.value)
        })
}

/// Drops Campaign opt-out values that Campaign is known to hold already, and remembers what
/// is queued now, so that nothing is written where both sides agree (every write costs API
/// quota). What Campaign holds is, newest first: the value this workflow last queued, until
/// Campaign reports the attribute again; the value Campaign last reported (an export, or the
/// first start's read of every profile). A profile Campaign never reported holds no opt-out
/// (every opt-out attribute is false until someone sets it, and that reaches us through the
/// exports), so writing `false` to it is skipped too. `states` lines up with `results`, one
/// per contact.
fn skip_campaign_values_that_agree(
    results: &mut [Result<Outcome, String>],
    states: &mut [(String, OptOutSnapshot)],
) {
    for (result, (_, snapshot)) in results.iter_mut().zip(states.iter_mut()) {
        let Ok(Outcome::Write { records }) = result else {
            continue;
        };
        for record in records.iter_mut() {
            if record.target.system != System::Campaign || record.op == Operation::Delete {
                continue;
            }
            record.fields.retain(|(attribute, value)| {
                let Value::Boolean(flag) = value else {
                    return true;
                };
                let known = snapshot
                    .sent_to_campaign
                    .iter()
                    .find(|(sent, _)| sent == attribute)
                    .map(|(_, sent)| *sent)
                    .or_else(|| {
                        snapshot
                            .campaign
                            .iter()
                            .find(|reported| reported.attribute == *attribute)
                            .map(|reported| reported.value)
                    })
                    .unwrap_or(false);
                let agrees = known == *flag;
                if !agrees {
                    snapshot
                        .sent_to_campaign
                        .retain(|(sent, _)| sent != attribute);
                    snapshot.sent_to_campaign.push((attribute.clone(), *flag));
                }
                !agrees
            });
        }
        records.retain(|record| !record.fields.is_empty());
        if records.is_empty() {
            *result = Ok(Outcome::Skip {
                reason: "Campaign already holds these opt-out values".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_model::{Target, WriteRecord};

    fn campaign_flag(contact: &str, flag: bool) -> Result<Outcome, String> {
        Ok(Outcome::Write {
            records: vec![WriteRecord {
                target: Target {
                    system: System::Campaign,
                    table: "profile".into(),
                    key_field: "externalId".into(),
                },
                key: contact.into(),
                op: Operation::Update,
                fields: vec![("blackListEmail".into(), Value::Boolean(flag))],
            }],
        })
    }

    fn state(contact: &str) -> (String, OptOutSnapshot) {
        (contact.to_string(), OptOutSnapshot::default())
    }

    #[test]
    fn a_campaign_opt_out_value_already_sent_is_not_written_again() {
        let mut states = vec![state("c1")];
        let mut first = vec![campaign_flag("c1", true)];
        skip_campaign_values_that_agree(&mut first, &mut states);
        assert_eq!(
            first[0],
            campaign_flag("c1", true),
            "the first value is written"
        );

        let mut repeat = vec![campaign_flag("c1", true)];
        skip_campaign_values_that_agree(&mut repeat, &mut states);
        assert!(
            matches!(repeat[0], Ok(Outcome::Skip { .. })),
            "{:?}",
            repeat[0]
        );

        let mut changed = vec![campaign_flag("c1", false)];
        skip_campaign_values_that_agree(&mut changed, &mut states);
        assert_eq!(
            changed[0],
            campaign_flag("c1", false),
            "a new value is written"
        );
        assert_eq!(
            states[0].1.sent_to_campaign,
            vec![("blackListEmail".to_string(), false)]
        );
    }

    #[test]
    fn values_campaign_reported_or_never_set_are_not_written() {
        let reported = |flag: bool| OptOutSnapshot {
            campaign: vec![OptOutValue {
                attribute: "blackListEmail".into(),
                value: flag,
                changed_at: None,
            }],
            ..OptOutSnapshot::default()
        };
        let mut states = vec![("c1".to_string(), reported(true))];
        let mut results = vec![campaign_flag("c1", true)];
        skip_campaign_values_that_agree(&mut results, &mut states);
        assert!(
            matches!(results[0], Ok(Outcome::Skip { .. })),
            "{:?}",
            results[0]
        );

        let mut states = vec![("c1".to_string(), reported(true))];
        let mut results = vec![campaign_flag("c1", false)];
        skip_campaign_values_that_agree(&mut results, &mut states);
        assert_eq!(
            results[0],
            campaign_flag("c1", false),
            "a disagreement is written"
        );

        let mut states = vec![state("c2")];
        let mut results = vec![campaign_flag("c2", false)];
        skip_campaign_values_that_agree(&mut results, &mut states);
        assert!(
            matches!(results[0], Ok(Outcome::Skip { .. })),
            "a profile never reported holds no opt-out: {:?}",
            results[0]
        );
    }

    #[test]
    fn a_fresh_campaign_reading_replaces_what_was_known_and_sent() {
        let known = |flag: bool, at: Option<&str>| OptOutValue {
            attribute: "blackListEmail".into(),
            value: flag,
            changed_at: at.map(str::to_owned),
        };
        let mut snapshot = OptOutSnapshot {
            campaign: vec![known(true, Some("2026-01-01T00:00:00Z"))],
            sent_to_campaign: vec![("blackListEmail".into(), true)],
            ..OptOutSnapshot::default()
        };
        // The same value: its change time is kept, the queued value no longer stands in.
        refresh_campaign(&mut snapshot, &[("blackListEmail".into(), true)]);
        assert_eq!(
            snapshot.campaign,
            vec![known(true, Some("2026-01-01T00:00:00Z"))]
        );
        assert!(snapshot.sent_to_campaign.is_empty());
        // A value changed behind Conduit's back replaces it, with no change time.
        snapshot.sent_to_campaign = vec![("blackListEmail".into(), true)];
        refresh_campaign(&mut snapshot, &[("blackListEmail".into(), false)]);
        assert_eq!(snapshot.campaign, vec![known(false, None)]);
        assert!(snapshot.sent_to_campaign.is_empty());
        // So a resolution writing `true` again is not skipped as already sent.
        let mut states = vec![("c1".to_string(), snapshot)];
        let mut results = vec![campaign_flag("c1", true)];
        skip_campaign_values_that_agree(&mut results, &mut states);
        assert_eq!(results[0], campaign_flag("c1", true));
    }

    #[test]
    fn change_times_do_not_make_values_differ() {
        let value = |flag: bool, at: &str| OptOutValue {
            attribute: "donotbulkemail".into(),
            value: flag,
            changed_at: Some(at.into()),
        };
        assert!(same_values(&[value(true, "a")], &[value(true, "b")]));
        assert!(!same_values(&[value(true, "a")], &[value(false, "a")]));
        assert!(!same_values(&[], &[value(false, "a")]));
    }

    #[test]
    fn sent_values_are_per_contact_and_dynamics_writes_are_untouched() {
        let mut states = vec![state("c1"), state("c2")];
        let mut results = vec![campaign_flag("c1", true), campaign_flag("c2", true)];
        skip_campaign_values_that_agree(&mut results, &mut states);
        let mut results = vec![campaign_flag("c1", true), campaign_flag("c2", false)];
        skip_campaign_values_that_agree(&mut results, &mut states);
        assert!(matches!(results[0], Ok(Outcome::Skip { .. })));
        assert_eq!(results[1], campaign_flag("c2", false));

        let dynamics = Ok(Outcome::Write {
            records: vec![WriteRecord {
                target: Target {
                    system: System::Dynamics,
                    table: "contacts".into(),
                    key_field: "contactid".into(),
                },
                key: "c1".into(),
                op: Operation::Update,
                fields: vec![("donotbulkemail".into(), Value::Boolean(true))],
            }],
        });
        let mut results = vec![dynamics.clone()];
        skip_campaign_values_that_agree(&mut results, &mut states);
        assert_eq!(results[0], dynamics);
    }
}
