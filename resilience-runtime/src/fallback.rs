//! Calling a fallback with the function's arguments, with or without the final
//! error, whether it is sync or async. The marker type `M` tells the shapes apart so
//! one expansion fits them all.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A fallback for an async function: `f(args..)` or `f(args.., error)`, returning
/// `Result<T, E>` or a future of it.
#[diagnostic::on_unimplemented(
    message = "this fallback does not fit the function",
    label = "expected a function taking the annotated function's arguments (receiver first), optionally followed by its error, and returning its `Result` (or a future of it)",
    note = "write `Self::name` for a method; a fallback `fn fb(&self, arg: A, err: E) -> Result<T, E>` fits `fn f(&self, arg: A) -> Result<T, E>`"
)]
pub trait Fallback<Args, T, E, M> {
    /// The future the fallback's result comes from.
    type Fut: Future<Output = Result<T, E>>;
    /// Calls the fallback.
    fn call_fallback(self, args: Args, err: E) -> Self::Fut;
}

/// A fallback for a sync function: `f(args..)` or `f(args.., error)` returning
/// `Result<T, E>`.
#[diagnostic::on_unimplemented(
    message = "this fallback does not fit the sync function",
    label = "expected a sync function taking the annotated function's arguments (receiver first), optionally followed by its error, and returning its `Result`",
    note = "a sync function's fallback must be sync too; write `Self::name` for a method"
)]
pub trait SyncFallback<Args, T, E, M> {
    /// Calls the fallback.
    fn call_fallback(self, args: Args, err: E) -> Result<T, E>;
}

/// A ready value as a future, for sync fallbacks of async functions.
#[derive(Debug)]
pub struct Ready<T>(Option<T>);

impl<T> Unpin for Ready<T> {}

impl<T> Future for Ready<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<T> {
        match self.0.take() {
            Some(v) => Poll::Ready(v),
            None => Poll::Pending,
        }
    }
}

/// Markers: sync/async result, with/without the error argument.
#[derive(Debug)]
pub enum SyncNoErr {}
#[derive(Debug)]
pub enum SyncWithErr {}
#[derive(Debug)]
pub enum AsyncNoErr {}
#[derive(Debug)]
pub enum AsyncWithErr {}

macro_rules! impl_fallback {
    ($($a:ident)*) => {
        #[allow(non_snake_case)]
        impl<Func, T, E, $($a,)*> SyncFallback<($($a,)*), T, E, SyncNoErr> for Func
        where Func: FnOnce($($a,)*) -> Result<T, E>
        {
            #[inline]
            fn call_fallback(self, ($($a,)*): ($($a,)*), _err: E) -> Result<T, E> {
                self($($a,)*)
            }
        }
        #[allow(non_snake_case)]
        impl<Func, T, E, $($a,)*> SyncFallback<($($a,)*), T, E, SyncWithErr> for Func
        where Func: FnOnce($($a,)* E) -> Result<T, E>
        {
            #[inline]
            fn call_fallback(self, ($($a,)*): ($($a,)*), err: E) -> Result<T, E> {
                self($($a,)* err)
            }
        }
        #[allow(non_snake_case)]
        impl<Func, T, E, $($a,)*> Fallback<($($a,)*), T, E, SyncNoErr> for Func
        where Func: FnOnce($($a,)*) -> Result<T, E>
        {
            type Fut = Ready<Result<T, E>>;
            #[inline]
            fn call_fallback(self, ($($a,)*): ($($a,)*), _err: E) -> Self::Fut {
                Ready(Some(self($($a,)*)))
            }
        }
        #[allow(non_snake_case)]
        impl<Func, T, E, $($a,)*> Fallback<($($a,)*), T, E, SyncWithErr> for Func
        where Func: FnOnce($($a,)* E) -> Result<T, E>
        {
            type Fut = Ready<Result<T, E>>;
            #[inline]
            fn call_fallback(self, ($($a,)*): ($($a,)*), err: E) -> Self::Fut {
                Ready(Some(self($($a,)* err)))
            }
        }
        #[allow(non_snake_case)]
        impl<Func, Fut, T, E, $($a,)*> Fallback<($($a,)*), T, E, (AsyncNoErr, Fut)> for Func
        where Func: FnOnce($($a,)*) -> Fut, Fut: Future<Output = Result<T, E>>
        {
            type Fut = Fut;
            #[inline]
            fn call_fallback(self, ($($a,)*): ($($a,)*), _err: E) -> Fut {
                self($($a,)*)
            }
        }
        #[allow(non_snake_case)]
        impl<Func, Fut, T, E, $($a,)*> Fallback<($($a,)*), T, E, (AsyncWithErr, Fut)> for Func
        where Func: FnOnce($($a,)* E) -> Fut, Fut: Future<Output = Result<T, E>>
        {
            type Fut = Fut;
            #[inline]
            fn call_fallback(self, ($($a,)*): ($($a,)*), err: E) -> Fut {
                self($($a,)* err)
            }
        }
    };
}

impl_fallback!();
impl_fallback!(A1);
impl_fallback!(A1 A2);
impl_fallback!(A1 A2 A3);
impl_fallback!(A1 A2 A3 A4);
impl_fallback!(A1 A2 A3 A4 A5);
impl_fallback!(A1 A2 A3 A4 A5 A6);
impl_fallback!(A1 A2 A3 A4 A5 A6 A7);
impl_fallback!(A1 A2 A3 A4 A5 A6 A7 A8);
impl_fallback!(A1 A2 A3 A4 A5 A6 A7 A8 A9);
impl_fallback!(A1 A2 A3 A4 A5 A6 A7 A8 A9 A10);
impl_fallback!(A1 A2 A3 A4 A5 A6 A7 A8 A9 A10 A11);
impl_fallback!(A1 A2 A3 A4 A5 A6 A7 A8 A9 A10 A11 A12);
