//! The S3 sink and the Glue catalog against moto: keys, manifest order, multipart uploads that
//! break, retried chunks, catalog tables, partitions and schema changes, and bad settings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use parquet::basic::{DecimalType, LogicalType, TimeUnit as ParquetTimeUnit, TimestampType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use sluice::catalog::NoCatalog;
use sluice::catalog::glue::GlueCatalog;
use sluice::sink::parquet::ParquetSettings;
use sluice::sink::s3::S3Sink;
use sluice::source::postgres::PostgresSource;
use sluice::source::{ChunkStream, Source, SourceError};
use sluice::state::local::LocalStateStore;
use sluice::state::prelude::*;
use sluice::{Pipeline, PipelineOptions, Quiet};
use sluice_core::{RunRecord, RunStatus};
use sluice_tests::moto::{MotoServer, unique_name};
use sluice_tests::s3::{S3Harness, endpoint_with_keys, list_keys, s3_client};
use sluice_tests::{TestDb, assert_same_as_source, shop_config};

const MIB: usize = 1024 * 1024;
const ROWS: i64 = 140_000;

/// Small files and the smallest S3 parts, so a modest table spans several multipart files.
fn small_files() -> ParquetSettings {
    ParquetSettings {
        max_file_bytes: 6 * MIB as u64,
        upload_part_bytes: 5 * MIB,
        ..ParquetSettings::default()
    }
}

/// 140,000 rows of mostly incompressible text (about 9 MB of Parquet per chunk of two).
async fn blob_db() -> TestDb {
    let db = TestDb::create("s3").await;
    db.client()
        .await
        .batch_execute(&format!(
            "CREATE TABLE public.blob (
                 id bigint PRIMARY KEY,
                 payload text NOT NULL,
                 amount numeric(12,2),
                 happened timestamptz NOT NULL,
                 local_ts timestamp
             );
             INSERT INTO public.blob
             SELECT i,
                    md5(i::text) || md5((i * 7)::text) || md5((i * 13)::text) || md5((i * 31)::text)
                    || md5((i * 37)::text) || md5((i * 41)::text) || md5((i * 43)::text) || md5((i * 47)::text),
                    CASE WHEN i % 10 = 0 THEN NULL ELSE (i * 37 % 10000000) / 100.0 END,
                    timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second',
                    timestamp '2024-01-01 00:00' + i * interval '1 minute'
             FROM generate_series(1, {ROWS}) i;"
        ))
        .await
        .unwrap();
    db
}

fn blob_config(db: &TestDb, load: &str) -> String {
    shop_config(
        db,
        &format!(
            "  - source: shop\n    table: public.blob\n    partition: {{column: id, chunks: 2}}\n{load}"
        ),
    )
}

/// The key the layout promises for a run's file: computed here from the documented pattern,
/// not by the code under test.
fn expected_key(h: &S3Harness, record: &RunRecord, chunk: u32, part: u32) -> String {
    let started = record.plan.as_ref().unwrap().started_at;
    format!(
        "{}/postgres/shop/public.blob/{}/part-{}-{chunk:04}-{part:04}.parquet",
        h.prefix,
        started.format("%Y-%m-%d/%H"),
        record.run_id
    )
}

async fn glue_columns(h: &S3Harness, table: &str) -> Vec<(String, String)> {
    let out = h
        .glue
        .get_table()
        .database_name(&h.database)
        .name(table)
        .send()
        .await
        .unwrap();
    let table = out.table.unwrap();
    let keys: Vec<_> = table
        .partition_keys()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    assert_eq!(keys, ["ingest_date", "ingest_hour"]);
    // A Parquet table Athena and Spark can read, over the table's own prefix.
    let storage = table.storage_descriptor().unwrap();
    assert_eq!(
        storage.location().unwrap().trim_end_matches('/'),
        format!("s3://{}/{}/postgres/shop/public.blob", h.bucket, h.prefix)
    );
    assert_eq!(
        storage.serde_info().unwrap().serialization_library(),
        Some("org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe")
    );
    assert_eq!(
        storage.input_format(),
        Some("org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat")
    );
    assert_eq!(table.table_type(), Some("EXTERNAL_TABLE"));
    table
        .storage_descriptor()
        .unwrap()
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.r#type().unwrap().to_owned()))
        .collect()
}

/// `values → location` of every partition of a Glue table.
async fn glue_partitions(h: &S3Harness, table: &str) -> BTreeMap<Vec<String>, String> {
    let out = h
        .glue
        .get_partitions()
        .database_name(&h.database)
        .table_name(table)
        .send()
        .await
        .unwrap();
    out.partitions()
        .iter()
        .map(|p| {
            (
                p.values().to_vec(),
                p.storage_descriptor()
                    .unwrap()
                    .location()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect()
}

fn partition_of(h: &S3Harness, record: &RunRecord) -> (Vec<String>, String) {
    let started = record.plan.as_ref().unwrap().started_at;
    (
        vec![
            started.format("%Y-%m-%d").to_string(),
            started.format("%H").to_string(),
        ],
        format!(
            "s3://{}/{}/postgres/shop/public.blob/{}/",
            h.bucket,
            h.prefix,
            started.format("%Y-%m-%d/%H")
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_file_run_lands_under_its_keys_with_the_manifest_last_and_is_catalogued() {
    let db = blob_db().await;
    let h = S3Harness::new(&blob_config(&db, ""), small_files()).await;
    let record = h.run_completed("public.blob").await;

    // Every object is where the layout says, and nothing else is in the bucket.
    let manifest = h.manifest(&record).await;
    let manifest_key = record.manifest_key.clone().unwrap();
    assert_eq!(
        manifest_key,
        format!(
            "{}/postgres/shop/public.blob/_manifests/{}.json",
            h.prefix, record.run_id
        )
    );
    assert!(
        manifest.files.len() >= 4,
        "expected several files per chunk: {:?}",
        manifest.files
    );
    for file in &manifest.files {
        assert_eq!(file.key, expected_key(&h, &record, file.chunk, file.part));
        assert_eq!(
            h.object(&file.key).await.len() as u64,
            file.bytes,
            "{}",
            file.key
        );
    }
    let mut expected: Vec<String> = manifest.files.iter().map(|f| f.key.clone()).collect();
    expected.push(manifest_key.clone());
    expected.push(format!(
        "{}/postgres/shop/public.blob/_runs/{}.json",
        h.prefix, record.run_id
    ));
    expected.sort();
    assert_eq!(h.keys().await, expected);

    // The manifest became visible after every data file (and only the run's story, written
    // once the run completed, after it); files above 5 MiB went multipart and no upload was
    // left open.
    let completed = h.log.completed.lock().unwrap().clone();
    let (story, written) = completed.split_last().unwrap();
    assert!(story.ends_with(&format!("/_runs/{}.json", record.run_id)));
    assert_eq!(written.last(), Some(&manifest_key), "{completed:?}");
    assert_eq!(written.len(), manifest.files.len() + 1);
    assert!(h.log.parts_sent.load(Ordering::SeqCst) >= 2);
    assert!(h.pending_uploads().await.is_empty());

    // The values are the source's, read back from S3 with the parquet crate.
    let client = db.client().await;
    assert_same_as_source(&client, "public.blob", None, &h.read_run(&record).await).await;

    // Types as Snowflake and Athena need them: UTC-adjusted µs only for timestamptz,
    // logical DECIMAL, UTF8 strings.
    let first = h.object(&manifest.files[0].key).await;
    let reader = SerializedFileReader::new(first).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let logical: BTreeMap<String, Option<LogicalType>> = schema
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.logical_type_ref().cloned()))
        .collect();
    let micros = |utc| {
        LogicalType::Timestamp(TimestampType {
            is_adjusted_to_u_t_c: utc,
            unit: ParquetTimeUnit::MICROS,
        })
    };
    assert_eq!(logical["happened"], Some(micros(true)));
    assert_eq!(logical["local_ts"], Some(micros(false)));
    assert_eq!(logical["_sluice_extracted_at"], Some(micros(true)));
    assert_eq!(
        logical["amount"],
        Some(LogicalType::Decimal(DecimalType {
            scale: 2,
            precision: 12
        }))
    );
    assert_eq!(logical["payload"], Some(LogicalType::String));
    // The manifest states the same storage types.
    let stored: BTreeMap<&str, &str> = manifest
        .schema
        .iter()
        .map(|c| (c.name.as_str(), c.parquet_type.as_str()))
        .collect();
    assert_eq!(stored["happened"], "INT64 TIMESTAMP(MICROS, utc=true)");
    assert_eq!(stored["local_ts"], "INT64 TIMESTAMP(MICROS, utc=false)");
    assert_eq!(stored["amount"], "INT64 DECIMAL(12,2)");
    assert_eq!(stored["payload"], "BYTE_ARRAY STRING");
    assert_eq!(stored["id"], "INT64");
    assert_eq!(logical["_sluice_run_id"], Some(LogicalType::String));

    // Glue: the table with the source's columns in Hive types, and this run's partition.
    let catalog_table = "shop_public_blob";
    let source_columns = [
        ("id", "bigint"),
        ("payload", "string"),
        ("amount", "decimal(12,2)"),
        ("happened", "timestamp"),
        ("local_ts", "timestamp"),
        ("_sluice_run_id", "string"),
        ("_sluice_extracted_at", "timestamp"),
    ];
    let owned = |cols: &[(&str, &str)]| -> Vec<(String, String)> {
        cols.iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    };
    assert_eq!(
        glue_columns(&h, catalog_table).await,
        owned(&source_columns)
    );
    let (values, location) = partition_of(&h, &record);
    assert_eq!(
        glue_partitions(&h, catalog_table).await,
        BTreeMap::from([(values, location)])
    );

    // A second run registers its partition again without complaint: one per date/hour.
    let second = h.run_completed("public.blob").await;
    let expected_partitions: BTreeMap<_, _> =
        [partition_of(&h, &record), partition_of(&h, &second)]
            .into_iter()
            .collect();
    assert_eq!(
        glue_partitions(&h, catalog_table).await,
        expected_partitions
    );

    // A new source column is added to the catalog table.
    client
        .batch_execute("ALTER TABLE public.blob ADD COLUMN note varchar(20); UPDATE public.blob SET note = 'n' || id WHERE id % 1000 = 0;")
        .await
        .unwrap();
    h.run_completed("public.blob").await;
    let mut grown = owned(&source_columns);
    grown.push(("note".into(), "string".into()));
    assert_eq!(glue_columns(&h, catalog_table).await, grown);

    // A narrowed type is reported, not applied: the run fails and the table stays as it was.
    client
        .batch_execute(
            "ALTER TABLE public.blob ALTER COLUMN id TYPE integer, ALTER COLUMN amount TYPE text;",
        )
        .await
        .unwrap();
    let fourth = h
        .pipeline
        .run_table(h.table("public.blob"), &Quiet)
        .await
        .unwrap();
    assert_eq!(fourth.status, RunStatus::Failed);
    let message = &fourth.error.as_ref().unwrap().message;
    assert!(
        message.contains("column 'id' is bigint in the catalog but int in this run")
            && message
                .contains("column 'amount' is decimal(12,2) in the catalog but string in this run"),
        "{message}"
    );
    assert_eq!(glue_columns(&h, catalog_table).await, grown);
}

/// A source that fails chunk 0 once, after its last batch: the chunk spans more than one
/// file, so its first file is complete and the last one still open when the error arrives.
struct FailOnce {
    inner: Arc<dyn Source>,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Source for FailOnce {
    fn engine(&self) -> sluice_core::Engine {
        self.inner.engine()
    }
    async fn gather_facts(
        &self,
        table: &sluice_core::TableConfig,
        lower: Option<&sluice_core::ScalarValue>,
    ) -> sluice::source::Result<sluice::source::GatheredFacts> {
        self.inner.gather_facts(table, lower).await
    }
    async fn extract_chunk(
        &self,
        plan: &sluice_core::RunPlan,
        chunk: u32,
    ) -> sluice::source::Result<ChunkStream> {
        let stream = self.inner.extract_chunk(plan, chunk).await?;
        if chunk != 0 || !self.armed.swap(false, Ordering::SeqCst) {
            return Ok(stream);
        }
        let lost = SourceError::Config {
            source_name: "failpoint".into(),
            message: "the connection was lost mid-chunk".into(),
        };
        let batches = stream
            .batches
            .chain(futures::stream::once(async move { Err(lost) }))
            .boxed();
        Ok(ChunkStream { batches, ..stream })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_upload_leaves_nothing_and_a_retried_chunk_overwrites_its_own_files() {
    let db = blob_db().await;
    let h = S3Harness::new(&blob_config(&db, ""), small_files()).await;
    let planned = h.pipeline.plan_run(h.table("public.blob")).await.unwrap();
    let run_id = planned.record.run_id;
    drop(planned.snapshot);

    // 1. The second multipart part of the first file is lost on the wire while the first
    //    part is sent or already stored: the chunk fails, its upload is aborted (parts and
    //    all), and no object exists at the file's key.
    *h.log.fail_part.lock().unwrap() = Some(2);
    let err = h
        .pipeline
        .extract_chunk(run_id, 0, &Quiet)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("connection dropped while sending part 2"),
        "{err}"
    );
    assert!(h.keys().await.is_empty(), "{:?}", h.keys().await);
    assert!(
        h.pending_uploads().await.is_empty(),
        "{:?}",
        h.pending_uploads().await
    );
    *h.log.fail_part.lock().unwrap() = None;
    let record = h.pipeline.state().get_run(run_id).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Extracting);
    assert!(record.chunks.is_empty());

    // 2. The chunk's source dies after its first file completed: that file stays, the open
    //    one is aborted, and the retry rewrites the same keys instead of adding new ones.
    let failing = Pipeline::new(
        BTreeMap::from([(
            "shop".to_owned(),
            Arc::new(FailOnce {
                inner: Arc::new(PostgresSource::from_config(&h.config.sources[0], None).unwrap()),
                armed: true.into(),
            }) as Arc<dyn Source>,
        )]),
        h.pipeline.sink().clone(),
        h.pipeline.state().clone(),
        PipelineOptions {
            prefix: Some(h.prefix.clone()),
            parquet: small_files(),
            ..PipelineOptions::default()
        },
    );
    let err = failing.extract_chunk(run_id, 0, &Quiet).await.unwrap_err();
    assert!(err.to_string().contains("lost mid-chunk"), "{err}");
    let after_crash = h.keys().await;
    let first_file = expected_key(&h, &record, 0, 0);
    assert_eq!(after_crash, vec![first_file.clone()]);
    assert!(h.pending_uploads().await.is_empty());

    let first = h.pipeline.extract_chunk(run_id, 0, &Quiet).await.unwrap();
    assert!(first.newly_recorded && !first.is_last);
    let last = h.pipeline.extract_chunk(run_id, 1, &Quiet).await.unwrap();
    assert!(
        last.newly_recorded && last.is_last,
        "the second of two chunks completes the run"
    );
    // A duplicated event for either chunk changes nothing and never hands the run on again.
    for chunk in [0, 1] {
        let again = h
            .pipeline
            .extract_chunk(run_id, chunk, &Quiet)
            .await
            .unwrap();
        assert!(!again.newly_recorded && !again.is_last, "chunk {chunk}");
        assert_eq!(
            again.outcome.files,
            if chunk == 0 { &first } else { &last }.outcome.files
        );
    }
    // A surplus part left by an earlier attempt that wrote more parts than the retry, and a
    // file of another run in the same partition.
    let surplus = expected_key(&h, &record, 0, 9);
    let other_run = surplus.replace(&run_id.to_string(), &sluice_core::RunId::new().to_string());
    for key in [&surplus, &other_run] {
        h.s3.put_object()
            .bucket(&h.bucket)
            .key(key)
            .body(b"stale".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let done = h.pipeline.finalize_run(run_id).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed);
    let manifest = h.manifest(&done).await;
    let mut expected: Vec<String> = manifest.files.iter().map(|f| f.key.clone()).collect();
    expected.push(done.manifest_key.clone().unwrap());
    expected.push(format!(
        "{}/postgres/shop/public.blob/_runs/{run_id}.json",
        h.prefix
    ));
    expected.push(other_run.clone());
    expected.sort();
    assert_eq!(
        h.keys().await,
        expected,
        "only the manifest's files, each once; the surplus part removed, the other run's file left"
    );
    let writes_of_first = h
        .log
        .completed
        .lock()
        .unwrap()
        .iter()
        .filter(|k| **k == first_file)
        .count();
    assert_eq!(
        writes_of_first, 2,
        "the retry rewrote the first file in place"
    );
    let client = db.client().await;
    assert_same_as_source(&client, "public.blob", None, &h.read_run(&done).await).await;
}

/// A pipeline over the incremental blob table writing to `sink`, sharing `state`.
fn orders_pipeline(
    db: &TestDb,
    sink: Arc<dyn sluice::sink::ObjectSink>,
    state: Arc<dyn StateStore>,
    catalog: Arc<dyn sluice::catalog::Catalog>,
) -> (Pipeline, sluice_core::Config) {
    orders_pipeline_with_prefix(db, sink, state, catalog, None)
}

fn orders_pipeline_with_prefix(
    db: &TestDb,
    sink: Arc<dyn sluice::sink::ObjectSink>,
    state: Arc<dyn StateStore>,
    catalog: Arc<dyn sluice::catalog::Catalog>,
    prefix: Option<&str>,
) -> (Pipeline, sluice_core::Config) {
    let config = sluice_core::Config::from_yaml(
        &shop_config(
            db,
            "  - source: shop\n    table: public.blob\n    load: {mode: incremental, cursor: happened}\n",
        ),
        "test",
    )
    .unwrap();
    let source: Arc<dyn Source> =
        Arc::new(PostgresSource::from_config(&config.sources[0], None).unwrap());
    let pipeline = Pipeline::new(
        BTreeMap::from([("shop".to_owned(), source)]),
        sink,
        state,
        PipelineOptions {
            prefix: prefix.map(str::to_owned),
            ..PipelineOptions::default()
        },
    )
    .with_catalog(catalog);
    (pipeline, config)
}

async fn run_failing_keeps_watermark(
    pipeline: &Pipeline,
    config: &sluice_core::Config,
    expected: &str,
) {
    let key = config.tables[0].key();
    let before = pipeline.state().table_state(&key).await.unwrap().watermark;
    let record = pipeline.run_table(&config.tables[0], &Quiet).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    let message = &record.error.as_ref().unwrap().message;
    assert!(
        message.contains(expected),
        "expected '{expected}' in: {message}"
    );
    assert!(record.watermark_committed.is_none());
    let after = pipeline.state().table_state(&key).await.unwrap().watermark;
    assert_eq!(after, before, "the watermark did not move");
    // The lease was released: the table can run again.
    assert!(
        pipeline
            .state()
            .table_state(&key)
            .await
            .unwrap()
            .lease
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_prefix_a_missing_bucket_or_glue_database_fails_the_run_and_keeps_the_watermark() {
    let db = blob_db().await;
    let moto = MotoServer::shared();
    let sdk = moto.sdk_config().await;
    let s3 = s3_client(&sdk);
    let bucket = unique_name("ok");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::open(state_dir.path()).unwrap());

    // A first good run sets the watermark.
    let (good, config) = orders_pipeline(
        &db,
        Arc::new(S3Sink::new(&bucket, &moto.aws()).unwrap()),
        state.clone(),
        Arc::new(NoCatalog),
    );
    let first = good.run_table(&config.tables[0], &Quiet).await.unwrap();
    assert_eq!(first.status, RunStatus::Completed, "{:?}", first.error);
    assert!(first.watermark_committed.is_some());
    db.client()
        .await
        .batch_execute("UPDATE public.blob SET happened = now() WHERE id <= 10")
        .await
        .unwrap();

    // An output prefix no loader could use fails the run before anything is written.
    let (pipeline, _) = orders_pipeline_with_prefix(
        &db,
        Arc::new(S3Sink::new(&bucket, &moto.aws()).unwrap()),
        state.clone(),
        Arc::new(NoCatalog),
        Some("raw data/v1"),
    );
    let keys_before = list_keys(&s3, &bucket).await;
    run_failing_keeps_watermark(
        &pipeline,
        &config,
        "output prefix 'raw data/v1' contains ' '",
    )
    .await;
    assert_eq!(list_keys(&s3, &bucket).await, keys_before);

    let missing = unique_name("missing");
    let (pipeline, _) = orders_pipeline(
        &db,
        Arc::new(S3Sink::new(&missing, &moto.aws()).unwrap()),
        state.clone(),
        Arc::new(NoCatalog),
    );
    run_failing_keeps_watermark(
        &pipeline,
        &config,
        &format!("bucket '{missing}' does not exist"),
    )
    .await;

    let (pipeline, _) = orders_pipeline(
        &db,
        Arc::new(S3Sink::new(&bucket, &moto.aws()).unwrap()),
        state.clone(),
        Arc::new(GlueCatalog::new(
            aws_sdk_glue::Client::new(&sdk),
            "no_such_db",
        )),
    );
    run_failing_keeps_watermark(
        &pipeline,
        &config,
        "Glue database 'no_such_db' does not exist",
    )
    .await;
    // The run that failed at the catalog had written complete files and its manifest; failing
    // removed them, so the bucket holds exactly the good run's manifest and files: nothing a
    // reader of the partition directory could mistake for data.
    let good = serde_json::from_slice::<sluice_core::manifest::Manifest>(
        &sluice_tests::s3::get_object(&s3, &bucket, first.manifest_key.as_ref().unwrap()).await,
    )
    .unwrap();
    let mut expected: Vec<String> = good.files.iter().map(|f| f.key.clone()).collect();
    expected.push(first.manifest_key.clone().unwrap());
    expected.sort();
    let (stories, data): (Vec<String>, Vec<String>) = list_keys(&s3, &bucket)
        .await
        .into_iter()
        .partition(|k| k.contains("/_runs/"));
    assert_eq!(data, expected);
    // Beside them only the runs' stories: the good run's and the one failed at the catalog
    // (the runs failed by a bad prefix or a missing bucket could write none).
    assert_eq!(stories.len(), 2, "{stories:?}");
    assert!(
        stories
            .iter()
            .any(|k| k.ends_with(&format!("/_runs/{}.json", first.run_id))),
        "{stories:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_fails_the_run_with_a_clear_error() {
    // A private moto that enforces IAM after the set-up calls below.
    let moto = MotoServer::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "4")]);
    let sdk = moto.sdk_config().await;
    let s3 = s3_client(&sdk);
    let iam = aws_sdk_iam_client(&sdk);
    let bucket = unique_name("denied");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    iam.create_user().user_name("reader").send().await.unwrap();
    let key = iam
        .create_access_key()
        .user_name("reader")
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();
    iam.put_user_policy()
        .user_name("reader")
        .policy_name("read-only")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:ListBucket"],"Resource":"*"}]}"#,
        )
        .send()
        .await
        .unwrap();

    let db = blob_db().await;
    let state_dir = tempfile::tempdir().unwrap();
    let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::open(state_dir.path()).unwrap());
    let reader = endpoint_with_keys(&moto, key.access_key_id(), key.secret_access_key());
    let (pipeline, config) = orders_pipeline(
        &db,
        Arc::new(S3Sink::new(&bucket, &reader).unwrap()),
        state,
        Arc::new(NoCatalog),
    );
    // A watermark from an earlier run, as an operator's `watermark set` would leave it: the
    // denied run must leave it where it is.
    let table_key = config.tables[0].key();
    let setter = sluice_core::RunId::new();
    let now = chrono::Utc::now();
    let state = pipeline.state();
    state
        .acquire_lease(&table_key, setter, now, now + chrono::Duration::minutes(1))
        .await
        .unwrap();
    let earlier = sluice_core::ScalarValue::TimestampTz("2024-01-01T12:00:00Z".parse().unwrap());
    state
        .commit_watermark(&table_key, setter, &earlier)
        .await
        .unwrap();
    state.release_lease(&table_key, setter).await.unwrap();
    run_failing_keeps_watermark(&pipeline, &config, "access denied").await;
    // Nothing was written (listed as the reader, who may list), and the message does not
    // carry the secret key.
    let as_reader = s3_client(&sluice::aws::sdk_config(&reader).await);
    assert_eq!(list_keys(&as_reader, &bucket).await, Vec::<String>::new());
    let record = pipeline
        .state()
        .list_runs(Some(&config.tables[0].key()), 1)
        .await
        .unwrap()
        .remove(0);
    let message = &record.error.as_ref().unwrap().message;
    assert!(!message.contains(key.secret_access_key()), "{message}");
}

fn aws_sdk_iam_client(sdk: &aws_config::SdkConfig) -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::new(sdk)
}

/// One chunk, one file far larger than a part, written with the default compression.
fn one_file(row_group_mb: usize) -> ParquetSettings {
    ParquetSettings {
        max_file_bytes: 256 * MIB as u64,
        row_group_bytes: row_group_mb * MIB,
        upload_part_bytes: 5 * MIB,
        upload_concurrency: 1,
        ..ParquetSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_keeps_few_parts_in_flight_and_follows_the_row_group_and_codec_settings() {
    let db = blob_db().await;
    let config = shop_config(&db, "  - source: shop\n    table: public.blob\n");
    let client = db.client().await;

    // A row group larger than the whole table: the writer hands over everything at once, and
    // the upload must still start one part at a time.
    let h = S3Harness::new(&config, one_file(512)).await;
    let record = h.run_completed("public.blob").await;
    let parts = h.log.parts_sent.load(Ordering::SeqCst);
    assert!(
        parts >= 3,
        "the file should need several 5 MiB parts, it took {parts}"
    );
    // One part uploading while the file is written, one more as it completes.
    let most = h.log.most_parts_in_flight.load(Ordering::SeqCst);
    assert!(
        most <= 2,
        "{most} parts in flight at once with upload_concurrency 1"
    );
    let manifest = h.manifest(&record).await;
    assert_eq!(manifest.files.len(), 1, "{:?}", manifest.files);
    let reader = SerializedFileReader::new(h.object(&manifest.files[0].key).await).unwrap();
    assert_eq!(reader.metadata().num_row_groups(), 1);
    for column in reader.metadata().row_group(0).columns() {
        assert!(
            matches!(column.compression(), parquet::basic::Compression::ZSTD(_)),
            "{} is {:?}; zstd is the default",
            column.column_path(),
            column.compression()
        );
    }
    assert_same_as_source(&client, "public.blob", None, &h.read_run(&record).await).await;

    // 8 MiB row groups (the smallest the pipeline uses): several of them, none far above
    // the target.
    let h = S3Harness::new(&config, one_file(8)).await;
    let record = h.run_completed("public.blob").await;
    let manifest = h.manifest(&record).await;
    let reader = SerializedFileReader::new(h.object(&manifest.files[0].key).await).unwrap();
    let groups = reader.metadata().row_groups();
    assert!(groups.len() >= 2, "{} row groups", groups.len());
    // The writer cuts on its running estimate of the encoded size, which runs below the
    // uncompressed size the footer reports (about half of it for this table's text).
    for group in groups {
        assert!(
            group.total_byte_size() <= 3 * 8 * MIB as i64,
            "a row group of {} bytes with an 8 MiB target",
            group.total_byte_size()
        );
    }
    assert_same_as_source(&client, "public.blob", None, &h.read_run(&record).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_states_the_cursor_window_each_run_read() {
    use sluice_core::plan::ScalarValue;
    let db = blob_db().await;
    let config = shop_config(
        &db,
        "  - source: shop\n    table: public.blob\n    load: {mode: incremental, cursor: happened, lookback: 10m}\n",
    );
    let h = S3Harness::new(&config, small_files()).await;
    let client = db.client().await;
    let pg_max = || async {
        client
            .query_one("SELECT max(happened) FROM public.blob", &[])
            .await
            .unwrap()
            .get::<_, chrono::DateTime<chrono::Utc>>(0)
    };

    let first_max = pg_max().await;
    let first = h.run_completed("public.blob").await;
    let manifest = h.manifest(&first).await;
    assert_eq!(
        manifest.watermark_lower, None,
        "a first run reads from the start"
    );
    assert_eq!(
        manifest.watermark_upper,
        Some(ScalarValue::TimestampTz(first_max))
    );

    // Rows moved past the old maximum: the next window starts at the old upper bound minus
    // the lookback and ends at the new maximum, and holds exactly the rows PostgreSQL has there.
    client
        .execute(
            "UPDATE public.blob SET happened = happened + interval '1 day' WHERE id % 500 = 0",
            &[],
        )
        .await
        .unwrap();
    let second_max = pg_max().await;
    let second = h.run_completed("public.blob").await;
    let manifest = h.manifest(&second).await;
    let lower = first_max - chrono::Duration::minutes(10);
    assert_eq!(
        manifest.watermark_lower,
        Some(ScalarValue::TimestampTz(lower))
    );
    assert_eq!(
        manifest.watermark_upper,
        Some(ScalarValue::TimestampTz(second_max))
    );
    let in_window: i64 = client
        .query_one(
            "SELECT count(*) FROM public.blob WHERE happened > $1 AND happened <= $2",
            &[&lower, &second_max],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(manifest.rows, in_window as u64);
}
