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

pub use archive::{ArchiveError, Limits};
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
                model: ModelFile::Wasm(EMPTY_COMPONENT),
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
            model: ModelFile::Wasm(wasm),
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

    #[test]
    fn a_folder_with_a_fifo_socket_or_device_is_refused_before_anything_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let open = |folder: &Path| Package::open(folder, dir.path(), &Limits::default());
        let folder = |name: &str| {
            let folder = dir.path().join(name);
            std::fs::create_dir_all(folder.join("artifacts")).unwrap();
            std::fs::write(folder.join(WASM_FILE), EMPTY_COMPONENT).unwrap();
            folder
        };
        // A FIFO named as the file the host reads first would block it for good.
        let fifo = folder("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(fifo.join(PROPERTIES_FILE))
            .status()
            .unwrap();
        assert!(made.success());
        let err = open(&fifo).unwrap_err();
        assert!(
            matches!(&err, PackageError::SpecialFile { path, kind: "FIFO" } if path == PROPERTIES_FILE),
            "{err}"
        );
        let socket = folder("socket");
        let _listener = std::os::unix::net::UnixListener::bind(socket.join("artifacts/s")).unwrap();
        let err = open(&socket).unwrap_err();
        assert!(err.to_string().contains("artifacts/s, a socket"), "{err}");
        let device = folder("device");
        std::os::unix::fs::symlink("/dev/zero", device.join("weights.bin")).unwrap();
        let err = open(&device).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        // Symlinks to files and folders are followed and allowed; a loop ends.
        let linked = folder("linked");
        std::os::unix::fs::symlink(linked.join(WASM_FILE), linked.join("copy.wasm")).unwrap();
        std::os::unix::fs::symlink(&linked, linked.join("artifacts/loop")).unwrap();
        open(&linked).unwrap();
        let tight = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        let err = Package::open(&linked, dir.path(), &tight).unwrap_err();
        assert!(err.to_string().contains("more than 2"), "{err}");
    }

    #[test]
    fn onnx_packages_are_found_as_djl_serving_finds_them() {
        let dir = tempfile::tempdir().unwrap();
        let open = |files: &[(&str, &[u8])]| {
            let folder = tempfile::tempdir_in(dir.path()).unwrap();
            for (name, bytes) in files {
                std::fs::write(folder.path().join(name), bytes).unwrap();
            }
            let result = Package::open(folder.path(), dir.path(), &Limits::default());
            result.map(|p| (p.code().clone(), p.load_options()))
        };
        let onnx = |file: &str| ModelCode::Onnx { file: file.into() };
        let (code, options) = open(&[
            ("model.onnx", b"x"),
            (PROPERTIES_FILE, b"engine=OnnxRuntime"),
        ])
        .unwrap();
        assert_eq!(code, onnx("model.onnx"));
        assert_eq!(
            options,
            vec![("model_file".to_string(), "model.onnx".to_string())]
        );
        // No engine key, and the only model file is one .onnx.
        assert_eq!(
            open(&[("iris.onnx", b"x"), ("labels.txt", b"a")])
                .unwrap()
                .0,
            onnx("iris.onnx")
        );
        // option.model_file picks one of several; without it, several are an error.
        let named: &[(&str, &[u8])] = &[
            ("a.onnx", b"x"),
            ("b.onnx", b"x"),
            (PROPERTIES_FILE, b"engine=Onnx\noption.model_file=b.onnx"),
        ];
        let (code, options) = open(named).unwrap();
        assert_eq!(code, onnx("b.onnx"));
        assert_eq!(
            options,
            vec![("model_file".to_string(), "b.onnx".to_string())]
        );
        let err = open(&[("a.onnx", b"x"), ("b.onnx", b"x")]).unwrap_err();
        assert!(err.to_string().contains("option.model_file"), "{err}");
        // A model.wasm wins without an engine key; engine=OnnxRuntime without a file is an error.
        assert_eq!(
            open(&[(WASM_FILE, EMPTY_COMPONENT), ("m.onnx", b"x")])
                .unwrap()
                .0,
            ModelCode::Wasm
        );
        let err = open(&[(PROPERTIES_FILE, b"engine=OnnxRuntime")]).unwrap_err();
        assert!(err.to_string().contains("no model.onnx"), "{err}");
        for hostile in ["../etc/passwd", "/etc/passwd", "..", "missing.onnx"] {
            let properties = format!("engine=OnnxRuntime\noption.model_file={hostile}");
            let err = open(&[
                ("model.onnx", b"x"),
                (PROPERTIES_FILE, properties.as_bytes()),
            ])
            .unwrap_err();
            assert!(
                err.to_string().contains("not a file at the top"),
                "{hostile}: {err}"
            );
        }
    }

    #[test]
    fn an_onnx_package_is_written_with_its_engine() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.tar.gz");
        let spec = PackageSpec {
            model: ModelFile::Onnx(b"\x08\x07onnx bytes"),
            artifacts: &[],
            properties: &[("batch_size".to_string(), "8".to_string())],
        };
        build(&spec, &out).unwrap();
        let package =
            Package::open(&out, &dir.path().join("unpacked"), &Limits::default()).unwrap();
        assert_eq!(
            package.code(),
            &ModelCode::Onnx {
                file: ONNX_FILE.into()
            }
        );
        assert_eq!(package.properties.engine, Some(Engine::Onnx));
        assert_eq!(package.properties.batch_size, 8);
        let wasm_as_onnx = PackageSpec {
            model: ModelFile::Onnx(EMPTY_COMPONENT),
            ..spec
        };
        assert!(build(&wasm_as_onnx, &out).is_err());
        let clash = [("engine".to_string(), "Wasm".to_string())];
        let err = build(
            &PackageSpec {
                properties: &clash,
                ..wasm_as_onnx
            },
            &out,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("WebAssembly") || err.to_string().contains("engine"),
            "{err}"
        );
    }
}
