//! PostgreSQL-backed servers LISTEN for the `properties` trigger's notifications, so that
//! a change committed by anyone (another server, the CLI, psql, a migration) retires the
//! cache. The listener has its own connection and reconnects by itself; every
//! (re)connect retires everything, because what was committed while nobody listened
//! cannot be known.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::task::JoinHandle;

use crate::config::DatabaseUrl;
use crate::metrics::events::{Cause, Origin};
use crate::service::App;
use crate::service::cache::keys::Resource;
use crate::service::cache::tags::{TagSet, change_tags};
/// How the listener's connection shows in `pg_stat_activity`.
pub use crate::service::db::connect::LISTENER_APPLICATION_NAME as APPLICATION_NAME;
use crate::service::db::connect::{self, PgSession};
use crate::service::db::notify::{CHANNEL, Notification};
use crate::test_hooks::pause;

/// A silent connection is probed this often, so a dead one is noticed and replaced.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Connects and LISTENs before returning (so a server never serves unheard), then
/// keeps listening in a task. `None` when the database is not PostgreSQL.
pub async fn start(app: Arc<App>) -> anyhow::Result<Option<JoinHandle<()>>> {
    let DatabaseUrl::Postgres(url) = &app.settings.database_url else {
        return Ok(None);
    };
    let config = connect::pg_config(url.expose(), &app.settings.db, PgSession::Listener)
        .context("cannot listen for database changes")?;
    let conn = connect_and_listen(&app, &config)
        .await
        .context("cannot listen for database changes")?;
    Ok(Some(tokio::spawn(listen_forever(app, config, conn))))
}

async fn listen_forever(app: Arc<App>, config: connect::PgConfig, mut conn: AsyncPgConnection) {
    loop {
        let error = receive(&app, &mut conn).await;
        let mut backoff = MIN_BACKOFF;
        let mut reason = error;
        loop {
            tracing::warn!(
                database = %app.settings.database_url.target(),
                error = format!("{reason:#}"),
                "change listener disconnected; reconnecting in {} ms",
                backoff.as_millis()
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            pause!(app.cache().hooks(), BeforeListen);
            match connect_and_listen(&app, &config).await {
                Ok(new_conn) => {
                    conn = new_conn;
                    break;
                }
                Err(e) => reason = e,
            }
        }
    }
}

async fn connect_and_listen(
    app: &App,
    config: &connect::PgConfig,
) -> anyhow::Result<AsyncPgConnection> {
    let limit = app.settings.db.connect_timeout;
    let mut conn = connect::connect_pg(config, limit)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect: {e}"))?;
    tokio::time::timeout(
        limit,
        diesel::sql_query(format!("LISTEN {CHANNEL}")).execute(&mut conn),
    )
    .await
    .map_err(|_| anyhow::anyhow!("LISTEN got no answer"))?
    .context("LISTEN failed")?;
    // Changes committed before LISTEN took effect were not heard: retire everything.
    app.cache()
        .invalidate_everything(Cause::recovery(
            "listening for database changes: what changed unheard retired",
        ))
        .await;
    app.metrics.record_listener_connect();
    tracing::info!("listening for database changes on channel {CHANNEL}");
    Ok(conn)
}

/// Handles notifications until the connection fails; returns why.
async fn receive(app: &App, conn: &mut AsyncPgConnection) -> anyhow::Error {
    loop {
        let next = {
            let mut notifications = pin!(conn.notifications_stream());
            match tokio::time::timeout(HEARTBEAT_EVERY, notifications.next()).await {
                Ok(Some(Ok(first))) => {
                    // Coalesce a burst (an import, a bulk update) into one invalidation.
                    let mut payloads = vec![first.payload];
                    while let Some(Some(Ok(more))) = notifications.next().now_or_never() {
                        payloads.push(more.payload);
                    }
                    Ok(Some(payloads))
                }
                Ok(Some(Err(e))) => {
                    Err(anyhow::Error::new(e).context("notification stream failed"))
                }
                Ok(None) => Err(anyhow::anyhow!("the connection closed")),
                Err(_silence) => Ok(None),
            }
        };
        match next {
            Ok(Some(payloads)) => {
                app.metrics.record_change_notification();
                invalidate_changed(app, &payloads).await;
            }
            Ok(None) => {
                let probe = diesel::sql_query("SELECT 1").execute(conn);
                match tokio::time::timeout(app.settings.db.statement_timeout, probe).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return anyhow::Error::new(e).context("heartbeat failed"),
                    Err(_) => return anyhow::anyhow!("heartbeat timed out"),
                }
            }
            Err(e) => return e,
        }
    }
}

/// Each payload names the writer's cache (`Cache::origin_tag`, set on every pooled
/// connection; empty for psql and other programs) and, when it can, the rows the
/// statement changed (see `Notification`). A writer sharing this server's Redis and
/// prefix has already retired what it changed, so only other writes need acting on; an
/// in-process cache must act on all. A notification that does not say which rows
/// changed retires everything.
async fn invalidate_changed(app: &App, payloads: &[String]) {
    let own_origin = app.cache().origin_tag();
    let shared_cache = app.cache().is_shared();
    let mut changed: Option<TagSet> = None;
    let mut cause = Cause {
        what: "change committed by another process",
        origin: Origin::OtherProcess,
    };
    for payload in payloads {
        let notification = Notification::parse(payload);
        if shared_cache && notification.origin == own_origin {
            continue;
        }
        if notification.origin.is_empty() {
            cause = Cause {
                what: "out-of-band change (made outside listings)",
                origin: Origin::OutOfBand,
            };
        }
        let tags = match (Resource::named(notification.table), notification.changes) {
            (Some(_), Some(changes)) => changes.iter().flat_map(change_tags).collect(),
            _ => TagSet::all(),
        };
        changed = Some(match changed {
            Some(before) => before.union(&tags),
            None => tags,
        });
    }
    if let Some(changed) = changed {
        // Delivered after its commit: the primary's position now is at or past it.
        let written_at = app.db().position_for_watermark().await;
        app.cache()
            .invalidate_written(&changed, cause, written_at)
            .await;
        tracing::debug!(
            ?payloads,
            "cache invalidated: the database notified a committed change"
        );
    }
}
