//! `cargo fuzz run token --features libfuzzer`: [`infra_fuzz::token`] under libFuzzer.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infra_fuzz::token(data));
