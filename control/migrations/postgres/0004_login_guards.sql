-- Password guesses are counted before they are checked, per account and bucket: the addresses
-- that have logged in to the account before each have a bucket of their own, every other address
-- shares the bucket '*'. So anonymous clients cannot lock an account's owner out from where they
-- usually log in, and at most a few guesses per window are ever checked from anywhere else.
CREATE TABLE login_attempts (
    name         TEXT NOT NULL,
    bucket       TEXT NOT NULL,
    attempts     BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    PRIMARY KEY (name, bucket)
);
CREATE INDEX login_attempts_window_start ON login_attempts (window_start);

-- Client addresses (or their /64 for IPv6) an account has logged in from with its password.
CREATE TABLE login_known_clients (
    name        TEXT NOT NULL,
    client      TEXT NOT NULL,
    last_login  BIGINT NOT NULL,
    PRIMARY KEY (name, client)
);

-- OIDC logins in flight, counted per client address so one client cannot fill them all.
ALTER TABLE oidc_logins ADD COLUMN client TEXT NOT NULL DEFAULT '';
CREATE INDEX oidc_logins_client ON oidc_logins (client);

-- Who a provider login is: (provider, subject), bound to one user for good. A login whose
-- identity is bound to nobody takes the user named by its verified email only if that user has
-- no password and no identity (one an admin made to hand out grants before the first login);
-- any other user is linked only by an admin.
CREATE TABLE user_identities (
    provider   TEXT NOT NULL,
    subject    TEXT NOT NULL,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX user_identities_user_id ON user_identities (user_id);
