//! What keeps a computed key's service in the registry while it is in use.
//!
//! A computed key's service lives in the registry map's own entry, so a call finds
//! its state where it compared the key, without another pointer to follow. The
//! sweep that evicts idle keys must then not remove an entry a call or a handle
//! still reads. [`Hold`] is one word: the count of handles held, and a bit the
//! sweep sets to evict the entry.
//!
//! - A handle is taken by adding one to the word; if the add finds the bit set,
//!   the handle is given back at once and not taken.
//! - The sweep evicts only by changing the word from exactly zero (no handle, no
//!   bit) to the bit alone, in one compare-and-swap.
//!
//! Both are read-modify-writes of the one word, so they are ordered: an add before
//! the swap makes the word non-zero and the swap fail; an add after it finds the
//! bit. The memory itself outlives a taker that looked the entry up before it was
//! removed: the map frees a removed entry only once every reader pinned at that
//! time unpins.

use crate::sync::{
    AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};

/// The bit of an evicted entry; the bits below count handles.
const EVICTED: usize = 1 << (usize::BITS - 1);

pub(crate) struct Hold(AtomicUsize);

impl Hold {
    pub(crate) fn new() -> Self {
        Self(AtomicUsize::new(0))
    }

    /// Takes a handle. False when the sweep has evicted the entry: then nothing is
    /// taken, and the caller looks the key up again once the sweep is done.
    #[inline(always)]
    pub(crate) fn take(&self) -> bool {
        // Relaxed: a handle is only ever taken on a fully built entry, which the map
        // published (and the lookup acquired); the word orders nothing else.
        if self.0.fetch_add(1, Relaxed) & EVICTED == 0 {
            return true;
        }
        self.0.fetch_sub(1, Relaxed);
        false
    }

    /// One more handle, from one already held (a clone).
    #[inline(always)]
    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    /// Gives a handle back. Release: what the holder did happens before an eviction
    /// that finds the count at zero.
    #[inline(always)]
    pub(crate) fn give_back(&self) {
        self.0.fetch_sub(1, Release);
    }

    /// The sweep: evicts the entry if no handle is held. Once true, no handle is
    /// ever taken on it again, so it may be removed.
    pub(crate) fn try_evict(&self) -> bool {
        // Acquire: pairs with the Release of every handle given back.
        self.0
            .compare_exchange(0, EVICTED, Acquire, Relaxed)
            .is_ok()
    }

    /// Handles held now.
    pub(crate) fn held(&self) -> usize {
        self.0.load(Relaxed) & !EVICTED
    }
}
