//! Sessions that ended lately, kept until every token traded for them has expired (see the
//! migration `0007_ended_sessions.sql`): what a control plane tells proxies after a restart.

use std::time::SystemTime;

use super::{Columns as _, Op as _, Store, StoreError, secs, time};

impl Store {
    /// Records that `sessions` ((access key id, user)) ended at `now`.
    pub async fn record_ended_sessions(
        &self,
        sessions: &[(String, String)],
        now: SystemTime,
    ) -> Result<(), StoreError> {
        write_tx!(self, |tx| {
            for (id, user) in sessions {
                sqlx::query(
                    "INSERT INTO ended_sessions (id, user_name, ended_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(user)
                .bind(secs(now))
                .execute(&mut *tx)
                .await
                .op("record an ended session")?;
            }
        })
    }

    /// The sessions that ended at or after `since`, (id, user, when); older ones are deleted.
    pub async fn ended_sessions(
        &self,
        since: SystemTime,
    ) -> Result<Vec<(String, String, SystemTime)>, StoreError> {
        write_tx!(self, |tx| {
            sqlx::query("DELETE FROM ended_sessions WHERE ended_at < $1")
                .bind(secs(since))
                .execute(&mut *tx)
                .await
                .op("forget old ended sessions")?;
            let rows = sqlx::query("SELECT id, user_name, ended_at FROM ended_sessions")
                .fetch_all(&mut *tx)
                .await
                .op("list ended sessions")?;
            let mut ended = Vec::with_capacity(rows.len());
            for row in &rows {
                ended.push((
                    row.text("id")?,
                    row.text("user_name")?,
                    time(row.int("ended_at")?),
                ));
            }
            ended
        })
    }
}
