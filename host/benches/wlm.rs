//! Micro-benchmarks of the work-load manager's hot path: what a request
//! costs in queueing, dispatch and batching, with a backend that does no
//! work, so that only the manager is measured.
//!
//! `cargo bench -p mme-host --bench wlm`

// `criterion_group!` generates public items without docs.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mme_host::metrics::ModelMetrics;
use mme_host::wlm::{Backend, Bounds, CpuGroup, ManualClock, Scheduler, Settings};

/// Answers every input with itself.
struct Echo;

impl Backend for Echo {
    type Worker = ();
    type Input = u64;
    type Output = u64;
    type Error = String;

    fn start_worker(&self) -> Result<(), String> {
        Ok(())
    }

    fn run_batch(
        &self,
        _worker: &mut (),
        batch: Vec<u64>,
        _time_left: std::time::Duration,
    ) -> Result<Vec<u64>, String> {
        Ok(batch)
    }
}

fn settings(batch_size: usize) -> Settings {
    Settings {
        bounds: Bounds::new(1, 2).expect("valid bounds"),
        batch_size,
        max_batch_delay: Duration::ZERO,
        max_idle_time: Duration::from_secs(60),
        job_queue_size: 100_000,
        queue_timeout: Duration::from_secs(60),
    }
}

fn submit_and_run(c: &mut Criterion) {
    let scheduler: Scheduler<Echo> =
        Scheduler::new(Arc::new(ManualClock::default()), 0).expect("no threads to start");
    // A tenant's group (with `--tenants`): the scheduler times each batch
    // to share the cores between tenants by weight.
    let tenant = CpuGroup {
        name: Arc::from("tenant"),
        weight: 1,
    };
    for (batch_size, group) in [(1, None), (8, None), (1, Some(&tenant))] {
        let queue = scheduler.add_model(
            Echo,
            settings(batch_size),
            vec![()],
            ModelMetrics::detached(),
            group,
        );
        let grouped = if group.is_some() {
            ", in a tenant's group"
        } else {
            ""
        };
        c.bench_function(
            &format!("submit and run 64 requests, batch_size {batch_size}{grouped}"),
            |b| {
                b.iter(|| {
                    let mut receivers: Vec<_> =
                        (0..64).map(|i| queue.submit(i).expect("room")).collect();
                    while scheduler.run_one() {}
                    for receiver in &mut receivers {
                        let _ = receiver.try_recv().expect("answered");
                    }
                });
            },
        );
    }
}

criterion_group!(benches, submit_and_run);
criterion_main!(benches);
