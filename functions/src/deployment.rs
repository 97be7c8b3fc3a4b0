//! A deployment, as the Lambda functions see it: every client built once per cold start from
//! the function's environment (the SAM template sets it), and the pipeline for the current
//! configuration, which is read from DynamoDB on every event so a config change needs no
//! redeploy. Source adapters are kept across events while their config is unchanged, for at
//! most [`SOURCE_MAX_AGE`], and one whose credentials the database refuses reads its secret
//! again (see [`sluice::source::connect::RotatingSource`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::aws::AwsEndpoint;
use sluice::catalog::glue::GlueCatalog;
use sluice::catalog::{Catalog, NoCatalog};
use sluice::config_store::{ConfigStore, ConfigStoreError};
use sluice::secrets::{SecretError, SecretResolver};
use sluice::sink::ObjectSink;
use sluice::sink::SinkError;
use sluice::sink::parquet::{ParquetCompression, ParquetSettings};
use sluice::sink::s3::S3Sink;
use sluice::source::connect::{ConnectError, connect_source};
use sluice::source::{Source, SourceError};
use sluice::state::StateStore;
use sluice::state::dynamo::DynamoStateStore;
use sluice::warehouse::SnowflakeError;
use sluice::warehouse::load::{Loader, WarehouseTarget};
use sluice::warehouse::snowflake::{PrivateKey, SnowflakeClient, SnowflakeConfig};
use sluice::{Pipeline, PipelineOptions};
use sluice_core::deploy::{Compression, DeployError, DeploymentSettings, SnowflakeSettings};
use sluice_core::output::OutputLocation;
use sluice_core::setup::STAGE_NAME;
use sluice_core::snowflake::ObjectName;
use sluice_core::staging::RAW_SCHEMA;
use sluice_core::{Config, SourceConfig};
use thiserror::Error;
use tokio::sync::{Mutex, OnceCell};

use crate::invoke::{Invoker, LambdaInvoker};

#[derive(Debug, Error)]
pub enum DeploymentError {
    #[error(transparent)]
    Settings(#[from] DeployError),
    #[error(transparent)]
    Config(#[from] ConfigStoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("Snowflake: {0}")]
    Snowflake(#[from] SnowflakeError),
    #[error("{setting}: {message}")]
    Setting {
        setting: &'static str,
        message: String,
    },
}

pub type Result<T, E = DeploymentError> = std::result::Result<T, E>;

/// How long a warm function reuses a source adapter, and so the secret it was built from,
/// before reading the secret again.
///
/// A rotation that changes the password is caught sooner, by the database refusing it (see
/// [`sluice::source::connect::RotatingSource`]). The bound is for what a refused password does not reveal: a secret
/// whose host, port or database changed (the old endpoint may still answer, or fail as
/// unreachable rather than as refused credentials), or an alternating-users rotation, whose
/// old user keeps working until the rotation after next
/// (<https://docs.aws.amazon.com/secretsmanager/latest/userguide/rotating-secrets_strategies.html>).
/// Fifteen minutes keeps such a change's reach far below the shortest rotation schedule
/// Secrets Manager allows (every four hours) and RDS's default (every seven days), for one
/// `GetSecretValue` per source per quarter hour and warm function: a quarter of what AWS's
/// own caching clients read, whose default refresh is an hour
/// (<https://docs.aws.amazon.com/secretsmanager/latest/userguide/rotate-secrets_managed.html>,
/// <https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-secrets-manager.html>,
/// <https://docs.aws.amazon.com/secretsmanager/latest/userguide/retrieving-secrets_cache-ref-secretcacheconfig.html>).
pub const SOURCE_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// Everything a function needs, built once per cold start.
pub struct Deployment {
    pub settings: DeploymentSettings,
    pub state: Arc<dyn StateStore>,
    pub invoker: Arc<dyn Invoker>,
    config: ConfigStore,
    sink: Arc<dyn ObjectSink>,
    prefix: Option<String>,
    catalog: Arc<dyn Catalog>,
    secrets: SecretResolver,
    /// Source adapters (and their connection settings) by source name, rebuilt when a
    /// source's config changes or the adapter is older than `source_max_age`.
    sources: Mutex<BTreeMap<String, CachedSource>>,
    source_max_age: Duration,
    /// The Snowflake loader, built on first use: only finalize loads, so the other functions
    /// neither wait for the key at start-up nor need to read its secret.
    loader: OnceCell<Option<Arc<Loader>>>,
}

/// A source adapter, the config it was built from, and when (its secret was read then).
struct CachedSource {
    config: SourceConfig,
    adapter: Arc<dyn Source>,
    built: Instant,
}

impl Deployment {
    /// Reads the settings from the process environment and builds every AWS client. A bad
    /// setting fails here, naming the variable, so the function never takes an event. The
    /// Snowflake loader is the exception: its key is a secret read on the first finalize (see
    /// [`Deployment::finalizing_pipeline`]), so a wrong key fails that run, in its record,
    /// rather than every start of a function that must be able to fail runs.
    pub async fn from_env() -> Result<Deployment> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let settings = DeploymentSettings::from_env(&env)?;
        // Endpoint overrides (local stack) come from the SDK's own AWS_ENDPOINT_URL[_<SERVICE>]
        // variables; object_store reads neither, so S3's is passed to it explicitly.
        let s3_endpoint = env
            .get("AWS_ENDPOINT_URL_S3")
            .or_else(|| env.get("AWS_ENDPOINT_URL"))
            .cloned();
        if let Some(url) = &s3_endpoint {
            sluice_core::output::check_endpoint_url(url).map_err(|message| {
                DeploymentError::Setting {
                    setting: "AWS_ENDPOINT_URL",
                    message,
                }
            })?;
        }
        let sdk = sluice::aws::sdk_config(&AwsEndpoint::default()).await;
        let invoker: Arc<dyn Invoker> = Arc::new(LambdaInvoker::new(&sdk));
        Deployment::build(settings, &sdk, s3_endpoint, invoker).await
    }

    /// Builds the clients for `settings` from `sdk`, fanning out through `invoker`.
    pub async fn build(
        settings: DeploymentSettings,
        sdk: &aws_config::SdkConfig,
        s3_endpoint: Option<String>,
        invoker: Arc<dyn Invoker>,
    ) -> Result<Deployment> {
        let s3 = AwsEndpoint {
            region: sdk.region().map(|r| r.to_string()),
            endpoint_url: s3_endpoint,
            credentials: None,
        };
        Deployment::build_with_s3(settings, sdk, &s3, invoker).await
    }

    /// [`Deployment::build`], with the Parquet files written to S3 as `s3` says: a local
    /// endpoint with fixed credentials (tests), where the object store would otherwise look
    /// for credentials in the environment.
    pub async fn build_with_s3(
        settings: DeploymentSettings,
        sdk: &aws_config::SdkConfig,
        s3: &AwsEndpoint,
        invoker: Arc<dyn Invoker>,
    ) -> Result<Deployment> {
        let OutputLocation::S3 { bucket, .. } = &settings.output else {
            return Err(DeploymentError::Setting {
                setting: "SLUICE_OUTPUT",
                message: "must be an s3:// location".into(),
            });
        };
        let sink: Arc<dyn ObjectSink> = Arc::new(S3Sink::new(bucket, s3)?);
        let catalog: Arc<dyn Catalog> = match &settings.glue_database {
            Some(db) => Arc::new(GlueCatalog::new(aws_sdk_glue::Client::new(sdk), db.clone())),
            None => Arc::new(NoCatalog),
        };
        let secrets = SecretResolver::new(sdk);
        Ok(Deployment {
            state: Arc::new(
                DynamoStateStore::new(sdk, settings.state_table.clone())
                    .with_run_retention(settings.run_retention),
            ),
            config: ConfigStore::new(sdk, settings.config_table.clone()),
            prefix: settings.output.prefix().map(str::to_owned),
            settings,
            invoker,
            sink,
            catalog,
            secrets,
            sources: Mutex::new(BTreeMap::new()),
            source_max_age: SOURCE_MAX_AGE,
            loader: OnceCell::new(),
        })
    }

    /// Reuses source adapters for at most `age` instead of [`SOURCE_MAX_AGE`] (zero reads
    /// every source's secret on every event).
    pub fn with_source_max_age(mut self, age: Duration) -> Deployment {
        self.source_max_age = age;
        self
    }

    /// The configuration as stored now (validated as it is read).
    pub async fn config(&self) -> Result<Config> {
        Ok(self.config.load().await?)
    }

    /// The pipeline that finalizes runs: no sources, and the Snowflake loader when the
    /// deployment has one (its key is read from Secrets Manager on first use).
    pub async fn finalizing_pipeline(&self) -> Result<Pipeline> {
        let loader = self.loader().await?;
        let pipeline = self.pipeline(&Config::default(), &[]).await?;
        Ok(match loader {
            Some(loader) => pipeline.with_warehouse(loader.clone()),
            None => pipeline,
        })
    }

    /// The Snowflake loader, when the deployment has one: built on first use (its key is read
    /// from Secrets Manager then), kept for the process's life.
    async fn loader(&self) -> Result<&Option<Arc<Loader>>> {
        self.loader
            .get_or_try_init(|| async {
                match &self.settings.snowflake {
                    Some(snowflake) => Ok::<_, DeploymentError>(Some(Arc::new(
                        snowflake_loader(snowflake, &self.secrets).await?,
                    ))),
                    None => Ok(None),
                }
            })
            .await
    }

    /// The Snowflake client and its settings, when the deployment loads into Snowflake (the
    /// loader's: `sluice.check_source` checks what runs will use).
    pub async fn warehouse(
        &self,
    ) -> Result<Option<(Arc<dyn sluice::warehouse::Warehouse>, &SnowflakeSettings)>> {
        let loader = self.loader().await?;
        Ok(match (loader, &self.settings.snowflake) {
            (Some(loader), Some(settings)) => Some((loader.warehouse().0.clone(), settings)),
            _ => None,
        })
    }

    /// The adapter of `source`, reused as [`Deployment::pipeline`] reuses it (a new one reads
    /// the source's secret).
    pub async fn source_adapter(&self, source: &SourceConfig) -> Result<Arc<dyn Source>> {
        let mut cache = self.sources.lock().await;
        self.cached_source(&mut cache, source).await
    }

    async fn cached_source(
        &self,
        cache: &mut BTreeMap<String, CachedSource>,
        source: &SourceConfig,
    ) -> Result<Arc<dyn Source>> {
        Ok(match cache.get(&source.name) {
            Some(cached)
                if cached.config == *source && cached.built.elapsed() < self.source_max_age =>
            {
                cached.adapter.clone()
            }
            _ => {
                let adapter = self.source(source).await?;
                cache.insert(
                    source.name.clone(),
                    CachedSource {
                        config: source.clone(),
                        adapter: adapter.clone(),
                        built: Instant::now(),
                    },
                );
                adapter
            }
        })
    }

    /// A pipeline over the sources named in `source_names` of `config`, reusing source
    /// adapters whose config has not changed since the last event and that are younger than
    /// the maximum age (else the secret is read again). It does not load into the warehouse
    /// (see [`Deployment::finalizing_pipeline`]).
    pub async fn pipeline(&self, config: &Config, source_names: &[&str]) -> Result<Pipeline> {
        let mut cache = self.sources.lock().await;
        let mut sources: BTreeMap<String, Arc<dyn Source>> = BTreeMap::new();
        for source in config
            .sources
            .iter()
            .filter(|s| source_names.contains(&s.name.as_str()))
        {
            let adapter = self.cached_source(&mut cache, source).await?;
            sources.insert(source.name.clone(), adapter);
        }
        let options = PipelineOptions {
            prefix: self.prefix.clone(),
            parquet: parquet_settings(&self.settings),
            lease_ttl: chrono::Duration::from_std(self.settings.lease_ttl)
                .unwrap_or(chrono::Duration::hours(2)),
            // A step waits for a slot of a capped source for at most half the plan timeout,
            // so the busy source is what its error names, not the plan's or the chunk's time
            // limit; a chunk that gave up is retried by Lambda a minute later, a plan fails
            // its run with the advice to raise connection.max_connections.
            source_wait: self.settings.plan_timeout / 2,
            ..PipelineOptions::default()
        };
        Ok(
            Pipeline::new(sources, self.sink.clone(), self.state.clone(), options)
                .with_catalog(self.catalog.clone())
                .with_connection_limits(
                    config
                        .sources
                        .iter()
                        .filter(|s| source_names.contains(&s.name.as_str())),
                ),
        )
    }

    /// A new adapter for `source` (see [`connect_source`]).
    async fn source(&self, source: &SourceConfig) -> Result<Arc<dyn Source>> {
        Ok(connect_source(source, &self.secrets).await?)
    }
}

fn parquet_settings(settings: &DeploymentSettings) -> ParquetSettings {
    ParquetSettings::sized(
        match settings.compression {
            Compression::Zstd => ParquetCompression::Zstd,
            Compression::Snappy => ParquetCompression::Snappy,
        },
        settings.row_group_mb,
        settings.file_mb,
        settings.part_mb,
    )
}

/// The warehouse loader: the Snowflake key is read from Secrets Manager here, once.
async fn snowflake_loader(
    settings: &SnowflakeSettings,
    secrets: &SecretResolver,
) -> Result<Loader> {
    let key = secrets
        .snowflake_key(
            &settings.private_key_secret,
            "SLUICE_SNOWFLAKE_PRIVATE_KEY_SECRET",
        )
        .await?;
    let key = PrivateKey::from_pkcs8_pem(&key.pem, key.passphrase.as_deref())?;
    let mut config = SnowflakeConfig::new(&settings.account, &settings.user);
    config.base_url = settings.url.clone();
    config.warehouse = settings.warehouse.clone();
    config.role = settings.role.clone();
    config.database = Some(settings.database.clone());
    let client = SnowflakeClient::new(config, key)?;
    Ok(Loader::new(
        Arc::new(client),
        WarehouseTarget {
            database: settings.database.clone(),
            stage: ObjectName::new(&settings.database, RAW_SCHEMA, STAGE_NAME),
        },
    ))
}
