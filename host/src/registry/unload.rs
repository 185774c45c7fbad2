//! Unloading: a model leaves the map at once, takes no new request, and
//! is freed once the requests in flight on it are answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{LoadError, LoadedModel, Registry};
use crate::store::check_key;

/// How long an unload waits for the requests in flight on the model.
const UNLOAD_WAIT: Duration = Duration::from_secs(30);

impl Registry {
    /// Unloads every loaded version of model `name` (and forgets its failed
    /// loads), as DJL's `DELETE /models/{name}` and Triton's unload do.
    pub async fn unload_all(&self, name: &str) -> Result<(), LoadError> {
        crate::store::check_name(name)?;
        let mut unloaded = false;
        for key in self.keys_of(name) {
            match self.unload(&key).await {
                Ok(()) => unloaded = true,
                Err(LoadError::NotLoaded(_)) => {}
                Err(error) => return Err(error),
            }
        }
        if unloaded {
            Ok(())
        } else {
            Err(LoadError::NotLoaded(name.to_string()))
        }
    }

    /// Unloads model `name`: it takes no new request, the queued ones are
    /// answered (waiting up to `UNLOAD_WAIT`), and its instances and
    /// unpacked folder are freed when this returns.
    /// A model whose last load failed is forgotten, as DJL unregisters a
    /// failed model.
    pub async fn unload(&self, name: &str) -> Result<(), LoadError> {
        check_key(name)?;
        let forgot_failure = {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            failed.remove(name).is_some()
        };
        let model = {
            let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
            let Some(model) = models.get(name).and_then(|slot| slot.get().cloned()) else {
                return if forgot_failure {
                    Ok(())
                } else {
                    Err(LoadError::NotLoaded(name.to_string()))
                };
            };
            models.remove(name);
            model
        };
        model.queue.close();
        self.release(model).await;
        Ok(())
    }

    /// Frees a model whose queue is closed and which is out of the map:
    /// waits for its queue to drain, then drops its instances and package
    /// off the async threads.
    pub(super) async fn release(&self, model: Arc<LoadedModel>) {
        let name = model.name.clone();
        let deadline = Instant::now() + UNLOAD_WAIT;
        while !model.queue.is_drained() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let idle = model.queue.take_idle();
        self.metrics.forget_model(&name);
        let mut model = model;
        loop {
            match Arc::try_unwrap(model) {
                Ok(last) => {
                    // Dropping instances and the unpacked folder blocks: not here.
                    let _ = tokio::task::spawn_blocking(move || drop((idle, last))).await;
                    tracing::info!(model = name, "model unloaded");
                    return;
                }
                Err(shared) if Instant::now() < deadline => {
                    model = shared;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(_) => {
                    drop(idle);
                    tracing::warn!(
                        model = name,
                        "model unloaded; requests in flight still hold it"
                    );
                    return;
                }
            }
        }
    }
}
