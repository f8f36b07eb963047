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
use crate::service::db::{DbSettings, connect, text_keys};

const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Held while migrating PostgreSQL; any constant shared by every `listings` works.
const PG_MIGRATION_LOCK: i64 = 0x6c69_7374_696e_6773; // "listings"

/// What every command does before it uses the database. The embedded database
/// creates and migrates itself, so a fresh machine just works; PostgreSQL is migrated
/// by the operator (`listings migrate`), so a command refuses an out-of-date schema
/// rather than fail on a missing table.
pub async fn prepare(url: &DatabaseUrl, settings: &DbSettings) -> anyhow::Result<()> {
    match url {
        DatabaseUrl::Sqlite(_) => {
            for name in run_pending(url, settings).await? {
                tracing::info!("applied migration {name}");
            }
        }
        DatabaseUrl::Postgres(_) => {
            let pending = pending(url, settings).await?;
            if !pending.is_empty() {
                anyhow::bail!(
                    "the database at {} has {} pending migration(s) ({}); run `listings migrate` first",
                    url.target(),
                    pending.len(),
                    pending.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// One embedded migration and whether the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    pub name: String,
    pub applied: bool,
}

/// Every embedded migration, applied or pending, read without changing anything (not
/// even creating diesel's bookkeeping table, or a missing SQLite file).
pub async fn status(
    url: &DatabaseUrl,
    settings: &DbSettings,
) -> anyhow::Result<Vec<MigrationStatus>> {
    let applied: Vec<String> = match url {
        DatabaseUrl::Postgres(raw) => {
            let conn = connect_for_migrations(url, raw, settings).await?;
            blocking(move || {
                let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
                applied_versions(
                    &mut conn,
                    "SELECT tablename AS version FROM pg_tables WHERE tablename = '__diesel_schema_migrations'",
                )
            })
            .await?
        }
        DatabaseUrl::Sqlite(path) if !path.exists() => Vec::new(),
        DatabaseUrl::Sqlite(path) => {
            let path = path
                .to_str()
                .context("the SQLite path is not valid UTF-8")?
                .to_owned();
            blocking(move || {
                use diesel::Connection as _;
                let mut conn = SqliteConnection::establish(&path)
                    .with_context(|| format!("cannot open SQLite file {path}"))?;
                applied_versions(
                    &mut conn,
                    "SELECT name AS version FROM sqlite_master WHERE type = 'table' AND name = '__diesel_schema_migrations'",
                )
            })
            .await?
        }
    };
    let embedded = match url {
        DatabaseUrl::Postgres(_) => names::<Pg>(POSTGRES)?,
        DatabaseUrl::Sqlite(_) => names::<Sqlite>(SQLITE)?,
    };
    Ok(embedded
        .into_iter()
        .map(|(name, version)| MigrationStatus {
            applied: applied.contains(&version),
            name,
        })
        .collect())
}

#[derive(diesel::QueryableByName)]
struct Version {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

/// The versions in diesel's bookkeeping table; none when `table_exists` (a query that
/// names the table when it exists) finds no table, so nothing is created.
fn applied_versions<C>(conn: &mut C, table_exists: &str) -> anyhow::Result<Vec<String>>
where
    C: diesel::Connection,
    for<'a> diesel::query_builder::SqlQuery: diesel::query_dsl::LoadQuery<'a, C, Version>,
{
    use diesel::RunQueryDsl as _;
    let read = |sql: &str, conn: &mut C| {
        diesel::sql_query(sql)
            .load::<Version>(conn)
            .context("cannot read the applied migrations")
    };
    if read(table_exists, conn)?.is_empty() {
        return Ok(Vec::new());
    }
    Ok(
        read("SELECT version FROM __diesel_schema_migrations", conn)?
            .into_iter()
            .map(|v| v.version)
            .collect(),
    )
}

/// A PostgreSQL connection for migrations, or an error naming the server.
async fn connect_for_migrations(
    url: &DatabaseUrl,
    raw: &crate::config::SecretUrl,
    settings: &DbSettings,
) -> anyhow::Result<AsyncPgConnection> {
    let cannot_connect =
        |why: String| anyhow::anyhow!("cannot connect to PostgreSQL at {}: {why}", url.target());
    let config = connect::pg_config(raw.expose(), settings, connect::PgSession::Migrations)
        .map_err(|e| cannot_connect(e.to_string()))?;
    connect::connect_pg(&config, settings.connect_timeout)
        .await
        .map_err(|e| cannot_connect(e.to_string()))
}

/// `(name, version)` of every embedded migration, oldest first.
fn names<DB: diesel::backend::Backend>(
    source: EmbeddedMigrations,
) -> anyhow::Result<Vec<(String, String)>>
where
    EmbeddedMigrations: MigrationSource<DB>,
{
    let mut all: Vec<(String, String)> = MigrationSource::<DB>::migrations(&source)
        .map_err(|e| anyhow::anyhow!("cannot list the embedded migrations: {e}"))?
        .iter()
        .map(|m| (m.name().to_string(), m.name().version().to_string()))
        .collect();
    all.sort();
    Ok(all)
}

/// Applies what is pending and returns the names applied (empty when up to date).
pub async fn run_pending(url: &DatabaseUrl, settings: &DbSettings) -> anyhow::Result<Vec<String>> {
    Ok(migrate(url, settings, Rekey::IfPending).await?.applied)
}

/// What `migrate` did.
#[derive(Debug, Default)]
pub struct Migrated {
    /// The names of the migrations applied, oldest first.
    pub applied: Vec<String>,
    /// Rows whose text keys were recomputed, when they were checked.
    pub rekeyed: Option<usize>,
}

/// Which rows' text keys `migrate` recomputes (see `text_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rekey {
    /// Only when a migration left that work pending.
    IfPending,
    /// Every row whose keys differ from the rule (rows written by other programs).
    All,
}

/// Applies what is pending, then recomputes text keys as `rekey` says, all under the
/// migration lock.
pub async fn migrate(
    url: &DatabaseUrl,
    settings: &DbSettings,
    rekey: Rekey,
) -> anyhow::Result<Migrated> {
    with_migrations(url, settings, Mode::Apply(rekey)).await
}

/// The names of the migrations not yet applied.
pub async fn pending(url: &DatabaseUrl, settings: &DbSettings) -> anyhow::Result<Vec<String>> {
    Ok(with_migrations(url, settings, Mode::List).await?.applied)
}

#[derive(Clone, Copy)]
enum Mode {
    Apply(Rekey),
    List,
}

async fn with_migrations(
    url: &DatabaseUrl,
    settings: &DbSettings,
    mode: Mode,
) -> anyhow::Result<Migrated> {
    match url {
        DatabaseUrl::Postgres(raw) => {
            let conn = connect_for_migrations(url, raw, settings).await?;
            blocking(move || {
                let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
                conn.batch_execute(&format!("SELECT pg_advisory_lock({PG_MIGRATION_LOCK})"))
                    .context("cannot take the migration lock")?;
                let migrated = migrate_postgres(&mut conn, mode);
                // Closing the connection would release it too; say so explicitly.
                let _ =
                    conn.batch_execute(&format!("SELECT pg_advisory_unlock({PG_MIGRATION_LOCK})"));
                migrated
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
                    let applied = apply::<Sqlite, _>(conn, SQLITE, mode)?;
                    // SQLite's migrations compute keys by the rule themselves (lower()
                    // is the application's there), so only the operator asks for more.
                    let rekeyed = match mode {
                        Mode::Apply(Rekey::All) => Some(
                            text_keys::rekey_sqlite(conn)
                                .context("cannot recompute the text keys")?,
                        ),
                        _ => None,
                    };
                    Ok(Migrated { applied, rekeyed })
                })
            })
            .await
        }
    }
}

fn migrate_postgres(
    conn: &mut AsyncConnectionWrapper<AsyncPgConnection>,
    mode: Mode,
) -> anyhow::Result<Migrated> {
    let applied = apply::<Pg, _>(conn, POSTGRES, mode)?;
    let rekeyed = match mode {
        Mode::Apply(Rekey::IfPending) => text_keys::finish_pending_postgres(conn),
        Mode::Apply(Rekey::All) => text_keys::finish_pending_postgres(conn)
            .and_then(|pending| pending.map_or_else(|| text_keys::rekey_postgres(conn), Ok))
            .map(Some),
        Mode::List => Ok(None),
    }
    .context("cannot recompute the text keys")?;
    Ok(Migrated { applied, rekeyed })
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
        if let Mode::Apply(_) = mode {
            conn.run_migration(&*migration)
                .map_err(|e| anyhow::anyhow!("migration {name} failed: {e}"))?;
        }
        applied.push(name);
    }
    Ok(applied)
}
