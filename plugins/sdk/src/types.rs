//! Plain-Rust mirrors of the WIT types in `wit/conduit-plugin.wit`, plus the builder that
//! interns targets and destination column names into a [`MappedBatch`].

use std::collections::HashMap;

/// One field value (WIT `value`).
#[derive(Debug, Clone, PartialEq)]
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
    /// A picklist choice and its label when known.
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

/// What happened to a record, or what to do with it (WIT `operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Create, or update when it exists.
    Upsert,
    /// Update only when it exists.
    Update,
    /// Delete.
    Delete,
}

/// One source record (WIT `row`); `values[i]` belongs to the batch's `columns[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The record's primary key at the source.
    pub key: String,
    /// Created/updated or deleted.
    pub op: Operation,
    /// One value per batch column.
    pub values: Vec<Value>,
    /// When the record last changed at the source.
    pub modified_at: Option<String>,
}

/// A page of source records of one table (WIT `record-batch`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordBatch {
    /// The source table's logical name.
    pub table: String,
    /// The column names the rows' values line up with.
    pub columns: Vec<String>,
    /// The records in source order.
    pub rows: Vec<Row>,
}

/// Which pass over the source a batch belongs to (WIT `phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The first full load.
    Initial,
    /// Changes since the previous read.
    Incremental,
    /// An operator-requested full re-read.
    Replay,
}

/// The two systems a plugin can write to (WIT `system`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum System {
    /// Microsoft Dynamics 365.
    Dynamics,
    /// Adobe Campaign Standard.
    Campaign,
}

/// Where output records go (WIT `target`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The receiving system.
    pub system: System,
    /// The destination table.
    pub table: String,
    /// The destination field holding the key.
    pub key_field: String,
}

/// One write for the destination (WIT `output-record`).
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRecord {
    /// Index into the mapped batch's `targets`.
    pub target: u32,
    /// The value of the target's key field.
    pub key: String,
    /// Upsert, update or delete.
    pub op: Operation,
    /// Index into the mapped batch's `columns`, and the value.
    pub fields: Vec<(u32, Value)>,
}

/// The decision for one input (WIT `outcome`).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Write these records.
    Write(Vec<OutputRecord>),
    /// Deliberately not propagated.
    Skip(String),
    /// Cannot be mapped.
    Reject(String),
}

/// The result of one call (WIT `mapped-batch`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MappedBatch {
    /// The destinations that `OutputRecord::target` indexes.
    pub targets: Vec<Target>,
    /// The destination field names that `OutputRecord::fields` index.
    pub columns: Vec<String>,
    /// One outcome per input, in input order.
    pub outcomes: Vec<Outcome>,
}

/// The kind of a Campaign email event (WIT `email-event-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailEventKind {
    /// Sent.
    Send,
    /// Opened.
    Open,
    /// A tracked link was clicked.
    Click,
    /// Bounced.
    Bounce,
}

impl EmailEventKind {
    /// The kind's name as the settings spell it.
    pub fn name(self) -> &'static str {
        match self {
            EmailEventKind::Send => "send",
            EmailEventKind::Open => "open",
            EmailEventKind::Click => "click",
            EmailEventKind::Bounce => "bounce",
        }
    }
}

/// Why an email bounced (WIT `bounce-detail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BounceDetail {
    /// True for a hard bounce.
    pub hard: bool,
    /// Campaign's reason text.
    pub reason: String,
}

/// One email event from Campaign's event journal (WIT `email-event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailEvent {
    /// The event's unique id.
    pub id: String,
    /// What happened.
    pub kind: EmailEventKind,
    /// The Dynamics contact key.
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

/// One opt-out attribute's value on one side (WIT `opt-out-value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOutValue {
    /// The attribute name.
    pub attribute: String,
    /// True when opted out.
    pub value: bool,
    /// When it last changed on its side (RFC 3339).
    pub changed_at: Option<String>,
}

/// Both sides' opt-out states of one contact (WIT `contact-opt-out`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContactOptOut {
    /// The contact's key.
    pub contact_key: String,
    /// Dynamics 365 attributes.
    pub dynamics: Vec<OptOutValue>,
    /// Campaign attributes.
    pub campaign: Vec<OptOutValue>,
}

/// Builds a [`MappedBatch`], handing out each target and destination column index once.
#[derive(Debug, Default)]
pub struct MappedBatchBuilder {
    batch: MappedBatch,
    column_index: HashMap<String, u32>,
}

impl MappedBatchBuilder {
    /// Starts an empty batch with room for `inputs` outcomes.
    pub fn with_capacity(inputs: usize) -> Self {
        let mut builder = Self::default();
        builder.batch.outcomes.reserve(inputs);
        builder
    }

    /// Returns the index of `target`, adding it on first use.
    pub fn target(&mut self, target: &Target) -> u32 {
        if let Some(found) = self.batch.targets.iter().position(|known| known == target) {
            return index_u32(found);
        }
        self.batch.targets.push(target.clone());
        index_u32(self.batch.targets.len() - 1)
    }

    /// Returns the index of destination field `name`, adding it on first use.
    pub fn column(&mut self, name: &str) -> u32 {
        if let Some(&found) = self.column_index.get(name) {
            return found;
        }
        let index = index_u32(self.batch.columns.len());
        self.batch.columns.push(name.to_owned());
        self.column_index.insert(name.to_owned(), index);
        index
    }

    /// Appends the outcome of the next input.
    pub fn push(&mut self, outcome: Outcome) {
        self.batch.outcomes.push(outcome);
    }

    /// Returns the finished batch.
    pub fn finish(self) -> MappedBatch {
        self.batch
    }
}

/// Indexes are bounded by the host's batch limits, far below `u32::MAX`; saturate rather
/// than wrap so that an absurd batch fails host validation instead of aliasing an index.
fn index_u32(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_hands_out_each_target_and_column_once() {
        let mut builder = MappedBatchBuilder::with_capacity(2);
        let profile = Target {
            system: System::Campaign,
            table: "profile".into(),
            key_field: "externalId".into(),
        };
        assert_eq!(builder.target(&profile), 0);
        assert_eq!(builder.column("email"), 0);
        assert_eq!(builder.column("firstName"), 1);
        assert_eq!(builder.target(&profile), 0);
        assert_eq!(builder.column("email"), 0);
        let batch = builder.finish();
        assert_eq!(batch.targets.len(), 1);
        assert_eq!(batch.columns, vec!["email", "firstName"]);
    }
}
