//! The `mme` command: serve models, package them, check a package, load-test a server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use mme_host::bench::{self, BenchConfig, Pattern};
use mme_host::config::{self, ServerConfig};
use mme_host::package::{self, ModelFile, PackageSpec};
use mme_host::runtime::{DEFAULT_MAX_INSTANCE_MEMORY, DEFAULT_MAX_INSTANCES};
use mme_host::{inspect, server, wlm};
use tracing_subscriber::EnvFilter;

/// The system allocator, counting per thread what it allocates, so that
/// the memory budget counts each instance's host side as measured.
#[global_allocator]
static ALLOCATOR: mme_host::runtime::CountingAllocator = mme_host::runtime::CountingAllocator;

#[derive(Parser)]
#[command(
    name = "mme",
    version,
    about = "Wasm MME: serve thousands of WebAssembly models from one process"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the models of a model store over HTTP.
    Serve(ServeArgs),
    /// Write a model package (model.tar.gz).
    Package(PackageArgs),
    /// Check a package without serving it: unpack, parse, compile, instantiate, load.
    Inspect(InspectArgs),
    /// Load-test a running server with one of the traffic patterns.
    Bench(BenchArgs),
    /// Compile the built-in engines into the cache folder, so that a server
    /// started on it finds them compiled (the Docker image does this).
    Precompile(PrecompileArgs),
}

#[derive(Args)]
struct PrecompileArgs {
    /// The cache folder that `mme serve --cache-dir` will use [default: $XDG_CACHE_HOME/mme or ~/.cache/mme].
    #[arg(long, env = "MME_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    onnx: OnnxEngineArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// Where models load from on their first request: a folder of `<model>.tar.gz`
    /// packages or `<model>/` folders, or `s3://bucket/prefix` of `<model>.tar.gz` objects.
    #[arg(long, env = "MME_MODEL_STORE", default_value = "/opt/ml/models")]
    model_store: String,
    /// An S3-compatible server to use instead of AWS [default: AWS_ENDPOINT_URL, else AWS].
    #[arg(long, env = "MME_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// Path-style S3 addressing (`host/bucket/key`), which most S3-compatible servers need.
    #[arg(long, env = "MME_S3_PATH_STYLE")]
    s3_path_style: bool,
    /// Cap on the local cache of downloaded packages, such as 10GiB.
    #[arg(long, default_value = "10GiB", value_parser = parse_size)]
    package_cache_size: u64,
    /// Address to listen on [default: 0.0.0.0:8080, or the port in SAGEMAKER_BIND_TO_PORT].
    #[arg(long, env = "MME_BIND")]
    bind: Option<SocketAddr>,
    /// Address of the Open Inference Protocol's gRPC service (KServe's port), or `off`.
    #[arg(long, env = "MME_GRPC_BIND", default_value = config::DEFAULT_GRPC_BIND)]
    grpc_bind: String,
    /// Tenants, their keys, model names and quotas (TOML): every call but the
    /// health checks then needs `Authorization: Bearer <token>`. Re-read on SIGHUP.
    #[arg(long, env = "MME_TENANTS")]
    tenants: Option<PathBuf>,
    /// Where `POST /models` may load packages from: folders and s3:// prefixes,
    /// comma-separated [default: anywhere; with --tenants, the model store alone].
    #[arg(long, env = "MME_ALLOWED_URLS", value_delimiter = ',')]
    allowed_urls: Vec<String>,
    /// Folder for compiled components and unpacked packages [default: $XDG_CACHE_HOME/mme or ~/.cache/mme].
    #[arg(long, env = "MME_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Folder to unpack packages into while they are loaded [default: inside the cache folder].
    /// A tmpfs (such as /dev/shm) makes cold starts faster when the disk is slow.
    #[arg(long, env = "MME_UNPACK_DIR")]
    unpack_dir: Option<PathBuf>,
    /// Threads that run wasm [default: the usable cores].
    #[arg(long, env = "MME_COMPUTE_THREADS")]
    compute_threads: Option<usize>,
    /// Wasm instances alive at once, across all models.
    #[arg(long, default_value_t = DEFAULT_MAX_INSTANCES)]
    max_instances: u32,
    /// Cap on one instance's memory, in MiB.
    #[arg(long, default_value_t = (DEFAULT_MAX_INSTANCE_MEMORY >> 20) as u64)]
    max_instance_memory_mb: u64,
    /// Cap on a request body, in bytes (413 beyond it).
    #[arg(long, default_value_t = config::DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// Status of a request refused because its model's queue is full: 503 (with
    /// Retry-After, as DJL Serving and SageMaker) or 429.
    #[arg(long, default_value_t = 503, value_parser = parse_queue_full_status)]
    queue_full_status: u16,
    /// SageMaker's multi-model mode: `/invocations` must name its model.
    #[arg(long, env = "SAGEMAKER_MULTI_MODEL")]
    multi_model: bool,
    /// The single model that `/invocations` serves outside multi-model mode.
    #[arg(long, env = "MME_MODEL_DIR", default_value = config::DEFAULT_SINGLE_MODEL_DIR)]
    model_dir: PathBuf,
    /// How long SIGTERM waits for the requests in flight before the process exits.
    #[arg(long, env = "MME_SHUTDOWN_TIMEOUT", default_value = config::DEFAULT_SHUTDOWN_TIMEOUT, value_parser = humantime::parse_duration)]
    shutdown_timeout: Duration,
    /// How long SIGTERM keeps the server serving, with `/v2/health/ready` at 503
    /// and each connection closed after its answer, before the listener closes:
    /// the time proxies and Kubernetes take to send traffic elsewhere. The
    /// process may live this plus --shutdown-timeout after SIGTERM.
    #[arg(long, env = "MME_DRAIN_DELAY", default_value = config::DEFAULT_DRAIN_DELAY, value_parser = humantime::parse_duration)]
    drain_delay: Duration,
    /// Memory budget of the loaded models, such as 2GiB or 512MiB [default: 80% of
    /// the cgroup's limit, or of RAM]. Standalone, idle models are evicted to make
    /// room; in SageMaker's multi-model mode, a load that does not fit gets 507.
    #[arg(long, env = "MME_MEMORY_LIMIT", value_parser = parse_size)]
    memory_limit: Option<u64>,
    /// How long a request's line and headers may take to arrive; the connection
    /// is closed after (slow clients cannot hold connections open).
    #[arg(long, default_value = config::DEFAULT_HEADER_READ_TIMEOUT, value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,
    /// How long a request's body may take to arrive; 408 after.
    #[arg(long, default_value = config::DEFAULT_BODY_READ_TIMEOUT, value_parser = humantime::parse_duration)]
    body_read_timeout: Duration,
    #[command(flatten)]
    onnx: OnnxEngineArgs,
    /// Compile the ONNX engine in the background at start (or read it from the
    /// cache folder), so that no request waits for it.
    #[arg(long, env = "MME_ONNX_PRECOMPILE", default_value_t = true, action = clap::ArgAction::Set)]
    onnx_precompile: bool,
    /// Serve a model whose code no cache holds on Winch-compiled code while
    /// Cranelift compiles it in the background: the example's first request
    /// waits tens of milliseconds, not hundreds, and the ONNX engine's about
    /// two seconds, not eight. Off, a first request waits for Cranelift.
    #[arg(long, alias = "onnx-baseline", env = "MME_BASELINE_TIER", default_value_t = true, action = clap::ArgAction::Set)]
    baseline_tier: bool,
}

/// Where the built-in ONNX engine is.
#[derive(Args)]
struct OnnxEngineArgs {
    /// The ONNX engine's component [default: mme-onnx.wasm beside the mme binary].
    #[arg(long, env = "MME_ONNX_ENGINE")]
    onnx_engine: Option<PathBuf>,
}

/// A size such as `512MiB`, `2GiB` or a number of bytes; more than 0.
fn parse_size(text: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = text
        .parse()
        .map_err(|e| format!("expected a size such as 512MiB or 2GiB: {e}"))?;
    match size.as_u64() {
        0 => Err("the size must be more than 0".into()),
        bytes => Ok(bytes),
    }
}

fn parse_queue_full_status(text: &str) -> Result<u16, String> {
    match text {
        "503" => Ok(503),
        "429" => Ok(429),
        _ => Err(format!("expected 503 or 429, got {text:?}")),
    }
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("model").required(true).args(["wasm", "onnx"])))]
struct PackageArgs {
    /// The model's component, built for wasm32-wasip2.
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// An ONNX model file, run by the built-in ONNX engine (engine=OnnxRuntime).
    #[arg(long)]
    onnx: Option<PathBuf>,
    /// A file to ship beside the model; repeat for more.
    #[arg(long = "artifact")]
    artifacts: Vec<PathBuf>,
    /// A serving.properties entry, `key=value`; repeat for more.
    #[arg(long = "property", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// Where to write the package.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Args)]
struct InspectArgs {
    /// The package: a .tar.gz file or an unpacked folder.
    package: PathBuf,
    /// Also send this JSON body to the model and print the answer (an ONNX
    /// model gets a sample made from its input shapes when this is absent).
    #[arg(long)]
    body: Option<String>,
    #[command(flatten)]
    onnx: OnnxEngineArgs,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchArgs {
    #[command(subcommand)]
    mode: Option<BenchMode>,
    #[command(flatten)]
    target: BenchTarget,
    /// Traffic pattern: even, hot, few-hot, or weights:W0,W1,…[,rest=W]
    /// (relative weights of models 0, 1, … and of all the others); repeat to run several.
    #[arg(long = "pattern", default_value = "even")]
    patterns: Vec<Pattern>,
    /// Inference route: predictions, invoke (models must be loaded), v2,
    /// v2-binary (Triton's binary tensors both ways), or grpc (ModelInfer
    /// with raw tensors, to the service at --grpc).
    #[arg(long, default_value = "predictions")]
    route: bench::Route,
    /// The gRPC service's address, for --route grpc.
    #[arg(long, default_value = "127.0.0.1:8081")]
    grpc: String,
    /// Open loop at this many requests per second (latency counted from when
    /// each request was due); without it, closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// How long to measure each pattern, such as 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long to send before measuring.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seed of the model choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also measure this no-op route (such as /ping) with the same client
    /// first, and report each pattern's throughput and p99 as ratios of its.
    #[arg(long)]
    baseline_route: Option<String>,
    /// Measure the baseline and the patterns in turns, this many rounds of
    /// --duration a turn, and report each pattern's ratios as the median of
    /// its rounds' (each against the baseline of its own round), so that a
    /// machine whose speed moves during the run moves both sides of a ratio.
    /// Turns after the first round warm up for at most a quarter of --duration.
    #[arg(long, default_value_t = 1, requires = "baseline_route",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    rounds: u32,
}

#[derive(Subcommand)]
enum BenchMode {
    /// Measure the first request to each of N models that are not loaded yet.
    Cold(BenchTarget),
    /// Mixed traffic, random loads and unloads and a hostile tenant for a
    /// long time; fails on any unexpected answer or RSS growth after warm-up.
    Soak(SoakArgs),
}

/// `mme bench soak`.
#[derive(Args)]
struct SoakArgs {
    #[command(flatten)]
    target: BenchTarget,
    /// The server's process id, whose RSS is sampled.
    #[arg(long)]
    pid: u32,
    /// Hostile models `<hostile-prefix>0` …, running the test guest `faulty`.
    #[arg(long, default_value_t = 2)]
    hostile_models: usize,
    /// The hostile models' name prefix.
    #[arg(long, default_value = "hostile-")]
    hostile_prefix: String,
    /// Bearer token of the hostile models' own tenant, on a server with
    /// --tenants (--token is the well-behaved tenant's management key). It
    /// also asks for the other tenant's models, which must be 404.
    #[arg(long, env = "MME_HOSTILE_TOKEN", hide_env_values = true)]
    hostile_token: Option<String>,
    /// How long to run, such as 10m.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent connections of well-behaved traffic.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// How often to sample RSS. Often, because the growth is judged on the
    /// lowest samples: a hostile guest lifts RSS for a moment, and sparse
    /// samples can all land on such moments.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    sample_every: Duration,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Which server and models a load test sends to, and what.
#[derive(Args)]
struct BenchTarget {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Models `<prefix>0` … `<prefix><N-1>`.
    #[arg(long, default_value_t = 1000)]
    models: usize,
    /// The models' name prefix.
    #[arg(long, default_value = "sklearn-")]
    prefix: String,
    /// Request body.
    #[arg(long, default_value = "[[0.5]]")]
    body: String,
    /// Bearer token sent with every request, for a server with --tenants.
    #[arg(long, env = "MME_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {text:?}"))
}

/// `--grpc-bind`: an address, or `off`.
fn parse_grpc_bind(text: &str) -> anyhow::Result<Option<SocketAddr>> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some).with_context(|| {
        format!("--grpc-bind {text:?} is neither an address such as 0.0.0.0:8081 nor off")
    })
}

fn default_bind() -> anyhow::Result<SocketAddr> {
    let mut bind: SocketAddr = config::DEFAULT_BIND.parse()?;
    if let Ok(port) = std::env::var("SAGEMAKER_BIND_TO_PORT") {
        bind.set_port(
            port.parse()
                .with_context(|| format!("SAGEMAKER_BIND_TO_PORT={port:?} is not a port"))?,
        );
    }
    Ok(bind)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: log files and collectors
        // would keep the escape codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Package(args) => {
            let (path, is_onnx) = match (&args.wasm, &args.onnx) {
                (Some(wasm), None) => (wasm, false),
                (None, Some(onnx)) => (onnx, true),
                _ => anyhow::bail!("pass one of --wasm and --onnx"),
            };
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            package::build(
                &PackageSpec {
                    model: if is_onnx {
                        ModelFile::Onnx(&bytes)
                    } else {
                        ModelFile::Wasm(&bytes)
                    },
                    artifacts: &args.artifacts,
                    properties: &args.properties,
                },
                &args.output,
            )?;
            println!("wrote {}", args.output.display());
            Ok(())
        }
        Command::Inspect(args) => {
            let report = inspect::inspect(
                &args.package,
                args.body.as_deref().map(str::as_bytes),
                args.onnx.onnx_engine,
            )
            .with_context(|| format!("{} is not a usable package", args.package.display()))?;
            print!("{report}");
            Ok(())
        }
        Command::Bench(args) => bench_command(args),
        Command::Precompile(args) => {
            let cache_dir = args.cache_dir.unwrap_or_else(config::default_cache_dir);
            let runtime = mme_host::runtime::Runtime::new(mme_host::runtime::RuntimeConfig {
                cache_dir: Some(cache_dir.clone()),
                max_instances: 1,
                onnx_engine: args.onnx.onnx_engine,
                ..Default::default()
            })?;
            let started = std::time::Instant::now();
            let engine = runtime.onnx_engine_optimized()?;
            println!(
                "ONNX engine {} ready in {} after {:.1?}",
                engine.hash,
                cache_dir.display(),
                started.elapsed()
            );
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServerConfig {
        bind: match args.bind {
            Some(bind) => bind,
            None => default_bind()?,
        },
        grpc_bind: parse_grpc_bind(&args.grpc_bind)?,
        model_store: args.model_store,
        tenants: args.tenants,
        allowed_urls: args.allowed_urls,
        s3: mme_host::store::S3Options {
            endpoint: args.s3_endpoint,
            path_style: args.s3_path_style,
        },
        package_cache_bytes: args.package_cache_size,
        cache_dir: args.cache_dir.unwrap_or_else(config::default_cache_dir),
        unpack_dir: args.unpack_dir,
        compute_threads: args.compute_threads.unwrap_or_else(wlm::usable_cores),
        max_instances: args.max_instances,
        max_instance_memory_bytes: usize::try_from(args.max_instance_memory_mb << 20)
            .context("--max-instance-memory-mb is too large")?,
        max_request_bytes: args.max_request_bytes,
        max_response_bytes: config::DEFAULT_MAX_RESPONSE_BYTES,
        queue_full_status: args.queue_full_status,
        multi_model: args.multi_model,
        single_model_dir: args.model_dir,
        shutdown_timeout: args.shutdown_timeout,
        drain_delay: args.drain_delay,
        header_read_timeout: args.header_read_timeout,
        body_read_timeout: args.body_read_timeout,
        memory_limit: args
            .memory_limit
            .unwrap_or_else(mme_host::registry::default_limit),
        onnx_engine: args.onnx.onnx_engine,
        onnx_precompile: args.onnx_precompile,
        baseline_tier: args.baseline_tier,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on(server::run(config));
    // Once the server has stopped, nothing waits for a blocking task still
    // inside a guest call (a load, say): dropping the runtime would wait for
    // it, past `--shutdown-timeout`.
    runtime.shutdown_background();
    served
}

fn soak_command(runtime: &tokio::runtime::Runtime, args: SoakArgs) -> anyhow::Result<()> {
    let config = bench::SoakConfig {
        url: args.target.url,
        pid: args.pid,
        models: args.target.models,
        prefix: args.target.prefix,
        hostile_models: args.hostile_models,
        hostile_prefix: args.hostile_prefix,
        body: args.target.body,
        token: args.target.token,
        hostile_token: args.hostile_token,
        duration: args.duration,
        connections: args.connections,
        sample_every: args.sample_every,
        seed: args.seed,
    };
    let report = runtime.block_on(bench::soak(&config))?;
    println!("{report}");
    let growth = report.rss_growth(config.duration);
    let late = report.late_rss_growth(config.duration);
    match (growth, late) {
        (Some(growth), Some(late)) => println!(
            "RSS growth after warm-up: {:+.2}%, over the second half: {:+.2}% \
             (a leak: {:.0}% after warm-up and still {:.2}% over the second half)",
            growth * 100.0,
            late * 100.0,
            bench::MAX_RSS_GROWTH * 100.0,
            bench::MAX_RSS_GROWTH * 25.0
        ),
        _ => println!("RSS growth after warm-up: too few samples; run longer"),
    }
    anyhow::ensure!(
        report.passed(config.duration),
        "the soak failed: {} unexpected answers, RSS growth {}",
        report.unexpected(),
        growth.map_or("unknown".into(), |g| format!("{:+.2}%", g * 100.0))
    );
    println!("soak passed");
    Ok(())
}

fn bench_command(args: BenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.mode {
        Some(BenchMode::Cold(t)) => {
            let report = runtime.block_on(bench::cold(
                &t.url,
                &t.prefix,
                t.models,
                (&t.body, t.token.as_deref()),
            ))?;
            println!("{report}");
            return Ok(());
        }
        Some(BenchMode::Soak(soak)) => return soak_command(&runtime, soak),
        None => {}
    }
    let config_for = |pattern: &Pattern, baseline_route| BenchConfig {
        url: args.target.url.clone(),
        models: args.target.models,
        prefix: args.target.prefix.clone(),
        pattern: pattern.clone(),
        route: args.route,
        grpc: Some(args.grpc.clone()),
        baseline_route,
        duration: args.duration,
        warmup: args.warmup,
        connections: args.connections,
        rate: args.rate,
        body: args.target.body.clone(),
        token: args.target.token.clone(),
        seed: args.seed,
        progress: true,
    };
    println!("{}", bench::TABLE_HEADER);
    let mut results = Vec::new();
    match &args.baseline_route {
        Some(route) => {
            let baseline = config_for(&Pattern::even(), Some(route.clone()));
            let patterns: Vec<_> = args.patterns.iter().map(|p| config_for(p, None)).collect();
            let (base, compared) =
                runtime.block_on(bench::in_rounds(&baseline, &patterns, args.rounds as usize))?;
            println!("{base}");
            results.push(base.to_json());
            for pattern in compared {
                println!("{}  ({})", pattern.report, pattern.summary());
                results.push(pattern.to_json());
            }
        }
        None => {
            for pattern in &args.patterns {
                let report = runtime.block_on(bench::run(&config_for(pattern, None)))?;
                println!("{report}");
                results.push(report.to_json());
            }
        }
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&results)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
