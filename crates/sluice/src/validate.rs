//! `sluice validate`, run against the real parts: the source's catalog and one snapshot of its
//! rows, the table's last completed run in the state store, and STAGING in the warehouse. The
//! comparisons themselves are `sluice_core::validate`'s.

use sluice_core::snowflake::manifest_schema;
use sluice_core::staging::TableTargets;
use sluice_core::validate::{
    Side, TableValidation, compare_metrics, compare_schemas, metrics_for, metrics_sql,
    not_yet_loaded_sql, source_conditions, staging_conditions,
};
use sluice_core::{Dialect, Engine, RunStatus, TableConfig};
use thiserror::Error;
use tracing::info;

use crate::pipeline::{PipelineError, file_schema_of};
use crate::source::{Source, SourceError};
use crate::state::{StateError, StateStore};
use crate::warehouse::load::existing_columns;
use crate::warehouse::{Statement, Value, Warehouse, WarehouseError};

#[derive(Debug, Error)]
pub enum ValidateError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error("table {table}: {message}")]
    Table { table: String, message: String },
}

/// How many of a table's latest runs are searched for its last completed one.
const RUNS_SEARCHED: usize = 50;

/// Validates one table: its schema on the three sides, then its metrics on the source and
/// in STAGING (see `sluice_core::validate`).
pub async fn validate_table(
    source: &dyn Source,
    warehouse: &dyn Warehouse,
    database: &str,
    state: &dyn StateStore,
    table: &TableConfig,
) -> Result<TableValidation, ValidateError> {
    let key = table.key();
    let table_error = |message: String| ValidateError::Table {
        table: key.clone(),
        message,
    };
    let targets = TableTargets::resolve(table, database);
    let name = table.table_name().map_err(table_error)?;
    let dialect = match source.engine() {
        Engine::Postgres => Dialect::Postgres,
        Engine::Mysql => Dialect::Mysql,
    };

    let source_schema = file_schema_of(source, table).await?;
    let watermark = state.table_state(&key).await?.watermark;
    let last = match state
        .list_runs(Some(&key), RUNS_SEARCHED)
        .await?
        .into_iter()
        .find(|r| r.status == RunStatus::Completed)
    {
        Some(header) => state.get_run(header.run_id).await?,
        None => None,
    };
    let files_schema = match last.as_ref().and_then(|r| r.chunks.values().next()) {
        Some(chunk) => Some(
            manifest_schema(&chunk.schema)
                .map_err(|e| table_error(format!("the last run's schema: {e}")))?,
        ),
        None => None,
    };
    let staging_columns = existing_columns(warehouse, &targets.staging).await?;
    let schema = compare_schemas(
        table,
        &source_schema,
        files_schema.as_ref(),
        &staging_columns,
    )
    .map_err(|e| table_error(e.to_string()))?;
    let mut validation = TableValidation {
        table: key.clone(),
        staging: targets.staging.quoted(),
        up_to: watermark.clone().filter(|_| table.load.cursor.is_some()),
        not_yet_loaded: None,
        schema,
        metrics: Vec::new(),
    };
    if staging_columns.is_empty() {
        return Ok(validation);
    }

    let staging_names: Vec<String> = staging_columns.into_iter().map(|c| c.name).collect();
    let metrics = metrics_for(
        table,
        files_schema.as_ref().unwrap_or(&source_schema),
        &staging_names,
    );
    let mut queries = vec![metrics_sql(
        Side::Source(dialect),
        &name.quoted(dialect),
        &source_conditions(dialect, table, watermark.as_ref()),
        &metrics,
    )];
    let pending_sql = not_yet_loaded_sql(dialect, table, &name, watermark.as_ref());
    queries.extend(pending_sql.clone());
    // Both in one snapshot: the rows compared and the rows past the watermark.
    let answers = source.aggregate(table, &queries).await?;
    let source_values = answers.first().cloned().unwrap_or_default();
    let not_yet_loaded = match pending_sql {
        Some(_) => Some(
            answers
                .get(1)
                .and_then(|row| row.first().cloned().flatten())
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| table_error("counting the rows past the watermark".into()))?,
        ),
        None => None,
    };
    let staging_sql = metrics_sql(
        Side::Snowflake,
        &targets.staging.quoted(),
        &staging_conditions(table, watermark.as_ref()),
        &metrics,
    );
    let result = warehouse.execute(&Statement::new(staging_sql)).await?;
    let staging_values: Vec<Option<String>> = result
        .rows
        .first()
        .map(|row| row.iter().map(text_of).collect())
        .unwrap_or_default();
    validation.not_yet_loaded = not_yet_loaded;
    validation.metrics = compare_metrics(
        &metrics,
        &source_values,
        &staging_values,
        not_yet_loaded.unwrap_or(0) > 0,
    );
    info!(table = %key, verdict = ?validation.verdict(), metrics = validation.metrics.len(), "validated");
    Ok(validation)
}

/// A warehouse value as text to compare with the source's `CAST(… AS text)`: numbers exactly
/// (unscaled digits and scale, never through a float).
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Text(t) => Some(t.clone()),
        Value::Number { unscaled, scale } => Some(decimal_text(*unscaled, *scale)),
        Value::Boolean(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn decimal_text(unscaled: i128, scale: u32) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn warehouse_numbers_render_exactly() {
        use super::decimal_text;
        assert_eq!(decimal_text(24874822500, 2), "248748225.00");
        assert_eq!(decimal_text(-5, 3), "-0.005");
        assert_eq!(decimal_text(42, 0), "42");
    }
}
