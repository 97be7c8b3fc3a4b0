//! The RAW → STAGING → GOLD SQL of one table: where its objects live, the STAGING table, the
//! generated merge procedure, additive schema changes, and the calls the pipeline makes.
//! Pure text, unit-tested as such; the `sluice` crate runs it through the warehouse port.
//!
//! The merge procedure keeps to a small subset of Snowflake Scripting (`BEGIN stmt; …;
//! RETURN expr; END;` with `:RUN_ID` in statements) so the local stand-in runs the same text
//! Snowflake does. Its counts are computed by queries into a merge log table instead of
//! `SQLROWCOUNT`, which the stand-in lacks.
//!
//! How a row wins:
//! - with a cursor (incremental loads, or full loads that name one), the row with the greatest
//!   cursor; ties inside a run go to the later file and row; STAGING is updated only when the
//!   incoming cursor is greater than the stored one, so a replay (equal cursor) changes nothing
//!   and an older run never overwrites a newer row;
//! - without a cursor (full loads), the run: run ids are ULIDs and sort by start time, so a
//!   row is updated only by a later run than the one that last wrote it.
//!
//! Rows gone from the source (`deletes:`): a key STAGING holds and the run's RAW rows do not
//! (full loads), or that the latest key set does not hold (incremental tables: a key-set run
//! loads every primary key into `RAW.<table>_KEYS` and calls the reconcile procedure), is
//! deleted (`hard`) or marked `_sluice_deleted` (`soft`); a marked row that comes back is live
//! again. These steps (and, with deletes, the whole merge) act only while no later run has
//! been merged, so replaying an older run can neither resurrect nor delete a row a later run
//! decided on; replaying the latest run finds nothing left to do. A key set never takes a row
//! a later run wrote (`_sluice_run_id` greater than its own): that row may have arrived after
//! the key set's snapshot.

use arrow_schema::Schema;

use crate::catalog::catalog_table_name;
use crate::cdc::changes::{
    CHANGE_COLUMNS, OP_COLUMN, SEQ_COLUMN, UNCHANGED_COLUMN, unchanged_marker,
};
use crate::config::{DeleteMode, TableConfig};
use crate::snowflake::{
    FILE_COLUMN, ObjectName, ROW_COLUMN, SnowflakeType, SqlGenError, column_type, quote,
    string_literal,
};

/// The run id column the files carry.
pub const RUN_ID_COLUMN: &str = "_sluice_run_id";
/// The extraction time column the files carry.
pub const EXTRACTED_AT_COLUMN: &str = "_sluice_extracted_at";
/// Soft deletes: whether the source deleted the row, and when the merge saw it gone.
pub const DELETED_COLUMN: &str = "_sluice_deleted";
pub const DELETED_AT_COLUMN: &str = "_sluice_deleted_at";
/// Default schema names for the layers.
pub const RAW_SCHEMA: &str = "RAW";
pub const STAGING_SCHEMA: &str = "STAGING";
pub const GOLD_SCHEMA: &str = "GOLD";

/// Where one table's objects live in the warehouse, fully qualified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableTargets {
    pub raw: ObjectName,
    pub staging: ObjectName,
    /// The merge procedure to call; the generated one unless the config names another.
    pub merge_procedure: ObjectName,
    /// Whether `merge_procedure` is sluice's generated one (so sluice may (re)create it).
    pub generated_merge: bool,
    /// Holds the counts of every merge, keyed by run id (next to STAGING).
    pub merge_log: ObjectName,
    /// The primary keys of key-set runs (next to RAW).
    pub keys: ObjectName,
    /// Deletes (or marks) the STAGING rows a key-set run did not find (next to STAGING).
    pub reconcile_procedure: ObjectName,
}

impl TableTargets {
    /// The targets of `table` in `database`: the config's names (`NAME`, `SCHEMA.NAME` or
    /// `DATABASE.SCHEMA.NAME`, validated by the config) or, by default,
    /// `RAW.<SOURCE>_<SCHEMA>_<TABLE>` / `STAGING.<same>` and `STAGING.MERGE_<same>`, upper
    /// case so they can be typed unquoted.
    pub fn resolve(table: &TableConfig, database: &str) -> TableTargets {
        let t = &table.target;
        // The Glue table's name, upper case: one naming rule for every layer.
        let base = catalog_table_name(&table.source, &table.table).to_ascii_uppercase();
        let name = |given: &Option<String>, schema: &str, default: &str| match given {
            Some(given) => qualify(given, database, schema),
            None => ObjectName::new(database, schema, default),
        };
        let raw = name(&t.raw_table, RAW_SCHEMA, &base);
        let staging = name(&t.staging_table, STAGING_SCHEMA, &base);
        let merge_procedure = match &t.merge_procedure {
            Some(given) => qualify(given, database, &staging.schema),
            None => ObjectName::new(
                &staging.database,
                &staging.schema,
                &format!("MERGE_{}", staging.name),
            ),
        };
        TableTargets {
            merge_log: ObjectName::new(
                &staging.database,
                &staging.schema,
                &format!("{}_MERGES", staging.name),
            ),
            keys: ObjectName::new(&raw.database, &raw.schema, &format!("{}_KEYS", raw.name)),
            reconcile_procedure: ObjectName::new(
                &staging.database,
                &staging.schema,
                &format!("RECONCILE_{}", staging.name),
            ),
            raw,
            generated_merge: t.merge_procedure.is_none(),
            merge_procedure,
            staging,
        }
    }
}

/// A gold procedure of the configuration (`gold[].procedure`), in schema `GOLD` of `database`
/// unless it says otherwise.
pub fn gold_procedure(name: &str, database: &str) -> ObjectName {
    qualify(name, database, GOLD_SCHEMA)
}

/// `NAME`, `SCHEMA.NAME` or `DATABASE.SCHEMA.NAME`, the missing parts from the defaults.
pub(crate) fn qualify(name: &str, database: &str, schema: &str) -> ObjectName {
    match name.split('.').collect::<Vec<_>>().as_slice() {
        [d, s, n] => ObjectName::new(d, s, n),
        [s, n] => ObjectName::new(database, s, n),
        _ => ObjectName::new(database, schema, name),
    }
}

/// What the merge needs to know about a table besides its files' schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeSpec {
    pub primary_key: Vec<String>,
    /// The column whose greater value wins; `None` means the later run wins.
    pub cursor: Option<String>,
    /// Columns holding JSON text, VARIANT in STAGING.
    pub json_columns: Vec<String>,
    /// What the merge does with keys the run no longer has.
    pub deletes: DeleteMode,
    /// Deletes come from key-set runs (incremental tables), not from each run's rows.
    pub by_keyset: bool,
    /// A CDC table: RAW rows are changes applied in log order (see [`cdc_merge_body`]).
    pub cdc: bool,
}

impl MergeSpec {
    pub fn of(table: &TableConfig) -> MergeSpec {
        MergeSpec {
            primary_key: table.primary_key.clone(),
            cursor: table.load.cursor.clone(),
            json_columns: table.target.json_columns.clone(),
            deletes: table.deletes.mode,
            by_keyset: table.deletes_by_keyset(),
            cdc: table.load.mode == crate::config::LoadMode::Cdc,
        }
    }
}

/// Errors of the staging SQL: the table's config does not fit its files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StagingError {
    #[error(transparent)]
    Type(#[from] SqlGenError),
    #[error(
        "table {table}: no primary_key configured; the STAGING merge needs one to deduplicate (set tables[].primary_key)"
    )]
    NoPrimaryKey { table: String },
    #[error(
        "table {table}: {field} names column '{column}', which the extracted files do not have"
    )]
    UnknownColumn {
        table: String,
        field: &'static str,
        column: String,
    },
    #[error(
        "{table}: column {column} is {existing} in the warehouse but the source now gives {wanted}; \
         this is not an additive change: change the warehouse column by hand (or rename the source column)"
    )]
    Incompatible {
        table: String,
        column: String,
        existing: String,
        wanted: String,
    },
}

/// The STAGING columns and types of a table: every file column but the load metadata, JSON
/// columns as VARIANT.
pub fn staging_columns(
    schema: &Schema,
    spec: &MergeSpec,
    table: &str,
) -> Result<Vec<(String, SnowflakeType)>, StagingError> {
    for (field, column) in spec
        .primary_key
        .iter()
        .map(|c| ("primary_key", c))
        .chain(spec.cursor.iter().map(|c| ("load.cursor", c)))
        .chain(spec.json_columns.iter().map(|c| ("target.json_columns", c)))
    {
        if schema.field_with_name(column).is_err() {
            return Err(StagingError::UnknownColumn {
                table: table.to_owned(),
                field,
                column: column.clone(),
            });
        }
    }
    let mut columns = schema
        .fields()
        .iter()
        .filter(|f| f.name() != FILE_COLUMN && f.name() != ROW_COLUMN)
        .filter(|f| !(spec.cdc && CHANGE_COLUMNS.contains(&f.name().as_str())))
        .map(|f| {
            let data_type = if spec.json_columns.contains(f.name()) {
                SnowflakeType::Variant
            } else {
                column_type(f)?
            };
            Ok((f.name().clone(), data_type))
        })
        .collect::<Result<Vec<_>, StagingError>>()?;
    if spec.deletes == DeleteMode::Soft {
        columns.extend(soft_delete_columns());
    }
    Ok(columns)
}

/// The columns soft deletes add to STAGING.
pub fn soft_delete_columns() -> [(String, SnowflakeType); 2] {
    [
        (DELETED_COLUMN.to_owned(), SnowflakeType::Boolean),
        (
            DELETED_AT_COLUMN.to_owned(),
            SnowflakeType::TimestampTz { scale: 6 },
        ),
    ]
}

/// `CREATE TABLE IF NOT EXISTS` for STAGING.
pub fn staging_table_ddl(table: &ObjectName, columns: &[(String, SnowflakeType)]) -> String {
    let list = columns
        .iter()
        .map(|(name, t)| format!("    {} {t}", quote(name)))
        .collect::<Vec<_>>()
        .join(",\n");
    format!("CREATE TABLE IF NOT EXISTS {} (\n{list}\n)", table.quoted())
}

/// The merge log: one row per merged run with what the merge did.
pub fn merge_log_ddl(log: &ObjectName) -> String {
    let columns = merge_log_columns()
        .iter()
        .map(|(name, t)| format!("{} {t}", quote(name)))
        .collect::<Vec<_>>()
        .join(", ");
    format!("CREATE TABLE IF NOT EXISTS {} ({columns})", log.quoted())
}

/// The merge log's columns; `deleted` and `keys` came later, so older logs are evolved to
/// have them.
pub fn merge_log_columns() -> Vec<(String, SnowflakeType)> {
    let count = SnowflakeType::Number {
        precision: 19,
        scale: 0,
    };
    vec![
        ("run_id".to_owned(), SnowflakeType::Varchar),
        ("inserted".to_owned(), count),
        ("updated".to_owned(), count),
        ("deleted".to_owned(), count),
        ("keys".to_owned(), count),
    ]
}

/// The distinct keys a run's merge merged, from the merge log; binding: the run id.
pub fn merged_keys_query(targets: &TableTargets) -> String {
    format!(
        "SELECT \"keys\" FROM {} WHERE \"run_id\" = ?",
        targets.merge_log.quoted()
    )
}

/// The STAGING rows of `spec`'s table (alias `t`) that a run (`run`: `:RUN_ID` in the
/// procedure, `?` in a query) would delete or mark: live, with a key absent from the run's
/// rows in `keys` (RAW for a full load, the keys table for a key-set run), written by no later
/// run, while no later run has been merged. Correlated `NOT EXISTS` stays in a `WHERE` and out
/// of `OR`, where Snowflake supports it
/// (<https://docs.snowflake.com/en/sql-reference/operators-subquery>, "[NOT] EXISTS").
fn vanished_rows(targets: &TableTargets, spec: &MergeSpec, run: &str) -> String {
    let keys = if spec.by_keyset {
        &targets.keys
    } else {
        &targets.raw
    };
    let key_match = key_match(spec, "r", "t");
    let live = match spec.deletes {
        DeleteMode::Soft => format!("COALESCE(t.{}, FALSE) = FALSE AND ", quote(DELETED_COLUMN)),
        _ => String::new(),
    };
    // A key with a NULL part never equals anything, so such a row would look vanished every
    // run: it is never deleted (nor marked) by absence.
    let keyed = spec
        .primary_key
        .iter()
        .map(|c| format!("t.{} IS NOT NULL AND ", quote(c)))
        .collect::<String>();
    // Run ids sort by start time: a row a later run wrote may postdate this run's read.
    let written_before = if spec.by_keyset {
        format!("t.{} <= {run} AND ", quote(RUN_ID_COLUMN))
    } else {
        String::new()
    };
    format!(
        "{live}{keyed}{written_before}NOT EXISTS (SELECT 1 FROM {keys} AS r WHERE r.{run_col} = {run} AND {key_match}) AND {latest}",
        keys = keys.quoted(),
        run_col = quote(RUN_ID_COLUMN),
        latest = latest_run(targets, run),
    )
}

/// True while no run later than `run` has been merged (the log holds every merged run).
fn latest_run(targets: &TableTargets, run: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM {} AS l WHERE l.\"run_id\" > {run})",
        targets.merge_log.quoted()
    )
}

/// The query behind the delete guard, for a table with deletes: STAGING's live rows, the
/// rows the run would delete or mark, and the rows (keys, for a key-set run) the run loaded;
/// with the number of bindings it takes, each the run id.
pub fn deletes_guard_query(targets: &TableTargets, spec: &MergeSpec) -> (String, usize) {
    let staging = targets.staging.quoted();
    let live = match spec.deletes {
        DeleteMode::Soft => format!(
            " WHERE COALESCE(t.{}, FALSE) = FALSE",
            quote(DELETED_COLUMN)
        ),
        _ => String::new(),
    };
    let sql = format!(
        "SELECT (SELECT COUNT(*) FROM {staging} AS t{live}), \
         (SELECT COUNT(*) FROM {staging} AS t WHERE {vanished}), \
         (SELECT COUNT(*) FROM {read} WHERE {run_col} = ?)",
        vanished = vanished_rows(targets, spec, "?"),
        read = if spec.by_keyset {
            &targets.keys
        } else {
            &targets.raw
        }
        .quoted(),
        run_col = quote(RUN_ID_COLUMN),
    );
    // `?` twice in the vanished rows (three times for a key set), once in the count read.
    let bindings = if spec.by_keyset { 4 } else { 3 };
    (sql, bindings)
}

/// A cdc table's new snapshot (a reset, a full reload, or the first run over a STAGING that
/// has rows): the statement deleting (`hard`) or marking (`soft`) the STAGING rows whose key
/// the snapshot's rows (the run's RAW rows) do not hold, while no later run has been merged
/// (the log would have sent their deletes, but the log before the snapshot is not read). With
/// the number of bindings it takes, each the run id. `None` with `deletes: off`.
pub fn snapshot_vanished_sql(targets: &TableTargets, spec: &MergeSpec) -> Option<(String, usize)> {
    let table = targets.staging.quoted();
    // Full-load semantics: the run's own rows are the key set.
    let spec = MergeSpec {
        by_keyset: false,
        ..spec.clone()
    };
    // `?` twice in the vanished rows (the run's rows, and no later run merged).
    let vanished = vanished_rows(targets, &spec, "?");
    match spec.deletes {
        DeleteMode::Off => None,
        DeleteMode::Hard => Some((format!("DELETE FROM {table} AS t WHERE {vanished}"), 2)),
        DeleteMode::Soft => Some((
            format!(
                "UPDATE {table} AS t SET {} = TRUE, {} = CURRENT_TIMESTAMP(), {} = ? WHERE {vanished}",
                quote(DELETED_COLUMN),
                quote(DELETED_AT_COLUMN),
                quote(RUN_ID_COLUMN),
            ),
            3,
        )),
    }
}

/// Every object one table needs in the warehouse, for the one-time set-up: its schemas, RAW
/// and STAGING tables, merge log and (when sluice generates it) merge procedure, from the
/// files' schema. Each run creates and evolves the same objects, so this is the same text a
/// first run would execute.
pub fn table_objects_sql(
    table: &TableConfig,
    database: &str,
    schema: &Schema,
) -> Result<Vec<String>, StagingError> {
    let targets = TableTargets::resolve(table, database);
    let spec = MergeSpec::of(table);
    let staging = staging_columns(schema, &spec, &targets.staging.quoted())?;
    let mut statements = table_tables_sql(&targets, schema, &staging)?;
    if targets.generated_merge {
        statements.push(merge_procedure_ddl(&targets, schema, &spec)?);
    }
    Ok(statements)
}

/// A table's schemas, RAW and STAGING tables and merge log, each created only if missing:
/// what the set-up creates and every run makes sure of before it evolves and loads them.
/// `staging` is [`staging_columns`] of the same schema.
pub fn table_tables_sql(
    targets: &TableTargets,
    schema: &Schema,
    staging: &[(String, SnowflakeType)],
) -> Result<Vec<String>, StagingError> {
    let mut statements = Vec::new();
    for object in [&targets.raw, &targets.staging] {
        let create = format!(
            "CREATE SCHEMA IF NOT EXISTS {}.{}",
            quote(&object.database),
            quote(&object.schema)
        );
        if !statements.contains(&create) {
            statements.push(create);
        }
    }
    statements.push(crate::snowflake::raw_table_ddl(&targets.raw, schema)?);
    statements.push(staging_table_ddl(&targets.staging, staging));
    statements.push(merge_log_ddl(&targets.merge_log));
    Ok(statements)
}

/// The generated merge procedure of a table (see the module's notes for who wins). It
/// returns `{"inserted": n, "updated": m}`.
pub fn merge_procedure_ddl(
    targets: &TableTargets,
    schema: &Schema,
    spec: &MergeSpec,
) -> Result<String, StagingError> {
    let table = targets.staging.quoted();
    if spec.primary_key.is_empty() {
        return Err(StagingError::NoPrimaryKey { table });
    }
    // The soft-delete columns are STAGING's own, not the files': the merge sets them itself.
    let columns: Vec<_> = staging_columns(schema, spec, &table)?
        .into_iter()
        .filter(|(name, _)| name != DELETED_COLUMN && name != DELETED_AT_COLUMN)
        .collect();
    let q = |c: &str| quote(c);
    let select = columns
        .iter()
        .map(|(name, _)| {
            if spec.json_columns.contains(name) {
                format!("PARSE_JSON({}) AS {}", q(name), q(name))
            } else {
                q(name)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let (order, newer) = match &spec.cursor {
        Some(cursor) => (
            format!("{} DESC NULLS LAST", q(cursor)),
            format!(
                "(s.{c} > t.{c} OR (t.{c} IS NULL AND s.{c} IS NOT NULL))",
                c = q(cursor)
            ),
        ),
        None => (
            format!("{} DESC", q(RUN_ID_COLUMN)),
            format!("s.{c} > t.{c}", c = q(RUN_ID_COLUMN)),
        ),
    };
    let deletes = spec.deletes != DeleteMode::Off;
    // With deletes, a run older than one already merged merges nothing (see the module doc).
    let only_latest = if deletes {
        format!(" AND {}", latest_run(targets, ":RUN_ID"))
    } else {
        String::new()
    };
    let newer = match spec.deletes {
        // A row marked deleted that the source has again comes back, whatever its cursor.
        DeleteMode::Soft => format!("({newer} OR t.{} = TRUE)", q(DELETED_COLUMN)),
        _ => newer,
    };
    let source = format!(
        "(SELECT {select} FROM {raw} WHERE {run} = :RUN_ID{only_latest} \
         QUALIFY ROW_NUMBER() OVER (PARTITION BY {pk} ORDER BY {order}, {file} DESC, {row} DESC) = 1)",
        raw = targets.raw.quoted(),
        run = q(RUN_ID_COLUMN),
        pk = spec
            .primary_key
            .iter()
            .map(|c| q(c))
            .collect::<Vec<_>>()
            .join(", "),
        file = q(FILE_COLUMN),
        row = q(ROW_COLUMN),
    );
    let on = key_match(spec, "t", "s");
    let first_key = q(&spec.primary_key[0]);
    let log = targets.merge_log.quoted();
    let (set, names, values) = upsert_lists(&columns, spec);
    if spec.cdc {
        return Ok(logged_procedure(
            &targets.merge_procedure,
            &log,
            &cdc_merge_body(targets, spec, &columns),
        ));
    }
    let (set, names, values) = (set.join(", "), names.join(", "), values.join(", "));
    // COUNT_IF of no rows is documented as NULL ("or NULL if no records satisfy the
    // condition", <https://docs.snowflake.com/en/sql-reference/functions/count_if>), and an
    // empty run (or a stale replay) has none: COALESCE keeps the counts numbers, since
    // OBJECT_CONSTRUCT drops NULL values.
    // Deletions are counted before the rows go (no SQLROWCOUNT to read after, see the module
    // doc).
    // A key-set table's deletes are the reconcile procedure's (see [`reconcile_procedure_ddl`]).
    let deletes_here = deletes && !spec.by_keyset;
    let (log_columns, deleted_count, deleted_field) = if deletes_here {
        (
            ", \"deleted\"",
            format!(
                ", (SELECT COUNT(*) FROM {table} AS t WHERE {})",
                vanished_rows(targets, spec, ":RUN_ID")
            ),
            ", 'deleted', \"deleted\"",
        )
    } else {
        ("", String::new(), "")
    };
    let remove_vanished = if deletes_here {
        remove_vanished(targets, spec)
    } else {
        String::new()
    };
    Ok(logged_procedure(
        &targets.merge_procedure,
        &log,
        &format!(
            "INSERT INTO {log} (\"run_id\", \"inserted\", \"updated\", \"keys\"{log_columns})\n\
         \x20   SELECT :RUN_ID, COALESCE(COUNT_IF(t.{first_key} IS NULL), 0), COALESCE(COUNT_IF(t.{first_key} IS NOT NULL AND {newer}), 0), COUNT(*){deleted_count}\n\
         \x20   FROM {source} AS s\n\
         \x20   LEFT JOIN {table} AS t ON {on};\n\
         {remove_vanished}\
         MERGE INTO {table} AS t\n\
         USING {source} AS s\n\
         ON {on}\n\
         WHEN MATCHED AND {newer} THEN UPDATE SET {set}\n\
         WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values});\n\
         RETURN (SELECT OBJECT_CONSTRUCT('inserted', \"inserted\", 'updated', \"updated\"{deleted_field}) FROM {log} WHERE \"run_id\" = :RUN_ID);\n"
        ),
    ))
}

/// `a.k1 = b.k1 AND a.k2 = b.k2 …` over the primary key.
fn key_match(spec: &MergeSpec, a: &str, b: &str) -> String {
    spec.primary_key
        .iter()
        .map(|c| format!("{a}.{c} = {b}.{c}", c = quote(c)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// What a merge's `UPDATE SET` and `INSERT (names) VALUES (values)` write from the source row
/// `s`: every column but the key (all of them on insert), and for soft deletes the row live
/// again.
fn upsert_lists(
    columns: &[(String, SnowflakeType)],
    spec: &MergeSpec,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let q = |c: &str| quote(c);
    let mut set: Vec<String> = columns
        .iter()
        .filter(|(name, _)| !spec.primary_key.contains(name))
        .map(|(name, _)| format!("t.{c} = s.{c}", c = q(name)))
        .collect();
    let mut names: Vec<String> = columns.iter().map(|(name, _)| q(name)).collect();
    let mut values: Vec<String> = columns
        .iter()
        .map(|(name, _)| format!("s.{}", q(name)))
        .collect();
    if spec.deletes == DeleteMode::Soft {
        set.push(format!("t.{} = FALSE", q(DELETED_COLUMN)));
        set.push(format!("t.{} = NULL", q(DELETED_AT_COLUMN)));
        names.push(q(DELETED_COLUMN));
        names.push(q(DELETED_AT_COLUMN));
        values.push("FALSE".into());
        values.push("NULL".into());
    }
    (set, names, values)
}

/// The merge of a CDC table's run. Its RAW rows are the table's changes
/// ([`crate::cdc::changes`]), or, for a snapshot run, plain rows (no `_sluice_op`, read as
/// upserts). Only the changes after the run's last truncate count; a truncate first removes
/// (or marks) every STAGING row. Of each key's changes the last (`_sluice_seq`) wins: a
/// delete deletes (`hard`), marks (`soft`) or is ignored (`off`); an insert or update writes
/// the row, each column from the key's latest change that sent it (FIRST_VALUE over the
/// changes that sent it first, latest first), or, when none of the run's did (a TOASTed value
/// left alone), as STAGING has it. Like every merge with deletes it acts only while no later
/// run has been merged, so replaying the run changes nothing.
///
/// Snowflake's rules leaned on: FIRST_VALUE respects NULLs by default and is deterministic
/// only when its ORDER BY makes rows unique, which file and row do
/// (<https://docs.snowflake.com/en/sql-reference/functions/first_value>); CONTAINS is a plain
/// substring test (<https://docs.snowflake.com/en/sql-reference/functions/contains>), and the
/// marker it looks for is a string literal with `\` doubled (see
/// [`crate::snowflake::string_literal`]).
fn cdc_merge_body(
    targets: &TableTargets,
    spec: &MergeSpec,
    columns: &[(String, SnowflakeType)],
) -> String {
    let q = |c: &str| quote(c);
    let table = targets.staging.quoted();
    let raw = targets.raw.quoted();
    let log = targets.merge_log.quoted();
    let run = q(RUN_ID_COLUMN);
    let (op, seq, unchanged) = (q(OP_COLUMN), q(SEQ_COLUMN), q(UNCHANGED_COLUMN));
    let pk = spec
        .primary_key
        .iter()
        .map(|c| q(c))
        .collect::<Vec<_>>()
        .join(", ");
    let latest = latest_run(targets, ":RUN_ID");
    let order = format!(
        "{seq} DESC NULLS LAST, {} DESC, {} DESC",
        q(FILE_COLUMN),
        q(ROW_COLUMN)
    );
    // A column was sent by a change unless the change names it unchanged.
    let sent = |c: &str| {
        format!(
            "CASE WHEN CONTAINS(COALESCE({unchanged}, ''), {}) THEN 0 ELSE 1 END",
            string_literal(&unchanged_marker(c))
        )
    };
    let mut select = Vec::new();
    // By position, so no column of the table can collide with it, whatever its name.
    let sent_name = |i: usize| q(&format!("_sluice_sent_{i}"));
    for (i, (name, _)) in columns.iter().enumerate() {
        let value = if spec.json_columns.contains(name) {
            format!("PARSE_JSON({})", q(name))
        } else {
            q(name)
        };
        if spec.primary_key.contains(name) || name == RUN_ID_COLUMN {
            select.push(format!("{value} AS {}", q(name)));
        } else {
            select.push(format!(
                "FIRST_VALUE({value}) OVER (PARTITION BY {pk} ORDER BY {sent} DESC, {order}) AS {name}",
                sent = sent(name),
                name = q(name),
            ));
            select.push(format!(
                "MAX({sent}) OVER (PARTITION BY {pk}) AS {sent_name}",
                sent = sent(name),
                sent_name = sent_name(i),
            ));
        }
    }
    select.push(format!("COALESCE({op}, 'S') AS {op}"));
    let last_truncate =
        format!("(SELECT MAX(r.{seq}) FROM {raw} AS r WHERE r.{run} = :RUN_ID AND r.{op} = 'T')");
    let changes = format!(
        "SELECT {select} FROM {raw} WHERE {run} = :RUN_ID AND {latest} \
         AND COALESCE({op}, 'S') <> 'T' AND ({seq} IS NULL OR {seq} > COALESCE({last_truncate}, -1)) \
         QUALIFY ROW_NUMBER() OVER (PARTITION BY {pk} ORDER BY {order}) = 1",
        select = select.join(", "),
    );
    // Each column's value is settled here, against STAGING, so the MERGE only copies.
    let settled = columns
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            if spec.primary_key.contains(name) || name == RUN_ID_COLUMN {
                format!("c.{c} AS {c}", c = q(name))
            } else {
                format!(
                    "CASE WHEN c.{sent} = 1 THEN c.{c} ELSE st.{c} END AS {c}",
                    c = q(name),
                    sent = sent_name(i)
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let joined = key_match(spec, "st", "c");
    let source = format!(
        "(SELECT {settled}, c.{op} AS {op} FROM ({changes}) AS c LEFT JOIN {table} AS st ON {joined})"
    );
    let on = key_match(spec, "t", "s");
    let first_key = q(&spec.primary_key[0]);
    let soft = spec.deletes == DeleteMode::Soft;
    let (deleted, deleted_at) = (q(DELETED_COLUMN), q(DELETED_AT_COLUMN));
    let live = if soft {
        format!(" AND COALESCE(t.{deleted}, FALSE) = FALSE")
    } else {
        String::new()
    };
    let truncated = format!(
        "EXISTS (SELECT 1 FROM {raw} AS r WHERE r.{run} = :RUN_ID AND r.{op} = 'T') AND {latest}"
    );
    let (truncate, truncated_count) = match spec.deletes {
        DeleteMode::Off => (String::new(), "0".to_owned()),
        DeleteMode::Hard => (
            format!("DELETE FROM {table} AS t WHERE {truncated};\n"),
            format!("(SELECT COUNT(*) FROM {table} AS t WHERE {truncated})"),
        ),
        DeleteMode::Soft => (
            format!(
                "UPDATE {table} AS t SET {deleted} = TRUE, {deleted_at} = CURRENT_TIMESTAMP(), {run} = :RUN_ID WHERE {truncated}{live};\n"
            ),
            format!("(SELECT COUNT(*) FROM {table} AS t WHERE {truncated}{live})"),
        ),
    };
    // After a truncate the table is empty: every change after it inserts.
    let existing = format!(
        "t.{first_key} IS NOT NULL AND NOT ({truncated_flag})",
        truncated_flag = if spec.deletes == DeleteMode::Off {
            "FALSE".to_owned()
        } else {
            truncated.clone()
        }
    );
    let on_delete = match spec.deletes {
        DeleteMode::Off => String::new(),
        DeleteMode::Hard => format!("WHEN MATCHED AND s.{op} = 'D' THEN DELETE\n"),
        DeleteMode::Soft => format!(
            "WHEN MATCHED AND s.{op} = 'D' AND COALESCE(t.{deleted}, FALSE) = FALSE THEN UPDATE SET t.{deleted} = TRUE, t.{deleted_at} = CURRENT_TIMESTAMP(), t.{run} = s.{run}\n"
        ),
    };
    let (set, names, values) = upsert_lists(columns, spec);
    let deleted_rows = if spec.deletes == DeleteMode::Off {
        "0".to_owned()
    } else {
        format!("COUNT_IF({existing}{live} AND s.{op} = 'D')")
    };
    // A truncate merges no key but is merged: the log counts it with the keys.
    let truncates = format!(
        "(SELECT COUNT(*) FROM {raw} AS r WHERE r.{run} = :RUN_ID AND r.{op} = 'T' AND {latest})"
    );
    format!(
        "INSERT INTO {log} (\"run_id\", \"inserted\", \"updated\", \"deleted\", \"keys\")\n\
         \x20   SELECT :RUN_ID, COALESCE(COUNT_IF(NOT ({existing}) AND s.{op} <> 'D'), 0), COALESCE(COUNT_IF({existing} AND s.{op} <> 'D'), 0), COALESCE({deleted_rows}, 0) + {truncated_count}, COUNT(*) + {truncates}\n\
         \x20   FROM {source} AS s\n\
         \x20   LEFT JOIN {table} AS t ON {on};\n\
         {truncate}\
         MERGE INTO {table} AS t\n\
         USING {source} AS s\n\
         ON {on}\n\
         {on_delete}\
         WHEN MATCHED AND s.{op} <> 'D' THEN UPDATE SET {set}\n\
         WHEN NOT MATCHED AND s.{op} <> 'D' THEN INSERT ({names}) VALUES ({values});\n\
         RETURN (SELECT OBJECT_CONSTRUCT('inserted', \"inserted\", 'updated', \"updated\", 'deleted', \"deleted\") FROM {log} WHERE \"run_id\" = :RUN_ID);\n",
        set = set.join(", "),
        names = names.join(", "),
        values = values.join(", "),
    )
}

/// The procedure statement that deletes (`hard`) or marks (`soft`) the rows a run found
/// vanished (see [`vanished_rows`]); DELETE and UPDATE take an alias for their target
/// (<https://docs.snowflake.com/en/sql-reference/sql/delete>,
/// <https://docs.snowflake.com/en/sql-reference/sql/update>).
fn remove_vanished(targets: &TableTargets, spec: &MergeSpec) -> String {
    let table = targets.staging.quoted();
    let vanished = vanished_rows(targets, spec, ":RUN_ID");
    match spec.deletes {
        DeleteMode::Off => String::new(),
        DeleteMode::Hard => format!("DELETE FROM {table} AS t WHERE {vanished};\n"),
        DeleteMode::Soft => format!(
            "UPDATE {table} AS t SET {deleted} = TRUE, {deleted_at} = CURRENT_TIMESTAMP(), {run_col} = :RUN_ID WHERE {vanished};\n",
            deleted = quote(DELETED_COLUMN),
            deleted_at = quote(DELETED_AT_COLUMN),
            run_col = quote(RUN_ID_COLUMN),
        ),
    }
}

/// `CREATE TABLE IF NOT EXISTS` for the keys table of a key-set table: the key columns as the
/// key-set files carry them (with the run id and extraction time), and COPY's file and row.
pub fn keys_table_ddl(targets: &TableTargets, keys_schema: &Schema) -> Result<String, SqlGenError> {
    crate::snowflake::raw_table_ddl(&targets.keys, keys_schema)
}

/// The reconcile procedure of a key-set table: after a key-set run's keys are in the keys
/// table, it deletes (`hard`) or marks (`soft`) the STAGING rows whose key the run did not
/// read (see [`vanished_rows`] for which rows it never takes), logs the count in the merge log
/// under the run's id, and drops the keys of older key sets, which no merge reads again (an
/// older run replayed acts only while no later run has been merged). It returns
/// `{"inserted": 0, "updated": 0, "deleted": n}`; run again, it finds nothing left to do.
pub fn reconcile_procedure_ddl(
    targets: &TableTargets,
    spec: &MergeSpec,
) -> Result<String, StagingError> {
    let table = targets.staging.quoted();
    if spec.primary_key.is_empty() {
        return Err(StagingError::NoPrimaryKey { table });
    }
    let log = targets.merge_log.quoted();
    let vanished = vanished_rows(targets, spec, ":RUN_ID");
    let q = |c: &str| quote(c);
    let remove = remove_vanished(targets, spec);
    Ok(logged_procedure(
        &targets.reconcile_procedure,
        &log,
        &format!(
            "INSERT INTO {log} (\"run_id\", \"inserted\", \"updated\", \"deleted\")\n\
             \x20   SELECT :RUN_ID, 0, 0, (SELECT COUNT(*) FROM {table} AS t WHERE {vanished});\n\
             {remove}\
             DELETE FROM {keys} WHERE {run_col} < :RUN_ID AND {latest};\n\
             RETURN (SELECT OBJECT_CONSTRUCT('inserted', \"inserted\", 'updated', \"updated\", 'deleted', \"deleted\") FROM {log} WHERE \"run_id\" = :RUN_ID);\n",
            keys = targets.keys.quoted(),
            run_col = q(RUN_ID_COLUMN),
            latest = latest_run(targets, ":RUN_ID"),
        ),
    ))
}

/// A procedure of the run id that first forgets the run's merge-log row (a replay logs
/// afresh), then runs `body` (which logs and returns): the frame both generated procedures
/// share, in the subset of Snowflake Scripting the stand-in runs (see the module doc).
fn logged_procedure(name: &ObjectName, log: &str, body: &str) -> String {
    format!(
        "CREATE OR REPLACE PROCEDURE {proc}(RUN_ID VARCHAR)\n\
         RETURNS VARIANT\n\
         LANGUAGE SQL\n\
         EXECUTE AS OWNER\n\
         AS $$\n\
         BEGIN\n\
         DELETE FROM {log} WHERE \"run_id\" = :RUN_ID;\n\
         {body}\
         END;\n\
         $$",
        proc = name.quoted(),
    )
}

/// A column as the warehouse's `INFORMATION_SCHEMA.COLUMNS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingColumn {
    pub name: String,
    /// `DATA_TYPE`: `NUMBER`, `TEXT`, `TIMESTAMP_NTZ`, …
    pub data_type: String,
    pub precision: Option<u32>,
    pub scale: Option<u32>,
}

/// The query listing a table's columns; bindings: schema, table name.
pub fn columns_query(table: &ObjectName) -> String {
    format!(
        "SELECT column_name, data_type, numeric_precision, numeric_scale FROM {}.INFORMATION_SCHEMA.COLUMNS \
         WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        quote(&table.database)
    )
}

/// `ALTER TABLE … ADD COLUMN` for every wanted column the table lacks; an error naming the
/// column and both types for one whose type changed incompatibly. Columns the table has and
/// the source no longer gives are left alone (they stay NULL for new rows).
pub fn evolve_table(
    table: &ObjectName,
    existing: &[ExistingColumn],
    wanted: &[(String, SnowflakeType)],
) -> Result<Vec<String>, StagingError> {
    let mut statements = Vec::new();
    for (name, wanted_type) in wanted {
        match existing.iter().find(|c| &c.name == name) {
            None => statements.push(format!(
                "ALTER TABLE {} ADD COLUMN {} {wanted_type}",
                table.quoted(),
                quote(name)
            )),
            Some(column) if !compatible_type(column, wanted_type) => {
                return Err(StagingError::Incompatible {
                    table: table.quoted(),
                    column: name.clone(),
                    existing: describe_existing(column),
                    wanted: wanted_type.to_string(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(statements)
}

pub(crate) fn describe_existing(column: &ExistingColumn) -> String {
    match (column.data_type.as_str(), column.precision, column.scale) {
        ("NUMBER", Some(p), Some(s)) => format!("NUMBER({p},{s})"),
        (other, _, _) => other.to_owned(),
    }
}

/// Whether values of `wanted` load into the existing column unchanged: the same type family,
/// and for NUMBER the same scale and no more digits.
pub(crate) fn compatible_type(existing: &ExistingColumn, wanted: &SnowflakeType) -> bool {
    let family = existing.data_type.to_ascii_uppercase();
    match wanted {
        SnowflakeType::Number { precision, scale } => {
            family == "NUMBER"
                && existing.scale.unwrap_or(0) == u32::from(*scale)
                && existing.precision.unwrap_or(38) >= u32::from(*precision)
        }
        SnowflakeType::Float => matches!(family.as_str(), "FLOAT" | "DOUBLE" | "REAL"),
        SnowflakeType::Boolean => family == "BOOLEAN",
        SnowflakeType::Varchar => matches!(family.as_str(), "TEXT" | "VARCHAR" | "STRING"),
        SnowflakeType::Binary => matches!(family.as_str(), "BINARY" | "VARBINARY"),
        SnowflakeType::Date => family == "DATE",
        SnowflakeType::Time { .. } => family == "TIME",
        SnowflakeType::TimestampNtz { .. } => family == "TIMESTAMP_NTZ",
        SnowflakeType::TimestampTz { .. } => family == "TIMESTAMP_TZ",
        SnowflakeType::Variant => matches!(family.as_str(), "VARIANT" | "OBJECT" | "ARRAY"),
    }
}

/// `CALL proc(?)`: the merge procedure takes the run id as its one binding, a gold procedure
/// the batch id.
pub fn call_with_run_id(procedure: &ObjectName) -> String {
    format!("CALL {}(?)", procedure.quoted())
}

/// Counts a run's rows in RAW (or a keys table) after its COPY; binding: the run id.
pub fn count_run_rows(raw: &ObjectName) -> String {
    format!(
        "SELECT COUNT(*) FROM {} WHERE {} = ?",
        raw.quoted(),
        quote(RUN_ID_COLUMN)
    )
}

/// Deletes a run's RAW rows before its COPY, so a replayed run loads its files exactly once
/// (the COPY is `FORCE = TRUE`); binding: the run id.
pub fn delete_run_rows(raw: &ObjectName) -> String {
    format!(
        "DELETE FROM {} WHERE {} = ?",
        raw.quoted(),
        quote(RUN_ID_COLUMN)
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_schema::{DataType, Field, TimeUnit};

    use super::*;
    use crate::Config;

    fn config(target: &str) -> TableConfig {
        let yaml = format!(
            "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\n\
             tables:\n  - source: shop\n    table: public.orders\n    primary_key: [id]\n\
             \x20   load:\n      mode: incremental\n      cursor: updated_at\n{target}"
        );
        Config::from_yaml(&yaml, "t").unwrap().tables.remove(0)
    }

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("doc", DataType::Utf8, true),
            Field::new(
                "updated_at",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new(RUN_ID_COLUMN, DataType::Utf8, false),
            Field::new(
                EXTRACTED_AT_COLUMN,
                DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
                false,
            ),
        ])
    }

    #[test]
    fn targets_default_from_the_table_and_honour_the_config() {
        let t = TableTargets::resolve(&config(""), "DB");
        assert_eq!(t.raw.quoted(), "\"DB\".\"RAW\".\"SHOP_PUBLIC_ORDERS\"");
        assert_eq!(
            t.staging.quoted(),
            "\"DB\".\"STAGING\".\"SHOP_PUBLIC_ORDERS\""
        );
        assert_eq!(
            t.merge_procedure.quoted(),
            "\"DB\".\"STAGING\".\"MERGE_SHOP_PUBLIC_ORDERS\""
        );
        assert!(t.generated_merge);
        assert_eq!(
            t.merge_log.quoted(),
            "\"DB\".\"STAGING\".\"SHOP_PUBLIC_ORDERS_MERGES\""
        );
        let t = TableTargets::resolve(
            &config(
                "    target:\n      raw_table: SHOP_ORDERS\n      staging_table: OTHER.STG.ORDERS\n      \
                 merge_procedure: MY_MERGE\n",
            ),
            "DB",
        );
        assert_eq!(t.raw.quoted(), "\"DB\".\"RAW\".\"SHOP_ORDERS\"");
        assert_eq!(t.staging.quoted(), "\"OTHER\".\"STG\".\"ORDERS\"");
        assert_eq!(t.merge_procedure.quoted(), "\"DB\".\"STG\".\"MY_MERGE\"");
        assert!(!t.generated_merge);
        let gold = |name| gold_procedure(name, "DB").quoted();
        assert_eq!(gold("G1"), "\"DB\".\"GOLD\".\"G1\"");
        assert_eq!(gold("REPORTS.G2"), "\"DB\".\"REPORTS\".\"G2\"");
        assert_eq!(gold("D.R.G3"), "\"D\".\"R\".\"G3\"");
    }

    #[test]
    fn staging_ddl_turns_json_into_variant_and_drops_file_metadata() {
        let table = config("    target:\n      json_columns: [doc]\n");
        let mut fields = schema().fields().to_vec();
        fields.push(Arc::new(Field::new(FILE_COLUMN, DataType::Utf8, true)));
        let columns = staging_columns(&Schema::new(fields), &MergeSpec::of(&table), "T").unwrap();
        assert_eq!(
            staging_table_ddl(&ObjectName::new("D", "STAGING", "O"), &columns),
            "CREATE TABLE IF NOT EXISTS \"D\".\"STAGING\".\"O\" (\n\
             \x20   \"id\" NUMBER(19,0),\n\
             \x20   \"doc\" VARIANT,\n\
             \x20   \"updated_at\" TIMESTAMP_NTZ(6),\n\
             \x20   \"_sluice_run_id\" VARCHAR,\n\
             \x20   \"_sluice_extracted_at\" TIMESTAMP_TZ(6)\n\
             )"
        );
        let mut spec = MergeSpec::of(&table);
        spec.cursor = Some("changed".into());
        let err = staging_columns(&schema(), &spec, "T").unwrap_err();
        assert_eq!(
            err.to_string(),
            "table T: load.cursor names column 'changed', which the extracted files do not have"
        );
    }

    #[test]
    fn merge_with_a_cursor_keeps_the_latest_and_never_goes_back() {
        let table = config("    target:\n      json_columns: [doc]\n");
        let targets = TableTargets::resolve(&table, "DB");
        let sql = merge_procedure_ddl(&targets, &schema(), &MergeSpec::of(&table)).unwrap();
        let newer = "(s.\"updated_at\" > t.\"updated_at\" OR (t.\"updated_at\" IS NULL AND s.\"updated_at\" IS NOT NULL))";
        let source = "(SELECT \"id\", PARSE_JSON(\"doc\") AS \"doc\", \"updated_at\", \"_sluice_run_id\", \"_sluice_extracted_at\" \
             FROM \"DB\".\"RAW\".\"SHOP_PUBLIC_ORDERS\" WHERE \"_sluice_run_id\" = :RUN_ID \
             QUALIFY ROW_NUMBER() OVER (PARTITION BY \"id\" ORDER BY \"updated_at\" DESC NULLS LAST, \"_sluice_file\" DESC, \"_sluice_row\" DESC) = 1)";
        let log = "\"DB\".\"STAGING\".\"SHOP_PUBLIC_ORDERS_MERGES\"";
        let staging = "\"DB\".\"STAGING\".\"SHOP_PUBLIC_ORDERS\"";
        assert_eq!(
            sql,
            format!(
                "CREATE OR REPLACE PROCEDURE \"DB\".\"STAGING\".\"MERGE_SHOP_PUBLIC_ORDERS\"(RUN_ID VARCHAR)\n\
                 RETURNS VARIANT\nLANGUAGE SQL\nEXECUTE AS OWNER\nAS $$\nBEGIN\n\
                 DELETE FROM {log} WHERE \"run_id\" = :RUN_ID;\n\
                 INSERT INTO {log} (\"run_id\", \"inserted\", \"updated\", \"keys\")\n\
                 \x20   SELECT :RUN_ID, COALESCE(COUNT_IF(t.\"id\" IS NULL), 0), COALESCE(COUNT_IF(t.\"id\" IS NOT NULL AND {newer}), 0), COUNT(*)\n\
                 \x20   FROM {source} AS s\n\
                 \x20   LEFT JOIN {staging} AS t ON t.\"id\" = s.\"id\";\n\
                 MERGE INTO {staging} AS t\nUSING {source} AS s\nON t.\"id\" = s.\"id\"\n\
                 WHEN MATCHED AND {newer} THEN UPDATE SET t.\"doc\" = s.\"doc\", t.\"updated_at\" = s.\"updated_at\", \
                 t.\"_sluice_run_id\" = s.\"_sluice_run_id\", t.\"_sluice_extracted_at\" = s.\"_sluice_extracted_at\"\n\
                 WHEN NOT MATCHED THEN INSERT (\"id\", \"doc\", \"updated_at\", \"_sluice_run_id\", \"_sluice_extracted_at\") \
                 VALUES (s.\"id\", s.\"doc\", s.\"updated_at\", s.\"_sluice_run_id\", s.\"_sluice_extracted_at\");\n\
                 RETURN (SELECT OBJECT_CONSTRUCT('inserted', \"inserted\", 'updated', \"updated\") FROM {log} WHERE \"run_id\" = :RUN_ID);\n\
                 END;\n$$"
            )
        );
    }

    #[test]
    fn merge_without_a_cursor_lets_the_later_run_win() {
        let mut spec = MergeSpec::of(&config(""));
        spec.cursor = None;
        spec.primary_key = vec!["id".into(), "updated_at".into()];
        let targets = TableTargets::resolve(&config(""), "DB");
        let sql = merge_procedure_ddl(&targets, &schema(), &spec).unwrap();
        assert!(sql.contains("ORDER BY \"_sluice_run_id\" DESC, \"_sluice_file\" DESC"));
        assert!(sql.contains("WHEN MATCHED AND s.\"_sluice_run_id\" > t.\"_sluice_run_id\" THEN UPDATE SET t.\"doc\" = s.\"doc\", t.\"_sluice_run_id\""));
        assert!(sql.contains("ON t.\"id\" = s.\"id\" AND t.\"updated_at\" = s.\"updated_at\"\n"));
        assert!(sql.contains("PARTITION BY \"id\", \"updated_at\" ORDER"));
        spec.primary_key.clear();
        assert_eq!(
            merge_procedure_ddl(&targets, &schema(), &spec)
                .unwrap_err()
                .to_string(),
            "table \"DB\".\"STAGING\".\"SHOP_PUBLIC_ORDERS\": no primary_key configured; the STAGING merge needs one to deduplicate (set tables[].primary_key)"
        );
    }

    #[test]
    fn merges_with_deletes_remove_or_mark_vanished_keys_only_as_the_latest_run() {
        let targets = TableTargets::resolve(&config(""), "DB");
        let mut spec = MergeSpec::of(&config(""));
        assert_eq!(spec.deletes, DeleteMode::Off);
        let plain = merge_procedure_ddl(&targets, &schema(), &spec).unwrap();
        assert!(!plain.contains("\"deleted\""), "{plain}");
        assert!(!plain.contains("AS l WHERE"), "{plain}");

        let log = "\"DB\".\"STAGING\".\"SHOP_PUBLIC_ORDERS_MERGES\"";
        let staging = "\"DB\".\"STAGING\".\"SHOP_PUBLIC_ORDERS\"";
        let latest = format!("NOT EXISTS (SELECT 1 FROM {log} AS l WHERE l.\"run_id\" > :RUN_ID)");
        let vanished = format!(
            "t.\"id\" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM \"DB\".\"RAW\".\"SHOP_PUBLIC_ORDERS\" AS r WHERE r.\"_sluice_run_id\" = :RUN_ID AND r.\"id\" = t.\"id\") AND {latest}"
        );

        spec.deletes = DeleteMode::Hard;
        let hard = merge_procedure_ddl(&targets, &schema(), &spec).unwrap();
        assert!(
            hard.contains(&format!(
                "DELETE FROM {staging} AS t WHERE {vanished};\nMERGE INTO"
            )),
            "{hard}"
        );
        // Counted before they go, and only a latest run merges at all.
        assert!(hard.contains(&format!(
            ", (SELECT COUNT(*) FROM {staging} AS t WHERE {vanished})\n"
        )));
        assert!(hard.contains(&format!(
            "WHERE \"_sluice_run_id\" = :RUN_ID AND {latest} QUALIFY"
        )));
        assert!(hard.contains("'deleted', \"deleted\") FROM"));

        spec.deletes = DeleteMode::Soft;
        let soft = merge_procedure_ddl(&targets, &schema(), &spec).unwrap();
        assert!(
            soft.contains(&format!(
                "UPDATE {staging} AS t SET \"_sluice_deleted\" = TRUE, \"_sluice_deleted_at\" = CURRENT_TIMESTAMP(), \"_sluice_run_id\" = :RUN_ID \
                 WHERE COALESCE(t.\"_sluice_deleted\", FALSE) = FALSE AND {vanished};\n"
            )),
            "{soft}"
        );
        // A row that comes back is live again, whatever its cursor says.
        assert!(soft.contains("OR t.\"_sluice_deleted\" = TRUE) THEN UPDATE SET"));
        assert!(soft.contains("t.\"_sluice_deleted\" = FALSE, t.\"_sluice_deleted_at\" = NULL\n"));
        assert!(soft.contains("\"_sluice_deleted\", \"_sluice_deleted_at\") VALUES ("));
        assert!(soft.contains(", FALSE, NULL);"));
        // STAGING has the two columns; the merge never reads them from the files.
        let columns = staging_columns(&schema(), &spec, "T").unwrap();
        assert_eq!(
            columns[columns.len() - 2..],
            [
                (DELETED_COLUMN.to_owned(), SnowflakeType::Boolean),
                (
                    DELETED_AT_COLUMN.to_owned(),
                    SnowflakeType::TimestampTz { scale: 6 }
                )
            ]
        );
        assert!(!soft.contains("s.\"_sluice_deleted\""));

        let (guard, bindings) = deletes_guard_query(&targets, &spec);
        assert_eq!(guard.matches('?').count(), bindings, "{guard}");
        assert_eq!(bindings, 3);
        assert!(guard.starts_with(&format!(
            "SELECT (SELECT COUNT(*) FROM {staging} AS t WHERE COALESCE(t.\"_sluice_deleted\", FALSE) = FALSE), "
        )));
    }

    #[test]
    fn a_key_set_table_deletes_in_its_reconcile_procedure_only() {
        let table = config("    deletes: { mode: hard, keyset: { every: 24h } }\n");
        let targets = TableTargets::resolve(&table, "DB");
        let spec = MergeSpec::of(&table);
        assert!(spec.by_keyset);
        assert_eq!(
            targets.keys.quoted(),
            "\"DB\".\"RAW\".\"SHOP_PUBLIC_ORDERS_KEYS\""
        );
        // The load's merge deletes nothing, yet merges only while no later run has been.
        let merge = merge_procedure_ddl(&targets, &schema(), &spec).unwrap();
        assert!(!merge.contains("DELETE FROM \"DB\".\"STAGING\".\"SHOP_PUBLIC_ORDERS\""));
        assert!(merge.contains("l.\"run_id\" > :RUN_ID"));
        let reconcile = reconcile_procedure_ddl(&targets, &spec).unwrap();
        let vanished = "t.\"id\" IS NOT NULL AND t.\"_sluice_run_id\" <= :RUN_ID AND NOT EXISTS \
             (SELECT 1 FROM \"DB\".\"RAW\".\"SHOP_PUBLIC_ORDERS_KEYS\" AS r WHERE r.\"_sluice_run_id\" = :RUN_ID AND r.\"id\" = t.\"id\") \
             AND NOT EXISTS (SELECT 1 FROM \"DB\".\"STAGING\".\"SHOP_PUBLIC_ORDERS_MERGES\" AS l WHERE l.\"run_id\" > :RUN_ID)";
        assert!(
            reconcile.contains(&format!(
                "DELETE FROM \"DB\".\"STAGING\".\"SHOP_PUBLIC_ORDERS\" AS t WHERE {vanished};"
            )),
            "{reconcile}"
        );
        assert!(reconcile.starts_with(
            "CREATE OR REPLACE PROCEDURE \"DB\".\"STAGING\".\"RECONCILE_SHOP_PUBLIC_ORDERS\"(RUN_ID VARCHAR)"
        ));
        let (guard, bindings) = deletes_guard_query(&targets, &spec);
        assert_eq!((guard.matches('?').count(), bindings), (4, 4));
        assert!(guard.ends_with(
            "(SELECT COUNT(*) FROM \"DB\".\"RAW\".\"SHOP_PUBLIC_ORDERS_KEYS\" WHERE \"_sluice_run_id\" = ?)"
        ));
        // A full load reads no keys table and no key set guards it.
        let full = MergeSpec {
            by_keyset: false,
            cdc: false,
            ..spec
        };
        assert!(!deletes_guard_query(&targets, &full).0.contains("_KEYS"));
    }

    #[test]
    fn evolution_adds_new_columns_and_refuses_changed_types() {
        let table = ObjectName::new("D", "RAW", "O");
        let existing = vec![
            ExistingColumn {
                name: "id".into(),
                data_type: "NUMBER".into(),
                precision: Some(19),
                scale: Some(0),
            },
            ExistingColumn {
                name: "note".into(),
                data_type: "TEXT".into(),
                precision: None,
                scale: None,
            },
        ];
        let int = |p| SnowflakeType::Number {
            precision: p,
            scale: 0,
        };
        let wanted = vec![
            ("id".to_owned(), int(10)),
            ("note".to_owned(), SnowflakeType::Varchar),
            ("added".to_owned(), SnowflakeType::Date),
        ];
        assert_eq!(
            evolve_table(&table, &existing, &wanted).unwrap(),
            ["ALTER TABLE \"D\".\"RAW\".\"O\" ADD COLUMN \"added\" DATE"]
        );
        for (column, wanted, message) in [
            (
                "note",
                SnowflakeType::Boolean,
                "column note is TEXT in the warehouse but the source now gives BOOLEAN",
            ),
            (
                "id",
                int(20),
                "column id is NUMBER(19,0) in the warehouse but the source now gives NUMBER(20,0)",
            ),
            (
                "id",
                SnowflakeType::Number {
                    precision: 12,
                    scale: 2,
                },
                "column id is NUMBER(19,0) in the warehouse but the source now gives NUMBER(12,2)",
            ),
        ] {
            let err = evolve_table(&table, &existing, &[(column.to_owned(), wanted)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(message), "{err}");
        }
    }

    #[test]
    fn calls_and_deletes_bind_the_run_id() {
        let p = ObjectName::new("D", "GOLD", "REFRESH");
        assert_eq!(call_with_run_id(&p), "CALL \"D\".\"GOLD\".\"REFRESH\"(?)");
        assert_eq!(
            delete_run_rows(&ObjectName::new("D", "RAW", "O")),
            "DELETE FROM \"D\".\"RAW\".\"O\" WHERE \"_sluice_run_id\" = ?"
        );
        assert_eq!(
            columns_query(&p),
            "SELECT column_name, data_type, numeric_precision, numeric_scale FROM \"D\".INFORMATION_SCHEMA.COLUMNS \
             WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position"
        );
    }
}
