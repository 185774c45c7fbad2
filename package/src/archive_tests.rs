use super::testing::hostile_archive as hostile;
use super::*;

fn unpack_bytes(bytes: &[u8], limits: &Limits) -> (tempfile::TempDir, Result<(), ArchiveError>) {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    let result = unpack_reader(bytes, &dest, limits, None).map(drop);
    (dir, result)
}

/// Every file under `root`, as relative paths.
fn files_under(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn written_archive_unpacks_to_the_same_files() {
    let mut bytes = Vec::new();
    write(
        &mut bytes,
        &[
            ArchiveFile {
                name: "model.wasm",
                bytes: b"wasm",
            },
            ArchiveFile {
                name: "weights/w.bin",
                bytes: b"123",
            },
        ],
    )
    .unwrap();
    let (dir, result) = unpack_bytes(&bytes, &Limits::default());
    result.unwrap();
    let out = dir.path().join("out");
    assert_eq!(files_under(&out), vec!["model.wasm", "weights/w.bin"]);
    assert_eq!(std::fs::read(out.join("weights/w.bin")).unwrap(), b"123");
}

#[test]
fn a_kept_file_comes_back_in_memory_and_is_not_written() {
    let bytes = hostile(&[
        ("model.wasm", EntryType::Regular, b"component"),
        ("sub/model.wasm", EntryType::Regular, b"artifact"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let kept = unpack_reader(
        &bytes[..],
        dir.path(),
        &Limits::default(),
        Some("model.wasm"),
    );
    let unpacked = kept.unwrap();
    assert_eq!(unpacked.kept, Some(b"component".to_vec()));
    assert_eq!(files_under(dir.path()), vec!["sub/model.wasm"]);
    assert_eq!(unpacked.written_bytes, b"artifact".len() as u64);

    let twice = hostile(&[
        ("model.wasm", EntryType::Regular, b"a"),
        ("./model.wasm", EntryType::Regular, b"b"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let result = unpack_reader(
        &twice[..],
        dir.path(),
        &Limits::default(),
        Some("model.wasm"),
    );
    assert!(
        matches!(result, Err(ArchiveError::DuplicateEntry { .. })),
        "{result:?}"
    );

    let zeros = vec![0u8; 4 << 20];
    let bomb = hostile(&[("model.wasm", EntryType::Regular, &zeros)]);
    let limits = Limits {
        max_unpacked_bytes: 1 << 20,
        ..Limits::default()
    };
    let result = unpack_reader(&bomb[..], dir.path(), &limits, Some("model.wasm"));
    assert!(
        matches!(result, Err(ArchiveError::UnpackedTooLarge { .. })),
        "{result:?}"
    );
}

#[test]
fn traversal_and_absolute_paths_are_refused_and_nothing_escapes() {
    for path in ["../evil", "a/../../evil", "/tmp/evil", "./../evil"] {
        let bytes = hostile(&[(path, EntryType::Regular, b"x")]);
        let (dir, result) = unpack_bytes(&bytes, &Limits::default());
        assert!(
            matches!(result, Err(ArchiveError::UnsafePath { .. })),
            "{path}: {result:?}"
        );
        assert_eq!(files_under(dir.path()), Vec::<String>::new(), "{path}");
    }
}

#[test]
fn links_devices_and_fifos_are_refused() {
    for (kind, word) in [
        (EntryType::Symlink, "symlink"),
        (EntryType::Link, "hardlink"),
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "fifo"),
    ] {
        let bytes = hostile(&[("model.wasm", kind, b"")]);
        let (dir, result) = unpack_bytes(&bytes, &Limits::default());
        let message = result.unwrap_err().to_string();
        assert!(message.contains(word), "{message}");
        assert_eq!(files_under(dir.path()), Vec::<String>::new());
    }
}

#[test]
fn a_gzip_bomb_stops_at_the_unpacked_cap() {
    let zeros = vec![0u8; 8 << 20];
    let bytes = hostile(&[("model.wasm", EntryType::Regular, &zeros)]);
    assert!(bytes.len() < 64 << 10, "the bomb compresses well");
    let limits = Limits {
        max_unpacked_bytes: 1 << 20,
        ..Limits::default()
    };
    let (_dir, result) = unpack_bytes(&bytes, &limits);
    assert!(
        matches!(result, Err(ArchiveError::UnpackedTooLarge { .. })),
        "{result:?}"
    );
}

#[test]
fn too_many_entries_is_refused() {
    let names: Vec<String> = (0..50).map(|i| format!("f{i}")).collect();
    let entries: Vec<_> = names
        .iter()
        .map(|n| (n.as_str(), EntryType::Regular, &b"x"[..]))
        .collect();
    let limits = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    let (_dir, result) = unpack_bytes(&hostile(&entries), &limits);
    assert!(matches!(
        result,
        Err(ArchiveError::TooManyEntries { limit: 10 })
    ));
}

#[test]
fn duplicate_entries_are_refused() {
    let bytes = hostile(&[
        ("model.wasm", EntryType::Regular, b"a"),
        ("./model.wasm", EntryType::Regular, b"b"),
    ]);
    let (_dir, result) = unpack_bytes(&bytes, &Limits::default());
    assert!(
        matches!(result, Err(ArchiveError::DuplicateEntry { .. })),
        "{result:?}"
    );
}

#[test]
fn garbage_and_truncated_archives_are_errors() {
    let (_dir, result) = unpack_bytes(b"definitely not gzip", &Limits::default());
    assert!(matches!(result, Err(ArchiveError::Io { .. })));
    let good = hostile(&[("model.wasm", EntryType::Regular, &[7u8; 4096])]);
    let (_dir, result) = unpack_bytes(&good[..good.len() / 2], &Limits::default());
    assert!(matches!(result, Err(ArchiveError::Io { .. })), "{result:?}");
}

/// Runs `unpack` on `bytes` written to a file: the path that inflates in one call.
fn unpack_file(bytes: &[u8], limits: &Limits) -> (tempfile::TempDir, Result<(), ArchiveError>) {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("p.tar.gz");
    std::fs::write(&archive, bytes).unwrap();
    let dest = dir.path().join("out");
    std::fs::create_dir(&dest).unwrap();
    let result = unpack(&archive, &dest, limits);
    (dir, result)
}

#[test]
fn the_one_shot_path_enforces_the_same_caps() {
    let (dir, result) = unpack_file(
        &hostile(&[("../evil", EntryType::Regular, b"x")]),
        &Limits::default(),
    );
    assert!(
        matches!(result, Err(ArchiveError::UnsafePath { .. })),
        "{result:?}"
    );
    assert_eq!(files_under(dir.path()), vec!["p.tar.gz"]);

    let zeros = vec![0u8; 8 << 20];
    let bomb = hostile(&[("model.wasm", EntryType::Regular, &zeros)]);
    let limits = Limits {
        max_unpacked_bytes: 1 << 20,
        ..Limits::default()
    };
    let (_dir, result) = unpack_file(&bomb, &limits);
    assert!(
        matches!(result, Err(ArchiveError::UnpackedTooLarge { .. })),
        "{result:?}"
    );
}

#[test]
fn a_lying_size_trailer_falls_back_to_streaming() {
    let mut bytes = hostile(&[("weights.bin", EntryType::Regular, &[7u8; 5000])]);
    let end = bytes.len();
    bytes[end - 4..].copy_from_slice(&10u32.to_le_bytes());
    let (dir, result) = unpack_file(&bytes, &Limits::default());
    match result {
        Ok(()) => assert_eq!(
            std::fs::read(dir.path().join("out/weights.bin")).unwrap(),
            vec![7u8; 5000]
        ),
        Err(error) => assert!(matches!(error, ArchiveError::Io { .. }), "{error:?}"),
    }
    let (_dir, result) = unpack_file(&[0x1f, 0x8b], &Limits::default());
    assert!(matches!(result, Err(ArchiveError::Io { .. })), "{result:?}");
}

#[test]
fn an_oversized_archive_file_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.tar.gz");
    std::fs::write(&path, vec![0u8; 2048]).unwrap();
    let limits = Limits {
        max_compressed_bytes: 1024,
        ..Limits::default()
    };
    let result = unpack(&path, dir.path(), &limits);
    assert!(matches!(
        result,
        Err(ArchiveError::TooLarge {
            size: 2048,
            limit: 1024
        })
    ));
}
