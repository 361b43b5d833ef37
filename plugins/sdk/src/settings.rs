//! Strict settings parsing: the JSON text from `configure` into a plugin's settings type, with
//! errors that name the offending setting by its path (e.g. `filters.rules[0].op`).

use serde::de::DeserializeOwned;

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
}
