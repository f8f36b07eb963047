//! A redis-server of a test's own, on a free port, for tests that freeze, kill or
//! restart Redis (the shared one is never touched that way).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    /// A redis-server of the test's own, on a free port.
    pub fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        OwnRedis::start_on(port)
    }

    fn start_on(port: u16) -> OwnRedis {
        let spawned = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = spawned.unwrap_or_else(|e| panic!("redis-server is needed for this test: {e}"));
        let redis = OwnRedis { child, port };
        let client = redis::Client::open(redis.url()).expect("URL");
        for _ in 0..100 {
            if client.get_connection().is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OwnRedis {
    /// Kills the server (its data is lost) and starts a new one on the same port.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = OwnRedis::start_on(self.port);
    }
}
