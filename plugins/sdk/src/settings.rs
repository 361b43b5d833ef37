//! Settings parsing: the JSON text `configure` receives into a plugin's types, with errors
//! that name the offending setting by its path (e.g. `settings.filters.rules[0].op`).
//!
//! `configure` receives an object holding the host's documented keys for the workflow (for an
//! Ingress mapping `name`, `source`, `destination`, `key`, `fields`, ...) and `settings`, the
//! plugin's own table. [`own`] parses the own table strictly (a key the plugin does not know
//! is reported by name); [`host`] reads the host's keys the plugin asks for and ignores the
//! rest, so that a host adding a key never breaks a plugin.

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Visitor};

/// Parses `json` into `T`; the error names the setting's path and what is wrong with it.
pub fn parse<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let parsed: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        // serde_json appends "at line L column C": meaningless to someone editing TOML.
        let message = inner.to_string();
        let message = match message.find(" at line ") {
            Some(cut) => message[..cut].to_owned(),
            None => message,
        };
        if path.is_empty() || path == "." {
            format!("invalid settings: {message}")
        } else {
            format!("invalid setting `{path}`: {message}")
        }
    })?;
    deserializer
        .end()
        .map_err(|error| format!("invalid settings: {error}"))?;
    Ok(parsed)
}

/// Parses the plugin's own `settings` table of `json` (`{}` when absent) into `T`, strictly:
/// a key `T` does not name is an error naming it, even without `deny_unknown_fields`.
pub fn own<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    let mut whole: serde_json::Map<String, serde_json::Value> = parse(json)?;
    let table = whole
        .remove("settings")
        .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
    let serde_json::Value::Object(table) = table else {
        return Err("invalid setting `settings`: expected a table".to_owned());
    };
    if let Some(known) = field_names::<T>() {
        let unknown: Vec<&str> = table
            .keys()
            .map(String::as_str)
            .filter(|key| !known.contains(key))
            .collect();
        if let Some(first) = unknown.first() {
            let expected = if known.is_empty() {
                "the plugin takes no settings".to_owned()
            } else {
                format!("expected {}", quoted(known))
            };
            return Err(format!(
                "invalid setting `settings.{first}`: unknown setting{}; {expected}",
                if unknown.len() > 1 {
                    format!(" (also {})", quoted(&unknown[1..]))
                } else {
                    String::new()
                }
            ));
        }
    }
    let text = serde_json::Value::Object(table).to_string();
    parse::<T>(&text).map_err(|error| {
        error
            .replacen("invalid setting `", "invalid setting `settings.", 1)
            .replacen("invalid settings: ", "invalid setting `settings`: ", 1)
    })
}

/// Parses the host's keys of `json` that `T` names (e.g. `destination`, `fields`), ignoring
/// the others and the plugin's own `settings`; derive `T` without `deny_unknown_fields`.
pub fn host<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    parse(json)
}

/// The own settings of a plugin that takes none: `own::<NoSettings>` refuses any key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The field names of a struct type `T` (after renames), learned by asking `T` to deserialize
/// itself from a probe that stops at the struct's field list; `None` when `T` is no plain
/// struct (a map, or a struct with `#[serde(flatten)]`), which is then as strict as its derive.
fn field_names<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    struct Probe;
    #[derive(Debug)]
    struct Found(Option<&'static [&'static str]>);
    impl std::fmt::Display for Found {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Found {}
    impl de::Error for Found {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Found(None)
        }
    }
    impl<'de> de::Deserializer<'de> for Probe {
        type Error = Found;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
            Err(Found(None))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Found> {
            Err(Found(Some(fields)))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    match T::deserialize(Probe) {
        Err(Found(fields)) => fields,
        Ok(_) => None,
    }
}

/// A serde default of `true`, for switches that are on unless turned off.
pub fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        flag: bool,
    }

    #[test]
    fn errors_name_the_path_of_the_bad_setting() {
        let error =
            super::parse::<Outer>(r#"{"inner": [{"flag": true}, {"flga": true}]}"#).unwrap_err();
        assert!(error.contains("`inner[1].flga`"), "{error}");
        assert!(error.contains("unknown field"), "{error}");
        assert!(!error.contains("line"), "{error}");
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Own {
        required: String,
        #[serde(default)]
        lowercase: bool,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Host {
        destination: String,
    }

    const GIVEN: &str = r#"{"name": "contacts", "destination": "profile", "apply_deletes": true,
        "settings": {"required": "emailaddress1"}}"#;

    #[test]
    fn own_settings_ignore_the_host_keys_and_host_keys_ignore_the_rest() {
        let own: Own = super::own(GIVEN).unwrap();
        assert_eq!(own.required, "emailaddress1");
        let host: Host = super::host(GIVEN).unwrap();
        assert_eq!(host.destination, "profile");
    }

    #[test]
    fn unknown_own_settings_are_reported_by_name_without_deny_unknown_fields() {
        let json = r#"{"destination": "p", "settings": {"required": "x", "lowercse": true}}"#;
        let error = super::own::<Own>(json).unwrap_err();
        assert!(error.contains("`settings.lowercse`"), "{error}");
        assert!(error.contains("`required`, `lowercase`"), "{error}");
        let error = super::own::<super::NoSettings>(json).unwrap_err();
        assert!(error.contains("takes no settings"), "{error}");
        assert_eq!(
            super::own::<super::NoSettings>("{}"),
            Ok(super::NoSettings {})
        );
    }

    #[test]
    fn own_setting_errors_carry_the_settings_prefix() {
        let error = super::own::<Own>(r#"{"settings": {"required": 3}}"#).unwrap_err();
        assert!(error.contains("`settings.required`"), "{error}");
        let error = super::own::<Own>(r#"{"settings": {}}"#).unwrap_err();
        assert!(
            error.contains("`settings`: missing field `required`"),
            "{error}"
        );
    }
}
