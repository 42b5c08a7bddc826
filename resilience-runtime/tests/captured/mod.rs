//! Shared by the tests that read what the runtime logs (`persistence.rs`,
//! `registry.rs`, `registry_returns.rs`, `sync_calls.rs`): a `tracing` writer that
//! keeps every line, and a subscriber that writes to it.

#![allow(dead_code)] // each test binary uses part of it

use std::io::Write;
use std::sync::{Arc, Mutex};

/// What a subscriber wrote, kept in memory.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// A subscriber at `tracing_subscriber`'s default level (`INFO`) writing here,
    /// without colour codes.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let sink = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish()
    }

    /// The same at `TRACE`: every event.
    pub fn subscriber_at_trace(&self) -> impl tracing::Subscriber + Send + Sync {
        let sink = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish()
    }
}
