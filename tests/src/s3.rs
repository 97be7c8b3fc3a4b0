//! S3 fixtures: a pipeline writing to a bucket on moto, with the store wrapped so a test can
//! see the order in which objects became visible and can break an upload part-way (a
//! failpoint between sluice and the real S3 API; every request still reaches moto).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice::aws::AwsEndpoint;
use sluice::catalog::glue::GlueCatalog;
use sluice::sink::ObjectSink;
use sluice::sink::parquet::ParquetSettings;
use sluice::sink::s3::S3Sink;
use sluice::source::Source;
use sluice::source::postgres::PostgresSource;
use sluice::state::local::LocalStateStore;
use sluice::{Pipeline, PipelineOptions};
use sluice_core::manifest::Manifest;
use sluice_core::{Config, RunRecord};

use crate::moto::{MotoServer, unique_name};

/// Everything the wrapped store saw complete, in order.
#[derive(Default)]
pub struct StoreLog {
    /// Keys in the order their objects became visible (single PUT or multipart complete).
    pub completed: Mutex<Vec<String>>,
    /// Multipart parts sent so far, across all uploads.
    pub parts_sent: AtomicUsize,
    /// When set, the part with this (1-based) number across all uploads fails before it is
    /// sent, as a dropped connection would.
    pub fail_part: Mutex<Option<usize>>,
    /// The most parts any one upload had started and not yet finished at the same moment.
    pub most_parts_in_flight: AtomicUsize,
}

#[derive(Debug)]
pub struct ObservedStore {
    inner: Arc<dyn ObjectStore>,
    log: Arc<StoreLog>,
}

impl fmt::Debug for StoreLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreLog")
    }
}

impl fmt::Display for ObservedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Observed({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for ObservedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let result = self.inner.put_opts(location, payload, opts).await?;
        self.log
            .completed
            .lock()
            .unwrap()
            .push(location.to_string());
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(ObservedUpload {
            inner,
            key: location.to_string(),
            log: self.log.clone(),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct ObservedUpload {
    inner: Box<dyn MultipartUpload>,
    key: String,
    log: Arc<StoreLog>,
    in_flight: Arc<AtomicUsize>,
}

#[async_trait]
impl MultipartUpload for ObservedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let n = self.log.parts_sent.fetch_add(1, Ordering::SeqCst) + 1;
        if *self.log.fail_part.lock().unwrap() == Some(n) {
            return Box::pin(async move {
                Err(object_store::Error::Generic {
                    store: "failpoint",
                    source: format!("connection dropped while sending part {n}").into(),
                })
            });
        }
        // Counted from the moment the writer asks for the part (the upload task is spawned
        // right then) until the request has finished, which is what the memory bound is about.
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.log
            .most_parts_in_flight
            .fetch_max(now, Ordering::SeqCst);
        let in_flight = self.in_flight.clone();
        let part = self.inner.put_part(data);
        Box::pin(async move {
            let result = part.await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let result = self.inner.complete().await?;
        self.log.completed.lock().unwrap().push(self.key.clone());
        Ok(result)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

/// The S3 sink with its store observed.
pub struct ObservedSink {
    inner: S3Sink,
    store: Arc<ObservedStore>,
}

impl ObservedSink {
    pub fn new(inner: S3Sink, log: Arc<StoreLog>) -> ObservedSink {
        let store = Arc::new(ObservedStore {
            inner: inner.store(),
            log,
        });
        ObservedSink { inner, store }
    }
}

impl ObjectSink for ObservedSink {
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }
    fn url_for(&self, key: &str) -> String {
        self.inner.url_for(key)
    }
    fn minimum_part_bytes(&self) -> usize {
        self.inner.minimum_part_bytes()
    }
}

/// A pipeline from a config's sources to a fresh bucket on the shared moto server, with a Glue
/// database, and local state in a temporary directory.
pub struct S3Harness {
    pub moto: &'static MotoServer,
    pub bucket: String,
    pub prefix: String,
    pub database: String,
    pub config: Config,
    pub log: Arc<StoreLog>,
    pub pipeline: Pipeline,
    pub s3: aws_sdk_s3::Client,
    pub glue: aws_sdk_glue::Client,
    pub state_dir: tempfile::TempDir,
}

impl S3Harness {
    pub async fn new(config_yaml: &str, parquet: ParquetSettings) -> S3Harness {
        S3Harness::with_sources(config_yaml, parquet, |source| {
            Arc::new(PostgresSource::from_config(source, None).unwrap())
        })
        .await
    }

    pub async fn with_sources(
        config_yaml: &str,
        parquet: ParquetSettings,
        build: impl Fn(&sluice_core::SourceConfig) -> Arc<dyn Source>,
    ) -> S3Harness {
        let moto = MotoServer::shared();
        let Lake {
            s3,
            glue,
            bucket,
            database,
        } = Lake::create(moto).await;
        let config = Config::from_yaml(config_yaml, "test config").unwrap();
        let mut sources: BTreeMap<String, Arc<dyn Source>> = BTreeMap::new();
        for source in &config.sources {
            sources.insert(source.name.clone(), build(source));
        }
        let log = Arc::new(StoreLog::default());
        let sink = ObservedSink::new(S3Sink::new(&bucket, &moto.aws()).unwrap(), log.clone());
        let state_dir = tempfile::tempdir().unwrap();
        let state = Arc::new(LocalStateStore::open(state_dir.path()).unwrap());
        let prefix = "raw/v1".to_owned();
        let options = PipelineOptions {
            prefix: Some(prefix.clone()),
            parquet,
            ..PipelineOptions::default()
        };
        let pipeline = Pipeline::new(sources, Arc::new(sink), state, options)
            .with_catalog(Arc::new(GlueCatalog::new(glue.clone(), &database)));
        S3Harness {
            moto,
            bucket,
            prefix,
            database,
            config,
            log,
            pipeline,
            s3,
            glue,
            state_dir,
        }
    }

    /// The harness with a warehouse step attached to its pipeline.
    pub fn with_warehouse(mut self, loader: Arc<sluice::warehouse::load::Loader>) -> S3Harness {
        self.pipeline = self.pipeline.with_warehouse(loader);
        self
    }

    /// Runs the table `selector` names and expects the run to complete.
    pub async fn run_completed(&self, selector: &str) -> RunRecord {
        crate::run_completed(&self.pipeline, self.table(selector)).await
    }

    /// The table's committed watermark, as the state store holds it.
    pub async fn watermark(&self, table_key: &str) -> Option<sluice_core::ScalarValue> {
        self.pipeline
            .state()
            .table_state(table_key)
            .await
            .unwrap()
            .watermark
    }

    pub fn table(&self, selector: &str) -> &sluice_core::TableConfig {
        let found = self.config.find_tables(selector);
        assert_eq!(found.len(), 1, "table {selector}");
        found[0]
    }

    /// Every key in the bucket, sorted.
    pub async fn keys(&self) -> Vec<String> {
        list_keys(&self.s3, &self.bucket).await
    }

    pub async fn object(&self, key: &str) -> Bytes {
        get_object(&self.s3, &self.bucket, key).await
    }

    pub async fn manifest(&self, record: &RunRecord) -> Manifest {
        let key = record.manifest_key.as_ref().expect("a manifest key");
        serde_json::from_slice(&self.object(key).await).unwrap()
    }

    /// Every batch of every file the run's manifest lists, read from S3.
    pub async fn read_run(&self, record: &RunRecord) -> Vec<RecordBatch> {
        let mut batches = Vec::new();
        for file in self.manifest(record).await.files {
            batches.extend(parquet_batches(self.object(&file.key).await));
        }
        batches
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub async fn pending_uploads(&self) -> Vec<String> {
        let out = self
            .s3
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .send()
            .await
            .unwrap();
        out.uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_owned))
            .collect()
    }
}

/// A fresh bucket and Glue database on a moto server, and clients to inspect them.
pub struct Lake {
    pub s3: aws_sdk_s3::Client,
    pub glue: aws_sdk_glue::Client,
    pub bucket: String,
    /// Glue names take `_`, not `-`.
    pub database: String,
}

impl Lake {
    pub async fn create(moto: &MotoServer) -> Lake {
        let sdk = moto.sdk_config().await;
        let s3 = s3_client(&sdk);
        let glue = aws_sdk_glue::Client::new(&sdk);
        let bucket = unique_name("lake");
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let database = unique_name("db").replace('-', "_");
        glue.create_database()
            .database_input(
                aws_sdk_glue::types::DatabaseInput::builder()
                    .name(&database)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        Lake {
            s3,
            glue,
            bucket,
            database,
        }
    }
}

/// An S3 client for inspecting what sluice wrote (path-style, as moto needs on loopback).
pub fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    )
}

pub async fn list_keys(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        keys.extend(
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        token = out.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    keys.sort();
    keys
}

pub async fn get_object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Bytes {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key}: {e:?}"))
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
}

pub fn parquet_batches(bytes: Bytes) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// `AwsEndpoint` for a moto server with specific credentials (IAM-enforcing servers).
pub fn endpoint_with_keys(moto: &MotoServer, access_key: &str, secret: &str) -> AwsEndpoint {
    AwsEndpoint::local(
        &moto.endpoint(),
        crate::moto::REGION,
        aws_credential_types::Credentials::new(access_key, secret, None, None, "test-user"),
    )
}
