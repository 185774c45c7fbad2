//! The scaling policy and the settings it reads: pure functions, so that
//! the rules are easy to read and to test.

use std::time::Duration;

use thiserror::Error;

/// The most workers one model may ask for.
pub const MAX_WORKERS: usize = 1024;

/// How many workers a model may have; changeable while it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    min: usize,
    max: usize,
}

/// Bounds that cannot hold.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum BoundsError {
    /// `min > max`.
    #[error("min_worker ({min}) is larger than max_worker ({max})")]
    MinAboveMax {
        /// The asked minimum.
        min: usize,
        /// The asked maximum.
        max: usize,
    },
    /// `max` is 0 or too large.
    #[error("max_worker must be from 1 to {MAX_WORKERS}, not {0}")]
    BadMax(usize),
}

impl Bounds {
    /// `min..=max` workers; `min` may be 0 (scale to zero), `max` may not.
    pub fn new(min: usize, max: usize) -> Result<Self, BoundsError> {
        if max == 0 || max > MAX_WORKERS {
            return Err(BoundsError::BadMax(max));
        }
        if min > max {
            return Err(BoundsError::MinAboveMax { min, max });
        }
        Ok(Bounds { min, max })
    }

    /// Workers kept even when idle.
    pub fn min(&self) -> usize {
        self.min
    }

    /// The cap on workers.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// How one model queues, batches and scales.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How many workers it may have.
    pub bounds: Bounds,
    /// Requests handed to one `run_batch` (at least 1).
    pub batch_size: usize,
    /// How long a partial batch waits for more, once a worker has taken it.
    pub max_batch_delay: Duration,
    /// A worker idle this long retires, down to `bounds.min()`.
    pub max_idle_time: Duration,
    /// Requests that may wait; more are refused at once.
    pub job_queue_size: usize,
    /// A request that waited this long is answered without running.
    pub queue_timeout: Duration,
}

/// How many workers to add when `queued` requests wait and the model has
/// `workers`. DJL's rule triggers it (more than two batches waiting, or no
/// worker at all), and the answer is one worker per waiting batch, so that
/// a burst is met in one step instead of one worker per request.
pub fn workers_to_add(queued: usize, workers: usize, batch_size: usize, bounds: Bounds) -> usize {
    let batch_size = batch_size.max(1);
    let mut target = workers.max(bounds.min);
    if queued > 0 {
        target = target.max(1);
    }
    if queued > 2 * batch_size {
        target = target.max(queued.div_ceil(batch_size));
    }
    target.min(bounds.max).saturating_sub(workers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(min: usize, max: usize) -> Bounds {
        Bounds::new(min, max).unwrap()
    }

    #[test]
    fn no_backlog_keeps_the_workers() {
        assert_eq!(workers_to_add(0, 1, 1, bounds(1, 4)), 0);
        assert_eq!(workers_to_add(2, 1, 1, bounds(1, 4)), 0);
        assert_eq!(workers_to_add(16, 1, 8, bounds(1, 4)), 0);
    }

    #[test]
    fn a_model_scaled_to_zero_gets_one_worker_for_its_first_request() {
        assert_eq!(workers_to_add(1, 0, 1, bounds(0, 4)), 1);
        assert_eq!(workers_to_add(0, 0, 1, bounds(0, 4)), 0);
    }

    #[test]
    fn backlog_adds_one_worker_per_waiting_batch_in_one_step() {
        assert_eq!(workers_to_add(3, 1, 1, bounds(1, 64)), 2);
        assert_eq!(workers_to_add(10, 1, 1, bounds(1, 64)), 9);
        assert_eq!(workers_to_add(40, 2, 8, bounds(1, 64)), 3);
    }

    #[test]
    fn growth_stops_at_max_and_never_goes_below_min() {
        assert_eq!(workers_to_add(1000, 1, 1, bounds(1, 4)), 3);
        assert_eq!(workers_to_add(1000, 4, 1, bounds(1, 4)), 0);
        assert_eq!(workers_to_add(1000, 6, 1, bounds(1, 4)), 0);
        assert_eq!(workers_to_add(0, 0, 1, bounds(3, 4)), 3);
    }

    #[test]
    fn impossible_bounds_are_refused_with_the_numbers() {
        assert_eq!(
            Bounds::new(3, 2),
            Err(BoundsError::MinAboveMax { min: 3, max: 2 })
        );
        assert_eq!(Bounds::new(0, 0), Err(BoundsError::BadMax(0)));
        assert!(Bounds::new(0, MAX_WORKERS + 1).is_err());
        assert!(Bounds::new(0, 1).is_ok());
    }
}
