//! The `model.tar.gz` format: `model.wasm` (a component of `mme:model/model`),
//! an optional `serving.properties`, and any artifacts beside them.
//!
//! The same loader takes an archive or a folder that is already unpacked
//! (SageMaker extracts packages before it calls `POST /models`).

pub use mme_package::{archive, properties};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::TempDir;
use thiserror::Error;

mod build;

pub use archive::{ArchiveError, Limits};
pub use build::{ModelFile, PackageSpec, build};
pub use properties::{Engine, Properties, PropertiesError};

use crate::runtime::{Compiled, Runtime, RuntimeError, WasmKind, wasm_kind};

/// The component inside every package.
pub const WASM_FILE: &str = "model.wasm";
/// The optional settings file.
pub const PROPERTIES_FILE: &str = "serving.properties";
/// The ONNX model file of a package that the built-in engine runs.
pub const ONNX_FILE: &str = "model.onnx";

/// Why a package cannot be used.
#[derive(Debug, Error)]
pub enum PackageError {
    /// The archive was refused.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// `serving.properties` was refused.
    #[error(transparent)]
    Properties(#[from] PropertiesError),
    /// There is no `model.wasm` at the top of the package (nor an ONNX model).
    #[error(
        "the package has no {WASM_FILE} at its top level, and no .onnx model file for the built-in ONNX engine"
    )]
    MissingWasm,
    /// The package is for the ONNX engine, but which `.onnx` file is unclear.
    #[error("{0}")]
    OnnxFile(String),
    /// `model.wasm` is not a component.
    #[error("{WASM_FILE} is {0}; build the model for wasm32-wasip2 with the mme-guest SDK")]
    NotAComponent(&'static str),
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
    /// What `mme package` was asked to write is not a valid package.
    #[error("{0}")]
    Invalid(String),
    /// A folder package holds a FIFO, a socket or a device, which would
    /// block whoever reads it (the host's loader or the guest's file call)
    /// past any deadline; an archive cannot hold one either.
    #[error(
        "the package holds {path}, a {kind}; a package may hold only regular files and folders"
    )]
    SpecialFile {
        /// Its path inside the package.
        path: String,
        /// What it is.
        kind: &'static str,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> PackageError {
    let context = context.into();
    move |source| PackageError::Io { context, source }
}

/// A package ready to load: a folder on disk and its parsed settings.
#[derive(Debug)]
pub struct Package {
    dir: PathBuf,
    /// Set when this package unpacked an archive: the copy is removed with it.
    _unpacked: Option<TempDir>,
    /// What the unpacked files occupy; 0 for a folder used in place.
    unpacked_bytes: u64,
    /// `model.wasm` of an archive, kept in memory until taken: it is hashed
    /// and compiled, never read by the guest, so it is never written.
    wasm: Option<Vec<u8>>,
    /// The validated `serving.properties` (defaults when absent).
    pub properties: Properties,
    /// What runs the model.
    code: ModelCode,
}

/// What runs a package's model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelCode {
    /// Its own `model.wasm`.
    Wasm,
    /// The built-in ONNX engine, on this file at the top of the package.
    Onnx {
        /// The `.onnx` file's name.
        file: String,
    },
}

impl Package {
    /// Opens `source`: a folder is used in place; a `.tar.gz` file is
    /// unpacked under `unpack_root` within `limits` and removed on drop.
    pub fn open(source: &Path, unpack_root: &Path, limits: &Limits) -> Result<Self, PackageError> {
        let metadata = std::fs::metadata(source)
            .map_err(io_error(format!("cannot read {}", source.display())))?;
        let (dir, unpacked, wasm, unpacked_bytes) = if metadata.is_dir() {
            check_folder(source, limits)?;
            (source.to_path_buf(), None, None, 0)
        } else {
            std::fs::create_dir_all(unpack_root)
                .map_err(io_error(format!("cannot create {}", unpack_root.display())))?;
            let temp = tempfile::Builder::new()
                .prefix("model-")
                .tempdir_in(unpack_root)
                .map_err(io_error(format!(
                    "cannot create a folder in {}",
                    unpack_root.display()
                )))?;
            let unpacked = archive::unpack_keeping(source, temp.path(), limits, Some(WASM_FILE))?;
            (
                temp.path().to_path_buf(),
                Some(temp),
                unpacked.kept,
                unpacked.written_bytes,
            )
        };
        let properties = match std::fs::read(dir.join(PROPERTIES_FILE)) {
            Ok(bytes) => Properties::parse(&bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Properties::default(),
            Err(e) => return Err(io_error(format!("cannot read {PROPERTIES_FILE}"))(e)),
        };
        let has_wasm = wasm.is_some() || dir.join(WASM_FILE).is_file();
        let code = model_code(&dir, &properties, has_wasm)?;
        Ok(Package {
            dir,
            unpacked_bytes,
            _unpacked: unpacked,
            wasm,
            properties,
            code,
        })
    }

    /// What runs the model: its own `model.wasm` or the ONNX engine.
    pub fn code(&self) -> &ModelCode {
        &self.code
    }

    /// The folder the guest sees as `/model`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bytes of the files this package unpacked (0 for a folder used in place).
    pub fn unpacked_bytes(&self) -> u64 {
        self.unpacked_bytes
    }

    /// Takes `model.wasm` (from memory for an archive, from the folder
    /// otherwise) and checks that it is a component. It is not kept: once
    /// compiled, only its hash matters. A second call finds nothing.
    pub fn take_wasm(&mut self, max_bytes: u64) -> Result<Vec<u8>, PackageError> {
        let bytes = match self.wasm.take() {
            Some(bytes) => bytes,
            None => {
                let path = self.dir.join(WASM_FILE);
                let size = std::fs::metadata(&path)
                    .map_err(io_error(format!("cannot read {WASM_FILE}")))?
                    .len();
                if size > max_bytes {
                    return Err(too_large(size, max_bytes));
                }
                std::fs::read(&path).map_err(io_error(format!("cannot read {WASM_FILE}")))?
            }
        };
        if bytes.len() as u64 > max_bytes {
            return Err(too_large(bytes.len() as u64, max_bytes));
        }
        check_component(&bytes)?;
        Ok(bytes)
    }
}

/// Refuses a folder that holds more entries than an archive may, or
/// anything but regular files and folders, symlinks followed (a symlink to
/// `/dev/zero` is a device). Symlinked folders are not entered: the guest
/// cannot follow a symlink out of the package, and a loop would not end.
fn check_folder(dir: &Path, limits: &Limits) -> Result<(), PackageError> {
    let entries = walkdir::WalkDir::new(dir).min_depth(1).follow_links(false);
    for (count, entry) in entries.into_iter().enumerate() {
        if count >= limits.max_entries {
            return Err(PackageError::Invalid(format!(
                "the package folder holds more than {} files and folders",
                limits.max_entries
            )));
        }
        let entry = entry.map_err(|e| PackageError::Io {
            context: format!("cannot list {}", dir.display()),
            source: e.into(),
        })?;
        let path = entry.path();
        let inside = path.strip_prefix(dir).unwrap_or(path).display().to_string();
        let kind = std::fs::metadata(path)
            .map_err(io_error(format!("cannot read {inside} in the package")))?
            .file_type();
        if !kind.is_file() && !kind.is_dir() {
            return Err(PackageError::SpecialFile {
                path: inside,
                kind: special_kind(kind),
            });
        }
    }
    Ok(())
}

/// What a file that is neither a regular file nor a folder is.
fn special_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

/// Decides what runs a package, as DJL Serving does: `engine` when the
/// properties name one; otherwise `model.wasm`, or else the one `.onnx` file.
/// `option.model_file` names the ONNX file when there are several.
fn model_code(
    dir: &Path,
    properties: &Properties,
    has_wasm: bool,
) -> Result<ModelCode, PackageError> {
    match (properties.engine, has_wasm) {
        (Some(Engine::Wasm), false) => return Err(PackageError::MissingWasm),
        (Some(Engine::Wasm), true) | (None, true) => return Ok(ModelCode::Wasm),
        (Some(Engine::Onnx), _) | (None, false) => {}
    }
    let named = properties
        .options
        .iter()
        .find(|(key, _)| key == "model_file")
        .map(|(_, value)| value.clone());
    let file = match named {
        Some(name) => {
            let plain = !name.is_empty()
                && !name.contains('/')
                && name != ".."
                && name != "."
                && dir.join(&name).is_file();
            if !plain {
                return Err(PackageError::OnnxFile(format!(
                    "option.model_file={name:?} is not a file at the top of the package"
                )));
            }
            name
        }
        None if dir.join(ONNX_FILE).is_file() => ONNX_FILE.to_string(),
        None => {
            let mut found: Vec<String> = std::fs::read_dir(dir)
                .map_err(io_error(format!("cannot list {}", dir.display())))?
                .filter_map(Result::ok)
                .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|entry| entry.file_name().into_string().ok())
                .filter(|name| name.ends_with(".onnx"))
                .collect();
            found.sort();
            match found.len() {
                0 if properties.engine.is_none() => return Err(PackageError::MissingWasm),
                0 => {
                    return Err(PackageError::OnnxFile(format!(
                        "engine=OnnxRuntime, but the package has no {ONNX_FILE} (or other .onnx file)"
                    )));
                }
                1 => found.remove(0),
                _ => {
                    return Err(PackageError::OnnxFile(format!(
                        "the package has {} .onnx files ({}); name one with option.model_file",
                        found.len(),
                        found.join(", ")
                    )));
                }
            }
        }
    };
    Ok(ModelCode::Onnx { file })
}

/// Why a package's code could not be made ready to run.
#[derive(Debug, Error)]
pub enum CodeError {
    /// The package is at fault: its author must fix it.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// `model.wasm` does not compile or is of another world.
    #[error(transparent)]
    Invalid(RuntimeError),
    /// The server is at fault (a built-in engine is missing).
    #[error(transparent)]
    Server(RuntimeError),
}

impl Package {
    /// The compiled component that runs this package's model: its own
    /// `model.wasm` (compiled once per distinct bytes), or the ONNX engine
    /// that every ONNX model shares.
    pub fn compile(
        &mut self,
        runtime: &Arc<Runtime>,
        max_wasm_bytes: u64,
    ) -> Result<Arc<Compiled>, CodeError> {
        match &self.code {
            ModelCode::Wasm => {
                let wasm = self.take_wasm(max_wasm_bytes)?;
                runtime.prepare(&wasm).map_err(CodeError::Invalid)
            }
            ModelCode::Onnx { .. } => runtime.onnx_engine().map_err(CodeError::Server),
        }
    }

    /// The settings the guest's `load` gets: the `option.*` entries, and for
    /// the ONNX engine the model file it found when none was named.
    pub fn load_options(&self) -> Vec<(String, String)> {
        let mut options = self.properties.options.clone();
        if let ModelCode::Onnx { file } = &self.code
            && !options.iter().any(|(key, _)| key == "model_file")
        {
            options.push(("model_file".into(), file.clone()));
        }
        options
    }
}

fn too_large(size: u64, limit: u64) -> PackageError {
    PackageError::Invalid(format!("{WASM_FILE} is {size} bytes; the limit is {limit}"))
}

fn check_component(wasm: &[u8]) -> Result<(), PackageError> {
    match wasm_kind(wasm) {
        WasmKind::Component => Ok(()),
        WasmKind::CoreModule => Err(PackageError::NotAComponent(
            "a core wasm module, not a component",
        )),
        WasmKind::NotWasm => Err(PackageError::NotAComponent("not WebAssembly")),
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
