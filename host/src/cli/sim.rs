//! `conduit sim dynamics|campaign|both`: runs wire-faithful simulators in the foreground until
//! Ctrl-C. With `both`, Dynamics 365 listens on `--port` and Campaign on `--port + 1`, and
//! Campaign's seeded email events refer to the seeded Dynamics 365 contacts.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use conduit_sim::campaign::{CampaignSim, CampaignSimOptions};
use conduit_sim::dynamics::{DynamicsSim, DynamicsSimOptions};
use conduit_sim::tls::TlsIdentity;

/// Run wire-faithful simulators of Dynamics 365 and/or Campaign Standard.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    service: Service,
}

#[derive(Debug, Subcommand)]
enum Service {
    /// Simulate the Dataverse Web API and its token endpoint.
    Dynamics(SimArgs),
    /// Simulate Campaign Standard: IMS, the REST API, the event journal and the drop folder.
    Campaign(SimArgs),
    /// Simulate both (Dynamics 365 on --port, Campaign on --port + 1).
    Both(SimArgs),
}

#[derive(Debug, clap::Args)]
struct SimArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 5555)]
    port: u16,
    /// Address to listen on; keep loopback unless the simulator must be reachable from outside.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Deterministic Dynamics 365 contacts to seed.
    #[arg(long, default_value_t = 0)]
    seed_contacts: usize,
    /// Vehicles to seed (default: a quarter of the contacts).
    #[arg(long)]
    seed_vehicles: Option<usize>,
    /// Email events (sends, opens, clicks, bounces) to put in Campaign's journal (two per seeded contact by default, up to 1000).
    #[arg(long)]
    seed_events: Option<usize>,
    /// The client id the Dynamics 365 token endpoint accepts.
    #[arg(
        long,
        env = "CONDUIT_SIM_D365_CLIENT_ID",
        default_value = "conduit-sim-client"
    )]
    d365_client_id: String,
    /// The client secret the Dynamics 365 token endpoint accepts.
    #[arg(
        long,
        env = "CONDUIT_SIM_D365_CLIENT_SECRET",
        default_value = "conduit-sim-secret",
        hide_env_values = true
    )]
    d365_client_secret: String,
    /// The client id (API key) Campaign's IMS accepts.
    #[arg(
        long,
        env = "CONDUIT_SIM_ACS_CLIENT_ID",
        default_value = "conduit-campaign-client"
    )]
    acs_client_id: String,
    /// The client secret Campaign's IMS accepts.
    #[arg(
        long,
        env = "CONDUIT_SIM_ACS_CLIENT_SECRET",
        default_value = "conduit-campaign-secret",
        hide_env_values = true
    )]
    acs_client_secret: String,
    /// PEM certificate chain (leaf first): serve the Dynamics 365 simulator over HTTPS, as
    /// Dataverse itself (some clients refuse plain HTTP). Needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn read_pem(path: &Path, option: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{option}: cannot read {}", path.display()))
}

/// Runs the chosen simulators until Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let (args, dynamics, campaign) = match args.service {
        Service::Dynamics(args) => (args, true, false),
        Service::Campaign(args) => (args, false, true),
        Service::Both(args) => (args, true, true),
    };
    if !dynamics && args.tls_cert.is_some() {
        anyhow::bail!(
            "--tls-cert and --tls-key serve the Dynamics 365 simulator over HTTPS; the Campaign simulator serves plain HTTP only (use `conduit sim dynamics` or `both`)"
        );
    }
    let mut contact_ids = Vec::new();
    let mut dynamics_server = None;
    if dynamics {
        let sim = DynamicsSim::new(DynamicsSimOptions {
            client_id: args.d365_client_id.clone(),
            client_secret: args.d365_client_secret.clone(),
            seed_contacts: args.seed_contacts,
            seed_vehicles: args.seed_vehicles.unwrap_or(args.seed_contacts / 4),
            ..DynamicsSimOptions::default()
        });
        let addr = SocketAddr::new(args.host, args.port);
        let served = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                let identity = TlsIdentity {
                    cert_chain_pem: read_pem(cert, "--tls-cert")?,
                    key_pem: read_pem(key, "--tls-key")?,
                };
                sim.serve_tls(addr, &identity).await
            }
            _ => sim.serve(addr).await,
        };
        let server = served.context("cannot start the Dynamics 365 simulator")?;
        outln!("Dynamics 365 simulator listening on {}", server.base_url());
        outln!("  token URL:  {}", server.token_url("<any-tenant>"));
        outln!("  Web API:    {}api/data/v9.2/", server.base_url());
        outln!("  control:    {}", server.control_url());
        outln!("  contacts:   {}", sim.count("contact"));
        contact_ids = sim.ids("contact");
        dynamics_server = Some(server);
    }
    let mut campaign_server = None;
    if campaign {
        if contact_ids.is_empty() {
            contact_ids = (0..args.seed_contacts)
                .map(|i| format!("crm-{i}"))
                .collect();
        }
        let events = super::demo::email_events(
            &contact_ids,
            args.seed_events
                .unwrap_or((contact_ids.len() * 2).min(1000)),
        );
        let sim = CampaignSim::new(CampaignSimOptions {
            client_id: args.acs_client_id.clone(),
            client_secret: args.acs_client_secret.clone(),
            seed_events: events,
            ..CampaignSimOptions::default()
        });
        let port = if dynamics && args.port != 0 {
            args.port + 1
        } else {
            args.port
        };
        let server = sim
            .serve(SocketAddr::new(args.host, port))
            .await
            .context("cannot start the Campaign simulator")?;
        outln!("Campaign simulator listening on {}", server.origin());
        outln!("  API base:      {}", server.api_base());
        outln!("  IMS token:     {}", server.ims_url());
        outln!("  event journal: {}", server.journal_url());
        outln!("  drop folder:   {}", sim.drop_root().display());
        outln!("  control:       {}", server.control_url());
        outln!("  events:        {}", sim.journal_len());
        campaign_server = Some(server);
    }
    outln!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    if let Some(server) = dynamics_server {
        server.shutdown().await;
    }
    if let Some(server) = campaign_server {
        server.shutdown().await;
    }
    Ok(())
}
