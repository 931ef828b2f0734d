-- The audit trail (docs/audit.md): proxies' requests and the control plane's own actions, one
-- row per event. `event_id` makes a batch sent twice count once; `seq` orders arrival (for
-- following); `at_us` is the event's time in microseconds since the epoch. The filter columns
-- hold '' for "none"; `body` is the whole event as JSON (schema in infra-api's `audit`).
CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL UNIQUE,
    at_us       INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    groups      TEXT NOT NULL,
    destination TEXT NOT NULL,
    verb        TEXT NOT NULL,
    resource    TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    decision    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX audit_events_user_at ON audit_events (user_name, at_us);
CREATE INDEX audit_events_destination_at ON audit_events (destination, at_us);
CREATE INDEX audit_events_kind_at ON audit_events (kind, at_us);
CREATE INDEX audit_events_at ON audit_events (at_us);

-- The control actions recorded before this version, kept in the one trail.
INSERT INTO audit_events (event_id, at_us, kind, user_name, groups, destination, verb, resource,
                          namespace, name, decision, reason, body)
SELECT 'control-log-' || id, at * 1000000,
       CASE WHEN action LIKE 'user.login%' THEN 'login'
            WHEN action LIKE 'token.%' THEN 'token'
            WHEN action LIKE 'session.%' THEN 'session'
            WHEN action LIKE 'policy.%' THEN 'policy'
            ELSE 'change' END,
       actor, '', '', action, '', '', target, '', detail,
       json_object('schema', 1, 'id', 'control-log-' || id,
                   'time', strftime('%Y-%m-%dT%H:%M:%SZ', at, 'unixepoch'),
                   'kind', CASE WHEN action LIKE 'user.login%' THEN 'login'
                                WHEN action LIKE 'token.%' THEN 'token'
                                WHEN action LIKE 'session.%' THEN 'session'
                                WHEN action LIKE 'policy.%' THEN 'policy'
                                ELSE 'change' END,
                   'user', actor, 'action', action, 'target', target, 'detail', detail)
FROM audit_log ORDER BY id;
