//! `infra-authz`: what is allowed.
//!
//! This crate is the hot path's brain and does no network I/O:
//!
//! - [`policy`]: the policy model (grants, users, groups, providers) and the policy file
//!   (access as code), with located errors.
//! - [`attributes`]: Kubernetes request attributes (verb, group, resource, namespace, ...)
//!   computed from a request's method, path and query exactly as the apiserver does.
//! - [`rbac`]: Kubernetes RBAC rule evaluation and the bundled built-in roles.
//! - [`decision`]: grant resolution for an identity and a request, and the decision cache.
//! - [`token`]: issuing and verifying the short-lived JWTs that the proxy accepts.
//! - [`duration`]: durations as people write them (`30m`, `2h30m`, `7d`), from `infra-api`.
//! - [`clock`]: time as a parameter, so anything with an expiry is tested without sleeping.

pub mod attributes;
pub mod clock;
pub mod decision;
pub use infra_api::duration;
pub mod policy;
pub mod rbac;
pub mod token;
