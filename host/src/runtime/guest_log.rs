//! Guest stdout and stderr: into the host's log, one line per event, tagged
//! with the model, and capped so that a chatty guest cannot flood the log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line logged; longer output is split.
const MAX_LINE: usize = 4096;

/// How many bytes of output one model may log per window; the rest is
/// dropped, and the drop is logged once per window.
#[derive(Debug)]
pub struct LogBudget {
    bytes_per_window: usize,
    window: Duration,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    window_start: Instant,
    used: usize,
    dropped: usize,
}

impl LogBudget {
    /// A budget of `bytes_per_window` bytes every `window`.
    pub fn new(bytes_per_window: usize, window: Duration) -> Self {
        LogBudget {
            bytes_per_window,
            window,
            state: Mutex::new(BudgetState {
                window_start: Instant::now(),
                used: 0,
                dropped: 0,
            }),
        }
    }

    /// Takes `len` bytes from the budget.
    fn take(&self, len: usize) -> Take {
        let Ok(mut state) = self.state.lock() else {
            return Take {
                allowed: false,
                first_drop: false,
                dropped_before: 0,
            };
        };
        let mut dropped_before = 0;
        if state.window_start.elapsed() >= self.window {
            dropped_before = state.dropped;
            *state = BudgetState {
                window_start: Instant::now(),
                used: 0,
                dropped: 0,
            };
        }
        let allowed = state.used + len <= self.bytes_per_window;
        let first_drop = !allowed && state.dropped == 0;
        if allowed {
            state.used += len;
        } else {
            state.dropped += len;
        }
        Take {
            allowed,
            first_drop,
            dropped_before,
        }
    }
}

/// What the budget says of one line.
#[derive(Debug, PartialEq, Eq)]
struct Take {
    /// Whether the line may be logged.
    allowed: bool,
    /// Whether this is the window's first dropped line: the moment to say
    /// that output is being dropped, once, and not only after the window.
    first_drop: bool,
    /// How many bytes the previous window dropped, to report once.
    dropped_before: usize,
}

/// A guest output stream (stdout or stderr) that ends in the host log.
#[derive(Clone)]
pub struct GuestLog {
    model: Arc<str>,
    stream: &'static str,
    budget: Arc<LogBudget>,
}

impl GuestLog {
    /// The stream named `stream` ("stdout" or "stderr") of `model`.
    pub fn new(model: Arc<str>, stream: &'static str, budget: Arc<LogBudget>) -> Self {
        GuestLog {
            model,
            stream,
            budget,
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter {
            log: self.clone(),
            line: Vec::new(),
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

/// Buffers a partial line until its newline arrives.
struct LineWriter {
    log: GuestLog,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let take = self.log.budget.take(self.line.len());
        if take.dropped_before > 0 {
            tracing::warn!(model = %self.log.model, dropped_bytes = take.dropped_before, "guest output over the log cap was dropped");
        }
        if take.first_drop {
            tracing::warn!(model = %self.log.model, window = ?self.log.budget.window, "guest output reached the log cap; the rest of this window's output is dropped");
        }
        if take.allowed {
            let text = String::from_utf8_lossy(&self.line);
            tracing::info!(target: "mme::guest", model = %self.log.model, stream = self.log.stream, "{}", text.trim_end());
        }
        self.line.clear();
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            self.line.extend_from_slice(chunk);
            if chunk.ends_with(b"\n") || self.line.len() >= MAX_LINE {
                self.emit();
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_up_to_the_cap_then_drops_and_reports_after_the_window() {
        let take = |allowed, first_drop, dropped_before| Take {
            allowed,
            first_drop,
            dropped_before,
        };
        let budget = LogBudget::new(10, Duration::from_millis(30));
        assert_eq!(budget.take(6), take(true, false, 0));
        assert_eq!(budget.take(4), take(true, false, 0));
        assert_eq!(
            budget.take(1),
            take(false, true, 0),
            "the first drop is said"
        );
        assert_eq!(budget.take(5), take(false, false, 0), "and only once");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            budget.take(3),
            take(true, false, 6),
            "the next window reports the drop"
        );
    }
}
