//! `cargo fuzz run attributes --features libfuzzer`: [`infra_fuzz::attributes`] under libFuzzer.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infra_fuzz::attributes(data));
