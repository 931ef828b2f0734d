//! `infra-api`: the wire contract between Infra's parts, and nothing else.
//!
//! Every JSON object the control API reads or writes (`docs/control-api.md`,
//! `control/openapi.yaml`), its error body, and the messages of the sync stream a proxy follows.
//! The control plane serves these types, the CLI and the proxy's sync follower read them, and
//! the tests check the OpenAPI document against them. Serde types only: no I/O, no policy logic
//! (conversions to the policy model live in `infra-authz`).
//!
//! - [`error`]: the `{code, message}` body of every error answer.
//! - [`auth`]: logging in (password, access key, OpenID Connect), tokens, the caller.
//! - [`objects`]: users, groups, grants, access keys, providers, destinations, and the list
//!   envelope.
//! - [`requests`]: access requests, their rules, and what notification targets receive.
//! - [`duration`]: the text form of durations the CLI and the policy file share (`2h30m`).
//! - [`audit`]: the audit trail's event schema, ingest batches and query pages.
//! - [`sync`]: the policy snapshots and heartbeats streamed to proxies.

pub mod audit;
pub mod auth;
pub mod duration;
pub mod error;
pub mod objects;
pub mod requests;
pub mod sync;

pub use auth::{
    Access, LoginRequest, LoginResponse, Me, OidcStart, OidcStartRequest, Token, TokenRequest,
};
pub use error::ErrorBody;
pub use objects::{
    AccessKey, Destination, DestinationBody, Grant, GrantUpdate, Group, IdentityLink, KeyKind,
    NewGrant, NewGroup, NewKey, NewPassword, NewUser, Page, Provider, ProviderBody, ProviderKind,
    ProviderSummary, Source, User, Version, Why, WhyGrant, WhyNotAllowed, WhyRule,
};
pub use requests::{
    AccessRequest, NewRequest, NotificationTarget, RequestComment, RequestEvent, RequestRule,
    RequestRuleBody, RequestState, Review, SubjectRef, Verdict,
};
