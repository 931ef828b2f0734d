//! Kubernetes RBAC rule evaluation, and the bundled built-in roles.
//!
//! [`PolicyRule`] is the Kubernetes `rbac.authorization.k8s.io/v1` rule, read from JSON or YAML
//! exactly as the apiserver stores it. [`PolicyRule::allows`] evaluates one rule the way
//! kube-apiserver's RBAC authorizer does (`RuleAllows` and the `*Matches` helpers of
//! `pkg/apis/rbac/v1/evaluation_helpers.go`):
//!
//! - verbs: `*` or the exact verb;
//! - API groups: `*` or the exact group (`""` is the core group);
//! - resources: `*`, the exact `resource` or `resource/subresource`, or `*/subresource`;
//! - resource names: an empty list allows every name; otherwise the request's name must be one
//!   of them, so a request without a name (`list`, `watch`, `create`, `deletecollection`) never
//!   matches a rule that lists names;
//! - non-resource URLs: `*`, the exact path, or a prefix when the rule ends in `*`.
//!
//! Everything is compared exactly, case included, as the apiserver compares it.
//!
//! A [`Role`] is a named list of rules, compiled once for the hot path: verbs become a bit set,
//! resource and URL rules are kept apart, and nothing is allocated while matching. A [`RoleSet`]
//! maps names to roles; [`RoleSet::builtin`] holds the `view`, `edit`, `admin` and
//! `cluster-admin` ClusterRoles as captured from a real apiserver
//! (`data/builtin-clusterroles.yaml`), and more ClusterRoles can be added, replaced and removed
//! at run time as the proxy watches the cluster.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Deserializer, Serialize};

use crate::attributes::{Attributes, NonResourceAttributes, ResourceAttributes};

/// The names of the built-in roles bundled with Infra.
pub const BUILTIN_ROLES: [&str; 4] = ["view", "edit", "admin", "cluster-admin"];

/// The ClusterRoles of a real apiserver (a v1 `List`), from which the built-in roles are read.
const BUILTIN_CLUSTER_ROLES_YAML: &str = include_str!("../data/builtin-clusterroles.yaml");

/// The roles a Kubernetes cluster binds to every authenticated user (group
/// `system:authenticated`) by default: discovery, `/version` and `/healthz`, and the
/// self-reviews behind `kubectl auth whoami` and `kubectl auth can-i`. Without them kubectl
/// cannot even discover the API.
pub const AUTHENTICATED_ROLES: [&str; 3] = [
    "system:basic-user",
    "system:discovery",
    "system:public-info-viewer",
];

/// Every ClusterRole of a fresh v1.32 cluster, as captured; the [`AUTHENTICATED_ROLES`] come
/// from here.
const DEFAULT_CLUSTER_ROLES_YAML: &str = include_str!("../data/all-default-clusterroles.yaml");

/// `*`: matches every verb, API group, resource or non-resource URL.
const ALL: &str = "*";

/// One RBAC rule, as in `rbac.authorization.k8s.io/v1` `PolicyRule`.
///
/// Missing and `null` lists read as empty. Unknown fields are ignored, so rules from newer
/// apiservers still load.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Verbs (`get`, `list`, ...); `*` is every verb.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub verbs: Vec<String>,
    /// API groups; `""` is the core group, `*` every group.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub api_groups: Vec<String>,
    /// Resources (`pods`, `pods/exec`, `*/scale`, `*`).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub resources: Vec<String>,
    /// Object names the rule is restricted to; empty means every name.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub resource_names: Vec<String>,
    /// Non-resource paths (`/healthz`, `/healthz/*`, `*`).
    #[serde(
        default,
        rename = "nonResourceURLs",
        deserialize_with = "null_as_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

/// Reads a list that may be missing (see `#[serde(default)]`) or `null` as a `Vec`.
fn null_as_empty<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

impl PolicyRule {
    /// Whether this rule allows the request, exactly as the apiserver's `RuleAllows` decides.
    ///
    /// This is the plain reference evaluation, written to read like the Go code (it allocates);
    /// [`Role::allows`] gives the same answers from a compiled form without allocating and is
    /// what the hot path uses.
    pub fn allows(&self, attrs: &Attributes) -> bool {
        match attrs {
            Attributes::Resource(r) => {
                let subresource = non_empty(r.subresource.as_deref());
                self.verb_matches(&r.verb)
                    && self.api_group_matches(&r.api_group)
                    && self.resource_matches(&r.resource, subresource)
                    && self.resource_name_matches(r.name.as_deref().unwrap_or(""))
            }
            Attributes::NonResource(n) => {
                self.verb_matches(&n.verb) && self.non_resource_url_matches(&n.path)
            }
        }
    }

    /// `VerbMatches`.
    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == ALL || v == verb)
    }

    /// `APIGroupMatches`.
    fn api_group_matches(&self, group: &str) -> bool {
        self.api_groups.iter().any(|g| g == ALL || g == group)
    }

    /// `ResourceMatches`, literally: `*`, the combined `resource[/subresource]`, or
    /// `*/subresource`.
    fn resource_matches(&self, resource: &str, subresource: Option<&str>) -> bool {
        let combined = match subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        };
        self.resources.iter().any(|rule| {
            rule == ALL
                || *rule == combined
                || subresource.is_some_and(|sub| {
                    rule.len() == sub.len() + 2 && rule.starts_with("*/") && rule.ends_with(sub)
                })
        })
    }

    /// `ResourceNameMatches`; a request without a name asks for the name `""`.
    fn resource_name_matches(&self, name: &str) -> bool {
        self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == name)
    }

    /// `NonResourceURLMatches`.
    fn non_resource_url_matches(&self, path: &str) -> bool {
        self.non_resource_urls.iter().any(|rule| {
            rule == ALL
                || rule == path
                || (rule.ends_with('*') && path.starts_with(rule.trim_end_matches('*')))
        })
    }
}

/// `Some(s)` when `s` is present and not empty: the apiserver treats `""` as absent.
fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// One entry of a rule's `resources` against a request's resource and subresource, without
/// allocating.
fn resource_entry_matches(rule: &str, resource: &str, subresource: Option<&str>) -> bool {
    if rule == ALL {
        return true;
    }
    match subresource {
        None => rule == resource,
        Some(sub) => {
            // `rule == resource + "/" + sub`, without allocating.
            let combined = rule.len() == resource.len() + 1 + sub.len()
                && rule.starts_with(resource)
                && rule.as_bytes().get(resource.len()) == Some(&b'/')
                && rule.ends_with(sub);
            // `rule == "*/" + sub`.
            let any_parent =
                rule.len() == sub.len() + 2 && rule.starts_with("*/") && rule.ends_with(sub);
            combined || any_parent
        }
    }
}

/// Verbs that get a bit of their own in a [`VerbSet`]: the resource verbs the apiserver uses,
/// and the lower-cased HTTP methods of non-resource requests.
const KNOWN_VERBS: [&str; 21] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
    "impersonate",
    "bind",
    "escalate",
    "use",
    "approve",
    "sign",
    "attest",
    "post",
    "put",
    "head",
    "options",
    "connect",
];

/// The bit of a known verb, or 0.
fn verb_bit(verb: &str) -> u32 {
    KNOWN_VERBS
        .iter()
        .position(|known| *known == verb)
        .map_or(0, |i| 1 << i)
}

/// A request prepared once for matching against many rules.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prepared<'a> {
    attrs: &'a Attributes,
    verb_bit: u32,
}

impl<'a> Prepared<'a> {
    /// Prepares `attrs`.
    pub(crate) fn new(attrs: &'a Attributes) -> Self {
        Self {
            attrs,
            verb_bit: verb_bit(attrs.verb()),
        }
    }
}

/// A rule's verbs, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VerbSet {
    /// The rule lists `*`.
    all: bool,
    /// Known verbs, by [`verb_bit`].
    bits: u32,
    /// Verbs without a bit.
    others: Box<[Box<str>]>,
}

impl VerbSet {
    fn new(verbs: &[String]) -> Self {
        let mut all = false;
        let mut bits = 0;
        let mut others = Vec::new();
        for verb in verbs {
            if verb == ALL {
                all = true;
            }
            match verb_bit(verb) {
                0 => others.push(Box::from(verb.as_str())),
                bit => bits |= bit,
            }
        }
        Self {
            all,
            bits,
            others: others.into_boxed_slice(),
        }
    }

    fn matches(&self, verb: &str, bit: u32) -> bool {
        if self.all {
            return true;
        }
        if bit == 0 {
            // A verb without a bit can only be among the others.
            self.others.iter().any(|v| &**v == verb)
        } else {
            self.bits & bit != 0
        }
    }
}

/// A list of names where `*` matches everything, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NameSet {
    all: bool,
    names: Box<[Box<str>]>,
}

impl NameSet {
    fn new(names: &[String]) -> Self {
        Self {
            all: names.iter().any(|n| n == ALL),
            names: names.iter().map(|n| Box::from(n.as_str())).collect(),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.all || self.names.iter().any(|n| &**n == name)
    }
}

/// A rule that can match resource requests, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResourceRule {
    /// The index of the rule in [`Role::rules`].
    index: usize,
    verbs: VerbSet,
    groups: NameSet,
    /// The raw `resources` entries; [`resource_entry_matches`] handles `*` and `*/sub`.
    resources: Box<[Box<str>]>,
    /// `resourceNames`; `None` when the rule has none (every name matches).
    names: Option<Box<[Box<str>]>>,
}

impl ResourceRule {
    fn matches(&self, verb_bit: u32, r: &ResourceAttributes) -> bool {
        if !self.verbs.matches(&r.verb, verb_bit) || !self.groups.contains(&r.api_group) {
            return false;
        }
        let subresource = non_empty(r.subresource.as_deref());
        if !self
            .resources
            .iter()
            .any(|rule| resource_entry_matches(rule, &r.resource, subresource))
        {
            return false;
        }
        match &self.names {
            None => true,
            Some(names) => {
                let name = r.name.as_deref().unwrap_or("");
                names.iter().any(|n| &**n == name)
            }
        }
    }
}

/// One entry of `nonResourceURLs`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UrlPattern {
    /// `*`, or any entry that is only stars: every path.
    All,
    /// An entry ending in `*`: paths starting with what precedes the stars. (The exact
    /// comparison the apiserver also makes is implied: the entry starts with its own prefix.)
    Prefix(Box<str>),
    /// Exactly this path.
    Exact(Box<str>),
}

impl UrlPattern {
    fn new(rule: &str) -> Self {
        if rule == ALL {
            Self::All
        } else if rule.ends_with('*') {
            match rule.trim_end_matches('*') {
                "" => Self::All,
                prefix => Self::Prefix(Box::from(prefix)),
            }
        } else {
            Self::Exact(Box::from(rule))
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Self::All => true,
            Self::Prefix(prefix) => path.starts_with(&**prefix),
            Self::Exact(exact) => path == &**exact,
        }
    }
}

/// A rule that can match non-resource requests, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UrlRule {
    /// The index of the rule in [`Role::rules`].
    index: usize,
    verbs: VerbSet,
    urls: Box<[UrlPattern]>,
}

impl UrlRule {
    fn matches(&self, verb_bit: u32, n: &NonResourceAttributes) -> bool {
        self.verbs.matches(&n.verb, verb_bit) && self.urls.iter().any(|u| u.matches(&n.path))
    }
}

/// A named list of rules (a ClusterRole), compiled for fast matching.
#[derive(Clone, PartialEq, Eq)]
pub struct Role {
    name: Arc<str>,
    rules: Arc<[PolicyRule]>,
    /// The rules that can match a resource request (those with verbs, groups and resources).
    resource_rules: Box<[ResourceRule]>,
    /// The rules that can match a non-resource request (those with verbs and URLs).
    url_rules: Box<[UrlRule]>,
}

impl Role {
    /// Compiles `rules` under `name`.
    pub fn new(name: impl Into<Arc<str>>, rules: impl Into<Arc<[PolicyRule]>>) -> Self {
        let rules: Arc<[PolicyRule]> = rules.into();
        let resource_rules = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                !r.verbs.is_empty() && !r.api_groups.is_empty() && !r.resources.is_empty()
            })
            .map(|(index, r)| ResourceRule {
                index,
                verbs: VerbSet::new(&r.verbs),
                groups: NameSet::new(&r.api_groups),
                resources: r.resources.iter().map(|s| Box::from(s.as_str())).collect(),
                names: (!r.resource_names.is_empty()).then(|| {
                    r.resource_names
                        .iter()
                        .map(|s| Box::from(s.as_str()))
                        .collect()
                }),
            })
            .collect();
        let url_rules = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.verbs.is_empty() && !r.non_resource_urls.is_empty())
            .map(|(index, r)| UrlRule {
                index,
                verbs: VerbSet::new(&r.verbs),
                urls: r
                    .non_resource_urls
                    .iter()
                    .map(|u| UrlPattern::new(u))
                    .collect(),
            })
            .collect();
        Self {
            name: name.into(),
            rules,
            resource_rules,
            url_rules,
        }
    }

    /// The role's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The role's rules, as given.
    pub fn rules(&self) -> &[PolicyRule] {
        &self.rules
    }

    /// Whether a rule of this role allows the request.
    pub fn allows(&self, attrs: &Attributes) -> bool {
        self.matching_rule_prepared(Prepared::new(attrs)).is_some()
    }

    /// The index in [`Role::rules`] of the first rule that allows the request, prepared once
    /// for many roles.
    pub(crate) fn matching_rule_prepared(&self, req: Prepared<'_>) -> Option<usize> {
        match req.attrs {
            Attributes::Resource(r) => self
                .resource_rules
                .iter()
                .find(|rule| rule.matches(req.verb_bit, r))
                .map(|rule| rule.index),
            Attributes::NonResource(n) => self
                .url_rules
                .iter()
                .find(|rule| rule.matches(req.verb_bit, n))
                .map(|rule| rule.index),
        }
    }
}

impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Role")
            .field("name", &self.name)
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

/// Why a ClusterRole could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoleError {
    /// Reading a ClusterRole from JSON failed.
    #[error("invalid ClusterRole JSON: {0}")]
    Json(String),
    /// Reading a ClusterRole (or a list of them) from YAML failed.
    #[error("invalid ClusterRole YAML: {0}")]
    Yaml(String),
    /// The object is not a ClusterRole.
    #[error("expected an object of kind ClusterRole, found kind {0:?}")]
    WrongKind(String),
    /// The ClusterRole has no `metadata.name`.
    #[error("the ClusterRole has no metadata.name")]
    MissingName,
    /// A built-in role is missing from the bundled data.
    #[error("the bundled ClusterRoles lack the built-in role {0:?}")]
    MissingBuiltin(&'static str),
}

/// A ClusterRole: a name and its rules. Read with [`ClusterRole::from_json`],
/// [`ClusterRole::from_json_value`] or [`ClusterRole::from_yaml`]; other fields of the object
/// (labels, `aggregationRule`, ...) are ignored, since the apiserver has already aggregated the
/// rules it stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRole {
    /// `metadata.name`.
    pub name: String,
    /// `rules`; missing or `null` is empty.
    pub rules: Vec<PolicyRule>,
}

/// A ClusterRole object as it arrives.
#[derive(Deserialize)]
struct RawClusterRole {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<RawMetadata>,
    #[serde(default)]
    rules: Option<Vec<PolicyRule>>,
}

#[derive(Deserialize)]
struct RawMetadata {
    #[serde(default)]
    name: Option<String>,
}

/// A v1 `List` of objects as it arrives.
#[derive(Deserialize)]
struct RawList {
    #[serde(default)]
    items: Option<Vec<RawClusterRole>>,
}

impl TryFrom<RawClusterRole> for ClusterRole {
    type Error = RoleError;

    fn try_from(raw: RawClusterRole) -> Result<Self, RoleError> {
        if let Some(kind) = raw.kind
            && kind != "ClusterRole"
        {
            return Err(RoleError::WrongKind(kind));
        }
        let name = raw
            .metadata
            .and_then(|m| m.name)
            .filter(|n| !n.is_empty())
            .ok_or(RoleError::MissingName)?;
        Ok(Self {
            name,
            rules: raw.rules.unwrap_or_default(),
        })
    }
}

impl ClusterRole {
    /// Reads a ClusterRole from JSON text. A missing `kind` is accepted; any other kind is not.
    pub fn from_json(text: &str) -> Result<Self, RoleError> {
        let raw: RawClusterRole =
            serde_json::from_str(text).map_err(|e| RoleError::Json(e.to_string()))?;
        raw.try_into()
    }

    /// Reads a ClusterRole from a JSON value (as a watch event carries it).
    pub fn from_json_value(value: serde_json::Value) -> Result<Self, RoleError> {
        let raw: RawClusterRole =
            serde_json::from_value(value).map_err(|e| RoleError::Json(e.to_string()))?;
        raw.try_into()
    }

    /// Reads a ClusterRole from YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, RoleError> {
        let raw: RawClusterRole =
            serde_saphyr::from_str(text).map_err(|e| RoleError::Yaml(e.to_string()))?;
        raw.try_into()
    }

    /// Reads a v1 `List` of ClusterRoles from YAML text (`kubectl get clusterroles -o yaml`).
    pub fn list_from_yaml(text: &str) -> Result<Vec<Self>, RoleError> {
        let list: RawList =
            serde_saphyr::from_str(text).map_err(|e| RoleError::Yaml(e.to_string()))?;
        list.items
            .unwrap_or_default()
            .into_iter()
            .map(Self::try_from)
            .collect()
    }

    /// Compiles this ClusterRole into a [`Role`].
    pub fn into_role(self) -> Role {
        Role::new(self.name, self.rules)
    }
}

/// The built-in roles, read once from the bundled data.
static BUILTIN: LazyLock<Result<RoleSet, RoleError>> = LazyLock::new(|| {
    let mut set = RoleSet::empty();
    for role in ClusterRole::list_from_yaml(BUILTIN_CLUSTER_ROLES_YAML)? {
        if BUILTIN_ROLES.contains(&role.name.as_str()) {
            set.insert(role);
        }
    }
    for role in ClusterRole::list_from_yaml(DEFAULT_CLUSTER_ROLES_YAML)? {
        if AUTHENTICATED_ROLES.contains(&role.name.as_str()) {
            set.insert(role);
        }
    }
    if let Some(missing) = BUILTIN_ROLES
        .into_iter()
        .chain(AUTHENTICATED_ROLES)
        .find(|name| set.get(name).is_none())
    {
        return Err(RoleError::MissingBuiltin(missing));
    }
    Ok(set)
});

/// Roles by name. Cheap to clone: the roles themselves are shared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleSet {
    roles: HashMap<Arc<str>, Arc<Role>>,
}

impl RoleSet {
    /// No roles at all.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The built-in roles (`view`, `edit`, `admin`, `cluster-admin`, and the
    /// [`AUTHENTICATED_ROLES`]), or the reason the bundled
    /// data could not be read. A test reads the data, so this fails only on a broken build;
    /// callers that start a server should refuse to start on `Err`.
    pub fn try_builtin() -> Result<Self, RoleError> {
        BUILTIN.clone()
    }

    /// The built-in roles (`view`, `edit`, `admin`, `cluster-admin`, and the
    /// [`AUTHENTICATED_ROLES`]).
    ///
    /// If the bundled data could not be read (see [`RoleSet::try_builtin`]) this logs an error
    /// and returns no roles, which allows nothing: it fails closed.
    pub fn builtin() -> Self {
        match &*BUILTIN {
            Ok(set) => set.clone(),
            Err(error) => {
                tracing::error!(%error, "the built-in roles are unavailable; they allow nothing");
                Self::empty()
            }
        }
    }

    /// Adds a ClusterRole, replacing any role of the same name (a ClusterRole of the cluster
    /// replaces the bundled role of that name, since that is what the cluster itself enforces).
    /// Returns the role it replaced.
    pub fn insert(&mut self, role: ClusterRole) -> Option<Arc<Role>> {
        self.insert_role(role.into_role())
    }

    /// Adds a compiled role, replacing any role of the same name. Returns the role it replaced.
    pub fn insert_role(&mut self, role: Role) -> Option<Arc<Role>> {
        self.roles.insert(Arc::clone(&role.name), Arc::new(role))
    }

    /// Removes the role called `name`, returning it.
    pub fn remove(&mut self, name: &str) -> Option<Arc<Role>> {
        self.roles.remove(name)
    }

    /// The role called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Role>> {
        self.roles.get(name)
    }

    /// Whether there is a role called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.roles.contains_key(name)
    }

    /// The names of all roles, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(|k| &**k)
    }

    /// How many roles there are.
    pub fn len(&self) -> usize {
        self.roles.len()
    }

    /// Whether there are no roles.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn res(verb: &str, group: &str, resource: &str) -> ResourceAttributes {
        ResourceAttributes {
            verb: verb.into(),
            api_group: group.into(),
            api_version: "v1".into(),
            namespace: Some("web".into()),
            resource: resource.into(),
            subresource: None,
            name: None,
        }
    }

    fn core(verb: &str, resource: &str) -> Attributes {
        Attributes::Resource(res(verb, "", resource))
    }

    fn sub(verb: &str, group: &str, resource: &str, subresource: &str) -> Attributes {
        Attributes::Resource(ResourceAttributes {
            subresource: Some(subresource.into()),
            name: Some("x".into()),
            ..res(verb, group, resource)
        })
    }

    fn named(verb: &str, resource: &str, name: &str) -> Attributes {
        Attributes::Resource(ResourceAttributes {
            name: Some(name.into()),
            ..res(verb, "", resource)
        })
    }

    fn url(verb: &str, path: &str) -> Attributes {
        Attributes::NonResource(NonResourceAttributes {
            verb: verb.into(),
            path: path.into(),
        })
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: strings(verbs),
            api_groups: strings(groups),
            resources: strings(resources),
            ..PolicyRule::default()
        }
    }

    /// Checks the compiled role and the reference rules agree, and returns the answer.
    fn allows(role: &Role, attrs: &Attributes) -> bool {
        let compiled = role.allows(attrs);
        let reference = role.rules().iter().any(|r| r.allows(attrs));
        assert_eq!(compiled, reference, "{} on {attrs:?}", role.name());
        compiled
    }

    fn builtin(name: &str) -> Arc<Role> {
        let set = RoleSet::try_builtin().expect("the bundled data reads");
        Arc::clone(set.get(name).expect("a built-in role"))
    }

    #[test]
    fn bundled_data_reads_and_holds_the_builtins() {
        let set = RoleSet::try_builtin().expect("the bundled data reads");
        assert_eq!(set.len(), BUILTIN_ROLES.len() + AUTHENTICATED_ROLES.len());
        for name in BUILTIN_ROLES.into_iter().chain(AUTHENTICATED_ROLES) {
            assert!(set.contains(name), "{name}");
            assert!(
                !set.get(name).expect("present").rules().is_empty(),
                "{name}"
            );
        }
        assert_eq!(RoleSet::builtin(), set);
    }

    #[test]
    fn view_reads_but_does_not_write_nor_see_secrets() {
        let view = builtin("view");
        for verb in ["get", "list", "watch"] {
            assert!(allows(&view, &core(verb, "pods")), "{verb} pods");
        }
        assert!(allows(&view, &sub("get", "", "pods", "log")));
        assert!(allows(
            &view,
            &Attributes::Resource(res("list", "apps", "deployments"))
        ));
        assert!(!allows(&view, &core("get", "secrets")));
        assert!(!allows(&view, &core("list", "secrets")));
        assert!(!allows(&view, &core("create", "pods")));
        assert!(!allows(&view, &core("delete", "pods")));
        assert!(!allows(&view, &sub("create", "", "pods", "exec")));
        assert!(!allows(&view, &sub("get", "", "pods", "exec")));
        assert!(!allows(&view, &url("get", "/healthz")));
    }

    #[test]
    fn edit_writes_execs_and_reads_secrets() {
        let edit = builtin("edit");
        assert!(allows(&edit, &core("create", "pods")));
        assert!(allows(&edit, &sub("create", "", "pods", "exec")));
        assert!(allows(&edit, &sub("get", "", "pods", "exec")));
        assert!(allows(&edit, &sub("create", "", "pods", "portforward")));
        assert!(allows(&edit, &core("get", "secrets")));
        assert!(allows(&edit, &core("delete", "secrets")));
        assert!(allows(
            &edit,
            &sub("update", "apps", "deployments", "scale")
        ));
        // edit may not touch RBAC.
        assert!(!allows(
            &edit,
            &Attributes::Resource(res("create", "rbac.authorization.k8s.io", "rolebindings"))
        ));
    }

    #[test]
    fn admin_binds_roles_in_a_namespace() {
        let admin = builtin("admin");
        for resource in ["rolebindings", "roles"] {
            let attrs = Attributes::Resource(res("create", "rbac.authorization.k8s.io", resource));
            assert!(allows(&admin, &attrs), "{resource}");
        }
        assert!(allows(&admin, &core("get", "secrets")));
        assert!(!allows(&admin, &url("get", "/healthz")));
        // admin is not cluster-admin: no nodes.
        assert!(!allows(&admin, &core("delete", "nodes")));
    }

    #[test]
    fn cluster_admin_may_do_everything() {
        let ca = builtin("cluster-admin");
        assert!(allows(&ca, &core("delete", "nodes")));
        assert!(allows(&ca, &sub("create", "", "pods", "exec")));
        assert!(allows(
            &ca,
            &Attributes::Resource(res("frobnicate", "example.com", "widgets"))
        ));
        assert!(allows(&ca, &url("get", "/healthz")));
        assert!(allows(&ca, &url("post", "/anything/at/all")));
        assert!(allows(&ca, &url("get", "")));
    }

    #[test]
    fn resource_names_need_a_named_request() {
        let role = Role::new(
            "one-config",
            vec![PolicyRule {
                resource_names: strings(&["app-config"]),
                ..rule(&["get", "list", "watch", "update"], &[""], &["configmaps"])
            }],
        );
        assert!(allows(&role, &named("get", "configmaps", "app-config")));
        assert!(allows(&role, &named("update", "configmaps", "app-config")));
        assert!(!allows(&role, &named("get", "configmaps", "other")));
        // list, watch and create carry no name: they never match a rule with names.
        assert!(!allows(&role, &core("list", "configmaps")));
        assert!(!allows(&role, &core("watch", "configmaps")));
        assert!(!allows(&role, &core("create", "configmaps")));
        // An empty name is no name.
        assert!(!allows(&role, &named("get", "configmaps", "")));
    }

    #[test]
    fn subresource_wildcards() {
        let role = Role::new("scaler", vec![rule(&["update"], &["*"], &["*/scale"])]);
        assert!(allows(
            &role,
            &sub("update", "apps", "deployments", "scale")
        ));
        assert!(allows(
            &role,
            &sub("update", "", "replicationcontrollers", "scale")
        ));
        assert!(!allows(
            &role,
            &sub("update", "apps", "deployments", "status")
        ));
        // `*/scale` is not the parent resource.
        assert!(!allows(
            &role,
            &Attributes::Resource(res("update", "apps", "deployments"))
        ));
        // `*/scale` does not match the subresource `cale` nor `xscale`.
        assert!(!allows(
            &role,
            &sub("update", "apps", "deployments", "cale")
        ));
        assert!(!allows(
            &role,
            &sub("update", "apps", "deployments", "xscale")
        ));

        let pods = Role::new("pods", vec![rule(&["get"], &[""], &["pods"])]);
        assert!(allows(&pods, &core("get", "pods")));
        // The parent resource does not cover its subresources.
        assert!(!allows(&pods, &sub("get", "", "pods", "log")));
        let logs = Role::new("logs", vec![rule(&["get"], &[""], &["pods/log"])]);
        assert!(allows(&logs, &sub("get", "", "pods", "log")));
        assert!(!allows(&logs, &core("get", "pods")));
        // `pods/*` is only the subresource literally named `*`.
        let star = Role::new("star", vec![rule(&["get"], &[""], &["pods/*"])]);
        assert!(!allows(&star, &sub("get", "", "pods", "log")));
    }

    #[test]
    fn groups_and_verbs_are_exact() {
        let role = Role::new("apps", vec![rule(&["get"], &["apps"], &["deployments"])]);
        assert!(allows(
            &role,
            &Attributes::Resource(res("get", "apps", "deployments"))
        ));
        assert!(!allows(
            &role,
            &Attributes::Resource(res("get", "", "deployments"))
        ));
        assert!(!allows(
            &role,
            &Attributes::Resource(res("GET", "apps", "deployments"))
        ));
        assert!(!allows(
            &role,
            &Attributes::Resource(res("get", "Apps", "deployments"))
        ));
        let odd = Role::new("odd", vec![rule(&["frobnicate"], &[""], &["pods"])]);
        assert!(allows(&odd, &core("frobnicate", "pods")));
        assert!(!allows(&odd, &core("get", "pods")));
        assert!(!allows(&odd, &core("frobnicat", "pods")));
    }

    #[test]
    fn non_resource_urls_exact_or_prefix() {
        let role = Role::new(
            "health",
            vec![PolicyRule {
                verbs: strings(&["get"]),
                non_resource_urls: strings(&["/healthz", "/livez/*", "/metrics*"]),
                ..PolicyRule::default()
            }],
        );
        assert!(allows(&role, &url("get", "/healthz")));
        assert!(!allows(&role, &url("get", "/healthz/etcd")));
        assert!(!allows(&role, &url("get", "/healthz/")));
        assert!(allows(&role, &url("get", "/livez/etcd")));
        assert!(allows(&role, &url("get", "/livez/")));
        assert!(!allows(&role, &url("get", "/livez")));
        assert!(allows(&role, &url("get", "/metrics")));
        assert!(allows(&role, &url("get", "/metricsfoo")));
        assert!(!allows(&role, &url("post", "/healthz")));
        // A URL rule never matches a resource request, nor a resource rule a URL.
        assert!(!allows(&role, &core("get", "pods")));
        let pods = Role::new("pods", vec![rule(&["*"], &["*"], &["*"])]);
        assert!(!allows(&pods, &url("get", "/healthz")));
    }

    #[test]
    fn cluster_roles_read_from_json_and_yaml() {
        let json = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole",
            "metadata":{"name":"reader","uid":"x"},
            "rules":[{"apiGroups":[""],"resources":["pods"],"verbs":["get"],"resourceNames":null},
                     {"nonResourceURLs":["/healthz"],"verbs":["get"]}]}"#;
        let role = ClusterRole::from_json(json).expect("reads");
        assert_eq!(role.name, "reader");
        assert_eq!(role.rules.len(), 2);
        assert_eq!(role.rules[1].non_resource_urls, strings(&["/healthz"]));
        let value: serde_json::Value = serde_json::from_str(json).expect("json");
        assert_eq!(ClusterRole::from_json_value(value), Ok(role.clone()));

        let yaml = "kind: ClusterRole\nmetadata:\n  name: reader\nrules:\n- apiGroups: [\"\"]\n  \
                    resources: [pods]\n  verbs: [get]\n- nonResourceURLs: [/healthz]\n  verbs: [get]\n";
        assert_eq!(ClusterRole::from_yaml(yaml), Ok(role.clone()));

        let no_rules = ClusterRole::from_json(r#"{"metadata":{"name":"empty"},"rules":null}"#);
        assert_eq!(
            no_rules,
            Ok(ClusterRole {
                name: "empty".into(),
                rules: vec![]
            })
        );

        let mut set = RoleSet::builtin();
        assert!(set.insert(role).is_none());
        assert!(
            set.get("reader")
                .is_some_and(|r| r.allows(&core("get", "pods")))
        );
        let replaced = set.insert(ClusterRole {
            name: "reader".into(),
            rules: vec![],
        });
        assert!(replaced.is_some());
        assert!(
            !set.get("reader")
                .is_some_and(|r| r.allows(&core("get", "pods")))
        );
        assert!(set.remove("reader").is_some());
        assert!(!set.contains("reader"));
        assert_eq!(set.len(), BUILTIN_ROLES.len() + AUTHENTICATED_ROLES.len());
    }

    #[test]
    fn bad_cluster_roles_are_refused() {
        assert_eq!(
            ClusterRole::from_json(r#"{"kind":"Role","metadata":{"name":"x"}}"#),
            Err(RoleError::WrongKind("Role".into()))
        );
        assert_eq!(
            ClusterRole::from_json(r#"{"kind":"ClusterRole","metadata":{}}"#),
            Err(RoleError::MissingName)
        );
        assert!(matches!(
            ClusterRole::from_json(r#"{"metadata":{"name":"x"},"rules":[{"verbs":"get"}]}"#),
            Err(RoleError::Json(_))
        ));
        assert!(matches!(
            ClusterRole::from_yaml("metadata: [unclosed"),
            Err(RoleError::Yaml(_))
        ));
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("*".to_owned()),
            Just("get".to_owned()),
            Just("list".to_owned()),
            Just("pods".to_owned()),
            Just("apps".to_owned()),
            Just("log".to_owned()),
            Just("*/log".to_owned()),
            Just("pods/log".to_owned()),
            Just("/healthz".to_owned()),
            Just("/health*".to_owned()),
            Just("/healthz/*".to_owned()),
            "[a-z/*]{0,6}",
        ]
    }

    fn policy_rule() -> impl Strategy<Value = PolicyRule> {
        let list = || proptest::collection::vec(word(), 0..3);
        (list(), list(), list(), list(), list()).prop_map(|(v, g, r, n, u)| PolicyRule {
            verbs: v,
            api_groups: g,
            resources: r,
            resource_names: n,
            non_resource_urls: u,
        })
    }

    fn attributes() -> impl Strategy<Value = Attributes> {
        let resource = (
            word(),
            word(),
            word(),
            proptest::option::of(word()),
            proptest::option::of(word()),
        )
            .prop_map(|(verb, api_group, resource, subresource, name)| {
                Attributes::Resource(ResourceAttributes {
                    verb,
                    api_group,
                    api_version: "v1".into(),
                    namespace: None,
                    resource,
                    subresource,
                    name,
                })
            });
        let url = (word(), word())
            .prop_map(|(verb, path)| Attributes::NonResource(NonResourceAttributes { verb, path }));
        prop_oneof![resource, url]
    }

    proptest! {
        /// The compiled role decides exactly as the reference `RuleAllows`.
        #[test]
        fn compiled_roles_match_the_reference(
            rules in proptest::collection::vec(policy_rule(), 0..4),
            attrs in attributes(),
        ) {
            let role = Role::new("r", rules.clone());
            let reference = rules.iter().any(|r| r.allows(&attrs));
            prop_assert_eq!(role.allows(&attrs), reference);
        }
    }
}
