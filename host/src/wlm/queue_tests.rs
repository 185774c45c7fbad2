//! The policy, driven deterministically: fake workers, a manual clock, and a
//! scheduler with no threads that the test steps by hand.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::wlm::{HostFailed, ManualClock, Scheduler, ShuttingDown, TaskError};

/// Every batch run, under its model's name, in order.
type BatchLog = Arc<Mutex<Vec<(&'static str, Vec<u32>)>>>;

/// Doubles its inputs and logs every batch under the model's name. Input
/// 999 breaks the worker; 666 panics. With `inline`, its calls may run
/// inline, where inputs from 700 to 799 wait once before they answer.
pub(super) struct Fake {
    name: &'static str,
    log: BatchLog,
    started: AtomicUsize,
    room: Option<Arc<Room>>,
    inline: bool,
}

/// An instance pool for fakes that share it: `free` workers can start,
/// and `spares` more once other models give theirs back.
#[derive(Default)]
struct Room {
    free: AtomicUsize,
    spares: AtomicUsize,
}

const NO_ROOM: &str = "no room";

fn take_one(count: &AtomicUsize) -> bool {
    count
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Backend for Fake {
    type Worker = usize;
    type Input = u32;
    type Output = u32;
    type Error = String;

    fn start_worker(&self) -> Result<usize, String> {
        if let Some(room) = &self.room
            && !take_one(&room.free)
        {
            return Err(NO_ROOM.into());
        }
        Ok(self.started.fetch_add(1, Ordering::SeqCst))
    }

    fn is_out_of_room(&self, error: &String) -> bool {
        error == NO_ROOM
    }

    fn make_room(&self) -> bool {
        let Some(room) = &self.room else {
            return false;
        };
        let freed = take_one(&room.spares);
        if freed {
            room.free.fetch_add(1, Ordering::SeqCst);
        }
        freed
    }

    fn run_batch(
        &self,
        _worker: &mut usize,
        batch: Vec<u32>,
        _time_left: Duration,
    ) -> Result<Vec<u32>, String> {
        self.log.lock().unwrap().push((self.name, batch.clone()));
        if batch.contains(&666) {
            panic!("host bug");
        }
        if batch.contains(&999) {
            return Err("broken".into());
        }
        Ok(batch.iter().map(|x| x * 2).collect())
    }

    fn start_call(
        &self,
        worker: usize,
        input: u32,
        _time_left: Duration,
    ) -> Result<crate::wlm::InlineCall<Self>, (usize, u32)> {
        if !self.inline {
            return Err((worker, input));
        }
        self.log.lock().unwrap().push((self.name, vec![input]));
        Ok(Box::pin(async move {
            if (700..800).contains(&input) {
                // Pending at the first poll, ready at the second.
                tokio::task::yield_now().await;
            }
            match input {
                666 => panic!("host bug"),
                999 => (None, Err("broken".to_string())),
                _ => (Some(worker), Ok(input * 2)),
            }
        }))
    }
}

pub(super) struct Harness {
    clock: Arc<ManualClock>,
    scheduler: Scheduler<Fake>,
    log: BatchLog,
    inline: bool,
}

impl Harness {
    pub(super) fn new() -> Self {
        Self::with_inline(0)
    }

    /// Models whose calls may run inline, `places` at once.
    pub(super) fn with_inline(places: usize) -> Self {
        let clock = Arc::new(ManualClock::default());
        let scheduler = Scheduler::new(clock.clone(), 0).unwrap();
        scheduler.set_inline_places(places);
        Harness {
            scheduler,
            clock,
            log: Arc::default(),
            inline: places > 0,
        }
    }

    pub(super) fn model(
        &self,
        name: &'static str,
        settings: Settings,
        warm: usize,
    ) -> Arc<ModelQueue<Fake>> {
        self.model_in(name, settings, warm, None)
    }

    /// A model whose new workers need room in `room`.
    fn model_in(
        &self,
        name: &'static str,
        settings: Settings,
        warm: usize,
        room: Option<Arc<Room>>,
    ) -> Arc<ModelQueue<Fake>> {
        let backend = Fake {
            name,
            log: self.log.clone(),
            started: AtomicUsize::new(0),
            room,
            inline: self.inline,
        };
        self.scheduler.add_model(
            backend,
            settings,
            (0..warm).map(|i| 100 + i).collect(),
            ModelMetrics::detached(),
            None,
        )
    }

    /// Steps until nothing is due; returns how many units ran.
    pub(super) fn run_all(&self) -> usize {
        let mut steps = 0;
        while self.scheduler.run_one() {
            steps += 1;
            assert!(steps < 10_000, "the scheduler never settles");
        }
        steps
    }

    pub(super) fn batches(&self, name: &str) -> Vec<Vec<u32>> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

pub(super) fn settings(min: usize, max: usize, batch_size: usize) -> Settings {
    Settings {
        bounds: Bounds::new(min, max).unwrap(),
        batch_size,
        max_batch_delay: Duration::from_millis(100),
        max_idle_time: Duration::from_secs(60),
        job_queue_size: 1000,
        queue_timeout: Duration::from_secs(60),
    }
}

type Receiver = oneshot::Receiver<Reply<Fake>>;

pub(super) fn submit_all(
    queue: &Arc<ModelQueue<Fake>>,
    inputs: impl IntoIterator<Item = u32>,
) -> Vec<Receiver> {
    inputs
        .into_iter()
        .map(|i| queue.submit(i).unwrap())
        .collect()
}

pub(super) fn answers(receivers: Vec<Receiver>) -> Vec<Reply<Fake>> {
    receivers
        .into_iter()
        .map(|mut r| r.try_recv().expect("every request is answered"))
        .collect()
}

#[test]
fn backlog_scales_up_in_proportion_and_stops_at_max() {
    let h = Harness::new();
    let queue = h.model("a", settings(1, 8, 1), 1);
    let first = submit_all(&queue, [1, 2]);
    assert_eq!(
        queue.stats().workers,
        1,
        "two waiting requests are no backlog"
    );
    let more = submit_all(&queue, [3]);
    assert_eq!(
        queue.stats().workers,
        3,
        "three waiting: one worker per request"
    );
    let burst = submit_all(&queue, 4..=20);
    assert_eq!(queue.stats().workers, 8, "capped at max");
    h.run_all();
    let all: Vec<_> = answers(first)
        .into_iter()
        .chain(answers(more))
        .chain(answers(burst))
        .collect();
    assert_eq!(all, (1..=20).map(|i| Ok(i * 2)).collect::<Vec<_>>());
    assert_eq!(queue.stats().completed, 20);
    assert_eq!(queue.stats().busy, 0);
}

#[test]
fn a_backlog_met_by_a_raised_max_is_met_in_one_step() {
    let h = Harness::new();
    let queue = h.model("a", settings(1, 1, 2), 1);
    let receivers = submit_all(&queue, 0..40);
    assert_eq!(queue.stats().workers, 1);
    queue.set_bounds(Bounds::new(1, 64).unwrap());
    let stats = queue.stats();
    assert_eq!(stats.workers, 20, "one worker per waiting batch of 2");
    assert_eq!(stats.scale_ups, 1, "in one step");
    h.run_all();
    assert_eq!(answers(receivers).len(), 40);
}

#[test]
fn idle_workers_retire_after_max_idle_time_down_to_min() {
    let h = Harness::new();
    let queue = h.model("a", settings(1, 4, 1), 1);
    let receivers = submit_all(&queue, 0..10);
    assert_eq!(queue.stats().workers, 4);
    h.run_all();
    answers(receivers);
    h.clock.advance(Duration::from_secs(59));
    assert!(queue.retire_idle().is_empty(), "not idle long enough yet");
    h.clock.advance(Duration::from_secs(1));
    let retired = queue.retire_idle();
    assert_eq!(retired.len(), 3);
    let stats = queue.stats();
    assert_eq!((stats.workers, stats.scale_downs), (1, 3));
}

#[test]
fn a_model_with_min_zero_scales_to_zero_and_back() {
    let h = Harness::new();
    let queue = h.model("a", settings(0, 2, 1), 1);
    h.clock.advance(Duration::from_secs(60));
    assert_eq!(queue.retire_idle(), vec![100]);
    assert_eq!(queue.stats().workers, 0);
    let receivers = submit_all(&queue, [21]);
    assert_eq!(
        queue.stats().workers,
        1,
        "the first request brings a worker back"
    );
    h.run_all();
    assert_eq!(answers(receivers), vec![Ok(42)]);
    assert_eq!(
        queue.backend().started.load(Ordering::SeqCst),
        1,
        "it started on first use"
    );
}

#[test]
fn bounds_change_live() {
    let h = Harness::new();
    let queue = h.model("a", settings(1, 4, 1), 1);
    queue.set_bounds(Bounds::new(3, 6).unwrap());
    assert_eq!(queue.stats().workers, 3, "raising min adds workers at once");
    let retired = queue.set_bounds(Bounds::new(0, 1).unwrap());
    assert!(
        retired.is_empty(),
        "slots never started go first; the warm one stays"
    );
    assert_eq!(queue.stats().workers, 1);
    let receivers = submit_all(&queue, [1]);
    h.run_all();
    assert_eq!(answers(receivers), vec![Ok(2)]);
    assert_eq!(
        queue.backend().started.load(Ordering::SeqCst),
        0,
        "the warm worker served it"
    );
    let receivers = submit_all(&queue, 0..10);
    assert_eq!(queue.stats().workers, 1, "never above the new max");
    h.run_all();
    assert_eq!(answers(receivers).len(), 10);
}

#[test]
fn a_full_queue_refuses_at_once_and_takes_requests_again_once_drained() {
    let h = Harness::new();
    let mut s = settings(1, 1, 1);
    s.job_queue_size = 3;
    let queue = h.model("a", s, 1);
    let receivers = submit_all(&queue, [1, 2, 3]);
    assert_eq!(
        queue.submit(4).err(),
        Some(JobError::QueueFull { limit: 3 })
    );
    assert_eq!(queue.stats().rejected, 1);
    h.run_all();
    assert_eq!(answers(receivers).len(), 3);
    assert!(queue.submit(5).is_ok());
}

#[test]
fn a_batch_takes_up_to_batch_size_and_a_partial_one_waits_for_the_delay() {
    let h = Harness::new();
    let queue = h.model("a", settings(1, 3, 4), 1);
    let receivers = submit_all(&queue, 0..10);
    h.run_all();
    assert_eq!(h.batches("a"), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
    h.clock.advance(Duration::from_millis(99));
    h.run_all();
    assert_eq!(h.batches("a").len(), 2, "the partial batch waits its delay");
    h.clock.advance(Duration::from_millis(1));
    h.run_all();
    assert_eq!(h.batches("a")[2], vec![8, 9]);
    assert_eq!(answers(receivers).len(), 10);
}

#[test]
fn a_parked_batch_runs_as_soon_as_it_fills() {
    let h = Harness::new();
    let queue = h.model("a", settings(1, 1, 4), 1);
    let mut receivers = submit_all(&queue, [1]);
    h.run_all();
    assert!(h.batches("a").is_empty(), "one request waits for company");
    receivers.extend(submit_all(&queue, [2, 3, 4]));
    h.run_all();
    assert_eq!(
        h.batches("a"),
        vec![vec![1, 2, 3, 4]],
        "no wait for the delay"
    );
    assert_eq!(answers(receivers), vec![Ok(2), Ok(4), Ok(6), Ok(8)]);
}

#[test]
fn a_request_that_waited_past_its_deadline_is_answered_without_running() {
    let h = Harness::new();
    let mut s = settings(1, 1, 1);
    s.queue_timeout = Duration::from_secs(1);
    let queue = h.model("a", s, 1);
    let receivers = submit_all(&queue, [1]);
    h.clock.advance(Duration::from_secs(2));
    h.run_all();
    assert_eq!(
        answers(receivers),
        vec![Err(JobError::Expired {
            waited: Duration::from_secs(2)
        })]
    );
    assert!(h.batches("a").is_empty());
    assert_eq!(queue.stats().expired, 1);
}

#[test]
fn models_with_backlog_take_turns() {
    let h = Harness::new();
    let flood = h.model("flood", settings(1, 2, 1), 1);
    let trickle = h.model("trickle", settings(1, 2, 1), 1);
    let flooded = submit_all(&flood, 0..100);
    let trickled = submit_all(&trickle, 0..10);
    // Run only 20 batches: a fair scheduler has served the whole trickle by then.
    for _ in 0..20 {
        assert!(h.scheduler.run_one());
    }
    assert_eq!(h.batches("trickle").len(), 10, "the trickle is not starved");
    assert_eq!(h.batches("flood").len(), 10);
    h.run_all();
    assert_eq!(answers(flooded).len() + answers(trickled).len(), 110);

    // One late request to a quiet model waits for at most the flood's workers.
    let more = submit_all(&flood, 0..100);
    let late = submit_all(&trickle, [7]);
    for _ in 0..3 {
        h.scheduler.run_one();
    }
    assert_eq!(h.batches("trickle").last(), Some(&vec![7]));
    h.run_all();
    assert_eq!(answers(more).len() + answers(late).len(), 101);
}

#[test]
fn a_broken_worker_fails_its_batch_and_is_replaced() {
    let h = Harness::new();
    let queue = h.model("a", settings(1, 1, 1), 1);
    let receivers = submit_all(&queue, [999, 5]);
    h.run_all();
    assert_eq!(
        answers(receivers),
        vec![Err(JobError::Failed("broken".into())), Ok(10)]
    );
    assert_eq!(
        queue.backend().started.load(Ordering::SeqCst),
        1,
        "a new worker started"
    );
    assert_eq!(queue.stats().workers, 1);
}

#[test]
fn a_panic_in_the_backend_drops_that_batch_and_nothing_else() {
    let h = Harness::new();
    let queue = h.model("a", settings(1, 1, 1), 1);
    let mut receivers = submit_all(&queue, [666, 5]);
    h.run_all();
    assert_eq!(
        receivers[0].try_recv(),
        Ok(Err(JobError::HostFailed(HostFailed))),
        "the panicked request is answered as the server's failure"
    );
    assert_eq!(receivers[1].try_recv(), Ok(Ok(10)));
    let receivers = submit_all(&queue, [6]);
    h.run_all();
    assert_eq!(answers(receivers), vec![Ok(12)]);
    assert_eq!(queue.stats().busy, 0);
}

#[test]
fn a_closed_queue_refuses_new_requests_and_finishes_the_queued_ones() {
    let h = Harness::new();
    let queue = h.model("a", settings(1, 1, 1), 1);
    let receivers = submit_all(&queue, [1, 2]);
    queue.close();
    assert_eq!(queue.submit(3).err(), Some(JobError::Closed));
    assert!(!queue.is_drained());
    h.run_all();
    assert_eq!(answers(receivers), vec![Ok(2), Ok(4)]);
    assert!(queue.is_drained());
    assert_eq!(queue.take_idle(), vec![100]);
    assert_eq!(queue.stats().workers, 0);
}

#[test]
fn close_if_idle_refuses_a_busy_queue_and_hands_back_refused_input() {
    let h = Harness::new();
    let queue = h.model("a", settings(1, 1, 1), 1);
    let receivers = submit_all(&queue, [1]);
    assert!(!queue.close_if_idle(), "a queued request keeps it open");
    h.run_all();
    assert_eq!(answers(receivers), vec![Ok(2)]);
    assert!(queue.close_if_idle());
    assert!(!queue.close_if_idle(), "only the first closer evicts");
    match queue.try_submit(7) {
        Err((JobError::Closed, input)) => assert_eq!(input, 7),
        other => panic!("expected Closed with the input back, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn compute_threads_run_batches_and_tasks_off_the_async_threads() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let scheduler: Scheduler<Fake> = Scheduler::new(Arc::new(crate::wlm::SystemClock), 2).unwrap();
    let backend = Fake {
        name: "a",
        log: log.clone(),
        started: AtomicUsize::new(0),
        room: None,
        inline: false,
    };
    let queue = scheduler.add_model(
        backend,
        settings(1, 2, 1),
        vec![],
        ModelMetrics::detached(),
        None,
    );
    let calls: Vec<_> = (0..50).map(|i| queue.call(i)).collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await);
    }
    assert_eq!(results, (0..50).map(|i| Ok(i * 2)).collect::<Vec<_>>());
    let thread = scheduler
        .run_task(|| std::thread::current().name().map(str::to_string))
        .await
        .unwrap();
    assert!(thread.unwrap().starts_with("mme-compute-"));
    let panicked = scheduler.run_task(|| -> i32 { panic!("host bug") }).await;
    assert_eq!(panicked, Err(TaskError::HostFailed(HostFailed)));
    assert_eq!(
        scheduler.run_task(|| 2).await,
        Ok(2),
        "the thread serves on"
    );
    scheduler.shutdown();
    assert_eq!(
        scheduler.run_task(|| 1).await,
        Err(TaskError::ShuttingDown(ShuttingDown))
    );
}

fn room(free: usize, spares: usize) -> Arc<Room> {
    Arc::new(Room {
        free: AtomicUsize::new(free),
        spares: AtomicUsize::new(spares),
    })
}

#[test]
fn a_scale_up_that_finds_no_room_leaves_the_backlog_to_the_models_own_worker() {
    let h = Harness::new();
    let queue = h.model_in("a", settings(1, 4, 1), 1, Some(room(0, 0)));
    let receivers = submit_all(&queue, 1..=10);
    assert_eq!(
        queue.stats().workers,
        4,
        "the backlog asks for more workers"
    );
    h.run_all();
    assert_eq!(
        answers(receivers),
        (1..=10).map(|i| Ok(i * 2)).collect::<Vec<_>>(),
        "no request fails while the model has a worker"
    );
    let stats = queue.stats();
    assert_eq!((stats.workers, stats.completed, stats.busy), (1, 10, 0));
}

#[test]
fn a_model_with_no_worker_and_no_room_fails_its_batch() {
    let h = Harness::new();
    let queue = h.model_in("a", settings(0, 2, 1), 0, Some(room(0, 0)));
    let receivers = submit_all(&queue, [1]);
    h.run_all();
    assert_eq!(
        answers(receivers),
        vec![Err(JobError::Failed(NO_ROOM.into()))]
    );
    assert_eq!(queue.stats().workers, 0);
}

#[test]
fn room_made_elsewhere_lets_the_scale_up_go_on() {
    let h = Harness::new();
    let pool = room(0, 2);
    let queue = h.model_in("a", settings(1, 4, 1), 1, Some(pool.clone()));
    let receivers = submit_all(&queue, 1..=10);
    h.run_all();
    assert!(answers(receivers).iter().all(Result::is_ok));
    assert_eq!(
        queue.stats().workers,
        3,
        "two spares given back: two more workers"
    );
    assert_eq!(pool.spares.load(Ordering::SeqCst), 0);
}

#[test]
fn scale_ups_pause_after_finding_no_room_then_try_again() {
    let h = Harness::new();
    let pool = room(0, 0);
    let queue = h.model_in("a", settings(1, 4, 1), 1, Some(pool.clone()));
    let receivers = submit_all(&queue, 1..=10);
    h.run_all();
    answers(receivers);
    pool.free.store(8, Ordering::SeqCst);
    let receivers = submit_all(&queue, 1..=10);
    assert_eq!(queue.stats().workers, 1, "paused: no scale-up yet");
    h.run_all();
    answers(receivers);
    h.clock.advance(ROOM_RETRY);
    let receivers = submit_all(&queue, 1..=10);
    assert_eq!(queue.stats().workers, 4, "the pause is over");
    h.run_all();
    assert!(answers(receivers).iter().all(Result::is_ok));
    assert_eq!(queue.stats().workers, 4);
}

#[test]
fn spares_are_taken_least_recently_used_first_down_to_the_minimum() {
    let h = Harness::new();
    let queue = h.model("a", settings(2, 4, 1), 4);
    // Worker 103 ran last: most recently used.
    let receivers = submit_all(&queue, [7]);
    h.run_all();
    answers(receivers);
    assert_eq!(queue.take_spare(), Some(100));
    assert_eq!(queue.take_spare(), Some(101));
    assert_eq!(queue.take_spare(), None, "two workers are the minimum");
    let stats = queue.stats();
    assert_eq!((stats.workers, stats.scale_downs), (2, 2));
}
