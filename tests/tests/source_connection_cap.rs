//! `connection.max_connections`: a cap on sluice's connections to one source across every run
//! and table. Three tables of one PostgreSQL source run at once through the local pipeline,
//! each in chunks extracted two at a time, and the source's own view (`pg_stat_activity`,
//! sampled every 50 ms) never shows more of sluice's connections at work than the cap; the
//! same runs without the cap show more, so the sampler can see them. A run that finds every
//! slot held elsewhere waits, takes a slot whose holder died once it lapses, and fails with a
//! clear error when none frees in time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sluice::sink::LocalDirSink;
use sluice::source::Source;
use sluice::source::postgres::PostgresSource;
use sluice::state::local::LocalStateStore;
use sluice::state::{SlotAcquire, SlotHolder};
use sluice::{Pipeline, PipelineOptions, Quiet};
use sluice_core::{Config, RunId, RunRecord, RunStatus};
use sluice_tests::{ConnectionSampler as Sampler, Harness, TestDb, shop_db};

/// Three tables, each planned and read in chunks that take at least 0.3 s (the `where` sleeps
/// once per query), two chunks of a run at a time: up to six chunks and three plans at once
/// without a cap.
const TABLES: &str = "  - source: shop
    table: public.orders
    where: \"(SELECT true FROM pg_sleep(0.3))\"
    partition: {column: order_id, chunks: 4, max_concurrency: 2}
  - source: shop
    table: public.customers
    where: \"(SELECT true FROM pg_sleep(0.3))\"
    partition: {column: customer_id, chunks: 4, max_concurrency: 2}
  - source: shop
    table: public.products
    where: \"(SELECT true FROM pg_sleep(0.3))\"
    partition: {column: product_id, chunks: 4, max_concurrency: 2}
";

fn config_yaml(db: &TestDb, max_connections: Option<u32>, tables: &str) -> String {
    let cap = max_connections
        .map(|n| format!("      max_connections: {n}\n"))
        .unwrap_or_default();
    format!(
        "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: {}\n{cap}tables:\n{tables}",
        db.url
    )
}

/// Runs every table of the harness at once; their records, in table order.
async fn run_all_at_once(h: &Harness) -> Vec<RunRecord> {
    futures::future::join_all(
        h.config
            .tables
            .iter()
            .map(|table| h.pipeline.run_table(table, &Quiet)),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect()
}

/// Every run completed with exactly the source's rows.
async fn assert_completed_with_source_rows(db: &TestDb, h: &Harness, records: &[RunRecord]) {
    let pg = db.client().await;
    for (table, record) in h.config.tables.iter().zip(records) {
        assert_eq!(
            record.status,
            RunStatus::Completed,
            "{}: {:?}",
            table.table,
            record.error
        );
        assert_eq!(record.chunks.len(), 4, "{}", table.table);
        let rows: i64 = pg
            .query_one(&format!("SELECT count(*) FROM {}", table.table), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(record.rows(), rows as u64, "{}", table.table);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_of_one_source_never_hold_more_than_max_connections_at_once() {
    const CAP: i64 = 2;
    let db = shop_db("conncap").await;
    let h = Harness::new(&config_yaml(&db, Some(CAP as u32), TABLES));
    let sampler = Sampler::start(&db).await;
    let records = run_all_at_once(&h).await;
    let samples = sampler.stop().await;
    let max = samples.iter().copied().max().unwrap_or(0);
    eprintln!(
        "capped at {CAP}: at most {max} sluice connections at work at once ({} samples)",
        samples.len()
    );
    assert_completed_with_source_rows(&db, &h, &records).await;
    assert!(max > 0, "no sluice connection was ever seen: {samples:?}");
    assert!(
        max <= CAP,
        "{max} sluice connections at once, more than max_connections {CAP}: {samples:?}"
    );
    // Every slot was given back: both can be taken at once now.
    let state = h.pipeline.state();
    let now = Utc::now();
    for _ in 0..CAP {
        let holder = SlotHolder::plan(RunId::new());
        let answer = state
            .acquire_source_slot(
                "shop",
                CAP as u32,
                &holder,
                now,
                now + chrono::Duration::minutes(1),
            )
            .await
            .unwrap();
        assert!(matches!(answer, SlotAcquire::Taken(_)), "{answer:?}");
    }
}

/// The premise of the test above: the same runs without the cap open more connections than it
/// allows, and the sampler sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_max_connections_the_same_runs_open_more_than_two() {
    let db = shop_db("connfree").await;
    let h = Harness::new(&config_yaml(&db, None, TABLES));
    let sampler = Sampler::start(&db).await;
    let records = run_all_at_once(&h).await;
    let samples = sampler.stop().await;
    let max = samples.iter().copied().max().unwrap_or(0);
    eprintln!(
        "uncapped: at most {max} sluice connections at work at once ({} samples)",
        samples.len()
    );
    assert_completed_with_source_rows(&db, &h, &records).await;
    assert!(
        max > 2,
        "the uncapped runs never had more than 2 at once: {samples:?}"
    );
}

/// A pipeline over `yaml` whose runs wait at most `wait` for a source slot.
fn pipeline_waiting(yaml: &str, dir: &std::path::Path, wait: Duration) -> (Pipeline, Config) {
    pipeline_with(
        yaml,
        dir,
        PipelineOptions {
            source_wait: wait,
            ..PipelineOptions::default()
        },
    )
}

fn pipeline_with(
    yaml: &str,
    dir: &std::path::Path,
    options: PipelineOptions,
) -> (Pipeline, Config) {
    let config = Config::from_yaml(yaml, "test").unwrap();
    let mut sources: BTreeMap<String, Arc<dyn Source>> = BTreeMap::new();
    for source in &config.sources {
        sources.insert(
            source.name.clone(),
            Arc::new(PostgresSource::from_config(source, None).unwrap()),
        );
    }
    let pipeline = Pipeline::new(
        sources,
        Arc::new(LocalDirSink::new(dir.join("out")).unwrap()),
        Arc::new(LocalStateStore::open(dir.join("state")).unwrap()),
        options,
    )
    .with_connection_limits(&config.sources);
    (pipeline, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_waits_for_a_slot_held_elsewhere_and_fails_clearly_when_none_frees() {
    let db = shop_db("connbusy").await;
    let yaml = config_yaml(
        &db,
        Some(1),
        "  - source: shop\n    table: public.products\n    partition: {column: product_id, chunks: 2}\n",
    );
    let dir = tempfile::tempdir().unwrap();

    // Another process holds the only slot, and renews it: the run waits, then fails, having
    // opened no connection to the source.
    let (pipeline, config) = pipeline_waiting(&yaml, dir.path(), Duration::from_secs(1));
    let table = &config.tables[0];
    let elsewhere = SlotHolder::chunk(RunId::new(), 7);
    let now = Utc::now();
    let answer = pipeline
        .state()
        .acquire_source_slot("shop", 1, &elsewhere, now, now + chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(answer, SlotAcquire::Taken(0));
    let sampler = Sampler::start(&db).await;
    let record = pipeline.run_table(table, &Quiet).await.unwrap();
    let samples = sampler.stop().await;
    assert_eq!(record.status, RunStatus::Failed);
    let message = record.error.unwrap().message;
    assert!(
        message.starts_with(
            "source 'shop': all 1 connections that connection.max_connections allows stayed busy for 1s"
        ),
        "{message}"
    );
    assert!(
        message.contains(&format!("held by {elsewhere} until")),
        "{message}"
    );
    assert!(
        message.contains("raise connection.max_connections"),
        "{message}"
    );
    assert_eq!(samples.iter().copied().max().unwrap_or(0), 0, "{samples:?}");

    // A holder that died: its slot lapses after its expiry and the waiting run takes it.
    let (pipeline, config) = pipeline_waiting(&yaml, dir.path(), Duration::from_secs(30));
    let dead = SlotHolder::chunk(RunId::new(), 3);
    pipeline
        .state()
        .release_source_slot("shop", 0, &elsewhere)
        .await
        .unwrap();
    let now = Utc::now();
    let answer = pipeline
        .state()
        .acquire_source_slot("shop", 1, &dead, now, now + chrono::Duration::seconds(2))
        .await
        .unwrap();
    assert_eq!(answer, SlotAcquire::Taken(0));
    let started = std::time::Instant::now();
    let record = pipeline.run_table(&config.tables[0], &Quiet).await.unwrap();
    assert_eq!(record.status, RunStatus::Completed, "{:?}", record.error);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the run did not wait for the dead holder's slot to lapse: {:?}",
        started.elapsed()
    );
    assert_eq!(record.rows(), sluice::sample::PRODUCTS_PER_SCALE);
}

/// A slot lapses `source_slot_ttl` after its last renewal, and its holder renews it while it
/// reads: chunks far longer than the ttl keep their slots (a run waiting for the one slot
/// never reads beside them). A holder whose slot was taken over all the same stops reading
/// and fails its run, rather than stay connected beside the new holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_is_renewed_while_its_chunk_reads_and_a_chunk_whose_slot_is_taken_stops() {
    let db = shop_db("connrenew").await;
    let slow = |table: &str| {
        format!(
            "  - source: shop\n    table: {table}\n    where: \"(SELECT true FROM pg_sleep(2))\"\n"
        )
    };
    let tables = format!("{}{}", slow("public.products"), slow("public.customers"));
    let dir = tempfile::tempdir().unwrap();
    let options = PipelineOptions {
        source_slot_ttl: Duration::from_millis(600),
        ..PipelineOptions::default()
    };
    let (pipeline, config) =
        pipeline_with(&config_yaml(&db, Some(1), &tables), dir.path(), options);

    // Two runs, one slot, reads of 2 s against a ttl of 0.6 s: one at a time all the same.
    let sampler = Sampler::start(&db).await;
    let records =
        futures::future::join_all(config.tables.iter().map(|t| pipeline.run_table(t, &Quiet)))
            .await;
    let samples = sampler.stop().await;
    for record in records {
        let record = record.unwrap();
        assert_eq!(record.status, RunStatus::Completed, "{:?}", record.error);
    }
    let max = samples.iter().copied().max().unwrap_or(0);
    assert!(max > 0, "{samples:?}");
    assert!(
        max <= 1,
        "{max} connections at once under max_connections 1: {samples:?}"
    );

    // Someone takes the slot over (as if its holder had stopped renewing): the chunk stops,
    // long before its 2 s read would have ended.
    let sampler = Sampler::start(&db).await;
    let started = std::time::Instant::now();
    let run = async {
        let record = pipeline.run_table(&config.tables[0], &Quiet).await;
        (record, started.elapsed())
    };
    let take_over = async {
        // Once the chunk reads (planning has no sleep, the chunk's COPY sleeps 2 s).
        tokio::time::sleep(Duration::from_millis(800)).await;
        let later = Utc::now() + chrono::Duration::hours(1);
        let rogue = SlotHolder::plan(RunId::new());
        let answer = pipeline
            .state()
            .acquire_source_slot("shop", 1, &rogue, later, later + chrono::Duration::hours(1))
            .await
            .unwrap();
        assert_eq!(
            answer,
            SlotAcquire::Taken(0),
            "the slot looks lapsed an hour from now"
        );
    };
    let ((record, took), ()) = futures::join!(run, take_over);
    let record = record.unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    let message = record.error.unwrap().message;
    assert!(
        message.contains("lost its connection slot 0 (connection.max_connections)"),
        "{message}"
    );
    assert!(
        took < Duration::from_millis(1800),
        "the chunk went on reading after its slot was taken: {took:?}"
    );
    // Its connection is closed; the server ends the statement when it notices (here, once
    // pg_sleep returns: a backend does not read the socket while it sleeps).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let samples = sampler.stop().await;
    assert!(samples.contains(&1), "the chunk was reading: {samples:?}");
    assert_eq!(
        samples.last(),
        Some(&0),
        "its connection is gone: {samples:?}"
    );
}
