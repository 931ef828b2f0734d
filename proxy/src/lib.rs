//! `infra-proxy`: Infra's TLS reverse proxy in front of kube-apiserver.
//!
//! The request life cycle, one direction, no back and forth (see docs/design.md):
//!
//! ```text
//! accept (caps, TLS, ALPN h2/http1.1, deadlines)    server.rs, server/, tls.rs
//!  -> authenticate (one bearer token, cached)      headers.rs, authn.rs
//!  -> impersonation asked for (kubectl --as)       impersonation.rs
//!  -> attributes (verb, group, resource, ...)      infra_authz::attributes
//!  -> decide (impersonate checks, the request as   access.rs, policy.rs,
//!     the acting identity, an upgrade's create)    infra_authz::decision
//!  -> answer access reviews here (never forwarded) reviews.rs, reviews/
//!  -> rewrite (strip, impersonate, audit id)       headers.rs
//!  -> forward (limits, pooled h2, upgrades on h1)  inflight.rs, upstream.rs, pipeline.rs
//!  -> record (audit line, metrics)                 audit.rs, metrics.rs
//! ```
//!
//! Every refusal becomes a Kubernetes `Status` in one place: [`status`].

pub mod access;
pub mod admin;
pub mod app;
pub mod audit;
pub mod authn;
pub mod config;
pub mod headers;
pub mod impersonation;
pub mod inflight;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod reconcile;
pub mod reviews;
pub mod server;
pub mod status;
pub mod streams;
pub mod sync;
pub mod tls;
pub mod upstream;
