//! A deployment, as the Lambda functions see it: every client built once per cold start from
//! the function's environment (the SAM template sets it), and the pipeline for the current
//! configuration, which is read from DynamoDB on every event so a config change needs no
//! redeploy. Source adapters are kept across events while their config is unchanged, for at
//! most [`SOURCE_MAX_AGE`], and one whose credentials the database refuses reads its secret
//! again (see [`RotatingSource`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use sluice_core::deploy::{Compression, DeployError, DeploymentSettings, SnowflakeSettings};
use sluice_core::output::OutputLocation;
use sluice_core::setup::STAGE_NAME;
use sluice_core::snowflake::ObjectName;
use sluice_core::staging::RAW_SCHEMA;
use sluice_core::{Config, Engine, RunPlan, ScalarValue, SourceConfig, TableConfig};
use thiserror::Error;
use tokio::sync::{Mutex, OnceCell};
use tracing::info;

use crate::aws::AwsEndpoint;
use crate::catalog::glue::GlueCatalog;
use crate::catalog::{Catalog, NoCatalog};
use crate::config_store::{ConfigStore, ConfigStoreError};
use crate::invoke::{Invoker, LambdaInvoker};
use crate::secrets::{SecretError, SecretResolver};
use crate::sink::ObjectSink;
use crate::sink::SinkError;
use crate::sink::parquet::{ParquetCompression, ParquetSettings};
use crate::sink::s3::S3Sink;
use crate::source::mysql::MysqlSource;
use crate::source::postgres::PostgresSource;
use crate::source::{ChunkStream, Credentials, GatheredFacts, Source, SourceError};
use crate::state::StateStore;
use crate::state::dynamo::DynamoStateStore;
use crate::warehouse::SnowflakeError;
use crate::warehouse::load::{Loader, WarehouseTarget};
use crate::warehouse::snowflake::{PrivateKey, SnowflakeClient, SnowflakeConfig};
use crate::{Pipeline, PipelineOptions};

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
/// [`RotatingSource`]). The bound is for what a refused password does not reveal: a secret
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
        let sdk = crate::aws::sdk_config(&AwsEndpoint::default()).await;
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
        let loader = self
            .loader
            .get_or_try_init(|| async {
                match &self.settings.snowflake {
                    Some(snowflake) => Ok::<_, DeploymentError>(Some(Arc::new(
                        snowflake_loader(snowflake, &self.secrets).await?,
                    ))),
                    None => Ok(None),
                }
            })
            .await?;
        let pipeline = self.pipeline(&Config::default(), &[]).await?;
        Ok(match loader {
            Some(loader) => pipeline.with_warehouse(loader.clone()),
            None => pipeline,
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
            let adapter = match cache.get(&source.name) {
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
            };
            sources.insert(source.name.clone(), adapter);
        }
        let options = PipelineOptions {
            prefix: self.prefix.clone(),
            parquet: parquet_settings(&self.settings),
            lease_ttl: chrono::Duration::from_std(self.settings.lease_ttl)
                .unwrap_or(chrono::Duration::hours(2)),
            ..PipelineOptions::default()
        };
        Ok(
            Pipeline::new(sources, self.sink.clone(), self.state.clone(), options)
                .with_catalog(self.catalog.clone()),
        )
    }

    /// A new adapter for `source`: one that re-reads its secret when the database refuses
    /// the credentials if it has a secret, else the engine's own.
    async fn source(&self, source: &SourceConfig) -> Result<Arc<dyn Source>> {
        if source.connection.secret_arn.is_none() {
            return Ok(source_adapter(source, None)?);
        }
        let (resolved, credentials) = self.secrets.resolve(source).await?;
        let adapter = source_adapter(&resolved, credentials.as_ref())?;
        Ok(Arc::new(RotatingSource {
            config: source.clone(),
            secrets: self.secrets.clone(),
            current: Mutex::new(Current {
                generation: 0,
                adapter,
            }),
        }))
    }
}

/// A source adapter built from the source's secret that, when the database refuses the
/// credentials, reads the secret again, rebuilds itself and retries the failed step once.
///
/// RDS rotates the secrets it manages every seven days by default
/// (<https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-secrets-manager.html>), and
/// a single-user rotation changes the password in the database before the secret's
/// `AWSCURRENT` version moves to the new one
/// (<https://docs.aws.amazon.com/secretsmanager/latest/userguide/rotate-secrets_how.html>):
/// connections already open keep working, new ones made with the old password are refused
/// (<https://docs.aws.amazon.com/secretsmanager/latest/userguide/rotating-secrets_strategies.html>).
/// A warm function would otherwise use its first read until it is recycled. Every step of a
/// source opens its own connection before it reads anything, so a step refused at connect
/// has done nothing and is safe to run again.
///
/// Only refused credentials are retried, and only once per step: a wrong secret fails with
/// the refusal after one more read. A step refused in the seconds between the password change
/// and the label move (managed rotation "typically completes within one minute", and "new
/// connections that retrieve the secret may get the previous version"
/// (<https://docs.aws.amazon.com/secretsmanager/latest/userguide/rotate-secrets_managed.html>))
/// fails like any other: Lambda retries a failed chunk's event, and a failed plan is a failed
/// row the caller can run again.
struct RotatingSource {
    /// The source as configured, secret unresolved.
    config: SourceConfig,
    secrets: SecretResolver,
    /// Held while the secret is re-read, so steps refused at once share one read.
    current: Mutex<Current>,
}

struct Current {
    /// Counts rebuilds: a step refused by an adapter that was since replaced retries with the
    /// replacement instead of reading the secret again.
    generation: u64,
    adapter: Arc<dyn Source>,
}

impl RotatingSource {
    async fn current(&self) -> (u64, Arc<dyn Source>) {
        let current = self.current.lock().await;
        (current.generation, current.adapter.clone())
    }

    /// The adapter to retry with after `refused` (from the adapter of `generation`): built
    /// from a fresh read of the secret, unless another step already rebuilt it.
    async fn rebuilt(
        &self,
        generation: u64,
        refused: SourceError,
    ) -> Result<Arc<dyn Source>, SourceError> {
        let mut current = self.current.lock().await;
        if current.generation != generation {
            return Ok(current.adapter.clone());
        }
        let name = &self.config.name;
        // The source's name only: neither the error (it names the user) nor the secret.
        info!(source = %name, "the database refused the source's credentials; reading its secret again and retrying once");
        let (resolved, credentials) =
            self.secrets
                .resolve(&self.config)
                .await
                .map_err(|e| SourceError::Config {
                    source_name: name.clone(),
                    message: format!(
                        "the database refused the credentials ({refused}), and reading the secret again failed: {e}"
                    ),
                })?;
        let adapter = source_adapter(&resolved, credentials.as_ref())?;
        *current = Current {
            generation: generation + 1,
            adapter: adapter.clone(),
        };
        Ok(adapter)
    }
}

/// A retried step's error: a second refusal says the secret was read again, so whoever reads
/// it knows the secret itself is wrong, not stale.
fn after_reread(e: SourceError) -> SourceError {
    match e {
        SourceError::Auth {
            source_name,
            user,
            message,
        } => SourceError::Auth {
            source_name,
            user,
            message: format!("{message}; refused again after reading the secret again"),
        },
        other => other,
    }
}

#[async_trait]
impl Source for RotatingSource {
    fn engine(&self) -> Engine {
        self.config.engine
    }

    async fn gather_facts(
        &self,
        table: &TableConfig,
        window_lower: Option<&ScalarValue>,
    ) -> Result<GatheredFacts, SourceError> {
        let (generation, adapter) = self.current().await;
        match adapter.gather_facts(table, window_lower).await {
            Err(e) if e.is_auth() => self
                .rebuilt(generation, e)
                .await?
                .gather_facts(table, window_lower)
                .await
                .map_err(after_reread),
            done => done,
        }
    }

    async fn extract_chunk(&self, plan: &RunPlan, chunk: u32) -> Result<ChunkStream, SourceError> {
        let (generation, adapter) = self.current().await;
        match adapter.extract_chunk(plan, chunk).await {
            Err(e) if e.is_auth() => self
                .rebuilt(generation, e)
                .await?
                .extract_chunk(plan, chunk)
                .await
                .map_err(after_reread),
            done => done,
        }
    }
}

/// The adapter for a source's engine, with the credentials the caller resolved.
pub fn source_adapter(
    source: &SourceConfig,
    credentials: Option<&Credentials>,
) -> Result<Arc<dyn Source>, SourceError> {
    Ok(match source.engine {
        Engine::Postgres => Arc::new(PostgresSource::from_config(source, credentials)?),
        Engine::Mysql => Arc::new(MysqlSource::from_config(source, credentials)?),
    })
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
