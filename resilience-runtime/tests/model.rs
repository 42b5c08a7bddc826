//! The circuit breaker against a plain reference model, on random sequences of
//! calls and clock advances.
//!
//! The model is written from API.md's "Semantics": closed / open / half-open, a
//! `Vec` for the window, whole seconds for time. Every advance and every slow call is
//! a whole number of seconds, so a 1 s time-window bucket holds exactly the calls of
//! one model second whatever the phase of the runtime's bucket boundaries: a call
//! made at second `t` is in the window at second `now` iff `now - t < window`.
//!
//! Calls are sequential, so at most one probe is in flight; concurrency limits are in
//! `semantics.rs`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use proptest::prelude::*;
use resilience_runtime::{status, CircuitState, Hooks, Policy, Resilience, ResilienceError};

#[derive(Debug, Clone, PartialEq)]
enum E {
    Boom,
    Ignored,
    R(ResilienceError),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e)
    }
}

fn is_ignored(e: &E) -> bool {
    *e == E::Ignored
}

const HOOKS: Hooks<E> = Hooks {
    ignore_if: Some(is_ignored),
    ..Hooks::DEFAULT
};

/// A slow call's body takes this long; `slow_call` is 1 s.
const SLOW_SECS: u64 = 2;

#[derive(Debug, Clone, Copy)]
enum Op {
    Success,
    Failure,
    Ignored,
    /// A success that takes `SLOW_SECS`.
    Slow,
    /// `tokio::time::advance` by this many seconds.
    Advance(u64),
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Count {
        n: u32,
        min_calls: u32,
        rate: f64,
        slow_rate: f64,
    },
    Time {
        secs: u64,
        min_calls: u32,
        rate: f64,
        slow_rate: f64,
    },
    Consecutive {
        threshold: u32,
    },
}

#[derive(Debug, Clone, Copy)]
struct Cfg {
    mode: Mode,
    cooldown: u64,
    cooldown_max: Option<u64>,
    success_threshold: u32,
}

// ---------------------------------------------------------------------------------
// The reference model.

#[derive(Debug, Clone, Copy, PartialEq)]
enum MState {
    Closed,
    Open { until: u64 },
    HalfOpen { successes: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Rec {
    at: u64,
    failure: bool,
    slow: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Counts {
    successes: u64,
    failures: u64,
    ignored: u64,
    slow_calls: u64,
    rejections: u64,
}

#[derive(Debug)]
struct Model {
    cfg: Cfg,
    now: u64,
    state: MState,
    cooldown: u64,
    window: Vec<Rec>,
    run: u32,
    counts: Counts,
}

/// What the model says a call does.
#[derive(Debug, PartialEq)]
enum Verdict {
    Admitted,
    Rejected { retry_after_secs: u64 },
}

impl Model {
    fn new(cfg: Cfg) -> Self {
        Model {
            cfg,
            now: 0,
            state: MState::Closed,
            cooldown: cfg.cooldown,
            window: Vec::new(),
            run: 0,
            counts: Counts::default(),
        }
    }

    fn set(&mut self, state: MState) {
        self.state = state;
        self.window.clear();
        self.run = 0;
    }

    fn open(&mut self) {
        self.set(MState::Open {
            until: self.now + self.cooldown,
        });
    }

    /// The window's outcomes now: (calls, failures, slow).
    fn sums(&self) -> (u64, u64, u64) {
        let now = self.now;
        let live = |r: &&Rec| match self.cfg.mode {
            Mode::Time { secs, .. } => now - r.at < secs,
            _ => true,
        };
        let recs: Vec<&Rec> = self.window.iter().filter(live).collect();
        (
            recs.len() as u64,
            recs.iter().filter(|r| r.failure).count() as u64,
            recs.iter().filter(|r| r.slow).count() as u64,
        )
    }

    fn thresholds(&self) -> Option<(u32, f64, f64)> {
        match self.cfg.mode {
            Mode::Count {
                min_calls,
                rate,
                slow_rate,
                ..
            }
            | Mode::Time {
                min_calls,
                rate,
                slow_rate,
                ..
            } => Some((min_calls, rate, slow_rate)),
            Mode::Consecutive { .. } => None,
        }
    }

    fn failure_rate(&self) -> Option<f64> {
        let (min_calls, _, _) = self.thresholds()?;
        let (calls, failures, _) = self.sums();
        (calls > 0 && calls >= u64::from(min_calls)).then(|| failures as f64 / calls as f64)
    }

    /// Records a closed-state outcome; true if the breaker should open.
    fn record_closed(&mut self, failure: bool, slow: bool) -> bool {
        match self.cfg.mode {
            Mode::Consecutive { threshold } => {
                if failure {
                    self.run += 1;
                    self.run >= threshold
                } else {
                    self.run = 0;
                    false
                }
            }
            Mode::Count { n, .. } => {
                self.window.push(Rec {
                    at: self.now,
                    failure,
                    slow,
                });
                if self.window.len() > n as usize {
                    self.window.remove(0);
                }
                self.decide()
            }
            Mode::Time { secs, .. } => {
                let now = self.now;
                self.window.retain(|r| now - r.at < secs);
                self.window.push(Rec {
                    at: now,
                    failure,
                    slow,
                });
                self.decide()
            }
        }
    }

    fn decide(&self) -> bool {
        let (min_calls, rate, slow_rate) = self.thresholds().unwrap();
        let (calls, failures, slow) = self.sums();
        if calls == 0 || calls < u64::from(min_calls) {
            return false;
        }
        (failures > 0 && failures as f64 >= rate * calls as f64)
            || (slow > 0 && slow as f64 >= slow_rate * calls as f64)
    }

    /// One call with outcome `op` (not an advance).
    fn call(&mut self, op: Op) -> Verdict {
        // Admission.
        let probe = match self.state {
            MState::Closed => false,
            MState::Open { until } if self.now < until => {
                self.counts.rejections += 1;
                return Verdict::Rejected {
                    retry_after_secs: until - self.now,
                };
            }
            MState::Open { .. } => {
                self.set(MState::HalfOpen { successes: 0 });
                true
            }
            MState::HalfOpen { .. } => true,
        };
        // The body.
        let (failure, slow) = match op {
            Op::Success => (false, false),
            Op::Failure => (true, false),
            Op::Slow => {
                self.now += SLOW_SECS;
                (false, true)
            }
            Op::Ignored => {
                self.counts.ignored += 1;
                return Verdict::Admitted;
            }
            Op::Advance(_) => unreachable!(),
        };
        if failure {
            self.counts.failures += 1;
        } else {
            self.counts.successes += 1;
        }
        if slow {
            self.counts.slow_calls += 1;
        }
        // The outcome.
        if !probe {
            if self.record_closed(failure, slow) {
                self.open();
            }
        } else if failure || slow {
            if let Some(max) = self.cfg.cooldown_max {
                self.cooldown = (self.cooldown * 2).min(max);
            }
            self.open();
        } else {
            let MState::HalfOpen { successes } = self.state else {
                unreachable!()
            };
            if successes + 1 >= self.cfg.success_threshold {
                self.cooldown = self.cfg.cooldown;
                self.set(MState::Closed);
            } else {
                self.state = MState::HalfOpen {
                    successes: successes + 1,
                };
            }
        }
        Verdict::Admitted
    }

    fn state(&self) -> CircuitState {
        match self.state {
            MState::Closed => CircuitState::Closed,
            MState::Open { .. } => CircuitState::Open,
            MState::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

// ---------------------------------------------------------------------------------
// The real breaker, driven the same way.

fn policy(name: &str, cfg: Cfg) -> Policy {
    let mut b = Resilience::builder(name)
        .no_retry()
        .cooldown(Duration::from_secs(cfg.cooldown))
        .success_threshold(cfg.success_threshold)
        .half_open_calls(1)
        .slow_call(Duration::from_secs(1));
    if let Some(max) = cfg.cooldown_max {
        b = b.cooldown_max(Duration::from_secs(max));
    }
    b = match cfg.mode {
        Mode::Count {
            n,
            min_calls,
            rate,
            slow_rate,
        } => b
            .window_calls(n)
            .min_calls(min_calls)
            .failure_rate(rate)
            .slow_call_rate(slow_rate),
        Mode::Time {
            secs,
            min_calls,
            rate,
            slow_rate,
        } => b
            .window_time(Duration::from_secs(secs))
            .min_calls(min_calls)
            .failure_rate(rate)
            .slow_call_rate(slow_rate),
        Mode::Consecutive { threshold } => b.failure_threshold(threshold),
    };
    b.build().expect("valid configuration")
}

fn unique_name(mode: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("model::{mode}::{}", N.fetch_add(1, SeqCst))
}

fn check(mode: &str, cfg: Cfg, ops: &[Op]) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let name = unique_name(mode);
        let p = policy(&name, cfg);
        let mut model = Model::new(cfg);
        let t0 = tokio::time::Instant::now();
        for (i, &op) in ops.iter().enumerate() {
            if let Op::Advance(k) = op {
                tokio::time::advance(Duration::from_secs(k)).await;
                model.now += k;
            } else {
                let ran = AtomicBool::new(false);
                let ran_ref = &ran;
                let result: Result<(), E> = p
                    .call_with(&HOOKS, move || async move {
                        ran_ref.store(true, SeqCst);
                        match op {
                            Op::Success => Ok(()),
                            Op::Failure => Err(E::Boom),
                            Op::Ignored => Err(E::Ignored),
                            Op::Slow => {
                                tokio::time::sleep(Duration::from_secs(SLOW_SECS)).await;
                                Ok(())
                            }
                            Op::Advance(_) => unreachable!(),
                        }
                    })
                    .await;
                let verdict = model.call(op);
                let ctx = || format!("step {i} ({op:?}) of {ops:?}\nmodel: {model:?}");
                match verdict {
                    Verdict::Admitted => {
                        prop_assert!(
                            ran.load(SeqCst),
                            "admitted by the model, not run: {}",
                            ctx()
                        );
                        let want = match op {
                            Op::Failure => Err(E::Boom),
                            Op::Ignored => Err(E::Ignored),
                            _ => Ok(()),
                        };
                        prop_assert_eq!(&result, &want, "{}", ctx());
                    }
                    Verdict::Rejected { retry_after_secs } => {
                        prop_assert!(
                            !ran.load(SeqCst),
                            "rejected by the model, but run: {}",
                            ctx()
                        );
                        let ok = matches!(
                            &result,
                            Err(E::R(ResilienceError::CircuitOpen { retry_after, .. }))
                                if *retry_after == Duration::from_secs(retry_after_secs)
                        );
                        prop_assert!(
                            ok,
                            "want CircuitOpen after {retry_after_secs}s, got {result:?}: {}",
                            ctx()
                        );
                    }
                }
            }
            prop_assert_eq!(
                t0.elapsed(),
                Duration::from_secs(model.now),
                "clock at step {}",
                i
            );
            let s = status(&name).unwrap();
            let ctx =
                || format!("after step {i} ({op:?}) of {ops:?}\nmodel: {model:?}\nstatus: {s:?}");
            prop_assert_eq!(s.state, model.state(), "{}", ctx());
            let got = Counts {
                successes: s.successes,
                failures: s.failures,
                ignored: s.ignored,
                slow_calls: s.slow_calls,
                rejections: s.rejections,
            };
            prop_assert_eq!(got, model.counts, "{}", ctx());
            prop_assert_eq!(s.failure_rate, model.failure_rate(), "{}", ctx());
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------
// Strategies.

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Success),
        4 => Just(Op::Failure),
        1 => Just(Op::Ignored),
        2 => Just(Op::Slow),
        3 => (1u64..=6).prop_map(Op::Advance),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..60)
}

/// A ratio in (0, 1], in twentieths.
fn ratio() -> impl Strategy<Value = f64> {
    (1u32..=20).prop_map(|k| f64::from(k) / 20.0)
}

fn cfg(mode: impl Strategy<Value = Mode>) -> impl Strategy<Value = Cfg> {
    (mode, 1u64..=8, prop::option::of(0u64..=16), 1u32..=3).prop_map(
        |(mode, cooldown, extra, success_threshold)| Cfg {
            mode,
            cooldown,
            cooldown_max: extra.map(|e| cooldown + e),
            success_threshold,
        },
    )
}

/// Count windows of a length in `lengths`.
fn count_mode(lengths: std::ops::RangeInclusive<u32>) -> impl Strategy<Value = Mode> {
    lengths
        .prop_flat_map(|n| (Just(n), 1..=n, ratio(), ratio()))
        .prop_map(|(n, min_calls, rate, slow_rate)| Mode::Count {
            n,
            min_calls,
            rate,
            slow_rate,
        })
}

fn time_mode() -> impl Strategy<Value = Mode> {
    (2u64..=10, 1u32..=6, ratio(), ratio()).prop_map(|(secs, min_calls, rate, slow_rate)| {
        Mode::Time {
            secs,
            min_calls,
            rate,
            slow_rate,
        }
    })
}

fn consecutive_mode() -> impl Strategy<Value = Mode> {
    (1u32..=4).prop_map(|threshold| Mode::Consecutive { threshold })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn count_window_breaker_matches_the_model(cfg in cfg(count_mode(1..=6)), ops in ops()) {
        check("count", cfg, &ops)?;
    }

    /// Windows on both sides of the longest one kept in a single word with slow
    /// calls tracked (28 outcomes; the model's breakers have a `slow_call`): the
    /// longer ones are a ring of slots.
    #[test]
    fn long_count_window_breaker_matches_the_model(
        cfg in cfg(count_mode(26..=32)),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        check("count", cfg, &ops)?;
    }

    #[test]
    fn time_window_breaker_matches_the_model(cfg in cfg(time_mode()), ops in ops()) {
        check("time", cfg, &ops)?;
    }

    #[test]
    fn consecutive_breaker_matches_the_model(cfg in cfg(consecutive_mode()), ops in ops()) {
        check("consecutive", cfg, &ops)?;
    }
}

/// The model itself, on the examples API.md spells out.
#[test]
fn the_model_follows_the_documented_examples() {
    let count = |rate| Cfg {
        mode: Mode::Count {
            n: 4,
            min_calls: 4,
            rate,
            slow_rate: 1.0,
        },
        cooldown: 10,
        cooldown_max: None,
        success_threshold: 1,
    };
    let mut m = Model::new(count(0.5));
    for op in [
        Op::Success,
        Op::Failure,
        Op::Success,
        Op::Success,
        Op::Failure,
    ] {
        assert_eq!(m.call(op), Verdict::Admitted);
    }
    assert_eq!(
        m.call(Op::Success),
        Verdict::Rejected {
            retry_after_secs: 10
        }
    );
    let mut m = Model::new(count(0.75));
    for op in [Op::Failure, Op::Failure, Op::Failure, Op::Success] {
        assert_eq!(m.call(op), Verdict::Admitted);
    }
    assert_eq!(m.state(), CircuitState::Open);
    let mut m = Model::new(Cfg {
        mode: Mode::Consecutive { threshold: 3 },
        ..count(0.5)
    });
    for op in [
        Op::Failure,
        Op::Failure,
        Op::Ignored,
        Op::Success,
        Op::Failure,
        Op::Failure,
    ] {
        m.call(op);
    }
    assert_eq!(m.state(), CircuitState::Closed);
    m.call(Op::Failure);
    assert_eq!(m.state(), CircuitState::Open);
}
