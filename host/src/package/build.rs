//! Writing a package, as `mme package` does: refused here for anything
//! that opening it would refuse later.

use std::io;
use std::path::{Path, PathBuf};

use super::{
    Engine, ONNX_FILE, PROPERTIES_FILE, PackageError, Properties, WASM_FILE, archive,
    check_component, io_error,
};
use crate::runtime::{WasmKind, wasm_kind};

/// The model file of a package that `mme package` writes.
#[derive(Debug, Clone, Copy)]
pub enum ModelFile<'a> {
    /// A component's bytes, stored as `model.wasm`.
    Wasm(&'a [u8]),
    /// An ONNX model's bytes, stored as `model.onnx` for the built-in engine.
    Onnx(&'a [u8]),
}

/// What `mme package` puts in an archive.
pub struct PackageSpec<'a> {
    /// The model: a component, or an ONNX file.
    pub model: ModelFile<'a>,
    /// Files beside `model.wasm`: their paths on disk, stored under their file names.
    pub artifacts: &'a [PathBuf],
    /// `key=value` lines of `serving.properties`.
    pub properties: &'a [(String, String)],
}

/// Writes a package to `out`, refusing anything `open` would refuse later:
/// a core module, bad properties, artifacts that clash with the reserved names.
pub fn build(spec: &PackageSpec<'_>, out: &Path) -> Result<(), PackageError> {
    let mut properties = spec.properties.to_vec();
    let (model_name, model_bytes) = match spec.model {
        ModelFile::Wasm(wasm) => {
            check_component(wasm)?;
            (WASM_FILE, wasm)
        }
        ModelFile::Onnx(onnx) => {
            if onnx.is_empty() || wasm_kind(onnx) != WasmKind::NotWasm {
                return Err(PackageError::Invalid(
                    "the ONNX file is empty or is WebAssembly; pass a component with --wasm".into(),
                ));
            }
            if !properties.iter().any(|(key, _)| key == "engine") {
                properties.insert(0, ("engine".into(), "OnnxRuntime".into()));
            }
            (ONNX_FILE, onnx)
        }
    };
    let properties_text: String = properties
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    let parsed = Properties::parse(properties_text.as_bytes())?;
    if let Some(key) = parsed.unknown_keys.first() {
        return Err(PackageError::Invalid(format!(
            "unknown property {key:?}; known keys are minWorkers, maxWorkers, batch_size, \
             max_batch_delay, max_idle_time, job_queue_size, required_memory_mb, max_memory_mb, \
             request_timeout_ms, model_loading_timeout, engine and option.*"
        )));
    }
    let wasm_package = matches!(spec.model, ModelFile::Wasm(_));
    if parsed.engine == Some(Engine::Onnx) && wasm_package
        || parsed.engine == Some(Engine::Wasm) && !wasm_package
    {
        return Err(PackageError::Invalid(
            "the engine property does not match the model file (--wasm is engine=Wasm, --onnx engine=OnnxRuntime)".into(),
        ));
    }
    let mut artifacts = Vec::new();
    for path in spec.artifacts {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| PackageError::Invalid(format!("{} has no file name", path.display())))?
            .to_string();
        if name == WASM_FILE
            || name == PROPERTIES_FILE
            || name == model_name
            || artifacts.iter().any(|(n, _)| n == &name)
        {
            return Err(PackageError::Invalid(format!(
                "artifact name {name:?} is used twice or is reserved"
            )));
        }
        let bytes =
            std::fs::read(path).map_err(io_error(format!("cannot read {}", path.display())))?;
        artifacts.push((name, bytes));
    }
    let mut files = vec![archive::ArchiveFile {
        name: model_name,
        bytes: model_bytes,
    }];
    if !properties.is_empty() {
        files.push(archive::ArchiveFile {
            name: PROPERTIES_FILE,
            bytes: properties_text.as_bytes(),
        });
    }
    files.extend(
        artifacts
            .iter()
            .map(|(name, bytes)| archive::ArchiveFile { name, bytes }),
    );
    let file =
        std::fs::File::create(out).map_err(io_error(format!("cannot create {}", out.display())))?;
    archive::write(io::BufWriter::new(file), &files)
        .map_err(io_error(format!("cannot write {}", out.display())))
}
