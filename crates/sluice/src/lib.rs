//! sluice: the engine. Sources (PostgreSQL, MySQL/MariaDB), the Parquet sink (a local
//! directory or S3 through `object_store`), the Glue catalog, state stores (local JSON files,
//! DynamoDB), configuration in DynamoDB, credentials from Secrets Manager, the Snowflake
//! warehouse client, and the pipeline that drives a run through them.
//!
//! The pipeline only talks to the ports (`Source`, `ObjectSink`, `StateStore`, `Catalog`,
//! `Warehouse`); adapters
//! never leak into `sluice-core`, and nothing here collects a whole table in memory.

pub mod aws;
pub mod catalog;
pub mod check;
pub mod config_store;
pub mod ddb;
pub mod holder;
pub mod memory;
pub mod pipeline;
pub mod sample;
pub mod sample_mysql;
pub mod secrets;
pub mod sink;
pub mod source;
pub mod state;
mod tls;
pub mod validate;
pub mod warehouse;

pub use pipeline::{
    ChunkReport, Pipeline, PipelineError, PipelineOptions, PlanFailure, PlannedRun, Quiet,
    RunObserver, RunStart, Started,
};

/// An error with every cause after it, `a: b: c`. The AWS SDK and reqwest keep the useful
/// part (connection refused, a TLS failure) in the causes, out of their own short message.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
