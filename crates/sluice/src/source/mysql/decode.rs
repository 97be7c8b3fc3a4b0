//! Binary-protocol values (`mysql_async::Value`) appended straight into Arrow builders, one
//! row at a time; a batch is cut every `batch_rows` rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float32Builder, Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use chrono::{NaiveDate, NaiveDateTime};
use mysql_async::Value;
use sluice_core::InvalidDates;
use thiserror::Error;

use super::types::{MyType, UNSIGNED_BIGINT_PRECISION, arrow_field};

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("column {column}: {message}")]
    Value { column: String, message: String },
    #[error("row has {got} values, expected {expected}")]
    Width { got: usize, expected: usize },
    #[error("building an Arrow batch: {0}")]
    Arrow(#[from] ArrowError),
}

/// One column of the result: its name, how its values decode, and whether NULL may occur.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeColumn {
    pub name: String,
    pub my_type: MyType,
    pub nullable: bool,
}

enum Builder {
    Bool(BooleanBuilder),
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    UInt64(UInt64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal {
        builder: Decimal128Builder,
        precision: u8,
        scale: i8,
    },
    Text(StringBuilder),
    Time {
        builder: StringBuilder,
        fsp: u8,
    },
    Binary {
        builder: BinaryBuilder,
        strip_srid: bool,
    },
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Builder {
    fn new(my_type: &MyType, capacity: usize) -> Builder {
        match my_type {
            MyType::Bool => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
            MyType::Int8 => Builder::Int8(Int8Builder::with_capacity(capacity)),
            MyType::Int16 | MyType::Year => Builder::Int16(Int16Builder::with_capacity(capacity)),
            MyType::Int32 => Builder::Int32(Int32Builder::with_capacity(capacity)),
            MyType::Int64 => Builder::Int64(Int64Builder::with_capacity(capacity)),
            MyType::Bit => Builder::UInt64(UInt64Builder::with_capacity(capacity)),
            MyType::UnsignedBigint => Builder::Decimal {
                builder: Decimal128Builder::with_capacity(capacity),
                precision: UNSIGNED_BIGINT_PRECISION,
                scale: 0,
            },
            MyType::Float32 => Builder::Float32(Float32Builder::with_capacity(capacity)),
            MyType::Float64 => Builder::Float64(Float64Builder::with_capacity(capacity)),
            MyType::Decimal { precision, scale } => Builder::Decimal {
                builder: Decimal128Builder::with_capacity(capacity),
                precision: *precision,
                scale: *scale,
            },
            MyType::Text => Builder::Text(StringBuilder::with_capacity(capacity, capacity * 16)),
            MyType::Time { fsp } => Builder::Time {
                builder: StringBuilder::with_capacity(capacity, capacity * 16),
                fsp: *fsp,
            },
            MyType::Binary | MyType::Geometry => Builder::Binary {
                builder: BinaryBuilder::with_capacity(capacity, capacity * 16),
                strip_srid: *my_type == MyType::Geometry,
            },
            MyType::Date => Builder::Date(Date32Builder::with_capacity(capacity)),
            MyType::DateTime => {
                Builder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
            MyType::Timestamp => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            ),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::Int8(b) => b.append_null(),
            Builder::Int16(b) => b.append_null(),
            Builder::Int32(b) => b.append_null(),
            Builder::Int64(b) => b.append_null(),
            Builder::UInt64(b) => b.append_null(),
            Builder::Float32(b) => b.append_null(),
            Builder::Float64(b) => b.append_null(),
            Builder::Decimal { builder, .. } => builder.append_null(),
            Builder::Text(b) | Builder::Time { builder: b, .. } => b.append_null(),
            Builder::Binary { builder, .. } => builder.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Builder::Bool(b) => b.len(),
            Builder::Int8(b) => b.len(),
            Builder::Int16(b) => b.len(),
            Builder::Int32(b) => b.len(),
            Builder::Int64(b) => b.len(),
            Builder::UInt64(b) => b.len(),
            Builder::Float32(b) => b.len(),
            Builder::Float64(b) => b.len(),
            Builder::Decimal { builder, .. } => builder.len(),
            Builder::Text(b) | Builder::Time { builder: b, .. } => b.len(),
            Builder::Binary { builder, .. } => builder.len(),
            Builder::Date(b) => b.len(),
            Builder::Timestamp(b) => b.len(),
        }
    }

    /// Appends one non-NULL value. A zero date written as NULL under the `invalid_dates`
    /// policy sets `nulled` to the reason, for the caller to count.
    fn append(
        &mut self,
        v: Value,
        policy: InvalidDates,
        nulled: &mut Option<&'static str>,
    ) -> Result<(), String> {
        match self {
            Builder::Bool(b) => match integer(&v)? {
                0 => b.append_value(false),
                1 => b.append_value(true),
                other => {
                    return Err(format!(
                        "value {other} is not 0 or 1, so it cannot be a boolean; remove the boolean override"
                    ));
                }
            },
            Builder::Int8(b) => b.append_value(narrow(integer(&v)?)?),
            Builder::Int16(b) => b.append_value(narrow(integer(&v)?)?),
            Builder::Int32(b) => b.append_value(narrow(integer(&v)?)?),
            Builder::Int64(b) => b.append_value(narrow(integer(&v)?)?),
            Builder::UInt64(b) => b.append_value(match &v {
                Value::Bytes(bytes) if bytes.len() <= 8 => {
                    bytes.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
                }
                other => narrow(integer(other)?)?,
            }),
            Builder::Float32(b) => match v {
                Value::Float(f) => b.append_value(f),
                Value::Double(d) => b.append_value(d as f32),
                other => return Err(unexpected("a float", &other)),
            },
            Builder::Float64(b) => match v {
                Value::Double(d) => b.append_value(d),
                Value::Float(f) => b.append_value(f64::from(f)),
                other => return Err(unexpected("a double", &other)),
            },
            Builder::Decimal {
                builder,
                precision,
                scale,
            } => {
                let unscaled = match &v {
                    Value::Bytes(text) => decimal_to_i128(text, *precision, *scale)?,
                    Value::Int(_) | Value::UInt(_) => {
                        let n = integer(&v)?;
                        let scaled = 10i128
                            .checked_pow(u32::try_from(*scale).unwrap_or(0))
                            .and_then(|p| n.checked_mul(p))
                            .ok_or_else(|| {
                                format!("{n} does not fit decimal({precision},{scale})")
                            })?;
                        check_precision(scaled, *precision, *scale)?
                    }
                    other => return Err(unexpected("a decimal", other)),
                };
                builder.append_value(unscaled);
            }
            Builder::Text(b) => match v {
                Value::Bytes(bytes) => b.append_value(utf8(&bytes)?),
                // Numbers read through a text cast may come back typed; their text is exact.
                Value::Int(n) => b.append_value(n.to_string()),
                Value::UInt(n) => b.append_value(n.to_string()),
                other => return Err(unexpected("text", &other)),
            },
            Builder::Time { builder, fsp } => match v {
                Value::Time(negative, days, h, m, s, micros) => {
                    builder.append_value(time_text(negative, days, h, m, s, micros, *fsp))
                }
                Value::Bytes(bytes) => builder.append_value(utf8(&bytes)?),
                other => return Err(unexpected("a time", &other)),
            },
            Builder::Binary {
                builder,
                strip_srid,
            } => match v {
                Value::Bytes(bytes) if *strip_srid => match bytes.get(4..) {
                    Some(wkb) => builder.append_value(wkb),
                    None => return Err("geometry value shorter than its SRID prefix".into()),
                },
                Value::Bytes(bytes) => builder.append_value(bytes),
                other => return Err(unexpected("bytes", &other)),
            },
            Builder::Date(b) => match v {
                Value::Date(y, mo, d, ..) => {
                    match NaiveDate::from_ymd_opt(i32::from(y), u32::from(mo), u32::from(d)) {
                        Some(date) => b.append_value(days_since_epoch(date)),
                        None => {
                            zero_date(policy, y, mo, d)?;
                            b.append_null();
                            *nulled = Some("zero or invalid date written as NULL");
                        }
                    }
                }
                other => return Err(unexpected("a date", &other)),
            },
            Builder::Timestamp(b) => match v {
                Value::Date(y, mo, d, h, mi, s, us) => {
                    match NaiveDate::from_ymd_opt(i32::from(y), u32::from(mo), u32::from(d))
                        .and_then(|date| {
                            date.and_hms_micro_opt(u32::from(h), u32::from(mi), u32::from(s), us)
                        }) {
                        Some(ts) => b.append_value(micros_since_epoch(ts)),
                        None => {
                            zero_date(policy, y, mo, d)?;
                            b.append_null();
                            *nulled = Some("zero or invalid date written as NULL");
                        }
                    }
                }
                other => return Err(unexpected("a datetime", &other)),
            },
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        Ok(match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Int8(b) => Arc::new(b.finish()),
            Builder::Int16(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::UInt64(b) => Arc::new(b.finish()),
            Builder::Float32(b) => Arc::new(b.finish()),
            Builder::Float64(b) => Arc::new(b.finish()),
            Builder::Decimal {
                builder,
                precision,
                scale,
            } => Arc::new(
                builder
                    .finish()
                    .with_precision_and_scale(*precision, *scale)?,
            ),
            Builder::Text(b) | Builder::Time { builder: b, .. } => Arc::new(b.finish()),
            Builder::Binary { builder, .. } => Arc::new(builder.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
        })
    }
}

fn unexpected(wanted: &str, got: &Value) -> String {
    let kind = match got {
        Value::NULL => "NULL",
        Value::Bytes(_) => "bytes",
        Value::Int(_) => "a signed integer",
        Value::UInt(_) => "an unsigned integer",
        Value::Float(_) => "a float",
        Value::Double(_) => "a double",
        Value::Date(..) => "a date",
        Value::Time(..) => "a time",
    };
    format!("expected {wanted}, the server sent {kind}")
}

fn integer(v: &Value) -> Result<i128, String> {
    match v {
        Value::Int(n) => Ok(i128::from(*n)),
        Value::UInt(n) => Ok(i128::from(*n)),
        Value::Bytes(text) => utf8(text)?
            .trim()
            .parse::<i128>()
            .map_err(|e| format!("'{}' is not an integer: {e}", String::from_utf8_lossy(text))),
        other => Err(unexpected("an integer", other)),
    }
}

fn narrow<T: TryFrom<i128>>(n: i128) -> Result<T, String> {
    T::try_from(n).map_err(|_| format!("{n} does not fit the column's Arrow type"))
}

fn utf8(v: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(v).map_err(|e| {
        format!("text is not valid UTF-8 ({e}); the connection reads utf8mb4, so the stored bytes do not match the column's character set")
    })
}

fn zero_date(policy: InvalidDates, y: u16, m: u8, d: u8) -> Result<(), String> {
    match policy {
        InvalidDates::Null => Ok(()),
        InvalidDates::Fail => Err(format!(
            "zero or invalid date {y:04}-{m:02}-{d:02} found and invalid_dates is fail; set invalid_dates: null to write NULL instead"
        )),
    }
}

fn days_since_epoch(date: NaiveDate) -> i32 {
    date.signed_duration_since(NaiveDate::default())
        .num_days()
        .try_into()
        .unwrap_or(i32::MAX)
}

fn micros_since_epoch(ts: NaiveDateTime) -> i64 {
    ts.and_utc().timestamp_micros()
}

/// MySQL's own text of a TIME value: hours unbounded by 24, `fsp` fractional digits.
pub fn time_text(negative: bool, days: u32, h: u8, m: u8, s: u8, micros: u32, fsp: u8) -> String {
    let hours = u64::from(days) * 24 + u64::from(h);
    let sign = if negative { "-" } else { "" };
    let mut text = format!("{sign}{hours:02}:{m:02}:{s:02}");
    if fsp > 0 {
        let fraction = format!("{micros:06}");
        text.push('.');
        text.push_str(&fraction[..usize::from(fsp.min(6))]);
    }
    text
}

const POW10: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

fn check_precision(unscaled: i128, precision: u8, scale: i8) -> Result<i128, String> {
    if unscaled.unsigned_abs() >= POW10[usize::from(precision.min(38))].unsigned_abs() {
        return Err(format!(
            "decimal value does not fit decimal({precision},{scale})"
        ));
    }
    Ok(unscaled)
}

/// Converts the server's decimal text (`-123.4500`) to an unscaled i128 at `scale`, exactly:
/// a value that does not fit `precision` digits, or has non-zero digits beyond `scale`, is an
/// error, never rounded.
pub fn decimal_to_i128(text: &[u8], precision: u8, scale: i8) -> Result<i128, String> {
    let text = utf8(text)?.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let bad = || format!("'{text}' is not a decimal number");
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    let scale_digits = usize::try_from(scale).unwrap_or(0);
    let (kept, dropped) = frac.split_at(frac.len().min(scale_digits));
    if dropped.bytes().any(|b| b != b'0') {
        return Err(format!(
            "decimal value {text} has more than {scale} decimal places"
        ));
    }
    let overflow = || format!("decimal value {text} does not fit decimal({precision},{scale})");
    let mut acc: i128 = 0;
    for b in int.bytes().chain(kept.bytes()) {
        if !b.is_ascii_digit() {
            return Err(bad());
        }
        acc = acc
            .checked_mul(10)
            .and_then(|a| a.checked_add(i128::from(b - b'0')))
            .ok_or_else(overflow)?;
    }
    if dropped.bytes().any(|b| !b.is_ascii_digit()) {
        return Err(bad());
    }
    let pad = scale_digits - kept.len();
    acc = acc.checked_mul(POW10[pad]).ok_or_else(overflow)?;
    if acc >= POW10[usize::from(precision.min(38))] {
        return Err(overflow());
    }
    Ok(if negative { -acc } else { acc })
}

/// Turns binary-protocol rows into Arrow record batches of at most `batch_rows` rows.
pub struct RowDecoder {
    schema: SchemaRef,
    invalid_dates: InvalidDates,
    names: Vec<String>,
    /// Whether each column may hold NULL: a NULL in one that may not is the column's error.
    nullable: Vec<bool>,
    builders: Vec<Builder>,
    batch_rows: usize,
    rows: usize,
    warnings: BTreeMap<String, u64>,
}

impl RowDecoder {
    pub fn new(columns: &[DecodeColumn], batch_rows: usize, invalid_dates: InvalidDates) -> Self {
        let batch_rows = batch_rows.max(1);
        RowDecoder {
            schema: Arc::new(Schema::new(
                columns
                    .iter()
                    .map(|c| arrow_field(&c.name, &c.my_type, c.nullable))
                    .collect::<Vec<_>>(),
            )),
            invalid_dates,
            names: columns.iter().map(|c| c.name.clone()).collect(),
            nullable: columns.iter().map(|c| c.nullable).collect(),
            builders: columns
                .iter()
                .map(|c| Builder::new(&c.my_type, batch_rows))
                .collect(),
            batch_rows,
            rows: 0,
            warnings: BTreeMap::new(),
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Counted values written as NULL, by `column: reason`, since the last call.
    pub fn take_warnings(&mut self) -> BTreeMap<String, u64> {
        std::mem::take(&mut self.warnings)
    }

    /// Appends one row; returns a batch when `batch_rows` rows are complete.
    pub fn push_row(
        &mut self,
        values: Vec<Option<Value>>,
    ) -> Result<Option<RecordBatch>, DecodeError> {
        if values.len() != self.builders.len() {
            return Err(DecodeError::Width {
                got: values.len(),
                expected: self.builders.len(),
            });
        }
        for (i, (builder, value)) in self.builders.iter_mut().zip(values).enumerate() {
            let column_error = |message: String| DecodeError::Value {
                column: self.names[i].clone(),
                message,
            };
            match value {
                None | Some(Value::NULL) if !self.nullable[i] => {
                    return Err(column_error(
                        "NULL in a column declared NOT NULL (did the table change during the read?)"
                            .into(),
                    ));
                }
                None | Some(Value::NULL) => builder.append_null(),
                Some(v) => {
                    let mut nulled = None;
                    builder
                        .append(v, self.invalid_dates, &mut nulled)
                        .map_err(column_error)?;
                    if let Some(reason) = nulled
                        && !self.nullable[i]
                    {
                        return Err(column_error(format!(
                            "{reason}, but the column is NOT NULL so it cannot hold one; set column_types: string to read the server's text"
                        )));
                    }
                    if let Some(reason) = nulled {
                        *self
                            .warnings
                            .entry(format!("{}: {reason}", self.names[i]))
                            .or_insert(0) += 1;
                    }
                }
            }
        }
        self.rows += 1;
        if self.rows >= self.batch_rows {
            return self.flush().map(Some);
        }
        Ok(None)
    }

    /// The last partial batch, if any rows are pending.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>, DecodeError> {
        if self.rows == 0 {
            return Ok(None);
        }
        self.flush().map(Some)
    }

    fn flush(&mut self) -> Result<RecordBatch, DecodeError> {
        debug_assert!(self.builders.iter().all(|b| b.len() == self.rows));
        let arrays = self
            .builders
            .iter_mut()
            .map(Builder::finish)
            .collect::<Result<Vec<_>, _>>()?;
        self.rows = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Date32Type, Decimal128Type, TimestampMicrosecondType, UInt64Type};

    #[test]
    fn decimals_parse_exactly_or_fail() {
        assert_eq!(decimal_to_i128(b"12345.67", 12, 2), Ok(1_234_567));
        assert_eq!(decimal_to_i128(b"-0.05", 12, 2), Ok(-5));
        assert_eq!(decimal_to_i128(b"7", 12, 2), Ok(700));
        assert_eq!(decimal_to_i128(b"1.500", 12, 2), Ok(150));
        assert_eq!(
            decimal_to_i128(b"18446744073709551615", 20, 0),
            Ok(18_446_744_073_709_551_615)
        );
        assert!(
            decimal_to_i128(b"1.234", 12, 2)
                .unwrap_err()
                .contains("decimal places")
        );
        assert!(
            decimal_to_i128(b"1000", 3, 0)
                .unwrap_err()
                .contains("does not fit")
        );
        assert!(decimal_to_i128(b"1e5", 12, 2).is_err());
        assert!(decimal_to_i128(b"", 12, 2).is_err());
    }

    /// Found by the `mysql_rows` fuzz target: a NULL (or a zero date written as NULL) in a NOT
    /// NULL column failed the batch at flush with Arrow's error instead of the column's.
    #[test]
    fn null_in_a_not_null_column_is_the_columns_error() {
        let columns = [
            DecodeColumn {
                name: "id".into(),
                my_type: MyType::Int32,
                nullable: false,
            },
            DecodeColumn {
                name: "day".into(),
                my_type: MyType::Date,
                nullable: false,
            },
        ];
        for (row, name) in [
            (
                vec![Some(Value::NULL), Some(Value::Date(2024, 1, 2, 0, 0, 0, 0))],
                "id",
            ),
            (vec![None, Some(Value::Date(2024, 1, 2, 0, 0, 0, 0))], "id"),
            (
                vec![Some(Value::Int(1)), Some(Value::Date(0, 0, 0, 0, 0, 0, 0))],
                "day",
            ),
        ] {
            let mut decoder = RowDecoder::new(&columns, 8, InvalidDates::Null);
            let e = decoder.push_row(row).unwrap_err();
            assert!(
                matches!(&e, DecodeError::Value { column, .. } if column == name),
                "{e}"
            );
            assert!(e.to_string().contains("NOT NULL"), "{e}");
        }
    }

    #[test]
    fn times_print_like_mysql() {
        assert_eq!(time_text(true, 34, 22, 59, 59, 0, 0), "-838:59:59");
        assert_eq!(time_text(false, 0, 1, 2, 3, 450_000, 3), "01:02:03.450");
        assert_eq!(time_text(false, 1, 1, 0, 0, 5, 6), "25:00:00.000005");
    }

    fn col(name: &str, my_type: MyType) -> DecodeColumn {
        DecodeColumn {
            name: name.into(),
            my_type,
            nullable: true,
        }
    }

    #[test]
    fn rows_become_batches_with_counted_zero_dates() {
        let cols = [
            col("d", MyType::Date),
            col("ts", MyType::DateTime),
            col("u", MyType::UnsignedBigint),
            col("b", MyType::Bit),
            col("g", MyType::Geometry),
        ];
        let mut decoder = RowDecoder::new(&cols, 2, InvalidDates::Null);
        let first = decoder
            .push_row(vec![
                Some(Value::Date(2024, 2, 29, 0, 0, 0, 0)),
                Some(Value::Date(1970, 1, 1, 0, 0, 1, 5)),
                Some(Value::Bytes(b"18446744073709551615".to_vec())),
                Some(Value::Bytes(vec![0x01, 0x02])),
                Some(Value::Bytes(vec![0, 0, 0, 0, 1, 1, 0, 0, 0])),
            ])
            .unwrap();
        assert!(first.is_none());
        let batch = decoder
            .push_row(vec![
                Some(Value::Date(0, 0, 0, 0, 0, 0, 0)),
                Some(Value::Date(2024, 0, 10, 0, 0, 0, 0)),
                Some(Value::UInt(u64::MAX)),
                None,
                Some(Value::NULL),
            ])
            .unwrap()
            .unwrap();
        assert_eq!(batch.num_rows(), 2);
        let d = batch.column(0).as_primitive::<Date32Type>();
        assert_eq!(d.value(0), 19_782);
        assert!(d.is_null(1));
        let ts = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_000_005);
        assert!(ts.is_null(1));
        let u = batch.column(2).as_primitive::<Decimal128Type>();
        assert_eq!(u.value(0), i128::from(u64::MAX));
        assert_eq!(u.value(1), i128::from(u64::MAX));
        assert_eq!(
            batch.column(3).as_primitive::<UInt64Type>().value(0),
            0x0102
        );
        assert_eq!(
            batch.column(4).as_binary::<i32>().value(0),
            &[1, 1, 0, 0, 0]
        );
        let warnings = decoder.take_warnings();
        assert_eq!(warnings["d: zero or invalid date written as NULL"], 1);
        assert_eq!(warnings["ts: zero or invalid date written as NULL"], 1);
        assert!(decoder.finish().unwrap().is_none());

        let mut strict = RowDecoder::new(&cols[..1], 10, InvalidDates::Fail);
        let err = strict
            .push_row(vec![Some(Value::Date(0, 0, 0, 0, 0, 0, 0))])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("column d: zero or invalid date 0000-00-00"),
            "{err}"
        );
    }

    #[test]
    fn booleans_accept_only_zero_and_one() {
        let mut decoder = RowDecoder::new(&[col("f", MyType::Bool)], 10, InvalidDates::Null);
        decoder.push_row(vec![Some(Value::Int(1))]).unwrap();
        let err = decoder.push_row(vec![Some(Value::Int(5))]).unwrap_err();
        assert!(err.to_string().contains("value 5 is not 0 or 1"), "{err}");
    }
}
