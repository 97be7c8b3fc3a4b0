//! Source adapters from configuration: the engine's adapter for a source, and one built from
//! a Secrets Manager secret that reads the secret again when the database refuses the
//! credentials (see [`RotatingSource`]).

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use sluice_core::{Engine, RunPlan, ScalarValue, SourceConfig, TableConfig};
use tokio::sync::Mutex;
use tracing::info;

use crate::secrets::{SecretError, SecretResolver};
use crate::source::mysql::MysqlSource;
use crate::source::postgres::PostgresSource;
use crate::source::{ChunkStream, Credentials, GatheredFacts, Source, SourceError};

/// An adapter for `source`: one that re-reads its secret when the database refuses the
/// credentials if it has a secret, else the engine's own. Errors name the source or the
/// secret's setting, never its value.
pub async fn connect_source(
    source: &SourceConfig,
    secrets: &SecretResolver,
) -> Result<Arc<dyn Source>, ConnectError> {
    if source.connection.secret_arn.is_none() {
        return Ok(source_adapter(source, None)?);
    }
    let (resolved, credentials) = secrets.resolve(source).await?;
    let adapter = source_adapter(&resolved, credentials.as_ref())?;
    Ok(Arc::new(RotatingSource {
        config: source.clone(),
        secrets: secrets.clone(),
        current: Mutex::new(Current {
            generation: 0,
            adapter,
        }),
    }))
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Source(#[from] SourceError),
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
pub struct RotatingSource {
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

/// One step of `$self`'s adapter, `$call` (naming the adapter `$adapter`), retried once with
/// an adapter built from a fresh read of the secret when the database refused the
/// credentials.
macro_rules! with_reread {
    ($self:ident, $adapter:ident => $call:expr) => {{
        let (generation, $adapter) = $self.current().await;
        match $call.await {
            Err(e) if e.is_auth() => {
                let $adapter = $self.rebuilt(generation, e).await?;
                $call.await.map_err(after_reread)
            }
            done => done,
        }
    }};
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
        with_reread!(self, adapter => adapter.gather_facts(table, window_lower))
    }

    async fn extract_chunk(&self, plan: &RunPlan, chunk: u32) -> Result<ChunkStream, SourceError> {
        with_reread!(self, adapter => adapter.extract_chunk(plan, chunk))
    }

    async fn query_text(
        &self,
        table: &TableConfig,
        queries: &[String],
    ) -> Result<Vec<Vec<Vec<Option<String>>>>, SourceError> {
        with_reread!(self, adapter => adapter.query_text(table, queries))
    }

    async fn chunk_schema(&self, plan: &RunPlan) -> Result<SchemaRef, SourceError> {
        with_reread!(self, adapter => adapter.chunk_schema(plan))
    }

    async fn cdc_facts(
        &self,
        table: &TableConfig,
        watermark: Option<u64>,
    ) -> Result<sluice_core::plan::CdcFacts, SourceError> {
        with_reread!(self, adapter => adapter.cdc_facts(table, watermark))
    }

    async fn setup_cdc(&self, table: &TableConfig) -> Result<Vec<String>, SourceError> {
        with_reread!(self, adapter => adapter.setup_cdc(table))
    }

    async fn check_cdc(&self, table: &TableConfig) -> Result<Vec<String>, SourceError> {
        with_reread!(self, adapter => adapter.check_cdc(table))
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
