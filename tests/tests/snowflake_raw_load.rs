//! The generated RAW DDL and COPY INTO, run for real: a Parquet file with every Arrow type the
//! sources produce goes to S3 (moto), the stand-in creates RAW from `raw_table_ddl` and loads it
//! with `copy_into_raw`; every value comes back with the Snowflake type the mapping promised.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray,
    Time64MicrosecondArray, TimestampMicrosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, TimeUnit};
use chrono::{DateTime, NaiveDate};
use sluice::warehouse::{Statement, Value};
use sluice_core::snowflake::{ObjectName, copy_into_raw, raw_table_ddl};
use sluice_tests::moto::MotoServer;
use sluice_tests::snowflake::{Options, StandIn};

fn source_batch() -> RecordBatch {
    let utc = Some(Arc::from("UTC"));
    let fields = vec![
        Field::new("small", DataType::Int16, true),
        Field::new("Int", DataType::Int32, true),
        Field::new("big", DataType::Int64, false),
        Field::new("unsigned", DataType::UInt64, true),
        Field::new("price", DataType::Decimal128(12, 2), true),
        Field::new("ratio", DataType::Float32, true),
        Field::new("measure", DataType::Float64, true),
        Field::new("select", DataType::Utf8, true),
        Field::new("blob", DataType::Binary, true),
        Field::new("flag", DataType::Boolean, true),
        Field::new("day", DataType::Date32, true),
        Field::new("at_time", DataType::Time64(TimeUnit::Microsecond), true),
        Field::new(
            "local_ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new(
            "instant",
            DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
            true,
        ),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
            true,
        ),
        Field::new("_sluice_run_id", DataType::Utf8, false),
        Field::new(
            "_sluice_extracted_at",
            DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
            false,
        ),
    ];
    // 2024-02-29 23:59:58.123456 as microseconds since the epoch.
    let ts = 1_709_251_198_123_456i64;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int16Array::from(vec![Some(-7), None])),
        Arc::new(Int32Array::from(vec![Some(2_000_000_000), None])),
        Arc::new(Int64Array::from(vec![9_007_199_254_740_993, 2])),
        Arc::new(UInt64Array::from(vec![Some(u64::MAX), None])),
        Arc::new(
            Decimal128Array::from(vec![Some(-1234), None])
                .with_precision_and_scale(12, 2)
                .unwrap(),
        ),
        Arc::new(Float32Array::from(vec![Some(0.5), None])),
        Arc::new(Float64Array::from(vec![Some(-2.25), None])),
        Arc::new(StringArray::from(vec![Some("it's"), None])),
        Arc::new(BinaryArray::from(vec![Some(&[0xCA, 0xFE][..]), None])),
        Arc::new(BooleanArray::from(vec![Some(true), None])),
        Arc::new(Date32Array::from(vec![Some(19_782), None])),
        Arc::new(Time64MicrosecondArray::from(vec![
            Some(3_723_500_000),
            None,
        ])),
        Arc::new(TimestampMicrosecondArray::from(vec![Some(ts), None])),
        Arc::new(TimestampMicrosecondArray::from(vec![Some(ts), None]).with_timezone("UTC")),
        Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
        ])),
        Arc::new(StringArray::from(vec!["RUN1", "RUN1"])),
        Arc::new(TimestampMicrosecondArray::from(vec![ts, ts]).with_timezone("UTC")),
    ];
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

#[tokio::test]
async fn generated_ddl_and_copy_load_every_source_type() {
    let batch = source_batch();
    let moto = MotoServer::shared();
    let key = "postgres/shop/public.orders/2024-03-09/06/part-RUN1-0000-0000.parquet";
    let bucket = moto
        .bucket_with("raw", vec![(key, sluice_tests::parquet_bytes(&batch))])
        .await;

    let standin = StandIn::start(&Options {
        s3_endpoint: Some(moto.endpoint()),
        ..Options::default()
    });
    let config = standin.config("rawload");
    let database = config.database.clone().unwrap();
    let client = sluice::warehouse::snowflake::SnowflakeClient::new(
        config,
        sluice_tests::snowflake::KeyPair::shared().private_key(),
    )
    .unwrap();
    let table = ObjectName::new(&database, "RAW", "public_orders");
    let stage = ObjectName::new(&database, "RAW", "sluice_stage");
    let ddl = raw_table_ddl(&table, &batch.schema()).unwrap();
    for sql in [
        "CREATE SCHEMA IF NOT EXISTS RAW".to_owned(),
        ddl.clone(),
        // Idempotent: a second run's CREATE changes nothing.
        ddl,
        format!("CREATE STAGE {} URL = 's3://{bucket}/'", stage.quoted()),
    ] {
        client.execute(&Statement::new(sql)).await.unwrap();
    }
    let copies = copy_into_raw(&table, &stage, &[key.to_owned()]);
    assert_eq!(copies.len(), 1);
    let loaded = client.execute(&Statement::new(&copies[0])).await.unwrap();
    let rows_loaded = loaded.column_index("rows_loaded").unwrap();
    assert_eq!(loaded.rows[0][rows_loaded].as_i64(), Some(2));

    let result = client
        .execute(&Statement::new(format!(
            "SELECT * FROM {} ORDER BY \"big\" DESC",
            table.quoted()
        )))
        .await
        .unwrap();
    let names: Vec<&str> = result.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "small",
            "Int",
            "big",
            "unsigned",
            "price",
            "ratio",
            "measure",
            "select",
            "blob",
            "flag",
            "day",
            "at_time",
            "local_ts",
            "instant",
            "tags",
            "_sluice_run_id",
            "_sluice_extracted_at",
            "_sluice_file",
            "_sluice_row"
        ]
    );
    let local = NaiveDate::from_ymd_opt(2024, 2, 29)
        .unwrap()
        .and_hms_micro_opt(23, 59, 58, 123_456)
        .unwrap();
    let number = |unscaled: i128, scale: u32| Value::Number { unscaled, scale };
    let row = &result.rows[0];
    let expected = [
        number(-7, 0),
        number(2_000_000_000, 0),
        number(9_007_199_254_740_993, 0),
        number(u64::MAX.into(), 0),
        number(-1234, 2),
        Value::Real(0.5),
        Value::Real(-2.25),
        Value::Text("it's".into()),
        Value::Binary(vec![0xCA, 0xFE]),
        Value::Boolean(true),
        Value::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()),
        Value::Time(chrono::NaiveTime::from_hms_milli_opt(1, 2, 3, 500).unwrap()),
        Value::TimestampNtz(local),
        Value::TimestampTz(DateTime::from_naive_utc_and_offset(
            local,
            chrono::FixedOffset::east_opt(0).unwrap(),
        )),
        Value::Variant(serde_json::json!([1, 2])),
        Value::Text("RUN1".into()),
    ];
    for (i, expected) in expected.iter().enumerate() {
        assert_eq!(&row[i], expected, "column {}", names[i]);
    }
    assert_eq!(row[18].as_i64(), Some(1));
    assert_eq!(result.rows[1][18].as_i64(), Some(2));
    assert_eq!(row[17], Value::Text(key.into()));
    // The second row: NULL in every nullable source column.
    assert!(
        result.rows[1][..15]
            .iter()
            .enumerate()
            .all(|(i, v)| i == 2 || *v == Value::Null),
        "{:?}",
        result.rows[1]
    );
}
