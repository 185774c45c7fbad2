//! Making room: for a load that does not fit in the memory budget or in
//! the instance pool, and for a model with backlog whose scale-up finds
//! the pool full.
//!
//! A spare instance (idle, above its model's `minWorkers`) is taken back
//! first, from the least recently used model: a worker that a burst left
//! behind costs its model nothing to lose. Only then, where the server may,
//! a whole idle model is evicted.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use super::map::ModelMap;
use super::model::{self, WasmBackend};
use super::{LoadError, LoadedModel, Registry, budget};

/// How long a load waits for a loaded model to become idle, so that it
/// can be evicted, when every one is busy.
const ADMISSION_WAIT: Duration = Duration::from_secs(10);
/// How often that wait looks again.
const ADMISSION_POLL: Duration = Duration::from_millis(2);
/// How many idle models one load may evict to find a free instance slot.
const MAX_POOL_EVICTIONS: usize = 64;
/// How old a measurement of the instances' pages may be when the budget
/// looks full: younger ones are trusted, older ones are taken again before
/// a model is evicted or a load refused.
const FRESH_SAMPLE: Duration = Duration::from_millis(100);

/// The loaded models by name, shared with every model's backend, which
/// takes spare instances from it.
pub(super) type Models = Mutex<ModelMap>;

/// What a model's backend calls, with its own name, when its scale-up finds
/// the instance pool full: true if a spare instance of another model was
/// freed.
pub type MakeRoom = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A [`MakeRoom`] over `models`; it does nothing once the registry is gone.
pub(super) fn make_room_in(models: &Arc<Models>, taken: Counter) -> MakeRoom {
    let models = Arc::downgrade(models);
    Arc::new(move |keep| {
        let freed = models
            .upgrade()
            .is_some_and(|models| take_spare_instance(&models, keep));
        if freed {
            taken.inc();
        }
        freed
    })
}

/// Frees one spare instance: that of the least recently used model, other
/// than `keep`, that has an idle worker above its minimum. Blocking: the
/// instance is freed here.
fn take_spare_instance(models: &Models, keep: &str) -> bool {
    let mut candidates: Vec<Arc<LoadedModel>> = {
        let models = models.lock().unwrap_or_else(|p| p.into_inner());
        models
            .values()
            .filter_map(|slot| slot.get())
            .filter(|model| model.name != keep)
            .cloned()
            .collect()
    };
    // Each key read once: requests move them while the sort runs.
    candidates.sort_by_cached_key(|model| model.last_used.load(Ordering::Relaxed));
    let spare = candidates
        .iter()
        .find_map(|model| Some((&model.name, model.queue.take_spare()?)));
    match spare {
        Some((name, worker)) => {
            drop(worker);
            tracing::debug!(model = %name, for_model = keep, "spare instance taken back to make room");
            true
        }
        None => false,
    }
}

impl Registry {
    /// Evicts the least recently used model, other than `keep` (and of
    /// `group`'s share when one is given), that has no request queued or
    /// running; `None` when every such model is busy.
    ///
    /// The victim is chosen, its queue closed and the model taken out of the
    /// map under one hold of the map's lock: a request that looks the model
    /// up either holds it already (so it is no victim) or finds it gone and
    /// loads it again, never a closed model still in the map.
    pub(super) async fn evict_one(&self, keep: &str, group: Option<&str>) -> Option<String> {
        let victim = {
            let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
            let mut candidates: Vec<&Arc<LoadedModel>> = models
                .values()
                .filter_map(|slot| slot.get())
                .filter(|model| model.name != keep)
                .filter(|model| {
                    group.is_none_or(|group| {
                        self.share_of(&model.name)
                            .is_some_and(|share| *share.group == *group)
                    })
                })
                .collect();
            // Each key read once: requests move them while the sort runs.
            candidates.sort_by_cached_key(|model| model.last_used.load(Ordering::Relaxed));
            // A model held by anyone but the map is about to get a request
            // (it was just looked up or loaded for one): not a victim.
            let victim = candidates
                .into_iter()
                .find(|model| Arc::strong_count(model) == 1 && model.queue.close_if_idle())?
                .clone();
            models.remove(&victim.name);
            victim
        };
        let name = victim.name.clone();
        tracing::info!(model = name, "evicting the least recently used idle model");
        self.release(victim).await;
        self.metrics.evictions.inc();
        Some(name)
    }

    /// Evicts idle models, least recently used first, while the memory in
    /// use is over the limit (workers added for bursts can push it over).
    /// Does nothing in SageMaker's mode, where SageMaker picks the victims.
    pub async fn enforce_budget(&self) -> usize {
        if !self.config.evict {
            return 0;
        }
        let _admission = self.admission.lock().await;
        self.measure_if_over(0).await;
        let mut evicted = self.enforce_shares().await;
        while self.budget.used().total() > self.budget.limit() {
            if self.evict_one("", None).await.is_none() {
                break;
            }
            evicted += 1;
        }
        self.publish_memory();
        evicted
    }

    /// Whether the memory in use is more than half the limit: then the
    /// pages the instances hold are measured every second.
    pub fn memory_pressed(&self) -> bool {
        self.budget.used().total().saturating_mul(2) > self.budget.limit()
    }

    /// Measures the pages the instances hold, unless a sample younger than
    /// `fresh_enough` has, on a blocking thread (it reads `/proc`).
    pub async fn sample_instances(&self, fresh_enough: Duration) {
        let budget = self.budget.clone();
        let _ = tokio::task::spawn_blocking(move || budget.sample_instances(fresh_enough)).await;
    }

    /// When `needed` more bytes would take the memory in use over the
    /// limit, measures the instances' pages again first (unless a sample
    /// is younger than [`FRESH_SAMPLE`]): grants since the last sample
    /// count in full, and must not evict a model or refuse a load alone.
    async fn measure_if_over(&self, needed: u64) {
        if self.budget.used().total().saturating_add(needed) > self.budget.limit() {
            self.sample_instances(FRESH_SAMPLE).await;
        }
    }

    /// Makes room for a model that needs `needed` bytes beyond what is in
    /// use, evicting idle models if this server may, or says why it cannot.
    pub(super) async fn admit(
        &self,
        name: &str,
        needed: u64,
        own_code: u64,
    ) -> Result<(), LoadError> {
        let limit = self.budget.limit();
        if needed.saturating_add(own_code) > limit {
            return Err(LoadError::TooLarge {
                model: name.to_string(),
                needed: budget::mib(needed + own_code),
                detail: format!(
                    "{} of code, {} for its package and first instance",
                    budget::mib(own_code),
                    budget::mib(needed)
                ),
                limit: budget::mib(limit),
            });
        }
        let give_up = Instant::now() + ADMISSION_WAIT;
        loop {
            self.measure_if_over(needed).await;
            let used = self.budget.used().total();
            if used.saturating_add(needed) <= limit {
                return Ok(());
            }
            let refused = |advice, retry| LoadError::NoMemory {
                model: name.to_string(),
                needed: budget::mib(needed),
                used: budget::mib(used),
                limit: budget::mib(limit),
                advice,
                retry,
            };
            if !self.config.evict {
                return Err(refused(
                    "unload a model (DELETE /models/{name}) first",
                    false,
                ));
            }
            if self.evict_one(name, None).await.is_some() {
                continue;
            }
            // Every loaded model is busy; one will soon be idle. The wait is
            // bounded, so that a server full of busy models says so.
            if Instant::now() >= give_up {
                return Err(refused(
                    "every loaded model has had requests in flight for a while; retry shortly",
                    true,
                ));
            }
            tokio::time::sleep(ADMISSION_POLL).await;
        }
    }

    /// Starts a new model's first workers on a compute thread. When the
    /// instance pool is full, a server that may evict makes room by
    /// evicting idle models, as it does for memory.
    pub(super) async fn warm_up(
        &self,
        name: &str,
        backend: WasmBackend,
        label: String,
        count: usize,
    ) -> Result<(WasmBackend, Vec<model::WasmWorker>), LoadError> {
        let mut backend = backend;
        let give_up = Instant::now() + ADMISSION_WAIT;
        let mut evictions = 0;
        loop {
            let (model, task_label) = (name.to_string(), label.clone());
            let (returned, warm) = self
                .scheduler
                .run_task(move || {
                    let warm = model::warm_up(&backend, &model, &task_label, count);
                    (backend, warm)
                })
                .await?;
            backend = returned;
            let full = match warm {
                Err(full @ LoadError::NoCapacity { .. }) if self.config.evict => full,
                other => return other.map(|warm| (backend, warm)),
            };
            if evictions == MAX_POOL_EVICTIONS {
                return Err(LoadError::NoCapacity {
                    model: name.to_string(),
                    reason: "the instance pool stayed full after evicting idle models".to_string(),
                });
            }
            if self.evict_one(name, None).await.is_some() {
                evictions += 1;
                continue;
            }
            // No model is idle right now, or something holds every one for
            // a moment (a pass over all models, such as the periodic
            // retirement of idle workers): one will soon be free again.
            if Instant::now() >= give_up {
                return Err(full);
            }
            tokio::time::sleep(ADMISSION_POLL).await;
        }
    }
}
