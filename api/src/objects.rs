//! The control API's objects (what it answers) and the bodies that make or change them.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// `GET /api/version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The control plane's version.
    pub version: String,
}

/// A list answer: one page of `items`, and how many there are in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// The page number, from 1.
    pub page: usize,
    /// The page size.
    pub limit: usize,
    /// The number of items on all pages.
    pub total: usize,
}

/// Who made an object, and so who may change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Source {
    /// Made through the API (or the CLI); the API may change it.
    #[default]
    Api,
    /// Declared in the policy file, which owns it: the API refuses to change it (`file_owned`).
    File,
    /// Made by an approved access request, which owns it: it ends with the request.
    Request,
}

impl Source {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::File => "file",
            Self::Request => "request",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The name (usually an email address).
    pub name: String,
    /// Whether the user has a local password.
    #[serde(default)]
    pub has_password: bool,
    /// The user's groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Who owns it.
    #[serde(default)]
    pub source: Source,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
    /// The revision, for optimistic concurrency.
    pub revision: i64,
}

/// `POST /api/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// The name.
    pub name: String,
    /// A local password, if the user is to log in with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// `PUT /api/users/{name}/password`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// The new password.
    pub password: String,
}

/// `POST /api/users/{name}/identities`: an admin links a provider identity to a user, so that
/// its logins are that user (a user with a password, or bound to another identity, is never
/// taken by a provider login on its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityLink {
    /// The provider's name in Infra.
    pub provider: String,
    /// The subject (`sub`) the provider gives the person.
    pub subject: String,
}

/// A group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The name.
    pub name: String,
    /// How many members it has.
    #[serde(default)]
    pub members: u64,
    /// Who owns it.
    #[serde(default)]
    pub source: Source,
    /// When it was made.
    pub created_at: Timestamp,
    /// The revision.
    pub revision: i64,
}

/// `POST /api/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// The name.
    pub name: String,
}

/// A grant: a user or a group, a role, a resource (`destination` or `destination.namespace`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The store's id.
    pub id: i64,
    /// The user, for a user grant.
    #[serde(default)]
    pub user: Option<String>,
    /// The group, for a group grant.
    #[serde(default)]
    pub group: Option<String>,
    /// The role.
    pub role: String,
    /// `destination` or `destination.namespace` (or `infra`, the control API itself).
    pub resource: String,
    /// When it lapses.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// What is wrong with it as its destination's proxy reports it (a role the cluster lacks).
    #[serde(default)]
    pub problem: Option<String>,
    /// Who owns it.
    #[serde(default)]
    pub source: Source,
    /// The access request that made it, when one did.
    #[serde(default)]
    pub request_id: Option<i64>,
    /// When it was made.
    pub created_at: Timestamp,
    /// Who made it.
    pub created_by: String,
    /// The revision.
    pub revision: i64,
}

/// `POST /api/grants`: exactly one of `user` and `group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGrant {
    /// The user, for a user grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The group, for a group grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The role.
    pub role: String,
    /// `destination` or `destination.namespace`.
    pub resource: String,
    /// When it lapses, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// `PUT /api/grants/{id}`: a new expiry (none: never), at the revision the caller saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantUpdate {
    /// When it lapses, RFC 3339; none: never.
    pub expires_at: Option<String>,
    /// The revision the caller saw.
    pub revision: i64,
}

/// What an access key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum KeyKind {
    /// Made by a login, for the CLI.
    Session,
    /// Made on purpose, for a machine or a script.
    Api,
}

impl KeyKind {
    /// The name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Api => "api",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "session" => Ok(Self::Session),
            "api" => Ok(Self::Api),
            other => Err(format!("access key kind {other:?}")),
        }
    }
}

/// An access key (its secret only in the answer to a create).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    /// The key's id (the part before the dot).
    pub id: String,
    /// Whose key it is.
    pub user: String,
    /// Its name.
    pub name: String,
    /// What it is for.
    pub kind: KeyKind,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it ends, if it does by time.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// It ends when unused for this long.
    #[serde(default)]
    pub inactivity_timeout_seconds: Option<u64>,
    /// When it was last used.
    pub last_used_at: Timestamp,
    /// `id.secret`, only in the answer to a create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `POST /api/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Its name.
    pub name: String,
    /// Whose key it is (default: the caller's; another user's needs `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// When it ends, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// It ends when unused for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactivity_timeout_seconds: Option<u64>,
}

/// The kind of an identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProviderKind {
    /// Any OpenID Connect provider.
    #[default]
    Oidc,
    /// Okta.
    Okta,
    /// Microsoft Entra ID (Azure AD).
    Azure,
    /// Google Workspace.
    Google,
}

impl ProviderKind {
    /// Every kind, in the order they are documented.
    pub const ALL: [Self; 4] = [Self::Oidc, Self::Okta, Self::Azure, Self::Google];

    /// The name used in the policy file and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oidc => "oidc",
            Self::Okta => "okta",
            Self::Azure => "azure",
            Self::Google => "google",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| {
                format!("unknown provider kind {s:?} (expected one of oidc, okta, azure, google)")
            })
    }
}

/// A provider as everyone may see it (`GET /api/providers`, no sign-in needed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSummary {
    /// Its name in Infra.
    pub name: String,
    /// Its kind.
    pub kind: ProviderKind,
    /// Its URL or host.
    pub url: String,
}

/// A provider as admins see it (never its client secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    /// Its name in Infra.
    pub name: String,
    /// Its kind.
    pub kind: ProviderKind,
    /// Its URL or host.
    pub url: String,
    /// The OAuth client id.
    pub client_id: String,
    /// Extra scopes asked for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Who owns it.
    #[serde(default)]
    pub source: Source,
    /// The revision.
    pub revision: i64,
}

/// `POST /api/providers` and `PUT /api/providers/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderBody {
    /// Its name (required to create; if given to an update, must be the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its kind (default `oidc`), as text so that a wrong one gets the list of right ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Its URL or host.
    pub url: String,
    /// The OAuth client id.
    pub client_id: String,
    /// The OAuth client secret (required to create; an update without it keeps the current
    /// one, which the API never shows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Extra scopes to ask for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The revision the caller saw (required to update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
}

/// A destination: a cluster with an `infra-proxy` in front of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// Its name.
    pub name: String,
    /// Where its proxy is reached.
    pub url: String,
    /// Its proxy's CA certificate(s), PEM.
    #[serde(default)]
    pub ca_pem: String,
    /// The proxy's version.
    #[serde(default)]
    pub version: String,
    /// When the proxy was last heard from.
    #[serde(default)]
    pub last_seen_at: Option<Timestamp>,
    /// Whether the proxy was heard from lately.
    #[serde(default)]
    pub connected: bool,
    /// Roles its grants name that its cluster does not have.
    #[serde(default)]
    pub unknown_roles: Vec<String>,
    /// RBAC bindings in its cluster, not made by Infra, that name users or groups of its grants:
    /// the proxy decides from grants and does not honour them.
    #[serde(default)]
    pub outside_bindings: Vec<String>,
}

/// `PUT /api/destinations/{name}`: a proxy registers (and heartbeats) its destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationBody {
    /// Where its proxy is reached (https).
    pub url: String,
    /// Its proxy's CA certificate(s), PEM.
    pub ca_pem: String,
    /// The proxy's version.
    pub version: String,
    /// Roles the destination's grants name that its cluster does not have.
    #[serde(default)]
    pub unknown_roles: Vec<String>,
    /// RBAC bindings in its cluster, not made by Infra, that name users or groups of its grants.
    #[serde(default)]
    pub outside_bindings: Vec<String>,
}

/// `GET /api/why`: how Infra decides one request of one user on one destination, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Why {
    /// The destination decided for.
    pub destination: String,
    /// The user.
    pub user: String,
    /// The user's Infra groups, as the decision saw them.
    pub groups: Vec<String>,
    /// The request, in words: `list pods in the namespace "web"`.
    pub request: String,
    /// Whether infra-proxy allows it.
    pub allowed: bool,
    /// One sentence: the grant that allows, or why none does.
    pub reason: String,
    /// The grant that allows it.
    #[serde(default)]
    pub allowed_by: Option<WhyGrant>,
    /// The rule of that grant's role that matched.
    #[serde(default)]
    pub rule: Option<WhyRule>,
    /// On a deny: each of the user's grants on the destination and why it did not allow.
    #[serde(default)]
    pub not_allowed: Vec<WhyNotAllowed>,
    /// What the answer could not take into account (roles only the destination's cluster knows).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// A grant, as [`Why`] names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyGrant {
    /// The user, for a user grant.
    #[serde(default)]
    pub user: Option<String>,
    /// The group, for a group grant.
    #[serde(default)]
    pub group: Option<String>,
    /// The role.
    pub role: String,
    /// `destination` or `destination.namespace`.
    pub resource: String,
    /// When it lapses.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
}

/// A rule of a role (RBAC `PolicyRule`), and its place in the role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyRule {
    /// Its index among the role's rules.
    pub index: usize,
    /// Verbs.
    pub verbs: Vec<String>,
    /// API groups.
    pub api_groups: Vec<String>,
    /// Resources.
    pub resources: Vec<String>,
    /// Resource names (empty: all).
    pub resource_names: Vec<String>,
    /// Non-resource URLs.
    pub non_resource_urls: Vec<String>,
}

/// A grant that did not allow the request, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyNotAllowed {
    /// The grant.
    pub grant: WhyGrant,
    /// Why it did not allow.
    pub why: String,
}
