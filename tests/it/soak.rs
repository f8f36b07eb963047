//! A bounded soak: two servers on one database, readers and HTTP writers, and every
//! writing admin command run again and again as processes of their own. Afterwards both
//! servers are alive, the database is intact, every acknowledged write is there, and no
//! read returned data older than a write acknowledged before the read was sent.
//!
//! `LISTINGS_SOAK_SECONDS` (default 30) sets how long the load runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;
use serde_json::{Value, json};

use crate::both_modes;
use crate::support::TestEnv;
use crate::support::binary::{Server, stderr, stdout};

both_modes!(servers_and_admin_commands_share_one_database_under_load);

/// Properties whose price only ever grows: a read may never show a price below the
/// last one acknowledged before it was sent.
const TRACKED: usize = 6;
const TRACKED_LOCATIONS: usize = 3;

struct Tracked {
    id: i64,
    /// The last acknowledged price (whole units), raised only after the ack.
    acked: AtomicU64,
    /// Writes to one property take turns, so acknowledgements come in price order.
    writing: Mutex<()>,
}

/// What the load acknowledged, checked against the database at the end.
#[derive(Default)]
struct Ledger {
    created: BTreeSet<i64>,
    deleted: BTreeSet<i64>,
    imported_titles: BTreeSet<String>,
    failures: Vec<String>,
    reads: u64,
    writes: u64,
    commands: BTreeMap<&'static str, u64>,
}

fn tracked_location(i: usize) -> String {
    format!("Soak-{}", i % TRACKED_LOCATIONS)
}

fn soak_seconds() -> u64 {
    std::env::var("LISTINGS_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

async fn servers_and_admin_commands_share_one_database_under_load(env: TestEnv) {
    let env = Arc::new(env);
    let mut tracked = Vec::new();
    for i in 0..TRACKED {
        let output = env.create_via_cli(&format!("tracked {i}"), "0", &tracked_location(i));
        assert!(output.status.success(), "{}", stderr(&output));
        let created: Value = serde_json::from_str(stdout(&output).trim()).expect("JSON");
        tracked.push(Tracked {
            id: created["id"].as_i64().expect("id"),
            acked: AtomicU64::new(0),
            writing: Mutex::new(()),
        });
    }
    let tracked = Arc::new(tracked);
    let servers = Arc::new([env.serve_writable(&[]), env.serve_writable(&[])]);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(soak_seconds());

    let mut workers = Vec::new();
    for _ in 0..4 {
        let (servers, tracked, ledger, stop) = (
            servers.clone(),
            tracked.clone(),
            ledger.clone(),
            stop.clone(),
        );
        workers.push(std::thread::spawn(move || {
            read_loop(&servers, &tracked, &ledger, &stop)
        }));
    }
    for through_cli in [false, true] {
        let (env, servers, tracked, ledger, stop) = (
            env.clone(),
            servers.clone(),
            tracked.clone(),
            ledger.clone(),
            stop.clone(),
        );
        workers.push(std::thread::spawn(move || {
            raise_prices(&env, &servers, &tracked, &ledger, &stop, through_cli)
        }));
    }
    {
        let (servers, ledger, stop) = (servers.clone(), ledger.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            create_and_delete_over_http(&servers, &ledger, &stop)
        }));
    }
    {
        let (env, ledger, stop) = (env.clone(), ledger.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            run_admin_commands(&env, &ledger, &stop)
        }));
    }
    while Instant::now() < deadline && ledger.lock().expect("ledger").failures.is_empty() {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Release);
    for worker in workers {
        worker.join().expect("a load thread panicked");
    }

    let ledger = Arc::try_unwrap(ledger)
        .ok()
        .expect("threads joined")
        .into_inner()
        .expect("ledger");
    assert!(
        ledger.failures.is_empty(),
        "{} failures, first ones:\n{}",
        ledger.failures.len(),
        ledger
            .failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut servers = Arc::try_unwrap(servers).ok().expect("threads joined");
    for server in &mut servers {
        assert!(
            server.child.try_wait().expect("wait").is_none(),
            "a server died:\n{}",
            server.log()
        );
    }
    eprintln!(
        "soak: {} reads, {} HTTP writes, commands {:?}",
        ledger.reads, ledger.writes, ledger.commands
    );
    assert!(ledger.reads > 100 && ledger.writes > 10, "the load ran");
    for command in [
        "create-property",
        "update-property",
        "delete-property",
        "import",
        "seed",
        "migrate",
    ] {
        assert!(
            ledger.commands.get(command).copied().unwrap_or(0) > 0,
            "{command} ran: {:?}",
            ledger.commands
        );
    }

    // Every acknowledged write is in the database, as every server sees it.
    let everything = all_properties(&env);
    for t in tracked.iter() {
        let row = everything.get(&t.id).expect("tracked property");
        assert_eq!(
            price_units(row),
            t.acked.load(Ordering::Acquire),
            "the last acknowledged price of {}",
            t.id
        );
        for server in servers.iter() {
            let (status, body) = server.send("GET", &format!("/properties/{}/", t.id), None);
            assert_eq!(status, 200, "{body}");
            let seen: Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(price_units(&seen), t.acked.load(Ordering::Acquire));
        }
    }
    for id in ledger.created.difference(&ledger.deleted) {
        assert!(
            everything.contains_key(id),
            "created property {id} is missing"
        );
    }
    for id in &ledger.deleted {
        assert!(
            !everything.contains_key(id),
            "deleted property {id} is back"
        );
    }
    let titles: BTreeSet<&str> = everything
        .values()
        .filter_map(|row| row["title"].as_str())
        .collect();
    for title in &ledger.imported_titles {
        assert!(
            titles.contains(title.as_str()),
            "imported {title} is missing"
        );
    }
    if !env.is_postgres() {
        let check = sqlite_integrity(&env.database_url);
        assert_eq!(check, "ok", "PRAGMA integrity_check");
    }
}

fn price_units(row: &Value) -> u64 {
    let price = row["price"].as_str().expect("price");
    price
        .split('.')
        .next()
        .and_then(|units| units.parse().ok())
        .expect("a price in whole units")
}

fn pick<T>(items: &[T]) -> &T {
    &items[rand::rng().random_range(0..items.len())]
}

fn fail(ledger: &Mutex<Ledger>, what: String) {
    ledger.lock().expect("ledger").failures.push(what);
}

/// Items and location searches from both servers; each read must show every tracked
/// price acknowledged before it was sent.
fn read_loop(
    servers: &[Server; 2],
    tracked: &[Tracked],
    ledger: &Mutex<Ledger>,
    stop: &AtomicBool,
) {
    let mut reads = 0;
    while !stop.load(Ordering::Acquire) {
        let i = rand::rng().random_range(0..TRACKED);
        let t = &tracked[i];
        let floor = t.acked.load(Ordering::Acquire);
        let server = pick(servers);
        let by_item = rand::rng().random_bool(0.5);
        let path = if by_item {
            format!("/properties/{}/", t.id)
        } else {
            format!(
                "/properties/?location={}&ordering=-price&page_size=50",
                tracked_location(i).to_lowercase()
            )
        };
        let (status, body) = server.send("GET", &path, None);
        reads += 1;
        if status != 200 {
            fail(
                ledger,
                format!("GET {path} on {}: {status} {body}", server.address),
            );
            break;
        }
        let Ok(page) = serde_json::from_str::<Value>(&body) else {
            fail(ledger, format!("GET {path}: not JSON: {body}"));
            break;
        };
        let row = if by_item {
            Some(&page)
        } else {
            page["data"]
                .as_array()
                .and_then(|rows| rows.iter().find(|row| row["id"] == t.id))
        };
        match row {
            Some(row) if price_units(row) >= floor => {}
            Some(row) => {
                fail(
                    ledger,
                    format!(
                        "stale read: GET {path} on {} showed price {} of {} after {floor} was acknowledged",
                        server.address, row["price"], t.id
                    ),
                );
                break;
            }
            None => {
                fail(
                    ledger,
                    format!("GET {path}: property {} is missing: {body}", t.id),
                );
                break;
            }
        }
    }
    ledger.lock().expect("ledger").reads += reads;
}

/// Raises a tracked property's price by one, through a server's PATCH or through
/// `listings update-property`, and records it once acknowledged.
fn raise_prices(
    env: &TestEnv,
    servers: &[Server; 2],
    tracked: &[Tracked],
    ledger: &Mutex<Ledger>,
    stop: &AtomicBool,
    through_cli: bool,
) {
    while !stop.load(Ordering::Acquire) {
        let t = pick(tracked);
        let _turn = t.writing.lock().expect("turn");
        let price = t.acked.load(Ordering::Acquire) + 1;
        let price_text = format!("{price}.00");
        let acknowledged = if through_cli {
            let id = t.id.to_string();
            let output = env.run(&["update-property", &id, "--price", &price_text]);
            *ledger
                .lock()
                .expect("ledger")
                .commands
                .entry("update-property")
                .or_default() += 1;
            output
                .status
                .success()
                .then_some(())
                .ok_or_else(|| format!("update-property {id}: {}", stderr(&output)))
        } else {
            let server = pick(servers);
            let path = format!("/properties/{}/", t.id);
            let (status, body) = server.send("PATCH", &path, Some(&json!({"price": price_text})));
            ledger.lock().expect("ledger").writes += 1;
            (status == 200)
                .then_some(())
                .ok_or_else(|| format!("PATCH {path} on {}: {status} {body}", server.address))
        };
        match acknowledged {
            Ok(()) => t.acked.store(price, Ordering::Release),
            Err(why) => {
                fail(ledger, why);
                return;
            }
        }
        if through_cli {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn create_and_delete_over_http(servers: &[Server; 2], ledger: &Mutex<Ledger>, stop: &AtomicBool) {
    let mut mine = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let server = pick(servers);
        let delete = mine.len() > 3 && rand::rng().random_bool(0.4);
        let outcome = if delete {
            let id: i64 = mine.swap_remove(rand::rng().random_range(0..mine.len()));
            let path = format!("/properties/{id}/");
            let (status, body) = server.send("DELETE", &path, None);
            if status == 204 {
                ledger.lock().expect("ledger").deleted.insert(id);
                Ok(())
            } else {
                Err(format!(
                    "DELETE {path} on {}: {status} {body}",
                    server.address
                ))
            }
        } else {
            let body =
                json!({"title": "Created over HTTP", "price": "99.00", "location": "Soak-new"});
            let (status, body) = server.send("POST", "/properties/", Some(&body));
            match serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["id"].as_i64())
            {
                Some(id) if status == 201 => {
                    mine.push(id);
                    ledger.lock().expect("ledger").created.insert(id);
                    Ok(())
                }
                _ => Err(format!("POST on {}: {status} {body}", server.address)),
            }
        };
        ledger.lock().expect("ledger").writes += 1;
        if let Err(why) = outcome {
            fail(ledger, why);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every writing admin command, in turn, each a process of its own.
fn run_admin_commands(env: &TestEnv, ledger: &Mutex<Ledger>, stop: &AtomicBool) {
    let mut created: Vec<i64> = Vec::new();
    let mut round = 0;
    while !stop.load(Ordering::Acquire) {
        round += 1;
        let import_file = env.dir.path().join(format!("import-{round}.csv"));
        let import_titles: Vec<String> = (0..5).map(|i| format!("Imported {round}-{i}")).collect();
        let csv: String = std::iter::once("title,price,location\n".to_owned())
            .chain(
                import_titles
                    .iter()
                    .map(|t| format!("{t},150.00,Soak-imported\n")),
            )
            .collect();
        std::fs::write(&import_file, csv).expect("write the import file");
        let import_path = import_file.display().to_string();
        let commands: Vec<(&'static str, Vec<String>)> = vec![
            (
                "create-property",
                vec![
                    "create-property".into(),
                    "--title".into(),
                    format!("Command {round}"),
                    "--price".into(),
                    "42.00".into(),
                    "--location".into(),
                    "Soak-cli".into(),
                ],
            ),
            ("import", vec!["import".into(), import_path]),
            (
                "seed",
                vec![
                    "seed".into(),
                    "--count".into(),
                    "3".into(),
                    "--seed".into(),
                    round.to_string(),
                ],
            ),
            ("migrate", vec!["migrate".into()]),
            (
                "delete-property",
                created
                    .first()
                    .map(|id| vec!["delete-property".into(), id.to_string()])
                    .unwrap_or_default(),
            ),
        ];
        for (name, args) in commands {
            if args.is_empty() || stop.load(Ordering::Acquire) {
                continue;
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = env.run(&args);
            *ledger
                .lock()
                .expect("ledger")
                .commands
                .entry(name)
                .or_default() += 1;
            if !output.status.success() {
                fail(ledger, format!("{}: {}", args.join(" "), stderr(&output)));
                return;
            }
            let mut ledger = ledger.lock().expect("ledger");
            match name {
                "create-property" => {
                    let id = serde_json::from_str::<Value>(stdout(&output).trim())
                        .ok()
                        .and_then(|v| v["id"].as_i64())
                        .expect("the created property");
                    created.push(id);
                    ledger.created.insert(id);
                }
                "delete-property" => {
                    ledger.deleted.insert(created.remove(0));
                }
                "import" => ledger.imported_titles.extend(import_titles.iter().cloned()),
                _ => {}
            }
        }
    }
}

/// Every property in the database, by id, through `listings list-properties`.
fn all_properties(env: &TestEnv) -> BTreeMap<i64, Value> {
    let mut everything = BTreeMap::new();
    for page in 1.. {
        let page = page.to_string();
        let output = env.run(&[
            "list-properties",
            "--json",
            "--page-size",
            "1000",
            "--page",
            &page,
            "--ordering",
            "id",
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        let listed: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
        let rows = listed["data"].as_array().expect("data");
        if rows.is_empty() {
            break;
        }
        for row in rows {
            everything.insert(row["id"].as_i64().expect("id"), row.clone());
        }
    }
    everything
}

fn sqlite_integrity(path: &str) -> String {
    use diesel::{Connection as _, QueryableByName, RunQueryDsl as _, sql_query};
    #[derive(QueryableByName)]
    struct Check {
        #[diesel(sql_type = diesel::sql_types::Text)]
        integrity_check: String,
    }
    let mut conn = diesel::SqliteConnection::establish(path).expect("open the SQLite file");
    let rows: Vec<Check> = sql_query("PRAGMA integrity_check")
        .load(&mut conn)
        .expect("integrity_check");
    rows.into_iter()
        .map(|row| row.integrity_check)
        .collect::<Vec<_>>()
        .join("\n")
}
