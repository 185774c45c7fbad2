//! Where packages may be registered from (`--allowed-urls`, TorchServe's
//! name): local roots and `s3://` prefixes. A url outside them, and a local
//! path that does not exist, get the same refusal, so that the answer tells
//! nothing about the machine.

use std::path::{Path, PathBuf};

use crate::store::{PackageSource, S3Location};

/// One root packages may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Root {
    /// A folder, resolved (symlinks included) when the server starts.
    Folder(PathBuf),
    /// A bucket, and a key prefix that ends at a `/` (empty: the whole bucket).
    S3 { bucket: String, prefix: String },
}

/// A root that cannot be one.
#[derive(Debug, thiserror::Error)]
pub enum UrlsError {
    /// A local root that cannot be resolved.
    #[error("the allowed root {root:?} cannot be resolved: {source}; give a folder that exists")]
    Folder {
        /// The root as given.
        root: String,
        /// Why.
        source: std::io::Error,
    },
    /// An `s3://` root that is no bucket url.
    #[error("the allowed root {root:?} is not an s3:// url: {reason}")]
    S3 {
        /// The root as given.
        root: String,
        /// Why.
        reason: String,
    },
}

/// The roots packages may be registered from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedUrls {
    roots: Vec<Root>,
}

impl AllowedUrls {
    /// The roots in `urls`: absolute paths, `file://` urls, `s3://bucket[/prefix]`.
    pub fn parse<S: AsRef<str>>(urls: &[S]) -> Result<Self, UrlsError> {
        let roots = urls
            .iter()
            .map(|url| parse_root(url.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(AllowedUrls { roots })
    }

    /// Whether there are no roots at all.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The package `source` names, as it will be read, if it lies inside a
    /// root: a local path is resolved first, and the resolved path is the
    /// one to read, so a symlink changed after the check cannot lead out.
    pub fn admit(&self, source: &PackageSource) -> Option<PackageSource> {
        match source {
            PackageSource::Path(path) => {
                let resolved = std::fs::canonicalize(path).ok()?;
                self.roots
                    .iter()
                    .any(
                        |root| matches!(root, Root::Folder(folder) if resolved.starts_with(folder)),
                    )
                    .then_some(PackageSource::Path(resolved))
            }
            PackageSource::S3(object) => self
                .roots
                .iter()
                .any(|root| s3_inside(root, object))
                .then(|| source.clone()),
        }
    }
}

fn parse_root(url: &str) -> Result<Root, UrlsError> {
    if url.starts_with("s3://") {
        let location = S3Location::parse(url).map_err(|e| UrlsError::S3 {
            root: url.to_string(),
            reason: e.to_string(),
        })?;
        let prefix = if location.key.is_empty() {
            String::new()
        } else {
            format!("{}/", location.key)
        };
        return Ok(Root::S3 {
            bucket: location.bucket,
            prefix,
        });
    }
    // A relative root is resolved against the working folder, as the
    // model store is.
    let path = Path::new(url.strip_prefix("file://").unwrap_or(url));
    let folder = std::fs::canonicalize(path).map_err(|source| UrlsError::Folder {
        root: url.to_string(),
        source,
    })?;
    Ok(Root::Folder(folder))
}

/// Whether `object` lies under an `s3://` root. S3 does not resolve `..`,
/// but an S3-compatible server on a file system may, so a key with a `.` or
/// `..` segment, or an empty one, is never inside.
fn s3_inside(root: &Root, object: &S3Location) -> bool {
    let Root::S3 { bucket, prefix } = root else {
        return false;
    };
    let plain = object
        .key
        .split('/')
        .all(|segment| !matches!(segment, "" | "." | ".."));
    plain && *bucket == object.bucket && object.key.starts_with(prefix.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: &str) -> PackageSource {
        PackageSource::parse(url).unwrap()
    }

    #[test]
    fn local_paths_are_resolved_before_they_are_checked() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let models = root.path().join("models");
        std::fs::create_dir_all(models.join("iris")).unwrap();
        std::os::unix::fs::symlink(outside.path(), models.join("escape")).unwrap();
        std::os::unix::fs::symlink(models.join("iris"), models.join("alias")).unwrap();
        let allowed = AllowedUrls::parse(&[models.display().to_string()]).unwrap();
        let inside = allowed.admit(&source(&format!("{}/iris", models.display())));
        let resolved = std::fs::canonicalize(models.join("iris")).unwrap();
        assert_eq!(inside, Some(PackageSource::Path(resolved.clone())));
        assert_eq!(
            allowed.admit(&source(&format!("file://{}/alias", models.display()))),
            Some(PackageSource::Path(resolved))
        );
        for refused in [
            format!("{}/escape", models.display()),
            format!("{}/iris/../../", models.display()),
            format!("{}/missing", models.display()),
            outside.path().display().to_string(),
            "/etc".to_string(),
            "/".to_string(),
            format!("{}-sibling", models.display()),
        ] {
            assert_eq!(allowed.admit(&source(&refused)), None, "{refused}");
        }
    }

    #[test]
    fn s3_objects_must_lie_under_a_prefix_without_dot_segments() {
        let allowed = AllowedUrls::parse(&["s3://models/acme/", "s3://whole-bucket"]).unwrap();
        for inside in [
            "s3://models/acme/iris.tar.gz",
            "s3://models/acme/deep/iris.tar.gz",
            "s3://whole-bucket/anything.tar.gz",
        ] {
            assert!(allowed.admit(&source(inside)).is_some(), "{inside}");
        }
        for outside in [
            "s3://models/acme",
            "s3://models/acme-other/iris.tar.gz",
            "s3://models/other/iris.tar.gz",
            "s3://models/acme/../other/iris.tar.gz",
            "s3://models/acme/./iris.tar.gz",
            "s3://models/acme//iris.tar.gz",
            "s3://other-bucket/acme/iris.tar.gz",
        ] {
            assert_eq!(allowed.admit(&source(outside)), None, "{outside}");
        }
    }

    #[test]
    fn roots_that_cannot_be_checked_are_refused_at_start() {
        assert!(matches!(
            AllowedUrls::parse(&["no-such-models-folder"]),
            Err(UrlsError::Folder { .. })
        ));
        let here = std::fs::canonicalize(".").unwrap();
        assert_eq!(
            AllowedUrls::parse(&["."]).unwrap(),
            AllowedUrls {
                roots: vec![Root::Folder(here)]
            }
        );
        assert!(matches!(
            AllowedUrls::parse(&["/no/such/folder/anywhere"]),
            Err(UrlsError::Folder { .. })
        ));
        assert!(matches!(
            AllowedUrls::parse(&["s3://A_B/x"]),
            Err(UrlsError::S3 { .. })
        ));
        assert!(AllowedUrls::parse::<&str>(&[]).unwrap().is_empty());
    }
}
