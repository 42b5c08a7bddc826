//! A timeout that costs nothing when the body is ready at its first poll: the timer
//! is created, and the clock read, only when the body first returns `Pending`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

pin_project_lite::pin_project! {
    /// Resolves to `Err(Elapsed)` if `fut` is not done within `limit` of its first
    /// `Pending`.
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub(crate) struct Timeout<F> {
        #[pin]
        fut: F,
        #[pin]
        sleep: Option<Sleep>,
        limit: Duration,
    }
}

/// The limit passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Elapsed;

impl<F> Timeout<F> {
    pub(crate) fn new(fut: F, limit: Duration) -> Self {
        Self {
            fut,
            sleep: None,
            limit,
        }
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep(*this.limit)));
        }
        match this.sleep.as_pin_mut() {
            Some(s) => s.poll(cx).map(|()| Err(Elapsed)),
            None => Poll::Pending,
        }
    }
}
