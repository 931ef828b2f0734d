//! `infra-fuzz`: fuzz targets for everything Infra parses from untrusted input.
//!
//! Each target is a plain function of bytes that feeds them to the real parser, through the
//! same public entry point the proxy or the control plane uses, and asserts what must hold for
//! any input: it never panics, and what parses means what it says (re-serialising gives the same
//! value, refusals are located, nothing unsigned verifies, no client identity survives the
//! header rewrite, ...). Each module documents its input format and its invariants.
//!
//! The targets run in three places (docs/fuzzing.md):
//!
//! - under libFuzzer: `fuzz_targets/<target>.rs` wraps each in `fuzz_target!`, behind the
//!   `libfuzzer` feature, for `cargo fuzz run <target> --features libfuzzer`;
//! - in the workspace tests: `tests/replay.rs` runs every target over its seed corpus
//!   (`corpus/<target>/`) and over a bounded number of deterministic mutations of it;
//! - anywhere else: they are ordinary functions ([`TARGETS`] lists them by name).
//!
//! A failed invariant is a panic whose message names the invariant and shows the input.

mod attributes;
pub mod findings;
mod headers;
mod jwks;
mod kubeconfig;
pub mod mutate;
mod policy_file;
mod reviews;
mod sync_message;
mod token;

pub use attributes::attributes;
pub use headers::headers;
pub use jwks::jwks;
pub use kubeconfig::kubeconfig;
pub use policy_file::policy_file;
pub use reviews::reviews;
pub use sync_message::sync_message;
pub use token::{seed_tokens as token_seeds, token};

/// A fuzz target: bytes in, a panic when an invariant fails.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz_targets/<name>.rs` and `corpus/<name>/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("attributes", attributes),
    ("policy_file", policy_file),
    ("token", token),
    ("jwks", jwks),
    ("headers", headers),
    ("sync_message", sync_message),
    ("kubeconfig", kubeconfig),
    ("reviews", reviews),
];

/// Escapes `bytes` for an assertion message: printable ASCII as is, the rest as `\xNN`, and at
/// most 4 KiB of it.
pub(crate) fn show(bytes: &[u8]) -> String {
    const MAX: usize = 4096;
    let mut out: String = bytes
        .iter()
        .take(MAX)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if bytes.len() > MAX {
        out.push_str("...");
    }
    out
}
