//! What the live instances' linear memories really hold, from the kernel's
//! own accounting rather than from the sizes the guests were granted.
//!
//! A Rust guest is granted 17 wasm pages (1.06 MiB) and touches about
//! 72 KiB of them, so counting grants made the memory budget 14 times what
//! instances use and evicted models far too early. Every pooled linear
//! memory lives in one reservation (the pool's slab), so the pages the
//! process has resident there are what the instances hold: the sample
//! walks that range's mappings in `/proc/self/maps` and reads their pages'
//! flags from `/proc/self/pagemap`. A page of a copy-on-write memory image
//! that no instance has written is one page of the image's file, however
//! many instances map it, so it is counted once.
//!
//! Between samples the figure stays early, never late: every byte granted
//! since the last sample counts in full until the next one measures it.
//! Instances outside the pool (the baseline tier's, or all of them where
//! the pool could not be reserved) are counted as granted. What an instance
//! holds on the host's side (its store, WASI context and `vmctx`) is
//! outside its linear memory: it is counted as measured where the instance
//! is made (see `heap`), or as [`INSTANCE_HOST_BYTES`] where it cannot be.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Charge, MemoryMeter};

/// What one live instance holds outside its linear memory, where the
/// process cannot measure it: the example's, from the PSS of 10,000 live
/// instances less that of 10,000 idle models and less their linear
/// memories' pages (`bench/many-models.sh`, BENCHMARKS.md), about 23 KiB.
pub const INSTANCE_HOST_BYTES: u64 = 24 << 10;

/// The page size that `/proc/self/pagemap` indexes by.
const PAGE: u64 = 4096;
/// `/proc/self/pagemap`: the page is present in RAM.
const PRESENT: u64 = 1 << 63;
/// `/proc/self/pagemap`: the page belongs to a file (or is shared anonymous memory).
const FILE_OR_SHARED: u64 = 1 << 61;

/// An address range of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Region {
    start: u64,
    end: u64,
}

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapping {
    region: Region,
    readable: bool,
    /// Offset in the mapped file, in bytes.
    offset: u64,
    /// The mapped file's inode; 0 for anonymous memory.
    inode: u64,
}

impl Mapping {
    fn parse(line: &str) -> Option<Mapping> {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?;
        let offset = fields.next()?;
        let _device = fields.next()?;
        let inode = fields.next()?;
        Some(Mapping {
            region: Region {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
            },
            readable: perms.starts_with('r'),
            offset: u64::from_str_radix(offset, 16).ok()?,
            inode: inode.parse().ok()?,
        })
    }
}

/// This process's mappings; empty where `/proc` cannot be read.
fn mappings() -> Vec<Mapping> {
    std::fs::read_to_string("/proc/self/maps")
        .map(|text| text.lines().filter_map(Mapping::parse).collect())
        .unwrap_or_default()
}

/// The mappings that `reserve` adds, read around it: what a caller needs
/// to find the reservation that `reserve` makes.
pub(super) fn new_mappings<R>(reserve: impl FnOnce() -> R) -> (R, Vec<Region>) {
    let before: HashSet<(u64, u64)> = mappings()
        .iter()
        .map(|m| (m.region.start, m.region.end))
        .collect();
    let made = reserve();
    let added = mappings()
        .into_iter()
        .filter(|m| !before.contains(&(m.region.start, m.region.end)))
        .map(|m| m.region)
        .collect();
    (made, added)
}

/// The largest of `regions`, if it spans at least `at_least` bytes: the
/// instance pool's slab, among the mappings its engine's build added.
pub(super) fn largest(regions: &[Region], at_least: u64) -> Option<Region> {
    regions
        .iter()
        .copied()
        .max_by_key(|r| r.end - r.start)
        .filter(|r| r.end - r.start >= at_least)
}

/// Bytes resident in `region`: its private pages, and each page of a
/// mapped file once, however many mappings share it. `None` where the
/// kernel does not say (no `/proc`).
pub(super) fn resident_bytes(region: Region) -> Option<u64> {
    let pagemap = File::open("/proc/self/pagemap").ok()?;
    let mut shared: HashSet<(u64, u64)> = HashSet::new();
    let mut private = 0u64;
    let mut entries = Vec::new();
    for mapping in mappings() {
        let start = mapping.region.start.max(region.start);
        let end = mapping.region.end.min(region.end);
        // Slots' guard pages and unused capacity are inaccessible, so
        // nothing there is resident: only readable mappings are read.
        if start >= end || !mapping.readable {
            continue;
        }
        let pages = usize::try_from((end - start) / PAGE).ok()?;
        entries.resize(pages * 8, 0);
        pagemap.read_exact_at(&mut entries, start / PAGE * 8).ok()?;
        for (index, entry) in entries.chunks_exact(8).enumerate() {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(entry);
            let flags = u64::from_ne_bytes(bytes);
            if flags & PRESENT == 0 {
                continue;
            }
            if flags & FILE_OR_SHARED != 0 && mapping.inode != 0 {
                let page = mapping.offset / PAGE + (start - mapping.region.start) / PAGE;
                shared.insert((mapping.inode, page + index as u64));
            } else {
                private += PAGE;
            }
        }
    }
    Some(private + shared.len() as u64 * PAGE)
}

/// The linear memories of the live instances: granted bytes as they are
/// counted, and the pool's resident bytes as last measured.
#[derive(Debug)]
pub struct InstanceMemory {
    /// Every instance's grants; each model's meter is a child of it.
    granted: MemoryMeter,
    /// The grants of instances outside the pool, which a sample cannot see.
    unpooled: MemoryMeter,
    /// What live instances hold on the host's side.
    host: MemoryMeter,
    /// The pool's slab, when it was found.
    pool: Option<Region>,
    /// The last measurement, if one succeeded.
    last: Mutex<Option<Sample>>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Bytes resident in the pool.
    resident: u64,
    /// Pooled bytes granted up to the moment before it was read.
    pooled_added: u64,
    taken: Instant,
}

impl InstanceMemory {
    /// Instance memory over the pool's slab `pool` (`None`: count grants).
    pub(super) fn new(pool: Option<Region>) -> Self {
        InstanceMemory {
            granted: MemoryMeter::default(),
            unpooled: MemoryMeter::default(),
            host: MemoryMeter::default(),
            pool,
            last: Mutex::new(None),
        }
    }

    /// The meter that every instance's grants count on.
    pub fn granted(&self) -> &MemoryMeter {
        &self.granted
    }

    /// Where an instance outside the pool also counts its grants.
    pub(super) fn unpooled(&self) -> &MemoryMeter {
        &self.unpooled
    }

    /// Counts one more live instance's host side, `bytes` as measured
    /// (`None`: not measured), until dropped.
    pub(super) fn host_charge(&self, bytes: Option<u64>) -> Charge {
        self.host.charge(bytes.unwrap_or(INSTANCE_HOST_BYTES))
    }

    /// What the live instances hold on the host's side.
    pub fn host_bytes(&self) -> u64 {
        self.host.bytes()
    }

    fn pooled_added(&self) -> u64 {
        self.granted.added().saturating_sub(self.unpooled.added())
    }

    /// Bytes the instances hold: the last sample's resident bytes, plus all
    /// that was granted since, plus what instances outside the pool were
    /// granted (without a sample, everything granted); and each live
    /// instance's host side.
    pub fn bytes(&self) -> u64 {
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        let linear = match last {
            Some(sample) => sample
                .resident
                .saturating_add(self.pooled_added().saturating_sub(sample.pooled_added))
                .saturating_add(self.unpooled.bytes()),
            None => self.granted.bytes(),
        };
        linear.saturating_add(self.host.bytes())
    }

    /// Measures the pool again, unless the last sample is younger than
    /// `fresh_enough`. Blocking: it reads `/proc`, a few milliseconds for
    /// thousands of instances. False where nothing can be measured.
    pub fn sample(&self, fresh_enough: Duration) -> bool {
        let Some(pool) = self.pool else {
            return false;
        };
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|s| s.taken.elapsed() < fresh_enough) {
            return true;
        }
        // Read before the pages: an instance made meanwhile is counted
        // twice until the next sample, never missed.
        let pooled_added = self.pooled_added();
        let Some(resident) = resident_bytes(pool) else {
            return false;
        };
        let sample = Sample {
            resident,
            pooled_added,
            taken: Instant::now(),
        };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(sample);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_are_read_and_junk_is_skipped() {
        let line = "7f0000000000-7f0000400000 rw-p 00002000 00:01 4242  /memfd:wasm-memory-image (deleted)";
        assert_eq!(
            Mapping::parse(line),
            Some(Mapping {
                region: Region {
                    start: 0x7f00_0000_0000,
                    end: 0x7f00_0040_0000
                },
                readable: true,
                offset: 0x2000,
                inode: 4242,
            })
        );
        let guard = Mapping::parse("1000-2000 ---p 00000000 00:00 0").unwrap();
        assert!(!guard.readable);
        assert_eq!(Mapping::parse("not a mapping"), None);
        assert_eq!(Mapping::parse("zz-2000 rw-p 0 00:00 0"), None);
        assert_eq!(Mapping::parse(""), None);
    }

    #[test]
    fn the_largest_new_region_is_the_pool_only_if_large_enough() {
        let small = Region { start: 0, end: 10 };
        let big = Region {
            start: 100,
            end: 1100,
        };
        assert_eq!(largest(&[small, big], 1000), Some(big));
        assert_eq!(largest(&[small, big], 1001), None);
        assert_eq!(largest(&[], 0), None);
    }

    #[test]
    fn only_touched_pages_are_resident() {
        // A large zeroed allocation is mapped fresh and untouched; then a
        // quarter of it is written.
        let mut buffer = vec![0u8; 16 << 20];
        let start = (buffer.as_ptr() as u64).div_ceil(PAGE) * PAGE;
        let region = Region {
            start,
            end: start + (8 << 20),
        };
        let before = resident_bytes(region).unwrap();
        let offset = usize::try_from(start - buffer.as_ptr() as u64).unwrap();
        for byte in buffer[offset..offset + (2 << 20)].iter_mut().step_by(4096) {
            *byte = 1;
        }
        let after = resident_bytes(region).unwrap();
        assert!(before < (256 << 10), "untouched but resident: {before}");
        // Transparent huge pages may bring in a little more than was touched.
        assert!(
            ((2 << 20)..=(4 << 20)).contains(&after),
            "after touching 2 MiB: {after}"
        );
        std::hint::black_box(&buffer);
    }

    #[test]
    fn grants_count_until_a_sample_and_in_full_after_it() {
        let memory = InstanceMemory::new(Some(Region {
            start: 0,
            end: PAGE,
        }));
        memory.granted().add(1 << 20);
        assert_eq!(memory.bytes(), 1 << 20);
        // Nothing is resident in the first page of the address space.
        assert!(memory.sample(Duration::ZERO));
        assert_eq!(memory.bytes(), 0);
        memory.granted().add(4096);
        memory.unpooled().add(100);
        memory.granted().add(100);
        assert_eq!(memory.bytes(), 4096 + 100);
        memory.granted().sub(1 << 20);
        assert_eq!(memory.bytes(), 4096 + 100, "a release waits for a sample");
        let host = memory.host_charge(None);
        assert_eq!(memory.bytes(), 4096 + 100 + INSTANCE_HOST_BYTES);
        drop(host);
        assert_eq!(memory.bytes(), 4096 + 100);
        let measured = memory.host_charge(Some(300 << 10));
        assert_eq!(memory.bytes(), 4096 + 100 + (300 << 10));
        drop(measured);
        let unmeasured = InstanceMemory::new(None);
        unmeasured.granted().add(7);
        assert!(!unmeasured.sample(Duration::ZERO));
        assert_eq!(unmeasured.bytes(), 7);
    }
}
