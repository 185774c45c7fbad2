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
    /// The HTTP status answered.
    pub status: u16,
}

/// Labels of load counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoadLabels {
    /// `ok` or `error`.
    pub result: &'static str,
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
        Metrics {
            registry,
            compile,
            requests,
            loads,
            load_seconds,
            models_loaded,
            instances,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
