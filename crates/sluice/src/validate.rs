//! `sluice validate`, run against the real parts: the source's catalog and one snapshot of its
//! rows, the table's last completed run in the state store, and STAGING in the warehouse. The
//! comparisons themselves are `sluice_core::validate`'s.

use sluice_core::snowflake::manifest_schema;
use sluice_core::staging::TableTargets;
use sluice_core::validate::{
    Level, RangeRows, RowDiff, RowLayout, RowProblem, RowsResult, Side, TableValidation, Verdict,
    compare_metrics, compare_range, compare_schemas, key_range_sql, key_ranges, metrics_for,
    metrics_sql, not_yet_loaded_sql, row_layout, rows_sql, source_conditions, staging_conditions,
};
use sluice_core::{Dialect, Engine, RunId, RunRecord, RunStatus, TableConfig};
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

/// Keeps `validation` of `table`, which started at `started`, as a run of the table in
/// `state` (see [`RunRecord::validation_run`]), so `sluice status` tells it with the table's
/// loads. Returns the record kept.
pub async fn record_validation(
    state: &dyn StateStore,
    table: &TableConfig,
    started: chrono::DateTime<chrono::Utc>,
    validation: TableValidation,
) -> Result<RunRecord, StateError> {
    let record = RunRecord::validation_run(
        RunId::at(started),
        table.key(),
        started,
        chrono::Utc::now(),
        validation,
    );
    state.create_run(&record).await?;
    Ok(record)
}

/// How deep to look, and how much of the row level to keep.
#[derive(Debug, Clone, Copy)]
pub struct ValidateOptions {
    pub level: Level,
    /// The most differing rows the row level reports (all are counted).
    pub max_rows: usize,
    /// About how many rows each key range of the row level holds: what one query on each
    /// side returns, so it bounds the memory a range takes.
    pub rows_per_range: u64,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            level: Level::Metrics,
            max_rows: 20,
            rows_per_range: 50_000,
        }
    }
}

/// Validates one table: its schema on the three sides, then its metrics on the source and
/// in STAGING, then (at `Level::Rows`) its rows (see `sluice_core::validate`).
pub async fn validate_table(
    source: &dyn Source,
    warehouse: &dyn Warehouse,
    database: &str,
    state: &dyn StateStore,
    table: &TableConfig,
    options: ValidateOptions,
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
        .find(|r| r.status == RunStatus::Completed && r.kind().loads_rows())
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
        rows: None,
        rows_skipped: None,
    };
    if staging_columns.is_empty() || options.level == Level::Schema {
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
    let answers = source.query_text(table, &queries).await?;
    let first_row = |i: usize| answers.get(i).and_then(|rows| rows.first()).cloned();
    let source_values = first_row(0).unwrap_or_default();
    let not_yet_loaded = match pending_sql {
        Some(_) => Some(
            first_row(1)
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
    if options.level >= Level::Rows {
        match row_layout(
            table,
            files_schema.as_ref().unwrap_or(&source_schema),
            &staging_names,
        ) {
            Err(reason) => validation.rows_skipped = Some(reason),
            Ok(layout) => {
                let scope = Scope {
                    source,
                    warehouse,
                    table,
                    dialect,
                    source_from: name.quoted(dialect),
                    source_conditions: source_conditions(dialect, table, watermark.as_ref()),
                    staging_from: targets.staging.quoted(),
                    staging_conditions: staging_conditions(table, watermark.as_ref()),
                    layout: &layout,
                };
                let mut rows = compare_rows(&scope, options).await?;
                if rows.verdict == Verdict::Mismatch && not_yet_loaded.unwrap_or(0) > 0 {
                    rows.verdict = Verdict::Pending;
                }
                validation.rows = Some(rows);
            }
        }
    }
    info!(table = %key, verdict = ?validation.verdict(), metrics = validation.metrics.len(), "validated");
    Ok(validation)
}

/// Both sides of the row level, each with its query scope.
struct Scope<'a> {
    source: &'a dyn Source,
    warehouse: &'a dyn Warehouse,
    table: &'a TableConfig,
    dialect: Dialect,
    source_from: String,
    source_conditions: Vec<String>,
    staging_from: String,
    staging_conditions: Vec<String>,
    layout: &'a RowLayout,
}

impl Scope<'_> {
    async fn source_rows(&self, sql: String) -> Result<Vec<Vec<Option<String>>>, ValidateError> {
        Ok(self
            .source
            .query_text(self.table, &[sql])
            .await?
            .into_iter()
            .next()
            .unwrap_or_default())
    }

    async fn staging_rows(&self, sql: String) -> Result<Vec<Vec<Option<String>>>, ValidateError> {
        let result = self.warehouse.execute(&Statement::new(sql)).await?;
        Ok(result
            .rows
            .iter()
            .map(|row| row.iter().map(text_of).collect())
            .collect())
    }

    /// One range's rows on both sides, keyed by the key's canonical text: the row hash when
    /// `hashed`, else every column's canonical text.
    async fn range(
        &self,
        range: (i64, i64),
        hashed: bool,
    ) -> Result<(Vec<Vec<Option<String>>>, Vec<Vec<Option<String>>>), ValidateError> {
        let source = self
            .source_rows(rows_sql(
                Side::Source(self.dialect),
                &self.source_from,
                &self.source_conditions,
                self.layout,
                range,
                hashed,
            ))
            .await?;
        let staging = self
            .staging_rows(rows_sql(
                Side::Snowflake,
                &self.staging_from,
                &self.staging_conditions,
                self.layout,
                range,
                hashed,
            ))
            .await?;
        Ok((source, staging))
    }
}

/// The row level: ranges of the first key column cut from both sides' extremes, each range
/// read on both sides and compared; the first differing rows compared column by column.
async fn compare_rows(
    scope: &Scope<'_>,
    options: ValidateOptions,
) -> Result<RowsResult, ValidateError> {
    let first_key = &scope.layout.key[0].0;
    let mut source_queries = 1u64;
    let extremes = |row: Option<&Vec<Option<String>>>| {
        let value = |i: usize| {
            row.and_then(|r| r.get(i).cloned().flatten())
                .and_then(|v| v.parse::<i64>().ok())
        };
        (value(0), value(1), value(2).unwrap_or(0))
    };
    let source = scope
        .source_rows(key_range_sql(
            Side::Source(scope.dialect),
            &scope.source_from,
            &scope.source_conditions,
            first_key,
        ))
        .await?;
    let staging = scope
        .staging_rows(key_range_sql(
            Side::Snowflake,
            &scope.staging_from,
            &scope.staging_conditions,
            first_key,
        ))
        .await?;
    let (s_min, s_max, s_rows) = extremes(source.first());
    let (t_min, t_max, t_rows) = extremes(staging.first());
    // Keys that do not read as i64 (a MySQL bigint unsigned above 2^63) would leave no range
    // to compare, and an empty comparison must never pass.
    if (s_rows > 0 && (s_min.is_none() || s_max.is_none()))
        || (t_rows > 0 && (t_min.is_none() || t_max.is_none()))
    {
        return Err(ValidateError::Table {
            table: scope.table.key(),
            message: format!(
                "the row level cuts ranges on '{first_key}', whose extremes do not fit a 64-bit integer (source {:?}, STAGING {:?})",
                source.first(),
                staging.first()
            ),
        });
    }
    let min = s_min.into_iter().chain(t_min).min();
    let max = s_max.into_iter().chain(t_max).max();
    let ranges = match (min, max) {
        (Some(min), Some(max)) => key_ranges(
            min,
            max,
            u64::try_from(s_rows.max(t_rows)).unwrap_or(0),
            options.rows_per_range,
        ),
        _ => Vec::new(),
    };
    let key_width = scope.layout.key.len();
    let keyed = |rows: Vec<Vec<Option<String>>>| -> RangeRows {
        rows.into_iter()
            .map(|mut row| {
                let rest = row.split_off(key_width.min(row.len()));
                (row, rest.into_iter().next().flatten())
            })
            .collect()
    };
    let (mut missing, mut extra, mut different, mut compared) = (0u64, 0u64, 0u64, 0u64);
    let mut examples: Vec<RowDiff> = Vec::new();
    for range in &ranges {
        let (source, staging) = scope.range(*range, true).await?;
        source_queries += 1;
        compared += source.len() as u64;
        let mut found = Vec::new();
        compare_range(&keyed(source), &keyed(staging), &mut found);
        for diff in &found {
            match diff.problem {
                RowProblem::Missing => missing += 1,
                RowProblem::Extra => extra += 1,
                RowProblem::Different => different += 1,
            }
        }
        let room = options.max_rows.saturating_sub(examples.len());
        let mut shown: Vec<RowDiff> = found.into_iter().take(room).collect();
        if shown.iter().any(|d| d.problem == RowProblem::Different) {
            name_differing_columns(scope, *range, &mut shown).await?;
            source_queries += 1;
        }
        examples.extend(shown);
    }
    Ok(RowsResult {
        ranges: ranges.len() as u64,
        rows_compared: compared,
        missing,
        extra,
        different,
        examples,
        skipped: scope.layout.skipped.clone(),
        source_queries,
        verdict: if missing + extra + different == 0 {
            Verdict::Ok
        } else {
            Verdict::Mismatch
        },
    })
}

/// Reads one range again, column by column, to name the columns of its different rows.
async fn name_differing_columns(
    scope: &Scope<'_>,
    range: (i64, i64),
    diffs: &mut [RowDiff],
) -> Result<(), ValidateError> {
    let (source, staging) = scope.range(range, false).await?;
    let width = scope.layout.key.len();
    let by_key = |rows: Vec<Vec<Option<String>>>| {
        rows.into_iter()
            .map(|mut row| {
                let rest = row.split_off(width.min(row.len()));
                let key: Vec<String> = row
                    .into_iter()
                    .map(|k| k.unwrap_or_else(|| "NULL".into()))
                    .collect();
                (key, rest)
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (source, staging) = (by_key(source), by_key(staging));
    for diff in diffs
        .iter_mut()
        .filter(|d| d.problem == RowProblem::Different)
    {
        if let (Some(a), Some(b)) = (source.get(&diff.key), staging.get(&diff.key)) {
            diff.columns = scope
                .layout
                .columns
                .iter()
                .zip(a.iter().zip(b))
                .filter(|(_, (x, y))| x != y)
                .map(|((name, _), _)| name.clone())
                .collect();
        }
    }
    Ok(())
}

/// A warehouse value as text to compare with the source's `CAST(… AS text)`: numbers exactly
/// (unscaled digits and scale, never through a float).
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Text(t) => Some(t.clone()),
        Value::Number { unscaled, scale } => Some(decimal_text(*unscaled, *scale)),
        Value::Boolean(b) => Some(b.to_string()),
        // The shortest text that reads back as the same double; compared to a number of
        // digits (see `Reading::Float`), never as text.
        Value::Real(f) => Some(f.to_string()),
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
