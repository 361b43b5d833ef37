//! The admin surface as an attacker and an auditor see it, against the real `conduit run`:
//! DNS rebinding (a foreign `Host` is refused on every route, GET and POST, with and without
//! a token, on IPv4 and IPv6 loopback), HTTPS from configured certificate files and the CLI
//! trusting its CA, the refusal to listen off loopback over plain HTTP without the opt-out,
//! private files on disk, and the audit trail (API, CLI, restarts, `/metrics` refusals).
//!
//! Every host here listens on port 0 and the test reads the address it reports, so no test
//! assumes a port stays free.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use conduit_e2e::{HostProcess, INGRESS_CONTACTS, SimPair, cli, wait_for};
use serde_json::Value;

const TOKEN: &str = "audit-token-7f3a9c";

/// The connection sections of `sims` with `admin_listen` replaced by `listen` and `host`
/// (extra `[host]` keys) added, followed by `workflows`.
fn config_text(sims: &SimPair, listen: &str, host: &str, workflows: &str) -> String {
    let loopback = format!("admin_listen = \"127.0.0.1:{}\"", sims.admin_port);
    let sections = sims.connection_sections();
    assert!(sections.contains(&loopback), "{sections}");
    format!(
        "{}\n{workflows}",
        sections.replace(&loopback, &format!("admin_listen = \"{listen}\"\n{host}"))
    )
}

/// Spawns `conduit run` and waits for the admin URL it reports (its `admin` is set to it).
async fn spawn_reporting(sims: &SimPair, env: &[(&str, &str)]) -> HostProcess {
    let mut all = conduit_e2e::SECRETS.to_vec();
    all.extend_from_slice(env);
    let mut host = HostProcess::spawn(&sims.config_path(), 0, &all);
    let mut url = None;
    wait_for("the host to report its admin address", 60, || {
        if let Some(status) = host.wait_exit(Duration::from_millis(1)) {
            panic!("the host exited with {status}:\n{}", host.output());
        }
        url = reported_url(&host.output());
        url.is_some()
    })
    .await;
    host.admin = url.expect("reported");
    host
}

/// The URL in `conduit is running; admin API on <url> (Ctrl-C stops)`, with an unspecified
/// address replaced by loopback.
fn reported_url(output: &str) -> Option<String> {
    let line = output
        .lines()
        .find(|line| line.contains("conduit is running; admin API on "))?;
    let url = line
        .split("admin API on ")
        .nth(1)?
        .split_whitespace()
        .next()?;
    Some(url.replace("0.0.0.0", "127.0.0.1"))
}

/// The port of a base URL.
fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

/// What a page on a rebound `evil.example` sends: same-origin from the browser's view.
fn rebinding(request: reqwest::RequestBuilder, port: u16) -> reqwest::RequestBuilder {
    request
        .header("host", format!("evil.example:{port}"))
        .header("origin", format!("http://evil.example:{port}"))
        .header("x-conduit-request", "1")
}

/// Asserts a refusal naming `host.admin_hosts`.
async fn assert_foreign_host_refused(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 403, "{what}");
    let body: Value = response.json().await.expect("a JSON refusal");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("host.admin_hosts") && message.contains("evil.example"),
        "{what}: {body}"
    );
}

/// Every route a rebinding page could use, by method.
const READ_ROUTES: [&str; 7] = [
    "/api/workflows",
    "/api/workflows/ingress/dead-letters",
    "/api/workflows/ingress/config",
    "/api/audit",
    "/metrics",
    "/",
    "/healthz",
];

/// Runs the rebinding attack against `host` (Ingress RUNNING), with `token` when given, and
/// checks that nothing is read or changed while loopback callers are still served.
async fn rebinding_is_refused(host: &mut HostProcess, token: Option<&str>) -> usize {
    let http = reqwest::Client::new();
    let port = port_of(&host.admin);
    let authorize = |request: reqwest::RequestBuilder| match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let mut refused = 0;
    for route in READ_ROUTES {
        let request = rebinding(http.get(format!("{}{route}", host.admin)), port);
        let response = authorize(request).send().await.unwrap();
        assert_foreign_host_refused(response, &format!("GET {route}")).await;
        refused += 1;
    }
    for action in [
        "stop",
        "start",
        "replay/contacts",
        "verify?repair=true",
        "preview",
    ] {
        let request = rebinding(
            http.post(format!("{}/api/workflows/ingress/{action}", host.admin)),
            port,
        );
        let response = authorize(request).send().await.unwrap();
        assert_foreign_host_refused(response, &format!("POST {action}")).await;
        refused += 1;
    }
    let drop = rebinding(
        http.post(format!(
            "{}/api/workflows/ingress/dead-letters/1/drop",
            host.admin
        )),
        port,
    );
    assert_foreign_host_refused(authorize(drop).send().await.unwrap(), "POST drop").await;
    refused += 1;
    // Nothing was changed: Ingress still runs, and the refused calls left no audit entry.
    let view = authorize(http.get(format!("{}/api/workflows/ingress", host.admin)))
        .send()
        .await
        .unwrap();
    assert_eq!(view.status(), 200);
    let view: Value = view.json().await.unwrap();
    assert_eq!(view["status"], "RUNNING", "{view:#}");
    assert!(view["pending_replays"].as_array().unwrap().is_empty());
    refused
}

/// The value of the counter `conduit_admin_refusals{reason}` in a scrape that must parse as
/// OpenMetrics.
fn refusals(text: &str, reason: &str) -> f64 {
    let scrape = openmetrics_parser::openmetrics::parse_openmetrics(text)
        .unwrap_or_else(|error| panic!("the metrics parse as OpenMetrics: {error:?}\n{text}"));
    let family = scrape
        .families
        .get("conduit_admin_refusals")
        .unwrap_or_else(|| panic!("no refusals family:\n{text}"));
    let sample = family
        .iter_samples()
        .find(|sample| {
            sample
                .get_labelset()
                .is_ok_and(|set| set.get_label_value("reason") == Some(reason))
        })
        .unwrap_or_else(|| panic!("no refusals sample for {reason}:\n{text}"));
    match &sample.value {
        openmetrics_parser::OpenMetricsValue::Counter(counter) => counter.value.as_f64(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebinding_page_without_a_token_can_neither_read_nor_change_anything_on_ipv4() {
    let sims = SimPair::start(3, 0).await;
    let text = config_text(
        &sims,
        "127.0.0.1:0",
        "admin_hosts = [\"conduit.test\"]",
        INGRESS_CONTACTS,
    );
    std::fs::write(sims.config_path(), text).unwrap();
    let mut host = spawn_reporting(&sims, &[]).await;
    host.start("ingress").await;
    host.wait_caught_up("ingress").await;

    let refused = rebinding_is_refused(&mut host, None).await;

    // Loopback names and addresses, and the name the operator listed, are served.
    let http = reqwest::Client::new();
    let port = port_of(&host.admin);
    for name in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("conduit.test:{port}"),
    ] {
        let response = http
            .get(format!("{}/api/workflows/ingress/dead-letters", host.admin))
            .header("host", &name)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
    }
    let metrics = http
        .get(format!("{}/metrics", host.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(refusals(&metrics, "foreign_host"), refused as f64);
    assert_eq!(refusals(&metrics, "no_token"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebinding_page_with_a_token_is_refused_and_the_audit_names_the_token_not_its_value() {
    let sims = SimPair::start(3, 0).await;
    let text = config_text(&sims, "127.0.0.1:0", "", INGRESS_CONTACTS);
    std::fs::write(sims.config_path(), text).unwrap();
    let mut host = spawn_reporting(&sims, &[("CONDUIT_ADMIN_TOKEN", TOKEN)]).await;
    let http = reqwest::Client::new();
    let started = http
        .post(format!("{}/api/workflows/ingress/start", host.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
    wait_for_running(&host, Some(TOKEN)).await;

    rebinding_is_refused(&mut host, Some(TOKEN)).await;

    // Without the token, even a loopback Host is refused, and counted by reason.
    let bare = http
        .get(format!("{}/api/workflows", host.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);
    let audit: Value = http
        .get(format!("{}/api/audit", host.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let start = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "start")
        .unwrap_or_else(|| panic!("no start entry: {audit:#}"));
    assert_eq!(start["caller"]["auth"], "token", "{audit:#}");
    assert_eq!(start["outcome"], "ok", "{audit:#}");
    assert!(
        start["caller"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{audit:#}"
    );
    assert!(!audit.to_string().contains(TOKEN), "{audit:#}");
    let metrics = http
        .get(format!("{}/metrics", host.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(refusals(&metrics, "no_token"), 1.0, "{metrics}");
}

/// Waits until Ingress is RUNNING, calling with `token` when given.
async fn wait_for_running(host: &HostProcess, token: Option<&str>) {
    let http = reqwest::Client::new();
    for _ in 0..600 {
        let mut request = http.get(format!("{}/api/workflows/ingress", host.admin));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let view: Value = request.send().await.unwrap().json().await.unwrap();
        if view["status"] == "RUNNING" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("ingress did not reach RUNNING:\n{}", host.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebinding_page_is_refused_on_ipv6_loopback_too_with_and_without_a_token() {
    for token in [None, Some(TOKEN)] {
        let sims = SimPair::start(3, 0).await;
        let text = config_text(&sims, "[::1]:0", "", INGRESS_CONTACTS);
        std::fs::write(sims.config_path(), text).unwrap();
        let env: Vec<(&str, &str)> = token
            .map(|t| ("CONDUIT_ADMIN_TOKEN", t))
            .into_iter()
            .collect();
        let mut host = spawn_reporting(&sims, &env).await;
        assert!(host.admin.starts_with("http://[::1]:"), "{}", host.admin);
        let http = reqwest::Client::new();
        let authorize = |request: reqwest::RequestBuilder| match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let start = http
            .post(format!("{}/api/workflows/ingress/start", host.admin))
            .header("x-conduit-request", "1");
        assert_eq!(authorize(start).send().await.unwrap().status(), 200);
        wait_for_running(&host, token).await;

        rebinding_is_refused(&mut host, token).await;
        let own = http.get(format!("{}/api/workflows/ingress/dead-letters", host.admin));
        let response = authorize(own).send().await.unwrap();
        assert_eq!(response.status(), 200, "[::1] itself is served ({token:?})");
    }
}

/// A CA and a certificate it signed for `127.0.0.1` and `localhost`, written to `dir` as
/// `ca.pem`, `cert.pem` (leaf then CA) and `key.pem`.
fn write_pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(
        dir.join("cert.pem"),
        format!("{}{}", cert.pem(), ca_cert.pem()),
    )
    .unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_serves_https_from_the_configured_files_and_the_cli_trusts_its_ca() {
    let sims = SimPair::start(0, 0).await;
    write_pki(sims.dir.path());
    let text = config_text(
        &sims,
        "127.0.0.1:0",
        "admin_tls_cert = \"cert.pem\"\nadmin_tls_key = \"key.pem\"",
        INGRESS_CONTACTS,
    );
    std::fs::write(sims.config_path(), text).unwrap();
    let host = spawn_reporting(&sims, &[]).await;
    assert!(
        host.admin.starts_with("https://127.0.0.1:"),
        "{}",
        host.admin
    );
    let ca_file = sims.dir.path().join("ca.pem");

    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_file).unwrap()).unwrap();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let health = trusting
        .get(format!("{}/healthz", host.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let by_name = host.admin.replace("127.0.0.1", "localhost");
    let workflows = trusting
        .get(format!("{by_name}/api/workflows"))
        .send()
        .await
        .unwrap();
    assert_eq!(workflows.status(), 200);
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("{}/healthz", host.admin.replace("https", "http")))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.map(|r| r.status() != 200).unwrap_or(true),
        "plain HTTP must not be served"
    );

    let config = sims.config_path();
    let untrusted = cli(&config, &["status", "--admin-url", &host.admin], &[]);
    assert_eq!(untrusted.code, 5, "{untrusted}");
    assert!(
        untrusted.stderr.contains("not trusted") && untrusted.stderr.contains("--admin-ca-file"),
        "{untrusted}"
    );
    let ca_path = ca_file.to_str().unwrap();
    let trusted = cli(
        &config,
        &["status", "--admin-url", &host.admin],
        &[("CONDUIT_ADMIN_CA_FILE", ca_path)],
    );
    assert_eq!(trusted.code, 0, "{trusted}");
    assert!(trusted.stdout.contains("ingress"), "{trusted}");
    let started = cli(
        &config,
        &[
            "--admin-ca-file",
            ca_path,
            "--admin-url",
            &host.admin,
            "start",
            "ingress",
        ],
        &[],
    );
    assert_eq!(started.code, 0, "{started}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_plain_http_needs_the_explicit_setting() {
    let sims = SimPair::start(0, 0).await;
    let text = config_text(&sims, "0.0.0.0:0", "", INGRESS_CONTACTS);
    std::fs::write(sims.config_path(), text).unwrap();
    let mut all = conduit_e2e::SECRETS.to_vec();
    all.push(("CONDUIT_ADMIN_TOKEN", TOKEN));
    let mut refused = HostProcess::spawn(&sims.config_path(), 0, &all);
    let status = refused
        .wait_exit(Duration::from_secs(30))
        .expect("the host refuses to start");
    assert!(!status.success());
    let output = refused.output();
    assert!(
        output.contains("over plain HTTP")
            && output.contains("host.admin_tls_cert")
            && output.contains("host.admin_allow_plain_http = true"),
        "{output}"
    );

    let text = config_text(
        &sims,
        "0.0.0.0:0",
        "admin_allow_plain_http = true",
        INGRESS_CONTACTS,
    );
    std::fs::write(sims.config_path(), text).unwrap();
    let host = spawn_reporting(&sims, &[("CONDUIT_ADMIN_TOKEN", TOKEN)]).await;
    let health = reqwest::get(format!("{}/healthz", host.admin))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

/// Every directory under `root` (itself included) with its mode, and every file with its.
fn modes(root: &Path) -> Vec<(String, bool, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::metadata(&path).unwrap();
        let mode = metadata.permissions().mode() & 0o777;
        found.push((path.display().to_string(), metadata.is_dir(), mode));
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_store_and_plugin_cache_are_private_and_a_loose_directory_is_warned() {
    let sims = SimPair::start(5, 0).await;
    let text = config_text(&sims, "127.0.0.1:0", "", INGRESS_CONTACTS);
    std::fs::write(sims.config_path(), text).unwrap();
    let mut host = spawn_reporting(&sims, &[]).await;
    host.start("ingress").await;
    host.wait_caught_up("ingress").await;
    let data = sims.dir.path().join("data");
    let found = modes(&data);
    assert!(
        found.iter().any(|(p, _, _)| p.ends_with("conduit.redb"))
            && found.iter().any(|(p, _, _)| p.ends_with("plugin-cache"))
            && found.iter().any(|(p, _, _)| p.ends_with(".cwasm")),
        "{found:?}"
    );
    for (path, is_dir, mode) in &found {
        let wanted = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, wanted, "{path} has mode {mode:o}");
    }
    assert!(!host.output().contains("other users can access it"));
    host.terminate();

    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = spawn_reporting(&sims, &[]).await;
    let output = host.output();
    assert!(
        output.contains(&format!("the directory {}", data.display()))
            && output.contains("mode 755")
            && output.contains(&format!("chmod 700 {}", data.display())),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_change_is_audited_durably_and_listed_by_the_cli() {
    let sims = SimPair::start(3, 0).await;
    let text = config_text(&sims, "127.0.0.1:0", "", INGRESS_CONTACTS);
    std::fs::write(sims.config_path(), &text).unwrap();
    let mut host = spawn_reporting(&sims, &[]).await;
    let config = sims.config_path();
    let url = host.admin.clone();
    let run = |args: &[&str]| {
        let mut all = vec!["--admin-url", url.as_str()];
        all.extend_from_slice(args);
        cli(&config, &all, &[])
    };

    assert_eq!(run(&["start", "ingress"]).code, 0);
    host.wait_caught_up("ingress").await;
    let replay = run(&["replay", "ingress", "accounts"]);
    assert_eq!(replay.code, 3, "{replay}");
    let dropped = run(&["dlq", "drop", "ingress", "99"]);
    assert_eq!(dropped.code, 6, "{dropped}");
    // The page names itself; so does an edit applied by the next start.
    let stop = reqwest::Client::new()
        .post(format!("{}/api/workflows/ingress/stop", host.admin))
        .header("x-conduit-request", "page")
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), 200);
    std::fs::write(&config, text.replace("page_size = 200", "page_size = 150")).unwrap();
    assert_eq!(run(&["start", "ingress"]).code, 0);

    let listed = run(&["audit", "--json"]);
    assert_eq!(listed.code, 0, "{listed}");
    let entries: Value = serde_json::from_str(&listed.stdout).unwrap();
    let summary: Vec<(String, String, String, String)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
                e["caller"]["via"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("start", "ingress", "ok", "cli"),
        ("config-applied", "ingress", "ok", "cli"),
        ("stop", "ingress", "ok", "page"),
        ("dead-letter-drop", "ingress/99", "refused", "cli"),
        ("replay", "ingress/accounts", "refused", "cli"),
        ("start", "ingress", "ok", "cli"),
        ("config-applied", "ingress", "ok", "cli"),
    ]
    .map(|(a, t, o, v)| (a.to_string(), t.to_string(), o.to_string(), v.to_string()));
    assert_eq!(summary, expected, "{entries:#}");
    let first = &entries[entries.as_array().unwrap().len() - 1];
    assert!(
        first["detail"].as_str().unwrap().contains("first start"),
        "{first:#}"
    );
    assert!(
        entries[1]["detail"]
            .as_str()
            .unwrap()
            .contains("changed since its last start"),
        "{entries:#}"
    );
    assert!(
        entries[4]["detail"]
            .as_str()
            .unwrap()
            .contains("no table mapping named 'accounts'"),
        "{entries:#}"
    );
    for entry in entries.as_array().unwrap() {
        assert_eq!(entry["caller"]["auth"], "loopback, no token", "{entry:#}");
        assert!(entry["at_ms"].as_i64().unwrap() > 0);
    }

    // Durable: after a restart the trail is still there, and the table lists it. An edit
    // made while the host was down is applied by the host itself when it restarts Ingress.
    host.terminate();
    std::fs::write(&config, text.replace("page_size = 200", "page_size = 120")).unwrap();
    let host = spawn_reporting(&sims, &[]).await;
    let url = host.admin.clone();
    let table = cli(
        &config,
        &["--admin-url", &url, "audit", "--limit", "3"],
        &[],
    );
    assert_eq!(table.code, 0, "{table}");
    let lines: Vec<_> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].contains("ACTION") && lines[0].contains("OUTCOME"),
        "{table}"
    );
    assert!(
        lines[1].contains("config-applied")
            && lines[1].contains(" host ")
            && lines[1].contains("changed since its last start"),
        "{table}"
    );
    assert!(
        lines[2].contains("start") && lines[2].contains("loopback, no token"),
        "{table}"
    );
    stop_host(host);
    let unreachable = cli(&config, &["--admin-url", &url, "audit"], &[]);
    assert_eq!(unreachable.code, 5, "{unreachable}");
}

/// Stops a host with SIGTERM and waits for it.
fn stop_host(mut host: HostProcess) {
    host.terminate();
}
