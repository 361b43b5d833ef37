//! The single-pass reader of change-tracking page bodies (`value`, `@odata.nextLink`,
//! `@odata.deltaLink`): rows are converted while the body is parsed, with no JSON tree.
//!
//! Why: a page of 5,000 contacts is several megabytes, and parsing it into `serde_json` maps
//! first allocated every field name of every row (annotations included) and copied every
//! value once more into the batch. Here each row's field names are looked up in the
//! [`RowPlan`] as they are read: a planned field's value is parsed into its slot, any other
//! field is skipped without being built, and the row is converted as soon as its object
//! closes, by the same code that converts re-read rows (`rows.rs`).
//!
//! What the reader accepts and refuses is what a parse into `{value: [object...], links}`
//! followed by a conversion accepts and refuses: a body that is not such a page is a transient
//! error (even where a row before the fault already failed to convert), a row the metadata
//! cannot explain is the permanent error of the first such row, and, as in any JSON object, a
//! field given twice in a row counts by its last value. The property test
//! `a_page_reads_as_its_parsed_tree_converts` in `proptests.rs` holds the two readings equal.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use super::metadata::TableMeta;
use super::rows::{PageRows, RowPlan};
use crate::http::unreadable_body;
use crate::{ChangePage, ConnectorError};

/// What a page is said to be in errors.
const EXPECTED_PAGE: &str = "a JSON page with a 'value' list";

/// Reads one change-tracking page body of `meta`'s table into its rows, converted for the
/// `names` columns, and the cursor after it; `url` names the response in errors.
pub(crate) fn read_change_page(
    meta: &TableMeta,
    names: &[String],
    body: &[u8],
    url: &str,
) -> Result<ChangePage, ConnectorError> {
    let plan = RowPlan::new(meta, names)?;
    let mut reader = PageReader {
        plan: &plan,
        url,
        slots: vec![None; plan.slot_count()],
        rows: PageRows::with_capacity(0),
        failure: None,
    };
    // A body checked as UTF-8 once is parsed without checking each string again; a body that
    // is not UTF-8 is parsed as bytes, so serde names where and why it is refused.
    let parsed = match std::str::from_utf8(body) {
        Ok(text) => reader.parse(serde_json::Deserializer::from_str(text)),
        Err(_) => reader.parse(serde_json::Deserializer::from_slice(body)),
    };
    let links = parsed.map_err(|error| unreadable_body(body, url, EXPECTED_PAGE, &error))?;
    if let Some(failure) = reader.failure {
        return Err(failure);
    }
    let batch = reader.rows.into_batch(&plan);
    match (links.next, links.delta) {
        (Some(next), _) => Ok(ChangePage {
            batch,
            cursor: next,
            caught_up: false,
        }),
        (None, Some(delta)) => Ok(ChangePage {
            batch,
            cursor: delta,
            caught_up: true,
        }),
        (None, None) => Err(ConnectorError::Permanent {
            message: format!(
                "the response of {url} has neither @odata.nextLink nor @odata.deltaLink: is change tracking enabled on '{}'?",
                meta.logical_name
            ),
        }),
    }
}

/// The reader's state while one page is parsed.
struct PageReader<'p> {
    plan: &'p RowPlan<'p>,
    url: &'p str,
    /// The planned fields of the row being parsed, by slot (reused from row to row).
    slots: Vec<Option<Json>>,
    rows: PageRows,
    /// The first row that failed to convert; later rows are still parsed, not converted.
    failure: Option<ConnectorError>,
}

impl PageReader<'_> {
    /// Parses the whole page (nothing may follow it), converting its rows.
    fn parse<'de, R: serde_json::de::Read<'de>>(
        &mut self,
        mut deserializer: serde_json::Deserializer<R>,
    ) -> Result<Links, serde_json::Error> {
        let links = PageSeed(self).deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(links)
    }

    fn finish_row(&mut self) {
        if self.failure.is_some() {
            return;
        }
        match self.plan.convert(self.slots.as_mut_slice(), self.url) {
            Ok(row) => self.rows.push(row),
            Err(error) => self.failure = Some(error),
        }
    }
}

/// The page's links.
struct Links {
    next: Option<String>,
    delta: Option<String>,
}

/// The page object.
struct PageSeed<'r, 'p>(&'r mut PageReader<'p>);

impl<'de> DeserializeSeed<'de> for PageSeed<'_, '_> {
    type Value = Links;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Links, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PageSeed<'_, '_> {
    type Value = Links;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object with a 'value' list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Links, A::Error> {
        let mut rows_seen = false;
        let mut next: Option<Option<String>> = None;
        let mut delta: Option<Option<String>> = None;
        while let Some(key) = map.next_key::<PageKey>()? {
            match key {
                PageKey::Value if rows_seen => return Err(de::Error::duplicate_field("value")),
                PageKey::Value => {
                    rows_seen = true;
                    map.next_value_seed(RowsSeed(&mut *self.0))?;
                }
                PageKey::NextLink => read_link(&mut map, &mut next, "@odata.nextLink")?,
                PageKey::DeltaLink => read_link(&mut map, &mut delta, "@odata.deltaLink")?,
                PageKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !rows_seen {
            return Err(de::Error::missing_field("value"));
        }
        Ok(Links {
            next: next.flatten(),
            delta: delta.flatten(),
        })
    }
}

/// Reads a link (a string or `null`) into `link`, refusing a second one.
fn read_link<'de, A: MapAccess<'de>>(
    map: &mut A,
    link: &mut Option<Option<String>>,
    name: &'static str,
) -> Result<(), A::Error> {
    if link.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *link = Some(map.next_value()?);
    Ok(())
}

/// A field name of the page object.
enum PageKey {
    Value,
    NextLink,
    DeltaLink,
    Other,
}

impl<'de> de::Deserialize<'de> for PageKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PageKey, D::Error> {
        deserializer.deserialize_str(PageKeyVisitor)
    }
}

struct PageKeyVisitor;

impl Visitor<'_> for PageKeyVisitor {
    type Value = PageKey;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<PageKey, E> {
        Ok(match name {
            "value" => PageKey::Value,
            "@odata.nextLink" => PageKey::NextLink,
            "@odata.deltaLink" => PageKey::DeltaLink,
            _ => PageKey::Other,
        })
    }
}

/// The `value` list of rows.
struct RowsSeed<'r, 'p>(&'r mut PageReader<'p>);

impl<'de> DeserializeSeed<'de> for RowsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a list of row objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(RowSeed(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// One row object: planned fields into their slots, the rest skipped.
struct RowSeed<'r, 'p>(&'r mut PageReader<'p>);

impl<'de> DeserializeSeed<'de> for RowSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a row object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let reader = self.0;
        reader.slots.fill(None);
        while let Some(slot) = map.next_key_seed(FieldSlot(reader.plan))? {
            match slot {
                Some(slot) => reader.slots[slot] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        reader.finish_row();
        Ok(())
    }
}

/// A row's field name, read as its slot in the plan (`None`: not planned, skip its value).
struct FieldSlot<'p>(&'p RowPlan<'p>);

impl<'de> DeserializeSeed<'de> for FieldSlot<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldSlot<'_> {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Option<usize>, E> {
        Ok(self.0.slot_of(name))
    }
}
