-- Access requests. Kept in step with ../postgres/0005_requests.sql.
--
-- A request asks for `role` on destination (and namespace, '' for the whole destination) for
-- `duration` seconds. state: pending -> approved | denied | cancelled | expired; approved -> ended.
-- Its approval makes a grant (grant_id) that ends with it. Reviews are one per reviewer, so an
-- approval is counted once per person; the review that reaches the quorum and the state change
-- happen in one transaction, which first moves the request's revision (the row lock).
CREATE TABLE access_requests (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    requester        TEXT NOT NULL,
    role             TEXT NOT NULL,
    destination      TEXT NOT NULL,
    namespace        TEXT NOT NULL DEFAULT '',
    duration         INTEGER NOT NULL,
    reason           TEXT NOT NULL,
    rule             TEXT NOT NULL,
    approvals_needed INTEGER NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'cancelled', 'expired', 'ended')),
    created_at       INTEGER NOT NULL,
    pending_until    INTEGER NOT NULL,
    access_starts    INTEGER,
    access_ends      INTEGER,
    grant_id         INTEGER,
    ended_by         TEXT,
    end_comment      TEXT,
    revision         INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX access_requests_by_requester ON access_requests (requester);
CREATE INDEX access_requests_by_state ON access_requests (state);
CREATE INDEX access_requests_by_grant ON access_requests (grant_id);

CREATE TABLE request_reviews (
    request_id INTEGER NOT NULL REFERENCES access_requests (id) ON DELETE CASCADE,
    reviewer   TEXT NOT NULL,
    verdict    TEXT NOT NULL CHECK (verdict IN ('approve', 'deny')),
    comment    TEXT NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (request_id, reviewer)
);

-- Rules made through the API (the policy file's rules are read from the file). body is the
-- rule as the API's JSON.
CREATE TABLE request_rules (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
