//! One sandboxed instance of a model: its own store, memory cap, WASI view
//! of `/model` (read-only) and nothing else, and a deadline on every call.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;
use wasmtime::component::ResourceTable;
use wasmtime::{
    PoolConcurrencyLimitError, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::Model;
use super::bindings::mme::model::types::Error as WitError;
use super::guest_log::{GuestLog, LogBudget};
use super::wait::{WaitedPastDeadline, block_on};
use super::{Charge, Compiled, MemoryMeter, Request, Response, RuntimeError};

/// Where the guest sees its package.
pub const MODEL_MOUNT: &str = "/model";

/// What one model's instances may touch and use.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The model's name, for log lines.
    pub model: Arc<str>,
    /// The unpacked package, mounted read-only at `/model`.
    pub dir: PathBuf,
    /// The cap on the instance's linear memory (clamped to the server's cap).
    pub max_memory_bytes: usize,
    /// The deadline of one `predict` call.
    pub timeout: Duration,
    /// The deadline of the `load` call.
    pub load_timeout: Duration,
    /// The largest response body accepted from the guest.
    pub max_response_bytes: usize,
    /// The model's share of the log.
    pub log_budget: Arc<LogBudget>,
    /// Where the instance's linear memories are counted, as they grow.
    pub memory: MemoryMeter,
}

/// The data of a store: WASI state, the memory limiter, and the deadline
/// of the call in progress, which bounds the guest's waits in WASI.
pub struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: MeteredLimits,
    deadline: Instant,
}

impl InstanceState {
    /// What a wait in WASI needs: the resources, and when to give up.
    pub(super) fn waiting(&mut self) -> (&mut ResourceTable, Instant) {
        (&mut self.table, self.deadline)
    }
}

/// The store's limits, which also count every byte of linear memory they
/// grant on the model's meter, until the store is dropped.
struct MeteredLimits {
    limits: StoreLimits,
    meter: MemoryMeter,
    /// For an instance outside the pool, where a sample of the pool's
    /// pages cannot see it: its grants count here too.
    unpooled: Option<MemoryMeter>,
    granted: u64,
}

impl ResourceLimiter for MeteredLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            // Also called for a memory's first allocation, with `current` 0.
            let grown = desired.saturating_sub(current) as u64;
            self.meter.add(grown);
            if let Some(unpooled) = &self.unpooled {
                unpooled.add(grown);
            }
            self.granted += grown;
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl Drop for MeteredLimits {
    fn drop(&mut self) {
        self.meter.sub(self.granted);
        if let Some(unpooled) = &self.unpooled {
            unpooled.sub(self.granted);
        }
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// What the model's own code reported: the request's fault or the model's.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GuestError {
    /// The input was unusable (HTTP 400).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The model failed (HTTP 500).
    #[error("model error: {0}")]
    Internal(String),
}

impl From<WitError> for GuestError {
    fn from(error: WitError) -> Self {
        match error {
            WitError::InvalidInput(m) => GuestError::InvalidInput(m),
            WitError::Internal(m) => GuestError::Internal(m),
        }
    }
}

/// A call that did not complete normally. After any of these the instance
/// must be dropped: a trap leaves the store unusable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallError {
    /// `load` returned an error.
    #[error("load failed: {0}")]
    Load(GuestError),
    /// The call ran past its deadline and was stopped.
    #[error("the model did not answer within {0:?}")]
    Deadline(Duration),
    /// `load` ran past its deadline and was stopped.
    #[error(
        "load did not finish within {0:?}; set model_loading_timeout (seconds) in serving.properties if the model needs longer"
    )]
    LoadDeadline(Duration),
    /// The guest trapped: a panic, an out-of-bounds access, a stack overflow, running out of memory.
    #[error("the model crashed: {0}")]
    Trap(String),
}

/// The instances alive in both tiers, against `--max-instances`. The pool
/// bounds its own instances, but the baseline engine allocates on demand,
/// so the bound on the two together is kept here.
#[derive(Debug)]
pub(super) struct InstanceSlots {
    live: AtomicU32,
    max: u32,
}

impl InstanceSlots {
    pub(super) fn new(max: u32) -> Arc<Self> {
        Arc::new(InstanceSlots {
            live: AtomicU32::new(0),
            max,
        })
    }

    /// A slot for one more instance, or back-pressure if all are taken.
    pub(super) fn take(self: &Arc<Self>) -> Result<Slot, RuntimeError> {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live < self.max).then_some(live + 1)
            })
            .map_err(|_| {
                RuntimeError::PoolExhausted(format!(
                    "all {} instance slots are in use (--max-instances)",
                    self.max
                ))
            })?;
        Ok(Slot(self.clone()))
    }
}

/// One instance's place among [`InstanceSlots`], given back when dropped.
#[derive(Debug)]
pub(super) struct Slot(Arc<InstanceSlots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A live instance of a model.
pub struct Instance {
    store: Store<InstanceState>,
    model: Model,
    timeout: Duration,
    load_timeout: Duration,
    max_response_bytes: usize,
    /// Its host side's memory, counted while it lives.
    host: Option<Charge>,
    /// Declared last: it is given back after the store is freed.
    _slot: Slot,
}

impl Instance {
    pub(super) fn new(
        compiled: &Compiled,
        sandbox: &Sandbox,
        server_max_memory: usize,
        unpooled: Option<MemoryMeter>,
        slot: Slot,
    ) -> Result<Self, RuntimeError> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_blocking_current_thread(true)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(GuestLog::new(
                sandbox.model.clone(),
                "stdout",
                sandbox.log_budget.clone(),
            ))
            .stderr(GuestLog::new(
                sandbox.model.clone(),
                "stderr",
                sandbox.log_budget.clone(),
            ));
        wasi.preopened_dir(&sandbox.dir, MODEL_MOUNT, FsPerms::ReadOnly)
            .map_err(|e| {
                RuntimeError::Instantiate(format!("cannot mount {}: {e}", sandbox.dir.display()))
            })?;
        let limits = StoreLimitsBuilder::new()
            .memory_size(sandbox.max_memory_bytes.min(server_max_memory))
            .instances(32)
            .trap_on_grow_failure(false)
            .build();
        let state = InstanceState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: MeteredLimits {
                limits,
                meter: sandbox.memory.clone(),
                unpooled,
                granted: 0,
            },
            deadline: Instant::now(),
        };
        let mut store = Store::new(compiled.engine(), state);
        store.limiter(|state| &mut state.limits);
        // At each tick, a call past its deadline stops; any other yields to
        // its executor, so that a call inline on an async thread holds that
        // thread for one tick at most.
        store.epoch_deadline_callback(|store| {
            Ok(if Instant::now() >= store.data().deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        arm_deadline(&mut store, sandbox.load_timeout.max(sandbox.timeout));
        let model = block_on(compiled.pre.instantiate_async(&mut store)).map_err(|e| {
            if e.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
                RuntimeError::PoolExhausted(format!("{e:#}"))
            } else {
                RuntimeError::Instantiate(format!("{e:#}"))
            }
        })?;
        Ok(Instance {
            store,
            model,
            timeout: sandbox.timeout,
            load_timeout: sandbox.load_timeout,
            max_response_bytes: sandbox.max_response_bytes,
            host: None,
            _slot: slot,
        })
    }

    /// Counts its host side's memory on `charge` for as long as it lives.
    pub(super) fn hold(&mut self, charge: Charge) {
        self.host = Some(charge);
    }

    /// Calls the guest's `load` with the `option.*` settings.
    pub fn load(&mut self, config: &[(String, String)]) -> Result<(), CallError> {
        arm_deadline(&mut self.store, self.load_timeout);
        match block_on(self.model.call_load(&mut self.store, config)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(CallError::Load(error.into())),
            Err(error) => Err(match self.classify(error) {
                CallError::Deadline(_) => CallError::LoadDeadline(self.load_timeout),
                other => other,
            }),
        }
    }

    /// Calls the guest's `predict` on a batch; one result per request.
    pub fn predict(
        &mut self,
        batch: &[Request],
    ) -> Result<Vec<Result<Response, GuestError>>, CallError> {
        self.predict_within(batch, self.timeout)
    }

    /// [`Instance::predict`], stopped after `time_left` if that comes before
    /// the model's own timeout: what is left of the batch's earliest deadline
    /// once the requests have waited in the queue. Blocks this thread until
    /// the call ends.
    pub fn predict_within(
        &mut self,
        batch: &[Request],
        time_left: Duration,
    ) -> Result<Vec<Result<Response, GuestError>>, CallError> {
        block_on(self.predict_async(batch, time_left))
    }

    /// [`Instance::predict_within`] as a future, which yields at each epoch
    /// tick and while the guest waits in WASI.
    pub async fn predict_async(
        &mut self,
        batch: &[Request],
        time_left: Duration,
    ) -> Result<Vec<Result<Response, GuestError>>, CallError> {
        arm_deadline(&mut self.store, time_left.min(self.timeout));
        let results = self
            .model
            .call_predict(&mut self.store, batch)
            .await
            .map_err(|error| self.classify(error))?;
        if results.len() != batch.len() {
            let message = format!(
                "the model returned {} results for {} requests",
                results.len(),
                batch.len()
            );
            return Ok(batch
                .iter()
                .map(|_| Err(GuestError::Internal(message.clone())))
                .collect());
        }
        Ok(results
            .into_iter()
            .map(|result| match result {
                Ok(response) if response.body.len() > self.max_response_bytes => {
                    Err(GuestError::Internal(format!(
                        "the response is {} bytes; the limit is {}",
                        response.body.len(),
                        self.max_response_bytes
                    )))
                }
                Ok(response) => Ok(response),
                Err(error) => Err(error.into()),
            })
            .collect())
    }

    fn classify(&self, error: wasmtime::Error) -> CallError {
        if error.downcast_ref::<WaitedPastDeadline>().is_some() {
            return CallError::Deadline(self.timeout);
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallError::Deadline(self.timeout),
            Some(trap) => CallError::Trap(trap.to_string()),
            None => CallError::Trap(format!("{error:#}")),
        }
    }
}

/// Sets the deadline of the next call, for its wasm code (checked at each
/// epoch tick) and for its waits in WASI.
fn arm_deadline(store: &mut Store<InstanceState>, timeout: Duration) {
    store.data_mut().deadline = Instant::now() + timeout;
    store.set_epoch_deadline(1);
}
