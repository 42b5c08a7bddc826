//! Synchronisation primitives, swapped for loom's under `--cfg resilience_loom` so the
//! model tests can explore every interleaving of the breaker, bulkhead and rate
//! limiter.

#[cfg(resilience_loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicU32, AtomicU64, AtomicU8},
    Condvar, Mutex,
};
#[cfg(not(resilience_loom))]
pub(crate) use std::sync::{
    atomic::{AtomicU32, AtomicU64, AtomicU8},
    Condvar, Mutex,
};
