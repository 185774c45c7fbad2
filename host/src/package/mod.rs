//! The `model.tar.gz` format: `model.wasm` (a component of `mme:model/model`),
//! an optional `serving.properties`, and any artifacts beside them.
//!
//! The same loader takes an archive or a folder that is already unpacked
//! (SageMaker extracts packages before it calls `POST /models`).

pub use mme_package::{archive, properties};

use std::io;
use std::path::{Path, PathBuf};

use tempfile::TempDir;
use thiserror::Error;

pub use archive::{ArchiveError, Limits};
pub use properties::{Properties, PropertiesError};

use crate::runtime::{WasmKind, wasm_kind};

/// The component inside every package.
pub const WASM_FILE: &str = "model.wasm";
/// The optional settings file.
pub const PROPERTIES_FILE: &str = "serving.properties";

/// Why a package cannot be used.
#[derive(Debug, Error)]
pub enum PackageError {
    /// The archive was refused.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// `serving.properties` was refused.
    #[error(transparent)]
    Properties(#[from] PropertiesError),
    /// There is no `model.wasm` at the top of the package.
    #[error("the package has no {WASM_FILE} at its top level")]
    MissingWasm,
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
}

impl Package {
    /// Opens `source`: a folder is used in place; a `.tar.gz` file is
    /// unpacked under `unpack_root` within `limits` and removed on drop.
    pub fn open(source: &Path, unpack_root: &Path, limits: &Limits) -> Result<Self, PackageError> {
        let metadata = std::fs::metadata(source)
            .map_err(io_error(format!("cannot read {}", source.display())))?;
        let (dir, unpacked, wasm, unpacked_bytes) = if metadata.is_dir() {
            if !source.join(WASM_FILE).is_file() {
                return Err(PackageError::MissingWasm);
            }
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
            let wasm = unpacked.kept.ok_or(PackageError::MissingWasm)?;
            (
                temp.path().to_path_buf(),
                Some(temp),
                Some(wasm),
                unpacked.written_bytes,
            )
        };
        let properties = match std::fs::read(dir.join(PROPERTIES_FILE)) {
            Ok(bytes) => Properties::parse(&bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Properties::default(),
            Err(e) => return Err(io_error(format!("cannot read {PROPERTIES_FILE}"))(e)),
        };
        Ok(Package {
            dir,
            unpacked_bytes,
            _unpacked: unpacked,
            wasm,
            properties,
        })
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

/// What `mme package` puts in an archive.
pub struct PackageSpec<'a> {
    /// The component's bytes.
    pub wasm: &'a [u8],
    /// Files beside `model.wasm`: their paths on disk, stored under their file names.
    pub artifacts: &'a [PathBuf],
    /// `key=value` lines of `serving.properties`.
    pub properties: &'a [(String, String)],
}

/// Writes a package to `out`, refusing anything `open` would refuse later:
/// a core module, bad properties, artifacts that clash with the reserved names.
pub fn build(spec: &PackageSpec<'_>, out: &Path) -> Result<(), PackageError> {
    check_component(spec.wasm)?;
    let properties_text: String = spec
        .properties
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    let parsed = Properties::parse(properties_text.as_bytes())?;
    if let Some(key) = parsed.unknown_keys.first() {
        return Err(PackageError::Invalid(format!(
            "unknown property {key:?}; known keys are minWorkers, maxWorkers, batch_size, \
             max_batch_delay, max_idle_time, job_queue_size, required_memory_mb, max_memory_mb, \
             request_timeout_ms, engine and option.*"
        )));
    }
    let mut artifacts = Vec::new();
    for path in spec.artifacts {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| PackageError::Invalid(format!("{} has no file name", path.display())))?
            .to_string();
        if name == WASM_FILE || name == PROPERTIES_FILE || artifacts.iter().any(|(n, _)| n == &name)
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
        name: WASM_FILE,
        bytes: spec.wasm,
    }];
    if !spec.properties.is_empty() {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component: the preamble alone.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

    #[test]
    fn build_then_open_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let artifact = dir.path().join("weights.bin");
        std::fs::write(&artifact, b"w").unwrap();
        let out = dir.path().join("m.tar.gz");
        let properties = vec![("batch_size".to_string(), "4".to_string())];
        build(
            &PackageSpec {
                wasm: EMPTY_COMPONENT,
                artifacts: std::slice::from_ref(&artifact),
                properties: &properties,
            },
            &out,
        )
        .unwrap();
        let mut package =
            Package::open(&out, &dir.path().join("unpacked"), &Limits::default()).unwrap();
        assert_eq!(package.properties.batch_size, 4);
        assert_eq!(
            std::fs::read(package.dir().join("weights.bin")).unwrap(),
            b"w"
        );
        assert!(
            !package.dir().join(WASM_FILE).exists(),
            "the component stays in memory"
        );
        assert_eq!(package.take_wasm(1 << 20).unwrap(), EMPTY_COMPONENT);
        let unpacked = package.dir().to_path_buf();
        drop(package);
        assert!(
            !unpacked.exists(),
            "the unpacked copy is removed with the package"
        );
    }

    #[test]
    fn build_refuses_core_modules_bad_properties_and_reserved_names() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.tar.gz");
        let spec = |wasm, artifacts, properties| PackageSpec {
            wasm,
            artifacts,
            properties,
        };
        let core = b"\0asm\x01\x00\x00\x00";
        let err = build(&spec(core, &[], &[]), &out).unwrap_err();
        assert!(err.to_string().contains("core wasm module"), "{err}");
        let bad = [("batch_size".to_string(), "zero".to_string())];
        let err = build(&spec(EMPTY_COMPONENT, &[], &bad), &out).unwrap_err();
        assert!(err.to_string().contains("batch_size"), "{err}");
        let unknown = [("batch_sise".to_string(), "2".to_string())];
        let err = build(&spec(EMPTY_COMPONENT, &[], &unknown), &out).unwrap_err();
        assert!(err.to_string().contains("batch_sise"), "{err}");
        let reserved = dir.path().join(WASM_FILE);
        std::fs::write(&reserved, b"x").unwrap();
        let err = build(&spec(EMPTY_COMPONENT, &[reserved], &[]), &out).unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }

    #[test]
    fn open_reports_a_missing_wasm_and_bad_properties() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("m");
        std::fs::create_dir(&folder).unwrap();
        let err = Package::open(&folder, dir.path(), &Limits::default()).unwrap_err();
        assert!(matches!(err, PackageError::MissingWasm), "{err}");
        std::fs::write(folder.join(WASM_FILE), b"not wasm").unwrap();
        std::fs::write(folder.join(PROPERTIES_FILE), b"batch_size=2\nbatch_size=2").unwrap();
        let err = Package::open(&folder, dir.path(), &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("duplicate key"), "{err}");
        std::fs::remove_file(folder.join(PROPERTIES_FILE)).unwrap();
        let mut package = Package::open(&folder, dir.path(), &Limits::default()).unwrap();
        let err = package.take_wasm(1 << 20).unwrap_err();
        assert!(err.to_string().contains("not WebAssembly"), "{err}");
        let err = package.take_wasm(2).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }
}
