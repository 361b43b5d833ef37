//! Deterministic seed data: contacts with varied names, picklists, booleans and some inactive
//! rows, and vehicles linked to them. The same counts always give the same rows and ids.

use serde_json::{Map, Value as Json, json};

use super::store::{Store, WriteMode};

const FIRST_NAMES: [&str; 12] = [
    "Ann", "Bob", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kai",
    "Lena",
];
const LAST_NAMES: [&str; 10] = [
    "Andersen", "Brown", "Costa", "Dubois", "Evans", "Fischer", "García", "Hughes", "Ivanova",
    "O'Neil",
];
const MODELS: [&str; 5] = ["Roadster", "Tourer", "Hatch", "Wagon", "Pickup"];

/// The GUID of seeded row `index` of `table`, stable across runs.
pub fn seeded_id(table: &str, index: usize) -> String {
    let mut rng = fastrand::Rng::with_seed(seed_of(table) ^ index as u64);
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn seed_of(table: &str) -> u64 {
    table.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    })
}

fn object(value: Json) -> Map<String, Json> {
    match value {
        Json::Object(map) => map,
        _ => Map::new(),
    }
}

/// Adds `contacts` contacts and `vehicles` vehicles to `store`.
pub fn seed(store: &mut Store, contacts: usize, vehicles: usize) -> Result<(), String> {
    let mut rng = fastrand::Rng::with_seed(20_260_101);
    for index in 0..contacts {
        let first = FIRST_NAMES[index % FIRST_NAMES.len()];
        let last = LAST_NAMES[(index / FIRST_NAMES.len()) % LAST_NAMES.len()];
        let email = format!(
            "{}.{}.{index}@example.com",
            first.to_lowercase(),
            last.to_lowercase().replace('\'', "")
        );
        let gender = match index % 5 {
            0 => Json::Null,
            n if n % 2 == 0 => json!(2),
            _ => json!(1),
        };
        let fields = object(json!({
            "firstname": first,
            "lastname": last,
            "emailaddress1": email,
            "telephone1": format!("+1 555 {:04}", index % 10_000),
            "birthdate": format!("{}-{:02}-{:02}", 1950 + rng.usize(0..55), rng.usize(1..13), rng.usize(1..29)),
            "gendercode": gender,
            "statecode": if index % 10 == 9 { 1 } else { 0 },
            "creditlimit": f64::from(rng.u32(0..500) * 100),
            "numberofchildren": rng.i64(0..5),
            "donotemail": index % 7 == 3,
            "donotbulkemail": index % 11 == 5,
            "donotphone": rng.bool(),
        }));
        store
            .write(
                "contact",
                &seeded_id("contact", index),
                &fields,
                WriteMode::Upsert,
                None,
            )
            .map_err(|error| format!("seeding contact {index}: {}", error.message))?;
    }
    for index in 0..vehicles {
        let mut fields = object(json!({
            "new_name": format!("VIN{index:08}"),
            "new_model": MODELS[index % MODELS.len()],
            "new_year": 2000 + (index % 26) as i64,
        }));
        if contacts > 0 {
            let owner = seeded_id("contact", (index * 7) % contacts);
            fields.insert(
                "new_contactid@odata.bind".to_string(),
                json!(format!("/contacts({owner})")),
            );
        }
        store
            .write(
                "new_vehicle",
                &seeded_id("new_vehicle", index),
                &fields,
                WriteMode::Upsert,
                None,
            )
            .map_err(|error| format!("seeding vehicle {index}: {}", error.message))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::schema::seeded_tables;
    use super::super::store::Clock;
    use super::*;

    #[test]
    fn seeding_is_deterministic_and_varied() {
        let clock = Clock::new(chrono::Utc::now());
        let mut first = Store::new(seeded_tables(), clock.clone());
        let mut second = Store::new(seeded_tables(), clock);
        seed(&mut first, 50, 10).expect("valid seed");
        seed(&mut second, 50, 10).expect("valid seed");
        let contacts = first.table("contact").expect("seeded");
        assert_eq!(contacts.rows.len(), 50);
        let id = seeded_id("contact", 3);
        assert_eq!(
            contacts.rows[&id].fields["emailaddress1"],
            second.table("contact").expect("seeded").rows[&id].fields["emailaddress1"]
        );
        let inactive = contacts
            .rows
            .values()
            .filter(|row| row.fields["statecode"] == json!(1))
            .count();
        assert_eq!(inactive, 5);
        assert_eq!(first.table("new_vehicle").expect("seeded").rows.len(), 10);
    }
}
