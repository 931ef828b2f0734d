//! `cargo fuzz run policy_file --features libfuzzer`: [`infra_fuzz::policy_file`] under libFuzzer.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infra_fuzz::policy_file(data));
