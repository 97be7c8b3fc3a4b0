//! The warehouse step of a run, through the [`Warehouse`] port: make sure RAW and STAGING
//! exist and have every source column, COPY the manifest's files into RAW and check the rows
//! each file loaded against the manifest, then CALL the merge procedure and the gold
//! procedures with the run id.
//!
//! The SQL is generated in `sluice-core` (`snowflake`, `staging`); here it is only run. Every
//! value from data or config (the run id, schema and table names in catalog queries) travels
//! as a binding; identifiers are emitted quoted by the generators.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_core::manifest::Manifest;
use sluice_core::snowflake::{ObjectName, SqlGenError, copy_into_raw, manifest_schema};
use sluice_core::staging::{
    ExistingColumn, MergeSpec, StagingError, TableTargets, call_with_run_id, columns_query,
    count_run_rows, delete_run_rows, deletes_guard_query, evolve_table, keys_table_ddl,
    merge_log_columns, merge_log_ddl, merge_procedure_ddl, merged_keys_query,
    reconcile_procedure_ddl, snapshot_vanished_sql, soft_delete_columns, staging_columns,
    table_tables_sql,
};
use sluice_core::{DeleteMode, RunId, TableConfig};
use thiserror::Error;
use tracing::{info, instrument};

use super::{QueryResult, Statement, Value, Warehouse, WarehouseError};

/// Where the pipeline's warehouse objects are: the database every default name lives in, and
/// the external stage over the sink's data prefix (COPY names files relative to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarehouseTarget {
    pub database: String,
    pub stage: ObjectName,
}

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error(transparent)]
    Staging(#[from] StagingError),
    #[error(transparent)]
    Schema(#[from] SqlGenError),
    #[error("file {key} is not under the stage's prefix {prefix:?}; the stage cannot name it")]
    OutsideStage { key: String, prefix: String },
    #[error("COPY INTO {table}: file {file} loaded {loaded} rows, the manifest lists {expected}")]
    RowMismatch {
        table: String,
        file: String,
        expected: u64,
        loaded: u64,
    },
    #[error("COPY INTO {table}: {message}")]
    CopyResult { table: String, message: String },
    #[error(
        "{table} holds {holds} rows of run {run_id} after COPY loaded {loaded}: something else wrote the run's rows (or the delete before the COPY did not); nothing was merged"
    )]
    RunRowsMismatch {
        table: String,
        run_id: RunId,
        holds: u64,
        loaded: u64,
    },
    #[error(
        "{table}: {reason}; nothing in STAGING was changed. If the source really lost these rows, raise deletes.max_fraction (now {max_fraction}; 1 allows any share) and run again"
    )]
    DeleteGuard {
        table: String,
        reason: String,
        max_fraction: f64,
    },
}

impl LoadError {
    /// Whether the same call could succeed if tried again: the delete guard's verdict holds
    /// until the config or the source changes, so a retry only repeats it.
    pub fn is_final(&self) -> bool {
        matches!(self, LoadError::DeleteGuard { .. })
    }
}

/// Loads and merges runs into one warehouse.
pub struct Loader {
    warehouse: Arc<dyn Warehouse>,
    target: WarehouseTarget,
}

/// What the LOADING phase did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub files: usize,
    pub rows: u64,
}

impl Loader {
    pub fn new(warehouse: Arc<dyn Warehouse>, target: WarehouseTarget) -> Loader {
        Loader { warehouse, target }
    }

    /// Creates or evolves RAW and STAGING (and the generated merge procedure) for the
    /// manifest's schema, deletes the run's earlier RAW rows (a replay) and COPYs its files.
    /// `stage_prefix` is the key prefix the stage's URL points at (`None`: the bucket root).
    #[instrument(skip_all, fields(run_id = %manifest.run_id, table = %table.key()))]
    pub async fn load(
        &self,
        table: &TableConfig,
        manifest: &Manifest,
        stage_prefix: Option<&str>,
    ) -> Result<Loaded, LoadError> {
        let targets = TableTargets::resolve(table, &self.target.database);
        let schema = manifest_schema(&manifest.schema)?;
        let spec = MergeSpec::of(table);
        let schema = if spec.cdc {
            sluice_core::cdc::changes::with_change_columns(&schema)
        } else {
            schema
        };
        let staging = staging_columns(&schema, &spec, &targets.staging.quoted())?;
        let raw_columns = sluice_core::snowflake::schema_columns(&schema)?;

        self.run_all(table_tables_sql(&targets, &schema, &staging)?)
            .await?;

        let mut alters = evolve_table(
            &targets.raw,
            &self.columns(&targets.raw).await?,
            &raw_columns,
        )?;
        alters.extend(evolve_table(
            &targets.staging,
            &self.columns(&targets.staging).await?,
            &staging,
        )?);
        alters.extend(evolve_table(
            &targets.merge_log,
            &self.columns(&targets.merge_log).await?,
            &merge_log_columns(),
        )?);
        if !alters.is_empty() {
            info!(columns = alters.len(), "adding new source columns");
        }
        if targets.generated_merge {
            // Regenerated every run: the column list follows the source's.
            alters.push(merge_procedure_ddl(&targets, &schema, &spec)?);
        }
        self.run_all(alters).await?;

        self.copy_run_files(&targets.raw, manifest, stage_prefix)
            .await
    }

    /// Loads a key-set run's files into the table's keys table (creating it, and the reconcile
    /// procedure, as needed), replacing the run's earlier keys (a replay).
    #[instrument(skip_all, fields(run_id = %manifest.run_id, table = %table.key()))]
    pub async fn load_keys(
        &self,
        table: &TableConfig,
        manifest: &Manifest,
        stage_prefix: Option<&str>,
    ) -> Result<Loaded, LoadError> {
        let targets = TableTargets::resolve(table, &self.target.database);
        let schema = manifest_schema(&manifest.schema)?;
        let key_columns = sluice_core::snowflake::schema_columns(&schema)?;
        self.run_all(vec![
            format!(
                "CREATE SCHEMA IF NOT EXISTS {}.{}",
                sluice_core::snowflake::quote(&targets.keys.database),
                sluice_core::snowflake::quote(&targets.keys.schema)
            ),
            keys_table_ddl(&targets, &schema)?,
        ])
        .await?;
        let alters = evolve_table(
            &targets.keys,
            &self.columns(&targets.keys).await?,
            &key_columns,
        )?;
        self.run_all(alters).await?;
        self.copy_run_files(&targets.keys, manifest, stage_prefix)
            .await
    }

    /// Deletes the run's earlier rows from `table` (a replay), COPYs the manifest's files into
    /// it and checks every file loaded the rows the manifest lists.
    async fn copy_run_files(
        &self,
        table: &ObjectName,
        manifest: &Manifest,
        stage_prefix: Option<&str>,
    ) -> Result<Loaded, LoadError> {
        let prefix = stage_prefix
            .map(|p| format!("{}/", p.trim_end_matches('/')))
            .unwrap_or_default();
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        for file in &manifest.files {
            let relative =
                file.key
                    .strip_prefix(&prefix)
                    .ok_or_else(|| LoadError::OutsideStage {
                        key: file.key.clone(),
                        prefix: prefix.clone(),
                    })?;
            expected.insert(relative.to_owned(), file.rows);
        }
        self.warehouse
            .execute(&Statement::new(delete_run_rows(table)).bind(manifest.run_id.to_string()))
            .await?;
        let files: Vec<String> = expected.keys().cloned().collect();
        let mut loaded: BTreeMap<String, u64> = BTreeMap::new();
        for copy in copy_into_raw(table, &self.target.stage, &files) {
            let result = self.warehouse.execute(&Statement::new(copy)).await?;
            collect_loaded(&result, &files, &mut loaded).map_err(|message| {
                LoadError::CopyResult {
                    table: table.quoted(),
                    message,
                }
            })?;
        }
        for (file, rows) in &expected {
            let got = loaded.get(file).copied().unwrap_or(0);
            if got != *rows {
                return Err(LoadError::RowMismatch {
                    table: table.quoted(),
                    file: file.clone(),
                    expected: *rows,
                    loaded: got,
                });
            }
        }
        let rows = loaded.values().sum();
        // What the table holds of the run now must be what COPY just loaded, no more.
        let counted = self
            .warehouse
            .execute(&Statement::new(count_run_rows(table)).bind(manifest.run_id.to_string()))
            .await?;
        let holds = counted
            .scalar()
            .and_then(Value::as_i64)
            .and_then(|n| u64::try_from(n).ok());
        if holds != Some(rows) {
            return Err(LoadError::RunRowsMismatch {
                table: table.quoted(),
                run_id: manifest.run_id,
                holds: holds.unwrap_or(0),
                loaded: rows,
            });
        }
        info!(files = files.len(), rows, "copied into RAW");
        Ok(Loaded {
            files: files.len(),
            rows,
        })
    }

    /// A key-set run's reconciliation: deletes (or marks) the STAGING rows whose key the run
    /// did not read, through the reconcile procedure, after the delete guard. A table whose
    /// STAGING does not exist yet has nothing to reconcile.
    #[instrument(skip_all, fields(%run_id, table = %table.key()))]
    pub async fn reconcile(
        &self,
        table: &TableConfig,
        run_id: RunId,
    ) -> Result<serde_json::Value, LoadError> {
        let targets = TableTargets::resolve(table, &self.target.database);
        let spec = MergeSpec::of(table);
        let existing = self.columns(&targets.staging).await?;
        if existing.is_empty() {
            info!("STAGING does not exist yet; nothing to reconcile");
            return Ok(serde_json::json!({"inserted": 0, "updated": 0, "deleted": 0}));
        }
        // The merge log and the soft-delete columns may predate deletes on this table.
        let mut statements = vec![merge_log_ddl(&targets.merge_log)];
        statements.extend(evolve_table(
            &targets.merge_log,
            &self.columns(&targets.merge_log).await?,
            &merge_log_columns(),
        )?);
        if spec.deletes == DeleteMode::Soft {
            statements.extend(evolve_table(
                &targets.staging,
                &existing,
                &soft_delete_columns(),
            )?);
        }
        statements.push(reconcile_procedure_ddl(&targets, &spec)?);
        self.run_all(statements).await?;
        self.check_deletes(table, &targets, run_id).await?;
        let outcome = self
            .call_procedure(&targets.reconcile_procedure, run_id)
            .await?;
        info!(procedure = %targets.reconcile_procedure.quoted(), %outcome, "key set reconciled with STAGING");
        Ok(outcome)
    }

    /// CALLs the merge procedure with the run id; returns what it returned. Gold runs per
    /// batch, after all its inputs (see `crate::gold`).
    #[instrument(skip_all, fields(%run_id, table = %table.key()))]
    pub async fn merge(
        &self,
        table: &TableConfig,
        run_id: RunId,
    ) -> Result<serde_json::Value, LoadError> {
        let targets = TableTargets::resolve(table, &self.target.database);
        // A key-set table's deletes are made by its key-set runs (see [`Loader::reconcile`]);
        // a CDC table's are the log's own, not inferred from absence.
        if table.deletes.mode != DeleteMode::Off
            && !table.deletes_by_keyset()
            && table.load.mode != sluice_core::LoadMode::Cdc
        {
            self.check_deletes(table, &targets, run_id).await?;
        }
        let outcome = self
            .call_procedure(&targets.merge_procedure, run_id)
            .await?;
        info!(procedure = %targets.merge_procedure.quoted(), %outcome, "merged into STAGING");
        Ok(outcome)
    }

    /// [`Loader::merge`] of a cdc table's snapshot run: first the STAGING rows the snapshot
    /// does not hold are deleted or marked (behind the delete guard), as a full load's are;
    /// the log that would have said so is not read before a snapshot. Safe to repeat.
    pub async fn merge_cdc_snapshot(
        &self,
        table: &TableConfig,
        run_id: RunId,
    ) -> Result<serde_json::Value, LoadError> {
        let targets = TableTargets::resolve(table, &self.target.database);
        if let Some((sql, bindings)) = snapshot_vanished_sql(&targets, &MergeSpec::of(table)) {
            self.check_deletes(table, &targets, run_id).await?;
            let run = run_id.to_string();
            let statement = (0..bindings).fold(Statement::new(sql), |q, _| q.bind(run.as_str()));
            self.warehouse.execute(&statement).await?;
            info!("removed the STAGING rows the new snapshot does not hold");
        }
        self.merge(table, run_id).await
    }

    /// The distinct keys the generated merge procedure merged for `run_id` (its merge log's
    /// `keys`); `None` for a table with its own merge procedure, which keeps no such log.
    pub async fn merged_keys(
        &self,
        table: &TableConfig,
        run_id: RunId,
    ) -> Result<Option<u64>, LoadError> {
        let targets = TableTargets::resolve(table, &self.target.database);
        if !targets.generated_merge {
            return Ok(None);
        }
        let result = self
            .warehouse
            .execute(&Statement::new(merged_keys_query(&targets)).bind(run_id.to_string()))
            .await?;
        Ok(result
            .scalar()
            .and_then(Value::as_i64)
            .and_then(|n| u64::try_from(n).ok()))
    }

    /// CALLs `procedure` (the merge or the reconcile procedure) with the run id; returns what
    /// it returned.
    async fn call_procedure(
        &self,
        procedure: &ObjectName,
        run_id: RunId,
    ) -> Result<serde_json::Value, LoadError> {
        let returned = self
            .warehouse
            .execute(&Statement::new(call_with_run_id(procedure)).bind(run_id.to_string()))
            .await?;
        Ok(returned
            .scalar()
            .map(json_of)
            .unwrap_or(serde_json::Value::Null))
    }

    /// CALLs gold procedure `procedure` (as configured: `gold[].procedure`) with the batch's
    /// id, its one argument, under a request id derived from both: a second CALL of it for the
    /// batch (a duplicated gold event, or a retry while the first CALL still runs in Snowflake
    /// after its Lambda was cut off) gets the first one's outcome instead of running it again.
    /// The SQL API's resubmission rule: a request with an id Snowflake has seen and
    /// `retry=true` is not executed twice
    /// (<https://docs.snowflake.com/en/developer-guide/sql-api/submitting-requests>,
    /// "Resubmitting a request to execute SQL statements").
    #[instrument(skip_all, fields(batch_id, procedure))]
    pub async fn call_gold(&self, procedure: &str, batch_id: &str) -> Result<(), LoadError> {
        let name = sluice_core::staging::gold_procedure(procedure, &self.target.database);
        self.warehouse
            .execute_once(
                &sluice_core::gold::gold_request_id(batch_id, &name.quoted()),
                &Statement::new(call_with_run_id(&name)).bind(batch_id),
            )
            .await?;
        info!(procedure = %name.quoted(), batch_id, "gold procedure done");
        Ok(())
    }

    /// Refuses a merge that would delete (or mark) more of STAGING than
    /// `deletes.max_fraction` allows, or that read no rows while STAGING has some: what a
    /// broken source or a mistaken `where` looks like. Asked before the merge, so a refusal
    /// leaves STAGING as it was.
    async fn check_deletes(
        &self,
        table: &TableConfig,
        targets: &TableTargets,
        run_id: RunId,
    ) -> Result<(), LoadError> {
        let spec = MergeSpec::of(table);
        let run = run_id.to_string();
        let (guard, bindings) = deletes_guard_query(targets, &spec);
        let query = (0..bindings).fold(Statement::new(guard), |q, _| q.bind(run.as_str()));
        let counts = self.warehouse.execute(&query).await?;
        // A count that cannot be read must not read as 0: that would let every delete through.
        let count = |i: usize| {
            counts
                .rows
                .first()
                .and_then(|row| row.get(i))
                .and_then(Value::as_i64)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| LoadError::DeleteGuard {
                    table: targets.staging.quoted(),
                    reason: format!(
                        "the delete guard could not read its counts ({:?})",
                        counts.rows.first()
                    ),
                    max_fraction: table.deletes.max_fraction,
                })
        };
        let (live, vanished, read) = (count(0)?, count(1)?, count(2)?);
        let max_fraction = table.deletes.max_fraction;
        let verb = match table.deletes.mode {
            DeleteMode::Soft => "mark as deleted",
            _ => "delete",
        };
        let reason = if read == 0 && live > 0 && max_fraction < 1.0 {
            Some(format!(
                "run {run_id} read no rows, yet STAGING holds {live} live rows: it would {verb} them all"
            ))
        } else if live > 0 && vanished as f64 > max_fraction * live as f64 {
            Some(format!(
                "run {run_id} would {verb} {vanished} of the {live} live rows of STAGING ({:.1}%), more than deletes.max_fraction allows",
                100.0 * vanished as f64 / live as f64
            ))
        } else {
            None
        };
        info!(live, vanished, read, "deletes checked");
        match reason {
            Some(reason) => Err(LoadError::DeleteGuard {
                table: targets.staging.quoted(),
                reason,
                max_fraction,
            }),
            None => Ok(()),
        }
    }

    async fn run_all(&self, statements: Vec<String>) -> Result<(), LoadError> {
        if statements.is_empty() {
            return Ok(());
        }
        self.warehouse.execute_all(&statements).await?;
        Ok(())
    }

    async fn columns(&self, table: &ObjectName) -> Result<Vec<ExistingColumn>, LoadError> {
        Ok(existing_columns(self.warehouse.as_ref(), table).await?)
    }

    /// The warehouse this loader talks to, and the database its default names live in.
    pub fn warehouse(&self) -> (&Arc<dyn Warehouse>, &str) {
        (&self.warehouse, &self.target.database)
    }
}

/// A table's columns as `INFORMATION_SCHEMA.COLUMNS` describes them; none when it does not
/// exist.
pub async fn existing_columns(
    warehouse: &dyn Warehouse,
    table: &ObjectName,
) -> Result<Vec<ExistingColumn>, WarehouseError> {
    let result = warehouse
        .execute(
            &Statement::new(columns_query(table))
                .bind(table.schema.as_str())
                .bind(table.name.as_str()),
        )
        .await?;
    Ok(result
        .rows
        .iter()
        .filter_map(|row| {
            let number = |v: Option<&Value>| {
                v.and_then(Value::as_i64)
                    .and_then(|n| u32::try_from(n).ok())
            };
            Some(ExistingColumn {
                name: row.first()?.as_str()?.to_owned(),
                data_type: row.get(1)?.as_str()?.to_owned(),
                precision: number(row.get(2)),
                scale: number(row.get(3)),
            })
        })
        .collect())
}

/// Adds the rows each listed file loaded, from a COPY result (`file`, `rows_loaded`). The
/// result names files by their full URL, so they are matched by their stage-relative suffix.
fn collect_loaded(
    result: &QueryResult,
    files: &[String],
    loaded: &mut BTreeMap<String, u64>,
) -> Result<(), String> {
    let (Some(file_at), Some(rows_at)) = (
        result.column_index("file"),
        result.column_index("rows_loaded"),
    ) else {
        // "Copy executed with 0 files processed." has a single status column.
        return Ok(());
    };
    for row in &result.rows {
        let name = row.get(file_at).and_then(Value::as_str).unwrap_or_default();
        let rows = row
            .get(rows_at)
            .and_then(Value::as_i64)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| format!("no rows_loaded for {name}"))?;
        let file = files
            .iter()
            .filter(|f| name == f.as_str() || name.ends_with(&format!("/{f}")))
            .max_by_key(|f| f.len())
            .ok_or_else(|| format!("loaded {name}, which the manifest does not list"))?;
        *loaded.entry(file.clone()).or_insert(0) += rows;
    }
    Ok(())
}

/// A procedure's return value as JSON for the run record.
fn json_of(value: &Value) -> serde_json::Value {
    match value {
        Value::Variant(v) => v.clone(),
        Value::Null => serde_json::Value::Null,
        Value::Text(t) => serde_json::from_str(t).unwrap_or_else(|_| t.clone().into()),
        Value::Boolean(b) => (*b).into(),
        other => other
            .as_i64()
            .map(Into::into)
            .unwrap_or_else(|| format!("{other:?}").into()),
    }
}
