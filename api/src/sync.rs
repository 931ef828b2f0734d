//! The sync stream (`GET /api/sync/{destination}`): JSON lines from the control plane to a
//! proxy, a [`Snapshot`] on connect and after every change, [`Message::Heartbeat`]s between.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One grant as a snapshot carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireGrant {
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
    /// When it lapses, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// Everything a proxy decides with, for one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Increases with every change (milliseconds since the epoch at the change, or one more than
    /// the last, whichever is larger).
    pub generation: u64,
    /// The destination it is for.
    pub destination: String,
    /// The issuer (`iss`) of the control plane's tokens.
    pub issuer: String,
    /// The keys that verify its tokens (a JWKS document).
    pub jwks: serde_json::Value,
    /// The grants of this destination.
    pub grants: Vec<WireGrant>,
    /// Each user's groups.
    pub members: BTreeMap<String, Vec<String>>,
    /// Live sessions: access key id → user.
    pub sessions: BTreeMap<String, String>,
    /// Sessions ended lately (until their tokens have expired): access key id → user.
    #[serde(default)]
    pub ended: BTreeMap<String, String>,
}

/// One line of the sync stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// The whole policy of the destination.
    Snapshot(Box<Snapshot>),
    /// Nothing changed; the generation in force on the control plane.
    Heartbeat(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_key_objects() {
        let line = serde_json::to_string(&Message::Heartbeat(7)).expect("encodes");
        assert_eq!(line, r#"{"heartbeat":7}"#);
        let back: Message = serde_json::from_str(&line).expect("decodes");
        assert_eq!(back, Message::Heartbeat(7));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let grant = r#"{"user":"a","role":"view","resource":"c","extra":1}"#;
        assert!(serde_json::from_str::<WireGrant>(grant).is_err());
    }
}
