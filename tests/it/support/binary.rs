//! The real `listings` binary: a server process on a free port, and one-shot commands,
//! each with an environment of the test's own (no inherited URLs, no stray .env).

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::TestEnv;

const INHERITED: [&str; 8] = [
    "DATABASE_URL",
    "REDIS_URL",
    "LISTINGS_BIND",
    "LISTINGS_CACHE_PREFIX",
    "LISTINGS_VIEW_TTL",
    "LISTINGS_DATA_TTL",
    "LISTINGS_DB_POOL_SIZE",
    "RUST_LOG",
];

impl TestEnv {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_listings"));
        command.args(args).current_dir(self.dir.path());
        for name in INHERITED {
            command.env_remove(name);
        }
        command
            .env("RUST_LOG", "info")
            .env("DATABASE_URL", &self.database_url);
        if let Some(url) = &self.redis_url {
            command.env("REDIS_URL", url);
        }
        command.env("LISTINGS_CACHE_PREFIX", &self.cache_prefix);
        command
    }

    /// Runs a command to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run listings")
    }

    /// `listings create-property` in a process of its own.
    pub fn create_via_cli(&self, title: &str, price: &str, location: &str) -> Output {
        self.run(&[
            "create-property",
            "--title",
            title,
            "--price",
            price,
            "--location",
            location,
        ])
    }

    /// Starts `listings serve` on a free port and waits until it listens.
    pub fn serve(&self, extra_args: &[&str]) -> Server {
        let mut args = vec!["serve", "--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra_args);
        Server::start(self.command(&args))
    }

    /// [`TestEnv::serve`] with the write API on (the test's admin token).
    pub fn serve_writable(&self, extra_args: &[&str]) -> Server {
        let mut args = vec!["serve", "--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra_args);
        let mut command = self.command(&args);
        command.env("LISTINGS_ADMIN_TOKEN", super::ADMIN_TOKEN);
        Server::start(command)
    }
}

impl Server {
    /// Spawns `command`, a `listings serve` (possibly behind a wrapper that `exec`s it),
    /// and waits until it listens.
    pub fn start(mut command: Command) -> Server {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn listings serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let log_writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Logged before the address is announced, so the caller sees the line.
                log_writer
                    .lock()
                    .expect("log")
                    .push_str(&format!("{line}\n"));
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let address = rest.split(';').next().unwrap_or_default().to_owned();
                    let _ = address_tx.send(address);
                }
            }
        });
        let Ok(address) = address_rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("the server did not start:\n{}", log.lock().expect("log"));
        };
        Server {
            child,
            address: address.parse().expect("address"),
            log,
        }
    }
}

pub struct Server {
    pub child: Child,
    pub address: SocketAddr,
    log: Arc<Mutex<String>>,
}

pub struct HttpResponse {
    pub status: u16,
    pub x_cache: String,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    pub fn titles(&self) -> Vec<String> {
        self.json()["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|p| p["title"].as_str().expect("title").to_owned())
            .collect()
    }
}

impl Server {
    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// Waits (bounded) until the log holds `needle`; log lines arrive asynchronously.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        for _ in 0..100 {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "`{needle}` never appeared in the server log:\n{}",
            self.log()
        );
    }

    /// A real HTTP request over TCP.
    pub async fn get(&self, path: &str) -> HttpResponse {
        let response = listings::http_client::get(self.address, path)
            .await
            .expect("HTTP GET");
        HttpResponse {
            status: response.status().as_u16(),
            x_cache: response
                .headers()
                .get("x-cache")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: response.into_body(),
        }
    }

    /// A JSON write with the test's admin token over a fresh connection (the server
    /// must run with `LISTINGS_ADMIN_TOKEN` set to it): the status and the JSON body.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let (status, body) = self.send("POST", path, Some(body));
        (status, serde_json::from_str(&body).expect("JSON body"))
    }

    /// A blocking request over a fresh connection, with the admin token (and a JSON
    /// body when given): the status and the body as text.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, String) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let answer = super::raw_http::request(self.address, method, path, &[], &body);
        (answer.status, answer.body)
    }

    /// Polls `path` (bounded: 2 s) until its titles satisfy `done`, for changes that
    /// arrive by notification; returns the titles last seen.
    pub async fn wait_for_titles(
        &self,
        path: &str,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let mut titles = Vec::new();
        for _ in 0..100 {
            titles = self.get(path).await.titles();
            if done(&titles) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        titles
    }

    /// The server's `listings_db_queries_total`.
    pub async fn db_queries(&self) -> u64 {
        let metrics = self.get("/metrics").await;
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        listings::metrics::parse_prometheus_sample(&text, "listings_db_queries_total")
            .expect("db query counter")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.send_sigterm();
        self.child.wait().expect("wait for the server")
    }

    /// Sends SIGTERM and waits at most `bound` for the exit status; panics (and the
    /// drop kills the process) when it does not exit in time.
    pub fn terminate_within(&mut self, bound: Duration) -> std::process::ExitStatus {
        self.send_sigterm();
        exit_within(&mut self.child, bound).unwrap_or_else(|| {
            panic!(
                "the server did not exit within {bound:?} of SIGTERM:\n{}",
                self.log()
            )
        })
    }

    fn send_sigterm(&self) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The exit status of `child`, once it exits within `bound`; `None` if it does not.
pub fn exit_within(child: &mut Child, bound: Duration) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < bound {
        if let Some(status) = child.try_wait().expect("wait for the process") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.try_wait().expect("wait for the process")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
