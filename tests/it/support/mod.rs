//! Test environments: isolated backends, the router in-process, the real binary.

pub mod backends;
pub mod binary;
pub mod pg_server;
pub mod proxy;
pub mod raw_http;
pub mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use listings::BoundServer;
use listings::config::DbSettings;
use listings::config::Settings;
use listings::config::{DatabaseUrl, KeyPrefix, RedisUrl};
use listings::domain::Property;
use listings::domain::{NewProperty, PropertyInput};
use listings::http::HttpService;
use listings::http::build_router;
use listings::service::App;
use tower::ServiceExt as _;

pub use backends::TestEnv;

/// The write API's token in tests.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Runs one async test body on the embedded backends and on PostgreSQL + Redis:
/// `both_modes!(name);` next to `async fn name(env: TestEnv)`. Without
/// LISTINGS_TEST_DATABASE_URL and LISTINGS_TEST_REDIS_URL (at build time, see
/// build.rs) the second is reported as ignored, never as passed.
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                super::$name($crate::support::TestEnv::embedded()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            #[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
            async fn postgres_redis() {
                super::$name($crate::support::TestEnv::postgres_redis().await).await;
            }
        }
    )+};
}

/// `both_modes!`, and on PostgreSQL with a Redis Sentinel set and with a Redis Cluster
/// of the test's own (see `redis_server`).
#[macro_export]
macro_rules! every_redis {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn embedded() {
                super::$name($crate::support::TestEnv::embedded()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            #[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
            async fn postgres_redis() {
                super::$name($crate::support::TestEnv::postgres_redis().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            #[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
            async fn postgres_sentinel() {
                super::$name($crate::support::TestEnv::postgres_sentinel().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            #[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
            async fn postgres_cluster() {
                super::$name($crate::support::TestEnv::postgres_cluster().await).await;
            }
        }
    )+};
}

impl TestEnv {
    pub fn settings(&self) -> Settings {
        Settings {
            database_url: self
                .database_url
                .parse::<DatabaseUrl>()
                .expect("test database URL"),
            redis_url: self
                .redis_url
                .as_ref()
                .map(|u| u.parse::<RedisUrl>().expect("test Redis URL")),
            cache_prefix: self
                .cache_prefix
                .parse::<KeyPrefix>()
                .expect("a test's key prefix is valid"),
            db: DbSettings {
                max_connections: 8,
                replica_max_connections: Some(8),
                ..DbSettings::default()
            },
            admin_token: Some(ADMIN_TOKEN.parse().expect("token")),
            ..Settings::default()
        }
    }

    /// An application as `serve` builds it (`BoundServer::build`): migrated, watching
    /// SQLite writes or listening for PostgreSQL notifications. Tests drive its router
    /// in-process.
    pub async fn app(&self) -> Arc<App> {
        self.app_with(self.settings()).await
    }

    pub async fn app_with(&self, settings: Settings) -> Arc<App> {
        init_test_log();
        let localhost = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        BoundServer::build(settings, localhost)
            .await
            .expect("build the application")
            .app()
            .clone()
    }
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn x_cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn titles(&self) -> Vec<String> {
        self.json()["data"]
            .as_array()
            .expect("data array")
            .iter()
            .map(|p| p["title"].as_str().expect("title").to_owned())
            .collect()
    }
}

pub async fn send(router: &HttpService, method: &str, path: &str) -> TestResponse {
    request(router, method, path, &[], Body::empty()).await
}

/// Any request, with headers and a body.
pub async fn request(
    router: &HttpService,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> TestResponse {
    let mut builder = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = router
        .clone()
        .oneshot(builder.body(body).expect("request"))
        .await
        .expect("infallible router");
    let (parts, body) = response.into_parts();
    TestResponse {
        status: parts.status,
        headers: parts.headers,
        body: to_bytes(body, usize::MAX).await.expect("body"),
    }
}

/// A JSON write with the test's admin token.
pub async fn write(
    router: &HttpService,
    method: &str,
    path: &str,
    json: serde_json::Value,
) -> TestResponse {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    request(router, method, path, &headers, Body::from(json.to_string())).await
}

pub async fn get(router: &HttpService, path: &str) -> TestResponse {
    send(router, "GET", path).await
}

/// A GET of `path` on `router` (serving `app`), stopped where it would store what it
/// loaded: the pause, already reached, and the request, to await once it is released.
pub async fn get_paused_before_store(
    app: &App,
    router: &HttpService,
    path: &str,
) -> (
    Arc<listings::test_hooks::Pause>,
    tokio::task::JoinHandle<TestResponse>,
) {
    let pause = app
        .hooks()
        .arm(listings::test_hooks::Point::BeforeCacheStore);
    let request = tokio::spawn({
        let (router, path) = (router.clone(), path.to_owned());
        async move { get(&router, &path).await }
    });
    pause.reached().await;
    (pause, request)
}

pub fn router(app: &Arc<App>) -> HttpService {
    build_router(app.clone())
}

pub fn new_property(title: &str, price: &str, location: &str) -> NewProperty {
    NewProperty::parse(PropertyInput {
        title: Some(title),
        description: Some("A test listing"),
        price: Some(price),
        location: Some(location),
    })
    .expect("valid property")
}

/// Creates through the service layer, as every write path does.
pub async fn create(app: &App, title: &str) -> Property {
    listings::service::properties::create_property(
        app,
        &new_property(title, "100000.00", "Malindi"),
    )
    .await
    .expect("create property")
}

/// Polls `condition` for up to 5 s; for effects that arrive asynchronously
/// (notifications, log lines). Panics with `what` when it never holds.
pub async fn wait_until(mut condition: impl FnMut() -> bool, what: &str) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Logs of in-process applications stay quiet unless TEST_LOG is set
/// (`TEST_LOG=debug cargo test name -- --nocapture`).
fn init_test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .init();
        }
    });
}

/// Runs `statement` as another program would (psql, the `sqlite3` shell): its own
/// connection, no application settings (no `listings.origin`, SQLite's built-in
/// `lower()`).
pub async fn run_sql_elsewhere(env: &TestEnv, statement: &str) {
    if env.is_postgres() {
        use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
        let mut conn = AsyncPgConnection::establish(&env.database_url)
            .await
            .expect("connect");
        diesel::sql_query(statement)
            .execute(&mut conn)
            .await
            .expect(statement);
    } else {
        use diesel::{Connection as _, RunQueryDsl as _};
        let (path, statement) = (env.database_url.clone(), statement.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut conn = diesel::SqliteConnection::establish(&path).expect("open");
            diesel::sql_query("PRAGMA busy_timeout = 5000")
                .execute(&mut conn)
                .expect("busy timeout");
            diesel::sql_query(&statement)
                .execute(&mut conn)
                .expect(&statement);
        })
        .await
        .expect("the statement ran");
    }
}

/// The number `query` (a single row, its first column a count) returns, on the test's
/// own connection.
pub async fn sql_count(env: &TestEnv, query: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let query = format!("SELECT ({query}) AS n");
    if env.is_postgres() {
        use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
        let mut conn = AsyncPgConnection::establish(&env.database_url)
            .await
            .expect("connect");
        diesel::sql_query(&query)
            .get_result::<Count>(&mut conn)
            .await
            .expect(&query)
            .n
    } else {
        use diesel::{Connection as _, RunQueryDsl as _};
        let path = env.database_url.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = diesel::SqliteConnection::establish(&path).expect("open");
            diesel::sql_query(&query)
                .get_result::<Count>(&mut conn)
                .expect(&query)
                .n
        })
        .await
        .expect("the query ran")
    }
}
