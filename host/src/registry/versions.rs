//! Which loaded model a name, or a name and a version, asks for: a
//! version is a model of its own under `name/N` (`name` for version 1),
//! and a name alone takes the highest version loaded, else the store's.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{LoadError, LoadedModel, Registry};
use crate::store::{StoreError, Version, model_key};

impl Registry {
    /// The loaded model `wanted` (a name, or `name/N` for version `N`: see
    /// [`crate::store::versions::wanted`]), loading it from the store on
    /// first use. Without a version, the highest version loaded answers,
    /// else the highest in the store.
    pub async fn get_or_load(&self, wanted: &str) -> Result<Arc<LoadedModel>, LoadError> {
        let (name, version) = crate::store::versions::parse_wanted(wanted)?;
        let key = match version {
            Some(version) => Cow::Owned(model_key(name, version)),
            None => {
                if let Some(model) = self.latest_loaded(name) {
                    return Ok(model);
                }
                match self.store.latest_version(name) {
                    Some(version) => Cow::Owned(model_key(name, version)),
                    None => Cow::Borrowed(name),
                }
            }
        };
        let loaded = self
            .get_or_load_with(&key, || self.store.source_of(&key))
            .await;
        // An S3 store with Triton's layout has no `name.tar.gz`: then the
        // highest `name/N.tar.gz` answers for the name, and version 1 is
        // `name/1.tar.gz`. Listed only on this miss, not for every load.
        let missing = match loaded {
            Err(LoadError::Store(missing @ StoreError::ObjectNotFound { .. })) if key == name => {
                missing
            }
            other => return other,
        };
        let listed = match version {
            Some(version) => Some(version),
            None => self.store.listed_version(name).await,
        };
        match listed {
            Some(crate::store::versions::FIRST_VERSION) => {
                let Some(first) = self.store.first_version_source(name) else {
                    return Err(missing.into());
                };
                self.get_or_load_with(name, || Ok(first))
                    .await
                    .map_err(|error| match error {
                        LoadError::Store(StoreError::ObjectNotFound { .. }) => missing.into(),
                        other => other,
                    })
            }
            Some(later) => {
                let key = model_key(name, later);
                self.get_or_load_with(&key, || self.store.source_of(&key))
                    .await
            }
            None => Err(missing.into()),
        }
    }

    /// The highest loaded version of `name`, if one is loaded.
    pub(super) fn latest_loaded(&self, name: &str) -> Option<Arc<LoadedModel>> {
        let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        let first = models.get(name).and_then(|slot| slot.get());
        if !self.versioned.load(Ordering::Relaxed) {
            return first.cloned();
        }
        let later = format!("{name}/");
        models
            .range((
                std::ops::Bound::Included(later.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(key, _)| key.starts_with(&later))
            .filter_map(|(key, slot)| {
                let version: Version = key[later.len()..].parse().ok()?;
                Some((version, slot.get()?))
            })
            .max_by_key(|(version, _)| *version)
            .map(|(_, model)| model)
            .or(first)
            .cloned()
    }

    /// The keys of every version of `name` that is loaded, loading, or
    /// whose load failed: what unloading the model without a version unloads.
    pub fn keys_of(&self, name: &str) -> Vec<String> {
        // `name/N` sort between `name/` and `name0` ('0' follows '/').
        let (later, past) = (format!("{name}/"), format!("{name}0"));
        let mut keys: Vec<String> = {
            let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
            let versions = models.range((
                std::ops::Bound::Included(later.as_str()),
                std::ops::Bound::Excluded(past.as_str()),
            ));
            models
                .contains_key(name)
                .then(|| name.to_string())
                .into_iter()
                .chain(versions.map(|(key, _)| key.clone()))
                .collect()
        };
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        for key in failed.keys() {
            if crate::store::split_key(key).0 == name && !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        keys
    }

    /// The model `wanted` (as for [`Registry::get_or_load`]) if it is
    /// loaded; never loads. A name that no model could have is an error of
    /// its own, not "not loaded".
    pub fn get_loaded(&self, wanted: &str) -> Result<Arc<LoadedModel>, LoadError> {
        let (name, version) = crate::store::versions::parse_wanted(wanted)?;
        let Some(version) = version else {
            return self
                .latest_loaded(name)
                .ok_or_else(|| LoadError::NotLoaded(name.to_string()));
        };
        let key = model_key(name, version);
        let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        models
            .get(&key)
            .and_then(|slot| slot.get())
            .cloned()
            .ok_or(LoadError::NotLoaded(key))
    }

    /// Remembers that a later version is in use, once one is.
    pub(super) fn note_version(&self, key: &str) {
        if key.contains('/') {
            self.versioned.store(true, Ordering::Relaxed);
        }
    }
}
