//! The property service's statements and the transactions they share: a page and its
//! count in one snapshot (the count possibly another page's, confirmed current there),
//! each write in a transaction of its own, an import in one transaction or none. Bodies
//! are written once for both backends (see `dispatch!`).

use crate::domain::{NewProperty, PropertyChanges, PropertyQuery};
use crate::domain::{Property, PropertyPage, RowFacts};
use crate::service::cache::tags::{TagSet, write_tags};
use crate::service::count_memo::KnownCount;
use crate::service::db::dispatch::dispatch;
use crate::service::db::row_update::RowUpdate;
use crate::service::db::{Db, DbError};
use crate::service::wal::ReadFloor;
use crate::view::precondition::Precondition;

/// What a SQLite import's task hears from the reader of its rows.
enum ImportStep {
    /// Insert these, then answer with the running total.
    Batch(Vec<NewProperty>, tokio::sync::oneshot::Sender<usize>),
    /// Every batch was sent: commit.
    Done,
}

/// One page of a search and the number of matches, from one snapshot. The count is
/// `known`'s when the snapshot shows the versions it was made under; otherwise it is
/// counted, and returned as well, for other pages of the search to share (see
/// `page_statement`). A text search, whose matches any write can change, counts its
/// own.
pub(super) async fn list_page(
    db: &Db,
    query: &PropertyQuery,
    known: Option<std::sync::Arc<KnownCount>>,
    floor: ReadFloor,
) -> Result<(PropertyPage, Option<KnownCount>), DbError> {
    if let Some(at_once) = db.page_at_once(query, known, floor).await? {
        return Ok(at_once);
    }
    let query = query.clone();
    #[cfg(feature = "test-hooks")]
    let hooks = db.hooks.clone();
    dispatch!(db, snapshot at floor, move |tx, repo| {
        repo::plan_for_values(tx).await?;
        let rows = repo::page_rows(tx, &query).await?;
        crate::test_hooks::pause!(hooks, BetweenRowsAndCount);
        let count = repo::count_matches(tx, &query).await?;
        Ok((PropertyPage { count, data: rows }, None))
    })
}

pub(super) async fn find(db: &Db, id: i64, floor: ReadFloor) -> Result<Property, DbError> {
    dispatch!(db, read at floor, move |conn, repo| repo::find(conn, id).await)
}

/// The new row and its facts.
pub(super) async fn insert(db: &Db, new: &NewProperty) -> Result<(Property, RowFacts), DbError> {
    let new = new.clone();
    dispatch!(db, write, DbError, move |tx, repo, _heartbeat, xid| {
        repo::insert(tx, &new, xid).await
    })
}

/// Changes the given fields: the row before and after, with their facts; `NotFound`
/// when there is no such row; `PreconditionFailed` (and nothing written) when the row
/// as the write locked it does not satisfy `precondition`.
pub(super) async fn update(
    db: &Db,
    id: i64,
    changes: &PropertyChanges,
    precondition: &Precondition,
) -> Result<RowUpdate, DbError> {
    let changes = changes.clone();
    let precondition = precondition.clone();
    dispatch!(db, write, DbError, move |tx, repo, _heartbeat, xid| {
        let update = repo::update(tx, id, &changes, xid).await?;
        // Checked on the row the update replaced, which it locked: a rollback undoes it.
        if !precondition.allows(&update.old) {
            return Err(DbError::PreconditionFailed);
        }
        Ok::<_, DbError>(update)
    })
}

/// The deleted row's facts, if there was one (see [`update`] for `precondition`).
pub(super) async fn delete(
    db: &Db,
    id: i64,
    precondition: &Precondition,
) -> Result<Option<RowFacts>, DbError> {
    let precondition = precondition.clone();
    dispatch!(db, write, DbError, move |tx, repo, _heartbeat, xid| {
        let Some((row, facts)) = repo::delete(tx, id, xid).await? else {
            return Ok(None);
        };
        if !precondition.allows(&row) {
            return Err(DbError::PreconditionFailed);
        }
        Ok::<_, DbError>(Some(facts))
    })
}

/// Inserts every batch `next_batch` yields, all in one transaction or none; returns how
/// many, and what they changed for the cache. `progress` hears the running total after
/// each batch; the statement deadline applies to each batch, not to the whole import.
/// The batches are read here and sent to the write, which may run in a task of its own
/// (SQLite).
pub(super) async fn import<F>(
    db: &Db,
    mut next_batch: impl FnMut() -> anyhow::Result<Option<Vec<NewProperty>>> + Send,
    mut progress: F,
) -> anyhow::Result<(usize, TagSet)>
where
    F: FnMut(usize) + Send,
{
    let (steps, mut received) = tokio::sync::mpsc::channel::<ImportStep>(1);
    let write = async {
        dispatch!(
            db,
            write,
            anyhow::Error,
            move |tx, repo, heartbeat, _xid| {
                let mut total = 0;
                let mut changed = TagSet::default();
                loop {
                    match received.recv().await {
                        Some(ImportStep::Batch(batch, inserted)) => {
                            let created = repo::insert_batch(tx, batch).await?;
                            total += created.len();
                            let batch: TagSet = created
                                .iter()
                                .flat_map(|row| write_tags(None, Some(row)))
                                .collect();
                            changed = changed.union(&batch);
                            heartbeat.tick();
                            let _ = inserted.send(total);
                        }
                        Some(ImportStep::Done) => break anyhow::Ok((total, changed)),
                        // The reader failed: roll back.
                        None => {
                            break Err(anyhow::anyhow!("the import stopped before its end"));
                        }
                    }
                }
            }
        )
    };
    let read = async move {
        while let Some(batch) = next_batch()? {
            let (inserted, total) = tokio::sync::oneshot::channel();
            // A write that stopped has its own error to tell.
            if steps
                .send(ImportStep::Batch(batch, inserted))
                .await
                .is_err()
            {
                return Ok(());
            }
            match total.await {
                Ok(total) => progress(total),
                Err(_) => return Ok(()),
            }
        }
        let _ = steps.send(ImportStep::Done).await;
        anyhow::Ok(())
    };
    let (written, read) = tokio::join!(write, read);
    read?;
    written
}
