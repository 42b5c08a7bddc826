//! What keeps a computed key's service in the registry while it is in use.
//!
//! A computed key's service lives in the registry map's own entry, so a call finds
//! its state where it compared the key, without another pointer to follow. The
//! sweep that evicts idle keys must then not remove an entry a call or a handle
//! still reads. [`Hold`] is one word: the count of handles held, a bit the sweep
//! sets to evict the entry, and a bit that says the key was used since the sweep
//! last passed it.
//!
//! - A handle is taken by adding one to the word; if the add finds the evicted bit
//!   set, the handle is given back at once and not taken. A call's handle also sets
//!   the used bit, if the add found it clear (once a sweep).
//! - The sweep clears the used bit of a key it passes, and evicts only by changing
//!   the word from exactly zero (no handle, no bit: not used since it last passed)
//!   to the evicted bit alone, in one compare-and-swap.
//! - An entry not given out is evicted; writing it for a key revives it (see the
//!   map, [`crate::keymap`], whose lookup takes handles without its collector).
//!
//! All are read-modify-writes of the one word, so they are ordered: an add before
//! the swap makes the word non-zero and the swap fail; an add after it finds the
//! bit. The memory itself outlives a taker that looked the entry up before it was
//! removed: the map frees a removed entry only once every reader pinned at that
//! time unpins.
//!
//! The used bit is in this word, not a flag of its own, so that what a computed-key
//! call reads and writes of its entry fits in one cache line (see the registry's
//! `Slot`): with many keys, each line a call reads is likely a cache miss.

use crate::sync::{
    AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};

/// The bit of an evicted entry.
const EVICTED: usize = 1 << (usize::BITS - 1);
/// The bit of a key used since the sweep last passed it.
const USED: usize = 1 << (usize::BITS - 2);
/// The bits that count handles.
const COUNT: usize = USED - 1;

pub(crate) struct Hold(AtomicUsize);

impl Hold {
    /// A new key's hold, used: the sweep passes it once before it may evict it.
    /// (The map's entries start [`Hold::vacant`] and are revived.)
    #[cfg(all(test, resilience_loom))]
    pub(crate) fn new() -> Self {
        Self(AtomicUsize::new(USED))
    }

    /// The hold of an entry not given out (or given back): evicted, so that no
    /// handle is taken on it until it is written for a key and [`Hold::revive`]d.
    pub(crate) fn vacant() -> Self {
        Self(AtomicUsize::new(EVICTED))
    }

    /// The entry is written for a new key: not evicted any more, and marked used
    /// (the sweep passes it once before it may evict it). Release: what was
    /// written is seen by whoever takes a handle. A lookup that added to the word
    /// meanwhile found it evicted and takes its add back; the subtraction keeps
    /// its count until then.
    pub(crate) fn revive(&self) {
        self.0.fetch_sub(EVICTED - USED, Release);
    }

    /// [`Hold::take_used`] for a lookup that found the entry without the map's
    /// collector: the handle is kept only if `still` (which compares the entry's
    /// key again) holds once it is taken, and the key is marked used only then.
    /// Acquire: pairs with the entry's revival, after its key and value were
    /// written.
    #[inline(always)]
    pub(crate) fn take_used_if(&self, still: impl FnOnce() -> bool) -> bool {
        let was = self.0.fetch_add(1, Acquire);
        if was & EVICTED == 0 && still() {
            if was & USED == 0 {
                self.mark_used();
            }
            return true;
        }
        self.give_up();
        false
    }

    #[cold]
    fn mark_used(&self) {
        self.0.fetch_or(USED, Relaxed);
    }

    /// Evicts the entry unless a handle is held, used or not: a removal asked for
    /// by the map's owner, not the sweep's. True also when it is evicted already.
    pub(crate) fn evict_unheld(&self) -> bool {
        let mut w = self.0.load(Relaxed);
        loop {
            if w & EVICTED != 0 {
                return true;
            }
            if w & COUNT != 0 {
                return false;
            }
            // Acquire: as in `try_evict`.
            match self.0.compare_exchange_weak(w, EVICTED, Acquire, Relaxed) {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
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
        self.give_up();
        false
    }

    /// [`Hold::take`] for a call: also marks the key used, so that the sweep keeps
    /// it. The add tells whether the mark is there already (the common case).
    #[inline(always)]
    pub(crate) fn take_used(&self) -> bool {
        let was = self.0.fetch_add(1, Relaxed);
        if was & (EVICTED | USED) == USED {
            return true;
        }
        self.take_used_slow(was)
    }

    #[cold]
    fn take_used_slow(&self, was: usize) -> bool {
        if was & EVICTED != 0 {
            self.give_up();
            return false;
        }
        self.mark_used();
        true
    }

    /// Undoes an add that found the entry evicted.
    #[cold]
    fn give_up(&self) {
        self.0.fetch_sub(1, Relaxed);
    }

    /// The sweep passes the key: whether it was used since the last pass. Clears the
    /// mark.
    pub(crate) fn take_used_mark(&self) -> bool {
        self.0.load(Relaxed) & USED != 0 && self.0.fetch_and(!USED, Relaxed) & USED != 0
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

    /// The sweep: evicts the entry if no handle is held and it was not used since
    /// the mark was taken. Once true, no handle is ever taken on it again, so it may
    /// be removed.
    pub(crate) fn try_evict(&self) -> bool {
        // Acquire: pairs with the Release of every handle given back.
        self.0
            .compare_exchange(0, EVICTED, Acquire, Relaxed)
            .is_ok()
    }

    /// Handles held now.
    pub(crate) fn held(&self) -> usize {
        self.0.load(Relaxed) & COUNT
    }
}
