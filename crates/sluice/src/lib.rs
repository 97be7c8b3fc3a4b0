//! sluice: the engine. Sources (PostgreSQL, MySQL/MariaDB), the Parquet sink (local directory through
//! `object_store`), state stores (local JSON files) and the pipeline that drives a run
//! through them.
//!
//! The pipeline only talks to the ports (`Source`, `ObjectSink`, `StateStore`); adapters
//! never leak into `sluice-core`, and nothing here collects a whole table in memory.

pub mod pipeline;
pub mod sample;
pub mod sample_mysql;
pub mod sink;
pub mod source;
pub mod state;

pub use pipeline::{
    Pipeline, PipelineError, PipelineOptions, PlanFailure, PlannedRun, Quiet, RunObserver,
};
