//! What the data catalog (Glue) should say about a table: its name, its columns in Hive types
//! mapped from the files' Arrow schema, its `ingest_date`/`ingest_hour` partitions, and how a
//! table definition may evolve when the source changes (add columns, widen types; anything
//! else is reported, never applied).

use std::str::FromStr;

use arrow_schema::DataType;
use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::manifest::ManifestColumn;

/// The partition keys of every table, in order.
pub const PARTITION_KEYS: [&str; 2] = ["ingest_date", "ingest_hour"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HiveColumn {
    pub name: String,
    pub hive_type: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CatalogSchemaError {
    #[error("column '{column}': Arrow type {data_type} has no catalog type")]
    Unsupported { column: String, data_type: String },
    #[error(
        "the catalog table no longer matches the source: {}",
        .0.iter().map(|c| format!("column '{}' is {} in the catalog but {} in this run", c.column, c.catalog, c.run)).collect::<Vec<_>>().join("; ")
    )]
    Incompatible(Vec<Incompatibility>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    pub column: String,
    pub catalog: String,
    pub run: String,
}

/// The catalog table name for a configured table: `<source>_<schema>_<table>`, lowercased,
/// anything but letters, digits and `_` replaced by `_` (Glue and Athena lowercase names).
pub fn catalog_table_name(source: &str, table: &str) -> String {
    format!("{source}_{table}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Glue database names that Athena can query: 1 to 255 lowercase letters, digits and `_`.
pub fn check_database_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err("must be 1 to 255 characters long".into());
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        Some(c) => Err(format!(
            "contains '{c}': use lowercase letters, digits and '_' only"
        )),
        None => Ok(()),
    }
}

/// Partition values of a run started at `started_at`: the same date and hour as its keys.
pub fn partition_values(started_at: DateTime<Utc>) -> [String; 2] {
    [
        started_at.format("%Y-%m-%d").to_string(),
        started_at.format("%H").to_string(),
    ]
}

/// Hive columns for the files' schema (as recorded in the manifest).
pub fn hive_columns(columns: &[ManifestColumn]) -> Result<Vec<HiveColumn>, CatalogSchemaError> {
    columns
        .iter()
        .map(|c| {
            let unsupported = || CatalogSchemaError::Unsupported {
                column: c.name.clone(),
                data_type: c.data_type.clone(),
            };
            let data_type = DataType::from_str(&c.data_type).map_err(|_| unsupported())?;
            Ok(HiveColumn {
                name: c.name.to_lowercase(),
                hive_type: hive_type(&data_type).ok_or_else(unsupported)?,
            })
        })
        .collect()
}

/// The Hive type Athena, Spectrum and Spark read the Parquet column as.
pub fn hive_type(data_type: &DataType) -> Option<String> {
    Some(match data_type {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "int".into(),
        // UInt64 (MySQL bit(64)) is physically INT64: readers see values past 2^63 as negative.
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint".into(),
        DataType::Float16 | DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => {
            if *p > 38 {
                return None;
            }
            format!("decimal({p},{s})")
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            "string".into()
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "binary".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, _) => "timestamp".into(),
        // Hive has no TIME type; the Parquet column is an INT64 of microseconds since midnight.
        DataType::Time32(_) | DataType::Time64(_) => "bigint".into(),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("array<{}>", hive_type(f.data_type())?)
        }
        DataType::Struct(fields) => {
            // Hive's type string has no quoting for field names: a name holding one of its
            // delimiters would change the type's meaning, so such a struct has no Hive type.
            let plain = |name: &str| {
                !name.is_empty()
                    && !name
                        .chars()
                        .any(|c| c.is_whitespace() || ":,<>`".contains(c))
            };
            let inner: Option<Vec<String>> = fields
                .iter()
                .map(|f| {
                    if !plain(f.name()) {
                        return None;
                    }
                    hive_type(f.data_type()).map(|t| format!("{}:{t}", f.name()))
                })
                .collect();
            format!("struct<{}>", inner?.join(","))
        }
        DataType::Dictionary(_, value) => hive_type(value)?,
        _ => return None,
    })
}

/// A type the catalog may move from `catalog` to `run` without breaking readers of older
/// partitions: integer and float widening, decimal precision growing at the same scale.
fn widens(catalog: &str, run: &str) -> bool {
    const INTEGERS: [&str; 4] = ["tinyint", "smallint", "int", "bigint"];
    let rank = |t: &str| INTEGERS.iter().position(|i| *i == t);
    if let (Some(a), Some(b)) = (rank(catalog), rank(run)) {
        return b > a;
    }
    if catalog == "float" && run == "double" {
        return true;
    }
    match (decimal_parts(catalog), decimal_parts(run)) {
        (Some((p1, s1)), Some((p2, s2))) => s1 == s2 && p2 > p1,
        _ => false,
    }
}

fn decimal_parts(t: &str) -> Option<(u8, u8)> {
    let inner = t.strip_prefix("decimal(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

/// The table's columns after a run with `run` columns: `None` if nothing changes. New columns
/// are appended, widened types updated, columns the run no longer has kept (older partitions
/// still hold them). Anything else is an error naming every offending column.
pub fn evolve_columns(
    catalog: &[HiveColumn],
    run: &[HiveColumn],
) -> Result<Option<Vec<HiveColumn>>, CatalogSchemaError> {
    let mut next = catalog.to_vec();
    let mut incompatible = Vec::new();
    let mut changed = false;
    for column in run {
        match next
            .iter_mut()
            .find(|c| c.name.eq_ignore_ascii_case(&column.name))
        {
            None => {
                next.push(column.clone());
                changed = true;
            }
            Some(existing) if existing.hive_type == column.hive_type => {}
            Some(existing) if widens(&existing.hive_type, &column.hive_type) => {
                existing.hive_type = column.hive_type.clone();
                changed = true;
            }
            Some(existing) => incompatible.push(Incompatibility {
                column: column.name.clone(),
                catalog: existing.hive_type.clone(),
                run: column.hive_type.clone(),
            }),
        }
    }
    if !incompatible.is_empty() {
        return Err(CatalogSchemaError::Incompatible(incompatible));
    }
    Ok(changed.then_some(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, t: &str) -> HiveColumn {
        HiveColumn {
            name: name.into(),
            hive_type: t.into(),
        }
    }

    fn manifest_col(name: &str, data_type: &str) -> ManifestColumn {
        ManifestColumn {
            name: name.into(),
            data_type: data_type.into(),
            nullable: true,
            parquet_type: String::new(),
        }
    }

    #[test]
    fn names_are_lowercase_and_safe() {
        assert_eq!(
            catalog_table_name("shop", "public.Orders"),
            "shop_public_orders"
        );
        assert_eq!(
            catalog_table_name("shop-eu", "order items"),
            "shop_eu_order_items"
        );
    }

    #[test]
    fn database_names_are_checked() {
        assert!(check_database_name("sluice_raw").is_ok());
        assert!(check_database_name("").is_err());
        assert!(check_database_name("Raw").unwrap_err().contains("'R'"));
        assert!(check_database_name("raw-db").unwrap_err().contains("'-'"));
    }

    #[test]
    fn partitions_follow_the_run_start_in_utc() {
        let at = DateTime::parse_from_rfc3339("2024-03-09T00:30:00+02:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            partition_values(at),
            ["2024-03-08".to_string(), "22".into()]
        );
    }

    #[test]
    fn maps_the_manifest_types_sources_produce() {
        let cases = [
            ("Int16", "smallint"),
            ("Int32", "int"),
            ("Int64", "bigint"),
            ("UInt64", "bigint"),
            ("Float32", "float"),
            ("Float64", "double"),
            ("Decimal128(12, 2)", "decimal(12,2)"),
            ("Decimal128(38, 9)", "decimal(38,9)"),
            ("Utf8", "string"),
            ("Binary", "binary"),
            ("FixedSizeBinary(16)", "binary"),
            ("Boolean", "boolean"),
            ("Date32", "date"),
            ("Timestamp(µs)", "timestamp"),
            (r#"Timestamp(µs, "UTC")"#, "timestamp"),
            ("Time64(µs)", "bigint"),
            ("List(Int32)", "array<int>"),
            ("List(nullable Utf8)", "array<string>"),
        ];
        for (arrow, hive) in cases {
            let got = hive_columns(&[manifest_col("Col", arrow)])
                .unwrap_or_else(|e| panic!("{arrow}: {e}"));
            assert_eq!(got, vec![col("col", hive)], "{arrow}");
        }
        let err = hive_columns(&[manifest_col("x", "Interval(MonthDayNano)")]).unwrap_err();
        assert!(err.to_string().contains("column 'x'"), "{err}");
    }

    #[test]
    fn struct_field_names_that_would_break_the_type_string_are_refused() {
        use arrow_schema::{Field, Fields};
        let of = |name: &str| {
            DataType::Struct(Fields::from(vec![
                Field::new("id", DataType::Int32, true),
                Field::new(name, DataType::Utf8, true),
            ]))
        };
        assert_eq!(
            hive_type(&of("note")).as_deref(),
            Some("struct<id:int,note:string>")
        );
        for name in ["a:b", "a,b", "a<b>", "a b", "`a`", ""] {
            assert_eq!(hive_type(&of(name)), None, "{name:?}");
        }
    }

    #[test]
    fn reads_back_the_display_form_the_manifest_records() {
        use arrow_schema::{Field, TimeUnit};
        use std::sync::Arc;
        let cases = [
            (
                DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
                "timestamp",
            ),
            (
                DataType::Timestamp(TimeUnit::Microsecond, None),
                "timestamp",
            ),
            (DataType::Decimal128(20, 0), "decimal(20,0)"),
            (
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                "array<string>",
            ),
            (DataType::Time64(TimeUnit::Microsecond), "bigint"),
        ];
        for (data_type, hive) in cases {
            let recorded = manifest_col("c", &data_type.to_string());
            assert_eq!(
                hive_columns(&[recorded]).unwrap()[0].hive_type,
                hive,
                "{data_type}"
            );
        }
    }

    #[test]
    fn adds_and_widens_but_reports_narrowing() {
        let catalog = vec![
            col("id", "int"),
            col("amount", "decimal(10,2)"),
            col("gone", "string"),
        ];
        let unchanged = vec![col("id", "int"), col("amount", "decimal(10,2)")];
        assert_eq!(evolve_columns(&catalog, &unchanged).unwrap(), None);

        let grown = vec![
            col("ID", "bigint"),
            col("amount", "decimal(12,2)"),
            col("note", "string"),
        ];
        assert_eq!(
            evolve_columns(&catalog, &grown).unwrap(),
            Some(vec![
                col("id", "bigint"),
                col("amount", "decimal(12,2)"),
                col("gone", "string"),
                col("note", "string"),
            ])
        );

        let narrowed = vec![col("id", "smallint"), col("amount", "decimal(10,3)")];
        let err = evolve_columns(&catalog, &narrowed).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("column 'id' is int in the catalog but smallint in this run"),
            "{text}"
        );
        assert!(text.contains("column 'amount' is decimal(10,2)"), "{text}");
        assert!(evolve_columns(&[col("x", "string")], &[col("x", "bigint")]).is_err());
    }
}
