//! The policy file (access as code): parsing and strict, located validation.
//!
//! The format is Infra's documented one:
//!
//! ```yaml
//! grants:
//!   - group: Engineering
//!     role: admin
//!     resource: development
//!   - user: carl@example.com
//!     role: edit
//!     resource: production.web
//! providers:
//!   - name: okta
//!     url: acmecorp.okta.com
//!     clientID: 0oapn0qwiQPiMIyR35d6
//!     clientSecret: env:OKTA_CLIENT_SECRET
//!     kind: okta          # optional: oidc (default), okta, azure, google
//!     scopes: [groups]    # optional
//! users:
//!   - name: admin@example.com
//!     password: file:/var/run/secrets/infra/admin-password
//!   - name: ci-bot
//!     accessKey: env:CI_ACCESS_KEY
//! groups:
//!   - name: Engineering
//!     members: [carl@example.com, suzie@example.com]
//! ```
//!
//! # Entry points
//!
//! - [`load`] reads a file (at most [`MAX_FILE_BYTES`]) and parses it; `file:` secrets are
//!   relative to the file's directory.
//! - [`parse`] parses text already in memory.
//! - [`summary`] describes a valid policy in one line, for `infra-proxy validate`.
//!
//! Secret values (`clientSecret`, `password`, `accessKey`) are `env:NAME`, `file:PATH` (the
//! file's content with one trailing newline removed) or a literal. They are resolved at load
//! through a [`SecretSource`] ([`EnvSecrets`] in production, a fake in tests) and held in
//! [`Secret`](super::Secret), whose `Debug` redacts. No error message ever holds a secret
//! value: errors about a secret name the variable or the path, and type errors never echo the
//! value.
//!
//! # Errors
//!
//! Validation is strict and reports every problem of a file at once ([`PolicyErrors`]), each
//! with `file:line:column`, the key path and a message:
//!
//! ```text
//! policy.yaml:7:15: grants[1].resource: resource "Prod" is not `<destination>` or `<destination>.<namespace>`: destination "Prod" may contain only lower-case letters, digits and `-`
//! ```
//!
//! Only a file that is not YAML at all (a syntax error, or one of the limits below) stops at its
//! first error, since nothing after it can be trusted.
//!
//! Decisions worth knowing:
//!
//! - A grant that repeats another (same subject, role and resource) is an **error**, not a
//!   warning: access is unchanged by it, but whoever later deletes one copy to revoke access
//!   would find the other still in force.
//! - A name listed twice in a group's `members` is an error for the same reason.
//! - A top-level section that is present but empty (`grants:` with every entry commented out)
//!   is an empty list, not a type error. Everywhere else, a missing value is a type error.
//! - Only YAML 1.2 booleans (`true`/`false`) are booleans, so a group called `no` stays a
//!   string. A number or boolean where a string is expected is an error with a hint to quote
//!   it (never silently converted).
//! - Unknown tags (`!secret`) are errors; anchors, aliases and merge keys (`<<`) work.
//! - A literal secret is accepted, with a `tracing` warning (which never shows the value).
//!
//! # Limits
//!
//! Hostile input ends in an error in bounded time and memory: the file may be at most
//! [`MAX_FILE_BYTES`] (checked before parsing), collections may nest at most [`MAX_DEPTH`]
//! deep, and serde-saphyr's budget caps the nodes, aliases and alias expansion (alias bombs).

mod check;
mod errors;
mod secrets;
mod yaml;

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::Policy;

pub use errors::{PolicyError, PolicyErrorKind, PolicyErrors, Position};
pub use secrets::{EnvSecrets, SecretSource};

/// The largest policy file accepted, in bytes (4 MiB). Checked before parsing.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// The largest secret file (`file:`) that [`EnvSecrets`] reads, in bytes (64 KiB).
pub const MAX_SECRET_FILE_BYTES: usize = 64 * 1024;

/// The deepest nesting of YAML collections accepted. A policy needs four levels.
pub const MAX_DEPTH: usize = 32;

/// The most YAML nodes (scalars, lists, mappings) a policy file may hold, aliases expanded.
pub const MAX_NODES: usize = 200_000;

/// The most anchors (`&name`), and the most aliases (`*name`), a policy file may use.
pub const MAX_ALIASES: usize = 500;

/// The most YAML events (a scalar is one, a list or mapping two plus its contents) that
/// aliases may expand to in total: what stops an alias bomb. Generous for sharing a few member
/// lists; an anchored value expanded thousands of times is not a policy a person wrote.
pub const MAX_ALIAS_EXPANSION: usize = 5_000;

/// Reads and parses the policy file at `path`. Relative `file:` secrets are relative to the
/// file's directory. The file is read only up to [`MAX_FILE_BYTES`].
pub fn load(path: &Path, secrets: &dyn SecretSource) -> Result<Policy, PolicyErrors> {
    let file_name = path.display().to_string();
    let whole_file = |kind| {
        PolicyErrors::one(PolicyError {
            file: file_name.clone(),
            position: None,
            path: String::new(),
            kind,
        })
    };
    let bytes = File::open(path)
        .and_then(|file| read_limited(file, MAX_FILE_BYTES))
        .map_err(|e| {
            whole_file(PolicyErrorKind::Read {
                reason: e.to_string(),
            })
        })?
        .ok_or_else(|| {
            whole_file(PolicyErrorKind::TooLarge {
                limit: MAX_FILE_BYTES,
            })
        })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    parse_bytes(&file_name, &bytes, base_dir, secrets)
}

/// Parses policy bytes: checks they are UTF-8 (locating the first bad byte) and parses them.
fn parse_bytes(
    file_name: &str,
    bytes: &[u8],
    base_dir: &Path,
    secrets: &dyn SecretSource,
) -> Result<Policy, PolicyErrors> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(file_name, text, base_dir, secrets),
        Err(e) => {
            // The bytes before `valid_up_to` are UTF-8, by the contract of `Utf8Error`.
            let valid = bytes
                .get(..e.valid_up_to())
                .and_then(|valid| std::str::from_utf8(valid).ok())
                .unwrap_or_default();
            let line = valid.rsplit('\n').next().unwrap_or_default();
            let position = Position {
                line: count(valid.matches('\n').count()) + 1,
                column: count(line.chars().count()) + 1,
            };
            Err(PolicyErrors::one(PolicyError {
                file: file_name.to_owned(),
                position: Some(position),
                path: String::new(),
                kind: PolicyErrorKind::NotUtf8,
            }))
        }
    }
}

/// Parses and validates policy text. `file_name` names the file in errors; relative `file:`
/// secrets are resolved against `base_dir`.
pub fn parse(
    file_name: &str,
    text: &str,
    base_dir: &Path,
    secrets: &dyn SecretSource,
) -> Result<Policy, PolicyErrors> {
    if text.len() > MAX_FILE_BYTES {
        return Err(PolicyErrors::one(PolicyError {
            file: file_name.to_owned(),
            position: None,
            path: String::new(),
            kind: PolicyErrorKind::TooLarge {
                limit: MAX_FILE_BYTES,
            },
        }));
    }
    let root: yaml::Located = serde_saphyr::from_str_with_options(text, yaml::yaml_options())
        .map_err(|e| PolicyErrors::one(yaml::yaml_error(file_name, &e)))?;
    check::check(file_name, base_dir, secrets, &root)
}

/// One line describing a valid policy: `policy.yaml: 2 grants, 1 provider, 1 user, 0 groups`.
pub fn summary(file_name: &str, policy: &Policy) -> String {
    fn counted(n: usize, noun: &str) -> String {
        if n == 1 {
            format!("1 {noun}")
        } else {
            format!("{n} {noun}s")
        }
    }
    format!(
        "{file_name}: {}, {}, {}, {}",
        counted(policy.grants.len(), "grant"),
        counted(policy.providers.len(), "provider"),
        counted(policy.users.len(), "user"),
        counted(policy.groups.len(), "group"),
    )
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Reads at most `limit` bytes; `None` when there is more.
fn read_limited(reader: impl Read, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut buf)?;
    Ok((buf.len() <= limit).then_some(buf))
}

#[cfg(test)]
mod tests {
    use std::env::VarError;

    use super::*;
    use crate::policy::{
        Grant, Group, MAX_PASSWORD_BYTES, Provider, ProviderKind, Resource, Secret, Subject, User,
    };

    /// Secrets from fixed tables, so tests never touch the real environment or files.
    struct FakeSecrets {
        env: &'static [(&'static str, &'static str)],
        files: &'static [(&'static str, &'static str)],
    }

    impl SecretSource for FakeSecrets {
        fn env(&self, name: &str) -> Result<String, VarError> {
            self.env
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
                .ok_or(VarError::NotPresent)
        }

        fn read_file(&self, path: &Path) -> io::Result<String> {
            self.files
                .iter()
                .find(|(p, _)| Path::new(p) == path)
                .map(|(_, v)| (*v).to_owned())
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not found"))
        }
    }

    const SECRETS: FakeSecrets = FakeSecrets {
        env: &[
            ("OKTA_CLIENT_SECRET", "okta-env-secret-value"),
            ("INFRA_ADMIN_PASSWORD", "admin-env-password-value"),
            ("CI_ACCESS_KEY", "ci0000.access-key-secret-value"),
            ("EMPTY", ""),
            ("PAGERDUTY_TOKEN", "pd-token-value"),
            ("HOOK_SECRET", "hook-secret-value"),
        ],
        files: &[
            (
                "/var/run/secrets/infra/admin-password",
                "admin-file-password-value\n",
            ),
            ("/etc/infra/secrets/two-newlines", "pw\n\n"),
            ("/etc/infra/secrets/crlf", "pw\r\n"),
            ("/run/empty", "\n"),
        ],
    };

    fn yaml(lines: &[&str]) -> String {
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }

    fn parse_text(text: &str) -> Result<Policy, PolicyErrors> {
        parse("policy.yaml", text, Path::new("/etc/infra"), &SECRETS)
    }

    /// Parses `lines`, expecting errors, and checks their exact rendering, one per line.
    #[track_caller]
    fn assert_errors(lines: &[&str], want: &[&str]) {
        let errors = parse_text(&yaml(lines)).expect_err("the policy should be refused");
        assert_eq!(errors.to_string(), want.join("\n"));
        assert_eq!(errors.len(), want.len());
    }

    fn grant(subject: Subject, role: &str, resource: Resource) -> Grant {
        Grant {
            subject,
            role: role.to_owned(),
            resource,
            expires_at: None,
        }
    }

    const DESIGN_EXAMPLE: &str = "\
grants:
  - group: Engineering
    role: admin
    resource: development
  - user: carl@example.com
    role: edit
    resource: production.web
providers:
  - name: okta
    url: acmecorp.okta.com
    clientID: 0oapn0qwiQPiMIyR35d6
    clientSecret: env:OKTA_CLIENT_SECRET
users:
  - name: admin@example.com
    password: file:/var/run/secrets/infra/admin-password
";

    const REQUESTS_EXAMPLE: &str = "\
requests:
  - name: eng-prod
    group: Engineering
    roles: [edit, admin]
    resources: [production, production.*]
    maxDuration: 4h
    reviewers:
      group: SRE
    approvals: 2
    autoApprove:
      onCall: pagerduty-primary
  - user: carl@example.com
    roles: [view]
    resources: [staging.web]
    maxDuration: 30m
    reviewers: {user: admin@example.com}
onCall:
  - name: pagerduty-primary
    kind: pagerduty
    scheduleID: P123ABC
    tokenFrom: env:PAGERDUTY_TOKEN
notify:
  - name: hook
    kind: webhook
    url: https://hooks.example.com/infra
    secret: env:HOOK_SECRET
";

    #[test]
    fn request_rules_validate() {
        use crate::policy::requests::{NotifyKind, OnCallKind};
        let policy = parse_text(REQUESTS_EXAMPLE).expect("valid");
        assert_eq!(policy.requests.len(), 2);
        let rule = &policy.requests[0];
        assert_eq!(rule.name, "eng-prod");
        assert_eq!(rule.who, Subject::Group("Engineering".into()));
        assert_eq!(rule.roles, ["edit", "admin"]);
        assert_eq!(rule.max_duration, std::time::Duration::from_hours(4));
        assert_eq!(rule.reviewers, Subject::Group("SRE".into()));
        assert_eq!(rule.approvals, 2);
        assert_eq!(rule.on_call.as_deref(), Some("pagerduty-primary"));
        let second = &policy.requests[1];
        assert_eq!(second.name, "requests[1]");
        assert_eq!(second.approvals, 1);
        assert_eq!(second.reviewers, Subject::User("admin@example.com".into()));
        let source = &policy.on_call[0];
        assert_eq!(source.url, "https://api.pagerduty.com");
        assert_eq!(source.token.expose(), "pd-token-value");
        assert_eq!(
            source.kind,
            OnCallKind::PagerDuty {
                schedule_id: Some("P123ABC".into()),
                escalation_policy_id: None
            }
        );
        assert_eq!(policy.notify[0].kind, NotifyKind::Webhook);
        assert_eq!(
            policy.notify[0].secret.as_ref().map(Secret::expose),
            Some("hook-secret-value")
        );
    }

    #[test]
    fn bad_request_rules_are_located() {
        assert_errors(
            &[
                "requests:",
                "  - group: Engineering",
                "    roles: [edit]",
                "    resources: [infra, prod.*]",
                "    maxDuration: 90d",
                "    reviewers: {group: SRE}",
                "    approvals: 0",
                "    autoApprove: {onCall: nobody}",
                "notify:",
                "  - name: slack",
                "    kind: slack",
                "    url: http://hooks.example.com/x",
            ],
            &[
                "policy.yaml:4:17: requests[0].resources[0]: resource \"infra\" is not `<destination>` or `<destination>.<namespace>`: `infra` (the control API) cannot be asked for; grant it instead",
                "policy.yaml:5:18: requests[0].maxDuration: \"90d\" is longer than the 30d a request may last",
                "policy.yaml:7:16: requests[0].approvals: approvals must be a number from 1 to 10",
                "policy.yaml:8:27: requests[0].autoApprove.onCall: no on-call source is named \"nobody\" (declared under onCall: none)",
                "policy.yaml:12:10: notify[0].url: the URL must start with https://",
            ],
        );
    }

    #[test]
    fn design_example_validates() {
        let policy = parse_text(DESIGN_EXAMPLE).expect("valid");
        assert_eq!(
            policy,
            Policy {
                grants: vec![
                    grant(
                        Subject::Group("Engineering".into()),
                        "admin",
                        Resource::destination("development"),
                    ),
                    grant(
                        Subject::User("carl@example.com".into()),
                        "edit",
                        Resource::namespace("production", "web"),
                    ),
                ],
                providers: vec![Provider {
                    name: "okta".into(),
                    url: "acmecorp.okta.com".into(),
                    client_id: "0oapn0qwiQPiMIyR35d6".into(),
                    client_secret: Secret::new("okta-env-secret-value"),
                    kind: ProviderKind::Oidc,
                    scopes: vec![],
                }],
                users: vec![User {
                    name: "admin@example.com".into(),
                    password: Some(Secret::new("admin-file-password-value")),
                    access_key: None,
                }],
                groups: vec![],
                ..Policy::default()
            }
        );
        assert_eq!(
            summary("policy.yaml", &policy),
            "policy.yaml: 2 grants, 1 provider, 1 user, 0 groups"
        );
    }

    #[test]
    fn every_documented_key_validates() {
        let text = yaml(&[
            "grants:",
            "  - user: admin@example.com",
            "    role: view",
            "    resource: infra",
            "providers:",
            "  - name: okta",
            "    url: acmecorp.okta.com",
            "    clientID: 0oapn0qwiQPiMIyR35d6",
            "    clientSecret: env:OKTA_CLIENT_SECRET",
            "    kind: okta",
            "    scopes: [groups, offline_access]",
            "users:",
            "  - name: ci-bot",
            "    accessKey: env:CI_ACCESS_KEY",
            "  - name: suzie@example.com",
            "    password: file:secrets/two-newlines",
            "  - name: carl@example.com",
            "    password: file:secrets/crlf",
            "groups:",
            "  - name: Engineering",
            "    members: [carl@example.com, suzie@example.com]",
            "  - name: Empty",
        ]);
        let policy = parse_text(&text).expect("valid");
        assert_eq!(
            policy.grants,
            [grant(
                Subject::User("admin@example.com".into()),
                "view",
                Resource::destination("infra"),
            )]
        );
        assert_eq!(policy.providers[0].kind, ProviderKind::Okta);
        assert_eq!(policy.providers[0].scopes, ["groups", "offline_access"]);
        let users = &policy.users;
        assert_eq!(users[0].name, "ci-bot");
        assert_eq!(
            users[0].access_key.as_ref().map(Secret::expose),
            Some("ci0000.access-key-secret-value")
        );
        assert_eq!(users[0].password, None);
        // A `file:` secret loses exactly one trailing newline (`\n` or `\r\n`).
        assert_eq!(users[1].password.as_ref().map(Secret::expose), Some("pw\n"));
        assert_eq!(users[2].password.as_ref().map(Secret::expose), Some("pw"));
        assert_eq!(
            policy.groups,
            [
                Group {
                    name: "Engineering".into(),
                    members: vec!["carl@example.com".into(), "suzie@example.com".into()],
                },
                Group {
                    name: "Empty".into(),
                    members: vec![],
                },
            ]
        );
        assert_eq!(
            summary("policy.yaml", &policy),
            "policy.yaml: 1 grant, 1 provider, 3 users, 2 groups"
        );
    }

    #[test]
    fn the_example_file_validates() {
        let secrets = FakeSecrets {
            env: &[
                ("OKTA_CLIENT_SECRET", "okta"),
                ("INFRA_ADMIN_PASSWORD", "admin"),
            ],
            files: &[],
        };
        let text = include_str!("../../../examples/policy.yaml");
        let policy = parse(
            "examples/policy.yaml",
            text,
            Path::new("examples"),
            &secrets,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            summary("examples/policy.yaml", &policy),
            "examples/policy.yaml: 3 grants, 1 provider, 1 user, 1 group"
        );
    }

    #[test]
    fn empty_sections_are_empty_lists() {
        let policy = parse_text("grants:\n# - user: carl@example.com\nusers: []\n").expect("ok");
        assert_eq!(policy, Policy::default());
        assert_eq!(parse_text("{}\n"), Ok(Policy::default()));
    }

    #[test]
    fn unknown_keys_are_refused_with_a_suggestion() {
        assert_errors(
            &[
                "grants:",
                "  - user: carl@example.com",
                "    rol: edit",
                "    resource: production",
                "grant: []",
                "providers:",
                "  - name: okta",
                "    url: acmecorp.okta.com",
                "    clientId: x",
                "    clientSecret: env:OKTA_CLIENT_SECRET",
                "    colour: blue",
            ],
            &[
                "policy.yaml:2:5: grants[0]: missing key \"role\"",
                "policy.yaml:3:5: grants[0]: unknown key \"rol\" (did you mean \"role\"?); \
                 expected one of: user, group, role, resource",
                "policy.yaml:5:1: unknown key \"grant\" (did you mean \"grants\"?); \
                 expected one of: grants, providers, users, groups, requests, onCall, notify",
                "policy.yaml:7:5: providers[0]: missing key \"clientID\"",
                "policy.yaml:9:5: providers[0]: unknown key \"clientId\" (did you mean \
                 \"clientID\"?); expected one of: name, url, clientID, clientSecret, kind, scopes",
                "policy.yaml:11:5: providers[0]: unknown key \"colour\"; \
                 expected one of: name, url, clientID, clientSecret, kind, scopes",
            ],
        );
    }

    #[test]
    fn wrong_types_are_refused() {
        assert_errors(
            &[
                "grants:",
                "  - user: carl@example.com",
                "    role: 123",
                "    resource: [production]",
                "providers: {}",
                "users:",
                "  - name: admin@example.com",
                "    password:",
                "groups:",
                "  - name: Engineering",
                "    members: carl@example.com",
                "  - Engineering",
                "  - name: no",
                "    members: [true]",
            ],
            &[
                "policy.yaml:3:11: grants[0].role: expected a string, found an integer; \
                 put it in quotes to use it as a string",
                "policy.yaml:4:15: grants[0].resource: expected a string, found a list",
                "policy.yaml:5:12: providers: expected a list, found a mapping",
                "policy.yaml:8:13: users[0].password: expected a string, found no value",
                "policy.yaml:11:14: groups[0].members: expected a list, found a string",
                "policy.yaml:12:5: groups[1]: expected a mapping, found a string",
                "policy.yaml:14:15: groups[2].members[0]: expected a string, found a boolean; \
                 put it in quotes to use it as a string",
            ],
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        assert_errors(
            &[
                "grants:",
                "  - user: carl@example.com",
                "    role: view",
                "    resource: production",
                "    role: edit",
                "grants: []",
            ],
            &[
                "policy.yaml:5:5: grants[0]: duplicate key \"role\" (first at line 3, column 5)",
                "policy.yaml:6:1: duplicate key \"grants\" (first at line 1, column 1)",
            ],
        );
    }

    #[test]
    fn a_grant_has_exactly_one_subject() {
        assert_errors(
            &[
                "grants:",
                "  - role: view",
                "    resource: production",
                "  - user: carl@example.com",
                "    group: Engineering",
                "    role: view",
                "    resource: production",
            ],
            &[
                "policy.yaml:2:5: grants[0]: a grant needs a `user` or a `group`",
                "policy.yaml:5:5: grants[1]: a grant has a `user` or a `group`, not both",
            ],
        );
    }

    #[test]
    fn bad_roles_are_refused() {
        assert_errors(
            &[
                "grants:",
                "  - user: carl@example.com",
                "    role: \"\"",
                "    resource: production",
                "  - user: carl@example.com",
                "    role: cluster admin",
                "    resource: production",
                "  - user: carl@example.com",
                "    resource: production",
                "  - user: carl@example.com",
                "    role: edit",
                "    resource: infra",
            ],
            &[
                "policy.yaml:3:11: grants[0].role: role \"\" is not a valid role name: it is empty",
                "policy.yaml:6:11: grants[1].role: role \"cluster admin\" is not a valid role \
                 name: it may not contain white space or control characters",
                "policy.yaml:8:5: grants[2]: missing key \"role\"",
                "policy.yaml:11:11: grants[3].role: role \"edit\" means nothing on `infra`, \
                 the control API; use one of: admin, view, connector, auditor",
            ],
        );
    }

    #[test]
    fn bad_resources_are_refused() {
        assert_errors(
            &[
                "grants:",
                "  - user: carl@example.com",
                "    role: view",
                "    resource: Prod",
                "  - user: carl@example.com",
                "    role: view",
                "    resource: prod.web.x",
                "  - user: carl@example.com",
                "    role: view",
                "    resource: infra.web",
                "  - user: carl@example.com",
                "    role: view",
            ],
            &[
                "policy.yaml:4:15: grants[0].resource: resource \"Prod\" is not `<destination>` \
                 or `<destination>.<namespace>`: destination \"Prod\" may contain only \
                 lower-case letters, digits and `-`",
                "policy.yaml:7:15: grants[1].resource: resource \"prod.web.x\" is not \
                 `<destination>` or `<destination>.<namespace>`: namespace \"web.x\" may contain \
                 only lower-case letters, digits and `-`",
                "policy.yaml:10:15: grants[2].resource: resource \"infra.web\" is not \
                 `<destination>` or `<destination>.<namespace>`: `infra` is the control API and \
                 has no namespaces",
                "policy.yaml:11:5: grants[3]: missing key \"resource\"",
            ],
        );
    }

    #[test]
    fn system_names_are_refused_everywhere() {
        assert_errors(
            &[
                "grants:",
                "  - user: system:admin",
                "    role: view",
                "    resource: production",
                "  - group: system:masters",
                "    role: view",
                "    resource: production",
                "users:",
                "  - name: system:anonymous",
                "groups:",
                "  - name: system:authenticated",
                "    members: [carl@example.com, system:kube-proxy]",
            ],
            &[
                "policy.yaml:2:11: grants[0].user: \"system:admin\" starts with `system:`, \
                 which is reserved for Kubernetes",
                "policy.yaml:5:12: grants[1].group: \"system:masters\" starts with `system:`, \
                 which is reserved for Kubernetes",
                "policy.yaml:9:11: users[0].name: \"system:anonymous\" starts with `system:`, \
                 which is reserved for Kubernetes",
                "policy.yaml:11:11: groups[0].name: \"system:authenticated\" starts with \
                 `system:`, which is reserved for Kubernetes",
                "policy.yaml:12:33: groups[0].members[1]: \"system:kube-proxy\" starts with \
                 `system:`, which is reserved for Kubernetes",
            ],
        );
    }

    #[test]
    fn names_that_break_the_name_rule_are_refused_where_they_are() {
        let long = format!("{}@example.com", "x".repeat(300));
        assert_errors(
            &[
                "grants:",
                "  - user: \"moc.elpmaxe@\\u202Eadmin\"",
                "    role: view",
                "    resource: production",
                "users:",
                &format!("  - name: {long}"),
                "  - name: \" carl@example.com\"",
                "  - name: \"Zoe\\u0301\"",
                "groups:",
                "  - name: \"Eng\\u200Bineering\"",
                "    members: [\"suzie@example.com\\u2066\"]",
                "providers:",
                "  - name: \"ok\\u00ADta\"",
                "    url: acmecorp.okta.com",
                "    clientID: a",
                "    clientSecret: env:OKTA_CLIENT_SECRET",
            ],
            &[
                "policy.yaml:2:11: grants[0].user: \"moc.elpmaxe@\\u{202e}admin\" contains \
                 U+202E, an invisible format character (such as a bidirectional control or a \
                 zero-width space)",
                &format!(
                    "policy.yaml:6:11: users[0].name: \"{}...\" is 312 bytes, more than the 256 \
                     allowed",
                    "x".repeat(64)
                ),
                "policy.yaml:7:11: users[1].name: \" carl@example.com\" starts or ends with \
                 white space",
                "policy.yaml:8:11: users[2].name: \"Zoe\\u{301}\" is not in Unicode \
                 normalization form C (NFC)",
                "policy.yaml:10:11: groups[0].name: \"Eng\\u{200b}ineering\" contains U+200B, \
                 an invisible format character (such as a bidirectional control or a zero-width \
                 space)",
                "policy.yaml:11:15: groups[0].members[0]: \"suzie@example.com\\u{2066}\" contains \
                 U+2066, an invisible format character (such as a bidirectional control or a \
                 zero-width space)",
                "policy.yaml:13:11: providers[0].name: \"ok\\u{ad}ta\" contains U+00AD, an \
                 invisible format character (such as a bidirectional control or a zero-width \
                 space)",
            ],
        );
    }

    #[test]
    fn a_password_over_1024_bytes_is_refused_without_showing_it() {
        assert!(check::PASSWORD_TOO_LONG.contains(&MAX_PASSWORD_BYTES.to_string()));
        let long = "p".repeat(MAX_PASSWORD_BYTES + 1);
        assert_errors(
            &[
                "users:",
                &format!("  - name: carl@example.com\n    password: {long}"),
                &format!("  - name: suzie@example.com\n    password: {}", &long[1..]),
            ],
            &["policy.yaml:3:15: users[0].password: the password is longer than 1024 bytes"],
        );
    }

    #[test]
    fn duplicates_are_refused() {
        assert_errors(
            &[
                "grants:",
                "  - user: carl@example.com",
                "    role: view",
                "    resource: production",
                "  - user: carl@example.com",
                "    role: view",
                "    resource: production",
                "providers:",
                "  - name: okta",
                "    url: acmecorp.okta.com",
                "    clientID: a",
                "    clientSecret: env:OKTA_CLIENT_SECRET",
                "  - name: okta",
                "    url: \"\"",
                "    clientID: b",
                "    clientSecret: env:OKTA_CLIENT_SECRET",
                "users:",
                "  - name: admin@example.com",
                "  - name: admin@example.com",
                "groups:",
                "  - name: Engineering",
                "    members: [carl@example.com, carl@example.com]",
                "  - name: Engineering",
            ],
            &[
                "policy.yaml:5:5: grants[1]: this grant repeats grants[0] (at line 2, column 5)",
                "policy.yaml:13:11: providers[1].name: duplicate provider \"okta\" \
                 (first at line 9, column 11)",
                "policy.yaml:14:10: providers[1].url: the URL is empty",
                "policy.yaml:19:11: users[1].name: duplicate user \"admin@example.com\" \
                 (first at line 18, column 11)",
                "policy.yaml:22:33: groups[0].members[1]: duplicate member \"carl@example.com\" \
                 (first at line 22, column 15)",
                "policy.yaml:23:11: groups[1].name: duplicate group \"Engineering\" \
                 (first at line 21, column 11)",
            ],
        );
    }

    #[test]
    fn unresolvable_secrets_name_the_reference() {
        assert_errors(
            &[
                "providers:",
                "  - name: okta",
                "    url: acmecorp.okta.com",
                "    clientID: 0oapn0qwiQPiMIyR35d6",
                "    clientSecret: env:MISSING_SECRET",
                "    kind: keycloak",
                "users:",
                "  - name: a@example.com",
                "    password: file:secrets/missing",
                "  - name: b@example.com",
                "    password: \"env:\"",
                "  - name: c@example.com",
                "    accessKey: env:EMPTY",
                "  - name: d@example.com",
                "    accessKey: not-a-key",
                "  - name: e@example.com",
                "    password: file:/run/empty",
            ],
            &[
                "policy.yaml:5:19: providers[0].clientSecret: environment variable \
                 \"MISSING_SECRET\" is not set",
                "policy.yaml:6:11: providers[0].kind: unknown provider kind \"keycloak\" \
                 (expected one of oidc, okta, azure, google)",
                "policy.yaml:9:15: users[0].password: cannot read secret file \
                 /etc/infra/secrets/missing: not found",
                "policy.yaml:11:15: users[1].password: \"\" is not a valid environment \
                 variable name",
                "policy.yaml:13:16: users[2].accessKey: the secret is empty \
                 (environment variable \"EMPTY\")",
                "policy.yaml:15:16: users[3].accessKey: the access key is not of the form \
                 `<id>.<secret>`",
                "policy.yaml:17:15: users[4].password: the secret is empty (file /run/empty)",
            ],
        );
    }

    #[test]
    fn empty_files_and_other_top_levels_are_refused() {
        let cases = [
            (
                "",
                "policy.yaml:1:1: the file is empty; expected a mapping with grants, providers, \
                 users or groups",
            ),
            (
                "# nothing but a comment\n",
                "policy.yaml:1:1: the file is empty; expected a mapping with grants, providers, \
                 users or groups",
            ),
            (
                "- user: carl@example.com\n",
                "policy.yaml:1:1: the top level must be a mapping with grants, providers, users \
                 or groups, found a list",
            ),
            (
                "grants\n",
                "policy.yaml:1:1: the top level must be a mapping with grants, providers, users \
                 or groups, found a string",
            ),
        ];
        for (text, want) in cases {
            let errors = parse_text(text).expect_err(text);
            assert_eq!(errors.to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn yaml_errors_are_located() {
        let cases = [
            (
                "grants:\n  - user: carl\n   role: view\n",
                "policy.yaml:3:4: while parsing a block collection, did not find expected '-' \
                 indicator",
            ),
            (
                "grants: []\n---\nusers: []\n",
                "policy.yaml:2:1: the file holds more than one YAML document; a policy is a \
                 single document",
            ),
            (
                "users:\n  - name: !secret admin\n",
                "policy.yaml:2:19: unsupported tag `!secret`",
            ),
            (
                "users:\n  - name: *admin\n",
                "policy.yaml:2:11: alias references unknown anchor",
            ),
        ];
        for (text, want) in cases {
            let errors = parse_text(text).expect_err(text);
            assert_eq!(errors.to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn anchors_and_aliases_work() {
        let text = yaml(&[
            "groups:",
            "  - name: Engineering",
            "    members: &engineers [carl@example.com, suzie@example.com]",
            "  - name: On-call",
            "    members: *engineers",
        ]);
        let policy = parse_text(&text).expect("valid");
        assert_eq!(policy.groups[0].members, policy.groups[1].members);

        let text = yaml(&[
            "grants:",
            "  - &base {user: carl@example.com, role: view, resource: production}",
            "  - <<: *base",
            "    resource: staging",
        ]);
        let policy = parse_text(&text).expect("valid");
        assert_eq!(
            policy.grants,
            [
                grant(
                    Subject::User("carl@example.com".into()),
                    "view",
                    Resource::destination("production"),
                ),
                grant(
                    Subject::User("carl@example.com".into()),
                    "view",
                    Resource::destination("staging"),
                ),
            ]
        );
    }

    #[test]
    fn a_byte_order_mark_is_accepted() {
        let policy = parse_text("\u{feff}users:\n  - name: carl@example.com\n").expect("valid");
        assert_eq!(policy.users[0].name, "carl@example.com");
    }

    #[test]
    fn not_utf8_is_located() {
        let errors = parse_bytes(
            "policy.yaml",
            b"grants:\n  - user: caf\xe9\n",
            Path::new("."),
            &SECRETS,
        )
        .expect_err("not UTF-8");
        assert_eq!(
            errors.to_string(),
            "policy.yaml:2:14: the file is not valid UTF-8"
        );
    }

    #[test]
    fn all_errors_of_a_file_are_reported_in_file_order() {
        assert_errors(
            &[
                "users:",
                "  - name: system:nobody",
                "grants:",
                "  - user: carl@example.com",
                "    role: edit",
                "    resource: Production",
                "    expires: tomorrow",
                "  - role: view",
                "    resource: staging",
                "providers:",
                "  - name: okta",
                "    url: acmecorp.okta.com",
                "    clientID: 0oapn0qwiQPiMIyR35d6",
                "    clientSecret: env:NOPE",
            ],
            &[
                "policy.yaml:2:11: users[0].name: \"system:nobody\" starts with `system:`, which \
                 is reserved for Kubernetes",
                "policy.yaml:6:15: grants[0].resource: resource \"Production\" is not \
                 `<destination>` or `<destination>.<namespace>`: destination \"Production\" may \
                 contain only lower-case letters, digits and `-`",
                "policy.yaml:7:5: grants[0]: unknown key \"expires\"; expected one of: user, \
                 group, role, resource",
                "policy.yaml:8:5: grants[1]: a grant needs a `user` or a `group`",
                "policy.yaml:14:19: providers[0].clientSecret: environment variable \"NOPE\" is \
                 not set",
            ],
        );
    }

    #[test]
    fn secrets_never_appear_in_debug_output_or_errors() {
        let values = [
            "okta-env-secret-value",
            "admin-file-password-value",
            "ci0000.access-key-secret-value",
            "literal-password-value",
            "literalkeywithoutdot",
            "86421357",
        ];
        let good = yaml(&[
            DESIGN_EXAMPLE.trim_end(),
            "  - name: ci-bot",
            "    accessKey: env:CI_ACCESS_KEY",
            "  - name: literal@example.com",
            "    password: literal-password-value",
        ]);
        let policy = parse_text(&good).expect("valid");
        let debug = format!("{policy:?}");
        for value in values {
            assert!(!debug.contains(value), "{value} in {debug}");
        }

        let bad = yaml(&[
            DESIGN_EXAMPLE.trim_end(),
            "  - name: literal@example.com",
            "    password: literal-password-value",
            "    accessKey: literalkeywithoutdot",
            "  - name: number@example.com",
            "    password: 86421357",
            "    token: okta-env-secret-value",
            "grants: []",
        ]);
        let errors = parse_text(&bad).expect_err("invalid");
        let shown = format!("{errors}\n{errors:?}");
        for value in values {
            assert!(!shown.contains(value), "{value} in {shown}");
        }
        assert_eq!(errors.len(), 4, "{errors}");
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_parsing() {
        let ten_megabytes = format!("grants: [{}]\n", "a".repeat(10 << 20));
        let errors = parse_text(&ten_megabytes).expect_err("too large");
        assert_eq!(
            errors.to_string(),
            "policy.yaml: the file is larger than the limit of 4194304 bytes"
        );
        // Reading stops at the limit, even from an endless source.
        let read = read_limited(io::repeat(b'a'), MAX_FILE_BYTES).expect("never fails");
        assert!(read.is_none());
    }

    #[test]
    fn load_refuses_a_ten_megabyte_file_without_reading_it_all() {
        let dir = std::env::temp_dir().join(format!("infra-policy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("huge.yaml");
        // Sparse: ten megabytes of zeros, written instantly.
        File::create(&path)
            .and_then(|file| file.set_len(10 << 20))
            .expect("temp file");
        let errors = load(&path, &SECRETS).expect_err("too large");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            errors.errors()[0].kind,
            PolicyErrorKind::TooLarge {
                limit: MAX_FILE_BYTES
            }
        );
        assert_eq!(
            errors.to_string(),
            format!(
                "{}: the file is larger than the limit of 4194304 bytes",
                path.display()
            )
        );
    }

    #[test]
    fn load_reports_a_missing_file() {
        let path = Path::new("/nonexistent/infra/policy.yaml");
        let errors = load(path, &SECRETS).expect_err("missing");
        assert!(
            errors
                .to_string()
                .starts_with("/nonexistent/infra/policy.yaml: cannot read the file: "),
            "{errors}"
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let brackets = "[".repeat(100_000);
        let errors = parse_text(&brackets).expect_err("too deep");
        assert_eq!(
            errors.to_string(),
            "policy.yaml:1:33: the file is too complex: it nests deeper than 32 levels"
        );

        let mut block = String::from("grants:\n");
        for depth in 1..=100 {
            block.push_str(&"  ".repeat(depth));
            block.push_str("-\n");
        }
        let errors = parse_text(&block).expect_err("too deep");
        // Line 33 opens the 33rd level (the top-level mapping is the first).
        assert_eq!(
            errors.to_string(),
            "policy.yaml:33:65: the file is too complex: it nests deeper than 32 levels"
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        // "Billion laughs": nine levels of nine aliases each, 9^9 values when expanded.
        let mut bomb = vec!["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]".to_owned()];
        for (prev, name) in ('a'..='i').zip('b'..='j') {
            let refs = vec![format!("*{prev}"); 9].join(", ");
            bomb.push(format!("{name}: &{name} [{refs}]"));
        }
        let errors = parse_text(&bomb.join("\n")).expect_err("a bomb");
        // Reported at the alias whose expansion crosses the limit.
        assert_eq!(
            errors.to_string(),
            "policy.yaml:4:24: the file is too complex: its aliases expand to more than 5000 \
             YAML events"
        );

        // Many cheap aliases instead of a deep expansion.
        let mut many = String::from("users:\n  - &u {name: a@example.com}\n");
        for _ in 0..=MAX_ALIASES {
            many.push_str("  - *u\n");
        }
        let errors = parse_text(&many).expect_err("too many aliases");
        // Line 2 holds the anchor, so the 501st alias is on line 503.
        assert_eq!(
            errors.to_string(),
            "policy.yaml:503:5: the file is too complex: it uses more than 500 anchors or aliases"
        );
    }
}
