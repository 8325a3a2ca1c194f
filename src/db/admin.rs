//! Databases within a server: what `serve --dev` and the test harness create.

use super::Error;
use sqlx::PgConnection;

/// Quotes an identifier for SQL.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Sets a role's password; PostgreSQL stores only its SCRAM verifier.
pub async fn set_password(conn: &mut PgConnection, role: &str, password: &str) -> Result<(), Error> {
    // A password cannot be bound as a parameter of ALTER ROLE: it is a quoted literal here.
    let statement = format!("ALTER ROLE {} PASSWORD '{}'", quote_ident(role), password.replace('\'', "''"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(conn).await.map(drop).map_err(Error::from)
}

/// Whether a database of that name exists.
pub async fn database_exists(conn: &mut PgConnection, name: &str) -> Result<bool, Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(conn)
        .await
        .map_err(Error::from)
}

/// Creates a database, optionally as a copy of `template` (which must have no open sessions).
pub async fn create_database(conn: &mut PgConnection, name: &str, template: Option<&str>) -> Result<(), Error> {
    let mut statement = format!("CREATE DATABASE {}", quote_ident(name));
    if let Some(template) = template {
        statement.push_str(" TEMPLATE ");
        statement.push_str(&quote_ident(template));
    }
    // Identifiers cannot be bound as parameters; both are quoted above.
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(conn).await.map(drop).map_err(Error::from)
}
