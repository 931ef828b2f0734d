//! Snapshot tests of what list commands print: each table and its JSON, compared with the
//! checked-in text in `snapshots/`. After a deliberate change, rewrite them with
//! `UPDATE_SNAPSHOTS=1 cargo test -p infra snapshots` and review the diff.

use std::path::PathBuf;

use infra_api::{KeyKind, ProviderKind, Source};

use crate::api::{AccessKey, Destination, Grant, Group, Provider, User};
use crate::args::Format;
use crate::commands;
use crate::output;

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_SNAPSHOTS=1", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs; if the change is intended, run with UPDATE_SNAPSHOTS=1",
        path.display()
    );
}

fn ts(text: &str) -> jiff::Timestamp {
    text.parse().expect("timestamp")
}

fn both<T: serde::Serialize>(name: &str, data: &T, table: impl Fn() -> String) {
    check(
        &format!("{name}.txt"),
        &output::render(Format::Table, data, &table).expect("table"),
    );
    check(
        &format!("{name}.json"),
        &output::render(Format::Json, data, &table).expect("json"),
    );
}

fn grant(id: i64, user: Option<&str>, group: Option<&str>, role: &str, resource: &str) -> Grant {
    Grant {
        id,
        user: user.map(str::to_owned),
        group: group.map(str::to_owned),
        role: role.into(),
        resource: resource.into(),
        expires_at: None,
        problem: None,
        source: Source::Api,
        request_id: None,
        created_at: ts("2026-11-22T13:50:06Z"),
        created_by: "admin".into(),
        revision: 1,
    }
}

#[test]
fn grants_list() {
    let grants = vec![
        grant(1, Some("suzie@example.com"), None, "admin", "production"),
        grant(2, None, Some("Engineering"), "view", "production"),
        grant(3, None, Some("Engineering"), "edit", "production.web"),
    ];
    both("grants", &grants, || commands::grants_table(&grants));
}

#[test]
fn grants_list_with_an_expiring_grant() {
    let mut grants = vec![
        grant(1, Some("suzie@example.com"), None, "admin", "production"),
        grant(2, None, Some("Engineering"), "view", "production"),
    ];
    grants[0].expires_at = Some(ts("2026-11-22T14:50:06Z"));
    check("grants-expiring.txt", &commands::grants_table(&grants));
}

#[test]
fn users_list() {
    let users = vec![
        User {
            name: "admin".into(),
            has_password: true,
            groups: vec![],
            source: Source::File,
            created_at: ts("2026-11-01T09:00:00Z"),
            updated_at: ts("2026-11-01T09:00:00Z"),
            revision: 1,
        },
        User {
            name: "suzie@example.com".into(),
            has_password: false,
            groups: vec!["Engineering".into(), "Everyone".into()],
            source: Source::Api,
            created_at: ts("2026-11-22T13:50:06Z"),
            updated_at: ts("2026-11-22T13:55:00Z"),
            revision: 3,
        },
    ];
    both("users", &users, || commands::users_table(&users));
}

#[test]
fn groups_list() {
    let groups = vec![Group {
        name: "Engineering".into(),
        members: 12,
        source: Source::Api,
        created_at: ts("2026-11-22T13:50:06Z"),
        revision: 2,
    }];
    both("groups", &groups, || commands::groups_table(&groups));
}

#[test]
fn keys_list() {
    let keys = vec![AccessKey {
        id: "k5v8q2".into(),
        user: "suzie@example.com".into(),
        name: "ci".into(),
        kind: KeyKind::Api,
        created_at: ts("2026-11-22T13:50:06Z"),
        expires_at: Some(ts("2026-12-22T13:50:06Z")),
        inactivity_timeout_seconds: Some(86_400),
        last_used_at: ts("2026-11-22T13:50:06Z"),
        key: None,
    }];
    both("keys", &keys, || commands::keys_table(&keys));
}

#[test]
fn destinations_list() {
    let list = vec![Destination {
        name: "production".into(),
        url: "https://proxy.example.com:8443".into(),
        ca_pem: String::new(),
        version: "0.1.0".into(),
        last_seen_at: Some(ts("2026-11-22T13:50:06Z")),
        connected: true,
        unknown_roles: vec![],
        outside_bindings: vec![],
    }];
    both("destinations", &list, || {
        commands::destinations_table(&list)
    });
}

#[test]
fn providers_list() {
    let list = vec![Provider {
        name: "okta".into(),
        kind: ProviderKind::Okta,
        url: "https://acme.okta.com".into(),
        client_id: "0oapn0qwiQPiMIyR35d6".into(),
        scopes: vec!["openid".into(), "email".into(), "groups".into()],
        source: Source::File,
        revision: 1,
    }];
    both("providers", &list, || commands::providers_table(&list));
}

#[test]
fn access_list() {
    let access = vec![
        crate::api::Access {
            destination: "production".into(),
            url: "https://proxy.example.com:8443".into(),
            ca_pem: String::new(),
            namespace: None,
            role: "view".into(),
            expires_at: None,
        },
        crate::api::Access {
            destination: "production-eu-1".into(),
            url: "https://eu.example.com:8443".into(),
            ca_pem: String::new(),
            namespace: None,
            role: "admin".into(),
            expires_at: None,
        },
        crate::api::Access {
            destination: "staging".into(),
            url: "https://staging.example.com:8443".into(),
            ca_pem: String::new(),
            namespace: Some("web".into()),
            role: "edit".into(),
            expires_at: None,
        },
    ];
    let items = commands::list_items(&access);
    both("list", &items, || commands::list_table(&items));
}

#[test]
fn whoami() {
    check(
        "whoami.txt",
        &commands::whoami_table(
            "suzie@example.com",
            "https://infra.example.com:443",
            &["Engineering".into()],
            false,
        ),
    );
}
