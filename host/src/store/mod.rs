//! Where packages come from. A model store maps a model name to its
//! package: `DIR/<name>.tar.gz` or the unpacked folder `DIR/<name>/` in a
//! folder, or `s3://bucket/prefix/<name>.tar.gz` in S3; numbered versions
//! are `DIR/<name>/<N>/` or `DIR/<name>/<N>.tar.gz`, and
//! `s3://bucket/prefix/<name>/<N>.tar.gz` (see [`versions`]). Downloads are
//! kept in the local package cache.

mod cache;
mod s3;
pub mod versions;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

pub use cache::PackageCache;
pub use s3::{S3Access, S3Location, S3Options};
pub use versions::{Version, check_key, model_key, parse_version, split_key};

/// Longest model name accepted; names become file names.
pub const MAX_NAME_LEN: usize = 128;
/// How many versions of one model a store listing looks at.
const MAX_VERSIONS_LISTED: usize = 1000;

/// Why a name does not lead to a package.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StoreError {
    /// The name cannot be a model's name.
    #[error("invalid model name {name:?}: {reason}")]
    InvalidName {
        /// The name, shortened.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No package of that name.
    #[error(
        "model {name:?} not found: there is no {name}.tar.gz or {name}/ in the model store {store}"
    )]
    NotFound {
        /// The name.
        name: String,
        /// The store, for the message.
        store: String,
    },
    /// A version that cannot be one.
    #[error(
        "invalid model version {version:?}: a version is a whole number from 1, such as 1 or 2"
    )]
    InvalidVersion {
        /// The version, shortened.
        version: String,
    },
    /// The model has no package of that version.
    #[error(
        "model {name:?} has no version {version} in the model store {store}: there is no {name}/{version}/ or {name}/{version}.tar.gz{plain}"
    )]
    VersionNotFound {
        /// The name.
        name: String,
        /// The version asked for.
        version: Version,
        /// The store, for the message.
        store: String,
        /// What the store has instead, for the message.
        plain: &'static str,
    },
    /// An `s3://` url that cannot be one.
    #[error("invalid S3 url {url:?}: {reason}")]
    InvalidUrl {
        /// The url, shortened.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No object at that key.
    #[error("no model package at {url}: the object does not exist")]
    ObjectNotFound {
        /// The object's url.
        url: String,
    },
    /// The store cannot be reached, or timed out: worth retrying later.
    #[error("the model store is unavailable: fetching {url} failed: {reason}")]
    Unavailable {
        /// The object's url.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The store refused the request.
    #[error("the model store refused to give {url}: {reason}")]
    Refused {
        /// The object's url.
        url: String,
        /// What it said.
        reason: String,
    },
    /// The object arrived, but not as it was stored.
    #[error("the package {url} arrived damaged: {reason}")]
    Corrupt {
        /// The object's url.
        url: String,
        /// What does not match.
        reason: String,
    },
    /// The local package cache cannot take the package (a full disk, say).
    #[error("the local package cache cannot keep the package: {reason}")]
    Cache {
        /// What failed.
        reason: String,
    },
}

/// Where one package is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageSource {
    /// A folder or an archive on local disk.
    Path(PathBuf),
    /// An archive in S3.
    S3(S3Location),
}

impl PackageSource {
    /// A url as `POST /models` gives it: `s3://bucket/key`, `file:///path`
    /// or an absolute path.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("s3://") {
            return S3Location::parse(url).map(PackageSource::S3);
        }
        Ok(PackageSource::Path(PathBuf::from(
            url.strip_prefix("file://").unwrap_or(url),
        )))
    }
}

impl std::fmt::Display for PackageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackageSource::Path(path) => write!(f, "{}", path.display()),
            PackageSource::S3(object) => write!(f, "{object}"),
        }
    }
}

/// A package on local disk, ready to open.
#[derive(Debug)]
pub struct Fetched {
    /// Its path.
    pub path: PathBuf,
    /// Time spent downloading it (zero for a local or cached package).
    pub download: Duration,
    /// Whether the package cache had it.
    pub cache_hit: bool,
}

/// The model store, and access to S3 for any `s3://` package.
pub struct ModelStore {
    root: StoreRoot,
    s3: S3Access,
    cache: PackageCache,
    max_package_bytes: u64,
}

enum StoreRoot {
    Folder(LocalStore),
    S3(S3Location),
}

impl ModelStore {
    /// A store at `spec` (a folder, or `s3://bucket/prefix`), keeping
    /// downloads in `cache` and refusing packages over `max_package_bytes`.
    pub fn new(
        spec: &str,
        s3: S3Options,
        cache: PackageCache,
        max_package_bytes: u64,
    ) -> Result<Self, StoreError> {
        let root = if spec.starts_with("s3://") {
            StoreRoot::S3(S3Location::parse(spec)?)
        } else {
            StoreRoot::Folder(LocalStore::new(spec))
        };
        Ok(ModelStore {
            root,
            s3: S3Access::new(s3),
            cache,
            max_package_bytes,
        })
    }

    /// Where the package of `key` (a model name, or `name/N` for a later
    /// version: [`model_key`]) is.
    pub fn source_of(&self, key: &str) -> Result<PackageSource, StoreError> {
        check_key(key)?;
        match &self.root {
            StoreRoot::Folder(folder) => folder.resolve(key).map(PackageSource::Path),
            // `name/N` is the object `prefix/name/N.tar.gz`.
            StoreRoot::S3(prefix) => Ok(PackageSource::S3(prefix.package(key))),
        }
    }

    /// The highest numbered version of `name` in a folder store, if its
    /// folder holds versions. An S3 store says nothing here: finding out
    /// would cost every first request a listing, so its `name.tar.gz` is
    /// tried first ([`ModelStore::listed_version`] after).
    pub fn latest_version(&self, name: &str) -> Option<Version> {
        check_name(name).ok()?;
        match &self.root {
            StoreRoot::Folder(folder) => folder.versions(name).last().copied(),
            StoreRoot::S3(_) => None,
        }
    }

    /// The highest numbered version of `name` that the store lists: for S3,
    /// the `prefix/name/N.tar.gz` objects. A store that refuses to list (a
    /// role allowed only `GetObject`) lists none.
    pub async fn listed_version(&self, name: &str) -> Option<Version> {
        check_name(name).ok()?;
        match &self.root {
            StoreRoot::Folder(folder) => folder.versions(name).last().copied(),
            StoreRoot::S3(prefix) => {
                let folder = S3Location {
                    bucket: prefix.bucket.clone(),
                    key: versions::s3_folder(&prefix.key, name),
                };
                match self.s3.list_packages(&folder, MAX_VERSIONS_LISTED).await {
                    Ok(numbers) => numbers
                        .iter()
                        .filter_map(|n| parse_version(n).ok().flatten())
                        .max(),
                    Err(error) => {
                        tracing::debug!(name, %error, "cannot list the model's versions");
                        None
                    }
                }
            }
        }
    }

    /// Where Triton's layout keeps version 1 of `name` in an S3 store,
    /// `prefix/name/1.tar.gz`, for a store without `prefix/name.tar.gz`.
    pub fn first_version_source(&self, name: &str) -> Option<PackageSource> {
        match &self.root {
            StoreRoot::S3(prefix) if check_name(name).is_ok() => {
                Some(PackageSource::S3(prefix.package(&format!("{name}/1"))))
            }
            _ => None,
        }
    }

    /// What a lookup of `name` answers when the store has no such package,
    /// without looking: a model a caller may not see is answered as one that
    /// does not exist.
    pub fn missing(&self, key: &str) -> StoreError {
        if let Err(invalid) = check_key(key) {
            return invalid;
        }
        let (name, version) = split_key(key);
        match &self.root {
            StoreRoot::Folder(folder) if version != versions::FIRST_VERSION => {
                StoreError::VersionNotFound {
                    name: name.to_string(),
                    version,
                    store: folder.root().display().to_string(),
                    plain: "",
                }
            }
            StoreRoot::Folder(folder) => StoreError::NotFound {
                name: name.to_string(),
                store: folder.root().display().to_string(),
            },
            StoreRoot::S3(prefix) => StoreError::ObjectNotFound {
                url: prefix.package(key).to_string(),
            },
        }
    }

    /// The store, for log lines.
    pub fn describe(&self) -> String {
        match &self.root {
            StoreRoot::Folder(folder) => folder.root().display().to_string(),
            StoreRoot::S3(prefix) => prefix.to_string(),
        }
    }

    /// The package at `source` on local disk: as it is for a local one;
    /// from the package cache, or downloaded into it, for an S3 one.
    pub async fn fetch(
        &self,
        source: &PackageSource,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Fetched, StoreError> {
        let object = match source {
            PackageSource::Path(path) => {
                return Ok(Fetched {
                    path: path.clone(),
                    download: Duration::ZERO,
                    cache_hit: false,
                });
            }
            PackageSource::S3(object) => object,
        };
        let url = object.to_string();
        if let Some(path) = self.cache.lookup(&url) {
            metrics.package_cache_hits.inc();
            return Ok(Fetched {
                path,
                download: Duration::ZERO,
                cache_hit: true,
            });
        }
        let started = Instant::now();
        let cache_error = |e: std::io::Error| StoreError::Cache {
            reason: e.to_string(),
        };
        let mut temp = self.cache.temp_file().map_err(cache_error)?;
        let downloaded = self
            .s3
            .download(object, temp.as_file_mut(), self.max_package_bytes)
            .await?;
        metrics.downloads.inc();
        let path = self
            .cache
            .insert(&url, temp, downloaded.size, downloaded.etag)
            .map_err(cache_error)?;
        tracing::info!(%url, bytes = downloaded.size, elapsed = ?started.elapsed(), "package downloaded");
        Ok(Fetched {
            path,
            download: started.elapsed(),
            cache_hit: false,
        })
    }

    /// The names of the models in the store, sorted, at most `limit` of
    /// them: the archives and folders of a folder store, the `.tar.gz`
    /// objects directly under an S3 store's prefix.
    pub async fn list(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut names = match &self.root {
            StoreRoot::Folder(folder) => folder.list(limit)?,
            StoreRoot::S3(prefix) => self.s3.list_packages(prefix, limit).await?,
        };
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Forgets a downloaded package that turned out not to load, so that
    /// the next load fetches it again instead of failing on the same bytes.
    pub fn discard(&self, source: &PackageSource) {
        if let PackageSource::S3(object) = source {
            self.cache.discard(&object.to_string());
        }
    }
}

/// Checks that `name` is safe to use as a file name and in a URL path:
/// letters, digits, `-`, `_` and `.`, not starting with `.`.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let invalid = |reason| StoreError::InvalidName {
        name: name.chars().take(MAX_NAME_LEN).collect(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid("it is longer than 128 bytes"));
    }
    if name.starts_with('.') {
        return Err(invalid("it starts with '.'"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(invalid("use only letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

/// A folder of packages.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store over the folder `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The names of the packages in the folder that are valid model names,
    /// at most `limit` of them.
    pub fn list(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let entries = std::fs::read_dir(&self.root).map_err(|e| StoreError::Unavailable {
            url: self.root.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut names = Vec::new();
        for entry in entries.flatten() {
            if names.len() >= limit {
                break;
            }
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            let name = match file_name.strip_suffix(".tar.gz") {
                Some(name) if entry.path().is_file() => name,
                None if entry.path().is_dir() => file_name,
                _ => continue,
            };
            if check_name(name).is_err() {
                continue;
            }
            match self.versions(name).as_slice() {
                [] => names.push(name.to_string()),
                numbered => names.extend(numbered.iter().map(|&v| model_key(name, v))),
            }
        }
        names.truncate(limit);
        Ok(names)
    }

    /// The numbered versions of `name`, if its folder holds versions
    /// rather than a package (no `model.wasm` or `model.onnx` of its own).
    pub fn versions(&self, name: &str) -> Vec<Version> {
        let folder = self.root.join(name);
        let is_package = ["model.wasm", "model.onnx"]
            .iter()
            .any(|file| folder.join(file).is_file());
        if is_package || !folder.is_dir() {
            return Vec::new();
        }
        versions::versions_in(&folder)
    }

    /// The package of `key` (a name, or `name/N`: [`model_key`]): for a
    /// versioned folder, that version's archive or folder; otherwise the
    /// archive if there is one, else the folder, which are version 1.
    pub fn resolve(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        let (name, version) = split_key(key);
        let store = self.root.display().to_string();
        if !self.versions(name).is_empty() {
            return versions::version_package(&self.root.join(name), version).ok_or(
                StoreError::VersionNotFound {
                    name: name.to_string(),
                    version,
                    store,
                    plain: "",
                },
            );
        }
        let archive = self.root.join(format!("{name}.tar.gz"));
        let folder = self.root.join(name);
        let plain = if archive.is_file() {
            Some(archive)
        } else {
            folder.is_dir().then_some(folder)
        };
        match plain {
            Some(package) if version == versions::FIRST_VERSION => Ok(package),
            Some(_) => Err(StoreError::VersionNotFound {
                name: name.to_string(),
                version,
                store,
                plain: "; its package has no numbered versions, so it is version 1",
            }),
            None => Err(StoreError::NotFound {
                name: name.to_string(),
                store,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for name in [
            "",
            "..",
            "../etc",
            "a/b",
            "a\0b",
            ".hidden",
            "a b",
            "é",
            long.as_str(),
        ] {
            assert!(check_name(name).is_err(), "{name:?}");
        }
        for name in ["sklearn-0", "m.v2", "A_b-9"] {
            check_name(name).unwrap();
        }
    }

    #[test]
    fn archive_wins_over_folder_and_absent_names_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("m")).unwrap();
        let store = LocalStore::new(dir.path());
        assert_eq!(store.resolve("m").unwrap(), dir.path().join("m"));
        std::fs::write(dir.path().join("m.tar.gz"), b"").unwrap();
        assert_eq!(store.resolve("m").unwrap(), dir.path().join("m.tar.gz"));
        let err = store.resolve("other").unwrap_err();
        assert!(err.to_string().contains("other.tar.gz"), "{err}");
        assert!(matches!(
            store.resolve("../m"),
            Err(StoreError::InvalidName { .. })
        ));
    }

    #[test]
    fn numbered_folders_are_versions_and_a_plain_package_is_version_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        std::fs::create_dir_all(dir.path().join("m/1")).unwrap();
        std::fs::write(dir.path().join("m/2.tar.gz"), b"").unwrap();
        std::fs::write(dir.path().join("plain.tar.gz"), b"").unwrap();
        // A package whose own folder happens to hold a numbered folder.
        std::fs::create_dir_all(dir.path().join("p/7")).unwrap();
        std::fs::write(dir.path().join("p/model.wasm"), b"").unwrap();
        assert_eq!(store.versions("m"), vec![1, 2]);
        assert!(store.versions("plain").is_empty());
        assert!(store.versions("p").is_empty());
        assert_eq!(store.resolve("m").unwrap(), dir.path().join("m/1"));
        assert_eq!(store.resolve("m/2").unwrap(), dir.path().join("m/2.tar.gz"));
        assert_eq!(store.resolve("p").unwrap(), dir.path().join("p"));
        assert_eq!(
            store.resolve("plain").unwrap(),
            dir.path().join("plain.tar.gz")
        );
        for (key, says) in [
            ("m/3", "has no version 3"),
            ("plain/2", "so it is version 1"),
            ("p/7", "has no version 7"),
        ] {
            let error = store.resolve(key).unwrap_err();
            assert!(
                matches!(error, StoreError::VersionNotFound { .. }),
                "{key}: {error}"
            );
            assert!(error.to_string().contains(says), "{key}: {error}");
        }
        assert!(matches!(
            store.resolve("m/1"),
            Err(StoreError::InvalidVersion { .. })
        ));
        let mut listed = store.list(100).unwrap();
        listed.sort();
        assert_eq!(listed, ["m", "m/2", "p", "plain"]);
    }
}
