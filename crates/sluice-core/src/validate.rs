//! `sluice validate`: does STAGING hold what the source holds? Two levels, pure here (the
//! `sluice` crate runs the queries):
//!
//! - **schema**: the source's columns as sluice maps them now, the files of the table's last
//!   completed run, and STAGING's columns (`INFORMATION_SCHEMA.COLUMNS`), by the README's
//!   mapping: columns missing on a side, extra, or of another type.
//! - **metrics**: one aggregate query on each side, in one snapshot on the source: the row
//!   count, each column's NULL count, `MIN`/`MAX`/`SUM` of integer and decimal columns, the
//!   count of TRUE in boolean columns, the total length in characters of text columns, and
//!   `MIN`/`MAX` of date and timestamp columns as days or microseconds since 1970 (the row
//!   level's canonical integers), every value rendered as text by its own database and
//!   compared exactly (decimals after dropping trailing zeros). Float columns get
//!   `MIN`/`MAX`/`SUM` compared to a number of significant digits (see [`Reading::Float`]):
//!   each engine prints floats its own way and sums them in its own order.
//!
//! - **rows**: per range of the first key column, every row's MD5 of one canonical text that
//!   PostgreSQL, MySQL and Snowflake all compute the same way (see [`RowColumn`]), on both
//!   sides; keys only on one side are missing or extra, keys whose hashes differ are
//!   different, and the first of them are compared column by column to name the columns.
//!
//! An incremental table is compared up to its watermark (`cursor <= watermark` on both sides);
//! source rows past it are "not yet loaded", and while there are some, a difference is
//! reported as pending, not as a mismatch (an updated row's old version is still in STAGING).
//! Soft-deleted rows of STAGING are left out.

use arrow_schema::{DataType, Schema};
use serde::{Deserialize, Serialize};

use crate::config::{DeleteMode, LoadMode, TableConfig};
use crate::ident::{Dialect, TableName};
use crate::plan::{CursorWindow, ScalarValue, scope_conditions};
use crate::snowflake::{FILE_COLUMN, ROW_COLUMN, quote};
use crate::staging::{
    DELETED_AT_COLUMN, DELETED_COLUMN, EXTRACTED_AT_COLUMN, ExistingColumn, MergeSpec,
    RUN_ID_COLUMN, StagingError, compatible_type, describe_existing, staging_columns,
};

/// How deep `sluice validate` looks; each level includes the ones before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Schema,
    Metrics,
    Rows,
}

/// How a comparison came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Both sides agree.
    Ok,
    /// They differ, and nothing in flight explains it.
    Mismatch,
    /// They differ while the source has rows or columns the next run will bring.
    Pending,
}

/// One schema difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaFinding {
    pub column: String,
    /// Where the difference is: `source/files` or `files/staging`.
    pub between: String,
    pub problem: String,
    pub verdict: Verdict,
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    Rows,
    Nulls,
    Min,
    Max,
    Sum,
    Trues,
    /// The total length of a text column's values, in characters (every engine counts
    /// Unicode characters, and no collation is involved, as it would be in `MIN`/`MAX`).
    Chars,
}

/// How a metric reads its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "as")]
pub enum Reading {
    /// The value itself, compared exactly.
    #[default]
    Exact,
    /// A date as days since 1970-01-01.
    Days,
    /// A timestamp as microseconds since 1970-01-01 00:00:00 (UTC for zoned ones).
    Micros,
    /// A float, equal when the two sides agree to `digits` significant digits: 15 for a
    /// double's `MIN`/`MAX` (one value, printed by two engines), 9 for a `SUM` (the order of
    /// additions changes the last bits, more so the more rows; PostgreSQL sums as double), 6
    /// for a single-precision `MIN`/`MAX` (MySQL prints a `FLOAT` to its own precision, while
    /// Snowflake holds it as a double).
    Float { digits: u8 },
}

impl Reading {
    fn is_exact(&self) -> bool {
        *self == Reading::Exact
    }
}

/// One measurement, on one column (none for `Rows`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metric {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub kind: MetricKind,
    #[serde(default, skip_serializing_if = "Reading::is_exact")]
    pub reading: Reading,
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = format!("{:?}", self.kind).to_lowercase();
        match &self.column {
            Some(c) => write!(f, "{kind}({c})"),
            None => f.write_str("rows"),
        }
    }
}

/// One metric on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricResult {
    pub metric: Metric,
    pub source: Option<String>,
    pub staging: Option<String>,
    pub verdict: Verdict,
}

/// How one column enters a row's canonical text, by its type in the files: the same text on
/// every engine, or left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowColumn {
    /// Integers and decimals as the integer `value × 10^scale`.
    Number { scale: i8 },
    /// Text as it is.
    Text,
    /// `1` or `0`.
    Boolean,
    /// Days since 1970-01-01.
    Date,
    /// Microseconds since 1970-01-01 00:00:00 (UTC for zoned timestamps).
    Timestamp,
    /// Floats (each engine prints them its own way), JSON, binary, lists: not compared row
    /// by row (the metrics level counts their NULLs).
    Skipped,
}

impl RowColumn {
    pub fn of(data_type: &DataType) -> RowColumn {
        match data_type {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => RowColumn::Number { scale: 0 },
            DataType::Decimal128(_, scale) => RowColumn::Number { scale: *scale },
            DataType::Utf8 | DataType::LargeUtf8 => RowColumn::Text,
            DataType::Boolean => RowColumn::Boolean,
            DataType::Date32 => RowColumn::Date,
            DataType::Timestamp(_, _) => RowColumn::Timestamp,
            _ => RowColumn::Skipped,
        }
    }
}

/// The row level's layout for a table: its key and the columns each row's text is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowLayout {
    pub key: Vec<(String, RowColumn)>,
    pub columns: Vec<(String, RowColumn)>,
    /// Columns left out of the row text, by name.
    pub skipped: Vec<String>,
}

/// The row level needs a key whose first column is an integer (its ranges are cut on it) and
/// whose columns all have a canonical text.
pub fn row_layout(
    table: &TableConfig,
    schema: &Schema,
    staging: &[String],
) -> Result<RowLayout, String> {
    let kind = |name: &str| {
        schema
            .field_with_name(name)
            .map(|f| RowColumn::of(f.data_type()))
            .map_err(|_| format!("primary_key column '{name}' is not in the files"))
    };
    if table.primary_key.is_empty() {
        return Err("the row level needs a primary_key".into());
    }
    let mut key = Vec::new();
    for name in &table.primary_key {
        let k = kind(name)?;
        if k == RowColumn::Skipped {
            return Err(format!(
                "primary_key column '{name}' has no canonical text; the row level cannot compare it"
            ));
        }
        key.push((name.clone(), k));
    }
    if key[0].1 != (RowColumn::Number { scale: 0 }) {
        return Err(format!(
            "the row level cuts ranges on the first primary_key column, '{}', which must be an integer",
            key[0].0
        ));
    }
    let mut columns = Vec::new();
    let mut skipped = Vec::new();
    for field in schema.fields() {
        let name = field.name();
        if is_metadata(name) || !staging.contains(name) {
            continue;
        }
        let k = if table.target.json_columns.contains(name) {
            RowColumn::Skipped
        } else {
            RowColumn::of(field.data_type())
        };
        if k == RowColumn::Skipped {
            skipped.push(name.clone());
        } else {
            columns.push((name.clone(), k));
        }
    }
    Ok(RowLayout {
        key,
        columns,
        skipped,
    })
}

impl Side {
    /// A column's canonical text (NULL stays NULL).
    fn canonical(self, column: &str, kind: RowColumn) -> String {
        let c = self.quote(column);
        match (kind, self) {
            (RowColumn::Number { scale }, _) => {
                let scaled = if scale > 0 {
                    format!("{c} * 1{}", "0".repeat(scale as usize))
                } else {
                    c
                };
                let whole = match self {
                    Side::Source(Dialect::Postgres) => format!("CAST({scaled} AS numeric(38,0))"),
                    Side::Source(Dialect::Mysql) => format!("CAST({scaled} AS DECIMAL(38,0))"),
                    Side::Snowflake => format!("CAST({scaled} AS NUMBER(38,0))"),
                };
                self.as_text_always(&whole)
            }
            (RowColumn::Text, Side::Snowflake) => c,
            (RowColumn::Text, Side::Source(Dialect::Postgres)) => postgres_text(&c),
            (RowColumn::Text, _) => self.as_text_always(&c),
            (RowColumn::Boolean, _) => {
                format!("CASE WHEN {c} IS NULL THEN NULL WHEN {c} THEN '1' ELSE '0' END")
            }
            (RowColumn::Date | RowColumn::Timestamp, _) => {
                self.as_text_always(&self.canonical_integer(column, kind))
            }
            (RowColumn::Skipped, _) => "NULL".into(),
        }
    }

    /// A date as days since 1970-01-01, a timestamp as microseconds since 1970-01-01
    /// 00:00:00 (UTC for zoned ones), as an integer expression; NULL for another kind.
    /// PostgreSQL's `±infinity` is NULL, as the files hold it (`invalid_dates: null`).
    fn canonical_integer(self, column: &str, kind: RowColumn) -> String {
        let c = self.quote(column);
        match (kind, self) {
            (RowColumn::Date, Side::Source(Dialect::Postgres)) => {
                format!("CASE WHEN isfinite({c}) THEN {c} - DATE '1970-01-01' END")
            }
            (RowColumn::Date, Side::Source(Dialect::Mysql)) => {
                format!("DATEDIFF({c}, '1970-01-01')")
            }
            (RowColumn::Date, Side::Snowflake) => {
                format!("DATEDIFF(day, '1970-01-01'::DATE, {c})")
            }
            (RowColumn::Timestamp, Side::Source(Dialect::Postgres)) => format!(
                "CASE WHEN isfinite({c}) THEN CAST(EXTRACT(EPOCH FROM {c}) * 1000000 AS bigint) END"
            ),
            // TIMESTAMP columns in the session's zone, which sluice sets to +00:00.
            (RowColumn::Timestamp, Side::Source(Dialect::Mysql)) => {
                format!("TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {c})")
            }
            (RowColumn::Timestamp, Side::Snowflake) => {
                format!("DATE_PART(epoch_microsecond, {c})")
            }
            _ => "NULL".into(),
        }
    }

    /// Text on every side, Snowflake's included (its key and hash columns are read as text).
    fn as_text_always(self, expr: &str) -> String {
        match self {
            Side::Snowflake => format!("TO_VARCHAR({expr})"),
            other => other.as_text(expr),
        }
    }

    fn concat(self, parts: &[String]) -> String {
        match self {
            Side::Source(Dialect::Mysql) => format!("CONCAT({})", parts.join(", ")),
            _ => parts.join(" || "),
        }
    }

    /// The row's canonical text: each column's, NULL as `~null~` (no backslash, which MySQL
    /// and Snowflake would read as an escape), separated by `|`.
    fn row_text(self, columns: &[(String, RowColumn)]) -> String {
        let mut parts = Vec::new();
        for (i, (name, kind)) in columns.iter().enumerate() {
            if i > 0 {
                parts.push("'|'".to_owned());
            }
            parts.push(format!(
                "COALESCE({}, '~null~')",
                self.canonical(name, *kind)
            ));
        }
        if parts.is_empty() {
            return "''".into();
        }
        self.concat(&parts)
    }
}

/// The first key column's extremes and the row count within `conditions`, as text.
pub fn key_range_sql(side: Side, from: &str, conditions: &[String], first_key: &str) -> String {
    let k = side.quote(first_key);
    let list = [
        format!("MIN({k})"),
        format!("MAX({k})"),
        "COUNT(*)".to_owned(),
    ]
    .iter()
    .map(|e| side.as_text_always(e))
    .collect::<Vec<_>>()
    .join(", ");
    select_where(&list, from, conditions)
}

fn select_where(list: &str, from: &str, conditions: &[String]) -> String {
    let mut sql = format!("SELECT {list} FROM {from}");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql
}

/// Every row of one key range: the key columns' canonical texts, then the MD5 of the row's
/// canonical text (`hashed`) or each column's canonical text (`!hashed`, to name the
/// columns that differ).
pub fn rows_sql(
    side: Side,
    from: &str,
    conditions: &[String],
    layout: &RowLayout,
    range: (i64, i64),
    hashed: bool,
) -> String {
    let mut list: Vec<String> = layout
        .key
        .iter()
        .map(|(name, kind)| side.canonical(name, *kind))
        .collect();
    if hashed {
        list.push(format!("MD5({})", side.row_text(&layout.columns)));
    } else {
        list.extend(
            layout
                .columns
                .iter()
                .map(|(name, kind)| side.canonical(name, *kind)),
        );
    }
    let k = side.quote(&layout.key[0].0);
    let mut all = conditions.to_vec();
    all.push(format!("{k} >= {} AND {k} <= {}", range.0, range.1));
    // Named by position: a key column is also a row column, and results are read by position.
    let list: Vec<String> = list
        .into_iter()
        .enumerate()
        .map(|(i, e)| format!("{e} AS {}", side.quote(&format!("c{i}"))))
        .collect();
    select_where(&list.join(", "), from, &all)
}

/// Ranges of the first key column from `min` to `max` holding about `rows_per_range` of
/// `rows` rows each (even widths; at least one range).
pub fn key_ranges(min: i64, max: i64, rows: u64, rows_per_range: u64) -> Vec<(i64, i64)> {
    if max < min {
        return Vec::new();
    }
    let count = rows.div_ceil(rows_per_range.max(1)).max(1) as i128;
    let span = i128::from(max) - i128::from(min) + 1;
    let width = ((span + count - 1) / count).max(1);
    let mut ranges = Vec::new();
    let mut lo = i128::from(min);
    while lo <= i128::from(max) {
        let hi = (lo + width - 1).min(i128::from(max));
        ranges.push((lo as i64, hi as i64));
        lo = hi + 1;
    }
    ranges
}

/// How one row differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowProblem {
    /// At the source, not in STAGING.
    Missing,
    /// In STAGING, not at the source.
    Extra,
    /// Both have the key; the values differ.
    Different,
}

/// One row that differs, by its key's canonical text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowDiff {
    pub key: Vec<String>,
    pub problem: RowProblem,
    /// For `different`: the columns whose canonical text differs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
}

/// What the row level found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowsResult {
    pub ranges: u64,
    pub rows_compared: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// The first differing rows, at most `--max-rows`.
    pub examples: Vec<RowDiff>,
    /// Columns not in the row text (floats, JSON, binary, lists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Queries the source answered for this level.
    pub source_queries: u64,
    pub verdict: Verdict,
}

/// Keys of a range (`key texts → hash`), as each side answered.
pub type RangeRows = std::collections::BTreeMap<Vec<Option<String>>, Option<String>>;

/// Compares one range's rows; pushes what differs into `found`.
pub fn compare_range(source: &RangeRows, staging: &RangeRows, found: &mut Vec<RowDiff>) {
    let shown = |key: &[Option<String>]| {
        key.iter()
            .map(|k| k.clone().unwrap_or_else(|| "NULL".into()))
            .collect()
    };
    for (key, hash) in source {
        match staging.get(key) {
            None => found.push(RowDiff {
                key: shown(key),
                problem: RowProblem::Missing,
                columns: Vec::new(),
            }),
            Some(other) if other != hash => found.push(RowDiff {
                key: shown(key),
                problem: RowProblem::Different,
                columns: Vec::new(),
            }),
            Some(_) => {}
        }
    }
    for key in staging.keys() {
        if !source.contains_key(key) {
            found.push(RowDiff {
                key: shown(key),
                problem: RowProblem::Extra,
                columns: Vec::new(),
            });
        }
    }
}

/// Everything `sluice validate` found for one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableValidation {
    pub table: String,
    pub staging: String,
    /// The watermark both sides were compared up to (incremental tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to: Option<ScalarValue>,
    /// Source rows past the watermark (incremental tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_yet_loaded: Option<u64>,
    pub schema: Vec<SchemaFinding>,
    pub metrics: Vec<MetricResult>,
    /// The row level, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<RowsResult>,
    /// Why the row level was not run, when it was asked for and could not be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_skipped: Option<String>,
}

impl TableValidation {
    /// The worst verdict of every finding and metric.
    pub fn verdict(&self) -> Verdict {
        let all = self
            .schema
            .iter()
            .map(|f| f.verdict)
            .chain(self.metrics.iter().map(|m| m.verdict))
            .chain(self.rows.iter().map(|r| r.verdict));
        let mut worst = Verdict::Ok;
        for v in all {
            worst = match (worst, v) {
                (Verdict::Mismatch, _) | (_, Verdict::Mismatch) => Verdict::Mismatch,
                (Verdict::Pending, _) | (_, Verdict::Pending) => Verdict::Pending,
                _ => Verdict::Ok,
            };
        }
        worst
    }

    /// Why this validation is no pass, `None` when it is one: what differs (schema findings,
    /// metrics, rows), or an asked-for level that could not run. Rows not yet loaded (an
    /// incremental table past its watermark) are no difference.
    pub fn failure(&self) -> Option<String> {
        let mut problems = Vec::new();
        let schema = self
            .schema
            .iter()
            .filter(|f| f.verdict == Verdict::Mismatch)
            .count();
        if schema > 0 {
            problems.push(format!("{schema} schema finding(s)"));
        }
        let metrics = self
            .metrics
            .iter()
            .filter(|m| m.verdict == Verdict::Mismatch)
            .count();
        if metrics > 0 {
            problems.push(format!("{metrics} metric(s) differ"));
        }
        if let Some(rows) = self
            .rows
            .as_ref()
            .filter(|r| r.verdict == Verdict::Mismatch)
        {
            problems.push(format!(
                "rows: {} missing, {} extra, {} different",
                rows.missing, rows.extra, rows.different
            ));
        }
        if let Some(reason) = &self.rows_skipped {
            problems.push(format!("rows not compared: {reason}"));
        }
        (!problems.is_empty()).then(|| {
            format!(
                "{} differs from the source: {}",
                self.staging,
                problems.join("; ")
            )
        })
    }
}

/// Columns sluice adds to every file (and a cdc run's change columns); they have no source
/// counterpart.
fn is_metadata(name: &str) -> bool {
    [
        RUN_ID_COLUMN,
        EXTRACTED_AT_COLUMN,
        FILE_COLUMN,
        ROW_COLUMN,
        DELETED_COLUMN,
        DELETED_AT_COLUMN,
    ]
    .contains(&name)
        || crate::cdc::changes::CHANGE_COLUMNS.contains(&name)
}

/// The schema level. `source` is the file schema a run would write now, `files` that of the
/// last completed run (`None` before the first), `staging` STAGING's columns (empty when it
/// does not exist).
pub fn compare_schemas(
    table: &TableConfig,
    source: &Schema,
    files: Option<&Schema>,
    staging: &[ExistingColumn],
) -> Result<Vec<SchemaFinding>, StagingError> {
    let mut findings = Vec::new();
    let mut push = |column: &str, between: &str, problem: String, verdict: Verdict| {
        findings.push(SchemaFinding {
            column: column.to_owned(),
            between: between.to_owned(),
            problem,
            verdict,
        });
    };
    let files_schema = files.unwrap_or(source);
    if let Some(files) = files {
        for field in source.fields().iter().filter(|f| !is_metadata(f.name())) {
            match files.field_with_name(field.name()) {
                Err(_) => push(
                    field.name(),
                    "source/files",
                    "at the source, not yet in the files (the next run adds it)".into(),
                    Verdict::Pending,
                ),
                Ok(f) if f.data_type() != field.data_type() => push(
                    field.name(),
                    "source/files",
                    format!(
                        "the source now gives {}, the files hold {}",
                        field.data_type(),
                        f.data_type()
                    ),
                    Verdict::Mismatch,
                ),
                Ok(_) => {}
            }
        }
        for field in files.fields().iter().filter(|f| !is_metadata(f.name())) {
            if source.field_with_name(field.name()).is_err() {
                push(
                    field.name(),
                    "source/files",
                    "in the files, no longer at the source".into(),
                    Verdict::Mismatch,
                );
            }
        }
    }
    if staging.is_empty() {
        push(
            "",
            "files/staging",
            "STAGING does not exist (no run has been loaded yet)".into(),
            Verdict::Pending,
        );
        return Ok(findings);
    }
    let spec = MergeSpec::of(table);
    let wanted = staging_columns(files_schema, &spec, &table.key())?;
    for (name, wanted_type) in &wanted {
        match staging.iter().find(|c| &c.name == name) {
            None => push(
                name,
                "files/staging",
                format!("not in STAGING (wanted {wanted_type})"),
                Verdict::Mismatch,
            ),
            Some(existing) if !compatible_type(existing, wanted_type) => push(
                name,
                "files/staging",
                format!(
                    "STAGING has {}, the files map to {wanted_type}",
                    describe_existing(existing)
                ),
                Verdict::Mismatch,
            ),
            Some(_) => {}
        }
    }
    for column in staging {
        if !wanted.iter().any(|(name, _)| name == &column.name) && !is_metadata(&column.name) {
            push(
                &column.name,
                "files/staging",
                "in STAGING, not in the files (dropped at the source: NULL in new rows)".into(),
                Verdict::Mismatch,
            );
        }
    }
    Ok(findings)
}

/// What a column is compared by, from its type in the files.
fn measures(data_type: &DataType) -> Vec<(MetricKind, Reading)> {
    use MetricKind::*;
    let exact = |kinds: &[MetricKind]| kinds.iter().map(|k| (*k, Reading::Exact)).collect();
    let float = |digits_min_max: u8, digits_sum: u8| {
        vec![
            (Nulls, Reading::Exact),
            (
                Min,
                Reading::Float {
                    digits: digits_min_max,
                },
            ),
            (
                Max,
                Reading::Float {
                    digits: digits_min_max,
                },
            ),
            (Sum, Reading::Float { digits: digits_sum }),
        ]
    };
    match data_type {
        DataType::Float64 => return float(15, 9),
        DataType::Float32 | DataType::Float16 => return float(6, 9),
        _ => {}
    }
    match RowColumn::of(data_type) {
        RowColumn::Number { .. } => exact(&[Nulls, Min, Max, Sum]),
        RowColumn::Boolean => exact(&[Nulls, Trues]),
        RowColumn::Text => exact(&[Nulls, Chars]),
        // NULLs counted on the canonical integer too: PostgreSQL's `±infinity` and MySQL's
        // zero dates are NULL there, as in the files.
        RowColumn::Date => vec![
            (Nulls, Reading::Days),
            (Min, Reading::Days),
            (Max, Reading::Days),
        ],
        RowColumn::Timestamp => vec![
            (Nulls, Reading::Micros),
            (Min, Reading::Micros),
            (Max, Reading::Micros),
        ],
        RowColumn::Skipped => exact(&[Nulls]),
    }
}

/// The metrics of a table: its rows, then each column both sides have (`schema`: the files'
/// schema, `staging`: STAGING's column names), sluice's own columns left out.
pub fn metrics_for(table: &TableConfig, schema: &Schema, staging: &[String]) -> Vec<Metric> {
    let mut metrics = vec![Metric {
        column: None,
        kind: MetricKind::Rows,
        reading: Reading::Exact,
    }];
    for field in schema.fields() {
        let name = field.name();
        if is_metadata(name) || !staging.contains(name) {
            continue;
        }
        // STAGING holds these as VARIANT, whose text is not the source's.
        let kinds = if table.target.json_columns.contains(name) {
            vec![(MetricKind::Nulls, Reading::Exact)]
        } else {
            measures(field.data_type())
        };
        for (kind, reading) in kinds {
            metrics.push(Metric {
                column: Some(name.clone()),
                kind,
                reading,
            });
        }
    }
    metrics
}

/// Which database a metrics query is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source(Dialect),
    Snowflake,
}

impl Side {
    fn quote(self, name: &str) -> String {
        match self {
            Side::Source(d) => d.quote(name),
            Side::Snowflake => quote(name),
        }
    }

    fn as_text(self, expr: &str) -> String {
        match self {
            Side::Source(Dialect::Postgres) => format!("CAST({expr} AS text)"),
            Side::Source(Dialect::Mysql) => format!("CAST({expr} AS CHAR)"),
            // Snowflake answers typed values (NUMBER exactly, as its unscaled digits and
            // scale, <https://docs.snowflake.com/en/developer-guide/sql-api/handling-responses>);
            // the client renders them, so no text conversion of Snowflake's is relied on.
            Side::Snowflake => expr.to_owned(),
        }
    }

    fn expr(self, metric: &Metric) -> String {
        let c = metric.column.as_deref().map(|c| match metric.reading {
            Reading::Days => self.canonical_integer(c, RowColumn::Date),
            Reading::Micros => self.canonical_integer(c, RowColumn::Timestamp),
            // PostgreSQL sums `real` in single precision; read as double, every engine sums
            // the same values (a `real` is a double in Snowflake).
            Reading::Float { .. } if self == Side::Source(Dialect::Postgres) => {
                format!("CAST({} AS double precision)", self.quote(c))
            }
            Reading::Exact | Reading::Float { .. } => self.quote(c),
        });
        let c = c.as_deref().unwrap_or("*");
        let inner = match metric.kind {
            // Characters on every side: Snowflake's LENGTH counts "UTF-8 characters ... as a
            // single character" (<https://docs.snowflake.com/en/sql-reference/functions/length>),
            // as PostgreSQL's char_length and MySQL's CHAR_LENGTH do.
            MetricKind::Chars => {
                let length = match self {
                    Side::Source(Dialect::Postgres) => format!("char_length({})", postgres_text(c)),
                    Side::Source(Dialect::Mysql) => format!("CHAR_LENGTH(CAST({c} AS CHAR))"),
                    Side::Snowflake => format!("LENGTH({c})"),
                };
                format!("COALESCE(SUM({length}), 0)")
            }
            MetricKind::Rows => "COUNT(*)".to_owned(),
            MetricKind::Nulls => format!("COUNT(*) - COUNT({c})"),
            MetricKind::Min => format!("MIN({c})"),
            MetricKind::Max => format!("MAX({c})"),
            MetricKind::Sum => format!("SUM({c})"),
            MetricKind::Trues => format!("COALESCE(SUM(CASE WHEN {c} THEN 1 ELSE 0 END), 0)"),
        };
        self.as_text(&inner)
    }
}

/// One `SELECT` of every metric as text over `from`, within `conditions`.
pub fn metrics_sql(side: Side, from: &str, conditions: &[String], metrics: &[Metric]) -> String {
    let list = metrics
        .iter()
        .map(|m| side.expr(m))
        .collect::<Vec<_>>()
        .join(", ");
    select_where(&list, from, conditions)
}

/// The source side's scope: the table's `where`, and for an incremental table the rows up to
/// `watermark` (none before the first run).
pub fn source_conditions(
    dialect: Dialect,
    table: &TableConfig,
    watermark: Option<&ScalarValue>,
) -> Vec<String> {
    scope_conditions(
        dialect,
        table.filter.as_deref(),
        up_to_watermark(table, watermark).as_ref(),
    )
}

/// The count of source rows past the watermark, for an incremental table (every row it
/// reads, before its first run).
pub fn not_yet_loaded_sql(
    dialect: Dialect,
    table: &TableConfig,
    name: &TableName,
    watermark: Option<&ScalarValue>,
) -> Option<String> {
    let (LoadMode::Incremental, Some(cursor)) = (table.load.mode, &table.load.cursor) else {
        return None;
    };
    let mut conditions = scope_conditions(dialect, table.filter.as_deref(), None);
    if let Some(watermark) = watermark {
        conditions.push(format!(
            "{} > {}",
            dialect.quote(cursor),
            watermark.sql_literal(dialect)
        ));
    }
    Some(metrics_sql(
        Side::Source(dialect),
        &name.quoted(dialect),
        &conditions,
        &[Metric {
            column: None,
            kind: MetricKind::Rows,
            reading: Reading::Exact,
        }],
    ))
}

fn up_to_watermark(table: &TableConfig, watermark: Option<&ScalarValue>) -> Option<CursorWindow> {
    match (table.load.mode, &table.load.cursor) {
        (LoadMode::Incremental, Some(cursor)) => Some(CursorWindow {
            column: cursor.clone(),
            lower: None,
            upper: watermark.cloned(),
            include_nulls: table.load.include_null_cursor,
            hold: None,
        }),
        _ => None,
    }
}

/// STAGING's scope: live rows (not soft-deleted), and for an incremental table the rows up to
/// `watermark`.
pub fn staging_conditions(table: &TableConfig, watermark: Option<&ScalarValue>) -> Vec<String> {
    let mut conditions = Vec::new();
    if table.deletes.mode == DeleteMode::Soft {
        conditions.push(format!(
            "COALESCE({}, FALSE) = FALSE",
            quote(DELETED_COLUMN)
        ));
    }
    if let Some(window) = up_to_watermark(table, watermark) {
        let column = quote(&window.column);
        let range = match &window.upper {
            None => "1 = 0".to_owned(),
            Some(upper) => format!("{column} <= {}", snowflake_literal(upper)),
        };
        conditions.push(if window.include_nulls {
            format!("({range} OR {column} IS NULL)")
        } else {
            range
        });
    }
    conditions
}

/// A watermark as a Snowflake literal of the type STAGING holds it in.
fn snowflake_literal(value: &ScalarValue) -> String {
    match value {
        ScalarValue::Int(v) => v.to_string(),
        ScalarValue::Date(d) => format!("'{}'::DATE", d.format("%Y-%m-%d")),
        ScalarValue::Timestamp(t) => {
            format!("'{}'::TIMESTAMP_NTZ", t.format("%Y-%m-%d %H:%M:%S%.6f"))
        }
        ScalarValue::TimestampTz(t) => format!(
            "'{} +00:00'::TIMESTAMP_TZ",
            t.format("%Y-%m-%d %H:%M:%S%.6f")
        ),
    }
}

/// Compares the two sides' values, metric by metric. `pending` (source rows past the
/// watermark) turns a difference into [`Verdict::Pending`].
pub fn compare_metrics(
    metrics: &[Metric],
    source: &[Option<String>],
    staging: &[Option<String>],
    pending: bool,
) -> Vec<MetricResult> {
    metrics
        .iter()
        .enumerate()
        .map(|(i, metric)| {
            let s = source.get(i).cloned().flatten();
            let t = staging.get(i).cloned().flatten();
            let same = match (metric.reading, s.as_deref(), t.as_deref()) {
                (Reading::Float { digits }, Some(a), Some(b)) => floats_agree(a, b, digits),
                _ => s.as_deref().map(normalize_number) == t.as_deref().map(normalize_number),
            };
            MetricResult {
                metric: metric.clone(),
                source: s,
                staging: t,
                verdict: match (same, pending) {
                    (true, _) => Verdict::Ok,
                    (false, true) => Verdict::Pending,
                    (false, false) => Verdict::Mismatch,
                },
            }
        })
        .collect()
}

/// A PostgreSQL text column's value as the files hold it. `CAST(… AS text)` trims the
/// padding of a `character(n)`, which the files keep (sluice reads it as sent), so that type
/// is printed by its output function (`format('%s', …)`, which turns NULL into '' and so is
/// kept from NULLs); every other column as the text cast sluice reads it through.
fn postgres_text(c: &str) -> String {
    format!(
        "CASE WHEN {c} IS NULL THEN NULL WHEN pg_typeof({c}) = 'character'::regtype THEN format('%s', {c}) ELSE CAST({c} AS text) END"
    )
}

/// Whether two floats, as their databases printed them, agree to `digits` significant
/// digits (relative to the larger magnitude); NaN agrees with NaN and an infinity with itself.
pub fn floats_agree(a: &str, b: &str, digits: u8) -> bool {
    let (Ok(a), Ok(b)) = (a.trim().parse::<f64>(), b.trim().parse::<f64>()) else {
        return a.trim() == b.trim();
    };
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a.is_infinite() || b.is_infinite() {
        return a == b;
    }
    let scale = a.abs().max(b.abs());
    (a - b).abs() <= scale * 10f64.powi(-i32::from(digits))
}

/// A number's text without what only its rendering decides: a leading `+`, trailing zeros
/// after the point, a bare point, the sign of zero. Anything else is returned trimmed.
pub fn normalize_number(text: &str) -> String {
    let t = text.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return t.to_owned();
    }
    let digits = if digits.contains('.') {
        digits.trim_end_matches('0').trim_end_matches('.')
    } else {
        digits
    };
    let digits = digits.trim_start_matches('0');
    let digits = if digits.is_empty() || digits.starts_with('.') {
        format!("0{digits}")
    } else {
        digits.to_owned()
    };
    if negative && digits != "0" {
        format!("-{digits}")
    } else {
        digits
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_schema::{Field, TimeUnit};

    use super::*;
    use crate::Config;

    fn table(extra: &str) -> TableConfig {
        let yaml = format!(
            "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\n\
             tables:\n  - source: shop\n    table: public.orders\n    primary_key: [id]\n{extra}"
        );
        Config::from_yaml(&yaml, "t").unwrap().tables.remove(0)
    }

    fn schema(extra: Vec<Field>) -> Schema {
        let mut fields = vec![
            Field::new("id", DataType::Int64, false),
            Field::new("total", DataType::Decimal128(12, 2), true),
            Field::new("paid", DataType::Boolean, true),
            Field::new("note", DataType::Utf8, true),
            Field::new(
                "updated_at",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
        ];
        fields.extend(extra);
        fields.push(Field::new(RUN_ID_COLUMN, DataType::Utf8, false));
        fields.push(Field::new(
            EXTRACTED_AT_COLUMN,
            DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
            false,
        ));
        Schema::new(fields)
    }

    fn existing(name: &str, data_type: &str, p: Option<u32>, s: Option<u32>) -> ExistingColumn {
        ExistingColumn {
            name: name.into(),
            data_type: data_type.into(),
            precision: p,
            scale: s,
        }
    }

    fn staging() -> Vec<ExistingColumn> {
        vec![
            existing("id", "NUMBER", Some(19), Some(0)),
            existing("total", "NUMBER", Some(12), Some(2)),
            existing("paid", "BOOLEAN", None, None),
            existing("note", "TEXT", None, None),
            existing("updated_at", "TIMESTAMP_NTZ", None, None),
            existing(RUN_ID_COLUMN, "TEXT", None, None),
            existing(EXTRACTED_AT_COLUMN, "TIMESTAMP_TZ", None, None),
        ]
    }

    #[test]
    fn matching_schemas_have_no_findings_and_each_drift_is_named() {
        let t = table("");
        let s = schema(vec![]);
        assert_eq!(compare_schemas(&t, &s, Some(&s), &staging()).unwrap(), []);

        // A column added at the source since the last run: pending, the next run adds it.
        let grown = schema(vec![Field::new("coupon", DataType::Utf8, true)]);
        let findings = compare_schemas(&t, &grown, Some(&s), &staging()).unwrap();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(
            (findings[0].column.as_str(), findings[0].verdict),
            ("coupon", Verdict::Pending)
        );

        // STAGING's column of another type, one missing and one extra.
        let mut drifted = staging();
        drifted[1] = existing("total", "FLOAT", None, None);
        drifted.retain(|c| c.name != "paid");
        drifted.push(existing("legacy", "TEXT", None, None));
        let findings = compare_schemas(&t, &s, Some(&s), &drifted).unwrap();
        let problems: Vec<String> = findings
            .iter()
            .map(|f| format!("{}: {}", f.column, f.problem))
            .collect();
        assert_eq!(
            problems,
            [
                "total: STAGING has FLOAT, the files map to NUMBER(12,2)",
                "paid: not in STAGING (wanted BOOLEAN)",
                "legacy: in STAGING, not in the files (dropped at the source: NULL in new rows)",
            ]
        );
        assert!(findings.iter().all(|f| f.verdict == Verdict::Mismatch));

        // The source retyped a column the files hold.
        let mut retyped = s.fields().to_vec();
        retyped[0] = Arc::new(Field::new("id", DataType::Utf8, false));
        let findings = compare_schemas(&t, &Schema::new(retyped), Some(&s), &staging()).unwrap();
        assert_eq!(
            findings[0].problem,
            "the source now gives Utf8, the files hold Int64"
        );
    }

    #[test]
    fn metrics_cover_rows_nulls_and_exact_aggregates_on_each_side() {
        let t = table("    target: { json_columns: [note] }\n");
        let names: Vec<String> = staging().into_iter().map(|c| c.name).collect();
        let metrics = metrics_for(&t, &schema(vec![]), &names);
        let shown: Vec<String> = metrics.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "rows",
                "nulls(id)",
                "min(id)",
                "max(id)",
                "sum(id)",
                "nulls(total)",
                "min(total)",
                "max(total)",
                "sum(total)",
                "nulls(paid)",
                "trues(paid)",
                "nulls(note)",
                "nulls(updated_at)",
                "min(updated_at)",
                "max(updated_at)",
            ]
        );
        // Timestamps as microseconds since 1970 on each side.
        let newest = &metrics[metrics.len() - 1..];
        assert_eq!(newest[0].reading, Reading::Micros);
        assert_eq!(
            metrics_sql(Side::Snowflake, "S", &[], newest),
            "SELECT MAX(DATE_PART(epoch_microsecond, \"updated_at\")) FROM S"
        );
        // Text that is not JSON: its length in characters, counted alike by every engine.
        let plain = metrics_for(&table(""), &schema(vec![]), &names);
        let chars = plain
            .iter()
            .find(|m| m.kind == MetricKind::Chars)
            .unwrap()
            .clone();
        assert_eq!(chars.column.as_deref(), Some("note"));
        assert_eq!(
            metrics_sql(
                Side::Source(Dialect::Mysql),
                "t",
                &[],
                std::slice::from_ref(&chars)
            ),
            "SELECT CAST(COALESCE(SUM(CHAR_LENGTH(CAST(`note` AS CHAR))), 0) AS CHAR) FROM t"
        );
        assert_eq!(
            metrics_sql(Side::Snowflake, "S", &[], &[chars]),
            "SELECT COALESCE(SUM(LENGTH(\"note\")), 0) FROM S"
        );
        let few = &metrics[..3];
        assert_eq!(
            metrics_sql(
                Side::Source(Dialect::Postgres),
                "\"public\".\"orders\"",
                &[],
                few
            ),
            "SELECT CAST(COUNT(*) AS text), CAST(COUNT(*) - COUNT(\"id\") AS text), CAST(MIN(\"id\") AS text) FROM \"public\".\"orders\""
        );
        assert_eq!(
            metrics_sql(
                Side::Source(Dialect::Mysql),
                "`orders`",
                &["x > 1".into()],
                &metrics[9..11]
            ),
            "SELECT CAST(COUNT(*) - COUNT(`paid`) AS CHAR), CAST(COALESCE(SUM(CASE WHEN `paid` THEN 1 ELSE 0 END), 0) AS CHAR) FROM `orders` WHERE x > 1"
        );
        assert_eq!(
            metrics_sql(Side::Snowflake, "S.T", &[], &metrics[..1]),
            "SELECT COUNT(*) FROM S.T"
        );
    }

    #[test]
    fn incremental_tables_are_compared_up_to_the_watermark() {
        let t = table(
            "    load: { mode: incremental, cursor: updated_at }\n    deletes: { mode: off }\n",
        );
        let w = ScalarValue::Timestamp(
            chrono::NaiveDate::from_ymd_opt(2026, 1, 2)
                .unwrap()
                .and_hms_opt(3, 4, 5)
                .unwrap(),
        );
        assert_eq!(
            source_conditions(Dialect::Postgres, &t, Some(&w)),
            ["\"updated_at\" <= TIMESTAMP '2026-01-02 03:04:05.000000'"]
        );
        assert_eq!(
            staging_conditions(&t, Some(&w)),
            ["\"updated_at\" <= '2026-01-02 03:04:05.000000'::TIMESTAMP_NTZ"]
        );
        // Before the first run nothing is loaded, so nothing is compared, and every row is
        // not yet loaded.
        assert_eq!(staging_conditions(&t, None), ["1 = 0"]);
        assert_eq!(
            not_yet_loaded_sql(
                Dialect::Postgres,
                &t,
                &TableName::parse("public.orders").unwrap(),
                None
            )
            .unwrap(),
            "SELECT CAST(COUNT(*) AS text) FROM \"public\".\"orders\""
        );
        let name = TableName::parse("public.orders").unwrap();
        assert_eq!(
            not_yet_loaded_sql(Dialect::Postgres, &t, &name, Some(&w)).unwrap(),
            "SELECT CAST(COUNT(*) AS text) FROM \"public\".\"orders\" WHERE \"updated_at\" > TIMESTAMP '2026-01-02 03:04:05.000000'"
        );
        // Full loads: everything, STAGING's soft-deleted rows left out.
        let full = table("    deletes: { mode: soft }\n");
        assert!(source_conditions(Dialect::Postgres, &full, None).is_empty());
        assert_eq!(
            staging_conditions(&full, None),
            ["COALESCE(\"_sluice_deleted\", FALSE) = FALSE"]
        );
        assert_eq!(
            not_yet_loaded_sql(Dialect::Postgres, &full, &name, None),
            None
        );
    }

    #[test]
    fn key_ranges_cover_every_key_once() {
        assert_eq!(key_ranges(1, 10, 10, 5), [(1, 5), (6, 10)]);
        assert_eq!(key_ranges(1, 10, 10, 100), [(1, 10)]);
        assert_eq!(key_ranges(-3, -3, 1, 1), [(-3, -3)]);
        assert_eq!(key_ranges(5, 4, 0, 10), []);
        let wide = key_ranges(i64::MIN, i64::MAX, 3, 1);
        assert_eq!(wide.len(), 3);
        assert_eq!((wide[0].0, wide[2].1), (i64::MIN, i64::MAX));
        for pair in wide.windows(2) {
            assert_eq!(pair[0].1 + 1, pair[1].0);
        }
    }

    #[test]
    fn rows_are_hashed_from_one_canonical_text_per_engine() {
        let t = table("");
        let names: Vec<String> = staging().into_iter().map(|c| c.name).collect();
        let s = schema(vec![Field::new("rate", DataType::Float64, true)]);
        let layout = row_layout(&t, &s, &names).unwrap();
        // The float column is not in staging() here; a known-skipped type is listed when it is.
        let mut with_rate = names.clone();
        with_rate.push("rate".into());
        assert_eq!(row_layout(&t, &s, &with_rate).unwrap().skipped, ["rate"]);
        let pg = rows_sql(
            Side::Source(Dialect::Postgres),
            "\"t\"",
            &[],
            &layout,
            (1, 9),
            true,
        );
        assert!(
            pg.starts_with("SELECT CAST(CAST(\"id\" AS numeric(38,0)) AS text) AS \"c0\", MD5("),
            "{pg}"
        );
        assert!(pg.contains("COALESCE(CAST(CAST(\"total\" * 100 AS numeric(38,0)) AS text), '~null~') || '|' || "), "{pg}");
        assert!(
            pg.contains(
                "CAST(CASE WHEN isfinite(\"updated_at\") THEN CAST(EXTRACT(EPOCH FROM \"updated_at\") * 1000000 AS bigint) END AS text)"
            ),
            "{pg}"
        );
        assert!(
            pg.ends_with("AS \"c1\" FROM \"t\" WHERE \"id\" >= 1 AND \"id\" <= 9"),
            "{pg}"
        );
        let my = rows_sql(
            Side::Source(Dialect::Mysql),
            "`t`",
            &[],
            &layout,
            (1, 9),
            true,
        );
        assert!(
            my.contains(
                "MD5(CONCAT(COALESCE(CAST(CAST(`id` AS DECIMAL(38,0)) AS CHAR), '~null~'), '|', "
            ),
            "{my}"
        );
        assert!(
            my.contains("TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', `updated_at`)"),
            "{my}"
        );
        let sf = rows_sql(Side::Snowflake, "S.T", &[], &layout, (1, 9), false);
        assert!(
            sf.contains(
                "CASE WHEN \"paid\" IS NULL THEN NULL WHEN \"paid\" THEN '1' ELSE '0' END AS \"c3\""
            ),
            "{sf}"
        );
        assert!(
            sf.contains("TO_VARCHAR(DATE_PART(epoch_microsecond, \"updated_at\")) AS \"c5\""),
            "{sf}"
        );

        // The first key column must be an integer, and the key must have a text.
        let by_text = table("").tap_key(&["note"]);
        assert!(
            row_layout(&by_text, &s, &names)
                .unwrap_err()
                .contains("must be an integer")
        );
    }

    trait TapKey {
        fn tap_key(self, key: &[&str]) -> Self;
    }

    impl TapKey for TableConfig {
        fn tap_key(mut self, key: &[&str]) -> Self {
            self.primary_key = key.iter().map(|k| (*k).to_owned()).collect();
            self
        }
    }

    #[test]
    fn a_range_compares_key_by_key() {
        let row = |k: &str, h: &str| (vec![Some(k.to_owned())], Some(h.to_owned()));
        let source: RangeRows = [row("1", "a"), row("2", "b"), row("3", "c")]
            .into_iter()
            .collect();
        let staging: RangeRows = [row("1", "a"), row("2", "x"), row("4", "d")]
            .into_iter()
            .collect();
        let mut found = Vec::new();
        compare_range(&source, &staging, &mut found);
        let seen: Vec<(String, RowProblem)> =
            found.iter().map(|d| (d.key.join(","), d.problem)).collect();
        assert_eq!(
            seen,
            [
                ("2".to_owned(), RowProblem::Different),
                ("3".to_owned(), RowProblem::Missing),
                ("4".to_owned(), RowProblem::Extra),
            ]
        );
    }

    #[test]
    fn numbers_compare_by_value_and_a_difference_is_pending_only_while_rows_are_in_flight() {
        for (a, b) in [
            ("12.50", "12.5"),
            ("-0.00", "0"),
            ("+7", "7"),
            ("0.10", ".1"),
            ("100", "100.000"),
        ] {
            assert_eq!(normalize_number(a), normalize_number(b), "{a} {b}");
        }
        assert_ne!(normalize_number("100"), normalize_number("10"));
        assert_ne!(normalize_number("1.05"), normalize_number("1.5"));
        let metrics = vec![
            Metric {
                column: None,
                kind: MetricKind::Rows,
                reading: Reading::Exact,
            },
            Metric {
                column: Some("total".into()),
                kind: MetricKind::Sum,
                reading: Reading::Exact,
            },
        ];
        let s = |v: &str| Some(v.to_owned());
        let same = compare_metrics(&metrics, &[s("3"), s("10.50")], &[s("3"), s("10.5")], false);
        assert!(same.iter().all(|m| m.verdict == Verdict::Ok));
        let off = compare_metrics(
            &metrics,
            &[s("3"), s("10.50")],
            &[s("3"), s("10.49")],
            false,
        );
        assert_eq!(off[1].verdict, Verdict::Mismatch);
        let pending = compare_metrics(&metrics, &[s("3"), s("10.50")], &[s("3"), s("10.49")], true);
        assert_eq!(pending[1].verdict, Verdict::Pending);
        // NULL (no rows) only equals NULL.
        let empty = compare_metrics(&metrics, &[s("0"), None], &[s("0"), s("0")], false);
        assert_eq!(empty[1].verdict, Verdict::Mismatch);
    }

    #[test]
    fn floats_agree_to_their_digits_and_no_further() {
        // PostgreSQL's shortest text and a double's, of one value.
        assert!(floats_agree("4.7", "4.7", 15));
        assert!(floats_agree("1e+20", "100000000000000000000", 15));
        // A sum in another order: the last bits differ.
        assert!(floats_agree("12345.678900000001", "12345.6789", 9));
        assert!(!floats_agree("12345.6789", "12346.6789", 9));
        // A real read back as a double.
        assert!(floats_agree("0.1", "0.10000000149011612", 6));
        assert!(!floats_agree("0.1", "0.10000000149011612", 15));
        assert!(floats_agree("NaN", "nan", 15) && !floats_agree("NaN", "1", 15));
        assert!(floats_agree("Infinity", "inf", 15) && !floats_agree("-Infinity", "inf", 15));
        assert!(floats_agree("0", "-0", 15));
        let sum = |digits| Metric {
            column: Some("rate".into()),
            kind: MetricKind::Sum,
            reading: Reading::Float { digits },
        };
        let s = |v: &str| Some(v.to_owned());
        let found = compare_metrics(&[sum(9)], &[s("1.5000000001")], &[s("1.5")], false);
        assert_eq!(found[0].verdict, Verdict::Ok);
        let found = compare_metrics(&[sum(9)], &[s("1.5")], &[s("2.5")], false);
        assert_eq!(found[0].verdict, Verdict::Mismatch);
    }
}
