//! Compile-pass and compile-fail cases of the attributes. Each `fail/*.rs` holds one
//! mistake and its `.stderr` the error the user sees; `TRYBUILD=overwrite` regenerates
//! them (then read every changed file: the error must be ours, at the right token).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("fail/*.rs");
    t.pass("pass/*.rs");
}
