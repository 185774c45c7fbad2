//! Loads that failed: remembered for `describe`, and answered again for a
//! few seconds so that a broken package is not unpacked for every request.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{LoadError, LoadedModel, Registry, Slot};

/// How long a package that failed to load answers with that failure
/// before a request tries it again.
pub const FAILED_RETRY_AFTER: Duration = Duration::from_secs(5);

/// How many failed loads are remembered for `describe`; the oldest go first.
const MAX_FAILURES_KEPT: usize = 10_000;

/// A load that failed, kept until the model loads or is unregistered.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    at: Instant,
    when: SystemTime,
    error: LoadError,
}

/// A model that is not loaded, but that the registry knows of.
#[derive(Debug, Clone)]
pub enum NotReady {
    /// Its load is under way.
    Loading,
    /// Its last load failed.
    Failed {
        /// When.
        when: SystemTime,
        /// Why.
        error: LoadError,
    },
}

impl Registry {
    /// The error of a load of `name` that failed less than
    /// [`FAILED_RETRY_AFTER`] ago: a broken package is not unpacked again
    /// for every request that asks for it.
    pub(super) fn recent_failure(&self, name: &str) -> Option<LoadError> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed
            .get(name)
            .filter(|failure| failure.at.elapsed() < FAILED_RETRY_AFTER)
            .map(|failure| failure.error.clone())
    }

    /// Remembers that loading `name` failed, for `describe`, until the model
    /// loads or is unregistered.
    pub fn record_failure(&self, name: &str, error: LoadError) {
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed.len() >= MAX_FAILURES_KEPT && !failed.contains_key(name) {
            let oldest = failed
                .iter()
                .min_by_key(|(_, failure)| failure.at)
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                failed.remove(&oldest);
            }
        }
        let failure = Failure {
            at: Instant::now(),
            when: SystemTime::now(),
            error,
        };
        failed.insert(name.to_string(), failure);
    }

    /// What is known of `name` if it is not loaded: loading, or failed.
    pub fn not_ready(&self, name: &str) -> Option<NotReady> {
        let loading = {
            let models = self.models.lock().unwrap_or_else(|p| p.into_inner());
            models.get(name).is_some_and(|slot| slot.get().is_none())
        };
        if loading {
            return Some(NotReady::Loading);
        }
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.get(name).map(|failure| NotReady::Failed {
            when: failure.when,
            error: failure.error.clone(),
        })
    }

    /// Settles a load once its slot is set: a failed load leaves no entry,
    /// so that the next request tries again; a model loaded is listed, and
    /// its admission's charge on its share ends.
    pub(super) fn settle_load(
        &self,
        name: &str,
        slot: &Slot,
        result: Result<Arc<LoadedModel>, LoadError>,
    ) -> Result<Arc<LoadedModel>, LoadError> {
        match &result {
            Err(error @ (LoadError::Broken { .. } | LoadError::InvalidPackage { .. })) => {
                self.record_failure(name, error.clone());
            }
            Ok(model) => {
                model.listed();
                let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                failed.remove(name);
            }
            Err(_) => {}
        }
        if result.is_err() {
            let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
            if models
                .get(name)
                .is_some_and(|s| Arc::ptr_eq(s, slot) && s.get().is_none())
            {
                models.remove(name);
            }
        }
        result
    }
}
