//! Fixtures for sluice's end-to-end tests: a throwaway PostgreSQL database per test on the
//! local server, a pipeline over a temporary directory, and fingerprints that compare the
//! Parquet sluice wrote with the source, value by value.
//!
//! Fingerprints are computed twice, independently: in SQL by PostgreSQL over the source
//! table, and in Rust over the Arrow arrays read back from the Parquet files. They match
//! only if every value survived exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cdc;
pub mod crash;
pub mod moto;
pub mod mysql;
pub mod private_mariadb;
pub mod private_pg;
pub mod process;
pub mod s3;
pub mod snowflake;
pub mod stack;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType,
};
use md5::{Digest, Md5};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice::sink::LocalDirSink;
use sluice::source::Source;
use sluice::source::mysql::MysqlSource;
use sluice::source::postgres::PostgresSource;
use sluice::state::local::LocalStateStore;
use sluice::{Pipeline, PipelineOptions};
use sluice_core::manifest::Manifest;
use sluice_core::{Config, Engine, RunRecord};
pub use tokio_postgres::Client;
use tokio_postgres::NoTls;

/// A batch as the bytes of one Parquet file.
pub fn parquet_bytes(batch: &RecordBatch) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    bytes
}

/// Where the local PostgreSQL listens; override with SLUICE_TEST_PG (a URL without database).
pub fn pg_server_url() -> String {
    std::env::var("SLUICE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database created for one test and dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create(label: &str) -> TestDb {
        let name = format!("sluice_t_{label}_{}", ulid_suffix());
        let admin = connect(&format!("{}/postgres", pg_server_url())).await;
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0"
            ))
            .await
            .unwrap();
        TestDb {
            url: format!("{}/{name}", pg_server_url()),
            name,
        }
    }

    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }
}

fn ulid_suffix() -> String {
    sluice_core::RunId::new().to_string().to_lowercase()
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let url = format!("{}/postgres", pg_server_url());
        clean_up(async move {
            let admin = connect(&url).await;
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        });
    }
}

/// Runs a test's clean-up from `Drop`, which runs outside any runtime the test used (or
/// inside one, where it may not block): on a thread with a runtime of its own, waited for.
pub fn clean_up(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(work);
        }
    })
    .join();
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to {url}: {e} (is PostgreSQL running? scripts/setup starts it)")
        });
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A pipeline writing under a temporary directory, with its state beside it.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub pipeline: Pipeline,
}

impl Harness {
    pub fn new(config_yaml: &str) -> Harness {
        Harness::with_sources(config_yaml, real_source)
    }

    /// Runs `selector` with its source losing chunk 1's first batch ([`LosesABatch`]): the
    /// source's count of the chunk must fail the run at chunk 1. The harness and the record.
    pub async fn run_losing_a_batch(config_yaml: &str, selector: &str) -> (Harness, RunRecord) {
        let lossy = Harness::with_sources(config_yaml, |source| {
            Arc::new(LosesABatch(real_source(source)))
        });
        let record = lossy
            .pipeline
            .run_table(lossy.table(selector), &sluice::Quiet)
            .await
            .unwrap();
        assert_eq!(record.status, sluice_core::RunStatus::Failed);
        let error = record.error.clone().unwrap();
        assert_eq!(error.chunk, Some(1));
        assert!(
            error
                .message
                .contains("rows were lost between the source and the files"),
            "{}",
            error.message
        );
        (lossy, record)
    }

    /// A harness whose sources are built by `build`, e.g. to wrap the real source.
    pub fn with_sources(
        config_yaml: &str,
        build: impl Fn(&sluice_core::SourceConfig) -> Arc<dyn Source>,
    ) -> Harness {
        Harness::with_sources_and_options(config_yaml, build, PipelineOptions::default())
    }

    /// [`Harness::with_sources`] with the pipeline's options, e.g. the CLI's block chunks.
    pub fn with_sources_and_options(
        config_yaml: &str,
        build: impl Fn(&sluice_core::SourceConfig) -> Arc<dyn Source>,
        options: PipelineOptions,
    ) -> Harness {
        let config = Config::from_yaml(config_yaml, "test config").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut sources: BTreeMap<String, Arc<dyn Source>> = BTreeMap::new();
        for source in &config.sources {
            sources.insert(source.name.clone(), build(source));
        }
        let sink = Arc::new(LocalDirSink::new(dir.path().join("out")).unwrap());
        let state = Arc::new(LocalStateStore::open(dir.path().join("state")).unwrap());
        // As the CLI and the functions build theirs: sources with connection.max_connections
        // are capped.
        let pipeline =
            Pipeline::new(sources, sink, state, options).with_connection_limits(&config.sources);
        Harness {
            dir,
            config,
            pipeline,
        }
    }

    /// Runs a table that must complete; its record.
    pub async fn run_completed(&self, selector: &str) -> RunRecord {
        run_completed(&self.pipeline, self.table(selector)).await
    }

    /// Runs a table that must fail: asserts FAILED, an error containing `expected`, no
    /// manifest and no data file of the run anywhere under the output.
    pub async fn run_failing(&self, selector: &str, expected: &str) -> RunRecord {
        let record = self
            .pipeline
            .run_table(self.table(selector), &sluice::Quiet)
            .await
            .unwrap();
        assert_eq!(record.status, sluice_core::RunStatus::Failed, "{selector}");
        let message = &record
            .error
            .as_ref()
            .expect("a failed run keeps its error")
            .message;
        assert!(message.contains(expected), "{selector}: {message}");
        assert!(record.manifest_key.is_none(), "{selector}");
        let run_id = record.run_id.to_string();
        // Nothing of the run but its story.
        let leftovers: Vec<String> = files_under(&self.out_dir())
            .into_iter()
            .filter(|p| p.contains(&run_id) && !p.contains("/_runs/"))
            .collect();
        assert!(leftovers.is_empty(), "{selector}: {leftovers:?}");
        record
    }

    pub fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    pub fn table(&self, selector: &str) -> &sluice_core::TableConfig {
        let found = self.config.find_tables(selector);
        assert_eq!(found.len(), 1, "table {selector}");
        found[0]
    }

    pub fn manifest(&self, record: &RunRecord) -> Manifest {
        let key = record
            .manifest_key
            .as_ref()
            .expect("a completed run has a manifest");
        serde_json::from_slice(&std::fs::read(self.out_dir().join(key)).unwrap()).unwrap()
    }

    /// Every batch of every file the run's manifest lists.
    pub fn read_run(&self, record: &RunRecord) -> Vec<RecordBatch> {
        let manifest = self.manifest(record);
        let mut batches = Vec::new();
        for file in &manifest.files {
            batches.extend(read_parquet(&self.out_dir().join(&file.key)));
        }
        batches
    }
}

pub fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// What a column's values add up to: exact for everything but floats.
#[derive(Debug, Clone, PartialEq)]
pub enum Fingerprint {
    /// Non-NULL count and the md5 of the sorted canonical texts of the values.
    Exact { count: i64, md5: String },
    /// Non-NULL count and the sum, compared with a relative tolerance.
    Float { count: i64, sum: f64 },
}

impl Fingerprint {
    pub fn assert_matches(&self, other: &Fingerprint, what: &str) {
        match (self, other) {
            (Fingerprint::Float { count: a, sum: x }, Fingerprint::Float { count: b, sum: y }) => {
                assert_eq!(a, b, "{what}: non-NULL counts differ");
                assert!(
                    (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                    "{what}: sums differ: {x} vs {y}"
                );
            }
            _ => assert_eq!(self, other, "{what}"),
        }
    }
}

pub fn md5_of_sorted(mut values: Vec<String>) -> String {
    values.sort_unstable();
    let mut hasher = Md5::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            hasher.update(b"\n");
        }
        hasher.update(v.as_bytes());
    }
    format!("{:x}", hasher.finalize())
}

/// The canonical text PostgreSQL's side of the fingerprint uses, per source type.
fn sql_canonical(column: &str, type_name: &str) -> Option<String> {
    let c = format!("\"{}\"", column.replace('"', "\"\""));
    Some(match type_name {
        "float4" | "float8" => return None,
        "date" => format!("({c} - date '1970-01-01')::text"),
        "timestamp" | "timestamptz" => {
            format!("(extract(epoch from {c}) * 1000000)::numeric(30,0)::text")
        }
        // format() keeps char(n)'s padding, which a ::text cast would strip.
        "bpchar" => format!("format('%s', {c})"),
        _ => format!("{c}::text"),
    })
}

/// Fingerprints of every column of a source table, computed by PostgreSQL.
pub async fn pg_fingerprints(
    client: &Client,
    table: &str,
    filter: Option<&str>,
) -> (i64, BTreeMap<String, Fingerprint>) {
    let (schema, name) = table.split_once('.').unwrap();
    let columns: Vec<(String, String)> = client
        .query(
            "SELECT a.attname::text, t.typname::text FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&schema, &name],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let where_sql = filter.map(|f| format!(" WHERE {f}")).unwrap_or_default();
    let count: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}{where_sql}"), &[])
        .await
        .unwrap()
        .get(0);
    let mut out = BTreeMap::new();
    for (column, type_name) in columns {
        let c = format!("\"{column}\"");
        let fp = match sql_canonical(&column, &type_name) {
            Some(expr) => {
                let row = client
                    .query_one(
                        &format!(
                            "SELECT count({c}), coalesce(md5(string_agg({expr}, E'\\n' ORDER BY {expr} COLLATE \"C\")), md5('')) FROM {table}{where_sql}"
                        ),
                        &[],
                    )
                    .await
                    .unwrap();
                Fingerprint::Exact {
                    count: row.get(0),
                    md5: row.get(1),
                }
            }
            None => {
                let row = client
                    .query_one(&format!("SELECT count({c}), coalesce(sum({c}::float8), 0) FROM {table}{where_sql}"), &[])
                    .await
                    .unwrap();
                Fingerprint::Float {
                    count: row.get(0),
                    sum: row.get(1),
                }
            }
        };
        out.insert(column, fp);
    }
    (count, out)
}

/// An unscaled decimal as PostgreSQL and MySQL print it (`-0.05` for -5 at scale 2).
pub fn decimal_text(v: i128, scale: i8) -> String {
    if scale <= 0 {
        return v.to_string();
    }
    let scale = scale as usize;
    let digits = v.unsigned_abs().to_string();
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{}{int}.{frac}", if v < 0 { "-" } else { "" })
}

/// Fingerprints of every column of Arrow batches, computed in Rust; metadata columns
/// (`_sluice_*`) are left out.
pub fn arrow_fingerprints(batches: &[RecordBatch]) -> (i64, BTreeMap<String, Fingerprint>) {
    let mut rows = 0i64;
    let mut texts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut floats: BTreeMap<String, (i64, f64)> = BTreeMap::new();
    for batch in batches {
        rows += batch.num_rows() as i64;
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            if field.name().starts_with("_sluice_") {
                continue;
            }
            let name = field.name().clone();
            let mut push = |f: &dyn Fn(usize) -> String| {
                let entry = texts.entry(name.clone()).or_default();
                for i in 0..array.len() {
                    if array.is_valid(i) {
                        entry.push(f(i));
                    }
                }
            };
            match field.data_type() {
                DataType::Int16 => {
                    push(&|i| array.as_primitive::<Int16Type>().value(i).to_string())
                }
                DataType::Int32 => {
                    push(&|i| array.as_primitive::<Int32Type>().value(i).to_string())
                }
                DataType::Int64 => {
                    push(&|i| array.as_primitive::<Int64Type>().value(i).to_string())
                }
                DataType::Decimal128(_, scale) => {
                    let scale = *scale;
                    push(&|i| decimal_text(array.as_primitive::<Decimal128Type>().value(i), scale))
                }
                DataType::Utf8 => push(&|i| array.as_string::<i32>().value(i).to_owned()),
                DataType::Boolean => push(&|i| array.as_boolean().value(i).to_string()),
                DataType::Date32 => {
                    push(&|i| array.as_primitive::<Date32Type>().value(i).to_string())
                }
                DataType::Timestamp(TimeUnit::Microsecond, _) => push(&|i| {
                    array
                        .as_primitive::<TimestampMicrosecondType>()
                        .value(i)
                        .to_string()
                }),
                DataType::Float32 | DataType::Float64 => {
                    let entry = floats.entry(name.clone()).or_default();
                    for i in 0..array.len() {
                        if array.is_valid(i) {
                            entry.0 += 1;
                            entry.1 += match field.data_type() {
                                DataType::Float32 => {
                                    f64::from(array.as_primitive::<Float32Type>().value(i))
                                }
                                _ => array.as_primitive::<Float64Type>().value(i),
                            };
                        }
                    }
                }
                other => panic!("column {name}: no fingerprint for Arrow type {other}"),
            }
        }
    }
    let mut out = BTreeMap::new();
    for (name, values) in texts {
        out.insert(
            name,
            Fingerprint::Exact {
                count: values.len() as i64,
                md5: md5_of_sorted(values),
            },
        );
    }
    for (name, (count, sum)) in floats {
        out.insert(name, Fingerprint::Float { count, sum });
    }
    (rows, out)
}

/// Removes insignificant zeros so `12.50`, `12.5` and `12.500000000` compare equal.
pub fn normalize_decimal(text: &str) -> String {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let body = if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    };
    if body == "0" {
        body
    } else {
        format!("{sign}{body}")
    }
}

/// A source that runs `meddle` once, just before chunk `before_chunk` is read (committing
/// changes on another connection, as a busy application would), and otherwise reads through
/// `inner`.
pub struct Meddler {
    inner: Arc<dyn Source>,
    before_chunk: u32,
    meddle: Box<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>,
    done: AtomicBool,
}

impl Meddler {
    pub fn new(
        inner: Arc<dyn Source>,
        before_chunk: u32,
        meddle: impl Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> Meddler {
        Meddler {
            inner,
            before_chunk,
            meddle: Box::new(meddle),
            done: AtomicBool::new(false),
        }
    }
}

#[async_trait::async_trait]
impl Source for Meddler {
    fn engine(&self) -> sluice_core::Engine {
        self.inner.engine()
    }

    async fn gather_facts(
        &self,
        table: &sluice_core::TableConfig,
        window_lower: Option<&sluice_core::ScalarValue>,
    ) -> sluice::source::Result<sluice::source::GatheredFacts> {
        self.inner.gather_facts(table, window_lower).await
    }

    async fn extract_chunk(
        &self,
        plan: &sluice_core::RunPlan,
        chunk: u32,
    ) -> sluice::source::Result<sluice::source::ChunkStream> {
        if chunk == self.before_chunk && !self.done.swap(true, Ordering::SeqCst) {
            (self.meddle)().await;
        }
        self.inner.extract_chunk(plan, chunk).await
    }

    async fn cdc_facts(
        &self,
        table: &sluice_core::TableConfig,
        watermark: Option<u64>,
    ) -> sluice::source::Result<sluice_core::plan::CdcFacts> {
        self.inner.cdc_facts(table, watermark).await
    }
}

/// `(order_id, updated_at in µs)` of every row a run of the shop's orders wrote.
pub fn order_versions(h: &Harness, record: &RunRecord) -> Vec<(i64, i64)> {
    let batches = h.read_run(record);
    let ids = int64_values(&batches, "order_id");
    let stamps: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("updated_at")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>()
                .values()
                .to_vec()
        })
        .collect();
    ids.into_iter().zip(stamps).collect()
}

/// Asserts that the batches hold exactly the rows of the source table (optionally filtered).
pub async fn assert_same_as_source(
    client: &Client,
    table: &str,
    filter: Option<&str>,
    batches: &[RecordBatch],
) {
    let (pg_rows, pg) = pg_fingerprints(client, table, filter).await;
    let (arrow_rows, arrow) = arrow_fingerprints(batches);
    assert_eq!(arrow_rows, pg_rows, "{table}: row count");
    assert_eq!(
        arrow.keys().collect::<Vec<_>>(),
        pg.keys().collect::<Vec<_>>(),
        "{table}: columns"
    );
    for (column, expected) in &pg {
        arrow[column].assert_matches(expected, &format!("{table}.{column}"));
    }
}

/// Every file below `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    out
}

/// The data files under an output directory, as keys relative to it (manifests left out):
/// what a reader of the partition directories sees.
pub fn data_files_under(out: &Path) -> Vec<String> {
    let mut files: Vec<String> = files_under(out)
        .into_iter()
        .filter_map(|p| {
            p.strip_prefix(&format!("{}/", out.display()))
                .map(str::to_owned)
        })
        .filter(|k| !k.contains("/_manifests/") && !k.contains("/_runs/"))
        .collect();
    files.sort();
    files
}

/// Values of one Utf8 column across batches (NULLs left out).
pub fn string_values(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let array = b
                .column_by_name(column)
                .unwrap_or_else(|| panic!("no column {column}"));
            array
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Values of one Int64 column across batches (primary keys, in tests).
pub fn int64_values(batches: &[RecordBatch], column: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let array = b
                .column_by_name(column)
                .unwrap_or_else(|| panic!("no column {column}"));
            array.as_primitive::<Int64Type>().values().to_vec()
        })
        .collect()
}

/// A database of its own holding the shop sample (scale 1).
pub async fn shop_db(label: &str) -> TestDb {
    let db = TestDb::create(label).await;
    sluice::sample::create_shop_postgres(&db.client().await, "public", 1)
        .await
        .unwrap();
    db
}

/// A config for the shop sample in `db`, with the given YAML for the tables section.
pub fn shop_config(db: &TestDb, tables_yaml: &str) -> String {
    format!(
        "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: {}\ntables:\n{tables_yaml}",
        db.url
    )
}

/// Counts sluice's connections to the test database that are doing something (not idle:
/// planning, reading, or holding a snapshot open), every 50 ms, on a connection of its own:
/// the source's own view of how many connections sluice has at work at once.
pub struct ConnectionSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<i64>>,
}

impl ConnectionSampler {
    pub async fn start(db: &TestDb) -> ConnectionSampler {
        let client = db.client().await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let name = db.name.clone();
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                // At most 5 minutes.
                for _ in 0..6000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let n: i64 = client
                        .query_one(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                             AND application_name = 'sluice' AND state <> 'idle' \
                             AND pid <> pg_backend_pid()",
                            &[&name],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    samples.push(n);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                samples
            })
        };
        ConnectionSampler { stop, task }
    }

    pub async fn stop(self) -> Vec<i64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// Runs `table` through `pipeline`; the run must complete. Its record.
pub async fn run_completed(pipeline: &Pipeline, table: &sluice_core::TableConfig) -> RunRecord {
    let record = pipeline.run_table(table, &sluice::Quiet).await.unwrap();
    assert_eq!(
        record.status,
        sluice_core::RunStatus::Completed,
        "{}: {:?}",
        table.key(),
        record.error
    );
    record
}

/// The source a config names, as the CLI builds it (credentials from the URL).
pub fn real_source(source: &sluice_core::SourceConfig) -> Arc<dyn Source> {
    match source.engine {
        Engine::Postgres => Arc::new(PostgresSource::from_config(source, None).unwrap()),
        Engine::Mysql => Arc::new(MysqlSource::from_config(source, None).unwrap()),
    }
}

/// A source whose chunk 1 loses its first batch on the way, as a decoder that dropped rows
/// would: the source's count of the chunk (taken in its snapshot, or the rows it sent) exposes it.
pub struct LosesABatch(pub Arc<dyn sluice::source::Source>);

#[async_trait::async_trait]
impl sluice::source::Source for LosesABatch {
    fn engine(&self) -> sluice_core::Engine {
        self.0.engine()
    }
    async fn gather_facts(
        &self,
        table: &sluice_core::TableConfig,
        lower: Option<&sluice_core::ScalarValue>,
    ) -> sluice::source::Result<sluice::source::GatheredFacts> {
        self.0.gather_facts(table, lower).await
    }
    async fn extract_chunk(
        &self,
        plan: &sluice_core::RunPlan,
        chunk: u32,
    ) -> sluice::source::Result<sluice::source::ChunkStream> {
        use futures::StreamExt;
        let stream = self.0.extract_chunk(plan, chunk).await?;
        if chunk != 1 {
            return Ok(stream);
        }
        Ok(sluice::source::ChunkStream {
            batches: stream.batches.skip(1).boxed(),
            ..stream
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_text_matches_postgres_numeric_output() {
        assert_eq!(decimal_text(1234567, 2), "12345.67");
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(decimal_text(0, 3), "0.000");
        assert_eq!(decimal_text(42, 0), "42");
    }
}
