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
        pub fn target_to_wit(target: $crate::Target) -> wit::Target {
            wit::Target {
                system: match target.system {
                    $crate::System::Dynamics => wit::System::Dynamics,
                    $crate::System::Campaign => wit::System::Campaign,
                },
                table: target.table,
                key_field: target.key_field,
            }
        }

        #[allow(dead_code)]
        pub fn mapped_to_wit(batch: $crate::MappedBatch) -> wit::MappedBatch {
            wit::MappedBatch {
                targets: batch.targets.into_iter().map(target_to_wit).collect(),
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

/// Defines, in the calling module, conversions between the SDK types and the packed forms of
/// `conduit:plugin/packed` (1.1) found at `packed` (bring `conduit::plugin::packed` and
/// `conduit::plugin::types as wit` into scope, and call [`guest_conversions!`] first):
/// `batch_from_packed` and `mapped_to_packed`. The SDK's types own their strings, so
/// unpacking copies each string once inside the guest; what the packed form saves is the
/// host-to-guest call per string and the element-by-element copying of nested lists.
#[macro_export]
macro_rules! packed_guest_conversions {
    () => {
        /// The text `span` names in `text`, or why it names none.
        fn unpack_text(text: &str, span: $crate::cells::Span) -> Result<String, String> {
            let start = span.start as usize;
            let end = start.saturating_add(span.len as usize);
            text.get(start..end).map(str::to_owned).ok_or_else(|| {
                format!(
                    "the host sent a batch whose text span {start}..{end} is not inside its {} bytes of text",
                    text.len()
                )
            })
        }

        fn value_from_cell(cell: &[u8], text: &str) -> Result<$crate::Value, String> {
            use $crate::cells::Cell;
            let cell = Cell::read(cell)
                .map_err(|problem| format!("the host sent a value cell that {problem}"))?;
            Ok(match cell {
                Cell::Null => $crate::Value::Null,
                Cell::Boolean(v) => $crate::Value::Boolean(v),
                Cell::Integer(v) => $crate::Value::Integer(v),
                Cell::Decimal(v) => $crate::Value::Decimal(v),
                Cell::Text(span) => $crate::Value::Text(unpack_text(text, span)?),
                Cell::Datetime(span) => $crate::Value::Datetime(unpack_text(text, span)?),
                Cell::Picklist(value, label) => $crate::Value::Picklist {
                    value,
                    label: label.map(|span| unpack_text(text, span)).transpose()?,
                },
                Cell::Guid(span) => $crate::Value::Guid(unpack_text(text, span)?),
                Cell::Lookup(table, id) => $crate::Value::Lookup {
                    table: unpack_text(text, table)?,
                    id: unpack_text(text, id)?,
                },
            })
        }

        fn cells_span(span: packed::Span) -> $crate::cells::Span {
            $crate::cells::Span {
                start: span.start,
                len: span.len,
            }
        }

        /// The SDK form of a packed batch; the error names a span, slice or cell the host
        /// got wrong (the host never sends one).
        #[allow(dead_code)]
        pub fn batch_from_packed(batch: packed::PackedBatch) -> Result<$crate::RecordBatch, String> {
            let text = batch.text.as_str();
            let cell_bytes = $crate::cells::VALUE_CELL;
            let mut rows = Vec::with_capacity(batch.rows.len());
            for row in &batch.rows {
                let start = (row.values.start as usize).saturating_mul(cell_bytes);
                let end = start.saturating_add((row.values.len as usize).saturating_mul(cell_bytes));
                let cells = batch.values.get(start..end).ok_or_else(|| {
                    format!(
                        "the host sent a row whose value cells end past the batch's {} bytes of cells",
                        batch.values.len()
                    )
                })?;
                // Sized up front: collecting through `Result` would grow the list from 4.
                let mut values = Vec::with_capacity(row.values.len as usize);
                for cell in cells.chunks_exact(cell_bytes) {
                    values.push(value_from_cell(cell, text)?);
                }
                rows.push($crate::Row {
                    key: unpack_text(text, cells_span(row.key))?,
                    op: operation_from_wit(row.op),
                    values,
                    modified_at: row
                        .modified_at
                        .map(|span| unpack_text(text, cells_span(span)))
                        .transpose()?,
                });
            }
            Ok($crate::RecordBatch {
                table: batch.table,
                columns: batch.columns,
                rows,
            })
        }

        /// Writes results into one packed batch: the text arena, the records and the field
        /// cells.
        struct Packer {
            text: String,
            records: Vec<packed::PackedOutputRecord>,
            fields: Vec<u8>,
            field_count: u32,
        }

        impl Packer {
            // wasm32's usize is 32 bits wide, so these casts are lossless, and a guest's
            // memory cannot hold more than u32::MAX bytes of text.
            fn span(&mut self, text: &str) -> $crate::cells::Span {
                let start = self.text.len() as u32;
                self.text.push_str(text);
                $crate::cells::Span {
                    start,
                    len: text.len() as u32,
                }
            }

            fn wit_span(&mut self, text: &str) -> packed::Span {
                let span = self.span(text);
                packed::Span {
                    start: span.start,
                    len: span.len,
                }
            }

            fn cell(&mut self, value: &$crate::Value) -> $crate::cells::Cell {
                use $crate::cells::Cell;
                match value {
                    $crate::Value::Null => Cell::Null,
                    $crate::Value::Boolean(v) => Cell::Boolean(*v),
                    $crate::Value::Integer(v) => Cell::Integer(*v),
                    $crate::Value::Decimal(v) => Cell::Decimal(*v),
                    $crate::Value::Text(v) => Cell::Text(self.span(v)),
                    $crate::Value::Datetime(v) => Cell::Datetime(self.span(v)),
                    $crate::Value::Picklist { value, label } => {
                        Cell::Picklist(*value, label.as_deref().map(|label| self.span(label)))
                    }
                    $crate::Value::Guid(v) => Cell::Guid(self.span(v)),
                    $crate::Value::Lookup { table, id } => {
                        Cell::Lookup(self.span(table), self.span(id))
                    }
                }
            }

            fn record(&mut self, record: &$crate::OutputRecord) -> packed::PackedOutputRecord {
                let key = self.wit_span(&record.key);
                let start = self.field_count;
                for (column, value) in &record.fields {
                    let cell = self.cell(value);
                    $crate::cells::write_field(*column, &cell, &mut self.fields);
                }
                self.field_count += record.fields.len() as u32;
                packed::PackedOutputRecord {
                    target: record.target,
                    key,
                    op: operation_to_wit(record.op),
                    fields: packed::Slice {
                        start,
                        len: record.fields.len() as u32,
                    },
                }
            }
        }

        /// The packed form of a mapped batch.
        #[allow(dead_code)]
        pub fn mapped_to_packed(batch: $crate::MappedBatch) -> packed::PackedMappedBatch {
            // Sized for a record of a few short fields per outcome; they grow if needed.
            let mut packer = Packer {
                text: String::with_capacity(batch.outcomes.len() * 128),
                records: Vec::with_capacity(batch.outcomes.len()),
                fields: Vec::with_capacity(batch.outcomes.len() * 8 * $crate::cells::FIELD_CELL),
                field_count: 0,
            };
            let outcomes = batch
                .outcomes
                .iter()
                .map(|outcome| match outcome {
                    $crate::Outcome::Write(records) => {
                        let start = packer.records.len() as u32;
                        for record in records {
                            let packed_record = packer.record(record);
                            packer.records.push(packed_record);
                        }
                        packed::PackedOutcome::Write(packed::Slice {
                            start,
                            len: records.len() as u32,
                        })
                    }
                    $crate::Outcome::Skip(reason) => {
                        packed::PackedOutcome::Skip(packer.wit_span(reason))
                    }
                    $crate::Outcome::Reject(reason) => {
                        packed::PackedOutcome::Reject(packer.wit_span(reason))
                    }
                })
                .collect();
            packed::PackedMappedBatch {
                targets: batch
                    .targets
                    .into_iter()
                    .map(target_to_wit)
                    .collect(),
                columns: batch.columns,
                outcomes,
                records: packer.records,
                fields: packer.fields,
                text: packer.text,
            }
        }
    };
}
