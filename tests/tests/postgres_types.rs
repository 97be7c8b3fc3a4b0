//! The PostgreSQL type matrix: a table with a column for every row of the README's type
//! table, filled with typical values, NULLs, extremes, Unicode, empty strings and empty
//! arrays. sluice extracts it; every value read back from Parquet is compared with what
//! PostgreSQL returns for the same row as text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Time64MicrosecondType, TimeUnit, TimestampMicrosecondType,
};
use sluice::Quiet;
use sluice_core::RunStatus;
use sluice_tests::*;

/// How a column's values are turned into comparable text on both sides.
#[derive(Clone, Debug)]
enum Kind {
    /// `c::text` on the PostgreSQL side; the Arrow value's natural text.
    Plain,
    /// char(n): the padded value.
    Padded,
    /// Exact decimals, compared after removing insignificant zeros.
    Numeric,
    /// money, compared as its numeric value.
    Money,
    /// Floats, compared by parsing PostgreSQL's text (NaN and ±Infinity included).
    Float,
    Bytea,
    /// Days since 1970-01-01; infinite dates are NULL in Parquet.
    Date,
    /// Microseconds since midnight.
    Time,
    /// Microseconds since the epoch; infinite timestamps are NULL in Parquet.
    Timestamp,
    /// A one-dimensional array: elements compared one by one.
    Array(Box<Kind>),
}

struct Col {
    name: &'static str,
    sql_type: &'static str,
    kind: Kind,
    arrow: DataType,
}

fn col(name: &'static str, sql_type: &'static str, kind: Kind, arrow: DataType) -> Col {
    Col {
        name,
        sql_type,
        kind,
        arrow,
    }
}

fn list(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

fn columns() -> Vec<Col> {
    use DataType as D;
    use Kind::*;
    let us = TimeUnit::Microsecond;
    vec![
        col("c_int2", "int2", Plain, D::Int16),
        col("c_int4", "int4", Plain, D::Int32),
        col("c_int8", "int8", Plain, D::Int64),
        col("c_oid", "oid", Plain, D::Int64),
        col("c_float4", "float4", Float, D::Float32),
        col("c_float8", "float8", Float, D::Float64),
        col("c_bool", "bool", Plain, D::Boolean),
        col("c_num", "numeric(12,2)", Numeric, D::Decimal128(12, 2)),
        col("c_num38", "numeric(38,10)", Numeric, D::Decimal128(38, 10)),
        col("c_num_free", "numeric", Numeric, D::Decimal128(38, 9)),
        col("c_num_wide", "numeric(50,4)", Numeric, D::Decimal128(38, 4)),
        col("c_money", "money", Money, D::Decimal128(19, 2)),
        col("c_text", "text", Plain, D::Utf8),
        col("c_varchar", "varchar(20)", Plain, D::Utf8),
        col("c_char", "char(5)", Padded, D::Utf8),
        col("c_name", "name", Plain, D::Utf8),
        col("c_citext", "citext", Plain, D::Utf8),
        col("c_bytea", "bytea", Bytea, D::Binary),
        col("c_date", "date", Date, D::Date32),
        col("c_time", "time", Time, D::Time64(us)),
        col("c_timetz", "timetz", Plain, D::Utf8),
        col("c_ts", "timestamp", Timestamp, D::Timestamp(us, None)),
        col(
            "c_tstz",
            "timestamptz",
            Timestamp,
            D::Timestamp(us, Some("UTC".into())),
        ),
        col("c_interval", "interval", Plain, D::Utf8),
        col("c_uuid", "uuid", Plain, D::Utf8),
        col("c_json", "json", Plain, D::Utf8),
        col("c_jsonb", "jsonb", Plain, D::Utf8),
        col("c_xml", "xml", Plain, D::Utf8),
        col("c_inet", "inet", Plain, D::Utf8),
        col("c_cidr", "cidr", Plain, D::Utf8),
        col("c_macaddr", "macaddr", Plain, D::Utf8),
        col("c_bit", "bit(4)", Plain, D::Utf8),
        col("c_varbit", "varbit(8)", Plain, D::Utf8),
        col("c_tsvector", "tsvector", Plain, D::Utf8),
        col("c_range", "int4range", Plain, D::Utf8),
        col("c_point", "point", Plain, D::Utf8),
        col("c_box", "box", Plain, D::Utf8),
        col(
            "c_int_arr",
            "int4[]",
            Array(Box::new(Plain)),
            list(D::Int32),
        ),
        col(
            "c_text_arr",
            "text[]",
            Array(Box::new(Plain)),
            list(D::Utf8),
        ),
        col(
            "c_num_arr",
            "numeric(6,2)[]",
            Array(Box::new(Numeric)),
            list(D::Decimal128(6, 2)),
        ),
        col(
            "c_ts_arr",
            "timestamp[]",
            Array(Box::new(Timestamp)),
            list(D::Timestamp(us, None)),
        ),
        col(
            "c_inet_arr",
            "inet[]",
            Array(Box::new(Plain)),
            list(D::Utf8),
        ),
        col("c_int_2d", "int4[][]", Plain, D::Utf8),
        col("c_mood", "mood", Plain, D::Utf8),
        col("c_amount", "positive_amount", Numeric, D::Decimal128(12, 2)),
        col("c_address", "address", Plain, D::Utf8),
        col("MixedCase", "text", Plain, D::Utf8),
        col("select", "int4", Plain, D::Int32),
        // Text Snowflake's loaders like to turn into NULL: `\N` (the Parquet format's default
        // NULL_IF), the empty string, spaces, the word NULL.
        col("c_nullish", "text", Plain, D::Utf8),
    ]
}

const ROWS: &str = r#"
INSERT INTO type_matrix (id, c_int2, c_int4, c_int8, c_oid, c_float4, c_float8, c_bool, c_num,
  c_num38, c_num_free, c_num_wide, c_money, c_text, c_varchar, c_char, c_name, c_citext, c_bytea,
  c_date, c_time, c_timetz, c_ts, c_tstz, c_interval, c_uuid, c_json, c_jsonb, c_xml, c_inet,
  c_cidr, c_macaddr, c_bit, c_varbit, c_tsvector, c_range, c_point, c_box, c_int_arr, c_text_arr,
  c_num_arr, c_ts_arr, c_inet_arr, c_int_2d, c_mood, c_amount, c_address, "MixedCase", "select", c_nullish)
VALUES
 (1, 42, 123456, 9000000000, 12345, 1.5, 3.141592653589793, true, 1234.56,
  123456789012345678.0123456789, 3.14159, 12345678.9, 19.99, 'hello', 'varchar', 'ab', 'a name',
  'CaseLess', '\x00ff10', '2024-02-29', '13:45:10.123456', '13:45:10+02', '2024-02-29 23:59:59.999999',
  '2024-02-29 23:59:59.123456+05:30', '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": 1,  "b": [1, 2]}', '{"b": [1, 2], "a": 1}', '<x a="1">y</x>', '192.168.1.5/24', '10.0.0.0/8',
  '08:00:2b:01:02:03', B'1010', B'101', 'the quick brown fox', '[1,10)', '(1.5,2)', '((0,0),(1,1))',
  '{1,2,3}', '{"a","b c","","NULL"}', '{1.50,-2.25}', '{"2024-01-01 00:00:00.000001"}', '{10.0.0.1,::1}',
  '{{1,2},{3,4}}', 'happy 😀', 12.34, ROW('Main St 1', 12345), 'Mixed', 7, '\N'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, -32768, 2147483647, -9223372036854775808, 4294967295, 'NaN', 'Infinity', false, -9999999999.99,
  -9999999999999999999999999999.9999999999, -12345678901234567890.123456789,
  99999999999999999999999999999999.9999, -92233720368547758.08, '𝄞 ünïcødé 😀', '', 'abcde', '',
  '', '\x', '0044-03-15 BC', '00:00:00', '23:59:59.999999-12', '1900-01-01 00:00:00',
  '1970-01-01 00:00:00+00', '-1 years -2 mons +3 days -00:00:00.000001', '00000000-0000-0000-0000-000000000000',
  '[]', '{}', '<a/>', '::1', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', B'0000', B'', '', 'empty', '(0,0)',
  '((-1,-1),(1,1))', '{}', '{}', '{}', '{}', '{}', '{}', 'sad', 0, ROW(NULL, NULL), '', -1, ''),
 (4, 32767, -2147483648, 9223372036854775807, 0, '-Infinity', '-Infinity', true, 0.01,
  0.0000000001, 0.000000001, 0, 0, E'tab\tnew\nline "quoted" \\back', 'x', 'x', 'x', 'X',
  '\x5c00', 'infinity', '24:00:00', '00:00:00+00', '-infinity', 'infinity', '0', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
  'null', '"str"', 'plain text', '0.0.0.0', '0.0.0.0/0', '00:00:00:00:00:00', B'1111', B'11111111', 'a:1 b:2', '(,)', '(-1.5,-2)',
  '((0,0),(0,0))', '{NULL,1,NULL}', '{NULL,"x"}', '{NULL}', '{NULL,"294276-12-31 23:59:59.999999"}', '{NULL}',
  '{{NULL}}', 'ok', 999999999.99, ROW('a,b', -1), NULL, NULL, '   '),
 (5, 0, 0, 0, 1, 1e-30, 2.2250738585072014e-308, false, -0.01, 1, 12345678901234567890123456789.999999999, -1, 0.01,
  'last', 'last', '     ', 'last', 'LAST', '\x00', '5874897-12-31', '12:00:00', '12:00:00+14',
  '4713-11-24 00:00:00 BC', '2262-04-11 23:47:16.854775+00', '178000000 years', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12',
  '{"deep": {"x": [true, false, null]}}', '{"deep": {"x": [true, false, null]}}', '<?xml version="1.0"?><r/>',
  '255.255.255.255', '192.168.0.0/16', '01:23:45:67:89:ab', B'0001', B'1', 'x', '(,5]', '(1e10,-1e-10)',
  '((1,2),(3,4))', '{-2147483648,2147483647}', '{"😀","𝄞"}', '{9999.99,-9999.99}', '{"1970-01-01 00:00:00"}',
  '{192.168.1.1/32}', '{}', 'sad', 0, NULL, 'z', 0, 'NULL')
"#;

/// The PostgreSQL expression giving a column's canonical text.
fn pg_expr(name: &str, kind: &Kind) -> String {
    let c = format!("\"{name}\"");
    match kind {
        Kind::Array(element) => {
            let e = element_expr("e", element);
            format!(
                "CASE WHEN {c} IS NULL THEN NULL ELSE coalesce((SELECT string_agg(coalesce({e}, 'NULL'), '|' ORDER BY ord) FROM unnest({c}) WITH ORDINALITY AS u(e, ord)), '') END"
            )
        }
        other => element_expr(&c, other),
    }
}

fn element_expr(c: &str, kind: &Kind) -> String {
    match kind {
        Kind::Plain | Kind::Numeric | Kind::Float => format!("{c}::text"),
        Kind::Padded => format!("CASE WHEN {c} IS NOT NULL THEN format('%s', {c}) END"),
        Kind::Money => format!("{c}::numeric::text"),
        Kind::Bytea => format!("encode({c}, 'hex')"),
        Kind::Date => format!("CASE WHEN isfinite({c}) THEN ({c} - date '1970-01-01')::text END"),
        Kind::Time => format!("(extract(epoch from {c}) * 1000000)::numeric(30,0)::text"),
        // Beyond Arrow's range (i64 microseconds from 1970, up to year 294247) is NULL too.
        Kind::Timestamp => format!(
            "CASE WHEN isfinite({c}) AND extract(epoch from {c}) * 1000000 <= 9223372036854775807 \
             THEN (extract(epoch from {c}) * 1000000)::numeric(30,0)::text END"
        ),
        Kind::Array(_) => unreachable!("nested arrays are read as text"),
    }
}

fn normalize_float(text: &str) -> String {
    match text {
        "NaN" => "NaN".into(),
        "Infinity" => "inf".into(),
        "-Infinity" => "-inf".into(),
        t => format!("{:?}", t.parse::<f64>().unwrap()),
    }
}

/// The canonical text of one Arrow value, in the same form `pg_expr` produces.
fn arrow_text(array: &ArrayRef, i: usize, kind: &Kind) -> Option<String> {
    if array.is_null(i) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Int16 => array.as_primitive::<Int16Type>().value(i).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::Float32 => {
            let v = array.as_primitive::<Float32Type>().value(i);
            normalize_float(&if v.is_nan() {
                "NaN".into()
            } else if v.is_infinite() {
                if v > 0.0 {
                    "Infinity".into()
                } else {
                    "-Infinity".into()
                }
            } else {
                v.to_string()
            })
        }
        DataType::Float64 => {
            let v = array.as_primitive::<Float64Type>().value(i);
            normalize_float(&if v.is_nan() {
                "NaN".into()
            } else if v.is_infinite() {
                if v > 0.0 {
                    "Infinity".into()
                } else {
                    "-Infinity".into()
                }
            } else {
                format!("{v:e}")
            })
        }
        DataType::Boolean => array.as_boolean().value(i).to_string(),
        DataType::Decimal128(_, scale) => normalize_decimal(&decimal_text(
            array.as_primitive::<Decimal128Type>().value(i),
            *scale,
        )),
        DataType::Utf8 => array.as_string::<i32>().value(i).to_owned(),
        DataType::Binary => array
            .as_binary::<i32>()
            .value(i)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        DataType::Date32 => array.as_primitive::<Date32Type>().value(i).to_string(),
        DataType::Time64(TimeUnit::Microsecond) => array
            .as_primitive::<Time64MicrosecondType>()
            .value(i)
            .to_string(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => array
            .as_primitive::<TimestampMicrosecondType>()
            .value(i)
            .to_string(),
        DataType::List(_) => {
            let Kind::Array(element) = kind else {
                panic!("list column with kind {kind:?}")
            };
            let values = array.as_list::<i32>().value(i);
            (0..values.len())
                .map(|j| arrow_text(&values, j, element).unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join("|")
        }
        other => panic!("no text form for {other}"),
    })
}

fn pg_normalize(text: Option<String>, kind: &Kind) -> Option<String> {
    let text = text?;
    Some(match kind {
        Kind::Numeric | Kind::Money => normalize_decimal(&text),
        Kind::Float => normalize_float(&text),
        Kind::Array(element) if matches!(**element, Kind::Numeric) && !text.is_empty() => text
            .split('|')
            .map(|e| {
                if e == "NULL" {
                    e.to_string()
                } else {
                    normalize_decimal(e)
                }
            })
            .collect::<Vec<_>>()
            .join("|"),
        _ => text,
    })
}

async fn create_matrix(client: &tokio_postgres::Client) {
    let ddl: Vec<String> = columns()
        .iter()
        .map(|c| format!("\"{}\" {}", c.name, c.sql_type))
        .collect();
    client
        .batch_execute(&format!(
            "CREATE EXTENSION IF NOT EXISTS citext;
             CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy 😀');
             CREATE DOMAIN positive_amount AS numeric(12,2) CHECK (VALUE >= 0);
             CREATE TYPE address AS (street text, zip int);
             CREATE TABLE type_matrix (id int PRIMARY KEY, {}, doomed int,
                 c_generated int GENERATED ALWAYS AS (c_int4 / 2) STORED);
             ALTER TABLE type_matrix DROP COLUMN doomed;
             {ROWS}",
            ddl.join(", ")
        ))
        .await
        .unwrap();
}

/// sluice's run of the matrix table, completed.
async fn extract_matrix(db: &TestDb) -> (Harness, sluice_core::RunRecord) {
    let h = Harness::new(&shop_config(
        db,
        "  - source: shop\n    table: public.type_matrix\n    primary_key: [id]\n",
    ));
    let record = h.run_completed("type_matrix").await;
    (h, record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_in_the_matrix_survives_exactly() {
    let db = TestDb::create("types").await;
    let client = db.client().await;
    client
        .batch_execute("SET intervalstyle = 'iso_8601'; SET datestyle = 'ISO, YMD'; SET timezone = 'UTC'; SET extra_float_digits = 3")
        .await
        .unwrap();
    create_matrix(&client).await;
    let (h, record) = extract_matrix(&db).await;
    let batches = h.read_run(&record);
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(batch.num_rows(), 5);

    // Dropped columns are gone; generated ones are read like any other.
    let schema = batch.schema();
    assert!(schema.field_with_name("doomed").is_err());
    assert!(schema.field_with_name("c_generated").is_ok());

    let cols = columns();
    let exprs: Vec<String> = cols.iter().map(|c| pg_expr(c.name, &c.kind)).collect();
    let rows = client
        .query(
            &format!(
                "SELECT id, {} FROM type_matrix ORDER BY id",
                exprs.join(", ")
            ),
            &[],
        )
        .await
        .unwrap();
    let ids = batch
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int32Type>()
        .clone();
    let mut mismatches = Vec::new();
    for (c_index, c) in cols.iter().enumerate() {
        let field = schema.field_with_name(c.name).unwrap();
        assert_eq!(
            field.data_type(),
            &c.arrow,
            "Arrow type of {} ({})",
            c.name,
            c.sql_type
        );
        let array = batch.column_by_name(c.name).unwrap();
        for row in &rows {
            let id: i32 = row.get(0);
            let i = ids.values().iter().position(|v| *v == id).unwrap();
            let expected = pg_normalize(row.get::<_, Option<String>>(c_index + 1), &c.kind);
            let got = arrow_text(array, i, &c.kind);
            if got != expected {
                mismatches.push(format!(
                    "row {id}, {} ({}): postgres {expected:?}, parquet {got:?}",
                    c.name, c.sql_type
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );

    // Infinite dates and timestamps became NULLs and were counted.
    let warnings = record.warnings();
    assert_eq!(
        warnings.get("c_date: infinite date written as NULL"),
        Some(&1),
        "{warnings:?}"
    );
    assert_eq!(
        warnings.get("c_ts: infinite timestamp written as NULL"),
        Some(&1),
        "{warnings:?}"
    );
    assert_eq!(
        warnings.get("c_tstz: infinite timestamp written as NULL"),
        Some(&1),
        "{warnings:?}"
    );
    assert_eq!(
        warnings.get("c_ts_arr: timestamp out of range written as NULL"),
        Some(&1),
        "{warnings:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_that_do_not_fit_fail_clearly_unless_overridden() {
    let db = TestDb::create("typefail").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE wide_numbers (id int PRIMARY KEY, n numeric, d date, arr int[]);
             INSERT INTO wide_numbers VALUES (1, 1.5, '2024-01-01', '{1}'),
                                             (2, 123456789012345678901234567890123.5, 'infinity', '{{1,2}}');",
        )
        .await
        .unwrap();
    let tables = r#"
  - source: shop
    table: wide_numbers
    columns: [id, n]
  - source: shop
    table: public.wide_numbers
    columns: [id, n]
    column_types: { n: string }
  - source: shop
    table: wide_numbers_dates
    columns: [id, d]
    invalid_dates: fail
  - source: shop
    table: wide_numbers_arrays
    columns: [id, arr]
"#;
    client
        .batch_execute(
            "CREATE VIEW wide_numbers_dates AS SELECT * FROM wide_numbers;
             CREATE VIEW wide_numbers_arrays AS SELECT * FROM wide_numbers;",
        )
        .await
        .unwrap();
    let h = Harness::new(&shop_config(&db, tables));

    h.run_failing(
        "shop/wide_numbers",
        "column n: numeric value does not fit decimal(38,9)",
    )
    .await;
    let as_text = h
        .pipeline
        .run_table(h.table("shop/public.wide_numbers"), &Quiet)
        .await
        .unwrap();
    assert_eq!(as_text.status, RunStatus::Completed, "{:?}", as_text.error);
    let values = string_values(&h.read_run(&as_text), "n");
    assert!(
        values.contains(&"123456789012345678901234567890123.5".to_string()),
        "{values:?}"
    );
    h.run_failing(
        "wide_numbers_dates",
        "column d: infinite date found and invalid_dates is fail",
    )
    .await;
    h.run_failing(
        "wide_numbers_arrays",
        "column arr: a 2-dimensional array value",
    )
    .await;
}

/// The Snowflake type each matrix column must get in RAW, written by hand from the
/// PostgreSQL type: exact NUMBER(p,s) for integers (by range) and numerics (unconstrained
/// numeric as sluice's decimal(38,9), wider than 38 digits capped at 38), TIMESTAMP_NTZ for
/// timestamp and TIMESTAMP_TZ for timestamptz, BINARY for bytea, VARIANT for one-dimensional
/// arrays, VARCHAR for everything read as text (JSON becomes VARIANT only in STAGING).
const SNOWFLAKE_TYPES: &[(&str, &str)] = &[
    ("id", "NUMBER(10,0)"),
    ("c_int2", "NUMBER(5,0)"),
    ("c_int4", "NUMBER(10,0)"),
    ("c_int8", "NUMBER(19,0)"),
    ("c_oid", "NUMBER(19,0)"),
    ("c_float4", "FLOAT"),
    ("c_float8", "FLOAT"),
    ("c_bool", "BOOLEAN"),
    ("c_num", "NUMBER(12,2)"),
    ("c_num38", "NUMBER(38,10)"),
    ("c_num_free", "NUMBER(38,9)"),
    ("c_num_wide", "NUMBER(38,4)"),
    ("c_money", "NUMBER(19,2)"),
    ("c_text", "VARCHAR"),
    ("c_varchar", "VARCHAR"),
    ("c_char", "VARCHAR"),
    ("c_name", "VARCHAR"),
    ("c_citext", "VARCHAR"),
    ("c_bytea", "BINARY"),
    ("c_date", "DATE"),
    ("c_time", "TIME(6)"),
    ("c_timetz", "VARCHAR"),
    ("c_ts", "TIMESTAMP_NTZ(6)"),
    ("c_tstz", "TIMESTAMP_TZ(6)"),
    ("c_interval", "VARCHAR"),
    ("c_uuid", "VARCHAR"),
    ("c_json", "VARCHAR"),
    ("c_jsonb", "VARCHAR"),
    ("c_xml", "VARCHAR"),
    ("c_inet", "VARCHAR"),
    ("c_cidr", "VARCHAR"),
    ("c_macaddr", "VARCHAR"),
    ("c_bit", "VARCHAR"),
    ("c_varbit", "VARCHAR"),
    ("c_tsvector", "VARCHAR"),
    ("c_range", "VARCHAR"),
    ("c_point", "VARCHAR"),
    ("c_box", "VARCHAR"),
    ("c_int_arr", "VARIANT"),
    ("c_text_arr", "VARIANT"),
    ("c_num_arr", "VARIANT"),
    ("c_ts_arr", "VARIANT"),
    ("c_inet_arr", "VARIANT"),
    ("c_int_2d", "VARCHAR"),
    ("c_mood", "VARCHAR"),
    ("c_amount", "NUMBER(12,2)"),
    ("c_address", "VARCHAR"),
    ("MixedCase", "VARCHAR"),
    ("c_nullish", "VARCHAR"),
    ("select", "NUMBER(10,0)"),
    ("c_generated", "NUMBER(10,0)"),
];

/// The matrix extracted by sluice, its RAW table created from the generated DDL and loaded by
/// the generated COPY through the Snowflake stand-in (fakesnow on DuckDB, files from moto):
/// every column's type in the `CREATE TABLE` text is the one [`SNOWFLAKE_TYPES`] states, every
/// row of the source table loads, and the stand-in's INFORMATION_SCHEMA reports the same type
/// names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_in_the_matrix_lands_its_snowflake_type() {
    let db = TestDb::create("sftypes").await;
    let client = db.client().await;
    create_matrix(&client).await;
    let (h, record) = extract_matrix(&db).await;
    // The rows COPY must load are the ones PostgreSQL holds, however the matrix grows.
    let source_rows: i64 = client
        .query_one("SELECT count(*) FROM type_matrix", &[])
        .await
        .unwrap()
        .get(0);
    let load = snowflake::load_run_through_standin(&h, &record, "pg_type_matrix").await;
    let matrix: Vec<&str> = columns().iter().map(|c| c.name).collect();
    snowflake::assert_raw_types(&load, &matrix, SNOWFLAKE_TYPES, source_rows, true);

    // Text lands exactly: `\N`, '' and spaces stay text, only NULL is NULL. The Parquet
    // format's NULL_IF defaults to `\N`, so without sluice's `NULL_IF = ()` the stand-in
    // (like Snowflake) turns `\N` into NULL
    // (<https://docs.snowflake.com/en/sql-reference/sql/create-file-format>, TYPE = PARQUET).
    // The session settings sluice's own connections use, so PostgreSQL's text is sluice's.
    client
        .batch_execute(
            "SET intervalstyle = 'iso_8601'; SET datestyle = 'ISO, YMD'; SET timezone = 'UTC'",
        )
        .await
        .unwrap();
    let text_columns = columns()
        .into_iter()
        .filter(|c| matches!(c.kind, Kind::Plain) && c.arrow == DataType::Utf8);
    let mut compared = 0;
    for c in text_columns {
        let rows = client
            .query(
                &format!(
                    "SELECT id, \"{}\"::text FROM type_matrix ORDER BY id",
                    c.name
                ),
                &[],
            )
            .await
            .unwrap();
        let expected: std::collections::BTreeMap<i64, Option<String>> = rows
            .iter()
            .map(|r| (i64::from(r.get::<_, i32>(0)), r.get(1)))
            .collect();
        assert_eq!(
            load.text_by_id(c.name),
            expected,
            "RAW.{} differs from PostgreSQL",
            c.name
        );
        compared += 1;
    }
    assert!(compared >= 10, "only {compared} text columns compared");
}
