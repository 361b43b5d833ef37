//! STARTING, for any workflow: build the connectors, check credentials, let the workflow load
//! its plugin and say what it reads and writes, take the destination's schema as the drift
//! baseline, and assemble the reader and writer stages. Every failure is a message naming
//! what is wrong.

use std::sync::Arc;

use conduit_config::Config;

use super::Environment;
use super::drift::DriftGuard;
use super::reader::{Reader, ReaderCore, ReaderPacing};
use super::services::PluginBuild;
use super::stage::PrepareError;
use super::workflows::{Ready, Start, Workflow};
use super::writer::Writer;

/// The stages of a workflow ready to run.
pub(super) struct Prepared<W> {
    pub(super) reader: Reader<W>,
    pub(super) writer: Writer,
    pub(super) plugin_fingerprint: String,
    pub(super) build: Option<Arc<dyn PluginBuild>>,
}

/// Runs STARTING for workflow `W`.
pub(super) async fn prepare<W: Workflow>(
    env: &Environment,
    config: &Config,
) -> Result<Prepared<W>, PrepareError> {
    let id = W::ID;
    let services = env
        .connect
        .connect(config)
        .map_err(|error| error.to_string())?;
    services
        .dynamics_sink
        .check()
        .await
        .map_err(|error| PrepareError::service("Dynamics 365 credentials or URL", &error))?;
    services
        .campaign_sink
        .check()
        .await
        .map_err(|error| PrepareError::service("Campaign credentials or URL", &error))?;
    let limits = config.limits(id);
    let pacing = config.pacing(id);
    let Ready {
        workflow,
        needed,
        plugin_fingerprint,
        build,
    } = W::prepare(Start {
        env,
        config,
        services: &services,
        page_size: pacing.page_size,
    })
    .await?;
    let mut drift = DriftGuard::baseline(&services, &needed).await?;
    if let Some(system) = W::LEARNS_DESTINATION {
        drift.learn_on_first_write(system);
    }
    let reader = Reader {
        core: ReaderCore {
            workflow: id,
            store: env.store.clone(),
            services: services.clone(),
            pacing: ReaderPacing {
                page_size: pacing.page_size,
                poll_interval: pacing.poll_interval,
                max_backlog: limits.replay_max_rows.max(1),
                failure_threshold: limits.failure_threshold.max(1),
            },
            failing_batches: 0,
        },
        workflow,
    };
    let writer = Writer {
        workflow: id,
        store: env.store.clone(),
        services,
        batch_size: pacing.write_batch.max(1),
        drift: Arc::new(drift),
        missing_record_wait: limits.missing_record_wait,
    };
    Ok(Prepared {
        reader,
        writer,
        plugin_fingerprint,
        build,
    })
}
