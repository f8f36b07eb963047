//! The operator's dashboard in a real browser: Debian's headless Chromium opens
//! `/dashboard` on the admin address of a running server after traffic and a write,
//! and the page must show what `/metrics` and the write imply.

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
            let data: serde_json::Value =
                serde_json::from_str(&admin_get(admin, "/dashboard/data").await).expect("JSON");
            all = data["all_totals"].clone();
            if all["requests"] == requests + 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(all["requests"], requests + 4, "all servers: {all}");
        let data: serde_json::Value =
            serde_json::from_str(&admin_get(admin, "/dashboard/data").await).expect("JSON");
        assert_eq!(data["totals"]["requests"], requests, "this server alone");
    }

    let screenshot = target_dir().join(format!("dashboard-{mode}.png"));
    chromium_screenshot(admin, "/dashboard", &screenshot);
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000);
}

fn admin_address(log: &str) -> SocketAddr {
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
