//! Any bytes, unpacked as a `model.tar.gz`: the unpacker either refuses
//! them with an error or writes only plain files and folders inside the
//! destination, within the caps.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mme_package::archive::{Limits, unpack_keeping};

/// Small caps, so that a bomb is caught quickly and the fuzzer stays fast.
const LIMITS: Limits = Limits {
    max_compressed_bytes: 1 << 20,
    max_unpacked_bytes: 4 << 20,
    max_entries: 256,
};

fuzz_target!(|data: &[u8]| {
    let Ok(work) = tempfile::tempdir() else {
        return;
    };
    let archive = work.path().join("model.tar.gz");
    let dest = work.path().join("unpacked");
    if std::fs::write(&archive, data).is_err() || std::fs::create_dir(&dest).is_err() {
        return;
    }
    let result = unpack_keeping(&archive, &dest, &LIMITS, Some("model.wasm"));

    // Whatever happened, nothing appeared beside the destination...
    let mut beside: Vec<_> = std::fs::read_dir(work.path())
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default();
    beside.sort();
    assert_eq!(beside, ["model.tar.gz", "unpacked"], "an entry escaped");
    // ...and inside it there are only plain files and folders, within the cap.
    let on_disk = plain_bytes_under(&dest);
    assert!(
        on_disk <= LIMITS.max_unpacked_bytes,
        "{on_disk} bytes unpacked"
    );
    if let Ok(unpacked) = result {
        assert_eq!(
            unpacked.written_bytes, on_disk,
            "the count is what is on disk"
        );
        let kept = unpacked.kept.map_or(0, |bytes| bytes.len() as u64);
        assert!(kept + on_disk <= LIMITS.max_unpacked_bytes);
    }
});

/// The bytes of the files under `dir`; panics on anything but a file or a folder.
fn plain_bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.filter_map(|e| e.ok()) {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            total += plain_bytes_under(&entry.path());
        } else {
            assert!(
                kind.is_file(),
                "{:?} is neither a file nor a folder",
                entry.path()
            );
            total += entry.metadata().map_or(0, |m| m.len());
        }
    }
    total
}
