//! The simulated Campaign data model: resource definitions (`profile`, `cusVehicle`), their
//! `resourceType` metadata JSON, and validation of written values (types, lengths, enumerations,
//! read-only fields) with Campaign's RST-style error texts.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::wire::{datetime_text, parse_datetime};

/// A field type as Campaign's metadata names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// Text with a maximum length.
    String,
    /// A 32-bit whole number (XTK `long`).
    Long,
    /// A double-precision number.
    Double,
    /// True or false.
    Boolean,
    /// A day, `YYYY-MM-DD`.
    Date,
    /// An instant, `YYYY-MM-DD hh:mm:ss.mmmZ`.
    Datetime,
    /// One of a fixed list of names.
    Enumeration,
}

impl FieldType {
    fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Long => "long",
            FieldType::Double => "double",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::Datetime => "datetime",
            FieldType::Enumeration => "enumeration",
        }
    }
}

/// One field of a simulated resource.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDef {
    /// The API name.
    pub name: String,
    /// The display label.
    pub label: String,
    /// The type.
    pub field_type: FieldType,
    /// Maximum length of string fields.
    pub length: Option<usize>,
    /// Allowed names of enumeration fields.
    pub values: Vec<String>,
    /// Set by Campaign itself (created, lastModified).
    pub read_only: bool,
}

impl FieldDef {
    fn new(name: &str, label: &str, field_type: FieldType) -> FieldDef {
        FieldDef {
            name: name.to_owned(),
            label: label.to_owned(),
            field_type,
            length: None,
            values: Vec::new(),
            read_only: false,
        }
    }

    fn string(name: &str, label: &str, length: usize) -> FieldDef {
        FieldDef {
            length: Some(length),
            ..FieldDef::new(name, label, FieldType::String)
        }
    }

    /// The value a record shows for the field when nothing was written.
    pub fn empty_value(&self) -> Value {
        match self.field_type {
            FieldType::String | FieldType::Date | FieldType::Datetime => json!(""),
            FieldType::Long | FieldType::Double => json!(0),
            FieldType::Boolean => json!(false),
            FieldType::Enumeration => self.values.first().map_or(json!(""), |name| json!(name)),
        }
    }

    /// The field's entry in `resourceType` metadata.
    pub fn metadata(&self) -> Value {
        let mut field = json!({
            "apiName": self.name,
            "label": self.label,
            "type": self.field_type.name(),
            "resType": self.field_type.name(),
            "category": "profile",
            "sortable": true,
            "readOnly": self.read_only,
        });
        if let Some(length) = self.length {
            field["length"] = json!(length);
        }
        if self.field_type == FieldType::Enumeration {
            field["values"] = self
                .values
                .iter()
                .enumerate()
                .map(|(index, name)| json!({"name": name, "label": name, "value": index}))
                .collect();
        }
        field
    }

    /// Checks a written value and returns what is stored; the error is the RST detail text.
    /// Text already in its stored form is kept as it came, not copied.
    pub fn accept(&self, value: Value) -> Result<Value, String> {
        if self.read_only {
            return Err(format!(
                "Cannot update the '{}' property that is read-only.",
                self.name
            ));
        }
        if value.is_null() {
            return Ok(self.empty_value());
        }
        let invalid = |value: &Value| {
            format!(
                "XTK-170006 Invalid value '{value}' for field '{}' of type '{}'.",
                self.name,
                self.field_type.name()
            )
        };
        match self.field_type {
            FieldType::String => {
                let text = value.as_str().ok_or_else(|| invalid(&value))?;
                let length = text.chars().count();
                if let Some(maximum) = self.length
                    && length > maximum
                {
                    return Err(format!(
                        "XTK-170014 Value too long for field '{}' ({length} characters, maximum {maximum}).",
                        self.name
                    ));
                }
                Ok(value)
            }
            FieldType::Long => {
                let number = value.as_i64().ok_or_else(|| invalid(&value))?;
                i32::try_from(number).map_err(|_| invalid(&value))?;
                Ok(json!(number))
            }
            FieldType::Double => Ok(json!(value.as_f64().ok_or_else(|| invalid(&value))?)),
            FieldType::Boolean => Ok(json!(value.as_bool().ok_or_else(|| invalid(&value))?)),
            FieldType::Date => {
                let text = value.as_str().ok_or_else(|| invalid(&value))?;
                let day = text.get(..10).unwrap_or(text);
                chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|_| invalid(&value))?;
                Ok(json!(day))
            }
            FieldType::Datetime => {
                let text = value.as_str().ok_or_else(|| invalid(&value))?;
                let instant = parse_datetime(text).ok_or_else(|| invalid(&value))?;
                Ok(json!(datetime_text(instant)))
            }
            FieldType::Enumeration => {
                let name = value.as_str().ok_or_else(|| invalid(&value))?;
                if self.values.iter().any(|allowed| allowed == name) {
                    Ok(value)
                } else {
                    Err(format!(
                        "XTK-170006 Value '{name}' is not part of the enumeration of field '{}' ({}).",
                        self.name,
                        self.values.join(", ")
                    ))
                }
            }
        }
    }
}

/// One simulated resource type.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    /// The resource name, e.g. `profile`.
    pub name: String,
    /// The display label.
    pub label: String,
    /// The XTK schema, e.g. `nms:recipient`.
    pub xtk_schema: String,
    /// The identification key field that `by<Key>` filters on.
    pub identification_key: String,
    /// The fields, in metadata order.
    pub fields: Vec<FieldDef>,
}

impl Schema {
    /// True for custom resources (only reachable under `profileAndServicesExt`).
    pub fn is_custom(&self) -> bool {
        self.name.starts_with("cus")
    }

    /// The field with this API name.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|field| field.name == name)
    }

    /// The `by<Key>` filter name of the identification key.
    pub fn key_filter(&self) -> String {
        super::wire::key_filter_name(&self.identification_key)
    }

    /// The full `resourceType/<name>` metadata document.
    pub fn metadata(&self, api_root: &str) -> Value {
        let mut content = serde_json::Map::new();
        content.insert(
            "PKey".into(),
            json!({"apiName": "PKey", "label": "Primary key", "type": "string", "resType": "string", "readOnly": true}),
        );
        for field in &self.fields {
            content.insert(field.name.clone(), field.metadata());
        }
        json!({
            "content": content,
            "data": format!("/profileAndServicesExt/{}/", self.name),
            "filters": {"href": format!("{api_root}/profileAndServicesExt/{}/filters", self.name)},
            "label": self.label,
            "name": self.name,
            "schema": self.xtk_schema,
            "type": "item",
            "identificationKey": self.identification_key,
        })
    }
}

/// True for the opt-out attributes that Campaign exports.
pub fn is_opt_out_field(name: &str) -> bool {
    super::wire::is_opt_out_field(name)
}

/// The out-of-box `profile` resource with the fields the integration uses.
pub fn profile_schema() -> Schema {
    let mut gender = FieldDef::new("gender", "Gender", FieldType::Enumeration);
    gender.values = vec!["unknown".into(), "male".into(), "female".into()];
    let mut fields = vec![
        FieldDef::string("email", "Email", 128),
        FieldDef::string("firstName", "First name", 30),
        FieldDef::string("lastName", "Last name", 50),
        FieldDef::string("externalId", "External Resource ID", 100),
        gender,
        FieldDef::new("birthDate", "Birth date", FieldType::Date),
        FieldDef::string("phone", "Phone", 32),
    ];
    for (name, label) in [
        ("blackList", "No longer contact (by any channel)"),
        ("blackListEmail", "No longer contact (email)"),
        ("blackListPhone", "No longer contact (phone)"),
        ("blackListFax", "No longer contact (fax)"),
        ("blackListMobile", "No longer contact (SMS)"),
        ("blackListPostalMail", "No longer contact (direct mail)"),
        ("ccpaOptOut", "CCPA opt-out"),
    ] {
        fields.push(FieldDef::new(name, label, FieldType::Boolean));
    }
    for (name, label) in [("lastModified", "Last modified"), ("created", "Created")] {
        fields.push(FieldDef {
            read_only: true,
            ..FieldDef::new(name, label, FieldType::Datetime)
        });
    }
    Schema {
        name: "profile".into(),
        label: "Profiles".into(),
        xtk_schema: "nms:recipient".into(),
        identification_key: "externalId".into(),
        fields,
    }
}

/// The custom resource `cusVehicle`, linked to profiles by the parent's CRM ID.
pub fn vehicle_schema() -> Schema {
    Schema {
        name: "cusVehicle".into(),
        label: "Vehicles".into(),
        xtk_schema: "cus:vehicle".into(),
        identification_key: "cusCrmId".into(),
        fields: vec![
            FieldDef::string("cusCrmId", "CRM ID", 100),
            FieldDef::string("cusName", "Name", 100),
            FieldDef::string("cusModel", "Model", 100),
            FieldDef::new("cusYear", "Year", FieldType::Long),
            FieldDef::string("cusProfileCrmId", "Profile CRM ID", 100),
        ],
    }
}

/// Now as Campaign date text.
pub fn now_text() -> String {
    datetime_text(Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_name_longer_than_30_is_refused() {
        let schema = profile_schema();
        let first_name = schema.field("firstName").unwrap();
        assert!(first_name.accept(json!("a".repeat(30))).is_ok());
        let error = first_name.accept(json!("a".repeat(31))).unwrap_err();
        assert!(error.contains("maximum 30"), "{error}");
    }

    #[test]
    fn enumerations_dates_and_read_only_fields_are_checked() {
        let schema = profile_schema();
        let gender = schema.field("gender").unwrap();
        assert_eq!(gender.accept(json!("female")).unwrap(), "female");
        assert!(gender.accept(json!("other")).is_err());
        let birth = schema.field("birthDate").unwrap();
        assert_eq!(birth.accept(json!("1990-02-03")).unwrap(), "1990-02-03");
        assert!(birth.accept(json!("03/02/1990")).is_err());
        let created = schema.field("created").unwrap();
        assert!(
            created
                .accept(json!("2020-01-01"))
                .unwrap_err()
                .contains("read-only")
        );
    }

    #[test]
    fn metadata_lists_types_lengths_and_values() {
        let metadata = profile_schema().metadata("http://x/ORG/campaign");
        assert_eq!(metadata["content"]["firstName"]["length"], 30);
        assert_eq!(metadata["content"]["birthDate"]["type"], "date");
        assert_eq!(metadata["content"]["gender"]["values"][1]["name"], "male");
        assert_eq!(metadata["name"], "profile");
    }
}
