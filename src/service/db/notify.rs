//! PostgreSQL change notifications: the ones the application sends itself, and what the
//! trigger's say (see the `row_changes` migration and `service::change_listener`).

use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};

use crate::domain::{RowChange, RowFacts};

/// The channel the trigger notifies and servers LISTEN on.
pub const CHANNEL: &str = "listings_changes";

/// The table of properties, as the trigger names it in its payload.
pub const PROPERTIES_TABLE: &str = "properties";

/// Tells every listening server that `table` changed, with an origin they will not
/// skip (`table:unconfirmed`).
pub async fn announce_change(conn: &mut AsyncPgConnection, table: &str) -> diesel::QueryResult<()> {
    diesel::sql_query("SELECT pg_notify($1, $2)")
        .bind::<Text, _>(CHANNEL)
        .bind::<Text, _>(format!("{table}:unconfirmed"))
        .execute(conn)
        .await
        .map(drop)
}

/// One notification: `table:origin`, then, when the statement changed few enough rows,
/// `:` and a JSON array of `[before, after]` pairs, each `[id, location key, price,
/// created_at]` or null.
pub struct Notification<'a> {
    pub table: &'a str,
    /// The writer's cache's tag (`listings.origin`); empty for other programs.
    pub origin: &'a str,
    /// The rows the statement changed; `None` when the notification does not say (too
    /// many, a TRUNCATE, or a rows part that does not parse).
    pub changes: Option<Vec<RowChange>>,
}

/// One side of a pair, as `listings_row_facts` writes it.
type Row = (i64, Option<String>, String, String);

impl<'a> Notification<'a> {
    pub fn parse(payload: &'a str) -> Notification<'a> {
        let mut parts = payload.splitn(3, ':');
        let table = parts.next().unwrap_or_default();
        let origin = parts.next().unwrap_or_default();
        let changes = parts.next().and_then(|rows| {
            let pairs: Vec<(Option<Row>, Option<Row>)> = serde_json::from_str(rows).ok()?;
            pairs.into_iter().map(change_of).collect()
        });
        Notification {
            table,
            origin,
            changes,
        }
    }
}

fn change_of((before, after): (Option<Row>, Option<Row>)) -> Option<RowChange> {
    let facts = |row: &Option<Row>| -> Option<Option<RowFacts>> {
        let Some((id, location_key, price, _)) = row else {
            return Some(None);
        };
        Some(Some(RowFacts {
            id: *id,
            location_key: location_key.clone(),
            price: price.parse().ok()?,
        }))
    };
    let created_at_changed = match (&before, &after) {
        (Some(before), Some(after)) => before.3 != after.3,
        _ => false,
    };
    Some(RowChange {
        before: facts(&before)?,
        after: facts(&after)?,
        created_at_changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_say_which_rows_changed_when_they_can() {
        let update = Notification::parse(
            r#"properties:local:[[[1, "lamu", "100.00", "2026-12-06T12:00:00+00:00"], [1, "thika", "150.00", "2026-12-06T12:00:00+00:00"]], [null, [2, null, "5.00", "x"]]]"#,
        );
        assert_eq!((update.table, update.origin), ("properties", "local"));
        let changes = update.changes.expect("rows");
        assert_eq!(changes.len(), 2);
        assert_eq!(
            changes[0].before.as_ref().map(|r| r.price.to_string()),
            Some("100.00".into())
        );
        assert_eq!(
            changes[0]
                .after
                .as_ref()
                .and_then(|r| r.location_key.clone()),
            Some("thika".into())
        );
        assert!(!changes[0].created_at_changed);
        assert_eq!(changes[1].before, None);
        assert_eq!(
            changes[1].after.as_ref().map(|r| r.location_key.clone()),
            Some(None)
        );

        let everything = Notification::parse("properties:");
        assert_eq!((everything.table, everything.origin), ("properties", ""));
        assert!(everything.changes.is_none());
        assert!(Notification::parse("properties::[[").changes.is_none());
        assert!(
            Notification::parse(r#"properties::[[[1, "a", "cheap", "x"], null]]"#)
                .changes
                .is_none()
        );
        let moved =
            Notification::parse(r#"properties::[[[1, "a", "1.00", "x"], [1, "a", "1.00", "y"]]]"#);
        assert!(moved.changes.expect("rows")[0].created_at_changed);
    }
}
