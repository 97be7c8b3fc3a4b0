//! The `Catalog` port: makes each run's files queryable where they land (Athena, Redshift
//! Spectrum, Snowflake external tables) by keeping a table definition per source table and
//! one partition per run's date/hour. Glue in AWS (`glue::GlueCatalog`); nothing locally.

pub mod glue;

use async_trait::async_trait;
use sluice_core::catalog::{CatalogSchemaError, HiveColumn};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("catalog table {table}: {source}")]
    Schema {
        table: String,
        #[source]
        source: CatalogSchemaError,
    },
    #[error(
        "Glue database '{database}' does not exist: create it (the SAM template does) or fix the configured database name"
    )]
    DatabaseMissing { database: String },
    #[error("Glue {action} on {target} was denied: {message} (check the function's IAM policy)")]
    AccessDenied {
        action: &'static str,
        target: String,
        message: String,
    },
    #[error("Glue {action} on {target} failed: {message}")]
    Service {
        action: &'static str,
        target: String,
        message: String,
    },
}

/// What a run asks of the catalog: the table as its files describe it, and the run's partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRegistration {
    /// Catalog table name (`sluice_core::catalog::catalog_table_name`).
    pub table: String,
    /// Shown in the catalog, e.g. `sluice: postgres shop/public.orders`.
    pub description: String,
    pub columns: Vec<HiveColumn>,
    /// The table's root, ending in `/`.
    pub location: String,
    /// `ingest_date`, `ingest_hour`.
    pub partition_values: [String; 2],
    /// The run's date/hour directory, ending in `/`.
    pub partition_location: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogOutcome {
    pub table_created: bool,
    /// Columns were added or widened.
    pub table_updated: bool,
    /// False when the partition already existed (a retried run, or a second run in the hour).
    pub partition_created: bool,
}

/// What an ended run's story asks of the catalog: the `sluice_runs` table over every table's
/// stories (its columns are [`sluice_core::run::RUN_STORY_COLUMNS`]), and the partition of
/// the run's table, located at that table's `_runs/` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoryRegistration {
    /// The table's nominal root (the output prefix), ending in `/`: queries read partitions,
    /// each at its own location.
    pub location: String,
    /// [`sluice_core::run::run_story_partition_values`].
    pub partition_values: [String; 4],
    /// The table's `_runs/` directory, ending in `/`.
    pub partition_location: String,
}

#[async_trait]
pub trait Catalog: Send + Sync {
    /// Creates or evolves the table, then registers the partition. Safe to repeat.
    async fn register_run(
        &self,
        registration: &TableRegistration,
    ) -> Result<CatalogOutcome, CatalogError>;

    /// Creates the runs table (or brings its definition up to date), then registers the
    /// partition of the story's table. Safe to repeat. Nothing where there is no catalog.
    async fn register_story(
        &self,
        _registration: &StoryRegistration,
    ) -> Result<CatalogOutcome, CatalogError> {
        Ok(CatalogOutcome::default())
    }
}

/// No catalog: local runs, or deployments that turned registration off.
pub struct NoCatalog;

#[async_trait]
impl Catalog for NoCatalog {
    async fn register_run(&self, _: &TableRegistration) -> Result<CatalogOutcome, CatalogError> {
        Ok(CatalogOutcome::default())
    }
}
