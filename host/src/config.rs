//! Server settings and their defaults, in one place.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Default listen address: SageMaker's port, on every interface.
pub const DEFAULT_BIND: &str = "0.0.0.0:8080";
/// Default address of the gRPC service: KServe's gRPC port.
pub const DEFAULT_GRPC_BIND: &str = "0.0.0.0:8081";
/// Default cap on a request body: SageMaker's real-time payload limit.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 6 << 20;
/// Default cap on a response body.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 6 << 20;

/// Everything `mme serve` needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub bind: SocketAddr,
    /// Where the gRPC service listens; `None` turns it off.
    pub grpc_bind: Option<SocketAddr>,
    /// The folder that holds `<model>.tar.gz` packages or `<model>/`
    /// folders, or `s3://bucket/prefix` that holds `<model>.tar.gz` objects.
    pub model_store: String,
    /// The tenants file; `None`: no keys, anyone may do anything.
    pub tenants: Option<PathBuf>,
    /// Where packages may be registered from; empty: anywhere, or with
    /// tenants, the model store alone.
    pub allowed_urls: Vec<String>,
    /// How to reach S3 (or an S3-compatible server).
    pub s3: crate::store::S3Options,
    /// Cap on the local cache of downloaded packages, in bytes.
    pub package_cache_bytes: u64,
    /// Where compiled components are kept across restarts.
    pub cache_dir: PathBuf,
    /// Where archives are unpacked while their models are loaded; `None`
    /// means inside `cache_dir`. Unpacking is a few small file creations per
    /// model, so a tmpfs here makes cold starts faster on a slow disk.
    pub unpack_dir: Option<PathBuf>,
    /// Threads that run wasm.
    pub compute_threads: usize,
    /// Instances alive at once, across all models.
    pub max_instances: u32,
    /// Cap on one instance's linear memory, in bytes.
    pub max_instance_memory_bytes: usize,
    /// Cap on a request body, in bytes.
    pub max_request_bytes: usize,
    /// Cap on a response body, in bytes.
    pub max_response_bytes: usize,
    /// The status of a request refused because its model's queue is full:
    /// 503 (DJL's and SageMaker's) or 429.
    pub queue_full_status: u16,
    /// SageMaker's multi-model mode (`SAGEMAKER_MULTI_MODEL=true`).
    pub multi_model: bool,
    /// The single model's folder, served by `/invocations` outside multi-model mode.
    pub single_model_dir: PathBuf,
    /// How long a shutdown waits for the requests in flight.
    pub shutdown_timeout: std::time::Duration,
    /// How long the server goes on serving, reporting not ready, once told
    /// to stop, before its listener closes.
    pub drain_delay: std::time::Duration,
    /// The memory budget of the loaded models, in bytes.
    pub memory_limit: u64,
    /// How long a request's head (line and headers) may take to arrive.
    pub header_read_timeout: std::time::Duration,
    /// How long a request's body may take to arrive (408 after).
    pub body_read_timeout: std::time::Duration,
    /// The built-in ONNX engine's component; `None` looks beside the binary.
    pub onnx_engine: Option<PathBuf>,
    /// Whether to compile the ONNX engine in the background at start.
    pub onnx_precompile: bool,
    /// Whether models whose code no cache holds serve on baseline code
    /// while their optimized code is compiled.
    pub baseline_tier: bool,
}

/// Default bound on the arrival of a request's head.
pub const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
/// Default bound on the arrival of a request's body: 6 MB at a slow 200 KB/s.
pub const DEFAULT_BODY_READ_TIMEOUT: &str = "30s";

/// SageMaker's folder of the single model.
pub const DEFAULT_SINGLE_MODEL_DIR: &str = "/opt/ml/model";
/// SageMaker's bound on how long a container may take to stop.
pub const DEFAULT_SHUTDOWN_TIMEOUT: &str = "30s";
/// No drain by default: SageMaker stops sending before it stops a container.
pub const DEFAULT_DRAIN_DELAY: &str = "0s";

/// The cache folder when none is given: `$XDG_CACHE_HOME/mme`, else
/// `$HOME/.cache/mme`, else a folder under the system's temporary folder.
pub fn default_cache_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("mme");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".cache").join("mme");
    }
    std::env::temp_dir().join("mme-cache")
}
