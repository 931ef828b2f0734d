//! `sync_message`: one line of the sync stream (`GET /api/sync/{destination}`), as the proxy's
//! follower reads it (`serde_json::from_slice::<infra_api::sync::Message>`), and what the proxy
//! makes of a snapshot: [`infra_proxy::sync::snapshot_grants`], [`snapshot_keys`],
//! [`Sessions`], and [`SyncState::apply`] into a [`PolicyHandle`] that then decides.
//! The same bytes are what a restarting proxy reads back from its saved snapshot file.
//!
//! A delta is applied on a snapshot at its `after` (see `check_delta`).
//!
//! Input: the line's bytes.
//!
//! Invariants:
//!
//! - never panics;
//! - a message that reads writes out and reads back to itself;
//! - every grant `snapshot_grants` keeps goes back on the wire as it came, and it keeps every
//!   grant that names one subject and a well-formed resource;
//! - `snapshot_keys` reads the snapshot's JWKS exactly when `Jwks::from_json` does;
//! - sessions: a token naming a session that has not ended gets the snapshot's groups of its
//!   user (none when the snapshot lists none), whatever groups the token claims; an ended
//!   session, or none, gets nothing;
//! - applying the snapshot puts its generation and keys in force, and every `Allow` the policy
//!   then gives comes from an active grant of this destination naming the user, one of their
//!   groups, or `system:authenticated`.

use std::time::{Duration, UNIX_EPOCH};

use infra_api::sync::{Change, Delta, Message, PROTOCOL, Snapshot, WireGrant};
use infra_authz::attributes::parse;
use infra_authz::decision::{Decision, Identity};
use infra_authz::policy::{Grant, Resource, Subject};
use infra_authz::rbac::RoleSet;
use infra_authz::token::Jwks;
use infra_proxy::policy::PolicyHandle;
use infra_proxy::sync::{Sessions, SyncState, snapshot_grants, snapshot_keys};

use crate::show;

/// The time decisions are made at: 2027-01-15T08:00:00Z.
const NOW: u64 = 1_800_000_000;

/// The `sync_message` target.
pub fn sync_message(data: &[u8]) {
    let Ok(message) = serde_json::from_slice::<Message>(data) else {
        return;
    };
    let context = |what: &str| format!("{what}\nmessage: {message:?}\ninput: {}", show(data));
    // Invariant: serde_json writes any `Message` (string keys, no failing `Serialize`).
    let line = serde_json::to_vec(&message).expect("a message serializes");
    let back = serde_json::from_slice::<Message>(&line);
    assert_eq!(
        back.as_ref().ok(),
        Some(&message),
        "{}",
        context(&format!(
            "does not read back from {}: {back:?}",
            String::from_utf8_lossy(&line)
        ))
    );
    match &message {
        Message::Snapshot(snapshot) => check_snapshot(snapshot, &context),
        Message::Delta(delta) => check_delta(delta, &context),
        Message::Heartbeat(_) => {}
    }
}

/// A delta applied on a snapshot at its `after`: it applies; its ended sessions are refused; each
/// user's last `member` change gives their groups; a delta at another `seq` is a gap that changes
/// nothing and makes the proxy refuse.
fn check_delta(delta: &Delta, context: &dyn Fn(&str) -> String) {
    let base = Snapshot {
        protocol: PROTOCOL,
        seq: delta.after,
        generation: 1,
        destination: "production".into(),
        issuer: "https://infra.example.com".into(),
        jwks: serde_json::json!({"keys": []}),
        grants: Vec::new(),
        members: std::collections::BTreeMap::new(),
        ended: std::collections::BTreeMap::new(),
    };
    let handle = PolicyHandle::new("production", &[], RoleSet::builtin());
    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    let state = SyncState::in_process();
    state.apply_stream_snapshot(base.clone(), &handle, now);
    let mut gap = delta.clone();
    gap.after = delta.after.wrapping_add(1);
    assert!(
        state.apply_delta(gap, &handle, now).is_err(),
        "{}",
        context("a delta after another seq applied")
    );
    assert!(state.has_gap(), "{}", context("a gap not noted"));
    state.apply_stream_snapshot(base, &handle, now);
    assert!(
        state.apply_delta(delta.clone(), &handle, now).is_ok(),
        "{}",
        context("a delta at the snapshot's seq not applied")
    );
    assert_eq!(state.seq(), delta.seq, "{}", context("seq"));
    let mut groups: std::collections::BTreeMap<&str, &Vec<String>> =
        std::collections::BTreeMap::new();
    let mut ended: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for change in &delta.changes {
        match change {
            Change::Member { user, groups: now } => {
                groups.insert(user, now);
            }
            Change::Ended(sessions) => ended.extend(sessions.keys().map(String::as_str)),
            Change::Grants { .. } => {}
        }
    }
    let sessions = state.sessions().load_full();
    for id in ended.iter().take(8) {
        let token = Identity::new("anyone", ["g"]);
        assert_eq!(
            sessions.identity(Some(id), &token),
            None,
            "{}",
            context(&format!("ended session {id:?}"))
        );
    }
    let live = "fuzz-live-session";
    if !ended.contains(live) {
        for (user, want) in groups.iter().take(8) {
            let token = Identity::new(*user, ["from-the-token"]);
            let got = sessions
                .identity(Some(live), &token)
                .map(|i| i.groups().map(str::to_owned).collect::<Vec<_>>());
            let mut want: Vec<String> = (*want).clone();
            want.sort();
            want.dedup();
            let got = got.map(|mut g| {
                g.sort();
                g.dedup();
                g
            });
            assert_eq!(
                got,
                Some(want),
                "{}",
                context(&format!("groups of {user:?}"))
            );
        }
    }
}

/// Whether a wire grant is one the proxy must keep: one subject, a resource, and an expiry a
/// time can hold.
fn well_formed(wire: &WireGrant) -> bool {
    wire.user.is_some() != wire.group.is_some()
        && wire.resource.parse::<Resource>().is_ok()
        && wire.expires_at.is_none_or(|s| {
            std::time::UNIX_EPOCH
                .checked_add(std::time::Duration::from_secs(s))
                .is_some()
        })
}

fn check_snapshot(snapshot: &Snapshot, context: &dyn Fn(&str) -> String) {
    let grants = snapshot_grants(snapshot);
    let kept: Vec<&WireGrant> = snapshot.grants.iter().filter(|w| well_formed(w)).collect();
    assert_eq!(grants.len(), kept.len(), "{}", context("grants kept"));
    for (grant, wire) in grants.iter().zip(kept) {
        assert_eq!(
            &WireGrant::from(grant),
            wire,
            "{}",
            context("a grant does not go back on the wire as it came")
        );
    }

    let keys = snapshot_keys(snapshot);
    let direct = Jwks::from_json(&snapshot.jwks.to_string());
    assert_eq!(
        keys.as_ref().ok(),
        direct.as_ref().ok(),
        "{}",
        context("snapshot_keys")
    );

    let sessions = Sessions::from_snapshot(snapshot);
    assert_eq!(
        sessions.ended(),
        snapshot.ended.len(),
        "{}",
        context("ended")
    );
    for owner in snapshot
        .members
        .keys()
        .take(8)
        .chain(std::iter::once(&"nobody".to_owned()))
    {
        let token = Identity::new(owner.as_str(), ["from-the-token"]);
        let want = Identity::new(
            owner.as_str(),
            snapshot.members.get(owner).cloned().unwrap_or_default(),
        );
        let live = format!("{owner}-live-session");
        if !snapshot.ended.contains_key(&live) {
            let got = sessions.identity(Some(&live), &token);
            assert_eq!(
                got.as_ref()
                    .map(|i| (i.user(), i.groups().collect::<Vec<_>>())),
                Some((want.user(), want.groups().collect())),
                "{}",
                context(&format!("a live session of {owner:?}"))
            );
        }
        assert_eq!(
            sessions.identity(None, &token),
            None,
            "{}",
            context("a token without a session")
        );
    }
    for id in snapshot.ended.keys().take(8) {
        let token = Identity::new("anyone", ["g"]);
        assert_eq!(
            sessions.identity(Some(id), &token),
            None,
            "{}",
            context(&format!("ended session {id:?}"))
        );
    }

    apply_and_decide(snapshot, &grants, keys.is_ok(), context);
}

fn apply_and_decide(
    snapshot: &Snapshot,
    grants: &[Grant],
    keys_read: bool,
    context: &dyn Fn(&str) -> String,
) {
    let handle = PolicyHandle::new(&snapshot.destination, &[], RoleSet::builtin());
    let state = SyncState::in_process();
    assert!(
        state.apply(snapshot, &handle),
        "{}",
        context("a first snapshot not applied")
    );
    assert_eq!(
        state.generation(),
        snapshot.generation,
        "{}",
        context("generation")
    );
    assert_eq!(
        state.jwks().is_some(),
        keys_read,
        "{}",
        context("keys in force")
    );

    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    let requests = [
        ("GET", "/api/v1/namespaces/web/secrets/db", None),
        ("GET", "/api/v1/pods", Some("watch=1")),
        (
            "POST",
            "/api/v1/namespaces/web/pods/p/exec",
            Some("command=sh"),
        ),
        (
            "DELETE",
            "/apis/apps/v1/namespaces/kube-system/deployments",
            None,
        ),
        ("GET", "/version", None),
    ];
    let mut users: Vec<&String> = grants
        .iter()
        .filter_map(|g| match &g.subject {
            Subject::User(name) => Some(name),
            Subject::Group(_) => None,
        })
        .take(4)
        .collect();
    users.extend(snapshot.members.keys().take(4));
    for user in users {
        let groups = snapshot.members.get(user).cloned().unwrap_or_default();
        let identity = Identity::new(user.as_str(), groups.clone());
        for (method, path, query) in requests {
            // Invariant: these fixed requests are valid.
            let attrs = parse(method, path, query).expect("a valid request");
            let (decision, _) = handle.decide(&identity, &attrs, now);
            let Decision::Allow { grant } = decision else {
                continue;
            };
            let subject_ok = match &grant.subject {
                Subject::User(name) => name == user,
                Subject::Group(name) => groups.contains(name) || name == "system:authenticated",
            };
            assert!(
                subject_ok
                    && grant.resource.destination == snapshot.destination
                    && grant.is_active(now),
                "{}",
                context(&format!("{user:?} {method} {path} allowed by {grant:?}"))
            );
        }
    }
}
