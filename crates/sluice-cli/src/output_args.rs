//! Where `sluice run` writes: a local directory or `s3://bucket/prefix`, the Parquet sizing,
//! and the Glue catalog to register runs in. The same settings a Lambda deployment takes from
//! its environment (`SLUICE_OUTPUT`, `SLUICE_GLUE_DATABASE`, …).

use std::sync::Arc;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use sluice::catalog::glue::GlueCatalog;
use sluice::catalog::{Catalog, NoCatalog};
use sluice::sink::parquet::{ParquetCompression, ParquetSettings};
use sluice::sink::s3::S3Sink;
use sluice::sink::{LocalDirSink, ObjectSink};
use sluice_core::deploy;
use sluice_core::output::OutputLocation;

use crate::aws_args::AwsArgs;

#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Where Parquet files and manifests go: a local directory, or s3://bucket/prefix.
    #[arg(long, env = "SLUICE_OUTPUT", default_value = "sluice-data")]
    pub output: String,
    /// Register every run's files in this Glue database (table per source table, partition
    /// per run's date/hour). Needs an s3:// output. Unset: no catalog.
    #[arg(long, env = "SLUICE_GLUE_DATABASE")]
    pub glue_database: Option<String>,
    /// Parquet compression.
    #[arg(long, env = "SLUICE_PARQUET_COMPRESSION", value_enum, default_value_t = Compression::Zstd)]
    pub compression: Compression,
    /// Target row-group size in MiB (encoded).
    #[arg(long, env = "SLUICE_ROW_GROUP_MB", default_value_t = 32, value_parser = clap::value_parser!(u32).range(i64::from(deploy::ROW_GROUP_MB.0)..=i64::from(deploy::ROW_GROUP_MB.1)))]
    pub row_group_mb: u32,
    /// A file is closed and the next one started at this size in MiB.
    #[arg(long, env = "SLUICE_FILE_MB", default_value_t = 256, value_parser = clap::value_parser!(u32).range(i64::from(deploy::FILE_MB.0)..=i64::from(deploy::FILE_MB.1)))]
    pub file_mb: u32,
    /// Multipart upload part size in MiB (S3 needs at least 5; raised so 10,000 parts cover
    /// twice --file-mb).
    #[arg(long, env = "SLUICE_PART_MB", default_value_t = 10, value_parser = clap::value_parser!(u32).range(i64::from(deploy::PART_MB.0)..=i64::from(deploy::PART_MB.1)))]
    pub part_mb: u32,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Compression {
    Zstd,
    Snappy,
}

/// The adapters and settings built from [`OutputArgs`].
pub struct Output {
    pub sink: Arc<dyn ObjectSink>,
    pub catalog: Arc<dyn Catalog>,
    pub prefix: Option<String>,
    pub parquet: ParquetSettings,
    /// For people: where to look.
    pub location: String,
}

impl OutputArgs {
    pub async fn build(&self, aws: &AwsArgs) -> Result<Output> {
        // Everything is checked before anything is created, so a bad setting leaves no trace.
        let location = OutputLocation::parse("--output", &self.output)?;
        let glue_database = self
            .glue_database
            .as_deref()
            .map(str::trim)
            .filter(|db| !db.is_empty());
        if let Some(db) = glue_database {
            if matches!(location, OutputLocation::LocalDir(_)) {
                bail!("--glue-database needs an s3:// --output: Glue tables point at S3 locations");
            }
            sluice_core::catalog::check_database_name(db)
                .map_err(|e| anyhow::anyhow!("--glue-database '{db}': {e}"))?;
        }
        let endpoint = aws.endpoint();
        let (sink, prefix): (Arc<dyn ObjectSink>, Option<String>) = match &location {
            OutputLocation::LocalDir(dir) => (Arc::new(LocalDirSink::new(dir)?), None),
            OutputLocation::S3 { bucket, .. } => (
                Arc::new(S3Sink::new(bucket, &endpoint)?),
                location.prefix().map(str::to_owned),
            ),
        };
        let catalog: Arc<dyn Catalog> = match glue_database {
            None => Arc::new(NoCatalog),
            Some(db) => {
                let config = aws.sdk_config().await;
                Arc::new(GlueCatalog::new(aws_sdk_glue::Client::new(&config), db))
            }
        };
        let parquet = ParquetSettings::sized(
            match self.compression {
                Compression::Zstd => ParquetCompression::Zstd,
                Compression::Snappy => ParquetCompression::Snappy,
            },
            self.row_group_mb,
            self.file_mb,
            self.part_mb,
        );
        let location = match &location {
            OutputLocation::LocalDir(_) => sink.url_for(""),
            s3 => s3.to_string(),
        };
        Ok(Output {
            sink,
            catalog,
            prefix,
            parquet,
            location,
        })
    }
}
