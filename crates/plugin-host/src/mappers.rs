//! Configured plugins, one per workflow: [`RecordMapper`], [`EventMapper`] and
//! [`OptOutResolver`]. A mapper keeps one configured instance between its calls, so that
//! instantiating and `configure` are not paid on every batch; each call re-arms the deadline
//! and the output budget. An instance is dropped, and the next call starts a fresh one with
//! the settings applied again, when a call fails in any way (a trap never poisons the next
//! batch) or after [`CALLS_PER_INSTANCE`] calls (what a plugin leaks or keeps between calls
//! stays bounded). Every result is validated before it is returned.

use std::fmt;

use wasmtime::component::{ComponentNamedList, ComponentType, Instance, Lift, Lower};
use wasmtime::{Store, Trap};

use conduit_model as model;

use super::capped::CappedText;
use super::convert;
use super::host::{LoadedInner, LoadedPlugin, WorldPre};
use super::packed;
use super::sandbox::{self, StoreState, run_isolated};
use super::untrusted::cap;
use super::{Limits, PluginError, World};

/// Checks a plugin's result of type `R` for a call with the given number of inputs and
/// resolves it into outcomes; the error says what was wrong.
type Decode<R> = fn(R, usize, &Limits) -> Result<Vec<model::Outcome>, String>;

/// Calls one instance serves before a fresh one replaces it.
pub const CALLS_PER_INSTANCE: u32 = 64;

/// Maps Dynamics 365 row batches (Ingress).
#[derive(Debug, Clone)]
pub struct RecordMapper {
    configured: Configured,
    warm: WarmSlot,
}

/// Maps Campaign email events (Egress).
#[derive(Debug, Clone)]
pub struct EventMapper {
    configured: Configured,
    warm: WarmSlot,
}

/// Resolves opt-out states (Opt-in/out).
#[derive(Debug, Clone)]
pub struct OptOutResolver {
    configured: Configured,
    warm: WarmSlot,
}

/// A configured instance kept between calls, with the calls it has served.
struct Warm {
    store: Store<StoreState>,
    instance: Instance,
    calls: u32,
}

/// The instance a mapper keeps, if any. A clone starts without one: an instance serves one
/// mapper, whose calls never overlap (`&mut self`).
#[derive(Default)]
struct WarmSlot(Option<Warm>);

impl Clone for WarmSlot {
    fn clone(&self) -> Self {
        WarmSlot(None)
    }
}

impl fmt::Debug for WarmSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(warm) => write!(f, "WarmSlot(served {} call(s))", warm.calls),
            None => f.write_str("WarmSlot(empty)"),
        }
    }
}

/// A loaded plugin with settings the plugin accepted and the limits to run it under.
#[derive(Debug, Clone)]
struct Configured {
    plugin: LoadedPlugin,
    settings: String,
    limits: Limits,
}

/// Why `configure` did not succeed.
enum ConfigureFailure {
    /// The plugin returned an error about its settings.
    Rejected(String),
    /// The call itself failed (deadline, trap, memory).
    Failed(PluginError),
}

impl LoadedPlugin {
    /// Configures a record mapper with `settings` (its config section as JSON) on a fresh
    /// instance; bad settings give [`PluginError::Configure`] with the plugin's message.
    pub fn record_mapper(
        &self,
        settings: &serde_json::Value,
        limits: Limits,
    ) -> Result<RecordMapper, PluginError> {
        let configured = self.configure(World::RecordMapper, settings, limits)?;
        Ok(RecordMapper {
            configured,
            warm: WarmSlot::default(),
        })
    }

    /// Configures an event mapper; see [`LoadedPlugin::record_mapper`].
    pub fn event_mapper(
        &self,
        settings: &serde_json::Value,
        limits: Limits,
    ) -> Result<EventMapper, PluginError> {
        let configured = self.configure(World::EventMapper, settings, limits)?;
        Ok(EventMapper {
            configured,
            warm: WarmSlot::default(),
        })
    }

    /// Configures an opt-out resolver; see [`LoadedPlugin::record_mapper`].
    pub fn opt_out_resolver(
        &self,
        settings: &serde_json::Value,
        limits: Limits,
    ) -> Result<OptOutResolver, PluginError> {
        let configured = self.configure(World::OptOutResolver, settings, limits)?;
        Ok(OptOutResolver {
            configured,
            warm: WarmSlot::default(),
        })
    }

    fn configure(
        &self,
        world: World,
        settings: &serde_json::Value,
        limits: Limits,
    ) -> Result<Configured, PluginError> {
        limits.validate()?;
        if self.world() != world {
            return Err(PluginError::WrongWorld {
                plugin: self.inner.reference.clone(),
                expected: world,
                message: format!("it was loaded as a {} plugin", self.world()),
            });
        }
        let configured = Configured {
            plugin: self.clone(),
            settings: settings.to_string(),
            limits,
        };
        // Configure once up front so bad settings fail the workflow's start, not its batches.
        let probe = run_isolated(&self.inner.reference, || Ok(configured.start().map(drop)))?;
        match probe {
            Ok(()) => Ok(configured),
            Err(ConfigureFailure::Rejected(message)) => Err(PluginError::Configure {
                plugin: self.inner.reference.clone(),
                message,
            }),
            Err(ConfigureFailure::Failed(error)) => Err(error),
        }
    }
}

impl Configured {
    fn inner(&self) -> &LoadedInner {
        &self.plugin.inner
    }

    /// A fresh store and instance with `configure` applied and the deadline re-armed.
    fn start(&self) -> Result<(Store<StoreState>, Instance), ConfigureFailure> {
        let inner = self.inner();
        let mut store = sandbox::new_store(inner.host.engine(), &inner.name, &self.limits);
        let instance = inner
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(|error| ConfigureFailure::Failed(self.classify(&store, error)))?;
        let configured = instance
            .get_typed_func::<(&str,), (Result<(), CappedText>,)>(&mut store, "configure")
            .and_then(|configure| configure.call(&mut store, (self.settings.as_str(),)));
        match configured {
            Ok((Ok(()),)) => {}
            Ok((Err(CappedText(message)),)) => return Err(ConfigureFailure::Rejected(message)),
            Err(error) => return Err(ConfigureFailure::Failed(self.classify(&store, error))),
        }
        sandbox::arm_deadline(&mut store, self.limits.deadline);
        Ok((store, instance))
    }

    /// `start` for a batch call: a settings rejection now (they were accepted before) fails
    /// the batch.
    fn start_batch(&self) -> Result<(Store<StoreState>, Instance), PluginError> {
        self.start().map_err(|failure| match failure {
            ConfigureFailure::Rejected(message) => PluginError::Batch {
                plugin: self.inner().reference.clone(),
                message: format!(
                    "settings accepted earlier were rejected on a fresh instance: {message}"
                ),
            },
            ConfigureFailure::Failed(error) => error,
        })
    }

    /// Calls the batch export `name` with `input` on the kept instance (or a fresh, configured
    /// one) and turns its result into validated outcomes. The error text of the result is
    /// read capped. The instance is kept for the next call only when this one succeeded.
    fn call<P, R>(
        &self,
        warm: &mut WarmSlot,
        name: &str,
        input: P,
        inputs: usize,
        decode: Decode<R>,
    ) -> Result<Vec<model::Outcome>, PluginError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentType + Lift + Send + Sync + 'static,
    {
        let mut current = match warm.0.take() {
            Some(current) => current,
            None => {
                let (store, instance) = self.start_batch()?;
                Warm {
                    store,
                    instance,
                    calls: 0,
                }
            }
        };
        // Each call has the whole output budget and deadline, however many came before.
        current
            .store
            .set_hostcall_fuel(self.limits.max_output_bytes);
        sandbox::arm_deadline(&mut current.store, self.limits.deadline);
        let result = current
            .instance
            .get_typed_func::<P, (Result<R, CappedText>,)>(&mut current.store, name)
            .and_then(|function| function.call(&mut current.store, input))
            .map(|(result,)| result);
        let outcomes = self.finish(&current.store, result, inputs, decode);
        current.calls += 1;
        let healthy = outcomes.is_ok() && !current.store.data().memory.refused;
        if healthy && current.calls < CALLS_PER_INSTANCE {
            current.store.data_mut().log_output();
            warm.0 = Some(current);
        }
        outcomes
    }

    /// Tells a deadline and a memory overrun apart from any other trap.
    fn classify(&self, store: &Store<StoreState>, error: wasmtime::Error) -> PluginError {
        let plugin = self.inner().reference.clone();
        if store.data().memory.refused {
            return PluginError::MemoryLimit {
                plugin,
                limit_bytes: self.limits.memory_bytes,
            };
        }
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return PluginError::DeadlineExceeded {
                plugin,
                deadline: self.limits.deadline,
            };
        }
        if is_over_hostcall_fuel(&error) {
            return PluginError::InvalidOutput {
                plugin,
                problem: format!(
                    "the output holds more than {} bytes in total (the limit of one call, counting every copy of a string the plugin shares), found while copying its result or a log line",
                    self.limits.max_output_bytes
                ),
            };
        }
        // A trap's wasm backtrace lists unnamed functions of a stripped component: it would
        // bury the one useful line (and the panic message) in every dead letter's reason.
        let cause = match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => cap(&format!("{error:#}")),
        };
        let stderr = store.data().stderr_text();
        let message = if stderr.is_empty() {
            cause
        } else {
            format!("{cause}; the plugin wrote: {stderr}")
        };
        PluginError::Trap { plugin, message }
    }

    /// Turns a call's result into validated outcomes.
    fn finish<R>(
        &self,
        store: &Store<StoreState>,
        result: wasmtime::Result<Result<R, CappedText>>,
        inputs: usize,
        decode: Decode<R>,
    ) -> Result<Vec<model::Outcome>, PluginError> {
        let plugin = || self.inner().reference.clone();
        let mapped = result
            .map_err(|error| self.classify(store, error))?
            .map_err(|CappedText(message)| PluginError::Batch {
                plugin: plugin(),
                message,
            })?;
        decode(mapped, inputs, &self.limits).map_err(|problem| PluginError::InvalidOutput {
            plugin: plugin(),
            problem: cap(&problem),
        })
    }

    fn wrong_pre(&self, world: World) -> PluginError {
        PluginError::WrongWorld {
            plugin: self.inner().reference.clone(),
            expected: world,
            message: format!("it was loaded as a {} plugin", self.plugin.world()),
        }
    }
}

/// True when wasmtime stopped copying a plugin's data into the host because the call's
/// hostcall fuel (set to the output budget in `sandbox::new_store`) ran out. wasmtime does not
/// export the error's type, so its fixed message is matched.
fn is_over_hostcall_fuel(error: &wasmtime::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .to_string()
            .contains("fuel allocated for hostcalls has been exhausted")
    })
}

impl RecordMapper {
    /// Maps one batch: one outcome per row, in row order; write records carry their resolved
    /// target and field names.
    pub fn map(
        &mut self,
        phase: model::Phase,
        batch: &model::RecordBatch,
    ) -> Result<Vec<model::Outcome>, PluginError> {
        let Self { configured, warm } = self;
        let is_packed = match &configured.inner().pre {
            WorldPre::PackedRecord(_) => true,
            WorldPre::Record(_) => false,
            _ => return Err(configured.wrong_pre(World::RecordMapper)),
        };
        let inputs = batch.rows.len();
        run_isolated(&configured.inner().reference, || {
            let phase = convert::phase_to_wit(phase);
            if is_packed {
                let input =
                    packed::batch_to_packed(batch).map_err(|too_large| PluginError::Batch {
                        plugin: configured.inner().reference.clone(),
                        message: format!(
                            "{} outgrows the packed form's 32-bit offsets; map smaller pages",
                            too_large.what
                        ),
                    })?;
                configured.call(
                    warm,
                    "map-packed",
                    (phase, &input),
                    inputs,
                    packed::outcomes_from_packed,
                )
            } else {
                let input = convert::batch_to_wit(batch);
                configured.call(
                    warm,
                    "map",
                    (phase, &input),
                    inputs,
                    convert::outcomes_from_wit,
                )
            }
        })
    }
}

impl EventMapper {
    /// Maps one page of email events: one outcome per event, in order.
    pub fn map(
        &mut self,
        events: &[model::EmailEvent],
    ) -> Result<Vec<model::Outcome>, PluginError> {
        let Self { configured, warm } = self;
        let WorldPre::Event(_) = &configured.inner().pre else {
            return Err(configured.wrong_pre(World::EventMapper));
        };
        run_isolated(&configured.inner().reference, || {
            let input: Vec<_> = events.iter().map(convert::event_to_wit).collect();
            configured.call(
                warm,
                "map",
                (input.as_slice(),),
                events.len(),
                convert::outcomes_from_wit,
            )
        })
    }
}

impl OptOutResolver {
    /// Resolves one batch of contacts: one outcome per contact, in order.
    pub fn resolve(
        &mut self,
        contacts: &[model::ContactOptOut],
    ) -> Result<Vec<model::Outcome>, PluginError> {
        let Self { configured, warm } = self;
        let WorldPre::OptOut(_) = &configured.inner().pre else {
            return Err(configured.wrong_pre(World::OptOutResolver));
        };
        run_isolated(&configured.inner().reference, || {
            let input: Vec<_> = contacts.iter().map(convert::contact_to_wit).collect();
            configured.call(
                warm,
                "resolve",
                (input.as_slice(),),
                contacts.len(),
                convert::outcomes_from_wit,
            )
        })
    }
}
