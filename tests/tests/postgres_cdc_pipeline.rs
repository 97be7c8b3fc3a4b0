//! Log-based CDC end to end (issue 18): a `load.mode: cdc` table of a PostgreSQL server with
//! `wal_level = logical` (a private one: the shared server has no logical decoding) goes
//! through the whole pipeline (S3 in moto, the Snowflake stand-in, the generated merge) and,
//! after every run, STAGING holds exactly what the source holds, compared row by row with
//! the source itself: the snapshot overlapping concurrent writes, inserts, updates, deletes,
//! a key update, a TOASTed column an update left alone, a transaction spanning tables, a long
//! transaction committed after later ones, a truncate, runs capped at `max_changes`, a
//! replayed run, and the slot moved only after the merge. The pipeline connects as a role
//! with `REPLICATION` and `SELECT` only, never a superuser.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use sluice::Quiet;
use sluice::sink::parquet::ParquetSettings;
use sluice::source::Source;
use sluice::source::postgres::PostgresSource;
use sluice::warehouse::Statement;
use sluice::warehouse::load::Loader;
use sluice::warehouse::snowflake::SnowflakeClient;
use sluice_core::cdc::pgoutput::Lsn;
use sluice_core::{RunRecord, RunStatus, ScalarValue, TableConfig};
use sluice_tests::cdc;
use sluice_tests::private_pg::PrivatePg;
use sluice_tests::s3::S3Harness;
use sluice_tests::snowflake::StandIn;

const SETTINGS: &str = "wal_level = logical\nmax_replication_slots = 4\nmax_wal_senders = 4";

/// One row of the source, as text both sides can spell the same way: the key, the note, the
/// exact amount in cents, and the body's length and first character (bodies are long runs of
/// one character, stored out of line).
const SOURCE_ROWS: &str = "SELECT id::text || '|' || coalesce(note, '~') || '|' || coalesce((amount * 100)::bigint::text, '~') \
     || '|' || coalesce(length(body)::text || left(body, 1), '~') FROM public.docs ORDER BY 1";
const STAGING_ROWS: &str = "SELECT TO_VARCHAR(\"id\") || '|' || COALESCE(\"note\", '~') || '|' || COALESCE(TO_VARCHAR(CAST(\"amount\" * 100 AS BIGINT)), '~') \
     || '|' || COALESCE(TO_VARCHAR(LENGTH(\"body\")) || LEFT(\"body\", 1), '~') FROM STAGING.DOCS";

struct World {
    pg: PrivatePg,
    admin: tokio_postgres::Client,
    h: S3Harness,
    client: Arc<SnowflakeClient>,
    loader: Arc<Loader>,
    _standin: StandIn,
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

fn config(pg: &PrivatePg, table_extra: &str) -> String {
    format!(
        "sources:
  - name: shop
    engine: postgres
    connection:
      url: {url}
      sslmode: disable
tables:
  - source: shop
    table: public.docs
    primary_key: [id]
    load: {{mode: cdc{table_extra}}}
    deletes: {{mode: hard}}
    target: {{staging_table: STAGING.DOCS}}
",
        url = pg.url("sluice_cdc")
    )
}

async fn world(label: &str, table_extra: &str) -> World {
    let pg = PrivatePg::start_with("host all all 127.0.0.1/32 trust", SETTINGS);
    let admin = connect(&pg.url("postgres")).await;
    admin
        .batch_execute(
            "CREATE TABLE public.docs (id bigint PRIMARY KEY, note text, amount numeric(12,2), body text);
             ALTER TABLE public.docs ALTER COLUMN body SET STORAGE EXTERNAL;
             CREATE TABLE public.audit (id bigserial PRIMARY KEY, what text);
             CREATE ROLE sluice_cdc LOGIN REPLICATION;
             GRANT SELECT ON public.docs TO sluice_cdc;",
        )
        .await
        .unwrap();
    let h = S3Harness::new(&config(&pg, table_extra), ParquetSettings::default()).await;
    let sluice_tests::snowflake::Warehoused {
        h,
        client,
        loader,
        standin,
    } = sluice_tests::snowflake::warehoused(label, h).await;
    World {
        pg,
        admin,
        h,
        client,
        loader,
        _standin: standin,
    }
}

impl World {
    fn table(&self) -> &TableConfig {
        &self.h.config.tables[0]
    }

    /// `sluice cdc setup`'s work, as the table's owner.
    async fn setup(&self) -> Vec<String> {
        self.setup_table(self.table()).await
    }

    async fn setup_table(&self, table: &TableConfig) -> Vec<String> {
        let source = self.h.config.sources[0].clone();
        let mut owner = source.clone();
        owner.connection.url = Some(self.pg.url("postgres"));
        PostgresSource::from_config(&owner, None)
            .unwrap()
            .setup_cdc(table)
            .await
            .unwrap()
    }

    /// A run of `table` that fails, and its message.
    async fn refused(&self, table: &TableConfig) -> String {
        cdc::refused(&self.h, table).await
    }

    async fn run(&self) -> RunRecord {
        cdc::completed(&self.h, self.table()).await
    }

    async fn write(&self, sql: &str) {
        self.admin.batch_execute(sql).await.unwrap();
    }

    async fn source_rows(&self) -> Vec<String> {
        self.admin
            .query(SOURCE_ROWS, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    async fn staging_rows(&self) -> Vec<String> {
        cdc::text_rows(&self.client, STAGING_ROWS).await
    }

    async fn assert_staging_is_source(&self, step: &str) {
        let mut source = self.source_rows().await;
        source.sort();
        assert_eq!(self.staging_rows().await, source, "after {step}");
    }

    async fn slot_position(&self) -> u64 {
        let text: String = self
            .admin
            .query_one(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.table().cdc_slot()],
            )
            .await
            .unwrap()
            .get(0);
        text.parse::<Lsn>().unwrap().0
    }

    async fn watermark(&self) -> u64 {
        cdc::watermark(&self.h, self.table()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_follows_the_log_through_every_kind_of_change() {
    let w = world("cdc_changes", "").await;
    // Before set-up a run names what is missing.
    let refused = w.h.pipeline.run_table(w.table(), &Quiet).await.unwrap();
    assert_eq!(refused.status, RunStatus::Failed);
    let message = refused.error.unwrap().message;
    assert!(
        message.contains("replication slot 'sluice_shop_public_docs' does not exist")
            && message.contains("sluice cdc setup --table shop/public.docs"),
        "{message}"
    );
    assert_eq!(w.setup().await.len(), 2, "publication and slot created");
    assert!(w.setup().await.is_empty(), "set-up is idempotent");

    // Written after the slot was created and before the snapshot: the snapshot holds them.
    w.write(
        "INSERT INTO public.docs SELECT g, 'n' || g, g * 1.25, repeat('a', 5000) FROM generate_series(1, 50) g;
         UPDATE public.docs SET note = 'before snapshot' WHERE id = 7;
         DELETE FROM public.docs WHERE id = 8;",
    )
    .await;
    let snapshot = w.run().await;
    let plan = snapshot.plan.clone().unwrap();
    assert!(
        plan.cdc.as_ref().unwrap().snapshot,
        "the first run is a snapshot"
    );
    assert_eq!(
        snapshot.watermark_committed,
        Some(ScalarValue::Int(plan.cdc.as_ref().unwrap().from as i64)),
        "a snapshot's watermark is the slot position it started from"
    );
    w.assert_staging_is_source("the snapshot").await;

    // Every kind of change, each its own transaction unless said otherwise.
    for sql in [
        "INSERT INTO public.docs VALUES (100, 'new', 10.10, repeat('b', 6000))",
        "UPDATE public.docs SET note = 'touched', amount = 99999999.99 WHERE id = 1",
        // A TOASTed body left alone: the log leaves it out, STAGING must keep it.
        "UPDATE public.docs SET note = 'body untouched' WHERE id = 2",
        "DELETE FROM public.docs WHERE id = 3",
        // Insert then update in one run: the update leaves the body out, the run's own
        // insert holds it.
        "INSERT INTO public.docs VALUES (101, 'fresh', NULL, repeat('c', 7000))",
        "UPDATE public.docs SET note = 'fresh, then noted' WHERE id = 101",
        // Set to NULL: a NULL that was sent is a value, not 'unchanged'.
        "UPDATE public.docs SET note = NULL, body = NULL WHERE id = 4",
        "BEGIN; INSERT INTO public.audit (what) VALUES ('spanning'); UPDATE public.docs SET amount = 0 WHERE id = 5; INSERT INTO public.docs VALUES (102, 'in a txn', 1, 'short'); COMMIT",
        // Deleted and back again in one run.
        "DELETE FROM public.docs WHERE id = 6",
        "INSERT INTO public.docs VALUES (6, 'reborn', 6.66, repeat('d', 5000))",
    ] {
        w.write(sql).await;
    }
    let before = w.slot_position().await;
    let changes = w.run().await;
    assert!(changes.plan.as_ref().unwrap().reads_changes());
    assert!(
        w.slot_position().await == before,
        "the slot moves only when the next run starts, after this one merged"
    );
    w.assert_staging_is_source("inserts, updates, deletes and a TOASTed column left alone")
        .await;
    let merge = changes.merge.clone().unwrap();
    assert_eq!(merge["deleted"], 1, "{merge}");

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
    let long = connect(&w.pg.url("postgres")).await;
    long.batch_execute("BEGIN; UPDATE public.docs SET note = 'long txn' WHERE id = 9")
        .await
        .unwrap();
    w.write("UPDATE public.docs SET id = 200 WHERE id = 102")
        .await;
    w.write("UPDATE public.docs SET note = 'after the long one started' WHERE id = 11")
        .await;
    // Run while the long transaction is open: it is not committed, so not read, and the
    // next run must still find it.
    let middle = w.run().await;
    assert_eq!(middle.watermark_before, changes.watermark_committed);
    assert!(
        w.slot_position().await >= w.watermark_of(&changes),
        "the next run moved the slot up to the last merged position"
    );
    w.assert_staging_is_source("a key update and a transaction still open")
        .await;
    long.batch_execute("COMMIT").await.unwrap();
    w.run().await;
    w.assert_staging_is_source("the long transaction committed")
        .await;

    // A truncate, and rows after it.
    w.write("TRUNCATE public.docs").await;
    w.write("INSERT INTO public.docs VALUES (1, 'after truncate', 1, 'x')")
        .await;
    let truncated = w.run().await;
    w.assert_staging_is_source("a truncate").await;
    assert_eq!(truncated.merge.as_ref().unwrap()["inserted"], 1);

    // An idle table: an empty run still moves the watermark to the flushed log, so the slot
    // holds no WAL for it.
    w.write("INSERT INTO public.audit (what) VALUES ('elsewhere')")
        .await;
    let idle = w.run().await;
    assert_eq!(idle.rows(), 0);
    assert!(w.watermark().await > w.watermark_of(&truncated));
    w.assert_staging_is_source("an idle run").await;
}

impl World {
    fn watermark_of(&self, record: &RunRecord) -> u64 {
        cdc::position(record.watermark_committed.as_ref())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_capped_at_max_changes_catch_up_in_order_and_the_slot_is_never_ahead() {
    let w = world("cdc_capped", ", max_changes: 40").await;
    w.setup().await;
    w.run().await; // an empty snapshot
    // 30 transactions of 3 messages each (Begin, change, Commit) and a Relation message: a run
    // reads about 40, so this takes several runs, each ending at a whole transaction.
    for i in 0..30 {
        w.write(&format!(
            "INSERT INTO public.docs VALUES ({i}, 'v1', {i}, 'b')"
        ))
        .await;
    }
    for i in 0..30 {
        w.write(&format!(
            "UPDATE public.docs SET note = 'v2' WHERE id = {i}"
        ))
        .await;
    }
    let mut runs = 0;
    let mut last = w.watermark().await;
    loop {
        let record = w.run().await;
        runs += 1;
        let reached = w.watermark_of(&record);
        assert!(reached >= last, "the watermark never goes back");
        let upto = record.plan.as_ref().unwrap().cdc.as_ref().unwrap().upto;
        if reached == upto && record.rows() == 0 {
            break;
        }
        last = reached;
        assert!(runs < 20, "the runs never caught up");
    }
    assert!(runs >= 3, "max_changes bounded each run ({runs} runs)");
    w.assert_staging_is_source("catching up in capped runs")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_by_someone_else_fails_loudly_instead_of_skipping_changes() {
    let w = world("cdc_gap", "").await;
    w.setup().await;
    w.write("INSERT INTO public.docs VALUES (1, 'a', 1, 'b')")
        .await;
    w.run().await;
    w.write("INSERT INTO public.docs VALUES (2, 'lost?', 1, 'b')")
        .await;
    // Another reader consumes the slot's changes.
    w.admin
        .batch_execute(&format!(
            "SELECT count(*) FROM pg_logical_slot_get_binary_changes('{}', NULL, NULL, 'proto_version', '1', 'publication_names', '{}')",
            w.table().cdc_slot(),
            w.table().cdc_publication()
        ))
        .await
        .unwrap();
    let record = w.h.pipeline.run_table(w.table(), &Quiet).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    let message = record.error.unwrap().message;
    assert!(
        message.contains("past sluice's position")
            && message.contains("sluice watermark reset --table shop/public.docs --yes"),
        "{message}"
    );
    let staged = w.staging_rows().await;
    assert_eq!(
        staged.len(),
        1,
        "nothing was merged from the gap: {staged:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_added_mid_stream_evolves_and_a_retyped_one_fails_until_a_new_snapshot() {
    let w = world("cdc_schema", "").await;
    w.setup().await;
    w.write("INSERT INTO public.docs SELECT g, 'n', g, 'b' FROM generate_series(1, 5) g")
        .await;
    w.run().await;
    w.write("UPDATE public.docs SET note = 'before the column' WHERE id = 1")
        .await;
    w.write(
        "ALTER TABLE public.docs ADD COLUMN extra int; GRANT SELECT ON public.docs TO sluice_cdc",
    )
    .await;
    w.write("UPDATE public.docs SET extra = 42 WHERE id = 2")
        .await;
    w.write("INSERT INTO public.docs VALUES (6, 'new', 6, 'b', 7)")
        .await;
    w.run().await;
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

    w.write("UPDATE public.docs SET note = 'before the retype' WHERE id = 3")
        .await;
    w.write("ALTER TABLE public.docs ALTER COLUMN note TYPE varchar(40)")
        .await;
    w.write("UPDATE public.docs SET note = 'after the retype' WHERE id = 4")
        .await;
    let before = w.staging_rows().await;
    let refused = w.h.pipeline.run_table(w.table(), &Quiet).await.unwrap();
    assert_eq!(refused.status, RunStatus::Failed);
    let message = refused.error.unwrap().message;
    assert!(
        message.contains("column 'note'") && message.contains("retyped"),
        "{message}"
    );
    assert_eq!(
        w.staging_rows().await,
        before,
        "a failed run changes nothing"
    );
    // Deleted while the log cannot be read: only the new snapshot can tell STAGING.
    w.write("DELETE FROM public.docs WHERE id = 6").await;
    // A new snapshot (a full reload) takes the table as it is now and goes on from there,
    // after the transactions running when it read its position: this one commits a second
    // later, and its row is in STAGING after the snapshot and the next run.
    let open = connect(&w.pg.url("postgres")).await;
    open.batch_execute(
        "BEGIN; INSERT INTO public.docs VALUES (7, 'open during the snapshot', 7, 'b', NULL)",
    )
    .await
    .unwrap();
    let committer = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        open.batch_execute("COMMIT").await.unwrap();
    });
    cdc::full_reload(&w.h, w.table()).await;
    committer.await.unwrap();
    w.run().await;
    w.assert_staging_is_source("a new snapshot after the retype")
        .await;
    w.write("UPDATE public.docs SET note = 'later' WHERE id = 5")
        .await;
    w.run().await;
    w.assert_staging_is_source("changes after the new snapshot")
        .await;
}

/// A transaction whose commit is already in the log but not yet visible to new snapshots (here
/// held there by synchronous replication to a standby that does not exist) while a snapshot
/// is planned: neither the snapshot nor the log after the slot's position would hold it, so
/// the plan must wait for it to end before it takes the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_waits_for_a_commit_in_the_log_that_is_not_yet_visible() {
    let w = world("cdc_handoff", "").await;
    w.setup().await;
    w.write("INSERT INTO public.docs VALUES (1, 'before', 1, 'b')")
        .await;
    w.write("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        .await;
    w.write("SELECT pg_reload_conf()").await;
    // Its commit record is written and flushed, then it waits for the standby, still running.
    let committer = connect(&w.pg.url("postgres")).await;
    let held = tokio::spawn(async move {
        committer
            .batch_execute("INSERT INTO public.docs VALUES (2, 'held at commit', 2, 'b')")
            .await
            .unwrap();
    });
    // Bounded: until the commit is waiting for the standby.
    for _ in 0..100 {
        let waiting: i64 = w
            .admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The standby "answers" two seconds into the snapshot's plan.
    let admin = connect(&w.pg.url("postgres")).await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        admin
            .batch_execute("ALTER SYSTEM RESET synchronous_standby_names")
            .await
            .unwrap();
        admin
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .unwrap();
    });
    w.run().await;
    release.await.unwrap();
    held.await.unwrap();
    w.run().await;
    w.assert_staging_is_source("a commit held during the snapshot's plan")
        .await;
}

/// What the log cannot give is refused by name, before anything is read: generated columns
/// (pgoutput leaves them out), a partitioned table (logged under its partitions), a
/// publication filtering rows, and a replica identity other than the configured key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_log_cannot_give_is_refused_by_name() {
    let w = world("cdc_refused", "").await;
    w.write(
        "CREATE TABLE public.gen (id bigint PRIMARY KEY, x int, y int GENERATED ALWAYS AS (x * 2) STORED);
         CREATE TABLE public.part (id bigint PRIMARY KEY) PARTITION BY RANGE (id);
         CREATE TABLE public.part_1 PARTITION OF public.part FOR VALUES FROM (0) TO (100);
         CREATE TABLE public.filtered (id bigint PRIMARY KEY);
         CREATE TABLE public.other_key (id bigint PRIMARY KEY, code text NOT NULL UNIQUE);
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO sluice_cdc;",
    )
    .await;
    let of = |name: &str, key: &str| {
        let mut table = w.table().clone();
        table.table = format!("public.{name}");
        table.primary_key = vec![key.to_owned()];
        table.target = Default::default();
        table
    };
    let gen_table = of("gen", "id");
    w.setup_table(&gen_table).await;
    let message = w.refused(&gen_table).await;
    assert!(message.contains("column 'y' is generated"), "{message}");
    let mut without = gen_table.clone();
    without.columns = Some(vec!["id".into(), "x".into()]);
    assert_eq!(
        w.h.pipeline
            .run_table(&without, &Quiet)
            .await
            .unwrap()
            .status,
        RunStatus::Completed
    );

    let part = of("part", "id");
    w.write("CREATE PUBLICATION sluice_shop_public_part FOR TABLE public.part")
        .await;
    w.write("SELECT pg_create_logical_replication_slot('sluice_shop_public_part', 'pgoutput')")
        .await;
    let message = w.refused(&part).await;
    assert!(
        message.contains("public.part is a partitioned table"),
        "{message}"
    );

    let filtered = of("filtered", "id");
    w.write(
        "CREATE PUBLICATION sluice_shop_public_filtered FOR TABLE public.filtered WHERE (id > 10)",
    )
    .await;
    w.write("SELECT pg_create_logical_replication_slot('sluice_shop_public_filtered', 'pgoutput')")
        .await;
    let message = w.refused(&filtered).await;
    assert!(
        message.contains("publication 'sluice_shop_public_filtered' filters the rows"),
        "{message}"
    );

    let other_key = of("other_key", "code");
    w.setup_table(&other_key).await;
    w.h.pipeline.run_table(&other_key, &Quiet).await.unwrap();
    w.write("INSERT INTO public.other_key VALUES (1, 'a')")
        .await;
    let message = w.refused(&other_key).await;
    assert!(
        message.contains(
            "the log identifies rows by (id) (the replica identity), but primary_key is (code)"
        ),
        "{message}"
    );
}

impl World {
    async fn run_table(&self, table: &TableConfig) {
        cdc::completed(&self.h, table).await;
    }

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
    let w = world("cdc_soft", "").await;
    w.setup().await;
    let mut soft = w.table().clone();
    soft.deletes.mode = sluice_core::DeleteMode::Soft;
    w.write(
        "INSERT INTO public.docs SELECT g, 'n', g, repeat('a', 3000) FROM generate_series(1, 5) g",
    )
    .await;
    w.run_table(&soft).await;
    w.write("DELETE FROM public.docs WHERE id = 2").await;
    w.write("UPDATE public.docs SET note = 'kept body' WHERE id = 3")
        .await;
    w.run_table(&soft).await;
    w.assert_live_is_source("a soft delete").await;
    assert_eq!(w.marked().await, [2]);
    w.write("INSERT INTO public.docs VALUES (2, 'back', 2, 'b')")
        .await;
    w.run_table(&soft).await;
    w.assert_live_is_source("a row back").await;
    assert!(w.marked().await.is_empty());
    w.write("TRUNCATE public.docs").await;
    w.write("INSERT INTO public.docs VALUES (9, 'after', 9, 'b')")
        .await;
    w.run_table(&soft).await;
    w.assert_live_is_source("a truncate, soft").await;
    assert_eq!(w.marked().await, [1, 2, 3, 4, 5]);

    // Off: the log's deletes leave STAGING alone.
    let mut off = w.table().clone();
    off.deletes.mode = sluice_core::DeleteMode::Off;
    w.write("DELETE FROM public.docs WHERE id = 9").await;
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

/// A slot consumed by another reader after the run was planned and before its chunk reads:
/// the chunk would start past the window and the run would complete without the changes
/// between. It fails instead, and merges nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_between_plan_and_read_fails_the_run() {
    let w = world("cdc_moved", "").await;
    w.setup().await;
    w.run().await;
    w.write("INSERT INTO public.docs VALUES (1, 'in the window', 1, 'b')")
        .await;
    let planned = w.h.pipeline.plan_run(w.table()).await.unwrap();
    let run_id = planned.record.run_id;
    drop(planned);
    w.write(&format!(
        "SELECT count(*) FROM pg_logical_slot_get_binary_changes('{}', NULL, NULL, 'proto_version', '1', 'publication_names', '{}')",
        w.table().cdc_slot(),
        w.table().cdc_publication()
    ))
    .await;
    let record = w.h.pipeline.execute_run(run_id, &Quiet).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed, "{:?}", record.merge);
    let message = record.error.unwrap().message;
    assert!(
        message.contains("replication slot 'sluice_shop_public_docs' moved from"),
        "{message}"
    );
    assert!(w.staging_rows().await.is_empty(), "nothing was merged");
}
