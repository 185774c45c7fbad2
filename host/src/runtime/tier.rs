//! Two tiers of native code for a component that no cache holds: Winch's,
//! compiled several times faster than Cranelift's, serves first, while
//! Cranelift compiles the same wasm behind it; instances move to the
//! optimized code as they next run (see `WasmBackend::run_batch`).
//!
//! A Winch engine and a Cranelift engine cannot share components: code
//! compiled by one engine cannot be instantiated in the other's stores. So
//! each tier has its own engine, and every [`Compiled`] carries the engine
//! that made it (an instance is made from its code's engine, never the
//! process's). Baseline code has slots of its own in the compile cache, is
//! never written to the disk cache, and an instance moves to optimized code
//! by being made again from it, never by having code swapped under it.
//!
//! The optimized compiles run on one thread, one component at a time in
//! the order the components were first needed, so that a burst of new
//! models takes one core, not all of them, away from serving.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use wasmtime::Engine;
use wasmtime::component::Linker;

use super::compile::{self, Tier};
use super::engine::{self, EpochTicker};
use super::instance::InstanceState;
use super::{Compiled, Runtime, RuntimeError, WasmKind, wait, wasm_kind};

/// How a component that no cache holds is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tiering {
    /// Cranelift alone: the first request waits for it.
    OptimizedOnly,
    /// Winch first, then Cranelift in the background: what a server does.
    BaselineFirst,
    /// Winch alone: for a process that runs one model and exits (`mme inspect`).
    BaselineOnly,
}

/// A component whose baseline code serves while its optimized code is
/// compiled: the baseline is held weakly, so that a model unloaded
/// meanwhile costs no compile.
struct Job {
    baseline: Weak<Compiled>,
    wasm: Arc<[u8]>,
}

/// The baseline engine and the thread that compiles optimized code.
#[derive(Default)]
pub(super) struct Tiers {
    /// Built on first need; `None` where Winch cannot run (not x86-64, say).
    engine: OnceLock<Option<BaselineEngine>>,
    /// Feeds the optimizing thread, started on first need.
    optimizer: Mutex<Option<Sender<Job>>>,
}

/// The Winch engine, its WASI linker and its own deadline ticker (each
/// engine counts its own epochs).
struct BaselineEngine {
    engine: Engine,
    linker: Linker<InstanceState>,
    _ticker: EpochTicker,
}

impl BaselineEngine {
    fn build(runtime: &Runtime) -> Result<Self, RuntimeError> {
        let engine = engine::build_baseline(&runtime.config)?;
        let linker = wait::wasi_linker(&engine)?;
        let ticker = EpochTicker::start(engine.clone())?;
        Ok(BaselineEngine {
            engine,
            linker,
            _ticker: ticker,
        })
    }
}

impl Runtime {
    /// The code a model starts serving from: `wasm`'s optimized code when
    /// memory or the disk cache has it; otherwise (with
    /// [`Tiering::BaselineFirst`]) its baseline code, compiled while the
    /// caller waits, with the optimized compile queued behind it.
    pub fn prepare(self: &Arc<Self>, wasm: &[u8]) -> Result<Arc<Compiled>, RuntimeError> {
        self.prepare_hashed(wasm, &compile::hash_of(wasm))
    }

    /// [`Runtime::prepare`] of bytes whose hash is known.
    pub(super) fn prepare_hashed(
        self: &Arc<Self>,
        wasm: &[u8],
        hash: &str,
    ) -> Result<Arc<Compiled>, RuntimeError> {
        let tiering = self.config.tiering;
        if tiering == Tiering::OptimizedOnly || self.compiled.is_cached(hash) {
            return self.compile_hashed(wasm, hash);
        }
        if wasm_kind(wasm) != WasmKind::Component {
            return Err(RuntimeError::Compile(
                "the bytes are not a wasm component".into(),
            ));
        }
        let Some(baseline) = self.baseline_engine() else {
            return self.compile_hashed(wasm, hash);
        };
        let started = std::time::Instant::now();
        match self
            .compiled
            .get_or_compile_baseline(&baseline.engine, &baseline.linker, wasm, hash)
        {
            Ok((compiled, fresh)) => {
                if fresh {
                    tracing::debug!(hash, elapsed = ?started.elapsed(), "baseline code compiled");
                    if tiering == Tiering::BaselineFirst {
                        self.optimize_in_background(&compiled, wasm);
                    }
                }
                Ok(compiled)
            }
            Err(error) => {
                // Winch does not take every proposal Cranelift takes; bytes
                // that are not valid wasm fail again, as quickly.
                tracing::debug!(%error, "no baseline code; compiling the optimized code now");
                self.compile_hashed(wasm, hash)
            }
        }
    }

    /// The optimized code that replaces `compiled`, once it is ready;
    /// `None` for code that is optimized already, or while it is compiled.
    pub fn upgrade(&self, compiled: &Compiled) -> Option<Arc<Compiled>> {
        if compiled.tier() != Tier::Baseline {
            return None;
        }
        compiled.optimized().cloned()
    }

    fn baseline_engine(&self) -> Option<&BaselineEngine> {
        self.tiers
            .engine
            .get_or_init(|| match BaselineEngine::build(self) {
                Ok(engine) => Some(engine),
                Err(error) => {
                    tracing::warn!(%error, "no baseline tier: new models wait for Cranelift");
                    None
                }
            })
            .as_ref()
    }

    /// Queues the optimized compile of `baseline`'s wasm, starting the
    /// optimizing thread if it is not running.
    fn optimize_in_background(self: &Arc<Self>, baseline: &Arc<Compiled>, wasm: &[u8]) {
        let job = Job {
            baseline: Arc::downgrade(baseline),
            wasm: Arc::from(wasm),
        };
        let mut optimizer = self
            .tiers
            .optimizer
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // A thread that ended (it panicked) is started again.
        let job = match optimizer.as_ref() {
            Some(queue) => match queue.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (queue, jobs) = mpsc::channel();
        let runtime = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("mme-optimize".into())
            .spawn(move || optimize(&runtime, &jobs));
        match spawned {
            Ok(_) => {
                let _ = queue.send(job);
                *optimizer = Some(queue);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot start the optimizing thread; models keep their baseline code")
            }
        }
    }
}

/// The optimizing thread: compiles each job's optimized code (through the
/// disk cache, which keeps it) and hands it to the baseline code. Ends with
/// the runtime.
fn optimize(runtime: &Weak<Runtime>, jobs: &Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        let Some(baseline) = job.baseline.upgrade() else {
            continue;
        };
        let Some(runtime) = runtime.upgrade() else {
            return;
        };
        let started = std::time::Instant::now();
        match runtime.compile_hashed(&job.wasm, &baseline.hash) {
            Ok(optimized) => {
                tracing::info!(hash = %baseline.hash, elapsed = ?started.elapsed(), "optimized code ready");
                baseline.set_optimized(optimized);
            }
            Err(error) => {
                tracing::warn!(hash = %baseline.hash, %error, "no optimized code; its models keep the baseline code")
            }
        }
    }
}
