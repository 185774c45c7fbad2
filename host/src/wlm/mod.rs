//! Work-load manager: per-model queues, dynamic batching, workers that
//! scale with the backlog, and the fixed pool of compute threads that runs
//! every model's work.
//!
//! It knows nothing of wasm or HTTP. A model is a [`Backend`] that makes
//! workers and runs batches on them; the manager decides when, where and how
//! many. Time comes from a [`Clock`], so the policy is tested with fake
//! workers and fake time (see the tests of [`queue`]).
//!
//! The moving parts:
//! - [`ModelQueue`]: one model's bounded queue, its workers (idle ones hold
//!   memory, not a thread) and its scaling bounds.
//! - [`Scheduler`]: a FIFO of runnable (model, worker) pairs, served by the
//!   compute threads. A model with backlog has one entry per worker it may
//!   use, so a model alone can use every core, and models with backlog take
//!   turns a batch at a time, so a flood cannot starve a trickle. Groups of
//!   models (tenants, [`CpuGroup`]) share the threads by weight, however
//!   many models each has.

mod clock;
mod policy;
mod queue;
mod scheduler;
mod turns;

pub use clock::{Clock, ManualClock, SystemClock};
pub use policy::{Bounds, BoundsError, Settings, workers_to_add};
pub use queue::{Inline, JobError, ModelQueue, QueueStats};
pub use scheduler::{HostFailed, Scheduler, ShuttingDown, TaskError};
pub use turns::CpuGroup;

/// A call of one request begun by [`Backend::start_call`].
pub type InlineCall<B> = std::pin::Pin<Box<dyn Future<Output = InlineOutcome<B>> + Send>>;

/// How a call ended: the worker, unless it broke, and the output, or why
/// the worker broke.
pub type InlineOutcome<B> = (
    Option<<B as Backend>::Worker>,
    Result<<B as Backend>::Output, <B as Backend>::Error>,
);

/// A model, as the work-load manager sees it: something that makes workers
/// and runs batches of inputs on them.
pub trait Backend: Send + Sync + 'static {
    /// A warm worker: for the server, a wasm instance that ran `load`.
    type Worker: Send + 'static;
    /// One request.
    type Input: Send + 'static;
    /// The answer to one request.
    type Output: Send + 'static;
    /// Why a worker could not start or broke; given to every request of the batch.
    type Error: Clone + Send + 'static;

    /// Makes a new worker. Runs on a compute thread.
    fn start_worker(&self) -> Result<Self::Worker, Self::Error>;

    /// Whether `error`, from [`Backend::start_worker`], says that the
    /// server has no room for another worker (the instance pool is full),
    /// rather than that this model is broken. A model that has a worker
    /// then serves its backlog on the workers it has.
    fn is_out_of_room(&self, error: &Self::Error) -> bool {
        let _ = error;
        false
    }

    /// Frees room for one more worker by taking back an idle worker that
    /// another model can spare; true if one was freed. Runs on a compute
    /// thread, with no model's lock held.
    fn make_room(&self) -> bool {
        false
    }

    /// Runs one batch: one output per input, in order. An error means the
    /// worker is broken; it is dropped, and every input of the batch gets
    /// the error. `time_left` is what remains of the earliest deadline in
    /// the batch after its wait in the queue: the run must end by then.
    fn run_batch(
        &self,
        worker: &mut Self::Worker,
        batch: Vec<Self::Input>,
        time_left: std::time::Duration,
    ) -> Result<Vec<Self::Output>, Self::Error>;

    /// Starts a call of one input on `worker` as a future that the caller's
    /// async thread polls once: most calls end there, without a hand-off to
    /// a compute thread; one that is not done then (it waits, or runs past
    /// an epoch tick) ends on a compute thread, which blocks on it. So the
    /// future must yield within a tick and run under any executor. Gives
    /// both back when this worker runs on compute threads only, which is
    /// what a backend that does not override this says of every worker.
    fn start_call(
        &self,
        worker: Self::Worker,
        input: Self::Input,
        _time_left: std::time::Duration,
    ) -> Result<InlineCall<Self>, (Self::Worker, Self::Input)>
    where
        Self: Sized,
    {
        Err((worker, input))
    }
}

/// Starts a worker of `backend`. When the server has no room for it, the
/// backend is asked to make some, and the start is tried once more.
pub fn start_making_room<B: Backend>(backend: &B) -> Result<B::Worker, B::Error> {
    match backend.start_worker() {
        Err(error) if backend.is_out_of_room(&error) && backend.make_room() => {
            backend.start_worker()
        }
        other => other,
    }
}

/// The number of cores this process may use: CPU affinity and cgroup quota
/// both count (`available_parallelism` reads both).
pub fn usable_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
