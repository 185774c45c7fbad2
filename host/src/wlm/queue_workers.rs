//! Taking a model's workers back and closing its queue: what the idle
//! sweep, a rescale, the eviction of a model and a model short of room do
//! to a queue from outside its request path.

use std::sync::Arc;

use super::{Backend, ModelQueue, QueueStats, Settings, Slot, State};
use crate::wlm::policy::Bounds;

impl<B: Backend> ModelQueue<B> {
    /// Retires the workers idle for `max_idle_time`, oldest first, down to
    /// the minimum. The caller drops what comes back, off the lock.
    pub fn retire_idle(&self) -> Vec<B::Worker> {
        let now = self.scheduler.clock.now();
        let mut state = self.lock();
        let max_idle = state.settings.max_idle_time;
        let mut removable = state.workers.saturating_sub(state.settings.bounds.min());
        let mut retired = Vec::new();
        let mut kept = Vec::with_capacity(state.idle.len());
        for slot in std::mem::take(&mut state.idle) {
            if removable > 0 && now.saturating_duration_since(slot.idle_since) >= max_idle {
                removable -= 1;
                retired.extend(self.scale_down(&mut state, slot));
            } else {
                kept.push(slot);
            }
        }
        state.idle = kept;
        self.publish(&state);
        retired
    }

    /// Changes the scaling bounds now: missing workers are added (they
    /// start on first use), idle ones above the new maximum retire at once,
    /// busy ones when their batch is done.
    pub fn set_bounds(self: &Arc<Self>, bounds: Bounds) -> Vec<B::Worker> {
        let now = self.scheduler.clock.now();
        let mut state = self.lock();
        state.settings.bounds = bounds;
        let mut retired = Vec::new();
        while state.workers > bounds.max() && !state.idle.is_empty() {
            // Retire empty slots first, then the least recently used.
            let index = state
                .idle
                .iter()
                .position(|slot| slot.worker.is_none())
                .unwrap_or(0);
            let slot = state.idle.remove(index);
            retired.extend(self.scale_down(&mut state, slot));
        }
        self.dispatch(&mut state, now);
        retired
    }

    /// The model's settings now.
    pub fn settings(&self) -> Settings {
        self.lock().settings.clone()
    }

    /// Counts for the describe endpoint.
    pub fn stats(&self) -> QueueStats {
        let state = self.lock();
        QueueStats {
            queued: state.jobs.len(),
            workers: state.workers,
            busy: state.busy,
            bounds: state.settings.bounds,
            scale_ups: state.scale_ups,
            scale_downs: state.scale_downs,
            completed: state.completed,
            rejected: state.rejected,
            expired: state.expired,
        }
    }

    /// Refuses new requests; those queued still run.
    pub fn close(&self) {
        self.lock().closed = true;
    }

    /// Closes the queue only if no request is queued or running, in one
    /// step, so that a request either got in before (and the queue stays
    /// open) or is refused after. False if it was closed already: only one
    /// caller gets to evict a model.
    pub fn close_if_idle(&self) -> bool {
        let mut state = self.lock();
        let idle =
            !state.closed && state.jobs.is_empty() && state.busy == 0 && state.scheduled == 0;
        if idle {
            state.closed = true;
        }
        idle
    }

    /// True when nothing is queued or running.
    pub fn is_drained(&self) -> bool {
        let state = self.lock();
        state.jobs.is_empty() && state.busy == 0 && state.scheduled == 0
    }

    /// Takes back the least recently used idle worker above the model's
    /// minimum, for a model that has no room for one. The caller drops it,
    /// off the lock.
    pub fn take_spare(&self) -> Option<B::Worker> {
        let mut state = self.lock();
        if state.workers <= state.settings.bounds.min() {
            return None;
        }
        // Idle slots are most recently used last; an empty one holds nothing.
        let index = state.idle.iter().position(|slot| slot.worker.is_some())?;
        let slot = state.idle.remove(index);
        let worker = self.scale_down(&mut state, slot);
        self.publish(&state);
        worker
    }

    /// Takes every idle worker out, for the caller to drop.
    pub fn take_idle(&self) -> Vec<B::Worker> {
        let mut state = self.lock();
        let slots = std::mem::take(&mut state.idle);
        state.workers -= slots.len();
        self.publish(&state);
        slots.into_iter().filter_map(|slot| slot.worker).collect()
    }

    /// Counts `slot`, taken out of the idle list, as one worker less; its
    /// worker (if it had started one) is the caller's to drop, off the lock.
    fn scale_down(&self, state: &mut State<B>, slot: Slot<B::Worker>) -> Option<B::Worker> {
        state.workers -= 1;
        state.scale_downs += 1;
        self.metrics.scale_downs.inc();
        slot.worker
    }
}
