//! Prometheus metrics of the whole server, rendered by `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::runtime::CompileStats;

/// Labels of per-model request counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The model's name.
    pub model: String,
    /// The model's version (empty for a request no model took).
    pub version: String,
    /// The HTTP status answered.
    pub status: u16,
}

impl RequestLabels {
    /// The labels of a request answered `status` by the model whose
    /// registry key is `key` (`name`, or `name/N` for a version).
    pub fn of_model(key: &str, status: u16) -> Self {
        let (model, version) = crate::store::split_key(key);
        RequestLabels {
            model: model.to_string(),
            version: version.to_string(),
            status,
        }
    }
}

/// Labels of load counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoadLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels of the memory figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemoryLabels {
    /// `code`, `instances` or `models`.
    pub kind: &'static str,
}

/// Labels of load phases.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// `download`, `unpack`, `compile` or `instantiate`.
    pub phase: &'static str,
}

/// Labels of per-model series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// The model's name.
    pub model: String,
    /// The model's version.
    pub version: String,
}

impl ModelLabels {
    /// The labels of the model whose registry key is `key` (`name` or `name/N`).
    pub fn of(key: &str) -> Self {
        let (model, version) = crate::store::split_key(key);
        ModelLabels {
            model: model.to_string(),
            version: version.to_string(),
        }
    }
}

fn seconds_histogram() -> Histogram {
    // 10 µs to about 84 s.
    Histogram::new(exponential_buckets(0.00001, 2.0, 24))
}

fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// The work-load manager's series of one model. The handles share their
/// values with the registered families, so updating one costs no lookup.
#[derive(Clone)]
pub struct ModelMetrics {
    /// Time a request waited in the queue.
    pub queue_seconds: Histogram,
    /// Time a batch ran, worker start included.
    pub compute_seconds: Histogram,
    /// Requests per batch.
    pub batch_size: Histogram,
    /// Requests waiting now.
    pub queue_length: Gauge,
    /// Workers now.
    pub workers: Gauge,
    /// Workers running a batch now.
    pub busy_workers: Gauge,
    /// Times workers were added for backlog.
    pub scale_ups: Counter,
    /// Workers retired.
    pub scale_downs: Counter,
}

impl ModelMetrics {
    /// Series that no registry exports, for tests and tools.
    pub fn detached() -> Self {
        ModelMetrics {
            queue_seconds: seconds_histogram(),
            compute_seconds: seconds_histogram(),
            batch_size: batch_histogram(),
            queue_length: Gauge::default(),
            workers: Gauge::default(),
            busy_workers: Gauge::default(),
            scale_ups: Counter::default(),
            scale_downs: Counter::default(),
        }
    }
}

/// The families behind [`ModelMetrics`].
struct ModelFamilies {
    queue_seconds: Family<ModelLabels, Histogram, fn() -> Histogram>,
    compute_seconds: Family<ModelLabels, Histogram, fn() -> Histogram>,
    batch_size: Family<ModelLabels, Histogram, fn() -> Histogram>,
    queue_length: Family<ModelLabels, Gauge>,
    workers: Family<ModelLabels, Gauge>,
    busy_workers: Family<ModelLabels, Gauge>,
    scale_ups: Family<ModelLabels, Counter>,
    scale_downs: Family<ModelLabels, Counter>,
}

impl ModelFamilies {
    fn register(registry: &mut Registry) -> Self {
        let families = ModelFamilies {
            queue_seconds: Family::new_with_constructor(seconds_histogram),
            compute_seconds: Family::new_with_constructor(seconds_histogram),
            batch_size: Family::new_with_constructor(batch_histogram),
            queue_length: Family::default(),
            workers: Family::default(),
            busy_workers: Family::default(),
            scale_ups: Family::default(),
            scale_downs: Family::default(),
        };
        let f = &families;
        registry.register(
            "queue_seconds",
            "Time a request waited in its model's queue",
            f.queue_seconds.clone(),
        );
        registry.register(
            "compute_seconds",
            "Time a batch ran on a worker",
            f.compute_seconds.clone(),
        );
        registry.register("batch_size", "Requests per batch", f.batch_size.clone());
        registry.register(
            "queue_length",
            "Requests waiting in the model's queue",
            f.queue_length.clone(),
        );
        registry.register("workers", "Workers of the model", f.workers.clone());
        registry.register(
            "busy_workers",
            "Workers of the model running a batch",
            f.busy_workers.clone(),
        );
        registry.register(
            "scale_ups",
            "Times the model added workers for its backlog",
            f.scale_ups.clone(),
        );
        registry.register(
            "scale_downs",
            "Workers of the model retired",
            f.scale_downs.clone(),
        );
        families
    }

    fn handles(&self, labels: &ModelLabels) -> ModelMetrics {
        ModelMetrics {
            queue_seconds: self.queue_seconds.get_or_create(labels).clone(),
            compute_seconds: self.compute_seconds.get_or_create(labels).clone(),
            batch_size: self.batch_size.get_or_create(labels).clone(),
            queue_length: self.queue_length.get_or_create(labels).clone(),
            workers: self.workers.get_or_create(labels).clone(),
            busy_workers: self.busy_workers.get_or_create(labels).clone(),
            scale_ups: self.scale_ups.get_or_create(labels).clone(),
            scale_downs: self.scale_downs.get_or_create(labels).clone(),
        }
    }

    fn remove(&self, labels: &ModelLabels) {
        self.queue_seconds.remove(labels);
        self.compute_seconds.remove(labels);
        self.batch_size.remove(labels);
        self.queue_length.remove(labels);
        self.workers.remove(labels);
        self.busy_workers.remove(labels);
        self.scale_ups.remove(labels);
        self.scale_downs.remove(labels);
    }
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Compilations and compile-cache hits, shared with the runtime.
    pub compile: CompileStats,
    /// Inference requests by model and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Model loads by result.
    pub loads: Family<LoadLabels, Counter>,
    /// Time from the start of a load to a ready model.
    pub load_seconds: Histogram,
    /// Models loaded now.
    pub models_loaded: Gauge,
    /// Live wasm instances now.
    pub instances: Gauge,
    /// Time of each phase of a load.
    pub load_phase_seconds: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    /// The memory budget.
    pub memory_limit: Gauge,
    /// Memory in use against the budget, by kind.
    pub memory_used: Family<MemoryLabels, Gauge>,
    /// Models evicted to make room.
    pub evictions: Counter,
    /// Idle instances above their model's minimum taken back for a model
    /// whose scale-up found the instance pool full.
    pub spares_taken: Counter,
    /// Packages found in the local package cache instead of downloaded.
    pub package_cache_hits: Counter,
    /// Packages downloaded from the store.
    pub downloads: Counter,
    models: ModelFamilies,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mme");
        let compile = CompileStats::default();
        registry.register(
            "component_compilations",
            "Cranelift compilations of model components",
            compile.compiled.clone(),
        );
        registry.register(
            "component_disk_cache_hits",
            "Components read from the on-disk compile cache",
            compile.disk_hits.clone(),
        );
        registry.register(
            "component_baseline_compilations",
            "Winch compilations of a component that serves while Cranelift compiles it",
            compile.baseline_compiled.clone(),
        );
        registry.register(
            "component_memory_cache_hits",
            "Models that reused a component already compiled in memory",
            compile.memory_hits.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Inference requests by model and HTTP status",
            requests.clone(),
        );
        let loads = Family::<LoadLabels, Counter>::default();
        registry.register("model_loads", "Model loads by result", loads.clone());
        let load_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 20));
        registry.register(
            "model_load_seconds",
            "Time to load a model, from package to ready",
            load_seconds.clone(),
        );
        let models_loaded = Gauge::default();
        registry.register("models_loaded", "Models loaded now", models_loaded.clone());
        let instances = Gauge::default();
        registry.register("instances", "Live wasm instances", instances.clone());
        let load_phase_seconds =
            Family::<PhaseLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                seconds_histogram,
            );
        registry.register(
            "model_load_phase_seconds",
            "Time of each phase of a model load: download, unpack, compile, instantiate",
            load_phase_seconds.clone(),
        );
        let memory_limit = Gauge::default();
        registry.register(
            "memory_limit_bytes",
            "The memory budget (--memory-limit)",
            memory_limit.clone(),
        );
        let memory_used = Family::<MemoryLabels, Gauge>::default();
        registry.register(
            "memory_used_bytes",
            "Memory in use against the budget: code (once per distinct wasm), instances (linear memories), models (packages and metadata)",
            memory_used.clone(),
        );
        let evictions = Counter::default();
        registry.register(
            "model_evictions",
            "Idle models evicted to make room in the memory budget",
            evictions.clone(),
        );
        let spares_taken = Counter::default();
        registry.register(
            "spare_instances_taken",
            "Idle instances above their model's minWorkers taken back to make room in the instance pool for a model with backlog",
            spares_taken.clone(),
        );
        let package_cache_hits = Counter::default();
        registry.register(
            "package_cache_hits",
            "Packages found in the local package cache, not downloaded",
            package_cache_hits.clone(),
        );
        let downloads = Counter::default();
        registry.register(
            "package_downloads",
            "Packages downloaded from the model store",
            downloads.clone(),
        );
        let models = ModelFamilies::register(&mut registry);
        Metrics {
            load_phase_seconds,
            memory_limit,
            memory_used,
            evictions,
            spares_taken,
            package_cache_hits,
            downloads,
            models,
            registry,
            compile,
            requests,
            loads,
            load_seconds,
            models_loaded,
            instances,
        }
    }

    /// The work-load series of model `name`, created on first use.
    pub fn for_model(&self, name: &str) -> ModelMetrics {
        self.models.handles(&ModelLabels::of(name))
    }

    /// The series of `key`'s requests answered 200, which most requests
    /// add to: a model finds it once, at its load, where a lookup in the
    /// family (labels built, hashed and compared) would cost every request.
    /// Request counts outlive the model, as a counter's series should.
    pub fn requests_ok(&self, key: &str) -> Counter {
        self.requests
            .get_or_create(&RequestLabels::of_model(key, 200))
            .clone()
    }

    /// Drops the series of an unloaded model, so that names do not pile up.
    pub fn forget_model(&self, name: &str) {
        self.models.remove(&ModelLabels::of(name));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
