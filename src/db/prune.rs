//! Deletion by policy, planned once and carried out in small batches (each its own short
//! statement), so the live server never waits long behind it.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

/// What to delete. Backup policies combine as "all of": a backup goes only if every given
/// backup policy selects it. `user` narrows everything to one account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Backups created before this time.
    pub older_than: Option<OffsetDateTime>,
    /// Backups beyond each user's newest N.
    pub keep_last: Option<i64>,
    /// Accounts created before, and with no backup since, this time: deleted with their data.
    pub inactive_since: Option<OffsetDateTime>,
    /// Only this account.
    pub user: Option<Uuid>,
}

impl Policy {
    /// Whether backups (rather than only whole accounts) are selected.
    fn selects_backups(&self) -> bool {
        self.older_than.is_some() || self.keep_last.is_some() || (self.user.is_some() && self.inactive_since.is_none())
    }
}

/// What a policy selects now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Accounts to delete with all their data.
    pub users: Vec<Uuid>,
    /// Backups going with those accounts.
    pub user_backups: i64,
    /// Their bytes.
    pub user_bytes: i64,
    /// Backups to delete from accounts that stay.
    pub backups: Vec<Uuid>,
    /// Their bytes.
    pub backup_bytes: i64,
}

/// Plans a policy: two statements.
pub async fn plan<'c>(db: impl PgExecutor<'c> + Copy, policy: &Policy) -> Result<Plan, sqlx::Error> {
    let mut plan = Plan::default();
    if let Some(cutoff) = policy.inactive_since {
        let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
            "SELECT u.id, count(b.id), coalesce(sum(b.size_bytes), 0)::bigint \
             FROM users u LEFT JOIN backups b ON b.user_id = u.id \
             WHERE ($2::uuid IS NULL OR u.id = $2) AND u.created_at < $1 \
             GROUP BY u.id HAVING coalesce(max(b.created_at), '-infinity') < $1",
        )
        .bind(cutoff)
        .bind(policy.user)
        .fetch_all(db)
        .await?;
        for (id, backups, bytes) in rows {
            plan.users.push(id);
            plan.user_backups += backups;
            plan.user_bytes += bytes;
        }
    }
    if policy.selects_backups() {
        let rows: Vec<(Uuid, i32)> = sqlx::query_as(
            "SELECT id, size_bytes FROM ( \
                 SELECT id, size_bytes, created_at, user_id, \
                        row_number() OVER (PARTITION BY user_id ORDER BY created_at DESC, id DESC) AS rank \
                 FROM backups WHERE ($3::uuid IS NULL OR user_id = $3)) b \
             WHERE ($1::timestamptz IS NULL OR created_at < $1) AND ($2::bigint IS NULL OR rank > $2) \
               AND NOT (user_id = ANY($4))",
        )
        .bind(policy.older_than)
        .bind(policy.keep_last)
        .bind(policy.user)
        .bind(&plan.users)
        .fetch_all(db)
        .await?;
        for (id, size) in rows {
            plan.backups.push(id);
            plan.backup_bytes += i64::from(size);
        }
    }
    Ok(plan)
}

/// What one batch deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Accounts.
    pub users: i64,
    /// Backups (including those that went with accounts).
    pub backups: i64,
    /// Bytes of those backups.
    pub bytes: i64,
}

/// Deletes these backups (those still there).
pub async fn delete_backups(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<Deleted, sqlx::Error> {
    let (backups, bytes): (i64, i64) = sqlx::query_as(
        "WITH gone AS (DELETE FROM backups WHERE id = ANY($1) RETURNING size_bytes) \
         SELECT count(*), coalesce(sum(size_bytes), 0)::bigint FROM gone",
    )
    .bind(ids)
    .fetch_one(db)
    .await?;
    Ok(Deleted { users: 0, backups, bytes })
}

/// Deletes these accounts with their data, unless one has become active since `cutoff`.
pub async fn delete_inactive_users(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
    cutoff: OffsetDateTime,
) -> Result<Deleted, sqlx::Error> {
    // The statement's snapshot still shows the backups the cascade removes, so they are counted.
    let (users, backups, bytes): (i64, i64, i64) = sqlx::query_as(
        "WITH gone AS ( \
             DELETE FROM users u WHERE u.id = ANY($1) AND u.created_at < $2 \
               AND NOT EXISTS (SELECT 1 FROM backups b WHERE b.user_id = u.id AND b.created_at >= $2) \
             RETURNING u.id) \
         SELECT (SELECT count(*) FROM gone), count(b.id), coalesce(sum(b.size_bytes), 0)::bigint \
         FROM backups b WHERE b.user_id IN (SELECT id FROM gone)",
    )
    .bind(ids)
    .bind(cutoff)
    .fetch_one(db)
    .await?;
    Ok(Deleted { users, backups, bytes })
}
