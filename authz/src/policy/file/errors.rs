//! What can be wrong with a policy file: located errors (`file:line:column: path: message`),
//! worded for the person who wrote the file. No error ever holds a secret value.

use std::fmt;
use std::path::PathBuf;

use crate::policy::{CONTROL_ROLES, NameError};

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
    /// The file, as named to [`load`](super::load) or [`parse`](super::parse).
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
pub struct PolicyErrors(pub(super) Vec<PolicyError>);

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

    pub(super) fn one(error: PolicyError) -> Self {
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
    /// The file is larger than [`MAX_FILE_BYTES`](super::MAX_FILE_BYTES).
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
    /// An access request rule, on-call source or notification target is wrong in a way its
    /// message says.
    #[error("{0}")]
    Request(String),
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
