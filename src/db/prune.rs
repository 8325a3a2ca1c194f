//! Deletion by policy, planned once and carried out in small batches (each its own short
//! statement), so the live server never waits long behind it.

use super::Error;
use sqlx::{PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// What to delete. Backup policies combine as "all of": a backup goes only if every given
/// backup policy selects it. `user` narrows everything to one account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCriteria {
    /// Backups created before this time.
    pub older_than: Option<OffsetDateTime>,
    /// Backups beyond each user's newest N.
    pub keep_last: Option<i64>,
    /// Accounts created before, and with no backup since, this time: deleted with their data.
    pub inactive_since: Option<OffsetDateTime>,
    /// Only this account.
    pub user: Option<Uuid>,
}

impl PruneCriteria {
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
    /// Backups to delete from accounts that stay.
    pub backups: Vec<Uuid>,
    /// The documents' sizes, together.
    pub logical_bytes: i64,
    /// The storage deleting them frees: the accounts' chunks and those only the backups name.
    pub stored_bytes: i64,
}

/// Plans a policy: up to three statements.
pub async fn plan<'c>(db: impl PgExecutor<'c> + Copy, policy: &PruneCriteria) -> Result<Plan, Error> {
    let mut plan = Plan::default();
    if let Some(cutoff) = policy.inactive_since {
        let rows: Vec<(Uuid, i64, i64, i64)> = sqlx::query_as(
            "SELECT u.id, count(b.id), coalesce(sum(b.size_bytes), 0)::bigint, \
                    (SELECT coalesce(sum(pg_column_size(c.data)), 0)::bigint FROM chunks c WHERE c.user_id = u.id) \
             FROM users u LEFT JOIN backups b ON b.user_id = u.id \
             WHERE ($2::uuid IS NULL OR u.id = $2) AND u.created_at < $1 \
             GROUP BY u.id HAVING coalesce(max(b.created_at), '-infinity') < $1",
        )
        .bind(cutoff)
        .bind(policy.user)
        .fetch_all(db)
        .await?;
        for (id, backups, logical, stored) in rows {
            plan.users.push(id);
            plan.user_backups += backups;
            plan.logical_bytes += logical;
            plan.stored_bytes += stored;
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
            plan.logical_bytes += i64::from(size);
        }
        let freed: i64 = sqlx::query_scalar(FREED_BY_BACKUPS).bind(&plan.backups).fetch_one(db).await?;
        plan.stored_bytes += freed;
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
    /// The documents' sizes, together.
    pub logical_bytes: i64,
    /// The storage freed: the chunks no backup names any more, as stored (compressed).
    pub stored_bytes: i64,
}

/// The stored bytes of the chunks that only the backups `$1` name: what deleting them frees.
const FREED_BY_BACKUPS: &str = "SELECT coalesce(sum(pg_column_size(c.data)), 0)::bigint FROM chunks c WHERE c.id IN ( \
         SELECT unnest(d.chunk_ids) FROM backups d WHERE d.id = ANY($1) \
         EXCEPT \
         SELECT unnest(b.chunk_ids) FROM backups b \
         WHERE b.user_id IN (SELECT user_id FROM backups WHERE id = ANY($1)) \
           AND b.id NOT IN (SELECT id FROM backups WHERE id = ANY($1)))";

/// Deletes these backups (those still there), with the chunks only they named.
pub async fn delete_backups(pool: &PgPool, ids: &[Uuid]) -> Result<Deleted, Error> {
    let mut tx = pool.begin().await?;
    // Their users first, in id order, as an upload locks its user before its retention
    // deletes: otherwise each could wait on the other (the trigger that frees chunks locks
    // the users too). Counted after the locks, so no upload is half-seen.
    sqlx::query(
        "SELECT FROM users WHERE id IN (SELECT user_id FROM backups WHERE id = ANY($1)) ORDER BY id FOR UPDATE",
    )
    .bind(ids)
    .execute(&mut *tx)
    .await?;
    let (backups, logical_bytes, stored_bytes): (i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH freed AS ({FREED_BY_BACKUPS}), gone AS (DELETE FROM backups WHERE id = ANY($1) RETURNING size_bytes) \
         SELECT count(*), coalesce(sum(size_bytes), 0)::bigint, (SELECT * FROM freed) FROM gone"
    )))
    .bind(ids)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Deleted { users: 0, backups, logical_bytes, stored_bytes })
}

/// Deletes these accounts with their data, unless one has become active since `cutoff`.
pub async fn delete_inactive_users(pool: &PgPool, ids: &[Uuid], cutoff: OffsetDateTime) -> Result<Deleted, Error> {
    let mut tx = pool.begin().await?;
    // The accounts first, in their own statement and in id order (as an upload locks its
    // user): an upload in flight holds its account's row, so this waits for it to commit. A
    // statement re-checks only the rows it locks, never a NOT EXISTS beside them, so the
    // activity check must come in a later statement, whose snapshot sees that upload's backup.
    sqlx::query("SELECT FROM users WHERE id = ANY($1) ORDER BY id FOR UPDATE").bind(ids).execute(&mut *tx).await?;
    // The statement's snapshot still shows the backups and chunks the cascade removes, so
    // they are counted.
    let (users, backups, logical_bytes, stored_bytes): (i64, i64, i64, i64) = sqlx::query_as(
        "WITH gone AS ( \
             DELETE FROM users u WHERE u.id = ANY($1) AND u.created_at < $2 \
               AND NOT EXISTS (SELECT 1 FROM backups b WHERE b.user_id = u.id AND b.created_at >= $2) \
             RETURNING u.id) \
         SELECT (SELECT count(*) FROM gone), count(b.id), coalesce(sum(b.size_bytes), 0)::bigint, \
                (SELECT coalesce(sum(pg_column_size(c.data)), 0)::bigint FROM chunks c \
                 WHERE c.user_id IN (SELECT id FROM gone)) \
         FROM backups b WHERE b.user_id IN (SELECT id FROM gone)",
    )
    .bind(ids)
    .bind(cutoff)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Deleted { users, backups, logical_bytes, stored_bytes })
}

/// Vacuums the tables prune deletes from: the space their deleted rows held is reused.
pub async fn vacuum(pool: &PgPool) -> Result<(), Error> {
    sqlx::raw_sql("VACUUM users, chunks, backups, idempotency_keys").execute(pool).await.map(drop).map_err(Error::from)
}
