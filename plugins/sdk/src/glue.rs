//! [`guest_conversions!`]: conversions between the SDK's plain types and the types that
//! `wit_bindgen::generate!` emits inside each guest. A macro, because every guest crate
//! generates its own copy of the WIT types.

/// Defines, in the calling module, conversions between the SDK types and the wit-bindgen
/// types found at `wit` (bring `conduit::plugin::types as wit` into scope first):
/// `batch_from_wit`, `phase_from_wit`, `event_from_wit`, `contact_from_wit` and
/// `mapped_to_wit`.
#[macro_export]
macro_rules! guest_conversions {
    () => {
        #[allow(dead_code)]
        pub fn value_from_wit(value: wit::Value) -> $crate::Value {
            match value {
                wit::Value::Null => $crate::Value::Null,
                wit::Value::Boolean(v) => $crate::Value::Boolean(v),
                wit::Value::Integer(v) => $crate::Value::Integer(v),
                wit::Value::Decimal(v) => $crate::Value::Decimal(v),
                wit::Value::Text(v) => $crate::Value::Text(v),
                wit::Value::Datetime(v) => $crate::Value::Datetime(v),
                wit::Value::Picklist(p) => $crate::Value::Picklist {
                    value: p.value,
                    label: p.label,
                },
                wit::Value::Guid(v) => $crate::Value::Guid(v),
                wit::Value::Lookup(l) => $crate::Value::Lookup {
                    table: l.table,
                    id: l.id,
                },
            }
        }

        #[allow(dead_code)]
        pub fn value_to_wit(value: $crate::Value) -> wit::Value {
            match value {
                $crate::Value::Null => wit::Value::Null,
                $crate::Value::Boolean(v) => wit::Value::Boolean(v),
                $crate::Value::Integer(v) => wit::Value::Integer(v),
                $crate::Value::Decimal(v) => wit::Value::Decimal(v),
                $crate::Value::Text(v) => wit::Value::Text(v),
                $crate::Value::Datetime(v) => wit::Value::Datetime(v),
                $crate::Value::Picklist { value, label } => {
                    wit::Value::Picklist(wit::Picklist { value, label })
                }
                $crate::Value::Guid(v) => wit::Value::Guid(v),
                $crate::Value::Lookup { table, id } => {
                    wit::Value::Lookup(wit::Lookup { table, id })
                }
            }
        }

        #[allow(dead_code)]
        pub fn operation_from_wit(op: wit::Operation) -> $crate::Operation {
            match op {
                wit::Operation::Upsert => $crate::Operation::Upsert,
                wit::Operation::Update => $crate::Operation::Update,
                wit::Operation::Delete => $crate::Operation::Delete,
            }
        }

        #[allow(dead_code)]
        pub fn operation_to_wit(op: $crate::Operation) -> wit::Operation {
            match op {
                $crate::Operation::Upsert => wit::Operation::Upsert,
                $crate::Operation::Update => wit::Operation::Update,
                $crate::Operation::Delete => wit::Operation::Delete,
            }
        }

        #[allow(dead_code)]
        pub fn batch_from_wit(batch: wit::RecordBatch) -> $crate::RecordBatch {
            $crate::RecordBatch {
                table: batch.table,
                columns: batch.columns,
                rows: batch
                    .rows
                    .into_iter()
                    .map(|row| $crate::Row {
                        key: row.key,
                        op: operation_from_wit(row.op),
                        values: row.values.into_iter().map(value_from_wit).collect(),
                        modified_at: row.modified_at,
                    })
                    .collect(),
            }
        }

        #[allow(dead_code)]
        pub fn phase_from_wit(phase: wit::Phase) -> $crate::Phase {
            match phase {
                wit::Phase::Initial => $crate::Phase::Initial,
                wit::Phase::Incremental => $crate::Phase::Incremental,
                wit::Phase::Replay => $crate::Phase::Replay,
            }
        }

        #[allow(dead_code)]
        pub fn event_from_wit(event: wit::EmailEvent) -> $crate::EmailEvent {
            $crate::EmailEvent {
                id: event.id,
                kind: match event.kind {
                    wit::EmailEventKind::Send => $crate::EmailEventKind::Send,
                    wit::EmailEventKind::Open => $crate::EmailEventKind::Open,
                    wit::EmailEventKind::Click => $crate::EmailEventKind::Click,
                    wit::EmailEventKind::Bounce => $crate::EmailEventKind::Bounce,
                },
                contact_key: event.contact_key,
                campaign_id: event.campaign_id,
                campaign_name: event.campaign_name,
                delivery_id: event.delivery_id,
                delivery_name: event.delivery_name,
                timestamp: event.timestamp,
                url: event.url,
                mirror_page_url: event.mirror_page_url,
                bounce: event.bounce.map(|b| $crate::BounceDetail {
                    hard: b.hard,
                    reason: b.reason,
                }),
            }
        }

        #[allow(dead_code)]
        pub fn contact_from_wit(contact: wit::ContactOptOut) -> $crate::ContactOptOut {
            let side = |values: Vec<wit::OptOutValue>| {
                values
                    .into_iter()
                    .map(|v| $crate::OptOutValue {
                        attribute: v.attribute,
                        value: v.value,
                        changed_at: v.changed_at,
                    })
                    .collect()
            };
            $crate::ContactOptOut {
                contact_key: contact.contact_key,
                dynamics: side(contact.dynamics),
                campaign: side(contact.campaign),
            }
        }

        #[allow(dead_code)]
        pub fn mapped_to_wit(batch: $crate::MappedBatch) -> wit::MappedBatch {
            wit::MappedBatch {
                targets: batch
                    .targets
                    .into_iter()
                    .map(|t| wit::Target {
                        system: match t.system {
                            $crate::System::Dynamics => wit::System::Dynamics,
                            $crate::System::Campaign => wit::System::Campaign,
                        },
                        table: t.table,
                        key_field: t.key_field,
                    })
                    .collect(),
                columns: batch.columns,
                outcomes: batch
                    .outcomes
                    .into_iter()
                    .map(|outcome| match outcome {
                        $crate::Outcome::Write(records) => wit::Outcome::Write(
                            records
                                .into_iter()
                                .map(|r| wit::OutputRecord {
                                    target: r.target,
                                    key: r.key,
                                    op: operation_to_wit(r.op),
                                    fields: r
                                        .fields
                                        .into_iter()
                                        .map(|(column, value)| (column, value_to_wit(value)))
                                        .collect(),
                                })
                                .collect(),
                        ),
                        $crate::Outcome::Skip(reason) => wit::Outcome::Skip(reason),
                        $crate::Outcome::Reject(reason) => wit::Outcome::Reject(reason),
                    })
                    .collect(),
            }
        }
    };
}
