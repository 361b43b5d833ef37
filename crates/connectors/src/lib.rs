//! Connectors: the HTTP clients of Dynamics 365 and Campaign Standard, behind the traits the
//! workflow engine uses. Connectors know HTTP and the services' wire formats; they know nothing
//! of redb, plugins or workflows.

use std::time::Duration;

use async_trait::async_trait;

use conduit_model::{EmailEvent, RecordBatch, WriteRecord};

pub mod campaign;

/// Why a connector call failed, classified so the engine can retry or dead-letter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConnectorError {
    /// Worth retrying later: network trouble, 408, 429 or 5xx.
    #[error("{message}")]
    Transient {
        /// What went wrong, naming the service and the request.
        message: String,
        /// How long the service asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// The change-tracking token is no longer valid: a full resync is needed.
    #[error("change tracking token expired: {message}")]
    CursorExpired {
        /// The service's message.
        message: String,
    },
    /// The service refused our credentials even after a fresh token.
    #[error("authentication failed: {message}")]
    Auth {
        /// What the service said, never the secret.
        message: String,
    },
    /// An update-only write found no record to update. Another workflow may create it soon
    /// (Ingress creates the profile an opt-out flag is for), so the engine waits for it a
    /// bounded time instead of dead-lettering at once.
    #[error("{message}")]
    Missing {
        /// What was looked for and where.
        message: String,
    },
    /// Retrying will not help: a 4xx other than 408/429, or a response we cannot read.
    #[error("{message}")]
    Permanent {
        /// What went wrong, with the service's own error text.
        message: String,
    },
}

impl ConnectorError {
    /// True when the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectorError::Transient { .. })
    }
}

/// What to read from a change-tracked table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRequest {
    /// The table's logical name, e.g. `contact`.
    pub table: String,
    /// The columns to select; the primary key always comes back too.
    pub columns: Vec<String>,
    /// Rows per page (`odata.maxpagesize`, at most 5000).
    pub page_size: u32,
}

/// One page of changes and where to continue.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePage {
    /// The changed rows: upserts first, then deletes, as the source reports them.
    pub batch: RecordBatch,
    /// The cursor to store with this page: a next link while paging, a delta link at the end.
    pub cursor: String,
    /// True when `cursor` is a delta link: the reader has caught up with the source.
    pub caught_up: bool,
}

/// A source of table changes (Dataverse change tracking).
#[async_trait]
pub trait ChangeSource: Send + Sync {
    /// Reads the page after `cursor`; `None` starts a full read of the table.
    async fn read_changes(
        &self,
        request: &ChangeRequest,
        cursor: Option<&str>,
    ) -> Result<ChangePage, ConnectorError>;

    /// Reads the current rows of `keys` with the request's columns; keys no longer in the
    /// table are left out. Used to map again records whose queued writes were mapped under a
    /// mapping that has since changed.
    async fn read_rows(
        &self,
        request: &ChangeRequest,
        keys: &[String],
    ) -> Result<RecordBatch, ConnectorError>;

    /// Counts the rows of a table (the replay guard refuses huge tables).
    async fn count_rows(&self, table: &str) -> Result<u64, ConnectorError>;

    /// Describes a table's fields, to check that mapped source fields exist.
    async fn describe(&self, table: &str) -> Result<Vec<FieldInfo>, ConnectorError>;
}

/// One page of email events from Campaign's event journal.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// The events, oldest first.
    pub events: Vec<EmailEvent>,
    /// The cursor after the last event of this page (unchanged when the page is empty).
    pub cursor: Option<String>,
}

/// A source of email events.
#[async_trait]
pub trait EventSource: Send + Sync {
    /// Reads up to `limit` events after `cursor`; `None` starts at the oldest retained event.
    async fn read_events(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<EventPage, ConnectorError>;
}

/// One changed opt-out attribute from a Campaign export file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOutChange {
    /// The profile's CRM ID (`contactid`).
    pub contact_key: String,
    /// The Campaign attribute, e.g. `blackListEmail`.
    pub attribute: String,
    /// The new value.
    pub value: bool,
    /// When it changed in Campaign (RFC 3339).
    pub changed_at: String,
}

/// The changes of the next unread export file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOutExportPage {
    /// The rows of the file, in file order.
    pub changes: Vec<OptOutChange>,
    /// The cursor after this file (its name); `None` when no new file is there.
    pub cursor: Option<String>,
}

/// A source of Campaign opt-out changes (export files in a drop folder).
#[async_trait]
pub trait OptOutExportSource: Send + Sync {
    /// Reads the first export file after `cursor` (file names sort by export time).
    async fn read_next_export(
        &self,
        cursor: Option<&str>,
    ) -> Result<OptOutExportPage, ConnectorError>;
}

/// One Campaign profile's opt-out attributes, as they are now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileOptOuts {
    /// The profile's CRM ID (`contactid`).
    pub contact_key: String,
    /// The asked attributes the profile holds a boolean for.
    pub values: Vec<(String, bool)>,
}

/// One page of profiles and the link to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileOptOutPage {
    /// The profiles of this page that carry a CRM ID.
    pub profiles: Vec<ProfileOptOuts>,
    /// The next page's link; `None` after the last page.
    pub next: Option<String>,
}

/// Campaign profiles' current opt-out attributes, read in pages: the first Opt-in/out start
/// reconciles both sides from them.
#[async_trait]
pub trait ProfileOptOutSource: Send + Sync {
    /// Reads the page at `cursor` (`None`: the first page) of profiles with `key_field` and
    /// the boolean `attributes`.
    async fn read_profile_opt_outs(
        &self,
        key_field: &str,
        attributes: &[String],
        cursor: Option<&str>,
        page_size: u32,
    ) -> Result<ProfileOptOutPage, ConnectorError>;
}

/// The type of a destination or source field, as its metadata declares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// String, memo.
    Text,
    /// Whole number.
    Integer,
    /// Decimal, double, float, money.
    Decimal,
    /// Boolean.
    Boolean,
    /// Date-time.
    Datetime,
    /// Date only.
    Date,
    /// Picklist or enumeration.
    Picklist,
    /// Unique identifier.
    Guid,
    /// Link or lookup.
    Lookup,
    /// Anything else, with the service's own type name.
    Other(String),
}

/// One field of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldInfo {
    /// The field's API name.
    pub name: String,
    /// Its declared type.
    pub kind: FieldKind,
}

/// The result of one write.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// The destination accepted it.
    Written,
    /// It failed; `is_transient` says whether to retry.
    Failed(ConnectorError),
    /// Not now: the destination is not ready for it yet (e.g. the record it updates does not
    /// exist yet). The writer keeps it queued, passes it by (later writes of its key wait behind
    /// it) and tries again after its own backoff, at least `retry_after`; once it has waited
    /// `give_up_after` since it was first put off, it is dead-lettered with `reason`.
    NotYet {
        /// Why not now (kept with the queued record, and in the dead letter).
        reason: String,
        /// The earliest time to try again.
        retry_after: std::time::Duration,
        /// The longest wait, from the first time it was put off, before it is dead-lettered.
        give_up_after: std::time::Duration,
    },
}

/// What a write taught its sink about where the key's record lives at the destination, for the
/// engine to keep (in the store, in the same transaction as the write's removal from the queue)
/// and hand back with the key's next write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Learnt {
    /// Nothing new: keep what was known.
    #[default]
    Nothing,
    /// The record is at this address (opaque to all but the sink that gave it, e.g. Campaign's
    /// href): the next write of the key may go straight there.
    At(String),
    /// The record is gone (deleted, or the address known before no longer holds it): forget it.
    Gone,
}

/// A destination of writes.
#[async_trait]
pub trait RecordSink: Send + Sync {
    /// Writes records, batched where the API allows; one outcome per input, in input order.
    /// Records with the same key are written in the order given.
    async fn write(&self, records: &[WriteRecord]) -> Vec<WriteOutcome>;

    /// Where this sink's record addresses are valid (e.g. one Campaign instance's API base), or
    /// `None` when it does not use them. Addresses learnt from one scope are never handed to a
    /// sink of another, so repointing a workflow at another instance starts from nothing.
    fn location_scope(&self) -> Option<String> {
        None
    }

    /// [`RecordSink::write`] with what earlier writes taught of each record's address
    /// (`known[i]` for `records[i]`, from [`Learnt::At`]), returning what this write taught.
    /// A stale address must never lose or misdirect a write: the sink falls back to finding the
    /// record by its key. The default ignores addresses.
    async fn write_located(
        &self,
        records: &[WriteRecord],
        known: &[Option<String>],
    ) -> Vec<(WriteOutcome, Learnt)> {
        let _ = known;
        self.write(records)
            .await
            .into_iter()
            .map(|outcome| (outcome, Learnt::Nothing))
            .collect()
    }

    /// Describes a destination table's fields, for the schema-drift check.
    async fn describe(&self, table: &str) -> Result<Vec<FieldInfo>, ConnectorError>;

    /// Checks that the credentials work.
    async fn check(&self) -> Result<(), ConnectorError>;
}

/// One destination record as read back: its key and its fields as the service holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    /// The value of the destination's key field.
    pub key: String,
    /// Every field the service returned, by field name.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// One page of a destination table's records and the link to the next.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPage {
    /// The records of this page that carry a key.
    pub records: Vec<StoredRecord>,
    /// Records of this page without a key (nothing can be compared with them).
    pub without_key: u64,
    /// The next page's link; `None` after the last page.
    pub next: Option<String>,
}

/// Reads back what a destination holds, for `conduit verify` and `conduit preview`: the
/// records of a table, the records of given keys, and the form a mapped value takes once the
/// destination stores it (so the two can be compared).
#[async_trait]
pub trait RecordReader: Send + Sync {
    /// Reads the page at `cursor` (`None`: the first page) of `table`, keyed by `key_field`.
    async fn read_stored(
        &self,
        table: &str,
        key_field: &str,
        cursor: Option<&str>,
        page_size: u32,
    ) -> Result<StoredPage, ConnectorError>;

    /// Reads the records of `keys` (keys without a record are left out).
    async fn read_stored_keys(
        &self,
        table: &str,
        key_field: &str,
        keys: &[String],
    ) -> Result<Vec<StoredRecord>, ConnectorError>;

    /// Each record's fields as the destination shows them once written (dates as its date
    /// text, picklists as labels, numbers into text fields as text, no value as the empty
    /// value of the field's type), read against the table's metadata once for all records.
    /// A record with a value the destination cannot hold gets an error naming the field.
    async fn stored_forms(
        &self,
        table: &str,
        records: &[Vec<(String, conduit_model::Value)>],
    ) -> Result<Vec<Result<Vec<(String, serde_json::Value)>, String>>, ConnectorError>;
}

pub mod dynamics365;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod http;
