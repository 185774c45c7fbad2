//! The loaded models: name → model, loaded on first use, once.
//!
//! Concurrent first requests for a model share one load (single-flight);
//! a failed load is not remembered, so a fixed package loads on the next try.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::OnceCell;

use crate::metrics::{LoadLabels, Metrics};
use crate::package::{Limits, Package, PackageError, Properties};
use crate::runtime::{
    CallError, GuestError, Instance, LogBudget, Request, Response, Runtime, RuntimeError, Sandbox,
};
use crate::store::{LocalStore, StoreError};
use crate::wlm::{ComputePool, ShuttingDown};

/// Guest output a model may log per window, and the window.
const LOG_BYTES_PER_WINDOW: usize = 64 * 1024;
const LOG_WINDOW: Duration = Duration::from_secs(10);
/// How long a package that failed to load answers with that failure
/// before a request tries it again.
pub const FAILED_RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long an unload waits for the requests in flight on the model.
const UNLOAD_WAIT: Duration = Duration::from_secs(30);

/// Settings of the registry that come from the server's configuration.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Where archives are unpacked.
    pub unpack_dir: PathBuf,
    /// Caps on one archive.
    pub limits: Limits,
    /// The largest response body a guest may return.
    pub max_response_bytes: usize,
}

/// Why a model could not be loaded.
#[derive(Debug, Clone, Error)]
pub enum LoadError {
    /// The name leads nowhere.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The package is broken: the message names it and the reason.
    #[error("model {model:?} cannot be loaded from {package}: {reason}")]
    Broken {
        /// The model's name.
        model: String,
        /// The package path.
        package: String,
        /// Why.
        reason: String,
    },
    /// A model of that name is already loaded or loading.
    #[error("model {0:?} is already loaded; unload it first to load it again")]
    AlreadyLoaded(String),
    /// No model of that name is loaded.
    #[error("model {0:?} is not loaded")]
    NotLoaded(String),
    /// The instance pool is full: the model is fine, the server is busy.
    #[error("model {model:?} cannot be loaded now: {reason}")]
    NoCapacity {
        /// The model's name.
        model: String,
        /// What is full.
        reason: String,
    },
    /// The server is stopping.
    #[error(transparent)]
    ShuttingDown(#[from] ShuttingDown),
}

/// Why a request got no prediction.
#[derive(Debug, Clone, Error)]
pub enum PredictError {
    /// The model could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The model refused the input or failed on it.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// The model crashed or ran out of time.
    #[error(transparent)]
    Call(#[from] CallError),
    /// No instance could be made.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The server is stopping.
    #[error(transparent)]
    ShuttingDown(#[from] ShuttingDown),
}

/// Where the time of one load went.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadTimings {
    /// Unpacking the archive (or opening the folder), parsing the properties, reading the wasm.
    pub unpack: Duration,
    /// Compiling, or finding the compiled component in memory or on disk.
    pub compile: Duration,
    /// Instantiating the warm instances and running their `load`.
    pub instantiate: Duration,
}

/// The time since `*since`, which moves to now.
fn lap(since: &mut Instant) -> Duration {
    let now = Instant::now();
    let elapsed = now - *since;
    *since = now;
    elapsed
}

/// A model ready to serve.
pub struct LoadedModel {
    /// Its name.
    pub name: String,
    /// Where its package came from.
    pub source: PathBuf,
    /// Its settings.
    pub properties: Properties,
    /// Where the time of its load went.
    pub timings: LoadTimings,
    /// The shared compiled component.
    compiled: Arc<crate::runtime::Compiled>,
    sandbox: Sandbox,
    /// Warm instances not serving a request now.
    idle: Mutex<Vec<Instance>>,
    /// Keeps the unpacked folder alive while the model is.
    _package: Package,
    metrics: Arc<Metrics>,
}

impl LoadedModel {
    /// The hash of the model's wasm.
    pub fn wasm_hash(&self) -> &str {
        &self.compiled.hash
    }

    /// Answers one request on the calling thread, which must be a compute thread.
    fn predict_blocking(
        &self,
        runtime: &Runtime,
        request: Request,
    ) -> Result<Response, PredictError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut instance = match idle {
            Some(instance) => instance,
            None => self.new_instance(runtime)?,
        };
        match instance.predict(std::slice::from_ref(&request)) {
            Ok(mut results) => {
                self.idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(instance);
                let result = results.pop().unwrap_or_else(|| {
                    Err(GuestError::Internal("the model returned no result".into()))
                });
                Ok(result?)
            }
            Err(error) => {
                // A trap poisons the store: this instance is dropped here.
                self.metrics.instances.dec();
                tracing::warn!(model = %self.name, %error, "instance discarded");
                Err(error.into())
            }
        }
    }

    fn new_instance(&self, runtime: &Runtime) -> Result<Instance, PredictError> {
        let mut instance = runtime.instantiate(&self.compiled, &self.sandbox)?;
        instance.load(&self.properties.options)?;
        self.metrics.instances.inc();
        Ok(instance)
    }
}

impl Drop for LoadedModel {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().map_or(0, |v| v.len());
        self.metrics.instances.dec_by(idle as i64);
        self.metrics.models_loaded.dec();
    }
}

type Slot = Arc<OnceCell<Arc<LoadedModel>>>;

/// Name → model, with on-demand loading from the store.
pub struct Registry {
    store: LocalStore,
    runtime: Arc<Runtime>,
    compute: Arc<ComputePool>,
    config: RegistryConfig,
    metrics: Arc<Metrics>,
    models: Mutex<HashMap<String, Slot>>,
    /// Models whose last on-demand load failed, with when and why.
    failed: Mutex<HashMap<String, (Instant, LoadError)>>,
}

impl Registry {
    /// A registry over `store`, running wasm on `compute`.
    pub fn new(
        store: LocalStore,
        runtime: Arc<Runtime>,
        compute: Arc<ComputePool>,
        config: RegistryConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Registry {
            store,
            runtime,
            compute,
            config,
            metrics,
            models: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// The loaded model `name`, loading it from the store on first use.
    pub async fn get_or_load(&self, name: &str) -> Result<Arc<LoadedModel>, LoadError> {
        let slot = {
            let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(model) = models.get(name).and_then(|slot| slot.get()) {
                return Ok(model.clone());
            }
            // Validate before the name becomes a key, so garbage names cost nothing.
            crate::store::check_name(name)?;
            if let Some(error) = self.recent_failure(name) {
                return Err(error);
            }
            models.entry(name.to_string()).or_default().clone()
        };
        let result = slot
            .get_or_try_init(|| async {
                let source = self.store.resolve(name)?;
                self.load(name, source).await
            })
            .await
            .cloned();
        self.forget_failed(name, &slot, result)
    }

    /// The error of a load of `name` that failed less than
    /// [`FAILED_RETRY_AFTER`] ago: a broken package is not unpacked again
    /// for every request that asks for it.
    fn recent_failure(&self, name: &str) -> Option<LoadError> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed
            .get(name)
            .filter(|(at, _)| at.elapsed() < FAILED_RETRY_AFTER)
            .map(|(_, error)| error.clone())
    }

    /// Loads model `name` from `source` (a folder or an archive), as the
    /// management API asks; a name that is loaded or loading is refused.
    pub async fn load_from(
        &self,
        name: &str,
        source: PathBuf,
    ) -> Result<Arc<LoadedModel>, LoadError> {
        crate::store::check_name(name)?;
        let slot = {
            let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
            if models.contains_key(name) {
                return Err(LoadError::AlreadyLoaded(name.to_string()));
            }
            let slot = Slot::default();
            models.insert(name.to_string(), slot.clone());
            slot
        };
        let result = slot
            .get_or_try_init(|| self.load(name, source))
            .await
            .cloned();
        self.forget_failed(name, &slot, result)
    }

    /// A failed load leaves no entry, so that the next request tries again.
    fn forget_failed(
        &self,
        name: &str,
        slot: &Slot,
        result: Result<Arc<LoadedModel>, LoadError>,
    ) -> Result<Arc<LoadedModel>, LoadError> {
        {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            match &result {
                Err(error @ LoadError::Broken { .. }) => {
                    failed.insert(name.to_string(), (Instant::now(), error.clone()));
                }
                Ok(_) => {
                    failed.remove(name);
                }
                Err(_) => {}
            }
        }
        if result.is_err() {
            let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
            if models
                .get(name)
                .is_some_and(|s| Arc::ptr_eq(s, slot) && s.get().is_none())
            {
                models.remove(name);
            }
        }
        result
    }

    /// Unloads model `name` and waits, up to `UNLOAD_WAIT`, until the
    /// requests in flight on it are done, so that its instances and its
    /// unpacked folder are freed when this returns.
    pub async fn unload(&self, name: &str) -> Result<(), LoadError> {
        let mut model = {
            let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
            let Some(model) = models.get(name).and_then(|slot| slot.get().cloned()) else {
                return Err(LoadError::NotLoaded(name.to_string()));
            };
            models.remove(name);
            model
        };
        let deadline = Instant::now() + UNLOAD_WAIT;
        loop {
            match Arc::try_unwrap(model) {
                Ok(last) => {
                    drop(last);
                    tracing::info!(model = name, "model unloaded");
                    return Ok(());
                }
                Err(shared) if Instant::now() < deadline => {
                    model = shared;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(_) => {
                    tracing::warn!(
                        model = name,
                        "model unloaded; requests in flight still hold it"
                    );
                    return Ok(());
                }
            }
        }
    }

    /// Every loaded model, sorted by name.
    pub fn list(&self) -> Vec<Arc<LoadedModel>> {
        let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        let mut loaded: Vec<_> = models
            .values()
            .filter_map(|slot| slot.get().cloned())
            .collect();
        loaded.sort_by(|a, b| a.name.cmp(&b.name));
        loaded
    }

    /// Runs one request on model `name`, loading the model if needed.
    pub async fn predict(&self, name: &str, request: Request) -> Result<Response, PredictError> {
        let model = self.get_or_load(name).await?;
        self.run(model, request).await
    }

    /// Runs one request on a loaded model.
    pub async fn run(
        &self,
        model: Arc<LoadedModel>,
        request: Request,
    ) -> Result<Response, PredictError> {
        let runtime = self.runtime.clone();
        self.compute
            .run(move || model.predict_blocking(&runtime, request))
            .await?
    }

    /// The model `name` if it is loaded; never loads.
    pub fn get_loaded(&self, name: &str) -> Option<Arc<LoadedModel>> {
        let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        models.get(name).and_then(|slot| slot.get()).cloned()
    }

    /// How many models are loaded.
    pub fn loaded_count(&self) -> usize {
        let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        models.values().filter(|slot| slot.get().is_some()).count()
    }

    async fn load(&self, name: &str, source: PathBuf) -> Result<Arc<LoadedModel>, LoadError> {
        let started = Instant::now();
        let runtime = self.runtime.clone();
        let config = self.config.clone();
        let metrics = self.metrics.clone();
        let model = name.to_string();
        let task_source = source.clone();
        let result = tokio::task::spawn_blocking(move || {
            load_model(&runtime, &config, &metrics, &model, &task_source)
        })
        .await
        .map_err(|_| LoadError::ShuttingDown(ShuttingDown))?;
        let label = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .loads
            .get_or_create(&LoadLabels { result: label })
            .inc();
        match &result {
            Ok(model) => {
                self.metrics
                    .load_seconds
                    .observe(started.elapsed().as_secs_f64());
                let t = model.timings;
                tracing::info!(model = name, elapsed = ?started.elapsed(), unpack = ?t.unpack, compile = ?t.compile, instantiate = ?t.instantiate, "model loaded");
            }
            Err(error) => tracing::warn!(model = name, %error, "model load failed"),
        }
        result
    }
}

/// Opens the package, compiles (or reuses) its component, and warms
/// `minWorkers` instances; at least one instance runs `load`, so a broken
/// model fails here and not on its first request.
pub fn load_model(
    runtime: &Runtime,
    config: &RegistryConfig,
    metrics: &Arc<Metrics>,
    name: &str,
    source: &Path,
) -> Result<Arc<LoadedModel>, LoadError> {
    let broken = |reason: String| LoadError::Broken {
        model: name.to_string(),
        package: source.display().to_string(),
        reason,
    };
    let mut timings = LoadTimings::default();
    let mut step = Instant::now();
    let mut package = Package::open(source, &config.unpack_dir, &config.limits)
        .map_err(|e| broken(e.to_string()))?;
    let wasm = package
        .take_wasm(config.limits.max_unpacked_bytes)
        .map_err(|e: PackageError| broken(e.to_string()))?;
    timings.unpack = lap(&mut step);
    let compiled = runtime.compile(&wasm).map_err(|e| broken(e.to_string()))?;
    drop(wasm);
    timings.compile = lap(&mut step);
    let properties = package.properties.clone();
    for key in &properties.unknown_keys {
        tracing::warn!(
            model = name,
            key,
            "unknown key in serving.properties is ignored"
        );
    }
    let max_memory = properties
        .max_memory_mb
        .map_or(runtime.max_instance_memory_bytes(), |mb| {
            (mb as usize) << 20
        });
    let sandbox = Sandbox {
        model: Arc::from(name),
        dir: package.dir().to_path_buf(),
        max_memory_bytes: max_memory.min(runtime.max_instance_memory_bytes()),
        timeout: properties.request_timeout,
        max_response_bytes: config.max_response_bytes,
        log_budget: Arc::new(LogBudget::new(LOG_BYTES_PER_WINDOW, LOG_WINDOW)),
    };
    let mut model = LoadedModel {
        name: name.to_string(),
        source: source.to_path_buf(),
        properties,
        compiled,
        sandbox,
        idle: Mutex::new(Vec::new()),
        _package: package,
        metrics: metrics.clone(),
        timings: LoadTimings::default(),
    };
    // Balanced by `Drop`, which runs also when warming fails below.
    metrics.models_loaded.inc();
    let warm = model.properties.min_workers.max(1);
    for _ in 0..warm {
        let instance = model.new_instance(runtime).map_err(|e| match e {
            PredictError::Runtime(RuntimeError::PoolExhausted(reason)) => LoadError::NoCapacity {
                model: name.to_string(),
                reason,
            },
            other => broken(other.to_string()),
        })?;
        model
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(instance);
    }
    timings.instantiate = lap(&mut step);
    model.timings = timings;
    if model.properties.min_workers == 0 {
        let dropped = model
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .count();
        metrics.instances.dec_by(dropped as i64);
    }
    Ok(Arc::new(model))
}
