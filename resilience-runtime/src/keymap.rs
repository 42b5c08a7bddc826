//! The registry's map from service names to their entries.
//!
//! A computed-key call looks its key up, compares it and reads and writes a few
//! words of the key's service. With many keys, each cache line that takes is
//! likely a miss, and which lines those are decides the call's cost: so this map is
//! laid out for that lookup.
//!
//! - **Entries side by side.** Each entry (the key's words, the entry's hold,
//!   then the value) lies in an array of entries, so a value whose first bytes are
//!   what a call reads has them on the key's line. Entries take three lines each,
//!   of which a call reads the first: with two, every line a call reads would be an
//!   even one, and an even line only ever takes the even half of the cache's sets,
//!   so that the lines calls read would fit in half the cache. Three is the
//!   smallest count of lines that spreads them over all of it.
//!   The arrays are segments that never move: the first holds 64 entries, each
//!   next one twice as many as the one before; those of 2 MiB and more lie on
//!   huge pages where the system gives them (see [`region`]). An entry's memory is
//!   used again for another key once it is removed and no reader can still reach
//!   it.
//! - **An index of words.** The lookup finds an entry through an open-addressing
//!   table of 4-byte words, probed in order from the key's hash: each word is the
//!   entry's number (26 bits) and the top 6 bits of its key's hash, so that the
//!   probe reads another entry only when those bits match (one word in 64 of
//!   another key's). Words of 4 bytes rather than 8 halve the index, which every
//!   call reads a line of: with 100,000 keys, 512 KiB rather than 1 MiB of the
//!   cache. The table is at most 7/8 full; past that, it is built again (twice as
//!   large when the live keys need it) and swapped in whole, while readers go on
//!   in the one they started in.
//!
//! So a lookup reads the index's line and then the entry's, where a map of boxed
//! entries reads its table's and then the entry's, at an address the allocator
//! chose among everything else it hands out.
//!
//! Writers (an insert, a removal, both cold: a new key, the sweep) take one mutex.
//! Readers take no lock, and a call's lookup ([`KeyMap::take_used`]) does not even
//! enter the map's collector ([`seize`]): that costs as much as a third of a
//! lookup whose lines miss the cache (entering, then an exchange to leave). It
//! needs none, because nothing it reads is ever freed while the map lives:
//!
//! - entries lie in segments, which live as long as the map; a removed entry is
//!   only used again for another key;
//! - an index that is replaced is kept, one of each size, and used again by the
//!   next rebuild of its size, so a reader still probing it reads words of this
//!   map, old or new;
//! - the key is kept as three atomic words at the entry's start (inline up to 24
//!   bytes; see [`words_of`]), so that a reader compares it without reading memory
//!   that is dropped.
//!
//! So an index word is only a hint. The lookup compares the key's words, takes a
//! handle on the entry's [`Hold`] (which fails once the entry is evicted, and an
//! entry is vacant only while evicted), and compares the words again: a handle
//! taken keeps the entry from eviction, and so its key from changing. An entry
//! used again for another key since the first compare is told apart by the
//! second, and its handle given back. What else reads the map (iteration, a key
//! longer than 24 bytes, a value without a handle) enters the collector, which
//! decides when a removed entry's key and value may be dropped. Without the
//! writers' lock, a reader may miss a key while an index it reads is used again:
//! [`Pinned::entry`] probes again when an index was used again under its probe.

use std::alloc::Layout;
use std::hash::BuildHasher;
use std::mem::MaybeUninit;
use std::ops::ControlFlow::{self, Break, Continue};
use std::ptr;
use std::sync::Arc;

use compact_str::CompactString;
#[cfg(not(resilience_loom))]
use seize::{Collector, LocalGuard as Guard};

use crate::hold::Hold;
use crate::sync::{
    fence, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Mutex,
    Ordering::{self, Acquire, Relaxed, Release},
};

/// The order of a load the collector protects: `SeqCst`, which its protocol
/// requires (with the barrier of entering, it orders the load against the
/// retirement of what it reaches; on x86-64 and AArch64 it is the same
/// instruction as `Acquire`). Under loom's models, which leave the collector out
/// (see `Collector`), `Acquire`: what the models check is that each reader's
/// acquire pairs with the writer's release, and loom orders `SeqCst` operations
/// with each other beyond what the memory model does, which hides a missing pair.
#[cfg(not(resilience_loom))]
const PROTECT: Ordering = Ordering::SeqCst;
#[cfg(resilience_loom)]
const PROTECT: Ordering = Acquire;

/// The entries of the first segment, as a power of two.
const BASE_SHIFT: u32 = 6;
const BASE: usize = 1 << BASE_SHIFT;
/// Segments: `BASE << 19` entries in the last, almost 2^26 in all (12 GiB of
/// entries), past any count of services a program keeps.
const SEGMENTS: usize = 20;
/// Entries there is room for: the segments', whose numbers plus one fit an index
/// word's [`SLOT_BITS`] without being all ones, so that no word is `TOMB`.
const MAX_ENTRIES: usize = (BASE << SEGMENTS) - BASE;
/// The bits of an index word that hold the entry's number plus one; the rest hold
/// the top bits of the key's hash (see [`word_of`]).
const SLOT_BITS: u32 = 26;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
const _: () = assert!(MAX_ENTRIES < SLOT_MASK as usize);

/// Where entry `slot` lies: its segment and its place in it.
#[inline(always)]
fn locate(slot: usize) -> (usize, usize) {
    let m = slot + BASE;
    let seg = (usize::BITS - 1 - m.leading_zeros() - BASE_SHIFT) as usize;
    (seg, m - (BASE << seg))
}

/// The index's word of a position never used.
const EMPTY: u32 = 0;
/// The index's word of a position whose entry was removed: a probe goes on past it.
const TOMB: u32 = u32::MAX;
/// An entry's state: never written, or removed and given back.
const VACANT: u8 = 0;
/// An entry's state: its key and value are written and in the index.
const LIVE: u8 = 1;
/// An entry's state: removed, waiting for the readers that may still reach it.
const GONE: u8 = 2;

/// Positions in use at which the index is built again: 7/8 of them, and never
/// all (a probe for an absent key stops at an empty one).
fn full_at(positions: usize) -> usize {
    positions - (positions / 8).max(1)
}

/// One key and its value, in a segment: three lines for the registry's value
/// (see the module; checked where the registry defines it).
#[repr(C, align(64))]
pub(crate) struct Entry<V> {
    /// The key's words (see [`words_of`]): what a lookup compares. Written only
    /// while the entry is vacant (its hold evicted).
    words: [AtomicU64; 3],
    hold: Hold,
    value: Place<V>,
    state: AtomicU8,
    /// The key as a string, for what reads it so (iteration, a longer key), under
    /// the collector. In the entry's third line: a call does not read it.
    key: Place<CompactString>,
}

/// The longest key a lookup compares by its words alone.
const INLINE: usize = 24;

/// The words of a key of at most [`INLINE`] bytes: its bytes, then zeros, and in
/// the last byte `0xC0 | len` when it is shorter. A key of exactly 24 bytes ends
/// in a byte below `0xC0` (the last byte of UTF-8 is ASCII or a continuation
/// byte), so no two keys have the same words, and none has [`LONG`]'s or
/// [`UNSET`]'s.
#[inline(always)]
fn words_of(key: &str) -> Option<[u64; 3]> {
    let b = key.as_bytes();
    if b.len() > INLINE {
        return None;
    }
    #[cfg(target_endian = "little")]
    return Some(words_in_registers(b));
    #[cfg(not(target_endian = "little"))]
    return Some(words_by_copy(b));
}

/// [`words_of`] by copying the key into 24 zeroed bytes: what the words are, on
/// any machine.
#[cfg_attr(target_endian = "little", allow(dead_code))]
fn words_by_copy(b: &[u8]) -> [u64; 3] {
    let mut buf = [0u8; INLINE];
    buf[..b.len()].copy_from_slice(b);
    if b.len() < INLINE {
        buf[INLINE - 1] = 0xC0 | b.len() as u8;
    }
    // SAFETY: 24 bytes as three words; any bits are a valid `u64`.
    unsafe { std::mem::transmute::<[u8; INLINE], [u64; 3]>(buf) }
}

/// [`words_by_copy`] in registers, for a key of at most 24 bytes: by its length,
/// two or three 8-byte loads of its own bytes (the last one ending at its end,
/// shifted down past the bytes the one before read), or, up to 8 bytes, loads of
/// 4 bytes or single bytes that overlap. The copy calls `memcpy` and goes through
/// the stack: 6 instructions more a computed-key call (232 against 226).
#[cfg(target_endian = "little")]
#[inline(always)]
fn words_in_registers(b: &[u8]) -> [u64; 3] {
    let n = b.len();
    debug_assert!(n <= INLINE);
    let p = b.as_ptr();
    // SAFETY: every `at` below is at most `n - 8`: 8 bytes within the key.
    let read8 = |at: usize| unsafe { p.add(at).cast::<u64>().read_unaligned() };
    let mut w = if n > 16 {
        [read8(0), read8(8), read8(n - 8) >> (8 * (INLINE - n))]
    } else if n > 8 {
        [read8(0), read8(n - 8) >> (8 * (16 - n)), 0]
    } else {
        [up_to_8(b), 0, 0]
    };
    if n < INLINE {
        // The last byte of the third word.
        w[2] |= u64::from(0xC0 | n as u8) << 56;
    }
    w
}

/// The (at most 8) bytes of `b` as a little-endian word, the rest zero.
#[cfg(target_endian = "little")]
#[inline(always)]
fn up_to_8(b: &[u8]) -> u64 {
    let (n, p) = (b.len(), b.as_ptr());
    debug_assert!(n <= 8);
    // SAFETY: each read lies within the `n` bytes.
    unsafe {
        if n >= 4 {
            let first = u64::from(p.cast::<u32>().read_unaligned());
            let last = u64::from(p.add(n - 4).cast::<u32>().read_unaligned());
            // Where the two overlap, they hold the same bytes.
            first | last << (8 * (n - 4))
        } else if n > 0 {
            let (mid, end) = (n / 2, n - 1);
            u64::from(*p)
                | u64::from(*p.add(mid)) << (8 * mid)
                | u64::from(*p.add(end)) << (8 * end)
        } else {
            0
        }
    }
}

/// Words whose last byte is `last` and the rest zero.
const fn marked(last: u8) -> [u64; 3] {
    let mut buf = [0u8; INLINE];
    buf[INLINE - 1] = last;
    // SAFETY: as in `words_by_copy`.
    unsafe { std::mem::transmute::<[u8; INLINE], [u64; 3]>(buf) }
}

/// The words of every key longer than [`INLINE`] bytes: such a key is compared as
/// a string, under the collector.
const LONG: [u64; 3] = marked(0xFF);
/// The words of an entry never given out.
const UNSET: [u64; 3] = marked(0xFE);

/// Room for a value written once, then read by many until it is dropped: loom's
/// cell under its models, so that they check every read is ordered after the
/// write.
struct Place<T>(Cell<MaybeUninit<T>>);

#[cfg(not(resilience_loom))]
type Cell<T> = std::cell::UnsafeCell<T>;
#[cfg(resilience_loom)]
type Cell<T> = loom::cell::UnsafeCell<T>;

impl<T> Place<T> {
    fn new() -> Self {
        Self(Cell::new(MaybeUninit::uninit()))
    }

    /// # Safety
    ///
    /// Nothing reads or writes the place meanwhile, and it holds no value.
    unsafe fn write(&self, value: T) {
        #[cfg(not(resilience_loom))]
        // SAFETY: as the caller promises.
        unsafe {
            (*self.0.get()).write(value);
        }
        #[cfg(resilience_loom)]
        // SAFETY: as the caller promises.
        self.0.with_mut(|p| unsafe {
            (*p).write(value);
        });
    }

    /// # Safety
    ///
    /// The place holds a value, written before (in the order of memory), which is
    /// not dropped while the reference lives.
    unsafe fn get(&self) -> &T {
        #[cfg(not(resilience_loom))]
        // SAFETY: as the caller promises.
        unsafe {
            (*self.0.get()).assume_init_ref()
        }
        #[cfg(resilience_loom)]
        // SAFETY: as the caller promises.
        self.0.with(|p| unsafe { (*p).assume_init_ref() })
    }

    /// # Safety
    ///
    /// The place holds a value, which nothing reads meanwhile or after.
    unsafe fn drop_value(&self) {
        #[cfg(not(resilience_loom))]
        // SAFETY: as the caller promises.
        unsafe {
            (*self.0.get()).assume_init_drop();
        }
        #[cfg(resilience_loom)]
        // SAFETY: as the caller promises.
        self.0.with_mut(|p| unsafe { (*p).assume_init_drop() });
    }
}

impl<V> Entry<V> {
    /// Where the value lies in the entry.
    // Read by a check that loom's models leave out (see the registry).
    #[cfg_attr(resilience_loom, allow(dead_code))]
    pub(crate) const VALUE_AT: usize = std::mem::offset_of!(Self, value);

    fn vacant() -> Self {
        Self {
            words: UNSET.map(AtomicU64::new),
            hold: Hold::vacant(),
            value: Place::new(),
            state: AtomicU8::new(VACANT),
            key: Place::new(),
        }
    }

    /// Whether the entry's words are `want`. Any reader may compare them: they are
    /// atomics, never freed.
    #[inline(always)]
    fn words_are(&self, want: &[u64; 3]) -> bool {
        let [a, b, c] = &self.words;
        (a.load(Relaxed) ^ want[0]) | (b.load(Relaxed) ^ want[1]) | (c.load(Relaxed) ^ want[2]) == 0
    }

    /// Whether the entry's key is `key` (with `want` its words, if short enough).
    /// Only for an entry found `LIVE` under a guard (see [`KeyMap`]).
    #[inline(always)]
    fn is(&self, key: &str, want: Option<&[u64; 3]>) -> bool {
        match want {
            Some(w) => self.words_are(w),
            None => self.words_are(&LONG) && self.key() == key,
        }
    }

    /// The key. Only for an entry found `LIVE` under a guard, or holding a handle.
    #[inline(always)]
    pub(crate) fn key(&self) -> &str {
        // SAFETY: the entry was found live under a guard, or a handle is held on
        // it: its key was written before (`LIVE` and the hold's revival are
        // released after it), and is dropped only once it is evicted and no guard
        // that could reach it remains.
        unsafe { self.key.get() }.as_str()
    }

    /// The value, as for [`Entry::key`].
    #[inline(always)]
    pub(crate) fn value(&self) -> &V {
        // SAFETY: as in `key`.
        unsafe { self.value.get() }
    }

    /// The entry's hold: what keeps it from eviction (see [`Hold`]).
    #[inline(always)]
    pub(crate) fn hold(&self) -> &Hold {
        &self.hold
    }

    /// Takes a call's handle on the entry if its words are still `want` once it
    /// is taken (see the module).
    #[inline(always)]
    fn take_if_still(&self, want: &[u64; 3]) -> Option<&Self> {
        self.hold
            .take_used_if(|| self.words_are(want))
            .then_some(self)
    }
}

/// The index: the table of words, a power of two of them.
struct Index {
    mask: usize,
    words: *mut AtomicU32,
}

impl Index {
    /// A new index of empty words, boxed (freed by the map's `Drop`).
    fn new(positions: usize) -> *mut Index {
        debug_assert!(positions.is_power_of_two());
        let words = region(Self::layout(positions)).cast::<AtomicU32>();
        for at in 0..positions {
            // SAFETY: within the region, which holds `positions` words.
            unsafe { words.add(at).write(AtomicU32::new(EMPTY)) };
        }
        Box::into_raw(Box::new(Index {
            mask: positions - 1,
            words,
        }))
    }

    fn layout(positions: usize) -> Layout {
        Layout::array::<AtomicU32>(positions)
            .and_then(|l| l.align_to(64))
            .expect("registry index size")
    }

    fn words(&self) -> &[AtomicU32] {
        // SAFETY: `mask + 1` words, allocated in `new`.
        unsafe { std::slice::from_raw_parts(self.words, self.mask + 1) }
    }
    #[inline(always)]
    fn word(&self, at: usize) -> &AtomicU32 {
        // SAFETY: `at` is masked with `mask`, one less than the table's length.
        unsafe { &*self.words.add(at & self.mask) }
    }

    /// Puts `word` at the first free position of the probe of `hash` (an empty
    /// one, or a removed entry's). The caller holds the writer's lock, knows the
    /// key absent and the table not full. Whether an empty position was taken.
    fn put(&self, hash: u64, word: u32, order: Ordering) -> bool {
        let mut at = start(hash);
        loop {
            let w = self.word(at);
            let now = w.load(Relaxed);
            if now == EMPTY || now == TOMB {
                w.store(word, order);
                return now == EMPTY;
            }
            at += 1;
        }
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        // SAFETY: allocated and written in `new`, with this layout; nothing else
        // refers to it any more.
        unsafe {
            ptr::drop_in_place(ptr::slice_from_raw_parts_mut(self.words, self.mask + 1));
            free_region(self.words.cast(), Self::layout(self.mask + 1));
        }
    }
}

/// Huge pages' size: regions of at least this size are aligned to it and asked to
/// be backed by them.
const HUGE: usize = 1 << 21;

/// Memory for `layout`, not yet written. A region of at least [`HUGE`] bytes starts on a
/// multiple of it and, on Linux, is asked to be backed by huge pages before it is
/// first written: with many keys, a lookup that misses the cache would otherwise
/// often miss the address translation's too, and walk the page tables.
fn region(layout: Layout) -> *mut u8 {
    let (layout, big) = region_layout(layout);
    // SAFETY: the layouts here are never of size zero.
    let p = unsafe { std::alloc::alloc(layout) };
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    #[cfg(target_os = "linux")]
    if big {
        // SAFETY: the range is the allocation just made, which nothing else uses.
        // The advice only chooses the pages that back it; when refused, it is
        // backed as before.
        unsafe {
            libc::madvise(p.cast(), layout.size(), libc::MADV_HUGEPAGE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = big;
    p
}

/// Frees what [`region`] gave for `layout`.
///
/// # Safety
///
/// `p` is from `region(layout)`, not freed yet.
unsafe fn free_region(p: *mut u8, layout: Layout) {
    // SAFETY: allocated by `region` with this layout.
    unsafe { std::alloc::dealloc(p, region_layout(layout).0) }
}

/// The layout [`region`] allocates for `layout`, and whether it is big enough
/// for huge pages (then aligned to them).
fn region_layout(layout: Layout) -> (Layout, bool) {
    if layout.size() >= HUGE {
        let aligned = layout.align_to(HUGE).expect("registry region alignment");
        (aligned, true)
    } else {
        (layout, false)
    }
}

/// Where the probe of a hash starts: its low bits (the index masks the rest).
#[inline(always)]
fn start(hash: u64) -> usize {
    hash as usize
}

/// The word of entry `slot` under the hash `hash`: the hash's top bits, which a
/// probe compares before it reads an entry, then the entry's number plus one (so
/// no word is `EMPTY`, and none `TOMB`: entries are fewer than [`MAX_ENTRIES`]).
#[inline(always)]
fn word_of(hash: u64, slot: u32) -> u32 {
    tag(hash) | (slot + 1)
}

/// The bits of an index word that `hash` decides.
#[inline(always)]
fn tag(hash: u64) -> u32 {
    ((hash >> (u64::BITS - (u32::BITS - SLOT_BITS))) as u32) << SLOT_BITS
}

/// What the writers share, under [`KeyMap::writer`].
struct Writer {
    /// Live entries.
    len: usize,
    /// Positions of the index in use: live entries and removed ones.
    used: usize,
    /// Entries ever given out: each below is in a segment.
    high: u32,
    /// Indexes replaced, at most one of each size, for the next rebuild of that
    /// size (see the module): never freed while the map lives.
    spare: Vec<*mut Index>,
}

/// Entries removed and no longer reachable by any reader, to be used again.
type Free = Arc<Mutex<Vec<u32>>>;

/// A removed entry, until the readers that may reach it leave.
struct Retired<V> {
    entry: *mut Entry<V>,
    slot: u32,
    free: Free,
}

/// Drops a removed entry's key and value and gives the entry back. Its hold
/// stays evicted, and its words stay the old key's until it is written again.
///
/// # Safety
///
/// `retired` is a boxed [`Retired`] of an entry whose key and value are written,
/// that no reader under a guard can reach any more.
unsafe fn reclaim<V>(retired: *mut Retired<V>) {
    // SAFETY: boxed by `Pinned::remove`; this is its only reclaim.
    let r = unsafe { Box::from_raw(retired) };
    // SAFETY: the entry lies in a segment, which lives as long as the map, and
    // this runs only once no guard can reach it; lookups without a guard read
    // only its words and hold, which are atomics, and take no handle on it
    // (evicted). Nothing writes it until it is given back, below.
    unsafe {
        let e = &*r.entry;
        e.key.drop_value();
        e.value.drop_value();
        e.state.store(VACANT, Relaxed);
    }
    lock(&r.free).push(r.slot);
}

/// [`reclaim`], as the collector calls it.
#[cfg(not(resilience_loom))]
unsafe fn reclaim_retired<V>(retired: *mut Retired<V>, _: &Collector) {
    // SAFETY: as the collector promises, once no guard can reach it.
    unsafe { reclaim(retired) }
}

/// Lets another thread run: a reader that waits for a rebuild to end.
fn yield_now() {
    #[cfg(not(resilience_loom))]
    std::thread::yield_now();
    #[cfg(resilience_loom)]
    loom::thread::yield_now();
}

fn lock<T>(m: &Mutex<T>) -> impl std::ops::DerefMut<Target = T> + '_ {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Under loom's models, a collector that reclaims what is retired only when told
/// ([`Collector::reclaim_now`]) or dropped: a model calls it where it means every
/// reader under a guard has left, to check what the readers without one see.
#[cfg(resilience_loom)]
pub(crate) struct Collector {
    /// Each retired entry, with its [`reclaim`] (for its value's type).
    retired: Mutex<Vec<(*mut (), unsafe fn(*mut ()))>>,
}

#[cfg(resilience_loom)]
struct Guard<'a>(std::marker::PhantomData<&'a ()>);

#[cfg(resilience_loom)]
impl Collector {
    fn new() -> Self {
        Collector {
            retired: Mutex::new(Vec::new()),
        }
    }

    fn enter(&self) -> Guard<'_> {
        Guard(std::marker::PhantomData)
    }

    /// Runs every reclaim retired so far.
    pub(crate) fn reclaim_now(&self) {
        let all = std::mem::take(&mut *lock(&self.retired));
        for (p, f) in all {
            // SAFETY: each was retired once, with its own reclaim; a model calls
            // this where it means no guard remains.
            unsafe { f(p) };
        }
    }
}

/// [`reclaim`] with its pointer's type erased, for loom's collector.
#[cfg(resilience_loom)]
unsafe fn reclaim_erased<V>(p: *mut ()) {
    // SAFETY: as `reclaim`; `p` is a `Retired<V>`.
    unsafe { reclaim::<V>(p.cast()) }
}

#[cfg(resilience_loom)]
impl Drop for Collector {
    fn drop(&mut self) {
        self.reclaim_now();
    }
}

/// A concurrent map from string keys to values that never move (see the module).
pub(crate) struct KeyMap<V, S = foldhash::fast::FixedState> {
    index: AtomicPtr<Index>,
    segments: [AtomicPtr<Entry<V>>; SEGMENTS],
    /// [`Writer::high`], for iteration: the entries a reader may find live.
    high: AtomicUsize,
    /// Twice the spare indexes used again so far, plus one while one is being
    /// emptied and filled: a reader that missed a key trusts the miss only if
    /// this was even and did not change under its probe (see [`Pinned::entry`]).
    reuses: AtomicUsize,
    writer: Mutex<Writer>,
    free: Free,
    hasher: S,
    /// Dropped first (see `Drop`): it may still hold removed entries.
    collector: std::mem::ManuallyDrop<Collector>,
}

// SAFETY: an index's words are atomics it owns.
unsafe impl Send for Index {}
// SAFETY: as for `Send`.
unsafe impl Sync for Index {}

// SAFETY: the map hands out `&V` to any thread (`V: Sync`) and drops values on
// whichever thread reclaims them (`V: Send`); everything it shares is atomic or
// behind a mutex (the spare indexes are only touched under the writers' lock).
unsafe impl<V: Send + Sync, S: Send> Send for KeyMap<V, S> {}
// SAFETY: as for `Send`.
unsafe impl<V: Send + Sync, S: Sync> Sync for KeyMap<V, S> {}

/// A map entered: references it hands out last while it is held.
pub(crate) struct Pinned<'m, V, S> {
    map: &'m KeyMap<V, S>,
    _guard: Guard<'m>,
}

impl<V, S: BuildHasher> KeyMap<V, S> {
    pub(crate) fn with_hasher(hasher: S) -> Self {
        Self {
            index: AtomicPtr::new(Index::new(16)),
            segments: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            high: AtomicUsize::new(0),
            reuses: AtomicUsize::new(0),
            writer: Mutex::new(Writer {
                len: 0,
                used: 0,
                high: 0,
                spare: Vec::new(),
            }),
            free: Arc::new(Mutex::new(Vec::new())),
            hasher,
            collector: std::mem::ManuallyDrop::new(Collector::new()),
        }
    }

    /// Enters the map, to read or write it.
    #[inline(always)]
    pub(crate) fn pin(&self) -> Pinned<'_, V, S> {
        Pinned {
            map: self,
            _guard: self.collector.enter(),
        }
    }

    /// The map's collector, for loom's models to reclaim with.
    #[cfg(resilience_loom)]
    pub(crate) fn collector(&self) -> &Collector {
        &self.collector
    }

    /// Builds the index again now, as an insert does when it is full: for
    /// loom's models, to use a spare index again under a reader.
    #[cfg(all(test, resilience_loom))]
    pub(crate) fn rebuild_now(&self) {
        self.rebuild(&mut lock(&self.writer));
    }

    /// Live entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.writer).len
    }

    /// Entry `slot`, which was given out.
    #[inline(always)]
    fn entry(&self, slot: u32) -> &Entry<V> {
        let (seg, at) = locate(slot as usize);
        // SAFETY: an entry number is given out only once its segment is allocated
        // and published (before any index word or `high` that tells of it, which
        // the reader acquired: every word is stored with release); segments live
        // as long as the map.
        unsafe {
            let base = self.segments.get_unchecked(seg).load(Acquire);
            &*base.add(at)
        }
    }

    /// The current index, or one just replaced: never freed while the map lives.
    #[inline(always)]
    fn index(&self) -> &Index {
        // SAFETY: an index replaced is kept (`Writer::spare`) until the map is
        // dropped. Acquire: pairs with the release that swapped it in.
        unsafe { &*self.index.load(Acquire) }
    }

    #[inline(always)]
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// A call's lookup: `key`'s entry with a handle taken on its hold (which the
    /// caller gives back), marked used; without entering the collector (see the
    /// module). `None` when the key is absent, being evicted, longer than 24 bytes,
    /// or missed while the index is used again: the caller then looks it up under
    /// a guard and the writers' lock ([`Pinned::insert_with`]).
    #[inline(always)]
    pub(crate) fn take_used(&self, key: &str) -> Option<&Entry<V>> {
        let want = words_of(key)?;
        self.search(self.hash(key), |_, _, e| {
            if e.words_are(&want) {
                Break(e.take_if_still(&want))
            } else {
                Continue(())
            }
        })
    }

    /// The index word of `key` in the current index and its entry's number, if
    /// found live. Under a guard; without the writers' lock, it may miss a key
    /// while the index it probes is used again.
    fn probe(&self, key: &str) -> Option<(&AtomicU32, u32)> {
        let want = words_of(key);
        self.search(self.hash(key), |word, slot, e| {
            // Acquire (at least): pairs with the release of `LIVE`, after the
            // entry was written; the collector's order, so that an entry
            // removed before this guard entered is not found live.
            if e.state.load(PROTECT) == LIVE && e.is(key, want.as_ref()) {
                Break(Some((word, slot)))
            } else {
                Continue(())
            }
        })
    }

    /// Probes the current index from `hash`'s start: each entry whose word's tag
    /// is `hash`'s goes to `at_entry` (with its word and number), which ends the
    /// search with a result or lets it go on. `None` at an empty position, or
    /// once round.
    #[inline(always)]
    fn search<'m, R>(
        &'m self,
        hash: u64,
        mut at_entry: impl FnMut(&'m AtomicU32, u32, &'m Entry<V>) -> ControlFlow<Option<R>>,
    ) -> Option<R> {
        let tag = tag(hash);
        // The index's fields, read once: each word's acquire below would make
        // the compiler read them again at every position.
        let (mask, words) = {
            let index = self.index();
            (index.mask, index.words)
        };
        // At most once round: an index used again under the probe may have no
        // empty position for a while.
        for at in (start(hash)..).take(mask + 1) {
            // SAFETY: masked, within the index's words, which are never freed
            // while the map lives.
            let word = unsafe { &*words.add(at & mask) };
            // Acquire: pairs with the release that put the word in, after its
            // entry's segment was published.
            let w = word.load(Acquire);
            if w == EMPTY {
                return None;
            }
            if (w ^ tag) >> SLOT_BITS == 0 && w != TOMB {
                let slot = (w & SLOT_MASK) - 1;
                if let Break(found) = at_entry(word, slot, self.entry(slot)) {
                    return found;
                }
            }
        }
        None
    }

    /// Gives out an entry number, allocating its segment if need be.
    fn slot(&self, w: &mut Writer) -> u32 {
        if let Some(s) = lock(&self.free).pop() {
            return s;
        }
        let slot = w.high;
        assert!(
            (slot as usize) < MAX_ENTRIES,
            "registry map: more than {MAX_ENTRIES} entries"
        );
        let (seg, at) = locate(slot as usize);
        if at == 0 {
            // The segment's first entry: allocate it, every entry vacant.
            let p = region(segment_layout::<V>(seg)).cast::<Entry<V>>();
            for at in 0..BASE << seg {
                // SAFETY: within the segment, which holds `BASE << seg` entries.
                unsafe { p.add(at).write(Entry::vacant()) };
            }
            self.segments[seg].store(p, Release);
        }
        w.high += 1;
        slot
    }

    /// Builds the index again from its live words, sized for the live entries and
    /// one more, and swaps it in: a spare one of that size, emptied, or a new one.
    /// The one replaced becomes the spare of its size. Under the writer's lock.
    fn rebuild(&self, w: &mut Writer) {
        let live = w.len;
        let positions = (2 * (live + 1)).next_power_of_two().max(16);
        let old = self.index.load(Relaxed);
        let spare_at = w
            .spare
            // SAFETY: spares are indexes this map made and keeps.
            .iter()
            .position(|&i| unsafe { (*i).mask } + 1 == positions);
        let new = match spare_at {
            Some(at) => {
                let i = w.spare.swap_remove(at);
                // Odd from before any word changes until the last is put in (the
                // fence orders the count before the stores below): a reader that
                // reads a word written meanwhile reads a count other than the one
                // it started with (see `Pinned::entry`).
                self.reuses.fetch_add(1, Relaxed);
                fence(Release);
                // SAFETY: as above. Readers still probing it find empty words.
                for word in unsafe { &*i }.words() {
                    word.store(EMPTY, Relaxed);
                }
                i
            }
            None => Index::new(positions),
        };
        // SAFETY: only writers replace the index, under the lock this caller holds;
        // both are this map's.
        let (old_ref, new_ref) = unsafe { (&*old, &*new) };
        for word in old_ref.words() {
            let word = word.load(Relaxed);
            if word != EMPTY && word != TOMB {
                // The word keeps only the hash's top bits: the probe's start is
                // worked out again from the key, which is live (removals take
                // this lock).
                let key = self.entry((word & SLOT_MASK) - 1).key();
                // Release: a reader that finds the word finds its entry's segment.
                new_ref.put(self.hash(key), word, Release);
            }
        }
        if spare_at.is_some() {
            // Even again. Release: a reader that starts from this count finds
            // the index's words as filled.
            self.reuses.fetch_add(1, Release);
        }
        w.used = live;
        // Release: the words are in place before a reader can find the index.
        self.index.store(new, Release);
        // Not freed: a reader may still probe it (see the module). At most one
        // spare of each size: the one of `positions` was taken above, and a rebuild
        // into any other size leaves the spare of the old size only if it was made
        // new for it, so that none of its size was kept.
        w.spare.push(old);
    }
}

fn segment_layout<V>(seg: usize) -> Layout {
    Layout::array::<Entry<V>>(BASE << seg).expect("registry segment size")
}

impl<'m, V, S: BuildHasher> Pinned<'m, V, S> {
    /// The entry of `key`, if live. A miss counts only if no index was being
    /// used again while it probed (else it probes again), so that a key is never
    /// reported absent because the index it probed was being built again. No
    /// lock: `make` (under the writers' lock) may call this.
    pub(crate) fn entry(&self, key: &str) -> Option<&Entry<V>> {
        let map = self.map;
        loop {
            // Acquire: pairs with the release that made the count even, after
            // the words of the index used again were put in.
            let before = map.reuses.load(Acquire);
            if let Some((_, slot)) = map.probe(key) {
                return Some(map.entry(slot));
            }
            // Pairs with the rebuild's release fence: a word the probe read that
            // was written while an index was used again makes this load see the
            // count that reuse raised.
            fence(Acquire);
            if before % 2 == 0 && map.reuses.load(Relaxed) == before {
                return None;
            }
            // A rebuild is using an index again: it ends in a few microseconds.
            yield_now();
        }
    }

    /// The entry of `key`, if found live; without the writers' lock, so it may
    /// miss a key while an index is used again: for a caller that inserts on a
    /// miss ([`Pinned::insert_with`] looks again under the lock).
    pub(crate) fn find(&self, key: &str) -> Option<&Entry<V>> {
        self.map.probe(key).map(|(_, slot)| self.map.entry(slot))
    }

    /// The value of `key`, as [`Pinned::entry`].
    #[cfg(test)]
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        self.entry(key).map(Entry::value)
    }

    /// The entry of `key`, and false; or, when absent, one with the value `make`
    /// returns put in, and true. `make` runs under the writer's lock, only when
    /// the key is absent.
    pub(crate) fn insert_with(&self, key: &str, make: impl FnOnce() -> V) -> (&Entry<V>, bool) {
        let map = self.map;
        if let Some(e) = self.find(key) {
            return (e, false);
        }
        let mut w = lock(&map.writer);
        // Writers are one at a time: under the lock, the current index is the
        // last word on the key.
        if let Some((_, slot)) = map.probe(key) {
            return (map.entry(slot), false);
        }
        let value = make();
        if w.used + 1 > full_at(map.index().mask + 1) {
            map.rebuild(&mut w);
        }
        let slot = map.slot(&mut w);
        let e = map.entry(slot);
        // SAFETY: a vacant entry: never given out, or given back by `reclaim` once
        // no reader under a guard could reach it, and evicted, so that no lookup
        // without one takes a handle on it. Nothing reads its key or value until
        // it is revived and published, below.
        unsafe {
            e.key.write(CompactString::new(key));
            e.value.write(value);
        }
        for (word, v) in e.words.iter().zip(words_of(key).unwrap_or(LONG)) {
            word.store(v, Relaxed);
        }
        e.state.store(LIVE, Release);
        e.hold.revive();
        map.high.store(w.high as usize, Release);
        w.len += 1;
        // Release: the entry is written before a reader can find it.
        let hash = map.hash(key);
        if map.index().put(hash, word_of(hash, slot), Release) {
            w.used += 1;
        }
        (e, true)
    }

    /// [`Pinned::insert_with`]'s value.
    #[cfg(test)]
    pub(crate) fn get_or_insert_with(&self, key: &str, make: impl FnOnce() -> V) -> (&V, bool) {
        let (e, fresh) = self.insert_with(key, make);
        (e.value(), fresh)
    }

    /// Removes `key`'s entry unless a handle is held on it: its hold is evicted
    /// (if the caller has not already), and its key and value are dropped once no
    /// reader under a guard can reach it. Whether it was removed.
    pub(crate) fn remove(&self, key: &str) -> bool {
        let map = self.map;
        let mut w = lock(&map.writer);
        let Some((word, slot)) = map.probe(key) else {
            return false;
        };
        let e = map.entry(slot);
        if !e.hold.evict_unheld() {
            return false;
        }
        // SeqCst: stores the collector orders before the retirement, so a reader
        // entering after it finds neither the word nor the entry live.
        word.store(TOMB, Ordering::SeqCst);
        e.state.store(GONE, Ordering::SeqCst);
        w.len -= 1;
        let retired = Box::into_raw(Box::new(Retired {
            entry: ptr::from_ref(e).cast_mut(),
            slot,
            free: Arc::clone(&map.free),
        }));
        // SAFETY: the entry is out of the index and not live: a reader entering
        // from now does not reach it. `retired` is boxed, as `reclaim` expects.
        #[cfg(not(resilience_loom))]
        unsafe {
            map.collector.retire(retired, reclaim_retired::<V>)
        };
        #[cfg(resilience_loom)]
        lock(&map.collector.retired).push((retired.cast(), reclaim_erased::<V>));
        true
    }

    /// The live entries with their numbers, from entry number `from` round to the
    /// one before it: each entry once, in the order of their numbers, which do not
    /// change while the entries live.
    pub(crate) fn iter_from(&self, from: usize) -> impl Iterator<Item = (usize, &Entry<V>)> + '_ {
        let high = self.map.high.load(Acquire);
        let from = if high == 0 { 0 } else { from % high };
        (from..high).chain(0..from).filter_map(move |n| {
            let e = self.map.entry(n as u32);
            // Acquire (at least): pairs with the release of `LIVE`, after the
            // entry was written.
            (e.state.load(PROTECT) == LIVE).then_some((n, e))
        })
    }

    /// The live entries' keys and values, in the order of their numbers.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &V)> + '_ {
        self.iter_from(0).map(|(_, e)| (e.key(), e.value()))
    }
}

impl<V, S> Drop for KeyMap<V, S> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no reader is in. Dropping the collector reclaims
        // every removed entry, through the segments, which are still allocated.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.collector) };
        let high = self.high.load(Relaxed);
        for n in 0..high {
            let (seg, at) = locate(n);
            let e = self.segments[seg].load(Relaxed).wrapping_add(at);
            // SAFETY: entries below `high` lie in allocated segments; a live one's
            // key and value are written, and dropped only here.
            unsafe {
                if (*e).state.load(Relaxed) == LIVE {
                    (*e).key.drop_value();
                    (*e).value.drop_value();
                }
            }
        }
        for (seg, p) in self.segments.iter_mut().enumerate() {
            let p = p.load(Relaxed);
            if !p.is_null() {
                // SAFETY: allocated and written by `slot` with this layout; no
                // value is left in its entries.
                unsafe {
                    ptr::drop_in_place(ptr::slice_from_raw_parts_mut(p, BASE << seg));
                    free_region(p.cast(), segment_layout::<V>(seg));
                }
            }
        }
        let spare = std::mem::take(&mut lock(&self.writer).spare);
        for i in spare.into_iter().chain([self.index.load(Relaxed)]) {
            // SAFETY: every index was boxed by `Index::new`, and is either the
            // current one or a spare, each once; no reader is in.
            drop(unsafe { Box::from_raw(i) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;

    /// A value that counts its drops.
    struct Counted(u64, Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Relaxed);
        }
    }

    fn map<V>() -> KeyMap<V> {
        KeyMap::with_hasher(Default::default())
    }

    #[test]
    fn entry_numbers_fill_each_segment_then_the_next_twice_as_large() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(63), (0, 63));
        assert_eq!(locate(64), (1, 0));
        assert_eq!(locate(191), (1, 127));
        assert_eq!(locate(192), (2, 0));
        assert_eq!(
            locate(MAX_ENTRIES - 1),
            (SEGMENTS - 1, (BASE << (SEGMENTS - 1)) - 1)
        );
    }

    #[test]
    fn every_entry_number_fits_a_word_under_every_hash() {
        for hash in [0, u64::MAX, 1 << 63, 0x5555_5555_5555_5555] {
            for slot in [0, 1, MAX_ENTRIES as u32 - 1] {
                let w = word_of(hash, slot);
                assert_ne!(w, EMPTY);
                assert_ne!(w, TOMB);
                assert_eq!((w & SLOT_MASK) - 1, slot);
                assert_eq!((w ^ tag(hash)) >> SLOT_BITS, 0);
            }
        }
        // Different top bits, different tags.
        assert_ne!(tag(0), tag(u64::MAX));
    }

    /// Every key of the same hash: probes go past words of the same tag, and
    /// rebuilds put every key back.
    #[test]
    fn keys_of_one_hash_are_told_apart_by_their_entries() {
        #[derive(Default)]
        struct Same;
        impl BuildHasher for Same {
            type Hasher = Constant;
            fn build_hasher(&self) -> Constant {
                Constant
            }
        }
        struct Constant;
        impl std::hash::Hasher for Constant {
            fn finish(&self) -> u64 {
                0xdead_beef_dead_beef
            }
            fn write(&mut self, _: &[u8]) {}
        }
        let m = KeyMap::<usize, Same>::with_hasher(Same);
        let p = m.pin();
        for n in 0..200 {
            assert_eq!(p.get_or_insert_with(&format!("k{n}"), || n), (&n, true));
        }
        for n in (0..200).step_by(2) {
            assert!(p.remove(&format!("k{n}")));
        }
        for n in 200..300 {
            assert_eq!(p.get_or_insert_with(&format!("k{n}"), || n), (&n, true));
        }
        for n in 0..300 {
            let want = (n % 2 == 1 || n >= 200).then_some(n);
            assert_eq!(p.get(&format!("k{n}")).copied(), want, "k{n}");
        }
    }

    #[test]
    fn no_two_keys_have_the_same_words() {
        let mut keys: Vec<String> = (0..=INLINE).map(|n| "a".repeat(n)).collect();
        keys.extend((0..INLINE).map(|n| format!("{}\0", "a".repeat(n))));
        // 24 bytes ending in a continuation byte, and in a zero byte.
        keys.push(format!("{}é", "a".repeat(22)));
        keys.push("\0".repeat(INLINE));
        let mut seen = std::collections::HashSet::new();
        for k in &keys {
            let w = words_of(k).expect("at most 24 bytes");
            assert!(w != LONG && w != UNSET, "{k:?}");
            assert!(seen.insert(w), "{k:?} has another key's words");
        }
        assert_eq!(words_of(&"a".repeat(INLINE + 1)), None);
    }

    /// The words built in registers are the bytes copied, for every length, with
    /// every byte unlike its neighbours.
    #[test]
    fn words_are_the_key_s_bytes_copied() {
        let all: String = (0..INLINE).map(|i| char::from(b'A' + i as u8)).collect();
        let mut keys: Vec<&str> = (0..=INLINE).map(|n| &all[..n]).collect();
        keys.push("ünïcødé κλειδί");
        for key in keys {
            assert_eq!(
                words_of(key),
                Some(words_by_copy(key.as_bytes())),
                "{key:?}"
            );
        }
    }

    /// The lookup a call makes: a handle taken on the key's entry, and nothing
    /// taken on an absent, evicted or long key (those go the guarded way).
    #[test]
    fn a_call_takes_a_handle_on_its_key_or_on_nothing() {
        let m = map::<u64>();
        let long = "a key longer than the twenty-four bytes kept inline";
        m.pin().insert_with("a", || 1);
        m.pin().insert_with(long, || 2);
        let e = m.take_used("a").expect("a live key");
        assert_eq!((e.key(), *e.value(), e.hold().held()), ("a", 1, 1));
        e.hold().give_back();
        assert!(m.take_used("b").is_none());
        assert!(m.take_used(long).is_none());
        assert_eq!(m.pin().get(long), Some(&2));
        // Evicted (the sweep's first step, before it removes the key): refused,
        // and nothing left held.
        let p = m.pin();
        let e = p.entry("a").expect("live");
        assert!(e.hold().take_used_mark());
        assert!(e.hold().try_evict());
        assert!(m.take_used("a").is_none());
        assert_eq!(e.hold().held(), 0);
        assert!(p.remove("a"));
        assert!(m.take_used("a").is_none());
    }

    /// A lookup that compared an entry's key and then finds the entry removed and
    /// written for another key (what a lookup without a guard can meet) gives its
    /// handle back and takes nothing; one for the new key takes it.
    #[cfg(not(resilience_loom))]
    #[test]
    fn a_stale_lookup_gives_back_a_handle_on_an_entry_used_again() {
        let m = map::<u64>();
        // Entries live as long as the map: kept by address, without a guard.
        let a: *const Entry<u64> = m.pin().insert_with("a", || 1).0;
        // SAFETY: as above.
        let a = unsafe { &*a };
        let want_a = words_of("a").unwrap();
        assert!(a.words_are(&want_a));
        assert!(m.pin().remove("a"));
        // SAFETY: no guard is held; the entry's key and value are dropped now.
        unsafe { m.collector.reclaim_all() };
        let b: *const Entry<u64> = m.pin().insert_with("b", || 2).0;
        assert!(std::ptr::eq(a, b), "the removed entry is used again");
        // SAFETY: as above.
        let b = unsafe { &*b };
        assert!(a.take_if_still(&want_a).is_none());
        assert_eq!(b.hold().held(), 0, "the stale handle was given back");
        let e = b.take_if_still(&words_of("b").unwrap()).expect("b's own");
        assert_eq!(*e.value(), 2);
        assert_eq!(b.hold().held(), 1);
    }

    /// Replaced indexes are kept, but never more than one of each size: churn that
    /// builds the index again many times keeps a bounded set.
    #[test]
    fn replaced_indexes_are_used_again_one_of_each_size() {
        let m = map::<usize>();
        for i in 0..50_000usize {
            let p = m.pin();
            p.insert_with(&format!("go-{i}"), || i);
            if i >= 500 {
                assert!(p.remove(&format!("go-{}", i - 500)));
            }
        }
        let w = lock(&m.writer);
        // SAFETY: spares are this map's indexes, kept until it is dropped.
        let mut sizes: Vec<usize> = w.spare.iter().map(|&i| unsafe { (*i).mask } + 1).collect();
        sizes.sort_unstable();
        let n = sizes.len();
        sizes.dedup();
        assert_eq!(sizes.len(), n, "two spares of one size: {sizes:?}");
        assert!(n <= 8, "spares: {sizes:?}");
    }

    #[test]
    fn finds_what_was_put_in_and_not_what_was_removed() {
        let m = map::<u64>();
        let p = m.pin();
        assert_eq!(p.get("a"), None);
        assert_eq!(p.get_or_insert_with("a", || 1), (&1, true));
        // Present: `make` is not called, the first value stays.
        assert_eq!(p.get_or_insert_with("a", || unreachable!()), (&1, false));
        let long = "a key longer than the twenty-four bytes kept inline";
        assert_eq!(p.get_or_insert_with(long, || 2), (&2, true));
        assert_eq!(p.get("a"), Some(&1));
        assert_eq!(p.get(long), Some(&2));
        assert_eq!(p.get("b"), None);
        assert!(p.remove("a"));
        assert!(!p.remove("a"));
        assert_eq!(p.get("a"), None);
        assert_eq!(p.get(long), Some(&2));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn grows_past_many_keys_and_finds_them_all() {
        let m = map::<usize>();
        let p = m.pin();
        for i in 0..20_000 {
            assert!(p.get_or_insert_with(&format!("key-{i}"), || i).1);
        }
        for i in 0..20_000 {
            assert_eq!(p.get(&format!("key-{i}")), Some(&i), "key-{i}");
        }
        assert_eq!(p.get("key-20000"), None);
        assert_eq!(m.len(), 20_000);
        let mut seen: Vec<usize> = p.iter().map(|(_, v)| *v).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..20_000).collect::<Vec<_>>());
    }

    #[test]
    fn removed_entries_are_used_again_and_every_value_dropped_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let m = map::<Counted>();
        // Keys come and go, never more than 100 at once.
        for i in 0..100_000u64 {
            let p = m.pin();
            p.get_or_insert_with(&i.to_string(), || Counted(i, drops.clone()));
            if i >= 100 {
                assert!(p.remove(&(i - 100).to_string()));
            }
        }
        let span = m.high.load(Relaxed);
        assert!(span < 2_000, "entries given out: {span}");
        assert_eq!(m.len(), 100);
        let p = m.pin();
        for i in 99_900..100_000u64 {
            assert_eq!(p.get(&i.to_string()).map(|c| c.0), Some(i));
        }
        drop(p);
        drop(m);
        assert_eq!(drops.load(Relaxed), 100_000);
    }

    #[test]
    fn iterating_from_an_entry_goes_round_once() {
        let m = map::<usize>();
        let p = m.pin();
        for i in 0..10 {
            p.get_or_insert_with(&i.to_string(), || i);
        }
        p.remove("3");
        let order: Vec<usize> = p
            .iter_from(7)
            .map(|(n, e)| {
                assert_eq!(n, *e.value());
                n
            })
            .collect();
        assert_eq!(order, [7, 8, 9, 0, 1, 2, 4, 5, 6]);
        // Past the end: round from the start.
        assert_eq!(p.iter_from(17).count(), 9);
    }

    #[test]
    fn readers_always_find_the_keys_that_stay_while_others_come_and_go() {
        let m = Arc::new(map::<usize>());
        for i in 0..1_000 {
            m.pin().get_or_insert_with(&format!("stay-{i}"), || i);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (m, stop) = (m.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut rounds = 0;
                    while !stop.load(Relaxed) || rounds == 0 {
                        for i in (r..1_000).step_by(7) {
                            let key = format!("stay-{i}");
                            // The call's lookup, without a guard: this key, or
                            // (missed while an index is used again) nothing.
                            if let Some(e) = m.take_used(&key) {
                                assert_eq!((e.key(), *e.value()), (key.as_str(), i));
                                e.hold().give_back();
                            }
                            // A key that comes and goes: whatever entry it finds
                            // holds that key.
                            let go = format!("go-{}", i * 199 + rounds);
                            if let Some(e) = m.take_used(&go) {
                                assert_eq!(e.key(), go);
                                e.hold().give_back();
                            }
                            let p = m.pin();
                            assert_eq!(p.get(&key), Some(&i));
                            let seen = p.iter().filter(|(k, _)| k.starts_with("stay-")).count();
                            assert!(i % 97 != 0 || seen == 1_000, "iteration saw {seen}");
                        }
                        rounds += 1;
                    }
                    rounds
                })
            })
            .collect();
        // Enough churn for the index to be built again many times over.
        for i in 0..200_000usize {
            let p = m.pin();
            p.get_or_insert_with(&format!("go-{i}"), || i);
            if i >= 3_000 {
                assert!(p.remove(&format!("go-{}", i - 3_000)));
            }
        }
        stop.store(true, Relaxed);
        for r in readers {
            assert!(r.join().expect("reader") > 0);
        }
    }

    proptest::proptest! {
        /// Any sequence of inserts and removals leaves the map as a `HashMap` given
        /// the same, and drops every value exactly once.
        #[test]
        fn behaves_as_a_hash_map(ops in proptest::collection::vec((0u8..3, 0usize..40), 1..400)) {
            let drops = Arc::new(AtomicUsize::new(0));
            let mut model = HashMap::new();
            let m = map::<Counted>();
            let key = |k: usize| if k % 2 == 0 {
                format!("k{k}")
            } else {
                format!("a key past twenty-four bytes, number {k}")
            };
            let mut made = 0;
            for (step, (op, k)) in ops.into_iter().enumerate() {
                let p = m.pin();
                match op {
                    0 => {
                        let (v, fresh) = p.get_or_insert_with(&key(k), || {
                            made += 1;
                            Counted(step as u64, drops.clone())
                        });
                        proptest::prop_assert_eq!(fresh, !model.contains_key(&k));
                        let want = *model.entry(k).or_insert(step as u64);
                        proptest::prop_assert_eq!(v.0, want);
                    }
                    1 => proptest::prop_assert_eq!(p.remove(&key(k)), model.remove(&k).is_some()),
                    _ => proptest::prop_assert_eq!(p.get(&key(k)).map(|c| c.0), model.get(&k).copied()),
                }
            }
            let p = m.pin();
            let mut seen: Vec<(String, u64)> = p.iter().map(|(k, v)| (k.to_owned(), v.0)).collect();
            seen.sort();
            let mut want: Vec<(String, u64)> = model.iter().map(|(k, v)| (key(*k), *v)).collect();
            want.sort();
            proptest::prop_assert_eq!(seen, want);
            drop(p);
            drop(m);
            proptest::prop_assert_eq!(drops.load(Relaxed), made);
        }
    }
}
