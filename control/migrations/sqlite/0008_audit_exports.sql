-- Exports of the audit trail (docs/audit.md, "OpenTelemetry"): one row per export (`otlp`).
-- `after_seq` is the arrival number of the last event the receiver accepted (the export goes
-- on after it); `after_xid` is 0 on SQLite (PostgreSQL orders by transaction first). `holder`
-- is the replica that exports now, until `lease_until_ms` (milliseconds since the epoch).
CREATE TABLE audit_exports (
    name           TEXT PRIMARY KEY,
    after_xid      INTEGER NOT NULL DEFAULT 0,
    after_seq      INTEGER NOT NULL DEFAULT 0,
    holder         TEXT NOT NULL DEFAULT '',
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    exported       INTEGER NOT NULL DEFAULT 0,
    dropped        INTEGER NOT NULL DEFAULT 0
);
