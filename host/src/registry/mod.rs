//! The loaded models: name → model, loaded on first use, once.
//!
//! Concurrent first requests for a model share one load (single-flight).
//! A package that failed to load answers with that failure for a few
//! seconds, so that a broken package is not unpacked for every request.
//! Each model's requests go through its queue in the work-load manager.
//!
//! Loads are admitted against the memory budget before they instantiate
//! anything. In standalone mode the least recently used models with no
//! request in flight make room; in SageMaker's multi-model mode the load
//! is refused with the numbers, because SageMaker picks the victims there.

mod budget;
mod errors;
mod failures;
mod map;
mod model;
mod room;
mod shares;
mod unload;
mod versions;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::OnceCell;

pub use budget::{MODEL_METADATA_BYTES, MemoryBudget, MemoryUse, default_limit};
pub use errors::{LoadError, PredictError};
use failures::Failure;
pub use failures::{FAILED_RETRY_AFTER, NotReady};
pub use model::{
    LoadTimings, LoadedModel, Overrides, WasmBackend, reads_binary_tensors, sandbox_for,
};
pub use room::MakeRoom;
pub use shares::{Share, Shares};

use crate::metrics::{LoadLabels, MemoryLabels, Metrics, PhaseLabels};
use crate::package::Limits;
use crate::runtime::{GuestError, Request, Response, Runtime};
use crate::store::{ModelStore, PackageSource, StoreError, check_key};
use crate::wlm::{Bounds, CpuGroup, HostFailed, JobError, Scheduler, ShuttingDown};

/// The work-load manager that runs every model's wasm.
pub type WasmScheduler = Scheduler<WasmBackend>;
/// How many instance sizes, one per component, are kept before those of
/// components that no loaded model uses are dropped.
const MAX_INSTANCE_ESTIMATES: usize = 4096;

/// Settings of the registry that come from the server's configuration.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Where archives are unpacked.
    pub unpack_dir: PathBuf,
    /// Caps on one archive.
    pub limits: Limits,
    /// The largest response body a guest may return.
    pub max_response_bytes: usize,
    /// The memory budget, in bytes.
    pub memory_limit: u64,
    /// Whether a load that does not fit evicts idle models (standalone),
    /// or is refused (SageMaker's multi-model mode).
    pub evict: bool,
    /// Caps on what groups of models (tenants) may hold; `None`: only the
    /// whole budget.
    pub shares: Option<Shares>,
}

type Slot = Arc<OnceCell<Arc<LoadedModel>>>;

/// A name taken for a load that has not run yet; see [`Registry::reserve`].
#[must_use = "a reserved name stays loading until its load runs"]
pub struct Reservation(Slot);

/// How many times one request may find its model gone and load it again.
const MAX_RELOADS: usize = 3;

/// Where a request's model comes from again if it is evicted under it.
#[derive(Debug, Clone)]
pub enum Reload {
    /// Nowhere: the request was for a loaded model only.
    Never,
    /// The model store.
    FromStore,
    /// A package at this path (the single model).
    From(PathBuf),
}

/// `bytes` as a gauge value.
fn clamp_i64(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// Name → model, with on-demand loading from the store.
pub struct Registry {
    store: ModelStore,
    runtime: Arc<Runtime>,
    scheduler: Arc<WasmScheduler>,
    config: RegistryConfig,
    metrics: Arc<Metrics>,
    models: Arc<room::Models>,
    /// Given to every model's backend: takes back another model's spare instance.
    make_room: room::MakeRoom,
    /// Models whose last load failed, with when and why.
    failed: Mutex<HashMap<String, Failure>>,
    budget: MemoryBudget,
    /// One admission at a time, so that two loads cannot both take the last room.
    admission: tokio::sync::Mutex<()>,
    /// What loads admitted into each share will hold until they are listed.
    admitting: shares::Admitting,
    /// The linear memory one instance of each component took at its last load.
    instance_bytes: Mutex<HashMap<String, u64>>,
    /// The models' clock of last use: a count of uses, so that two uses in
    /// the same instant are still ordered.
    uses: std::sync::atomic::AtomicU64,
    /// Set once a model's later version has been asked for: until then a
    /// request without a version needs no look for one.
    versioned: std::sync::atomic::AtomicBool,
}

impl Registry {
    /// A registry over `store`, running wasm on `scheduler`'s threads.
    pub fn new(
        store: ModelStore,
        runtime: Arc<Runtime>,
        scheduler: Arc<WasmScheduler>,
        config: RegistryConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let budget = MemoryBudget::new(config.memory_limit, &runtime);
        metrics.memory_limit.set(clamp_i64(config.memory_limit));
        let models = Arc::new(Mutex::new(map::ModelMap::default()));
        let make_room = room::make_room_in(&models, metrics.spares_taken.clone());
        Registry {
            store,
            runtime,
            scheduler,
            config,
            metrics,
            models,
            make_room,
            failed: Mutex::new(HashMap::new()),
            budget,
            admission: tokio::sync::Mutex::new(()),
            admitting: shares::Admitting::default(),
            instance_bytes: Mutex::new(HashMap::new()),
            uses: std::sync::atomic::AtomicU64::new(0),
            versioned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The names of the models in the store, at most `limit` of them.
    pub async fn store_names(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.store.list(limit).await
    }

    /// What the store answers for `name` when it has no such package.
    pub fn missing(&self, name: &str) -> StoreError {
        self.store.missing(name)
    }

    /// The loaded model `name`, loading it from `source` on first use: the
    /// single model of SageMaker's single-model mode.
    pub async fn get_or_load_from(
        &self,
        name: &str,
        source: PathBuf,
    ) -> Result<Arc<LoadedModel>, LoadError> {
        self.get_or_load_with(name, || Ok(PackageSource::Path(source)))
            .await
    }

    async fn get_or_load_with(
        &self,
        name: &str,
        resolve: impl FnOnce() -> Result<PackageSource, StoreError>,
    ) -> Result<Arc<LoadedModel>, LoadError> {
        let slot = {
            let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(model) = models.get(name).and_then(|slot| slot.get()) {
                return Ok(model.clone());
            }
            // Validate before the name becomes a key, so garbage names cost nothing.
            check_key(name)?;
            self.note_version(name);
            if let Some(error) = self.recent_failure(name) {
                return Err(error);
            }
            models.get_or_insert_default(name)
        };
        let result = slot
            .get_or_try_init(|| async {
                let source = resolve()?;
                Box::pin(self.load(name, source, &Overrides::default())).await
            })
            .await
            .cloned();
        self.settle_load(name, &slot, result)
    }

    /// Loads model `name` from `source` (a folder or an archive), as the
    /// management API asks; a name that is loaded or loading is refused.
    /// `overrides` replace settings of the package's `serving.properties`.
    pub async fn load_from(
        &self,
        name: &str,
        source: PackageSource,
        overrides: &Overrides,
    ) -> Result<Arc<LoadedModel>, LoadError> {
        let reservation = self.reserve(name)?;
        self.load_reserved(name, reservation, source, overrides)
            .await
    }

    /// Takes `name` for a load that [`Registry::load_reserved`] must then
    /// run: from now on the name is loading (`describe` says `PENDING`),
    /// even before the load's task first runs. A name that is loaded or
    /// loading is refused.
    pub fn reserve(&self, name: &str) -> Result<Reservation, LoadError> {
        check_key(name)?;
        self.note_version(name);
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        if models.contains_key(name) {
            return Err(LoadError::AlreadyLoaded(name.to_string()));
        }
        let slot = Slot::default();
        models.insert(name.to_string(), slot.clone());
        Ok(Reservation(slot))
    }

    /// Loads model `name`, reserved by [`Registry::reserve`], from `source`.
    pub async fn load_reserved(
        &self,
        name: &str,
        Reservation(slot): Reservation,
        source: PackageSource,
        overrides: &Overrides,
    ) -> Result<Arc<LoadedModel>, LoadError> {
        let result = slot
            .get_or_try_init(|| Box::pin(self.load(name, source, overrides)))
            .await
            .cloned();
        self.settle_load(name, &slot, result)
    }

    /// The linear memory of one instance of the component `hash`, as its
    /// last load measured it; 0 before any load.
    fn instance_estimate(&self, hash: &str) -> u64 {
        self.lock_instance_bytes().get(hash).copied().unwrap_or(0)
    }

    /// Keeps the measured size of an instance of component `hash`. The
    /// figures of components that no loaded model uses are dropped once
    /// there are many, so that a server that has seen many distinct
    /// components over its life does not keep them all.
    fn remember_instance_bytes(&self, hash: String, bytes: u64) {
        let crowded = self.lock_instance_bytes().len() >= MAX_INSTANCE_ESTIMATES;
        // Read before the figures are locked: one lock at a time.
        let in_use: Option<std::collections::HashSet<String>> = crowded.then(|| {
            self.list()
                .iter()
                .map(|m| m.wasm_hash().to_string())
                .collect()
        });
        let mut known = self.lock_instance_bytes();
        if let Some(in_use) = in_use {
            known.retain(|hash, _| in_use.contains(hash));
        }
        known.insert(hash, bytes);
    }

    fn lock_instance_bytes(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.instance_bytes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The next tick of the models' clock of last use.
    fn next_use(&self) -> u64 {
        self.uses.fetch_add(1, Ordering::Relaxed)
    }

    /// Publishes the budget's figures as metrics; `/metrics` calls it so
    /// that they are read at the scrape, not at the last load or eviction.
    pub fn publish_memory(&self) {
        let used = self.budget.used();
        let m = &self.metrics;
        m.memory_used
            .get_or_create(&MemoryLabels { kind: "code" })
            .set(clamp_i64(used.code));
        m.memory_used
            .get_or_create(&MemoryLabels { kind: "instances" })
            .set(clamp_i64(used.instances));
        m.memory_used
            .get_or_create(&MemoryLabels { kind: "models" })
            .set(clamp_i64(used.models));
    }

    /// Retires, in every model, the workers idle for longer than the
    /// model's `max_idle_time`, down to its minimum. Blocking: instances
    /// are freed here.
    pub fn retire_idle_workers(&self) -> usize {
        self.list()
            .iter()
            .map(|model| model.queue.retire_idle().len())
            .sum()
    }

    /// Changes the scaling bounds of a loaded model, live.
    pub async fn set_bounds(&self, name: &str, bounds: Bounds) -> Result<(), LoadError> {
        let model = self.get_loaded(name)?;
        let retired = model.queue.set_bounds(bounds);
        let _ = tokio::task::spawn_blocking(move || drop(retired)).await;
        Ok(())
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

    /// Runs one request on a loaded model, through its queue. A request
    /// that finds its model evicted (or unloaded) under it loads the model
    /// again as `reload` says, so that the race never fails it. Gives back
    /// the model that answered, if one did.
    pub async fn run(
        &self,
        model: Arc<LoadedModel>,
        request: Request,
        reload: &Reload,
    ) -> (Option<Arc<LoadedModel>>, Result<Response, PredictError>) {
        let (mut model, mut request) = (model, request);
        let mut reloads = 0;
        loop {
            model.last_used.store(self.next_use(), Ordering::Relaxed);
            request = match model.queue.try_inline(request) {
                Ok(call) => {
                    let result = Self::answer_of(&model, call.run().await);
                    return (Some(model), result);
                }
                Err(request) => request,
            };
            let refused = match model.queue.try_submit(request) {
                Ok(receiver) => {
                    let reply = receiver.await.unwrap_or(Err(JobError::Dropped));
                    let result = Self::answer_of(&model, reply);
                    return (Some(model), result);
                }
                Err(refused) => refused,
            };
            let (error, back) = refused;
            let name = model.name.clone();
            if !matches!(error, JobError::Closed) || reloads == MAX_RELOADS {
                let result = Self::answer_of(&model, Err(error));
                return (Some(model), result);
            }
            // The evictor waits for every holder of the old model to let go.
            drop(model);
            let reloaded = match reload {
                Reload::Never => Err(LoadError::NotLoaded(name.clone())),
                // The same version again, not the highest one.
                Reload::FromStore => {
                    self.get_or_load(&crate::store::versions::wanted_of_key(&name))
                        .await
                }
                Reload::From(path) => self.get_or_load_from(&name, path.clone()).await,
            };
            let again = match reloaded {
                Ok(again) => again,
                Err(error) => return (None, Err(error.into())),
            };
            (model, request) = (again, back);
            reloads += 1;
        }
    }

    fn answer_of(
        model: &LoadedModel,
        reply: Result<Result<Response, GuestError>, JobError<PredictError>>,
    ) -> Result<Response, PredictError> {
        match reply {
            Ok(answer) => Ok(answer?),
            Err(JobError::Failed(error)) => Err(error),
            Err(JobError::QueueFull { limit }) => Err(PredictError::QueueFull {
                model: model.name.clone(),
                limit,
            }),
            Err(JobError::Expired { waited }) => Err(PredictError::Expired {
                model: model.name.clone(),
                waited,
            }),
            Err(JobError::Closed) => Err(LoadError::NotLoaded(model.name.clone()).into()),
            Err(JobError::Dropped) => Err(ShuttingDown.into()),
            Err(JobError::HostFailed(failed)) => Err(failed.into()),
        }
    }

    /// How many models are loaded.
    pub fn loaded_count(&self) -> usize {
        let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        models.values().filter(|slot| slot.get().is_some()).count()
    }

    /// Fetches, unpacks, compiles and instantiates model `name`. Its future
    /// is kilobytes (an instantiation among its states), so both callers
    /// box it: inline, it would make the future of every call that might
    /// load (each inference request) as large, allocated and moved per
    /// request.
    async fn load(
        &self,
        name: &str,
        source: PackageSource,
        overrides: &Overrides,
    ) -> Result<Arc<LoadedModel>, LoadError> {
        let started = Instant::now();
        let result = match self.store.fetch(&source, &self.metrics).await {
            Ok(fetched) => {
                let result = self
                    .open_and_warm(name, source.clone(), fetched.path, overrides)
                    .await;
                if let Err(LoadError::Broken { .. } | LoadError::InvalidPackage { .. }) = &result {
                    // Bytes that do not load are not kept for the next try.
                    self.store.discard(&source);
                }
                result.map(|mut model| {
                    if let Some(model) = Arc::get_mut(&mut model) {
                        model.timings.download = fetched.download;
                    }
                    model
                })
            }
            Err(error) => Err(error.into()),
        };
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
                for (phase, took) in [
                    ("download", t.download),
                    ("unpack", t.unpack),
                    ("compile", t.compile),
                    ("instantiate", t.instantiate),
                ] {
                    self.metrics
                        .load_phase_seconds
                        .get_or_create(&PhaseLabels { phase })
                        .observe(took.as_secs_f64());
                }
                tracing::info!(model = name, elapsed = ?started.elapsed(), download = ?t.download, unpack = ?t.unpack, compile = ?t.compile, instantiate = ?t.instantiate, "model loaded");
            }
            Err(error) => tracing::warn!(model = name, %error, "model load failed"),
        }
        result
    }

    /// Opens and compiles on the blocking pool, then starts the first
    /// workers on a compute thread: guest code runs only there.
    async fn open_and_warm(
        &self,
        name: &str,
        source: PackageSource,
        path: PathBuf,
        overrides: &Overrides,
    ) -> Result<Arc<LoadedModel>, LoadError> {
        let label = source.to_string();
        let (runtime, config, metrics, make_room) = (
            self.runtime.clone(),
            self.config.clone(),
            self.metrics.clone(),
            self.make_room.clone(),
        );
        let (model, task_label) = (name.to_string(), label.clone());
        let opened = tokio::task::spawn_blocking(move || {
            let package = (path.as_path(), task_label.as_str());
            model::open_model(&runtime, &config, &metrics, make_room, &model, package)
        })
        .await
        .map_err(|e| {
            if e.is_panic() {
                tracing::error!(model = name, "host code panicked while opening the model");
                LoadError::HostFailed(HostFailed)
            } else {
                LoadError::ShuttingDown(ShuttingDown)
            }
        })??;
        let mut opened = opened;
        opened.properties =
            overrides
                .apply(&opened.properties)
                .map_err(|error| LoadError::InvalidPackage {
                    model: name.to_string(),
                    package: label.clone(),
                    reason: error.to_string(),
                })?;
        let settings = model::settings_for(&opened.properties, self.scheduler.threads()).map_err(
            |reason| LoadError::InvalidPackage {
                model: name.to_string(),
                package: label.clone(),
                reason,
            },
        )?;
        let mut timings = opened.timings;
        let mut step = Instant::now();
        let warm_count = settings.bounds.min();
        let backend = opened.backend;
        let hash = backend.compiled().hash.clone();
        let per_instance = self.instance_estimate(&hash);
        // One instance runs `load` even for a model that scales to zero.
        let first_instances = per_instance * warm_count.max(1) as u64;
        // `required_memory_mb` is the least the model is counted for, with
        // its first instances; what is measured counts when it is more.
        let required = opened
            .properties
            .required_memory_mb
            .map_or(0, |mb| mb << 20);
        let holding = required
            .saturating_sub(first_instances)
            .max(backend.package_bytes() + MODEL_METADATA_BYTES);
        let (holding, reserved, admitted) = {
            let _admission = self.admission.lock().await;
            // Counted already if another model shares it; this is its own
            // cost should it have to fit alone.
            let own_code = backend.compiled().code_bytes();
            let admitted = self.admit_share(name, holding + first_instances).await?;
            self.admit(name, holding + first_instances, own_code)
                .await?;
            let meter = self.budget.models_meter();
            (
                meter.charge(holding),
                meter.charge(first_instances),
                admitted,
            )
        };
        let (backend, mut warm) = self.warm_up(name, backend, label, warm_count).await?;
        let measured = backend.memory().bytes() / warm.len().max(1) as u64;
        self.remember_instance_bytes(hash, measured);
        // At least one instance ran `load`; a model that scales to zero keeps none.
        warm.truncate(warm_count);
        drop(reserved);
        timings.instantiate = model::lap(&mut step);
        let group = self.share_of(name).map(|share| CpuGroup {
            name: share.group,
            weight: share.cpu_weight,
        });
        let queue = self.scheduler.add_model(
            backend,
            settings,
            warm,
            self.metrics.for_model(name),
            group.as_ref(),
        );
        self.publish_memory();
        Ok(Arc::new(LoadedModel {
            name: name.to_string(),
            source,
            properties: opened.properties,
            timings,
            queue,
            holding,
            admitted: Mutex::new(admitted),
            last_used: self.next_use().into(),
            requests_ok: self.metrics.requests_ok(name),
        }))
    }
}
