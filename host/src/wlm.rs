//! Work-load manager: where inference work runs.
//!
//! A fixed pool of compute threads, as many as the usable cores, runs every
//! model's wasm, so that wasm never blocks the async runtime and an idle
//! model holds no thread. Jobs are taken in arrival order.

use std::thread::JoinHandle;

use thiserror::Error;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The pool is shutting down and takes no more work.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
#[error("the server is shutting down")]
pub struct ShuttingDown;

/// The fixed set of threads that run wasm.
pub struct ComputePool {
    sender: Option<crossbeam_channel::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl ComputePool {
    /// Starts `threads` compute threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (sender, receiver) = crossbeam_channel::unbounded::<Job>();
        let threads = (0..threads.max(1))
            .map(|index| {
                let receiver = receiver.clone();
                std::thread::Builder::new()
                    .name(format!("mme-compute-{index}"))
                    .spawn(move || {
                        for job in receiver {
                            // A panic in host code answers that job with an
                            // error (its sender drops) and keeps the thread.
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                    })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(ComputePool {
            sender: Some(sender),
            threads,
        })
    }

    /// The number of compute threads.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Runs `work` on a compute thread and waits for its result without
    /// blocking the caller's thread.
    pub async fn run<T, F>(&self, work: F) -> Result<T, ShuttingDown>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        self.sender
            .as_ref()
            .ok_or(ShuttingDown)?
            .send(job)
            .map_err(|_| ShuttingDown)?;
        result.await.map_err(|_| ShuttingDown)
    }
}

impl Drop for ComputePool {
    fn drop(&mut self) {
        drop(self.sender.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The number of cores this process may use: CPU affinity and cgroup quota
/// both count (`available_parallelism` reads both).
pub fn usable_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_off_the_async_threads_and_returns_its_result() {
        let pool = ComputePool::new(2).unwrap();
        let name = pool
            .run(|| std::thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("mme-compute-"));
        let results = futures_join(&pool).await;
        assert_eq!(results, (0..8).map(|i| i * i).collect::<Vec<_>>());
    }

    async fn futures_join(pool: &ComputePool) -> Vec<i32> {
        let mut out = Vec::new();
        for i in 0..8 {
            out.push(pool.run(move || i * i).await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_take_the_pool_down() {
        let pool = ComputePool::new(1).unwrap();
        let result = pool.run(|| -> i32 { panic!("boom") }).await;
        assert_eq!(result, Err(ShuttingDown));
        assert_eq!(pool.run(|| 7).await, Ok(7));
    }
}
