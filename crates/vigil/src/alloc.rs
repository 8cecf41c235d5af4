//! A counting global allocator: the system allocator plus, while counting
//! is switched on ([`Counting::counted`]), one relaxed atomic add per
//! allocation, so `vigil bench` can report the bytes of operator state per
//! series. The `vigil` binary installs it; where it is not the global
//! allocator (libraries, tests) [`Counting::counted`] measures 0 ("not
//! measured").
//!
//! Counting is off by default and only on around the run that measures
//! state: the atomic adds cost prost's decode, which allocates every
//! string of every batch, 13-15 % of its rate on tick-shaped batches,
//! and would skew every ratio to raw decode that `vigil bench` prints.
//! (Switched off, the wrapper still costs it 5-8 %: BENCHMARKS.md.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// Net bytes allocated while counting (signed: memory allocated before
/// and freed or grown while counting subtracts).
static ALLOCATED: AtomicIsize = AtomicIsize::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

/// The counting allocator. See the module docs.
pub struct Counting;

impl Counting {
    /// Runs `f` with counting on and returns its result and the net bytes
    /// allocated while it ran (what it allocated and kept, less what it
    /// freed of older memory; 0 when the counting allocator is not
    /// installed). Meant for one thread: other threads' allocations at the
    /// same time are counted too.
    pub fn counted<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let before = ALLOCATED.load(Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        let r = f();
        COUNTING.store(false, Ordering::Relaxed);
        let after = ALLOCATED.load(Ordering::Relaxed);
        (
            r,
            usize::try_from(after.saturating_sub(before)).unwrap_or(0),
        )
    }
}

#[inline]
fn add(n: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATED.fetch_add(n as isize, Ordering::Relaxed);
    }
}

#[inline]
fn sub(n: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATED.fetch_sub(n as isize, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to `System` with the same arguments;
// the counter does not affect the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        sub(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size);
            sub(layout.size());
        }
        p
    }
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if
/// known.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
