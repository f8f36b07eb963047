//! Writes whose COMMIT went out but whose answer never came (the server froze, the
//! network stalled). The transaction may still commit when the server wakes up, after
//! the request has been answered 503 and without this process invalidating anything;
//! worse, its notification carries this process's origin tag, which servers sharing
//! its cache skip. So the transaction id is kept, and a task asks the server, on fresh
//! connections, until it can say: committed (then every server is told, with an
//! origin none of them skips) or aborted (nothing to do).

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use diesel::expression::SqlLiteral;
use diesel::sql_types::{Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use tokio::task::JoinHandle;

use super::{Db, connect};
use crate::service::db::notify;

/// How long the fate of one transaction is sought before giving up (with an error log:
/// entries cached before it then live until their TTL).
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(5);

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    value: String,
}

/// The id of the current transaction, as text (`xid8`).
pub(in crate::service) async fn current_transaction(
    conn: &mut AsyncPgConnection,
) -> diesel::QueryResult<String> {
    diesel::sql_query("SELECT pg_current_xact_id()::text AS value")
        .get_result::<Row>(conn)
        .await
        .map(|row| row.value)
}

/// The current transaction's id, as a column a write's RETURNING can add.
pub(in crate::service) fn pg_transaction_id() -> SqlLiteral<Nullable<Text>> {
    diesel::dsl::sql("pg_current_xact_id()::text")
}

/// SQLite's writes have none (see `ReturnedXid`).
pub(in crate::service) fn no_transaction_id() -> SqlLiteral<Nullable<Text>> {
    diesel::dsl::sql("NULL")
}

/// The id of a write's transaction when one of its statements returned it with its
/// rows: one round trip fewer than asking for it.
#[derive(Default)]
pub(in crate::service) struct ReturnedXid(std::sync::OnceLock<String>);

impl ReturnedXid {
    pub(in crate::service) fn set(&self, xid: String) {
        let _ = self.0.set(xid);
    }

    pub(in crate::service) fn set_if_known(&self, xid: Option<String>) {
        if let Some(xid) = xid {
            self.set(xid);
        }
    }

    pub(in crate::service) fn take(self) -> Option<String> {
        self.0.into_inner()
    }
}

/// Tasks still learning a fate; commands wait for them before exiting.
pub(super) type Pending = Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>;

impl Db {
    pub(in crate::service) fn learn_fate_later(
        &self,
        config: &Arc<connect::PgConfig>,
        xid: String,
    ) {
        tracing::warn!(
            transaction = %xid,
            "a write's commit was not confirmed in time; finding out whether it was applied"
        );
        let task = tokio::spawn(learn_fate(config.clone(), self.settings, xid));
        self.unconfirmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
    }

    /// Waits (at most `limit`) until the fate of every unconfirmed write is known and
    /// announced; false if some are still unknown. A command calls this before it
    /// exits, since the task that would announce a late commit dies with the process.
    pub async fn settle_unconfirmed_writes(&self, limit: Duration) -> bool {
        let tasks: Vec<JoinHandle<()>> = std::mem::take(
            &mut *self
                .unconfirmed
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        tokio::time::timeout(limit, futures_util::future::join_all(tasks))
            .await
            .is_ok()
    }
}

async fn learn_fate(config: Arc<connect::PgConfig>, settings: super::DbSettings, xid: String) {
    let started = tokio::time::Instant::now();
    let mut retry = FIRST_RETRY;
    loop {
        match ask(&config, &settings, &xid).await {
            Ok(Fate::Committed) => {
                tracing::warn!(transaction = %xid, "the unconfirmed write was applied; servers were told to retire their caches");
                return;
            }
            Ok(Fate::Aborted) => {
                tracing::info!(transaction = %xid, "the unconfirmed write was not applied");
                return;
            }
            Ok(Fate::Unknown) | Err(_) if started.elapsed() < GIVE_UP_AFTER => {}
            Ok(Fate::Unknown) | Err(_) => {
                tracing::error!(
                    transaction = %xid,
                    "cannot learn whether an unconfirmed write was applied; if it was, cached pages may show the old data until their TTL"
                );
                return;
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LAST_RETRY);
    }
}

enum Fate {
    Committed,
    Aborted,
    /// Still in progress, or unknown to the server.
    Unknown,
}

/// One attempt, on a fresh connection (pooled ones may be stuck on the frozen server).
async fn ask(
    config: &connect::PgConfig,
    settings: &super::DbSettings,
    xid: &str,
) -> Result<Fate, diesel::result::Error> {
    let Ok(mut conn) = connect::connect_pg(config, settings.connect_timeout).await else {
        return Ok(Fate::Unknown);
    };
    let status = tokio::time::timeout(
        settings.statement_timeout,
        diesel::sql_query("SELECT coalesce(pg_xact_status($1::xid8), 'unknown') AS value")
            .bind::<Text, _>(xid)
            .get_result::<Row>(&mut conn),
    )
    .await;
    let Ok(status) = status else {
        return Ok(Fate::Unknown);
    };
    match status?.value.as_str() {
        "committed" => {
            notify::announce_change(&mut conn, notify::PROPERTIES_TABLE).await?;
            Ok(Fate::Committed)
        }
        "aborted" => Ok(Fate::Aborted),
        _ => Ok(Fate::Unknown),
    }
}
