//! The `model.tar.gz` archive: writing one, and unpacking an untrusted one.
//!
//! Unpacking accepts only plain files and folders at relative paths, and
//! counts every byte it writes, so that traversal, links, devices and
//! decompression bombs all end in an error before they touch anything
//! outside the destination.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use tar::EntryType;
use thiserror::Error;

/// Archives (compressed and inflated) up to this size are inflated in one
/// call rather than streamed: a typical model package is well under it.
const ONE_SHOT_MAX_BYTES: u64 = 64 << 20;

/// The most memory reserved up front for a file kept in memory; a larger
/// file grows its buffer as its bytes actually arrive.
const MAX_PREALLOCATION: u64 = 64 << 20;

/// Caps that bound what one archive may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest archive file accepted, in bytes.
    pub max_compressed_bytes: u64,
    /// Largest total of unpacked file sizes, in bytes.
    pub max_unpacked_bytes: u64,
    /// Most entries (files and folders) accepted.
    pub max_entries: usize,
}

impl Default for Limits {
    /// Generous for wasm models (a large one is tens of MB), small enough that a bomb fails fast.
    fn default() -> Self {
        Limits {
            max_compressed_bytes: 1 << 30,
            max_unpacked_bytes: 4 << 30,
            max_entries: 10_000,
        }
    }
}

/// Why an archive was refused; each names the entry where one is at fault.
#[derive(Debug, Error)]
pub enum ArchiveError {
    /// Reading or writing failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
    /// The archive file is over [`Limits::max_compressed_bytes`].
    #[error("the archive is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// Unpacking would write more than [`Limits::max_unpacked_bytes`].
    #[error("the archive unpacks to more than {limit} bytes (a decompression bomb?)")]
    UnpackedTooLarge {
        /// The cap.
        limit: u64,
    },
    /// More than [`Limits::max_entries`] entries.
    #[error("the archive has more than {limit} entries")]
    TooManyEntries {
        /// The cap.
        limit: usize,
    },
    /// An absolute path, `..`, or an unreadable name.
    #[error("entry {path:?} has an unsafe path: {reason}")]
    UnsafePath {
        /// The path as stored.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A symlink, hardlink, device, fifo or other non-plain entry.
    #[error("entry {path:?} is a {kind}; only plain files and folders are allowed")]
    UnsupportedEntry {
        /// The path as stored.
        path: String,
        /// What kind of entry it is.
        kind: String,
    },
    /// The same file twice.
    #[error("entry {path:?} appears twice")]
    DuplicateEntry {
        /// The path as stored.
        path: String,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError {
    let context = context.into();
    move |source| ArchiveError::Io { context, source }
}

/// What an unpack produced.
#[derive(Debug, Default)]
pub struct Unpacked {
    /// The file that was asked to be kept in memory, if the archive had it.
    pub kept: Option<Vec<u8>>,
    /// The bytes written to files under the destination (the kept file excluded):
    /// what the unpacked package occupies, without walking it again.
    pub written_bytes: u64,
}

/// Unpacks the gzipped tar at `archive` into `dest`, which must exist and be empty.
pub fn unpack(archive: &Path, dest: &Path, limits: &Limits) -> Result<(), ArchiveError> {
    unpack_keeping(archive, dest, limits, None).map(drop)
}

/// Unpacks like [`unpack`], except that the top-level file named `keep` is
/// returned in memory instead of written: a file the host reads once (the
/// component) costs no disk write and no read back.
pub fn unpack_keeping(
    archive: &Path,
    dest: &Path,
    limits: &Limits,
    keep: Option<&str>,
) -> Result<Unpacked, ArchiveError> {
    let file =
        File::open(archive).map_err(io_error(format!("cannot open {}", archive.display())))?;
    let size = file
        .metadata()
        .map_err(io_error("cannot read the archive's size"))?
        .len();
    if size > limits.max_compressed_bytes {
        return Err(ArchiveError::TooLarge {
            size,
            limit: limits.max_compressed_bytes,
        });
    }
    if size > ONE_SHOT_MAX_BYTES {
        return unpack_reader(io::BufReader::new(file), dest, limits, keep);
    }
    let mut compressed = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    (&file)
        .take(ONE_SHOT_MAX_BYTES + 1)
        .read_to_end(&mut compressed)
        .map_err(io_error(format!("cannot read {}", archive.display())))?;
    match inflate_whole(&compressed) {
        Some(tar) => unpack_tar(tar::Archive::new(&tar[..]), dest, limits, keep),
        None => unpack_reader(&compressed[..], dest, limits, keep),
    }
}

/// Inflates a small gzip stream in one call, which is several times faster
/// than streaming, or returns `None` so that the caller streams instead: the
/// streaming path is the one that enforces the caps on hostile input, and
/// the one-shot path only ever runs within [`ONE_SHOT_MAX_BYTES`].
fn inflate_whole(gzip: &[u8]) -> Option<Vec<u8>> {
    // The gzip trailer's last four bytes are the inflated size (mod 2^32); a
    // lie only makes the call fail, since the output buffer is sized by it.
    let trailer: [u8; 4] = gzip.get(gzip.len().checked_sub(4)?..)?.try_into().ok()?;
    let inflated = u64::from(u32::from_le_bytes(trailer));
    if inflated > ONE_SHOT_MAX_BYTES {
        return None;
    }
    let mut out = vec![0u8; usize::try_from(inflated).ok()?];
    let written = libdeflater::Decompressor::new()
        .gzip_decompress(gzip, &mut out)
        .ok()?;
    (written == out.len()).then_some(out)
}

/// Unpacks a gzipped tar stream into `dest`, keeping the top-level file
/// `keep` in memory; the caps apply as in [`unpack`].
pub fn unpack_reader(
    reader: impl Read,
    dest: &Path,
    limits: &Limits,
    keep: Option<&str>,
) -> Result<Unpacked, ArchiveError> {
    unpack_tar(
        tar::Archive::new(GzDecoder::new(reader)),
        dest,
        limits,
        keep,
    )
}

/// Unpacks an inflated tar stream; see [`unpack_reader`].
fn unpack_tar<R: Read>(
    mut archive: tar::Archive<R>,
    dest: &Path,
    limits: &Limits,
    keep: Option<&str>,
) -> Result<Unpacked, ArchiveError> {
    let mut kept: Option<Vec<u8>> = None;
    let mut written: u64 = 0;
    let mut written_to_files: u64 = 0;
    let entries = archive
        .entries()
        .map_err(io_error("not a gzipped tar archive"))?;
    for (index, entry) in entries.enumerate() {
        if index >= limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let mut entry = entry.map_err(io_error("the archive is corrupt or not a gzipped tar"))?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        match kind {
            EntryType::XGlobalHeader => continue,
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
            other => {
                return Err(ArchiveError::UnsupportedEntry {
                    path: raw_path,
                    kind: describe(other),
                });
            }
        }
        let relative = safe_relative_path(&raw_path)?;
        let Some(relative) = relative else { continue };
        let target = dest.join(&relative);
        if kind == EntryType::Directory {
            std::fs::create_dir_all(&target)
                .map_err(io_error(format!("cannot create folder {raw_path:?}")))?;
            continue;
        }
        let remaining = limits.max_unpacked_bytes.saturating_sub(written);
        if entry.size() > remaining {
            return Err(ArchiveError::UnpackedTooLarge {
                limit: limits.max_unpacked_bytes,
            });
        }
        // The header's size is checked above, but the stream is what counts.
        let mut limited = (&mut entry).take(remaining + 1);
        let kept_in_memory = keep.is_some_and(|name| relative == Path::new(name));
        let copied = if kept_in_memory {
            if kept.is_some() {
                return Err(ArchiveError::DuplicateEntry { path: raw_path });
            }
            // The header's size is untrusted: it sizes the buffer only up to a point.
            let hint = usize::try_from(limited.limit().min(MAX_PREALLOCATION)).unwrap_or(0);
            let mut bytes = Vec::with_capacity(hint);
            limited
                .read_to_end(&mut bytes)
                .map_err(io_error(format!("cannot unpack {raw_path:?}")))?;
            let copied = bytes.len() as u64;
            kept = Some(bytes);
            copied
        } else {
            if let Some(parent) = target.parent().filter(|parent| *parent != dest) {
                std::fs::create_dir_all(parent).map_err(io_error(format!(
                    "cannot create the folder of {raw_path:?}"
                )))?;
            }
            let mut out = match File::create_new(&target) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(ArchiveError::DuplicateEntry { path: raw_path });
                }
                Err(e) => return Err(io_error(format!("cannot create {raw_path:?}"))(e)),
            };
            io::copy(&mut limited, &mut out)
                .map_err(io_error(format!("cannot unpack {raw_path:?}")))?
        };
        if copied > remaining {
            return Err(ArchiveError::UnpackedTooLarge {
                limit: limits.max_unpacked_bytes,
            });
        }
        written += copied;
        if !kept_in_memory {
            written_to_files += copied;
        }
    }
    Ok(Unpacked {
        kept,
        written_bytes: written_to_files,
    })
}

/// The path of an entry inside the destination, or `None` for the root itself (`./`).
fn safe_relative_path(raw: &str) -> Result<Option<PathBuf>, ArchiveError> {
    let unsafe_path = |reason| ArchiveError::UnsafePath {
        path: raw.to_string(),
        reason,
    };
    if raw.contains('\0') {
        return Err(unsafe_path("it contains a NUL byte"));
    }
    let mut relative = PathBuf::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_path("it contains `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_path("it is absolute"));
            }
        }
    }
    Ok((!relative.as_os_str().is_empty()).then_some(relative))
}

fn describe(kind: EntryType) -> String {
    match kind {
        EntryType::Symlink => "symlink".into(),
        EntryType::Link => "hardlink".into(),
        EntryType::Char => "character device".into(),
        EntryType::Block => "block device".into(),
        EntryType::Fifo => "fifo".into(),
        other => format!("{other:?} entry"),
    }
}

/// One file to put in an archive: its name inside, and its bytes.
pub struct ArchiveFile<'a> {
    /// Relative path inside the archive.
    pub name: &'a str,
    /// Contents.
    pub bytes: &'a [u8],
}

/// Writes a gzipped tar of `files` to `out`, with fixed owners, modes and
/// times, so the same inputs always give the same archive.
pub fn write(out: impl Write, files: &[ArchiveFile<'_>]) -> io::Result<()> {
    let mut builder = tar::Builder::new(GzEncoder::new(out, Compression::default()));
    for file in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(EntryType::Regular);
        header.set_size(file.bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        builder.append_data(&mut header, file.name, file.bytes)?;
    }
    builder.into_inner()?.finish()?.flush()
}

/// Archives that a well-behaved builder refuses to write, for the tests of
/// the unpacker and of everything that takes packages.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::*;

    /// A gzipped tar whose headers say exactly what they are told to, paths
    /// and link targets (`/etc/passwd`) included: what a hostile packager writes.
    pub fn hostile_archive(entries: &[(&str, EntryType, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for (path, kind, bytes) in entries {
            let mut header = tar::Header::new_old();
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(*kind);
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            if matches!(kind, EntryType::Symlink | EntryType::Link) {
                header
                    .set_link_name("/etc/passwd")
                    .expect("a short link name");
            }
            header.set_cksum();
            builder
                .append(&header, *bytes)
                .expect("writing to memory succeeds");
        }
        builder
            .into_inner()
            .and_then(|gzip| gzip.finish())
            .expect("writing to memory succeeds")
    }
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
