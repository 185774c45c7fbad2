//! The built-in ONNX engine: one component that every ONNX model shares,
//! found beside the binary and compiled once for the process.
//!
//! Cranelift takes seconds to compile it (about 8 s on two cores), too long
//! for a first request to wait. Where no cache holds its optimized code, a
//! baseline tier compiled by Winch, several times faster, serves first, while
//! Cranelift compiles in the background; instances then move to the
//! optimized code as they next run (see [`Runtime::upgrade`]), and the
//! baseline code is freed with its last instance.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use wasmtime::Engine;
use wasmtime::component::Linker;

use super::compile::{self, Tier};
use super::engine::{self, EpochTicker};
use super::instance::InstanceState;
use super::{Compiled, Runtime, RuntimeError, wait};

/// The file name of the built-in ONNX engine, shipped beside `mme`.
pub const ONNX_ENGINE_FILE: &str = "mme-onnx.wasm";

/// Where the ONNX engine is when nobody says: beside the running binary.
pub fn default_onnx_engine() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join(ONNX_ENGINE_FILE))
}

/// How the ONNX engine is compiled when no cache holds its optimized code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnnxTiering {
    /// Cranelift alone: the first ONNX model waits for it.
    OptimizedOnly,
    /// Winch first, then Cranelift in the background: what a server does.
    BaselineFirst,
    /// Winch alone: for a process that runs one model and exits (`mme inspect`).
    BaselineOnly,
}

type Slot = OnceLock<Result<Arc<Compiled>, RuntimeError>>;

/// The engine's compiled tiers.
#[derive(Default)]
pub(super) struct OnnxEngine {
    /// The Cranelift code, kept for the process's life: every ONNX model
    /// shares it, so it must not be freed with the last one.
    optimized: Slot,
    /// The Winch code, until the optimized code is ready.
    baseline: Mutex<Option<Arc<Slot>>>,
    /// Built on first need; `None` where Winch cannot run (not x86-64, say).
    baseline_engine: OnceLock<Option<BaselineEngine>>,
    /// Whether the background Cranelift compile has been started.
    optimizing: AtomicBool,
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
    /// The built-in ONNX engine: its optimized code when it is compiled or
    /// cached, else (with [`OnnxTiering::BaselineFirst`]) its baseline code,
    /// compiled while the caller waits, with the optimized compile started
    /// behind it. Callers that arrive during a compile wait for that one.
    pub fn onnx_engine(self: &Arc<Self>) -> Result<Arc<Compiled>, RuntimeError> {
        if let Some(done) = self.onnx.optimized.get() {
            return done.clone();
        }
        let tiering = self.config.onnx_tiering;
        if tiering == OnnxTiering::OptimizedOnly {
            return self.onnx_engine_optimized();
        }
        // Every ONNX model loaded while Cranelift compiles comes here: the
        // baseline code, once there, costs no read and no hash of the engine.
        let ready = lock(&self.onnx.baseline)
            .as_ref()
            .and_then(|slot| slot.get()?.as_ref().ok().cloned());
        if let Some(baseline) = ready {
            return Ok(baseline);
        }
        let wasm = read_engine(&self.onnx_engine_path())?;
        let hash = compile::hash_of(&wasm);
        if self.compiled.is_cached(&hash) {
            return self.optimized_from(Some((&wasm, &hash)));
        }
        let baseline = self.onnx_baseline(&wasm, &hash);
        drop(wasm);
        if tiering == OnnxTiering::BaselineFirst {
            self.optimize_onnx_engine_in_background();
        }
        match baseline {
            Some(Ok(compiled)) => Ok(compiled),
            Some(Err(error)) => {
                tracing::warn!(%error, "the ONNX engine's baseline tier failed; waiting for the optimized one");
                self.onnx_engine_optimized()
            }
            None => self.onnx_engine_optimized(),
        }
    }

    /// The ONNX engine's optimized (Cranelift) code, compiled or read from
    /// the disk cache on first use: what `mme precompile` makes.
    pub fn onnx_engine_optimized(&self) -> Result<Arc<Compiled>, RuntimeError> {
        self.optimized_from(None)
    }

    /// The optimized code, compiled from `read` (the engine's bytes and
    /// their hash) when the caller has read them already.
    fn optimized_from(&self, read: Option<(&[u8], &str)>) -> Result<Arc<Compiled>, RuntimeError> {
        self.onnx
            .optimized
            .get_or_init(|| {
                let path = self.onnx_engine_path();
                let started = std::time::Instant::now();
                let compiled = match read {
                    Some((wasm, hash)) => self.compile_hashed(wasm, hash)?,
                    None => self.compile(&read_engine(&path)?)?,
                };
                tracing::info!(
                    path = %path.display(),
                    elapsed = ?started.elapsed(),
                    "the ONNX engine is ready"
                );
                // Models hold the baseline code until their instances move.
                *lock(&self.onnx.baseline) = None;
                Ok(compiled)
            })
            .clone()
    }

    /// The optimized code that replaces `compiled`, once it is ready; `None`
    /// for code that is optimized already, or while it is being compiled.
    pub fn upgrade(&self, compiled: &Compiled) -> Option<Arc<Compiled>> {
        if compiled.tier() != Tier::Baseline {
            return None;
        }
        match self.onnx.optimized.get() {
            Some(Ok(optimized)) if optimized.hash == compiled.hash => Some(optimized.clone()),
            _ => None,
        }
    }

    fn onnx_engine_path(&self) -> PathBuf {
        self.config
            .onnx_engine
            .clone()
            .or_else(default_onnx_engine)
            .unwrap_or_else(|| PathBuf::from(ONNX_ENGINE_FILE))
    }

    /// The baseline code, compiled once until the optimized code replaces
    /// it; `None` where Winch cannot run.
    fn onnx_baseline(
        &self,
        wasm: &[u8],
        hash: &str,
    ) -> Option<Result<Arc<Compiled>, RuntimeError>> {
        let baseline = self
            .onnx
            .baseline_engine
            .get_or_init(|| match BaselineEngine::build(self) {
                Ok(engine) => Some(engine),
                Err(error) => {
                    tracing::warn!(%error, "no baseline tier: ONNX models wait for the optimized engine");
                    None
                }
            })
            .as_ref()?;
        let slot = lock(&self.onnx.baseline)
            .get_or_insert_with(Default::default)
            .clone();
        let compiled = slot.get_or_init(|| {
            // The optimized code may have been finished since the caller looked.
            if let Some(done) = self.onnx.optimized.get() {
                return done.clone();
            }
            let started = std::time::Instant::now();
            let compiled =
                self.compiled
                    .compile_baseline(&baseline.engine, &baseline.linker, wasm, hash)?;
            tracing::info!(
                elapsed = ?started.elapsed(),
                "the ONNX engine's baseline tier is ready"
            );
            Ok(compiled)
        });
        Some(compiled.clone())
    }

    /// Gets the ONNX engine ready on a thread of its own, so that the first
    /// ONNX model does not wait for it. A server without the engine
    /// installed serves on; ONNX models then fail to load with what to install.
    pub fn prepare_onnx_engine_in_background(self: &Arc<Self>) {
        self.in_background("onnx-prepare", |runtime| runtime.onnx_engine().map(drop));
    }

    /// Starts the Cranelift compile on a thread of its own, once.
    fn optimize_onnx_engine_in_background(self: &Arc<Self>) {
        if self.onnx.optimizing.swap(true, Ordering::AcqRel) {
            return;
        }
        if !self.in_background("onnx-optimize", |runtime| {
            runtime.onnx_engine_optimized().map(drop)
        }) {
            self.onnx.optimizing.store(false, Ordering::Release);
        }
    }

    /// Runs `job` on a thread named `name`, logging its failure; false if
    /// no thread could be started.
    fn in_background(
        self: &Arc<Self>,
        name: &str,
        job: impl FnOnce(&Arc<Runtime>) -> Result<(), RuntimeError> + Send + 'static,
    ) -> bool {
        let runtime = self.clone();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                if let Err(error) = job(&runtime) {
                    tracing::warn!(%error, "ONNX models cannot be served");
                }
            });
        if let Err(error) = &spawned {
            tracing::warn!(%error, thread = name, "cannot start a thread for the ONNX engine");
        }
        spawned.is_ok()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn read_engine(path: &Path) -> Result<Vec<u8>, RuntimeError> {
    std::fs::read(path).map_err(|e| RuntimeError::EngineMissing {
        engine: "ONNX",
        reason: format!(
            "cannot read {}: {e}; put {ONNX_ENGINE_FILE} beside mme (the Docker image and the xtask builds do) or pass --onnx-engine PATH",
            path.display()
        ),
    })
}
