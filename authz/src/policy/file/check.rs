//! Checking the located YAML tree against the policy format: every section, every rule, every
//! error reported with its place, and the [`Policy`] built from what is valid.

mod read;
mod requests;

use std::collections::HashMap;
use std::path::Path;

use serde_saphyr::Spanned;

use self::read::Fields;
use super::errors::{PolicyError, PolicyErrorKind, PolicyErrors, Position};
use super::secrets::{SecretSource, env_secret, file_secret};
use super::yaml::{Located, Node, at};
use crate::policy::{
    CONTROL_ROLES, Grant, Group, Policy, Provider, ProviderKind, Resource, Secret, Subject, User,
    validate_password_length, validate_role_name,
};

/// Checks the located tree `root` of `file`, resolving `file:` secrets against `base_dir`:
/// the policy, or every error found.
pub(super) fn check(
    file: &str,
    base_dir: &Path,
    secrets: &dyn SecretSource,
    root: &Located,
) -> Result<Policy, PolicyErrors> {
    let mut checker = Checker {
        file,
        base_dir,
        secrets,
        errors: Vec::new(),
    };
    let policy = checker.policy(root);
    checker.finish(policy)
}

const TOP_KEYS: &[&str] = &[
    "grants",
    "providers",
    "users",
    "groups",
    "requests",
    "onCall",
    "notify",
];
const GRANT_KEYS: &[&str] = &["user", "group", "role", "resource"];
const PROVIDER_KEYS: &[&str] = &["name", "url", "clientID", "clientSecret", "kind", "scopes"];
const USER_KEYS: &[&str] = &["name", "password", "accessKey"];
const GROUP_KEYS: &[&str] = &["name", "members"];

/// Why a password is refused; the number is
/// [`MAX_PASSWORD_BYTES`](crate::policy::MAX_PASSWORD_BYTES) (a test keeps them equal).
pub(super) const PASSWORD_TOO_LONG: &str = "is longer than 1024 bytes";

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Walks the located tree, building the policy and collecting every error.
struct Checker<'a> {
    file: &'a str,
    base_dir: &'a Path,
    secrets: &'a dyn SecretSource,
    errors: Vec<PolicyError>,
}

impl Checker<'_> {
    fn error(&mut self, at: Position, path: &str, kind: PolicyErrorKind) {
        self.errors.push(PolicyError {
            file: self.file.to_owned(),
            position: (at.line > 0).then_some(at),
            path: path.to_owned(),
            kind,
        });
    }

    fn finish(mut self, policy: Policy) -> Result<Policy, PolicyErrors> {
        if self.errors.is_empty() {
            Ok(policy)
        } else {
            // Stable: errors at the same place keep the order they were found in.
            self.errors.sort_by_key(|e| e.position);
            Err(PolicyErrors(self.errors))
        }
    }

    fn policy(&mut self, root: &Located) -> Policy {
        let mut policy = Policy::default();
        let fields = match &root.value {
            Node::Null => {
                // Reported at the start, even when comments put the parser's null further on.
                let start = Position { line: 1, column: 1 };
                self.error(start, "", PolicyErrorKind::Empty);
                return policy;
            }
            Node::Map(_) => match self.fields(root, "", TOP_KEYS) {
                Some(fields) => fields,
                None => return policy,
            },
            other => {
                let found = other.kind();
                self.error(at(root), "", PolicyErrorKind::NotAMapping { found });
                return policy;
            }
        };
        let grants = self.section(&fields, "grants");
        let providers = self.section(&fields, "providers");
        let users = self.section(&fields, "users");
        let groups = self.section(&fields, "groups");
        policy.grants = self.grants(grants);
        policy.providers = self.providers(providers);
        policy.users = self.users(users);
        policy.groups = self.groups(groups);
        let on_call = self.section(&fields, "onCall");
        policy.on_call = self.on_call(on_call);
        let requests = self.section(&fields, "requests");
        policy.requests = self.requests(requests, &policy.on_call);
        let notify = self.section(&fields, "notify");
        policy.notify = self.notify(notify);
        policy
    }

    /// A top-level list; absent or empty (`grants:`) is an empty list.
    fn section<'n>(&mut self, fields: &Fields<'n>, key: &str) -> &'n [Located] {
        match fields.get(key) {
            None
            | Some(Spanned {
                value: Node::Null, ..
            }) => &[],
            Some(node) => self.list(node, key).unwrap_or(&[]),
        }
    }
    fn grants(&mut self, items: &[Located]) -> Vec<Grant> {
        let mut grants = Vec::new();
        let mut seen: HashMap<Grant, (usize, Position)> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("grants[{i}]");
            let Some(grant) = self.grant(item, &path) else {
                continue;
            };
            if let Some(&(first, first_at)) = seen.get(&grant) {
                let kind = PolicyErrorKind::DuplicateGrant {
                    first_path: format!("grants[{first}]"),
                    first: first_at,
                };
                self.error(at(item), &path, kind);
                continue;
            }
            seen.insert(grant.clone(), (i, at(item)));
            grants.push(grant);
        }
        grants
    }

    /// The one of `user` and `group` that `fields` holds (a grant's subject, a request rule's
    /// asker or reviewers); neither or both is an error at the mapping.
    fn subject(&mut self, fields: &read::Fields<'_>, path: &str) -> Option<Subject> {
        match (fields.entry("user"), fields.entry("group")) {
            (Some((_, user)), None) => self
                .subject_name(user, &join(path, "user"))
                .map(Subject::User),
            (None, Some((_, group))) => self
                .subject_name(group, &join(path, "group"))
                .map(Subject::Group),
            (Some((user_at, _)), Some((group_at, _))) => {
                self.error(user_at.max(group_at), path, PolicyErrorKind::BothSubjects);
                None
            }
            (None, None) => {
                self.error(fields.at, path, PolicyErrorKind::NoSubject);
                None
            }
        }
    }

    fn grant(&mut self, item: &Located, path: &str) -> Option<Grant> {
        let fields = self.fields(item, path, GRANT_KEYS)?;
        let subject = self.subject(&fields, path);
        let role = self.required(&fields, path, "role").and_then(|node| {
            let role_path = join(path, "role");
            let role = self.string(node, &role_path)?;
            if let Err(e) = validate_role_name(role) {
                self.error(at(node), &role_path, PolicyErrorKind::Name(e));
                return None;
            }
            Some((role.to_owned(), at(node)))
        });
        let resource = self.required(&fields, path, "resource").and_then(|node| {
            let resource_path = join(path, "resource");
            let resource = self.string(node, &resource_path)?;
            match resource.parse::<Resource>() {
                Ok(resource) => Some(resource),
                Err(e) => {
                    self.error(at(node), &resource_path, PolicyErrorKind::Name(e));
                    None
                }
            }
        });
        let ((role, role_at), resource) = (role?, resource?);
        if resource.is_control() && !CONTROL_ROLES.contains(&role.as_str()) {
            let kind = PolicyErrorKind::ControlRole { role };
            self.error(role_at, &join(path, "role"), kind);
            return None;
        }
        Some(Grant {
            subject: subject?,
            role,
            resource,
            expires_at: None,
        })
    }

    fn providers(&mut self, items: &[Located]) -> Vec<Provider> {
        let mut providers = Vec::new();
        let mut seen: HashMap<String, Position> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("providers[{i}]");
            let Some(fields) = self.fields(item, &path, PROVIDER_KEYS) else {
                continue;
            };
            let name = self
                .token(&fields, &path, "name", "the provider name")
                .and_then(|name| {
                    let node = fields.get("name")?;
                    self.valid_name(node, &join(&path, "name"), name)
                });
            let unique = match (&name, fields.get("name")) {
                (Some(name), Some(node)) => {
                    self.first_of(&mut seen, "provider", name, node, &join(&path, "name"))
                }
                _ => true,
            };
            let url = self.token(&fields, &path, "url", "the URL");
            let client_id = self.token(&fields, &path, "clientID", "the client ID");
            let client_secret = self
                .required(&fields, &path, "clientSecret")
                .and_then(|node| self.secret(node, &join(&path, "clientSecret")));
            let kind = match fields.get("kind") {
                None => Some(ProviderKind::default()),
                Some(node) => {
                    let kind_path = join(&path, "kind");
                    self.string(node, &kind_path).and_then(|kind| {
                        match kind.parse::<ProviderKind>() {
                            Ok(kind) => Some(kind),
                            Err(message) => {
                                let kind = PolicyErrorKind::ProviderKind(message);
                                self.error(at(node), &kind_path, kind);
                                None
                            }
                        }
                    })
                }
            };
            let scopes = match fields.get("scopes") {
                None => Some(Vec::new()),
                Some(node) => self.scopes(node, &join(&path, "scopes")),
            };
            if let (Some(name), Some(url), Some(client_id), Some(client_secret), Some(kind)) =
                (name, url, client_id, client_secret, kind)
                && let Some(scopes) = scopes
                && unique
            {
                providers.push(Provider {
                    name,
                    url,
                    client_id,
                    client_secret,
                    kind,
                    scopes,
                });
            }
        }
        providers
    }

    fn scopes(&mut self, node: &Located, path: &str) -> Option<Vec<String>> {
        let items = self.list(node, path)?;
        let mut scopes = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            match self.string(item, &item_path) {
                Some(scope) if !scope.is_empty() && !scope.contains(char::is_whitespace) => {
                    scopes.push(scope.to_owned());
                }
                Some(_) => {
                    let kind = PolicyErrorKind::Invalid {
                        what: "a scope",
                        why: "must be non-empty and free of white space",
                    };
                    self.error(at(item), &item_path, kind);
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok.then_some(scopes)
    }

    fn users(&mut self, items: &[Located]) -> Vec<User> {
        let mut users = Vec::new();
        let mut seen: HashMap<String, Position> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("users[{i}]");
            let Some(fields) = self.fields(item, &path, USER_KEYS) else {
                continue;
            };
            let name = self
                .required(&fields, &path, "name")
                .and_then(|node| Some((self.subject_name(node, &join(&path, "name"))?, node)));
            let unique = match &name {
                Some((name, node)) => {
                    self.first_of(&mut seen, "user", name, node, &join(&path, "name"))
                }
                None => true,
            };
            let password = fields
                .get("password")
                .map(|node| self.password(node, &join(&path, "password")));
            let access_key = fields.get("accessKey").map(|node| {
                let key_path = join(&path, "accessKey");
                let key = self.secret(node, &key_path)?;
                // Checked without showing the value: `<id>.<secret>`, both parts present.
                if key
                    .expose()
                    .split_once('.')
                    .is_some_and(|(id, secret)| !id.is_empty() && !secret.is_empty())
                {
                    Some(key)
                } else {
                    let kind = PolicyErrorKind::Invalid {
                        what: "the access key",
                        why: "is not of the form `<id>.<secret>`",
                    };
                    self.error(at(node), &key_path, kind);
                    None
                }
            });
            // `None` is absent; `Some(None)` is present but wrong (already reported).
            if let (Some((name, _)), Some(password), Some(access_key)) = (
                name,
                password.map_or(Some(None), |p| p.map(Some)),
                access_key.map_or(Some(None), |k| k.map(Some)),
            ) && unique
            {
                users.push(User {
                    name,
                    password,
                    access_key,
                });
            }
        }
        users
    }

    fn groups(&mut self, items: &[Located]) -> Vec<Group> {
        let mut groups = Vec::new();
        let mut seen: HashMap<String, Position> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("groups[{i}]");
            let Some(fields) = self.fields(item, &path, GROUP_KEYS) else {
                continue;
            };
            let name = self
                .required(&fields, &path, "name")
                .and_then(|node| Some((self.subject_name(node, &join(&path, "name"))?, node)));
            let unique = match &name {
                Some((name, node)) => {
                    self.first_of(&mut seen, "group", name, node, &join(&path, "name"))
                }
                None => true,
            };
            let members = match fields.get("members") {
                None => Some(Vec::new()),
                Some(node) => self.members(node, &join(&path, "members")),
            };
            if let (Some((name, _)), Some(members)) = (name, members)
                && unique
            {
                groups.push(Group { name, members });
            }
        }
        groups
    }

    fn members(&mut self, node: &Located, path: &str) -> Option<Vec<String>> {
        let items = self.list(node, path)?;
        let mut members = Vec::new();
        let mut seen: HashMap<String, Position> = HashMap::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let Some(member) = self.subject_name(item, &item_path) else {
                ok = false;
                continue;
            };
            if self.first_of(&mut seen, "member", &member, item, &item_path) {
                members.push(member);
            } else {
                ok = false;
            }
        }
        ok.then_some(members)
    }

    /// A password: a secret of at most
    /// [`MAX_PASSWORD_BYTES`](crate::policy::MAX_PASSWORD_BYTES) bytes, so that nothing hashes a
    /// longer one. The error gives the length, never the value.
    fn password(&mut self, node: &Located, path: &str) -> Option<Secret> {
        let password = self.secret(node, path)?;
        if validate_password_length(password.expose()).is_err() {
            let kind = PolicyErrorKind::Invalid {
                what: "the password",
                why: PASSWORD_TOO_LONG,
            };
            self.error(at(node), path, kind);
            return None;
        }
        Some(password)
    }

    /// Resolves a secret: `env:NAME`, `file:PATH` or a literal. Errors name the variable or
    /// path, never the value.
    fn secret(&mut self, node: &Located, path: &str) -> Option<Secret> {
        let text = self.string(node, path)?;
        let result = if let Some(name) = text.strip_prefix("env:") {
            env_secret(self.secrets, name)
        } else if let Some(file) = text.strip_prefix("file:") {
            file_secret(self.secrets, self.base_dir, file)
        } else {
            tracing::warn!(
                file = self.file,
                path,
                "a secret is written literally in the policy file; prefer env: or file:"
            );
            if text.is_empty() {
                Err(PolicyErrorKind::EmptySecret { from: None })
            } else {
                Ok(Secret::new(text))
            }
        };
        match result {
            Ok(secret) => Some(secret),
            Err(kind) => {
                self.error(at(node), path, kind);
                None
            }
        }
    }
}
