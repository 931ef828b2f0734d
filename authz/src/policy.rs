//! The policy model: who may do what, where.
//!
//! A [`Grant`] gives a [`Subject`] (a user or a group) a role on a [`Resource`]: a whole
//! destination (`production`) or one namespace of it (`production.web`). The resource `infra`
//! governs the control API itself. The policy file ([`file`]) and the control API both produce
//! these values; everything that reads policy consumes them.

pub mod file;
pub mod names;
pub mod requests;
pub mod wire;

pub use names::{
    MAX_NAME_BYTES, MAX_PASSWORD_BYTES, PasswordTooLong, validate_name, validate_password_length,
    validate_subject_name,
};

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

/// The resource name that governs the control API itself.
pub const CONTROL_RESOURCE: &str = "infra";

/// Roles that mean something on the [`CONTROL_RESOURCE`]: `admin` changes anything, `view` reads
/// everything, `connector` lets a proxy of another cluster register its destination and receive
/// the policy of it, `auditor` reads the audit trail (and nothing else).
pub const CONTROL_ROLES: [&str; 4] = ["admin", "view", "connector", "auditor"];

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// A user, by name (usually an email address).
    User(String),
    /// A group, by name.
    Group(String),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(name) => write!(f, "user {name:?}"),
            Self::Group(name) => write!(f, "group {name:?}"),
        }
    }
}

/// Where a grant applies: a destination, or one namespace of a destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    /// The destination (cluster) name, or [`CONTROL_RESOURCE`].
    pub destination: String,
    /// The namespace, when the grant covers only one.
    pub namespace: Option<String>,
}

impl Resource {
    /// The whole of `destination`.
    pub fn destination(destination: impl Into<String>) -> Self {
        Self {
            destination: destination.into(),
            namespace: None,
        }
    }

    /// One namespace of `destination`.
    pub fn namespace(destination: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            destination: destination.into(),
            namespace: Some(namespace.into()),
        }
    }

    /// Whether this is the control API's own resource.
    pub fn is_control(&self) -> bool {
        self.destination == CONTROL_RESOURCE && self.namespace.is_none()
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}.{ns}", self.destination),
            None => f.write_str(&self.destination),
        }
    }
}

impl FromStr for Resource {
    type Err = NameError;

    /// Parses `<destination>` or `<destination>.<namespace>`; both parts are DNS labels.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (destination, namespace) = match s.split_once('.') {
            Some((d, ns)) => (d, Some(ns)),
            None => (s, None),
        };
        validate_dns_label(destination).map_err(|why| NameError::Resource {
            value: s.to_owned(),
            why: format!("destination {why}"),
        })?;
        if let Some(ns) = namespace {
            if destination == CONTROL_RESOURCE {
                return Err(NameError::Resource {
                    value: s.to_owned(),
                    why: format!("`{CONTROL_RESOURCE}` is the control API and has no namespaces"),
                });
            }
            validate_dns_label(ns).map_err(|why| NameError::Resource {
                value: s.to_owned(),
                why: format!("namespace {why}"),
            })?;
        }
        Ok(Self {
            destination: destination.to_owned(),
            namespace: namespace.map(str::to_owned),
        })
    }
}

/// One grant of policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    /// Who.
    pub subject: Subject,
    /// The Kubernetes role name (`view`, `edit`, `admin`, `cluster-admin` or a ClusterRole).
    pub role: String,
    /// Where.
    pub resource: Resource,
    /// When the grant lapses, for just-in-time access.
    pub expires_at: Option<SystemTime>,
}

impl Grant {
    /// Whether the grant is in force at `now`.
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// A secret value from the policy file, resolved from `env:` or `file:` at load. Its `Debug`
/// output never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a resolved secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call only where the value is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

pub use infra_api::ProviderKind;

/// An identity provider users log in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// The provider's name in Infra (`okta`).
    pub name: String,
    /// The provider's URL or host (`acmecorp.okta.com`).
    pub url: String,
    /// The OAuth client id.
    pub client_id: String,
    /// The OAuth client secret.
    pub client_secret: Secret,
    /// What kind of provider it is.
    pub kind: ProviderKind,
    /// Extra scopes to ask for, beyond `openid email profile`.
    pub scopes: Vec<String>,
}

/// A local user declared by the policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user's name (usually an email address).
    pub name: String,
    /// The user's password, when they log in with one.
    pub password: Option<Secret>,
    /// An access key (`<id>.<secret>`) the user (often a machine) logs in with.
    pub access_key: Option<Secret>,
}

/// A group declared by the policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The group's name.
    pub name: String,
    /// The names of its members.
    pub members: Vec<String>,
}

/// A whole policy: what the policy file declares, or what the store holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Grants.
    pub grants: Vec<Grant>,
    /// Identity providers.
    pub providers: Vec<Provider>,
    /// Local users.
    pub users: Vec<User>,
    /// Groups and their members.
    pub groups: Vec<Group>,
    /// Who may ask for access, for what, and who approves.
    pub requests: Vec<requests::RequestRule>,
    /// Where on-call schedules are read.
    pub on_call: Vec<requests::OnCallSource>,
    /// Targets told of access requests' changes.
    pub notify: Vec<requests::Notifier>,
}

/// A name that Infra refuses, and which rule it breaks ([`names`]). Names are repeated in the
/// message clipped to 64 characters and escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// A name is empty.
    #[error("the name is empty")]
    Empty,
    /// A user or group name starts with `system:`, which only Kubernetes itself may use.
    #[error("{0:?} starts with `system:`, which is reserved for Kubernetes")]
    Reserved(String),
    /// A name holds a control character (Unicode category Cc).
    #[error("{0:?} contains a control character")]
    ControlCharacter(String),
    /// A name is longer than [`MAX_NAME_BYTES`].
    #[error("{name:?} is {len} bytes, more than the {max} allowed", max = MAX_NAME_BYTES)]
    TooLong {
        /// The start of the name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A name holds an invisible format character (Unicode category Cf), such as a
    /// bidirectional override or a zero-width space.
    #[error(
        "{name:?} contains U+{code:04X}, an invisible format character (such as a bidirectional \
         control or a zero-width space)",
        code = u32::from(*character)
    )]
    FormatCharacter {
        /// The name (clipped).
        name: String,
        /// The first such character.
        character: char,
    },
    /// A name starts or ends with white space.
    #[error("{0:?} starts or ends with white space")]
    SurroundingWhiteSpace(String),
    /// A name is not in Unicode Normalization Form C.
    #[error("{0:?} is not in Unicode normalization form C (NFC)")]
    NotNormalized(String),
    /// A resource is not `<destination>` or `<destination>.<namespace>`.
    #[error("resource {value:?} is not `<destination>` or `<destination>.<namespace>`: {why}")]
    Resource {
        /// The resource as written.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// A role name is empty or is not a valid Kubernetes object name.
    #[error("role {value:?} is not a valid role name: {why}")]
    Role {
        /// The role as written.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Checks a role name: what the apiserver accepts as a (Cluster)Role name in a path segment.
pub fn validate_role_name(role: &str) -> Result<(), NameError> {
    let why = if role.is_empty() {
        Some("it is empty")
    } else if role.len() > 253 {
        Some("it is longer than 253 characters")
    } else if role == "." || role == ".." {
        Some("it may not be `.` or `..`")
    } else if role.contains(['/', '%']) {
        Some("it may not contain `/` or `%`")
    } else if role.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it may not contain white space or control characters")
    } else {
        None
    };
    match why {
        Some(why) => Err(NameError::Role {
            value: role.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// Checks a DNS label (RFC 1123): 1 to 63 of `a-z`, `0-9`, `-`, starting and ending with a
/// letter or digit. Returns what is wrong, worded to follow the thing's name.
pub fn validate_dns_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("is empty".to_owned());
    }
    if label.len() > 63 {
        return Err(format!("{label:?} is longer than 63 characters"));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "{label:?} may contain only lower-case letters, digits and `-`"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "{label:?} must start and end with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_parse() {
        assert_eq!(
            "production".parse::<Resource>(),
            Ok(Resource::destination("production"))
        );
        assert_eq!(
            "production.web".parse::<Resource>(),
            Ok(Resource::namespace("production", "web"))
        );
        assert!("infra".parse::<Resource>().is_ok_and(|r| r.is_control()));
    }

    #[test]
    fn bad_resources_say_why() {
        let cases = [
            ("", "destination is empty"),
            ("Prod", "may contain only lower-case"),
            ("prod.", "namespace is empty"),
            ("prod.web.x", "may contain only lower-case"),
            ("-prod", "must start and end"),
            ("infra.web", "has no namespaces"),
        ];
        for (input, want) in cases {
            let err = input.parse::<Resource>().expect_err(input).to_string();
            assert!(err.contains(want), "{input:?}: {err}");
        }
        let long = "a".repeat(64);
        assert!(long.parse::<Resource>().is_err());
    }

    #[test]
    fn reserved_names_are_refused() {
        assert_eq!(
            validate_subject_name("system:masters"),
            Err(NameError::Reserved("system:masters".into()))
        );
        assert_eq!(validate_subject_name(""), Err(NameError::Empty));
        assert!(validate_subject_name("suzie@example.com").is_ok());
        assert!(validate_subject_name("a\nb").is_err());
    }

    #[test]
    fn role_names() {
        for ok in [
            "view",
            "cluster-admin",
            "system:aggregate-to-edit",
            "my.role",
        ] {
            assert!(validate_role_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a%2f", "a b"] {
            assert!(validate_role_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_never_debug_print() {
        let s = Secret::new("hunter2hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn grants_lapse() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100);
        let grant = Grant {
            subject: Subject::User("u".into()),
            role: "view".into(),
            resource: Resource::destination("d"),
            expires_at: Some(at),
        };
        assert!(grant.is_active(at - std::time::Duration::from_secs(1)));
        assert!(!grant.is_active(at));
    }
}
