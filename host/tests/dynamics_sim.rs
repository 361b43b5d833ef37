//! The Dynamics 365 simulator over HTTP with a plain client: the `conduit sim dynamics`
//! acceptance path, change tracking, writes, `$batch`, errors and the control API.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conduit_sim::dynamics::{DynamicsSim, DynamicsSimOptions, seeded_id};
use serde_json::{Value, json};

const CLIENT_ID: &str = "conduit-sim-client";
const CLIENT_SECRET: &str = "conduit-sim-secret";

/// Kills the simulator process when the test ends, however it ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address a `conduit sim` child prints once it listens ("... listening on <url>").
fn listening_url(child: &mut Child) -> String {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let url = lines
        .find_map(|line| {
            line.ok()?
                .split_once(" listening on ")
                .map(|(_, url)| url.trim().to_string())
        })
        .expect("the simulator prints its address");
    // Keep reading (and discarding) its output so that it never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    url
}

async fn token(client: &reqwest::Client, base: &str, tenant: &str) -> String {
    let response = client
        .post(format!("{base}{tenant}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("scope", "https://org.crm.dynamics.com/.default"),
        ])
        .send()
        .await
        .expect("token endpoint reachable");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    body["access_token"].as_str().expect("a token").to_string()
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    prefer: Option<&str>,
) -> reqwest::Response {
    let mut request = client
        .get(url)
        .bearer_auth(token)
        .header("Accept", "application/json")
        .header("OData-MaxVersion", "4.0")
        .header("OData-Version", "4.0");
    if let Some(prefer) = prefer {
        request = request.header("Prefer", prefer);
    }
    request.send().await.expect("simulator reachable")
}

#[tokio::test]
async fn cli_simulator_pages_12000_contacts_and_an_unchanged_delta_is_empty() {
    // Port 0: the simulator binds a port itself and prints it, so no other process can take
    // a port picked in advance before the simulator binds it.
    let child = Command::new(env!("CARGO_BIN_EXE_conduit"))
        .args(["sim", "dynamics", "--port", "0", "--seed-contacts", "12000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the conduit binary starts");
    let mut guard = ChildGuard(child);
    let base = listening_url(&mut guard.0);
    let client = reqwest::Client::new();
    let started = Instant::now();
    while reqwest::get(format!("{base}_sim/tables/contact/count"))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the simulator did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = token(&client, &base, "any-tenant-at-all").await;

    let prefer = "odata.track-changes,odata.maxpagesize=5000";
    let mut url = format!("{base}api/data/v9.2/contacts?$select=firstname,lastname,emailaddress1");
    let mut ids = std::collections::HashSet::new();
    let mut pages = 0;
    let delta_link = loop {
        let response = get(&client, &url, &token, Some(prefer)).await;
        assert_eq!(response.status(), 200);
        let applied = response.headers()["preference-applied"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(applied.contains("odata.track-changes"), "{applied}");
        assert!(applied.contains("odata.maxpagesize=5000"), "{applied}");
        let body: Value = response.json().await.expect("json");
        pages += 1;
        for row in body["value"].as_array().expect("a value list") {
            ids.insert(
                row["contactid"]
                    .as_str()
                    .expect("primary key always returned")
                    .to_string(),
            );
        }
        if let Some(next) = body["@odata.nextLink"].as_str() {
            assert!(body.get("@odata.deltaLink").is_none());
            url = next.to_string();
        } else {
            break body["@odata.deltaLink"]
                .as_str()
                .expect("a delta link at the end")
                .to_string();
        }
    };
    assert_eq!(ids.len(), 12_000);
    assert_eq!(pages, 3);
    assert!(delta_link.contains("$deltatoken="), "{delta_link}");

    let response = get(&client, &delta_link, &token, None).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["value"], json!([]));
    assert!(
        body["@odata.context"]
            .as_str()
            .expect("context")
            .ends_with("/$delta")
    );
    assert!(body["@odata.deltaLink"].is_string());
}

/// `conduit sim dynamics --tls-cert --tls-key` serves HTTPS with that certificate (the links it
/// writes stay on HTTPS); the Campaign simulator, plain HTTP only, refuses the options.
#[tokio::test]
async fn cli_simulator_serves_https_with_the_given_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "conduit sim CLI test CA");
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, server_cert.pem()).expect("writes the certificate");
    std::fs::write(&key, server_key.serialize_pem()).expect("writes the key");

    let child = Command::new(env!("CARGO_BIN_EXE_conduit"))
        .args(["sim", "dynamics", "--port", "0", "--seed-contacts", "3"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the conduit binary starts");
    let mut guard = ChildGuard(child);
    let base = listening_url(&mut guard.0);
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca_cert.pem().as_bytes()).expect("a PEM CA"),
        )
        .build()
        .expect("a client");
    let token = token(&client, &base, "tls-tenant").await;
    let page: Value = get(
        &client,
        &format!("{base}api/data/v9.2/contacts?$select=lastname"),
        &token,
        Some("odata.maxpagesize=2"),
    )
    .await
    .json()
    .await
    .expect("json");
    let next = page["@odata.nextLink"].as_str().expect("a next link");
    assert!(next.starts_with(&base), "{next}");
    drop(guard);

    let refused = Command::new(env!("CARGO_BIN_EXE_conduit"))
        .args(["sim", "campaign", "--port", "0"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .expect("the conduit binary runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("plain HTTP only"), "{stderr}");
}

async fn in_process(
    contacts: usize,
) -> (
    DynamicsSim,
    conduit_sim::dynamics::SimServer,
    reqwest::Client,
    String,
    String,
) {
    let sim = DynamicsSim::new(DynamicsSimOptions {
        seed_contacts: contacts,
        seed_vehicles: 3,
        ..Default::default()
    });
    let server = sim
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serves");
    let client = reqwest::Client::new();
    let base = server.base_url();
    let token = token(&client, &base, "t").await;
    (sim, server, client, format!("{base}api/data/v9.2/"), token)
}

#[tokio::test]
async fn delta_lists_upserts_then_deletes_including_rows_created_and_deleted_between_polls() {
    let (sim, _server, client, api, token) = in_process(5).await;
    let first = get(
        &client,
        &format!("{api}contacts?$select=lastname"),
        &token,
        Some("odata.track-changes"),
    )
    .await;
    let body: Value = first.json().await.expect("json");
    let delta = body["@odata.deltaLink"]
        .as_str()
        .expect("delta link")
        .to_string();

    let changed = seeded_id("contact", 1);
    let deleted = seeded_id("contact", 2);
    let transient = "11111111-1111-4111-8111-111111111111";
    sim.upsert(
        "contact",
        &changed,
        json!({"lastname": "Changed"})
            .as_object()
            .cloned()
            .expect("object"),
    )
    .expect("upsert");
    sim.delete("contact", &deleted).expect("delete");
    sim.upsert(
        "contact",
        transient,
        json!({"lastname": "Brief"})
            .as_object()
            .cloned()
            .expect("object"),
    )
    .expect("upsert");
    sim.delete("contact", transient).expect("delete");

    let body: Value = get(&client, &delta, &token, None)
        .await
        .json()
        .await
        .expect("json");
    let value = body["value"].as_array().expect("list");
    assert_eq!(value.len(), 3, "{value:?}");
    assert_eq!(value[0]["contactid"], changed.as_str());
    assert_eq!(value[0]["lastname"], "Changed");
    assert_eq!(value[1]["id"], deleted.as_str());
    assert_eq!(value[1]["reason"], "deleted");
    assert!(
        value[1]["@odata.context"]
            .as_str()
            .expect("context")
            .ends_with("contacts/$deletedEntity")
    );
    assert_eq!(value[2]["id"], transient);
}

#[tokio::test]
async fn change_tracking_rejects_filter_orderby_expand_and_top_with_the_documented_message() {
    let (_sim, _server, client, api, token) = in_process(1).await;
    for option in [
        "filter=lastname eq 'x'",
        "orderby=lastname",
        "expand=x",
        "top=3",
    ] {
        let url = format!("{api}contacts?$select=lastname&${option}");
        let response = get(&client, &url, &token, Some("odata.track-changes")).await;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.expect("json");
        let name = option.split('=').next().expect("name");
        assert_eq!(
            body["error"]["message"],
            format!(
                "The \"${name}\" query parameter isn't supported when Change Tracking is enabled."
            )
        );
    }
}

#[tokio::test]
async fn delta_token_older_than_seven_days_is_rejected() {
    let (sim, _server, client, api, token) = in_process(1).await;
    let body: Value = get(
        &client,
        &format!("{api}contacts?$select=lastname"),
        &token,
        Some("odata.track-changes"),
    )
    .await
    .json()
    .await
    .expect("json");
    let delta = body["@odata.deltaLink"]
        .as_str()
        .expect("delta")
        .to_string();
    sim.advance_clock(Duration::from_secs(8 * 24 * 3600));
    let token = self::token(&client, api.trim_end_matches("api/data/v9.2/"), "t").await;
    let response = get(&client, &delta, &token, None).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("expired")
    );
}

#[tokio::test]
async fn api_without_a_valid_bearer_token_is_401_and_bad_secret_is_invalid_client() {
    let (_sim, server, client, api, _token) = in_process(1).await;
    let response = client
        .get(format!("{api}WhoAmI"))
        .send()
        .await
        .expect("reachable");
    assert_eq!(response.status(), 401);
    let response = client
        .get(format!("{api}WhoAmI"))
        .bearer_auth("forged")
        .send()
        .await
        .expect("reachable");
    assert_eq!(response.status(), 401);
    let response = client
        .post(server.token_url("t"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", "wrong"),
            ("scope", "x/.default"),
        ])
        .send()
        .await
        .expect("reachable");
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "invalid_client");
}

#[tokio::test]
async fn patch_upserts_if_match_updates_only_and_delete_of_missing_row_is_404() {
    let (sim, _server, client, api, token) = in_process(0).await;
    let id = "22222222-2222-4222-8222-222222222222";
    let patch = |if_match: Option<&str>| {
        let mut request = client
            .patch(format!("{api}contacts({id})"))
            .bearer_auth(&token)
            .json(&json!({"firstname": "Zoe", "gendercode": 2}));
        if let Some(tag) = if_match {
            request = request.header("If-Match", tag);
        }
        request.send()
    };
    let response = patch(Some("*")).await.expect("reachable");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["error"]["message"],
        format!("contact With Id = {id} Does Not Exist")
    );
    let response = patch(None).await.expect("reachable");
    assert_eq!(response.status(), 204);
    assert!(
        response.headers()["odata-entityid"]
            .to_str()
            .expect("ascii")
            .ends_with(&format!("contacts({id})"))
    );
    assert_eq!(sim.rows("contact")[0]["fullname"], "Zoe");
    assert_eq!(patch(Some("*")).await.expect("reachable").status(), 204);

    let response = client
        .patch(format!("{api}contacts(emailaddress1='zoe@example.com')"))
        .bearer_auth(&token)
        .header("If-None-Match", "*")
        .json(&json!({"lastname": "Alt"}))
        .send()
        .await
        .expect("reachable");
    assert_eq!(response.status(), 204, "alternate key creates");
    assert_eq!(sim.count("contact"), 2);

    let delete = || {
        client
            .delete(format!("{api}contacts({id})"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(delete().await.expect("reachable").status(), 204);
    assert_eq!(delete().await.expect("reachable").status(), 404);
}

#[tokio::test]
async fn batch_with_continue_on_error_answers_every_part_and_changesets_are_atomic() {
    let (sim, _server, client, api, token) = in_process(0).await;
    let good = "33333333-3333-4333-8333-333333333333";
    let body = format!(
        "--batch_x\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
PATCH /api/data/v9.2/contacts({good}) HTTP/1.1\r\nContent-Type: application/json; type=entry\r\n\r\n{{\"lastname\":\"Good\"}}\r\n\
--batch_x\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
PATCH /api/data/v9.2/contacts({good}) HTTP/1.1\r\nContent-Type: application/json; type=entry\r\n\r\n{{\"gendercode\":7}}\r\n\
--batch_x\r\nContent-Type: multipart/mixed; boundary=changeset_y\r\n\r\n\
--changeset_y\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 1\r\n\r\n\
POST /api/data/v9.2/contacts HTTP/1.1\r\nContent-Type: application/json; type=entry\r\n\r\n{{\"lastname\":\"InSet\"}}\r\n\
--changeset_y\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 2\r\n\r\n\
PATCH $1 HTTP/1.1\r\nContent-Type: application/json; type=entry\r\n\r\n{{\"nosuchfield\":1}}\r\n\
--changeset_y--\r\n\
--batch_x--\r\n"
    );
    let response = client
        .post(format!("{api}$batch"))
        .bearer_auth(&token)
        .header("Content-Type", "multipart/mixed; boundary=batch_x")
        .header("Prefer", "odata.continue-on-error")
        .body(body)
        .send()
        .await
        .expect("reachable");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("text");
    assert!(text.contains("HTTP/1.1 204 No Content"), "{text}");
    assert!(text.contains("outside the valid range"), "{text}");
    assert!(
        text.contains("Could not find a property named 'nosuchfield'"),
        "{text}"
    );
    // The change set failed as a whole: its POST was rolled back.
    assert_eq!(sim.count("contact"), 1);
}

#[tokio::test]
async fn batch_of_more_than_1000_requests_is_refused() {
    let (_sim, _server, client, api, token) = in_process(0).await;
    let mut body = String::new();
    for _ in 0..1001 {
        body.push_str("--b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nGET /api/data/v9.2/WhoAmI HTTP/1.1\r\n\r\n\r\n");
    }
    body.push_str("--b--\r\n");
    let response = client
        .post(format!("{api}$batch"))
        .bearer_auth(&token)
        .header("Content-Type", "multipart/mixed; boundary=b")
        .body(body)
        .send()
        .await
        .expect("reachable");
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn control_api_changes_rows_schema_and_faults() {
    let (sim, server, client, api, token) = in_process(2).await;
    let control = format!("{}_sim/", server.base_url());
    let id = "44444444-4444-4444-8444-444444444444";
    let response = client
        .put(format!("{control}tables/contact/rows/{id}"))
        .json(&json!({"lastname": "Ctl"}))
        .send()
        .await
        .expect("reachable");
    assert_eq!(response.status(), 204);
    let count: Value = client
        .get(format!("{control}tables/contact/count"))
        .send()
        .await
        .expect("reachable")
        .json()
        .await
        .expect("json");
    assert_eq!(count["count"], 3);
    let response = client
        .post(format!(
            "{control}tables/contact/attributes/numberofchildren"
        ))
        .json(&json!({"retype": "String"}))
        .send()
        .await
        .expect("reachable");
    assert_eq!(response.status(), 204);
    let attributes: Value = get(&client, &format!("{api}EntityDefinitions(LogicalName='contact')/Attributes?$select=LogicalName,AttributeType,MaxLength"), &token, None).await.json().await.expect("json");
    let retyped = attributes["value"]
        .as_array()
        .expect("list")
        .iter()
        .find(|a| a["LogicalName"] == "numberofchildren")
        .expect("still there")
        .clone();
    assert_eq!(retyped["AttributeType"], "String");
    let response = client
        .put(format!("{control}faults"))
        .json(&json!({"throttle_burst": 1, "retry_after_secs": 2}))
        .send()
        .await
        .expect("reachable");
    assert_eq!(response.status(), 204);
    let response = get(&client, &format!("{api}WhoAmI"), &token, None).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "0x80072322");
    assert_eq!(
        get(&client, &format!("{api}WhoAmI"), &token, None)
            .await
            .status(),
        200
    );
    let bad = client
        .put(format!("{control}faults"))
        .json(&json!({"error_rate": 3.0}))
        .send()
        .await
        .expect("reachable");
    assert_eq!(bad.status(), 400);
    assert_eq!(sim.faults().stats().throttled, 1);
    // Scripted faults answer the next Web API requests in order, then the service is back.
    let response = client
        .post(format!("{control}faults/next"))
        .json(&json!([
            {"kind": "server-error", "status": 503},
            {"kind": "rate-limited", "retry_after_secs": 4},
        ]))
        .send()
        .await
        .expect("reachable");
    assert_eq!(response.status(), 204);
    let first = get(&client, &format!("{api}WhoAmI"), &token, None).await;
    assert_eq!(first.status(), 503);
    let second = get(&client, &format!("{api}WhoAmI"), &token, None).await;
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "4");
    assert_eq!(
        get(&client, &format!("{api}WhoAmI"), &token, None)
            .await
            .status(),
        200
    );
    let bad = client
        .post(format!("{control}faults/next"))
        .json(&json!([{"kind": "server-error", "status": 200}]))
        .send()
        .await
        .expect("reachable");
    assert_eq!(bad.status(), 400);
    // DELETE ends every fault, the scripted ones and the rates.
    client
        .put(format!("{control}faults/rates"))
        .json(&json!({"throttle_rate": 1.0}))
        .send()
        .await
        .expect("reachable");
    client
        .post(format!("{control}faults/next"))
        .json(&json!([{"kind": "reset"}]))
        .send()
        .await
        .expect("reachable");
    let cleared = client
        .delete(format!("{control}faults"))
        .send()
        .await
        .expect("reachable");
    assert_eq!(cleared.status(), 204);
    assert_eq!(
        get(&client, &format!("{api}WhoAmI"), &token, None)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn count_true_counts_every_matching_row_not_just_the_page() {
    let (_sim, _server, client, api, token) = in_process(30).await;
    let response = get(
        &client,
        &format!("{api}contacts?$select=lastname&$count=true"),
        &token,
        Some("odata.maxpagesize=10"),
    )
    .await;
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["value"].as_array().expect("list").len(), 10);
    assert_eq!(body["@odata.count"], 30);
    assert!(body["@odata.nextLink"].is_string());
    let filtered: Value = get(
        &client,
        &format!("{api}contacts?$select=lastname&$count=true&$filter=statecode eq 1"),
        &token,
        None,
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(filtered["@odata.count"], 3);
    assert_eq!(filtered["value"].as_array().expect("list").len(), 3);
}
