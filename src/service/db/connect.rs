//! How database connections are made, for the pool, the change listener, migrations and
//! the SQLite change probe alike.
//!
//! PostgreSQL: a connect timeout, TCP keepalives (so a vanished host is noticed) and the
//! session settings (`statement_timeout`, `idle_in_transaction_session_timeout`, the
//! write-origin tag, generic plans) sent as start-up options, which costs no extra round
//! trip.
//! SQLite: WAL, and a busy timeout equal to the statement timeout.

use std::str::FromStr as _;
use std::time::Duration;

use diesel::ConnectionError;
use diesel::connection::SimpleConnection as _;
use diesel::{Connection as _, SqliteConnection};
use diesel_async::AsyncPgConnection;

use super::tls_connect::{self, RustlsConnect};
use crate::config::DbSettings;
use crate::config::pg_tls::{self, SslMode, TlsChoice};
use crate::error_chain::root_cause;

/// How the change listener's connection shows in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "listings-listener";

/// A transaction left open by a client that went away must not hold its locks for long.
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Unanswered keepalive probes before the kernel gives up on a connection.
const KEEPALIVE_PROBES: u32 = 3;

/// What a PostgreSQL connection is for; each use gets its own session settings.
#[derive(Clone, Copy, Debug)]
pub enum PgSession<'a> {
    /// Pooled connections for requests and commands: bounded statements, and the tag
    /// of the cache this process invalidates (see `Cache::origin_tag`).
    Pooled { write_origin: &'a str },
    /// The LISTEN connection of `service::change_listener`.
    Listener,
    /// Migrations: DDL on a large table may take long, so no statement timeout.
    Migrations,
    /// `VACUUM` after a bulk load: as long as the table needs, so no statement timeout.
    Maintenance,
}

/// How to reach one PostgreSQL server: the connection parameters, and TLS.
#[derive(Clone)]
pub struct PgConfig {
    params: tokio_postgres::Config,
    tls: Option<RustlsConnect>,
    mode: SslMode,
}

impl PgConfig {
    /// The `sslmode` in force.
    pub fn ssl_mode(&self) -> SslMode {
        self.mode
    }
}

/// The connection parameters of `url` (already validated by `DatabaseUrl`) with this
/// application's timeouts, keepalives and session settings, and its TLS (whose files
/// are read here).
pub fn pg_config(
    url: &str,
    settings: &DbSettings,
    session: PgSession<'_>,
) -> Result<PgConfig, ConnectionError> {
    let (plain, tls) = pg_tls::split_url(url);
    let choice = TlsChoice::from_params(&tls).map_err(ConnectionError::InvalidConnectionUrl)?;
    let mut config = tokio_postgres::Config::from_str(&plain)
        .map_err(|e| ConnectionError::InvalidConnectionUrl(root_cause(&e)))?;
    // libpq ignores sslmode on Unix-domain sockets, where PostgreSQL has no TLS: their
    // certificate files are not even read.
    let unix_only = config
        .get_hosts()
        .iter()
        .all(|host| !matches!(host, tokio_postgres::config::Host::Tcp(_)));
    let connector = if unix_only {
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        None
    } else {
        config.ssl_mode(choice.negotiation());
        tls_connect::connector(&choice).map_err(ConnectionError::InvalidConnectionUrl)?
    };
    let probes_every = settings.keepalive;
    config
        .connect_timeout(settings.connect_timeout)
        .keepalives(true)
        .keepalives_idle(probes_every)
        .keepalives_interval(probes_every)
        .keepalives_retries(KEEPALIVE_PROBES)
        .tcp_user_timeout(probes_every * (KEEPALIVE_PROBES + 1));
    let mut options = vec![format!(
        "-c idle_in_transaction_session_timeout={}",
        IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
    )];
    match session {
        PgSession::Pooled { write_origin } => {
            options.push(format!(
                "-c statement_timeout={}",
                settings.statement_timeout.as_millis()
            ));
            options.push(format!("-c listings.origin={write_origin}"));
            // Planned once, not five times per connection first: a page statement took
            // longer to plan than to run. The statements whose plan depends on their
            // values plan only what does, per call (`listings_page_ids`).
            options.push("-c plan_cache_mode=force_generic_plan".to_owned());
            config.application_name("listings");
        }
        PgSession::Listener => {
            options.push(format!(
                "-c statement_timeout={}",
                settings.statement_timeout.as_millis()
            ));
            config.application_name(LISTENER_APPLICATION_NAME);
        }
        PgSession::Migrations => {
            config.application_name("listings-migrate");
        }
        PgSession::Maintenance => {
            config.application_name("listings-maintenance");
        }
    }
    // Options the operator put in the URL come last, so they win.
    if let Some(own) = config.get_options() {
        options.push(own.to_owned());
    }
    config.options(options.join(" "));
    Ok(PgConfig {
        params: config,
        tls: connector,
        mode: choice.mode,
    })
}

/// Connects within the connect timeout; the error is one line with the real cause.
pub async fn connect_pg(
    config: &PgConfig,
    timeout: Duration,
) -> Result<AsyncPgConnection, ConnectionError> {
    let failed = |e: tokio_postgres::Error| {
        let cause = root_cause(&e);
        // A certificate that does not verify names the host it was presented for.
        let tls = e.to_string().contains("TLS");
        ConnectionError::BadConnection(if tls {
            // rustls names this reason by its variant only.
            let cause = cause.replace(
                "UnknownIssuer",
                "unknown issuer (no CA in sslrootcert signed it)",
            );
            format!(
                "TLS with {}: {cause}",
                crate::config::pg_hosts(&config.params).join(",")
            )
        } else {
            cause
        })
    };
    let connecting = async {
        match &config.tls {
            None => {
                let (client, connection) = config
                    .params
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(failed)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            Some(tls) => {
                let (client, connection) =
                    config.params.connect(tls.clone()).await.map_err(failed)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
        }
    };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(connected) => connected,
        Err(_) => Err(ConnectionError::BadConnection(format!(
            "no answer within {}",
            crate::config::human_duration(timeout)
        ))),
    }
}

/// What an operator is told of `conn`'s transport, as the server sees it
/// (`pg_stat_ssl`): `encrypted (TLSv1.3, sslmode=…)` or `not encrypted (sslmode=…)`.
pub async fn describe_session(
    conn: &mut AsyncPgConnection,
    mode: SslMode,
) -> diesel::QueryResult<String> {
    use diesel_async::RunQueryDsl as _;
    #[derive(diesel::QueryableByName)]
    struct Session {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        version: Option<String>,
    }
    let session: Session = diesel::sql_query(
        "SELECT CASE WHEN ssl THEN version END AS version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .get_result(conn)
    .await?;
    Ok(match session.version {
        Some(version) => format!("encrypted ({version}, sslmode={})", mode.name()),
        None => format!("not encrypted (sslmode={})", mode.name()),
    })
}

/// The value of the setting `name` in `conn`'s session.
#[cfg(feature = "test-hooks")]
pub async fn setting(conn: &mut AsyncPgConnection, name: &str) -> diesel::QueryResult<String> {
    use diesel_async::RunQueryDsl as _;
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        value: String,
    }
    let setting: Setting = diesel::sql_query("SELECT current_setting($1) AS value")
        .bind::<diesel::sql_types::Text, _>(name)
        .get_result(conn)
        .await?;
    Ok(setting.value)
}

/// For the rest of the transaction on `conn`, PostgreSQL plans each statement for its
/// values, as it plans outside the server's connections (see `PgSession::Pooled`).
pub async fn pg_plan_for_values(conn: &mut AsyncPgConnection) -> diesel::QueryResult<()> {
    use diesel_async::SimpleAsyncConnection as _;
    conn.batch_execute("SET LOCAL plan_cache_mode = force_custom_plan")
        .await
}

/// SQLite plans every statement for its values.
pub async fn sqlite_plan_for_values(_conn: &mut super::SqliteConn) -> diesel::QueryResult<()> {
    Ok(())
}

/// Most memory one SQLite connection keeps for its page cache, in KiB. With the pool's
/// connections this bounds SQLite's share of the process (see the README's Memory).
pub const SQLITE_PAGE_CACHE_KIB: u64 = 2048;

/// Set on every SQLite connection: without a busy timeout concurrent writers fail with
/// `database is locked` at once; WAL lets readers proceed during a write. No memory
/// map of the database file: its pages are read into the bounded page cache instead.
pub fn sqlite_pragmas(settings: &DbSettings) -> String {
    format!(
        "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -{SQLITE_PAGE_CACHE_KIB}; PRAGMA mmap_size = 0;",
        settings.statement_timeout.as_millis()
    )
}

/// A plain (blocking) SQLite connection with the pragmas set, for migrations and the
/// change probe.
pub fn open_sqlite(path: &str, settings: &DbSettings) -> Result<SqliteConnection, ConnectionError> {
    let mut conn = SqliteConnection::establish(path)?;
    configure_sqlite(&mut conn, settings).map_err(ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

/// Sets the pragmas and the text rule. Switching a fresh file to WAL needs a lock that
/// SQLite does not wait for with its busy timeout, so when another process is setting
/// up the same file at the same moment, this waits for it here (at most the statement
/// timeout).
///
/// SQLite's built-in `lower()` folds only ASCII; every connection of this application
/// (pool, migrations) replaces it with the domain's match key, so the keys its triggers
/// and migrations store follow the one rule (`Éldoret` matches `éldoret`).
pub fn configure_sqlite(
    conn: &mut SqliteConnection,
    settings: &DbSettings,
) -> diesel::QueryResult<()> {
    crate::service::db::lower_utils::register_impl(conn, |text: String| {
        crate::domain::text::match_key(&text)
    })?;
    let pragmas = sqlite_pragmas(settings);
    let started = std::time::Instant::now();
    loop {
        match conn.batch_execute(&pragmas) {
            Err(diesel::result::Error::DatabaseError(_, info))
                if info.message().contains("locked")
                    && started.elapsed() < settings.statement_timeout =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            done => return done,
        }
    }
}
