//! The MySQL/MariaDB type matrix: a table with a column for every row of the README's MySQL
//! type table, filled with typical values, NULLs, extremes (unsigned maxima, the ends of the
//! date ranges), Unicode outside the BMP and zero dates under a permissive sql_mode. sluice
//! extracts it; every value read back from Parquet is compared with what the server returns
//! for the same row.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType, UInt64Type,
};
use mysql_async::prelude::Queryable;
use sluice::Quiet;
use sluice_core::RunStatus;
use sluice_tests::mysql::*;
use sluice_tests::*;

/// How a column's values are turned into comparable text on both sides.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `CAST(c AS CHAR)`; the Arrow value's natural text.
    Plain,
    /// Exact decimals, compared after removing insignificant zeros.
    Decimal,
    /// tinyint(1) read as a boolean.
    Bool,
    /// Floats, compared by parsing the server's text.
    Float,
    /// bit(n) and year as unsigned numbers: `c + 0`.
    Number,
    /// Bytes as lowercase hex.
    Hex,
    /// Geometry: the server's WKB (`ST_AsBinary`) as hex.
    Wkb,
    /// Days since 1970-01-01; zero dates are NULL on both sides.
    Date,
    /// Microseconds since 1970-01-01 00:00:00 (UTC for timestamp, the session zone).
    Micros,
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

fn columns() -> Vec<Col> {
    use DataType as D;
    use Kind::*;
    let us = TimeUnit::Microsecond;
    vec![
        col("c_tinyint", "tinyint", Plain, D::Int8),
        col("c_tinyint_u", "tinyint unsigned", Plain, D::Int16),
        col("c_flag", "tinyint(1)", Plain, D::Int8),
        col("c_bool", "bool", Bool, D::Boolean),
        col("c_smallint", "smallint", Plain, D::Int16),
        col("c_smallint_u", "smallint unsigned", Plain, D::Int32),
        col("c_mediumint", "mediumint", Plain, D::Int32),
        col("c_mediumint_u", "mediumint unsigned", Plain, D::Int32),
        col("c_int", "int", Plain, D::Int32),
        col("c_int_u", "int unsigned", Plain, D::Int64),
        col("c_bigint", "bigint", Plain, D::Int64),
        col(
            "c_bigint_u",
            "bigint unsigned",
            Decimal,
            D::Decimal128(20, 0),
        ),
        col("c_dec", "decimal(12,2)", Decimal, D::Decimal128(12, 2)),
        col("c_dec38", "decimal(38,30)", Decimal, D::Decimal128(38, 30)),
        col("c_dec65", "decimal(65,4)", Decimal, D::Decimal128(38, 4)),
        col("c_float", "float", Float, D::Float32),
        col("c_double", "double", Float, D::Float64),
        col("c_bit", "bit(64)", Number, D::UInt64),
        col("c_bit1", "bit(1)", Number, D::UInt64),
        col("c_year", "year", Number, D::Int16),
        col("c_char", "char(5)", Plain, D::Utf8),
        col("c_varchar", "varchar(20)", Plain, D::Utf8),
        col("c_text", "text", Plain, D::Utf8),
        col("c_longtext", "longtext", Plain, D::Utf8),
        col(
            "c_latin1",
            "varchar(20) CHARACTER SET latin1",
            Plain,
            D::Utf8,
        ),
        col("c_enum", "enum('a','b c','😀')", Plain, D::Utf8),
        col("c_set", "set('x','y','z')", Plain, D::Utf8),
        col("c_json", "json", Plain, D::Utf8),
        col("c_binary", "binary(4)", Hex, D::Binary),
        col("c_varbinary", "varbinary(10)", Hex, D::Binary),
        col("c_blob", "blob", Hex, D::Binary),
        col("c_geom", "geometry", Wkb, D::Binary),
        col("c_point", "point", Wkb, D::Binary),
        col("c_date", "date", Date, D::Date32),
        col("c_datetime", "datetime(6)", Micros, D::Timestamp(us, None)),
        col("c_datetime0", "datetime", Micros, D::Timestamp(us, None)),
        col(
            "c_ts",
            "timestamp(6) NULL",
            Micros,
            D::Timestamp(us, Some("UTC".into())),
        ),
        col("c_time", "time(6)", Plain, D::Utf8),
        col("c_time0", "time", Plain, D::Utf8),
        col("c_uuid", "uuid", Plain, D::Utf8),
        col("c_inet6", "inet6", Plain, D::Utf8),
        col("c_inet4", "inet4", Plain, D::Utf8),
        col("MixedCase", "varchar(10)", Plain, D::Utf8),
        col("select", "int", Plain, D::Int32),
    ]
}

const ROWS: &str = r#"
INSERT INTO type_matrix VALUES
 (1, 42, 200, 1, 1, 1234, 60000, -8000000, 16000000, 123456, 4000000000, 9000000000, 18446744073709551615,
  1234.56, 12345678.123456789012345678901234567890, 123456789012345678901234567890.1234, 1.5, 3.141592653589793,
  b'1010', b'1', 2024, 'ab', 'varchar', 'hello', 'long text', 'café Ø', 'b c', 'x,z', '{"a": 1, "b": [1, 2]}',
  x'00ff1000', x'5c00', x'deadbeef', ST_GeomFromText('LINESTRING(0 0, 1 1.5)'), ST_GeomFromText('POINT(1 2)', 4326),
  '2024-02-29', '2024-02-29 23:59:59.999999', '2024-02-29 13:45:10', '2024-02-29 23:59:59.123456',
  '13:45:10.123456', '13:45:10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2001:db8::1', '192.168.1.5', 'Mixed', 7),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, -128, 0, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
  -9999999999.99, -99999999.999999999999999999999999999999, -9999999999999999999999999999999999.9999, -3.40282e38,
  -1.7976931348623157e308, b'0', b'0', 1901, '', '', '', '', '', 'a', '', '[]',
  x'00000000', x'', x'', ST_GeomFromText('POLYGON((0 0, 1 0, 1 1, 0 0))'), ST_GeomFromText('POINT(-1.5 0)'),
  '1000-01-01', '1000-01-01 00:00:00.000000', '1000-01-01 00:00:00', '1970-01-01 00:00:01',
  '-838:59:59.000000', '-00:00:01', '00000000-0000-0000-0000-000000000000', '::', '0.0.0.0', '', -1),
 (4, 127, 255, 127, 1, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807, 9223372036854775808,
  9999999999.99, 99999999.999999999999999999999999999999, 9999999999999999999999999999999999.9999, 3.40282e38,
  1.7976931348623157e308, x'FFFFFFFFFFFFFFFF', b'1', 2155, '😀𝄞', '𝄞 ünïcødé 😀', 'tab	new
line "q" \\b', '😀', 'ÿ', '😀', 'x,y,z', '"str"',
  x'ffffffff', x'ffffffffffffffffffff', x'00', ST_GeomFromText('MULTIPOINT(0 0, 1 1)'), ST_GeomFromText('POINT(0 0)'),
  '9999-12-31', '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59', '2038-01-19 03:14:07.999999',
  '838:59:59.999999', '100:00:00', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
  '255.255.255.255', 'z', 0),
 (5, 0, 1, 5, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0.01, 0.000000000000000000000000000001, 0.0001, 1e-30,
  2.2250738585072014e-308, b'1', b'1', 0, 'x', 'x', 'x', 'x', 'x', '😀', 'y', 'null',
  x'01', x'01', x'01', ST_GeomFromText('POINT(3 4)'), ST_GeomFromText('POINT(5 6)'),
  '0000-00-00', '0000-00-00 00:00:00.000000', '2024-00-10 00:00:00', '0000-00-00 00:00:00',
  '00:00:00.000001', '24:00:00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', '::ffff:1.2.3.4', '10.0.0.1', 'last', 1),
 (6, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, b'0', b'0', 1970, ' a', 'a ', ' ', ' ', ' ', 'a', 'x', '{}',
  x'0000', x'00', x'', ST_GeomFromText('POINT(0 0)'), ST_GeomFromText('POINT(0 0)'),
  '2024-00-10', '2024-02-30 00:00:00', '0001-01-01 00:00:00', NULL,
  '00:00:00', '00:00:00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a13', '::1', '127.0.0.1', 'a', 2)
"#;

/// The server expression giving a column's canonical text.
fn my_expr(name: &str, kind: Kind) -> String {
    let c = format!("`{name}`");
    match kind {
        Kind::Plain | Kind::Decimal | Kind::Float => format!("CAST({c} AS CHAR)"),
        Kind::Bool => format!("IF({c} IS NULL, NULL, IF({c} <> 0, 'true', 'false'))"),
        Kind::Number => format!("CAST({c} + 0 AS CHAR)"),
        Kind::Hex => format!("LOWER(HEX({c}))"),
        Kind::Wkb => format!("LOWER(HEX(ST_AsBinary({c})))"),
        Kind::Date => format!("CAST(DATEDIFF({c}, '1970-01-01') AS CHAR)"),
        Kind::Micros => {
            format!("CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {c}) AS CHAR)")
        }
    }
}

fn arrow_text(array: &ArrayRef, i: usize) -> Option<String> {
    if array.is_null(i) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Int8 => array.as_primitive::<Int8Type>().value(i).to_string(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(i).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(i).to_string(),
        DataType::Float32 => format!("{:?}", array.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => format!("{:?}", array.as_primitive::<Float64Type>().value(i)),
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
        DataType::Timestamp(TimeUnit::Microsecond, _) => array
            .as_primitive::<TimestampMicrosecondType>()
            .value(i)
            .to_string(),
        other => panic!("no text form for {other}"),
    })
}

fn server_normalize(text: Option<String>, c: &Col) -> Option<String> {
    let text = text?;
    Some(match (c.kind, &c.arrow) {
        (Kind::Decimal, _) => normalize_decimal(&text),
        (Kind::Float, DataType::Float32) => format!("{:?}", text.parse::<f32>().unwrap()),
        (Kind::Float, _) => format!("{:?}", text.parse::<f64>().unwrap()),
        _ => text,
    })
}

/// Creates and fills the matrix table; sluice's run of it, completed.
async fn extract_matrix(
    db: &MyTestDb,
    conn: &mut mysql_async::Conn,
) -> (Harness, sluice_core::RunRecord) {
    let ddl: Vec<String> = columns()
        .iter()
        .map(|c| format!("`{}` {}", c.name, c.sql_type))
        .collect();
    // Permissive, as legacy servers run: zero dates and zero months are accepted.
    conn.query_drop("SET SESSION sql_mode = ''").await.unwrap();
    conn.query_drop(format!(
        "CREATE TABLE type_matrix (id int PRIMARY KEY, {})",
        ddl.join(", ")
    ))
    .await
    .unwrap();
    conn.query_drop(ROWS).await.unwrap();
    let h = Harness::new(&mysql_config(
        db,
        "  - source: shop\n    table: type_matrix\n    primary_key: [id]\n    column_types: { c_bool: boolean }\n",
    ));
    let record = h.run_completed("type_matrix").await;
    (h, record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_in_the_matrix_survives_exactly() {
    let db = MyTestDb::create("types").await;
    let mut conn = db.conn().await;
    let (h, record) = extract_matrix(&db, &mut conn).await;
    let batches = h.read_run(&record);
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(batch.num_rows(), 6);
    let schema = batch.schema();

    let cols = columns();
    let exprs: Vec<String> = cols.iter().map(|c| my_expr(c.name, c.kind)).collect();
    let rows: Vec<mysql_async::Row> = conn
        .query(format!(
            "SELECT id, {} FROM type_matrix ORDER BY id",
            exprs.join(", ")
        ))
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
            let id: i32 = row.get(0).unwrap();
            let i = ids.values().iter().position(|v| *v == id).unwrap();
            let expected = server_normalize(row.get::<Option<String>, _>(c_index + 1).unwrap(), c);
            let got = arrow_text(array, i);
            if got != expected {
                mismatches.push(format!(
                    "row {id}, {} ({}): server {expected:?}, parquet {got:?}",
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

    // Zero and invalid dates became NULLs and were counted, column by column.
    let warnings = record.warnings();
    for (column, n) in [
        ("c_date", 2),
        ("c_datetime", 2),
        ("c_datetime0", 1),
        ("c_ts", 1),
    ] {
        assert_eq!(
            warnings.get(&format!("{column}: zero or invalid date written as NULL")),
            Some(&n),
            "{warnings:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_that_do_not_fit_fail_clearly_unless_overridden() {
    let db = MyTestDb::create("typefail").await;
    let mut conn = db.conn().await;
    conn.query_drop("SET SESSION sql_mode = ''").await.unwrap();
    conn.query_drop(
        "CREATE TABLE wide (id int PRIMARY KEY, n decimal(65,2), d date, f tinyint(1));
         INSERT INTO wide VALUES (1, 1.5, '2024-01-01', 1), (2, 123456789012345678901234567890123456789012.5, '0000-00-00', 5);
         CREATE VIEW wide_text AS SELECT * FROM wide;
         CREATE VIEW wide_dates AS SELECT * FROM wide;
         CREATE VIEW wide_flags AS SELECT * FROM wide;",
    )
    .await
    .unwrap();
    let tables = "  - source: shop
    table: wide
    columns: [id, n]
  - source: shop
    table: wide_text
    columns: [id, n]
    column_types: { n: string }
  - source: shop
    table: wide_dates
    columns: [id, d]
    invalid_dates: fail
  - source: shop
    table: wide_flags
    columns: [id, f]
    column_types: { f: boolean }
";
    let h = Harness::new(&mysql_config(&db, tables));
    h.run_failing(
        "wide",
        "column n: decimal value 123456789012345678901234567890123456789012.50 does not fit decimal(38,2)",
    )
    .await;
    let as_text = h
        .pipeline
        .run_table(h.table("wide_text"), &Quiet)
        .await
        .unwrap();
    assert_eq!(as_text.status, RunStatus::Completed, "{:?}", as_text.error);
    let values = string_values(&h.read_run(&as_text), "n");
    assert!(
        values.contains(&"123456789012345678901234567890123456789012.50".to_string()),
        "{values:?}"
    );
    h.run_failing(
        "wide_dates",
        "column d: zero or invalid date 0000-00-00 found and invalid_dates is fail",
    )
    .await;
    h.run_failing("wide_flags", "column f: value 5 is not 0 or 1")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_versioned_tables_extract_their_current_rows() {
    let db = MyTestDb::create("versioned").await;
    let mut conn = db.conn().await;
    conn.query_drop(
        "CREATE TABLE prices (id int PRIMARY KEY, amount decimal(10,2)) WITH SYSTEM VERSIONING;
         INSERT INTO prices SELECT seq, seq * 1.25 FROM seq_1_to_50;
         UPDATE prices SET amount = amount + 100 WHERE id <= 10;
         DELETE FROM prices WHERE id > 45;",
    )
    .await
    .unwrap();
    let h = Harness::new(&mysql_config(&db, "  - source: shop\n    table: prices\n"));
    let r = h
        .pipeline
        .run_table(h.table("prices"), &Quiet)
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    let batches = h.read_run(&r);
    // Only the current rows, and only the user's columns (row_start/row_end are hidden).
    assert_eq!(
        batches[0].schema().fields().len(),
        4,
        "id, amount + 2 sluice columns"
    );
    assert_same_as_mysql(&mut conn, "prices", None, &batches).await;
}

/// The Snowflake type each matrix column must get in RAW, written by hand from the MySQL
/// type: NUMBER(p,0) sized to each integer's range (unsigned ones one size up, bigint
/// unsigned and bit(n) NUMBER(20,0)), decimals as NUMBER(p,s) with precision capped at 38,
/// tinyint(1) as a number unless configured boolean, BINARY for binary strings and geometry
/// (WKB), TIMESTAMP_NTZ for datetime and TIMESTAMP_TZ for timestamp, VARCHAR for text, enum,
/// set, JSON (VARIANT only in STAGING), time (it exceeds a day) and the MariaDB types read
/// as text.
const SNOWFLAKE_TYPES: &[(&str, &str)] = &[
    ("id", "NUMBER(10,0)"),
    ("c_tinyint", "NUMBER(3,0)"),
    ("c_tinyint_u", "NUMBER(5,0)"),
    ("c_flag", "NUMBER(3,0)"),
    ("c_bool", "BOOLEAN"),
    ("c_smallint", "NUMBER(5,0)"),
    ("c_smallint_u", "NUMBER(10,0)"),
    ("c_mediumint", "NUMBER(10,0)"),
    ("c_mediumint_u", "NUMBER(10,0)"),
    ("c_int", "NUMBER(10,0)"),
    ("c_int_u", "NUMBER(19,0)"),
    ("c_bigint", "NUMBER(19,0)"),
    ("c_bigint_u", "NUMBER(20,0)"),
    ("c_dec", "NUMBER(12,2)"),
    ("c_dec38", "NUMBER(38,30)"),
    ("c_dec65", "NUMBER(38,4)"),
    ("c_float", "FLOAT"),
    ("c_double", "FLOAT"),
    ("c_bit", "NUMBER(20,0)"),
    ("c_bit1", "NUMBER(20,0)"),
    ("c_year", "NUMBER(5,0)"),
    ("c_char", "VARCHAR"),
    ("c_varchar", "VARCHAR"),
    ("c_text", "VARCHAR"),
    ("c_longtext", "VARCHAR"),
    ("c_latin1", "VARCHAR"),
    ("c_enum", "VARCHAR"),
    ("c_set", "VARCHAR"),
    ("c_json", "VARCHAR"),
    ("c_binary", "BINARY"),
    ("c_varbinary", "BINARY"),
    ("c_blob", "BINARY"),
    ("c_geom", "BINARY"),
    ("c_point", "BINARY"),
    ("c_date", "DATE"),
    ("c_datetime", "TIMESTAMP_NTZ(6)"),
    ("c_datetime0", "TIMESTAMP_NTZ(6)"),
    ("c_ts", "TIMESTAMP_TZ(6)"),
    ("c_time", "VARCHAR"),
    ("c_time0", "VARCHAR"),
    ("c_uuid", "VARCHAR"),
    ("c_inet6", "VARCHAR"),
    ("c_inet4", "VARCHAR"),
    ("MixedCase", "VARCHAR"),
    ("select", "NUMBER(10,0)"),
];

/// The matrix extracted by sluice, its RAW table created from the generated DDL and loaded by
/// the generated COPY through the Snowflake stand-in (fakesnow on DuckDB, files from moto):
/// every column's type in the `CREATE TABLE` text is the one [`SNOWFLAKE_TYPES`] states, all
/// rows load, and the stand-in's INFORMATION_SCHEMA reports the same types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_in_the_matrix_lands_its_snowflake_type() {
    let db = MyTestDb::create("sftypes").await;
    let mut conn = db.conn().await;
    let (h, record) = extract_matrix(&db, &mut conn).await;
    let source_rows: i64 = conn
        .query_first("SELECT COUNT(*) FROM type_matrix")
        .await
        .unwrap()
        .unwrap();
    let load = snowflake::load_run_through_standin(&h, &record, "my_type_matrix").await;
    let matrix: Vec<&str> = columns().iter().map(|c| c.name).collect();
    snowflake::assert_raw_types(&load, &matrix, SNOWFLAKE_TYPES, source_rows, true);
}

/// A NOT NULL date column holding zero dates, under the default `invalid_dates: null`: the
/// zero dates become NULL (counted), so the files declare the column nullable and the run
/// completes, instead of failing on a NULL in a column declared NOT NULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_dates_in_a_not_null_column_are_written_as_null_by_default() {
    let db = MyTestDb::create("zeronn").await;
    let mut conn = db.conn().await;
    conn.query_drop("SET SESSION sql_mode = ''").await.unwrap();
    conn.query_drop(
        "CREATE TABLE legacy (id int PRIMARY KEY, d date NOT NULL, t datetime NOT NULL); \
         INSERT INTO legacy VALUES (1, '2024-01-02', '2024-01-02 03:04:05'), \
         (2, '0000-00-00', '0000-00-00 00:00:00'), (3, '2024-02-30', '2024-01-01 00:00:00')",
    )
    .await
    .unwrap();
    let h = Harness::new(&mysql_config(
        &db,
        "  - source: shop\n    table: legacy\n    primary_key: [id]\n",
    ));
    let record = h.run_completed("legacy").await;
    let zero: i64 = conn
        .query_first("SELECT COUNT(*) FROM legacy WHERE d = '0000-00-00' OR DAYOFMONTH(d) = 0 OR MONTH(d) = 0")
        .await
        .unwrap()
        .unwrap();
    let batches = h.read_run(&record);
    let nulls: usize = batches
        .iter()
        .map(|b| b.column_by_name("d").unwrap().null_count())
        .sum();
    assert_eq!(nulls as i64, zero);
    assert!(
        batches[0]
            .schema()
            .field_with_name("d")
            .unwrap()
            .is_nullable()
    );
    assert_eq!(
        record
            .warnings()
            .get("d: zero or invalid date written as NULL"),
        Some(&(zero as u64))
    );
}
