-- Exports of the audit trail (docs/audit.md, "OpenTelemetry"): one row per export (`otlp`).
--
-- On PostgreSQL `seq` is taken when a row is inserted, not when its transaction commits, so a
-- row with a smaller `seq` can become visible after one with a larger: following by `seq` alone
-- could step over it. Each row therefore records the transaction that wrote it (`xid`), and an
-- export reads, in (`xid`, `seq`) order, only rows of transactions older than every one still
-- running (`pg_snapshot_xmin`): no row can appear later before its position.
ALTER TABLE audit_events ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX audit_events_xid_seq ON audit_events (xid, seq);

-- `after_xid`, `after_seq`: the last event the receiver accepted (the export goes on after it).
-- `holder` is the replica that exports now, until `lease_until_ms` (milliseconds since the
-- epoch); another takes over when the lease has run out.
CREATE TABLE audit_exports (
    name           TEXT PRIMARY KEY,
    after_xid      BIGINT NOT NULL DEFAULT 0,
    after_seq      BIGINT NOT NULL DEFAULT 0,
    holder         TEXT NOT NULL DEFAULT '',
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    exported       BIGINT NOT NULL DEFAULT 0,
    dropped        BIGINT NOT NULL DEFAULT 0
);
