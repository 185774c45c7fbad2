//! Wasmtime, narrowed to what the host needs: compile a model's component
//! once per distinct wasm, instantiate it in a sandbox in microseconds, and
//! call `load` and `predict` under a deadline.
//!
//! Nothing here knows about HTTP or queues.

mod compile;
mod engine;
mod guest_log;
mod heap;
mod instance;
mod meter;
mod onnx;
mod resident;
mod tier;
mod wait;

use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use wasmtime::Engine;
use wasmtime::component::Linker;

pub use compile::{CompileStats, Compiled, Tier};
pub use engine::EPOCH_TICK;
pub use guest_log::LogBudget;
pub use heap::CountingAllocator;
pub use instance::{CallError, GuestError, Instance, Sandbox};
pub use meter::{Charge, MemoryMeter};
pub use onnx::{ONNX_ENGINE_FILE, default_onnx_engine};
pub use resident::{INSTANCE_HOST_BYTES, InstanceMemory};
pub use tier::Tiering;
pub use wait::Ambient;

/// The bindings of the `mme:model/model` world, generated from `wit/`.
#[allow(missing_docs)] // Generated code.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "model",
        // Calls are futures: a call inline on the server's async threads
        // yields at each epoch tick, and a compute thread blocks on it.
        exports: { default: async },
    });
}

/// One inference request, as the guest receives it.
pub use bindings::mme::model::types::Request;
/// One inference response, as the guest returns it.
pub use bindings::mme::model::types::Response;

/// The content type under which a v2 request reaches the model (see `wit/model.wit`).
pub const OIP_JSON: &str = "application/vnd.oip.v2+json";

/// The content type of the host's own request for a model's metadata
/// (`mme-guest`'s `Model::metadata`): the inputs and outputs it lists.
pub const METADATA_CONTENT_TYPE: &str = "application/vnd.mme.metadata+json";

/// Default cap on one instance's linear memory.
pub const DEFAULT_MAX_INSTANCE_MEMORY: usize = 256 << 20;
/// Default cap on the wasm stack of one call.
pub const DEFAULT_MAX_STACK: usize = 1 << 20;
/// Default size of the instance pool: every loaded model keeps one warm
/// instance, so this is the number of models that can be warm at once.
pub const DEFAULT_MAX_INSTANCES: u32 = 2048;

/// How the runtime is set up; every field has a default.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where precompiled components are kept across restarts; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// The most linear memory one instance may use; `max_memory_mb` lowers it per model.
    pub max_instance_memory_bytes: usize,
    /// The wasm stack cap: deep recursion traps instead of crashing the host.
    pub max_stack_bytes: usize,
    /// Instances that may be alive at once (the pool's size).
    pub max_instances: u32,
    /// Where compilations and cache hits are counted.
    pub stats: CompileStats,
    /// The built-in ONNX engine's component; `None` looks beside the binary.
    pub onnx_engine: Option<PathBuf>,
    /// How a component is compiled when no cache has it.
    pub tiering: Tiering,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            max_instance_memory_bytes: DEFAULT_MAX_INSTANCE_MEMORY,
            max_stack_bytes: DEFAULT_MAX_STACK,
            max_instances: DEFAULT_MAX_INSTANCES,
            stats: CompileStats::default(),
            onnx_engine: None,
            tiering: Tiering::BaselineFirst,
        }
    }
}

/// What can go wrong below the model's own code.
#[derive(Debug, Clone, Error)]
pub enum RuntimeError {
    /// The engine could not be built.
    #[error("cannot start the wasm engine: {0}")]
    Engine(String),
    /// The bytes are not a valid component.
    #[error("model.wasm does not compile: {0}")]
    Compile(String),
    /// The component does not fit the `mme:model/model` world.
    #[error("model.wasm does not implement the mme:model/model world: {0}")]
    WrongWorld(String),
    /// No instance could be made.
    #[error("cannot instantiate the model: {0}")]
    Instantiate(String),
    /// Every slot of the instance pool is in use: back-pressure, not a fault.
    #[error("no room for another wasm instance: {0}")]
    PoolExhausted(String),
    /// A built-in engine is not installed where the server looks for it.
    #[error("the built-in {engine} engine is not available: {reason}")]
    EngineMissing {
        /// Which engine.
        engine: &'static str,
        /// Where it was looked for, and what to do.
        reason: String,
    },
}

/// The kinds of bytes a package can hold, told apart by their preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmKind {
    /// A component: what a package must hold.
    Component,
    /// A core module: a common mistake, with its own message.
    CoreModule,
    /// Anything else.
    NotWasm,
}

/// Tells a component from a core module from garbage, by the 8-byte preamble.
pub fn wasm_kind(bytes: &[u8]) -> WasmKind {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => WasmKind::Component,
        Some([0, b'a', b's', b'm', _, _, 0, 0]) => WasmKind::CoreModule,
        _ => WasmKind::NotWasm,
    }
}

/// The engine, the WASI linker and the compiled components of the process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<instance::InstanceState>,
    compiled: compile::CompileCache,
    config: RuntimeConfig,
    code_memory: MemoryMeter,
    instance_memory: Arc<InstanceMemory>,
    pooled: bool,
    /// Instances alive in both tiers, against `max_instances`.
    instance_slots: Arc<instance::InstanceSlots>,
    /// The baseline engine and the optimizing thread.
    tiers: tier::Tiers,
    /// The ONNX engine's compiled code.
    onnx: onnx::OnnxEngine,
    _ticker: engine::EpochTicker,
}

impl Runtime {
    /// Builds the engine and starts the deadline ticker.
    pub fn new(config: RuntimeConfig) -> Result<Arc<Self>, RuntimeError> {
        // The pool's slab is the largest mapping the engine's build makes:
        // at least a cap's worth of address space for every instance.
        let (built, added) = resident::new_mappings(|| engine::build(&config));
        let (engine, pooled) = built?;
        let slab_at_least =
            u64::from(config.max_instances).saturating_mul(config.max_instance_memory_bytes as u64);
        let pool = pooled
            .then(|| resident::largest(&added, slab_at_least))
            .flatten();
        if pooled && pool.is_none() {
            tracing::warn!(
                "cannot find the instance pool's pages; the memory budget counts what instances were granted"
            );
        }
        let linker = wait::wasi_linker(&engine)?;
        let code_memory = MemoryMeter::default();
        let compiled = compile::CompileCache::new(
            &engine,
            config.cache_dir.as_deref(),
            config.stats.clone(),
            code_memory.clone(),
        );
        let ticker = engine::EpochTicker::start(engine.clone())?;
        let instance_slots = instance::InstanceSlots::new(config.max_instances);
        Ok(Arc::new(Runtime {
            engine,
            linker,
            compiled,
            config,
            code_memory,
            instance_memory: Arc::new(InstanceMemory::new(pool)),
            pooled,
            instance_slots,
            tiers: tier::Tiers::default(),
            onnx: onnx::OnnxEngine::default(),
            _ticker: ticker,
        }))
    }

    /// The optimized code of `wasm`, compiled at most once per distinct bytes
    /// (in this process, and across restarts when a cache folder is set).
    /// A model's load asks for [`Runtime::prepare`], which may serve on
    /// baseline code first.
    pub fn compile(&self, wasm: &[u8]) -> Result<Arc<Compiled>, RuntimeError> {
        self.compile_hashed(wasm, &compile::hash_of(wasm))
    }

    /// [`Runtime::compile`] of bytes whose hash is known.
    fn compile_hashed(&self, wasm: &[u8], hash: &str) -> Result<Arc<Compiled>, RuntimeError> {
        if wasm_kind(wasm) != WasmKind::Component {
            return Err(RuntimeError::Compile(
                "the bytes are not a wasm component".into(),
            ));
        }
        self.compiled
            .get_or_compile(&self.engine, &self.linker, wasm, hash)
    }

    /// Makes a fresh sandboxed instance of `compiled`.
    pub fn instantiate(
        &self,
        compiled: &Compiled,
        sandbox: &Sandbox,
    ) -> Result<Instance, RuntimeError> {
        let slot = self.instance_slots.take()?;
        // Baseline code runs in its own engine, which allocates on demand.
        let unpooled =
            (compiled.tier() == Tier::Baseline).then(|| self.instance_memory.unpooled().clone());
        let (made, host_bytes) = heap::kept_by(|| {
            Instance::new(
                compiled,
                sandbox,
                self.config.max_instance_memory_bytes,
                unpooled,
                slot,
            )
        });
        let mut instance = made?;
        instance.hold(self.instance_memory.host_charge(host_bytes));
        Ok(instance)
    }

    /// How many compilations and cache hits there were.
    pub fn compile_stats(&self) -> &CompileStats {
        self.compiled.stats()
    }

    /// Whether instances come from the pooling allocator (false after a fallback).
    pub fn is_pooled(&self) -> bool {
        self.pooled
    }

    /// The native code of the components in memory, each counted once.
    pub fn code_memory(&self) -> &MemoryMeter {
        &self.code_memory
    }

    /// The linear memories of every live instance; each model's
    /// [`Sandbox::memory`] is a child of its granted meter.
    pub fn instance_memory(&self) -> &Arc<InstanceMemory> {
        &self.instance_memory
    }

    /// The largest memory an instance may have.
    pub fn max_instance_memory_bytes(&self) -> usize {
        self.config.max_instance_memory_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preambles_are_told_apart() {
        assert_eq!(wasm_kind(b"\0asm\x0d\x00\x01\x00rest"), WasmKind::Component);
        assert_eq!(wasm_kind(b"\0asm\x01\x00\x00\x00"), WasmKind::CoreModule);
        assert_eq!(wasm_kind(b"\0asm"), WasmKind::NotWasm);
        assert_eq!(wasm_kind(b"PK\x03\x04 a zip file"), WasmKind::NotWasm);
        assert_eq!(wasm_kind(b""), WasmKind::NotWasm);
    }

    #[test]
    fn garbage_does_not_compile_and_says_so() {
        let runtime = Runtime::new(RuntimeConfig {
            max_instances: 4,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let err = runtime.compile(b"not wasm at all").unwrap_err();
        assert!(err.to_string().contains("not a wasm component"), "{err}");
        let mut truncated = b"\0asm\x0d\x00\x01\x00".to_vec();
        truncated.extend_from_slice(&[0x07, 0xff, 0xff]);
        let err = runtime.compile(&truncated).unwrap_err();
        assert!(matches!(err, RuntimeError::Compile(_)), "{err}");
    }
}
