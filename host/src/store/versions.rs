//! Model versions, as Triton numbers them: a store folder `m/` may hold
//! `m/1/`, `m/2/` (folders or `N.tar.gz`), and a plain `m.tar.gz` or `m/`
//! is version 1.
//!
//! A loaded model is known by its key: the bare name for version 1, so that
//! an unversioned model keeps its name everywhere (routes, metrics,
//! SageMaker), and `name/N` for a later version. A `/` can be in no model
//! name, so no key of one model is a name of another.

use std::path::{Path, PathBuf};

use super::{StoreError, check_name};

/// A model's version: a positive integer.
pub type Version = u64;

/// The version a model without numbered versions has.
pub const FIRST_VERSION: Version = 1;

/// Reads a version as a route or a request gives it: digits, no sign, no
/// leading zero, at least 1. An empty text is no version.
pub fn parse_version(text: &str) -> Result<Option<Version>, StoreError> {
    if text.is_empty() {
        return Ok(None);
    }
    let valid = text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    match text.parse::<Version>() {
        Ok(version) if valid => Ok(Some(version)),
        _ => Err(StoreError::InvalidVersion {
            version: text.chars().take(32).collect(),
        }),
    }
}

/// The key of `name`'s `version` in the registry.
pub fn model_key(name: &str, version: Version) -> String {
    if version == FIRST_VERSION {
        name.to_string()
    } else {
        format!("{name}/{version}")
    }
}

/// The name and the version a key stands for.
pub fn split_key(key: &str) -> (&str, Version) {
    match key.split_once('/') {
        Some((name, version)) => (name, version.parse().unwrap_or(FIRST_VERSION)),
        None => (key, FIRST_VERSION),
    }
}

/// What a request asks for: `name` for the highest version, `name/N` for
/// version `N` (1 included).
pub fn wanted(name: &str, version: Option<Version>) -> String {
    match version {
        Some(version) => format!("{name}/{version}"),
        None => name.to_string(),
    }
}

/// What asks for exactly the version that `key` ([`model_key`]) is.
pub fn wanted_of_key(key: &str) -> String {
    let (name, version) = split_key(key);
    wanted(name, Some(version))
}

/// The name and the version, if any, that [`wanted`] wrote.
pub fn parse_wanted(wanted: &str) -> Result<(&str, Option<Version>), StoreError> {
    match wanted.split_once('/') {
        None => {
            check_name(wanted)?;
            Ok((wanted, None))
        }
        Some((name, version)) => {
            check_name(name)?;
            match parse_version(version)? {
                Some(version) => Ok((name, Some(version))),
                None => Err(StoreError::InvalidVersion {
                    version: String::new(),
                }),
            }
        }
    }
}

/// The key of what [`wanted`] wrote, when it names a version (a bare name
/// stays as it is: its version is decided by what is loaded).
pub fn key_of_wanted(wanted: &str) -> String {
    match parse_wanted(wanted) {
        Ok((name, Some(version))) => model_key(name, version),
        _ => wanted.to_string(),
    }
}

/// Checks a key: a valid name, and after a `/` a version above 1 written
/// as [`model_key`] writes it.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    match key.split_once('/') {
        None => check_name(key),
        Some((name, version)) => {
            check_name(name)?;
            match parse_version(version)? {
                Some(v) if v > FIRST_VERSION => Ok(()),
                _ => Err(StoreError::InvalidVersion {
                    version: version.chars().take(32).collect(),
                }),
            }
        }
    }
}

/// The numbered versions in the folder `dir`: its subfolders and `.tar.gz`
/// archives whose names are versions, sorted, without repeats.
pub fn versions_in(dir: &Path) -> Vec<Version> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut versions: Vec<Version> = entries
        .flatten()
        .filter_map(|entry| {
            let file_name = entry.file_name();
            let file_name = file_name.to_str()?;
            let path = entry.path();
            let number = match file_name.strip_suffix(".tar.gz") {
                Some(number) if path.is_file() => number,
                None if path.is_dir() => file_name,
                _ => return None,
            };
            parse_version(number).ok().flatten()
        })
        .collect();
    versions.sort_unstable();
    versions.dedup();
    versions
}

/// The package of `version` in a versioned folder `dir`: the archive
/// `N.tar.gz` if there is one, else the folder `N/`.
pub fn version_package(dir: &Path, version: Version) -> Option<PathBuf> {
    let archive = dir.join(format!("{version}.tar.gz"));
    if archive.is_file() {
        return Some(archive);
    }
    let folder = dir.join(version.to_string());
    folder.is_dir().then_some(folder)
}

/// The key under which an S3 store at `prefix` keeps `name`'s versions.
pub fn s3_folder(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_positive_integers_written_plainly() {
        assert_eq!(parse_version(""), Ok(None));
        assert_eq!(parse_version("1"), Ok(Some(1)));
        assert_eq!(parse_version("42"), Ok(Some(42)));
        for hostile in [
            "0",
            "01",
            "-1",
            "+1",
            "1.0",
            "v2",
            " 2",
            "99999999999999999999999",
        ] {
            assert!(parse_version(hostile).is_err(), "{hostile}");
        }
    }

    #[test]
    fn keys_keep_the_first_version_under_the_bare_name() {
        assert_eq!(model_key("m", 1), "m");
        assert_eq!(model_key("m", 3), "m/3");
        assert_eq!(split_key("m"), ("m", 1));
        assert_eq!(split_key("m/3"), ("m", 3));
        assert_eq!(parse_wanted("m"), Ok(("m", None)));
        assert_eq!(parse_wanted("m/1"), Ok(("m", Some(1))));
        assert_eq!(wanted("m", Some(1)), "m/1");
        assert_eq!(key_of_wanted("m/1"), "m");
        assert_eq!(wanted_of_key("m"), "m/1");
        assert_eq!(wanted_of_key("m/2"), "m/2");
        assert_eq!(key_of_wanted("m/2"), "m/2");
        assert_eq!(key_of_wanted("m"), "m");
        for hostile in ["m/", "m/0", "m/1/2", "../m", "m/x"] {
            assert!(parse_wanted(hostile).is_err(), "{hostile}");
        }
        check_key("m").unwrap();
        check_key("m/3").unwrap();
        for hostile in ["m/1", "m/0", "m/03", "m/", "m/x", "m/3/4", "../m/3", "/3"] {
            assert!(check_key(hostile).is_err(), "{hostile}");
        }
    }

    #[test]
    fn a_versioned_folder_lists_its_numbered_packages() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("1")).unwrap();
        std::fs::write(dir.path().join("3.tar.gz"), b"").unwrap();
        std::fs::create_dir(dir.path().join("3")).unwrap();
        std::fs::create_dir(dir.path().join("10")).unwrap();
        // Not versions: a file without the suffix, names that are not numbers.
        std::fs::write(dir.path().join("2"), b"").unwrap();
        std::fs::create_dir(dir.path().join("05")).unwrap();
        std::fs::write(dir.path().join("serving.properties"), b"").unwrap();
        assert_eq!(versions_in(dir.path()), vec![1, 3, 10]);
        assert_eq!(
            version_package(dir.path(), 3),
            Some(dir.path().join("3.tar.gz"))
        );
        assert_eq!(version_package(dir.path(), 1), Some(dir.path().join("1")));
        assert_eq!(version_package(dir.path(), 2), None);
        assert!(versions_in(&dir.path().join("missing")).is_empty());
    }
}
