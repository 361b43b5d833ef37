//! Loading and configuring every plugin a config uses, as `conduit config check` does before a
//! start: the component is valid, implements the world of the workflow it is configured in, and
//! accepts its settings (`configure` runs with the workflow's deadline and memory cap). Each
//! failure is a [`Problem`] located in the config file: at the workflow's `plugin` key for the
//! component, at the table mapping's `name` for Ingress settings.

use conduit_config::{Config, ConfigKey, Problem};
use conduit_engine::offline::plugin_settings;
use conduit_model::WorkflowId;
use conduit_plugin_host::{LoadedPlugin, PluginError, PluginHost, World, cap};

use super::plugins::{resolve_reference, sandbox_limits};

/// The world a workflow's plugin must implement.
pub fn workflow_world(workflow: WorkflowId) -> World {
    workflow.world()
}

/// Loads and configures the plugin of every configured workflow; one problem per failure.
/// Runs plugin code (each `configure` up to the workflow's plugin deadline): call it from a
/// blocking thread, never from an async worker.
pub fn check_plugins(config: &Config, host: &PluginHost) -> Vec<Problem> {
    WorkflowId::ALL
        .into_iter()
        .flat_map(|workflow| check_workflow_plugin(config, host, workflow))
        .collect()
}

/// Loads and configures one workflow's plugin (none when the workflow is not configured), as
/// [`check_plugins`] does for each; the workflow editor's check. Runs plugin code: call it
/// from a blocking thread.
pub fn check_workflow_plugin(
    config: &Config,
    host: &PluginHost,
    workflow: WorkflowId,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(plugin) = config.plugin(workflow) else {
        return problems;
    };
    let world = workflow_world(workflow);
    let at_plugin = |message: String, hint: String| {
        config.problem(ConfigKey::Plugin(workflow), cap(&message), Some(hint))
    };
    let loaded = match resolve_reference(&config.base_dir(), plugin)
        .and_then(|reference| host.load(&reference, world))
    {
        Ok(loaded) => loaded,
        Err(error) => {
            let message = error.to_string();
            let hint = if matches!(error, PluginError::WrongWorld { .. }) {
                format!(
                    "the {workflow} workflow needs a {world} plugin; `conduit plugin test <plugin>` names the world a component implements"
                )
            } else {
                "give a WebAssembly component built for wasm32-wasip2 (`conduit plugin build` makes one)".to_owned()
            };
            problems.push(at_plugin(message, hint));
            return problems;
        }
    };
    let limits = sandbox_limits(&config.limits(workflow));
    match workflow {
        WorkflowId::Ingress => {
            let mappings = config.ingress().into_iter().flat_map(|s| &s.mappings);
            for mapping in mappings {
                let name = &mapping.name;
                let result = match plugin_settings(config, workflow, Some(name)) {
                    Ok(settings) => configure(&loaded, world, &settings, limits),
                    Err(error) => Err(error.to_string()),
                };
                if let Err(message) = result {
                    problems.push(config.problem(
                        ConfigKey::Mapping(name),
                        cap(&format!("mapping '{name}': {message}")),
                        Some(format!(
                            "fix this mapping's settings; `conduit plugin test --mapping {name}` runs the plugin with them"
                        )),
                    ));
                }
            }
        }
        WorkflowId::Egress | WorkflowId::OptInOut => {
            let result = match plugin_settings(config, workflow, None) {
                Ok(settings) => configure(&loaded, world, &settings, limits),
                Err(error) => Err(error.to_string()),
            };
            if let Err(message) = result {
                problems.push(at_plugin(
                    message,
                    format!(
                        "fix the [{workflow}] settings; `conduit plugin test --workflow {workflow}` runs the plugin with them"
                    ),
                ));
            }
        }
    }
    problems
}

/// Runs the plugin's `configure` with `settings`, as a workflow's start does.
fn configure(
    loaded: &LoadedPlugin,
    world: World,
    settings: &serde_json::Value,
    limits: conduit_plugin_host::Limits,
) -> Result<(), String> {
    let result: Result<(), PluginError> = match world {
        World::RecordMapper => loaded.record_mapper(settings, limits).map(drop),
        World::EventMapper => loaded.event_mapper(settings, limits).map(drop),
        World::OptOutResolver => loaded.opt_out_resolver(settings, limits).map(drop),
    };
    result.map_err(|error| error.to_string())
}
