//! TLS to PostgreSQL as libpq spells it, against a server of the test's own that
//! refuses plain connections (as RDS, Azure and Neon do): every connection (migrations,
//! commands, the pool, the change listener) goes over TLS, certificates that do not
//! verify are refused with the host and the reason, and operators are told whether the
//! connection is encrypted.

use crate::dashboard::{dashboard_data, serve_with_admin};
use crate::support::binary::{stderr, stdout};
use crate::support::pg_server::{CERT_USER, OwnPostgres};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL")]
async fn a_database_that_requires_tls_is_used_over_tls_by_every_connection() {
    let server = OwnPostgres::start_tls_only();
    let ca = server.file("ca.pem");
    let env = server.env(server.url(
        "localhost",
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ));
    let migrated = env.run(&["migrate"]);
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let created = env.create_via_cli("Over TLS", "1000", "Lamu");
    assert!(created.status.success(), "{}", stderr(&created));

    let (serving, admin) = serve_with_admin(&env).await;
    let log = serving.log();
    assert!(
        log.contains("(encrypted (TLSv1.3, sslmode=verify-full))"),
        "the start-up line says the connection is encrypted: {log}"
    );
    assert_eq!(
        serving.get("/properties/").await.titles(),
        ["Over TLS"],
        "the pool reads over TLS"
    );
    // The change listener's connection: a write from another process reaches the
    // server's cache through its notification.
    let second = env.create_via_cli("Also over TLS", "2000", "Lamu");
    assert!(second.status.success(), "{}", stderr(&second));
    let titles = serving
        .wait_for_titles("/properties/", |titles| titles.len() == 2)
        .await;
    assert_eq!(titles, ["Also over TLS", "Over TLS"]);

    assert_eq!(
        dashboard_data(admin).await["server"]["database_transport"],
        "encrypted (TLSv1.3, sslmode=verify-full)"
    );
    let address = serving.address.to_string();
    let metrics = env.run(&["cache-metrics", "--bind", &address]);
    assert!(metrics.status.success(), "{}", stderr(&metrics));
    assert!(
        stdout(&metrics).contains("encrypted (TLSv1.3, sslmode=verify-full)"),
        "{}",
        stdout(&metrics)
    );

    // libpq's default, prefer, takes the TLS the server offers.
    let preferred = server.env(server.url("localhost", "postgres", ""));
    let metrics = preferred.run(&["cache-metrics", "--json", "--bind", &address]);
    let json: serde_json::Value = serde_json::from_slice(&metrics.stdout).expect("json");
    assert_eq!(
        json["database"]["transport"],
        "encrypted (TLSv1.3, sslmode=prefer)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL")]
async fn certificates_that_do_not_verify_are_refused_naming_the_host_and_the_reason() {
    let server = OwnPostgres::start_tls_only();
    let ca = server.file("ca.pem");
    let other_ca = server.file("other-ca.pem");
    let attempt = |host: &str, params: &str| {
        let env = server.env(server.url(host, "postgres:s3cret", params));
        let output = env.run(&["migrate"]);
        (output.status.success(), stderr(&output))
    };

    // The certificate names localhost, not 127.0.0.1.
    let (ok, error) = attempt(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    assert!(!ok);
    assert!(error.contains("TLS with 127.0.0.1"), "{error}");
    assert!(error.contains("not valid for name"), "{error}");
    assert!(!error.contains("s3cret"), "no secret in errors: {error}");
    // verify-ca checks the chain only.
    let (ok, error) = attempt("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    assert!(ok, "{error}");
    // A chain to another CA.
    let (ok, error) = attempt(
        "localhost",
        &format!("sslmode=verify-ca&sslrootcert={other_ca}"),
    );
    assert!(!ok);
    assert!(error.contains("TLS with localhost"), "{error}");
    assert!(error.to_lowercase().contains("unknown issuer"), "{error}");
    // libpq: require checks the chain when it has a root certificate.
    let (ok, _) = attempt(
        "localhost",
        &format!("sslmode=require&sslrootcert={other_ca}"),
    );
    assert!(!ok, "require with a root certificate is verify-ca");
    let (ok, error) = attempt("localhost", "sslmode=require");
    assert!(ok, "{error}");
    // The server refuses plain connections.
    let (ok, error) = attempt("localhost", "sslmode=disable");
    assert!(!ok);
    assert!(error.contains("no encryption"), "{error}");

    // Parameters that cannot work are refused before connecting.
    for (params, names) in [
        (
            "sslmode=require&sslrootcert=system",
            "sslrootcert=system needs sslmode=verify-full",
        ),
        ("sslmode=verify-full", "sslrootcert"),
        (
            "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            "/nonexistent/ca.pem",
        ),
        ("sslmode=on", "sslmode must be one of"),
        ("sslmode=allow", "sslmode=allow"),
        ("sslcert=/c.pem", "sslcert needs sslkey"),
    ] {
        let (ok, error) = attempt("localhost", params);
        assert!(!ok, "{params}");
        assert!(error.contains(names), "{params}: {error}");
        assert!(!error.contains("s3cret"), "no secret in errors: {error}");
    }

    // Each parameter the URL does not give comes from libpq's variable for it.
    let env = server.env(server.url("localhost", "postgres", "sslmode=verify-full"));
    let output = env.command(&["migrate"]).env("PGSSLROOTCERT", &ca).output();
    let output = output.expect("run listings");
    assert!(output.status.success(), "{}", stderr(&output));
    // PGSSLMODE stands in for a URL without TLS parameters.
    let env = server.env(server.url("localhost", "postgres", ""));
    let output = env
        .command(&["migrate"])
        .env("PGSSLMODE", "disable")
        .output();
    let output = output.expect("run listings");
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no encryption"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL")]
async fn a_client_certificate_logs_in() {
    let server = OwnPostgres::start_tls_only();
    let (ca, cert, key) = (
        server.file("ca.pem"),
        server.file("client.pem"),
        server.file("client.key"),
    );
    let with_cert = server.env(server.url(
        "localhost",
        CERT_USER,
        &format!("sslmode=verify-full&sslrootcert={ca}&sslcert={cert}&sslkey={key}"),
    ));
    let output = with_cert.run(&["migrate"]);
    assert!(output.status.success(), "{}", stderr(&output));

    let without = server.env(server.url(
        "localhost",
        CERT_USER,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ));
    let output = without.run(&["migrate"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("certificate"),
        "{}",
        stderr(&output)
    );
}

/// libpq's default, prefer, connects in the clear to a server without TLS (as the
/// official Docker image is by default) and says so; require refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL")]
async fn a_server_without_tls_is_used_in_the_clear_only_when_allowed() {
    let server = OwnPostgres::start_plain();
    let env = server.env(server.url("localhost", "postgres", ""));
    let migrated = env.run(&["migrate"]);
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let serving = env.serve(&[]);
    assert!(
        serving.log().contains("(not encrypted (sslmode=prefer))"),
        "{}",
        serving.log()
    );

    // libpq ignores sslmode on a Unix socket, where PostgreSQL has no TLS.
    let socket_dir = server.socket_dir().replace('/', "%2F");
    let by_socket = server.env(server.url(&socket_dir, "postgres", "sslmode=require"));
    let output = by_socket.run(&["migrate", "--status"]);
    assert!(output.status.success(), "{}", stderr(&output));

    let required = server.env(server.url("localhost", "postgres", "sslmode=require"));
    let output = required.run(&["migrate"]);
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(
        error.contains("TLS with localhost: server does not support TLS"),
        "{error}"
    );
}
