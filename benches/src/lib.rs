//! Benchmarks only: see `benches/compare.rs` and `tests/`.
