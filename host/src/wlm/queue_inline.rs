//! Calls that run inline, on the caller's async thread.
//!
//! A request that finds its model with nothing queued and a started worker
//! idle, while no work waits for a compute thread, runs on that worker at
//! once: no hand-off to a compute thread and back, which is most of what a
//! short call costs. A call that is not done at its first poll (it waits in
//! WASI, or runs past an epoch tick) moves to a compute thread and ends
//! there, so no guest holds an async thread for longer than one tick, and a
//! long call takes its turn on the compute threads as a batch does.

use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use tokio::sync::oneshot;

use super::{JobError, ModelQueue, Reply, ReplyTo, Slot};
use crate::wlm::scheduler::{HostFailed, Runnable};
use crate::wlm::{Backend, InlineCall};

/// A call begun inline by [`ModelQueue::try_inline`]; [`Inline::run`] ends it.
pub struct Inline<B: Backend> {
    queue: Arc<ModelQueue<B>>,
    /// The call, until it runs; dropped unrun, its worker goes with it.
    call: Option<InlineCall<B>>,
    /// Still holds one of the scheduler's places for inline calls.
    placed: bool,
}

impl<B: Backend> ModelQueue<B> {
    /// Begins a call of `input` inline, or gives `input` back when it must
    /// queue: the model has requests waiting or batches them, it has no
    /// started worker idle, work waits for the compute threads, or as many
    /// calls as there are compute threads run inline already.
    pub fn try_inline(self: &Arc<Self>, input: B::Input) -> Result<Inline<B>, B::Input> {
        if !self.scheduler.take_inline() {
            return Err(input);
        }
        let mut state = self.lock();
        let ready = !state.closed && state.jobs.is_empty() && state.settings.batch_size <= 1;
        let (worker, idle_since) = match state.idle.pop() {
            Some(Slot {
                worker: Some(worker),
                idle_since,
            }) if ready => (worker, idle_since),
            other => {
                state.idle.extend(other);
                drop(state);
                self.scheduler.give_inline();
                return Err(input);
            }
        };
        state.busy += 1;
        let time_left = state.settings.queue_timeout;
        self.publish(&state);
        drop(state);
        match self.backend.start_call(worker, input, time_left) {
            Ok(call) => Ok(Inline {
                queue: self.clone(),
                call: Some(call),
                placed: true,
            }),
            Err((worker, input)) => {
                let now = self.scheduler.clock.now();
                let mut state = self.lock();
                state.busy -= 1;
                state.idle.push(Slot {
                    worker: Some(worker),
                    idle_since,
                });
                // Requests that came meanwhile found no worker idle.
                self.dispatch(&mut state, now);
                drop(state);
                self.scheduler.give_inline();
                Err(input)
            }
        }
    }

    /// Ends, on a compute thread, a call that began inline.
    pub(in crate::wlm) fn resume(
        self: Arc<Self>,
        call: InlineCall<B>,
        reply: ReplyTo<B>,
        started: Instant,
    ) {
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(|| futures_executor::block_on(call)));
        self.metrics
            .compute_seconds
            .observe(started.elapsed().as_secs_f64());
        let answer = match outcome {
            Ok((worker, output)) => {
                self.finish(worker, 1);
                output.map_err(JobError::Failed)
            }
            Err(_) => {
                tracing::error!("host code panicked on a call; it is answered with an error");
                self.finish(None, 1);
                Err(JobError::HostFailed(HostFailed))
            }
        };
        let _ = reply.send(answer);
    }
}

impl<B: Backend> Inline<B> {
    /// Runs the call: here, if it ends at its first poll, else on a compute
    /// thread, whose answer it waits for.
    pub async fn run(mut self) -> Reply<B> {
        let Some(mut call) = self.call.take() else {
            return Err(JobError::HostFailed(HostFailed));
        };
        let queue = self.queue.clone();
        queue.metrics.queue_seconds.observe(0.0);
        queue.metrics.batch_size.observe(1.0);
        let started = Instant::now();
        let first = poll_fn(|context| {
            Poll::Ready(std::panic::catch_unwind(AssertUnwindSafe(|| {
                call.as_mut().poll(context)
            })))
        })
        .await;
        self.release();
        match first {
            Ok(Poll::Ready((worker, output))) => {
                queue
                    .metrics
                    .compute_seconds
                    .observe(started.elapsed().as_secs_f64());
                queue.finish(worker, 1);
                output.map_err(JobError::Failed)
            }
            Ok(Poll::Pending) => {
                let (reply, answer) = oneshot::channel();
                // Never refused, as a batch is not: it runs even while the pool stops.
                let _ = queue.scheduler.push(Runnable::Resume {
                    queue: queue.clone(),
                    call,
                    reply,
                    started,
                });
                answer.await.unwrap_or(Err(JobError::Dropped))
            }
            Err(_) => {
                tracing::error!("host code panicked on a call; it is answered with an error");
                queue.finish(None, 1);
                Err(JobError::HostFailed(HostFailed))
            }
        }
    }

    /// Gives the scheduler back its place for an inline call.
    fn release(&mut self) {
        if std::mem::take(&mut self.placed) {
            self.queue.scheduler.give_inline();
        }
    }
}

impl<B: Backend> Drop for Inline<B> {
    fn drop(&mut self) {
        self.release();
        if self.call.take().is_some() {
            // Dropped unrun: its worker went with the call.
            self.queue.finish(None, 0);
        }
    }
}

#[cfg(test)]
#[path = "queue_inline_tests.rs"]
mod tests;
