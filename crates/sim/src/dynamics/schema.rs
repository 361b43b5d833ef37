//! The simulated Dataverse schema: tables, attributes, option sets, alternate keys, and their
//! rendering as `EntityDefinitions` / `Attributes` metadata JSON. Seeded with `contact`,
//! `new_vehicle` and the four Adobe email activity tables; changed at run time for drift tests.

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

/// A Dataverse `AttributeType`, spelled as the service spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttributeType {
    /// Two options.
    Boolean,
    /// Date and time (or date only, see [`AttributeDef::date_only`]).
    DateTime,
    /// Decimal number.
    Decimal,
    /// Floating point number.
    Double,
    /// Whole number.
    Integer,
    /// Reference to another table.
    Lookup,
    /// Multi-line text.
    Memo,
    /// Currency.
    Money,
    /// Choice.
    Picklist,
    /// Status (statecode).
    State,
    /// Status reason (statuscode).
    Status,
    /// Single-line text.
    String,
    /// Primary key.
    Uniqueidentifier,
}

impl AttributeType {
    /// The name used in `AttributeType` and in metadata type names.
    pub fn name(self) -> &'static str {
        match self {
            AttributeType::Boolean => "Boolean",
            AttributeType::DateTime => "DateTime",
            AttributeType::Decimal => "Decimal",
            AttributeType::Double => "Double",
            AttributeType::Integer => "Integer",
            AttributeType::Lookup => "Lookup",
            AttributeType::Memo => "Memo",
            AttributeType::Money => "Money",
            AttributeType::Picklist => "Picklist",
            AttributeType::State => "State",
            AttributeType::Status => "Status",
            AttributeType::String => "String",
            AttributeType::Uniqueidentifier => "Uniqueidentifier",
        }
    }

    /// Parses a service type name, e.g. `Integer`.
    pub fn parse(name: &str) -> Option<AttributeType> {
        [
            AttributeType::Boolean,
            AttributeType::DateTime,
            AttributeType::Decimal,
            AttributeType::Double,
            AttributeType::Integer,
            AttributeType::Lookup,
            AttributeType::Memo,
            AttributeType::Money,
            AttributeType::Picklist,
            AttributeType::State,
            AttributeType::Status,
            AttributeType::String,
            AttributeType::Uniqueidentifier,
        ]
        .into_iter()
        .find(|kind| kind.name().eq_ignore_ascii_case(name))
    }

    /// The metadata class the service uses for this type (`StringAttributeMetadata` etc.).
    pub fn metadata_class(self) -> &'static str {
        match self {
            AttributeType::Boolean => "BooleanAttributeMetadata",
            AttributeType::DateTime => "DateTimeAttributeMetadata",
            AttributeType::Decimal => "DecimalAttributeMetadata",
            AttributeType::Double => "DoubleAttributeMetadata",
            AttributeType::Integer => "IntegerAttributeMetadata",
            AttributeType::Lookup => "LookupAttributeMetadata",
            AttributeType::Memo => "MemoAttributeMetadata",
            AttributeType::Money => "MoneyAttributeMetadata",
            AttributeType::Picklist => "PicklistAttributeMetadata",
            AttributeType::State => "StateAttributeMetadata",
            AttributeType::Status => "StatusAttributeMetadata",
            AttributeType::String => "StringAttributeMetadata",
            AttributeType::Uniqueidentifier => "UniqueIdentifierAttributeMetadata",
        }
    }

    /// True for the types whose values come with an option set.
    pub fn has_options(self) -> bool {
        matches!(
            self,
            AttributeType::Picklist | AttributeType::State | AttributeType::Status
        )
    }
}

/// One attribute (column) of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeDef {
    /// The logical name, e.g. `firstname`.
    pub logical_name: String,
    /// Its type.
    pub kind: AttributeType,
    /// The maximum length of strings.
    pub max_length: Option<u32>,
    /// Option values and labels (picklist, state, status).
    pub options: Vec<(i64, String)>,
    /// Labels of `false` and `true` for booleans.
    pub boolean_labels: Option<(String, String)>,
    /// The referenced table of a lookup.
    pub target: Option<String>,
    /// The single-valued navigation property used to bind a lookup (`x@odata.bind`).
    pub navigation: Option<String>,
    /// A date-only DateTime (`DateOnly` format), rendered without a time.
    pub date_only: bool,
    /// Set by the service, never by clients (ignored when written).
    pub read_only: bool,
}

impl AttributeDef {
    fn new(logical_name: &str, kind: AttributeType) -> AttributeDef {
        AttributeDef {
            logical_name: logical_name.to_string(),
            kind,
            max_length: None,
            options: Vec::new(),
            boolean_labels: None,
            target: None,
            navigation: None,
            date_only: false,
            read_only: false,
        }
    }

    fn text(logical_name: &str, max_length: u32) -> AttributeDef {
        AttributeDef {
            max_length: Some(max_length),
            ..AttributeDef::new(logical_name, AttributeType::String)
        }
    }

    fn choice(logical_name: &str, kind: AttributeType, options: &[(i64, &str)]) -> AttributeDef {
        AttributeDef {
            options: options
                .iter()
                .map(|(value, label)| (*value, label.to_string()))
                .collect(),
            ..AttributeDef::new(logical_name, kind)
        }
    }

    fn flag(logical_name: &str) -> AttributeDef {
        AttributeDef {
            boolean_labels: Some(("Allow".to_string(), "Do Not Allow".to_string())),
            ..AttributeDef::new(logical_name, AttributeType::Boolean)
        }
    }

    fn lookup(logical_name: &str, target: &str, navigation: &str) -> AttributeDef {
        AttributeDef {
            target: Some(target.to_string()),
            navigation: Some(navigation.to_string()),
            ..AttributeDef::new(logical_name, AttributeType::Lookup)
        }
    }

    fn system(logical_name: &str, kind: AttributeType) -> AttributeDef {
        AttributeDef {
            read_only: true,
            ..AttributeDef::new(logical_name, kind)
        }
    }

    /// The label of option `value`, if it is one.
    pub fn option_label(&self, value: i64) -> Option<&str> {
        self.options
            .iter()
            .find(|(option, _)| *option == value)
            .map(|(_, label)| label.as_str())
    }

    /// The JSON key of this attribute's value in entity bodies (`_x_value` for lookups).
    pub fn wire_name(&self) -> String {
        self.wire().into_owned()
    }

    /// [`AttributeDef::wire_name`], borrowed from the logical name where it is that.
    pub fn wire(&self) -> std::borrow::Cow<'_, str> {
        if self.kind == AttributeType::Lookup {
            std::borrow::Cow::Owned(format!("_{}_value", self.logical_name))
        } else {
            std::borrow::Cow::Borrowed(&self.logical_name)
        }
    }

    /// The `MetadataId` of this attribute of `table` (stable across runs).
    pub fn metadata_id(&self, table: &str) -> String {
        metadata_id(&format!("{table}.{}", self.logical_name))
    }

    /// The metadata entry of this attribute.
    pub fn metadata(&self, table: &str) -> Json {
        let mut body = json!({
            "@odata.type": format!("#Microsoft.Dynamics.CRM.{}", self.kind.metadata_class()),
            "LogicalName": self.logical_name,
            "SchemaName": self.logical_name,
            "EntityLogicalName": table,
            "AttributeType": self.kind.name(),
            "AttributeTypeName": {"Value": format!("{}Type", self.kind.name())},
            "IsValidForCreate": !self.read_only,
            "IsValidForUpdate": !self.read_only,
            "MetadataId": self.metadata_id(table),
        });
        if let Some(map) = body.as_object_mut() {
            if let Some(max_length) = self.max_length {
                map.insert("MaxLength".to_string(), json!(max_length));
            }
            if let Some(target) = &self.target {
                map.insert("Targets".to_string(), json!([target]));
            }
            if self.kind == AttributeType::DateTime {
                let format = if self.date_only {
                    "DateOnly"
                } else {
                    "DateAndTime"
                };
                map.insert("Format".to_string(), json!(format));
                // Date-only columns keep their day whatever the user's time zone; the others
                // are stored in UTC and shown in the user's zone.
                let behavior = if self.date_only {
                    "DateOnly"
                } else {
                    "UserLocal"
                };
                map.insert("DateTimeBehavior".to_string(), json!({"Value": behavior}));
                map.insert(
                    "CanChangeDateTimeBehavior".to_string(),
                    json!({"Value": false, "CanBeChanged": false, "ManagedPropertyLogicalName": "canchangedatetimebehavior"}),
                );
            }
        }
        body
    }

    /// The `OptionSet` of a choice or boolean attribute, in the service's shape.
    pub fn option_set(&self) -> Option<Json> {
        if self.kind.has_options() {
            let options: Vec<Json> = self
                .options
                .iter()
                .map(|(value, label)| json!({"Value": value, "Label": label_json(label)}))
                .collect();
            return Some(json!({
                "Name": self.logical_name,
                "OptionSetType": self.kind.name(),
                "Options": options,
            }));
        }
        let (false_label, true_label) = self.boolean_labels.as_ref()?;
        Some(json!({
            "Name": self.logical_name,
            "OptionSetType": "Boolean",
            "FalseOption": {"Value": 0, "Label": label_json(false_label)},
            "TrueOption": {"Value": 1, "Label": label_json(true_label)},
        }))
    }
}

fn label_json(label: &str) -> Json {
    let localized = json!({"Label": label, "LanguageCode": 1033, "IsManaged": false});
    json!({"LocalizedLabels": [localized.clone()], "UserLocalizedLabel": localized})
}

/// A stable metadata id derived from a name, so repeated calls agree.
fn metadata_id(name: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// One table (entity).
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    /// The logical name, e.g. `contact`.
    pub logical_name: String,
    /// The entity set, e.g. `contacts`.
    pub entity_set: String,
    /// The primary key attribute.
    pub primary_id: String,
    /// The primary name attribute.
    pub primary_name: String,
    /// The attributes, primary key first.
    pub attributes: Vec<AttributeDef>,
    /// Alternate keys, each a list of attribute names.
    pub alternate_keys: Vec<Vec<String>>,
}

impl TableDef {
    /// The attribute called `name`.
    pub fn attribute(&self, name: &str) -> Option<&AttributeDef> {
        self.attributes
            .iter()
            .find(|attribute| attribute.logical_name == name)
    }

    /// The attribute whose wire name (`_x_value` for lookups) is `name`.
    pub fn attribute_by_wire_name(&self, name: &str) -> Option<&AttributeDef> {
        self.attributes
            .iter()
            .find(|attribute| attribute.wire_name() == name)
    }

    /// The lookup attribute bound through navigation property `navigation`.
    pub fn attribute_by_navigation(&self, navigation: &str) -> Option<&AttributeDef> {
        self.attributes
            .iter()
            .find(|attribute| attribute.navigation.as_deref() == Some(navigation))
    }

    /// The `MetadataId` of this table (stable across runs).
    pub fn metadata_id(&self) -> String {
        metadata_id(&self.logical_name)
    }

    /// The `EntityDefinitions` entry of this table.
    pub fn metadata(&self) -> Json {
        let keys: Vec<Json> = self
            .alternate_keys
            .iter()
            .map(|key| json!({"KeyAttributes": key, "LogicalName": key.join("_")}))
            .collect();
        json!({
            "LogicalName": self.logical_name,
            "SchemaName": self.logical_name,
            "EntitySetName": self.entity_set,
            "LogicalCollectionName": self.entity_set,
            "PrimaryIdAttribute": self.primary_id,
            "PrimaryNameAttribute": self.primary_name,
            "ChangeTrackingEnabled": true,
            "CanChangeTrackingBeEnabled": {"Value": true, "CanBeChanged": false, "ManagedPropertyLogicalName": "canchangetrackingbeenabled"},
            "IsActivity": self.primary_id == "activityid",
            // Custom tables carry a publisher prefix (`new_`, `adobe_`); none is private or an
            // intersect (N:N) table, so every one shows in a table picker.
            "IsCustomEntity": self.logical_name.contains('_'),
            "IsPrivate": false,
            "IsIntersect": false,
            "Keys": keys,
            "MetadataId": self.metadata_id(),
        })
    }
}

fn contact() -> TableDef {
    let mut birthdate = AttributeDef::new("birthdate", AttributeType::DateTime);
    birthdate.date_only = true;
    let mut fullname = AttributeDef::text("fullname", 160);
    fullname.read_only = true;
    TableDef {
        logical_name: "contact".to_string(),
        entity_set: "contacts".to_string(),
        primary_id: "contactid".to_string(),
        primary_name: "fullname".to_string(),
        attributes: vec![
            AttributeDef::new("contactid", AttributeType::Uniqueidentifier),
            AttributeDef::text("firstname", 50),
            AttributeDef::text("lastname", 50),
            fullname,
            AttributeDef::text("emailaddress1", 100),
            AttributeDef::text("telephone1", 50),
            birthdate,
            AttributeDef::choice(
                "gendercode",
                AttributeType::Picklist,
                &[(1, "Male"), (2, "Female")],
            ),
            AttributeDef::choice(
                "statecode",
                AttributeType::State,
                &[(0, "Active"), (1, "Inactive")],
            ),
            AttributeDef::new("creditlimit", AttributeType::Money),
            AttributeDef::new("numberofchildren", AttributeType::Integer),
            AttributeDef::flag("donotemail"),
            AttributeDef::flag("donotbulkemail"),
            AttributeDef::flag("donotphone"),
            AttributeDef::system("createdon", AttributeType::DateTime),
            AttributeDef::system("modifiedon", AttributeType::DateTime),
        ],
        alternate_keys: vec![vec!["emailaddress1".to_string()]],
    }
}

fn vehicle() -> TableDef {
    TableDef {
        logical_name: "new_vehicle".to_string(),
        entity_set: "new_vehicles".to_string(),
        primary_id: "new_vehicleid".to_string(),
        primary_name: "new_name".to_string(),
        attributes: vec![
            AttributeDef::new("new_vehicleid", AttributeType::Uniqueidentifier),
            AttributeDef::text("new_name", 100),
            AttributeDef::text("new_model", 100),
            AttributeDef::new("new_year", AttributeType::Integer),
            AttributeDef::lookup("new_contactid", "contact", "new_contactid"),
            AttributeDef::system("createdon", AttributeType::DateTime),
            AttributeDef::system("modifiedon", AttributeType::DateTime),
        ],
        alternate_keys: vec![vec!["new_name".to_string()]],
    }
}

fn activity(logical_name: &str, entity_set: &str, specific: &[&str]) -> TableDef {
    let mut attributes = vec![
        AttributeDef::new("activityid", AttributeType::Uniqueidentifier),
        AttributeDef::text("subject", 200),
        AttributeDef::lookup("regardingobjectid", "contact", "regardingobjectid_contact"),
        AttributeDef::text("adobe_campaignname", 200),
        AttributeDef::text("adobe_deliveryname", 200),
        AttributeDef::text("adobe_mirrorpageurl", 2000),
    ];
    for name in specific {
        attributes.push(match *name {
            "adobe_trackingurl" => AttributeDef::text(name, 2000),
            "adobe_bouncereason" => AttributeDef::text(name, 500),
            _ => AttributeDef::new(name, AttributeType::DateTime),
        });
    }
    attributes.push(AttributeDef::system("createdon", AttributeType::DateTime));
    attributes.push(AttributeDef::system("modifiedon", AttributeType::DateTime));
    TableDef {
        logical_name: logical_name.to_string(),
        entity_set: entity_set.to_string(),
        primary_id: "activityid".to_string(),
        primary_name: "subject".to_string(),
        attributes,
        alternate_keys: Vec::new(),
    }
}

/// The seeded schema: contact, new_vehicle and the four Adobe email activity tables.
pub fn seeded_tables() -> Vec<TableDef> {
    vec![
        contact(),
        vehicle(),
        activity("adobe_emailsend", "adobe_emailsends", &["adobe_datesent"]),
        activity("adobe_emailopen", "adobe_emailopens", &["adobe_dateopened"]),
        activity(
            "adobe_emailclick",
            "adobe_emailclicks",
            &["adobe_dateclicked", "adobe_trackingurl"],
        ),
        activity(
            "adobe_emailbounce",
            "adobe_emailbounces",
            &["adobe_datebounced", "adobe_bouncereason"],
        ),
    ]
}

/// A schema change for drift tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeChange {
    /// Give the attribute a new type (added when it does not exist).
    Retype(AttributeType),
    /// Remove the attribute; stored values disappear with it.
    Remove,
}

/// Applies `change` to `attribute` of `table`, or says why it cannot.
pub fn apply_change(
    table: &mut TableDef,
    attribute: &str,
    change: &AttributeChange,
) -> Result<(), String> {
    if attribute == table.primary_id {
        return Err(format!(
            "the primary key '{attribute}' of '{}' cannot be changed",
            table.logical_name
        ));
    }
    match change {
        AttributeChange::Remove => {
            let before = table.attributes.len();
            table
                .attributes
                .retain(|existing| existing.logical_name != attribute);
            if table.attributes.len() == before {
                return Err(format!(
                    "'{}' has no attribute '{attribute}'",
                    table.logical_name
                ));
            }
            table
                .alternate_keys
                .retain(|key| !key.iter().any(|part| part == attribute));
        }
        AttributeChange::Retype(kind) => {
            if matches!(
                kind,
                AttributeType::Lookup | AttributeType::Uniqueidentifier
            ) {
                return Err(format!(
                    "the simulator cannot retype to {}: choose a simple type",
                    kind.name()
                ));
            }
            let mut replacement = AttributeDef::new(attribute, *kind);
            if matches!(kind, AttributeType::String | AttributeType::Memo) {
                replacement.max_length = Some(100);
            }
            match table
                .attributes
                .iter_mut()
                .find(|existing| existing.logical_name == attribute)
            {
                Some(existing) => *existing = replacement,
                None => table.attributes.push(replacement),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_schema_has_the_adobe_activity_sets() {
        let sets: Vec<String> = seeded_tables()
            .into_iter()
            .map(|table| table.entity_set)
            .collect();
        for expected in [
            "contacts",
            "new_vehicles",
            "adobe_emailsends",
            "adobe_emailopens",
            "adobe_emailclicks",
            "adobe_emailbounces",
        ] {
            assert!(sets.iter().any(|set| set == expected), "{expected}");
        }
    }

    #[test]
    fn lookups_use_the_underscore_value_wire_name() {
        let vehicle = vehicle();
        let lookup = vehicle.attribute("new_contactid").expect("declared");
        assert_eq!(lookup.wire_name(), "_new_contactid_value");
        assert!(
            vehicle
                .attribute_by_wire_name("_new_contactid_value")
                .is_some()
        );
    }

    #[test]
    fn retyping_replaces_and_removing_drops_the_attribute() {
        let mut table = contact();
        apply_change(
            &mut table,
            "numberofchildren",
            &AttributeChange::Retype(AttributeType::String),
        )
        .expect("simple retype");
        assert_eq!(
            table.attribute("numberofchildren").map(|a| a.kind),
            Some(AttributeType::String)
        );
        apply_change(&mut table, "emailaddress1", &AttributeChange::Remove).expect("exists");
        assert!(table.attribute("emailaddress1").is_none());
        assert!(table.alternate_keys.is_empty());
        assert!(apply_change(&mut table, "contactid", &AttributeChange::Remove).is_err());
    }
}
