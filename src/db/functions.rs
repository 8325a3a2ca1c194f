//! The SQL functions that hold rules (`sql/*.sql`): code, not migration history. Each file
//! defines one function under the file's name; `migrate` installs them after the migrations,
//! and a restore builds them as it builds the tables.
//!
//! A file never changes once on main (`sql/LANDED.sha256` pins it, as migrations are pinned):
//! a changed function is a new file under a new name (`store_backup_v4` → `_v5`), because the
//! release before keeps calling the old one while a deploy replaces its machines. The old one
//! is dropped by a migration a release later, once nothing calls it.
//!
//! Each installed function carries its file's SHA-256 in its comment, so `/readyz` and the
//! tests can tell that the database runs exactly this binary's text.

use sqlx::PgConnection;

use super::Error;
use crate::encoding::{hex, sha256};

/// One function's file.
#[derive(Debug, Clone, Copy)]
pub struct Function {
    /// Its name, the file's.
    pub name: &'static str,
    /// The file: one `CREATE OR REPLACE FUNCTION`.
    pub sql: &'static str,
}

/// Every function this binary calls or installs, in the order they are installed.
pub const FUNCTIONS: &[Function] = &[
    Function { name: "free_unreferenced_chunks", sql: include_str!("sql/free_unreferenced_chunks.sql") },
    Function { name: "store_backup_v4", sql: include_str!("sql/store_backup_v4.sql") },
];

impl Function {
    /// The comment the installed function carries: its file's SHA-256.
    pub fn stamp(&self) -> String {
        format!("dailyreps-backup-server sql/{}.sql sha256:{}", self.name, hex(&sha256(self.sql.as_bytes())))
    }
}

/// The functions the database lacks, or has with another text than this binary's.
pub async fn outdated(conn: &mut PgConnection) -> Result<Vec<&'static str>, Error> {
    let names: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
    let installed: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT p.proname::text, obj_description(p.oid, 'pg_proc') FROM pg_proc p \
         WHERE p.pronamespace = current_schema()::regnamespace AND p.proname = ANY($1)",
    )
    .bind(&names)
    .fetch_all(conn)
    .await?;
    Ok(FUNCTIONS
        .iter()
        .filter(|f| !installed.iter().any(|(name, stamp)| name == f.name && stamp.as_deref() == Some(&f.stamp())))
        .map(|f| f.name)
        .collect())
}

/// Installs every function (in the caller's transaction) and stamps it with its file's hash.
pub async fn install(conn: &mut PgConnection) -> Result<(), Error> {
    for function in FUNCTIONS {
        sqlx::raw_sql(sqlx::AssertSqlSafe(function.sql)).execute(&mut *conn).await?;
        // COMMENT takes no parameters; the stamp is hex and a fixed text, quoted as a literal.
        let comment = format!("COMMENT ON FUNCTION {} IS '{}'", function.name, function.stamp());
        sqlx::raw_sql(sqlx::AssertSqlSafe(comment)).execute(&mut *conn).await?;
    }
    Ok(())
}
