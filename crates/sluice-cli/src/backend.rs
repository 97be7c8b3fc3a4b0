//! Where a command finds its configuration and its state: a YAML file or the DynamoDB config
//! table, a local state directory or the DynamoDB state table (production's homes), chosen by
//! flags and their environment variables. Every command picks them the same way here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use sluice::config_store::ConfigStore;
use sluice::state::StateStore;
use sluice::state::dynamo::DynamoStateStore;
use sluice::state::local::LocalStateStore;
use sluice_core::Config;

use crate::aws_args::AwsArgs;

#[derive(Args, Clone)]
pub struct StateArgs {
    /// DynamoDB table of watermarks, leases and run records (production's state); without
    /// it, the local --state-dir.
    #[arg(long, env = "SLUICE_STATE_TABLE")]
    pub state_table: Option<String>,
    /// Directory holding watermarks, leases and run records when no --state-table is given.
    #[arg(long, env = "SLUICE_STATE_DIR", default_value = ".sluice")]
    pub state_dir: PathBuf,
    /// How long the --state-table keeps a run after it started (DynamoDB TTL; set it to the
    /// deployment's RunRetention): runs this command records expire then, and `status` says
    /// where history ends. A duration from 2d to 3650d. The local --state-dir keeps every run.
    #[arg(long, env = "SLUICE_RUN_RETENTION", default_value = "90d", value_parser = run_retention)]
    pub run_retention: Duration,
}

fn run_retention(text: &str) -> Result<Duration, String> {
    sluice_core::deploy::parse_run_retention(text)
}

impl StateArgs {
    /// The store, and how to name it in messages.
    pub async fn open(&self, aws: &AwsArgs) -> Result<(Arc<dyn StateStore>, String)> {
        match &self.state_table {
            Some(table) => {
                let sdk = aws.sdk_config().await;
                Ok((
                    Arc::new(
                        DynamoStateStore::new(&sdk, table).with_run_retention(self.run_retention),
                    ),
                    format!("DynamoDB table {table}"),
                ))
            }
            None => Ok((
                Arc::new(LocalStateStore::open(&self.state_dir)?),
                self.state_dir.display().to_string(),
            )),
        }
    }

    /// Like [`StateArgs::open`], but a local directory must already exist (reading commands
    /// never create one).
    pub async fn open_existing(&self, aws: &AwsArgs) -> Result<(Arc<dyn StateStore>, String)> {
        if self.state_table.is_none() && !self.state_dir.exists() {
            bail!(
                "no state directory at {} (run `sluice run` first, or pass --state-dir or --state-table)",
                self.state_dir.display()
            );
        }
        self.open(aws).await
    }

    /// Where the run history of a DynamoDB state table ends, for the foot of `sluice status`;
    /// `None` for a local directory, which keeps every run.
    pub fn history_limit(&self) -> Option<Duration> {
        self.state_table.as_ref().map(|_| self.run_retention)
    }

    /// How `sluice status` reaches this state again.
    pub fn status_hint(&self) -> String {
        match &self.state_table {
            Some(table) => format!("sluice status --state-table {table}"),
            None => format!("sluice status --state-dir {}", self.state_dir.display()),
        }
    }
}

#[derive(Args, Clone)]
pub struct ConfigArgs {
    /// Configuration file (YAML). Wins over --config-table.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// DynamoDB table holding the configuration (production's), as `sluice config push`
    /// writes it.
    #[arg(long, env = "SLUICE_CONFIG_TABLE")]
    pub config_table: Option<String>,
}

impl ConfigArgs {
    /// The validated configuration, and where it came from.
    pub async fn load(&self, aws: &AwsArgs) -> Result<(Config, String)> {
        match (&self.config, &self.config_table) {
            (Some(file), _) => Ok((load_file(file)?, file.display().to_string())),
            (None, Some(table)) => {
                let store = config_store(aws, table).await;
                let config = store.load().await?;
                for warning in sluice::config_store::warnings(&config) {
                    eprintln!("warning: {warning}");
                }
                Ok((config, format!("config table {table}")))
            }
            (None, None) => bail!(
                "no configuration: give --config FILE or --config-table TABLE (env SLUICE_CONFIG_TABLE)"
            ),
        }
    }
}

pub async fn config_store(aws: &AwsArgs, table: &str) -> ConfigStore {
    ConfigStore::new(&aws.sdk_config().await, table)
}

/// Reads and validates a configuration file, printing its warnings.
pub fn load_file(path: &PathBuf) -> Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config = Config::from_yaml(&text, &path.display().to_string())?;
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    Ok(config)
}
