//! The memory budget: what the loaded models use, counted where it is
//! allocated, against one limit.
//!
//! Three meters make up the use: the native code of the components in
//! memory (once per distinct wasm), the linear memories of the live
//! instances (the pages they really hold, as last sampled, and every byte
//! granted since in full), and what each loaded model holds besides
//! (its unpacked package, its metadata, and whatever more its
//! `required_memory_mb` declares).

use std::sync::Arc;
use std::time::Duration;

use crate::runtime::{InstanceMemory, MemoryMeter, Runtime};

/// What a loaded model costs beyond its code and its instances: its queue,
/// its metrics series and its entries in the registry (measured with 10,000
/// idle models; see BENCHMARKS.md).
pub const MODEL_METADATA_BYTES: u64 = 16 << 10;

/// The share of the machine's memory that the default limit takes.
const DEFAULT_SHARE_PERCENT: u64 = 80;

/// The budget and its meters.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    limit: u64,
    code: MemoryMeter,
    instances: Arc<InstanceMemory>,
    models: MemoryMeter,
}

/// Bytes in use, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    /// Native code of the components in memory.
    pub code: u64,
    /// Linear memories of the live instances.
    pub instances: u64,
    /// What the loaded models hold besides.
    pub models: u64,
}

impl MemoryUse {
    /// All of it.
    pub fn total(&self) -> u64 {
        self.code + self.instances + self.models
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes over `runtime`'s code and instance meters.
    pub fn new(limit: u64, runtime: &Runtime) -> Self {
        MemoryBudget {
            limit,
            code: runtime.code_memory().clone(),
            instances: runtime.instance_memory().clone(),
            models: MemoryMeter::default(),
        }
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes in use now.
    pub fn used(&self) -> MemoryUse {
        MemoryUse {
            code: self.code.bytes(),
            instances: self.instances.bytes(),
            models: self.models.bytes(),
        }
    }

    /// Measures what the instances hold again, unless a sample younger
    /// than `fresh_enough` has; blocking (it reads `/proc`).
    pub fn sample_instances(&self, fresh_enough: Duration) -> bool {
        self.instances.sample(fresh_enough)
    }

    /// Where loaded models' holdings are counted.
    pub fn models_meter(&self) -> &MemoryMeter {
        &self.models
    }
}

/// 80% of the memory this process may use: the cgroup's limit when there is
/// one (a container), else the machine's RAM.
pub fn default_limit() -> u64 {
    let available = cgroup_limit().or_else(machine_memory).unwrap_or(4 << 30);
    available / 100 * DEFAULT_SHARE_PERCENT
}

/// The memory limit of this process's cgroup, v2 or v1; `None` when unlimited.
fn cgroup_limit() -> Option<u64> {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    let v1 = || std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    let text = v2.or_else(v1)?;
    // v1 writes a huge number for "no limit"; anything past 2^60 is that.
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|&bytes| bytes < 1 << 60)
}

/// `MemTotal` of `/proc/meminfo`.
fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&text)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `bytes` in MiB, for messages.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_mem_total(text), Some(24_576_000 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn the_default_limit_is_a_share_of_something_real() {
        let limit = default_limit();
        assert!(limit > 64 << 20, "{limit}");
    }
}
