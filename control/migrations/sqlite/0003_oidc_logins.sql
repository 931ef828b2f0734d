-- OIDC logins in flight, so that a login started on one control replica can finish on another.
-- The state is kept only as its SHA-256 (hex); a row is deleted when the login finishes (one
-- atomic DELETE ... RETURNING: single use across replicas) and expired rows when a login starts.
CREATE TABLE oidc_logins (
    state_sha256   TEXT PRIMARY KEY,
    provider       TEXT NOT NULL,
    nonce          TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    expires_at     INTEGER NOT NULL
);
CREATE INDEX oidc_logins_expires_at ON oidc_logins (expires_at);
