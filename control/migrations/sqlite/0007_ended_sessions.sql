-- Sessions that ended lately (a logout, a deleted key or user, a provider's refusal, a lapsed
-- key), kept until every token traded for them has expired. Proxies take a token of a session
-- they never heard of, so they must hear of every ended one: a control plane that restarts, or a
-- replica that starts, reads them from here.
CREATE TABLE ended_sessions (
    id        TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    ended_at  INTEGER NOT NULL
);
CREATE INDEX ended_sessions_ended_at ON ended_sessions (ended_at);
