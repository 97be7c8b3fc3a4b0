//! Consistency while data changes under a running extraction: the chunks of a run read the
//! snapshot its plan was made in, and whatever changes meanwhile is picked up by the next run,
//! never lost and never doubled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sluice::sample::create_shop_postgres;
use sluice::source::postgres::PostgresSource;
use sluice::{PipelineOptions, Quiet};
use sluice_core::RunStatus;
use sluice_tests::*;

fn meddling_harness(db: &TestDb, tables: &str, before_chunk: u32, sql: &str) -> Harness {
    meddling_harness_with(db, tables, before_chunk, sql, PipelineOptions::default())
}

/// As the CLI runs tables: one process holds the plan's snapshot through every chunk, so the
/// chunks may be ranges of heap blocks.
fn local_meddling_harness(db: &TestDb, tables: &str, before_chunk: u32, sql: &str) -> Harness {
    let options = PipelineOptions {
        block_chunks: true,
        ..PipelineOptions::default()
    };
    meddling_harness_with(db, tables, before_chunk, sql, options)
}

fn meddling_harness_with(
    db: &TestDb,
    tables: &str,
    before_chunk: u32,
    sql: &str,
    options: PipelineOptions,
) -> Harness {
    let url = db.url.clone();
    let sql = sql.to_owned();
    Harness::with_sources_and_options(
        &shop_config(db, tables),
        move |source| {
            let (url, sql) = (url.clone(), sql.clone());
            Arc::new(Meddler::new(
                Arc::new(PostgresSource::from_config(source, None).unwrap()),
                before_chunk,
                move || {
                    let (url, sql) = (url.clone(), sql.clone());
                    Box::pin(async move {
                        connect(&url).await.batch_execute(&sql).await.unwrap();
                    })
                },
            ))
        },
        options,
    )
}

/// Runs `public.orders` through `h`, whose source changes the table between chunks, and checks
/// that the run read it exactly as `before` (its fingerprints when planned) while the table
/// itself did change. The completed run's record.
async fn assert_run_reads_the_table_as_planned(
    h: &Harness,
    client: &Client,
    before: &(i64, BTreeMap<String, Fingerprint>),
) -> sluice_core::RunRecord {
    let record = h
        .pipeline
        .run_table(h.table("orders"), &Quiet)
        .await
        .unwrap();
    assert_eq!(record.status, RunStatus::Completed, "{:?}", record.error);
    let after = pg_fingerprints(client, "public.orders", None).await;
    assert_ne!(before, &after, "the changes did happen");
    let (rows, fingerprints) = arrow_fingerprints(&h.read_run(&record));
    assert_eq!(rows, before.0);
    for (column, expected) in &before.1 {
        fingerprints[column].assert_matches(expected, &format!("orders.{column}"));
    }
    record
}

const CHANGES: &str = "
    DELETE FROM orders WHERE order_id > 4900;
    UPDATE orders SET total = total + 1000, updated_at = updated_at + interval '400 days'
     WHERE order_id BETWEEN 4000 AND 4100;
    INSERT INTO orders SELECT order_id + 10000, customer_id, 'new', currency, total, discount_rate,
                              ordered_at, shipped_on, item_count, updated_at + interval '500 days'
      FROM orders WHERE order_id <= 10;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chunk_of_a_run_reads_the_plans_snapshot() {
    let db = TestDb::create("snap").await;
    let client = db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    let before = pg_fingerprints(&client, "public.orders", None).await;
    // Chunks one at a time, and the changes land between chunk 0 and chunk 3, in the key
    // ranges chunks 2 and 3 are about to read.
    let h = meddling_harness(
        &db,
        "  - source: shop\n    table: public.orders\n    partition: { column: order_id, chunks: 4, max_concurrency: 1 }\n",
        2,
        CHANGES,
    );
    // The run saw the table exactly as it was when planned.
    let record = assert_run_reads_the_table_as_planned(&h, &client, &before).await;
    assert_eq!(record.chunks.len(), 4);
}

/// Every row updated between chunks: each update writes the row's new version in another
/// heap block (the table is full, so mostly past its end, in the last chunk's open range).
/// Block-range chunks read the plan's snapshot, where every row is still where it was: each
/// once, as it was. Chunks reading fresh snapshots would read the moved rows twice.
const MOVE_EVERY_ROW: &str = "
    UPDATE orders SET total = total + 1000;
    DELETE FROM orders WHERE order_id % 7 = 0;
    INSERT INTO orders SELECT order_id + 100000, customer_id, 'new', currency, total,
                              discount_rate, ordered_at, shipped_on, item_count, updated_at
      FROM orders WHERE order_id <= 500;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_chunks_read_the_plans_snapshot_while_rows_move_between_blocks() {
    let db = TestDb::create("blocks").await;
    let client = db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    let before = pg_fingerprints(&client, "public.orders", None).await;
    let tables = "  - source: shop\n    table: public.orders\n    partition: { column: order_id, chunks: 4, max_concurrency: 1 }\n";
    let h = local_meddling_harness(&db, tables, 2, MOVE_EVERY_ROW);
    let record = assert_run_reads_the_table_as_planned(&h, &client, &before).await;
    let chunks = &record.plan.as_ref().unwrap().chunks;
    assert_eq!(chunks.len(), 4);
    assert!(
        chunks
            .iter()
            .all(|c| matches!(c, sluice_core::plan::ChunkRange::Blocks { .. })),
        "--block-chunks cuts block ranges: {chunks:?}"
    );
    // Every chunk's count is the server's own count of what its COPY sent.
    assert_eq!(record.source_rows(), Some(before.0 as u64));

    // The same table as Lambda reads it (each chunk a snapshot of its own): key ranges.
    let h = meddling_harness(&db, tables, 2, "SELECT 1");
    let record = h.run_completed("orders").await;
    assert!(
        record
            .plan
            .as_ref()
            .unwrap()
            .chunks
            .iter()
            .all(|c| matches!(
                c,
                sluice_core::plan::ChunkRange::Range { .. } | sluice_core::plan::ChunkRange::Null
            )),
        "{:?}",
        record.plan
    );
}

/// A block-range chunk whose plan snapshot has ended (here its transaction is ended under
/// it; in life, the planning process died and another resumes the run) is not read in a
/// fresh snapshot, where rows may have moved between ranges: the run fails and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_chunk_without_the_plans_snapshot_fails_the_run_clearly() {
    let db = TestDb::create("blocksgone").await;
    let client = db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    let end_plan_snapshot = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'sluice' \
           AND state = 'idle in transaction' AND pid <> pg_backend_pid()";
    let tables = "  - source: shop\n    table: public.orders\n    partition: { column: order_id, chunks: 3, max_concurrency: 1 }\n";
    let h = local_meddling_harness(&db, tables, 1, end_plan_snapshot);
    let record = h
        .pipeline
        .run_table(h.table("orders"), &Quiet)
        .await
        .unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    let error = record.error.unwrap();
    assert_eq!(error.chunk, Some(1), "{}", error.message);
    assert!(
        error
            .message
            .contains("that snapshot has ended (the process that planned the run is gone): the run must be planned again"),
        "{}",
        error.message
    );
    // Key ranges carry on in a fresh snapshot, within the plan's bounds, as in Lambda.
    let h = meddling_harness(&db, tables, 1, end_plan_snapshot);
    h.run_completed("orders").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_an_incremental_run_are_in_the_next_run_never_lost_or_doubled() {
    changes_are_never_lost_or_doubled(true).await;
}

/// As in Lambda, where the planning transaction ends before the chunks run: chunks read
/// fresh snapshots bounded by the plan's cursor window, and the guarantee still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_shared_snapshot_changes_are_still_never_lost_or_doubled() {
    changes_are_never_lost_or_doubled(false).await;
}

async fn changes_are_never_lost_or_doubled(keep_snapshot: bool) {
    let db = TestDb::create("snapincr").await;
    let client = db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    let h = meddling_harness(
        &db,
        "  - source: shop\n    table: public.orders\n    primary_key: [order_id]\n    load: { mode: incremental, cursor: updated_at, lookback: 1m }\n    partition: { column: order_id, chunks: 4, max_concurrency: 1 }\n",
        2,
        CHANGES,
    );
    let orders = h.table("orders");
    let first = if keep_snapshot {
        h.pipeline.run_table(orders, &Quiet).await.unwrap()
    } else {
        let planned = h.pipeline.plan_run(orders).await.unwrap();
        drop(planned.snapshot);
        h.pipeline
            .execute_run(planned.record.run_id, &Quiet)
            .await
            .unwrap()
    };
    assert_eq!(first.status, RunStatus::Completed, "{:?}", first.error);
    let second = h.pipeline.run_table(orders, &Quiet).await.unwrap();
    assert_eq!(second.status, RunStatus::Completed, "{:?}", second.error);

    let first_versions = order_versions(&h, &first);
    let second_versions = order_versions(&h, &second);
    for (name, run) in [("first", &first_versions), ("second", &second_versions)] {
        let ids: BTreeSet<i64> = run.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), run.len(), "{name} run read a row twice");
    }
    if keep_snapshot {
        // The first run saw the plan-time table: 5,000 orders, none of the changes.
        assert_eq!(first_versions.len(), 5_000);
    }
    // New rows are past the plan's upper bound: never in the first run.
    assert!(first_versions.iter().all(|(id, _)| *id <= 5_000));
    // Merging both runs by key, keeping the latest cursor, gives exactly today's table.
    let mut merged: BTreeMap<i64, i64> = BTreeMap::new();
    for (id, stamp) in first_versions.into_iter().chain(second_versions) {
        let entry = merged.entry(id).or_insert(stamp);
        *entry = (*entry).max(stamp);
    }
    let now: BTreeMap<i64, i64> = client
        .query(
            "SELECT order_id, (extract(epoch from updated_at) * 1000000)::int8 FROM orders",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // Deleted rows stay in the raw history (a delete is not a change a cursor can see); every
    // row that exists now is there in its current version.
    for (id, stamp) in &now {
        assert_eq!(merged.get(id), Some(stamp), "order {id} lost or stale");
    }
    let extra: Vec<i64> = merged
        .keys()
        .filter(|id| !now.contains_key(id))
        .copied()
        .collect();
    assert!(
        extra.iter().all(|id| (4901..=5000).contains(id)),
        "only deleted orders are extra: {extra:?}"
    );
    if keep_snapshot {
        assert_eq!(
            extra.len(),
            100,
            "the snapshot still had every deleted order"
        );
    }
}
