//! Inline calls, stepped by hand: the first poll on the test's thread, the
//! rest on a compute thread that the test runs.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use super::super::tests::{Fake, Harness, answers, settings, submit_all};
use super::*;

/// Polls `future` once, as an async thread would.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// Runs `inline` when its call ends at the first poll.
fn run_at_once(inline: Inline<Fake>) -> Reply<Fake> {
    match poll_once(pin!(inline.run())) {
        Poll::Ready(reply) => reply,
        Poll::Pending => panic!("the call should end at its first poll"),
    }
}

#[test]
fn an_idle_model_answers_inline_and_keeps_its_worker() {
    let h = Harness::with_inline(2);
    let queue = h.model("a", settings(1, 4, 1), 1);
    let inline = queue
        .try_inline(3)
        .unwrap_or_else(|_| panic!("idle: runs inline"));
    assert_eq!(queue.stats().busy, 1, "its worker is busy while it runs");
    assert_eq!(run_at_once(inline), Ok(6));
    assert_eq!(h.run_all(), 0, "nothing went to the compute threads");
    let stats = queue.stats();
    assert_eq!((stats.workers, stats.busy, stats.completed), (1, 0, 1));
    assert_eq!(h.batches("a"), vec![vec![3]]);
    // Its worker is idle again, and so is its place.
    let again = queue
        .try_inline(4)
        .unwrap_or_else(|_| panic!("runs inline again"));
    assert_eq!(run_at_once(again), Ok(8));
}

#[test]
fn calls_queue_when_the_model_or_the_compute_threads_have_work_waiting() {
    let h = Harness::with_inline(2);
    let queue = h.model("a", settings(1, 1, 1), 1);
    let waiting = submit_all(&queue, [1]);
    assert_eq!(
        queue.try_inline(2).err(),
        Some(2),
        "work on the run list: its turn comes first"
    );
    h.run_all();
    assert_eq!(answers(waiting), vec![Ok(2)]);

    let cold = h.model("cold", settings(0, 1, 1), 0);
    assert_eq!(cold.try_inline(5).err(), Some(5), "no worker started yet");
    let batching = h.model("batching", settings(1, 1, 4), 1);
    assert_eq!(batching.try_inline(6).err(), Some(6), "it batches");
    assert!(
        queue.try_inline(7).is_ok(),
        "the refusals gave back their places"
    );
}

#[test]
fn no_more_calls_run_inline_than_there_are_places() {
    let h = Harness::with_inline(1);
    let a = h.model("a", settings(1, 1, 1), 1);
    let b = h.model("b", settings(1, 1, 1), 1);
    let first = a
        .try_inline(1)
        .unwrap_or_else(|_| panic!("a place is free"));
    assert_eq!(b.try_inline(2).err(), Some(2), "the one place is taken");
    assert_eq!(run_at_once(first), Ok(2));
    assert!(b.try_inline(3).is_ok(), "the place is free again");
}

#[test]
fn a_call_that_waits_ends_on_a_compute_thread() {
    let h = Harness::with_inline(1);
    let queue = h.model("a", settings(1, 1, 1), 1);
    let inline = queue.try_inline(700).unwrap_or_else(|_| panic!("idle"));
    let mut run = pin!(inline.run());
    assert!(poll_once(run.as_mut()).is_pending(), "it waits");
    assert!(
        h.model("b", settings(1, 1, 1), 1).try_inline(1).is_err(),
        "the waiting call is on the run list"
    );
    assert_eq!(h.run_all(), 1, "a compute thread ends it");
    assert_eq!(poll_once(run.as_mut()), Poll::Ready(Ok(1400)));
    let stats = queue.stats();
    assert_eq!((stats.workers, stats.busy, stats.completed), (1, 0, 1));
    assert!(queue.try_inline(2).is_ok(), "its place and worker are free");
}

#[test]
fn a_broken_or_panicking_call_loses_its_worker_and_a_new_one_starts() {
    let h = Harness::with_inline(1);
    let queue = h.model("a", settings(0, 2, 1), 1);
    let broken = queue.try_inline(999).unwrap_or_else(|_| panic!("idle"));
    assert_eq!(run_at_once(broken), Err(JobError::Failed("broken".into())));
    assert_eq!(queue.stats().workers, 0, "the broken worker is gone");
    let next = submit_all(&queue, [1]);
    h.run_all();
    assert_eq!(answers(next), vec![Ok(2)], "a new worker serves the next");

    let panicked = queue.try_inline(666).unwrap_or_else(|_| panic!("idle"));
    assert_eq!(run_at_once(panicked), Err(JobError::HostFailed(HostFailed)));
    let stats = queue.stats();
    assert_eq!((stats.workers, stats.busy), (0, 0));
    assert!(
        queue.try_inline(1).is_err(),
        "no worker is left to run inline, and the place is free: the refusal is the model's"
    );
}

#[test]
fn a_call_dropped_unrun_frees_its_place_and_counts_its_worker_lost() {
    let h = Harness::with_inline(1);
    let queue = h.model("a", settings(0, 2, 1), 1);
    drop(queue.try_inline(1).unwrap_or_else(|_| panic!("idle")));
    let stats = queue.stats();
    assert_eq!((stats.workers, stats.busy), (0, 0));
    let other = h.model("b", settings(1, 1, 1), 1);
    assert!(other.try_inline(2).is_ok(), "the place came back");
}
