//! Compile-time behaviour of `#[dflockd::exclusive]`: every error message (with `.stderr`
//! snapshots) and every supported signature shape. One test, so the cases share one build.
#![cfg(feature = "macros")]

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
