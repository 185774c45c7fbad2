//! Where packages come from. A model store maps a model name to its
//! package: `DIR/<name>.tar.gz`, or the unpacked folder `DIR/<name>/`.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Longest model name accepted; names become file names.
pub const MAX_NAME_LEN: usize = 128;

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

    /// The package of model `name`: the archive if there is one, else the folder.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, StoreError> {
        check_name(name)?;
        let archive = self.root.join(format!("{name}.tar.gz"));
        if archive.is_file() {
            return Ok(archive);
        }
        let folder = self.root.join(name);
        if folder.is_dir() {
            return Ok(folder);
        }
        Err(StoreError::NotFound {
            name: name.to_string(),
            store: self.root.display().to_string(),
        })
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
}
