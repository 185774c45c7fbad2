//! The one wasmtime `Engine` of the process, and the ticker that drives
//! request deadlines.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
    ProfilingStrategy, RegallocAlgorithm, Strategy,
};

use super::{RuntimeConfig, RuntimeError};

/// How often the epoch advances: the resolution of every deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Core instances in one component: a Rust `wasm32-wasip2` guest has a few
/// (the program plus small shims); the margin covers guests built by other tools.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
/// Tables per component, with the same margin.
const TABLES_PER_COMPONENT: u32 = 8;
/// Memories per component: the program's own, plus room for a second.
const MEMORIES_PER_COMPONENT: u32 = 2;

/// Address space reserved for each linear memory: all of a 32-bit memory's
/// range, so that compiled code needs no bounds check on a load or store
/// (the guard pages catch what falls outside). A smaller reservation makes
/// Cranelift check every access, which costs compute-heavy guests such as
/// the ONNX engine about 3× in tree walks. The reservation is address
/// space, not memory: the cap on what an instance may use is
/// `max_instance_memory`, enforced by the pool.
const MEMORY_RESERVATION: u64 = 1 << 32;

/// Builds the engine: component model, epoch deadlines, a stack cap, and the
/// pooling allocator with copy-on-write memory images, each slot capped at
/// `max_instance_memory`. Each slot reserves [`MEMORY_RESERVATION`] when the
/// machine has the address space for the whole pool (2,048 instances take
/// 16 TiB of the 128 TiB there are), else only its cap, at the price of
/// bounds checks. When even that cannot be reserved (a low `ulimit -v`, say),
/// falls back to allocating on demand: slower to instantiate, otherwise the same.
pub fn build(config: &RuntimeConfig) -> Result<(Engine, bool), RuntimeError> {
    let max_memory = config.max_instance_memory_bytes as u64;
    let mut wasm = base(config);
    // Zeroed when given back: no tenant's stack contents wait in the pool
    // for another's instance, and the pages go back to the system.
    wasm.async_stack_zeroing(true);
    let instances = config.max_instances;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(instances.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(instances.saturating_mul(TABLES_PER_COMPONENT))
        // Calls are async, and a store keeps the stack of its last call for
        // the next one: every live instance may hold one.
        .total_stacks(instances)
        // A stack given back to the pool returns its pages to the system
        // (with `async_stack_zeroing`, below): kept, every slot that a deep
        // call ever touched would stay resident, a megabyte for a guest
        // that overflows its stack.
        .async_stack_keep_resident(0)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(config.max_instance_memory_bytes);
    let mut last_error = None;
    for reservation in [MEMORY_RESERVATION.max(max_memory), max_memory] {
        let mut pooled = wasm.clone();
        pooled
            .memory_reservation(reservation)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool.clone()));
        match Engine::new(&pooled) {
            Ok(engine) => return Ok((engine, true)),
            Err(error) => last_error = Some(error),
        }
    }
    if let Some(error) = last_error {
        tracing::warn!(%error, "cannot reserve the instance pool; allocating instances on demand");
    }
    wasm.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    let engine = Engine::new(&wasm).map_err(|e| RuntimeError::Engine(e.to_string()))?;
    Ok((engine, false))
}

/// Builds the baseline engine: the same sandbox, compiled by Winch, with
/// instances allocated on demand (it runs few of them, and only until the
/// optimized code is ready, so it reserves no pool of its own).
pub fn build_baseline(config: &RuntimeConfig) -> Result<Engine, RuntimeError> {
    let mut wasm = base(config);
    // No map from native code back to wasm offsets: it is compile work, and
    // only a trap's backtrace would show it. Winch leaves the trampolines
    // (one for every function a table holds: thousands in the ONNX engine)
    // to Cranelift, which compiles them here without optimization passes
    // and with its single-pass register allocator: they are short-lived.
    wasm.strategy(Strategy::Winch)
        .cranelift_opt_level(OptLevel::None)
        .cranelift_regalloc_algorithm(RegallocAlgorithm::SinglePass)
        .generate_address_map(false)
        .allocation_strategy(InstanceAllocationStrategy::OnDemand);
    Engine::new(&wasm).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
}

/// What every engine of the process shares: the component model, epoch
/// deadlines, the stack cap, and copy-on-write memory images with only the
/// instance's cap reserved (the pool raises it).
fn base(config: &RuntimeConfig) -> Config {
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(config.max_stack_bytes)
        .memory_init_cow(true)
        .memory_reservation(config.max_instance_memory_bytes as u64)
        .memory_reservation_for_growth(0);
    if std::env::var_os(PROFILER_VARIABLE).is_some_and(|v| v == "perfmap") {
        wasm.profiler(ProfilingStrategy::PerfMap);
    }
    wasm
}

/// Set to `perfmap` to have `perf` name the guests' functions: the engine
/// writes `/tmp/perf-PID.map` as it loads code (as `wasmtime --profile=perfmap`).
pub const PROFILER_VARIABLE: &str = "MME_WASM_PROFILER";

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped; dropping
/// it stops and joins the thread.
pub struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts the ticker thread for `engine`.
    pub fn start(engine: Engine) -> Result<Self, RuntimeError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("mme-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                }
            })
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(EpochTicker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(module (func (export "spin") (loop (br 0))))`
    const SPIN: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // preamble, core module
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type 0: [] -> []
        0x03, 0x02, 0x01, 0x00, // one function of type 0
        0x07, 0x08, 0x01, 0x04, b's', b'p', b'i', b'n', 0x00, 0x00, // export "spin"
        0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // loop br 0
    ];

    #[test]
    fn baseline_code_stops_at_its_deadline() {
        let engine = build_baseline(&RuntimeConfig::default()).unwrap();
        let _ticker = EpochTicker::start(engine.clone()).unwrap();
        let module = wasmtime::Module::new(&engine, SPIN).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        store.epoch_deadline_trap();
        store.set_epoch_deadline(5);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .unwrap();
        let error = spin.call(&mut store, ()).unwrap_err();
        assert_eq!(
            error.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::Interrupt)
        );
    }

    #[test]
    fn a_pool_too_large_for_full_reservations_is_still_pooled() {
        // 40,000 memories of 4 GiB are more than the 128 TiB of a 64-bit
        // process's address space; of their 256 MiB caps, they are not.
        let config = RuntimeConfig {
            max_instances: 20_000,
            ..RuntimeConfig::default()
        };
        let (_engine, pooled) = build(&config).unwrap();
        assert!(pooled);
    }
}
