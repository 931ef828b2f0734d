//! `cargo fuzz run kubeconfig --features libfuzzer`: [`infra_fuzz::kubeconfig`] under libFuzzer.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| infra_fuzz::kubeconfig(data));
