//! Compile once per distinct wasm: a BLAKE3 hash of the bytes keys one shared
//! compiled component, in memory and on disk.
//!
//! Memory holds a component only while a model uses it: its code is counted
//! on the runtime's code meter, and freed with its last user. The disk copy
//! brings it back in microseconds.
//!
//! The disk cache holds native code that `Component::deserialize_file` trusts
//! blindly, so it is only used in a folder that this process's user owns and
//! that nobody else can write, under a sub-folder keyed by the engine's
//! compatibility hash.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use prometheus_client::metrics::counter::Counter;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::RuntimeError;
use super::bindings::ModelPre;
use super::heap;
use super::instance::InstanceState;
use super::meter::{Charge, MemoryMeter};

/// Which compiler made a component's native code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Cranelift: what every model runs on in the end.
    Optimized,
    /// Winch, a single-pass compiler: several times faster to compile and
    /// slower to run, so that a large component (the ONNX engine) can serve
    /// while Cranelift compiles it.
    Baseline,
}

/// A component ready to instantiate, shared by every model with the same wasm.
pub struct Compiled {
    /// BLAKE3 hash of the wasm bytes, hex.
    pub hash: String,
    /// Linked once: instantiating from it does no linking work.
    pub(super) pre: ModelPre<InstanceState>,
    /// Its native code, counted while it is in memory.
    code: Charge,
    /// Whether it says that it reads Triton's binary tensors itself.
    reads_binary_tensors: bool,
    tier: Tier,
    /// For baseline code: the optimized code of the same wasm, once it is
    /// compiled. Held here, it lives as long as some instance may still
    /// move to it.
    optimized: OnceLock<Arc<Compiled>>,
}

impl Compiled {
    /// The size of its native code in memory.
    pub fn code_bytes(&self) -> u64 {
        self.code.bytes()
    }

    /// Whether the component says, with the custom section
    /// [`mme_oip::READS_BINARY_TENSORS_SECTION`], that it reads and writes
    /// Triton's binary tensors itself, so that a binary request's tensors
    /// reach it as bytes.
    pub fn reads_binary_tensors(&self) -> bool {
        self.reads_binary_tensors
    }

    /// Which compiler made its code.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The engine whose stores can run it.
    pub(super) fn engine(&self) -> &Engine {
        self.pre.instance_pre().engine()
    }

    /// The optimized code that replaces this baseline code, once it is ready.
    pub(super) fn optimized(&self) -> Option<&Arc<Compiled>> {
        self.optimized.get()
    }

    /// Hands this baseline code its replacement.
    pub(super) fn set_optimized(&self, optimized: Arc<Compiled>) {
        let _ = self.optimized.set(optimized);
    }
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// Counters that prove the compile-once promise; clones share their counts,
/// so the metrics registry can hold them too.
#[derive(Debug, Clone, Default)]
pub struct CompileStats {
    /// Cranelift compilations.
    pub compiled: Counter,
    /// Components read back from the disk cache.
    pub disk_hits: Counter,
    /// Requests served by a component already in memory.
    pub memory_hits: Counter,
    /// Winch compilations, each followed by a Cranelift one in the background.
    pub baseline_compiled: Counter,
}

type Slot = Arc<OnceLock<Result<Weak<Compiled>, RuntimeError>>>;

/// Components in memory by hash, made once: concurrent callers for one
/// hash wait on the same slot. A slot holds its component weakly, so that
/// the component is freed with its last user.
#[derive(Default)]
struct Slots(Mutex<HashMap<String, Slot>>);

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// The component `hash`, made by `make` unless it is in memory; true
    /// with it when this call made it.
    fn get_or_make(
        &self,
        hash: &str,
        hits: &Counter,
        make: impl Fn() -> Result<Arc<Compiled>, RuntimeError>,
    ) -> Result<(Arc<Compiled>, bool), RuntimeError> {
        loop {
            let slot = {
                let mut slots = self.lock();
                if !slots.contains_key(hash) {
                    // Slots of components whose last user is gone are not
                    // kept: only this lookup would have found them again.
                    slots.retain(|_, slot| match slot.get() {
                        Some(Ok(weak)) => weak.strong_count() > 0,
                        Some(Err(_)) => false,
                        None => true,
                    });
                }
                slots.entry(hash.to_string()).or_default().clone()
            };
            let mut fresh = None;
            let result = slot.get_or_init(|| {
                make().map(|compiled| {
                    let weak = Arc::downgrade(&compiled);
                    fresh = Some(compiled);
                    weak
                })
            });
            let found = match (fresh, result) {
                (Some(compiled), _) => return Ok((compiled, true)),
                (None, Ok(weak)) => weak.upgrade(),
                (None, Err(_)) => None,
            };
            if let Some(compiled) = found {
                hits.inc();
                return Ok((compiled, false));
            }
            // A failure, or a component whose last user is gone: the slot is
            // not kept, so the next caller compiles (or reads the disk) again.
            {
                let mut slots = self.lock();
                if slots.get(hash).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    slots.remove(hash);
                }
            }
            if let Err(error) = result {
                return Err(error.clone());
            }
        }
    }

    /// Whether the component `hash` is in memory.
    fn holds(&self, hash: &str) -> bool {
        self.lock()
            .get(hash)
            .is_some_and(|slot| matches!(slot.get(), Some(Ok(weak)) if weak.strong_count() > 0))
    }
}

pub(super) struct CompileCache {
    /// `<cache>/<engine hash>`, when a safe cache folder is available.
    dir: Option<PathBuf>,
    /// Optimized components.
    optimized: Slots,
    /// Baseline components, until their optimized code replaces them.
    baseline: Slots,
    stats: CompileStats,
    code: MemoryMeter,
}

impl CompileCache {
    pub(super) fn new(
        engine: &Engine,
        cache_dir: Option<&Path>,
        stats: CompileStats,
        code: MemoryMeter,
    ) -> Self {
        let dir = cache_dir.and_then(|root| {
            let mut hasher = DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            let dir = root.join("compiled").join(format!("{:016x}", hasher.finish()));
            match private_dir(&dir) {
                Ok(()) => Some(dir),
                Err(reason) => {
                    tracing::warn!(dir = %dir.display(), %reason, "not using the compile cache folder");
                    None
                }
            }
        });
        CompileCache {
            dir,
            optimized: Slots::default(),
            baseline: Slots::default(),
            stats,
            code,
        }
    }

    pub(super) fn stats(&self) -> &CompileStats {
        &self.stats
    }

    /// The optimized code of `wasm`, from memory, the disk cache, or Cranelift.
    pub(super) fn get_or_compile(
        &self,
        engine: &Engine,
        linker: &Linker<InstanceState>,
        wasm: &[u8],
        hash: &str,
    ) -> Result<Arc<Compiled>, RuntimeError> {
        let make = || self.load_or_compile(engine, linker, wasm, hash);
        let (compiled, made) = self
            .optimized
            .get_or_make(hash, &self.stats.memory_hits, make)?;
        if made {
            heap::release_free_memory();
        }
        Ok(compiled)
    }

    /// Whether the optimized code of the wasm hashed `hash` is in memory or
    /// on disk, so that getting it costs no compilation.
    pub(super) fn is_cached(&self, hash: &str) -> bool {
        self.optimized.holds(hash)
            || self
                .dir
                .as_ref()
                .is_some_and(|dir| dir.join(format!("{hash}.cwasm")).is_file())
    }

    /// The baseline code of `wasm`, compiled by `engine` (a Winch engine)
    /// unless it is in memory; true with it when this call compiled it.
    /// Its code lives only until the optimized code replaces it: it is
    /// never kept on disk.
    pub(super) fn get_or_compile_baseline(
        &self,
        engine: &Engine,
        linker: &Linker<InstanceState>,
        wasm: &[u8],
        hash: &str,
    ) -> Result<(Arc<Compiled>, bool), RuntimeError> {
        let (compiled, made) = self
            .baseline
            .get_or_make(hash, &self.stats.memory_hits, || {
                let component = Component::new(engine, wasm)
                    .map_err(|e| RuntimeError::Compile(format!("{e:#}")))?;
                self.stats.baseline_compiled.inc();
                self.link(linker, &component, wasm, hash.to_string(), Tier::Baseline)
            })?;
        if made {
            heap::release_free_memory();
        }
        Ok((compiled, made))
    }

    fn load_or_compile(
        &self,
        engine: &Engine,
        linker: &Linker<InstanceState>,
        wasm: &[u8],
        hash: &str,
    ) -> Result<Arc<Compiled>, RuntimeError> {
        let component = match &self.dir {
            Some(dir) => self.through_disk(engine, wasm, &dir.join(format!("{hash}.cwasm")))?,
            None => {
                let component = Component::new(engine, wasm)
                    .map_err(|e| RuntimeError::Compile(format!("{e:#}")))?;
                self.stats.compiled.inc();
                component
            }
        };
        self.link(linker, &component, wasm, hash.to_string(), Tier::Optimized)
    }

    fn link(
        &self,
        linker: &Linker<InstanceState>,
        component: &Component,
        wasm: &[u8],
        hash: String,
        tier: Tier,
    ) -> Result<Arc<Compiled>, RuntimeError> {
        let instance_pre = linker
            .instantiate_pre(component)
            .map_err(|e| RuntimeError::WrongWorld(format!("{e:#}")))?;
        let pre =
            ModelPre::new(instance_pre).map_err(|e| RuntimeError::WrongWorld(format!("{e:#}")))?;
        let range = component.image_range();
        let code_bytes = range.end.addr().saturating_sub(range.start.addr()) as u64;
        Ok(Arc::new(Compiled {
            hash,
            pre,
            code: self.code.charge(code_bytes),
            reads_binary_tensors: declares_binary_tensors(wasm),
            tier,
            optimized: OnceLock::new(),
        }))
    }

    #[allow(unsafe_code)] // See the SAFETY comments: only bytes this host compiled.
    fn through_disk(
        &self,
        engine: &Engine,
        wasm: &[u8],
        path: &Path,
    ) -> Result<Component, RuntimeError> {
        if path.is_file() {
            // SAFETY: `path` lies in a folder that only this user can write
            // (checked by `private_dir`), and every file in it was written by
            // `precompile_component` of an engine with the same compatibility
            // hash; wasmtime checks the header and refuses a mismatch.
            match unsafe { Component::deserialize_file(engine, path) } {
                Ok(component) => {
                    self.stats.disk_hits.inc();
                    return Ok(component);
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "ignoring an unusable cached component")
                }
            }
        }
        let native = engine
            .precompile_component(wasm)
            .map_err(|e| RuntimeError::Compile(format!("{e:#}")))?;
        self.stats.compiled.inc();
        if let Err(error) = write_atomically(path, &native) {
            tracing::warn!(path = %path.display(), %error, "cannot keep the compiled component on disk");
        }
        // SAFETY: these bytes were produced a moment ago by this engine.
        unsafe { Component::deserialize(engine, &native) }
            .map_err(|e| RuntimeError::Compile(format!("{e:#}")))
    }
}

/// Whether any module of the component `wasm` holds the custom section
/// [`mme_oip::READS_BINARY_TENSORS_SECTION`] set to 1. Only section headers
/// are read; a component that does not parse (wasmtime has compiled it, so
/// it does) says nothing.
fn declares_binary_tensors(wasm: &[u8]) -> bool {
    wasmparser::Parser::new(0)
        .parse_all(wasm)
        .map_while(Result::ok)
        .any(|payload| {
            matches!(payload, wasmparser::Payload::CustomSection(section)
                if section.name() == mme_oip::READS_BINARY_TENSORS_SECTION && section.data() == [1])
        })
}

/// The key of a component: the BLAKE3 hash of its bytes, hex.
pub(super) fn hash_of(wasm: &[u8]) -> String {
    blake3::hash(wasm).to_hex().to_string()
}

/// A temporary file in the same folder, renamed over the target: a reader
/// never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Creates `dir` (mode 0700) and checks that this user owns it and that no
/// one else can write to it or to its parent chain up to the cache root.
fn private_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create it: {e}"))?;
    let me = std::fs::metadata("/proc/self")
        .map_err(|e| e.to_string())?
        .uid();
    for folder in [dir, dir.parent().unwrap_or(dir)] {
        let metadata = std::fs::metadata(folder).map_err(|e| e.to_string())?;
        if metadata.uid() != me {
            return Err(format!("{} belongs to another user", folder.display()));
        }
        if metadata.permissions().mode() & 0o022 != 0 {
            return Err(format!("{} is writable by other users", folder.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_declares_binary_tensors_with_a_section_in_any_module() {
        let component = |byte: &str| {
            wat::parse_str(format!(
                r#"(component (core module (@custom "{}" "{byte}")))"#,
                mme_oip::READS_BINARY_TENSORS_SECTION
            ))
            .unwrap()
        };
        assert!(declares_binary_tensors(&component("\\01")));
        assert!(!declares_binary_tensors(&component("\\00")));
        assert!(!declares_binary_tensors(
            &wat::parse_str("(component)").unwrap()
        ));
        assert!(!declares_binary_tensors(b"\0asm not wasm"));
    }

    #[test]
    fn a_folder_others_can_write_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("compiled");
        private_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = private_dir(&dir).unwrap_err();
        assert!(err.contains("writable by other users"), "{err}");
    }
}
