//! The wire types of `infra-api` against the schemas of `control/openapi.yaml`: each type, filled
//! in every way it can be (optional fields set and unset), serializes to JSON the document's schema
//! accepts — every required property present, no property the schema does not name, every value
//! of the documented type — and every documented property of a response object is one the type
//! writes. So the document, the server and the CLI cannot drift apart unnoticed.

use std::collections::BTreeMap;

use infra_api::sync::{Change, Delta, Message, Snapshot, WireGrant};
use infra_api::{
    Access, AccessKey, Destination, DestinationBody, ErrorBody, Grant, GrantUpdate, Group,
    IdentityLink, KeyKind, LoginRequest, LoginResponse, Me, NewGrant, NewGroup, NewKey,
    NewPassword, NewUser, OidcStart, OidcStartRequest, Page, Provider, ProviderBody, ProviderKind,
    ProviderSummary, Source, Token, TokenRequest, User, Version, Why, WhyGrant, WhyNotAllowed,
    WhyRule,
};
use infra_control::api::OPENAPI;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};

#[path = "wire/audit.rs"]
mod audit;
#[path = "wire/requests.rs"]
mod requests;

fn document() -> Value {
    serde_saphyr::from_str(OPENAPI).expect("control/openapi.yaml is YAML")
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let schema = &doc["components"]["schemas"][name];
    assert!(!schema.is_null(), "no schema {name:?} in the document");
    schema
}

/// Follows a `$ref` to its schema.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
            resolve(doc, self::schema(doc, name))
        }
        None => schema,
    }
}

/// The schema's `allOf` parts merged into one object schema (properties and required lists).
fn merged(doc: &Value, schema: &Value) -> Value {
    let schema = resolve(doc, schema);
    let Some(parts) = schema.get("allOf").and_then(Value::as_array) else {
        return schema.clone();
    };
    let mut properties = Map::new();
    let mut required = Vec::new();
    for part in parts {
        let part = merged(doc, part);
        if let Some(props) = part.get("properties").and_then(Value::as_object) {
            for (name, property) in props {
                // A later part refines an earlier one's property (a list's `items`): keep both.
                let entry = properties.entry(name.clone()).or_insert(Value::Null);
                *entry = match (entry.take(), property) {
                    (Value::Object(mut old), Value::Object(new)) => {
                        old.extend(new.clone());
                        Value::Object(old)
                    }
                    (_, p) => p.clone(),
                };
            }
        }
        if let Some(names) = part.get("required").and_then(Value::as_array) {
            required.extend(names.iter().cloned());
        }
    }
    serde_json::json!({"type": "object", "properties": properties, "required": required})
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        other => panic!("unknown schema type {other:?}"),
    }
}

/// Why `value` does not fit `schema`, if it does not. `strict`: an object may hold only the
/// properties the schema names (what the server writes must be documented).
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, strict: bool) -> Result<(), String> {
    let schema = merged(doc, schema);
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let fits = options
            .iter()
            .filter(|option| check(doc, option, value, at, strict).is_ok())
            .count();
        return if fits == 1 {
            Ok(())
        } else {
            Err(format!(
                "{at}: {value} fits {fits} of the oneOf options, not exactly one"
            ))
        };
    }
    match schema.get("type") {
        Some(Value::String(name)) if !type_matches(name, value) => {
            return Err(format!("{at}: {value} is not of type {name}"));
        }
        Some(Value::Array(names))
            if !names
                .iter()
                .filter_map(Value::as_str)
                .any(|name| type_matches(name, value)) =>
        {
            return Err(format!("{at}: {value} is of none of the types {names:?}"));
        }
        _ => {}
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
        for (i, item) in values.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"), strict)?;
        }
    }
    let Some(object) = value.as_object() else {
        return Ok(());
    };
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                return Err(format!("{at}: the required property {name:?} is missing"));
            }
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    for (name, item) in object {
        match properties.and_then(|p| p.get(name)) {
            Some(property) => check(doc, property, item, &format!("{at}.{name}"), strict)?,
            None => match schema.get("additionalProperties") {
                Some(Value::Bool(false)) => {
                    return Err(format!("{at}: property {name:?} is not in the schema"));
                }
                Some(extra @ Value::Object(_)) => {
                    check(doc, extra, item, &format!("{at}.{name}"), strict)?;
                }
                _ if strict && properties.is_some() => {
                    return Err(format!("{at}: property {name:?} is not documented"));
                }
                _ => {}
            },
        }
    }
    Ok(())
}

/// `values` fit the schema `name`; with `complete`, together they write every property the
/// schema documents.
fn fits<T: Serialize>(doc: &Value, name: &str, values: &[T], complete: bool) {
    let schema = schema(doc, name);
    let mut written = std::collections::BTreeSet::new();
    for value in values {
        let json = serde_json::to_value(value).expect("serializes");
        if let Err(why) = check(doc, schema, &json, name, true) {
            panic!("{name}: {why}\n{json:#}");
        }
        if let Some(object) = json.as_object() {
            written.extend(object.keys().cloned());
        }
    }
    if complete {
        let merged = merged(doc, schema);
        let documented = merged["properties"].as_object().expect("an object schema");
        for property in documented.keys() {
            assert!(
                written.contains(property),
                "{name}: the document names {property:?}, which the type never writes"
            );
        }
    }
}

fn at() -> Timestamp {
    "2026-12-07T10:00:00Z".parse().expect("a time")
}

fn user() -> User {
    User {
        name: "suzie@example.com".into(),
        has_password: false,
        groups: vec!["Engineering".into()],
        source: Source::Api,
        created_at: at(),
        updated_at: at(),
        revision: 3,
    }
}

fn grant(expires: bool) -> Grant {
    Grant {
        id: 7,
        user: expires.then(|| "suzie@example.com".to_owned()),
        group: (!expires).then(|| "Engineering".to_owned()),
        role: "edit".into(),
        resource: "production.web".into(),
        expires_at: expires.then(at),
        problem: expires.then(|| "role \"edit\" exists neither ...".to_owned()),
        source: if expires {
            Source::Request
        } else {
            Source::File
        },
        request_id: expires.then_some(12),
        created_at: at(),
        created_by: "admin".into(),
        revision: 1,
    }
}

fn key(created: bool) -> AccessKey {
    AccessKey {
        id: "k5v8q2".into(),
        user: "suzie@example.com".into(),
        name: "ci".into(),
        kind: if created {
            KeyKind::Api
        } else {
            KeyKind::Session
        },
        created_at: at(),
        expires_at: created.then(at),
        inactivity_timeout_seconds: created.then_some(86_400),
        last_used_at: at(),
        key: created.then(|| "k5v8q2.secret".to_owned()),
    }
}

fn page<T: Clone>(items: &[T]) -> Page<T> {
    Page {
        items: items.to_vec(),
        page: 1,
        limit: 100,
        total: items.len(),
    }
}

#[test]
fn answers_fit_their_schemas_and_write_every_documented_property() {
    let doc = document();
    fits(
        &doc,
        "Version",
        &[Version {
            version: "0.1.0".into(),
        }],
        true,
    );
    fits(
        &doc,
        "Error",
        &[ErrorBody {
            code: "file_owned".into(),
            message: "declared in the policy file".into(),
        }],
        true,
    );
    fits(
        &doc,
        "LoginResponse",
        &[
            LoginResponse {
                user: "admin".into(),
                access_key: "id.secret".into(),
                expires_at: Some(at()),
            },
            LoginResponse {
                user: "admin".into(),
                access_key: "id.secret".into(),
                expires_at: None,
            },
        ],
        true,
    );
    fits(
        &doc,
        "OidcStart",
        &[OidcStart {
            authorize_url: "https://idp.example.com/authorize?...".into(),
            state: "s".into(),
        }],
        true,
    );
    fits(
        &doc,
        "Token",
        &[Token {
            token: "eyJ...".into(),
            expires_at: at(),
        }],
        true,
    );
    fits(
        &doc,
        "Me",
        &[Me {
            name: "suzie@example.com".into(),
            groups: vec!["Engineering".into()],
            admin: false,
        }],
        true,
    );
    let access = [
        Access {
            destination: "production".into(),
            url: "https://proxy.example.com".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----".into(),
            namespace: Some("web".into()),
            role: "edit".into(),
            expires_at: Some(at()),
        },
        Access {
            destination: "production".into(),
            url: "https://proxy.example.com".into(),
            ca_pem: String::new(),
            namespace: None,
            role: "view".into(),
            expires_at: None,
        },
    ];
    fits(&doc, "MyAccess", &access, true);
    fits(&doc, "MyAccessList", &[page(&access)], true);
    fits(&doc, "User", &[user()], true);
    fits(&doc, "UserList", &[page(&[user()])], true);
    let group = Group {
        name: "Engineering".into(),
        members: 12,
        source: Source::Api,
        created_at: at(),
        revision: 2,
    };
    fits(&doc, "Group", std::slice::from_ref(&group), true);
    fits(&doc, "GroupList", &[page(&[group])], true);
    fits(
        &doc,
        "MemberList",
        &[page(&["suzie@example.com".to_owned()])],
        true,
    );
    fits(&doc, "Grant", &[grant(true), grant(false)], true);
    fits(
        &doc,
        "GrantList",
        &[page(&[grant(true), grant(false)])],
        true,
    );
    fits(&doc, "AccessKey", &[key(false)], true);
    fits(&doc, "CreatedAccessKey", &[key(true)], true);
    fits(&doc, "AccessKeyList", &[page(&[key(false)])], true);
    let summary = ProviderSummary {
        name: "okta".into(),
        kind: ProviderKind::Okta,
        url: "acme.okta.com".into(),
    };
    fits(&doc, "PublicProvider", std::slice::from_ref(&summary), true);
    fits(&doc, "PublicProviderList", &[page(&[summary])], true);
    fits(
        &doc,
        "Provider",
        &[Provider {
            name: "okta".into(),
            kind: ProviderKind::Azure,
            url: "acme.okta.com".into(),
            client_id: "0oa".into(),
            scopes: vec!["groups".into()],
            source: Source::File,
            revision: 1,
        }],
        true,
    );
    let grant = WhyGrant {
        user: Some("suzie".into()),
        group: None,
        role: "edit".into(),
        resource: "production.web".into(),
        expires_at: Some(at()),
    };
    fits(
        &doc,
        "Why",
        &[
            Why {
                destination: "production".into(),
                user: "suzie".into(),
                groups: vec!["eng".into()],
                request: r#"delete pods "p" in the namespace "web""#.into(),
                allowed: true,
                reason: "allowed".into(),
                allowed_by: Some(grant.clone()),
                rule: Some(WhyRule {
                    index: 2,
                    verbs: vec!["delete".into()],
                    api_groups: vec![String::new()],
                    resources: vec!["pods".into()],
                    resource_names: vec![],
                    non_resource_urls: vec![],
                }),
                not_allowed: vec![],
                notes: vec![],
            },
            Why {
                destination: "production".into(),
                user: "suzie".into(),
                groups: vec![],
                request: r#"delete pods "p" in the namespace "db""#.into(),
                allowed: false,
                reason: "no grant allows it".into(),
                allowed_by: None,
                rule: None,
                not_allowed: vec![WhyNotAllowed {
                    grant: WhyGrant {
                        user: None,
                        group: Some("eng".into()),
                        expires_at: None,
                        ..grant
                    },
                    why: "covers only the namespace \"web\"".into(),
                }],
                notes: vec!["a note".into()],
            },
        ],
        true,
    );
    let destination = Destination {
        name: "production".into(),
        url: "https://proxy.example.com".into(),
        ca_pem: "-----BEGIN CERTIFICATE-----".into(),
        version: "0.1.0".into(),
        last_seen_at: Some(at()),
        connected: true,
        unknown_roles: vec!["deployer".into()],
        outside_bindings: vec![
            r#"RoleBinding "default/x" binds user "suzie" to ClusterRole "view""#.into(),
        ],
    };
    fits(
        &doc,
        "Destination",
        std::slice::from_ref(&destination),
        true,
    );
    fits(&doc, "DestinationList", &[page(&[destination])], true);
}

#[test]
fn requests_the_clients_send_fit_their_schemas() {
    let doc = document();
    fits(
        &doc,
        "LoginRequest",
        &[
            LoginRequest::Password {
                name: "admin".into(),
                password: "correct horse".into(),
            },
            LoginRequest::AccessKey("id.secret".into()),
            LoginRequest::Oidc {
                state: "s".into(),
                code: "c".into(),
                code_verifier: "v".into(),
            },
        ],
        false,
    );
    fits(
        &doc,
        "OidcStartRequest",
        &[OidcStartRequest {
            provider: "okta".into(),
            redirect_uri: "http://127.0.0.1:5000/callback".into(),
            code_challenge: "abc".into(),
        }],
        true,
    );
    fits(
        &doc,
        "TokenRequest",
        &[TokenRequest {
            destination: "production".into(),
        }],
        true,
    );
    fits(
        &doc,
        "NewUser",
        &[
            NewUser {
                name: "bob".into(),
                password: Some("a long password".into()),
            },
            NewUser {
                name: "bob".into(),
                password: None,
            },
        ],
        true,
    );
    fits(
        &doc,
        "NewPassword",
        &[NewPassword {
            password: "a long password".into(),
        }],
        true,
    );
    fits(&doc, "NewGroup", &[NewGroup { name: "SRE".into() }], true);
    fits(
        &doc,
        "IdentityLink",
        &[IdentityLink {
            provider: "okta".into(),
            subject: "00u1abcd".into(),
        }],
        true,
    );
    fits(
        &doc,
        "NewGrant",
        &[
            NewGrant {
                user: Some("bob".into()),
                group: None,
                role: "view".into(),
                resource: "production".into(),
                expires_at: Some(at().to_string()),
            },
            NewGrant {
                user: None,
                group: Some("SRE".into()),
                role: "view".into(),
                resource: "production".into(),
                expires_at: None,
            },
        ],
        true,
    );
    fits(
        &doc,
        "GrantUpdate",
        &[
            GrantUpdate {
                expires_at: Some(at().to_string()),
                revision: 2,
            },
            GrantUpdate {
                expires_at: None,
                revision: 2,
            },
        ],
        true,
    );
    fits(
        &doc,
        "NewAccessKey",
        &[NewKey {
            name: "ci".into(),
            user: Some("bob".into()),
            expires_at: Some(at().to_string()),
            inactivity_timeout_seconds: Some(3600),
        }],
        true,
    );
    let provider = ProviderBody {
        name: Some("okta".into()),
        kind: Some("okta".into()),
        url: "acme.okta.com".into(),
        client_id: "0oa".into(),
        client_secret: Some("secret".into()),
        scopes: vec![],
        revision: None,
    };
    fits(&doc, "NewProvider", std::slice::from_ref(&provider), false);
    fits(
        &doc,
        "ProviderUpdate",
        &[ProviderBody {
            revision: Some(3),
            client_secret: None,
            ..provider
        }],
        false,
    );
    fits(
        &doc,
        "DestinationBody",
        &[DestinationBody {
            url: "https://proxy.example.com".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----".into(),
            version: "0.1.0".into(),
            unknown_roles: vec![],
            outside_bindings: vec![
                "ClusterRoleBinding \"x\" binds group \"eng\" to ClusterRole \"view\"".into(),
            ],
        }],
        true,
    );
}

#[test]
fn sync_messages_fit_their_schema() {
    let doc = document();
    let snapshot = Snapshot {
        protocol: infra_api::sync::PROTOCOL,
        seq: 41,
        generation: 1_765_000_000_000,
        destination: "production".into(),
        issuer: "https://infra.example.com".into(),
        jwks: serde_json::json!({"keys": []}),
        grants: vec![
            WireGrant {
                user: Some("suzie@example.com".into()),
                group: None,
                role: "edit".into(),
                resource: "production.web".into(),
                expires_at: Some(1_900_000_000),
            },
            WireGrant {
                user: None,
                group: Some("Engineering".into()),
                role: "view".into(),
                resource: "production".into(),
                expires_at: None,
            },
        ],
        members: BTreeMap::from([("suzie@example.com".into(), vec!["Engineering".into()])]),
        ended: BTreeMap::from([("k0".into(), "suzie@example.com".into())]),
    };
    let delta = Delta {
        after: 41,
        seq: 44,
        changes: vec![
            Change::Member {
                user: "carl@example.com".into(),
                groups: vec!["Engineering".into()],
            },
            Change::Grants {
                removed: vec![],
                added: vec![WireGrant {
                    user: Some("carl@example.com".into()),
                    group: None,
                    role: "view".into(),
                    resource: "production.db".into(),
                    expires_at: None,
                }],
            },
            Change::Ended(BTreeMap::from([("k1".into(), "suzie@example.com".into())])),
        ],
    };
    fits(
        &doc,
        "SyncMessage",
        &[
            Message::Snapshot(Box::new(snapshot)),
            Message::Delta(delta),
            Message::Heartbeat(44),
        ],
        false,
    );
}

#[test]
fn the_check_refuses_what_the_document_does_not_say() {
    let doc = document();
    let user = serde_json::to_value(user()).expect("json");
    let mut extra = user.clone();
    extra["nickname"] = Value::String("suz".into());
    assert!(check(&doc, schema(&doc, "User"), &extra, "User", true).is_err());
    let mut missing = user.clone();
    missing.as_object_mut().expect("object").remove("revision");
    assert!(check(&doc, schema(&doc, "User"), &missing, "User", true).is_err());
    let mut wrong = user;
    wrong["source"] = Value::String("ldap".into());
    assert!(check(&doc, schema(&doc, "User"), &wrong, "User", true).is_err());
}
