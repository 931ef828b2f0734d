//! The access request rules made through the API (the policy file's are read from the file),
//! each kept as the API's JSON.

use std::time::SystemTime;

use super::{Entry, Op as _, Store, StoreError, secs};

impl Store {
    /// The request rules made through the API: (name, JSON body).
    pub async fn list_request_rules(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.fetch_all(
            "SELECT name, body FROM request_rules ORDER BY id",
            None,
            "list request rules",
            |r| Ok((r.text("name")?, r.text("body")?)),
        )
        .await
    }

    /// Stores a request rule made through the API.
    pub async fn create_request_rule(
        &self,
        actor: &str,
        name: &str,
        body: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let at = secs(now);
        write_tx!(self, at, actor, |tx| {
            let inserted = sqlx::query(
                "INSERT INTO request_rules (name, body, created_at, created_by) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(body)
            .bind(at)
            .bind(actor)
            .execute(&mut *tx)
            .await
            .op("create a request rule")?
            .rows_affected();
            if inserted == 0 {
                return Err(StoreError::AlreadyExists {
                    what: format!("request rule {name:?}"),
                });
            }
            (
                (),
                Entry::new("request_rule.create", format!("request rule {name:?}"))
                    .detail(body.to_owned()),
            )
        })
    }

    /// Deletes a request rule made through the API.
    pub async fn delete_request_rule(
        &self,
        actor: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.delete_one(
            actor,
            "DELETE FROM request_rules WHERE name = $1",
            name,
            "delete a request rule",
            "request_rule.delete",
            format!("request rule {name:?}"),
            now,
        )
        .await
    }
}
