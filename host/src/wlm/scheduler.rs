//! The compute threads and the run list they serve.
//!
//! The run list holds (model, worker) entries in arrival order within each
//! group of models (a tenant's), and the groups take turns by weight
//! ([`Turns`]). A model with backlog has at most one entry per worker it may
//! use, so a hot model alone fills every thread, and models with backlog
//! take turns a batch at a time. A partial batch that waits for more is
//! parked with a due time and holds no thread.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::oneshot;

use super::queue::{ModelQueue, Slot};
use super::turns::{CpuGroup, GroupId, Turns};
use super::{Backend, Clock, Settings};
use crate::metrics::ModelMetrics;

/// The pool is shutting down and takes no more work.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
#[error("the server is shutting down")]
pub struct ShuttingDown;

/// Host code panicked while it ran this work. It is the server's fault, not
/// the caller's: the panic is in the log, and the thread goes on serving.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
#[error("the server failed on this request (a bug in the server; its log has the details)")]
pub struct HostFailed;

/// Why work given to [`Scheduler::run_task`] has no result.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
pub enum TaskError {
    /// The pool is stopping.
    #[error(transparent)]
    ShuttingDown(#[from] ShuttingDown),
    /// The work panicked.
    #[error(transparent)]
    HostFailed(#[from] HostFailed),
}

type Task = Box<dyn FnOnce() + Send + 'static>;

/// One unit of work for a compute thread.
pub(super) enum Runnable<B: Backend> {
    /// A batch of `queue`, to run on `slot`'s worker. `opened` is when a
    /// worker first took this batch, if it then parked to wait for more.
    Batch {
        queue: Arc<ModelQueue<B>>,
        slot: Slot<B::Worker>,
        opened: Option<Instant>,
    },
    /// Work that is not a model's batch, such as a load's first instance.
    Task(Task),
    /// A call of `queue`'s that began inline and waits: it ends here.
    Resume {
        queue: Arc<ModelQueue<B>>,
        call: super::InlineCall<B>,
        reply: super::queue::ReplyTo<B>,
        /// When its first poll began.
        started: Instant,
    },
}

struct Parked<B: Backend> {
    due: Instant,
    queue: Arc<ModelQueue<B>>,
    slot: Slot<B::Worker>,
    opened: Instant,
}

struct RunList<B: Backend> {
    ready: Turns<Runnable<B>>,
    parked: Vec<Parked<B>>,
    stopping: bool,
    /// Compute threads asleep on the condition variable. Waking costs a
    /// system call, so it is skipped when every thread is busy anyway.
    sleeping: usize,
}

impl<B: Backend> RunList<B> {
    /// Moves the parked batch at `index` to the end of its group's ready work.
    fn unpark_at(&mut self, index: usize) {
        let parked = self.parked.swap_remove(index);
        self.ready.push(
            parked.queue.group,
            Runnable::Batch {
                queue: parked.queue,
                slot: parked.slot,
                opened: Some(parked.opened),
            },
        );
    }
}

/// What the compute threads and the model queues share.
pub(super) struct Inner<B: Backend> {
    pub(super) clock: Arc<dyn Clock>,
    run: Mutex<RunList<B>>,
    wake: Condvar,
    /// Mirrors `RunList::stopping`, readable under a model's lock.
    stopping: AtomicBool,
    /// Whether work waits on the run list: calls then go through it, not
    /// inline, so that they take their turn.
    backlog: AtomicBool,
    /// Calls that may run inline at once, on the async threads: one per
    /// compute thread, so that the guests never run on more threads than
    /// twice the cores.
    inline_free: AtomicUsize,
}

/// The compute threads and their run list.
pub struct Scheduler<B: Backend> {
    inner: Arc<Inner<B>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    thread_count: usize,
}

impl<B: Backend> Scheduler<B> {
    /// Starts `threads` compute threads. With 0 threads nothing runs until
    /// [`Scheduler::run_one`] is called, which is how tests step it.
    pub fn new(clock: Arc<dyn Clock>, threads: usize) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            clock,
            run: Mutex::new(RunList {
                ready: Turns::new(),
                parked: Vec::new(),
                stopping: false,
                sleeping: 0,
            }),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
            backlog: AtomicBool::new(false),
            inline_free: AtomicUsize::new(threads),
        });
        let handles = (0..threads)
            .map(|index| {
                let inner = inner.clone();
                std::thread::Builder::new()
                    .name(format!("mme-compute-{index}"))
                    .spawn(move || inner.serve())
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Scheduler {
            inner,
            threads: Mutex::new(handles),
            thread_count: threads,
        })
    }

    /// Sets how many calls may run inline at once, for tests that step a
    /// scheduler with no threads.
    #[cfg(test)]
    pub(super) fn set_inline_places(&self, places: usize) {
        self.inner.inline_free.store(places, Ordering::SeqCst);
    }

    /// The number of compute threads.
    pub fn threads(&self) -> usize {
        self.thread_count
    }

    /// Adds a model with `warm` workers already started, in `group` (its
    /// tenant's share of the threads) or in none.
    pub fn add_model(
        &self,
        backend: B,
        settings: Settings,
        warm: Vec<B::Worker>,
        metrics: ModelMetrics,
        group: Option<&CpuGroup>,
    ) -> Arc<ModelQueue<B>> {
        let group = self.inner.lock().ready.group(group);
        ModelQueue::new(self.inner.clone(), group, backend, settings, warm, metrics)
    }

    /// Runs `work` on a compute thread, in turn with the models' batches,
    /// and waits for its result without blocking the caller's thread.
    pub async fn run_task<T, F>(&self, work: F) -> Result<T, TaskError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let task: Task = Box::new(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            if outcome.is_err() {
                tracing::error!("host code panicked on a compute thread");
            }
            let _ = done.send(outcome.map_err(|_| HostFailed));
        });
        self.inner.push(Runnable::Task(task))?;
        // A task that never ran was dropped by a stopping pool.
        Ok(result.await.map_err(|_| ShuttingDown)??)
    }

    /// Runs one due unit of work on the calling thread; false if none is due.
    pub fn run_one(&self) -> bool {
        let next = {
            let mut run = self.inner.lock();
            self.inner.pop_due(&mut run)
        };
        match next {
            Some((group, estimate, runnable)) => {
                let started = estimate.map(|estimate| (estimate, Instant::now()));
                Inner::execute(runnable);
                if let Some((estimate, started)) = started {
                    let cost = started.elapsed();
                    self.inner.lock().ready.charge(group, estimate, cost);
                }
                true
            }
            None => false,
        }
    }

    /// Runs what is queued and parked, then stops the threads.
    pub fn shutdown(&self) {
        for handle in self.stop() {
            let _ = handle.join();
        }
    }

    /// [`Scheduler::shutdown`], waiting at most `limit` for the threads.
    /// Gives back how many threads were still busy then; they are left to
    /// end with the process, so that a shutdown keeps its bound whatever a
    /// guest call does.
    pub fn shutdown_within(&self, limit: Duration) -> usize {
        let give_up = Instant::now() + limit;
        let mut running = self.stop();
        loop {
            let (finished, busy): (Vec<_>, Vec<_>) =
                running.into_iter().partition(JoinHandle::is_finished);
            for handle in finished {
                let _ = handle.join();
            }
            running = busy;
            if running.is_empty() || Instant::now() >= give_up {
                return running.len();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Tells the threads to stop once the work is done; gives back their handles.
    fn stop(&self) -> Vec<JoinHandle<()>> {
        self.inner.lock().stopping = true;
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.wake.notify_all();
        std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl<B: Backend> Drop for Scheduler<B> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl<B: Backend> Inner<B> {
    fn lock(&self) -> MutexGuard<'_, RunList<B>> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True once the scheduler is stopping: partial batches then run at once.
    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Queues work for the next free compute thread.
    pub(super) fn push(&self, runnable: Runnable<B>) -> Result<(), ShuttingDown> {
        let group = match &runnable {
            Runnable::Batch { queue, .. } | Runnable::Resume { queue, .. } => queue.group,
            Runnable::Task(_) => GroupId::NONE,
        };
        let mut run = self.lock();
        if run.stopping && matches!(runnable, Runnable::Task(_)) {
            return Err(ShuttingDown);
        }
        run.ready.push(group, runnable);
        self.backlog.store(true, Ordering::Relaxed);
        let wake = run.sleeping > 0;
        drop(run);
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Sets a partial batch aside until `due`, holding no thread.
    pub(super) fn park(
        &self,
        queue: Arc<ModelQueue<B>>,
        slot: Slot<B::Worker>,
        opened: Instant,
        due: Instant,
    ) {
        self.lock().parked.push(Parked {
            due,
            queue,
            slot,
            opened,
        });
        // A thread asleep without a timeout must learn the new due time.
        self.wake.notify_one();
    }

    /// Makes the parked batches of `queue` runnable now: their batch is full.
    pub(super) fn unpark(&self, queue: &Arc<ModelQueue<B>>) {
        let mut run = self.lock();
        let mut index = 0;
        let mut woke = 0;
        while index < run.parked.len() {
            if Arc::ptr_eq(&run.parked[index].queue, queue) {
                run.unpark_at(index);
                woke += 1;
            } else {
                index += 1;
            }
        }
        if woke > 0 {
            self.backlog.store(true, Ordering::Relaxed);
        }
        drop(run);
        for _ in 0..woke {
            self.wake.notify_one();
        }
    }

    /// The next runnable unit, with its group and what it was charged
    /// up front, after moving parked batches that are due (all of them when
    /// stopping) to the end of the ready list.
    fn pop_due(&self, run: &mut RunList<B>) -> Option<(GroupId, Option<Duration>, Runnable<B>)> {
        if !run.parked.is_empty() {
            let now = self.clock.now();
            let stopping = run.stopping;
            let mut index = 0;
            while index < run.parked.len() {
                if stopping || run.parked[index].due <= now {
                    run.unpark_at(index);
                } else {
                    index += 1;
                }
            }
        }
        let next = run.ready.pop();
        self.backlog.store(!run.ready.is_empty(), Ordering::Relaxed);
        next
    }

    /// A place for a call inline on an async thread, if no work waits on
    /// the run list, the pool is not stopping, and fewer calls than compute
    /// threads run inline.
    pub(super) fn take_inline(&self) -> bool {
        !self.backlog.load(Ordering::Relaxed)
            && !self.is_stopping()
            && self
                .inline_free
                .fetch_update(Ordering::Acquire, Ordering::Relaxed, |free| {
                    free.checked_sub(1)
                })
                .is_ok()
    }

    /// Gives back the place that [`Inner::take_inline`] took.
    pub(super) fn give_inline(&self) {
        self.inline_free.fetch_add(1, Ordering::Release);
    }

    /// A compute thread's life: take the next unit, run it, repeat.
    fn serve(self: Arc<Self>) {
        // What the last unit cost, settled under the next lock taken anyway.
        let mut ran: Option<(GroupId, Duration, Duration)> = None;
        loop {
            let (group, estimate, runnable) = {
                let mut run = self.lock();
                if let Some((group, estimate, cost)) = ran.take() {
                    run.ready.charge(group, estimate, cost);
                }
                loop {
                    if let Some(next) = self.pop_due(&mut run) {
                        break next;
                    }
                    if run.stopping && run.parked.is_empty() {
                        return;
                    }
                    let next_due = run.parked.iter().map(|p| p.due).min();
                    run.sleeping += 1;
                    run = match next_due {
                        Some(due) => {
                            let wait = due.saturating_duration_since(self.clock.now());
                            self.wake
                                .wait_timeout(run, wait)
                                .unwrap_or_else(|p| p.into_inner())
                                .0
                        }
                        None => self.wake.wait(run).unwrap_or_else(|p| p.into_inner()),
                    };
                    run.sleeping -= 1;
                }
            };
            // Timed only where groups take turns by what they use.
            let started = estimate.map(|estimate| (estimate, Instant::now()));
            Inner::execute(runnable);
            ran = started.map(|(estimate, started)| (group, estimate, started.elapsed()));
        }
    }

    fn execute(runnable: Runnable<B>) {
        match runnable {
            Runnable::Batch {
                queue,
                slot,
                opened,
            } => queue.execute(slot, opened),
            Runnable::Task(task) => {
                // The task catches its own panics and answers with them.
                task();
            }
            Runnable::Resume {
                queue,
                call,
                reply,
                started,
            } => queue.resume(call, reply, started),
        }
    }
}
