//! The semantics of API.md ("Semantics", "Status and control"), driven through the
//! builder, which runs the same code the attributes expand to.
//!
//! Every time-dependent test runs on tokio's paused clock, so durations are exact
//! (tokio's timer has millisecond ticks: waits of whole milliseconds are exact, a
//! randomly jittered wait may end up to 1 ms later than asked).

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience_runtime::{
    breaker, status, Backoff, CircuitState, Hooks, Jitter, Policy, Rate, Resilience,
    ResilienceBuilder, ResilienceError, ServiceStatus,
};
use tokio::sync::Semaphore;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
enum E {
    Boom,
    Transient,
    Ignored,
    R(ResilienceError),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e)
    }
}

const S: Result<(), E> = Ok(());
const F: Result<(), E> = Err(E::Boom);
const I: Result<(), E> = Err(E::Ignored);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn is_ignored(e: &E) -> bool {
    *e == E::Ignored
}
fn is_transient(e: &E) -> bool {
    *e == E::Transient
}
fn hint_5s(e: &E) -> Option<Duration> {
    (*e == E::Transient).then_some(secs(5))
}
fn hint_10ms(_: &E) -> Option<Duration> {
    Some(ms(10))
}

const IGNORING: Hooks<E> = Hooks {
    ignore_if: Some(is_ignored),
    ..Hooks::DEFAULT
};

fn st(name: &str) -> ServiceStatus {
    status(name).unwrap_or_else(|| panic!("service {name} is not registered"))
}

fn state(name: &str) -> CircuitState {
    st(name).state
}

/// One call through `p` whose body counts its run and returns `out`.
async fn run(p: &Policy, runs: &AtomicU32, out: Result<(), E>) -> Result<(), E> {
    run_with(p, &Hooks::DEFAULT, runs, out).await
}

async fn run_with(
    p: &Policy,
    hooks: &Hooks<E>,
    runs: &AtomicU32,
    out: Result<(), E>,
) -> Result<(), E> {
    p.call_with(hooks, move || {
        let out = out.clone();
        async move {
            runs.fetch_add(1, SeqCst);
            out
        }
    })
    .await
}

/// A call whose body takes `d` (on the paused clock) and then succeeds.
async fn run_slow(p: &Policy, runs: &AtomicU32, d: Duration) -> Result<(), E> {
    p.call(move || async move {
        runs.fetch_add(1, SeqCst);
        tokio::time::sleep(d).await;
        Ok(())
    })
    .await
}

/// The `retry_after` of a `CircuitOpen` rejection; panics on anything else.
#[track_caller]
fn circuit_open<T: std::fmt::Debug>(r: Result<T, E>) -> Duration {
    match r {
        Err(E::R(ResilienceError::CircuitOpen { retry_after, .. })) => retry_after,
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
}

/// A body that counts its run, then waits for a permit of `gate`, then returns `out`.
fn gated(
    p: &Policy,
    gate: &Arc<Semaphore>,
    runs: &Arc<AtomicU32>,
    out: Result<(), E>,
) -> tokio::task::JoinHandle<Result<(), E>> {
    let (p, gate, runs) = (p.clone(), gate.clone(), runs.clone());
    tokio::spawn(async move {
        p.call(|| {
            let (gate, runs, out) = (gate.clone(), runs.clone(), out.clone());
            async move {
                runs.fetch_add(1, SeqCst);
                gate.acquire().await.unwrap().forget();
                out
            }
        })
        .await
    })
}

/// Lets spawned tasks run until `runs` reaches `n` (no time passes).
async fn until_runs(runs: &AtomicU32, n: u32) {
    for _ in 0..100 {
        if runs.load(SeqCst) >= n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("only {} of {n} bodies started", runs.load(SeqCst));
}

fn rate_window4(name: &str, ratio: f64) -> Policy {
    Resilience::builder(name)
        .failure_rate(ratio)
        .window_calls(4)
        .cooldown(secs(10))
        .no_retry()
        .build()
        .unwrap()
}

// 1.
#[tokio::test(start_paused = true)]
async fn rate_window_4_half_s_f_s_s_f_opens_and_sixth_call_is_rejected_without_running() {
    let name = "sem::rate_sfssf";
    let p = rate_window4(name, 0.5);
    let runs = AtomicU32::new(0);
    for (i, out) in [S, F, S, S].into_iter().enumerate() {
        assert_eq!(run(&p, &runs, out.clone()).await, out, "call {}", i + 1);
        assert_eq!(state(name), CircuitState::Closed, "after call {}", i + 1);
    }
    assert_eq!(st(name).failure_rate, Some(0.25));
    // The 5th call pushes the first S out: F F S S = 2/4 = 0.5 -> open, and returns its own error.
    assert_eq!(run(&p, &runs, F).await, Err(E::Boom));
    assert_eq!(state(name), CircuitState::Open);
    assert_eq!(circuit_open(run(&p, &runs, S).await), secs(10));
    assert_eq!(runs.load(SeqCst), 5);
    let s = st(name);
    assert_eq!(
        (s.successes, s.failures, s.calls, s.rejections),
        (3, 2, 5, 1)
    );
    assert_eq!(
        s.failure_rate, None,
        "the window is cleared when the breaker opens"
    );
}

// 2.
#[tokio::test(start_paused = true)]
async fn rate_window_4_stays_closed_until_the_window_is_full_then_opens_at_half() {
    let name = "sem::rate_not_full";
    let p = rate_window4(name, 0.5);
    let runs = AtomicU32::new(0);
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(run(&p, &runs, F).await, F);
    assert_eq!(run(&p, &runs, F).await, F);
    assert_eq!(
        state(name),
        CircuitState::Closed,
        "2/3 failed but only 3 of min_calls 4"
    );
    assert_eq!(st(name).failure_rate, None);
    // A success fills the window: 2/4 = 0.5 -> open; the success itself is returned.
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(state(name), CircuitState::Open);
    circuit_open(run(&p, &runs, S).await);
    assert_eq!(runs.load(SeqCst), 4);
}

// 3.
#[tokio::test(start_paused = true)]
async fn rate_window_4_ratio_three_quarters_opens_at_exactly_three_quarters() {
    let name = "sem::rate_075";
    let p = rate_window4(name, 0.75);
    let runs = AtomicU32::new(0);
    for out in [F, F, F] {
        assert_eq!(run(&p, &runs, out.clone()).await, out);
    }
    assert_eq!(state(name), CircuitState::Closed);
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(state(name), CircuitState::Open, "3/4 = 0.75 >= 0.75");
    circuit_open(run(&p, &runs, S).await);
    assert_eq!(runs.load(SeqCst), 4);
}

// 4.
#[tokio::test(start_paused = true)]
async fn consecutive_threshold_3_success_resets_the_run_and_tripping_call_returns_its_own_error() {
    let name = "sem::consecutive3";
    let p = Resilience::builder(name)
        .failure_threshold(3)
        .cooldown(secs(10))
        .no_retry()
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    for out in [F, F, S, F, F] {
        assert_eq!(run(&p, &runs, out.clone()).await, out);
        assert_eq!(state(name), CircuitState::Closed);
    }
    assert_eq!(
        run(&p, &runs, F).await,
        Err(E::Boom),
        "the tripping call returns its own error"
    );
    assert_eq!(state(name), CircuitState::Open);
    assert_eq!(circuit_open(run(&p, &runs, S).await), secs(10));
    assert_eq!(runs.load(SeqCst), 6);
    let s = st(name);
    assert_eq!((s.successes, s.failures, s.rejections), (1, 5, 1));
    assert_eq!(s.failure_rate, None, "consecutive mode has no rate");
}

// 5.
#[tokio::test(start_paused = true)]
async fn after_cooldown_one_successful_probe_closes_with_an_empty_window() {
    let name = "sem::probe_closes";
    let p = Resilience::builder(name)
        .failure_rate(0.5)
        .window_calls(4)
        .cooldown(secs(10))
        .success_threshold(1)
        .no_retry()
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    for _ in 0..4 {
        assert_eq!(run(&p, &runs, F).await, F);
    }
    assert_eq!(state(name), CircuitState::Open);
    tokio::time::advance(secs(4)).await;
    assert_eq!(
        circuit_open(run(&p, &runs, S).await),
        secs(6),
        "retry_after is the cooldown left"
    );
    tokio::time::advance(secs(6)).await;
    assert_eq!(
        state(name),
        CircuitState::Open,
        "it turns half-open only when a call comes"
    );
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(state(name), CircuitState::Closed);
    assert_eq!(st(name).failure_rate, None, "the window starts empty");
    // Had the four failures stayed in the window, two more would reopen it.
    assert_eq!(run(&p, &runs, F).await, F);
    assert_eq!(run(&p, &runs, F).await, F);
    assert_eq!(state(name), CircuitState::Closed);
    assert_eq!(
        st(name).failure_rate,
        None,
        "3 outcomes in a window of min_calls 4"
    );
    assert_eq!(runs.load(SeqCst), 7);
}

// 6.
#[tokio::test(start_paused = true)]
async fn success_threshold_3_a_failed_third_probe_reopens_with_the_full_cooldown() {
    let name = "sem::succ3";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .cooldown(secs(10))
        .success_threshold(3)
        .no_retry()
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    assert_eq!(run(&p, &runs, F).await, F);
    assert_eq!(state(name), CircuitState::Open);
    tokio::time::advance(secs(10)).await;
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(state(name), CircuitState::HalfOpen);
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(
        state(name),
        CircuitState::HalfOpen,
        "2 of 3 successful probes"
    );
    assert_eq!(
        run(&p, &runs, F).await,
        F,
        "a failed probe returns its own error"
    );
    assert_eq!(state(name), CircuitState::Open);
    assert_eq!(circuit_open(run(&p, &runs, S).await), secs(10));
    tokio::time::advance(secs(3)).await;
    assert_eq!(circuit_open(run(&p, &runs, S).await), secs(7));
    assert_eq!(runs.load(SeqCst), 4);
    assert_eq!(st(name).rejections, 2);
}

// 7.
#[tokio::test(start_paused = true)]
async fn half_open_calls_2_rejects_a_third_concurrent_probe() {
    let name = "sem::half_open_2";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .cooldown(secs(10))
        .half_open_calls(2)
        .success_threshold(2)
        .no_retry()
        .build()
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    assert_eq!(run(&p, &runs, F).await, F);
    tokio::time::advance(secs(10)).await;
    let gate = Arc::new(Semaphore::new(0));
    let a = gated(&p, &gate, &runs, S);
    let b = gated(&p, &gate, &runs, S);
    until_runs(&runs, 3).await;
    assert_eq!(state(name), CircuitState::HalfOpen);
    assert_eq!(
        circuit_open(run(&p, &runs, S).await),
        Duration::ZERO,
        "no cooldown left, but no probe slot"
    );
    assert_eq!(runs.load(SeqCst), 3, "the third probe's body did not run");
    gate.add_permits(2);
    assert_eq!(a.await.unwrap(), S);
    assert_eq!(b.await.unwrap(), S);
    assert_eq!(state(name), CircuitState::Closed);
    let s = st(name);
    assert_eq!((s.successes, s.failures, s.rejections), (2, 1, 1));
}

// 8.
#[tokio::test(start_paused = true)]
async fn ignored_errors_count_as_neither_keep_the_run_and_free_the_probe_slot() {
    let runs = AtomicU32::new(0);

    // Counts as neither.
    let name = "sem::ignored_counts";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .no_retry()
        .build()
        .unwrap();
    assert_eq!(run_with(&p, &IGNORING, &runs, I).await, Err(E::Ignored));
    let s = st(name);
    assert_eq!((s.ignored, s.failures, s.successes, s.calls), (1, 0, 0, 1));
    assert_eq!(
        s.state,
        CircuitState::Closed,
        "threshold 1 and still closed"
    );

    // Does not break a run of consecutive failures.
    let name = "sem::ignored_run";
    let p = Resilience::builder(name)
        .failure_threshold(3)
        .no_retry()
        .build()
        .unwrap();
    for out in [F, F, I] {
        assert_eq!(run_with(&p, &IGNORING, &runs, out.clone()).await, out);
    }
    assert_eq!(state(name), CircuitState::Closed);
    assert_eq!(run_with(&p, &IGNORING, &runs, F).await, F);
    assert_eq!(
        state(name),
        CircuitState::Open,
        "F F (ignored) F is three in a row"
    );
    let s = st(name);
    assert_eq!((s.ignored, s.failures, s.successes), (1, 3, 0));

    // Frees its half-open probe slot.
    let name = "sem::ignored_probe";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .cooldown(secs(10))
        .half_open_calls(1)
        .success_threshold(1)
        .no_retry()
        .build()
        .unwrap();
    assert_eq!(run_with(&p, &IGNORING, &runs, F).await, F);
    tokio::time::advance(secs(10)).await;
    let before = runs.load(SeqCst);
    assert_eq!(run_with(&p, &IGNORING, &runs, I).await, Err(E::Ignored));
    assert_eq!(
        state(name),
        CircuitState::HalfOpen,
        "an ignored probe decides nothing"
    );
    assert_eq!(
        run_with(&p, &IGNORING, &runs, S).await,
        S,
        "the slot is free again"
    );
    assert_eq!(runs.load(SeqCst), before + 2);
    assert_eq!(state(name), CircuitState::Closed);
    assert_eq!(st(name).rejections, 0);
}

// 9.
#[tokio::test(start_paused = true)]
async fn time_window_failures_that_aged_out_do_not_trip_but_recent_ones_do() {
    async fn scenario(name: &str, gap: Duration) -> Vec<CircuitState> {
        let p = Resilience::builder(name)
            .failure_rate(0.5)
            .window_time(secs(20))
            .min_calls(5)
            .no_retry()
            .build()
            .unwrap();
        let runs = AtomicU32::new(0);
        for _ in 0..3 {
            assert_eq!(run(&p, &runs, F).await, F);
        }
        assert_eq!(state(name), CircuitState::Closed, "3 calls < min_calls 5");
        tokio::time::advance(gap).await;
        let mut states = Vec::new();
        for out in [S, S, F] {
            let _ = run(&p, &runs, out).await;
            states.push(state(name));
        }
        states
    }
    use CircuitState::*;
    // 21 s later the three failures are out of the window: S S F is 3 calls, then nothing.
    assert_eq!(
        scenario("sem::time_aged", secs(21)).await,
        [Closed, Closed, Closed]
    );
    let s = st("sem::time_aged");
    assert_eq!((s.failures, s.successes, s.failure_rate), (4, 2, None));
    // 10 s later they are in it: F F F S S = 3/5 >= 0.5 opens on the second S.
    assert_eq!(
        scenario("sem::time_recent", secs(10)).await,
        [Closed, Open, Open]
    );
    assert_eq!(st("sem::time_recent").rejections, 1);
}

// 10.
#[tokio::test(start_paused = true)]
async fn slow_successes_trip_the_breaker_by_slow_call_rate_without_failures() {
    let name = "sem::slow";
    let p = Resilience::builder(name)
        .failure_rate(0.5)
        .window_calls(4)
        .slow_call(secs(1))
        .slow_call_rate(0.5)
        .no_retry()
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    let t0 = Instant::now();
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(run_slow(&p, &runs, secs(2)).await, S);
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(
        run_slow(&p, &runs, ms(1000)).await,
        S,
        "exactly slow_call is not slow"
    );
    assert_eq!(state(name), CircuitState::Closed, "1 slow of 4");
    assert_eq!(
        run_slow(&p, &runs, ms(1001)).await,
        S,
        "a slow call returns its success"
    );
    assert_eq!(
        state(name),
        CircuitState::Open,
        "S slow S S slow: the last 4 hold 2 slow = 0.5"
    );
    assert_eq!(t0.elapsed(), ms(4001));
    circuit_open(run(&p, &runs, S).await);
    assert_eq!(runs.load(SeqCst), 5);
    let s = st(name);
    assert_eq!(
        (s.successes, s.failures, s.slow_calls, s.rejections),
        (5, 0, 2, 1)
    );
}

/// Runs an always-failing body under `b` and returns the result, the number of body
/// runs and the times between runs.
async fn retry_gaps(
    b: ResilienceBuilder,
    hooks: &Hooks<E>,
    err: E,
) -> (Result<(), E>, usize, Vec<Duration>) {
    let p = b.build().unwrap();
    let times = Mutex::new(Vec::new());
    let times_ref = &times;
    let r = p
        .call_with(hooks, move || {
            let err = err.clone();
            async move {
                times_ref.lock().unwrap().push(Instant::now());
                Err::<(), E>(err)
            }
        })
        .await;
    let times = times.into_inner().unwrap();
    let gaps = times.windows(2).map(|w| w[1] - w[0]).collect();
    (r, times.len(), gaps)
}

fn retry4(name: &str, backoff: Backoff, jitter: Jitter) -> ResilienceBuilder {
    Resilience::builder(name)
        .no_circuit_breaker()
        .max_attempts(4)
        .delay(ms(100))
        .backoff(backoff)
        .max_delay(secs(10))
        .jitter(jitter)
}

// 11.
#[tokio::test(start_paused = true)]
async fn retry_4_attempts_delays_follow_backoff_within_jitter_bounds() {
    let d = Hooks::DEFAULT;
    // No jitter: exact backoffs, 4 runs, the last error.
    let (r, n, g) = retry_gaps(
        retry4("sem::retry_exp", Backoff::Exponential, Jitter::None),
        &d,
        E::Boom,
    )
    .await;
    assert_eq!(
        (r, n, g),
        (Err(E::Boom), 4, vec![ms(100), ms(200), ms(400)])
    );
    assert_eq!(st("sem::retry_exp").retries, 3);
    let (_, _, g) = retry_gaps(
        retry4("sem::retry_lin", Backoff::Linear, Jitter::None),
        &d,
        E::Boom,
    )
    .await;
    assert_eq!(g, [ms(100), ms(200), ms(300)]);
    let (_, _, g) = retry_gaps(
        retry4("sem::retry_fix", Backoff::Fixed, Jitter::None),
        &d,
        E::Boom,
    )
    .await;
    assert_eq!(g, [ms(100), ms(100), ms(100)]);
    let capped = retry4("sem::retry_cap", Backoff::Exponential, Jitter::None).max_delay(ms(250));
    let (_, _, g) = retry_gaps(capped, &d, E::Boom).await;
    assert_eq!(g, [ms(100), ms(200), ms(250)]);

    // The extremes of each jitter, with a fixed random source.
    let exp = |name, jitter, random: fn() -> u64| {
        retry4(name, Backoff::Exponential, jitter).random_source(random)
    };
    type Case = (&'static str, Jitter, fn() -> u64, [Duration; 3]);
    let cases: [Case; 6] = [
        (
            "sem::jit_full_lo",
            Jitter::Full,
            || 0,
            [ms(0), ms(0), ms(0)],
        ),
        (
            "sem::jit_full_hi",
            Jitter::Full,
            || u64::MAX,
            [ms(100), ms(200), ms(400)],
        ),
        (
            "sem::jit_equal_lo",
            Jitter::Equal,
            || 0,
            [ms(50), ms(100), ms(200)],
        ),
        (
            "sem::jit_equal_hi",
            Jitter::Equal,
            || u64::MAX,
            [ms(100), ms(200), ms(400)],
        ),
        (
            "sem::jit_dec_lo",
            Jitter::Decorrelated,
            || 0,
            [ms(100), ms(100), ms(100)],
        ),
        (
            "sem::jit_dec_hi",
            Jitter::Decorrelated,
            || u64::MAX,
            [ms(300), ms(900), ms(2700)],
        ),
    ];
    for (name, jitter, random, want) in cases {
        let (r, n, g) = retry_gaps(exp(name, jitter, random), &d, E::Boom).await;
        assert_eq!((r, n), (Err(E::Boom), 4), "{name}");
        assert_eq!(g, want, "{name}");
    }
    // Decorrelated is capped at max_delay.
    let (_, _, g) = retry_gaps(
        exp("sem::jit_dec_cap", Jitter::Decorrelated, || u64::MAX).max_delay(secs(1)),
        &d,
        E::Boom,
    )
    .await;
    assert_eq!(g, [ms(300), ms(900), ms(1000)]);

    // Bounds with the real random source (+1 ms: the timer's tick).
    let tick = ms(1);
    let backoff = [ms(100), ms(200), ms(400)];
    for i in 0..8 {
        let (_, n, g) = retry_gaps(
            retry4(
                &format!("sem::jit_full_{i}"),
                Backoff::Exponential,
                Jitter::Full,
            ),
            &d,
            E::Boom,
        )
        .await;
        assert_eq!(n, 4);
        for (g, b) in g.iter().zip(backoff) {
            assert!(*g <= b + tick, "full: {g:?} > {b:?}");
        }
        let (_, n, g) = retry_gaps(
            retry4(
                &format!("sem::jit_equal_{i}"),
                Backoff::Exponential,
                Jitter::Equal,
            ),
            &d,
            E::Boom,
        )
        .await;
        assert_eq!(n, 4);
        for (g, b) in g.iter().zip(backoff) {
            assert!(
                *g >= b / 2 && *g <= b + tick,
                "equal: {g:?} not in [{:?}, {b:?}]",
                b / 2
            );
        }
        let (_, n, g) = retry_gaps(
            retry4(
                &format!("sem::jit_dec_{i}"),
                Backoff::Exponential,
                Jitter::Decorrelated,
            ),
            &d,
            E::Boom,
        )
        .await;
        assert_eq!(n, 4);
        let mut prev = ms(100);
        for g in g {
            let hi = (prev * 3).min(secs(10));
            assert!(
                g >= ms(100) && g <= hi + tick,
                "decorrelated: {g:?} not in [100ms, {hi:?}]"
            );
            prev = g;
        }
    }

    // A retry_after hint larger than the backoff replaces it, and max_delay does not cap it.
    let hinted = Hooks {
        retry_after: Some(hint_5s),
        ..Hooks::DEFAULT
    };
    let b = retry4("sem::retry_hint", Backoff::Exponential, Jitter::None)
        .max_attempts(2)
        .max_delay(secs(1));
    let (r, n, g) = retry_gaps(b, &hinted, E::Transient).await;
    assert_eq!((r, n, g), (Err(E::Transient), 2, vec![secs(5)]));
    // A smaller hint leaves the backoff.
    let small = Hooks {
        retry_after: Some(hint_10ms),
        ..Hooks::DEFAULT
    };
    let (_, _, g) = retry_gaps(
        retry4("sem::retry_hint_small", Backoff::Exponential, Jitter::None),
        &small,
        E::Boom,
    )
    .await;
    assert_eq!(g, [ms(100), ms(200), ms(400)]);

    // retry_if false: one run, no wait.
    let only_transient = Hooks {
        retry_if: Some(is_transient),
        ..Hooks::DEFAULT
    };
    let t0 = Instant::now();
    let (r, n, _) = retry_gaps(
        retry4("sem::retry_if", Backoff::Exponential, Jitter::None),
        &only_transient,
        E::Boom,
    )
    .await;
    assert_eq!((r, n, t0.elapsed()), (Err(E::Boom), 1, Duration::ZERO));
    assert_eq!(st("sem::retry_if").retries, 0);
    let (r, n, _) = retry_gaps(
        retry4("sem::retry_if_yes", Backoff::Exponential, Jitter::None),
        &only_transient,
        E::Transient,
    )
    .await;
    assert_eq!((r, n), (Err(E::Transient), 4));
}

// 12.
#[tokio::test(start_paused = true)]
async fn max_elapsed_stops_retrying_slow_attempts_and_returns_without_sleeping() {
    let name = "sem::max_elapsed";
    let p = Resilience::builder(name)
        .no_circuit_breaker()
        .max_attempts(10)
        .delay(ms(100))
        .backoff(Backoff::Exponential)
        .jitter(Jitter::None)
        .max_elapsed(secs(5))
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    let runs_ref = &runs;
    let t0 = Instant::now();
    let r: Result<(), E> = p
        .call(move || async move {
            runs_ref.fetch_add(1, SeqCst);
            tokio::time::sleep(secs(3)).await;
            Err(E::Boom)
        })
        .await;
    assert_eq!(r, Err(E::Boom));
    // Attempt 1: 0..3s, sleeps 100ms; attempt 2: 3.1..6.1s; a third would start after 6.3s > 5s.
    assert_eq!(runs.load(SeqCst), 2);
    assert_eq!(
        t0.elapsed(),
        ms(6100),
        "returned at once, without the 200ms backoff"
    );
    assert_eq!(st(name).retries, 1);
}

// 13.
#[tokio::test(start_paused = true)]
async fn retry_around_an_open_breaker_ends_at_once_with_circuit_open() {
    let name = "sem::retry_forced_open";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .cooldown(secs(10))
        .max_attempts(5)
        .delay(ms(100))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    breaker(name).unwrap().force_open();
    let runs = AtomicU32::new(0);
    let t0 = Instant::now();
    assert!(matches!(
        run(&p, &runs, F).await,
        Err(E::R(ResilienceError::CircuitOpen { ref service, .. })) if service == name
    ));
    assert_eq!((runs.load(SeqCst), t0.elapsed()), (0, Duration::ZERO));
    let s = st(name);
    assert_eq!((s.rejections, s.retries, s.calls), (1, 0, 0));

    // The breaker opens during the retries: the next attempt is rejected and the call
    // ends with CircuitOpen; that attempt counts as a retry.
    let name = "sem::retry_trips";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .cooldown(secs(10))
        .max_attempts(5)
        .delay(ms(100))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let t0 = Instant::now();
    assert_eq!(circuit_open(run(&p, &runs, F).await), secs(10) - ms(100));
    assert_eq!((runs.load(SeqCst), t0.elapsed()), (1, ms(100)));
    let s = st(name);
    assert_eq!((s.failures, s.rejections, s.retries), (1, 1, 1));
}

// 14.
#[tokio::test(start_paused = true)]
async fn bulkhead_3_admits_3_rejects_a_4th_or_lets_it_wait_up_to_max_wait() {
    // max_wait 0: the 4th is rejected at once.
    let name = "sem::bulkhead0";
    let p = Resilience::builder(name)
        .no_circuit_breaker()
        .no_retry()
        .max_concurrent(3)
        .build()
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let held: Vec<_> = (0..3).map(|_| gated(&p, &gate, &runs, S)).collect();
    until_runs(&runs, 3).await;
    assert_eq!(p.service().bulkhead_available(), Some(0));
    let t0 = Instant::now();
    assert!(matches!(
        run(&p, &runs, S).await,
        Err(E::R(ResilienceError::BulkheadFull { .. }))
    ));
    assert_eq!((runs.load(SeqCst), t0.elapsed()), (3, Duration::ZERO));
    gate.add_permits(3);
    for h in held {
        assert_eq!(h.await.unwrap(), S);
    }
    assert_eq!(p.service().bulkhead_available(), Some(3));
    let s = st(name);
    assert_eq!((s.successes, s.rejections), (3, 1));

    // max_wait 1s: a 4th waits and is admitted when one leaves.
    let name = "sem::bulkhead_wait";
    let p = Resilience::builder(name)
        .no_circuit_breaker()
        .no_retry()
        .max_concurrent(3)
        .bulkhead_max_wait(secs(1))
        .build()
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let held: Vec<_> = (0..3).map(|_| gated(&p, &gate, &runs, S)).collect();
    until_runs(&runs, 3).await;
    let t0 = Instant::now();
    let fourth = {
        let (p, runs) = (p.clone(), runs.clone());
        tokio::spawn(async move {
            let r = run(&p, &runs, S).await;
            (r, t0.elapsed())
        })
    };
    tokio::time::sleep(ms(400)).await;
    assert_eq!(runs.load(SeqCst), 3, "the 4th is waiting");
    gate.add_permits(1);
    assert_eq!(fourth.await.unwrap(), (S, ms(400)));
    assert_eq!(runs.load(SeqCst), 4);

    // Two still inside, one more comes in: the 4th now waits out max_wait.
    let third = gated(&p, &gate, &runs, S);
    until_runs(&runs, 5).await;
    assert_eq!(p.service().bulkhead_available(), Some(0));
    let t0 = Instant::now();
    assert!(matches!(
        run(&p, &runs, S).await,
        Err(E::R(ResilienceError::BulkheadFull { .. }))
    ));
    assert_eq!((runs.load(SeqCst), t0.elapsed()), (5, secs(1)));
    gate.add_permits(3);
    for h in held.into_iter().chain([third]) {
        assert_eq!(h.await.unwrap(), S);
    }
    assert_eq!(p.service().bulkhead_available(), Some(3));
    let s = st(name);
    assert_eq!((s.successes, s.rejections), (5, 1));
}

// 15.
#[tokio::test(start_paused = true)]
async fn timeout_1s_cuts_a_slow_body_counts_a_failure_and_total_timeout_is_no_breaker_failure() {
    let name = "sem::timeout";
    let p = Resilience::builder(name)
        .failure_threshold(5)
        .no_retry()
        .timeout(secs(1))
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    let t0 = Instant::now();
    let r = run_slow(&p, &runs, secs(20)).await;
    assert!(
        matches!(r, Err(E::R(ResilienceError::Timeout { ref service, after, .. })) if service == name && after == secs(1)),
        "{r:?}"
    );
    assert_eq!(t0.elapsed(), secs(1));
    let s = st(name);
    assert_eq!((s.timeouts, s.failures, s.successes), (1, 1, 0));

    let runs_ref = &runs;
    let t0 = Instant::now();
    let r: Result<(), E> = p
        .call(move || async move {
            runs_ref.fetch_add(1, SeqCst);
            tokio::time::sleep(ms(10)).await;
            Err(E::Boom)
        })
        .await;
    assert_eq!((r, t0.elapsed()), (Err(E::Boom), ms(10)));
    let s = st(name);
    assert_eq!((s.timeouts, s.failures), (1, 2));
    assert_eq!(runs.load(SeqCst), 2);

    // total_timeout: counted in timeouts, but not a failure for the breaker.
    let name = "sem::total_timeout";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .no_retry()
        .total_timeout(secs(1))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let r = run_slow(&p, &runs, secs(20)).await;
    assert!(
        matches!(r, Err(E::R(ResilienceError::Timeout { after, .. })) if after == secs(1)),
        "{r:?}"
    );
    assert_eq!(t0.elapsed(), secs(1));
    let s = st(name);
    assert_eq!(
        (s.timeouts, s.failures, s.calls, s.state),
        (1, 0, 0, CircuitState::Closed)
    );
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(st(name).successes, 1);
}

// 16.
#[tokio::test(start_paused = true)]
async fn dropping_a_call_mid_flight_frees_its_bulkhead_slot_and_its_probe() {
    let name = "sem::drop_bulkhead";
    let p = Resilience::builder(name)
        .no_circuit_breaker()
        .no_retry()
        .max_concurrent(2)
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    tokio::select! {
        _ = run_slow(&p, &runs, secs(10)) => panic!("the body should still be sleeping"),
        () = tokio::time::sleep(secs(1)) => {}
    }
    assert_eq!(p.service().bulkhead_available(), Some(2));
    assert!(tokio::time::timeout(secs(1), run_slow(&p, &runs, secs(10)))
        .await
        .is_err());
    assert_eq!(p.service().bulkhead_available(), Some(2));
    assert_eq!(runs.load(SeqCst), 2);
    let s = st(name);
    assert_eq!((s.calls, s.rejections), (0, 0));

    let name = "sem::drop_probe";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .cooldown(secs(10))
        .half_open_calls(1)
        .no_retry()
        .max_concurrent(1)
        .build()
        .unwrap();
    assert_eq!(run(&p, &runs, F).await, F);
    tokio::time::advance(secs(10)).await;
    tokio::select! {
        _ = run_slow(&p, &runs, secs(10)) => panic!("the probe should still be sleeping"),
        () = tokio::time::sleep(secs(1)) => {}
    }
    assert_eq!(state(name), CircuitState::HalfOpen);
    assert!(tokio::time::timeout(secs(1), run_slow(&p, &runs, secs(10)))
        .await
        .is_err());
    assert_eq!(state(name), CircuitState::HalfOpen);
    assert_eq!(p.service().bulkhead_available(), Some(1));
    assert_eq!(run(&p, &runs, S).await, S, "admitted as a probe");
    assert_eq!(state(name), CircuitState::Closed);
    assert_eq!(runs.load(SeqCst), 6);
    assert_eq!(st(name).rejections, 0);
}

#[tokio::test(start_paused = true)]
async fn rate_limiter_2_per_s_burst_2_rejects_the_third_with_the_exact_wait_or_waits_it() {
    let name = "sem::rate_reject";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .no_retry()
        .rate(Rate::new(2, secs(1)))
        .burst(2)
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(run(&p, &runs, S).await, S);
    for _ in 0..3 {
        let r = run(&p, &runs, S).await;
        assert!(
            matches!(r, Err(E::R(ResilienceError::RateLimited { ref service, retry_after, .. })) if service == name && retry_after == ms(500)),
            "{r:?}"
        );
    }
    assert_eq!(runs.load(SeqCst), 2);
    let s = st(name);
    assert_eq!(
        (s.rejections, s.calls, s.failures, s.state),
        (3, 2, 0, CircuitState::Closed)
    );
    tokio::time::advance(ms(499)).await;
    let r = run(&p, &runs, S).await;
    assert!(
        matches!(r, Err(E::R(ResilienceError::RateLimited { retry_after, .. })) if retry_after == ms(1)),
        "{r:?}"
    );
    tokio::time::advance(ms(1)).await;
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(
        state(name),
        CircuitState::Closed,
        "rejections are not failures, even with threshold 1"
    );

    let name = "sem::rate_wait";
    let p = Resilience::builder(name)
        .no_retry()
        .rate(Rate::new(2, secs(1)))
        .burst(2)
        .rate_max_wait(secs(1))
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    let t0 = Instant::now();
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(t0.elapsed(), ms(500));
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(t0.elapsed(), ms(1000));
    assert_eq!(st(name).rejections, 0);
}

#[tokio::test(start_paused = true)]
async fn force_open_rejects_everything_and_never_half_opens() {
    let name = "sem::forced";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .cooldown(secs(10))
        .no_retry()
        .build()
        .unwrap();
    let h = breaker(name).unwrap();
    h.force_open();
    assert_eq!(h.state(), CircuitState::ForcedOpen);
    let runs = AtomicU32::new(0);
    circuit_open(run(&p, &runs, S).await);
    tokio::time::advance(Duration::from_secs(3600)).await;
    circuit_open(run(&p, &runs, S).await);
    assert_eq!(h.state(), CircuitState::ForcedOpen);
    assert_eq!(runs.load(SeqCst), 0);
    assert_eq!(st(name).rejections, 2);
}

#[tokio::test(start_paused = true)]
async fn disable_lets_everything_through_and_still_counts() {
    let name = "sem::disabled";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .no_retry()
        .build()
        .unwrap();
    let h = breaker(name).unwrap();
    h.disable();
    let runs = AtomicU32::new(0);
    for _ in 0..5 {
        assert_eq!(run(&p, &runs, F).await, F);
    }
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(h.state(), CircuitState::Disabled);
    assert_eq!(runs.load(SeqCst), 6);
    let s = st(name);
    assert_eq!(
        (s.failures, s.successes, s.calls, s.rejections, s.state),
        (5, 1, 6, 0, CircuitState::Disabled)
    );
}

#[tokio::test(start_paused = true)]
async fn reset_closes_with_an_empty_window_and_zeroed_counters() {
    let name = "sem::reset";
    let p = Resilience::builder(name)
        .failure_rate(0.5)
        .window_calls(4)
        .no_retry()
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    for out in [F, F, F, F] {
        let _ = run(&p, &runs, out).await;
    }
    circuit_open(run(&p, &runs, S).await);
    let h = breaker(name).unwrap();
    h.reset();
    assert_eq!(h.state(), CircuitState::Closed);
    let s = st(name);
    assert_eq!(
        (
            s.calls,
            s.successes,
            s.failures,
            s.ignored,
            s.slow_calls,
            s.rejections,
            s.timeouts,
            s.retries,
            s.fallbacks
        ),
        (0, 0, 0, 0, 0, 0, 0, 0, 0)
    );
    assert_eq!(s.failure_rate, None);
    // Empty window: three failures do not open it.
    for _ in 0..3 {
        assert_eq!(run(&p, &runs, F).await, F);
    }
    assert_eq!(state(name), CircuitState::Closed);
    // Reset from forced open too.
    h.force_open();
    h.reset();
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(st(name).successes, 1);
}

#[tokio::test(start_paused = true)]
async fn cooldown_doubles_after_each_failed_probe_up_to_cooldown_max_and_resets_on_close() {
    let name = "sem::cooldown_growth";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .cooldown(secs(10))
        .cooldown_max(secs(25))
        .no_retry()
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    assert_eq!(run(&p, &runs, F).await, F);
    assert_eq!(circuit_open(run(&p, &runs, S).await), secs(10));
    tokio::time::advance(secs(10)).await;
    assert_eq!(run(&p, &runs, F).await, F, "failed probe 1");
    assert_eq!(circuit_open(run(&p, &runs, S).await), secs(20));
    tokio::time::advance(secs(20)).await;
    assert_eq!(run(&p, &runs, F).await, F, "failed probe 2");
    assert_eq!(
        circuit_open(run(&p, &runs, S).await),
        secs(25),
        "40s capped at 25s"
    );
    tokio::time::advance(secs(25)).await;
    assert_eq!(run(&p, &runs, F).await, F, "failed probe 3");
    assert_eq!(circuit_open(run(&p, &runs, S).await), secs(25));
    tokio::time::advance(secs(25)).await;
    assert_eq!(run(&p, &runs, S).await, S, "a successful probe closes");
    assert_eq!(state(name), CircuitState::Closed);
    assert_eq!(run(&p, &runs, F).await, F);
    assert_eq!(
        circuit_open(run(&p, &runs, S).await),
        secs(10),
        "back to the first cooldown"
    );

    // reset() also restores the first cooldown.
    tokio::time::advance(secs(10)).await;
    assert_eq!(run(&p, &runs, F).await, F);
    assert_eq!(circuit_open(run(&p, &runs, S).await), secs(20));
    breaker(name).unwrap().reset();
    assert_eq!(run(&p, &runs, F).await, F);
    assert_eq!(circuit_open(run(&p, &runs, S).await), secs(10));

    // Without cooldown_max the cooldown does not grow.
    let name = "sem::cooldown_fixed";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .cooldown(secs(10))
        .no_retry()
        .build()
        .unwrap();
    assert_eq!(run(&p, &runs, F).await, F);
    tokio::time::advance(secs(10)).await;
    assert_eq!(run(&p, &runs, F).await, F);
    assert_eq!(circuit_open(run(&p, &runs, S).await), secs(10));
}

#[test]
fn a_panicking_sync_body_is_a_failure_frees_its_slot_and_propagates() {
    let name = "sem::panic_sync";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .no_retry()
        .max_concurrent(2)
        .build()
        .unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.call_sync(|| -> Result<u32, E> { panic!("sync boom") })
    }));
    let payload = caught.expect_err("the panic propagates");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"sync boom"));
    let s = st(name);
    assert_eq!(
        (s.failures, s.successes, s.calls, s.state),
        (1, 0, 1, CircuitState::Open)
    );
    assert_eq!(p.service().bulkhead_available(), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_async_body_is_a_failure_frees_its_slot_and_propagates() {
    let name = "sem::panic_async";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .no_retry()
        .max_concurrent(2)
        .build()
        .unwrap();
    let task = {
        let p = p.clone();
        tokio::spawn(async move {
            p.call(|| async {
                tokio::task::yield_now().await;
                if true {
                    panic!("async boom");
                }
                Ok::<u32, E>(1)
            })
            .await
        })
    };
    let err = task.await.expect_err("the panic propagates");
    assert!(err.is_panic());
    assert_eq!(err.into_panic().downcast_ref::<&str>(), Some(&"async boom"));
    let s = st(name);
    assert_eq!(
        (s.failures, s.successes, s.state),
        (1, 0, CircuitState::Open)
    );
    assert_eq!(p.service().bulkhead_available(), Some(2));
}

/// The first attempt through a closed breaker polls the body at once (the lane); a
/// panic at that first poll is the body's own as much as a later one.
#[tokio::test(start_paused = true)]
async fn an_async_body_panicking_at_its_first_poll_is_a_failure_and_frees_its_slot() {
    let name = "sem::panic_async_first_poll";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .no_retry()
        .max_concurrent(2)
        .build()
        .unwrap();
    let task = {
        let p = p.clone();
        tokio::spawn(async move {
            p.call(|| async {
                if true {
                    panic!("first poll boom");
                }
                Ok::<u32, E>(1)
            })
            .await
        })
    };
    let err = task.await.expect_err("the panic propagates");
    assert_eq!(
        err.into_panic().downcast_ref::<&str>(),
        Some(&"first poll boom")
    );
    let s = st(name);
    assert_eq!(
        (s.failures, s.successes, s.calls, s.state),
        (1, 0, 1, CircuitState::Open)
    );
    assert_eq!(p.service().bulkhead_available(), Some(2));
}

#[tokio::test(start_paused = true)]
async fn call_sync_has_the_same_breaker_semantics() {
    let name = "sem::sync_breaker";
    let p = Resilience::builder(name)
        .failure_threshold(2)
        .cooldown(secs(10))
        .no_retry()
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    let sync = |out: Result<(), E>| {
        p.call_sync(|| {
            runs.fetch_add(1, SeqCst);
            out.clone()
        })
    };
    assert_eq!(sync(F), F);
    assert_eq!(sync(S), S);
    assert_eq!(sync(F), F);
    assert_eq!(state(name), CircuitState::Closed);
    assert_eq!(
        sync(F),
        Err(E::Boom),
        "the tripping call returns its own error"
    );
    assert_eq!(state(name), CircuitState::Open);
    assert_eq!(circuit_open(sync(S)), secs(10));
    assert_eq!(runs.load(SeqCst), 4);
    tokio::time::advance(secs(10)).await;
    assert_eq!(sync(S), S);
    assert_eq!(state(name), CircuitState::Closed);
    let s = st(name);
    assert_eq!((s.successes, s.failures, s.rejections), (2, 3, 1));

    // Ignored errors through call_sync_with.
    assert_eq!(
        p.call_sync_with(&IGNORING, || {
            runs.fetch_add(1, SeqCst);
            I
        }),
        I
    );
    assert_eq!(st(name).ignored, 1);

    // Sync retries: max_attempts with a zero-wait backoff (the thread would sleep).
    let name = "sem::sync_retry";
    let p = Resilience::builder(name)
        .no_circuit_breaker()
        .max_attempts(3)
        .delay(Duration::from_nanos(1))
        .jitter(Jitter::Full)
        .random_source(|| 0)
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    let r = p.call_sync(|| {
        runs.fetch_add(1, SeqCst);
        Err::<(), E>(E::Boom)
    });
    assert_eq!((r, runs.load(SeqCst)), (Err(E::Boom), 3));
    assert_eq!(st(name).retries, 2);
}

#[tokio::test(start_paused = true)]
async fn resilience_error_display_names_the_service() {
    let runs = AtomicU32::new(0);
    let mut errors = Vec::new();

    let p = Resilience::builder("svc-display-open")
        .failure_threshold(1)
        .no_retry()
        .build()
        .unwrap();
    breaker("svc-display-open").unwrap().force_open();
    errors.push(("svc-display-open", "open", run(&p, &runs, S).await));

    let p = Resilience::builder("svc-display-timeout")
        .no_retry()
        .timeout(ms(250))
        .build()
        .unwrap();
    errors.push((
        "svc-display-timeout",
        "timed out after 250ms",
        run_slow(&p, &runs, secs(1)).await,
    ));

    let p = Resilience::builder("svc-display-bulkhead")
        .no_retry()
        .max_concurrent(1)
        .build()
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let arc_runs = Arc::new(AtomicU32::new(0));
    let held = gated(&p, &gate, &arc_runs, S);
    until_runs(&arc_runs, 1).await;
    errors.push(("svc-display-bulkhead", "full", run(&p, &runs, S).await));
    gate.add_permits(1);
    held.await.unwrap().unwrap();

    let p = Resilience::builder("svc-display-rate")
        .no_retry()
        .rate(Rate::new(1, secs(2)))
        .build()
        .unwrap();
    run(&p, &runs, S).await.unwrap();
    errors.push(("svc-display-rate", "2s", run(&p, &runs, S).await));

    for (service, words, r) in errors {
        let Err(E::R(e)) = r else {
            panic!("{service}: expected a ResilienceError, got {r:?}")
        };
        let text = e.to_string();
        assert_eq!(e.service(), service);
        assert!(text.contains(&format!("`{service}`")), "{text}");
        assert!(text.contains(words), "{text} should say {words:?}");
        let as_std: &dyn std::error::Error = &e;
        assert_eq!(as_std.to_string(), text);
    }
}

#[test]
fn invalid_builder_values_are_each_named_and_register_nothing() {
    let name = "sem::invalid_config";
    let err = Resilience::builder(name)
        .failure_rate(1.7)
        .window_calls(0)
        .min_calls(1)
        .cooldown(secs(30))
        .cooldown_max(secs(10))
        .delay(secs(2))
        .max_delay(secs(1))
        .build()
        .unwrap_err();
    let problems: Vec<(&str, &str)> = err
        .problems()
        .iter()
        .map(|p| (p.path.as_str(), p.message.as_str()))
        .collect();
    let paths: Vec<&str> = problems.iter().map(|p| p.0).collect();
    assert_eq!(
        paths,
        [
            "circuit_breaker.failure_rate",
            "circuit_breaker.window",
            "circuit_breaker.cooldown_max",
            "retry.max_delay"
        ],
        "{err}"
    );
    assert!(problems[0].1.contains("1.7"), "{err}");
    assert!(problems[1].1.contains("at least 1"), "{err}");
    assert!(
        problems[2].1.contains("10s") && problems[2].1.contains("30s"),
        "{err}"
    );
    assert!(
        problems[3].1.contains("1s") && problems[3].1.contains("2s"),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("4 problems"), "{text}");
    for (path, message) in &problems {
        assert!(text.contains(&format!("{path}: {message}")), "{text}");
    }
    assert!(status(name).is_none(), "an invalid build registers nothing");
    assert!(breaker(name).is_none());

    // Each alone.
    let one = |b: ResilienceBuilder| b.build().unwrap_err().problems()[0].path.clone();
    assert_eq!(
        one(Resilience::builder(name).failure_rate(1.7)),
        "circuit_breaker.failure_rate"
    );
    assert_eq!(
        one(Resilience::builder(name).failure_rate(0.0)),
        "circuit_breaker.failure_rate"
    );
    assert_eq!(
        one(Resilience::builder(name).window_calls(0).min_calls(1)),
        "circuit_breaker.window"
    );
    assert_eq!(
        one(Resilience::builder(name)
            .cooldown(secs(30))
            .cooldown_max(secs(10))),
        "circuit_breaker.cooldown_max"
    );
    assert_eq!(
        one(Resilience::builder(name).delay(secs(2)).max_delay(secs(1))),
        "retry.max_delay"
    );
    assert_eq!(
        one(Resilience::builder(name).max_attempts(0)),
        "retry.max_attempts"
    );
    assert_eq!(
        one(Resilience::builder(name).max_concurrent(0)),
        "bulkhead.max_concurrent"
    );
    assert_eq!(
        one(Resilience::builder(name)
            .failure_threshold(3)
            .failure_rate(0.5)),
        "circuit_breaker.failure_threshold"
    );
    assert!(status(name).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_panicking_body_is_a_failure_also_without_a_breaker() {
    let name = "sem::panic_no_breaker_sync";
    let p = Resilience::builder(name)
        .no_circuit_breaker()
        .no_retry()
        .max_concurrent(2)
        .build()
        .unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.call_sync(|| -> Result<u32, E> { panic!("sync boom") })
    }));
    assert!(caught.is_err());
    let s = st(name);
    assert_eq!((s.failures, s.calls), (1, 1));
    assert_eq!(p.service().bulkhead_available(), Some(2));

    let name = "sem::panic_no_breaker_async";
    let p = Resilience::builder(name)
        .no_circuit_breaker()
        .no_retry()
        .max_concurrent(2)
        .build()
        .unwrap();
    let task = {
        let p = p.clone();
        tokio::spawn(async move {
            p.call(|| async {
                tokio::task::yield_now().await;
                if true {
                    panic!("async boom");
                }
                Ok::<u32, E>(1)
            })
            .await
        })
    };
    assert!(task.await.unwrap_err().is_panic());
    let s = st(name);
    assert_eq!((s.failures, s.calls), (1, 1));
    assert_eq!(p.service().bulkhead_available(), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_rate_limit_wait_gives_its_permit_back() {
    let name = "sem::rate_refund";
    let p = Resilience::builder(name)
        .no_retry()
        .rate(Rate::new(2, secs(1)))
        .burst(2)
        .rate_max_wait(secs(1))
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(run(&p, &runs, S).await, S);
    // The third would wait 500ms; drop it after 100ms.
    assert!(tokio::time::timeout(ms(100), run(&p, &runs, S))
        .await
        .is_err());
    assert_eq!(runs.load(SeqCst), 2);
    // Its reservation was given back: the next waits 400ms, not 900ms.
    let t0 = Instant::now();
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(t0.elapsed(), ms(400));
}

#[tokio::test(start_paused = true)]
async fn call_or_runs_the_fallback_on_errors_and_rejections_and_counts_it() {
    let name = "sem::fallback";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .no_retry()
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    let runs_ref = &runs;
    let got = p
        .call_or(
            move || async move {
                runs_ref.fetch_add(1, SeqCst);
                Err::<u32, E>(E::Boom)
            },
            |e| async move {
                assert_eq!(e, E::Boom);
                Ok(7)
            },
        )
        .await;
    assert_eq!(got, Ok(7));
    let got = p
        .call_or(
            move || async move {
                runs_ref.fetch_add(1, SeqCst);
                Ok::<u32, E>(1)
            },
            |e| async move {
                assert!(
                    matches!(e, E::R(ResilienceError::CircuitOpen { .. })),
                    "{e:?}"
                );
                Ok(8)
            },
        )
        .await;
    assert_eq!(got, Ok(8));
    assert_eq!(runs.load(SeqCst), 1);
    let s = st(name);
    assert_eq!((s.fallbacks, s.failures, s.rejections), (2, 1, 1));
}

fn is_boom(e: &E) -> bool {
    *e == E::Boom
}
fn is_boom_or_ignored(e: &E) -> bool {
    matches!(e, E::Boom | E::Ignored)
}
fn not_a_timeout(e: &E) -> bool {
    !matches!(e, E::R(ResilienceError::Timeout { .. }))
}

#[tokio::test(start_paused = true)]
async fn record_if_counts_other_errors_as_successes_and_ignore_if_wins_over_it() {
    let name = "sem::record_if";
    let p = Resilience::builder(name)
        .failure_threshold(2)
        .no_retry()
        .build()
        .unwrap();
    let hooks = Hooks {
        record_if: Some(is_boom_or_ignored),
        ignore_if: Some(is_ignored),
        ..Hooks::DEFAULT
    };
    let runs = AtomicU32::new(0);
    assert_eq!(run_with(&p, &hooks, &runs, F).await, F);
    assert_eq!(
        run_with(&p, &hooks, &runs, Err(E::Transient)).await,
        Err(E::Transient)
    );
    assert_eq!(run_with(&p, &hooks, &runs, F).await, F);
    assert_eq!(
        state(name),
        CircuitState::Closed,
        "the Transient in between counted as a success"
    );
    assert_eq!(run_with(&p, &hooks, &runs, I).await, I);
    let s = st(name);
    assert_eq!(
        (s.failures, s.successes, s.ignored),
        (2, 1, 1),
        "ignore_if wins over record_if"
    );
    assert_eq!(run_with(&p, &hooks, &runs, F).await, F);
    assert_eq!(state(name), CircuitState::Open, "F (ignored) F");
    let only_boom = Hooks {
        record_if: Some(is_boom),
        ..Hooks::DEFAULT
    };
    circuit_open(run_with(&p, &only_boom, &runs, S).await);
}

#[tokio::test(start_paused = true)]
async fn a_late_probe_outcome_does_not_undo_the_reopening() {
    let name = "sem::stale_probe";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .cooldown(secs(10))
        .half_open_calls(2)
        .success_threshold(1)
        .no_retry()
        .build()
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    assert_eq!(run(&p, &runs, F).await, F);
    tokio::time::advance(secs(10)).await;
    let gate_ok = Arc::new(Semaphore::new(0));
    let gate_fail = Arc::new(Semaphore::new(0));
    let ok = gated(&p, &gate_ok, &runs, S);
    let fail = gated(&p, &gate_fail, &runs, F);
    until_runs(&runs, 3).await;
    gate_fail.add_permits(1);
    assert_eq!(fail.await.unwrap(), F);
    assert_eq!(state(name), CircuitState::Open, "a failed probe reopens");
    gate_ok.add_permits(1);
    assert_eq!(ok.await.unwrap(), S);
    assert_eq!(
        state(name),
        CircuitState::Open,
        "the other probe's late success does not close it"
    );
    assert_eq!(circuit_open(run(&p, &runs, S).await), secs(10));
    let s = st(name);
    assert_eq!(
        (s.successes, s.failures),
        (1, 2),
        "the late outcome is still counted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_late_closed_state_failure_is_not_recorded_in_the_new_window() {
    let name = "sem::stale_closed";
    let p = Resilience::builder(name)
        .failure_threshold(3)
        .cooldown(secs(10))
        .no_retry()
        .build()
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Semaphore::new(0));
    // Admitted while closed; finishes after the breaker opened and closed again.
    let late = gated(&p, &gate, &runs, F);
    until_runs(&runs, 1).await;
    for _ in 0..3 {
        assert_eq!(run(&p, &runs, F).await, F);
    }
    assert_eq!(state(name), CircuitState::Open);
    tokio::time::advance(secs(10)).await;
    assert_eq!(run(&p, &runs, S).await, S);
    assert_eq!(state(name), CircuitState::Closed);
    assert_eq!(run(&p, &runs, F).await, F);
    gate.add_permits(1);
    assert_eq!(late.await.unwrap(), F);
    assert_eq!(state(name), CircuitState::Closed);
    // The run since closing is F (late F) F: two failures of this state, not three.
    assert_eq!(run(&p, &runs, F).await, F);
    assert_eq!(
        state(name),
        CircuitState::Closed,
        "an outcome from an earlier state is not recorded"
    );
    assert_eq!(run(&p, &runs, F).await, F);
    assert_eq!(state(name), CircuitState::Open);
    assert_eq!(st(name).failures, 7, "the late outcome is still counted");
}

#[tokio::test(start_paused = true)]
async fn per_attempt_timeouts_are_retried_and_total_timeout_bounds_retries_and_waits() {
    // Per-attempt timeouts are retried: 3 attempts of 1s, 100ms and 200ms between.
    let name = "sem::timeout_retry";
    let p = Resilience::builder(name)
        .no_circuit_breaker()
        .max_attempts(3)
        .delay(ms(100))
        .jitter(Jitter::None)
        .timeout(secs(1))
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    let t0 = Instant::now();
    let r = run_slow(&p, &runs, secs(20)).await;
    assert!(
        matches!(r, Err(E::R(ResilienceError::Timeout { .. }))),
        "{r:?}"
    );
    assert_eq!((runs.load(SeqCst), t0.elapsed()), (3, ms(3300)));
    let s = st(name);
    assert_eq!((s.timeouts, s.failures, s.retries), (3, 3, 2));

    // retry_if sees the timeout as the error: not retried.
    let name = "sem::timeout_retry_if";
    let p = Resilience::builder(name)
        .no_circuit_breaker()
        .max_attempts(3)
        .delay(ms(100))
        .jitter(Jitter::None)
        .timeout(secs(1))
        .build()
        .unwrap();
    let hooks = Hooks {
        retry_if: Some(not_a_timeout),
        ..Hooks::DEFAULT
    };
    let runs_ref = &runs;
    let t0 = Instant::now();
    let r: Result<(), E> = p
        .call_with(&hooks, move || async move {
            runs_ref.fetch_add(1, SeqCst);
            tokio::time::sleep(secs(20)).await;
            Ok(())
        })
        .await;
    assert!(
        matches!(r, Err(E::R(ResilienceError::Timeout { .. }))),
        "{r:?}"
    );
    assert_eq!((runs.load(SeqCst), t0.elapsed()), (4, secs(1)));

    // total_timeout covers attempts and the waits between them.
    let name = "sem::total_timeout_retries";
    let p = Resilience::builder(name)
        .no_circuit_breaker()
        .max_attempts(10)
        .delay(secs(1))
        .backoff(Backoff::Fixed)
        .jitter(Jitter::None)
        .total_timeout(ms(2500))
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    let t0 = Instant::now();
    let r = run(&p, &runs, F).await;
    assert!(
        matches!(r, Err(E::R(ResilienceError::Timeout { after, .. })) if after == ms(2500)),
        "{r:?}"
    );
    assert_eq!((runs.load(SeqCst), t0.elapsed()), (3, ms(2500)));
    let s = st(name);
    assert_eq!((s.timeouts, s.failures, s.retries), (1, 3, 2));
}

#[tokio::test(start_paused = true)]
async fn breaker_rejections_take_no_rate_permit_and_bulkhead_rejections_give_theirs_back() {
    let name = "sem::order_breaker_rate";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .no_retry()
        .rate(Rate::new(2, Duration::from_secs(3600)))
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    assert_eq!(run(&p, &runs, F).await, F);
    for _ in 0..5 {
        circuit_open(run(&p, &runs, S).await);
    }
    breaker(name).unwrap().reset();
    assert_eq!(
        run(&p, &runs, S).await,
        S,
        "the second permit is still there"
    );
    let r = run(&p, &runs, S).await;
    assert!(
        matches!(r, Err(E::R(ResilienceError::RateLimited { .. }))),
        "{r:?}"
    );
    assert_eq!(runs.load(SeqCst), 2);

    let name = "sem::order_rate_bulkhead";
    let p = Resilience::builder(name)
        .no_circuit_breaker()
        .no_retry()
        .rate(Rate::new(2, Duration::from_secs(3600)))
        .max_concurrent(1)
        .build()
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let held = gated(&p, &gate, &runs, S);
    until_runs(&runs, 1).await;
    for _ in 0..3 {
        let r = run(&p, &runs, S).await;
        assert!(
            matches!(r, Err(E::R(ResilienceError::BulkheadFull { .. }))),
            "{r:?}"
        );
    }
    gate.add_permits(1);
    assert_eq!(held.await.unwrap(), S);
    assert_eq!(
        run(&p, &runs, S).await,
        S,
        "the bulkhead rejections gave their permits back"
    );
    let r = run(&p, &runs, S).await;
    assert!(
        matches!(r, Err(E::R(ResilienceError::RateLimited { .. }))),
        "{r:?}"
    );
    let s = st(name);
    assert_eq!((s.successes, s.rejections), (2, 4));
}
