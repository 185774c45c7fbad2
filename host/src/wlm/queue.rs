//! One model's queue, workers and batching.
//!
//! Every decision happens under the model's own lock, in [`ModelQueue::submit`]
//! (a request arrives) and in `finish` (a batch is done): scale up, then give
//! each idle worker a waiting batch by putting it on the run list. Lock
//! order: a model's lock, then the run list's; never the reverse.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::oneshot;

use super::Backend;
use super::policy::{Bounds, Settings, workers_to_add};
use super::scheduler::{HostFailed, Inner, Runnable};
use super::turns::GroupId;
use crate::metrics::ModelMetrics;

#[path = "queue_inline.rs"]
mod inline;
#[path = "queue_workers.rs"]
mod workers;

pub use inline::Inline;

/// How long a model whose scale-up found no room serves on the workers it
/// has before it tries to add one again: each try costs a failed
/// instantiation and a look through every model for a spare worker.
pub const ROOM_RETRY: Duration = Duration::from_millis(100);

/// Why a request got no output from the model.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum JobError<E> {
    /// The queue holds `limit` requests already.
    #[error("{limit} requests are already waiting")]
    QueueFull {
        /// The model's `job_queue_size`.
        limit: usize,
    },
    /// The request waited longer than its deadline and was not run.
    #[error("the request waited {waited:?} in the queue, longer than its deadline")]
    Expired {
        /// How long it waited.
        waited: Duration,
    },
    /// The model is being unloaded and takes no new requests.
    #[error("the model is being unloaded")]
    Closed,
    /// The request was dropped unanswered: the server is stopping.
    #[error("the request was dropped: the server is stopping")]
    Dropped,
    /// Host code panicked on this request's batch.
    #[error(transparent)]
    HostFailed(#[from] HostFailed),
    /// The worker could not start, or broke on this batch.
    #[error("{0}")]
    Failed(E),
}

pub(super) type Reply<B> = Result<<B as Backend>::Output, JobError<<B as Backend>::Error>>;

/// Where a request's answer goes.
pub(super) type ReplyTo<B> = oneshot::Sender<Reply<B>>;

/// A request's reply channel and its answer, ready to send.
type Answer<B> = (oneshot::Sender<Reply<B>>, Reply<B>);

struct Job<B: Backend> {
    input: B::Input,
    enqueued: Instant,
    reply: oneshot::Sender<Reply<B>>,
}

/// A worker slot: a started worker, or room for one that starts on first use.
pub(crate) struct Slot<W> {
    worker: Option<W>,
    idle_since: Instant,
}

/// What the describe endpoint shows of a model's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// Requests waiting.
    pub queued: usize,
    /// Workers, busy or not.
    pub workers: usize,
    /// Workers running a batch now.
    pub busy: usize,
    /// The scaling bounds.
    pub bounds: Bounds,
    /// Times the model added workers because of backlog.
    pub scale_ups: u64,
    /// Workers retired: idle too long, or above a lowered maximum.
    pub scale_downs: u64,
    /// Requests answered by the model.
    pub completed: u64,
    /// Requests refused because the queue was full.
    pub rejected: u64,
    /// Requests answered without running because they waited too long.
    pub expired: u64,
}

struct State<B: Backend> {
    settings: Settings,
    jobs: VecDeque<Job<B>>,
    /// Workers not on the run list, most recently used last.
    idle: Vec<Slot<B::Worker>>,
    /// Every worker: idle, on the run list, or busy.
    workers: usize,
    /// Workers on the run list, ready or parked.
    scheduled: usize,
    /// Parked workers, waiting for their batch to fill.
    parked: usize,
    busy: usize,
    closed: bool,
    /// No scale-up before this: the last one found no room, and the model
    /// has workers of its own.
    scale_paused_until: Option<Instant>,
    scale_ups: u64,
    scale_downs: u64,
    completed: u64,
    rejected: u64,
    expired: u64,
}

/// One model's bounded queue and workers.
pub struct ModelQueue<B: Backend> {
    scheduler: Arc<Inner<B>>,
    /// Whose turn its batches take on the compute threads.
    pub(super) group: GroupId,
    backend: B,
    metrics: ModelMetrics,
    state: Mutex<State<B>>,
}

impl<B: Backend> ModelQueue<B> {
    pub(super) fn new(
        scheduler: Arc<Inner<B>>,
        group: GroupId,
        backend: B,
        settings: Settings,
        warm: Vec<B::Worker>,
        metrics: ModelMetrics,
    ) -> Arc<Self> {
        let now = scheduler.clock.now();
        let idle: Vec<_> = warm
            .into_iter()
            .map(|worker| Slot {
                worker: Some(worker),
                idle_since: now,
            })
            .collect();
        let queue = Arc::new(ModelQueue {
            scheduler,
            group,
            backend,
            metrics,
            state: Mutex::new(State {
                settings,
                jobs: VecDeque::new(),
                workers: idle.len(),
                idle,
                scheduled: 0,
                parked: 0,
                busy: 0,
                closed: false,
                scale_paused_until: None,
                scale_ups: 0,
                scale_downs: 0,
                completed: 0,
                rejected: 0,
                expired: 0,
            }),
        });
        let mut state = queue.lock();
        queue.dispatch(&mut state, now);
        drop(state);
        queue
    }

    fn lock(&self) -> MutexGuard<'_, State<B>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The model's backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Queues `input` and waits for its output. A full queue answers at
    /// once; nothing here blocks a thread.
    pub async fn call(self: &Arc<Self>, input: B::Input) -> Reply<B> {
        let receiver = self.submit(input)?;
        receiver.await.unwrap_or(Err(JobError::Dropped))
    }

    /// Queues `input`; the receiver gets its output.
    pub fn submit(
        self: &Arc<Self>,
        input: B::Input,
    ) -> Result<oneshot::Receiver<Reply<B>>, JobError<B::Error>> {
        self.try_submit(input).map_err(|(error, _)| error)
    }

    /// Queues `input`, or gives it back with the reason it was refused, so
    /// that a caller can send it elsewhere (to a reloaded model, say).
    #[allow(clippy::type_complexity)] // The pair is the whole point.
    pub fn try_submit(
        self: &Arc<Self>,
        input: B::Input,
    ) -> Result<oneshot::Receiver<Reply<B>>, (JobError<B::Error>, B::Input)> {
        let now = self.scheduler.clock.now();
        let mut state = self.lock();
        if state.closed {
            return Err((JobError::Closed, input));
        }
        if state.jobs.len() >= state.settings.job_queue_size {
            state.rejected += 1;
            let limit = state.settings.job_queue_size;
            return Err((JobError::QueueFull { limit }, input));
        }
        let (reply, receiver) = oneshot::channel();
        state.jobs.push_back(Job {
            input,
            enqueued: now,
            reply,
        });
        if state.parked > 0 && state.jobs.len() >= state.settings.batch_size {
            state.parked = 0;
            self.scheduler.unpark(self);
        }
        self.dispatch(&mut state, now);
        Ok(receiver)
    }

    /// Scales up if the backlog asks for it, then puts idle workers on the
    /// run list, one per waiting batch.
    fn dispatch(self: &Arc<Self>, state: &mut State<B>, now: Instant) {
        let settings = &state.settings;
        let paused = state.workers > 0 && state.scale_paused_until.is_some_and(|until| now < until);
        let add = if paused {
            0
        } else {
            workers_to_add(
                state.jobs.len(),
                state.workers,
                settings.batch_size,
                settings.bounds,
            )
        };
        if add > 0 {
            if state.workers >= settings.bounds.min() && !state.jobs.is_empty() {
                state.scale_ups += 1;
                self.metrics.scale_ups.inc();
            }
            state.workers += add;
            state.idle.splice(
                0..0,
                (0..add).map(|_| Slot {
                    worker: None,
                    idle_since: now,
                }),
            );
        }
        let wanted = state.jobs.len().div_ceil(state.settings.batch_size.max(1));
        while state.scheduled < wanted {
            let Some(slot) = state.idle.pop() else { break };
            state.scheduled += 1;
            // Only tasks are refused while stopping; batches always run.
            let _ = self.scheduler.push(Runnable::Batch {
                queue: self.clone(),
                slot,
                opened: None,
            });
        }
        self.publish(state);
    }

    fn publish(&self, state: &State<B>) {
        self.metrics.queue_length.set(state.jobs.len() as i64);
        self.metrics.workers.set(state.workers as i64);
        self.metrics.busy_workers.set(state.busy as i64);
    }

    /// Runs on a compute thread: takes a batch and runs it on `slot`, or
    /// parks the slot while a partial batch waits for more.
    pub(super) fn execute(self: Arc<Self>, slot: Slot<B::Worker>, opened: Option<Instant>) {
        let now = self.scheduler.clock.now();
        let mut state = self.lock();
        if opened.is_some() {
            // A hint only: a stale count costs a batch at most its delay.
            state.parked = state.parked.saturating_sub(1);
        }
        self.expire(&mut state, now);
        let batch_size = state.settings.batch_size.max(1);
        if state.jobs.is_empty() {
            state.scheduled -= 1;
            state.idle.push(Slot {
                worker: slot.worker,
                idle_since: now,
            });
            self.publish(&state);
            return;
        }
        if batch_size > 1
            && state.jobs.len() < batch_size
            && !state.closed
            && !self.scheduler.is_stopping()
        {
            let opened = opened.unwrap_or(now);
            let due = opened + state.settings.max_batch_delay;
            if now < due {
                state.parked += 1;
                self.scheduler.park(self.clone(), slot, opened, due);
                return;
            }
        }
        let count = state.jobs.len().min(batch_size);
        let jobs: Vec<Job<B>> = state.jobs.drain(..count).collect();
        let queue_timeout = state.settings.queue_timeout;
        state.scheduled -= 1;
        state.busy += 1;
        self.publish(&state);
        drop(state);

        let (worker, now) = match slot.worker {
            Some(worker) => (worker, now),
            None => match self.start_worker() {
                Ok(worker) => (worker, self.scheduler.clock.now()),
                Err(error) => return self.not_started(jobs, error),
            },
        };
        // The first job waited longest: its deadline is the batch's.
        let time_left = jobs.first().map_or(Duration::ZERO, |first| {
            let waited = now.saturating_duration_since(first.enqueued);
            queue_timeout.saturating_sub(waited)
        });
        let (inputs, replies): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .map(|job| {
                self.metrics
                    .queue_seconds
                    .observe(now.saturating_duration_since(job.enqueued).as_secs_f64());
                (job.input, job.reply)
            })
            .unzip();
        self.metrics.batch_size.observe(inputs.len() as f64);
        let (worker, answers) = self.run(worker, inputs, replies, time_left);
        // The counts are updated before anyone sees an answer, so that a
        // caller who asks for them right after its answer finds it counted.
        self.finish(worker, count);
        for (reply, answer) in answers {
            let _ = reply.send(answer);
        }
    }

    /// Answers, without running them, the requests that waited past their deadline.
    fn expire(&self, state: &mut State<B>, now: Instant) {
        let timeout = state.settings.queue_timeout;
        while let Some(job) = state.jobs.front() {
            let waited = now.saturating_duration_since(job.enqueued);
            if waited < timeout {
                break;
            }
            if let Some(job) = state.jobs.pop_front() {
                state.expired += 1;
                let _ = job.reply.send(Err(JobError::Expired { waited }));
            }
        }
    }

    /// Starts a worker for a slot that has none.
    fn start_worker(&self) -> Result<B::Worker, JobError<B::Error>> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            super::start_making_room(&self.backend)
        }))
        .map_err(|_| {
            tracing::error!(
                "host code panicked starting a worker; its batch is answered with an error"
            );
            JobError::HostFailed(HostFailed)
        })?
        .map_err(JobError::Failed)
    }

    /// A batch whose worker could not start. When there was no room for it
    /// and the model has workers of its own, they serve the batch: it goes
    /// back to the head of the queue, and scale-ups pause for
    /// [`ROOM_RETRY`]. Otherwise every request of the batch gets the error.
    fn not_started(self: &Arc<Self>, jobs: Vec<Job<B>>, error: JobError<B::Error>) {
        let out_of_room = matches!(&error, JobError::Failed(e) if self.backend.is_out_of_room(e));
        if out_of_room {
            let now = self.scheduler.clock.now();
            let mut state = self.lock();
            if state.workers > 1 {
                state.busy -= 1;
                state.workers -= 1;
                for job in jobs.into_iter().rev() {
                    state.jobs.push_front(job);
                }
                state.scale_paused_until = Some(now + ROOM_RETRY);
                self.dispatch(&mut state, now);
                return;
            }
        }
        let count = jobs.len();
        self.finish(None, count);
        for job in jobs {
            let _ = job.reply.send(Err(error.clone()));
        }
    }

    /// Runs the batch; the worker comes back unless it broke, with each
    /// request's answer, not sent yet.
    fn run(
        &self,
        worker: B::Worker,
        inputs: Vec<B::Input>,
        replies: Vec<oneshot::Sender<Reply<B>>>,
        time_left: Duration,
    ) -> (Option<B::Worker>, Vec<Answer<B>>) {
        let started = std::time::Instant::now();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<_, B::Error> {
                let mut worker = worker;
                let outputs = self.backend.run_batch(&mut worker, inputs, time_left)?;
                Ok((worker, outputs))
            }));
        self.metrics
            .compute_seconds
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok((worker, outputs))) => {
                let mut outputs = outputs.into_iter();
                let answers = replies
                    .into_iter()
                    .map(|reply| {
                        (
                            reply,
                            outputs.next().ok_or(JobError::HostFailed(HostFailed)),
                        )
                    })
                    .collect();
                (Some(worker), answers)
            }
            Ok(Err(error)) => {
                let answers = replies
                    .into_iter()
                    .map(|reply| (reply, Err(JobError::Failed(error.clone()))))
                    .collect();
                (None, answers)
            }
            Err(_) => {
                tracing::error!(
                    "host code panicked on a batch; its requests are answered with an error"
                );
                let answers = replies
                    .into_iter()
                    .map(|reply| (reply, Err(JobError::HostFailed(HostFailed))))
                    .collect();
                (None, answers)
            }
        }
    }

    /// A batch is done: the worker goes back to the idle list (or retires if
    /// the maximum was lowered meanwhile), and the backlog is dispatched.
    fn finish(self: &Arc<Self>, worker: Option<B::Worker>, answered: usize) {
        let now = self.scheduler.clock.now();
        let mut state = self.lock();
        state.busy -= 1;
        state.completed += answered as u64;
        let mut retired = None;
        match worker {
            Some(worker) if state.workers <= state.settings.bounds.max() => {
                state.idle.push(Slot {
                    worker: Some(worker),
                    idle_since: now,
                });
            }
            Some(worker) => {
                state.workers -= 1;
                state.scale_downs += 1;
                self.metrics.scale_downs.inc();
                retired = Some(worker);
            }
            None => state.workers -= 1,
        }
        self.dispatch(&mut state, now);
        drop(state);
        drop(retired);
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
