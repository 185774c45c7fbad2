//! The built-in ONNX engine: one component that every ONNX model shares,
//! found beside the binary and compiled once for the process.
//!
//! Cranelift takes seconds to compile it (about 8 s on two cores), too long
//! for a first request to wait: where no cache holds its optimized code, it
//! serves first on baseline code, as any component does (see [`super::tier`]).
//! Its optimized code, once there, is kept for the process's life.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::compile::{self, Tier};
use super::{Compiled, Runtime, RuntimeError, Tiering};

/// The file name of the built-in ONNX engine, shipped beside `mme`.
pub const ONNX_ENGINE_FILE: &str = "mme-onnx.wasm";

/// Where the ONNX engine is when nobody says: beside the running binary.
pub fn default_onnx_engine() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join(ONNX_ENGINE_FILE))
}

/// The engine's compiled code.
#[derive(Default)]
pub(super) struct OnnxEngine {
    /// The optimized code, kept for the process's life: every ONNX model
    /// shares it, so it must not be freed with the last one.
    optimized: OnceLock<Result<Arc<Compiled>, RuntimeError>>,
    /// The baseline code, until the optimized code is ready.
    baseline: Mutex<Option<Arc<Compiled>>>,
}

impl Runtime {
    /// The built-in ONNX engine: its optimized code when it is compiled or
    /// cached, else (with [`Tiering::BaselineFirst`]) its baseline code,
    /// compiled while the caller waits, with the optimized compile queued
    /// behind it. Callers that arrive during a compile wait for that one.
    pub fn onnx_engine(self: &Arc<Self>) -> Result<Arc<Compiled>, RuntimeError> {
        if let Some(done) = self.onnx.optimized.get() {
            return done.clone();
        }
        if self.config.tiering == Tiering::OptimizedOnly {
            return self.onnx_engine_optimized();
        }
        // Every ONNX model loaded while Cranelift compiles comes here: the
        // baseline code, once there, costs no read and no hash of the engine.
        let baseline = lock(&self.onnx.baseline).clone();
        if let Some(baseline) = baseline {
            return Ok(match baseline.optimized() {
                Some(optimized) => self.keep_onnx_optimized(optimized.clone()),
                None => baseline,
            });
        }
        let wasm = read_engine(&self.onnx_engine_path())?;
        let hash = compile::hash_of(&wasm);
        if self.compiled.is_cached(&hash) {
            return self.optimized_from(Some((&wasm, &hash)));
        }
        let started = std::time::Instant::now();
        let compiled = self.prepare_hashed(&wasm, &hash)?;
        if compiled.tier() == Tier::Baseline {
            tracing::info!(elapsed = ?started.elapsed(), "the ONNX engine's baseline tier is ready");
            *lock(&self.onnx.baseline) = Some(compiled.clone());
            Ok(compiled)
        } else {
            Ok(self.keep_onnx_optimized(compiled))
        }
    }

    /// The ONNX engine's optimized (Cranelift) code, compiled or read from
    /// the disk cache on first use: what `mme precompile` makes.
    pub fn onnx_engine_optimized(&self) -> Result<Arc<Compiled>, RuntimeError> {
        self.optimized_from(None)
    }

    /// Keeps `optimized` as the engine's code for the process's life.
    fn keep_onnx_optimized(&self, optimized: Arc<Compiled>) -> Arc<Compiled> {
        let kept = self.onnx.optimized.get_or_init(|| {
            tracing::info!("the ONNX engine is ready");
            Ok(optimized.clone())
        });
        // Models hold the baseline code until their instances move.
        *lock(&self.onnx.baseline) = None;
        kept.clone().unwrap_or(optimized)
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
                *lock(&self.onnx.baseline) = None;
                Ok(compiled)
            })
            .clone()
    }

    fn onnx_engine_path(&self) -> PathBuf {
        self.config
            .onnx_engine
            .clone()
            .or_else(default_onnx_engine)
            .unwrap_or_else(|| PathBuf::from(ONNX_ENGINE_FILE))
    }

    /// Gets the ONNX engine ready on a thread of its own, so that the first
    /// ONNX model does not wait for it. A server without the engine
    /// installed serves on; ONNX models then fail to load with what to install.
    pub fn prepare_onnx_engine_in_background(self: &Arc<Self>) {
        let runtime = self.clone();
        let spawned = std::thread::Builder::new()
            .name("onnx-prepare".into())
            .spawn(move || {
                if let Err(error) = runtime.onnx_engine() {
                    tracing::warn!(%error, "ONNX models cannot be served");
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start a thread for the ONNX engine");
        }
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
