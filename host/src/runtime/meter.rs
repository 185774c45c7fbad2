//! Bytes in use, counted where they are allocated and released where they
//! are freed, so that the memory budget reads real figures and not guesses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A count of bytes in use, shared by its clones. A meter made with
/// [`MemoryMeter::child`] also counts into its parent, so one model's
/// instances and the server's total move together.
#[derive(Debug, Clone, Default)]
pub struct MemoryMeter {
    own: Arc<Counts>,
    parent: Option<Arc<Counts>>,
}

#[derive(Debug, Default)]
struct Counts {
    /// Bytes in use now.
    now: AtomicU64,
    /// Bytes ever added: what was granted since a moment is the difference
    /// of two readings, whatever was released meanwhile.
    added: AtomicU64,
}

impl Counts {
    fn add(&self, bytes: u64) {
        self.now.fetch_add(bytes, Ordering::Relaxed);
        self.added.fetch_add(bytes, Ordering::Relaxed);
    }

    fn sub(&self, bytes: u64) {
        let _ = self
            .now
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some(now.saturating_sub(bytes))
            });
    }
}

impl MemoryMeter {
    /// A meter whose counts also go to `self`.
    pub fn child(&self) -> MemoryMeter {
        MemoryMeter {
            own: Arc::default(),
            parent: Some(self.own.clone()),
        }
    }

    /// Bytes in use now.
    pub fn bytes(&self) -> u64 {
        self.own.now.load(Ordering::Relaxed)
    }

    /// Bytes ever added, released or not.
    pub fn added(&self) -> u64 {
        self.own.added.load(Ordering::Relaxed)
    }

    /// Counts `bytes` more.
    pub fn add(&self, bytes: u64) {
        self.own.add(bytes);
        if let Some(parent) = &self.parent {
            parent.add(bytes);
        }
    }

    /// Counts `bytes` fewer; never below zero.
    pub fn sub(&self, bytes: u64) {
        self.own.sub(bytes);
        if let Some(parent) = &self.parent {
            parent.sub(bytes);
        }
    }

    /// A guard that counts `bytes` until it is dropped.
    pub fn charge(&self, bytes: u64) -> Charge {
        self.add(bytes);
        Charge {
            meter: self.clone(),
            bytes,
        }
    }
}

/// Bytes counted on a meter for as long as this lives.
#[derive(Debug)]
pub struct Charge {
    meter: MemoryMeter,
    bytes: u64,
}

impl Charge {
    /// The bytes this charge holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.meter.sub(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_counts_into_its_parent_and_charges_end_with_their_guard() {
        let total = MemoryMeter::default();
        let model = total.child();
        model.add(100);
        let charge = model.charge(50);
        assert_eq!((model.bytes(), total.bytes()), (150, 150));
        drop(charge);
        model.sub(1_000);
        assert_eq!((model.bytes(), total.bytes()), (0, 0));
        assert_eq!((model.added(), total.added()), (150, 150));
    }
}
