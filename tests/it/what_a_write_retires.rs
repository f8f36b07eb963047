//! A write retires the cached pages whose result it can change, before it is
//! acknowledged, on every server, and leaves the others cached: the cases of
//! docs/consistency.md one by one (a row moving into or out of a filter, a price change
//! that reorders pages, an insert or a delete before an offset page, a change to a row
//! on a page, a count change on every page of a filter), a slow reader racing a
//! reordering write, and a checker of every page read while rows move between
//! locations and price bands.
//!
//! Two applications share the database and the cache as two servers would: one writes,
//! the other serves the pages. A page that must stay is a hit that costs no database
//! query; one that must be retired answers what a fresh process reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use listings::domain::{PropertyChanges, PropertyInput};
use listings::service::{App, properties};
use listings::test_hooks::Point;
use rand::Rng as _;
use tokio::task::JoinSet;

use crate::support::{
    TestEnv, get, get_paused_before_store, new_property, router, run_sql_elsewhere, sql_count,
};
use crate::{both_modes, every_redis};

every_redis!(
    each_write_retires_what_it_changes_and_nothing_else,
    a_slow_reader_cannot_store_a_page_a_price_change_reordered
);
both_modes!(
    pages_read_after_a_write_reflect_it_on_two_servers,
    writes_from_elsewhere_retire_what_they_change
);

/// What a fresh process reads: an application of its own, without Redis, whose
/// in-process cache starts empty.
async fn truth(env: &TestEnv, path: &str) -> serde_json::Value {
    let mut settings = env.settings();
    settings.redis_url = None;
    let app = App::connect(settings).await.expect("a fresh application");
    get(&router(&Arc::new(app)), path).await.json()
}

fn changes(title: Option<&str>, price: Option<&str>, location: Option<&str>) -> PropertyChanges {
    PropertyChanges::parse(PropertyInput {
        title,
        price,
        location,
        ..Default::default()
    })
    .expect("valid changes")
}

/// Pages served by one server, checked after each write made through another.
struct Reader {
    app: Arc<App>,
    router: listings::http::HttpService,
}

impl Reader {
    /// Reads each page until it is a hit.
    async fn warm(&self, paths: &[&str]) {
        for path in paths {
            let mut tries = 0;
            while get(&self.router, path).await.x_cache() != "HIT" {
                tries += 1;
                assert!(tries < 50, "{path} never became a hit");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Right after a write was acknowledged: each of `retired` is read afresh and
    /// answers what the database holds; each of `kept` is a hit that costs no query.
    async fn after(&self, env: &TestEnv, what: &str, retired: &[&str], kept: &[&str]) {
        // The first request after another process's commit learns what it changed (on
        // SQLite, a read of the change log): not a page's cost.
        assert_eq!(get(&self.router, "/properties/0/").await.status, 404);
        let queries = self.app.metrics.db_queries();
        for path in kept {
            let page = get(&self.router, path).await;
            assert_eq!(
                page.x_cache(),
                "HIT",
                "{what}: {path} should have stayed cached"
            );
            assert_eq!(page.json(), truth(env, path).await, "{what}: {path}");
        }
        assert_eq!(
            self.app.metrics.db_queries(),
            queries,
            "{what}: pages that stayed cached cost no query"
        );
        for path in retired {
            let page = get(&self.router, path).await;
            assert_eq!(
                page.x_cache(),
                "MISS",
                "{what}: {path} should have been retired"
            );
            assert_eq!(page.json(), truth(env, path).await, "{what}: {path}");
        }
        let all: Vec<&str> = retired.iter().chain(kept).copied().collect();
        self.warm(&all).await;
    }
}

async fn each_write_retires_what_it_changes_and_nothing_else(env: TestEnv) {
    let writer = env.app().await;
    let reader_app = env.app().await;
    let reader = Reader {
        router: router(&reader_app),
        app: reader_app,
    };
    let mut ids = HashMap::new();
    for (title, price, location) in [
        ("L1", "100000.00", "Lamu"),
        ("L2", "200000.00", "Lamu"),
        ("L3", "300000.00", "Lamu"),
        ("L4", "400000.00", "Lamu"),
        ("L5", "500000.00", "Lamu"),
        ("L6", "600000.00", "Lamu"),
        ("T1", "150000.00", "Thika"),
        ("T2", "250000.00", "Thika"),
        ("M1", "1000000.00", "Malindi"),
    ] {
        let new = new_property(title, price, location);
        let created = properties::create_property(&writer, &new)
            .await
            .expect("seed");
        ids.insert(title, created.id);
    }
    let lamu_newest = "/properties/?location=lamu&page_size=2";
    let lamu_newest_3 = "/properties/?location=lamu&page=3&page_size=2";
    let lamu_cheapest = "/properties/?location=lamu&ordering=price&page_size=2";
    let lamu_priciest = "/properties/?location=lamu&ordering=-price&page_size=2";
    let thika = "/properties/?location=thika";
    let low_range = "/properties/?min_price=100000&max_price=180000";
    let high_range = "/properties/?min_price=900000";
    let newest = "/properties/?page_size=2";
    let l3 = format!("/properties/{}/", ids["L3"]);
    let t2 = format!("/properties/{}/", ids["T2"]);
    let all = [
        lamu_newest,
        lamu_newest_3,
        lamu_cheapest,
        lamu_priciest,
        thika,
        low_range,
        high_range,
        newest,
        &l3,
        &t2,
    ];
    reader.warm(&all).await;

    // A row moving out of one filter and into another: every page of both changes its
    // count; pages whose filter holds it before and after, and whose rows it is not
    // among, stay.
    properties::update_property(&writer, ids["L3"], &changes(None, None, Some("Thika")))
        .await
        .expect("move L3 to Thika");
    reader
        .after(
            &env,
            "L3 moved from Lamu to Thika",
            &[
                lamu_newest,
                lamu_newest_3,
                lamu_cheapest,
                lamu_priciest,
                thika,
                &l3,
            ],
            &[low_range, high_range, newest, &t2],
        )
        .await;

    // A price change that reorders the cheapest Lamu pages: L5 moves from the top of the
    // price order to its second place. The newest page shows L5 (its price changed);
    // the third page of the newest shows neither it nor a count change. The low range
    // gains L5.
    properties::update_property(&writer, ids["L5"], &changes(None, Some("150000.00"), None))
        .await
        .expect("reprice L5");
    reader
        .after(
            &env,
            "L5 repriced from 500,000 to 150,000",
            &[lamu_cheapest, lamu_priciest, lamu_newest, low_range],
            &[lamu_newest_3, thika, high_range, newest, &l3, &t2],
        )
        .await;

    // A price change far from every cached page's window and from the ranges' bounds:
    // L2, from 200,000 to 260,000, is on none of the cached pages of Lamu (it is on the
    // second page of the newest, not cached), reorders none and changes no count.
    properties::update_property(&writer, ids["L2"], &changes(None, Some("260000.00"), None))
        .await
        .expect("reprice L2");
    reader
        .after(
            &env,
            "L2 repriced within the middle of Lamu",
            &[],
            &[
                lamu_newest,
                lamu_newest_3,
                lamu_cheapest,
                lamu_priciest,
                thika,
                low_range,
                high_range,
                newest,
                &l3,
                &t2,
            ],
        )
        .await;

    // An insert before an offset page, which changes the count of every page of its
    // filter: a new Lamu listing is the newest, so the third page shifts too.
    let created = properties::create_property(&writer, &new_property("L7", "700000.00", "Lamu"))
        .await
        .expect("create L7");
    reader
        .after(
            &env,
            "L7 created in Lamu",
            &[
                lamu_newest,
                lamu_newest_3,
                lamu_cheapest,
                lamu_priciest,
                newest,
            ],
            &[thika, low_range, high_range, &l3, &t2],
        )
        .await;

    // A delete, likewise.
    properties::delete_property(&writer, created.id)
        .await
        .expect("delete L7");
    reader
        .after(
            &env,
            "L7 deleted",
            &[
                lamu_newest,
                lamu_newest_3,
                lamu_cheapest,
                lamu_priciest,
                newest,
            ],
            &[thika, low_range, high_range, &l3, &t2],
        )
        .await;

    // A change to a row on a page (its title): the pages that show it and the row.
    properties::update_property(&writer, ids["T2"], &changes(Some("T2 renamed"), None, None))
        .await
        .expect("rename T2");
    reader
        .after(
            &env,
            "T2 renamed",
            &[thika, newest, &t2],
            &[
                lamu_newest,
                lamu_newest_3,
                lamu_cheapest,
                lamu_priciest,
                low_range,
                high_range,
                &l3,
            ],
        )
        .await;
}

/// A reader loads the cheapest page of Lamu and is paused before it stores it; a price
/// change moves another row onto that page, is committed, retired and acknowledged;
/// then the reader stores what it loaded. The next read must not serve that.
async fn a_slow_reader_cannot_store_a_page_a_price_change_reordered(env: TestEnv) {
    let writer = env.app().await;
    let reader = env.app().await;
    let reader_router = router(&reader);
    let mut dear = None;
    for (title, price) in [
        ("Cheap", "100000.00"),
        ("Middle", "200000.00"),
        ("Dear", "900000.00"),
    ] {
        let created = properties::create_property(&writer, &new_property(title, price, "Lamu"))
            .await
            .expect("seed");
        dear = Some(created.id);
    }
    let page = "/properties/?location=lamu&ordering=price&page_size=2";
    let (pause, slow) = get_paused_before_store(&reader, &reader_router, page).await;
    properties::update_property(
        &writer,
        dear.expect("seeded"),
        &changes(None, Some("150000.00"), None),
    )
    .await
    .expect("reprice");
    pause.release();
    let slow = slow.await.expect("slow reader");
    assert_eq!(
        slow.titles(),
        ["Cheap", "Middle"],
        "it began before the write"
    );

    let next = get(&reader_router, page).await;
    assert_eq!(
        next.titles(),
        ["Cheap", "Dear"],
        "the late store is not served"
    );
    assert_eq!(next.x_cache(), "MISS");
    assert_eq!(get(&reader_router, page).await.titles(), ["Cheap", "Dear"]);
}

/// Two writers move one row at once: the second one's statement waits for the first
/// one's row lock, so the row it replaces is where the first one put it, not where its
/// statement's snapshot showed it. Its write must retire that location's pages cached
/// between the two commits, even one that does not show the row (its count does).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_write_that_waited_for_a_row_lock_retires_where_the_row_was_when_it_got_it() {
    let env = TestEnv::postgres_redis().await;
    let writer = env.app().await;
    let reader = env.app().await;
    let reader_router = router(&reader);
    properties::create_property(&writer, &new_property("Staying", "1000.00", "Lamu"))
        .await
        .expect("seed");
    let row = properties::create_property(&writer, &new_property("Moving", "1000.00", "Thika"))
        .await
        .expect("seed");
    let move_to = |location: &'static str| {
        let writer = writer.clone();
        tokio::spawn(async move {
            properties::update_property(&writer, row.id, &changes(None, None, Some(location))).await
        })
    };

    let first_commit = writer.hooks().arm(Point::BeforeCommit);
    let first = move_to("Lamu");
    first_commit.reached().await;
    let second_commit = writer.hooks().arm(Point::BeforeCommit);
    let second = move_to("Malindi");
    let waiting_for_the_lock = "SELECT count(*) FROM pg_stat_activity \
        WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let deadline = Instant::now() + Duration::from_secs(10);
    while sql_count(&env, waiting_for_the_lock).await != 1 {
        assert!(
            Instant::now() < deadline,
            "the second write never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first_commit.release();
    first.await.expect("first writer").expect("first move");

    second_commit.reached().await;
    let lamu = "/properties/?location=lamu&ordering=created_at&page_size=1";
    let between = get(&reader_router, lamu).await;
    assert_eq!(
        (between.titles(), &between.json()["count"]),
        (vec!["Staying".to_owned()], &serde_json::json!(2))
    );
    assert_eq!(get(&reader_router, lamu).await.x_cache(), "HIT");
    second_commit.release();
    second.await.expect("second writer").expect("second move");

    let after = get(&reader_router, lamu).await;
    assert_eq!(after.json()["count"], 1, "the row left Lamu");
    assert_eq!(after.json(), truth(&env, lamu).await);
    let malindi = get(&reader_router, "/properties/?location=malindi").await;
    assert_eq!(malindi.titles(), ["Moving"]);
}

const LOCATIONS: [&str; 3] = ["Lamu", "Thika", "Malindi"];
const PRICES: [&str; 6] = [
    "90000.00",
    "120000.00",
    "150000.00",
    "200000.00",
    "350000.00",
    "900000.00",
];
const WRITES: usize = 60;
const READERS: usize = 4;

/// The rows as the writer left them after each write.
#[derive(Clone, Debug)]
struct Row {
    id: i64,
    title: String,
    price: f64,
    location: String,
}

/// What `query` answers on `rows` (ids, titles and prices in order, and the count).
fn answer(rows: &[Row], query: &Search) -> serde_json::Value {
    let mut matching: Vec<&Row> = rows
        .iter()
        .filter(|row| query.location.is_none_or(|l| row.location == l))
        .filter(|row| query.min.is_none_or(|min| row.price >= min))
        .filter(|row| query.max.is_none_or(|max| row.price <= max))
        .collect();
    matching.sort_by(|a, b| {
        let by_price = a.price.total_cmp(&b.price).then(a.id.cmp(&b.id));
        match query.ordering {
            "price" => by_price,
            "-price" => by_price.reverse(),
            _ => b.id.cmp(&a.id),
        }
    });
    let page: Vec<serde_json::Value> = matching
        .iter()
        .skip(3 * (query.page - 1))
        .take(3)
        .map(|row| serde_json::json!([row.id, row.title, row.price, row.location]))
        .collect();
    serde_json::json!({"count": matching.len(), "data": page})
}

/// The same shape, from a response.
fn shape(response: &serde_json::Value) -> serde_json::Value {
    let page: Vec<serde_json::Value> = response["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|row| {
            let price: f64 = row["price"]
                .as_str()
                .expect("price")
                .parse()
                .expect("number");
            serde_json::json!([row["id"], row["title"], price, row["location"]])
        })
        .collect();
    serde_json::json!({"count": response["count"], "data": page})
}

#[derive(Clone, Copy, Debug)]
struct Search {
    location: Option<&'static str>,
    min: Option<f64>,
    max: Option<f64>,
    ordering: &'static str,
    page: usize,
}

impl Search {
    fn random() -> Search {
        let mut rng = rand::rng();
        let bound = |rng: &mut rand::rngs::ThreadRng| -> Option<f64> {
            rng.random_bool(0.4).then(|| {
                PRICES[rng.random_range(0..PRICES.len())]
                    .parse()
                    .expect("price")
            })
        };
        Search {
            location: rng
                .random_bool(0.7)
                .then(|| LOCATIONS[rng.random_range(0..LOCATIONS.len())]),
            min: bound(&mut rng),
            max: bound(&mut rng),
            ordering: ["price", "-price", "-created_at"][rng.random_range(0..3)],
            page: rng.random_range(1..=3),
        }
    }

    fn path(&self) -> String {
        let mut path = format!(
            "/properties/?ordering={}&page={}&page_size=3",
            self.ordering, self.page
        );
        if let Some(location) = self.location {
            path += &format!("&location={location}");
        }
        if let Some(min) = self.min {
            path += &format!("&min_price={min:.2}");
        }
        if let Some(max) = self.max {
            path += &format!("&max_price={max:.2}");
        }
        path
    }
}

/// Clears the flag when dropped.
struct StopsOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopsOnDrop {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

struct Written {
    started: Duration,
    acknowledged: Duration,
    rows: Vec<Row>,
}

struct Read {
    started: Duration,
    finished: Duration,
    search: Search,
    answer: serde_json::Value,
    hit: bool,
}

/// One writer moves rows between locations and price bands, creates and deletes them,
/// through either server; readers read filtered, price-ranged, ordered, paged searches
/// through either. Every page must be what the rows were after some write between the
/// last one acknowledged before the read began and the last one begun before it ended.
async fn pages_read_after_a_write_reflect_it_on_two_servers(env: TestEnv) {
    let apps = [env.app().await, env.app().await];
    let routers = [router(&apps[0]), router(&apps[1])];
    let mut rows = Vec::new();
    for i in 0..12 {
        let (location, price) = (LOCATIONS[i % 3], PRICES[i % PRICES.len()]);
        let title = format!("Seed {i}");
        let created = properties::create_property(&apps[0], &new_property(&title, price, location))
            .await
            .expect("seed");
        rows.push(Row {
            id: created.id,
            title,
            price: price.parse().expect("price"),
            location: location.to_owned(),
        });
    }
    let clock = Instant::now();
    let initial = rows.clone();
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));

    let writer = tokio::spawn({
        let apps = apps.clone();
        let writing = writing.clone();
        async move {
            // The readers stop when the writer does, whether it finished or failed.
            let _done = StopsOnDrop(writing);
            let mut log = Vec::new();
            for step in 0..WRITES {
                let pause = Duration::from_millis(rand::rng().random_range(0..15));
                tokio::time::sleep(pause).await;
                let app = &apps[step % 2];
                let started = clock.elapsed();
                let choice = rand::rng().random_range(0..6);
                let at = rand::rng().random_range(0..rows.len());
                let price = PRICES[rand::rng().random_range(0..PRICES.len())];
                let location = LOCATIONS[rand::rng().random_range(0..LOCATIONS.len())];
                match choice {
                    0 => {
                        let title = format!("New {step}");
                        let new = new_property(&title, price, location);
                        let created = properties::create_property(app, &new)
                            .await
                            .expect("create");
                        rows.push(Row {
                            id: created.id,
                            title,
                            price: price.parse().expect("price"),
                            location: location.to_owned(),
                        });
                    }
                    1 if rows.len() > 6 => {
                        let gone = rows.remove(at);
                        properties::delete_property(app, gone.id)
                            .await
                            .expect("delete");
                    }
                    2 => {
                        rows[at].location = location.to_owned();
                        let changes = changes(None, None, Some(location));
                        properties::update_property(app, rows[at].id, &changes)
                            .await
                            .expect("move");
                    }
                    3 => {
                        let title = format!("Renamed {step}");
                        let changes = changes(Some(&title), None, None);
                        properties::update_property(app, rows[at].id, &changes)
                            .await
                            .expect("rename");
                        rows[at].title = title;
                    }
                    _ => {
                        rows[at].price = price.parse().expect("price");
                        let changes = changes(None, Some(price), None);
                        properties::update_property(app, rows[at].id, &changes)
                            .await
                            .expect("reprice");
                    }
                }
                log.push(Written {
                    started,
                    acknowledged: clock.elapsed(),
                    rows: rows.clone(),
                });
            }
            log
        }
    });
    let mut readers = JoinSet::new();
    for reader in 0..READERS {
        let routers = routers.clone();
        let writing = writing.clone();
        readers.spawn(async move {
            let mut log = Vec::new();
            let mut step = 0;
            // Popular searches repeat, so that some reads are hits.
            let searches: Vec<Search> = (0..12).map(|_| Search::random()).collect();
            while writing.load(std::sync::atomic::Ordering::Acquire) || step % 50 != 0 {
                let search = searches[rand::rng().random_range(0..searches.len())];
                let started = clock.elapsed();
                let response = get(&routers[(reader + step) % 2], &search.path()).await;
                let finished = clock.elapsed();
                assert_eq!(response.status, 200, "{}", search.path());
                log.push(Read {
                    started,
                    finished,
                    search,
                    hit: response.x_cache() == "HIT",
                    answer: shape(&response.json()),
                });
                step += 1;
                // A hit from memory never waits, so a reader that never yielded could
                // hold a worker thread for ever and starve the writer.
                tokio::task::yield_now().await;
            }
            log
        });
    }
    let writes = writer.await.expect("writer");
    let reads: Vec<Read> = readers.join_all().await.into_iter().flatten().collect();

    let state = |k: usize| {
        if k == 0 {
            &initial
        } else {
            &writes[k - 1].rows
        }
    };
    let mut hits = 0;
    for read in &reads {
        // States the read may see: from the last write acknowledged before it began to
        // the last one begun before it ended.
        let from = writes
            .iter()
            .take_while(|w| w.acknowledged < read.started)
            .count();
        let to = writes
            .iter()
            .take_while(|w| w.started < read.finished)
            .count();
        let seen = (from..=to).any(|k| answer(state(k), &read.search) == read.answer);
        assert!(
            seen,
            "stale or wrong page {}: {}\nexpected one of {:#?}",
            read.search.path(),
            read.answer,
            (from..=to)
                .map(|k| answer(state(k), &read.search))
                .collect::<Vec<_>>()
        );
        hits += usize::from(read.hit);
    }
    println!(
        "{} pages checked against {} acknowledged writes, {hits} of them hits",
        reads.len(),
        writes.len()
    );
    assert!(reads.len() > 200, "the readers ran");
    assert!(hits > reads.len() / 10, "the cache served pages: {hits}");
}

/// Writes made outside listings are attributed to rows by the database (PostgreSQL's
/// notification, SQLite's change log): a price changed by plain SQL retires the pages
/// that show the row, not another location's; a statement that changed more rows than
/// a notification tells retires everything.
async fn writes_from_elsewhere_retire_what_they_change(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    for (title, location) in [("Lamu villa", "Lamu"), ("Thika flat", "Thika")] {
        properties::create_property(&app, &new_property(title, "100000.00", location))
            .await
            .expect("seed");
    }
    let (lamu, thika) = ("/properties/?location=lamu", "/properties/?location=thika");
    let reader = Reader {
        app: app.clone(),
        router: router.clone(),
    };
    reader.warm(&[lamu, thika]).await;

    run_sql_elsewhere(
        &env,
        "UPDATE properties SET price = 123456 WHERE title = 'Thika flat'",
    )
    .await;
    // PostgreSQL's notification arrives when it arrives; SQLite's change log is read by
    // the next request.
    let mut thika_page = get(&router, thika).await;
    for _ in 0..250 {
        if thika_page.json()["data"][0]["price"] == "123456.00" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        thika_page = get(&router, thika).await;
    }
    assert_eq!(thika_page.json()["data"][0]["price"], "123456.00");
    let queries = app.metrics.db_queries();
    assert_eq!(
        get(&router, lamu).await.x_cache(),
        "HIT",
        "another location's page stays"
    );
    assert_eq!(app.metrics.db_queries(), queries);

    for i in 0..25 {
        let new = new_property(&format!("Malindi {i}"), "5.00", "Malindi");
        properties::create_property(&app, &new).await.expect("seed");
    }
    reader.warm(&[lamu, thika]).await;
    run_sql_elsewhere(
        &env,
        "UPDATE properties SET description = 'Changed in bulk'",
    )
    .await;
    wait_until_retired(&router, lamu).await;
    assert_eq!(
        get(&router, lamu).await.json()["data"][0]["description"],
        "Changed in bulk"
    );
}

/// Polls until `path` is no longer a hit (a notification on its way).
async fn wait_until_retired(router: &listings::http::HttpService, path: &str) {
    let mut retired = false;
    for _ in 0..250 {
        if get(router, path).await.x_cache() == "MISS" {
            retired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(retired, "{path} was never retired");
}
