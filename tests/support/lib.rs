//! Shared helpers for the end-to-end scenarios: find and run the real `conduit` binary, talk
//! to its admin API, and kill it the hard way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod browser;
pub mod install;
mod ports;
pub mod sims;

pub use ports::{UnlistenedPort, free_port, unlistened_port};

pub use sims::{SECRETS, SimPair};

/// A row's fields for the simulators' upserts, from name and value pairs.
pub fn fields(pairs: &[(&str, Value)]) -> serde_json::Map<String, Value> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect()
}

/// Polls `check` every 100 ms until it holds, failing the test after `seconds`.
pub async fn wait_for(what: &str, seconds: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `conduit` binary built by this workspace (built on demand when missing).
pub fn conduit_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> -> target/<profile>/conduit
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let binary = profile_dir.join("conduit");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "conduit", "--bin", "conduit"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the conduit binary failed");
    }
    binary
}

/// A `conduit run` process.
pub struct HostProcess {
    child: Child,
    /// The admin API's base URL.
    pub admin: String,
    http: reqwest::Client,
    log: PathBuf,
}

impl HostProcess {
    /// Runs `conduit run --config <config>`; `admin_port` must match the config's
    /// `host.admin_listen`. Output goes to `<config dir>/host-<n>.log`.
    pub fn spawn(config: &Path, admin_port: u16, env: &[(&str, &str)]) -> HostProcess {
        let dir = config.parent().expect("config in a folder");
        let mut n = 0;
        let log = loop {
            let candidate = dir.join(format!("host-{n}.log"));
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut command = Command::new(conduit_binary());
        command
            .args(["run", "--config"])
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("CONDUIT_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("conduit starts");
        HostProcess {
            child,
            admin: format!("http://127.0.0.1:{admin_port}"),
            http: reqwest::Client::new(),
            log,
        }
    }

    /// Where the host's output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the host printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/healthz` answers.
    pub async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the host exited with {status}:\n{}", self.output());
            }
            if let Ok(response) = self
                .http
                .get(format!("{}/healthz", self.admin))
                .send()
                .await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the host did not become healthy:\n{}", self.output());
    }

    /// GETs an admin API path.
    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .expect("admin API reachable")
            .json()
            .await
            .expect("JSON")
    }

    /// POSTs to an admin API path; returns the status and body.
    pub async fn post(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.admin))
            .header("x-conduit-request", "1")
            .send()
            .await
            .expect("admin API reachable");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POSTs a JSON body to an admin API path as the CLI does; returns the status and the
    /// JSON answer (null when not JSON).
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.admin))
            .header("x-conduit-request", "1")
            .json(body)
            .send()
            .await
            .expect("admin API reachable");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GETs an admin API path; returns the status and the JSON body (null when not JSON).
    pub async fn get_status(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .expect("admin API reachable");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Waits up to `within` for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// One workflow's view.
    pub async fn workflow(&self, id: &str) -> Value {
        self.get(&format!("/api/workflows/{id}")).await
    }

    /// Waits until `check` holds for a workflow's view.
    pub async fn wait_workflow(
        &mut self,
        id: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the host exited with {status} while waiting for {what}:\n{}",
                    self.output()
                );
            }
            let view = self.workflow(id).await;
            if check(&view) {
                return view;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last view: {view:#}\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts a workflow through the admin API, failing the test if it is refused.
    pub async fn start(&self, workflow: &str) {
        let (status, body) = self.post(&format!("/api/workflows/{workflow}/start")).await;
        assert_eq!(status, 200, "start {workflow}: {body}");
    }

    /// Stops a workflow through the admin API, failing the test if it is refused.
    pub async fn stop(&self, workflow: &str) {
        let (status, body) = self.post(&format!("/api/workflows/{workflow}/stop")).await;
        assert_eq!(status, 200, "stop {workflow}: {body}");
    }

    /// Waits until a workflow is RUNNING, has read everything and written its backlog.
    pub async fn wait_caught_up(&mut self, workflow: &str) -> Value {
        // Opt-in/out reads Campaign's profiles before its contacts: its profiles cursor is
        // incremental, with nothing queued, before a single contact was read.
        let must_have = (workflow == "optinout").then_some("contacts");
        self.wait_workflow(workflow, "caught up", |view| {
            let cursors = view["cursors"].as_array();
            view["status"] == "RUNNING"
                && view["backlog"] == 0
                && cursors
                    .is_some_and(|c| !c.is_empty() && c.iter().all(|c| c["phase"] == "incremental"))
                && must_have.is_none_or(|source| {
                    cursors.is_some_and(|c| c.iter().any(|c| c["source"] == source))
                })
        })
        .await
    }

    /// The process's peak resident set size so far (`VmHWM` in `/proc/<pid>/status`).
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the host process is alive");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .expect("VmHWM in /proc/<pid>/status")
            << 10
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to stop (SIGTERM) and waits for it.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                self.kill_hard();
                panic!("the host did not stop on SIGTERM:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ingress with one mapping, `contacts` (contact -> profile), polling quickly.
pub const INGRESS_CONTACTS: &str = r#"[ingress]
pacing = { page_size = 200, write_batch = 100, poll_interval_ms = 200 }

[[ingress.mappings]]
name = "contacts"
source = "contact"
destination = "profile"
key = { source = "contactid", destination = "externalId" }
fields = [
  { source = "firstname", destination = "firstName" },
  { source = "lastname", destination = "lastName" },
  { source = "emailaddress1", destination = "email" },
]
"#;

/// A second Ingress mapping, `vehicles` (new_vehicle -> cusVehicle).
pub const INGRESS_VEHICLES: &str = r#"
[[ingress.mappings]]
name = "vehicles"
source = "new_vehicle"
destination = "cusVehicle"
key = { source = "new_vehicleid", destination = "cusCrmId" }
fields = [{ source = "new_name", destination = "cusName" }]
"#;

/// Egress with every event kind, polling quickly.
pub const EGRESS: &str = r#"
[egress]
pacing = { page_size = 100, poll_interval_ms = 200 }
send = true
open = true
click = true
bounce = true
"#;

/// What a CLI run printed and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `conduit --config <config> <args>` to completion with `env` added.
pub fn cli(config: &Path, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut command = Command::new(conduit_binary());
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CONDUIT_ADMIN_URL")
        .env_remove("CONDUIT_ADMIN_TOKEN")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("the conduit binary runs");
    CliOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `conduit --config <config> <args>` with its stdout a pipe whose reading end is already
/// closed, as after `| head` has read enough; returns the exit code and stderr (stdout is gone).
/// A run that outlives `within` is killed and reported with code -1.
pub fn cli_into_closed_pipe(config: &Path, args: &[&str], within: Duration) -> CliOutput {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let mut child = Command::new(conduit_binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CONDUIT_ADMIN_URL")
        .env_remove("CONDUIT_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the conduit binary runs");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reading = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = Instant::now() + within;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CliOutput {
        code,
        stdout: String::new(),
        stderr: reading.join().unwrap_or_default(),
    }
}

/// The hostile test fixture as `crates/plugin-host/build.rs` compiled it, for configs naming it by path.
pub fn hostile_fixture_file() -> PathBuf {
    let profile_dir = conduit_binary()
        .parent()
        .expect("the binary is in target/<profile>")
        .to_path_buf();
    std::fs::read_dir(profile_dir.join("build"))
        .expect("target/<profile>/build exists")
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("conduit-plugin-host-")
        })
        .map(|entry| entry.path().join("out/fixtures/fixture_hostile.wasm"))
        .filter(|path| path.exists())
        .max_by_key(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no fixture_hostile.wasm under {}/build",
                profile_dir.display()
            )
        })
}

/// The example contact mapper (`plugins/examples/contact-mapper`) as `crates/plugin-host/build.rs`
/// compiled it: a record mapper that writes contacts differently from the table mapper.
pub fn contact_mapper_file() -> PathBuf {
    hostile_fixture_file().with_file_name("contact_mapper.wasm")
}

/// The Wasm file of a builtin plugin as `crates/plugin-host/build.rs` compiled it (e.g. `table_mapper.wasm`),
/// for tests that configure a plugin by path.
pub fn builtin_plugin_file(file: &str) -> PathBuf {
    let profile_dir = conduit_binary()
        .parent()
        .expect("the binary is in target/<profile>")
        .to_path_buf();
    let candidates = std::fs::read_dir(profile_dir.join("build"))
        .expect("target/<profile>/build exists")
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("conduit-plugin-host-")
        })
        .map(|entry| entry.path().join("out").join("builtins").join(file))
        .filter(|path| path.exists());
    candidates
        .max_by_key(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| panic!("no {file} under {}/build", profile_dir.display()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::Command;

    /// Where the install-lock child processes meet (set by the parent test).
    const MEETING: &str = "CONDUIT_E2E_INSTALL_LOCK_DIR";

    /// One of the two processes racing to install the same thing: counts its installs, and
    /// notes an overlap if it finds the other one installing at the same time.
    #[test]
    #[ignore = "a child of two_test_processes_install_once_one_at_a_time"]
    fn install_lock_child() {
        let Ok(dir) = std::env::var(MEETING) else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        let marker = dir.join("installed");
        crate::install::once(
            || marker.exists(),
            || {
                let busy = std::fs::File::options()
                    .write(true)
                    .create_new(true)
                    .open(dir.join("busy"));
                let mut log = std::fs::File::options()
                    .append(true)
                    .create(true)
                    .open(dir.join("log"))
                    .unwrap();
                writeln!(log, "{}", if busy.is_ok() { "install" } else { "overlap" }).unwrap();
                // Long enough for the other process to arrive while this one installs.
                std::thread::sleep(std::time::Duration::from_millis(500));
                std::fs::write(&marker, b"done").unwrap();
                std::fs::remove_file(dir.join("busy")).unwrap();
            },
        );
        assert!(marker.exists());
    }

    #[test]
    fn two_test_processes_install_once_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| {
                Command::new(&exe)
                    .args(["--ignored", "--exact", "tests::install_lock_child"])
                    .env(MEETING, dir.path())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert_eq!(log, "install\n", "one install, never two at once");
    }
}
