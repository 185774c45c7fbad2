//! One loaded model: its package, its compiled component, and the
//! [`Backend`] that lets the work-load manager start instances of it and
//! run batches on them.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::room::MakeRoom;
use super::{LoadError, PredictError, RegistryConfig};
use crate::metrics::Metrics;
use crate::package::{CodeError, ModelCode, Package, Properties, PropertiesError};
use crate::runtime::{
    Ambient, CallError, Charge, Compiled, GuestError, Instance, LogBudget, MemoryMeter, Request,
    Response, Runtime, RuntimeError, Sandbox, Tier,
};
use crate::store::PackageSource;
use crate::wlm::{Backend, Bounds, InlineCall, ModelQueue, QueueStats, Settings};

/// Guest output a model may log per window, and the window.
const LOG_BYTES_PER_WINDOW: usize = 64 * 1024;
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Where the time of one load went.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadTimings {
    /// Downloading the package from the store (zero when it is local or cached).
    pub download: Duration,
    /// Unpacking the archive (or opening the folder), parsing the properties, reading the wasm.
    pub unpack: Duration,
    /// Compiling, or finding the compiled component in memory or on disk.
    pub compile: Duration,
    /// Instantiating the warm instances and running their `load`.
    pub instantiate: Duration,
}

/// A model ready to serve.
pub struct LoadedModel {
    /// Its name.
    pub name: String,
    /// Where its package came from.
    pub source: PackageSource,
    /// Its settings, as its package gives them.
    pub properties: Properties,
    /// Where the time of its load went.
    pub timings: LoadTimings,
    /// Its queue and workers.
    pub(super) queue: Arc<ModelQueue<WasmBackend>>,
    /// What it holds besides code and instances, on the budget while it lives.
    pub(super) holding: Charge,
    /// Its share's charge from its admission until it is listed, when its
    /// memory counts instead ([`LoadedModel::listed`]).
    pub(super) admitted: Mutex<Option<Charge>>,
    /// When a request last came for it, on the registry's clock of uses.
    pub(super) last_used: AtomicU64,
    /// Its count of requests answered 200 ([`crate::metrics::Metrics::requests_ok`]).
    pub requests_ok: Counter,
}

impl LoadedModel {
    /// The hash of the model's wasm.
    pub fn wasm_hash(&self) -> &str {
        &self.queue.backend().hash
    }

    /// Whether its code reads Triton's binary tensors itself.
    pub fn reads_binary_tensors(&self) -> bool {
        self.queue.backend().reads_binary_tensors()
    }

    /// Ends its admission's charge on its share: it is listed now, and
    /// its memory counts instead.
    pub(super) fn listed(&self) {
        let mut admitted = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        drop(admitted.take());
    }

    /// Its queue and workers now.
    pub fn stats(&self) -> QueueStats {
        self.queue.stats()
    }

    /// How it batches and scales now.
    pub fn settings(&self) -> Settings {
        self.queue.settings()
    }

    /// Its memory now: what it holds, and its instances' linear memories.
    /// Its code is shared by every model with the same wasm, and is
    /// counted once, apart.
    pub fn memory(&self) -> ModelMemory {
        let backend = self.queue.backend();
        ModelMemory {
            held: self.holding.bytes(),
            instances: backend.memory().bytes(),
            code: backend.compiled().code_bytes(),
        }
    }
}

/// One model's memory, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct ModelMemory {
    /// Its package, metadata and declared needs.
    pub held: u64,
    /// Its instances' linear memories now.
    pub instances: u64,
    /// Its component's native code, shared with the models of the same wasm.
    pub code: u64,
}

/// The sandbox of `name`'s instances: its package mounted, its own memory
/// cap within the server's, its deadline and its log budget.
pub fn sandbox_for(
    name: &str,
    package: &Package,
    runtime: &Runtime,
    max_response_bytes: usize,
) -> Sandbox {
    let server_cap = runtime.max_instance_memory_bytes();
    let max_memory = package.properties.max_memory_mb.map_or(server_cap, |mb| {
        usize::try_from(mb << 20).unwrap_or(usize::MAX)
    });
    Sandbox {
        model: Arc::from(name),
        dir: package.dir().to_path_buf(),
        max_memory_bytes: max_memory.min(server_cap),
        timeout: package.properties.request_timeout,
        load_timeout: package.properties.load_timeout,
        max_response_bytes,
        log_budget: Arc::new(LogBudget::new(LOG_BYTES_PER_WINDOW, LOG_WINDOW)),
        memory: runtime.instance_memory().granted().child(),
    }
}

/// Whether `package`'s model, run by `compiled`, reads Triton's binary
/// tensors itself: the built-in ONNX engine does, and so does a component
/// that says so (the guest SDK's `READS_BINARY_TENSORS`).
pub fn reads_binary_tensors(package: &Package, compiled: &Compiled) -> bool {
    matches!(package.code(), ModelCode::Onnx { .. }) || compiled.reads_binary_tensors()
}

/// The work-load manager's view of a model: it starts wasm instances and
/// runs batches on them.
pub struct WasmBackend {
    name: Arc<str>,
    runtime: Arc<Runtime>,
    /// The hash of the model's wasm (the same for every tier of its code).
    hash: String,
    /// The code new instances start from: a baseline tier's until the
    /// optimized code replaces it.
    compiled: Mutex<Arc<Compiled>>,
    sandbox: Sandbox,
    options: Vec<(String, String)>,
    instances: Gauge,
    models_loaded: Gauge,
    /// What the unpacked package occupies.
    package_bytes: u64,
    /// Takes back another model's spare instance when the pool is full.
    make_room: MakeRoom,
    /// Keeps the unpacked folder alive as long as instances may read it.
    _package: Package,
    /// See [`WasmBackend::reads_binary_tensors`]; fixed at load, as every
    /// tier of the code is the same wasm.
    reads_binary_tensors: bool,
}

impl WasmBackend {
    /// Whether the model's code reads Triton's binary tensors itself
    /// ([`reads_binary_tensors`]), so that a binary request's tensors reach
    /// it as bytes, not as JSON numbers it would parse again.
    pub fn reads_binary_tensors(&self) -> bool {
        self.reads_binary_tensors
    }

    /// The shared compiled component that new instances start from.
    pub fn compiled(&self) -> Arc<Compiled> {
        let mut compiled = self
            .compiled
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(better) = self.runtime.upgrade(&compiled) {
            *compiled = better;
        }
        compiled.clone()
    }

    /// A worker on `compiled`'s code, its `load` run.
    fn worker_on(&self, compiled: Arc<Compiled>) -> Result<WasmWorker, PredictError> {
        let mut instance = self.runtime.instantiate(&compiled, &self.sandbox)?;
        instance.load(&self.options)?;
        self.instances.inc();
        Ok(WasmWorker {
            instance,
            compiled,
            stays: false,
            instances: self.instances.clone(),
        })
    }

    /// Moves `worker` to optimized code once there is some: a fresh
    /// instance runs `load` and takes its place. Should that fail, the
    /// worker stays as it is; it answers as well, only slower.
    fn upgrade(&self, worker: &mut WasmWorker) {
        let Some(better) = self.runtime.upgrade(&worker.compiled) else {
            return;
        };
        match self.worker_on(better) {
            Ok(upgraded) => {
                *worker = upgraded;
                tracing::info!(model = %self.name, "instance moved to optimized code");
            }
            // A full pool: tried again at the next batch, when there may be room.
            Err(PredictError::Runtime(RuntimeError::PoolExhausted(_))) => {}
            Err(error) => {
                // Not tried again on every batch: it would fail, and log, each time.
                worker.stays = true;
                tracing::warn!(model = %self.name, %error, "cannot move an instance to optimized code; it keeps its code")
            }
        }
    }

    /// The linear memories of this model's live instances.
    pub fn memory(&self) -> &MemoryMeter {
        &self.sandbox.memory
    }

    /// The bytes of the files unpacked for this model (0 for a folder used in place).
    pub fn package_bytes(&self) -> u64 {
        self.package_bytes
    }
}

/// A started instance; the live-instances gauge follows it.
pub struct WasmWorker {
    instance: Instance,
    /// The code it runs, kept (and counted) while it lives.
    compiled: Arc<Compiled>,
    /// A move to optimized code failed: it keeps the code it has.
    stays: bool,
    instances: Gauge,
}

impl WasmWorker {
    /// Runs baseline code and has not given up moving to optimized code.
    fn awaits_optimized_code(&self) -> bool {
        self.compiled.tier() == Tier::Baseline && !self.stays
    }
}

impl Drop for WasmWorker {
    fn drop(&mut self) {
        self.instances.dec();
    }
}

impl Drop for WasmBackend {
    fn drop(&mut self) {
        self.models_loaded.dec();
    }
}

impl Backend for WasmBackend {
    type Worker = WasmWorker;
    type Input = Request;
    type Output = Result<Response, GuestError>;
    type Error = PredictError;

    fn start_worker(&self) -> Result<WasmWorker, PredictError> {
        self.worker_on(self.compiled())
    }

    fn is_out_of_room(&self, error: &PredictError) -> bool {
        matches!(error, PredictError::Runtime(RuntimeError::PoolExhausted(_)))
    }

    fn make_room(&self) -> bool {
        (self.make_room)(&self.name)
    }

    fn run_batch(
        &self,
        worker: &mut WasmWorker,
        batch: Vec<Request>,
        time_left: Duration,
    ) -> Result<Vec<Self::Output>, PredictError> {
        if worker.awaits_optimized_code() {
            self.upgrade(worker);
        }
        worker
            .instance
            .predict_within(&batch, time_left)
            .map_err(|error| discarded(&self.name, error))
    }

    fn start_call(
        &self,
        worker: WasmWorker,
        input: Request,
        time_left: Duration,
    ) -> Result<InlineCall<Self>, (WasmWorker, Request)> {
        // Baseline code moves to optimized code on a compute thread first.
        if worker.awaits_optimized_code() {
            return Err((worker, input));
        }
        let name = self.name.clone();
        Ok(Box::pin(Ambient::new(async move {
            let mut worker = worker;
            let batch = std::slice::from_ref(&input);
            match worker.instance.predict_async(batch, time_left).await {
                // One result for the one request: `predict_async` checks the count.
                Ok(mut results) => {
                    let result = results.pop().unwrap_or_else(|| {
                        Err(GuestError::Internal("the model returned no result".into()))
                    });
                    (Some(worker), Ok(result))
                }
                Err(error) => (None, Err(discarded(&name, error))),
            }
        })))
    }
}

/// A call failed in a way that poisons the store: the work-load manager
/// drops the instance.
fn discarded(model: &str, error: CallError) -> PredictError {
    tracing::warn!(model, %error, "instance discarded");
    PredictError::Call(error)
}

/// Settings that replace the package's own, as DJL's `POST /models` query
/// gives them: `serving.properties` keys and values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides(pub Vec<(&'static str, String)>);

impl Overrides {
    /// `properties` with the overrides set over them, checked as the file is.
    pub fn apply(&self, properties: &Properties) -> Result<Properties, PropertiesError> {
        properties.overridden(&self.0)
    }
}

/// How a model batches and scales, from its properties and the server's
/// compute threads (the default maximum of workers).
pub fn settings_for(properties: &Properties, compute_threads: usize) -> Result<Settings, String> {
    let min = properties.min_workers as usize;
    let max = properties
        .max_workers
        .map_or(compute_threads.max(min).max(1), |max| max as usize);
    Ok(Settings {
        bounds: Bounds::new(min, max).map_err(|e| e.to_string())?,
        batch_size: properties.batch_size.max(1) as usize,
        max_batch_delay: properties.max_batch_delay,
        max_idle_time: properties.max_idle_time,
        job_queue_size: properties.job_queue_size,
        queue_timeout: properties.request_timeout,
    })
}

/// A model whose package is open and whose component is compiled, before
/// any instance runs.
pub struct Opened {
    /// The backend, ready to start workers.
    pub backend: WasmBackend,
    /// The model's properties.
    pub properties: Properties,
    /// Where the time went so far.
    pub timings: LoadTimings,
}

/// The time since `*since`, which moves to now.
pub fn lap(since: &mut Instant) -> Duration {
    let now = Instant::now();
    let elapsed = now - *since;
    *since = now;
    elapsed
}

/// Opens the package and compiles (or reuses) its component. Blocking: run
/// it off the async threads.
pub fn open_model(
    runtime: &Arc<Runtime>,
    config: &RegistryConfig,
    metrics: &Metrics,
    make_room: MakeRoom,
    name: &str,
    (path, label): (&std::path::Path, &str),
) -> Result<Opened, LoadError> {
    let invalid = |reason: String| LoadError::InvalidPackage {
        model: name.to_string(),
        package: label.to_string(),
        reason,
    };
    let mut timings = LoadTimings::default();
    let mut step = Instant::now();
    let mut package = Package::open(path, &config.unpack_dir, &config.limits)
        .map_err(|e| invalid(e.to_string()))?;
    timings.unpack = lap(&mut step);
    let compiled = package
        .compile(runtime, config.limits.max_unpacked_bytes)
        .map_err(|error| match error {
            CodeError::Server(error) => LoadError::Broken {
                model: name.to_string(),
                package: label.to_string(),
                reason: error.to_string(),
            },
            other => invalid(other.to_string()),
        })?;
    timings.compile = lap(&mut step);
    let properties = package.properties.clone();
    for key in &properties.unknown_keys {
        tracing::warn!(
            model = name,
            key,
            "unknown key in serving.properties is ignored"
        );
    }
    let sandbox = sandbox_for(name, &package, runtime, config.max_response_bytes);
    // Balanced by `WasmBackend::drop`, which runs also if the load fails later.
    metrics.models_loaded.inc();
    let reads_binary_tensors = reads_binary_tensors(&package, &compiled);
    let backend = WasmBackend {
        reads_binary_tensors,
        name: Arc::from(name),
        runtime: runtime.clone(),
        hash: compiled.hash.clone(),
        compiled: Mutex::new(compiled),
        sandbox,
        options: package.load_options(),
        instances: metrics.instances.clone(),
        models_loaded: metrics.models_loaded.clone(),
        package_bytes: package.unpacked_bytes(),
        make_room,
        _package: package,
    };
    Ok(Opened {
        backend,
        properties,
        timings,
    })
}

/// Starts `count` workers (at least one, so that a broken model fails its
/// load and not its first request). Runs on a compute thread.
pub fn warm_up(
    backend: &WasmBackend,
    name: &str,
    label: &str,
    count: usize,
) -> Result<Vec<WasmWorker>, LoadError> {
    (0..count.max(1))
        .map(|_| {
            crate::wlm::start_making_room(backend).map_err(|error| match error {
                PredictError::Runtime(RuntimeError::PoolExhausted(reason)) => {
                    LoadError::NoCapacity {
                        model: name.to_string(),
                        reason,
                    }
                }
                // `load` refused the package's own files (a graph the ONNX
                // engine cannot read, say): the package's author must fix it.
                PredictError::Call(CallError::Load(GuestError::InvalidInput(reason))) => {
                    LoadError::InvalidPackage {
                        model: name.to_string(),
                        package: label.to_string(),
                        reason,
                    }
                }
                other => LoadError::Broken {
                    model: name.to_string(),
                    package: label.to_string(),
                    reason: other.to_string(),
                },
            })
        })
        .collect()
}
