//! PostgreSQL change notifications sent by the application itself (the trigger sends
//! the usual ones; see the `notify_changes` migration and `service::change_listener`).

use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};

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
