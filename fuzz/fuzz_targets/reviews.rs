//! `cargo fuzz run reviews --features libfuzzer`: [`infra_fuzz::reviews`] under libFuzzer.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infra_fuzz::reviews(data));
