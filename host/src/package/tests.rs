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
    let package = Package::open(&out, &dir.path().join("unpacked"), &Limits::default()).unwrap();
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
