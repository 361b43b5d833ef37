//! Fidelity of the Dynamics 365 simulator against a second independent client from another
//! ecosystem: Microsoft's Dataverse SDK for Python (`PowerPlatform-Dataverse-Client`, pinned
//! with its dependencies in `tests/python/dataverse/requirements.txt`). The script
//! `tests/python/dataverse/fidelity.py` discovers the tables, reads the contacts change-tracked,
//! creates, updates and deletes contacts through the SDK and reads the delta; this test checks
//! its summary against what it asked for and against the simulator's own state.
//!
//! The SDK only talks HTTPS, so the simulator is served over TLS with a throwaway CA that the
//! script trusts (`REQUESTS_CA_BUNDLE`); tokens come from azure-identity's
//! `ClientSecretCredential` with the simulator as its authority. Needs python3 (3.10+) with venv and access to PyPI
//! the first time: the pinned packages go, once, into a venv under the target dir, reused while
//! the requirements file is unchanged.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use conduit_sim::dynamics::{DynamicsSim, DynamicsSimOptions};
use conduit_sim::tls::TlsIdentity;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::Value as Json;

// The machine-wide install lock shared with every test binary (this test uses part of it).
#[allow(dead_code)]
#[path = "../../../tests/support/install.rs"]
mod install;

const SEEDED_CONTACTS: usize = 150;
/// The script's page size (`PAGE_SIZE` in fidelity.py).
const PAGE_SIZE: usize = 40;

fn script_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/dataverse")
}

/// The venv with the pinned SDK: `<target tmp>/python-dataverse`, whose stamp holds the
/// requirements it was installed from.
fn venv() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-dataverse")
}

fn run(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what} could not start (is python3 installed?): {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

/// Installs the pinned requirements into [`venv`] unless it already holds exactly them.
fn install_sdk() {
    let requirements_file = script_dir().join("requirements.txt");
    let requirements = std::fs::read_to_string(&requirements_file)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", requirements_file.display()));
    let venv = venv();
    let stamp = venv.join(".installed");
    let installed = || std::fs::read_to_string(&stamp).is_ok_and(|done| done == requirements);
    install::once(installed, || {
        if venv.exists() {
            std::fs::remove_dir_all(&venv)
                .unwrap_or_else(|error| panic!("cannot remove {}: {error}", venv.display()));
        }
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv",
        );
        run(
            Command::new(venv.join("bin/pip"))
                .args([
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--only-binary=:all:",
                    "-r",
                ])
                .arg(&requirements_file),
            "pip install -r tests/python/dataverse/requirements.txt",
        );
        std::fs::write(&stamp, &requirements)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", stamp.display()));
    });
}

/// A CA written to `<dir>/ca.pem` and a certificate it signed for `127.0.0.1`.
fn test_pki(dir: &Path) -> (PathBuf, TlsIdentity) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL takes a leaf whose issuer is its own subject for self-signed.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "conduit simulator test CA");
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let mut server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server params");
    server_params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).expect("writes the CA");
    let identity = TlsIdentity {
        cert_chain_pem: server_cert.pem().into_bytes(),
        key_pem: server_key.serialize_pem().into_bytes(),
    };
    (ca_file, identity)
}

/// Without Python: over HTTPS the token endpoint's discovery document and the links the
/// simulator writes are `https://` ones a client can follow (a client that only talks HTTPS
/// fails on an `http://` next or delta link).
#[tokio::test]
async fn over_https_the_next_and_delta_links_stay_on_https() {
    let pki_dir = tempfile::tempdir().expect("a temp dir");
    let (ca_file, identity) = test_pki(pki_dir.path());
    let sim = DynamicsSim::new(DynamicsSimOptions {
        seed_contacts: 5,
        ..Default::default()
    });
    let server = sim
        .serve_tls("127.0.0.1:0".parse().expect("addr"), &identity)
        .await
        .expect("serves HTTPS");
    let ca = std::fs::read(&ca_file).expect("reads the CA");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("a PEM CA"))
        .build()
        .expect("a client");
    let token: Json = client
        .post(server.token_url("tls-tenant"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "conduit-sim-client"),
            ("client_secret", "conduit-sim-secret"),
            ("scope", &format!("{}.default", server.base_url())),
        ])
        .send()
        .await
        .expect("token over HTTPS")
        .json()
        .await
        .expect("token JSON");
    let bearer = token["access_token"].as_str().expect("a token").to_owned();
    // The OpenID Connect discovery document MSAL-based clients read names that token endpoint.
    let discovery: Json = client
        .get(format!(
            "{}tls-tenant/v2.0/.well-known/openid-configuration",
            server.base_url()
        ))
        .send()
        .await
        .expect("discovery over HTTPS")
        .json()
        .await
        .expect("discovery JSON");
    assert_eq!(discovery["token_endpoint"], server.token_url("tls-tenant"));
    assert_eq!(
        discovery["issuer"],
        format!("{}tls-tenant/v2.0", server.base_url())
    );
    let mut url = format!(
        "{}api/data/v9.2/contacts?$select=lastname",
        server.base_url()
    );
    let mut rows = 0;
    loop {
        let page: Json = client
            .get(&url)
            .bearer_auth(&bearer)
            .header("Prefer", "odata.track-changes,odata.maxpagesize=2")
            .send()
            .await
            .expect("a page over HTTPS")
            .json()
            .await
            .expect("page JSON");
        assert!(
            page["@odata.context"]
                .as_str()
                .is_some_and(|context| context.starts_with("https://")),
            "{page}"
        );
        rows += page["value"].as_array().map_or(0, Vec::len);
        if let Some(next) = page["@odata.nextLink"].as_str() {
            assert!(next.starts_with("https://"), "{next}");
            url = next.to_owned();
            continue;
        }
        let delta = page["@odata.deltaLink"].as_str().expect("a delta link");
        assert!(delta.starts_with("https://"), "{delta}");
        break;
    }
    assert_eq!(rows, 5);
    // A certificate the client does not trust is refused: the server really speaks TLS.
    let untrusting = reqwest::Client::new();
    assert!(untrusting.get(server.base_url()).send().await.is_err());
    server.shutdown().await;
}

fn strings(value: &Json) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|item| item.as_str().expect("a string").to_owned())
        .collect()
}

fn set(value: &Json) -> BTreeSet<String> {
    strings(value).into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsoft_python_sdk_discovers_tracks_and_reads_the_delta() {
    tokio::task::block_in_place(install_sdk);
    let pki_dir = tempfile::tempdir().expect("a temp dir");
    let (ca_file, identity) = test_pki(pki_dir.path());
    let sim = DynamicsSim::new(DynamicsSimOptions {
        seed_contacts: SEEDED_CONTACTS,
        seed_vehicles: 5,
        ..Default::default()
    });
    let server = sim
        .serve_tls("127.0.0.1:0".parse().expect("addr"), &identity)
        .await
        .expect("serves HTTPS");
    let base = server.base_url();
    assert!(base.starts_with("https://"), "{base}");

    let mut script = tokio::process::Command::new(venv().join("bin/python"));
    script
        .arg("fidelity.py")
        .arg(&base)
        .env("REQUESTS_CA_BUNDLE", &ca_file)
        .env("FIDELITY_SEEDED_CONTACTS", SEEDED_CONTACTS.to_string())
        .env_remove("CONDUIT_SIM_D365_CLIENT_ID")
        .env_remove("CONDUIT_SIM_D365_CLIENT_SECRET")
        .current_dir(script_dir())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(180), script.output())
        .await
        .expect("fidelity.py finishes within 3 minutes")
        .expect("fidelity.py starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "fidelity.py failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // Shown with --nocapture, and by the harness when an assertion below fails.
    println!("fidelity.py summary: {stdout}");
    let summary: Json = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("fidelity.py printed no JSON summary ({error}):\n{stdout}"));

    // Discovery: the contact table with its entity set, key and typed columns.
    let discovery = &summary["discovery"];
    let tables = set(&discovery["tables"]);
    for table in ["contact", "new_vehicle", "adobe_emailsend"] {
        assert!(tables.contains(table), "{table} not discovered: {tables:?}");
    }
    assert_eq!(discovery["entity_set"], "contacts");
    assert_eq!(discovery["primary_id"], "contactid");
    assert_eq!(discovery["primary_name"], "fullname");
    let types = &discovery["attribute_types"];
    assert_eq!(types["contactid"], "Uniqueidentifier");
    assert_eq!(types["lastname"], "String");
    assert_eq!(types["gendercode"], "Picklist");
    assert_eq!(types["birthdate"], "DateTime");
    let string_attributes = set(&discovery["string_attributes"]);
    assert!(
        string_attributes.contains("emailaddress1"),
        "{string_attributes:?}"
    );
    assert!(
        !string_attributes.contains("gendercode"),
        "{string_attributes:?}"
    );

    // The SDK's paged read: full pages of PAGE_SIZE and every contact.
    let sizes: Vec<usize> = summary["sdk_paged_read"]["pages"]
        .as_array()
        .expect("page sizes")
        .iter()
        .map(|size| size.as_u64().expect("a size") as usize)
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), SEEDED_CONTACTS);
    assert_eq!(
        sizes.len(),
        SEEDED_CONTACTS.div_ceil(PAGE_SIZE),
        "{sizes:?}"
    );
    assert!(
        sizes[..sizes.len() - 1]
            .iter()
            .all(|size| *size == PAGE_SIZE),
        "{sizes:?}"
    );

    // The change-tracked read: every contact, over several pages, ending with a delta link.
    let tracked = &summary["tracked_read"];
    assert_eq!(tracked["rows"], SEEDED_CONTACTS);
    assert_eq!(tracked["pages"], SEEDED_CONTACTS.div_ceil(PAGE_SIZE));
    assert_eq!(tracked["delta_link_has_token"], true);
    let applied = set(&tracked["preference_applied"]);
    assert!(applied.contains("odata.track-changes"), "{applied:?}");

    // The delta: exactly the created and updated rows, and the deleted ones as $deletedEntity.
    let changes = &summary["changes"];
    let created = set(&changes["created"]);
    let updated = set(&changes["updated"]);
    let deleted = set(&changes["deleted"]);
    assert_eq!((created.len(), updated.len(), deleted.len()), (3, 2, 2));
    let delta = &summary["delta"];
    let changed = strings(&delta["changed"]);
    assert_eq!(changed.len(), 5, "each changed row once: {changed:?}");
    assert_eq!(
        changed.into_iter().collect::<BTreeSet<_>>(),
        created.union(&updated).cloned().collect()
    );
    assert_eq!(set(&delta["removed"]), deleted);
    assert_eq!(strings(&delta["reasons"]), ["deleted"]);
    assert_eq!(
        strings(&delta["deleted_contexts"]),
        ["contacts/$deletedEntity"]
    );
    assert_eq!(delta["context_is_delta"], true);
    for (n, id) in strings(&changes["updated"]).iter().enumerate() {
        assert_eq!(delta["last_names"][id], format!("Updated{n}"));
    }
    assert_eq!(summary["next_delta_rows"], 0);
    // "Female" went through the SDK's picklist metadata lookup as the choice value 2.
    assert_eq!(summary["label_to_choice"], 2);

    // The simulator's own state agrees with what the client saw.
    assert_eq!(sim.count("contact"), SEEDED_CONTACTS + 3 - 2);
    let rows = sim.rows("contact");
    let last_name = |id: &str| {
        rows.iter()
            .find(|row| row["contactid"] == id)
            .map(|row| row["lastname"].clone())
    };
    for id in &created {
        let name = last_name(id).unwrap_or_else(|| panic!("created {id} not in the simulator"));
        assert!(
            name.as_str()
                .is_some_and(|name| name.starts_with("Created")),
            "{name}"
        );
    }
    for id in &deleted {
        assert!(
            last_name(id).is_none(),
            "deleted {id} still in the simulator"
        );
    }
    for (n, id) in strings(&changes["updated"]).iter().enumerate() {
        assert_eq!(last_name(id), Some(Json::from(format!("Updated{n}"))));
    }
    server.shutdown().await;
}
