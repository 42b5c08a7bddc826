//! End-to-end tests of the attributes live in `tests/`; this crate has no code.
