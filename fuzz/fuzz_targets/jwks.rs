//! `cargo fuzz run jwks --features libfuzzer`: [`infra_fuzz::jwks`] under libFuzzer.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infra_fuzz::jwks(data));
