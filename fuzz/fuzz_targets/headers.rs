//! `cargo fuzz run headers --features libfuzzer`: [`infra_fuzz::headers`] under libFuzzer.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infra_fuzz::headers(data));
