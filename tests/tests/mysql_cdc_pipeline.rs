//! Binlog CDC end to end (issue 18, MariaDB): a `load.mode: cdc` table of a MariaDB server with
//! the binary log on (a private one, `binlog_row_metadata = FULL`: the shared server has no
//! binary log) goes through the whole pipeline (S3 in moto, the Snowflake stand-in, the
//! generated merge) and, after every run, STAGING holds exactly what the source holds,
//! compared row by row with the source itself: the snapshot overlapping concurrent writes,
//! inserts, updates, deletes, a key update, a long text an update left alone, a transaction
//! spanning tables, a long transaction committed after later ones, a truncate, runs capped at
//! `max_changes` ending at whole transactions, a replayed run; and, loudly, what the binlog
//! cannot give: row metadata less than FULL, a binlog purged past sluice's position, a
//! retyped column. The pipeline reads as a user with REPLICATION SLAVE, REPLICATION CLIENT and
//! SELECT only, never root; the test writes as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row};
use sluice::sink::parquet::ParquetSettings;
use sluice::source::Credentials;
use sluice::source::Source;
use sluice::source::mysql::MysqlSource;
use sluice::warehouse::Statement;
use sluice::warehouse::load::Loader;
use sluice::warehouse::snowflake::SnowflakeClient;
use sluice_core::{RunRecord, ScalarValue, TableConfig};
use sluice_tests::Meddler;
use sluice_tests::cdc;
use sluice_tests::private_mariadb::PrivateMariadb;
use sluice_tests::s3::S3Harness;
use sluice_tests::snowflake::StandIn;

/// The reading user's password; it protects nothing outside the test.
const PASSWORD: &str = "sluice-test-only";
/// The user the pipeline reads as: replication privileges and SELECT, nothing else.
const USER: &str = "sluice_cdc";

/// One row of the source, as text both sides can spell the same way: the key, the note, the
/// exact amount in cents, and the body's length and first character (bodies are long runs of
/// one character, some over 64 KiB).
const SOURCE_ROWS: &str = "SELECT CONCAT(id, '|', COALESCE(note, '~'), '|', COALESCE(CAST(amount * 100 AS SIGNED), '~'), \
     '|', COALESCE(CONCAT(CHAR_LENGTH(body), LEFT(body, 1)), '~')) FROM shop.docs ORDER BY id";
const STAGING_ROWS: &str = "SELECT TO_VARCHAR(\"id\") || '|' || COALESCE(\"note\", '~') || '|' || COALESCE(TO_VARCHAR(CAST(\"amount\" * 100 AS BIGINT)), '~') \
     || '|' || COALESCE(TO_VARCHAR(LENGTH(\"body\")) || LEFT(\"body\", 1), '~') FROM STAGING.DOCS";

/// A body longer than 64 KiB (a longtext value with a 4-byte length in the row image).
const LONG: usize = 70_000;

struct World {
    // Dropped before the server.
    admin: tokio::sync::Mutex<Conn>,
    h: S3Harness,
    client: Arc<SnowflakeClient>,
    loader: Arc<Loader>,
    _standin: StandIn,
    my: PrivateMariadb,
}

/// A root connection to the private server, `shop` the default database.
async fn root(port: u16) -> Conn {
    let opts = OptsBuilder::from_opts(
        Opts::from_url(&format!("mysql://root@127.0.0.1:{port}/shop")).unwrap(),
    )
    .prefer_socket(false);
    let mut conn = Conn::new(opts).await.unwrap();
    conn.query_drop("SET NAMES utf8mb4").await.unwrap();
    conn
}

fn config(my: &PrivateMariadb, table_extra: &str, deletes: &str) -> String {
    format!(
        "sources:
  - name: shop
    engine: mysql
    connection:
      url: {url}/shop
      sslmode: disable
tables:
  - source: shop
    table: shop.docs
    primary_key: [id]
    load: {{mode: cdc{table_extra}}}
    deletes: {{mode: {deletes}}}
    target: {{staging_table: STAGING.DOCS}}
",
        url = my.url(USER)
    )
}

/// The source as the pipeline builds it, with the password resolved outside the config (a
/// URL may not hold one).
fn mysql_source(source: &sluice_core::SourceConfig) -> Arc<dyn Source> {
    let credentials = Credentials {
        user: None,
        password: Some(PASSWORD.to_owned()),
    };
    Arc::new(MysqlSource::from_config(source, Some(&credentials)).unwrap())
}

/// What `meddle` runs just before the snapshot's chunk 0 is read: SQL on a root connection.
type Meddle = fn(u16) -> futures::future::BoxFuture<'static, ()>;

async fn world(label: &str, table_extra: &str) -> World {
    world_with(label, table_extra, "hard", None).await
}

async fn world_with(
    label: &str,
    table_extra: &str,
    deletes: &str,
    meddle: Option<Meddle>,
) -> World {
    // Each server has its own tmpdir (see PrivateMariadb::start_with), so tests start theirs
    // at once.
    let my = PrivateMariadb::start_with(&["--binlog-row-metadata=FULL"]);
    my.sql(&format!(
        "CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
         CREATE TABLE shop.docs (id bigint PRIMARY KEY, note varchar(200), amount decimal(12,2), body longtext);
         CREATE TABLE shop.audit (id bigint AUTO_INCREMENT PRIMARY KEY, what text);
         CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';
         GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{USER}'@'127.0.0.1';
         GRANT SELECT ON shop.* TO '{USER}'@'127.0.0.1';"
    ));
    let admin = root(my.port).await;
    let port = my.port;
    let h = S3Harness::with_sources(
        &config(&my, table_extra, deletes),
        ParquetSettings::default(),
        |source| {
            let inner = mysql_source(source);
            match meddle {
                None => inner,
                Some(meddle) => Arc::new(Meddler::new(inner, 0, move || meddle(port))),
            }
        },
    )
    .await;
    let sluice_tests::snowflake::Warehoused {
        h,
        client,
        loader,
        standin,
    } = sluice_tests::snowflake::warehoused(label, h).await;
    World {
        admin: tokio::sync::Mutex::new(admin),
        h,
        client,
        loader,
        _standin: standin,
        my,
    }
}

/// The number of a binary log file (`binlog.000042` → 42).
fn file_number(name: &str) -> u64 {
    name.rsplit('.')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a binary log file name: {name}"))
}

/// `n` rows `(id, 'n<id>', id * 1.25, REPEAT(fill, len(id)))` for ids `from..=to`.
fn rows_sql(from: i64, to: i64, fill: char, len: impl Fn(i64) -> usize) -> String {
    let values: Vec<String> = (from..=to)
        .map(|g| format!("({g}, 'n{g}', {g} * 1.25, REPEAT('{fill}', {}))", len(g)))
        .collect();
    format!("INSERT INTO shop.docs VALUES {}", values.join(", "))
}

impl World {
    fn table(&self) -> &TableConfig {
        &self.h.config.tables[0]
    }

    /// A run of `table` that fails, and its message.
    async fn refused(&self, table: &TableConfig) -> String {
        cdc::refused(&self.h, table).await
    }

    async fn run(&self) -> RunRecord {
        self.run_table(self.table()).await
    }

    async fn run_table(&self, table: &TableConfig) -> RunRecord {
        cdc::completed(&self.h, table).await
    }

    async fn full_reload(&self) -> RunRecord {
        cdc::full_reload(&self.h, self.table()).await
    }

    /// Runs SQL as root (one or more `;`-separated statements, on the one admin connection).
    async fn write(&self, sql: &str) {
        self.admin
            .lock()
            .await
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn source_rows(&self) -> Vec<String> {
        self.admin
            .lock()
            .await
            .query::<String, _>(SOURCE_ROWS)
            .await
            .unwrap()
    }

    async fn staging_rows(&self) -> Vec<String> {
        cdc::text_rows(&self.client, STAGING_ROWS).await
    }

    async fn assert_staging_is_source(&self, step: &str) {
        let mut source = self.source_rows().await;
        source.sort();
        assert_eq!(self.staging_rows().await, source, "after {step}");
    }

    /// The keys in STAGING, ascending.
    async fn staged_ids(&self) -> Vec<i64> {
        let result = self
            .client
            .execute(&Statement::new(
                "SELECT \"id\" FROM STAGING.DOCS ORDER BY 1",
            ))
            .await
            .unwrap();
        result.rows.iter().map(|r| r[0].as_i64().unwrap()).collect()
    }

    async fn watermark(&self) -> u64 {
        cdc::watermark(&self.h, self.table()).await
    }

    fn watermark_of(&self, record: &RunRecord) -> u64 {
        cdc::position(record.watermark_committed.as_ref())
    }

    /// `SHOW BINARY LOGS`: the files the server still has.
    async fn binary_logs(&self) -> Vec<String> {
        let rows: Vec<Row> = self
            .admin
            .lock()
            .await
            .query("SHOW BINARY LOGS")
            .await
            .unwrap();
        rows.iter().map(|row| row.get(0).unwrap()).collect()
    }

    /// `SHOW MASTER STATUS`: the file being written.
    async fn current_file(&self) -> String {
        let row: Row = self
            .admin
            .lock()
            .await
            .query_first("SHOW MASTER STATUS")
            .await
            .unwrap()
            .expect("the binary log is on");
        row.get(0).unwrap()
    }
}

/// A snapshot run: the plan says so, and its watermark is the position it started from.
fn assert_snapshot(record: &RunRecord) {
    let plan = record.plan.as_ref().unwrap();
    let cdc = plan
        .cdc
        .as_ref()
        .expect("a cdc table's plan has a cdc window");
    assert!(cdc.snapshot, "the first run is a snapshot");
    assert!(!plan.reads_changes());
    assert_eq!(
        record.watermark_committed,
        Some(ScalarValue::Int(cdc.from as i64)),
        "a snapshot's watermark is the binlog position it started from"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_follows_the_binlog_through_every_kind_of_change() {
    let w = world("mycdc_changes", "").await;

    // Written before the snapshot: the snapshot holds them. Some bodies are over 64 KiB.
    w.write(&rows_sql(1, 50, 'a', |g| if g <= 10 { LONG } else { 5000 }))
        .await;
    w.write("UPDATE shop.docs SET note = 'before snapshot' WHERE id = 7; DELETE FROM shop.docs WHERE id = 8")
        .await;
    let snapshot = w.run().await;
    assert_snapshot(&snapshot);
    assert_eq!(snapshot.rows(), 49, "the snapshot read the table");
    w.assert_staging_is_source("the snapshot").await;

    // Every kind of change, each its own transaction unless said otherwise.
    for sql in [
        "INSERT INTO shop.docs VALUES (100, 'new', 10.10, REPEAT('b', 70000))",
        "UPDATE shop.docs SET note = 'touched', amount = 99999999.99 WHERE id = 1",
        // A 70 KB body the update left alone: STAGING must keep it.
        "UPDATE shop.docs SET note = 'body untouched' WHERE id = 2",
        "DELETE FROM shop.docs WHERE id = 3",
        // Insert then update in one run.
        "INSERT INTO shop.docs VALUES (101, 'fresh', NULL, REPEAT('c', 7000))",
        "UPDATE shop.docs SET note = 'fresh, then noted' WHERE id = 101",
        // Set to NULL: a NULL is a value.
        "UPDATE shop.docs SET note = NULL, body = NULL WHERE id = 4",
        // One transaction over two tables; the other table's rows are not docs'.
        "BEGIN; INSERT INTO shop.audit (what) VALUES ('spanning'); UPDATE shop.docs SET amount = 0 WHERE id = 5; INSERT INTO shop.docs VALUES (102, 'in a txn', 1, 'short'); INSERT INTO shop.audit (what) VALUES ('spanning, again'); COMMIT",
        // Deleted and back again in one run.
        "DELETE FROM shop.docs WHERE id = 6",
        "INSERT INTO shop.docs VALUES (6, 'reborn', 6.66, REPEAT('d', 5000))",
        // Statements changing many rows (one rows event, several rows).
        "UPDATE shop.docs SET amount = amount + 1, body = REPEAT('e', 66000) WHERE id BETWEEN 10 AND 20",
        "DELETE FROM shop.docs WHERE id IN (21, 22)",
        "UPDATE shop.docs SET amount = -0.05 WHERE id = 23",
    ] {
        w.write(sql).await;
    }
    let changes = w.run().await;
    let plan = changes.plan.as_ref().unwrap();
    assert!(
        plan.reads_changes(),
        "a run after the snapshot reads the binlog"
    );
    assert_eq!(changes.watermark_before, snapshot.watermark_committed);
    assert!(
        w.watermark_of(&changes) > w.watermark_of(&snapshot),
        "the watermark moved past the changes read"
    );
    w.assert_staging_is_source("inserts, updates, deletes and a long body left alone")
        .await;
    let merge = changes.merge.clone().unwrap();
    assert_eq!(merge["deleted"], 3, "ids 3, 21 and 22: {merge}");

    // A replayed run (a retried finalize) changes nothing.
    let manifest = w.h.manifest(&changes).await;
    w.loader
        .load(w.table(), &manifest, Some(&w.h.prefix))
        .await
        .unwrap();
    w.loader.merge(w.table(), changes.run_id).await.unwrap();
    w.assert_staging_is_source("a replay of the change run")
        .await;

    // A key update, and a long transaction that commits after a later one.
    let mut long = root(w.my.port).await;
    long.query_drop("BEGIN; UPDATE shop.docs SET note = 'long txn' WHERE id = 9")
        .await
        .unwrap();
    w.write("UPDATE shop.docs SET id = 200 WHERE id = 102")
        .await;
    w.write("UPDATE shop.docs SET note = 'after the long one started' WHERE id = 11")
        .await;
    // Run while the long transaction is open: not committed, so not read (nor in the source
    // the comparison reads); the next run must still find it.
    let middle = w.run().await;
    assert_eq!(middle.watermark_before, changes.watermark_committed);
    w.assert_staging_is_source("a key update and a transaction still open")
        .await;
    assert!(
        !w.staged_ids().await.contains(&102),
        "the key update removed the old key"
    );
    // A transaction that starts and commits while the long one is still open.
    w.write("UPDATE shop.docs SET note = 'later, committed first' WHERE id = 12")
        .await;
    long.query_drop("COMMIT").await.unwrap();
    drop(long);
    let after_long = w.run().await;
    assert!(w.watermark_of(&after_long) > w.watermark_of(&middle));
    w.assert_staging_is_source("the long transaction committed")
        .await;
    let notes = w
        .client
        .execute(&Statement::new(
            "SELECT \"note\" FROM STAGING.DOCS WHERE \"id\" IN (9, 12) ORDER BY \"id\"",
        ))
        .await
        .unwrap();
    let notes: Vec<&str> = notes.rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(notes, ["long txn", "later, committed first"]);

    // A truncate, and rows after it.
    w.write("TRUNCATE TABLE shop.docs").await;
    w.write("INSERT INTO shop.docs VALUES (1, 'after truncate', 1, 'x')")
        .await;
    let truncated = w.run().await;
    w.assert_staging_is_source("a truncate").await;
    assert_eq!(w.staged_ids().await, [1]);
    assert_eq!(truncated.merge.as_ref().unwrap()["inserted"], 1);

    // An idle table: a run with nothing for it still moves the watermark past the log read.
    w.write("INSERT INTO shop.audit (what) VALUES ('elsewhere')")
        .await;
    let idle = w.run().await;
    assert!(idle.plan.as_ref().unwrap().reads_changes());
    assert_eq!(idle.rows(), 0);
    let reached = w.watermark().await;
    assert!(
        reached > w.watermark_of(&truncated),
        "an idle run moves the watermark forward"
    );
    assert_eq!(
        reached,
        idle.plan.as_ref().unwrap().cdc.as_ref().unwrap().upto,
        "an idle run reads up to where the log stood at its plan"
    );
    w.assert_staging_is_source("an idle run").await;
}

/// Writes made just before the snapshot's chunk is read (by a [`Meddler`]), after the plan
/// read its position: the snapshot may or may not hold them, the log after its position does.
fn meddle_before_the_snapshot(port: u16) -> futures::future::BoxFuture<'static, ()> {
    Box::pin(async move {
        let mut conn = root(port).await;
        for i in 0..10 {
            conn.query_drop(format!(
                "INSERT INTO shop.docs VALUES ({id}, 'meddled', 3.5, REPEAT('m', 70000))",
                id = 5000 + i
            ))
            .await
            .unwrap();
            conn.query_drop(format!(
                "UPDATE shop.docs SET note = 'meddled', amount = amount + 2 WHERE id = {}",
                250 + i
            ))
            .await
            .unwrap();
        }
        conn.query_drop("DELETE FROM shop.docs WHERE id BETWEEN 280 AND 284")
            .await
            .unwrap();
        conn.disconnect().await.unwrap();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_overlapping_concurrent_writes_misses_nothing() {
    let w = world_with(
        "mycdc_overlap",
        "",
        "hard",
        Some(meddle_before_the_snapshot),
    )
    .await;
    w.write(&rows_sql(1, 300, 'a', |g| {
        if g % 50 == 0 { LONG } else { 3000 }
    }))
    .await;

    // A writer busy through the snapshot: 200 statements, every kind of change.
    let progress = Arc::new(AtomicUsize::new(0));
    let writer = {
        let progress = progress.clone();
        let port = w.my.port;
        tokio::spawn(async move {
            let mut conn = root(port).await;
            for i in 0..200_i64 {
                let sql = match i % 4 {
                    0 => format!(
                        "INSERT INTO shop.docs VALUES ({}, 'w{i}', {i}.5, REPEAT('w', {}))",
                        1000 + i,
                        100 + i
                    ),
                    1 => format!(
                        "UPDATE shop.docs SET note = 'u{i}', amount = amount + 1 WHERE id = {}",
                        i % 300 + 1
                    ),
                    2 => format!("DELETE FROM shop.docs WHERE id = {}", (i * 7) % 300 + 1),
                    _ => format!(
                        "BEGIN; INSERT INTO shop.docs VALUES ({}, 't{i}', 1, 'x'); \
                         UPDATE shop.docs SET body = REPEAT('z', 70000) WHERE id = {}; \
                         DELETE FROM shop.docs WHERE id = {}; COMMIT",
                        2000 + i,
                        (i * 3) % 300 + 1,
                        1000 + i - 3
                    ),
                };
                conn.query_drop(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                progress.fetch_add(1, Ordering::SeqCst);
            }
            conn.disconnect().await.unwrap();
        })
    };
    // Bounded: until the writer is under way.
    for _ in 0..500 {
        if progress.load(Ordering::SeqCst) >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let snapshot = w.run().await;
    assert_snapshot(&snapshot);
    writer.await.unwrap();
    assert_eq!(progress.load(Ordering::SeqCst), 200);

    let next = w.run().await;
    assert!(next.plan.as_ref().unwrap().reads_changes());
    w.assert_staging_is_source("a snapshot overlapping writes and the run after it")
        .await;
    let ids = w.staged_ids().await;
    assert!(
        (5000..5010).all(|id| ids.contains(&id)),
        "the rows written just before the snapshot's read arrived: {ids:?}"
    );
    // Nothing more to read: a further run changes nothing.
    let idle = w.run().await;
    assert_eq!(idle.rows(), 0);
    w.assert_staging_is_source("an idle run after the overlap")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_capped_at_max_changes_end_at_whole_transactions_and_catch_up_in_order() {
    let w = world("mycdc_capped", ", max_changes: 40").await;
    let snapshot = w.run().await; // an empty snapshot
    assert_snapshot(&snapshot);
    assert_eq!(snapshot.rows(), 0);
    // 60 small transactions, each inserting a pair of rows (1000 + i, 2000 + i): a run ending
    // inside one would stage one row of a pair.
    for i in 0..60 {
        w.write(&format!(
            "BEGIN; INSERT INTO shop.docs VALUES ({}, 'first of {i}', {i}, 'b'); \
             INSERT INTO shop.audit (what) VALUES ('pair {i}'); \
             INSERT INTO shop.docs VALUES ({}, 'second of {i}', {i}, 'c'); COMMIT",
            1000 + i,
            2000 + i
        ))
        .await;
    }
    let mut runs = 0;
    let mut last = w.watermark().await;
    let mut last_pairs = 0;
    loop {
        let record = w.run().await;
        runs += 1;
        assert!(record.plan.as_ref().unwrap().reads_changes());
        let reached = w.watermark_of(&record);
        assert!(reached >= last, "the watermark never goes back");
        assert!(
            record.rows() <= 42,
            "run {runs} read {} rows: max_changes 40 bounds a run (to a whole transaction)",
            record.rows()
        );
        // STAGING holds whole transactions, the first ones committed: pairs 0..k.
        let ids = w.staged_ids().await;
        let pairs = ids.iter().filter(|id| **id < 2000).count() as i64;
        let expected: Vec<i64> = (0..pairs)
            .map(|i| 1000 + i)
            .chain((0..pairs).map(|i| 2000 + i))
            .collect();
        assert_eq!(
            ids, expected,
            "run {runs}: whole transactions, in commit order"
        );
        assert!(pairs >= last_pairs);
        let upto = record.plan.as_ref().unwrap().cdc.as_ref().unwrap().upto;
        if record.rows() == 0 {
            assert_eq!(pairs, 60, "an empty run only once caught up");
            assert_eq!(reached, upto, "a caught-up run reads to its plan's end");
            break;
        }
        assert!(
            pairs > last_pairs && reached > last,
            "run {runs} read rows but moved nothing"
        );
        last = reached;
        last_pairs = pairs;
        assert!(runs < 20, "the runs never caught up");
    }
    assert!(runs >= 3, "max_changes bounded each run ({runs} runs)");
    w.assert_staging_is_source("catching up in capped runs")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_row_metadata_less_than_full_is_refused_by_name() {
    let w = world("mycdc_metadata", "").await;
    w.write(&rows_sql(1, 5, 'a', |_| 100)).await;
    w.run().await;
    w.write("UPDATE shop.docs SET note = 'read' WHERE id = 1")
        .await;
    w.run().await;
    w.assert_staging_is_source("a change with FULL metadata")
        .await;

    // MINIMAL leaves the column names out of the table map: the log's rows cannot be matched
    // to the table's columns by name.
    w.write("SET GLOBAL binlog_row_metadata = 'MINIMAL'").await;
    w.write("UPDATE shop.docs SET note = 'unnamed' WHERE id = 2")
        .await;
    let before = w.staging_rows().await;
    let watermark = w.watermark().await;
    let message = w.refused(w.table()).await;
    assert!(message.contains("binlog_row_metadata"), "{message}");
    assert_eq!(
        w.staging_rows().await,
        before,
        "a failed run changes nothing"
    );
    assert_eq!(w.watermark().await, watermark, "nor the watermark");
    // Refused again: a failed run does not skip what it could not read.
    let message = w.refused(w.table()).await;
    assert!(message.contains("binlog_row_metadata"), "{message}");
    assert_eq!(w.staging_rows().await, before);

    // FULL again, and a new snapshot: the table as it is, and changes after it.
    w.write("SET GLOBAL binlog_row_metadata = 'FULL'").await;
    w.full_reload().await;
    w.assert_staging_is_source("a new snapshot").await;
    w.write("UPDATE shop.docs SET note = 'after' WHERE id = 3")
        .await;
    w.run().await;
    w.assert_staging_is_source("changes after the new snapshot")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binlog_purged_past_the_watermark_fails_loudly_until_a_full_reload() {
    let w = world("mycdc_purged", "").await;
    w.write(&rows_sql(1, 3, 'a', |_| 100)).await;
    w.run().await;
    w.write("INSERT INTO shop.docs VALUES (4, 'read', 4, 'b')")
        .await;
    let read = w.run().await;
    assert!(read.plan.as_ref().unwrap().reads_changes());
    w.assert_staging_is_source("a change run").await;

    let watermark = w.watermark().await;
    let watermark_file = watermark >> 32;
    let logs = w.binary_logs().await;
    assert!(
        logs.iter().any(|f| file_number(f) == watermark_file),
        "the watermark {watermark:#x} names binary log file number {watermark_file}, which the server does not list: {logs:?}"
    );
    // Written after the watermark, then its file purged: lost to the log.
    w.write("INSERT INTO shop.docs VALUES (5, 'lost?', 5, 'b')")
        .await;
    w.write("FLUSH BINARY LOGS").await;
    let newest = w.current_file().await;
    assert!(file_number(&newest) > watermark_file);
    // PURGE leaves a file alone, without a word, until the binlog checkpoint FLUSH starts is
    // written: retried, bounded.
    let mut purged = false;
    let mut last_error = None;
    for _ in 0..100 {
        let purge = w
            .admin
            .lock()
            .await
            .query_drop(format!("PURGE BINARY LOGS TO '{newest}'"))
            .await;
        if let Err(e) = purge {
            last_error = Some(e.to_string());
        }
        if !w
            .binary_logs()
            .await
            .iter()
            .any(|f| file_number(f) == watermark_file)
        {
            purged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        purged,
        "file {watermark_file} not purged: {:?} (last error: {last_error:?})",
        w.binary_logs().await
    );

    let before = w.staging_rows().await;
    let message = w.refused(w.table()).await;
    assert!(
        message.contains("purged")
            && message.contains("sluice watermark reset --table shop/shop.docs --yes"),
        "{message}"
    );
    assert_eq!(w.staging_rows().await, before, "nothing was merged");
    assert_eq!(w.staged_ids().await, [1, 2, 3, 4]);
    assert_eq!(w.watermark().await, watermark, "the watermark stayed");

    // A new snapshot takes the table as it is and goes on from there.
    let reload = w.full_reload().await;
    assert_snapshot(&reload);
    w.assert_staging_is_source("a full reload after the purge")
        .await;
    assert_eq!(w.staged_ids().await, [1, 2, 3, 4, 5]);
    w.write("UPDATE shop.docs SET note = 'after the reload' WHERE id = 5; DELETE FROM shop.docs WHERE id = 1")
        .await;
    let next = w.run().await;
    assert!(next.plan.as_ref().unwrap().reads_changes());
    w.assert_staging_is_source("changes after the reload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_mid_stream_evolves_and_a_retyped_one_fails_loudly() {
    let w = world("mycdc_schema", "").await;
    w.write(&rows_sql(1, 5, 'a', |g| if g == 1 { LONG } else { 100 }))
        .await;
    w.run().await;

    // Changes of the old shape, the column added, and changes of the new shape, all unread.
    w.write("UPDATE shop.docs SET note = 'before the column' WHERE id = 1")
        .await;
    w.write("ALTER TABLE shop.docs ADD COLUMN extra int").await;
    w.write("UPDATE shop.docs SET extra = 42 WHERE id = 2")
        .await;
    w.write("INSERT INTO shop.docs VALUES (6, 'new', 6, 'b', 7)")
        .await;
    w.write("UPDATE shop.docs SET note = 'after the column' WHERE id = 3")
        .await;
    let evolved = w.run().await;
    assert!(evolved.plan.as_ref().unwrap().reads_changes());
    w.assert_staging_is_source("a column added").await;
    let extras = w
        .client
        .execute(&Statement::new(
            "SELECT \"id\", \"extra\" FROM STAGING.DOCS WHERE \"extra\" IS NOT NULL ORDER BY 1",
        ))
        .await
        .unwrap();
    let extras: Vec<(i64, i64)> = extras
        .rows
        .iter()
        .map(|r| (r[0].as_i64().unwrap(), r[1].as_i64().unwrap()))
        .collect();
    assert_eq!(extras, [(2, 42), (6, 7)], "the new column's values arrived");

    // A retype with changes of the old type still unread.
    w.write("UPDATE shop.docs SET note = 'before the retype', amount = 3.33 WHERE id = 3")
        .await;
    // A new scale: old values cannot be read as the new type (a narrower precision of the
    // same scale can: values that do not fit fail the decoder, naming the column).
    w.write("ALTER TABLE shop.docs MODIFY amount decimal(12,4)")
        .await;
    w.write("UPDATE shop.docs SET note = 'after the retype', amount = 4.44 WHERE id = 4")
        .await;
    let before = w.staging_rows().await;
    let watermark = w.watermark().await;
    let message = w.refused(w.table()).await;
    assert!(
        message.contains("column 'amount'")
            && message.contains("is decimal(12,2) in the change log")
            && message.contains("retyped"),
        "{message}"
    );
    assert_eq!(
        w.staging_rows().await,
        before,
        "a failed run changes nothing"
    );
    assert_eq!(w.watermark().await, watermark);
    let message = w.refused(w.table()).await;
    assert!(
        message.contains("column 'amount'") && message.contains("retyped"),
        "refused again, not skipped: {message}"
    );
    // No new snapshot here: the retype changed the column's type in the lake's catalog too,
    // which a full reload is refused for (the catalog's own check, not the log's).
}

impl World {
    async fn marked(&self) -> Vec<i64> {
        cdc::marked(&self.client, "STAGING.DOCS").await
    }

    /// STAGING's live rows (not marked deleted) equal the source's.
    async fn assert_live_is_source(&self, step: &str) {
        let mut source = self.source_rows().await;
        source.sort();
        let staged = cdc::live_rows(&self.client, STAGING_ROWS).await;
        assert_eq!(staged, source, "live rows after {step}");
    }
}

/// `deletes: soft` marks what the log deletes or truncates and brings back what returns;
/// `deletes: off` keeps deleted rows. Live STAGING rows equal the source after every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deletes_mark_and_revive_rows_and_off_keeps_them() {
    let w = world_with("mycdc_soft", "", "soft", None).await;
    assert_eq!(w.table().deletes.mode, sluice_core::DeleteMode::Soft);
    w.write(&rows_sql(1, 5, 'a', |g| if g == 3 { LONG } else { 3000 }))
        .await;
    w.run().await;
    w.write("DELETE FROM shop.docs WHERE id = 2").await;
    w.write("UPDATE shop.docs SET note = 'kept body' WHERE id = 3")
        .await;
    w.run().await;
    w.assert_live_is_source("a soft delete").await;
    assert_eq!(w.marked().await, [2]);
    assert_eq!(
        w.staged_ids().await,
        [1, 2, 3, 4, 5],
        "the deleted row is kept"
    );
    w.write("INSERT INTO shop.docs VALUES (2, 'back', 2, 'b')")
        .await;
    w.run().await;
    w.assert_live_is_source("a row back").await;
    assert!(w.marked().await.is_empty());
    // Unqualified, on a connection whose database is shop: the event names the database.
    w.write("TRUNCATE TABLE docs").await;
    w.write("INSERT INTO shop.docs VALUES (9, 'after', 9, 'b')")
        .await;
    w.run().await;
    w.assert_live_is_source("a truncate, soft").await;
    assert_eq!(w.marked().await, [1, 2, 3, 4, 5]);

    // Off: the log's deletes leave STAGING alone.
    let mut off = w.table().clone();
    off.deletes.mode = sluice_core::DeleteMode::Off;
    w.write("DELETE FROM shop.docs WHERE id = 9").await;
    w.run_table(&off).await;
    let result = w
        .client
        .execute(&Statement::new(
            "SELECT COUNT(*) FROM STAGING.DOCS WHERE \"id\" = 9",
        ))
        .await
        .unwrap();
    assert_eq!(
        result.rows[0][0].as_i64(),
        Some(1),
        "deletes: off keeps the row"
    );
}

/// One row's key, mediumint and enum as text, in the source and in STAGING.
const SOURCE_KINDS: &str =
    "SELECT CONCAT(id, '|', COALESCE(m, '~'), '|', COALESCE(e, '~')) FROM shop.docs ORDER BY id";
const STAGING_KINDS: &str = "SELECT TO_VARCHAR(\"id\") || '|' || COALESCE(TO_VARCHAR(\"m\"), '~') || '|' || COALESCE(\"e\", '~') FROM STAGING.DOCS";

impl World {
    /// STAGING equals the source, in the main columns and in `m` and `e`.
    async fn assert_kinds_are_source(&self, step: &str) {
        self.assert_staging_is_source(step).await;
        let mut source: Vec<String> = self
            .admin
            .lock()
            .await
            .query::<String, _>(SOURCE_KINDS)
            .await
            .unwrap();
        source.sort();
        assert_eq!(
            cdc::text_rows(&self.client, STAGING_KINDS).await,
            source,
            "mediumint and enum after {step}"
        );
    }
}

/// What the binary log holds besides a plain row, each read exactly or refused by name (each
/// seen read wrong, or silently skipped, before the reader handled it): a server restart (the
/// old file ends with a STOP event and the new one is reached by an artificial rotate), a
/// negative MEDIUMINT (mysql_common does not extend its sign), an ENUM retyped to VARCHAR with
/// changes of the ENUM still unread (converted by the logged type, not today's), compressed
/// events, a statement-logged UPDATE (a session with binlog_format STATEMENT), an XA
/// transaction, and a system-versioned table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_negative_mediumints_retyped_enums_and_what_the_log_hides_are_exact_or_refused() {
    let mut w = world("mycdc_traps", "").await;
    w.write(
        "ALTER TABLE shop.docs ADD COLUMN m mediumint, ADD COLUMN e enum('on','off');
         INSERT INTO shop.docs VALUES (1, 'a', 1, 'x', -1, 'on'), (2, 'b', 2, 'x', -8388608, 'on'),
             (3, 'c', 3, 'x', 8388607, 'on')",
    )
    .await;
    w.run().await;
    w.assert_kinds_are_source("the snapshot").await;

    w.write("UPDATE shop.docs SET m = -2 WHERE id = 1; INSERT INTO shop.docs VALUES (4, 'd', 4, 'x', -100, 'off')")
        .await;
    let before = w.current_file().await;
    w.my.restart();
    *w.admin.lock().await = root(w.my.port).await;
    assert_ne!(
        w.current_file().await,
        before,
        "a restart opens a new binlog file"
    );
    w.write("INSERT INTO shop.docs VALUES (5, 'e', 5, 'x', -7, 'off'); UPDATE shop.docs SET e = 'off' WHERE id = 2")
        .await;
    let across = w.run().await;
    assert_eq!(across.rows(), 4, "both files' changes");
    w.assert_kinds_are_source("a server restart between changes")
        .await;

    // Changes of the enum, then the column retyped before they are read.
    w.write("UPDATE shop.docs SET e = 'off' WHERE id = 3").await;
    w.write("ALTER TABLE shop.docs MODIFY e varchar(10)").await;
    w.write("UPDATE shop.docs SET e = 'maybe' WHERE id = 1")
        .await;
    w.run().await;
    w.assert_kinds_are_source("an enum retyped to varchar")
        .await;

    // Compressed events cannot be decoded: refused at plan time, before anything is read.
    w.write("SET GLOBAL log_bin_compress = ON").await;
    let message = w.refused(w.table()).await;
    assert!(
        message.contains("log_bin_compress is ON, must be OFF"),
        "{message}"
    );
    w.write("SET GLOBAL log_bin_compress = OFF").await;

    // A statement-logged change of the table: the log has no rows for it.
    let staged = w.staging_rows().await;
    w.write("SET SESSION binlog_format = 'STATEMENT'; UPDATE shop.docs SET note = 'by statement' WHERE id = 4; SET SESSION binlog_format = 'ROW'")
        .await;
    let message = w.refused(w.table()).await;
    assert!(
        message.contains("a statement logged as text changes the table")
            && message.contains("by statement"),
        "{message}"
    );
    assert_eq!(w.staging_rows().await, staged, "nothing merged");
    w.full_reload().await;
    w.assert_kinds_are_source("a new snapshot after the statement")
        .await;

    // An XA transaction, anywhere in the log (here on another table).
    w.write("XA START 'x1'; INSERT INTO shop.audit (what) VALUES ('xa'); XA END 'x1'; XA PREPARE 'x1'; XA COMMIT 'x1'")
        .await;
    let message = w.refused(w.table()).await;
    assert!(message.contains("XA transaction"), "{message}");
    w.full_reload().await;
    w.write("UPDATE shop.docs SET note = 'after xa' WHERE id = 5")
        .await;
    w.run().await;
    w.assert_kinds_are_source("a new snapshot past the XA transaction")
        .await;

    // A system-versioned table logs history rows as inserts: refused by name.
    w.write(
        "CREATE TABLE shop.hist (id bigint PRIMARY KEY, v int) WITH SYSTEM VERSIONING;
         GRANT SELECT ON shop.hist TO 'sluice_cdc'@'127.0.0.1'",
    )
    .await;
    let mut hist = w.table().clone();
    hist.table = "shop.hist".into();
    let message = w.refused(&hist).await;
    assert!(message.contains("system-versioned"), "{message}");
}
