//! The registry's map from service names to their entries.
//!
//! A computed-key call looks its key up, compares it and reads and writes a few
//! words of the key's service. With many keys, each cache line that takes is
//! likely a miss, and which lines those are decides the call's cost: so this map is
//! laid out for that lookup.
//!
//! - **Entries side by side.** Each entry (the key, inline when it is at most 24
//!   bytes, then the value) lies in an array of entries, so a value whose first
//!   bytes are what a call reads has them on the key's line. Entries take three
//!   lines each, of which a call reads the first: with two, every line a call reads
//!   would be an even one, and an even line only ever takes the even half of the
//!   cache's sets, so that the lines calls read would fit in half the cache. Three
//!   is the smallest count of lines that spreads them over all of it.
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
//! Readers take no lock: a reader enters the map's collector ([`seize`]), and what
//! it can reach from there (an index, an entry) is not freed or used again until it
//! leaves. Writers (an insert, a removal, both cold: a new key, the sweep) take one
//! mutex.

use std::alloc::Layout;
use std::hash::BuildHasher;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::Arc;

use compact_str::CompactString;
#[cfg(not(resilience_loom))]
use seize::{Collector, LocalGuard as Guard};

use crate::sync::{
    AtomicPtr, AtomicU32, AtomicU8, AtomicUsize, Mutex,
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
/// (see the module).
#[repr(C, align(64))]
pub(crate) struct Entry<V> {
    key: Place<CompactString>,
    value: Place<V>,
    state: AtomicU8,
    /// The third line.
    _spread: [MaybeUninit<u8>; 64],
}

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
            key: Place::new(),
            value: Place::new(),
            state: AtomicU8::new(VACANT),
            _spread: [MaybeUninit::uninit(); 64],
        }
    }

    /// The key. Only for an entry reached while it is live (see [`KeyMap`]).
    #[inline(always)]
    fn key(&self) -> &str {
        // SAFETY: the entry was reached through the index or found `LIVE`, under a
        // guard: its key was written before, and is dropped only once no guard
        // that could reach it remains.
        unsafe { self.key.get() }.as_str()
    }

    /// The value, as for [`Entry::key`].
    #[inline(always)]
    fn value(&self) -> &V {
        // SAFETY: as in `key`.
        unsafe { self.value.get() }
    }
}

/// The index: the table of words, a power of two of them.
struct Index {
    mask: usize,
    words: *mut AtomicU32,
}

impl Index {
    fn new(positions: usize) -> Box<Index> {
        debug_assert!(positions.is_power_of_two());
        let words = region(Self::layout(positions)).cast::<AtomicU32>();
        for at in 0..positions {
            // SAFETY: within the region, which holds `positions` words.
            unsafe { words.add(at).write(AtomicU32::new(EMPTY)) };
        }
        Box::new(Index {
            mask: positions - 1,
            words,
        })
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
}

/// Entries removed and no longer reachable by any reader, to be used again.
type Free = Arc<Mutex<Vec<u32>>>;

/// A removed entry, until the readers that may reach it leave.
struct Retired<V> {
    entry: *mut Entry<V>,
    slot: u32,
    free: Free,
}

/// Drops a removed entry's key and value and gives the entry back.
///
/// # Safety
///
/// `retired` is a boxed [`Retired`] of an entry whose key and value are written,
/// that no reader can reach any more.
unsafe fn reclaim<V>(retired: *mut Retired<V>, _: &seize::Collector) {
    // SAFETY: boxed by `KeyMap::remove`; this is its only reclaim.
    let r = unsafe { Box::from_raw(retired) };
    // SAFETY: the entry lies in a segment, which lives as long as the map, and
    // the collector runs this only once no reader can reach it; nothing writes it
    // until it is given back, below.
    unsafe {
        let e = &*r.entry;
        e.key.drop_value();
        e.value.drop_value();
        e.state.store(VACANT, Relaxed);
    }
    lock(&r.free).push(r.slot);
}

fn lock<T>(m: &Mutex<T>) -> impl std::ops::DerefMut<Target = T> + '_ {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Under loom's models, a collector that never frees: what is retired is leaked.
/// The models check how the index and the entries are published and found; when
/// a removed entry may be freed is seize's to decide.
#[cfg(resilience_loom)]
struct Collector;

#[cfg(resilience_loom)]
struct Guard<'a>(std::marker::PhantomData<&'a ()>);

#[cfg(resilience_loom)]
impl Collector {
    fn new() -> Self {
        Collector
    }

    fn enter(&self) -> Guard<'_> {
        Guard(std::marker::PhantomData)
    }

    /// # Safety
    ///
    /// None: nothing is freed.
    unsafe fn retire<T>(&self, _: *mut T, _: unsafe fn(*mut T, &seize::Collector)) {}
}

/// A concurrent map from string keys to values that never move (see the module).
pub(crate) struct KeyMap<V, S = foldhash::fast::FixedState> {
    index: AtomicPtr<Index>,
    segments: [AtomicPtr<Entry<V>>; SEGMENTS],
    /// [`Writer::high`], for iteration: the entries a reader may find live.
    high: AtomicUsize,
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
// behind a mutex.
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
            index: AtomicPtr::new(Box::into_raw(Index::new(16))),
            segments: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            high: AtomicUsize::new(0),
            writer: Mutex::new(Writer {
                len: 0,
                used: 0,
                high: 0,
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
        // and published (before the index word or `high` that tells of it, which
        // the reader acquired); segments live as long as the map.
        unsafe {
            let base = self.segments.get_unchecked(seg).load(Acquire);
            &*base.add(at)
        }
    }

    /// The current index. Only under a guard: it is freed once replaced and left.
    #[inline(always)]
    fn index(&self) -> &Index {
        // SAFETY: the index is replaced only by a writer, which retires the old one
        // to the collector; a reader entered before that keeps it alive. Acquire
        // (at least): pairs with the release that swapped it in.
        unsafe { &*self.index.load(PROTECT) }
    }

    #[inline(always)]
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The entry of `key` in the current index, if any.
    #[inline(always)]
    fn find(&self, key: &str) -> Option<&Entry<V>> {
        self.probe(key).map(|(_, slot)| self.entry(slot))
    }

    /// The index word of `key` in the current index and its entry's number, if
    /// any.
    #[inline(always)]
    fn probe(&self, key: &str) -> Option<(&AtomicU32, u32)> {
        let hash = self.hash(key);
        let tag = tag(hash);
        let index = self.index();
        let mut at = start(hash);
        loop {
            let word = index.word(at);
            // Acquire (at least): pairs with the release that put the word in,
            // after the entry was written.
            let w = word.load(PROTECT);
            if w == EMPTY {
                return None;
            }
            if (w ^ tag) >> SLOT_BITS == 0 && w != TOMB {
                let slot = (w & SLOT_MASK) - 1;
                if self.entry(slot).key() == key {
                    return Some((word, slot));
                }
            }
            at += 1;
        }
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
    /// one more, and swaps it in. Under the writer's lock.
    fn rebuild(&self, w: &mut Writer) {
        let live = w.len;
        let positions = (2 * (live + 1)).next_power_of_two().max(16);
        let old = self.index.load(Relaxed);
        let new = Index::new(positions);
        // SAFETY: only writers replace the index, under the lock this caller holds.
        for word in unsafe { &*old }.words() {
            let word = word.load(Relaxed);
            if word != EMPTY && word != TOMB {
                // The word keeps only the hash's top bits: the probe's start is
                // worked out again from the key, which is live (removals take
                // this lock).
                let key = self.entry((word & SLOT_MASK) - 1).key();
                new.put(self.hash(key), word, Relaxed);
            }
        }
        w.used = live;
        // Release: the words are in place before a reader can find the index.
        self.index.store(Box::into_raw(new), Release);
        // SAFETY: no reader entering from now finds the old index; those that did
        // keep it until they leave. It was boxed by `Index::new`.
        unsafe { self.collector.retire(old, seize::reclaim::boxed) };
    }
}

fn segment_layout<V>(seg: usize) -> Layout {
    Layout::array::<Entry<V>>(BASE << seg).expect("registry segment size")
}

impl<'m, V, S: BuildHasher> Pinned<'m, V, S> {
    /// The value of `key`.
    #[inline(always)]
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        self.map.find(key).map(Entry::value)
    }

    /// The value of `key`, and false; or, when absent, the one `make` returns put
    /// in, and true. `make` runs under the writer's lock, only when the key is
    /// absent.
    pub(crate) fn get_or_insert_with(&self, key: &str, make: impl FnOnce() -> V) -> (&V, bool) {
        if let Some(v) = self.get(key) {
            return (v, false);
        }
        let map = self.map;
        let mut w = lock(&map.writer);
        // Writers are one at a time: under the lock, the current index is the
        // last word on the key.
        if let Some(v) = self.get(key) {
            return (v, false);
        }
        let value = make();
        if w.used + 1 > full_at(map.index().mask + 1) {
            map.rebuild(&mut w);
        }
        let slot = map.slot(&mut w);
        let e = map.entry(slot);
        // SAFETY: a vacant entry: never given out, or given back by `reclaim` once
        // no reader could reach it. Nothing reads its key or value until it is
        // published, below.
        unsafe {
            e.key.write(CompactString::new(key));
            e.value.write(value);
        }
        e.state.store(LIVE, Release);
        map.high.store(w.high as usize, Release);
        w.len += 1;
        // Release: the entry is written before a reader can find it.
        let hash = map.hash(key);
        if map.index().put(hash, word_of(hash, slot), Release) {
            w.used += 1;
        }
        (e.value(), true)
    }

    /// Removes `key`'s entry. Its value is dropped once no reader can reach it
    /// any more. Whether it was there.
    pub(crate) fn remove(&self, key: &str) -> bool {
        let map = self.map;
        let mut w = lock(&map.writer);
        let Some((word, slot)) = map.probe(key) else {
            return false;
        };
        let e = map.entry(slot);
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
        unsafe { map.collector.retire(retired, reclaim::<V>) };
        true
    }

    /// The live entries with their numbers, from entry number `from` round to the
    /// one before it: each entry once, in the order of their numbers, which do not
    /// change while the entries live.
    pub(crate) fn iter_from(&self, from: usize) -> impl Iterator<Item = (usize, &str, &V)> + '_ {
        let high = self.map.high.load(Acquire);
        let from = if high == 0 { 0 } else { from % high };
        (from..high).chain(0..from).filter_map(move |n| {
            let e = self.map.entry(n as u32);
            // Acquire (at least): pairs with the release of `LIVE`, after the
            // entry was written.
            (e.state.load(PROTECT) == LIVE).then(|| (n, e.key(), e.value()))
        })
    }

    /// The live entries, in the order of their numbers.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &V)> + '_ {
        self.iter_from(0).map(|(_, k, v)| (k, v))
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
        // SAFETY: the index was boxed by `Index::new`, and nothing else refers to it.
        drop(unsafe { Box::from_raw(self.index.load(Relaxed)) });
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
            .map(|(n, _, v)| {
                assert_eq!(n, *v);
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
                            let p = m.pin();
                            assert_eq!(p.get(&format!("stay-{i}")), Some(&i));
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
