//! End-to-end runs against the real local PostgreSQL: the shop sample is generated, sluice
//! extracts it to Parquet, and every value read back is compared with the source.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use sluice::Quiet;
use sluice::sample::create_shop_postgres;
use sluice_core::{RunStatus, ScalarValue};
use sluice_tests::*;

const SHOP_TABLES: &str = r#"
  - source: shop
    table: public.customers
    primary_key: [customer_id]
    load: { mode: incremental, cursor: updated_at, lookback: 10m }
  - source: shop
    table: public.products
    primary_key: [product_id]
  - source: shop
    table: public.orders
    primary_key: [order_id]
    load: { mode: incremental, cursor: updated_at, lookback: 15m }
    partition: { column: order_id, chunks: 4, max_concurrency: 3 }
    batch_rows: 1000
  - source: shop
    table: public.order_items
    primary_key: [order_id, line_no]
    load: { mode: full }
    partition: { column: updated_at, chunks: 3 }
    where: "quantity > 1"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_tables_land_in_parquet_exactly_as_in_postgres() {
    let db = TestDb::create("shop").await;
    let client = db.client().await;
    let counts = create_shop_postgres(&client, "public", 2).await.unwrap();
    assert_eq!(counts.orders, 10_000);
    let h = Harness::new(&shop_config(&db, SHOP_TABLES));

    for (selector, filter) in [
        ("public.customers", None),
        ("public.products", None),
        ("public.orders", None),
        ("public.order_items", Some("quantity > 1")),
    ] {
        let record = h
            .pipeline
            .run_table(h.table(selector), &Quiet)
            .await
            .unwrap();
        assert_eq!(
            record.status,
            RunStatus::Completed,
            "{selector}: {:?}",
            record.error
        );
        let batches = h.read_run(&record);
        assert_same_as_source(&client, selector, filter, &batches).await;

        // The manifest accounts for every file and row, and every file is in the run's
        // date/hour partition with the run id in its name.
        let manifest = h.manifest(&record);
        assert_eq!(manifest.rows, record.rows());
        assert_eq!(
            manifest.files.iter().map(|f| f.rows).sum::<u64>(),
            record.rows()
        );
        let hour_dir = record.created_at.format("%Y-%m-%d/%H").to_string();
        for file in &manifest.files {
            assert!(
                file.key.starts_with(&format!(
                    "postgres/shop/{selector}/{hour_dir}/part-{}-",
                    record.run_id
                )),
                "{}",
                file.key
            );
            let on_disk = std::fs::metadata(h.out_dir().join(&file.key))
                .unwrap()
                .len();
            assert_eq!(on_disk, file.bytes, "{}", file.key);
        }
        // Metadata columns carry the run id.
        for batch in &batches {
            let ids = batch.column_by_name("_sluice_run_id").unwrap();
            let ids = arrow::array::AsArray::as_string::<i32>(ids);
            assert!(
                ids.iter()
                    .all(|v| v == Some(record.run_id.to_string().as_str()))
            );
        }
    }

    // Chunked tables really were split, and chunks never overlap.
    let orders = h
        .pipeline
        .state()
        .list_runs(Some("shop/public.orders"), 1)
        .await
        .unwrap();
    assert_eq!(orders[0].chunks.len(), 4);
    let batches = h.read_run(&orders[0]);
    let ids = int64_values(&batches, "order_id");
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "no order extracted twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_run_reads_changed_rows_plus_lookback_and_advances_the_watermark() {
    let db = TestDb::create("incr").await;
    let client = db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    let h = Harness::new(&shop_config(&db, SHOP_TABLES));
    let orders = h.table("public.orders");

    let first = h.pipeline.run_table(orders, &Quiet).await.unwrap();
    assert_eq!(first.status, RunStatus::Completed, "{:?}", first.error);
    assert_eq!(first.rows(), 5_000);
    let max_before: chrono::NaiveDateTime = client
        .query_one("SELECT max(updated_at) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        first.watermark_committed,
        Some(ScalarValue::Timestamp(max_before))
    );

    // Change 25 scattered orders; their cursor moves past the watermark.
    client
        .batch_execute(
            "UPDATE orders SET status = 'refunded', total = total + 0.01, \
                 updated_at = (SELECT max(updated_at) FROM orders) + (order_id * interval '1 microsecond') \
             WHERE order_id % 200 = 7",
        )
        .await
        .unwrap();
    let changed: BTreeSet<i64> = client
        .query("SELECT order_id FROM orders WHERE status = 'refunded'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(changed.len(), 25);
    // Expected: every row whose cursor is past (watermark - 15 minutes).
    let expected: BTreeSet<i64> = client
        .query(
            "SELECT order_id FROM orders WHERE updated_at > $1::timestamp - interval '15 minutes'",
            &[&max_before],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(expected.is_superset(&changed));
    assert!(
        expected.len() > changed.len(),
        "the lookback overlap re-reads some unchanged rows"
    );

    let second = h.pipeline.run_table(orders, &Quiet).await.unwrap();
    assert_eq!(second.status, RunStatus::Completed, "{:?}", second.error);
    let batches = h.read_run(&second);
    let got: Vec<i64> = int64_values(&batches, "order_id");
    assert_eq!(got.len(), expected.len(), "no row extracted twice");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected);
    assert_same_as_source(
        &client,
        "public.orders",
        Some(&format!(
            "updated_at > timestamp '{max_before}' - interval '15 minutes'"
        )),
        &batches,
    )
    .await;
    let max_after: chrono::NaiveDateTime = client
        .query_one("SELECT max(updated_at) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert!(max_after > max_before);
    let state = h
        .pipeline
        .state()
        .table_state("shop/public.orders")
        .await
        .unwrap();
    assert_eq!(state.watermark, Some(ScalarValue::Timestamp(max_after)));
    assert_eq!(state.lease, None, "the lease is released");

    // Nothing changed since: the third run reads only the lookback overlap, and the
    // watermark stays put.
    let third = h.pipeline.run_table(orders, &Quiet).await.unwrap();
    assert_eq!(third.status, RunStatus::Completed);
    let overlap: i64 = client
        .query_one(
            "SELECT count(*) FROM orders WHERE updated_at > $1::timestamp - interval '15 minutes'",
            &[&max_after],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(third.rows() as i64, overlap);
    assert_eq!(
        third.watermark_committed,
        Some(ScalarValue::Timestamp(max_after))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_half_way_is_recorded_failed_and_leaves_the_watermark() {
    let db = TestDb::create("fail").await;
    let client = db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    let h = Harness::new(&shop_config(&db, SHOP_TABLES));
    let customers = h.table("public.customers");

    let first = h.pipeline.run_table(customers, &Quiet).await.unwrap();
    assert_eq!(first.status, RunStatus::Completed);
    let watermark = h
        .pipeline
        .state()
        .table_state("shop/public.customers")
        .await
        .unwrap()
        .watermark;
    assert!(watermark.is_some());

    // Plan, then lose the table before extraction.
    let planned = h.pipeline.plan_run(customers).await.unwrap();
    // As across Lambda invocations: the planning snapshot is gone before extraction.
    drop(planned.snapshot);
    let planned = planned.record;
    assert_eq!(planned.status, RunStatus::Planned);
    client.batch_execute("DROP TABLE customers").await.unwrap();
    let failed = h
        .pipeline
        .execute_run(planned.run_id, &Quiet)
        .await
        .unwrap();

    assert_eq!(failed.status, RunStatus::Failed);
    let error = failed.error.clone().unwrap();
    assert_eq!(error.phase, RunStatus::Extracting);
    assert_eq!(error.chunk, Some(0));
    assert!(
        error.message.contains("public.customers does not exist"),
        "{}",
        error.message
    );
    assert!(failed.manifest_key.is_none());
    let state = h
        .pipeline
        .state()
        .table_state("shop/public.customers")
        .await
        .unwrap();
    assert_eq!(
        state.watermark, watermark,
        "a failed run does not move the watermark"
    );
    assert_eq!(state.lease, None, "a failed run releases the lease");
    // No data file of the failed run exists anywhere.
    let failed_id = failed.run_id.to_string();
    let leftovers: Vec<_> = files_under(&h.out_dir())
        .into_iter()
        .filter(|p| p.contains(&failed_id) && !p.contains("/_runs/"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The stored record tells the same story.
    let stored = h
        .pipeline
        .state()
        .get_run(failed.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tables_columns_and_unusable_cursors_fail_with_clear_errors() {
    let db = TestDb::create("bad").await;
    let client = db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    client
        .batch_execute("CREATE TABLE odd (id int PRIMARY KEY, doc xml, price numeric, note text)")
        .await
        .unwrap();
    let tables = r#"
  - source: shop
    table: public.nope
  - source: shop
    table: public.orders
    columns: [order_id, no_such_column]
  - source: shop
    table: public.products
    primary_key: [product_id]
    load: { mode: incremental, cursor: missing_cursor }
  - source: shop
    table: public.customers
    primary_key: [customer_id]
    load: { mode: incremental, cursor: email }
  - source: shop
    table: public.odd
    column_types: { note: "decimal(10,2)" }
  - source: shop
    table: public.order_items
    partition: { column: no_such_key, chunks: 2 }
"#;
    let h = Harness::new(&shop_config(&db, tables));
    let cases = [
        ("public.nope", "table public.nope does not exist"),
        (
            "public.orders",
            "columns 'no_such_column' is not a column of the table",
        ),
        (
            "public.products",
            "load.cursor 'missing_cursor' is not a column of the table",
        ),
        (
            "public.customers",
            "load.cursor 'email' has type text; it must be an integer, date, timestamp or timestamptz column",
        ),
        (
            "public.odd",
            "column 'note' has type text: column_types: decimal(p,s) applies to numeric columns, not text; use string",
        ),
        (
            "public.order_items",
            "partition.column 'no_such_key' is not a column",
        ),
    ];
    for (selector, expected) in cases {
        let table = h.table(selector);
        let record = h.pipeline.run_table(table, &Quiet).await.unwrap();
        assert_eq!(record.status, RunStatus::Failed, "{selector}");
        let error = record.error.unwrap();
        assert_eq!(error.phase, RunStatus::Planned, "{selector}");
        assert!(
            error.message.contains(expected),
            "{selector}: {}",
            error.message
        );
        let state = h.pipeline.state().table_state(&table.key()).await.unwrap();
        assert_eq!(state.watermark, None);
        assert_eq!(state.lease, None);
    }
    // Nothing but each failed run's story.
    let written: Vec<String> = files_under(&h.out_dir());
    assert!(
        written.iter().all(|p| p.contains("/_runs/")),
        "failed plans write nothing else: {written:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_of_a_running_table_is_refused_with_the_running_id() {
    let db = TestDb::create("lease").await;
    let client = db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    let h = Harness::new(&shop_config(&db, SHOP_TABLES));
    let products = h.table("public.products");
    let running = h.pipeline.plan_run(products).await.unwrap().record;
    let err = h.pipeline.run_table(products, &Quiet).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "table shop/public.products is already running: {}",
            running.run_id
        )
    );
    let done = h
        .pipeline
        .execute_run(running.run_id, &Quiet)
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Completed);
    let again = h.pipeline.run_table(products, &Quiet).await.unwrap();
    assert_eq!(again.status, RunStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_rows_follow_the_rows_in_the_incremental_window() {
    let db = TestDb::create("chunks").await;
    let client = db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    let tables = r#"
  - source: shop
    table: public.orders
    primary_key: [order_id]
    load: { mode: incremental, cursor: updated_at, lookback: 30m }
    partition: { column: order_id, chunk_rows: 1000 }
"#;
    let h = Harness::new(&shop_config(&db, tables));
    let orders = h.table("public.orders");
    let first = h.pipeline.run_table(orders, &Quiet).await.unwrap();
    assert_eq!(first.status, RunStatus::Completed, "{:?}", first.error);
    // 5,000 rows at 1,000 per chunk.
    assert_eq!(first.plan.as_ref().unwrap().chunks.len(), 5);
    assert_eq!(first.rows(), 5_000);
    let second = h.pipeline.run_table(orders, &Quiet).await.unwrap();
    // Only the 30-minute overlap (~27 rows) is in the window: one chunk, not five.
    let overlap = second.rows();
    assert!(overlap > 0 && overlap < 1_000, "{overlap}");
    assert_eq!(second.plan.as_ref().unwrap().chunks.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_stream_fails_the_run_and_leaves_no_file() {
    let db = TestDb::create("kill").await;
    let client = db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    // pg_sleep in the filter slows the scan to ~2 ms a row, so the COPY is still streaming
    // when it is killed.
    let tables = r#"
  - source: shop
    table: public.order_items
    where: "pg_sleep(0.002) IS NOT NULL"
    batch_rows: 10
"#;
    let h = Arc::new(Harness::new(&shop_config(&db, tables)));
    let runner = {
        let h = h.clone();
        tokio::spawn(async move { h.pipeline.run_table(h.table("order_items"), &Quiet).await })
    };
    let mut killed = false;
    for _ in 0..500 {
        let n: i64 = client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name = 'sluice' \
                   AND query LIKE 'COPY%' AND state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            killed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(killed, "the COPY never showed up in pg_stat_activity");
    let record = runner.await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    let error = record.error.clone().unwrap();
    assert_eq!(error.phase, RunStatus::Extracting);
    assert!(
        error
            .message
            .contains("terminating connection due to administrator command"),
        "{}",
        error.message
    );
    let run_id = record.run_id.to_string();
    let leftovers: Vec<_> = files_under(&h.out_dir())
        .into_iter()
        .filter(|p| p.contains(&run_id) && !p.contains("/_runs/"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let state = h
        .pipeline
        .state()
        .table_state("shop/public.order_items")
        .await
        .unwrap();
    assert_eq!(state.lease, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_tables_views_and_keyless_tables_extract_like_tables() {
    let db = TestDb::create("parts").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE events (id bigint, at timestamptz NOT NULL, kind text, amount numeric(10,0))
               PARTITION BY RANGE (at);
             CREATE TABLE events_2023 PARTITION OF events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
             CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
             INSERT INTO events SELECT i, timestamptz '2023-06-01 00:00:00+00' + i * interval '1 hour',
                                       'k' || (i % 7), i * 3 FROM generate_series(1, 8000) i;
             CREATE VIEW big_events AS SELECT * FROM events WHERE amount > 12000;",
        )
        .await
        .unwrap();
    let tables = r#"
  - source: shop
    table: public.events
    partition: { column: at, chunks: 3 }
  - source: shop
    table: public.big_events
    load: { mode: incremental, cursor: id }
    partition: { column: amount, chunks: 2 }
"#;
    let h = Harness::new(&shop_config(&db, tables));
    let events = h
        .pipeline
        .run_table(h.table("events"), &Quiet)
        .await
        .unwrap();
    assert_eq!(events.status, RunStatus::Completed, "{:?}", events.error);
    assert_same_as_source(&client, "public.events", None, &h.read_run(&events)).await;

    let big = h
        .pipeline
        .run_table(h.table("big_events"), &Quiet)
        .await
        .unwrap();
    assert_eq!(big.status, RunStatus::Completed, "{:?}", big.error);
    assert_same_as_source(&client, "public.big_events", None, &h.read_run(&big)).await;
    // A numeric(10,0) partition column chunks like an integer; the keyless incremental
    // table runs, with a warning in its record.
    assert_eq!(
        big.plan.as_ref().unwrap().chunks.len(),
        3,
        "two ranges and the NULL chunk"
    );
    assert!(
        big.warnings()
            .keys()
            .any(|k| k.contains("without primary_key")),
        "{:?}",
        big.warnings()
    );
}

/// A finalize that died after moving the run to LOADING or MERGING (the function was killed,
/// its event is delivered again) resumes: the run completes, the watermark moves once to the
/// source's maximum, the lease is free again, and a further duplicate changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_finalize_resumes_from_loading_or_merging() {
    let db = shop_db("resume").await;
    let client = db.client().await;
    let h = Harness::new(&shop_config(&db, SHOP_TABLES));
    let max_cursor: chrono::NaiveDateTime = client
        .query_one("SELECT max(updated_at) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    for interrupted in [RunStatus::Loading, RunStatus::Merging] {
        let planned = h.pipeline.plan_run(h.table("public.orders")).await.unwrap();
        let run_id = planned.record.run_id;
        let chunks = planned.record.plan.as_ref().unwrap().chunks.len() as u32;
        for chunk in 0..chunks {
            h.pipeline
                .extract_chunk(run_id, chunk, &Quiet)
                .await
                .unwrap();
        }
        drop(planned.snapshot);
        h.pipeline
            .state()
            .update_run(
                run_id,
                Box::new(move |r| {
                    r.transition(RunStatus::Loading, chrono::Utc::now())?;
                    if interrupted == RunStatus::Merging {
                        r.transition(RunStatus::Merging, chrono::Utc::now())?;
                    }
                    Ok(())
                }),
            )
            .await
            .unwrap();

        let done = h.pipeline.finalize_run(run_id).await.unwrap();
        assert_eq!(done.status, RunStatus::Completed, "from {interrupted}");
        assert!(done.manifest_key.is_some());
        let state = h
            .pipeline
            .state()
            .table_state(&h.table("public.orders").key())
            .await
            .unwrap();
        assert_eq!(state.watermark, Some(ScalarValue::Timestamp(max_cursor)));
        assert_eq!(state.watermark_run_id, Some(run_id));
        assert!(state.lease.is_none(), "the lease was released");
        let again = h.pipeline.finalize_run(run_id).await.unwrap();
        assert_eq!(
            again.updated_at, done.updated_at,
            "a duplicate changes nothing"
        );
    }
}

/// A run already FAILED whose lease was never given back (the call that failed it died, or its
/// lease release failed and Lambda retried): failing it again keeps its first error and gives
/// the lease back, so the table is not locked until the lease TTL.
#[tokio::test]
async fn failing_an_already_failed_run_gives_its_lease_back() {
    let db = shop_db("failagain").await;
    let h = Harness::new(&shop_config(&db, SHOP_TABLES));
    let key = h.config.tables[0].key();
    let now = chrono::Utc::now();
    let record = h
        .pipeline
        .open_run(
            &key,
            sluice_core::run::RunKind::Load,
            now,
            now + chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    let state = h.pipeline.state();
    state
        .update_run(
            record.run_id,
            Box::new(|r| {
                r.fail("the first failure".into(), None, chrono::Utc::now());
                Ok(())
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        state
            .table_state(&key)
            .await
            .unwrap()
            .lease
            .map(|l| l.run_id),
        Some(record.run_id)
    );
    let again = h
        .pipeline
        .fail_run(record.run_id, "a retry's failure".into(), None)
        .await
        .unwrap();
    assert_eq!(again.status, RunStatus::Failed);
    assert_eq!(again.error.unwrap().message, "the first failure");
    assert_eq!(state.table_state(&key).await.unwrap().lease, None);
}

/// A run whose holder died mid-extraction (its lease lapsed), with chunk 0 done and its files
/// written: the crash a run leaves behind.
async fn a_dead_run(h: &Harness) -> (sluice_core::RunId, Vec<std::path::PathBuf>) {
    let table = h.table("public.orders");
    let key = table.key();
    let planned = h.pipeline.plan_run(table).await.unwrap();
    let crashed = planned.record.run_id;
    drop(planned.snapshot);
    let report = h.pipeline.extract_chunk(crashed, 0, &Quiet).await.unwrap();
    let files: Vec<std::path::PathBuf> = report
        .outcome
        .files
        .iter()
        .map(|f| h.out_dir().join(&f.key))
        .collect();
    assert!(!files.is_empty() && files.iter().all(|p| p.exists()));
    // The holder dies: its lease lapses (put back as expired an hour ago).
    let state = h.pipeline.state();
    state.release_lease(&key, crashed).await.unwrap();
    let past = chrono::Utc::now() - chrono::Duration::hours(2);
    state
        .acquire_lease(&key, crashed, past, past + chrono::Duration::hours(1))
        .await
        .unwrap();
    (crashed, files)
}

/// The source's order ids, for "the rows are the source's, once".
async fn order_ids(db: &sluice_tests::TestDb) -> BTreeSet<i64> {
    db.client()
        .await
        .query("SELECT order_id FROM public.orders", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The next run takes a lapsed run over and resumes it under its id: chunk 0, done before the
/// crash, is kept as it was, the rest extracted, and the partition holds exactly the run's
/// manifest files, with the source's rows once.
#[tokio::test]
async fn a_lapsed_run_is_resumed_keeping_its_done_chunks() {
    let db = shop_db("takeover").await;
    let h = Harness::new(&shop_config(&db, SHOP_TABLES));
    let (crashed, done_files) = a_dead_run(&h).await;
    let before = h.pipeline.state().get_run(crashed).await.unwrap().unwrap();

    let run = h.run_completed("public.orders").await;
    assert_eq!(run.run_id, crashed, "the dead run, resumed");
    assert_eq!(run.resumptions.len(), 1);
    assert!(
        run.resumptions[0].reason.contains("lapsed"),
        "{:?}",
        run.resumptions
    );
    assert_eq!(run.chunks[&0], before.chunks[&0], "the done chunk was kept");
    assert!(done_files.iter().all(|p| p.exists()));
    let manifest = h.manifest(&run);
    let mut listed: Vec<String> = manifest.files.iter().map(|f| f.key.clone()).collect();
    listed.sort();
    let present = data_files_under(&h.out_dir());
    assert_eq!(
        present, listed,
        "the partition holds exactly the manifest's files"
    );
    let ids = order_ids(&db).await;
    assert_eq!(run.rows(), ids.len() as u64);
    let read: BTreeSet<i64> = sluice_tests::int64_values(&h.read_run(&run), "order_id")
        .into_iter()
        .collect();
    assert_eq!(read, ids);
}

/// A lapsed run whose table's configuration changed since it was planned is not resumed:
/// it is FAILED with the reason, counted, its files are gone from where Glue and Athena read,
/// and a new run reads the table, so the partition holds only the new run's rows.
#[tokio::test]
async fn a_lapsed_run_planned_under_another_config_is_failed_and_leaves_no_files() {
    let db = shop_db("takeover_changed").await;
    let h = Harness::new(&shop_config(&db, SHOP_TABLES));
    let (crashed, dead_files) = a_dead_run(&h).await;
    let mut changed = h.table("public.orders").clone();
    changed.batch_rows = Some(777);

    let next = h.pipeline.run_table(&changed, &Quiet).await.unwrap();
    assert_eq!(next.status, RunStatus::Completed, "{:?}", next.error);
    assert_ne!(next.run_id, crashed);
    let dead = h.pipeline.state().get_run(crashed).await.unwrap().unwrap();
    assert_eq!(dead.status, RunStatus::Failed);
    let message = dead.error.unwrap().message;
    assert!(
        message.contains("lapsed"),
        "the takeover says why: {message}"
    );
    assert!(message.contains("configuration changed"), "{message}");
    for file in &dead_files {
        assert!(
            !file.exists(),
            "{} of the dead run is still there",
            file.display()
        );
    }
    assert_eq!(next.rows(), order_ids(&db).await.len() as u64);
}

/// The `where` parser refuses a clause that closes sluice's own parenthesis, but a run must
/// not trust it alone: a chunk that reads more rows than its range holds (counted in the same
/// snapshot) fails the run instead of loading every row once per chunk. The config is
/// changed after validation, as a parser gap would let it through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_reads_beyond_its_range_fails_the_run_and_loads_nothing() {
    let db = TestDb::create("escape").await;
    let client = db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    let tables = r#"
  - source: shop
    table: public.orders
    primary_key: [order_id]
    load: { mode: full }
    partition: { column: order_id, chunks: 3 }
    batch_rows: 500
  - source: shop
    table: public.customers
    primary_key: [customer_id]
    load: { mode: incremental, cursor: updated_at }
"#;
    let h = Harness::new(&shop_config(&db, tables));
    let escaping = Some("1=1) or (1=1".to_owned());
    let source_orders: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);

    // Full load in three chunks: each chunk's read would escape its range.
    let mut orders = h.table("public.orders").clone();
    orders.filter = escaping.clone();
    let record = h.pipeline.run_table(&orders, &Quiet).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed, "{} rows", record.rows());
    let error = record.error.clone().unwrap();
    assert_eq!(error.phase, RunStatus::Extracting);
    assert!(
        error.message.contains("than the") && error.message.contains("its range holds"),
        "{}",
        error.message
    );
    // The bound named is the chunk's share of the source, not the whole table.
    let bound: i64 = error
        .message
        .split("than the ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(bound < source_orders, "{bound} of {source_orders}");
    let run_id = record.run_id.to_string();
    let leftovers: Vec<_> = files_under(&h.out_dir())
        .into_iter()
        .filter(|p| p.contains(&run_id) && !p.contains("/_runs/"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Incremental: the clause would escape the cursor window of the second run.
    let customers = h.table("public.customers");
    let first = h.pipeline.run_table(customers, &Quiet).await.unwrap();
    assert_eq!(first.status, RunStatus::Completed, "{:?}", first.error);
    let watermark = h
        .pipeline
        .state()
        .table_state("shop/public.customers")
        .await
        .unwrap()
        .watermark;
    client
        .batch_execute(
            "UPDATE customers SET updated_at = (SELECT max(updated_at) FROM customers) + interval '1 day' \
             WHERE customer_id = (SELECT min(customer_id) FROM customers)",
        )
        .await
        .unwrap();
    let mut customers = customers.clone();
    customers.filter = escaping;
    let second = h.pipeline.run_table(&customers, &Quiet).await.unwrap();
    assert_eq!(second.status, RunStatus::Failed, "{} rows", second.rows());
    assert!(
        second
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("than the 1 its range holds"),
        "{:?}",
        second.error
    );
    let state = h
        .pipeline
        .state()
        .table_state("shop/public.customers")
        .await
        .unwrap();
    assert_eq!(
        state.watermark, watermark,
        "a failed run keeps the watermark"
    );
    assert_eq!(state.lease, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chunk_is_counted_at_the_source_and_lost_rows_fail_the_run() {
    let db = TestDb::create("count").await;
    let client = db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    let tables = r#"
  - source: shop
    table: public.orders
    primary_key: [order_id]
    partition: { column: order_id, chunks: 3 }
    batch_rows: 500
"#;
    let config = shop_config(&db, tables);
    let h = Harness::new(&config);
    let source_rows: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    let record = h.run_completed("public.orders").await;
    assert_eq!(record.source_rows(), Some(source_rows as u64));
    assert_eq!(record.rows(), source_rows as u64);
    for outcome in record.chunks.values() {
        assert_eq!(outcome.source_rows, Some(outcome.rows));
    }

    let (lossy, record) = Harness::run_losing_a_batch(&config, "public.orders").await;
    let error = record.error.as_ref().unwrap();
    assert!(
        error.message.contains("chunk 1 read 1") && error.message.contains("the source sent"),
        "{}",
        error.message
    );
    let run_id = record.run_id.to_string();
    assert!(
        files_under(&lossy.out_dir())
            .iter()
            .all(|p| !p.contains(&run_id) || p.contains("/_runs/"))
    );
}

/// Chunk connections are opened by sluice itself (for the COPY tap) and pick their host as
/// tokio-postgres does: past a host that refuses (a primary is read-write, so `read-only`
/// finds no host and nothing runs; the check on chunk connections themselves is the next test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_connections_pick_their_host_as_the_url_asks() {
    let db = TestDb::create("hosts").await;
    let client = db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let (user, host) = authority.split_once('@').unwrap();
    let tables = "  - source: shop\n    table: public.orders\n    partition: { column: order_id, chunks: 2 }\n";
    for (attrs, completes) in [("read-write", true), ("read-only", false)] {
        // Port 1 refuses at once on loopback.
        let url =
            format!("{scheme}://{user}@127.0.0.1:1,{host}/{path}?target_session_attrs={attrs}");
        let config = format!(
            "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: {url}\ntables:\n{tables}"
        );
        let h = Harness::new(&config);
        let outcome = h.pipeline.run_table(h.table("orders"), &Quiet).await;
        if completes {
            let record = outcome.unwrap();
            assert_eq!(record.status, RunStatus::Completed, "{:?}", record.error);
            assert_same_as_source(&client, "public.orders", None, &h.read_run(&record)).await;
        } else {
            // Refused already at the plan's connection (tokio-postgres's own), or by a chunk's.
            let message = match outcome {
                Ok(record) => {
                    assert_eq!(record.status, RunStatus::Failed);
                    record.error.unwrap().message
                }
                Err(e) => e.to_string(),
            };
            assert!(
                message.contains("not read only") || message.contains("target_session_attrs"),
                "{message}"
            );
        }
    }
}

/// A host that turns read-only after the plan (here: the database's default, set between the
/// plan and its first chunk) is refused by the chunk's own connection under
/// `target_session_attrs=read-write`, as tokio-postgres's connect refuses it: the chunk fails
/// saying so rather than read from a session the URL excludes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_connection_refuses_a_session_target_session_attrs_excludes() {
    let db = TestDb::create("attrs").await;
    let client = db.client().await;
    create_shop_postgres(&client, "public", 1).await.unwrap();
    let url = format!("{}?target_session_attrs=read-write", db.url);
    let config = format!(
        "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: {url}\ntables:\n  - source: shop\n    table: public.orders\n"
    );
    let (admin_url, name) = (db.url.clone(), db.name.clone());
    let h = Harness::with_sources(&config, move |source| {
        let (admin_url, name) = (admin_url.clone(), name.clone());
        Arc::new(Meddler::new(real_source(source), 0, move || {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            Box::pin(async move {
                connect(&admin_url)
                    .await
                    .batch_execute(&format!(
                        "ALTER DATABASE \"{name}\" SET default_transaction_read_only = on"
                    ))
                    .await
                    .unwrap();
            })
        }))
    });
    let record = h
        .pipeline
        .run_table(h.table("orders"), &Quiet)
        .await
        .unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    let message = record.error.unwrap().message;
    assert!(
        message.contains("does not match target_session_attrs (transaction_read_only is on)"),
        "{message}"
    );
}
