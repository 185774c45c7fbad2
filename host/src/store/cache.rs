//! Downloaded packages, kept on local disk under a size cap, so that a
//! model evicted from memory loads again without a download.
//!
//! Each package is `<key>.tar.gz` with a `<key>.json` record of its url,
//! size and ETag, where `<key>` is a hash of the url. A download goes to a
//! temporary file that is renamed only once it is complete and checked, so
//! a broken download never leaves a file that looks whole. Packages are
//! treated as immutable, as SageMaker treats its model artifacts: to change
//! a model, upload it under a new name.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tempfile::NamedTempFile;

/// A package used this recently is not pruned: its load may be opening it.
const IN_USE_GRACE: Duration = Duration::from_secs(60);

/// The record kept beside each package.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    url: String,
    size: u64,
    etag: Option<String>,
}

struct Entry {
    record: Record,
    last_used: Instant,
}

/// The package cache folder and its index.
pub struct PackageCache {
    dir: PathBuf,
    cap: u64,
    entries: Mutex<HashMap<String, Entry>>,
}

impl PackageCache {
    /// Opens (or creates) the cache in `dir`, holding at most `cap` bytes.
    /// Leftover temporary files and packages without a valid record (a
    /// crash in the middle of a download) are removed.
    pub fn open(dir: &Path, cap: u64) -> io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut entries = HashMap::new();
        let mut stray = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let path = item?.path();
            let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(key) = file.strip_suffix(".json") {
                let package = dir.join(format!("{key}.tar.gz"));
                match read_record(&path, &package) {
                    Some(record) => {
                        let entry = Entry {
                            record,
                            last_used: Instant::now(),
                        };
                        entries.insert(key.to_string(), entry);
                    }
                    None => stray.extend([path.clone(), package]),
                }
            } else if !file.ends_with(".tar.gz") {
                stray.push(path);
            }
        }
        for item in std::fs::read_dir(dir)? {
            let path = item?.path();
            let key = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".tar.gz"));
            if key.is_some_and(|key| !entries.contains_key(key)) {
                stray.push(path);
            }
        }
        for path in stray {
            let _ = std::fs::remove_file(path);
        }
        let cache = PackageCache {
            dir: dir.to_path_buf(),
            cap,
            entries: Mutex::new(entries),
        };
        cache.prune("");
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached package of `url`, if there is one whose size is still
    /// what was downloaded.
    pub fn lookup(&self, url: &str) -> Option<PathBuf> {
        let key = key_of(url);
        let path = self.package_path(&key);
        let mut entries = self.lock();
        let entry = entries.get_mut(&key)?;
        let intact = std::fs::metadata(&path).is_ok_and(|m| m.len() == entry.record.size);
        if !intact {
            tracing::warn!(
                url,
                "a cached package changed on disk; downloading it again"
            );
            entries.remove(&key);
            drop(entries);
            self.remove_files(&key);
            return None;
        }
        entry.last_used = Instant::now();
        Some(path)
    }

    /// A temporary file in the cache folder, for a download.
    pub fn temp_file(&self) -> io::Result<NamedTempFile> {
        tempfile::Builder::new()
            .prefix(".download-")
            .tempfile_in(&self.dir)
    }

    /// Keeps a complete, checked download as the package of `url`, then
    /// prunes the least recently used packages over the cap.
    pub fn insert(
        &self,
        url: &str,
        download: NamedTempFile,
        size: u64,
        etag: Option<String>,
    ) -> io::Result<PathBuf> {
        let key = key_of(url);
        let path = self.package_path(&key);
        download.as_file().sync_all()?;
        download.persist(&path).map_err(|e| e.error)?;
        let record = Record {
            url: url.to_string(),
            size,
            etag,
        };
        let mut temp = self.temp_file()?;
        serde_json::to_writer(&mut temp, &record).map_err(io::Error::other)?;
        temp.persist(self.dir.join(format!("{key}.json")))
            .map_err(|e| e.error)?;
        self.lock().insert(
            key.clone(),
            Entry {
                record,
                last_used: Instant::now(),
            },
        );
        self.prune(&key);
        Ok(path)
    }

    /// Forgets the package of `url`: it downloaded whole but is not a
    /// package that loads, so it must not be served from the cache.
    pub fn discard(&self, url: &str) {
        let key = key_of(url);
        if self.lock().remove(&key).is_some() {
            self.remove_files(&key);
        }
    }

    /// The bytes of the packages kept now.
    pub fn bytes(&self) -> u64 {
        self.lock().values().map(|e| e.record.size).sum()
    }

    /// Removes the least recently used packages, never `keep` nor one in
    /// use right now, until the total is under the cap.
    fn prune(&self, keep: &str) {
        let mut entries = self.lock();
        let mut total: u64 = entries.values().map(|e| e.record.size).sum();
        if total <= self.cap {
            return;
        }
        let mut by_age: Vec<(Instant, String, u64)> = entries
            .iter()
            .filter(|(key, entry)| *key != keep && entry.last_used.elapsed() > IN_USE_GRACE)
            .map(|(key, entry)| (entry.last_used, key.clone(), entry.record.size))
            .collect();
        by_age.sort();
        let mut removed = Vec::new();
        for (_, key, size) in by_age {
            if total <= self.cap {
                break;
            }
            entries.remove(&key);
            total -= size;
            removed.push(key);
        }
        drop(entries);
        for key in removed {
            self.remove_files(&key);
        }
    }

    fn package_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.tar.gz"))
    }

    fn remove_files(&self, key: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{key}.json")));
        let _ = std::fs::remove_file(self.package_path(key));
    }
}

/// The file name of `url`'s package.
fn key_of(url: &str) -> String {
    blake3::hash(url.as_bytes()).to_hex()[..32].to_string()
}

/// The record at `path`, if it parses and its package has the recorded size.
fn read_record(path: &Path, package: &Path) -> Option<Record> {
    let bytes = std::fs::read(path).ok()?;
    let record: Record = serde_json::from_slice(&bytes).ok()?;
    let size = std::fs::metadata(package).ok()?.len();
    (size == record.size).then_some(record)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn put(cache: &PackageCache, url: &str, bytes: &[u8]) -> PathBuf {
        let mut temp = cache.temp_file().unwrap();
        temp.write_all(bytes).unwrap();
        cache.insert(url, temp, bytes.len() as u64, None).unwrap()
    }

    #[test]
    fn a_package_survives_a_restart_and_a_changed_one_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PackageCache::open(dir.path(), 1 << 20).unwrap();
        let path = put(&cache, "s3://b/m.tar.gz", b"package bytes");
        assert_eq!(cache.lookup("s3://b/m.tar.gz"), Some(path.clone()));
        assert_eq!(cache.lookup("s3://b/other.tar.gz"), None);
        drop(cache);
        let cache = PackageCache::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(cache.lookup("s3://b/m.tar.gz"), Some(path.clone()));
        std::fs::write(&path, b"truncated").unwrap();
        assert_eq!(cache.lookup("s3://b/m.tar.gz"), None);
        assert!(!path.exists(), "a changed package is removed");
    }

    #[test]
    fn leftovers_of_a_crash_are_cleaned_at_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".download-x1"), b"half").unwrap();
        std::fs::write(dir.path().join("0123.tar.gz"), b"no record").unwrap();
        std::fs::write(dir.path().join("4567.json"), b"{not json").unwrap();
        let cache = PackageCache::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(cache.bytes(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn discard_removes_a_package_and_the_cap_prunes_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PackageCache::open(dir.path(), 100).unwrap();
        let path = put(&cache, "s3://b/bad.tar.gz", b"garbage");
        cache.discard("s3://b/bad.tar.gz");
        assert!(!path.exists());
        assert_eq!(cache.lookup("s3://b/bad.tar.gz"), None);
        // Packages in use (just written) are not pruned; the newest never is.
        put(&cache, "s3://b/a.tar.gz", &[0; 80]);
        put(&cache, "s3://b/c.tar.gz", &[0; 80]);
        assert_eq!(cache.bytes(), 160);
        for entry in cache.lock().values_mut() {
            if let Some(earlier) = entry.last_used.checked_sub(IN_USE_GRACE * 2) {
                entry.last_used = earlier;
            }
        }
        put(&cache, "s3://b/d.tar.gz", &[0; 10]);
        assert!(cache.bytes() <= 100, "{}", cache.bytes());
        assert!(cache.lookup("s3://b/d.tar.gz").is_some());
    }
}
