//! Embedded migrations, one folder per backend with the same version names. They run on
//! a blocking thread through a sync connection, which works on any tokio runtime, and
//! under a lock, so processes that start at the same moment apply each migration once:
//! a PostgreSQL advisory lock, or an immediate (write-locking) SQLite transaction.

use anyhow::Context as _;
use diesel::connection::SimpleConnection as _;
use diesel::migration::MigrationSource;
use diesel::sqlite::Sqlite;
use diesel::{SqliteConnection, pg::Pg};
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::config::DatabaseUrl;
use crate::db::{DbSettings, connect};

const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Held while migrating PostgreSQL; any constant shared by every `listings` works.
const PG_MIGRATION_LOCK: i64 = 0x6c69_7374_696e_6773; // "listings"

/// Applies what is pending and returns the names applied (empty when up to date).
pub async fn run_pending(url: &DatabaseUrl, settings: &DbSettings) -> anyhow::Result<Vec<String>> {
    with_migrations(url, settings, Mode::Apply).await
}

/// The names of the migrations not yet applied.
pub async fn pending(url: &DatabaseUrl, settings: &DbSettings) -> anyhow::Result<Vec<String>> {
    with_migrations(url, settings, Mode::List).await
}

#[derive(Clone, Copy)]
enum Mode {
    Apply,
    List,
}

async fn with_migrations(
    url: &DatabaseUrl,
    settings: &DbSettings,
    mode: Mode,
) -> anyhow::Result<Vec<String>> {
    match url {
        DatabaseUrl::Postgres(raw) => {
            let cannot_connect = |why: String| {
                anyhow::anyhow!("cannot connect to PostgreSQL at {}: {why}", url.target())
            };
            let config = connect::pg_config(raw.expose(), settings, connect::PgSession::Migrations)
                .map_err(|e| cannot_connect(e.to_string()))?;
            let conn = connect::connect_pg(&config, settings.connect_timeout)
                .await
                .map_err(|e| cannot_connect(e.to_string()))?;
            blocking(move || {
                let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
                conn.batch_execute(&format!("SELECT pg_advisory_lock({PG_MIGRATION_LOCK})"))
                    .context("cannot take the migration lock")?;
                let applied = apply::<Pg, _>(&mut conn, POSTGRES, mode);
                // Closing the connection would release it too; say so explicitly.
                let _ =
                    conn.batch_execute(&format!("SELECT pg_advisory_unlock({PG_MIGRATION_LOCK})"));
                applied
            })
            .await
        }
        DatabaseUrl::Sqlite(path) => {
            let path = path
                .to_str()
                .context("the SQLite path is not valid UTF-8")?
                .to_owned();
            let settings = *settings;
            blocking(move || {
                let mut conn = connect::open_sqlite(&path, &settings)
                    .with_context(|| format!("cannot open SQLite file {path}"))?;
                conn.immediate_transaction(|conn: &mut SqliteConnection| {
                    apply::<Sqlite, _>(conn, SQLITE, mode)
                })
            })
            .await
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
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
