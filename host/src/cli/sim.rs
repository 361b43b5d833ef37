//! `conduit sim ...`: runs a simulator in the foreground until Ctrl-C.
//!
//! Only `dynamics` is wired here; `campaign` and `both` are wired when the Campaign simulator
//! is merged, and until then say so clearly.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use clap::Subcommand;
use conduit::sim::dynamics::{DynamicsSim, DynamicsSimOptions};

/// Run a wire-faithful simulator of Dynamics 365 or Campaign Standard.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    service: Service,
}

#[derive(Debug, Subcommand)]
enum Service {
    /// Simulate the Dataverse Web API and its token endpoint.
    Dynamics(DynamicsArgs),
    /// Simulate Campaign Standard (not wired yet).
    Campaign,
    /// Simulate both services (not wired yet).
    Both,
}

#[derive(Debug, clap::Args)]
struct DynamicsArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 5555)]
    port: u16,
    /// Address to listen on; keep loopback unless the simulator must be reachable from outside.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Deterministic contacts to seed.
    #[arg(long, default_value_t = 0)]
    seed_contacts: usize,
    /// Vehicles to seed (default: a quarter of the contacts).
    #[arg(long)]
    seed_vehicles: Option<usize>,
    /// The client id the token endpoint accepts.
    #[arg(
        long,
        env = "CONDUIT_SIM_D365_CLIENT_ID",
        default_value = "conduit-sim-client"
    )]
    client_id: String,
    /// The client secret the token endpoint accepts.
    #[arg(
        long,
        env = "CONDUIT_SIM_D365_CLIENT_SECRET",
        default_value = "conduit-sim-secret",
        hide_env_values = true
    )]
    client_secret: String,
}

/// Runs the chosen simulator until Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.service {
        Service::Dynamics(dynamics) => run_dynamics(dynamics).await,
        Service::Campaign | Service::Both => bail!(
            "the Campaign Standard simulator is not wired into `conduit sim` yet; use `conduit sim dynamics` for now"
        ),
    }
}

async fn run_dynamics(args: DynamicsArgs) -> anyhow::Result<()> {
    let sim = DynamicsSim::new(DynamicsSimOptions {
        client_id: args.client_id,
        client_secret: args.client_secret,
        seed_contacts: args.seed_contacts,
        seed_vehicles: args.seed_vehicles.unwrap_or(args.seed_contacts / 4),
        ..DynamicsSimOptions::default()
    });
    let server = sim
        .serve(SocketAddr::new(args.host, args.port))
        .await
        .context("cannot start the Dynamics 365 simulator")?;
    println!("Dynamics 365 simulator listening on {}", server.base_url());
    println!("  token URL:  {}", server.token_url("<any-tenant>"));
    println!("  Web API:    {}api/data/v9.2/", server.base_url());
    println!("  control:    {}_sim/", server.base_url());
    println!("  contacts:   {}", sim.count("contact"));
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    server.shutdown().await;
    Ok(())
}
