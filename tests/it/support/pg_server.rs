//! A PostgreSQL server of the test's own that accepts TLS connections only (as managed
//! databases do), with a CA, a server certificate for `localhost` only and a client
//! certificate for the role `certuser`, all made by openssl. PostgreSQL refuses to run
//! as root, so initdb and the server run as the `postgres` user. Stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::TestEnv;

pub struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// The role that must log in with its client certificate.
pub const CERT_USER: &str = "certuser";

impl OwnPostgres {
    pub fn start_tls_only() -> OwnPostgres {
        OwnPostgres::start(true)
    }

    /// Without TLS at all, as the official Docker image starts by default.
    pub fn start_plain() -> OwnPostgres {
        OwnPostgres::start(false)
    }

    fn start(tls: bool) -> OwnPostgres {
        let bin = server_binaries();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = super::redis_server::free_port();
        make_certificates(dir.path());
        let data = dir.path().join("data");
        chown_postgres(dir.path());
        as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                &data.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let file = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(
            data.join("postgresql.auto.conf"),
            format!(
                "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
                 ssl = {}\nssl_cert_file = '{}'\nssl_key_file = '{}'\nssl_ca_file = '{}'\n\
                 fsync = off\n",
                dir.path().display(),
                if tls { "on" } else { "off" },
                file("server.pem"),
                file("server.key"),
                file("ca.pem"),
            ),
        )
        .expect("server settings");
        std::fs::write(
            data.join("pg_hba.conf"),
            if tls {
                format!(
                    "local all all trust\nhostssl all {CERT_USER} 127.0.0.1/32 cert\n\
                     hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n"
                )
            } else {
                "local all all trust\nhost all all 127.0.0.1/32 trust\n\
                 local replication all trust\nhost replication all 127.0.0.1/32 trust\n"
                    .to_owned()
            },
        )
        .expect("pg_hba.conf");
        chown_postgres(dir.path());
        as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D",
                &data.display().to_string(),
                "-l",
                &file("server.log"),
                "-w",
                "start",
            ],
        );
        let server = OwnPostgres { dir, bin, port };
        server.psql(&format!("CREATE ROLE {CERT_USER} LOGIN SUPERUSER"));
        server
    }

    /// A streaming replica of this server (which must be plain), of the test's own:
    /// `pg_basebackup -R` from it, then started on a port of its own. `settings` go
    /// into its configuration (`recovery_min_apply_delay = '300ms'`, say).
    pub fn start_replica(&self, settings: &str) -> OwnPostgres {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = super::redis_server::free_port();
        let data = dir.path().join("data");
        chown_postgres(dir.path());
        as_postgres(
            &self.bin.join("pg_basebackup"),
            &[
                "-D",
                &data.display().to_string(),
                "-h",
                &self.socket_dir(),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-R",
                "--no-sync",
            ],
        );
        let copied = std::fs::read_to_string(data.join("postgresql.auto.conf")).expect("auto.conf");
        // The primary's own port and socket directory came with the copy.
        let kept: Vec<&str> = copied
            .lines()
            .filter(|line| {
                !line.starts_with("port") && !line.starts_with("unix_socket_directories")
            })
            .collect();
        std::fs::write(
            data.join("postgresql.auto.conf"),
            format!(
                "{}\nport = {port}\nunix_socket_directories = '{}'\n{settings}\n",
                kept.join("\n"),
                dir.path().display()
            ),
        )
        .expect("replica settings");
        chown_postgres(dir.path());
        let replica = OwnPostgres {
            dir,
            bin: self.bin.clone(),
            port,
        };
        replica.start_again();
        replica
    }

    /// Starts the server again after [`OwnPostgres::stop`] (or for the first time).
    pub fn start_again(&self) {
        let data = self.dir.path().join("data").display().to_string();
        as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-l", &self.file("server.log"), "-w", "start"],
        );
    }

    /// Stops the server (fast: clients are disconnected).
    pub fn stop(&self) {
        let data = self.dir.path().join("data").display().to_string();
        as_postgres(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "fast", "-w", "stop"],
        );
    }

    /// The single value `query` returns, as text (psql's unaligned output).
    pub fn value(&self, query: &str) -> String {
        let output = Command::new("psql")
            .args(["-h", &self.socket_dir(), "-p", &self.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                query,
            ])
            .output()
            .expect("psql is needed for this test");
        assert!(
            output.status.success(),
            "psql {query:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A URL to this server's `postgres` database as `user`, by `host`, with `params`
    /// (the query string, without `?`).
    pub fn url(&self, host: &str, user: &str, params: &str) -> String {
        format!("postgres://{user}@{host}:{}/postgres?{params}", self.port)
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    pub fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// An environment whose database is this server, reached by `url`.
    pub fn env(&self, url: String) -> TestEnv {
        let mut env = TestEnv::embedded();
        env.database_url = url;
        env
    }

    fn psql(&self, statement: &str) {
        let status = Command::new("psql")
            .args(["-h", &self.dir.path().display().to_string()])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-qc", statement])
            .stdout(Stdio::null())
            .status()
            .expect("psql is needed for this test");
        assert!(status.success(), "psql {statement:?} failed");
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The newest PostgreSQL server's binaries Debian installed.
fn server_binaries() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries (Debian's postgresql package)")
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql")
}

fn chown_postgres(dir: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()
        .expect("chown");
    assert!(status.success(), "chown {}", dir.display());
}

fn as_postgres(program: &Path, args: &[&str]) {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .output()
        .expect("runuser");
    assert!(
        output.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| super::redis_server::openssl(dir, args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("extensions file");
    // Version 3 certificates (openssl makes version 1 without extensions).
    std::fs::write(dir.join("client.ext"), "basicConstraints=CA:FALSE\n").expect("extensions file");
    for ca in ["ca", "other-ca"] {
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=listings test {ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ]);
    }
    for (name, subject, ext) in [
        ("server", "/CN=localhost", "server.ext"),
        ("client", &*format!("/CN={CERT_USER}"), "client.ext"),
    ] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        let mut sign = vec![
            "x509",
            "-req",
            "-in",
            &*format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        sign.push(format!("{name}.pem"));
        sign.extend(["-extfile".to_owned(), ext.to_owned()]);
        run(&sign.iter().map(String::as_str).collect::<Vec<_>>());
    }
    // PostgreSQL refuses a key others can read.
    let status = Command::new("chmod")
        .args(["0600", "server.key"])
        .current_dir(dir)
        .status()
        .expect("chmod");
    assert!(status.success());
}
