//! Groups and their members.

use std::time::SystemTime;

use infra_authz::policy::{Subject, validate_subject_name};

use super::{Columns, Entry, Op as _, Store, StoreError, not_found, secs, time};

/// A group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The store's id.
    pub id: i64,
    /// The name.
    pub name: String,
    /// When the group was made.
    pub created_at: SystemTime,
    /// The revision.
    pub revision: i64,
}

fn group_from(row: &dyn Columns) -> Result<Group, StoreError> {
    Ok(Group {
        id: row.int("id")?,
        name: row.text("name")?,
        created_at: time(row.int("created_at")?),
        revision: row.int("revision")?,
    })
}

impl Store {
    /// Creates a group.
    pub async fn create_group(
        &self,
        actor: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<Group, StoreError> {
        validate_subject_name(name)?;
        let at = secs(now);
        let target = format!("group {name:?}");
        write_tx!(self, at, actor, |tx| {
            let row = sqlx::query(
                "INSERT INTO user_groups (name, created_at) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING RETURNING id, name, created_at, revision",
            )
            .bind(name)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await
            .op("create a group")?;
            let Some(row) = row else {
                return Err(StoreError::AlreadyExists { what: target });
            };
            let entry =
                Entry::new("group.create", target).after(&serde_json::json!({ "name": name }));
            (group_from(&row)?, entry)
        })
    }

    /// The group called `name`.
    pub async fn get_group(&self, name: &str) -> Result<Group, StoreError> {
        self.fetch_one(
            "SELECT id, name, created_at, revision FROM user_groups WHERE name = $1",
            name,
            "read a group",
            "group",
            group_from,
        )
        .await
    }

    /// All groups, by name.
    pub async fn list_groups(&self) -> Result<Vec<Group>, StoreError> {
        self.fetch_all(
            "SELECT id, name, created_at, revision FROM user_groups ORDER BY name",
            None,
            "list groups",
            group_from,
        )
        .await
    }

    /// Deletes a group with its memberships and grants.
    pub async fn delete_group(
        &self,
        actor: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.delete_subject(actor, &Subject::Group(name.to_owned()), now)
            .await
    }

    /// Adds `user` to `group`. `Ok(false)` when they were a member already.
    pub async fn add_member(
        &self,
        actor: &str,
        group: &str,
        user: &str,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let at = secs(now);
        let target = format!("group {group:?} member {user:?}");
        write_tx!(self, at, actor, |tx| {
            let ids = sqlx::query(
                "SELECT (SELECT id FROM user_groups WHERE name = $1) AS group_id, \
                        (SELECT id FROM users WHERE name = $2) AS user_id",
            )
            .bind(group)
            .bind(user)
            .fetch_one(&mut *tx)
            .await
            .op("find a group and a user")?;
            let group_id = ids
                .opt_int("group_id")?
                .ok_or_else(|| not_found(format!("group {group:?}")))?;
            let user_id = ids
                .opt_int("user_id")?
                .ok_or_else(|| not_found(format!("user {user:?}")))?;
            let added = sqlx::query(
                "INSERT INTO group_members (group_id, user_id, added_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (group_id, user_id) DO NOTHING",
            )
            .bind(group_id)
            .bind(user_id)
            .bind(at)
            .execute(&mut *tx)
            .await
            .op("add a group member")?
            .rows_affected();
            if added == 0 {
                return Ok(false);
            }
            let membership = serde_json::json!({ "group": group, "member": user });
            (
                true,
                Entry::new("group.member.add", target).after(&membership),
            )
        })
    }

    /// Removes `user` from `group`. `Ok(false)` when they were not a member.
    pub async fn remove_member(
        &self,
        actor: &str,
        group: &str,
        user: &str,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let at = secs(now);
        let target = format!("group {group:?} member {user:?}");
        write_tx!(self, at, actor, |tx| {
            let removed = sqlx::query(
                "DELETE FROM group_members \
                 WHERE group_id = (SELECT id FROM user_groups WHERE name = $1) \
                   AND user_id = (SELECT id FROM users WHERE name = $2)",
            )
            .bind(group)
            .bind(user)
            .execute(&mut *tx)
            .await
            .op("remove a group member")?
            .rows_affected();
            if removed == 0 {
                return Ok(false);
            }
            let membership = serde_json::json!({ "group": group, "member": user });
            (
                true,
                Entry::new("group.member.remove", target).before(&membership),
            )
        })
    }

    /// The members of `group`, by name.
    pub async fn members(&self, group: &str) -> Result<Vec<String>, StoreError> {
        self.get_group(group).await?;
        self.fetch_all(
            "SELECT u.name FROM group_members m \
             JOIN user_groups g ON g.id = m.group_id JOIN users u ON u.id = m.user_id \
             WHERE g.name = $1 ORDER BY u.name",
            Some(group),
            "list group members",
            |r| r.text("name"),
        )
        .await
    }

    /// Every membership, as (user, group) pairs.
    pub async fn memberships(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.fetch_all(
            "SELECT u.name AS user_name, g.name AS group_name FROM group_members m \
             JOIN user_groups g ON g.id = m.group_id JOIN users u ON u.id = m.user_id \
             ORDER BY u.name, g.name",
            None,
            "list memberships",
            |r| Ok((r.text("user_name")?, r.text("group_name")?)),
        )
        .await
    }

    /// The groups `user` is a member of, by name.
    pub async fn groups_of(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.fetch_all(
            "SELECT g.name FROM group_members m \
             JOIN user_groups g ON g.id = m.group_id JOIN users u ON u.id = m.user_id \
             WHERE u.name = $1 ORDER BY g.name",
            Some(user),
            "list a user's groups",
            |r| r.text("name"),
        )
        .await
    }
}
