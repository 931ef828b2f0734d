//! `policy_file`: the policy file's parser and validator
//! ([`infra_authz::policy::file::parse`]).
//!
//! Input: the file's bytes. Text that is not UTF-8 is refused before parsing by `load`; here it
//! is read lossily so that every input reaches the parser. Secrets resolve through a fake
//! [`SecretSource`] (never the real environment or file system): `env:UNSET*` is not set,
//! `env:EMPTY` is empty, `file:` paths containing `missing` cannot be read, and every other
//! reference resolves to [`MARKER`] followed by its name.
//!
//! Invariants:
//!
//! - never panics;
//! - every error carries a line and a column (from 1), on a line the text has, and errors come
//!   in file order;
//! - no error message holds a resolved secret value;
//! - an accepted policy holds only what validation promises: valid subject and role names,
//!   resources that print and parse back to themselves, no grant twice, no group member twice,
//!   no empty secret;
//! - the same text gives the same answer twice.

use std::collections::HashSet;
use std::env::VarError;
use std::io;
use std::path::Path;

use infra_authz::policy::file::{PolicyErrors, SecretSource, parse};
use infra_authz::policy::{Policy, Resource, Subject, validate_role_name, validate_subject_name};

use crate::show;

/// What every resolved secret starts with; no error message may contain it.
pub const MARKER: &str = "SECRET-VALUE-9c1f";

/// Secrets from the input's own names, never from the machine.
struct FakeSecrets;

impl SecretSource for FakeSecrets {
    fn env(&self, name: &str) -> Result<String, VarError> {
        if name.starts_with("UNSET") {
            Err(VarError::NotPresent)
        } else if name == "EMPTY" {
            Ok(String::new())
        } else {
            Ok(format!("{MARKER}-env-{name}"))
        }
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        let path = path.to_string_lossy();
        if path.contains("missing") {
            Err(io::Error::new(io::ErrorKind::NotFound, "no such file"))
        } else {
            Ok(format!("{MARKER}-file-{path}\n"))
        }
    }
}

/// The `policy_file` target.
pub fn policy_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let result = parse("policy.yaml", &text, Path::new("/policies"), &FakeSecrets);
    assert_eq!(
        parse("policy.yaml", &text, Path::new("/policies"), &FakeSecrets),
        result,
        "not deterministic\ninput: {}",
        show(data)
    );
    match &result {
        Ok(policy) => check_policy(policy, data),
        Err(errors) => check_errors(errors, &text, data),
    }
}

/// The number of lines of `text` as YAML counts them: CR, LF and CRLF each end a line.
fn yaml_lines(text: &str) -> u64 {
    let breaks = text.replace("\r\n", "\n").matches(['\r', '\n']).count();
    u64::try_from(breaks).unwrap_or(u64::MAX).saturating_add(1)
}

fn check_errors(errors: &PolicyErrors, text: &str, data: &[u8]) {
    assert!(
        !errors.is_empty(),
        "an empty error list\ninput: {}",
        show(data)
    );
    let lines = yaml_lines(text);
    let mut previous = None;
    for error in errors {
        let position = error.position.unwrap_or_else(|| {
            panic!(
                "an error without a line and column: {error}\nall: {errors}\ninput: {}",
                show(data)
            )
        });
        assert!(
            position.line >= 1 && position.column >= 1 && position.line <= lines,
            "an error at {position} of a text of {lines} lines: {error}\ninput: {}",
            show(data)
        );
        assert!(
            previous <= Some(position),
            "errors out of file order: {errors}\ninput: {}",
            show(data)
        );
        previous = Some(position);
        if !text.contains(MARKER) {
            let message = error.to_string();
            assert!(
                !message.contains(MARKER),
                "an error message holds a secret value: {message}\ninput: {}",
                show(data)
            );
        }
    }
}

fn check_policy(policy: &Policy, data: &[u8]) {
    let context = || format!("{policy:?}\ninput: {}", show(data));
    let mut grants = HashSet::new();
    for grant in &policy.grants {
        match &grant.subject {
            Subject::User(name) | Subject::Group(name) => assert!(
                validate_subject_name(name).is_ok(),
                "an accepted grant names {name:?}: {}",
                context()
            ),
        }
        assert!(
            validate_role_name(&grant.role).is_ok(),
            "an accepted grant has role {:?}: {}",
            grant.role,
            context()
        );
        let printed = grant.resource.to_string();
        assert_eq!(
            printed.parse::<Resource>().as_ref(),
            Ok(&grant.resource),
            "resource {printed:?} does not parse back: {}",
            context()
        );
        assert!(
            grants.insert((&grant.subject, &grant.role, &grant.resource)),
            "an accepted policy repeats a grant: {}",
            context()
        );
    }
    for user in &policy.users {
        assert!(
            validate_subject_name(&user.name).is_ok(),
            "user {:?}: {}",
            user.name,
            context()
        );
        for secret in [&user.password, &user.access_key].into_iter().flatten() {
            assert!(
                !secret.expose().is_empty(),
                "an empty secret: {}",
                context()
            );
        }
    }
    for group in &policy.groups {
        assert!(
            validate_subject_name(&group.name).is_ok(),
            "group {:?}: {}",
            group.name,
            context()
        );
        let mut members = HashSet::new();
        for member in &group.members {
            assert!(
                members.insert(member),
                "group {:?} lists {member:?} twice: {}",
                group.name,
                context()
            );
        }
    }
    for provider in &policy.providers {
        assert!(
            !provider.client_secret.expose().is_empty() && !provider.url.is_empty(),
            "provider {:?}: {}",
            provider.name,
            context()
        );
    }
    let _ = infra_authz::policy::file::summary("policy.yaml", policy);
}
