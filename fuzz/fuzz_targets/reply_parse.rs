//! Fuzz target: see `checks::reply_parse`.
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::reply_parse(data));
