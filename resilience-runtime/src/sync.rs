//! Synchronisation primitives, swapped for loom's under `--cfg resilience_loom` so the
//! model tests can explore every interleaving of the breaker, bulkhead, rate
//! limiter and the registry's hold on a computed key.

#[cfg(resilience_loom)]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering},
    Condvar, Mutex,
};
#[cfg(not(resilience_loom))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering},
    Condvar, Mutex,
};
