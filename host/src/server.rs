//! Wires the layers together for `mme serve` and runs until a shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::api::tenancy::{AllowedUrls, Tenancy};
use crate::api::{self, AppState, Drain, SINGLE_MODEL, Shared};
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::package::Limits;
use crate::registry::{Registry, RegistryConfig, Share, Shares, WasmScheduler};
use crate::runtime::{Runtime, RuntimeConfig, Tiering};
use crate::store::{ModelStore, PackageCache};
use crate::wlm::SystemClock;

/// How often idle workers are looked for and retired, and the pages the
/// instances hold measured while the memory budget is more than half used.
const RETIRE_EVERY: Duration = Duration::from_secs(1);
/// How often those pages are measured while the budget is less than half
/// used: a reading costs about 50 ms of CPU at 10,000 live instances, and a
/// load that finds the budget full measures at once.
const RELAXED_SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Starts the server on `config.bind` and serves until SIGTERM or Ctrl-C.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let tenancy = load_tenancy(&config)?;
    let metrics = Arc::new(Metrics::new());
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(config.cache_dir.clone()),
        max_instance_memory_bytes: config.max_instance_memory_bytes,
        max_instances: config.max_instances,
        stats: metrics.compile.clone(),
        onnx_engine: config.onnx_engine.clone(),
        tiering: if config.baseline_tier {
            Tiering::BaselineFirst
        } else {
            Tiering::OptimizedOnly
        },
        ..RuntimeConfig::default()
    })?;
    if config.onnx_precompile {
        runtime.prepare_onnx_engine_in_background();
    }
    std::fs::create_dir_all(&config.cache_dir).with_context(|| {
        format!(
            "cannot create the cache folder {}",
            config.cache_dir.display()
        )
    })?;
    // Unpacked packages live only as long as this process; the folder goes with it.
    let unpacked = tempfile::Builder::new()
        .prefix("unpacked-")
        .tempdir_in(&config.cache_dir)
        .with_context(|| format!("cannot create a folder in {}", config.cache_dir.display()))?;
    let packages = config.cache_dir.join("packages");
    let cache = PackageCache::open(&packages, config.package_cache_bytes)
        .with_context(|| format!("cannot open the package cache {}", packages.display()))?;
    let limits = Limits::default();
    let store = ModelStore::new(
        &config.model_store,
        config.s3.clone(),
        cache,
        limits.max_compressed_bytes,
    )?;
    let scheduler = Arc::new(WasmScheduler::new(
        Arc::new(SystemClock),
        config.compute_threads.max(1),
    )?);
    let registry = Arc::new(Registry::new(
        store,
        runtime.clone(),
        scheduler.clone(),
        RegistryConfig {
            unpack_dir: unpacked.path().to_path_buf(),
            limits,
            max_response_bytes: config.max_response_bytes,
            memory_limit: config.memory_limit,
            // SageMaker picks the models to unload in its multi-model mode.
            evict: !config.multi_model,
            shares: tenancy.clone().map(memory_shares),
        },
        metrics.clone(),
    ));
    let retirement = tokio::spawn(retire_idle_workers(registry.clone()));
    if !config.multi_model && config.single_model_dir.exists() {
        // Single-model mode: load the model now, so that the first invocation finds it ready.
        let (registry, dir) = (registry.clone(), config.single_model_dir.clone());
        tokio::spawn(async move {
            if let Err(error) = registry.get_or_load_from(SINGLE_MODEL, dir).await {
                tracing::error!(%error, "the single model did not load");
            }
        });
    }
    let allowed_urls = allowed_urls(&config, tenancy.is_some())?;
    let state = AppState::new(Shared {
        registry,
        metrics,
        max_request_bytes: config.max_request_bytes,
        body_read_timeout: config.body_read_timeout,
        queue_full_status: config.queue_full_status,
        multi_model: config.multi_model,
        single_model_dir: config.single_model_dir.clone(),
        tenancy: tenancy.clone(),
        allowed_urls,
        drain: Drain::default(),
    });
    if let Some(tenancy) = tenancy {
        tokio::spawn(reload_on_hangup(tenancy));
    } else if let Some(address) =
        open_to_other_machines(config.bind, config.grpc_bind, config.multi_model)
    {
        tracing::warn!(
            %address,
            "no --tenants file: anyone who reaches this address may load, unload and run every model"
        );
    }
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    tracing::info!(
        address = %listener.local_addr()?,
        model_store = %config.model_store,
        compute_threads = scheduler.threads(),
        memory_limit_mib = config.memory_limit >> 20,
        pooled = runtime.is_pooled(),
        "serving"
    );
    // A second listener that cannot bind is an error at start, as the first is.
    let grpc_listener = match config.grpc_bind {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for gRPC on {address} (--grpc-bind)"))?,
        ),
        None => None,
    };
    let (phase, phase_seen) = tokio::sync::watch::channel(Phase::Serving);
    let grpc = match grpc_listener {
        Some(listener) => {
            tracing::info!(address = %listener.local_addr()?, "serving gRPC");
            let reached = |wanted: Phase| {
                let mut seen = phase_seen.clone();
                async move {
                    let _ = seen.wait_for(|now| *now >= wanted).await;
                }
            };
            let served = api::serve_grpc(
                state.clone(),
                listener,
                reached(Phase::Draining),
                reached(Phase::Stopping),
            );
            Some(tokio::spawn(async move {
                if let Err(error) = served.await {
                    tracing::error!(%error, "the gRPC service stopped");
                }
            }))
        }
        None => None,
    };
    let connections = http1_builder(&config);
    let drain = state.drain.clone();
    let app = {
        let drain = drain.clone();
        ServiceExt::<hyper::Request<hyper::body::Incoming>>::map_response(
            api::router(state),
            move |response| api::close_when_draining(&drain, response),
        )
    };
    let graceful = GracefulShutdown::new();
    // Told to stop, the server drains: it still accepts and serves for
    // `--drain-delay`, reporting not ready, then the listener closes.
    let drained = async {
        shutdown_signal().await;
        drain.start();
        let _ = phase.send(Phase::Draining);
        if !config.drain_delay.is_zero() {
            tracing::info!(delay = ?config.drain_delay, "draining: not ready, still serving until the listener closes");
            tokio::time::sleep(config.drain_delay).await;
        }
    };
    tokio::pin!(drained);
    loop {
        let (socket, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait instead of spinning.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut drained => break,
        };
        let _ = socket.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = connections.serve_connection(TokioIo::new(socket), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    // New connections are refused from here; those open finish their requests.
    drop(listener);
    tracing::info!("shutting down: finishing the requests in flight");
    let _ = phase.send(Phase::Stopping);
    let signalled = Instant::now();
    let grpc_done = async {
        if let Some(grpc) = grpc {
            let _ = grpc.await;
        }
    };
    tokio::select! {
        ((), ()) = async { tokio::join!(graceful.shutdown(), grpc_done) } => {}
        () = tokio::time::sleep(config.shutdown_timeout) => {
            tracing::warn!(timeout = ?config.shutdown_timeout, "requests still in flight at the shutdown timeout; exiting");
            // The compute threads may be inside a guest call until its own
            // deadline; waiting for them would break the shutdown bound.
            std::process::exit(0);
        }
    }
    retirement.abort();
    // What the compute threads still run has no caller left (a load, say);
    // it gets what remains of the shutdown timeout, not more.
    let left = config.shutdown_timeout.saturating_sub(signalled.elapsed());
    let busy = tokio::task::spawn_blocking(move || scheduler.shutdown_within(left))
        .await
        .unwrap_or(0);
    if busy > 0 {
        tracing::warn!(
            busy,
            "compute threads still inside guest calls at the shutdown timeout; exiting"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// The tenants file, read.
fn load_tenancy(config: &ServerConfig) -> anyhow::Result<Option<Arc<Tenancy>>> {
    match &config.tenants {
        Some(_) if config.multi_model => anyhow::bail!(
            "--tenants does not apply in SageMaker's multi-model mode: SageMaker is the only caller there"
        ),
        Some(path) => Ok(Some(Arc::new(Tenancy::load(path)?))),
        None => Ok(None),
    }
}

/// The roots packages may be registered from: `--allowed-urls`, else with
/// tenants the model store alone, else anywhere (`None`).
fn allowed_urls(config: &ServerConfig, tenants: bool) -> anyhow::Result<Option<Arc<AllowedUrls>>> {
    let roots = if config.allowed_urls.is_empty() && tenants {
        vec![config.model_store.clone()]
    } else {
        config.allowed_urls.clone()
    };
    if roots.is_empty() {
        return Ok(None);
    }
    let allowed = AllowedUrls::parse(&roots).context("--allowed-urls")?;
    Ok(Some(Arc::new(allowed)))
}

/// Each tenant's memory share, as the tenants file says now.
fn memory_shares(tenancy: Arc<Tenancy>) -> Shares {
    Shares::new(move |model| {
        let tenants = tenancy.tenants();
        let tenant = tenants.owner_of(model)?;
        Some(Share {
            group: Arc::from(tenant.name.as_str()),
            limit: tenant.memory,
            cpu_weight: tenant.cpu_weight,
        })
    })
}

/// Reads the tenants file again on each SIGHUP.
async fn reload_on_hangup(tenancy: Arc<Tenancy>) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP: the tenants file is read only at start");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        match tenancy.reload() {
            Ok(tenants) => tracing::info!(tenants, "tenants file read again"),
            Err(error) => {
                tracing::error!(%error, "the tenants file was not read again; the tenants stay as they were")
            }
        }
    }
}

/// HTTP/1.1 connections whose request head must arrive within
/// `--header-read-timeout`, so that a client that sends it a byte at a time
/// (slowloris) cannot hold a connection open.
fn http1_builder(config: &ServerConfig) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    builder
}

/// Retires the workers that have been idle for their model's `max_idle_time`,
/// measures the pages the instances hold, then evicts idle models if bursts
/// took the memory in use over the limit.
async fn retire_idle_workers(registry: Arc<Registry>) {
    let mut ticks = tokio::time::interval(RETIRE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let retiring = registry.clone();
        let retired = tokio::task::spawn_blocking(move || retiring.retire_idle_workers()).await;
        if let Ok(count @ 1..) = retired {
            tracing::debug!(count, "idle workers retired");
        }
        // What the instances hold, for the budget and the metrics; a load
        // that finds the budget full measures again.
        let fresh_enough = if registry.memory_pressed() {
            RETIRE_EVERY / 2
        } else {
            RELAXED_SAMPLE_EVERY
        };
        registry.sample_instances(fresh_enough).await;
        let evicted = registry.enforce_budget().await;
        if evicted > 0 {
            tracing::info!(evicted, "models evicted to get back under the memory limit");
        }
    }
}

/// Resolves on SIGTERM (what SageMaker and Kubernetes send) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Where a server is in its life, in order; the gRPC service follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// Told to stop: not ready, still serving (`--drain-delay`).
    Draining,
    /// The listeners close; what is in flight finishes.
    Stopping,
}

/// For a server without a tenants file, the first address it listens on
/// (HTTP, then gRPC) that other machines can reach; never in SageMaker's
/// mode (`multi_model`), where SageMaker is the only caller and its
/// contract has no keys.
fn open_to_other_machines(
    bind: SocketAddr,
    grpc_bind: Option<SocketAddr>,
    multi_model: bool,
) -> Option<SocketAddr> {
    if multi_model {
        return None;
    }
    std::iter::once(bind)
        .chain(grpc_bind)
        .find(|address| !address.ip().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_without_tenants_warns_of_every_listener_other_machines_reach() {
        let address = |text: &str| text.parse::<SocketAddr>().unwrap();
        let loopback = address("127.0.0.1:8080");
        let anywhere = address("0.0.0.0:8080");
        let grpc_anywhere = address("0.0.0.0:8081");
        assert_eq!(open_to_other_machines(loopback, None, false), None);
        assert_eq!(
            open_to_other_machines(loopback, Some(address("[::1]:8081")), false),
            None
        );
        assert_eq!(
            open_to_other_machines(anywhere, None, false),
            Some(anywhere)
        );
        // gRPC takes the same calls without keys: its port counts too.
        assert_eq!(
            open_to_other_machines(loopback, Some(grpc_anywhere), false),
            Some(grpc_anywhere)
        );
        assert_eq!(
            open_to_other_machines(address("10.0.0.5:8080"), None, false),
            Some(address("10.0.0.5:8080"))
        );
        // SageMaker's mode: SageMaker is the only caller.
        assert_eq!(
            open_to_other_machines(anywhere, Some(grpc_anywhere), true),
            None
        );
    }
}
