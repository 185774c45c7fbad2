//! What the host allocates for an instance, measured where it is made.
//!
//! An instance's host side (its store, its WASI context and wasmtime's
//! `vmctx`, which holds a function reference for every function a table
//! can reach) grows with its component: about 23 KiB for the example and
//! about 250 KiB for the ONNX engine. No wasmtime API tells it, so the
//! `mme` binary installs [`CountingAllocator`], which keeps, per thread,
//! the bytes allocated less the bytes freed; the difference across an
//! instantiation is that instance's host side. A process without it (a
//! library user, the unit tests) counts [`super::INSTANCE_HOST_BYTES`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::OnceLock;

thread_local! {
    /// Bytes allocated less bytes freed on this thread, since it started.
    /// Constant-initialized and without a destructor, so the allocator may
    /// touch it at any point of the thread's life.
    static NET: Cell<i64> = const { Cell::new(0) };
}

fn count(delta: i64) {
    let _ = NET.try_with(|net| net.set(net.get().wrapping_add(delta)));
}

/// The system allocator, counting on each thread what it allocates.
pub struct CountingAllocator;

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counting only reads the sizes of the layouts
// and touches a thread-local `Cell` that never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as i64);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as i64);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`, passed on.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        moved
    }
}

/// Bytes allocated less bytes freed on this thread so far; 0 where the
/// process does not count.
pub(super) fn net_here() -> i64 {
    NET.try_with(Cell::get).unwrap_or(0)
}

/// Whether this process's allocator is a [`CountingAllocator`].
pub(super) fn counting() -> bool {
    static COUNTING: OnceLock<bool> = OnceLock::new();
    *COUNTING.get_or_init(|| {
        let before = net_here();
        let probe = std::hint::black_box(vec![0u8; 64]);
        let counted = net_here() != before;
        drop(probe);
        counted
    })
}

/// What `make` allocated on this thread and kept, in bytes; `None` where
/// the process does not count.
pub(super) fn kept_by<T>(make: impl FnOnce() -> T) -> (T, Option<u64>) {
    if !counting() {
        return (make(), None);
    }
    let before = net_here();
    let made = make();
    let kept = u64::try_from(net_here().saturating_sub(before)).unwrap_or(0);
    (made, Some(kept))
}

/// Gives the pages that the allocator holds free back to the system.
///
/// A compilation allocates tens of MiB for a moment, on the compiling
/// threads; glibc keeps what they free in each thread's arena, so the
/// process would hold it (and a container's limit would count it) long
/// after the compilation ended, outside the memory budget.
pub(super) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointer: it walks glibc's own arenas
    // under their locks and returns their free pages to the kernel.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_harness_does_not_count_and_says_so() {
        // Unit tests run on the standard allocator: nothing is counted,
        // and a measurement says it has nothing rather than zero.
        assert!(!counting());
        let (made, kept) = kept_by(|| vec![1u8; 1024]);
        assert_eq!((made.len(), kept), (1024, None));
    }

    #[test]
    #[allow(unsafe_code)]
    fn the_allocator_counts_what_this_thread_keeps() {
        let small = Layout::from_size_align(4096, 8).unwrap();
        let large = Layout::from_size_align(8192, 8).unwrap();
        let before = net_here();
        // SAFETY: a valid layout; the block is grown and freed with the
        // layouts it then has.
        let block = unsafe { CountingAllocator.alloc(small) };
        assert!(!block.is_null());
        assert_eq!(net_here() - before, 4096);
        // SAFETY: as above.
        let block = unsafe { CountingAllocator.realloc(block, small, 8192) };
        assert!(!block.is_null());
        assert_eq!(net_here() - before, 8192);
        // SAFETY: as above.
        unsafe { CountingAllocator.dealloc(block, large) };
        assert_eq!(net_here(), before);
        // SAFETY: as above.
        let zeroed = unsafe { CountingAllocator.alloc_zeroed(small) };
        assert_eq!(net_here() - before, 4096);
        // SAFETY: as above.
        unsafe { CountingAllocator.dealloc(zeroed, small) };
        assert_eq!(net_here(), before);
    }
}
