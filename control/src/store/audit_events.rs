//! The audit trail (`docs/audit.md`): every event — proxies' requests and the control plane's
//! own actions — in one table, `audit_events`, de-duplicated by event id, searchable by the
//! columns the filters name, followable in arrival order, and removed after the retention.
//!
//! The control plane's actions come in two ways: the changes `write_tx!` makes append their
//! event in the same transaction (so a change that cannot be audited is not made), and actions
//! that change nothing (logins, tokens) through [`Store::append_audit`]. Both build the event
//! with [`control_event`], so every action a new `write_tx!` records is in the trail as it is.

use std::fmt::Write as _;

use infra_api::audit::{Event, Ingested, Kind, SCHEMA_VERSION};

use super::{Columns, ExportPosition, Op as _, Store, StoreError};

/// The columns of an insert, in order.
pub(super) const INSERT_COLUMNS: &str = "INSERT INTO audit_events (event_id, at_us, kind, \
     user_name, groups, destination, verb, resource, namespace, name, decision, reason, body)";

/// One event's insert, skipping an id stored before.
pub(super) const INSERT_ONE: &str = "INSERT INTO audit_events (event_id, at_us, kind, \
     user_name, groups, destination, verb, resource, namespace, name, decision, reason, body) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (event_id) DO NOTHING";

/// [`INSERT_ONE`], answering the row's arrival number.
pub(super) const INSERT_ONE_RETURNING: &str = "INSERT INTO audit_events (event_id, at_us, kind, \
     user_name, groups, destination, verb, resource, namespace, name, decision, reason, body) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING seq";

/// How many parameters one row binds.
const ROW_PARAMS: usize = 13;

/// The most rows one insert statement carries on PostgreSQL.
pub(super) const ROWS_PER_STATEMENT: usize = 500;

/// The most rows one insert statement carries on SQLite. Few: binding a parameter by its
/// `$N` name makes SQLite search the statement's list of names, so a statement's binding time
/// grows with the square of its parameters (at 500 rows, 6,500 parameters, binding took more
/// than half of an ingest's time; `benches/README.md`).
pub(super) const SQLITE_ROWS_PER_STATEMENT: usize = 16;

/// One insert statement of `rows` rows, with placeholders from `$1`, skipping ids stored before.
pub(super) fn insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(80 + rows * 64);
    sql.push_str(INSERT_COLUMNS);
    sql.push_str(" VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        for column in 0..ROW_PARAMS {
            if column > 0 {
                sql.push(',');
            }
            let _ = write!(sql, "${}", row * ROW_PARAMS + column + 1);
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (event_id) DO NOTHING");
    sql
}

/// An event as the table's columns hold it.
pub(super) struct EventRow {
    pub(super) event_id: String,
    pub(super) at_us: i64,
    pub(super) kind: &'static str,
    pub(super) user_name: String,
    pub(super) groups: String,
    pub(super) destination: String,
    pub(super) verb: String,
    pub(super) resource: String,
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) decision: String,
    pub(super) reason: String,
    pub(super) body: String,
}

impl EventRow {
    /// The columns of `event`. Fails only if the event cannot be written as JSON, which a
    /// well-formed event always can.
    pub(super) fn of(event: &Event) -> Result<Self, StoreError> {
        let body = serde_json::to_string(event).map_err(|_| StoreError::InvalidRow {
            what: "audit event".to_owned(),
        })?;
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        // Groups as `\ng1\ng2\n`, so that one group is found with `LIKE '%\ng\n%'`.
        let groups = if event.groups.is_empty() {
            String::new()
        } else {
            let mut joined = String::from("\n");
            for group in &event.groups {
                joined.push_str(group);
                joined.push('\n');
            }
            joined
        };
        // A request's verb, or the control plane's action.
        let verb = event.verb.as_ref().or(event.action.as_ref()).cloned();
        // The object's name, or what the action was done to.
        let name = event.name.as_ref().or(event.target.as_ref()).cloned();
        // Free text: why (a denial, a failed login), or the grant that allowed, or the detail.
        let reason = [&event.reason, &event.grant, &event.detail]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n");
        Ok(Self {
            event_id: event.id.clone(),
            at_us: micros(event.time),
            kind: event.kind.as_str(),
            user_name: text(&event.user),
            groups,
            destination: text(&event.destination),
            verb: verb.unwrap_or_default(),
            resource: text(&event.resource),
            namespace: text(&event.namespace),
            name: name.unwrap_or_default(),
            decision: text(&event.decision),
            reason,
            body,
        })
    }
}

/// Microseconds since the epoch.
pub(super) fn micros(time: jiff::Timestamp) -> i64 {
    time.as_microsecond()
}

/// The event of a control-plane action by `actor` at `at` (seconds since the epoch): `action`
/// on `target`, with `detail`. Logins say whether they succeeded in `decision`.
pub fn control_event(at: i64, actor: &str, action: &str, target: &str, detail: &str) -> Event {
    let kind = Kind::of_action(action);
    let decision = (kind == Kind::Login).then(|| {
        if action.ends_with(".failed") || action.ends_with(".locked") {
            "failure".to_owned()
        } else {
            "success".to_owned()
        }
    });
    let destination = target
        .strip_prefix("destination \"")
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_owned);
    Event {
        schema: SCHEMA_VERSION,
        id: uuid::Uuid::new_v4().to_string(),
        time: jiff::Timestamp::from_second(at).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        kind,
        user: Some(actor.to_owned()),
        destination,
        action: Some(action.to_owned()),
        target: (!target.is_empty()).then(|| target.to_owned()),
        detail: (!detail.is_empty()).then(|| detail.to_owned()),
        decision,
        ..Event::default()
    }
}

/// Which events a query or a follower wants; `None` is "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// The user (or control-plane actor).
    pub user: Option<String>,
    /// One of the user's groups.
    pub group: Option<String>,
    /// The destination.
    pub destination: Option<String>,
    /// The namespace.
    pub namespace: Option<String>,
    /// The verb, or the control plane's action.
    pub verb: Option<String>,
    /// The resource.
    pub resource: Option<String>,
    /// The object's name, or the action's target.
    pub name: Option<String>,
    /// `allow`, `deny`, `none`, `success`, `failure`.
    pub decision: Option<String>,
    /// The kind of event.
    pub kind: Option<Kind>,
    /// At or after, in microseconds since the epoch.
    pub since_us: Option<i64>,
    /// Before, in microseconds since the epoch.
    pub until_us: Option<i64>,
    /// Text the reason, grant or detail contains (case-insensitive).
    pub text: Option<String>,
}

/// A bound value of a built query.
enum Arg {
    Text(String),
    Int(i64),
}

/// The `WHERE` conditions of `filter`, with their values from placeholder `$first` on.
fn conditions(filter: &AuditFilter, args: &mut Vec<Arg>) -> Vec<String> {
    let mut out = Vec::new();
    let mut equal = |column: &str, value: &Option<String>, out: &mut Vec<String>| {
        if let Some(value) = value {
            args.push(Arg::Text(value.clone()));
            out.push(format!("{column} = ${}", args.len()));
        }
    };
    equal("user_name", &filter.user, &mut out);
    equal("destination", &filter.destination, &mut out);
    equal("namespace", &filter.namespace, &mut out);
    equal("verb", &filter.verb, &mut out);
    equal("resource", &filter.resource, &mut out);
    equal("name", &filter.name, &mut out);
    equal("decision", &filter.decision, &mut out);
    let kind = filter.kind.map(|k| k.as_str().to_owned());
    equal("kind", &kind, &mut out);
    if let Some(group) = &filter.group {
        args.push(Arg::Text(format!("%\n{}\n%", like_escape(group))));
        out.push(format!("groups LIKE ${} ESCAPE '\\'", args.len()));
    }
    if let Some(text) = &filter.text {
        args.push(Arg::Text(format!(
            "%{}%",
            like_escape(&text.to_lowercase())
        )));
        out.push(format!("LOWER(reason) LIKE ${} ESCAPE '\\'", args.len()));
    }
    if let Some(since) = filter.since_us {
        args.push(Arg::Int(since));
        out.push(format!("at_us >= ${}", args.len()));
    }
    if let Some(until) = filter.until_us {
        args.push(Arg::Int(until));
        out.push(format!("at_us < ${}", args.len()));
    }
    out
}

fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

/// Where a page of a query ends: the time and arrival of its last (oldest) event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor {
    /// The event's time, in microseconds.
    pub at_us: i64,
    /// Its arrival number.
    pub seq: i64,
}

impl AuditCursor {
    /// The opaque text form (`<at_us>.<seq>`).
    pub fn encode(self) -> String {
        format!("{}.{}", self.at_us, self.seq)
    }

    /// Reads [`Self::encode`]'s form.
    pub fn decode(text: &str) -> Option<Self> {
        let (at, seq) = text.split_once('.')?;
        Some(Self {
            at_us: at.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

fn event_of(row: &dyn Columns) -> Result<Event, StoreError> {
    serde_json::from_str(&row.text("body")?).map_err(|_| StoreError::InvalidRow {
        what: "audit event".to_owned(),
    })
}

/// Runs the built `$sql` with `$args` bound on `$pool`, fetching all rows.
macro_rules! fetch_built {
    ($pool:expr, $sql:expr, $args:expr, $operation:literal) => {{
        // Only column names and placeholders are built into the text; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe($sql));
        for arg in $args {
            query = match arg {
                Arg::Text(text) => query.bind(text),
                Arg::Int(int) => query.bind(int),
            };
        }
        query.fetch_all($pool).await.op($operation)?
    }};
}

impl Store {
    /// Stores `events`, skipping those whose id is stored already, in one transaction.
    pub async fn record_audit_events(&self, events: &[Event]) -> Result<Ingested, StoreError> {
        let rows = events
            .iter()
            .map(EventRow::of)
            .collect::<Result<Vec<_>, _>>()?;
        let total = rows.len() as u64;
        if rows.is_empty() {
            return Ok(Ingested::default());
        }
        let stored = self
            .audit_ingest
            .record(
                || super::audit_ingest::Writer::new(self.backend.clone()),
                rows,
            )
            .await?;
        Ok(Ingested {
            stored,
            duplicates: total - stored,
        })
    }

    /// Up to `limit` events that `filter` wants, newest first, older than `cursor` when given;
    /// with the cursor of the next page when there may be more.
    pub async fn query_audit(
        &self,
        filter: &AuditFilter,
        cursor: Option<AuditCursor>,
        limit: u32,
    ) -> Result<(Vec<Event>, Option<AuditCursor>), StoreError> {
        let mut args = Vec::new();
        let mut conds = conditions(filter, &mut args);
        if let Some(cursor) = cursor {
            args.push(Arg::Int(cursor.at_us));
            let at = args.len();
            args.push(Arg::Int(cursor.seq));
            conds.push(format!(
                "(at_us < ${at} OR (at_us = ${at} AND seq < ${}))",
                args.len()
            ));
        }
        args.push(Arg::Int(i64::from(limit)));
        let sql = format!(
            "SELECT seq, at_us, body FROM audit_events{} ORDER BY at_us DESC, seq DESC LIMIT ${}",
            where_clause(&conds),
            args.len()
        );
        let (events, last) = with_db!(self, |pool, _begin| {
            let rows = fetch_built!(pool, sql.clone(), args, "query the audit trail");
            let mut events = Vec::with_capacity(rows.len());
            let mut last = None;
            for row in &rows {
                events.push(event_of(row)?);
                last = Some(AuditCursor {
                    at_us: row.int("at_us")?,
                    seq: row.int("seq")?,
                });
            }
            (events, last)
        });
        let next = if events.len() == limit as usize {
            last
        } else {
            None
        };
        Ok((events, next))
    }

    /// Up to `limit` events that `filter` wants, after position `after`, in the order the
    /// export reads them (arrival on SQLite; on PostgreSQL by writing transaction and arrival,
    /// only transactions older than every one still running: an event that commits late is
    /// never stepped over), each with its position.
    pub async fn follow_audit(
        &self,
        filter: &AuditFilter,
        after: ExportPosition,
        limit: u32,
    ) -> Result<Vec<(ExportPosition, Event)>, StoreError> {
        let mut args = Vec::new();
        let mut conds = conditions(filter, &mut args);
        let postgres = matches!(self.backend, super::Backend::Postgres(_));
        if postgres {
            args.push(Arg::Int(after.xid));
            let xid = args.len();
            args.push(Arg::Int(after.seq));
            conds.push(format!(
                "(xid, seq) > (CAST(CAST(${xid} AS BIGINT) AS TEXT)::xid8, ${}) \
                 AND xid < pg_snapshot_xmin(pg_current_snapshot())",
                args.len()
            ));
        } else {
            args.push(Arg::Int(after.seq));
            conds.push(format!("seq > ${}", args.len()));
        }
        args.push(Arg::Int(i64::from(limit)));
        let (xid, order) = if postgres {
            ("CAST(CAST(xid AS TEXT) AS BIGINT)", "xid, seq")
        } else {
            ("0", "seq")
        };
        let sql = format!(
            "SELECT {xid} AS xid, seq, body FROM audit_events{} ORDER BY {order} LIMIT ${}",
            where_clause(&conds),
            args.len()
        );
        with_db!(self, |pool, _begin| {
            let rows = fetch_built!(pool, sql.clone(), args, "follow the audit trail");
            rows.iter()
                .map(|row| {
                    let position = ExportPosition {
                        xid: row.int("xid")?,
                        seq: row.int("seq")?,
                    };
                    Ok((position, event_of(row)?))
                })
                .collect()
        })
    }

    /// Where a follower starts: after every event visible now (on PostgreSQL, after every
    /// transaction older than those still running; what those write comes next).
    pub async fn audit_follow_start(&self) -> Result<ExportPosition, StoreError> {
        match &self.backend {
            super::Backend::Sqlite(pool) => Ok(ExportPosition {
                xid: 0,
                seq: sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM audit_events")
                    .fetch_one(pool)
                    .await
                    .op("read the audit trail's end")?
                    .int("seq")?,
            }),
            super::Backend::Postgres(pool) => Ok(ExportPosition {
                xid: sqlx::query(
                    "SELECT CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT) AS BIGINT) - 1 AS xid",
                )
                .fetch_one(pool)
                .await
                .op("read the audit trail's end")?
                .int("xid")?,
                seq: i64::MAX,
            }),
        }
    }

    /// Removes up to `batch` events older than `before_us` (microseconds since the epoch),
    /// oldest first; answers how many. Called again while it removes a whole batch, so that no
    /// one statement holds the database for long.
    pub async fn purge_audit(&self, before_us: i64, batch: u32) -> Result<u64, StoreError> {
        write_tx!(self, |tx| {
            sqlx::query(
                "DELETE FROM audit_events WHERE seq IN \
                 (SELECT seq FROM audit_events WHERE at_us < $1 ORDER BY at_us LIMIT $2)",
            )
            .bind(before_us)
            .bind(i64::from(batch))
            .execute(&mut *tx)
            .await
            .op("remove old audit events")?
            .rows_affected()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_numbers_every_parameter_once() {
        let sql = insert_sql(2);
        assert!(sql.contains("($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)"));
        assert!(sql.contains("($14,"));
        assert!(sql.ends_with("$26) ON CONFLICT (event_id) DO NOTHING"));
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let cursor = AuditCursor {
            at_us: 1_700_000_000_000_000,
            seq: 42,
        };
        assert_eq!(AuditCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(AuditCursor::decode("x.1"), None);
        assert_eq!(AuditCursor::decode("17"), None);
    }

    #[test]
    fn like_patterns_match_the_text_itself() {
        assert_eq!(like_escape("50%_a\\b"), "50\\%\\_a\\\\b");
    }

    #[test]
    fn control_events_name_their_kind_and_login_outcome() {
        let failed = control_event(1, "anonymous", "user.login.failed", "user \"a\"", "x");
        assert_eq!(failed.kind, Kind::Login);
        assert_eq!(failed.decision.as_deref(), Some("failure"));
        let token = control_event(1, "a", "token.issue", "destination \"prod\"", "");
        assert_eq!(token.kind, Kind::Token);
        assert_eq!(token.destination.as_deref(), Some("prod"));
        assert_eq!(token.detail, None);
        let change = control_event(1, "admin", "request.approve", "request 7", "");
        assert_eq!(change.kind, Kind::Change);
        assert_eq!(change.decision, None);
    }
}
