//! The binary cells of the packed contract (`conduit:plugin/packed`, 1.1): the layout in
//! which a packed batch carries its values and a packed result its fields, shared by the
//! host and the SDK so that the two sides cannot disagree about it.
//!
//! Why bytes: the canonical ABI moves a `list<u8>` with one copy, while a list of variants
//! is lowered and lifted element by element; a contact page of 1000 holds ~9,000 values.
//!
//! A value cell is [`VALUE_CELL`] (20) bytes, little-endian:
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | the case, in the order of `types.value`: 0 null, 1 boolean, 2 integer, 3 decimal, 4 text, 5 datetime, 6 picklist, 7 guid, 8 lookup |
//! | 1 | a picklist's label: 1 present, 0 absent; 0 for every other case |
//! | 2..4 | zero |
//! | 4..20 | the payload: a boolean's byte 4 (0 or 1); an integer's `s64`; a decimal's `f64` bits; a text's, datetime's or guid's span (start `u32`, length `u32`); a picklist's value (`s64`) then its label's span; a lookup's table span then its id span. Bytes a case does not use are zero. |
//!
//! A field cell is [`FIELD_CELL`] (24) bytes: the column index (`u32`), then a value cell.
//! Spans name byte runs of the batch's or result's `text`, as in the rest of the packed form.

/// Bytes of one value cell.
pub const VALUE_CELL: usize = 20;

/// Bytes of one field cell: a column index and a value cell.
pub const FIELD_CELL: usize = 4 + VALUE_CELL;

/// A run of a packed batch's text: byte offset and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// Byte offset of the first byte.
    pub start: u32,
    /// Length in bytes.
    pub len: u32,
}

/// One value as a cell holds it: strings are spans of the text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    /// No value.
    Null,
    /// A two-options field.
    Boolean(bool),
    /// A whole number.
    Integer(i64),
    /// A decimal, double or money value.
    Decimal(f64),
    /// A string or memo.
    Text(Span),
    /// A date or date-time as RFC 3339 text.
    Datetime(Span),
    /// A picklist choice and its label.
    Picklist(i64, Option<Span>),
    /// A unique identifier.
    Guid(Span),
    /// A reference to another row: table and id.
    Lookup(Span, Span),
}

/// Why a cell cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellError {
    /// The case byte names no case.
    UnknownCase(u8),
    /// A flag byte is neither 0 nor 1.
    BadFlag(u8),
    /// The cells' bytes are not a whole number of cells.
    Truncated {
        /// Bytes there are.
        bytes: usize,
        /// Bytes of one cell.
        cell: usize,
    },
}

impl std::fmt::Display for CellError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CellError::UnknownCase(case) => {
                write!(f, "has the unknown case {case} (0 to 8 are defined)")
            }
            CellError::BadFlag(flag) => write!(f, "has the flag byte {flag} (0 or 1 is defined)"),
            CellError::Truncated { bytes, cell } => write!(
                f,
                "are {bytes} bytes, not a whole number of {cell}-byte cells"
            ),
        }
    }
}

impl std::error::Error for CellError {}

fn put_span(out: &mut [u8], span: Span) {
    out[..4].copy_from_slice(&span.start.to_le_bytes());
    out[4..8].copy_from_slice(&span.len.to_le_bytes());
}

fn get_span(bytes: &[u8]) -> Span {
    Span {
        start: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        len: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
    }
}

fn get_u64(bytes: &[u8]) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}

impl Cell {
    /// Appends this value's cell to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut cell = [0u8; VALUE_CELL];
        let payload = &mut cell[4..];
        write_payload(self, payload);
        cell[0] = match self {
            Cell::Null => 0,
            Cell::Boolean(_) => 1,
            Cell::Integer(_) => 2,
            Cell::Decimal(_) => 3,
            Cell::Text(_) => 4,
            Cell::Datetime(_) => 5,
            Cell::Picklist(_, label) => {
                cell[1] = u8::from(label.is_some());
                6
            }
            Cell::Guid(_) => 7,
            Cell::Lookup(..) => 8,
        };
        out.extend_from_slice(&cell);
    }

    /// Reads one value cell: `bytes` holds at least [`VALUE_CELL`] bytes (only those are read).
    pub fn read(bytes: &[u8]) -> Result<Cell, CellError> {
        let payload = &bytes[4..VALUE_CELL];
        let flag = |byte: u8| match byte {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(CellError::BadFlag(other)),
        };
        Ok(match bytes[0] {
            0 => Cell::Null,
            1 => Cell::Boolean(flag(payload[0])?),
            2 => Cell::Integer(get_u64(payload) as i64),
            3 => Cell::Decimal(f64::from_bits(get_u64(payload))),
            4 => Cell::Text(get_span(payload)),
            5 => Cell::Datetime(get_span(payload)),
            6 => Cell::Picklist(
                get_u64(payload) as i64,
                flag(bytes[1])?.then(|| get_span(&payload[8..])),
            ),
            7 => Cell::Guid(get_span(payload)),
            8 => Cell::Lookup(get_span(payload), get_span(&payload[8..])),
            other => return Err(CellError::UnknownCase(other)),
        })
    }
}

/// Writes a cell's payload (bytes 4..20).
fn write_payload(cell: &Cell, payload: &mut [u8]) {
    match *cell {
        Cell::Null => {}
        Cell::Boolean(flag) => payload[0] = u8::from(flag),
        Cell::Integer(number) => payload[..8].copy_from_slice(&number.to_le_bytes()),
        Cell::Decimal(number) => payload[..8].copy_from_slice(&number.to_bits().to_le_bytes()),
        Cell::Text(span) | Cell::Datetime(span) | Cell::Guid(span) => put_span(payload, span),
        Cell::Picklist(value, label) => {
            payload[..8].copy_from_slice(&value.to_le_bytes());
            if let Some(label) = label {
                put_span(&mut payload[8..], label);
            }
        }
        Cell::Lookup(table, id) => {
            put_span(payload, table);
            put_span(&mut payload[8..], id);
        }
    }
}

/// Appends one field cell (column index and value) to `out`.
pub fn write_field(column: u32, value: &Cell, out: &mut Vec<u8>) {
    out.extend_from_slice(&column.to_le_bytes());
    value.write(out);
}

/// The cells of `bytes`, each `size` bytes long; the error says when the bytes are not a
/// whole number of cells.
pub fn cells(bytes: &[u8], size: usize) -> Result<std::slice::ChunksExact<'_, u8>, CellError> {
    if bytes.len() % size != 0 {
        return Err(CellError::Truncated {
            bytes: bytes.len(),
            cell: size,
        });
    }
    Ok(bytes.chunks_exact(size))
}

/// Reads one field cell: its column index and value.
pub fn read_field(bytes: &[u8]) -> Result<(u32, Cell), CellError> {
    let column = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    Ok((column, Cell::read(&bytes[4..FIELD_CELL])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_reads_back_as_it_was_written() {
        let span = |start, len| Span { start, len };
        let cases = [
            Cell::Null,
            Cell::Boolean(true),
            Cell::Boolean(false),
            Cell::Integer(-42),
            Cell::Integer(i64::MIN),
            Cell::Decimal(1234.5),
            Cell::Decimal(f64::NEG_INFINITY),
            Cell::Text(span(3, u32::MAX)),
            Cell::Datetime(span(0, 20)),
            Cell::Picklist(-7, None),
            Cell::Picklist(i64::MAX, Some(span(9, 4))),
            Cell::Guid(span(1, 36)),
            Cell::Lookup(span(0, 7), span(7, 36)),
        ];
        let mut bytes = Vec::new();
        for (column, cell) in cases.iter().enumerate() {
            write_field(column as u32, cell, &mut bytes);
        }
        assert_eq!(bytes.len(), cases.len() * FIELD_CELL);
        let read: Vec<_> = cells(&bytes, FIELD_CELL)
            .unwrap()
            .map(|cell| read_field(cell).unwrap())
            .collect();
        let expected: Vec<_> = cases
            .iter()
            .enumerate()
            .map(|(column, cell)| (column as u32, *cell))
            .collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn a_cell_that_breaks_the_layout_is_refused_naming_what_is_wrong() {
        let mut cell = [0u8; VALUE_CELL];
        cell[0] = 9;
        assert_eq!(Cell::read(&cell), Err(CellError::UnknownCase(9)));
        cell[0] = 1;
        cell[4] = 2;
        assert_eq!(Cell::read(&cell), Err(CellError::BadFlag(2)));
        cell[0] = 6;
        cell[1] = 7;
        assert_eq!(Cell::read(&cell), Err(CellError::BadFlag(7)));
        let problem = cells(&[0; 25], FIELD_CELL).unwrap_err().to_string();
        assert_eq!(problem, "are 25 bytes, not a whole number of 24-byte cells");
    }
}
