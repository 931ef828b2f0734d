//! The sync stream (`GET /api/sync/{destination}?protocol=2`): JSON lines from the control plane
//! to a proxy, a [`Snapshot`] on connect, a [`Delta`] for each change that concerns the
//! destination (with sequence numbers, so that a proxy that missed one starts again from a
//! snapshot), [`Message::Heartbeat`]s between.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One grant as a snapshot carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// The version of the sync protocol this build speaks. A proxy asks for it
/// (`GET /api/sync/{destination}?protocol=2`); a control plane refuses any other, and a proxy
/// refuses a stream whose first line is not a [`Snapshot`] of this version. The proxy and the
/// control plane ship together: there is no fallback to an older protocol.
pub const PROTOCOL: u32 = 2;

/// The query of `GET /api/sync/{destination}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncQuery {
    /// The protocol version the proxy speaks ([`PROTOCOL`]).
    pub protocol: Option<u32>,
}

/// What a destination's proxy decides with: sent first on every stream, and again whenever the
/// control plane cannot say what changed in a [`Delta`] (a change it does not describe, a
/// stream that fell behind).
///
/// It carries what this destination's proxy needs, not every user of the installation: the
/// destination's grants, the members of the groups those grants name, and the sessions that
/// ended lately. Live sessions are not listed: a token of the control plane is signed and names
/// its session, so the proxy takes it unless its session is among the ended ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The protocol version ([`PROTOCOL`]).
    pub protocol: u32,
    /// The change it is current to: every later [`Delta`] on the stream names the `seq` it
    /// follows.
    pub seq: u64,
    /// Increases with every snapshot of a control replica (milliseconds since the epoch at the
    /// change, or one more than the last, whichever is larger).
    pub generation: u64,
    /// The destination it is for.
    pub destination: String,
    /// The issuer (`iss`) of the control plane's tokens.
    pub issuer: String,
    /// The keys that verify its tokens (a JWKS document).
    pub jwks: serde_json::Value,
    /// The grants of this destination.
    pub grants: Vec<WireGrant>,
    /// The groups that grants of this destination name, each user's: user → groups (users in
    /// none of them are left out).
    pub members: BTreeMap<String, Vec<String>>,
    /// Sessions ended lately (until their tokens have expired): access key id → user.
    pub ended: BTreeMap<String, String>,
}

/// Changes since the message whose `seq` is `after`. A proxy whose last message is not `after`
/// missed something: it drops the stream and starts again from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    /// The `seq` of the message this one follows on the stream.
    pub after: u64,
    /// The change it is current to.
    pub seq: u64,
    /// What changed, in order.
    pub changes: Vec<Change>,
}

/// One change of a destination's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// A user's groups among those the destination's grants name, as they are now (empty: in
    /// none of them).
    Member {
        /// The user.
        user: String,
        /// Their groups that matter here.
        groups: Vec<String>,
    },
    /// Grants of the destination that appeared and that went (each one, as in a snapshot; an
    /// expiry change is the old grant gone and the new one added). Never a grant that names a
    /// group no other grant of the destination names: that comes as a new snapshot, with the
    /// group's members.
    Grants {
        /// Grants that went.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removed: Vec<WireGrant>,
        /// Grants that appeared.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        added: Vec<WireGrant>,
    },
    /// Sessions that ended: access key id → user. Their tokens must be refused at once.
    Ended(BTreeMap<String, String>),
}

/// One line of the sync stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// The whole policy of the destination.
    Snapshot(Box<Snapshot>),
    /// What changed since the last message.
    Delta(Delta),
    /// Nothing changed: the `seq` of the last message on the stream (a proxy at another one
    /// missed something and starts again).
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
    fn deltas_are_one_key_objects_and_unknown_changes_are_refused() {
        let delta = Message::Delta(Delta {
            after: 4,
            seq: 7,
            changes: vec![
                Change::Member {
                    user: "suzie".into(),
                    groups: vec!["Engineering".into()],
                },
                Change::Ended(BTreeMap::from([("k1".to_owned(), "suzie".to_owned())])),
            ],
        });
        let line = serde_json::to_string(&delta).expect("encodes");
        assert_eq!(
            line,
            r#"{"delta":{"after":4,"seq":7,"changes":[{"member":{"user":"suzie","groups":["Engineering"]}},{"ended":{"k1":"suzie"}}]}}"#
        );
        assert_eq!(
            serde_json::from_str::<Message>(&line).expect("decodes"),
            delta
        );
        let unknown = r#"{"delta":{"after":4,"seq":7,"changes":[{"teleport":{}}]}}"#;
        assert!(serde_json::from_str::<Message>(unknown).is_err());
        let version_one = r#"{"snapshot":{"generation":1,"destination":"d","issuer":"i","jwks":{},"grants":[],"members":{},"sessions":{},"ended":{}}}"#;
        assert!(
            serde_json::from_str::<Message>(version_one).is_err(),
            "a snapshot of the first protocol (live sessions, no version) does not parse"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let grant = r#"{"user":"a","role":"view","resource":"c","extra":1}"#;
        assert!(serde_json::from_str::<WireGrant>(grant).is_err());
    }
}
