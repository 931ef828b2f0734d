//! The control plane's parts that do not face the network.
//!
//! - [`store`]: the state the control plane keeps (users, groups, grants, access keys,
//!   identity providers and their sessions, destinations, token signing keys, the audit trail of
//!   control actions, failed-login counters), in SQLite (one file, the default) or PostgreSQL
//!   (several control replicas).
//! - [`crypto`]: encryption at rest (AES-256-GCM) under the root key.
//! - [`passwords`]: Argon2id hashes for local users, the password policy, equal-time refusals.
//! - [`keys`]: access keys `<id>.<secret>`, stored as the SHA-256 of the secret.

pub mod crypto;
pub mod keys;
pub mod passwords;
pub mod store;

pub use store::{Store, StoreConfig, StoreError};
