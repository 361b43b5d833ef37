//! A contact table with one column of every attribute type the reader converts: the fixture of
//! the connector's tests and of the fuzz targets (built only for tests and with `fuzzing`).

use std::collections::HashMap;

use super::metadata::{AttributeMeta, TableMeta};

/// The table the connector tests and the fuzz targets read: one column of every attribute type the reader converts.
pub fn contact_table() -> TableMeta {
    let attribute = |name: &str, kind: &str, targets: &[&str]| {
        (
            name.to_owned(),
            AttributeMeta {
                logical_name: name.to_owned(),
                attribute_type: kind.to_owned(),
                max_length: None,
                targets: targets.iter().map(|target| (*target).to_owned()).collect(),
                date_only: false,
            },
        )
    };
    TableMeta {
        logical_name: "contact".to_owned(),
        entity_set: "contacts".to_owned(),
        primary_id: "contactid".to_owned(),
        change_tracking: true,
        attributes: HashMap::from([
            attribute("contactid", "Uniqueidentifier", &[]),
            attribute("firstname", "String", &[]),
            attribute("description", "Memo", &[]),
            attribute("birthdate", "DateTime", &[]),
            attribute("gendercode", "Picklist", &[]),
            attribute("statecode", "State", &[]),
            attribute("donotbulkemail", "Boolean", &[]),
            attribute("numberofchildren", "Integer", &[]),
            attribute("creditlimit", "Money", &[]),
            attribute("parentcustomerid", "Customer", &["account", "contact"]),
            attribute("yomifullname", "EntityName", &[]),
        ]),
    }
}

/// The columns those tests ask for: every column of [`contact_table`] but the key.
pub fn contact_columns() -> Vec<String> {
    [
        "firstname",
        "description",
        "birthdate",
        "gendercode",
        "statecode",
        "donotbulkemail",
        "numberofchildren",
        "creditlimit",
        "parentcustomerid",
        "yomifullname",
    ]
    .map(str::to_owned)
    .to_vec()
}
