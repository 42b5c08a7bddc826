//! A model of what a computed-key call costs with 100,000 keys called in a shuffled
//! order, for five layouts of a key's state, against governor's keyed `check_key`
//! in the same run. Not the runtime: each layout is a few lines that touch memory
//! as a keyed call of that layout would (the lookup in the same map, the same
//! reference count and locked adds, objects of the runtime's sizes allocated in its
//! order, all but the name's small `Arc<str>`), so that a redesign of the registry
//! can be judged before it is written.
//! The runtime's own row is `keyed_100k/resilience_shuffled` in `compare.rs`.
//!
//! - `current`: the runtime's earlier layout. The map's entry holds the key and an
//!   `Arc` of the service (and the addresses below, which the lookup prefetches); the
//!   service points at its policies (a box), which point at the breaker (an `Arc`);
//!   the shared counts are a line of their own (a box, 128-byte aligned).
//! - `counts_inline`: the same, with the shared counts inline in the service.
//! - `service_in_entry`: the runtime's layout of session 22: the service itself in
//!   the map's entry, with a count of handles in place of the `Arc`'s count; its
//!   policies, breaker and counts apart, their addresses beside it for the
//!   prefetch. (Since session 23 the runtime keeps the counts in the entry too,
//!   within its first 64 bytes; the bench example `keyed_misses` counts the
//!   runtime's own cache misses.)
//! - `one_allocation`: everything the call touches (the reference count, the gate,
//!   the breaker's state word, the counts) in one allocation of two lines; the rest
//!   of the key (policies, breaker settings, name: the same bytes) apart.
//! - `in_entry`: that state in the map's entry itself, with a count of calls in
//!   flight in place of the `Arc`'s count (what keeps a key in use from eviction).
//!
//! Run: `cargo bench -p resilience-benches --bench keyed_layouts -- --warm-up-time 1
//! --measurement-time 3`. docs/PERFORMANCE.md gives the figures.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering::*};
use std::sync::Arc;

use compact_str::CompactString;
use criterion::{criterion_group, criterion_main, Criterion};

mod common;
use common::Tight;

const KEYS: usize = 100_000;

type Map<V> = papaya::HashMap<CompactString, V, foldhash::fast::FixedState>;

/// The keys in a shuffled order (the same as `compare.rs`'s).
fn shuffled() -> Vec<String> {
    let mut v: Vec<String> = (0..KEYS).map(|i| format!("tenant-{i:06}")).collect();
    common::shuffle(&mut v);
    v
}

/// The keys in the order they were made, as the runtime's row registers them.
fn in_key_order(keys: &[String]) -> Vec<&String> {
    let mut ordered: Vec<&String> = keys.iter().collect();
    ordered.sort();
    ordered
}

/// A hint that `addr` is read soon (as the runtime's registry gives).
#[inline(always)]
fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is a hint: it faults on no address and changes nothing
    // the program can observe.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Counts on a line of their own (the runtime's `Line`).
#[repr(align(128))]
struct Line([AtomicU64; 8]);

/// The runtime's breaker: 232 bytes, its state word first.
struct Breaker {
    state: AtomicU64,
    _rest: [u64; 28],
}

/// The runtime's policies: 296 bytes, the breaker pointer and the gate first.
struct Policies {
    breaker: Arc<Breaker>,
    gate: AtomicU8,
    _rest: [u64; 35],
}

fn breaker() -> Arc<Breaker> {
    Arc::new(Breaker {
        state: AtomicU64::new(0),
        _rest: [0; 28],
    })
}

fn policies() -> Box<Policies> {
    Box::new(Policies {
        breaker: breaker(),
        gate: AtomicU8::new(0),
        _rest: [0; 35],
    })
}

// --- current and counts_inline ----------------------------------------------------

/// Where a service keeps its shared counts: a line of their own, or inline.
trait Counts {
    fn new() -> Self;
    fn first(&self) -> &AtomicU64;
}

impl Counts for Box<Line> {
    fn new() -> Self {
        Box::new(Line(Default::default()))
    }
    fn first(&self) -> &AtomicU64 {
        &self.0[0]
    }
}

impl Counts for [AtomicU64; 8] {
    fn new() -> Self {
        Default::default()
    }
    fn first(&self) -> &AtomicU64 {
        &self[0]
    }
}

/// The runtime's service: 128 bytes (with its counts a line of their own), what a
/// call reads first.
#[repr(C)]
struct Service<C> {
    policies: Box<Policies>,
    touched: AtomicBool,
    counts: C,
    _rest: [u64; 13],
}

struct Slot<C> {
    svc: Arc<Service<C>>,
    hot: [usize; 5],
}

fn service<C: Counts>() -> Slot<C> {
    let svc = Arc::new(Service {
        policies: policies(),
        touched: AtomicBool::new(false),
        counts: C::new(),
        _rest: [0; 13],
    });
    let start = Arc::as_ptr(&svc) as usize;
    let hot = [
        start - 16,
        std::ptr::from_ref(&svc.touched) as usize,
        std::ptr::from_ref(&*svc.policies) as usize,
        Arc::as_ptr(&svc.policies.breaker) as usize,
        std::ptr::from_ref(svc.counts.first()) as usize,
    ];
    Slot { svc, hot }
}

#[inline(always)]
fn call_service<C: Counts>(slot: &Slot<C>) -> bool {
    slot.hot.iter().for_each(|&a| prefetch(a));
    if !slot.svc.touched.load(Relaxed) {
        slot.svc.touched.store(true, Relaxed);
    }
    let svc = Arc::clone(&slot.svc);
    let p = &svc.policies;
    if p.gate.load(Relaxed) != 0 || p.breaker.state.load(Relaxed) != 0 {
        return false;
    }
    svc.counts.first().fetch_add(1, Relaxed);
    true
}

// --- service_in_entry ------------------------------------------------------------

/// The runtime's service as it is, inline in the map's entry, with a count of calls
/// in flight for the `Arc`'s count; its policies, breaker and counts apart, their
/// addresses kept beside it for the prefetch.
#[repr(C)]
struct InEntryService {
    in_flight: AtomicUsize,
    svc: Service<Box<Line>>,
    hot: [usize; 3],
}

fn service_in_entry() -> InEntryService {
    let svc = Service {
        policies: policies(),
        touched: AtomicBool::new(false),
        counts: <Box<Line> as Counts>::new(),
        _rest: [0; 13],
    };
    let hot = [
        std::ptr::from_ref(&*svc.policies) as usize,
        Arc::as_ptr(&svc.policies.breaker) as usize,
        std::ptr::from_ref(svc.counts.first()) as usize,
    ];
    InEntryService {
        in_flight: AtomicUsize::new(0),
        svc,
        hot,
    }
}

#[inline(always)]
fn call_service_in_entry(e: &InEntryService) -> bool {
    e.hot.iter().for_each(|&a| prefetch(a));
    let svc = &e.svc;
    if !svc.touched.load(Relaxed) {
        svc.touched.store(true, Relaxed);
    }
    e.in_flight.fetch_add(1, Acquire);
    let p = &svc.policies;
    let closed = p.gate.load(Relaxed) == 0 && p.breaker.state.load(Relaxed) == 0;
    if closed {
        svc.counts.first().fetch_add(1, Relaxed);
    }
    e.in_flight.fetch_sub(1, Release);
    closed
}

// --- one_allocation ---------------------------------------------------------------

/// What a call touches, together; the key's other state (the same bytes as the
/// other layouts' policies, breaker settings and service fields) apart.
#[repr(C, align(64))]
struct Hot {
    gate: AtomicU8,
    touched: AtomicBool,
    state: AtomicU64,
    counts: [AtomicU64; 8],
    _cold: Box<[u64; 80]>,
}

fn one_allocation() -> Arc<Hot> {
    Arc::new(Hot {
        gate: AtomicU8::new(0),
        touched: AtomicBool::new(false),
        state: AtomicU64::new(0),
        counts: Default::default(),
        _cold: Box::new([0; 80]),
    })
}

#[inline(always)]
fn call_one_allocation(hot: &Arc<Hot>) -> bool {
    prefetch(Arc::as_ptr(hot) as usize);
    if !hot.touched.load(Relaxed) {
        hot.touched.store(true, Relaxed);
    }
    let hot = Arc::clone(hot);
    if hot.gate.load(Relaxed) != 0 || hot.state.load(Relaxed) != 0 {
        return false;
    }
    hot.counts[0].fetch_add(1, Relaxed);
    true
}

// --- in_entry ---------------------------------------------------------------------

/// The same state in the map's entry; `in_flight` for the `Arc`'s count.
struct Entry {
    gate: AtomicU8,
    touched: AtomicBool,
    in_flight: AtomicUsize,
    state: AtomicU64,
    counts: [AtomicU64; 8],
    _cold: Box<[u64; 80]>,
    /// Stands for the pointer to the policies in force (later generations, which
    /// live apart).
    _policies: AtomicPtr<u8>,
}

fn in_entry() -> Entry {
    Entry {
        gate: AtomicU8::new(0),
        touched: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        state: AtomicU64::new(0),
        counts: Default::default(),
        _cold: Box::new([0; 80]),
        _policies: AtomicPtr::new(std::ptr::null_mut()),
    }
}

#[inline(always)]
fn call_in_entry(e: &Entry) -> bool {
    if !e.touched.load(Relaxed) {
        e.touched.store(true, Relaxed);
    }
    e.in_flight.fetch_add(1, Acquire);
    let closed = e.gate.load(Relaxed) == 0 && e.state.load(Relaxed) == 0;
    if closed {
        e.counts[0].fetch_add(1, Relaxed);
    }
    e.in_flight.fetch_sub(1, Release);
    closed
}

// --- the group --------------------------------------------------------------------

/// Builds a layout's map and times its calls. The map is returned, to be dropped
/// only after every layout ran: each is allocated from fresh memory, as in a
/// process of its own, not from what an earlier one freed.
fn bench_layout<V: Send + Sync + 'static>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    keys: &[String],
    make: impl Fn() -> V,
    call: impl Fn(&V) -> bool,
) -> Box<dyn std::any::Any> {
    let map: Map<V> = Map::with_hasher(Default::default());
    for k in in_key_order(keys) {
        map.pin().insert(k.as_str().into(), make());
    }
    let mut i = 0usize;
    c.bench_function(name, |b| {
        b.tight(|| {
            i = if i + 1 == KEYS { 0 } else { i + 1 };
            map.pin().get(keys[i].as_str()).map(&call)
        })
    });
    Box::new(map)
}

fn keyed_layouts(c: &mut Criterion) {
    let keys = shuffled();
    let mut g = c.benchmark_group("keyed_layouts_100k_shuffled");
    {
        let gov = common::governor_keyed(in_key_order(&keys));
        let mut i = 0usize;
        g.bench_function("governor", |b| {
            b.tight(|| {
                i = if i + 1 == KEYS { 0 } else { i + 1 };
                gov.check_key(&keys[i]).is_ok()
            })
        });
    }
    let _kept = [
        bench_layout(&mut g, "current", &keys, service::<Box<Line>>, call_service),
        bench_layout(
            &mut g,
            "counts_inline",
            &keys,
            service::<[AtomicU64; 8]>,
            call_service,
        ),
        bench_layout(
            &mut g,
            "service_in_entry",
            &keys,
            service_in_entry,
            call_service_in_entry,
        ),
        bench_layout(
            &mut g,
            "one_allocation",
            &keys,
            one_allocation,
            call_one_allocation,
        ),
        bench_layout(&mut g, "in_entry", &keys, in_entry, call_in_entry),
    ];
    g.finish();
}

criterion_group!(benches, keyed_layouts);
criterion_main!(benches);
