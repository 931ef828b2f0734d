//! `infra-control`: Infra's control plane.
//!
//! - [`store`]: the state the control plane keeps (users, groups, grants, access keys,
//!   identity providers and their sessions, destinations, token signing keys, the audit trail of
//!   control actions, failed-login counters), in SQLite (one file, the default) or PostgreSQL
//!   (several control replicas).
//! - [`crypto`]: encryption at rest (AES-256-GCM) under the root key.
//! - [`passwords`]: Argon2id hashes for local users, the password policy, equal-time refusals.
//! - [`keys`]: access keys `<id>.<secret>`, stored as the SHA-256 of the secret.
//! - [`plane`]: the control plane itself: token signing and key rotation, the bootstrap admin,
//!   the policy file's ownership of what it declares, snapshots for proxies.
//! - [`login`]: logging in by password, access key or OpenID Connect, and re-verification.
//! - [`oidc`]: the OpenID Connect protocol with providers.
//! - [`clients`]: who is on the other end: client addresses and per-address rate limits.
//! - [`requests`]: access requests: asking, reviewing, on-call approval ([`oncall`]),
//!   notifications ([`notify`]), and their expiry.
//! - [`otlp`]: the audit trail exported as OpenTelemetry logs over OTLP/HTTP.
//! - [`api`]: the HTTP API the CLI and proxies talk to, on the wire types of `infra-api`.
//!
//! It depends on `infra-api` (wire types) and `infra-authz` (the policy model), never on the
//! proxy: `infra-proxy` runs it in its process behind its default `control` feature.

pub mod api;
pub mod changes;
pub mod clients;
pub mod crypto;
pub mod keys;
pub mod login;
pub mod notify;
pub mod oidc;
pub mod oncall;
pub mod otlp;
pub mod passwords;
pub mod plane;
pub mod requests;
pub mod store;

pub use plane::{ControlConfig, ControlPlane};
pub use store::{Store, StoreConfig, StoreError};
