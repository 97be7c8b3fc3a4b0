//! The SQL API's `jsonv2` result encoding, one function per direction: cells (every value a
//! string, NULL as null) read by the column's `rowType`, and bindings written as
//! `{"type", "value"}` pairs.
//!
//! Encodings (Snowflake's "Handling responses"): FIXED is a decimal string; REAL a float;
//! BOOLEAN `true`/`false`; DATE days since the epoch; TIME seconds since midnight; TIMESTAMP_NTZ
//! and _LTZ seconds since the epoch with a fraction; TIMESTAMP_TZ the same, a space, and the
//! offset in minutes plus 1440; BINARY hex; VARIANT/OBJECT/ARRAY JSON text.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeDelta};
use serde::Deserialize;

use super::SnowflakeError;
use crate::warehouse::{Binding, Column, Value};

/// One entry of `resultSetMetaData.rowType`.
#[derive(Debug, Deserialize)]
pub struct RowType {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default)]
    pub precision: Option<u32>,
    #[serde(default)]
    pub scale: Option<u32>,
    #[serde(default = "nullable_default")]
    pub nullable: bool,
}

fn nullable_default() -> bool {
    true
}

impl RowType {
    pub fn column(&self) -> Column {
        Column {
            name: self.name.clone(),
            type_name: self.type_name.to_ascii_lowercase(),
            precision: self.precision,
            scale: self.scale,
            nullable: self.nullable,
        }
    }
}

/// Reads one cell of a column.
pub fn cell(column: &Column, raw: Option<&str>) -> Result<Value, SnowflakeError> {
    let Some(raw) = raw else {
        return Ok(Value::Null);
    };
    let fail = |message: String| SnowflakeError::Decode {
        column: column.name.clone(),
        type_name: column.type_name.clone(),
        value: raw.chars().take(64).collect(),
        message,
    };
    Ok(match column.type_name.as_str() {
        "fixed" | "number" => {
            let (unscaled, scale) = decimal(raw).ok_or_else(|| fail("not a decimal".into()))?;
            Value::Number { unscaled, scale }
        }
        "real" | "float" | "double" => {
            Value::Real(raw.parse().map_err(|e| fail(format!("not a float: {e}")))?)
        }
        "boolean" => match raw {
            "true" | "1" | "TRUE" => Value::Boolean(true),
            "false" | "0" | "FALSE" => Value::Boolean(false),
            _ => return Err(fail("not a boolean".into())),
        },
        "date" => {
            let days: i64 = raw
                .parse()
                .map_err(|e| fail(format!("not a day count: {e}")))?;
            let date = NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|epoch| epoch.checked_add_signed(TimeDelta::try_days(days)?))
                .ok_or_else(|| fail("date out of range".into()))?;
            Value::Date(date)
        }
        "time" => {
            let (secs, nanos) = seconds(raw).ok_or_else(|| fail("not seconds".into()))?;
            let secs = u32::try_from(secs).map_err(|_| fail("time out of range".into()))?;
            Value::Time(
                NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)
                    .ok_or_else(|| fail("time out of range".into()))?,
            )
        }
        "timestamp_ntz" => Value::TimestampNtz(
            instant(raw)
                .ok_or_else(|| fail("not epoch seconds".into()))?
                .naive_utc(),
        ),
        "timestamp_ltz" => {
            Value::TimestampLtz(instant(raw).ok_or_else(|| fail("not epoch seconds".into()))?)
        }
        "timestamp_tz" => {
            let (at, offset) = raw
                .split_once(' ')
                .ok_or_else(|| fail("expected '<epoch seconds> <offset + 1440>'".into()))?;
            let at = instant(at).ok_or_else(|| fail("not epoch seconds".into()))?;
            let minutes: i32 = offset
                .parse()
                .map_err(|e| fail(format!("not an offset: {e}")))?;
            let offset = minutes
                .checked_sub(1440)
                .and_then(|m| m.checked_mul(60))
                .and_then(FixedOffset::east_opt)
                .ok_or_else(|| fail("offset out of range".into()))?;
            Value::TimestampTz(at.with_timezone(&offset))
        }
        "binary" => Value::Binary(hex(raw).ok_or_else(|| fail("not hex".into()))?),
        "variant" | "object" | "array" => {
            Value::Variant(serde_json::from_str(raw).map_err(|e| fail(format!("not JSON: {e}")))?)
        }
        // text, and any type sluice does not read specially (geography, vector, …).
        _ => Value::Text(raw.to_owned()),
    })
}

/// `"-12.340"` → (-12340, 3).
fn decimal(raw: &str) -> Option<(i128, u32)> {
    let (int, frac) = raw.split_once('.').unwrap_or((raw, ""));
    let digits = format!("{int}{frac}");
    if int.trim_start_matches(['-', '+']).is_empty() && frac.is_empty() {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, u32::try_from(frac.len()).ok()?))
}

/// `"1704164645.123456789"` → (1704164645, 123456789); negative instants count down.
fn seconds(raw: &str) -> Option<(i64, u32)> {
    let (secs, frac) = raw.split_once('.').unwrap_or((raw, ""));
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    let whole: i64 = secs.parse().ok()?;
    if secs.starts_with('-') && nanos > 0 {
        // -1.25 is 1.25 s before the epoch: -2 s + 0.75 s.
        Some((whole.checked_sub(1)?, 1_000_000_000 - nanos))
    } else {
        Some((whole, nanos))
    }
}

fn instant(raw: &str) -> Option<DateTime<chrono::Utc>> {
    let (secs, nanos) = seconds(raw)?;
    DateTime::from_timestamp(secs, nanos)
}

fn hex(raw: &str) -> Option<Vec<u8>> {
    if !raw.len().is_multiple_of(2) {
        return None;
    }
    (0..raw.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(raw.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A binding as the SQL API takes it.
pub fn binding(value: &Binding) -> serde_json::Value {
    let (type_name, value) = match value {
        Binding::Null => ("TEXT", serde_json::Value::Null),
        Binding::Text(text) => ("TEXT", text.clone().into()),
        Binding::Integer(i) => ("FIXED", i.to_string().into()),
        Binding::Decimal(d) => ("FIXED", d.clone().into()),
        Binding::Real(r) => ("REAL", r.to_string().into()),
        Binding::Boolean(b) => ("BOOLEAN", b.to_string().into()),
        Binding::Binary(bytes) => (
            "BINARY",
            bytes
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<String>()
                .into(),
        ),
    };
    serde_json::json!({ "type": type_name, "value": value })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Extreme numbers where Snowflake sends a time: an error naming the column, not an
    /// arithmetic overflow (seen while writing the `sql_api_response` fuzz target).
    #[test]
    fn out_of_range_instants_and_offsets_are_the_columns_error() {
        for (type_name, raw) in [
            ("timestamp_tz", "0 2147483647"),
            ("timestamp_tz", "0 -2147483648"),
            ("timestamp_ltz", "-9223372036854775808.5"),
            ("time", "-9223372036854775808.5"),
        ] {
            let e = cell(&col(type_name), Some(raw)).unwrap_err();
            assert!(
                matches!(&e, SnowflakeError::Decode { column, .. } if column == "C"),
                "{e}"
            );
        }
    }

    fn col(type_name: &str) -> Column {
        Column {
            name: "C".into(),
            type_name: type_name.into(),
            precision: None,
            scale: None,
            nullable: true,
        }
    }

    #[test]
    fn cells_decode_by_row_type() {
        let cases = [
            (
                "fixed",
                "-12.340",
                Value::Number {
                    unscaled: -12340,
                    scale: 3,
                },
            ),
            (
                "fixed",
                "42",
                Value::Number {
                    unscaled: 42,
                    scale: 0,
                },
            ),
            ("real", "2.5", Value::Real(2.5)),
            ("boolean", "false", Value::Boolean(false)),
            (
                "date",
                "19724",
                Value::Date(NaiveDate::from_ymd_opt(2024, 1, 2).unwrap()),
            ),
            (
                "date",
                "-1",
                Value::Date(NaiveDate::from_ymd_opt(1969, 12, 31).unwrap()),
            ),
            (
                "time",
                "3723.500000000",
                Value::Time(NaiveTime::from_hms_milli_opt(1, 2, 3, 500).unwrap()),
            ),
            (
                "timestamp_ntz",
                "1704164645.123456000",
                Value::TimestampNtz(
                    NaiveDate::from_ymd_opt(2024, 1, 2)
                        .unwrap()
                        .and_hms_micro_opt(3, 4, 5, 123_456)
                        .unwrap(),
                ),
            ),
            (
                "timestamp_ntz",
                "-1.250000000",
                Value::TimestampNtz(
                    NaiveDate::from_ymd_opt(1969, 12, 31)
                        .unwrap()
                        .and_hms_milli_opt(23, 59, 58, 750)
                        .unwrap(),
                ),
            ),
            ("binary", "ABCD", Value::Binary(vec![0xAB, 0xCD])),
            (
                "variant",
                "{\"a\":1}",
                Value::Variant(serde_json::json!({"a": 1})),
            ),
            ("text", "x", Value::Text("x".into())),
        ];
        for (type_name, raw, expected) in cases {
            assert_eq!(
                cell(&col(type_name), Some(raw)).unwrap(),
                expected,
                "{type_name} {raw}"
            );
        }
        assert_eq!(cell(&col("fixed"), None).unwrap(), Value::Null);
    }

    #[test]
    fn timestamp_tz_keeps_its_offset() {
        let Value::TimestampTz(at) =
            cell(&col("timestamp_tz"), Some("1704157445.000000000 1560")).unwrap()
        else {
            panic!("not a timestamp_tz");
        };
        assert_eq!(at.offset().local_minus_utc(), 120 * 60);
        assert_eq!(at.to_rfc3339(), "2024-01-02T03:04:05+02:00");
    }

    #[test]
    fn bad_cells_name_the_column() {
        let err = cell(&col("fixed"), Some("abc")).unwrap_err().to_string();
        assert!(err.contains("column C (fixed)"), "{err}");
        assert!(cell(&col("binary"), Some("ABC")).is_err());
        assert!(cell(&col("boolean"), Some("maybe")).is_err());
    }

    #[test]
    fn bindings_are_typed_strings() {
        assert_eq!(
            binding(&Binding::Integer(-7)),
            serde_json::json!({"type": "FIXED", "value": "-7"})
        );
        assert_eq!(
            binding(&Binding::Null),
            serde_json::json!({"type": "TEXT", "value": null})
        );
        assert_eq!(
            binding(&Binding::Binary(vec![1, 255])),
            serde_json::json!({"type": "BINARY", "value": "01FF"})
        );
        assert_eq!(
            binding(&Binding::Boolean(true)),
            serde_json::json!({"type": "BOOLEAN", "value": "true"})
        );
    }
}
