//! The operator's view. The dashboard in a real browser: Debian's headless Chromium
//! opens `/dashboard` on the admin address of a running server after traffic and a
//! write, and the page must show what `/metrics` and the write imply. And
//! `cache-metrics --watch`, on a pseudo-terminal and on a pipe.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use listings::metrics::parse_prometheus_sample;
use serde_json::json;

use crate::both_modes;
use crate::support::binary::Server;
use crate::support::{ADMIN_TOKEN, TestEnv};

both_modes!(the_dashboard_shows_what_metrics_and_a_write_imply);

async fn the_dashboard_shows_what_metrics_and_a_write_imply(env: TestEnv) {
    let mode = if env.redis_url.is_some() {
        "postgres_redis"
    } else {
        "embedded"
    };
    let (server, admin) = serve_with_admin(&env).await;
    assert_ne!(admin, server.address);

    // Misses, then hits, on three levels; a write; misses again, then hits.
    for path in ["/properties/", "/properties/?location=Malindi"] {
        for _ in 0..3 {
            assert_eq!(server.get(path).await.status, 200);
        }
    }
    let (status, created) = server.post_json(
        "/properties/",
        &json!({
            "title": "Dashboard villa",
            "description": "Seen on the dashboard",
            "price": "250000.00",
            "location": "Malindi"
        }),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().expect("id");
    for path in ["/properties/".to_owned(), format!("/properties/{id}/")] {
        for _ in 0..3 {
            assert_eq!(server.get(&path).await.status, 200);
        }
    }
    // The sampler closes a second once a second: let it take the last one.
    tokio::time::sleep(Duration::from_millis(1600)).await;

    let metrics = admin_get(admin, "/metrics").await;
    let counter = |name: &str| {
        parse_prometheus_sample(&metrics, name).unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    let requests = counter("listings_http_requests_total");
    assert_eq!(requests, 13, "the requests this test sent:\n{metrics}");

    let dom = chromium_dom(admin, "/dashboard");
    let shown = |id: &str| -> u64 {
        let text = text_of(&dom, id);
        text.replace(',', "")
            .parse()
            .unwrap_or_else(|_| panic!("#{id} shows {text:?}, not a number"))
    };
    assert_eq!(shown("total-requests"), requests);
    assert_eq!(
        attribute_of(&dom, "chart-rps", "data-requests"),
        requests.to_string(),
        "the requests per second charted add up to the total"
    );
    assert_eq!(
        shown("total-db-queries"),
        counter("listings_db_queries_total")
    );
    assert_eq!(
        shown("total-invalidations"),
        counter("listings_invalidations_total")
    );
    assert_eq!(
        shown("total-cache-errors"),
        counter("listings_cache_errors_total")
    );
    for level in ["view", "all_properties", "queries", "items"] {
        for (column, metric) in [
            ("hits", "listings_cache_hits_total"),
            ("misses", "listings_cache_misses_total"),
        ] {
            assert_eq!(
                shown(&format!("total-{level}-{column}")),
                counter(&format!("{metric}{{kind=\"{level}\"}}")),
                "{level} {column}"
            );
        }
    }
    // The traffic above hit the view level, and looked up the three data levels.
    assert!(counter("listings_cache_hits_total{kind=\"view\"}") > 0);
    for level in ["view", "all_properties", "queries", "items"] {
        let lookups = counter(&format!("listings_cache_hits_total{{kind=\"{level}\"}}"))
            + counter(&format!("listings_cache_misses_total{{kind=\"{level}\"}}"));
        assert!(lookups > 0, "{level} lookups:\n{metrics}");
        assert!(series_drawn(&dom, level), "the {level} hit ratio is drawn");
    }
    for series in ["rps", "p50", "p99", "db"] {
        assert!(series_drawn(&dom, series), "the {series} line is drawn");
    }

    // The write: a marker on the time axis of the hit ratio and the database charts,
    // and a line in the list, each naming it.
    let cause = format!("property {id} created");
    let markers = dom
        .matches(&format!("class=\"invalidation\" data-cause=\"{cause}\""))
        .count();
    assert_eq!(markers, 2, "a marker for `{cause}` on two charts");
    assert!(
        dom.contains(&format!("<li data-cause=\"{cause}\">")),
        "`{cause}` in the list of invalidations"
    );
    let backend = text_of(&dom, "backend");
    let expected = if mode == "embedded" {
        "in-process cache"
    } else {
        "Redis connected"
    };
    assert_eq!(backend, expected);

    if mode != "embedded" {
        // All servers together: a second server's requests join this one's.
        let other = env.serve(&[]);
        for _ in 0..4 {
            assert_eq!(other.get("/properties/").await.status, 200);
        }
        let mut all = serde_json::Value::Null;
        for _ in 0..50 {
            let data = dashboard_data(admin).await;
            all = data["all_totals"].clone();
            if all["requests"] == requests + 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(all["requests"], requests + 4, "all servers: {all}");
        let data = dashboard_data(admin).await;
        assert_eq!(data["totals"]["requests"], requests, "this server alone");
    }

    let screenshot = target_dir().join(format!("dashboard-{mode}.png"));
    chromium_screenshot(admin, "/dashboard", &screenshot);
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000);
}

/// `serve` with the write API and an admin address, both on free ports.
pub async fn serve_with_admin(env: &TestEnv) -> (Server, SocketAddr) {
    let mut command = env.command(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--admin-bind",
        "127.0.0.1:0",
    ]);
    command.env("LISTINGS_ADMIN_TOKEN", ADMIN_TOKEN);
    let server = Server::start(command);
    let admin = admin_address(&server.wait_for_log("dashboard on http://").await);
    (server, admin)
}

pub fn admin_address(log: &str) -> SocketAddr {
    log.split("dashboard on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("no dashboard address in the log:\n{log}"))
}

async fn admin_get(admin: SocketAddr, path: &str) -> String {
    let response = listings::http_client::get(admin, path)
        .await
        .expect("GET on the admin address");
    assert_eq!(response.status(), 200);
    String::from_utf8_lossy(response.body()).into_owned()
}

pub async fn dashboard_data(admin: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&admin_get(admin, "/dashboard/data").await).expect("JSON")
}

/// The text of the element with `id` (which holds no other element).
fn text_of(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!(" id=\"{id}\""))
        .unwrap_or_else(|| panic!("#{id} is not on the page"));
    let rest = &dom[start..];
    let open_end = rest.find('>').expect("tag end") + 1;
    let text = &rest[open_end..];
    text[..text.find('<').unwrap_or(text.len())]
        .trim()
        .to_owned()
}

fn attribute_of(dom: &str, id: &str, attribute: &str) -> String {
    let start = dom
        .find(&format!(" id=\"{id}\""))
        .unwrap_or_else(|| panic!("#{id} is not on the page"));
    let tag_start = dom[..start].rfind('<').expect("tag start");
    let tag = &dom[tag_start..start + dom[start..].find('>').expect("tag end")];
    tag.split(&format!(" {attribute}=\""))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("#{id} has no {attribute}: {tag}"))
        .to_owned()
}

/// True when the chart line `data-series="name"` has points, or a dot stands alone.
fn series_drawn(dom: &str, name: &str) -> bool {
    dom.match_indices(&format!("data-series=\"{name}\""))
        .any(|(at, _)| {
            let tag_start = dom[..at].rfind('<').unwrap_or(0);
            dom[tag_start..at].contains(" d=\"M")
        })
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Debian's Chromium, headless, with a profile of its own; killed after a minute.
fn chromium(admin: SocketAddr, path: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            // Virtual time runs the page's once-a-second polling several times.
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("http://{admin}{path}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chromium (Debian package `chromium`; .ci/run installs it)");
    let started = Instant::now();
    while child.try_wait().expect("wait for chromium").is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("chromium did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("chromium output");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn chromium_dom(admin: SocketAddr, path: &str) -> String {
    chromium(admin, path, &["--dump-dom"])
}

fn chromium_screenshot(admin: SocketAddr, path: &str, to: &Path) {
    std::fs::create_dir_all(to.parent().expect("parent")).expect("target dir");
    chromium(
        admin,
        path,
        &[
            "--window-size=1280,1100",
            &format!("--screenshot={}", to.display()),
        ],
    );
}

#[tokio::test]
async fn the_admin_address_serves_operators_only_and_validates_its_query() {
    let env = TestEnv::embedded();
    let quiet = env.serve(&[]);
    quiet
        .wait_for_log("dashboard off: set --admin-bind or LISTINGS_ADMIN_BIND")
        .await;
    drop(quiet);

    let server = env.serve(&["--admin-bind", "127.0.0.1:0"]);
    let admin = admin_address(&server.wait_for_log("dashboard on http://").await);
    assert_eq!(server.get("/dashboard").await.status, 404);
    assert_eq!(server.get("/metrics").await.status, 200);

    let get = |path: &'static str| async move {
        listings::http_client::get(admin, path)
            .await
            .expect("GET on the admin address")
    };
    let root = get("/").await;
    assert_eq!(root.status(), 307);
    assert_eq!(root.headers()["location"], "/dashboard");
    let page = get("/dashboard").await;
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html")
    );
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap_or("");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    let html = String::from_utf8_lossy(page.body()).into_owned();
    for reference in ["src=\"", "href=\"http", "url(", "@import"] {
        assert!(
            !html.contains(reference),
            "the page loads nothing: {reference}"
        );
    }
    for (path, field) in [
        ("/dashboard/data?since=yesterday", "since"),
        ("/dashboard/data?events_after=-1", "events_after"),
        ("/dashboard/data?since=%00", "since"),
    ] {
        let response = get(path).await;
        assert_eq!(response.status(), 400, "{path}");
        let body = String::from_utf8_lossy(response.body()).into_owned();
        assert!(body.contains(field), "{path}: {body}");
    }
    assert_eq!(get("/properties/").await.status(), 404);
    let metrics = get("/metrics").await;
    assert_eq!(metrics.status(), 200);
    assert!(String::from_utf8_lossy(metrics.body()).contains("listings_http_requests_total"));
}

both_modes!(cache_metrics_watch_prints_a_line_per_second_until_interrupted);

/// `cache-metrics --watch` with stdout not a terminal: plain lines, one per second,
/// showing the traffic sent meanwhile; SIGINT ends it with status 0.
async fn cache_metrics_watch_prints_a_line_per_second_until_interrupted(env: TestEnv) {
    let server = env.serve(&[]);
    let mut watch = env
        .command(&[
            "cache-metrics",
            "--watch",
            "--bind",
            &server.address.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cache-metrics --watch");
    let lines = read_lines(watch.stdout.take().expect("stdout"));

    // Traffic for a few seconds (bounded), until a line shows view hits.
    let started = Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < Duration::from_secs(8) {
        assert_eq!(server.get("/properties/").await.status, 200);
        seen.extend(lines.try_iter());
        if seen.len() >= 3
            && seen
                .iter()
                .any(|line: &String| line.contains(" view=100.0%"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.len() >= 3, "three seconds, three lines: {seen:?}");
    for line in &seen {
        let fields: Vec<&str> = line.split(' ').collect();
        assert!(
            chrono::DateTime::parse_from_rfc3339(fields[0]).is_ok(),
            "a timestamp first: {line}"
        );
        let names: Vec<&str> = fields[1..]
            .iter()
            .map(|field| field.split('=').next().unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            [
                "requests/s",
                "db_queries/s",
                "view",
                "all_properties",
                "queries",
                "items"
            ],
            "{line}"
        );
    }
    assert!(
        seen.iter().any(|line| line.contains(" view=100.0%")),
        "a second of view hits: {seen:?}"
    );
    assert!(
        seen.iter().any(|line| !line.contains(" requests/s=0.0 ")),
        "requests counted: {seen:?}"
    );

    let pid = watch.id().to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    let status = wait_within(&mut watch, Duration::from_secs(5));
    assert!(status.success(), "Ctrl-C ends the watch with 0: {status}");
}

/// On a terminal (a pseudo-terminal that `script` provides): a screen redrawn in
/// place with sparklines, `q` quits with status 0 and gives the screen back.
#[tokio::test]
async fn cache_metrics_watch_on_a_terminal_quits_on_q() {
    let env = TestEnv::embedded();
    let server = env.serve(&[]);
    let listings = env.command(&[]);
    let mut terminal = Command::new("script");
    terminal
        .args(["--quiet", "--return", "--flush", "--command"])
        .arg(format!(
            "stty cols 120 rows 30; exec {} cache-metrics --watch --bind {}",
            env!("CARGO_BIN_EXE_listings"),
            server.address
        ))
        .arg("/dev/null")
        .current_dir(env.dir.path())
        .env_clear()
        .envs(listings.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut watch = terminal.spawn().expect("script (util-linux)");
    let output = read_chunks(watch.stdout.take().expect("stdout"));

    let started = Instant::now();
    let mut screen = String::new();
    while started.elapsed() < Duration::from_secs(8) && screen.matches("\x1b[H").count() < 4 {
        assert_eq!(server.get("/properties/").await.status, 200);
        screen.extend(output.try_iter());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        screen.starts_with("\x1b[?1049h"),
        "the alternate screen: {screen:?}"
    );
    assert!(screen.contains("q or Ctrl-C quits"), "{screen:?}");
    assert!(screen.contains("hit ratio per second"), "{screen:?}");
    assert!(screen.contains('█'), "a sparkline of view hits: {screen:?}");

    use std::io::Write as _;
    watch
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"q")
        .expect("press q");
    let status = wait_within(&mut watch, Duration::from_secs(5));
    screen.extend(output.try_iter());
    assert!(status.success(), "q ends the watch with 0: {status}");
    assert!(
        screen.ends_with("\x1b[?25h\x1b[?1049l"),
        "the terminal's own screen and cursor are back: {:?}",
        &screen[screen.len().saturating_sub(80)..]
    );
}

fn read_lines(from: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    receiver
}

fn read_chunks(mut from: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        let mut pending = Vec::new();
        while let Ok(read @ 1..) = from.read(&mut buffer) {
            pending.extend_from_slice(&buffer[..read]);
            // Whole UTF-8 characters only; a sparkline bar may straddle two reads.
            let whole = match std::str::from_utf8(&pending) {
                Ok(_) => pending.len(),
                Err(error) => error.valid_up_to(),
            };
            let text = String::from_utf8_lossy(&pending[..whole]).into_owned();
            pending.drain(..whole);
            let _ = sender.send(text);
        }
    });
    receiver
}

fn wait_within(child: &mut std::process::Child, bound: Duration) -> std::process::ExitStatus {
    crate::support::binary::exit_within(child, bound).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("did not exit within {bound:?}");
    })
}

/// Every query of the Grafana dashboard (docs/grafana-dashboard.json), asked of a real
/// Prometheus (Debian's, see .ci/fetch-prometheus) that scrapes a real server's admin
/// address, answers with data: the names, labels and arithmetic fit `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_answers_every_query_of_the_grafana_dashboard() {
    let env = TestEnv::embedded();
    let (server, admin) = serve_with_admin(&env).await;

    let listen = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let prometheus_address = listen.local_addr().expect("address");
    drop(listen);
    std::fs::write(
        env.dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: listings\n    \
             static_configs:\n      - targets: [\"{admin}\"]\n"
        ),
    )
    .expect("prometheus.yml");
    let mut prometheus = ChildGuard(
        Command::new(prometheus_binary())
            .current_dir(env.dir.path())
            .args([
                "--config.file=prometheus.yml",
                "--storage.tsdb.path=prometheus-data",
                "--log.level=warn",
            ])
            .arg(format!("--web.listen-address={prometheus_address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );

    // Prometheus applies its targets a few seconds after it starts: wait for a scrape.
    let mut scraped = false;
    for _ in 0..100 {
        scraped = prometheus_query(prometheus_address, "up == 1")
            .await
            .is_some_and(|result| !result.is_empty());
        if scraped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(scraped, "prometheus never scraped {admin}");

    // Traffic on every level until the queries are done (rates need it), with a write
    // about every second (the write phases' histogram needs one within each window).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (stop, address) = (stop.clone(), server.address);
        async move {
            let mut round = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for path in [
                    "/properties/",
                    "/properties/?location=Malindi",
                    "/properties/1/",
                ] {
                    let _ = listings::http_client::get(address, path).await;
                }
                if round.is_multiple_of(50) {
                    let body = json!({"title": "Steady", "description": "d", "price": "2.00", "location": "Lamu"})
                        .to_string();
                    let _ = tokio::task::spawn_blocking(move || {
                        crate::support::raw_http::request(
                            address,
                            "POST",
                            "/properties/",
                            &[],
                            &body,
                        )
                    })
                    .await;
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = server.post_json(
        "/properties/",
        &json!({"title": "Scraped", "description": "d", "price": "1.00", "location": "Malindi"}),
    );
    assert_eq!(status, 201, "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        prometheus.0.try_wait().expect("prometheus").is_none(),
        "prometheus runs"
    );

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana-dashboard.json"),
        )
        .expect("docs/grafana-dashboard.json"),
    )
    .expect("the dashboard is JSON");
    let mut queries: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().expect("targets").clone())
        .map(|target| target["expr"].as_str().expect("expr").to_owned())
        .collect();
    queries.extend(
        dashboard["annotations"]["list"]
            .as_array()
            .expect("annotations")
            .iter()
            .filter_map(|annotation| annotation["expr"].as_str().map(str::to_owned)),
    );
    assert!(queries.len() >= 10, "{queries:?}");
    for query in &queries {
        // Grafana's rate window is a few scrape intervals; here scrapes are 1 s apart.
        let query = query.replace("$__rate_interval", "4s");
        let mut result = Vec::new();
        for _ in 0..25 {
            result = prometheus_query(prometheus_address, &query)
                .await
                .unwrap_or_default();
            if !result.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(!result.is_empty(), "no data for {query}");
        let values: Vec<f64> = result
            .iter()
            .map(|series| {
                series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN)
            })
            .collect();
        // A level without lookups in the window has no ratio (NaN: a gap in Grafana);
        // the traffic above gives every query some number.
        assert!(values.iter().any(|v| v.is_finite()), "{query}: {values:?}");
        assert!(
            values
                .iter()
                .all(|v| v.is_nan() || (v.is_finite() && *v >= 0.0)),
            "{query}: {values:?}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.await.expect("traffic");
}

/// The result vector of an instant query; `None` when Prometheus does not answer.
async fn prometheus_query(prometheus: SocketAddr, query: &str) -> Option<Vec<serde_json::Value>> {
    let path = format!(
        "/api/v1/query?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("query", query)
            .finish()
    );
    let response = listings::http_client::get(prometheus, &path).await.ok()?;
    let answer: serde_json::Value = serde_json::from_slice(response.body()).ok()?;
    answer["data"]["result"].as_array().cloned()
}

struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prometheus from PATH, or Debian's binary extracted by .ci/fetch-prometheus (run here
/// when it has not been yet).
fn prometheus_binary() -> PathBuf {
    if Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
    {
        return PathBuf::from("prometheus");
    }
    let fetch = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/fetch-prometheus");
    let output = Command::new(&fetch)
        .output()
        .expect("run .ci/fetch-prometheus");
    assert!(
        output.status.success(),
        "Prometheus is needed (Debian's package `prometheus`): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()).join("prometheus")
}

/// Redis frozen, then back: the page shows the circuit open while it lasts (the badge,
/// red bands on the charts), requests keep being answered, and the recovery that
/// retired everything is listed among the invalidations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs redis-server")]
async fn the_dashboard_shows_a_redis_outage_and_the_recovery() {
    let redis = crate::support::redis_server::OwnRedis::start();
    let mut env = TestEnv::embedded();
    env.redis_url = Some(redis.url());
    let (server, admin) = serve_with_admin(&env).await;
    let data = || dashboard_data(admin);
    assert_eq!(server.get("/properties/").await.status, 200);
    assert_eq!(data().await["cache"]["redis"]["state"], "connected");

    redis.signal("-STOP");
    let mut state = serde_json::Value::Null;
    for _ in 0..50 {
        assert_eq!(
            server.get("/properties/").await.status,
            200,
            "served meanwhile"
        );
        state = data().await["cache"]["redis"]["state"].clone();
        if state == "circuit open" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "circuit open");
    // Let the sampler record a second of it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let frozen_dom = chromium_dom(admin, "/dashboard");
    assert_eq!(text_of(&frozen_dom, "backend"), "Redis circuit open");
    redis.signal("-CONT");

    let mut cache = serde_json::Value::Null;
    for _ in 0..100 {
        server.get("/properties/").await;
        cache = data().await["cache"].clone();
        if cache["redis"]["state"] == "connected"
            && server.get("/properties/").await.x_cache == "HIT"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cache["redis"]["state"], "connected", "{cache}");
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let dom = chromium_dom(admin, "/dashboard");
    assert_eq!(text_of(&dom, "backend"), "Redis connected");
    assert!(
        dom.contains("<rect class=\"outage\""),
        "the outage is shaded on the charts"
    );
    let recovery = "Redis answers again: everything cached before the failure retired";
    assert!(
        dom.contains(&format!("<li data-cause=\"{recovery}\">")),
        "the recovery is listed"
    );
    assert!(
        text_of(&dom, "total-cache-errors")
            .replace(',', "")
            .parse::<u64>()
            .is_ok_and(|errors| errors >= 1),
        "cache errors counted"
    );
}

/// Sentinel and Cluster: the dashboard names the master in use (Sentinel) or the one
/// holding the control keys (Cluster), and it is a master indeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn the_dashboard_names_the_sentinel_and_cluster_masters() {
    for env in [
        TestEnv::postgres_sentinel().await,
        TestEnv::postgres_cluster().await,
    ] {
        let (server, admin) = serve_with_admin(&env).await;
        let mut redis = serde_json::Value::Null;
        for _ in 0..50 {
            server.get("/properties/").await;
            let data = dashboard_data(admin).await;
            redis = data["cache"]["redis"].clone();
            if redis["state"] == "connected" && redis["master"].is_string() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let master = redis["master"]
            .as_str()
            .unwrap_or_else(|| panic!("{redis}"));
        let port = master.rsplit(':').next().unwrap_or_default();
        let role = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", port, "ROLE"])
            .output()
            .expect("redis-cli");
        assert!(
            String::from_utf8_lossy(&role.stdout).starts_with("master"),
            "{master} is a master: {redis}"
        );
        let deployment = redis["deployment"].as_str().unwrap_or_default();
        if deployment == "cluster" {
            assert_eq!(redis["nodes"].as_array().map(Vec::len), Some(3), "{redis}");
        } else {
            assert_eq!(deployment, "sentinel", "{redis}");
        }
    }
}
