//! Secrets never appear in output: every way the database URL, the Redis URL and the
//! admin token can be refused or fail (argument parsing, validation, connecting), given
//! as an environment variable and as a flag, leaves no part of the secret on stdout or
//! stderr, and fails with one line naming the setting or the target it could not reach.
//! Secrets are distinctive (`Zq9xWv7Kp`) so that no 4-character piece of them occurs in
//! ordinary output (words, timestamps, hex request ids) and any 4-gram found is a leak.

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::TestEnv;
use crate::support::binary::{stderr, stdout};

const SECRET: &str = "Zq9xWv7Kp";
const DATABASE: &str = "--database-url (DATABASE_URL)";
const REDIS: &str = "--redis-url (REDIS_URL)";
const TOKEN: &str = "--admin-token (LISTINGS_ADMIN_TOKEN)";

/// What a case must end in, beyond leaking nothing.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Refused before doing anything: one line `invalid <setting>: ...`.
    Invalid(&'static str),
    /// Failed to connect: one line naming `host:port` (never the URL).
    Unreachable(&'static str),
    /// Either refused as invalid, or failed to connect to the host the URL really names
    /// (`Connection refused` at that target): for URLs that parsers may read differently.
    InvalidOrRefused(&'static str, &'static str),
    /// clap's own usage errors (unknown or repeated flags): several lines, exit 2.
    UsageError,
    /// `--help`: exit 0, env variables listed without their values.
    Help,
}

struct Case {
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    secret: String,
    expect: Expect,
}

/// The case once with the value in `env_name`, once with it after `flag`.
fn both_forms(
    args: &[&str],
    flag: &str,
    env_name: &'static str,
    value: &str,
    secret: &str,
    expect: Expect,
) -> [Case; 2] {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut with_flag = args.clone();
    with_flag.extend([flag.to_owned(), value.to_owned()]);
    [
        Case {
            args,
            env: vec![(env_name, value.to_owned())],
            secret: secret.to_owned(),
            expect,
        },
        Case {
            args: with_flag,
            env: vec![],
            secret: secret.to_owned(),
            expect,
        },
    ]
}

/// Every 4-character piece of `secret` found in `text` (the whole secret included).
fn leaked<'a>(secret: &'a str, text: &str) -> Vec<&'a str> {
    let chars: Vec<(usize, char)> = secret.char_indices().collect();
    chars
        .windows(4)
        .map(|w| &secret[w[0].0..w[3].0 + w[3].1.len_utf8()])
        .filter(|piece| text.contains(piece))
        .collect()
}

/// Runs a command to completion, bounded: a command that unexpectedly starts serving
/// must fail the test, not hang it.
fn run_bounded(mut command: Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn listings");
    let pid = child.id().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.expect("run listings"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("{command:?} did not finish within 60 s");
        }
    }
}

/// Runs every case and returns what went wrong with each (empty: all good), so that one
/// test reports every leaking path at once.
fn check(env: &TestEnv, cases: &[Case]) -> Vec<String> {
    let mut problems = Vec::new();
    for case in cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let mut command = env.command(&args);
        for (name, value) in &case.env {
            command.env(name, value);
        }
        let output = run_bounded(command);
        let (out, err) = (stdout(&output), stderr(&output));
        let what = format!("{:?} with {:?}", case.args, case.env);
        let pieces = leaked(&case.secret, &format!("{out}\n{err}"));
        let one_line = err.trim().lines().count() == 1;
        let ok = match case.expect {
            Expect::Invalid(setting) => {
                !output.status.success()
                    && one_line
                    && err.starts_with(&format!("error: invalid {setting}: "))
            }
            Expect::Unreachable(target) => {
                !output.status.success() && one_line && err.contains(&format!(" at {target}"))
            }
            Expect::InvalidOrRefused(setting, target) => {
                !output.status.success()
                    && one_line
                    && (err.starts_with(&format!("error: invalid {setting}: "))
                        || err.contains(&format!(" at {target}: Connection refused")))
            }
            Expect::UsageError => output.status.code() == Some(2),
            Expect::Help => {
                output.status.success()
                    && out.contains("[env: DATABASE_URL]")
                    && out.contains("[env: REDIS_URL]")
                    && !out.contains("[env: LISTINGS_ADMIN_TOKEN=")
            }
        };
        if !ok || !pieces.is_empty() {
            problems.push(format!(
                "{what}: expected {:?} leaking nothing; got {}, leaking {pieces:?}:\n{out}{err}",
                case.expect, output.status
            ));
        }
    }
    problems
}

fn assert_no_problems(problems: Vec<String>) {
    assert!(problems.is_empty(), "\n{}", problems.join("\n\n"));
}

#[test]
fn malformed_urls_and_tokens_are_described_never_echoed() {
    let env = TestEnv::embedded();
    let list = ["list-properties"];
    let serve = ["serve", "--bind", "127.0.0.1:0"];
    let mut cases = Vec::new();
    for (value, expect) in [
        // Not a port; not a Redis scheme; not a database number.
        (
            format!("redis://:{SECRET}@127.0.0.1:notaport/"),
            Expect::Invalid(REDIS),
        ),
        (format!("http://:{SECRET}@h/"), Expect::Invalid(REDIS)),
        (
            format!("redis://:{SECRET}@127.0.0.1:1/notadb"),
            Expect::Invalid(REDIS),
        ),
    ] {
        cases.extend(both_forms(
            &list,
            "--redis-url",
            "REDIS_URL",
            &value,
            SECRET,
            expect,
        ));
    }
    // Unencoded `/`, `#` and `?` end the authority early: the rest is not a port.
    for separator in ['/', '#', '?'] {
        let secret = format!("Zq9x{separator}Wv7Kp");
        cases.extend(both_forms(
            &list,
            "--database-url",
            "DATABASE_URL",
            &format!("postgres://app:{secret}@127.0.0.1:5432/x"),
            &secret,
            Expect::Invalid(DATABASE),
        ));
    }
    // No host; an unsupported scheme; an option the driver refuses.
    for value in [
        format!("postgres://app:{SECRET}@/x"),
        format!("mysql://app:{SECRET}@h/x"),
        format!("postgres://app:{SECRET}@127.0.0.1:1/x?sslmode=bogus"),
    ] {
        cases.extend(both_forms(
            &list,
            "--database-url",
            "DATABASE_URL",
            &value,
            SECRET,
            Expect::Invalid(DATABASE),
        ));
    }
    // Too short, and long enough but with a space.
    for token in [SECRET.to_owned(), format!("{SECRET} Jm3Rt8Yb")] {
        cases.extend(both_forms(
            &serve,
            "--admin-token",
            "LISTINGS_ADMIN_TOKEN",
            &token,
            &token,
            Expect::Invalid(TOKEN),
        ));
    }
    // clap's own errors: a mistyped flag carrying a secret, a repeated one, one that
    // belongs to another command.
    let long_token = format!("{SECRET}Jm3Rt8Yb");
    for args in [
        vec![
            format!("--database-urll=postgres://app:{SECRET}@127.0.0.1:1/x"),
            "list-properties".into(),
        ],
        vec![
            "serve".into(),
            format!("--admin-token={long_token}"),
            format!("--admin-token={long_token}"),
        ],
        vec![
            "list-properties".into(),
            format!("--admin-token={long_token}"),
        ],
    ] {
        cases.push(Case {
            args,
            env: vec![],
            secret: long_token.clone(),
            expect: Expect::UsageError,
        });
    }
    assert_no_problems(check(&env, &cases));
}

#[test]
fn unreachable_backends_are_named_by_host_without_the_password() {
    let env = TestEnv::embedded();
    let mut cases = Vec::new();
    for command in [
        vec!["list-properties"],
        vec!["migrate"],
        vec!["serve", "--bind", "127.0.0.1:0"],
    ] {
        for value in [
            format!("postgres://app:{SECRET}@127.0.0.1:1/x"),
            format!("postgres://app@127.0.0.1:1/x?password={SECRET}"),
        ] {
            cases.extend(both_forms(
                &command,
                "--database-url",
                "DATABASE_URL",
                &value,
                SECRET,
                Expect::Unreachable("127.0.0.1:1"),
            ));
        }
    }
    cases.extend(both_forms(
        &["cache-metrics"],
        "--redis-url",
        "REDIS_URL",
        &format!("redis://:{SECRET}@127.0.0.1:1/"),
        SECRET,
        Expect::Unreachable("127.0.0.1:1"),
    ));
    assert_no_problems(check(&env, &cases));
}

/// The `url` crate (which validates and redacts) takes the user info up to the last
/// `@` and ends the authority at the first `/`, `?` or `#`; tokio-postgres (which
/// connects) takes it up to the first `@`. Where they disagree, the URL must be refused,
/// or be read one way everywhere: never connect somewhere other than what is reported,
/// never report part of the password as the host or port. (With `4711/...` and a
/// reachable server, the redacted form has no password to hide and `migrate` prints the
/// whole of it in the path of the URL it names.)
#[test]
fn postgres_passwords_that_parsers_read_differently_are_not_leaked_or_misread() {
    let env = TestEnv::embedded();
    let mut cases = Vec::new();
    for secret in [
        // tokio-postgres: password `Zq9x`, host `Wv7Kp@127.0.0.1`.
        "Zq9x@Wv7Kp",
        // The url crate: host `app`, port 4711, no password at all.
        "4711/Zq9xWv7Kp",
        "4711#Zq9xWv7Kp",
        "4711?Zq9xWv7Kp",
    ] {
        cases.extend(both_forms(
            &["migrate"],
            "--database-url",
            "DATABASE_URL",
            &format!("postgres://app:{secret}@127.0.0.1:1/x"),
            secret,
            Expect::InvalidOrRefused(DATABASE, "127.0.0.1:1"),
        ));
    }
    assert_no_problems(check(&env, &cases));
}

#[test]
fn help_lists_the_variables_without_their_values() {
    let env = TestEnv::embedded();
    let token = format!("{SECRET}Jm3Rt8Yb");
    let secrets = [
        (
            "DATABASE_URL",
            format!("postgres://app:{SECRET}@127.0.0.1:1/x"),
        ),
        ("REDIS_URL", format!("redis://:{SECRET}@127.0.0.1:1/")),
        ("LISTINGS_ADMIN_TOKEN", token.clone()),
    ];
    let mut cases = Vec::new();
    for args in [
        vec!["--help".to_owned()],
        vec!["serve".into(), "--help".into()],
        vec!["list-properties".into(), "--help".into()],
        vec![
            "serve".into(),
            format!("--admin-token={token}"),
            "--help".into(),
        ],
    ] {
        cases.push(Case {
            args,
            env: secrets.to_vec(),
            secret: token.clone(),
            expect: Expect::Help,
        });
    }
    assert_no_problems(check(&env, &cases));
}

/// Redis is optional: `serve` starts without it, shows its URL redacted, and its
/// failure warnings (at start and under requests) hold no part of the password; with
/// the URL in REDIS_URL and text logs, and in --redis-url with JSON logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_an_unreachable_redis_logs_its_url_redacted() {
    let url = format!("redis://:{SECRET}@127.0.0.1:1/");
    let mut from_env = TestEnv::embedded();
    from_env.redis_url = Some(url.clone());
    let from_flag = TestEnv::embedded();
    let servers = [
        from_env.serve(&[]),
        from_flag.serve(&["--redis-url", &url, "--log-format", "json"]),
    ];
    for server in &servers {
        server.wait_for_log("redis://:***@127.0.0.1:1/").await;
    }
    // Failure lines are logged at most once per 5 s per kind, and the start-up one
    // comes first: keep requesting (bounded) until a request's Redis failure is logged.
    for server in &servers {
        let mut warned = false;
        for _ in 0..150 {
            for path in [
                "/properties/",
                "/properties/?location=Lamu",
                "/properties/1/",
            ] {
                let status = server.get(path).await.status;
                assert!(status == 200 || status == 404, "{path}: {status}");
            }
            let request_warning = |line: &str| {
                line.contains("serving from the database") && line.contains("request_id")
            };
            if server.log().lines().any(request_warning) {
                warned = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log = server.log();
        assert!(warned, "no request-time Redis warning in 30 s:\n{log}");
        let pieces = leaked(SECRET, &log);
        assert!(pieces.is_empty(), "leaks {pieces:?}:\n{log}");
    }
}
