//! The test PostgreSQL (`TAPGATE_TEST_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`) and a private schema per test,
//! dropped at the end. Without PostgreSQL a test skips, unless
//! `TAPGATE_REQUIRE_POSTGRES=1`, when it fails.

use sqlx::Connection;
use std::time::Duration;

/// A schema of its own on the test PostgreSQL, and the connection that
/// created it (and drops it in [`PgSchema::drop`]).
pub struct PgSchema {
    /// The server's URL, as configured.
    pub base: String,
    /// `PREFIX_` and twelve random hex digits.
    pub name: String,
    admin: sqlx::PgConnection,
}

impl PgSchema {
    /// Connect (at most 3 s) and create `PREFIX_xxxxxxxxxxxx`. `None`, after
    /// a `SKIP:` line on stderr, when PostgreSQL is unreachable; a panic
    /// instead when `TAPGATE_REQUIRE_POSTGRES=1`.
    pub async fn create(prefix: &str) -> Option<PgSchema> {
        let base = std::env::var("TAPGATE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let mut admin =
            match tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(&base))
                .await
            {
                Ok(Ok(c)) => c,
                _ if std::env::var("TAPGATE_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
                    panic!("PostgreSQL at {base} is required but unreachable")
                }
                _ => {
                    eprintln!(
                        "SKIP: PostgreSQL at {base} is unreachable (run scripts/ensure-postgres)"
                    );
                    return None;
                }
            };
        let name = format!(
            "{prefix}_{}",
            tapgate::crypto::random_bytes(6)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut admin)
            .await
            .expect("create the schema");
        Some(PgSchema { base, name, admin })
    }

    /// The server's URL with this schema as the search path (appended to
    /// the query string as it stands).
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-c%20search_path%3D{}", self.base, self.name)
    }

    /// Drop the schema and everything in it.
    pub async fn drop(mut self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
            .execute(&mut self.admin)
            .await
            .expect("drop the schema");
    }
}
