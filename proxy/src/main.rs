//! The `infra-proxy` binary: configuration, runtime, serve, drain.

fn main() {}
