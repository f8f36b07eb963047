//! Isolated backends per test: a fresh SQLite file, or a fresh PostgreSQL database
//! cloned from a template migrated once; a key prefix of its own in Redis. Everything
//! a test created is removed when its `TestEnv` drops, and nothing else is touched.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash as _, Hasher as _};
use std::path::Path;

use diesel::sql_types::{BigInt, Text};
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use listings::config::DatabaseUrl;
use rand::Rng as _;

use crate::support::redis_server::{RedisCluster, SentinelSet};

pub const DATABASE_ENV: &str = "LISTINGS_TEST_DATABASE_URL";
pub const REDIS_ENV: &str = "LISTINGS_TEST_REDIS_URL";

pub struct TestEnv {
    pub database_url: String,
    pub redis_url: Option<String>,
    pub cache_prefix: String,
    /// Owns the SQLite file of the embedded mode; the directory is also the working
    /// directory of spawned processes (so no stray .env is read).
    pub dir: tempfile::TempDir,
    cleanup: Option<Cleanup>,
    /// Redis processes of the test's own (a Sentinel set, a Cluster), killed with it.
    pub redis_processes: Option<Box<dyn std::any::Any + Send + Sync>>,
}

struct Cleanup {
    admin_url: String,
    databases: Vec<String>,
    redis_url: String,
    prefix: String,
}

fn unique_suffix() -> String {
    format!("{}_{:08x}", std::process::id(), rand::rng().random::<u32>())
}

impl TestEnv {
    pub fn embedded() -> TestEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        let database_url = dir.path().join("listings.sqlite3").display().to_string();
        TestEnv {
            database_url,
            redis_url: None,
            cache_prefix: format!("t{}:", unique_suffix()),
            dir,
            cleanup: None,
            redis_processes: None,
        }
    }

    /// PostgreSQL as in [`TestEnv::postgres_redis`], with a Sentinel set of the test's
    /// own for the cache.
    pub async fn postgres_sentinel() -> TestEnv {
        let mut env = TestEnv::postgres_redis().await;
        let set = tokio::task::spawn_blocking(SentinelSet::start)
            .await
            .expect("start a Sentinel set");
        env.redis_url = Some(set.url());
        env.redis_processes = Some(Box::new(set));
        env
    }

    /// PostgreSQL as in [`TestEnv::postgres_redis`], with a Redis Cluster of the test's
    /// own for the cache.
    pub async fn postgres_cluster() -> TestEnv {
        let mut env = TestEnv::postgres_redis().await;
        let cluster = tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .expect("start a Redis Cluster");
        env.redis_url = Some(cluster.url());
        env.redis_processes = Some(Box::new(cluster));
        env
    }

    pub fn is_redis(&self) -> bool {
        self.redis_url.is_some()
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }

    /// A database of the test's own on PostgreSQL and a key prefix of its own in Redis.
    /// Panics when the two variables are unset or the services cannot be used: a test
    /// that needs them fails, it never passes without running.
    pub async fn postgres_redis() -> TestEnv {
        let (Ok(admin_url), Ok(redis_url)) =
            (std::env::var(DATABASE_ENV), std::env::var(REDIS_ENV))
        else {
            panic!("set {DATABASE_ENV} and {REDIS_ENV} to run this test on PostgreSQL and Redis");
        };
        let database = format!("listings_test_{}", unique_suffix());
        create_database_from_template(&admin_url, &database).await;
        let mut redis = redis::Client::open(redis_url.as_str()).expect("Redis URL");
        let _: String = redis::cmd("PING")
            .query(&mut redis)
            .unwrap_or_else(|e| panic!("{REDIS_ENV} is set but Redis does not answer: {e}"));
        let prefix = format!("listings-test:{database}:");
        let mut env = TestEnv::embedded();
        env.database_url = with_database(&admin_url, &database);
        env.redis_url = Some(redis_url.clone());
        env.cache_prefix = prefix.clone();
        env.cleanup = Some(Cleanup {
            admin_url,
            databases: vec![database],
            redis_url,
            prefix,
        });
        env
    }

    /// A PostgreSQL database of this test's own with nothing in it (not even the
    /// migrations), removed with the test's; returns its URL.
    pub async fn empty_postgres_database(&mut self) -> String {
        let cleanup = self
            .cleanup
            .as_mut()
            .expect("a PostgreSQL test environment");
        let name = format!("{}_empty", cleanup.databases[0]);
        let mut admin = connect_admin(&cleanup.admin_url).await;
        sql_query(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("create an empty database");
        cleanup.databases.push(name.clone());
        with_database(&cleanup.admin_url, &name)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let Some(cleanup) = self.cleanup.take() else {
            return;
        };
        // Drop cannot await; a thread with its own runtime works inside or outside tokio.
        let joined = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = AsyncPgConnection::establish(&cleanup.admin_url).await {
                    for database in &cleanup.databases {
                        let _ = sql_query(format!(
                            "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
                        ))
                        .execute(&mut conn)
                        .await;
                    }
                }
                if let Ok(client) = redis::Client::open(cleanup.redis_url.as_str())
                    && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                {
                    // Control keys are `{prefix}…`, entries `prefix…` (see `cache::keys`).
                    for pattern in [
                        format!("{{{}}}*", cleanup.prefix),
                        format!("{}*", cleanup.prefix),
                    ] {
                        let keys: Vec<String> = redis::cmd("KEYS")
                            .arg(pattern)
                            .query_async(&mut conn)
                            .await
                            .unwrap_or_default();
                        if !keys.is_empty() {
                            let _: Result<(), _> =
                                redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                        }
                    }
                }
            });
        })
        .join();
        if joined.is_err() {
            eprintln!("cleanup of a test environment failed");
        }
    }
}

/// The admin URL with its database name replaced.
pub fn with_database(admin_url: &str, database: &str) -> String {
    let (base, query) = admin_url
        .split_once('?')
        .map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut url = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        url = format!("{url}?{query}");
    }
    url
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// A connection to the database `admin_url` names, which is created first if the server
/// does not have it yet (through the `postgres` maintenance database), so any database
/// name works on a fresh server.
pub async fn connect_admin(admin_url: &str) -> AsyncPgConnection {
    match AsyncPgConnection::establish(admin_url).await {
        Ok(conn) => conn,
        Err(e) if e.to_string().contains("does not exist") => {
            let name = url::Url::parse(admin_url)
                .ok()
                .map(|url| url.path().trim_start_matches('/').to_owned())
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| panic!("{DATABASE_ENV} names no database"));
            let mut maintenance =
                AsyncPgConnection::establish(&with_database(admin_url, "postgres"))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{DATABASE_ENV} is set but PostgreSQL does not answer: {e}")
                    });
            // Concurrent test processes may race to create it; either wins.
            let _ = sql_query(format!("CREATE DATABASE \"{name}\""))
                .execute(&mut maintenance)
                .await;
            AsyncPgConnection::establish(admin_url)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"))
        }
        Err(e) => panic!("{DATABASE_ENV} is set but PostgreSQL does not answer: {e}"),
    }
}

/// This checkout's part of template names: templates made by another checkout (other
/// migrations) are never this one's to drop.
fn checkout_tag() -> String {
    let mut hasher = DefaultHasher::new();
    env!("CARGO_MANIFEST_DIR").hash(&mut hasher);
    format!("{:08x}", hasher.finish() as u32)
}

/// The template's name carries this checkout's tag and a hash of the migrations, so a
/// changed migration gets a fresh template and concurrent test processes agree on it
/// (an advisory lock guards its creation).
async fn create_database_from_template(admin_url: &str, database: &str) {
    let mut admin = connect_admin(admin_url).await;
    let template = format!(
        "listings_template_{}_{:016x}",
        checkout_tag(),
        migrations_hash()
    );
    sql_query("SELECT pg_advisory_lock(727274)")
        .execute(&mut admin)
        .await
        .expect("advisory lock");
    let exists = sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
        .bind::<Text, _>(&template)
        .get_result::<Count>(&mut admin)
        .await
        .expect("look up template")
        .n
        > 0;
    if !exists {
        drop_stale_templates(&mut admin).await;
        let building = format!("{template}_building");
        sql_query(format!(
            "DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"
        ))
        .execute(&mut admin)
        .await
        .expect("drop");
        sql_query(format!("CREATE DATABASE \"{building}\""))
            .execute(&mut admin)
            .await
            .expect("create template");
        let url: DatabaseUrl = with_database(admin_url, &building).parse().expect("URL");
        listings::service::migrations::run_pending(&url, &Default::default())
            .await
            .expect("migrate template");
        sql_query(format!(
            "ALTER DATABASE \"{building}\" RENAME TO \"{template}\""
        ))
        .execute(&mut admin)
        .await
        .expect("publish template");
    }
    sql_query("SELECT pg_advisory_unlock(727274)")
        .execute(&mut admin)
        .await
        .expect("unlock");
    sql_query(format!(
        "CREATE DATABASE \"{database}\" TEMPLATE \"{template}\""
    ))
    .execute(&mut admin)
    .await
    .expect("create test database");
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    datname: String,
}

/// This checkout's templates of older migration sets are useless: remove them.
async fn drop_stale_templates(admin: &mut AsyncPgConnection) {
    let stale = sql_query("SELECT datname FROM pg_database WHERE datname LIKE $1")
        .bind::<Text, _>(format!("listings\\_template\\_{}\\_%", checkout_tag()))
        .load::<Name>(admin)
        .await
        .expect("list templates");
    for Name { datname } in stale {
        let _ = sql_query(format!(
            "DROP DATABASE IF EXISTS \"{datname}\" WITH (FORCE)"
        ))
        .execute(admin)
        .await;
    }
}

fn migrations_hash() -> u64 {
    let mut hasher = DefaultHasher::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let mut files = Vec::new();
    collect_files(&root, &mut files);
    files.sort();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(&file)
            .expect("read migration")
            .hash(&mut hasher);
    }
    hasher.finish()
}

fn collect_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read migrations dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn admin_url_gets_the_test_database() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://h/test?sslmode=disable", "x"),
        "postgres://h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}
