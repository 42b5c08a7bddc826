//! The registry: every service by name.
//!
//! Fixed and generated names are resolved once per call site and cached in the
//! site's `static`, so a call does no lookup. Computed names (`service = expr`) are
//! looked up per call with the `&str` itself, which allocates nothing when the key
//! is known. Computed keys are bounded: past the cap, a sweep evicts keys that were
//! not used since the previous sweep, are not in use and whose breaker is closed.
//! Keys that come back soon after their eviction mean the cap is below the keys in
//! use; the sweep warns (see `returns`).

use std::ptr::NonNull;
use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::{Mutex, OnceLock};

use crate::config::{PolicyConfig, Spec};
use crate::retry::thread_random;
use crate::returns::Returns;
use crate::service::{Registration, Service, ServiceSnapshot};
use crate::CircuitState;

/// How many computed keys live at once, unless changed with [`set_key_capacity`].
pub const DEFAULT_KEY_CAPACITY: usize = 10_000;

/// The services by name: a service lies in its map entry, after the key's words
/// and the entry's hold (see [`crate::keymap`]).
///
/// With many keys, each object a computed-key call reads is likely a cache miss,
/// and each is found through the one before. The lookup reads the entry anyway, to
/// compare the key (inline, 24 bytes, at the entry's start); the service follows it
/// there, rather than behind one more pointer (an `Arc`, before), and the service
/// holds its own first policies and breaker (see [`Service`]), rather than behind
/// two more. What keeps a key in use from eviction is the entry's [`Hold`](crate::hold::Hold), which
/// every [`ServiceRef`] counts in. Everything a lane call reads and writes of the
/// entry (the key's words, the hold, the service's policies word, its shared count
/// of successes, its breaker's state word and window word) lies in its first 64
/// bytes (checked when the crate compiles, below): one line, the one the lookup
/// compares the key on, since the map's entries start lines. The rest of the
/// service is boxed apart.
///
/// Entries never move: the map's index holds their numbers, and only the sweep
/// removes one (never an entry held). Nothing replaces one either: a service is
/// only ever inserted where its name is absent.
type Map = crate::keymap::KeyMap<Service>;
type Entry = crate::keymap::Entry<Service>;

pub(crate) struct Registry {
    map: Map,
    keyed: AtomicUsize,
    capacity: AtomicUsize,
    sweeping: Mutex<()>,
    /// Where the next sweep starts (an index in the map's iteration order).
    hand: AtomicUsize,
    /// Keys the sweep evicted, to notice them coming back.
    returns: Returns,
    /// Snapshots of services not registered yet, restored when they register.
    pending: Mutex<std::collections::HashMap<String, (ServiceSnapshot, crate::clock::Instant)>>,
}

/// The registry. Inlined: a computed-key call asks for it first.
#[inline]
pub(crate) fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry {
        map: Map::with_hasher(Default::default()),
        keyed: AtomicUsize::new(0),
        capacity: AtomicUsize::new(DEFAULT_KEY_CAPACITY),
        sweeping: Mutex::new(()),
        hand: AtomicUsize::new(0),
        returns: Returns::new(),
        pending: Mutex::new(std::collections::HashMap::new()),
    })
}

/// Sets how many computed service keys are kept at once (at least 1). Returns the
/// previous cap. Beyond it, idle keys are evicted (see the crate docs). Set it above
/// the number of keys in use at once: when keys come back soon after their eviction
/// (each call on them registering its key again, its breaker's window and counts
/// started over), the registry logs a warning naming the cap, at most once a minute.
pub fn set_key_capacity(cap: usize) -> usize {
    registry().capacity.swap(cap.max(1), Relaxed)
}

/// How many computed service keys are live now.
pub fn key_count() -> usize {
    registry().keyed.load(Relaxed)
}

impl Registry {
    /// A handle on the service called `name`, if it is registered.
    pub(crate) fn get(&self, name: &str) -> Option<ServiceRef> {
        loop {
            // Bound first: the map's guard is let go before a wait for the sweep.
            let found = self.map.pin().entry(name).map(ServiceRef::take);
            match found {
                None => return None,
                Some(Some(s)) => return Some(s),
                Some(None) => self.wait_for_sweep(),
            }
        }
    }

    /// Handles on every registered service.
    pub(crate) fn all(&self) -> Vec<ServiceRef> {
        let mut evicting = Vec::new();
        let mut all: Vec<ServiceRef> = self
            .map
            .pin()
            .iter_from(0)
            .filter_map(|(_, e)| {
                let s = ServiceRef::take(e);
                if s.is_none() {
                    evicting.push(compact_str::CompactString::from(e.key()));
                }
                s
            })
            .collect();
        // Being evicted, or kept because a call held it meanwhile: asked again once
        // the sweep is done, so a kept one is not left out.
        all.extend(evicting.iter().filter_map(|k| self.get(k)));
        all
    }

    /// Runs `f` on every registered service, without taking handles.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Service)) {
        for (_, s) in self.map.pin().iter() {
            f(s);
        }
    }

    /// Waits for the sweep in progress, if any: an entry it marked for eviction is
    /// then either removed or kept.
    #[cold]
    fn wait_for_sweep(&self) {
        drop(self.sweeping.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The service called `name`, registering it with `config` if it is new. When it
    /// exists with other settings, the first registration's win and `warn` says so.
    pub(crate) fn get_or_register(
        &self,
        name: &str,
        first: Registration<'_>,
        random: fn() -> u64,
        pinned: bool,
        warned: Option<&AtomicBool>,
    ) -> ServiceRef {
        loop {
            if let Some(s) = self.try_get_or_register(name, first, random, pinned, warned) {
                return s;
            }
            self.wait_for_sweep();
        }
    }

    /// [`Registry::get_or_register`], or `None` when the sweep is evicting the key.
    fn try_get_or_register(
        &self,
        name: &str,
        first: Registration<'_>,
        random: fn() -> u64,
        pinned: bool,
        warned: Option<&AtomicBool>,
    ) -> Option<ServiceRef> {
        let (spec, config) = (first.spec(), first.config());
        let map = self.map.pin();
        // A miss is looked at again under the map's lock by the insert below.
        if let Some(e) = map.find(name) {
            let s = if pinned {
                ServiceRef::take(e)
            } else {
                ServiceRef::take_used(e)
            }?;
            check_conflict(&s, config, warned);
            return Some(s);
        }
        // Held until the service is in the map: a document applied meanwhile either
        // sees the service or is seen by it.
        let doc = crate::live::read();
        let (effective, extras) = crate::live::effective(doc.as_deref(), name, spec, config);
        let (entry, inserted) = map.insert_with(name, || {
            Service::new(name, first, effective, extras, random, pinned)
        });
        drop(doc);
        let over = if inserted {
            let s = entry.value();
            // Reachable from the registry now: the lane's bars from here on.
            s.take_bars();
            self.restore_pending(s);
            !s.pinned && {
                tracing::debug!(service = name, "registered computed service key");
                self.returns.registered(name);
                self.keyed.fetch_add(1, Relaxed) + 1 > self.capacity.load(Relaxed)
            }
        } else {
            check_conflict(entry.value(), config, warned);
            false
        };
        let s = ServiceRef::take(entry);
        drop(map);
        if over {
            // Held: the new key is not evicted.
            self.sweep();
        }
        s
    }

    fn restore_pending(&self, s: &Service) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_empty() {
            return;
        }
        if let Some((mut snap, queued)) = pending.remove(s.name()) {
            drop(pending);
            // The cooldown went on running while the service was not registered.
            let waited = crate::clock::now().saturating_duration_since(queued);
            if let Some(b) = &mut snap.breaker {
                b.cooldown_left = b.cooldown_left.saturating_sub(waited);
                b.since_transition = b.since_transition.map(|d| d.saturating_add(waited));
            }
            s.restore(&snap);
        }
    }

    /// Looks a computed key up without allocating when it exists, or registers
    /// it with what `site` gives (asked for only then).
    #[inline]
    pub(crate) fn keyed<'s>(
        &self,
        key: &str,
        site: impl FnOnce() -> Registration<'s>,
        warned: &AtomicBool,
    ) -> ServiceRef {
        // Without entering the map's collector (see `crate::keymap`).
        if let Some(e) = self.map.take_used(key) {
            return ServiceRef(NonNull::from(e));
        }
        self.get_or_register(key, site(), thread_random, false, Some(warned))
    }

    /// Evicts idle computed keys until the count is below 90% of the cap, in at most
    /// two passes: the first clears the marks of keys used, the second evicts what
    /// stayed idle.
    /// Like a clock hand, each sweep goes on where the previous one stopped.
    fn sweep(&self) {
        // Wait for a sweep in progress rather than skip it: a skipping thread would
        // go on registering keys past the cap while the sweep runs (with two threads,
        // 70% above it). After waiting, the count is usually below target already.
        let _only_one = self.sweeping.lock().unwrap_or_else(|p| p.into_inner());
        let cap = self.capacity.load(Relaxed);
        let target = cap - cap / 10;
        let map = self.map.pin();
        // Going round like a clock hand, from where the last sweep stopped, rather
        // than from the first entry each time, gives every key the same time to
        // be used again between two passes.
        let start = self.hand.load(Relaxed);
        let mut next = start;
        'sweep: for _pass in 0..2 {
            for (n, e) in map.iter_from(start) {
                if self.keyed.load(Relaxed) <= target {
                    break 'sweep;
                }
                next = n + 1;
                let (s, hold, k) = (e.value(), e.hold(), e.key());
                if s.pinned || hold.take_used_mark() {
                    continue;
                }
                let idle = hold.held() == 0 && s.state() == CircuitState::Closed;
                if !idle || !hold.try_evict() {
                    continue;
                }
                // Only the sweep removes entries, under its lock, and none is ever
                // replaced: this one is still in the map, and goes.
                self.returns.evicted(k);
                map.remove(k);
                self.keyed.fetch_sub(1, Relaxed);
            }
        }
        if let Some(t) = self.returns.judge() {
            tracing::warn!(
                cap,
                returned = t.returned,
                new_keys = t.fresh,
                "computed service keys come back soon after their eviction: {} of the last \
                 {} new keys had been evicted by a recent sweep. More keys are in use than \
                 the key cap of {cap} holds, so each call on them registers its key again: \
                 its breaker's window and counts start over, and the call costs far more. \
                 Raise the cap above the number of keys in use with set_key_capacity \
                 (this warning is given at most once a minute)",
                t.returned,
                t.fresh,
            );
        }
        self.hand.store(next, Relaxed);
    }
}

fn check_conflict(s: &Service, config: &PolicyConfig, warned: Option<&AtomicBool>) {
    let (_, registered) = s.base();
    if registered != config && !warned.is_some_and(|w| w.swap(true, Relaxed)) {
        tracing::warn!(
            service = s.name(),
            kept = ?registered,
            ignored = ?config,
            "service registered again with other settings: the first registration's settings are kept"
        );
    }
}

/// Every registered service's snapshot (breaker state and counters), sorted by name.
pub fn snapshot_all() -> Vec<ServiceSnapshot> {
    let mut all: Vec<_> = registry().all().iter().map(|s| s.snapshot()).collect();
    all.sort_by(|a, b| a.service.cmp(&b.service));
    all
}

/// Restores snapshots: at once for services registered already, and for the others
/// when they register (their first call). Returns how many were restored at once.
pub fn restore_all(snapshots: impl IntoIterator<Item = ServiceSnapshot>) -> usize {
    let r = registry();
    let mut now = 0;
    for snap in snapshots {
        match r.get(&snap.service) {
            Some(s) => {
                s.restore(&snap);
                now += 1;
            }
            None => {
                r.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(snap.service.clone(), (snap, crate::clock::now()));
            }
        }
    }
    now
}

/// How a call site names its service.
#[derive(Clone, Copy, Debug)]
pub enum SiteName {
    /// `service = "payments"`.
    Fixed(&'static str),
    /// No `service` key: the function's path, computed once.
    Generated(fn() -> &'static str),
}

/// The generated service name from the type name of a marker item nested in the
/// annotated function: the marker's own segment and any `{{closure}}` segments at
/// the end are dropped, leaving `crate::module::function`,
/// `crate::module::Type::method` or `<crate::Type as crate::Trait>::method`.
///
/// ```
/// use resilience_runtime::__private::generated_name;
/// assert_eq!(generated_name("app::db::Repo::load::{{closure}}::__resilience_name"), "app::db::Repo::load");
/// ```
pub fn generated_name(marker_type_name: &'static str) -> &'static str {
    let mut s = marker_type_name;
    if let Some(rest) = s.strip_suffix("::__resilience_name") {
        s = rest;
    }
    while let Some(rest) = s.strip_suffix("::{{closure}}") {
        s = rest;
    }
    s
}

/// One per annotated function (a `static`): its name, its settings, and the service
/// they resolve to, looked up once.
pub struct Site {
    name: SiteName,
    spec: Spec,
    config: OnceLock<PolicyConfig>,
    service: OnceLock<&'static Service>,
    /// `service` once it is set, for the call path: one load and a test for null,
    /// where the `OnceLock` reads its state and then its value.
    resolved: AtomicPtr<Service>,
    warned: AtomicBool,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Site {
    /// A call site; nothing is registered until its first call.
    pub const fn new(name: SiteName, spec: Spec) -> Site {
        Site {
            name,
            spec,
            config: OnceLock::new(),
            service: OnceLock::new(),
            resolved: AtomicPtr::new(std::ptr::null_mut()),
            warned: AtomicBool::new(false),
        }
    }

    fn config(&self) -> &PolicyConfig {
        self.config.get_or_init(|| match self.spec.resolve() {
            Ok(c) => c,
            Err(e) => {
                // The attribute checked these at compile time; only a runtime change
                // could get here. Run unprotected rather than fail every call.
                tracing::error!(error = %e, "invalid resilience settings: policies disabled for this call site");
                PolicyConfig::NONE
            }
        })
    }

    /// The service of a fixed or generated name: registered at the first call, then
    /// read from the site.
    #[inline]
    pub fn service(&'static self) -> &'static Service {
        let s = self.resolved.load(Acquire);
        if s.is_null() {
            return self.register();
        }
        // SAFETY: `resolved` is only ever set (in `register`) to the service the
        // `OnceLock` holds, a `&'static Service`; Acquire pairs with its Release.
        unsafe { &*s }
    }

    #[cold]
    fn register(&'static self) -> &'static Service {
        let name = match self.name {
            SiteName::Fixed(n) => n,
            SiteName::Generated(f) => f(),
        };
        let service = *self.service.get_or_init(|| {
            // Pinned services are never removed from the registry, and the site
            // keeps its handle for the life of the program (which also keeps a
            // computed key of the same name, registered first, from eviction).
            registry()
                .get_or_register(
                    name,
                    Registration::Site(&self.spec, self.config()),
                    thread_random,
                    true,
                    Some(&self.warned),
                )
                .leak()
        });
        self.resolved
            .store(std::ptr::from_ref(service).cast_mut(), Release);
        service
    }

    /// The service of a computed key: looked up per call (no allocation once the key
    /// exists), registered on first use.
    #[inline]
    pub fn keyed(&'static self, key: &str) -> ServiceRef {
        // The site's settings are worked out only to register a new key.
        registry().keyed(
            key,
            || Registration::Site(&self.spec, self.config()),
            &self.warned,
        )
    }
}

/// A handle on a registered service. While one is held, the service stays in the
/// registry: a computed key's service is not evicted. Calls on a computed key hold
/// one for their duration.
pub struct ServiceRef(NonNull<Entry>);

// SAFETY: a handle gives out `&Service` (`Service` is `Sync`) and counts in the
// entry's hold with atomics; any thread may hold, use and give it back.
unsafe impl Send for ServiceRef {}
// SAFETY: as for `Send`: shared, it only gives out `&Service`.
unsafe impl Sync for ServiceRef {}

impl ServiceRef {
    /// A handle on `entry`'s service, unless the sweep is evicting it.
    #[inline(always)]
    fn take(entry: &Entry) -> Option<ServiceRef> {
        entry
            .hold()
            .take()
            .then(|| ServiceRef(NonNull::from(entry)))
    }

    /// [`ServiceRef::take`] for a call, which marks the key used (see [`Hold`](crate::hold::Hold)).
    #[inline(always)]
    fn take_used(entry: &Entry) -> Option<ServiceRef> {
        entry
            .hold()
            .take_used()
            .then(|| ServiceRef(NonNull::from(entry)))
    }

    #[inline(always)]
    fn entry(&self) -> &Entry {
        // SAFETY: the handle counts in the entry's hold, so the sweep does not
        // remove it, and nothing else removes or replaces entries: it stays where
        // it is, its key and service written, until the handle is given back (in
        // `drop`).
        unsafe { self.0.as_ref() }
    }

    /// Keeps the handle for the life of the program: the service is never evicted.
    pub(crate) fn leak(self) -> &'static Service {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: as in `entry`, and the handle is never given back.
        unsafe { (*this.0.as_ptr()).value() }
    }
}

impl Clone for ServiceRef {
    #[inline(always)]
    fn clone(&self) -> Self {
        self.entry().hold().add();
        ServiceRef(self.0)
    }
}

impl Drop for ServiceRef {
    #[inline(always)]
    fn drop(&mut self) {
        // The last use of the entry through this handle.
        self.entry().hold().give_back();
    }
}

impl std::ops::Deref for ServiceRef {
    type Target = Service;
    #[inline(always)]
    fn deref(&self) -> &Service {
        self.entry().value()
    }
}

impl std::fmt::Debug for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ServiceRef").field(&**self).finish()
    }
}

// What a computed-key lane call reads and writes of its map entry (see `Map`)
// lies in the entry's first 64 bytes, and entries take three lines each (see
// `crate::keymap`). Checked when the crate compiles (but for loom's models, whose
// atomics and cells are larger).
#[cfg(not(resilience_loom))]
const _: () = {
    use std::mem::size_of;
    let end = Entry::VALUE_AT + Service::HOT_END;
    assert!(
        end <= 64,
        "a computed-key call reads past the 64th byte of its entry"
    );
    assert!(
        size_of::<Entry>() == 192,
        "a registry entry is not three lines"
    );
};

const _: () = {
    use std::mem::{align_of, size_of};
    // The breaker's state word and the window's word are its first 16 bytes, as
    // an `Option`: no tag before them.
    assert!(size_of::<Option<crate::breaker::Breaker>>() == size_of::<crate::breaker::Breaker>());
    // The policies word's three tag bits are free in every offset (see `Service`).
    assert!(align_of::<Service>() >= 8 && align_of::<crate::service::Policies>() >= 8);
};
