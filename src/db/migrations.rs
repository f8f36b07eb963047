//! Embedded migrations, one folder per backend with the same version names. They run on
//! a blocking thread through a sync connection, which works on any tokio runtime.

use anyhow::Context as _;
use diesel::Connection as _;
use diesel::connection::SimpleConnection as _;
use diesel::migration::MigrationSource;
use diesel::sqlite::Sqlite;
use diesel::{SqliteConnection, pg::Pg};
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::config::DatabaseUrl;
use crate::db::SQLITE_PRAGMAS;

const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Applies what is pending and returns the names applied (empty when up to date).
pub async fn run_pending(url: &DatabaseUrl) -> anyhow::Result<Vec<String>> {
    with_migrations(url, Mode::Apply).await
}

/// The names of the migrations not yet applied.
pub async fn pending(url: &DatabaseUrl) -> anyhow::Result<Vec<String>> {
    with_migrations(url, Mode::List).await
}

#[derive(Clone, Copy)]
enum Mode {
    Apply,
    List,
}

async fn with_migrations(url: &DatabaseUrl, mode: Mode) -> anyhow::Result<Vec<String>> {
    let url = url.clone();
    tokio::task::spawn_blocking(move || match &url {
        DatabaseUrl::Postgres(raw) => {
            let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(raw)
                .with_context(|| format!("cannot connect to PostgreSQL at {}", url.target()))?;
            apply::<Pg, _>(&mut conn, POSTGRES, mode)
        }
        DatabaseUrl::Sqlite(path) => {
            let path = path
                .to_str()
                .context("the SQLite path is not valid UTF-8")?;
            let mut conn = SqliteConnection::establish(path)
                .with_context(|| format!("cannot open SQLite file {path}"))?;
            conn.batch_execute(SQLITE_PRAGMAS)
                .context("cannot configure SQLite")?;
            apply::<Sqlite, _>(&mut conn, SQLITE, mode)
        }
    })
    .await
    .context("the migration task failed")?
}

fn apply<DB, C>(conn: &mut C, source: EmbeddedMigrations, mode: Mode) -> anyhow::Result<Vec<String>>
where
    DB: diesel::backend::Backend,
    C: MigrationHarness<DB>,
    EmbeddedMigrations: MigrationSource<DB>,
{
    let pending = conn
        .pending_migrations(source)
        .map_err(|e| anyhow::anyhow!("cannot list pending migrations: {e}"))?;
    let mut applied = Vec::with_capacity(pending.len());
    for migration in pending {
        let name = migration.name().to_string();
        if let Mode::Apply = mode {
            conn.run_migration(&*migration)
                .map_err(|e| anyhow::anyhow!("migration {name} failed: {e}"))?;
        }
        applied.push(name);
    }
    Ok(applied)
}
