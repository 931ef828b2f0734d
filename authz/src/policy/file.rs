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
//! [`Secret`], whose `Debug` redacts. No error message ever holds a secret value: errors about a
//! secret name the variable or the path, and type errors never echo the value.
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

use std::collections::HashMap;
use std::env::VarError;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use serde_saphyr::budget::BudgetBreach;

use super::{
    CONTROL_ROLES, Grant, Group, NameError, Policy, Provider, ProviderKind, Resource, Secret,
    Subject, User, validate_role_name, validate_subject_name,
};

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

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A place in the policy file: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The line, from 1.
    pub line: u64,
    /// The column, from 1, counted in characters.
    pub column: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// One problem found in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file, as named to [`load`] or [`parse`].
    pub file: String,
    /// Where in the file; `None` when the problem is the file as a whole (it cannot be read,
    /// or is too large).
    pub position: Option<Position>,
    /// The key path of the offending value (`grants[1].resource`); empty for the top level.
    pub path: String,
    /// What is wrong.
    pub kind: PolicyErrorKind,
}

/// Renders `file:line:column: path: message`, leaving out the parts that are absent.
impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(at) = self.position {
            write!(f, ":{}:{}", at.line, at.column)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl std::error::Error for PolicyError {}

/// Every problem found in one policy file, in the order they appear in it. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(Vec<PolicyError>);

impl PolicyErrors {
    /// The errors, in file order.
    pub fn errors(&self) -> &[PolicyError] {
        &self.0
    }

    /// The errors, in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.0.iter()
    }

    /// The errors, in file order.
    pub fn into_vec(self) -> Vec<PolicyError> {
        self.0
    }

    /// How many errors there are (at least one).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: a `PolicyErrors` holds at least one error.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn one(error: PolicyError) -> Self {
        Self(vec![error])
    }
}

/// One error per line, as `file:line:column: path: message`.
impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// What is wrong with (part of) a policy file. No variant ever holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyErrorKind {
    /// Reading the file failed.
    #[error("cannot read the file: {reason}")]
    Read {
        /// The I/O error, as text.
        reason: String,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The file is not UTF-8; the position is that of the first bad byte.
    #[error("the file is not valid UTF-8")]
    NotUtf8,
    /// The file is not valid YAML.
    #[error("{message}")]
    Syntax {
        /// The YAML parser's message.
        message: String,
    },
    /// The file is too large or too complex to parse safely (an alias bomb, deep nesting).
    #[error("the file is too complex: {what}")]
    Limit {
        /// Which limit was reached.
        what: String,
    },
    /// The file holds more than one YAML document (`---`).
    #[error("the file holds more than one YAML document; a policy is a single document")]
    MultipleDocuments,
    /// The file holds nothing (or only comments).
    #[error("the file is empty; expected a mapping with grants, providers, users or groups")]
    Empty,
    /// The top level is not a mapping.
    #[error(
        "the top level must be a mapping with grants, providers, users or groups, found {found}"
    )]
    NotAMapping {
        /// What it is instead.
        found: &'static str,
    },
    /// A value has the wrong YAML type.
    #[error("expected {expected}, found {found}{}", quote_hint(found))]
    WrongType {
        /// What was expected (`a string`).
        expected: &'static str,
        /// What was found (`an integer`).
        found: &'static str,
    },
    /// A mapping holds a key that is not a string.
    #[error("a key must be a string, found {found}")]
    KeyNotString {
        /// What the key is instead.
        found: &'static str,
    },
    /// A mapping holds a key that this format does not know.
    #[error(
        "unknown key {key:?}{}; expected one of: {}",
        did_you_mean(*suggestion),
        expected.join(", ")
    )]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The keys allowed here.
        expected: &'static [&'static str],
        /// A known key close to the one written, if any.
        suggestion: Option<&'static str>,
    },
    /// A mapping holds the same key twice.
    #[error("duplicate key {key:?} (first at {first})")]
    DuplicateKey {
        /// The key.
        key: String,
        /// Where it first appears.
        first: Position,
    },
    /// A required key is missing.
    #[error("missing key {key:?}")]
    MissingKey {
        /// The key.
        key: &'static str,
    },
    /// A grant has neither `user` nor `group`.
    #[error("a grant needs a `user` or a `group`")]
    NoSubject,
    /// A grant has both `user` and `group`.
    #[error("a grant has a `user` or a `group`, not both")]
    BothSubjects,
    /// A user, group, role or resource name is refused.
    #[error(transparent)]
    Name(NameError),
    /// A grant on the control API (`infra`) with a role other than `admin` or `view`.
    #[error(
        "role {role:?} means nothing on `infra`, the control API; use one of: {}",
        CONTROL_ROLES.join(", ")
    )]
    ControlRole {
        /// The role as written.
        role: String,
    },
    /// A provider kind this version does not know.
    #[error("{0}")]
    ProviderKind(String),
    /// A value is malformed (an empty URL, a provider name with spaces, ...).
    #[error("{what} {why}")]
    Invalid {
        /// What the value is (`the URL`).
        what: &'static str,
        /// What is wrong with it (`is empty`).
        why: &'static str,
    },
    /// A user, provider or group is declared twice, or a group lists a member twice.
    #[error("duplicate {what} {name:?} (first at {first})")]
    Duplicate {
        /// `user`, `provider`, `group` or `member`.
        what: &'static str,
        /// The repeated name.
        name: String,
        /// Where it first appears.
        first: Position,
    },
    /// A grant repeats an earlier one exactly.
    #[error("this grant repeats {first_path} (at {first})")]
    DuplicateGrant {
        /// The earlier grant's key path (`grants[0]`).
        first_path: String,
        /// Where the earlier grant is.
        first: Position,
    },
    /// `env:` names no variable, or a name the environment cannot hold.
    #[error("{name:?} is not a valid environment variable name")]
    BadEnvName {
        /// The name as written.
        name: String,
    },
    /// An `env:` secret names a variable that is not set.
    #[error("environment variable {name:?} is not set")]
    EnvNotSet {
        /// The variable.
        name: String,
    },
    /// An `env:` secret names a variable whose value is not UTF-8.
    #[error("environment variable {name:?} is not valid UTF-8")]
    EnvNotUnicode {
        /// The variable.
        name: String,
    },
    /// A `file:` secret cannot be read.
    #[error("cannot read secret file {}: {reason}", path.display())]
    SecretFile {
        /// The path, resolved against the policy file's directory.
        path: PathBuf,
        /// The I/O error, as text.
        reason: String,
    },
    /// A secret resolved to an empty value.
    #[error("the secret is empty{}", from.as_deref().map(|f| format!(" ({f})")).unwrap_or_default())]
    EmptySecret {
        /// Where it came from (`environment variable "X"`, `file /path`), for references.
        from: Option<String>,
    },
}

fn quote_hint(found: &str) -> &'static str {
    match found {
        "an integer" | "a number" | "a boolean" => "; put it in quotes to use it as a string",
        _ => "",
    }
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map_or_else(String::new, |s| format!(" (did you mean {s:?}?)"))
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// Where `env:` and `file:` secret references are resolved. A parameter, so that tests never
/// touch the real environment or file system.
pub trait SecretSource {
    /// The value of environment variable `name`. `name` is never empty and never contains `=`
    /// or NUL.
    fn env(&self, name: &str) -> Result<String, VarError>;

    /// The content of the file at `path` (already resolved against the policy file's
    /// directory).
    fn read_file(&self, path: &Path) -> io::Result<String>;
}

/// The real [`SecretSource`]: the process environment, and files of at most
/// [`MAX_SECRET_FILE_BYTES`].
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvSecrets;

impl SecretSource for EnvSecrets {
    fn env(&self, name: &str) -> Result<String, VarError> {
        std::env::var(name)
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        let Some(bytes) = read_limited(File::open(path)?, MAX_SECRET_FILE_BYTES)? else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("it is larger than {MAX_SECRET_FILE_BYTES} bytes"),
            ));
        };
        String::from_utf8(bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "it is not valid UTF-8"))
    }
}

/// Reads at most `limit` bytes; `None` when there is more.
fn read_limited(reader: impl Read, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut buf)?;
    Ok((buf.len() <= limit).then_some(buf))
}

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

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
    let root: Located = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| PolicyErrors::one(yaml_error(file_name, &e)))?;
    let mut checker = Checker {
        file: file_name,
        base_dir,
        secrets,
        errors: Vec::new(),
    };
    let policy = checker.policy(&root);
    checker.finish(policy)
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

// ---------------------------------------------------------------------------------------------
// YAML: a tree of located values
// ---------------------------------------------------------------------------------------------

/// A YAML value with where it is in the file (for an alias, where the alias is).
type Located = Spanned<Node>;

/// A YAML value, kept generic so that validation can report every problem instead of stopping
/// at the first as a derived `Deserialize` would. Deliberately not `Debug`: it holds secrets.
enum Node {
    Null,
    Bool,
    Int,
    Float,
    Bytes,
    Str(String),
    Seq(Vec<Located>),
    Map(Vec<(Located, Located)>),
}

impl Node {
    /// What the value is, worded for "expected ..., found {}".
    fn kind(&self) -> &'static str {
        match self {
            Self::Null => "no value",
            Self::Bool => "a boolean",
            Self::Int => "an integer",
            Self::Float => "a number",
            Self::Bytes => "binary data",
            Self::Str(_) => "a string",
            Self::Seq(_) => "a list",
            Self::Map(_) => "a mapping",
        }
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Bool)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Int)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Int)
    }

    fn visit_i128<E>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Int)
    }

    fn visit_u128<E>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Int)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Float)
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_bytes<E>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// Parser options: duplicate keys reach the visitor (so all are reported, with both places),
/// strict booleans, unknown tags refused, and explicit limits.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        strict_booleans: true,
        reject_unsupported_tags: true,
        with_snippet: false,
        // Comments are not needed; dropping them keeps them out of the event budget.
        emit_comments: false,
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_EXPANSION,
            max_replay_stack_depth: MAX_DEPTH,
        },
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            flow_nesting_limit: MAX_DEPTH,
            max_nodes: MAX_NODES,
            max_events: 4 * MAX_NODES,
            max_aliases: MAX_ALIASES,
            max_anchors: MAX_ALIASES,
            max_documents: 1,
            max_total_scalar_bytes: MAX_FILE_BYTES,
            max_recorded_anchor_events: MAX_NODES,
        },
    }
}

/// Turns a parser error into a located policy error with our own wording for the limits.
fn yaml_error(file_name: &str, error: &serde_saphyr::Error) -> PolicyError {
    use serde_saphyr::Error as E;
    use serde_saphyr::MessageFormatter as _;

    let position = error.location().and_then(|l| position(&l));
    let mut inner = error;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = inner {
        inner = error;
    }
    let limit = |what: String| PolicyErrorKind::Limit { what };
    let kind = match inner {
        E::Budget { breach, .. } => match breach {
            BudgetBreach::Documents { .. } => PolicyErrorKind::MultipleDocuments,
            BudgetBreach::Depth { .. } => limit(format!("it nests deeper than {MAX_DEPTH} levels")),
            BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => {
                limit(format!("it holds more than {MAX_NODES} values"))
            }
            BudgetBreach::Aliases { .. } | BudgetBreach::Anchors { .. } => limit(format!(
                "it uses more than {MAX_ALIASES} anchors or aliases"
            )),
            BudgetBreach::ScalarBytes { .. } => limit(format!(
                "its strings add up to more than {MAX_FILE_BYTES} bytes"
            )),
            other => limit(format!("{other:?}")),
        },
        E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => limit(format!(
            "its aliases expand to more than {MAX_ALIAS_EXPANSION} YAML events"
        )),
        E::MultipleDocuments { .. } => PolicyErrorKind::MultipleDocuments,
        // The scanner's own limit on nested flow collections (`[[[[...`), reported as text.
        E::ExternalMessage { msg, .. } if msg == "recursion limit exceeded" => {
            limit(format!("it nests deeper than {MAX_DEPTH} levels"))
        }
        other => PolicyErrorKind::Syntax {
            message: serde_saphyr::DefaultMessageFormatter
                .format_message(other)
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        },
    };
    PolicyError {
        file: file_name.to_owned(),
        position,
        path: String::new(),
        kind,
    }
}

fn position(location: &serde_saphyr::Location) -> Option<Position> {
    (location.line() > 0).then(|| Position {
        line: location.line(),
        column: location.column(),
    })
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

const TOP_KEYS: &[&str] = &["grants", "providers", "users", "groups"];
const GRANT_KEYS: &[&str] = &["user", "group", "role", "resource"];
const PROVIDER_KEYS: &[&str] = &["name", "url", "clientID", "clientSecret", "kind", "scopes"];
const USER_KEYS: &[&str] = &["name", "password", "accessKey"];
const GROUP_KEYS: &[&str] = &["name", "members"];

/// The known keys of one mapping, each with its key's position and its value.
struct Fields<'n> {
    at: Position,
    found: Vec<(&'static str, Position, &'n Located)>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Located> {
        self.entry(key).map(|(_, value)| value)
    }

    fn entry(&self, key: &str) -> Option<(Position, &'n Located)> {
        self.found
            .iter()
            .find(|(k, ..)| *k == key)
            .map(|&(_, at, value)| (at, value))
    }
}

fn at(node: &Located) -> Position {
    position(&node.referenced).unwrap_or(Position { line: 0, column: 0 })
}

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

    /// The known keys of a mapping; reports a non-mapping, unknown, duplicate and non-string
    /// keys.
    fn fields<'n>(
        &mut self,
        node: &'n Located,
        path: &str,
        keys: &'static [&'static str],
    ) -> Option<Fields<'n>> {
        let Node::Map(entries) = &node.value else {
            let found = node.value.kind();
            let kind = PolicyErrorKind::WrongType {
                expected: "a mapping",
                found,
            };
            self.error(at(node), path, kind);
            return None;
        };
        let mut fields = Fields {
            at: at(node),
            found: Vec::new(),
        };
        for (key, value) in entries {
            let Node::Str(name) = &key.value else {
                let found = key.value.kind();
                self.error(at(key), path, PolicyErrorKind::KeyNotString { found });
                continue;
            };
            let Some(&known) = keys.iter().find(|k| **k == name) else {
                let kind = PolicyErrorKind::UnknownKey {
                    key: name.clone(),
                    expected: keys,
                    suggestion: suggest(name, keys),
                };
                self.error(at(key), path, kind);
                continue;
            };
            if let Some((first, _)) = fields.entry(known) {
                let kind = PolicyErrorKind::DuplicateKey {
                    key: name.clone(),
                    first,
                };
                self.error(at(key), path, kind);
            } else {
                fields.found.push((known, at(key), value));
            }
        }
        Some(fields)
    }

    fn list<'n>(&mut self, node: &'n Located, path: &str) -> Option<&'n [Located]> {
        if let Node::Seq(items) = &node.value {
            Some(items)
        } else {
            let found = node.value.kind();
            let kind = PolicyErrorKind::WrongType {
                expected: "a list",
                found,
            };
            self.error(at(node), path, kind);
            None
        }
    }

    fn string<'n>(&mut self, node: &'n Located, path: &str) -> Option<&'n str> {
        if let Node::Str(s) = &node.value {
            Some(s)
        } else {
            let found = node.value.kind();
            let kind = PolicyErrorKind::WrongType {
                expected: "a string",
                found,
            };
            self.error(at(node), path, kind);
            None
        }
    }

    /// The value of a required key, reporting it missing at the mapping.
    fn required<'n>(
        &mut self,
        fields: &Fields<'n>,
        path: &str,
        key: &'static str,
    ) -> Option<&'n Located> {
        let value = fields.get(key);
        if value.is_none() {
            self.error(fields.at, path, PolicyErrorKind::MissingKey { key });
        }
        value
    }

    /// A required string that must be non-empty and free of white space and control characters.
    fn token(
        &mut self,
        fields: &Fields<'_>,
        path: &str,
        key: &'static str,
        what: &'static str,
    ) -> Option<String> {
        let node = self.required(fields, path, key)?;
        let path = join(path, key);
        let value = self.string(node, &path)?;
        let why = if value.is_empty() {
            "is empty"
        } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            "may not contain white space or control characters"
        } else {
            return Some(value.to_owned());
        };
        self.error(at(node), &path, PolicyErrorKind::Invalid { what, why });
        None
    }

    fn subject_name(&mut self, node: &Located, path: &str) -> Option<String> {
        let name = self.string(node, path)?;
        match validate_subject_name(name) {
            Ok(()) => Some(name.to_owned()),
            Err(e) => {
                self.error(at(node), path, PolicyErrorKind::Name(e));
                None
            }
        }
    }

    /// Records `name` as seen at `node`; reports a duplicate and returns `false` if it was
    /// seen before.
    fn first_of(
        &mut self,
        seen: &mut HashMap<String, Position>,
        what: &'static str,
        name: &str,
        node: &Located,
        path: &str,
    ) -> bool {
        if let Some(&first) = seen.get(name) {
            let kind = PolicyErrorKind::Duplicate {
                what,
                name: name.to_owned(),
                first,
            };
            self.error(at(node), path, kind);
            false
        } else {
            seen.insert(name.to_owned(), at(node));
            true
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

    fn grant(&mut self, item: &Located, path: &str) -> Option<Grant> {
        let fields = self.fields(item, path, GRANT_KEYS)?;
        let subject = match (fields.entry("user"), fields.entry("group")) {
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
        };
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
            let name = self.token(&fields, &path, "name", "the provider name");
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
                .map(|node| self.secret(node, &join(&path, "password")));
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

    /// Resolves a secret: `env:NAME`, `file:PATH` or a literal. Errors name the variable or
    /// path, never the value.
    fn secret(&mut self, node: &Located, path: &str) -> Option<Secret> {
        let text = self.string(node, path)?;
        let result = if let Some(name) = text.strip_prefix("env:") {
            self.env_secret(name)
        } else if let Some(file) = text.strip_prefix("file:") {
            self.file_secret(file)
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

    fn env_secret(&self, name: &str) -> Result<Secret, PolicyErrorKind> {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(PolicyErrorKind::BadEnvName {
                name: name.to_owned(),
            });
        }
        match self.secrets.env(name) {
            Ok(value) if value.is_empty() => Err(PolicyErrorKind::EmptySecret {
                from: Some(format!("environment variable {name:?}")),
            }),
            Ok(value) => Ok(Secret::new(value)),
            Err(VarError::NotPresent) => Err(PolicyErrorKind::EnvNotSet {
                name: name.to_owned(),
            }),
            Err(VarError::NotUnicode(_)) => Err(PolicyErrorKind::EnvNotUnicode {
                name: name.to_owned(),
            }),
        }
    }

    fn file_secret(&self, file: &str) -> Result<Secret, PolicyErrorKind> {
        if file.is_empty() {
            return Err(PolicyErrorKind::Invalid {
                what: "a `file:` secret",
                why: "names no file",
            });
        }
        let path = self.base_dir.join(file);
        match self.secrets.read_file(&path) {
            Ok(mut value) => {
                if value.ends_with('\n') {
                    value.pop();
                    if value.ends_with('\r') {
                        value.pop();
                    }
                }
                if value.is_empty() {
                    Err(PolicyErrorKind::EmptySecret {
                        from: Some(format!("file {}", path.display())),
                    })
                } else {
                    Ok(Secret::new(value))
                }
            }
            Err(e) => Err(PolicyErrorKind::SecretFile {
                path,
                reason: e.to_string(),
            }),
        }
    }
}

/// A known key close to `key` (same letters ignoring case and `_`/`-`, or at most two edits
/// away), for "did you mean".
fn suggest(key: &str, known: &'static [&'static str]) -> Option<&'static str> {
    // Keys can be long (`? <a long string>`); nothing that long is a typo of a known key.
    if key.len() > 64 {
        return None;
    }
    let normal = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let key_normal = normal(key);
    known
        .iter()
        .find(|k| normal(k) == key_normal)
        .or_else(|| {
            known
                .iter()
                .find(|k| edit_distance(&key_normal, &normal(k)) <= 2)
        })
        .copied()
}

/// Levenshtein distance, for short strings (`suggest` bounds their length).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Resource;

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
                 expected one of: grants, providers, users, groups",
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
                 the control API; use one of: admin, view, connector",
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
