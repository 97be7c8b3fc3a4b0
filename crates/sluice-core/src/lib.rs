//! sluice-core: the pure logic of sluice (configuration model and validation, run planning,
//! chunk ranges, SQL text, object key layout, run records and manifests).
//!
//! This crate must never perform I/O: no network, no files, no clocks it is not handed.
//! Everything here is unit-tested in milliseconds; adapters live in the `sluice` crate.

pub mod catalog;
pub mod cdc;
pub mod check;
pub mod config;
pub mod deploy;
pub mod doctor;
pub mod external_function;
pub mod filter;
pub mod gold;
pub mod ident;
pub mod late_writers;
pub mod layout;
pub mod manifest;
pub mod metrics;
pub mod output;
pub mod plan;
pub mod run;
pub mod schedule;
pub mod setup;
pub mod snowflake;
pub mod staging;
pub mod trend;
pub mod validate;

pub use config::{
    ColumnTypeOverride, Config, ConfigError, DeleteMode, DeletesConfig, Engine, InvalidDates,
    LoadMode, SourceConfig, SslMode, TableConfig,
};
pub use ident::{Dialect, TableName};
pub use plan::{RunPlan, ScalarKind, ScalarValue};
pub use run::{RunId, RunRecord, RunStatus};
