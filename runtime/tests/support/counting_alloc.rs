//! The system allocator, counting the heap bytes in use and their peak: a
//! request's memory as `Model::memory_estimate` describes it (RSS alone can
//! hide it in pages an earlier load freed but kept). Shared by
//! `tests/memory_estimate.rs` and `examples/generate_memory.rs`; a binary
//! that includes it installs it with `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The counting allocator.
pub struct Counting;
static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

impl Counting {
    /// Starts a new peak at the bytes in use now and returns them.
    pub fn reset_peak() -> usize {
        let now = IN_USE.load(Relaxed);
        PEAK.store(now, Relaxed);
        now
    }

    /// The most heap bytes in use since the last [`Counting::reset_peak`].
    pub fn peak() -> usize {
        PEAK.load(Relaxed)
    }
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(p, layout) };
        IN_USE.fetch_sub(layout.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's arguments.
        let q = unsafe { System.realloc(p, layout, new) };
        if !q.is_null() {
            IN_USE.fetch_sub(layout.size(), Relaxed);
            let now = IN_USE.fetch_add(new, Relaxed) + new;
            PEAK.fetch_max(now, Relaxed);
        }
        q
    }
}
