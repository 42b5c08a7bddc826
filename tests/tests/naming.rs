//! Generated service names, and that a fixed or generated name resolves once per
//! call site.

use resilience_runtime::prelude::*;

#[derive(Debug, PartialEq)]
struct Fail;

impl From<ResilienceError> for Fail {
    fn from(_: ResilienceError) -> Self {
        Fail
    }
}

struct Orders;
struct Invoices;

impl Orders {
    #[circuit_breaker(failure_threshold = 1, cooldown = "1m")]
    fn fetch(&self, fail: bool) -> Result<(), Fail> {
        if fail {
            Err(Fail)
        } else {
            Ok(())
        }
    }
}

impl Invoices {
    #[circuit_breaker(failure_threshold = 1, cooldown = "1m")]
    fn fetch(&self, fail: bool) -> Result<(), Fail> {
        if fail {
            Err(Fail)
        } else {
            Ok(())
        }
    }
}

#[circuit_breaker(failure_threshold = 1, cooldown = "1m")]
fn fetch(fail: bool) -> Result<(), Fail> {
    if fail {
        Err(Fail)
    } else {
        Ok(())
    }
}

struct Wrapper<T>(T);

impl<T> Wrapper<T> {
    #[circuit_breaker(failure_threshold = 1, cooldown = "1m")]
    fn fetch(&self) -> Result<(), Fail> {
        Ok(())
    }
}

#[test]
fn same_named_methods_on_different_types_never_share_a_breaker() {
    assert_eq!(Orders.fetch(true), Err(Fail));
    assert_eq!(Invoices.fetch(false), Ok(()));
    let orders = concat!(module_path!(), "::Orders::fetch");
    let invoices = concat!(module_path!(), "::Invoices::fetch");
    assert_eq!(status(orders).unwrap().state, CircuitState::Open);
    assert_eq!(status(invoices).unwrap().state, CircuitState::Closed);
    assert_eq!(status(invoices).unwrap().successes, 1);
}

#[test]
fn free_functions_are_named_module_path_then_fn() {
    assert_eq!(fetch(false), Ok(()));
    assert_eq!(
        status(concat!(module_path!(), "::fetch"))
            .unwrap()
            .successes,
        1
    );
}

#[test]
fn generic_types_share_one_name_per_method() {
    Wrapper(1u8).fetch().unwrap();
    Wrapper("s").fetch().unwrap();
    let s = status(concat!(module_path!(), "::Wrapper<_>::fetch")).expect("the generic form");
    assert_eq!(s.successes, 2);
}

#[test]
fn the_registry_lists_generated_names_sorted() {
    fetch(false).ok();
    let names: Vec<String> = statuses().into_iter().map(|s| s.service).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}
