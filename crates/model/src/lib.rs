//! The data model the host's stages pass between each other: source records, email events,
//! opt-out states, plugin outcomes and queued writes; and the closed lists both the config and
//! the plugin host read: the plugin worlds, the builtin plugins ([`BUILTINS`]) and the Campaign
//! opt-out attributes ([`OPT_OUT_ATTRIBUTES`]).
//!
//! These mirror the WIT types in `wit/conduit-plugin.wit` (the plugin runtime converts between
//! the two) but know nothing of Wasm, HTTP or redb.

use serde::{Deserialize, Serialize};

/// One field value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "kebab-case")]
pub enum Value {
    /// No value.
    Null,
    /// A two-options field.
    Boolean(bool),
    /// A whole number.
    Integer(i64),
    /// A decimal, double or money value.
    Decimal(f64),
    /// A string or memo.
    Text(String),
    /// A date or date-time as RFC 3339 text.
    Datetime(String),
    /// A picklist choice with its label when known.
    Picklist {
        /// The technical option value.
        value: i64,
        /// The display label.
        label: Option<String>,
    },
    /// A unique identifier.
    Guid(String),
    /// A reference to a row of another table.
    Lookup {
        /// The referenced table's logical name.
        table: String,
        /// The referenced row's key.
        id: String,
    },
}

/// Create/update, update only, or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// Create, or update when it exists.
    Upsert,
    /// Update only when it exists; never create.
    Update,
    /// Delete.
    Delete,
}

/// One source record; `values[i]` belongs to the batch's `columns[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The record's primary key at the source.
    pub key: String,
    /// What happened to it.
    pub op: Operation,
    /// One value per batch column.
    pub values: Vec<Value>,
    /// When the record last changed at the source.
    pub modified_at: Option<String>,
}

/// A page of source records of one table sharing one column list.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RecordBatch {
    /// The source table's logical name.
    pub table: String,
    /// The column names the rows' values line up with.
    pub columns: Vec<String>,
    /// The records in source order.
    pub rows: Vec<Row>,
}

/// Which pass over the source a batch belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The first full load.
    Initial,
    /// Changes since the previous read.
    Incremental,
    /// An operator-requested full re-read.
    Replay,
}

impl Phase {
    /// The name used in the API, stored state and the CLI (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Initial => "initial",
            Phase::Incremental => "incremental",
            Phase::Replay => "replay",
        }
    }
}

/// The two systems Conduit connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    /// Microsoft Dynamics 365 (Dataverse).
    Dynamics,
    /// Adobe Campaign Standard.
    Campaign,
}

/// Where a write goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    /// The receiving system.
    pub system: System,
    /// The destination table (Campaign resource or Dataverse entity set).
    pub table: String,
    /// The destination field holding the key.
    pub key_field: String,
}

/// One write for a destination, self-contained so that it can sit in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteRecord {
    /// Where it goes.
    pub target: Target,
    /// The value of the target's key field.
    pub key: String,
    /// Upsert or delete.
    pub op: Operation,
    /// The fields to set, by destination field name.
    pub fields: Vec<(String, Value)>,
}

/// The decision for one plugin input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Write these records.
    Write {
        /// The writes, in order.
        records: Vec<WriteRecord>,
    },
    /// Deliberately not propagated.
    Skip {
        /// Why.
        reason: String,
    },
    /// Cannot be mapped: goes to the dead letters.
    Reject {
        /// Why.
        reason: String,
    },
}

/// The kind of an email event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmailEventKind {
    /// Sent.
    Send,
    /// Opened.
    Open,
    /// A link was clicked.
    Click,
    /// Bounced.
    Bounce,
}

/// Why an email bounced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BounceDetail {
    /// True for a hard bounce.
    pub hard: bool,
    /// Campaign's reason text.
    pub reason: String,
}

/// One email event from Campaign's event journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailEvent {
    /// The event's unique id (GUID).
    pub id: String,
    /// What happened.
    pub kind: EmailEventKind,
    /// The contact's key (`contactid`, the profile's CRM ID).
    pub contact_key: String,
    /// The campaign's id.
    pub campaign_id: String,
    /// The campaign's name.
    pub campaign_name: String,
    /// The delivery's id.
    pub delivery_id: String,
    /// The delivery's name.
    pub delivery_name: String,
    /// When it happened (RFC 3339).
    pub timestamp: String,
    /// The clicked URL.
    pub url: Option<String>,
    /// The email's mirror page URL.
    pub mirror_page_url: Option<String>,
    /// Bounce details.
    pub bounce: Option<BounceDetail>,
}

/// One opt-out attribute's value on one side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOutValue {
    /// The attribute name.
    pub attribute: String,
    /// True when opted out.
    pub value: bool,
    /// When it last changed on its side (RFC 3339).
    pub changed_at: Option<String>,
}

/// Both sides' opt-out states of one contact.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContactOptOut {
    /// The `contactid` (the profile's CRM ID).
    pub contact_key: String,
    /// Dynamics 365 attributes (record-level change times).
    pub dynamics: Vec<OptOutValue>,
    /// Campaign attributes (attribute-level change times).
    pub campaign: Vec<OptOutValue>,
}

/// The three workflows a host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowId {
    /// Dynamics 365 to Campaign: contacts and custom entities.
    Ingress,
    /// Campaign to Dynamics 365: email events.
    Egress,
    /// Opt-in/out flags, in the configured direction.
    OptInOut,
}

impl WorkflowId {
    /// All workflows, in display order.
    pub const ALL: [WorkflowId; 3] = [
        WorkflowId::Ingress,
        WorkflowId::Egress,
        WorkflowId::OptInOut,
    ];

    /// The short name used in config sections, the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowId::Ingress => "ingress",
            WorkflowId::Egress => "egress",
            WorkflowId::OptInOut => "optinout",
        }
    }

    /// The name the Workflows page shows.
    pub fn display_name(self) -> &'static str {
        match self {
            WorkflowId::Ingress => "Microsoft Dynamics 365 to Campaign",
            WorkflowId::Egress => "Campaign to Microsoft Dynamics 365",
            WorkflowId::OptInOut => "Opt In/Out",
        }
    }
}

impl std::fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WorkflowId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ingress" => Ok(WorkflowId::Ingress),
            "egress" => Ok(WorkflowId::Egress),
            "optinout" | "opt-in-out" | "optin-out" => Ok(WorkflowId::OptInOut),
            other => Err(format!(
                "unknown workflow '{other}': expected ingress, egress or optinout"
            )),
        }
    }
}

impl WorkflowId {
    /// The plugin world this workflow's plugin must implement.
    pub fn world(self) -> World {
        match self {
            WorkflowId::Ingress => World::RecordMapper,
            WorkflowId::Egress => World::EventMapper,
            WorkflowId::OptInOut => World::OptOutResolver,
        }
    }
}

/// The capability a plugin implements: one world of `wit/conduit-plugin.wit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    /// Maps Dynamics 365 rows to Campaign records (Ingress).
    RecordMapper,
    /// Maps Campaign email events to Dynamics 365 activities (Egress).
    EventMapper,
    /// Resolves opt-out flags between the two systems (Opt-in/out).
    OptOutResolver,
}

impl World {
    /// Every world, in contract order.
    pub const ALL: [World; 3] = [
        World::RecordMapper,
        World::EventMapper,
        World::OptOutResolver,
    ];

    /// The world's name in the WIT package.
    pub fn name(self) -> &'static str {
        match self {
            World::RecordMapper => "record-mapper",
            World::EventMapper => "event-mapper",
            World::OptOutResolver => "opt-out-resolver",
        }
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for World {
    type Err = String;

    fn from_str(text: &str) -> Result<World, String> {
        World::ALL
            .into_iter()
            .find(|world| world.name() == text)
            .ok_or_else(|| {
                format!(
                    "unknown plugin world `{text}`; expected record-mapper, event-mapper or opt-out-resolver"
                )
            })
    }
}

/// A reference plugin compiled into the binary and named `builtin:<name>` in a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Builtin {
    /// The name after `builtin:`, e.g. `table-mapper`.
    pub name: &'static str,
    /// The world it implements.
    pub world: World,
}

impl Builtin {
    /// The reference a config writes for it, e.g. `builtin:table-mapper`.
    pub fn reference(self) -> String {
        format!("{BUILTIN_PREFIX}{}", self.name)
    }
}

/// The prefix of a builtin plugin's reference.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// The builtin plugins: the one table the config validator and the plugin host read (the
/// plugin host pairs each name with its component bytes).
pub const BUILTINS: [Builtin; 3] = [
    Builtin {
        name: "table-mapper",
        world: World::RecordMapper,
    },
    Builtin {
        name: "email-events",
        world: World::EventMapper,
    },
    Builtin {
        name: "opt-out",
        world: World::OptOutResolver,
    },
];

/// The builtin named `name` (without the `builtin:` prefix), if there is one.
pub fn builtin(name: &str) -> Option<Builtin> {
    BUILTINS.into_iter().find(|builtin| builtin.name == name)
}

/// The builtins as a config writes them, for messages: `builtin:table-mapper, ...`.
pub fn builtin_references() -> String {
    BUILTINS.map(Builtin::reference).join(", ")
}

/// The Campaign profile attributes an opt-out pair may use ("No longer contact by ..." and
/// CCPA), by their REST names. `plugins/opt-out` (built for Wasm, outside this workspace)
/// keeps a copy; `crates/plugin-host/tests/plugin_builtins.rs` checks that it accepts each.
pub const OPT_OUT_ATTRIBUTES: [&str; 8] = [
    "blackList",
    "blackListEmail",
    "blackListFax",
    "blackListMobile",
    "blackListPhone",
    "blackListPostalMail",
    "blackListPushnotification",
    "ccpaOptOut",
];

/// The plugin a workflow uses when its section names none: the builtin of its world.
pub fn default_builtin(workflow: WorkflowId) -> Builtin {
    match workflow {
        WorkflowId::Ingress => BUILTINS[0],
        WorkflowId::Egress => BUILTINS[1],
        WorkflowId::OptInOut => BUILTINS[2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_workflow_defaults_to_the_one_builtin_of_its_world() {
        for workflow in WorkflowId::ALL {
            let default = default_builtin(workflow);
            assert_eq!(default.world, workflow.world(), "{workflow}");
            let of_world = BUILTINS.iter().filter(|b| b.world == workflow.world());
            assert_eq!(of_world.count(), 1, "{workflow}");
            assert_eq!(builtin(default.name), Some(default));
        }
        assert_eq!(
            builtin_references(),
            "builtin:table-mapper, builtin:email-events, builtin:opt-out"
        );
        for world in World::ALL {
            assert_eq!(world.name().parse::<World>(), Ok(world));
        }
    }
}
