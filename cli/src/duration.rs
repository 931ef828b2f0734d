//! Durations on the command line: the same `<number><unit>` syntax as the policy file.

pub use infra_api::duration::parse;
