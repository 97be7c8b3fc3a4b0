//! End-to-end runs against the real MariaDB: the shop sample extracted exactly, the sample
//! equal to PostgreSQL's, incremental windows, chunking, and bad input failing clearly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use mysql_async::prelude::Queryable;
use sluice::Quiet;
use sluice::sample::create_shop_postgres;
use sluice::sample_mysql::create_shop_mysql;
use sluice_core::{RunStatus, ScalarValue};
use sluice_tests::mysql::*;
use sluice_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_sample_is_extracted_exactly() {
    let db = MyTestDb::create("shop").await;
    let mut conn = db.conn().await;
    let counts = create_shop_mysql(&mut conn, 1).await.unwrap();
    assert_eq!(
        (counts.customers, counts.products, counts.orders),
        (1_000, 200, 5_000)
    );
    let h = Harness::new(&mysql_config(&db, SHOP_TABLES_YAML));
    for table in ["customers", "products", "orders", "order_items"] {
        let record = h.pipeline.run_table(h.table(table), &Quiet).await.unwrap();
        assert_eq!(
            record.status,
            RunStatus::Completed,
            "{table}: {:?}",
            record.error
        );
        let batches = h.read_run(&record);
        assert_same_as_mysql(&mut conn, table, None, &batches).await;
        if table == "orders" {
            assert_eq!(record.chunks.len(), 3);
            let ids = int64_values(&batches, "order_id");
            let unique: BTreeSet<i64> = ids.iter().copied().collect();
            assert_eq!(unique.len(), ids.len(), "no order read twice across chunks");
        }
        let manifest = h.manifest(&record);
        assert!(
            manifest.files[0].key.starts_with("mysql/shop/"),
            "{}",
            manifest.files[0].key
        );
    }
}

/// Without a `where`, a MariaDB chunk is checked against the rows the server sent (no
/// `count(*)` scan first): the run records them per chunk, and a batch lost on the way fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chunk_is_counted_as_the_server_sends_it_and_lost_rows_fail_the_run() {
    let db = MyTestDb::create("count").await;
    let mut conn = db.conn().await;
    create_shop_mysql(&mut conn, 1).await.unwrap();
    let source_rows: u64 = conn
        .query_first("SELECT count(*) FROM orders")
        .await
        .unwrap()
        .unwrap();
    let tables = "  - source: shop\n    table: orders\n    primary_key: [order_id]\n    partition: { column: order_id, chunks: 3 }\n    batch_rows: 500\n";
    let config = mysql_config(&db, tables);
    let h = Harness::new(&config);
    let record = h.run_completed("orders").await;
    assert_eq!(record.source_rows(), Some(source_rows));
    assert_eq!(record.rows(), source_rows);
    for outcome in record.chunks.values() {
        assert_eq!(outcome.source_rows, Some(outcome.rows));
    }

    let (_, record) = Harness::run_losing_a_batch(&config, "orders").await;
    let message = &record.error.as_ref().unwrap().message;
    assert!(message.contains("is what the source sent"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mariadb_shop_holds_the_postgres_shops_values() {
    let my_db = MyTestDb::create("same").await;
    let mut conn = my_db.conn().await;
    create_shop_mysql(&mut conn, 1).await.unwrap();
    let pg_db = TestDb::create("same").await;
    let client = pg_db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    for table in ["customers", "products", "orders", "order_items"] {
        let (pg_rows, pg) = pg_fingerprints(&client, &format!("public.{table}"), None).await;
        let (my_rows, my) = my_fingerprints(&mut conn, table, None).await;
        assert_eq!(pg_rows, my_rows, "{table}: rows");
        assert_eq!(pg.keys().collect::<Vec<_>>(), my.keys().collect::<Vec<_>>());
        for (column, expected) in &pg {
            // MySQL strips CHAR padding on read; PostgreSQL's char(8) keeps it.
            if column == "segment" {
                continue;
            }
            my[column].assert_matches(expected, &format!("{table}.{column}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_runs_read_only_what_changed_on_every_cursor_kind() {
    let db = MyTestDb::create("incr").await;
    let mut conn = db.conn().await;
    conn.query_drop(
        "CREATE TABLE events (
            id bigint PRIMARY KEY,
            v varchar(20),
            changed_at datetime(6) NOT NULL,
            touched timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6));
         INSERT INTO events (id, v, changed_at, touched)
           SELECT seq, CONCAT('v', seq), TIMESTAMP '2024-01-01 00:00:00.000001' + INTERVAL seq SECOND,
                  TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq MICROSECOND
           FROM seq_1_to_100;
         CREATE VIEW events_by_id AS SELECT * FROM events;
         CREATE VIEW events_touched AS SELECT * FROM events;",
    )
    .await
    .unwrap();
    let tables = "  - source: shop
    table: events
    primary_key: [id]
    load: { mode: incremental, cursor: changed_at }
  - source: shop
    table: events_by_id
    primary_key: [id]
    load: { mode: incremental, cursor: id, lookback: 2 }
  - source: shop
    table: events_touched
    primary_key: [id]
    load: { mode: incremental, cursor: touched }
    partition: { column: id, chunks: 2 }
";
    let h = Harness::new(&mysql_config(&db, tables));
    let mut first = Vec::new();
    for t in ["events", "events_by_id", "events_touched"] {
        let r = h.pipeline.run_table(h.table(t), &Quiet).await.unwrap();
        assert_eq!(r.status, RunStatus::Completed, "{t}: {:?}", r.error);
        assert_eq!(int64_values(&h.read_run(&r), "id").len(), 100, "{t}");
        first.push(r);
    }
    // Full microsecond precision in the watermark.
    assert_eq!(
        first[0].watermark_committed.as_ref().unwrap().to_string(),
        "2024-01-01 00:01:40.000001"
    );
    assert_eq!(first[1].watermark_committed, Some(ScalarValue::Int(100)));
    assert_eq!(
        first[2].watermark_committed.as_ref().unwrap().to_string(),
        "2024-01-01 00:00:00.000100Z"
    );

    // Rows 10..=14 change (touched moves by itself), 101..=103 arrive.
    conn.query_drop(
        "UPDATE events SET v = 'changed', changed_at = changed_at + INTERVAL 1 DAY WHERE id BETWEEN 10 AND 14;
         INSERT INTO events (id, v, changed_at) SELECT 100 + seq, 'new', TIMESTAMP '2024-06-01 00:00:00' FROM seq_1_to_3;",
    )
    .await
    .unwrap();
    let expect = |t: &str| -> Vec<i64> {
        match t {
            "events_by_id" => vec![99, 100, 101, 102, 103],
            _ => vec![10, 11, 12, 13, 14, 101, 102, 103],
        }
    };
    for t in ["events", "events_by_id", "events_touched"] {
        let r = h.pipeline.run_table(h.table(t), &Quiet).await.unwrap();
        assert_eq!(r.status, RunStatus::Completed, "{t}: {:?}", r.error);
        let mut ids = int64_values(&h.read_run(&r), "id");
        ids.sort_unstable();
        assert_eq!(ids, expect(t), "{t}");
        // And a third run with nothing new reads nothing.
        let r = h.pipeline.run_table(h.table(t), &Quiet).await.unwrap();
        assert_eq!(r.status, RunStatus::Completed, "{t}: {:?}", r.error);
        let again = int64_values(&h.read_run(&r), "id");
        let expected_again = if t == "events_by_id" {
            vec![102, 103]
        } else {
            vec![]
        };
        let mut again = again;
        again.sort_unstable();
        assert_eq!(again, expected_again, "{t}: third run");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_split_integer_decimal_date_and_datetime_columns_exactly_once() {
    let db = MyTestDb::create("chunks").await;
    let mut conn = db.conn().await;
    conn.query_drop(
        "CREATE TABLE t (id int unsigned PRIMARY KEY, d decimal(12,0), day date, at datetime(6), stamp timestamp(6) NULL);
         INSERT INTO t SELECT seq, IF(seq % 10 = 0, NULL, seq * 1000), DATE '2020-01-01' + INTERVAL (seq % 700) DAY,
                              TIMESTAMP '2024-01-01 00:00:00.5' + INTERVAL (seq * 7777777) MICROSECOND,
                              TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq MINUTE
           FROM seq_1_to_997;",
    )
    .await
    .unwrap();
    let mut tables = String::new();
    for (i, column) in ["id", "d", "day", "at", "stamp"].iter().enumerate() {
        conn.query_drop(format!("CREATE VIEW v{i} AS SELECT * FROM t"))
            .await
            .unwrap();
        tables.push_str(&format!(
            "  - source: shop\n    table: v{i}\n    partition: {{ column: {column}, chunks: 7 }}\n"
        ));
    }
    let h = Harness::new(&mysql_config(&db, &tables));
    for i in 0..5 {
        let r = h
            .pipeline
            .run_table(h.table(&format!("v{i}")), &Quiet)
            .await
            .unwrap();
        assert_eq!(r.status, RunStatus::Completed, "v{i}: {:?}", r.error);
        assert!(r.chunks.len() >= 7, "v{i}: {} chunks", r.chunks.len());
        let batches = h.read_run(&r);
        let ids: Vec<i64> = int64_values(&batches, "id");
        let unique: BTreeSet<i64> = ids.iter().copied().collect();
        assert_eq!(ids.len(), 997, "v{i}: every row once");
        assert_eq!(unique.len(), 997, "v{i}: no row twice");
        assert_same_as_mysql(&mut conn, &format!("v{i}"), None, &batches).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tables_columns_and_key_types_fail_with_their_names() {
    let db = MyTestDb::create("bad").await;
    let mut conn = db.conn().await;
    conn.query_drop(
        "CREATE TABLE things (id int PRIMARY KEY, label varchar(10), price decimal(20,2) unsigned)",
    )
    .await
    .unwrap();
    let tables = "  - source: shop
    table: nothere
  - source: shop
    table: things
    columns: [id, nope]
  - source: shop
    table: alias_things
    primary_key: [id]
    load: { mode: incremental, cursor: label }
";
    conn.query_drop("CREATE VIEW alias_things AS SELECT * FROM things")
        .await
        .unwrap();
    let h = Harness::new(&mysql_config(&db, tables));
    let message = |selector: &'static str| {
        let h = &h;
        async move {
            let r = h
                .pipeline
                .run_table(h.table(selector), &Quiet)
                .await
                .unwrap();
            assert_eq!(r.status, RunStatus::Failed, "{selector}");
            assert!(r.manifest_key.is_none());
            r.error.unwrap().message
        }
    };
    let m = message("nothere").await;
    assert!(
        m.contains(&format!("table {}.nothere does not exist", db.name)),
        "{m}"
    );
    let m = message("things").await;
    assert!(
        m.contains("columns 'nope' is not a column of the table (columns: id, label, price)"),
        "{m}"
    );
    let m = message("alias_things").await;
    assert!(
        m.contains("load.cursor 'label' has type varchar(10)"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_network_and_tls_failures_are_told_apart() {
    use sluice::source::mysql::MysqlSource;
    use sluice::source::{Credentials, Source, SourceError};
    let db = MyTestDb::create("auth").await;
    let mut conn = db.conn().await;
    conn.query_drop("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
        .await
        .unwrap();
    let secret = "s3cret-Pa55word";
    let my_user = sluice_tests::mysql::MyUser::create(&db, "sluice_u", Some(secret)).await;
    let user = my_user.name.clone();
    let source_yaml = |connection: &str| {
        format!(
            "sources:\n  - name: shop\n    engine: mysql\n    connection:\n{connection}tables:\n  - source: shop\n    table: t\n"
        )
    };
    let build = |connection: &str| {
        let config = sluice_core::Config::from_yaml(&source_yaml(connection), "t").unwrap();
        config.sources[0].clone()
    };
    let table =
        sluice_core::Config::from_yaml(&source_yaml("      url: mysql://x@127.0.0.1/x\n"), "t")
            .unwrap()
            .tables[0]
            .clone();
    let conn_yaml = format!(
        "      host: 127.0.0.1\n      port: 3306\n      user: {user}\n      database: {}\n",
        db.name
    );
    let creds = |password: &str| Credentials {
        user: None,
        password: Some(password.into()),
    };

    // The right password reads the table.
    let ok = MysqlSource::from_config(&build(&conn_yaml), Some(&creds(secret))).unwrap();
    let facts = ok.gather_facts(&table, None).await.unwrap();
    assert_eq!(facts.facts.columns, vec!["id"]);

    // A wrong one is an authentication failure naming the user, never the password.
    let bad = MysqlSource::from_config(&build(&conn_yaml), Some(&creds("wrong-password"))).unwrap();
    let err = bad.gather_facts(&table, None).await.err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, SourceError::Auth { .. }), "{text}");
    assert!(
        text.contains(&format!("authentication failed for user '{user}'")),
        "{text}"
    );
    assert!(
        !text.contains("wrong-password") && !text.contains(secret),
        "{text}"
    );

    // Through the pipeline too: the run record says so.
    let h = Harness::new(&source_yaml(&conn_yaml));
    let r = h.pipeline.run_table(h.table("t"), &Quiet).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    let m = r.error.unwrap().message;
    assert!(m.contains("authentication failed"), "{m}");

    // Nobody listening: a network failure naming the endpoint.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let nowhere = MysqlSource::from_config(
        &build(&format!(
            "      host: 127.0.0.1\n      port: {port}\n      database: x\n"
        )),
        None,
    )
    .unwrap();
    let err = nowhere.gather_facts(&table, None).await.err().unwrap();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("cannot reach 127.0.0.1:{port}")),
        "{err}"
    );

    // This server has no TLS: `require` fails as a TLS problem, `prefer` falls back.
    let have_ssl: String = conn
        .query_first("SELECT @@have_ssl")
        .await
        .unwrap()
        .unwrap();
    let url_yaml = format!("      url: {}\n", db.url);
    if have_ssl != "YES" {
        let tls =
            MysqlSource::from_config(&build(&format!("{url_yaml}      sslmode: require\n")), None)
                .unwrap();
        let err = tls.gather_facts(&table, None).await.err().unwrap();
        assert!(matches!(err, SourceError::Tls { .. }), "{err}");
    }
    let prefer =
        MysqlSource::from_config(&build(&format!("{url_yaml}      sslmode: prefer\n")), None)
            .unwrap();
    assert!(prefer.gather_facts(&table, None).await.is_ok());

    // A CA bundle that is not there, or is not PEM, is a configuration error naming the
    // field, before any connection is tried.
    let not_pem = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_pem.path(), "not a certificate").unwrap();
    for path in ["/nonexistent/ca.pem", not_pem.path().to_str().unwrap()] {
        let yaml = format!("{url_yaml}      sslmode: verify-full\n      ssl_root_cert: {path}\n");
        let err = MysqlSource::from_config(&build(&yaml), None).err().unwrap();
        assert!(matches!(err, SourceError::Config { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("connection.ssl_root_cert {path}")),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_stream_fails_the_run_and_leaves_no_file() {
    let db = MyTestDb::create("kill").await;
    let mut conn = db.conn().await;
    conn.query_drop("CREATE TABLE slow (id int PRIMARY KEY, v varchar(3000)); INSERT INTO slow SELECT seq, REPEAT('x', 3000) FROM seq_1_to_400")
        .await
        .unwrap();
    // SLEEP in the filter slows the scan to ~10 ms a row, so rows are still streaming when
    // the connection is killed; rows are wide because the server sends only full 16 KiB
    // network buffers.
    let tables =
        "  - source: shop\n    table: slow\n    where: \"SLEEP(0.01) = 0\"\n    batch_rows: 5\n";
    let h = std::sync::Arc::new(Harness::new(&mysql_config(&db, tables)));
    let runner = {
        let h = h.clone();
        tokio::spawn(async move { h.pipeline.run_table(h.table("slow"), &Quiet).await })
    };
    let mut killed = false;
    for _ in 0..500 {
        let ids: Vec<u64> = conn
            .exec(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND INFO LIKE 'SELECT%SLEEP%' AND ID <> CONNECTION_ID()",
                (&db.name,),
            )
            .await
            .unwrap();
        if let Some(id) = ids.first() {
            // Let some batches through first, so the cut is really mid-stream.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            conn.query_drop(format!("KILL {id}")).await.unwrap();
            killed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(killed, "the SELECT never showed up in the process list");
    let record = runner.await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    let error = record.error.clone().unwrap();
    assert_eq!(error.phase, RunStatus::Extracting);
    assert!(
        error.message.contains("table slow, chunk 0: reading rows"),
        "{}",
        error.message
    );
    assert!(record.manifest_key.is_none());
    let run_id = record.run_id.to_string();
    let leftovers: Vec<_> = files_under(&h.out_dir())
        .into_iter()
        .filter(|p| p.contains(&run_id) && !p.contains("/_runs/"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_over_the_timeout_fails_the_run_clearly() {
    let db = MyTestDb::create("timeout").await;
    let mut conn = db.conn().await;
    conn.query_drop("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3)")
        .await
        .unwrap();
    let config = format!(
        "sources:\n  - name: shop\n    engine: mysql\n    connection:\n      url: {}\n      statement_timeout: 1s\ntables:\n  - source: shop\n    table: t\n    where: \"SLEEP(1) = 0\"\n",
        db.url
    );
    let h = Harness::new(&config);
    // The server's own message proves the limit fired; no wall-clock assertion (those flake
    // on a loaded machine and the house rule keeps timings out of tests).
    let r = h.pipeline.run_table(h.table("t"), &Quiet).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    let m = r.error.unwrap().message;
    assert!(m.contains("max_statement_time exceeded"), "{m}");
}

/// As for PostgreSQL: a chunk reading beyond its range (a `where` the parser let through,
/// simulated by changing the validated config) fails the run, and no file is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_reads_beyond_its_range_fails_the_run_and_loads_nothing() {
    let db = MyTestDb::create("escape").await;
    let mut conn = db.conn().await;
    create_shop_mysql(&mut conn, 1).await.unwrap();
    let h = Harness::new(&mysql_config(&db, SHOP_TABLES_YAML));
    let mut orders = h.table("orders").clone();
    orders.filter = Some("1=1) or (1=1".into());
    let record = h.pipeline.run_table(&orders, &Quiet).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed, "{} rows", record.rows());
    let message = record.error.clone().unwrap().message;
    let bound: u64 = message
        .split("than the ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let total: Option<u64> = conn
        .query_first("SELECT count(*) FROM orders")
        .await
        .unwrap();
    assert!(bound < total.unwrap(), "{message}");
    let run_id = record.run_id.to_string();
    let leftovers: Vec<_> = files_under(&h.out_dir())
        .into_iter()
        .filter(|p| p.contains(&run_id) && !p.contains("/_runs/"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
