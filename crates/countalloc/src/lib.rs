//! Counts allocations without slowing the program it measures down much.
//!
//! A wrapper that bumps one shared counter on every allocation makes every thread write the
//! same cache line: under load the counter itself becomes a large share of the process's
//! time, and a larger share for code that allocates more, which skews any comparison. Here
//! each thread bumps a counter on a cache line of its own (one of [`SLOTS`], picked when the
//! thread first allocates), and [`Counting::allocations`] adds them all up.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counter slots: one per thread for the first `SLOTS - 1` threads, the last one shared by
/// every thread after them.
pub const SLOTS: usize = 256;
const SHARED: usize = SLOTS - 1;

/// One counter alone on its cache line.
#[repr(align(128))]
struct Slot(AtomicU64);

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: Slot = Slot(AtomicU64::new(0));

static COUNTS: [Slot; SLOTS] = [ZERO; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's slot; `usize::MAX` until it first allocates. A const initialiser with
    /// no destructor, so reading it never allocates.
    static MY_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn count_one() {
    // During thread teardown the thread-local may be gone: count in the shared slot then.
    let slot = MY_SLOT
        .try_with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_SLOT.fetch_add(1, Ordering::Relaxed).min(SHARED));
            }
            s.get()
        })
        .unwrap_or(SHARED);
    let counter = &COUNTS[slot].0;
    if slot == SHARED {
        counter.fetch_add(1, Ordering::Relaxed);
    } else {
        // Only this thread writes its own slot: a plain load and store (no locked
        // read-modify-write) cannot lose a count, and costs next to nothing.
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// Wraps the allocator `A`, counting each `alloc`, `alloc_zeroed` and `realloc`.
pub struct Counting<A>(pub A);

impl<A> Counting<A> {
    /// Allocations (including reallocations) made by every thread so far. Counts from
    /// other threads may lag by a few.
    pub fn allocations(&self) -> u64 {
        COUNTS.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

// SAFETY: every method forwards to `A` with the caller's arguments unchanged, so `A`'s
// guarantees are the wrapper's; the counting touches only atomics and a const thread-local,
// which neither allocate nor unwind.
#[allow(unsafe_code)]
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for `layout`.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: as for `alloc`.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (that is, from `A`) with `layout`.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: `ptr` came from `A` with `layout`; the caller upholds `realloc`'s contract.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_come_from_every_thread() {
        // Not the global allocator here: count through the functions directly.
        let before: u64 = COUNTS.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..1000 {
                        count_one();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let after = Counting(std::alloc::System).allocations();
        assert_eq!(after - before, 4000);
    }
}
