//! Connecting the way production sources need: TLS in every sslmode against a server with a
//! certificate from a CA made for the test, and distinct, clear errors for a wrong password,
//! an unreachable server and a failed TLS handshake. None of them prints the password.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice::source::postgres::PostgresSource;
use sluice::source::{Credentials, Source, SourceError};
use sluice_core::Config;
use sluice_tests::private_pg::{PASSWORD, PrivatePg};

fn source_config(url: &str, extra: &str) -> Config {
    Config::from_yaml(
        &format!(
            "sources:\n  - name: db\n    engine: postgres\n    connection:\n      url: {url}\n{extra}tables:\n  - source: db\n    table: public.t\n"
        ),
        "test",
    )
    .unwrap()
}

fn password(p: &str) -> Credentials {
    Credentials {
        user: None,
        password: Some(p.to_owned()),
    }
}

/// Plans the test table through a source built from `extra` connection settings.
async fn try_connect(
    pg: &PrivatePg,
    extra: &str,
    credentials: &Credentials,
) -> Result<(), SourceError> {
    let config = source_config(&pg.url("postgres"), extra);
    let source = PostgresSource::from_config(&config.sources[0], Some(credentials))?;
    source
        .gather_facts(&config.tables[0], None)
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes_connect_verify_and_fail_clearly() {
    // Only TLS connections are allowed, so every success below really used TLS.
    let pg = PrivatePg::start("hostssl all all 127.0.0.1/32 scram-sha-256");
    pg.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);");
    let ok = password(PASSWORD);
    let ca = pg.ca_file.display().to_string();
    let other = pg.other_ca_file.display().to_string();

    for extra in [
        String::new(),
        "      sslmode: prefer\n".to_string(),
        "      sslmode: require\n".to_string(),
        format!("      sslmode: require\n      ssl_root_cert: {ca}\n"),
        format!("      sslmode: verify-ca\n      ssl_root_cert: {ca}\n"),
        format!("      sslmode: verify-full\n      ssl_root_cert: {ca}\n"),
    ] {
        try_connect(&pg, &extra, &ok)
            .await
            .unwrap_or_else(|e| panic!("{extra:?}: {e}"));
    }

    // Without TLS the server refuses; the error says so and points at the fix.
    let err = try_connect(&pg, "      sslmode: disable\n", &ok)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no encryption"), "{err}");

    // verify-full against the wrong CA, or the system roots, fails as a TLS error.
    for extra in [
        format!("      sslmode: verify-full\n      ssl_root_cert: {other}\n"),
        format!("      sslmode: verify-ca\n      ssl_root_cert: {other}\n"),
        "      sslmode: verify-full\n".to_string(),
    ] {
        let err = try_connect(&pg, &extra, &ok).await.unwrap_err();
        assert!(matches!(err, SourceError::Tls { .. }), "{extra:?}: {err:?}");
        let text = err.to_string();
        assert!(text.contains("TLS with 127.0.0.1:"), "{text}");
        assert!(text.contains("check sslmode and ssl_root_cert"), "{text}");
    }

    // A bundle that is not there is a configuration error naming the field.
    let config = source_config(
        &pg.url("postgres"),
        "      sslmode: verify-full\n      ssl_root_cert: /nonexistent/ca.pem\n",
    );
    let err = PostgresSource::from_config(&config.sources[0], Some(&ok))
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("connection.ssl_root_cert /nonexistent/ca.pem"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unreachable_server_are_told_apart() {
    let pg = PrivatePg::start("host all all 127.0.0.1/32 scram-sha-256");
    pg.psql("CREATE TABLE t (id int PRIMARY KEY);");
    let wrong = "not-the-password-7f3a";
    let err = try_connect(&pg, "", &password(wrong)).await.unwrap_err();
    assert!(matches!(err, SourceError::Auth { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("authentication failed for user 'postgres'"),
        "{text}"
    );
    assert!(!text.contains(wrong), "the password leaked: {text}");

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = source_config(
        &format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        "",
    );
    let source =
        PostgresSource::from_config(&config.sources[0], Some(&password(PASSWORD))).unwrap();
    let err = source
        .gather_facts(&config.tables[0], None)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("cannot reach 127.0.0.1:{port}")),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");

    // The right password works, and the statement timeout applies to the session: planning
    // over a view that takes 3 s is cancelled after 1 s.
    let config = source_config(&pg.url("postgres"), "      statement_timeout: 1s\n");
    let source =
        PostgresSource::from_config(&config.sources[0], Some(&password(PASSWORD))).unwrap();
    source.gather_facts(&config.tables[0], None).await.unwrap();
    pg.psql("INSERT INTO t VALUES (1); CREATE VIEW slow AS SELECT id FROM t WHERE pg_sleep(3) IS NOT NULL;");
    let mut slow = config.tables[0].clone();
    slow.table = "public.slow".into();
    slow.partition = Some(sluice_core::config::PartitionConfig {
        column: "id".into(),
        chunks: Some(2),
        chunk_rows: None,
        max_concurrency: None,
    });
    let err = source.gather_facts(&slow, None).await.err().unwrap();
    assert!(
        err.to_string()
            .contains("canceling statement due to statement timeout"),
        "{err}"
    );
}
