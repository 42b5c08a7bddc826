//! A fleet: breaker states and rate limits shared by the instances of an
//! application through Redis (feature `redis`).
//!
//! ```no_run
//! use resilience_runtime::fleet::{Fleet, FleetOptions, FleetRateLimit};
//! use resilience_runtime::Rate;
//! # #[tokio::main] async fn main() {
//! let fleet = Fleet::connect("redis://127.0.0.1:6379/", FleetOptions::default());
//! // Breakers of every service are now shared. A standalone fleet-wide limit:
//! let search = fleet.rate_limiter(
//!     "search-api",
//!     FleetRateLimit::new(Rate::per_second(100)).expected_instances(3),
//! );
//! if search.try_acquire() {
//!     // call the search API
//! }
//! # }
//! ```
//!
//! Calls are still decided locally, on the same lock-free path as without a fleet:
//! **no call ever waits on Redis, and no call fails because Redis is down**. All
//! Redis I/O happens on a background thread (its own single-threaded tokio runtime,
//! `resilience-fleet`), which learns of local transitions through an
//! [`on_transition`](crate::events::on_transition) listener (see [the hot path](#4-the-hot-path)).
//!
//! # Connection
//!
//! [`Fleet::connect`] never fails because Redis is down: the background task
//! (re)connects with exponential backoff ([`FleetOptions::reconnect_min`], doubling
//! up to [`FleetOptions::reconnect_max`], 5 s by default), logs `redis unavailable`
//! once per outage and `reconnected` once when it is back. It pings every
//! [`FleetOptions::heartbeat`] and gives up on a command after
//! [`FleetOptions::command_timeout`], so a hung server counts as an outage too.
//! While disconnected the instance behaves exactly as without a fleet (every probe
//! gate open, rate limiters on their local fallback).
//!
//! The connection uses RESP3 (Redis 6 or later, or a compatible server) so that one
//! connection carries both commands and the subscription. An invalid URL is
//! logged as an error and leaves the fleet disconnected for good.
//!
//! # 1. Breaker sharing
//!
//! A local transition to `Open` (any reason but `Restored`: adopted states are never
//! re-published, which would loop) is published on the channel `<ns>:breaker` as
//! JSON `{"service", "instance", "state": "Open", "cooldown_left_ms", "at"}` (`at`:
//! Unix milliseconds, informational) and written to the key `<ns>:breaker:<service>`
//! with a TTL of the cooldown left (`PX`), its name added to the set
//! `<ns>:services`; all three in one script. Other instances adopt `Open` with the
//! cooldown left ([`Service::adopt_state`](crate::Service::adopt_state), reason
//! `Restored`). A close after successful probes (`ProbesSucceeded`) is published as
//! `"state": "Closed"` (and the key deleted); the others adopt `Closed`.
//!
//! **Bound.** Connected instances see an opening within the time Redis takes to
//! deliver a message (about a millisecond on a LAN), plus the time the opening
//! instance's event thread takes to reach the transition in its queue. An
//! instance that was disconnected catches up when it reconnects: it reads the
//! keys of every service in `<ns>:services` (still open: adopted with their
//! remaining TTL), and publishes its own openings (and closings) that happened
//! while it was cut off, if its breaker is still in that state. A service not yet
//! called on an instance (so not registered there) adopts a fleet opening within
//! 50 ms of its registration, if the cooldown has not passed by then.
//!
//! Operator actions (`force_open`, `disable`, `reset`) stay local, and a breaker
//! forced open or disabled here ignores the fleet's messages. Only the services
//! named in [`FleetOptions::services`] are shared, when it is set.
//!
//! # 2. Probe coordination
//!
//! While a service is open (its own opening or an adopted one) an instance closes
//! its *probe gate* ([`Service::set_probe_gate`](crate::Service::set_probe_gate)):
//! when its cooldown has passed it keeps rejecting (with `retry_after` 0) instead
//! of turning half-open. At the end of its cooldown it tries to take the lease
//! `SET <ns>:probe:<service> <instance> NX PX <probe_lease>` (in a script that
//! also reports how long the current holder's lease has left). The holder opens its
//! gate, so it alone turns half-open and probes; its verdict (`Closed`, or `Open`
//! again after a failed probe, with the grown cooldown) is published, the lease
//! released, and the others adopt it. The others retry the lease when it would
//! expire. A close also leaves the key `<ns>:closed:<service>` for half of
//! [`FleetOptions::probe_lease`], and no instance takes the lease while it is
//! there: one whose retry comes before the `Closed` message reaches it does not
//! take the lease the prober gave back and probe the closed breaker again (an
//! opening deletes the mark). The holder renews the lease while it is half-open;
//! a holder that got no call to probe with within half of
//! [`FleetOptions::probe_lease`] closes its gate and releases the lease so that
//! an instance with traffic can probe.
//!
//! **Bound.** While Redis is reachable the fleet probes like one instance: only
//! the lease holder is half-open, so at most `half_open_calls` probes are in
//! flight fleet-wide, and when they fail there are at most `half_open_calls` probes
//! per cooldown (when they succeed, the holder goes on until `success_threshold`
//! of them have, as a single instance would). Two exceptions, both narrow: a call
//! already past the gate check when the holder closes its gate on lease hand-over
//! may still turn that instance half-open (nanoseconds); and a holder that dies
//! mid-probe delays the next probe by up to `probe_lease`. If Redis is
//! unreachable every gate opens: each instance probes on its own, as without a
//! fleet.
//!
//! # 3. Fleet rate limiter
//!
//! [`Fleet::rate_limiter`] makes a standalone [`FleetRateLimiter`] (it is not
//! wired into the `rate_limit` policy of services: call it yourself, as the
//! `fleet` example does). Permits come from one GCRA bucket per limiter in Redis
//! (key `<ns>:rate:<name>`, server time from `TIME`), taken by an atomic Lua script
//! that grants up to a requested number of permits at once and says when more will
//! be available. Each instance keeps a *lease* of permits in an atomic counter:
//! [`FleetRateLimiter::try_acquire`] takes one with a single atomic subtraction
//! (one more on refusal) and never waits. When the lease falls to
//! [`FleetRateLimit::low_water`] the background task tops it up to
//! [`FleetRateLimit::batch`] (retrying when the bucket says permits are due).
//!
//! **Bound.** With `T = per / permits`, GCRA grants at most `t / T + burst` permits
//! in any interval of length `t`; a lease never holds more than `batch` permits,
//! and only permits the bucket granted are ever leased. So while Redis is
//! reachable, over any window of length `t`, the `n` instances of the fleet grant
//! at most
//!
//! ```text
//! rate * t + burst + n * batch
//! ```
//!
//! permits (the last term: permits leased before the window and used in it). The
//! price of leasing is the other way round: up to `batch` permits per instance
//! may sit unused in a lease while another instance is refused, and an instance
//! whose lease ran dry is refused for one round trip to Redis until its top-up
//! arrives (the low-water mark makes that rare under steady load). A limiter made
//! while the fleet is connected starts with an empty lease: its first calls are
//! refused until the first top-up (one round trip).
//!
//! While Redis is unreachable (and before the first connection) a limiter first
//! spends what is left of its lease, then falls back to a local GCRA limiter of
//! `rate / expected_instances` with a burst of `burst / expected_instances`
//! (at least 1), logged once per outage. With `n` instances as expected that keeps
//! the fleet at `rate * t + n * max(1, burst / n) + n * batch` over a window of
//! length `t` inside the outage; permits granted locally are not known to the
//! Redis bucket, so a window that spans a reconnection may see the sum of both
//! bounds. With more instances than `expected_instances` the outage bound grows
//! in proportion.
//!
//! # 4. The hot path
//!
//! Calls never touch Redis: a breaker decision is the breaker's own (one load when
//! closed, plus the gate load at the end of a cooldown), a permit is one atomic
//! operation on the lease. Redis being slow, hung or down changes only how fresh
//! the shared state is. The fleet listens to state transitions only
//! ([`crate::events::on_transition`]), so calls queue no per-call events for it:
//! a call costs the same with a fleet as without.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionInfo, IntoConnectionInfo, PushInfo, PushKind};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

use crate::breaker::CircuitState;
use crate::config::{Rate, RateLimitConfig};
use crate::events::{self, EventKind, ListenerId, TransitionReason};
use crate::rate_limit::RateLimiter;
use crate::registry::registry;
use crate::retry::thread_random;
use crate::service::Service;

/// How often services that a fleet opening names but that are not registered here
/// yet are looked for in the registry.
const PENDING_CHECK: Duration = Duration::from_millis(50);

/// Settings of a [`Fleet`]. Build with `..Default::default()`.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetOptions {
    /// Prefix of every Redis key and channel: instances with the same namespace
    /// share state. Default `"resilience"`.
    pub namespace: String,
    /// This instance's name in messages and probe leases. Default: the process id
    /// and a random suffix.
    pub instance_id: Option<String>,
    /// Share only these services' breakers (`None`, the default: all).
    pub services: Option<Vec<String>>,
    /// How long a probe lease lasts unless renewed (renewed while probing).
    /// Default 3 s.
    pub probe_lease: Duration,
    /// The first wait before reconnecting. Default 100 ms.
    pub reconnect_min: Duration,
    /// The longest wait between connection attempts. Default 5 s.
    pub reconnect_max: Duration,
    /// A connection attempt or command that takes longer counts as an outage.
    /// Default 1 s.
    pub command_timeout: Duration,
    /// How often the connection is checked with a `PING`. Default 1 s.
    pub heartbeat: Duration,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            namespace: "resilience".into(),
            instance_id: None,
            services: None,
            probe_lease: Duration::from_secs(3),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            command_timeout: Duration::from_secs(1),
            heartbeat: Duration::from_secs(1),
        }
    }
}

/// Settings of a [`FleetRateLimiter`]: the fleet-wide rate, and how permits are
/// leased to instances.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FleetRateLimit {
    /// The fleet-wide sustained rate.
    pub rate: Rate,
    /// Permits the fleet may take at once after a quiet period. Default: one
    /// period's permits.
    pub burst: u32,
    /// The most permits an instance leases at once (at most `burst`). Default:
    /// a tenth of a second's permits, at least 1.
    pub batch: u32,
    /// The lease is topped up when it falls to this many (below `batch`).
    /// Default: half of `batch`.
    pub low_water: u32,
    /// How many instances share the limit: while Redis is unreachable each one
    /// allows `rate / expected_instances`. Default 1.
    pub expected_instances: u32,
}

impl FleetRateLimit {
    /// `rate` fleet-wide, with the default burst, batch and low-water mark, for
    /// one expected instance.
    pub fn new(rate: Rate) -> Self {
        let rate = Rate::new(rate.permits.max(1), rate.per.max(Duration::from_nanos(1)));
        let burst = rate.permits;
        let tenth = (f64::from(rate.permits) * 0.1 / rate.per.as_secs_f64()).ceil() as u32;
        let batch = tenth.clamp(1, burst);
        Self {
            rate,
            burst,
            batch,
            low_water: batch / 2,
            expected_instances: 1,
        }
    }

    /// Sets the burst (the batch is kept at most the burst).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst.max(1);
        self
    }

    /// Sets the batch (the low-water mark becomes half of it).
    pub fn batch(mut self, batch: u32) -> Self {
        self.batch = batch.max(1);
        self.low_water = self.batch / 2;
        self
    }

    /// Sets the low-water mark.
    pub fn low_water(mut self, low_water: u32) -> Self {
        self.low_water = low_water;
        self
    }

    /// Sets how many instances share the limit (for the local fallback).
    pub fn expected_instances(mut self, n: u32) -> Self {
        self.expected_instances = n.max(1);
        self
    }

    /// The settings made consistent: `1 <= batch <= burst`, `low_water < batch`.
    fn normalized(mut self) -> Self {
        self.rate = Rate::new(
            self.rate.permits.max(1),
            self.rate.per.max(Duration::from_nanos(1)),
        );
        self.burst = self.burst.max(1);
        self.batch = self.batch.clamp(1, self.burst);
        self.low_water = self.low_water.min(self.batch - 1);
        self.expected_instances = self.expected_instances.max(1);
        self
    }

    /// Emission interval in microseconds (fractional).
    fn interval_us(&self) -> f64 {
        self.rate.per.as_secs_f64() * 1e6 / f64::from(self.rate.permits)
    }
}

/// What the background task and the handles share.
struct Shared {
    namespace: String,
    instance: String,
    services: Option<HashSet<String>>,
    connected: watch::Sender<bool>,
    limiters: Mutex<HashMap<String, Arc<LimiterState>>>,
    /// Limiters that want a top-up (or were added).
    wake: Notify,
}

impl Shared {
    fn shares(&self, service: &str) -> bool {
        self.services.as_ref().is_none_or(|s| s.contains(service))
    }
    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.namespace.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }
}

/// A connection of this instance to the fleet: see the [module docs](self).
///
/// Dropping it stops the background task: probe gates reopen and rate limiters
/// fall back to their local limit.
pub struct Fleet {
    shared: Arc<Shared>,
    listener: ListenerId,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("namespace", &self.shared.namespace)
            .field("instance", &self.shared.instance)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

/// A local transition, as the event listener forwards it.
#[derive(Debug, Clone)]
struct Own {
    service: String,
    to: CircuitState,
    reason: TransitionReason,
}

impl Fleet {
    /// Joins the fleet of `options.namespace` through the Redis at `url`
    /// (`redis://host:port/db`). Never fails and never waits: connecting, and
    /// reconnecting after an outage, happen in the background.
    pub fn connect(url: &str, options: FleetOptions) -> Fleet {
        let instance = options
            .instance_id
            .clone()
            .unwrap_or_else(|| format!("{}-{:08x}", std::process::id(), thread_random() as u32));
        let (connected, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            namespace: options.namespace.clone(),
            instance,
            services: options
                .services
                .as_ref()
                .map(|s| s.iter().cloned().collect()),
            connected,
            limiters: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let listener = events::on_transition(move |e| {
            if let EventKind::StateTransition { to, reason, .. } = e.kind {
                if reason != TransitionReason::Restored {
                    let _ = tx.send(Own {
                        service: e.service.to_string(),
                        to,
                        reason,
                    });
                }
            }
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let worker = Worker::new(shared.clone(), url.to_owned(), &options, rx, stop_rx);
        let thread = std::thread::Builder::new()
            .name("resilience-fleet".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(worker.run()),
                    Err(e) => {
                        tracing::error!(error = %e, "fleet: could not start a runtime: staying local")
                    }
                }
            });
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "fleet: could not start its thread: staying local");
                None
            }
        };
        Fleet {
            shared,
            listener,
            stop: Some(stop_tx),
            thread,
        }
    }

    /// This instance's id in the fleet.
    pub fn instance_id(&self) -> &str {
        &self.shared.instance
    }

    /// The namespace (key prefix) of the fleet.
    pub fn namespace(&self) -> &str {
        &self.shared.namespace
    }

    /// Whether Redis is reachable now (as of the last command or heartbeat).
    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    /// Waits until connected, at most `timeout`. Returns whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.connected.subscribe();
        let ok = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|c| *c)).await,
            Ok(Ok(_))
        );
        ok
    }

    /// The fleet-wide limiter `name` (made on first use; later calls with the same
    /// name return it with its first settings).
    pub fn rate_limiter(&self, name: &str, limit: FleetRateLimit) -> FleetRateLimiter {
        let limit = limit.normalized();
        let state = {
            let mut ls = self
                .shared
                .limiters
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            ls.entry(name.to_owned())
                .or_insert_with(|| {
                    let n = limit.expected_instances;
                    let local = RateLimiter::new(RateLimitConfig {
                        rate: Rate::new(limit.rate.permits, limit.rate.per.saturating_mul(n)),
                        burst: (limit.burst / n).max(1),
                        max_wait: Duration::ZERO,
                    });
                    Arc::new(LimiterState {
                        name: name.to_owned(),
                        limit,
                        lease: AtomicI64::new(0),
                        shared_mode: AtomicBool::new(self.is_connected()),
                        refill_pending: AtomicBool::new(true),
                        local,
                        fleet: Arc::downgrade(&self.shared),
                        leased_total: AtomicU64::new(0),
                    })
                })
                .clone()
        };
        self.shared.wake.notify_one();
        FleetRateLimiter(state)
    }

    /// Stops the background task and waits for it (at most about
    /// `command_timeout`, to release probe leases). Dropping the fleet stops it
    /// without waiting.
    pub fn shutdown(mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        events::remove_listener(self.listener);
        // Dropping the sender tells the worker to stop.
        self.stop.take();
    }
}

struct LimiterState {
    name: String,
    limit: FleetRateLimit,
    /// Permits leased from the fleet and not used yet. Briefly negative while a
    /// refused call gives back its subtraction.
    lease: AtomicI64,
    /// Redis answers: permits come from the lease only. Otherwise the local
    /// fallback serves once the lease is empty.
    shared_mode: AtomicBool,
    /// A top-up was asked for and not done yet.
    refill_pending: AtomicBool,
    local: RateLimiter,
    fleet: std::sync::Weak<Shared>,
    leased_total: AtomicU64,
}

impl LimiterState {
    #[cold]
    fn request_refill(&self) {
        if !self.refill_pending.load(Relaxed) && !self.refill_pending.swap(true, Relaxed) {
            if let Some(f) = self.fleet.upgrade() {
                f.wake.notify_one();
            }
        }
    }
}

/// A rate limit shared by the fleet: see the [module docs](self#3-fleet-rate-limiter).
#[derive(Clone)]
pub struct FleetRateLimiter(Arc<LimiterState>);

impl std::fmt::Debug for FleetRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetRateLimiter")
            .field("name", &self.0.name)
            .field("limit", &self.0.limit)
            .field("leased", &self.leased())
            .field("shared", &self.is_shared())
            .finish()
    }
}

impl FleetRateLimiter {
    /// Takes a permit if one is available now. Never waits: from the lease while
    /// Redis is reachable, from the local fallback otherwise.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        let s = &*self.0;
        let before = s.lease.fetch_sub(1, Relaxed);
        if before > 0 {
            if before - 1 <= i64::from(s.limit.low_water) && s.shared_mode.load(Relaxed) {
                s.request_refill();
            }
            return true;
        }
        s.lease.fetch_add(1, Relaxed);
        if s.shared_mode.load(Relaxed) {
            s.request_refill();
            return false;
        }
        match s.local.acquire() {
            Ok(r) => {
                r.used();
                true
            }
            Err(_) => false,
        }
    }

    /// The limiter's name (its Redis key is `<ns>:rate:<name>`).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Its settings (made consistent: `batch <= burst`, `low_water < batch`).
    pub fn limit(&self) -> FleetRateLimit {
        self.0.limit
    }

    /// Permits leased to this instance and not used yet.
    pub fn leased(&self) -> u32 {
        u32::try_from(self.0.lease.load(Relaxed).max(0)).unwrap_or(u32::MAX)
    }

    /// Whether permits come from the fleet (Redis answered the last top-up)
    /// rather than the local fallback.
    pub fn is_shared(&self) -> bool {
        self.0.shared_mode.load(Relaxed)
    }

    /// Permits leased from the fleet since the start.
    pub fn leased_total(&self) -> u64 {
        self.0.leased_total.load(Relaxed)
    }
}

/// A breaker message on `<ns>:breaker`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct BreakerMessage {
    service: String,
    instance: String,
    state: CircuitState,
    cooldown_left_ms: u64,
    at: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Sets the breaker key (unless a longer-lived one is there), records the service,
/// releases this instance's probe lease, deletes the mark of a close and publishes.
/// KEYS: breaker key, services set, probe key, closed key. ARGV: service,
/// payload, px, channel, instance.
const OPEN_SCRIPT: &str = r"
local cur = redis.call('PTTL', KEYS[1])
if cur < tonumber(ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
redis.call('SADD', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[3]) == ARGV[5] then redis.call('DEL', KEYS[3]) end
redis.call('DEL', KEYS[4])
return redis.call('PUBLISH', ARGV[4], ARGV[2])
";

/// Deletes the breaker key, releases this instance's lease, marks the close for
/// `ARGV[4]` milliseconds (see [`LEASE_SCRIPT`]) and publishes.
/// KEYS: breaker key, probe key, closed key. ARGV: instance, payload, channel,
/// mark px.
const CLOSED_SCRIPT: &str = r"
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[4])
return redis.call('PUBLISH', ARGV[3], ARGV[2])
";

/// Takes (or renews, when `ARGV[3]` is 1 and it is ours) the probe lease: -1 when
/// held, else the milliseconds until the current holder's lease expires, or until
/// the mark of a close expires: an instance that has not yet heard of the close
/// must not take the lease its prober gave back and probe a closed breaker again.
/// KEYS: probe key, closed key. ARGV: instance, px, renew_only.
const LEASE_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return -1
end
if ARGV[3] == '1' then return -2 end
local closed = redis.call('PTTL', KEYS[2])
if closed > 0 then return closed end
if cur == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return -1
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then return 0 end
return ttl
";

/// Releases the probe lease if it is ours. KEYS: probe key. ARGV: instance.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// The open services and their remaining TTLs; forgets the expired ones.
/// KEYS: services set. ARGV: breaker key prefix.
const RESYNC_SCRIPT: &str = r"
local out = {}
for _, s in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local ttl = redis.call('PTTL', ARGV[1] .. s)
  if ttl > 0 then
    table.insert(out, {s, ttl})
  else
    redis.call('SREM', KEYS[1], s)
  end
end
return out
";

/// GCRA over a batch: grants up to `want` permits now; returns them and the
/// microseconds until `k` more are due. KEYS: bucket. ARGV: interval (us,
/// fractional), tolerance (us), want, k.
const GCRA_SCRIPT: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local k = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local start = math.max(tat, now)
local n = 0
if start - tolerance <= now then
  n = math.min(want, math.floor((now + tolerance - start) / interval) + 1)
end
local new_tat = start + n * interval
if n > 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
end
local wait = math.max(0, new_tat + (k - 1) * interval - tolerance - now)
return {n, math.ceil(wait)}
";

struct Scripts {
    open: redis::Script,
    closed: redis::Script,
    lease: redis::Script,
    release: redis::Script,
    resync: redis::Script,
    gcra: redis::Script,
}

/// Where this instance stands on one open service.
#[derive(Debug, Clone, Copy)]
enum Lease {
    /// Try to take the lease at `at` (the end of the cooldown, or the holder's
    /// lease expiry).
    Waiting { at: Instant },
    /// This instance holds the lease; check on it at `check_at`.
    Holding { check_at: Instant },
}

/// Why the connected loop ended.
enum Exit {
    Stop,
    Lost(String),
}

type R<T> = Result<T, Exit>;

struct Worker {
    shared: Arc<Shared>,
    url: String,
    probe_lease: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    command_timeout: Duration,
    heartbeat: Duration,
    own: mpsc::UnboundedReceiver<Own>,
    stop: oneshot::Receiver<()>,
    scripts: Scripts,
    /// Open services this instance coordinates probes for.
    tracked: HashMap<String, Lease>,
    /// Services whose probe gate this instance closed.
    gated: HashSet<String>,
    /// Fleet openings of services not registered here yet: until when.
    pending: HashMap<String, Instant>,
    /// Own transitions while disconnected, published on reconnection.
    unsynced: HashMap<String, CircuitState>,
    /// Limiters waiting for permits to be due in the bucket.
    refill_at: HashMap<String, Instant>,
    next_ping: Instant,
    /// An outage has been logged and not yet ended.
    in_outage: bool,
    ever_connected: bool,
}

/// Whether an error means the connection is gone (rather than a bad command).
fn is_fatal(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

fn lost(e: redis::RedisError) -> Exit {
    Exit::Lost(e.to_string())
}

fn jitter(max_ms: u64) -> Duration {
    Duration::from_millis(thread_random() % max_ms.max(1))
}

/// Forced open or disabled by an operator here: the fleet leaves it alone.
fn operator_state(svc: &Service) -> bool {
    matches!(
        svc.state(),
        CircuitState::ForcedOpen | CircuitState::Disabled
    )
}

fn open_left(svc: &Service) -> Option<Duration> {
    let snap = svc.snapshot().breaker?;
    (snap.state == CircuitState::Open).then_some(snap.cooldown_left)
}

impl Worker {
    fn new(
        shared: Arc<Shared>,
        url: String,
        o: &FleetOptions,
        own: mpsc::UnboundedReceiver<Own>,
        stop: oneshot::Receiver<()>,
    ) -> Self {
        Self {
            shared,
            url,
            probe_lease: o.probe_lease.max(Duration::from_millis(10)),
            reconnect_min: o.reconnect_min.max(Duration::from_millis(1)),
            reconnect_max: o.reconnect_max.max(o.reconnect_min),
            command_timeout: o.command_timeout.max(Duration::from_millis(1)),
            heartbeat: o.heartbeat.max(Duration::from_millis(10)),
            own,
            stop,
            scripts: Scripts {
                open: redis::Script::new(OPEN_SCRIPT),
                closed: redis::Script::new(CLOSED_SCRIPT),
                lease: redis::Script::new(LEASE_SCRIPT),
                release: redis::Script::new(RELEASE_SCRIPT),
                resync: redis::Script::new(RESYNC_SCRIPT),
                gcra: redis::Script::new(GCRA_SCRIPT),
            },
            tracked: HashMap::new(),
            gated: HashSet::new(),
            pending: HashMap::new(),
            unsynced: HashMap::new(),
            refill_at: HashMap::new(),
            next_ping: Instant::now(),
            in_outage: false,
            ever_connected: false,
        }
    }

    fn channel(&self) -> String {
        self.shared.key(&["breaker"])
    }

    async fn run(mut self) {
        let info = match self.url.as_str().into_connection_info() {
            Ok(mut info) => {
                info.redis.protocol = redis::ProtocolVersion::RESP3;
                info
            }
            Err(e) => {
                tracing::error!(error = %e, "fleet: invalid redis URL: breakers and limits stay local");
                self.wait_disconnected(None).await;
                return;
            }
        };
        let mut backoff = self.reconnect_min;
        loop {
            match self.connect(&info).await {
                Ok((conn, pushes)) => {
                    backoff = self.reconnect_min;
                    match self.connected(conn, pushes).await {
                        Exit::Stop => break,
                        Exit::Lost(why) => self.disconnected(&why),
                    }
                }
                Err(e) => self.disconnected(&e.to_string()),
            }
            let wait = backoff + jitter(backoff.as_millis() as u64 / 5 + 1);
            if !self.wait_disconnected(Some(wait)).await {
                break;
            }
            backoff = backoff.saturating_mul(2).min(self.reconnect_max);
        }
        self.open_all_gates();
        self.limiters_local();
        self.shared.connected.send_replace(false);
    }

    async fn connect(
        &self,
        info: &ConnectionInfo,
    ) -> redis::RedisResult<(MultiplexedConnection, mpsc::UnboundedReceiver<PushInfo>)> {
        let client = redis::Client::open(info.clone())?;
        let (tx, rx) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.command_timeout)
            .set_response_timeout(self.command_timeout)
            .set_push_sender(tx);
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        conn.subscribe(self.channel()).await?;
        Ok((conn, rx))
    }

    /// Redis is unreachable: local behaviour everywhere, logged once per outage.
    fn disconnected(&mut self, why: &str) {
        if !self.in_outage {
            self.in_outage = true;
            tracing::warn!(error = why, namespace = %self.shared.namespace, "fleet: redis unavailable: breakers and rate limits are local until it is back");
            let ls = self.limiters();
            for l in ls {
                let n = l.limit.expected_instances;
                tracing::warn!(limiter = %l.name, rate = %l.limit.rate, expected_instances = n, "fleet: rate limiter falls back to rate / expected_instances locally");
            }
        }
        self.shared.connected.send_replace(false);
        self.open_all_gates();
        self.tracked.clear();
        self.refill_at.clear();
        self.limiters_local();
    }

    fn limiters(&self) -> Vec<Arc<LimiterState>> {
        self.shared
            .limiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn limiters_local(&self) {
        for l in self.limiters() {
            l.shared_mode.store(false, Relaxed);
            l.refill_pending.store(false, Relaxed);
        }
    }

    fn open_all_gates(&mut self) {
        for s in self.gated.drain() {
            if let Some(svc) = registry().get(&s) {
                svc.set_probe_gate(true);
            }
        }
    }

    fn close_gate(&mut self, svc: &Service) {
        svc.set_probe_gate(false);
        self.gated.insert(svc.name().to_owned());
    }

    fn open_gate(&mut self, service: &str) {
        if self.gated.remove(service) {
            if let Some(svc) = registry().get(service) {
                svc.set_probe_gate(true);
            }
        }
    }

    /// Waits `wait` (forever with `None`) while disconnected, keeping track of own
    /// transitions. `false` when told to stop.
    async fn wait_disconnected(&mut self, wait: Option<Duration>) -> bool {
        let until = wait.map(|w| Instant::now() + w);
        loop {
            let sleep = async {
                match until {
                    Some(u) => tokio::time::sleep_until(u).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut self.stop => return false,
                own = self.own.recv() => match own {
                    Some(own) => self.note_unsynced(own),
                    None => return false,
                },
                _ = self.shared.wake.notified() => {}
                _ = sleep => return true,
            }
        }
    }

    fn note_unsynced(&mut self, own: Own) {
        if !self.shared.shares(&own.service) {
            return;
        }
        match own.to {
            CircuitState::Open => {
                self.unsynced.insert(own.service, CircuitState::Open);
            }
            CircuitState::Closed if own.reason == TransitionReason::ProbesSucceeded => {
                self.unsynced.insert(own.service, CircuitState::Closed);
            }
            CircuitState::Closed | CircuitState::ForcedOpen | CircuitState::Disabled => {
                self.unsynced.remove(&own.service);
            }
            CircuitState::HalfOpen => {}
        }
    }

    /// The connected loop: returns when stopped or when the connection is lost.
    async fn connected(
        &mut self,
        mut conn: MultiplexedConnection,
        mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    ) -> Exit {
        if let Err(e) = self.on_connect(&mut conn).await {
            return e;
        }
        loop {
            let deadline = self.next_deadline();
            let step = tokio::select! {
                _ = &mut self.stop => {
                    self.release_leases(&mut conn).await;
                    return Exit::Stop;
                }
                push = pushes.recv() => match push {
                    Some(p) => self.on_push(&mut conn, p).await,
                    None => Err(Exit::Lost("connection closed".into())),
                },
                own = self.own.recv() => match own {
                    Some(own) => {
                        let copy = own.clone();
                        let r = self.on_own(&mut conn, own).await;
                        if r.is_err() {
                            // Published at the next connection instead.
                            self.note_unsynced(copy);
                        }
                        r
                    }
                    None => Err(Exit::Stop),
                },
                _ = self.shared.wake.notified() => Ok(()),
                _ = tokio::time::sleep_until(deadline) => Ok(()),
            };
            let step = match step {
                Ok(()) => self.run_due(&mut conn).await,
                Err(e) => Err(e),
            };
            if let Err(e) = step {
                return e;
            }
        }
    }

    async fn on_connect(&mut self, conn: &mut MultiplexedConnection) -> R<()> {
        // Resync: the fleet's open services.
        let open: Vec<(String, i64)> = self
            .scripts
            .resync
            .key(self.shared.key(&["services"]))
            .arg(self.shared.key(&["breaker", ""]))
            .invoke_async(conn)
            .await
            .map_err(lost)?;
        self.shared.connected.send_replace(true);
        if self.in_outage {
            tracing::info!(namespace = %self.shared.namespace, open = open.len(), "fleet: reconnected to redis");
        } else if !self.ever_connected {
            tracing::info!(namespace = %self.shared.namespace, instance = %self.shared.instance, open = open.len(), "fleet: connected to redis");
        }
        self.in_outage = false;
        self.ever_connected = true;
        self.next_ping = Instant::now() + self.heartbeat;
        for (service, ttl) in open {
            if self.shared.shares(&service) {
                let left = Duration::from_millis(u64::try_from(ttl).unwrap_or(0));
                self.remote_open(conn, &service, left).await?;
            }
        }
        // What happened here while cut off.
        let unsynced: Vec<(String, CircuitState)> =
            self.unsynced.iter().map(|(s, c)| (s.clone(), *c)).collect();
        for (service, state) in unsynced {
            // Forgotten once published (kept if the connection drops meanwhile).
            self.unsynced.remove(&service);
            let Some(svc) = registry().get(&service) else {
                continue;
            };
            match state {
                CircuitState::Open => {
                    if let Some(left) = open_left(&svc) {
                        self.close_gate(&svc);
                        if let Err(e) = self.publish_open(conn, &service, left).await {
                            self.unsynced.insert(service, state);
                            return Err(e);
                        }
                        self.tracked.insert(
                            service,
                            Lease::Waiting {
                                at: Instant::now() + left,
                            },
                        );
                    }
                }
                CircuitState::Closed if svc.state() == CircuitState::Closed => {
                    if let Err(e) = self.publish_closed(conn, &service).await {
                        self.unsynced.insert(service, state);
                        return Err(e);
                    }
                }
                _ => {}
            }
        }
        for l in self.limiters() {
            l.refill_pending.store(true, Relaxed);
            self.refill_at.remove(&l.name);
        }
        Ok(())
    }

    fn next_deadline(&self) -> Instant {
        let mut next = self.next_ping;
        for lease in self.tracked.values() {
            let at = match *lease {
                Lease::Waiting { at } => at,
                Lease::Holding { check_at } => check_at,
            };
            next = next.min(at);
        }
        for at in self.refill_at.values() {
            next = next.min(*at);
        }
        if !self.pending.is_empty() {
            next = next.min(Instant::now() + PENDING_CHECK);
        }
        next
    }

    /// Runs a command; a lost connection ends the loop, another error is logged.
    fn check<T>(&self, r: redis::RedisResult<T>, what: &str) -> R<Option<T>> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_fatal(&e) => Err(lost(e)),
            Err(e) => {
                tracing::warn!(error = %e, what, "fleet: redis command failed");
                Ok(None)
            }
        }
    }

    async fn on_push(&mut self, conn: &mut MultiplexedConnection, p: PushInfo) -> R<()> {
        match p.kind {
            PushKind::Disconnection => Err(Exit::Lost("disconnected".into())),
            PushKind::Message => {
                let Some(payload) = p.data.get(1) else {
                    return Ok(());
                };
                let bytes: Vec<u8> = match redis::from_redis_value(payload) {
                    Ok(b) => b,
                    Err(_) => return Ok(()),
                };
                let msg: BreakerMessage = match serde_json::from_slice(&bytes) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!(error = %e, "fleet: ignoring a malformed breaker message");
                        return Ok(());
                    }
                };
                if msg.instance == self.shared.instance || !self.shared.shares(&msg.service) {
                    return Ok(());
                }
                match msg.state {
                    CircuitState::Open => {
                        let left = Duration::from_millis(msg.cooldown_left_ms);
                        self.remote_open(conn, &msg.service, left).await
                    }
                    CircuitState::Closed => {
                        self.pending.remove(&msg.service);
                        if let Some(svc) = registry().get(&msg.service) {
                            if !operator_state(&svc) {
                                svc.adopt_state(CircuitState::Closed, Duration::ZERO);
                            }
                        }
                        self.untrack(conn, &msg.service).await
                    }
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Another instance (or the keys at resync) says `service` is open for `left`.
    async fn remote_open(
        &mut self,
        conn: &mut MultiplexedConnection,
        service: &str,
        left: Duration,
    ) -> R<()> {
        let now = Instant::now();
        let svc = match registry().get(service) {
            Some(svc) if svc.config().breaker.is_some() => svc,
            _ => {
                let until = now + left;
                let e = self.pending.entry(service.to_owned()).or_insert(until);
                *e = (*e).max(until);
                return Ok(());
            }
        };
        if operator_state(&svc) {
            return Ok(());
        }
        self.close_gate(&svc);
        svc.adopt_state(CircuitState::Open, left);
        if let Some(Lease::Holding { .. }) = self.tracked.get(service) {
            // The probe elsewhere (or a newer opening) supersedes ours.
            let r = self
                .scripts
                .release
                .key(self.shared.key(&["probe", service]))
                .arg(&self.shared.instance)
                .invoke_async::<i64>(conn)
                .await;
            self.check(r, "release probe lease")?;
        }
        let at = match self.tracked.get(service) {
            Some(Lease::Waiting { at }) => (*at).max(now + left),
            _ => now + left,
        };
        self.tracked
            .insert(service.to_owned(), Lease::Waiting { at });
        Ok(())
    }

    /// No longer open here: gate back open, lease released.
    async fn untrack(&mut self, conn: &mut MultiplexedConnection, service: &str) -> R<()> {
        self.open_gate(service);
        if let Some(Lease::Holding { .. }) = self.tracked.remove(service) {
            let r = self
                .scripts
                .release
                .key(self.shared.key(&["probe", service]))
                .arg(&self.shared.instance)
                .invoke_async::<i64>(conn)
                .await;
            self.check(r, "release probe lease")?;
        }
        Ok(())
    }

    async fn release_leases(&mut self, conn: &mut MultiplexedConnection) {
        let held: Vec<String> = self
            .tracked
            .iter()
            .filter(|(_, l)| matches!(l, Lease::Holding { .. }))
            .map(|(s, _)| s.clone())
            .collect();
        for s in held {
            let _ = self
                .scripts
                .release
                .key(self.shared.key(&["probe", &s]))
                .arg(&self.shared.instance)
                .invoke_async::<i64>(conn)
                .await;
        }
    }

    fn message(&self, service: &str, state: CircuitState, left: Duration) -> String {
        let msg = BreakerMessage {
            service: service.to_owned(),
            instance: self.shared.instance.clone(),
            state,
            cooldown_left_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            at: unix_ms(),
        };
        serde_json::to_string(&msg).unwrap_or_default()
    }

    async fn publish_open(
        &mut self,
        conn: &mut MultiplexedConnection,
        service: &str,
        left: Duration,
    ) -> R<()> {
        let payload = self.message(service, CircuitState::Open, left);
        let px = u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1);
        let r = self
            .scripts
            .open
            .key(self.shared.key(&["breaker", service]))
            .key(self.shared.key(&["services"]))
            .key(self.shared.key(&["probe", service]))
            .key(self.shared.key(&["closed", service]))
            .arg(service)
            .arg(payload)
            .arg(px)
            .arg(self.channel())
            .arg(&self.shared.instance)
            .invoke_async::<i64>(conn)
            .await;
        self.check(r, "publish opening")?;
        tracing::debug!(service, ?left, "fleet: published opening");
        Ok(())
    }

    async fn publish_closed(&mut self, conn: &mut MultiplexedConnection, service: &str) -> R<()> {
        let payload = self.message(service, CircuitState::Closed, Duration::ZERO);
        let mark = u64::try_from((self.probe_lease / 2).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let r = self
            .scripts
            .closed
            .key(self.shared.key(&["breaker", service]))
            .key(self.shared.key(&["probe", service]))
            .key(self.shared.key(&["closed", service]))
            .arg(&self.shared.instance)
            .arg(payload)
            .arg(self.channel())
            .arg(mark)
            .invoke_async::<i64>(conn)
            .await;
        self.check(r, "publish closing")?;
        tracing::debug!(service, "fleet: published closing");
        Ok(())
    }

    /// A local transition (never `Restored`).
    async fn on_own(&mut self, conn: &mut MultiplexedConnection, own: Own) -> R<()> {
        if !self.shared.shares(&own.service) {
            return Ok(());
        }
        let Some(svc) = registry().get(&own.service) else {
            return Ok(());
        };
        match own.to {
            CircuitState::Open => {
                // Read now: the event may be late, and the state moved on.
                let Some(left) = open_left(&svc) else {
                    return Ok(());
                };
                self.close_gate(&svc);
                // The script also releases our lease (a failed probe).
                self.publish_open(conn, &own.service, left).await?;
                self.tracked.insert(
                    own.service,
                    Lease::Waiting {
                        at: Instant::now() + left,
                    },
                );
            }
            CircuitState::Closed if own.reason == TransitionReason::ProbesSucceeded => {
                self.publish_closed(conn, &own.service).await?;
                self.open_gate(&own.service);
                self.tracked.remove(&own.service);
            }
            CircuitState::Closed | CircuitState::ForcedOpen | CircuitState::Disabled => {
                self.untrack(conn, &own.service).await?;
            }
            CircuitState::HalfOpen => {
                if let Some(Lease::Waiting { .. }) = self.tracked.get(&own.service) {
                    // Turned half-open without the lease (its gate check raced a
                    // hand-over): claim it, so that no one else probes meanwhile.
                    let held = self.take_lease(conn, &own.service, false).await?;
                    if held == Some(-1) {
                        self.tracked.insert(
                            own.service,
                            Lease::Holding {
                                check_at: Instant::now() + self.probe_lease / 2,
                            },
                        );
                    } else {
                        tracing::debug!(service = %own.service, "fleet: probing without the lease (raced a hand-over)");
                    }
                }
            }
        }
        Ok(())
    }

    /// `Some(-1)`: held; `Some(ms)`: someone else holds it for `ms` more.
    async fn take_lease(
        &mut self,
        conn: &mut MultiplexedConnection,
        service: &str,
        renew_only: bool,
    ) -> R<Option<i64>> {
        let px = u64::try_from(self.probe_lease.as_millis()).unwrap_or(u64::MAX);
        let r = self
            .scripts
            .lease
            .key(self.shared.key(&["probe", service]))
            .key(self.shared.key(&["closed", service]))
            .arg(&self.shared.instance)
            .arg(px)
            .arg(if renew_only { "1" } else { "0" })
            .invoke_async::<i64>(conn)
            .await;
        self.check(r, "probe lease")
    }

    /// Timers: leases, pending adoptions, top-ups, heartbeat.
    async fn run_due(&mut self, conn: &mut MultiplexedConnection) -> R<()> {
        let now = Instant::now();
        if now >= self.next_ping {
            let r = redis::cmd("PING").query_async::<String>(conn).await;
            self.check(r, "ping")?;
            self.next_ping = Instant::now() + self.heartbeat;
        }
        let due: Vec<(String, Lease)> = self
            .tracked
            .iter()
            .filter(|(_, l)| match **l {
                Lease::Waiting { at } => at <= now,
                Lease::Holding { check_at } => check_at <= now,
            })
            .map(|(s, l)| (s.clone(), *l))
            .collect();
        for (service, lease) in due {
            self.lease_due(conn, &service, lease).await?;
        }
        if !self.pending.is_empty() {
            let pending: Vec<(String, Instant)> =
                self.pending.iter().map(|(s, u)| (s.clone(), *u)).collect();
            for (service, until) in pending {
                if until <= now {
                    self.pending.remove(&service);
                } else if registry()
                    .get(&service)
                    .is_some_and(|s| s.config().breaker.is_some())
                {
                    self.pending.remove(&service);
                    self.remote_open(conn, &service, until - now).await?;
                }
            }
        }
        for l in self.limiters() {
            if l.refill_pending.load(Relaxed)
                && self.refill_at.get(&l.name).is_none_or(|t| *t <= now)
            {
                self.refill(conn, &l).await?;
            }
        }
        Ok(())
    }

    async fn lease_due(
        &mut self,
        conn: &mut MultiplexedConnection,
        service: &str,
        lease: Lease,
    ) -> R<()> {
        let Some(svc) = registry().get(service) else {
            self.tracked.remove(service);
            return Ok(());
        };
        let state = svc.state();
        if !matches!(state, CircuitState::Open | CircuitState::HalfOpen) {
            return self.untrack(conn, service).await;
        }
        let half_lease = self.probe_lease / 2;
        if let (Lease::Waiting { .. }, Some(left)) = (lease, open_left(&svc)) {
            if left > Duration::from_millis(1) {
                // Its own cooldown (grown after failed probes) ends later.
                let at = Instant::now() + left;
                self.tracked
                    .insert(service.to_owned(), Lease::Waiting { at });
                return Ok(());
            }
        }
        match lease {
            Lease::Waiting { .. } => match self.take_lease(conn, service, false).await? {
                Some(-1) => {
                    tracing::debug!(service, "fleet: probe lease taken: this instance probes");
                    self.open_gate(service);
                    self.tracked.insert(
                        service.to_owned(),
                        Lease::Holding {
                            check_at: Instant::now() + half_lease,
                        },
                    );
                }
                Some(ms) => {
                    let at = Instant::now()
                        + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
                        + jitter(20);
                    self.tracked
                        .insert(service.to_owned(), Lease::Waiting { at });
                }
                None => {
                    let at = Instant::now() + half_lease;
                    self.tracked
                        .insert(service.to_owned(), Lease::Waiting { at });
                }
            },
            Lease::Holding { .. } => {
                if state == CircuitState::Open {
                    // No call came to probe with: hand over. Gate first, so no
                    // call turns half-open once the lease is gone.
                    self.close_gate(&svc);
                    if svc.state() == CircuitState::Open {
                        let r = self
                            .scripts
                            .release
                            .key(self.shared.key(&["probe", service]))
                            .arg(&self.shared.instance)
                            .invoke_async::<i64>(conn)
                            .await;
                        self.check(r, "release probe lease")?;
                        let at = Instant::now() + half_lease + jitter(20);
                        self.tracked
                            .insert(service.to_owned(), Lease::Waiting { at });
                        return Ok(());
                    }
                }
                // Probing: keep the lease.
                let r = self.take_lease(conn, service, true).await?;
                if r != Some(-1) {
                    tracing::debug!(service, "fleet: probe lease lost while probing");
                }
                self.tracked.insert(
                    service.to_owned(),
                    Lease::Holding {
                        check_at: Instant::now() + half_lease,
                    },
                );
            }
        }
        Ok(())
    }

    async fn refill(&mut self, conn: &mut MultiplexedConnection, l: &LimiterState) -> R<()> {
        let batch = i64::from(l.limit.batch);
        let have = l.lease.load(Relaxed).max(0);
        let want = batch - have;
        if want <= 0 {
            l.refill_pending.store(false, Relaxed);
            self.refill_at.remove(&l.name);
            return Ok(());
        }
        let interval = l.limit.interval_us();
        let tolerance = interval * f64::from(l.limit.burst - 1);
        let k = (batch / 2).clamp(1, want);
        let r = self
            .scripts
            .gcra
            .key(self.shared.key(&["rate", &l.name]))
            .arg(format!("{interval:.3}"))
            .arg(format!("{tolerance:.3}"))
            .arg(want)
            .arg(k)
            .invoke_async::<(i64, i64)>(conn)
            .await;
        let Some((granted, wait_us)) = self.check(r, "rate limit top-up")? else {
            self.refill_at
                .insert(l.name.clone(), Instant::now() + Duration::from_millis(100));
            return Ok(());
        };
        if granted > 0 {
            l.lease.fetch_add(granted, Relaxed);
            l.leased_total
                .fetch_add(u64::try_from(granted).unwrap_or(0), Relaxed);
        }
        if !l.shared_mode.swap(true, Relaxed) {
            tracing::debug!(limiter = %l.name, "fleet: rate limiter shared through redis");
        }
        if l.lease.load(Relaxed) <= i64::from(l.limit.low_water) {
            // Jittered by up to the time `k` permits take, so that instances
            // polling an empty bucket do not always find it in the same order.
            let spread = (interval * k as f64) as u64;
            let wait = Duration::from_micros(u64::try_from(wait_us).unwrap_or(0))
                + Duration::from_micros(thread_random() % spread.max(1));
            self.refill_at.insert(
                l.name.clone(),
                Instant::now() + wait.max(Duration::from_micros(200)),
            );
        } else {
            self.refill_at.remove(&l.name);
            l.refill_pending.store(false, Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod script_tests {
    //! The probe lease's scripts against a real Redis (`scripts/with-redis.sh`
    //! sets `RESILIENCE_TEST_REDIS_URL`; skipped without it).

    use super::{CLOSED_SCRIPT, LEASE_SCRIPT, OPEN_SCRIPT};

    async fn connection() -> Option<redis::aio::MultiplexedConnection> {
        let url = match std::env::var("RESILIENCE_TEST_REDIS_URL") {
            Ok(u) if !u.is_empty() => u,
            _ => {
                eprintln!("note: skipping: RESILIENCE_TEST_REDIS_URL is not set");
                return None;
            }
        };
        let client = redis::Client::open(url).expect("a valid test Redis URL");
        Some(
            client
                .get_multiplexed_async_connection()
                .await
                .expect("the test Redis answers"),
        )
    }

    async fn lease(conn: &mut redis::aio::MultiplexedConnection, ns: &str, instance: &str) -> i64 {
        redis::Script::new(LEASE_SCRIPT)
            .key(format!("{ns}:probe:svc"))
            .key(format!("{ns}:closed:svc"))
            .arg(instance)
            .arg(1_000)
            .arg("0")
            .invoke_async(conn)
            .await
            .expect("lease script runs")
    }

    #[tokio::test]
    async fn after_a_close_no_instance_takes_the_lease_until_the_mark_expires() {
        let Some(mut conn) = connection().await else {
            return;
        };
        let ns = format!("fleet-script-test-{}", std::process::id());
        assert_eq!(
            lease(&mut conn, &ns, "a").await,
            -1,
            "a takes the free lease"
        );
        assert!(
            lease(&mut conn, &ns, "b").await > 0,
            "b waits for a's lease"
        );

        // a's probes succeeded: it closes, gives the lease back and marks the close.
        let _: i64 = redis::Script::new(CLOSED_SCRIPT)
            .key(format!("{ns}:breaker:svc"))
            .key(format!("{ns}:probe:svc"))
            .key(format!("{ns}:closed:svc"))
            .arg("a")
            .arg("{}")
            .arg(format!("{ns}:breaker"))
            .arg(400)
            .invoke_async(&mut conn)
            .await
            .expect("closed script runs");
        // b's retry comes before the `Closed` message: the lease is free, but b
        // must not take it and probe the closed breaker.
        let wait = lease(&mut conn, &ns, "b").await;
        assert!(
            (1..=400).contains(&wait),
            "b is told to wait for the mark, got {wait}"
        );
        let holder: Option<String> = redis::cmd("GET")
            .arg(format!("{ns}:probe:svc"))
            .query_async(&mut conn)
            .await
            .expect("GET runs");
        assert_eq!(holder, None, "nobody holds the lease");

        // A new opening deletes the mark: the next probe is not held back.
        let _: i64 = redis::Script::new(OPEN_SCRIPT)
            .key(format!("{ns}:breaker:svc"))
            .key(format!("{ns}:services"))
            .key(format!("{ns}:probe:svc"))
            .key(format!("{ns}:closed:svc"))
            .arg("svc")
            .arg("{}")
            .arg(1_000)
            .arg(format!("{ns}:breaker"))
            .arg("c")
            .invoke_async(&mut conn)
            .await
            .expect("open script runs");
        assert_eq!(lease(&mut conn, &ns, "b").await, -1, "b takes the lease");

        let _: i64 = redis::cmd("DEL")
            .arg(format!("{ns}:probe:svc"))
            .arg(format!("{ns}:breaker:svc"))
            .arg(format!("{ns}:services"))
            .query_async(&mut conn)
            .await
            .expect("DEL runs");
    }
}
