-- Infra control plane store, SQLite. Kept in step with ../postgres/0001_init.sql: same tables,
-- columns and constraints; only the types and the id columns are spelled per dialect.
-- Times are whole seconds since the Unix epoch. Every row that can be updated has a revision,
-- for optimistic concurrency.

-- What this store is: the root key check value (sealed), written once at first start.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    revision      INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE user_groups (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revision   INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE group_members (
    group_id INTEGER NOT NULL REFERENCES user_groups (id) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_by_user ON group_members (user_id);

-- Subjects are names, not references: a grant may name a group of an identity provider, or a
-- user who has not logged in yet. namespace is '' for the whole destination, so that the
-- unique constraint holds (NULLs are distinct in both databases).
CREATE TABLE grants (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('user', 'group')),
    subject_name TEXT NOT NULL,
    role         TEXT NOT NULL,
    destination  TEXT NOT NULL,
    namespace    TEXT NOT NULL DEFAULT '',
    expires_at   INTEGER,
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    updated_at   INTEGER NOT NULL,
    revision     INTEGER NOT NULL DEFAULT 1,
    UNIQUE (subject_kind, subject_name, role, destination, namespace)
);
CREATE INDEX grants_by_destination ON grants (destination);

CREATE TABLE access_keys (
    id                 TEXT PRIMARY KEY,
    user_id            INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    kind               TEXT NOT NULL CHECK (kind IN ('session', 'api')),
    secret_hash        BLOB NOT NULL,
    created_at         INTEGER NOT NULL,
    expires_at         INTEGER,
    inactivity_timeout INTEGER,
    last_used_at       INTEGER NOT NULL
);
CREATE INDEX access_keys_by_user ON access_keys (user_id);

CREATE TABLE providers (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL,
    url           TEXT NOT NULL,
    client_id     TEXT NOT NULL,
    client_secret BLOB NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    revision      INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE idp_sessions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider_id     INTEGER NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    refresh_token   BLOB NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    last_checked_at INTEGER NOT NULL,
    UNIQUE (user_id, provider_id)
);
CREATE INDEX idp_sessions_by_check ON idp_sessions (last_checked_at);

CREATE TABLE destinations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL UNIQUE,
    url          TEXT NOT NULL,
    ca_pem       TEXT NOT NULL,
    version      TEXT NOT NULL,
    last_seen_at INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    revision     INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    public_key  BLOB NOT NULL,
    private_key BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);

CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);

-- Failed logins by the name tried (known or not, so that a lockout tells nothing about which
-- names exist). Shared by replicas; survives restarts.
CREATE TABLE login_failures (
    name         TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    locked_until INTEGER
);
