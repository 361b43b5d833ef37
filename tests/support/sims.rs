//! Both simulators in the test process, and configs pointing a `conduit run` at them.

use std::net::SocketAddr;
use std::path::PathBuf;

use conduit_sim::campaign::{CampaignSim, CampaignSimOptions, CampaignSimServer};
use conduit_sim::dynamics::{DynamicsSim, DynamicsSimOptions, SimServer};

use crate::{CliOutput, HostProcess, cli, free_port};

/// The secrets' environment variables and values the generated configs use.
pub const SECRETS: [(&str, &str); 2] = [
    ("E2E_D365_SECRET", "e2e-d365-secret"),
    ("E2E_ACS_SECRET", "e2e-acs-secret"),
];

/// Both simulators, their servers, and a folder for the host's config and data.
pub struct SimPair {
    /// The Dynamics 365 simulator.
    pub dynamics: DynamicsSim,
    /// The Campaign simulator.
    pub campaign: CampaignSim,
    /// The Dynamics 365 server.
    pub dynamics_server: SimServer,
    /// The Campaign server.
    pub campaign_server: CampaignSimServer,
    /// The folder holding `conduit.toml` and the data directory.
    pub dir: tempfile::TempDir,
    /// The admin port the configs use.
    pub admin_port: u16,
}

impl SimPair {
    /// Starts both simulators with seeded contacts and vehicles.
    pub async fn start(contacts: usize, vehicles: usize) -> SimPair {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let dynamics = DynamicsSim::new(DynamicsSimOptions {
            client_id: "e2e-client".into(),
            client_secret: SECRETS[0].1.into(),
            seed_contacts: contacts,
            seed_vehicles: vehicles,
            ..DynamicsSimOptions::default()
        });
        let dynamics_server = dynamics.serve(loopback).await.expect("dynamics simulator");
        let campaign = CampaignSim::new(CampaignSimOptions {
            client_id: "e2e-acs".into(),
            client_secret: SECRETS[1].1.into(),
            drop_root: Some(dir.path().join("sftp")),
            ..CampaignSimOptions::default()
        });
        let campaign_server = campaign.serve(loopback).await.expect("campaign simulator");
        SimPair {
            dynamics,
            campaign,
            dynamics_server,
            campaign_server,
            dir,
            admin_port: free_port(),
        }
    }

    /// The `[host]`, `[dynamics]` and `[campaign]` sections for these simulators.
    pub fn connection_sections(&self) -> String {
        format!(
            r#"[host]
data_dir = "data"
admin_listen = "127.0.0.1:{}"

[dynamics]
url = "{}"
token_url = "{}"
client_id = "e2e-client"
client_secret_env = "{}"

[campaign]
url = "{}"
ims_url = "{}"
client_id = "e2e-acs"
client_secret_env = "{}"
journal_url = "{}"
opt_out_exports = "{}"
max_concurrency = 16
"#,
            self.admin_port,
            self.dynamics_server.base_url(),
            self.dynamics_server.token_url("e2e-tenant"),
            SECRETS[0].0,
            self.campaign_server.api_base(),
            self.campaign_server.ims_url(),
            SECRETS[1].0,
            self.campaign_server.journal_url(),
            self.campaign.drop_root().display(),
        )
    }

    /// Writes `conduit.toml`: the connection sections followed by `workflows`.
    pub fn write_config(&self, workflows: &str) -> PathBuf {
        let path = self.config_path();
        std::fs::write(
            &path,
            format!("{}\n{workflows}", self.connection_sections()),
        )
        .expect("config written");
        path
    }

    /// Where the config is.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("conduit.toml")
    }

    /// Runs `conduit run` on the config with the secrets and `env`, without waiting.
    pub fn spawn(&self, env: &[(&str, &str)]) -> HostProcess {
        let mut all = SECRETS.to_vec();
        all.extend_from_slice(env);
        HostProcess::spawn(&self.config_path(), self.admin_port, &all)
    }

    /// Runs a CLI command on the config (and so against its host's admin API).
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        cli(&self.config_path(), args, &[])
    }

    /// Runs `conduit run` on the config and waits until it is healthy.
    pub async fn spawn_host(&self) -> HostProcess {
        let mut host = HostProcess::spawn(&self.config_path(), self.admin_port, &SECRETS);
        host.wait_healthy().await;
        host
    }

    /// Writes `workflows` as the config, spawns a host, starts Ingress and waits until it has
    /// read everything and written its backlog.
    pub async fn host_with_ingress_caught_up(&self, workflows: &str) -> HostProcess {
        self.write_config(workflows);
        let mut host = self.spawn_host().await;
        host.start("ingress").await;
        host.wait_caught_up("ingress").await;
        host
    }

    /// Campaign profiles by `externalId`.
    pub fn profiles(&self) -> std::collections::HashMap<String, serde_json::Value> {
        self.campaign
            .records("profile")
            .into_iter()
            .filter_map(|p| Some((p["externalId"].as_str()?.to_string(), p)))
            .collect()
    }

    /// A contact's `donotbulkemail` in Dynamics 365, when it has one.
    pub fn donotbulkemail(&self, id: &str) -> Option<bool> {
        self.dynamics
            .rows("contact")
            .into_iter()
            .find(|c| c["contactid"] == id)
            .and_then(|c| c["donotbulkemail"].as_bool())
    }

    /// Sets a contact's `donotbulkemail` in Dynamics 365 (an opt-out made there, or undone).
    pub fn set_donotbulkemail(&self, id: &str, flag: bool) {
        self.dynamics
            .upsert(
                "contact",
                id,
                crate::fields(&[("donotbulkemail", serde_json::json!(flag))]),
            )
            .expect("the simulator takes the contact's change");
    }

    /// The ids of the Dynamics 365 rows of a table, in seed order.
    pub fn ids(&self, table: &str, key: &str) -> Vec<String> {
        self.dynamics
            .rows(table)
            .iter()
            .filter_map(|row| row[key].as_str().map(str::to_string))
            .collect()
    }
}
