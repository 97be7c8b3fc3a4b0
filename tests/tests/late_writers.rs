//! Late-committing writers are never missed (issue 16, section 3), against the real local
//! PostgreSQL and MariaDB: a transaction stamps its row with its start time and stays open
//! while later rows commit and runs go by; once it commits, its row arrives. Without the
//! privilege to see other sessions a run warns and behaves as before; the hold ends with the
//! transaction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use mysql_async::prelude::Queryable;
use sluice_core::late_writers::UpperBoundHold;
use sluice_core::{RunRecord, ScalarValue};
use sluice_tests::mysql::*;
use sluice_tests::*;

fn hold_of(record: &RunRecord) -> Option<&UpperBoundHold> {
    record.plan.as_ref().and_then(|p| p.upper_hold())
}

fn upper_of(record: &RunRecord) -> ScalarValue {
    record
        .plan
        .as_ref()
        .and_then(|p| p.next_watermark())
        .cloned()
        .expect("an incremental run over rows has an upper bound")
}

/// The late-writer warnings a run recorded.
fn late_writer_warnings(record: &RunRecord) -> Vec<(String, u64)> {
    record
        .warnings()
        .into_iter()
        .filter(|(what, _)| what.starts_with("late writers not checked"))
        .collect()
}

/// Every id the runs wrote, across all of their files.
fn ids_written(h: &Harness, runs: &[RunRecord]) -> BTreeSet<i64> {
    runs.iter()
        .flat_map(|r| int64_values(&h.read_run(r), "id"))
        .collect()
}

fn table_yaml(table: &str, cursor: &str) -> String {
    format!(
        "  - source: shop\n    table: {table}\n    primary_key: [id]\n    load: {{ mode: incremental, cursor: {cursor}, lookback: 1s }}\n"
    )
}

async fn pg_ids(client: &tokio_postgres::Client, table: &str) -> BTreeSet<i64> {
    client
        .query(&format!("SELECT id FROM {table}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect()
}

/// The scenario of the issue: a transaction stamps its row with `now()` (its start) and stays
/// open while later rows commit and two runs go by, each of which would, on `max(cursor)`
/// alone, have moved the watermark more than the lookback past the stamp. Its row must arrive
/// once it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_writer_open_across_runs_still_lands() {
    let db = TestDb::create("late").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE events (id int8 PRIMARY KEY, v text, changed_at timestamptz NOT NULL);
             INSERT INTO events SELECT g, 'old', now() - interval '1 hour' + g * interval '1 s'
             FROM generate_series(1, 5) g;",
        )
        .await
        .unwrap();
    let h = Harness::new(&shop_config(
        &db,
        &table_yaml("public.events", "changed_at"),
    ));
    let first = h.run_completed("public.events").await;
    assert_eq!(hold_of(&first), None);

    // The writer: its row carries its transaction's start, and it stays open.
    let writer = db.client().await;
    writer
        .batch_execute("BEGIN; INSERT INTO events VALUES (100, 'late', now())")
        .await
        .unwrap();
    let row = writer
        .query_one("SELECT pg_backend_pid(), now()", &[])
        .await
        .unwrap();
    let (pid, stamp): (i32, DateTime<Utc>) = (row.get(0), row.get(1));

    // Later rows commit, well past the stamp plus the 1s lookback.
    client
        .execute(
            "INSERT INTO events VALUES (101, 'after', $1::timestamptz + interval '5 s'), \
             (102, 'after', $1::timestamptz + interval '10 s')",
            &[&stamp],
        )
        .await
        .unwrap();
    let second = h.run_completed("public.events").await;
    let hold = hold_of(&second).expect("the open writer holds the bound");
    assert_eq!(hold.writer.pid, i64::from(pid));
    assert_eq!(hold.writer.since, stamp);
    assert!(upper_of(&second) < ScalarValue::TimestampTz(stamp));
    assert!(
        hold.message().contains(&format!(
            "by a transaction open since {}",
            stamp.format("%Y-%m-%d %H:%M:%S%.6fZ")
        )),
        "{}",
        hold.message()
    );
    client
        .execute(
            "INSERT INTO events VALUES (103, 'after', $1::timestamptz + interval '20 s')",
            &[&stamp],
        )
        .await
        .unwrap();
    let third = h.run_completed("public.events").await;
    assert_eq!(hold_of(&third).map(|h| h.writer.pid), Some(i64::from(pid)));

    writer.batch_execute("COMMIT").await.unwrap();
    let fourth = h.run_completed("public.events").await;
    assert_eq!(hold_of(&fourth), None, "the hold ends with the transaction");
    assert_eq!(
        fourth.watermark_committed,
        Some(ScalarValue::TimestampTz(
            stamp + chrono::Duration::seconds(20)
        ))
    );
    let runs = [first, second, third, fourth];
    assert_eq!(
        ids_written(&h, &runs),
        pg_ids(&client, "events").await,
        "every row of the source arrived"
    );
}

/// Drops a PostgreSQL role made for a test (its grants in the test database first).
struct DropRole {
    role: String,
    db_url: String,
}

impl Drop for DropRole {
    fn drop(&mut self) {
        let (role, url) = (self.role.clone(), self.db_url.clone());
        sluice_tests::clean_up(async move {
            let admin = connect(&url).await;
            let _ = admin
                .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}"))
                .await;
        });
    }
}

/// A reader that cannot see other roles' transactions (no `pg_read_all_stats`) warns once
/// and runs as before (the bound is `max(cursor)`); granted the role, it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_without_pg_read_all_stats_a_run_warns_and_reads_as_before() {
    let db = TestDb::create("latepriv").await;
    let client = db.client().await;
    let role = format!("sluice_lw_{}", &db.name[db.name.len() - 10..]);
    client
        .batch_execute(&format!(
            "CREATE TABLE events (id int8 PRIMARY KEY, v text, changed_at timestamptz NOT NULL);
             INSERT INTO events VALUES (1, 'old', now() - interval '1 hour');
             CREATE ROLE {role} LOGIN; GRANT SELECT ON events TO {role};"
        ))
        .await
        .unwrap();
    let _role = DropRole {
        role: role.clone(),
        db_url: db.url.clone(),
    };
    let url = format!(
        "{}/{}",
        pg_server_url().replacen("postgres@", &format!("{role}@"), 1),
        db.name
    );
    assert!(
        url.contains(&role),
        "SLUICE_TEST_PG must name its user: {url}"
    );
    let h = Harness::new(&format!(
        "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: {url}\ntables:\n{}",
        table_yaml("public.events", "changed_at")
    ));

    // A writer of another role (the superuser) is open; a later row commits.
    let writer = db.client().await;
    writer
        .batch_execute("BEGIN; INSERT INTO events VALUES (100, 'late', now())")
        .await
        .unwrap();
    let stamp: DateTime<Utc> = writer.query_one("SELECT now()", &[]).await.unwrap().get(0);
    client
        .execute(
            "INSERT INTO events VALUES (101, 'after', $1::timestamptz + interval '5 s')",
            &[&stamp],
        )
        .await
        .unwrap();
    let blind = h.run_completed("public.events").await;
    let warnings = late_writer_warnings(&blind);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].1, 1, "once per run");
    assert!(
        warnings[0].0.contains("GRANT pg_read_all_stats TO <user>"),
        "{warnings:?}"
    );
    // Today's behaviour: the bound is max(cursor), past the open writer's stamp.
    assert_eq!(hold_of(&blind), None);
    assert_eq!(
        upper_of(&blind),
        ScalarValue::TimestampTz(stamp + chrono::Duration::seconds(5))
    );

    // With the grant the same reader sees the writer: no warning, and the bound is held
    // (here at the watermark, which never moves backwards).
    client
        .batch_execute(&format!("GRANT pg_read_all_stats TO {role}"))
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO events VALUES (102, 'after', $1::timestamptz + interval '10 s')",
            &[&stamp],
        )
        .await
        .unwrap();
    let seeing = h.run_completed("public.events").await;
    assert!(
        late_writer_warnings(&seeing).is_empty(),
        "{:?}",
        seeing.warnings()
    );
    let hold = hold_of(&seeing).expect("the writer is visible now");
    assert_eq!(hold.writer.since, stamp);
    assert_eq!(upper_of(&seeing), upper_of(&blind));
    writer.batch_execute("ROLLBACK").await.unwrap();
}

/// The hold follows the transaction: it is there while the writer is open (on each cursor
/// kind that can be held, and for a writer that so far wrote only to another table), and gone
/// once it rolls back, when the watermark moves on to `max(cursor)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_hold_ends_with_the_transaction() {
    let db = TestDb::create("laterel").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE tz (id int8 PRIMARY KEY, changed_at timestamptz NOT NULL);
             CREATE TABLE local (id int8 PRIMARY KEY, changed_at timestamp NOT NULL);
             CREATE TABLE daily (id int8 PRIMARY KEY, changed_on date NOT NULL);
             CREATE TABLE elsewhere (id int8 PRIMARY KEY);
             INSERT INTO tz VALUES (1, now() - interval '1 day');
             INSERT INTO local VALUES (1, (now() - interval '1 day')::timestamp);
             INSERT INTO daily VALUES (1, current_date - 3);",
        )
        .await
        .unwrap();
    let tables = [
        table_yaml("public.tz", "changed_at"),
        table_yaml("public.local", "changed_at"),
        table_yaml("public.daily", "changed_on"),
    ]
    .concat();
    let h = Harness::new(&shop_config(&db, &tables));

    // The writer has written only to another table so far (it has a transaction id): it may
    // still insert here with its start time, so it holds every table of the database. Its
    // session is UTC, as the planning session is (the documented assumption for `timestamp`).
    let writer = db.client().await;
    writer
        .batch_execute("SET TIME ZONE 'UTC'; BEGIN; INSERT INTO elsewhere VALUES (1)")
        .await
        .unwrap();
    let row = writer
        .query_one("SELECT now(), now()::timestamp, current_date", &[])
        .await
        .unwrap();
    let (stamp, local, today): (DateTime<Utc>, NaiveDateTime, chrono::NaiveDate) =
        (row.get(0), row.get(1), row.get(2));
    client
        .batch_execute(
            "INSERT INTO tz VALUES (2, now() + interval '5 s');
             INSERT INTO local VALUES (2, (now() + interval '5 s')::timestamp);
             INSERT INTO daily VALUES (2, current_date + 1);",
        )
        .await
        .unwrap();
    let mut held = Vec::new();
    for (table, below) in [
        ("public.tz", ScalarValue::TimestampTz(stamp)),
        ("public.local", ScalarValue::Timestamp(local)),
        ("public.daily", ScalarValue::Date(today)),
    ] {
        let r = h.run_completed(table).await;
        assert!(hold_of(&r).is_some(), "{table}");
        assert!(upper_of(&r) < below, "{table}: {} < {below}", upper_of(&r));
        held.push(r);
    }
    // A date cursor is held strictly below the writer's start day.
    assert_eq!(
        upper_of(&held[2]),
        ScalarValue::Date(today.pred_opt().unwrap())
    );

    writer.batch_execute("ROLLBACK").await.unwrap();
    for (i, table) in ["public.tz", "public.local", "public.daily"]
        .into_iter()
        .enumerate()
    {
        let r = h.run_completed(table).await;
        assert_eq!(hold_of(&r), None, "{table}");
        let name = table.trim_start_matches("public.");
        let max_sql = format!(
            "SELECT max({}) FROM {name}",
            if name == "daily" {
                "changed_on"
            } else {
                "changed_at"
            }
        );
        let max_row = client.query_one(&max_sql, &[]).await.unwrap();
        let max = match name {
            "tz" => ScalarValue::TimestampTz(max_row.get(0)),
            "local" => ScalarValue::Timestamp(max_row.get(0)),
            _ => ScalarValue::Date(max_row.get(0)),
        };
        assert_eq!(r.watermark_committed, Some(max), "{table}");
        let runs = [held[i].clone(), r];
        assert_eq!(
            ids_written(&h, &runs),
            pg_ids(&client, name).await,
            "{table}"
        );
    }
}

// MariaDB: information_schema.innodb_trx is server-wide, so the tests here take turns (an
// open writer of one would hold the others), and any other client's short writes may hold a
// run for a moment: the checks that a hold has ended retry a few runs.
static MARIADB_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn my_ids(conn: &mut mysql_async::Conn, table: &str) -> BTreeSet<i64> {
    conn.query::<i64, _>(format!("SELECT id FROM `{table}`"))
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// A `datetime` expression's value on `conn`, at full precision.
async fn my_datetime(conn: &mut mysql_async::Conn, expr: &str) -> NaiveDateTime {
    let text: String = conn
        .query_first(format!(
            "SELECT DATE_FORMAT({expr}, '%Y-%m-%d %H:%i:%s.%f')"
        ))
        .await
        .unwrap()
        .unwrap();
    NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f").unwrap()
}

async fn my_connection_id(conn: &mut mysql_async::Conn) -> i64 {
    conn.query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap()
}

/// Runs `table` until a run is not held back (another client's write may hold one briefly),
/// asserting that no run is held by the connection `ended` any more; every run made.
async fn runs_until_unheld(h: &Harness, table: &str, ended: i64) -> Vec<RunRecord> {
    // InnoDB serves information_schema.innodb_trx from a buffer refreshed only when more than
    // 0.1 s passed since it was last read
    // (https://dev.mysql.com/doc/refman/5.7/en/innodb-information-schema-internal-data.html):
    // the transaction that just ended may still be listed for that long.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut runs = Vec::new();
    for _ in 0..20 {
        let r = h.run_completed(table).await;
        let hold = hold_of(&r).cloned();
        runs.push(r);
        match hold {
            None => return runs,
            Some(hold) => {
                assert_ne!(hold.writer.pid, ended, "a hold by an ended transaction");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    panic!(
        "{table}: every run was held back: {:?}",
        runs.last().and_then(hold_of)
    );
}

/// Sleeps past the 1s lookback, so the next commit's cursor is more than the lookback later.
async fn past_the_lookback() {
    tokio::time::sleep(Duration::from_millis(1300)).await;
}

/// The scenario of the issue on MariaDB: the writer stamps its row with a value captured when
/// its transaction started (MariaDB's `NOW()` is the statement's time, not the
/// transaction's), later rows commit with real later times, and runs go by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_writer_open_across_runs_still_lands() {
    let _turn = MARIADB_TURN.lock().await;
    let db = MyTestDb::create("late").await;
    let mut conn = db.conn().await;
    conn.query_drop(
        "CREATE TABLE events (id bigint PRIMARY KEY, v varchar(20), changed_at datetime(6) NOT NULL);
         INSERT INTO events SELECT seq, 'old', NOW(6) - INTERVAL 1 HOUR + INTERVAL seq SECOND FROM seq_1_to_5;",
    )
    .await
    .unwrap();
    let h = Harness::new(&mysql_config(&db, &table_yaml("events", "changed_at")));
    let mut runs = vec![h.run_completed("events").await];

    let mut writer = db.conn().await;
    writer
        .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .unwrap();
    // The value the transaction captured when it started, stamped on its row.
    writer.query_drop("SET @started = NOW(6)").await.unwrap();
    let pid = my_connection_id(&mut writer).await;
    let stamp = my_datetime(&mut writer, "@started").await;
    writer
        .query_drop("INSERT INTO events VALUES (100, 'late', @started)")
        .await
        .unwrap();

    past_the_lookback().await;
    conn.query_drop("INSERT INTO events VALUES (101, 'after', NOW(6))")
        .await
        .unwrap();
    let second = h.run_completed("events").await;
    let hold = hold_of(&second).expect("the open writer holds the bound");
    assert!(hold.writer.since.naive_utc() <= stamp, "{}", hold.message());
    assert!(upper_of(&second) < ScalarValue::Timestamp(stamp));
    runs.push(second);

    past_the_lookback().await;
    conn.query_drop("INSERT INTO events VALUES (102, 'after', NOW(6))")
        .await
        .unwrap();
    let third = h.run_completed("events").await;
    assert!(hold_of(&third).is_some());
    assert!(upper_of(&third) < ScalarValue::Timestamp(stamp));
    runs.push(third);

    writer.query_drop("COMMIT").await.unwrap();
    runs.extend(runs_until_unheld(&h, "events", pid).await);
    assert_eq!(
        ids_written(&h, &runs),
        my_ids(&mut conn, "events").await,
        "every row of the source arrived"
    );
}

/// A MariaDB user without `PROCESS` cannot read `information_schema.innodb_trx`: the run
/// warns once and the bound is `max(cursor)`, as before. Granted `PROCESS`, it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_without_process_a_run_warns_and_reads_as_before() {
    let _turn = MARIADB_TURN.lock().await;
    let db = MyTestDb::create("latepriv").await;
    let mut conn = db.conn().await;
    conn.query_drop(
        "CREATE TABLE events (id bigint PRIMARY KEY, v varchar(20), changed_at datetime(6) NOT NULL);
         INSERT INTO events VALUES (1, 'old', NOW(6) - INTERVAL 1 HOUR);",
    )
    .await
    .unwrap();
    let my_user = MyUser::create(&db, "sluice_lw", None).await;
    let user = my_user.name.clone();
    let url = db.url.replacen("root@", &format!("{user}@"), 1);
    assert!(
        url.contains(&user),
        "SLUICE_TEST_MYSQL must name its user: {url}"
    );
    let h = Harness::new(&format!(
        "sources:\n  - name: shop\n    engine: mysql\n    connection:\n      url: {url}\n      sslmode: disable\ntables:\n{}",
        table_yaml("events", "changed_at")
    ));

    let mut writer = db.conn().await;
    writer
        .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .unwrap();
    writer.query_drop("SET @started = NOW(6)").await.unwrap();
    writer
        .query_drop("INSERT INTO events VALUES (100, 'late', @started)")
        .await
        .unwrap();
    past_the_lookback().await;
    conn.query_drop("INSERT INTO events VALUES (101, 'after', NOW(6))")
        .await
        .unwrap();
    let after = my_datetime(&mut conn, "(SELECT changed_at FROM events WHERE id = 101)").await;

    let blind = h.run_completed("events").await;
    let warnings = late_writer_warnings(&blind);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].1, 1, "once per run");
    assert!(
        warnings[0].0.contains("GRANT PROCESS ON *.* TO <user>"),
        "{warnings:?}"
    );
    assert_eq!(hold_of(&blind), None);
    assert_eq!(upper_of(&blind), ScalarValue::Timestamp(after));

    conn.query_drop(format!(
        "GRANT PROCESS ON *.* TO '{user}'@'%'; GRANT PROCESS ON *.* TO '{user}'@'localhost'"
    ))
    .await
    .unwrap();
    past_the_lookback().await;
    conn.query_drop("INSERT INTO events VALUES (102, 'after', NOW(6))")
        .await
        .unwrap();
    let seeing = h.run_completed("events").await;
    assert!(
        late_writer_warnings(&seeing).is_empty(),
        "{:?}",
        seeing.warnings()
    );
    assert!(hold_of(&seeing).is_some(), "the writer is visible now");
    // Held, and never below the watermark the blind run committed.
    assert_eq!(upper_of(&seeing), ScalarValue::Timestamp(after));
    writer.query_drop("ROLLBACK").await.unwrap();
}

/// The hold follows the transaction on MariaDB too, for `datetime`, `timestamp` and `date`
/// cursors: held while the writer is open, gone once it rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_the_hold_ends_with_the_transaction() {
    let _turn = MARIADB_TURN.lock().await;
    let db = MyTestDb::create("laterel").await;
    let mut conn = db.conn().await;
    conn.query_drop(
        "CREATE TABLE wall (id bigint PRIMARY KEY, changed_at datetime(6) NOT NULL);
         CREATE TABLE instant (id bigint PRIMARY KEY, changed_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));
         CREATE TABLE daily (id bigint PRIMARY KEY, changed_on date NOT NULL);
         INSERT INTO wall VALUES (1, NOW(6) - INTERVAL 1 DAY);
         INSERT INTO instant VALUES (1, NOW(6) - INTERVAL 1 DAY);
         INSERT INTO daily VALUES (1, CURRENT_DATE - INTERVAL 3 DAY);",
    )
    .await
    .unwrap();
    let tables = [
        table_yaml("wall", "changed_at"),
        table_yaml("instant", "changed_at"),
        table_yaml("daily", "changed_on"),
    ]
    .concat();
    let h = Harness::new(&mysql_config(&db, &tables));

    let mut writer = db.conn().await;
    writer
        .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .unwrap();
    writer.query_drop("SET @started = NOW(6)").await.unwrap();
    let pid = my_connection_id(&mut writer).await;
    let stamp = my_datetime(&mut writer, "@started").await;
    let today = stamp.date();
    writer
        .query_drop(
            "INSERT INTO wall VALUES (100, @started); INSERT INTO instant VALUES (100, @started);
             INSERT INTO daily VALUES (100, DATE(@started));",
        )
        .await
        .unwrap();
    past_the_lookback().await;
    conn.query_drop(
        "INSERT INTO wall VALUES (2, NOW(6)); INSERT INTO instant VALUES (2, NOW(6));
         INSERT INTO daily VALUES (2, CURRENT_DATE + INTERVAL 1 DAY);",
    )
    .await
    .unwrap();
    let mut held = Vec::new();
    for (table, below) in [
        ("wall", ScalarValue::Timestamp(stamp)),
        ("instant", ScalarValue::TimestampTz(stamp.and_utc())),
        ("daily", ScalarValue::Date(today)),
    ] {
        let r = h.run_completed(table).await;
        assert!(hold_of(&r).is_some(), "{table}");
        assert!(upper_of(&r) < below, "{table}: {} < {below}", upper_of(&r));
        held.push(r);
    }
    // A date cursor is held strictly below the writer's start day (in UTC).
    assert!(upper_of(&held[2]) <= ScalarValue::Date(today.pred_opt().unwrap()));

    writer.query_drop("ROLLBACK").await.unwrap();
    for (i, table) in ["wall", "instant", "daily"].into_iter().enumerate() {
        let mut runs = vec![held[i].clone()];
        runs.extend(runs_until_unheld(&h, table, pid).await);
        assert_eq!(
            ids_written(&h, &runs),
            my_ids(&mut conn, table).await,
            "{table}"
        );
    }
}
