//! `sluice validate`: does STAGING hold what the source holds? Two levels, pure here (the
//! `sluice` crate runs the queries):
//!
//! - **schema**: the source's columns as sluice maps them now, the files of the table's last
//!   completed run, and STAGING's columns (`INFORMATION_SCHEMA.COLUMNS`), by the README's
//!   mapping: columns missing on a side, extra, or of another type.
//! - **metrics**: one aggregate query on each side, in one snapshot on the source: the row
//!   count, each column's NULL count, `MIN`/`MAX`/`SUM` of integer and decimal columns and the
//!   count of TRUE in boolean columns, every value rendered as text by its own database and
//!   compared exactly (decimals after dropping trailing zeros). Float, text, date and time
//!   columns are compared by NULL count only: their text renderings differ between engines.
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
}

/// One measurement, on one column (none for `Rows`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metric {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub kind: MetricKind,
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
}

impl TableValidation {
    /// The worst verdict of every finding and metric.
    pub fn verdict(&self) -> Verdict {
        let all = self
            .schema
            .iter()
            .map(|f| f.verdict)
            .chain(self.metrics.iter().map(|m| m.verdict));
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
}

/// Columns sluice adds to every file; they have no source counterpart.
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
fn measures(data_type: &DataType) -> &'static [MetricKind] {
    use MetricKind::*;
    match data_type {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Decimal128(_, _) => &[Nulls, Min, Max, Sum],
        DataType::Boolean => &[Nulls, Trues],
        _ => &[Nulls],
    }
}

/// The metrics of a table: its rows, then each column both sides have (`schema`: the files'
/// schema, `staging`: STAGING's column names), sluice's own columns left out.
pub fn metrics_for(table: &TableConfig, schema: &Schema, staging: &[String]) -> Vec<Metric> {
    let mut metrics = vec![Metric {
        column: None,
        kind: MetricKind::Rows,
    }];
    for field in schema.fields() {
        let name = field.name();
        if is_metadata(name) || !staging.contains(name) {
            continue;
        }
        // STAGING holds these as VARIANT, whose text is not the source's.
        let kinds = if table.target.json_columns.contains(name) {
            &[MetricKind::Nulls][..]
        } else {
            measures(field.data_type())
        };
        for kind in kinds {
            metrics.push(Metric {
                column: Some(name.clone()),
                kind: *kind,
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
        let c = metric.column.as_deref().map(|c| self.quote(c));
        let c = c.as_deref().unwrap_or("*");
        let inner = match metric.kind {
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
    let mut sql = format!("SELECT {list} FROM {from}");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql
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

/// The count of source rows past the watermark, for an incremental table that has one.
pub fn not_yet_loaded_sql(
    dialect: Dialect,
    table: &TableConfig,
    name: &TableName,
    watermark: Option<&ScalarValue>,
) -> Option<String> {
    let (LoadMode::Incremental, Some(cursor), Some(watermark)) =
        (table.load.mode, &table.load.cursor, watermark)
    else {
        return None;
    };
    let mut conditions = scope_conditions(dialect, table.filter.as_deref(), None);
    conditions.push(format!(
        "{} > {}",
        dialect.quote(cursor),
        watermark.sql_literal(dialect)
    ));
    Some(metrics_sql(
        Side::Source(dialect),
        &name.quoted(dialect),
        &conditions,
        &[Metric {
            column: None,
            kind: MetricKind::Rows,
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
            let same = s.as_deref().map(normalize_number) == t.as_deref().map(normalize_number);
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
            ]
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
        // Before the first run nothing is loaded, so nothing is compared.
        assert_eq!(staging_conditions(&t, None), ["1 = 0"]);
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
            },
            Metric {
                column: Some("total".into()),
                kind: MetricKind::Sum,
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
}
