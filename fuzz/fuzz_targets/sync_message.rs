//! `cargo fuzz run sync_message --features libfuzzer`: [`infra_fuzz::sync_message`] under libFuzzer.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infra_fuzz::sync_message(data));
