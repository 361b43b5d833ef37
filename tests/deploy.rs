//! Running Conduit where operators run services: the Kubernetes overlays render with
//! `kubectl kustomize` and validate offline against the Kubernetes schemas (through
//! `deploy/kubernetes/validate.sh`) and hold what a tenant's host needs (one replica, its
//! volume, the config as a folder mount, secrets, probes, the restricted security context, a
//! grace period longer than the host's shutdown); each overlay's config passes `config check`;
//! a ConfigMap update (the kubelet's atomic swap of the `..data` symlink) shows as "changes
//! pending restart"; SIGTERM ends a host whose batch hangs within its shutdown timeout; and the
//! binary runs the demo in an empty root (`deploy/test-chroot.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use conduit_e2e::{HostProcess, INGRESS_CONTACTS, SECRETS, SimPair, cli, fields};
use conduit_sim::faults::FaultConfig;
use serde_json::Value;

fn kubernetes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every overlay rendered and validated once per run: (overlay name, its resources).
fn rendered() -> &'static [(String, Vec<Value>)] {
    static RENDERED: OnceLock<Vec<(String, Vec<Value>)>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conduit-tools");
        let out = tempfile::tempdir().unwrap();
        // The script installs kubernetes-validate from PyPI on first use: one run at a time.
        let lock = conduit_e2e::install::lock();
        let run = Command::new("bash")
            .arg(kubernetes_dir().join("validate.sh"))
            .arg(&cache)
            .arg(out.path())
            .output()
            .expect("bash runs");
        drop(lock);
        assert!(
            run.status.success(),
            "validate.sh failed (needs kubectl and python3):\n{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        let mut overlays: Vec<(String, Vec<Value>)> = std::fs::read_dir(out.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .map(|path| {
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                let resources = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                (name, resources)
            })
            .collect();
        overlays.sort_by(|a, b| a.0.cmp(&b.0));
        overlays
    })
}

fn resource<'a>(resources: &'a [Value], kind: &str) -> &'a Value {
    resources
        .iter()
        .find(|r| r["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the rendering"))
}

#[test]
fn every_overlay_renders_validates_and_holds_what_a_tenant_host_needs() {
    let overlays = rendered();
    let names: Vec<&str> = overlays.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["tenant-contoso", "tenant-fabrikam"]);
    let mut namespaces = Vec::new();
    for (name, resources) in overlays {
        let namespace = resource(resources, "Namespace");
        assert_eq!(
            namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
            "{name}"
        );
        namespaces.push(namespace["metadata"]["name"].clone());
        let set = resource(resources, "StatefulSet");
        assert_eq!(set["spec"]["replicas"], 1, "{name}: one writer per store");
        let pod = &set["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let env = |key: &str| {
            container["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == key)
                .cloned()
                .unwrap_or_else(|| panic!("{name}: no {key}"))
        };
        // Secrets come from the Secret, which the overlay generates with those keys.
        let secret = resource(resources, "Secret");
        for key in [
            "CONDUIT_ADMIN_TOKEN",
            "CONDUIT_D365_CLIENT_SECRET",
            "CONDUIT_ACS_CLIENT_SECRET",
        ] {
            let reference = &env(key)["valueFrom"]["secretKeyRef"];
            assert_eq!(reference["name"], secret["metadata"]["name"], "{name}");
            assert!(secret["data"][key].is_string(), "{name}: {key}");
        }
        // Probes.
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        // The restricted security context.
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(security["capabilities"]["drop"][0], "ALL", "{name}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        // SIGTERM's shutdown ends before the kubelet's SIGKILL.
        let timeout: u64 = env("CONDUIT_SHUTDOWN_TIMEOUT")["value"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            timeout < pod["terminationGracePeriodSeconds"].as_u64().unwrap(),
            "{name}: the host's shutdown must end within the grace period"
        );
        // The config: a folder mount of the ConfigMap (a subPath mount never sees updates).
        let mounts = container["volumeMounts"].as_array().unwrap();
        let config_file = env("CONDUIT_CONFIG")["value"].as_str().unwrap().to_string();
        let config_mount = mounts
            .iter()
            .find(|m| m["name"] == "config")
            .expect("the config volume is mounted");
        assert!(config_mount["subPath"].is_null(), "{name}");
        assert_eq!(
            Path::new(&config_file).parent().unwrap(),
            Path::new(config_mount["mountPath"].as_str().unwrap())
        );
        let config_map = resource(resources, "ConfigMap");
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "config")
            .unwrap();
        assert_eq!(
            volume["configMap"]["name"], config_map["metadata"]["name"],
            "{name}"
        );
        let toml = config_map["data"]["conduit.toml"]
            .as_str()
            .expect("the ConfigMap holds conduit.toml");
        // The data directory is the volume claim's mount; the admin port is the container's.
        let data_mount = mounts.iter().find(|m| m["name"] == "data").unwrap();
        assert_eq!(
            set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
            "data"
        );
        let config: toml_like::Host = toml_like::host(toml);
        assert_eq!(config.data_dir, data_mount["mountPath"], "{name}");
        assert_eq!(
            config.admin_port, container["ports"][0]["containerPort"],
            "{name}"
        );
        let service = resource(resources, "Service");
        assert_eq!(service["spec"]["type"], "ClusterIP");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "admin");
        resource(resources, "NetworkPolicy");
        // The config itself is valid, every plugin included.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conduit.toml");
        std::fs::write(&path, toml).unwrap();
        let checked = cli(&path, &["config", "check", "--format", "lines"], &[]);
        assert_eq!(checked.code, 0, "{name}: {checked}");
    }
    namespaces.dedup();
    assert_eq!(namespaces.len(), 2, "one namespace per tenant");
}

/// The two `[host]` settings the manifests must agree with, read with plain text matching
/// (the e2e crate has no TOML parser; `config check` validates the whole file).
mod toml_like {
    use serde_json::Value;

    pub struct Host {
        pub data_dir: Value,
        pub admin_port: Value,
    }

    fn setting<'a>(toml: &'a str, key: &str) -> &'a str {
        toml.lines()
            .find_map(|line| {
                let (name, value) = line.split_once('=')?;
                (name.trim() == key).then(|| value.trim().trim_matches('"'))
            })
            .unwrap_or_else(|| panic!("no {key} in the config"))
    }

    pub fn host(toml: &str) -> Host {
        let listen = setting(toml, "admin_listen");
        let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
        Host {
            data_dir: Value::from(setting(toml, "data_dir")),
            admin_port: Value::from(port),
        }
    }
}

/// Writes `text` as the kubelet writes a ConfigMap volume: the file in a timestamped folder,
/// `..data` pointing at that folder, and `conduit.toml` pointing through `..data`. A second
/// call swaps `..data` atomically (a new symlink renamed over it) and removes the old folder.
fn kubelet_write(volume: &Path, generation: u32, text: &str) {
    let folder = format!("..2026_11_30_00_00_0{generation}.000000001");
    std::fs::create_dir_all(volume.join(&folder)).unwrap();
    std::fs::write(volume.join(&folder).join("conduit.toml"), text).unwrap();
    let old = std::fs::read_link(volume.join("..data")).ok();
    std::os::unix::fs::symlink(&folder, volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    if !volume.join("conduit.toml").exists() {
        std::os::unix::fs::symlink("..data/conduit.toml", volume.join("conduit.toml")).unwrap();
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(volume.join(old)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_shows_as_changes_pending_restart() {
    let sims = SimPair::start(10, 0).await;
    let data = sims.dir.path().join("data");
    let text = format!("{}\n{INGRESS_CONTACTS}", sims.connection_sections()).replace(
        "data_dir = \"data\"",
        &format!("data_dir = \"{}\"", data.display()),
    );
    let volume = sims.dir.path().join("configmap");
    std::fs::create_dir_all(&volume).unwrap();
    kubelet_write(&volume, 1, &text);
    let mut host = HostProcess::spawn(&volume.join("conduit.toml"), sims.admin_port, &SECRETS);
    host.wait_healthy().await;
    host.start("ingress").await;
    host.wait_caught_up("ingress").await;
    assert_eq!(host.workflow("ingress").await["pending_changes"], false);

    let edited = text.replace(
        "{ source = \"emailaddress1\", destination = \"email\" },",
        "{ source = \"emailaddress1\", destination = \"email\" },\n  { source = \"telephone1\", destination = \"mobilePhone\" },",
    );
    assert_ne!(edited, text);
    kubelet_write(&volume, 2, &edited);
    let view = host
        .wait_workflow("ingress", "changes pending restart", |v| {
            v["pending_changes"] == true
        })
        .await;
    assert!(
        view["pending_summary"].to_string().contains("telephone1"),
        "{view}"
    );
    assert_eq!(
        view["status"], "RUNNING",
        "the running workflow is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_host_within_its_shutdown_timeout_even_when_a_batch_hangs() {
    let sims = SimPair::start(200, 0).await;
    sims.write_config(INGRESS_CONTACTS);
    let mut host = sims.spawn(&[("CONDUIT_SHUTDOWN_TIMEOUT", "2")]);
    host.wait_healthy().await;
    host.start("ingress").await;
    host.wait_caught_up("ingress").await;
    // From now on every Campaign call takes a minute: the next batch cannot finish.
    sims.campaign
        .faults()
        .set(FaultConfig {
            latency_ms: 60_000,
            ..FaultConfig::default()
        })
        .unwrap();
    let id = sims.ids("contact", "contactid")[0].clone();
    sims.dynamics
        .upsert(
            "contact",
            &id,
            fields(&[("lastname", serde_json::json!("Hanging"))]),
        )
        .unwrap();
    host.wait_workflow("ingress", "the change queued", |v| {
        v["backlog"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let asked = Instant::now();
    let status = host.terminate();
    let took = asked.elapsed();
    assert!(status.success(), "{status}: {}", host.output());
    assert!(
        took < Duration::from_secs(15),
        "SIGTERM took {took:?}, past the 2s shutdown timeout"
    );
    assert!(
        host.output().contains("did not stop within 2s"),
        "{}",
        host.output()
    );
}

/// What the scratch image holds is enough: the binary runs the demo to VERIFIED in an empty
/// root with only itself, the CA certificates and its data directory (no /tmp, /proc, /dev,
/// shell or home), through `deploy/test-chroot.sh`, the script an operator runs on the static
/// binary. Here it is the debug binary with its loader and shared libraries copied in, so the
/// suite needs no static release build; the script refuses that binary without `--with-libs`.
#[test]
fn the_binary_runs_the_demo_in_an_empty_root() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/test-chroot.sh");
    let binary = conduit_e2e::conduit_binary();
    let refused = Command::new("bash")
        .arg(&script)
        .arg(&binary)
        .output()
        .expect("bash runs");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is dynamically linked"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let run = Command::new("bash")
        .arg(&script)
        .arg("--with-libs")
        .arg(&binary)
        .env("CONDUIT_CHROOT_CONTACTS", "300")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "test-chroot.sh failed:\n{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let listed: Vec<&str> = stdout
        .lines()
        .skip_while(|line| *line != "the root holds only:")
        .skip(1)
        .take_while(|line| line.starts_with("./"))
        .collect();
    assert!(listed.contains(&"./usr/local/bin/conduit"), "{listed:?}");
    assert!(listed.contains(&"./data"), "{listed:?}");
    for absent in ["./tmp", "./proc", "./dev", "./bin", "./home"] {
        assert!(!listed.contains(&absent), "{absent} in {listed:?}");
    }
    assert!(stdout.contains("\nVERIFIED: "), "{stdout}");
}
