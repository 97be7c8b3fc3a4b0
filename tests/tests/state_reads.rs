//! What a run costs its state store in reads grows linearly with its chunks, on the local
//! store and on DynamoDB (moto): every step reads the run's header and its own chunk, and
//! only finalize reads every chunk outcome, once. Before (read from the code: the counter is
//! new, so this test never ran against it), every step re-read the whole run with all its
//! chunk outcomes, so a run of `n` chunks read O(n²) of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice::pipeline::{Pipeline, PipelineOptions};
use sluice::sink::LocalDirSink;
use sluice::source::Source;
use sluice::source::postgres::PostgresSource;
use sluice::state::StateStore;
use sluice::state::dynamo::DynamoStateStore;
use sluice::state::local::LocalStateStore;
use sluice_core::{Config, RunStatus};
use sluice_tests::moto::{MotoServer, unique_name};

/// Runs `public.orders` split into `chunks` chunks through `state` and returns the reads it
/// cost, as `items_read` counts them.
async fn reads_of_a_run(
    db: &sluice_tests::TestDb,
    state: Arc<dyn StateStore>,
    items_read: &dyn Fn() -> u64,
    chunks: usize,
) -> u64 {
    let yaml = sluice_tests::shop_config(
        db,
        &format!(
            "  - source: shop\n    table: public.orders\n    primary_key: [order_id]\n    partition: {{column: order_id, chunks: {chunks}, max_concurrency: 4}}\n"
        ),
    );
    let config = Config::from_yaml(&yaml, "test").unwrap();
    let mut sources: BTreeMap<String, Arc<dyn Source>> = BTreeMap::new();
    sources.insert(
        "shop".into(),
        Arc::new(PostgresSource::from_config(&config.sources[0], None).unwrap()),
    );
    let out = tempfile::tempdir().unwrap();
    let sink = Arc::new(LocalDirSink::new(out.path()).unwrap());
    let pipeline = Pipeline::new(sources, sink, state, PipelineOptions::default());
    let before = items_read();
    let record = pipeline
        .run_table(&config.tables[0], &sluice::Quiet)
        .await
        .unwrap();
    let reads = items_read() - before;
    assert_eq!(record.status, RunStatus::Completed, "{:?}", record.error);
    assert_eq!(record.plan.as_ref().unwrap().chunks.len(), chunks);
    assert_eq!(record.chunks.len(), chunks);
    reads
}

/// Eight times the chunks costs at most about eight times the reads (a quadratic cost would
/// be 64 times), and a bounded number per chunk.
fn assert_linear(store: &str, small: (usize, u64), large: (usize, u64)) {
    let (n, few) = small;
    let (m, many) = large;
    let per_chunk = many as f64 / m as f64;
    eprintln!("{store}: {few} reads for {n} chunks, {many} for {m} ({per_chunk:.1} per chunk)");
    let growth = many as f64 / few as f64;
    let chunks_growth = m as f64 / n as f64;
    assert!(
        growth <= chunks_growth * 1.25,
        "{store}: {m} chunks cost {many} reads, {n} chunks {few}: ×{growth:.1} for ×{chunks_growth} chunks is not linear"
    );
    assert!(per_chunk <= 8.0, "{store}: {per_chunk:.1} reads per chunk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_reads_of_the_local_store_grow_linearly_with_its_chunks() {
    let db = sluice_tests::shop_db("reads_local").await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStateStore::open(dir.path()).unwrap());
    let counter = store.clone();
    let read = move || counter.items_read();
    let small = reads_of_a_run(&db, store.clone(), &read, 32).await;
    let large = reads_of_a_run(&db, store, &read, 256).await;
    assert_linear("local", (32, small), (256, large));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_reads_of_dynamodb_grow_linearly_with_its_chunks() {
    let db = sluice_tests::shop_db("reads_dynamo").await;
    // Serial: moto applies conditional writes to one item atomically only one request at a
    // time, as DynamoDB always does (see `MotoServer::shared_serial`).
    let moto = MotoServer::shared_serial();
    let store = Arc::new(DynamoStateStore::new(
        &moto.sdk_config().await,
        unique_name("state"),
    ));
    store.create_table().await.unwrap();
    let counter = store.clone();
    let read = move || counter.items_read();
    let small = reads_of_a_run(&db, store.clone(), &read, 32).await;
    let large = reads_of_a_run(&db, store, &read, 256).await;
    assert_linear("dynamodb", (32, small), (256, large));
}
