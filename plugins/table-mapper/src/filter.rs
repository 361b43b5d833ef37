//! Filter rule evaluation: numbers compare as numbers, datetimes as instants, text ignoring
//! case like Dataverse does; a missing value (null) only satisfies `null` and `ne`.

use std::cmp::Ordering;

use conduit_plugin::{Value, datetime};

use crate::settings::{Op, Rule};

/// Whether `value` satisfies `rule`; an error when the two cannot be compared (e.g. `gt` on
/// a boolean, or a number column against a non-numeric rule value).
pub fn matches(rule: &Rule, value: &Value) -> Result<bool, String> {
    match (rule.op, value) {
        (Op::Null, value) => return Ok(*value == Value::Null),
        (Op::Notnull, value) => return Ok(*value != Value::Null),
        (op, Value::Null) => return Ok(op == Op::Ne),
        (Op::Contains | Op::Startswith | Op::Endswith, value) => {
            let text = text_form(value).to_lowercase();
            return Ok(match rule.op {
                Op::Contains => text.contains(&rule.text),
                Op::Startswith => text.starts_with(&rule.text),
                _ => text.ends_with(&rule.text),
            });
        }
        _ => {}
    }
    let ordering = match value {
        Value::Integer(number) => compare_number(rule, *number as f64)?,
        Value::Decimal(number) => compare_number(rule, *number)?,
        Value::Picklist { value, label } => match (rule.number, label) {
            (Some(_), _) => compare_number(rule, *value as f64)?,
            // A picklist can also be filtered by its label, e.g. `eq "Preferred Customer"`.
            (None, Some(label)) => label.to_lowercase().as_str().cmp(rule.text.as_str()),
            (None, None) => return Err(not_comparable(rule, "a picklist without a label")),
        },
        Value::Boolean(flag) => {
            if !matches!(rule.op, Op::Eq | Op::Ne) {
                return Err(format!(
                    "filter `{}`: a boolean column only supports eq and ne",
                    rule.description
                ));
            }
            match rule.boolean {
                Some(wanted) => flag.cmp(&wanted),
                None => return Err(not_comparable(rule, "a boolean")),
            }
        }
        Value::Datetime(text) => {
            let instant = datetime::parse(text).map_err(|error| error.to_string())?;
            match rule.instant {
                Some(wanted) => instant.cmp(&wanted),
                None => return Err(not_comparable(rule, "a datetime")),
            }
        }
        Value::Text(text) | Value::Guid(text) | Value::Lookup { id: text, .. } => {
            text.to_lowercase().as_str().cmp(rule.text.as_str())
        }
        Value::Null => Ordering::Less,
    };
    Ok(match rule.op {
        Op::Eq => ordering == Ordering::Equal,
        Op::Ne => ordering != Ordering::Equal,
        Op::Gt => ordering == Ordering::Greater,
        Op::Ge => ordering != Ordering::Less,
        Op::Lt => ordering == Ordering::Less,
        Op::Le => ordering != Ordering::Greater,
        _ => false,
    })
}

fn compare_number(rule: &Rule, number: f64) -> Result<Ordering, String> {
    let wanted = rule
        .number
        .ok_or_else(|| not_comparable(rule, "a number"))?;
    number
        .partial_cmp(&wanted)
        .ok_or_else(|| format!("filter `{}`: {number} is not comparable", rule.description))
}

fn not_comparable(rule: &Rule, column_kind: &str) -> String {
    format!(
        "filter `{}`: column `{}` holds {column_kind} and `{}` is not one",
        rule.description, rule.field, rule.text
    )
}

/// The text a value is matched against by replacements and text operators.
pub fn text_form(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Boolean(flag) => flag.to_string(),
        Value::Integer(number) => number.to_string(),
        Value::Decimal(number) => number.to_string(),
        Value::Text(text) | Value::Datetime(text) | Value::Guid(text) => text.clone(),
        Value::Picklist { value, label } => label.clone().unwrap_or_else(|| value.to_string()),
        Value::Lookup { id, .. } => id.clone(),
    }
}

/// True when `value`'s text form (see [`text_form`]) is `text`, without building the form:
/// the mapper compares every mapped value with the replacements' `from` texts.
pub fn text_form_is(value: &Value, text: &str) -> bool {
    match value {
        Value::Null => text.is_empty(),
        Value::Text(own) | Value::Datetime(own) | Value::Guid(own) => own == text,
        Value::Lookup { id, .. } => id == text,
        Value::Picklist {
            label: Some(label), ..
        } => label == text,
        Value::Picklist { value, label: None } | Value::Integer(value) => is_number(*value, text),
        Value::Boolean(_) | Value::Decimal(_) => text_form(value) == text,
    }
}

/// True when `text` is exactly `number.to_string()`: parsed to the same number, and in the
/// one form `to_string` writes (no `+`, no leading zero, no `-0`).
pub fn is_number(number: i64, text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical =
        !digits.starts_with('+') && !(digits.len() > 1 && digits.starts_with('0')) && text != "-0";
    canonical && text.parse::<i64>() == Ok(number)
}

#[cfg(test)]
mod text_form_tests {
    use super::*;

    #[test]
    fn comparing_a_text_form_says_what_building_it_would() {
        let values = [
            Value::Null,
            Value::Boolean(true),
            Value::Integer(-12),
            Value::Integer(0),
            Value::Integer(i64::MIN),
            Value::Decimal(1.5),
            Value::Text("Ada".into()),
            Value::Datetime("2026-12-01".into()),
            Value::Guid("g-1".into()),
            Value::Picklist {
                value: 7,
                label: None,
            },
            Value::Picklist {
                value: 7,
                label: Some("Seven".into()),
            },
            Value::Lookup {
                table: "account".into(),
                id: "a-1".into(),
            },
        ];
        let texts = [
            "",
            "true",
            "-12",
            "0",
            "-0",
            "+0",
            "00",
            "012",
            "+12",
            "-9223372036854775808",
            "1.5",
            "Ada",
            "ada",
            "2026-12-01",
            "g-1",
            "7",
            "07",
            "Seven",
            "a-1",
            "account",
        ];
        for value in &values {
            for text in texts {
                assert_eq!(
                    text_form_is(value, text),
                    text_form(value) == text,
                    "{value:?} vs {text:?}"
                );
            }
        }
    }
}
