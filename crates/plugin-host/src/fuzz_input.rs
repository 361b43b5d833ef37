//! Decodes arbitrary bytes into a plugin's mapped batch, so that the fuzz targets and property
//! tests can hand the host's output validation any shape a hostile plugin could return:
//! indices out of range, wrong outcome counts, empty keys and strings over the size cap.

use conduit_model as model;

use super::Limits;
use super::bindings::wit;
use super::convert::outcomes_from_wit;

/// The limits the decoded batches are checked under: small, so that short inputs reach them.
/// The total output cap is left open: the property tests' statement of the rules does not
/// model it (its own unit tests in `convert.rs` pin it).
pub(crate) const FUZZ_LIMITS: Limits = Limits {
    deadline: std::time::Duration::from_secs(1),
    memory_bytes: 1 << 20,
    max_output_records_per_input: 4,
    max_string_bytes: 48,
    log_burst: 1,
    log_lines_per_second: 1,
    max_log_line_bytes: 64,
    max_output_bytes: usize::MAX,
};

/// Reads the bytes front to back; past the end every read is zero, so any input decodes.
struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((first, rest)) => {
                self.data = rest;
                *first
            }
            None => 0,
        }
    }

    fn flag(&mut self) -> bool {
        self.byte().is_multiple_of(2)
    }

    fn below(&mut self, bound: u8) -> usize {
        usize::from(self.byte() % bound)
    }

    fn text(&mut self) -> String {
        let length = self.byte();
        // The top lengths stand for strings just over and far over the size cap.
        match length {
            250..=252 => "k".repeat(FUZZ_LIMITS.max_string_bytes + 1),
            253..=255 => "é".repeat(FUZZ_LIMITS.max_string_bytes * 64),
            _ => {
                let take = usize::from(length % 16).min(self.data.len());
                let (head, rest) = self.data.split_at(take);
                self.data = rest;
                String::from_utf8_lossy(head).into_owned()
            }
        }
    }

    fn operation(&mut self) -> wit::Operation {
        match self.below(3) {
            0 => wit::Operation::Upsert,
            1 => wit::Operation::Update,
            _ => wit::Operation::Delete,
        }
    }

    fn value(&mut self) -> wit::Value {
        match self.below(9) {
            0 => wit::Value::Null,
            1 => wit::Value::Boolean(self.flag()),
            2 => wit::Value::Integer(i64::from(self.byte()) - 128),
            3 => wit::Value::Decimal(f64::from(self.byte()) / 7.0),
            4 => wit::Value::Text(self.text()),
            5 => wit::Value::Datetime(self.text()),
            6 => wit::Value::Picklist(wit::Picklist {
                value: i64::from(self.byte()),
                label: (self.flag()).then(|| self.text()),
            }),
            7 => wit::Value::Guid(self.text()),
            _ => wit::Value::Lookup(wit::Lookup {
                table: self.text(),
                id: self.text(),
            }),
        }
    }

    fn record(&mut self) -> wit::OutputRecord {
        wit::OutputRecord {
            target: u32::from(self.byte() % 6),
            key: self.text(),
            op: self.operation(),
            fields: (0..self.below(4))
                .map(|_| (u32::from(self.byte() % 6), self.value()))
                .collect(),
        }
    }

    fn outcome(&mut self) -> wit::Outcome {
        match self.below(3) {
            0 => wit::Outcome::Skip(self.text()),
            1 => wit::Outcome::Reject(self.text()),
            _ => wit::Outcome::Write((0..self.below(7)).map(|_| self.record()).collect()),
        }
    }

    fn mapped_batch(&mut self) -> wit::MappedBatch {
        wit::MappedBatch {
            targets: (0..self.below(4))
                .map(|_| wit::Target {
                    system: if self.flag() {
                        wit::System::Dynamics
                    } else {
                        wit::System::Campaign
                    },
                    table: self.text(),
                    key_field: self.text(),
                })
                .collect(),
            columns: (0..self.below(5)).map(|_| self.text()).collect(),
            outcomes: (0..self.below(9)).map(|_| self.outcome()).collect(),
        }
    }
}

/// Decodes `data` into a mapped batch for a page of 0 to 7 inputs (the first byte), checks it
/// under [`FUZZ_LIMITS`] exactly as a plugin's real output is checked, and returns the verdict.
pub fn check_output_bytes(data: &[u8]) -> Result<Vec<model::Outcome>, String> {
    let mut reader = Reader { data };
    let inputs = reader.below(8);
    let batch = reader.mapped_batch();
    outcomes_from_wit(batch, inputs, &FUZZ_LIMITS)
}
