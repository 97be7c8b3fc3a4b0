//! MySQL's binary-protocol rows through `RowDecoder`: column types chosen from the input, then
//! rows of `mysql_async::Value`s read from the rest with `arbitrary`, through `push_row` and
//! `finish`. A value that does not fit its column must be an error naming the column, never a
//! panic.
//!
//! Layout (`fuzz/seeds/generate.py` writes the same):
//! - byte 0: column count (mod 9); byte 1: bits 0-2 rows per batch - 1, bit 3
//!   `invalid_dates: fail`;
//! - per column: a type byte, then for `decimal` precision and scale (2 bytes: as from
//!   information_schema; for an override decimal, as written in the config), for `time` its
//!   fsp (1 byte), then a flags byte (bit 0 nullable);
//! - then values, row after row, each a tag byte (mod 9: NULL, absent, bytes, int, uint,
//!   float, double, date, time) and its payload, little-endian: bytes = a length byte and
//!   the bytes; date = year (2), month, day, hour, minute, second, micros (4); time =
//!   negative, days (4), hours, minutes, seconds, micros (4).
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use mysql_async::Value;
use sluice::source::mysql::decode::{DecodeColumn, DecodeError, RowDecoder};
use sluice::source::mysql::types::{MyType, decimal_type};
use sluice_core::InvalidDates;
use sluice_core::config::ColumnTypeOverride;

/// The next `N` bytes, or an error when fewer are left.
fn array<const N: usize>(u: &mut Unstructured) -> Result<[u8; N]> {
    let mut bytes = [0; N];
    bytes.copy_from_slice(u.bytes(N)?);
    Ok(bytes)
}

/// A column type as the source would choose it; `None` when its constructor refuses it.
fn my_type(u: &mut Unstructured) -> Result<Option<MyType>> {
    let t: u8 = u.arbitrary()?;
    Ok(Some(match t % 19 {
        0 => MyType::Bool,
        1 => MyType::Int8,
        2 => MyType::Int16,
        3 => MyType::Int32,
        4 => MyType::Int64,
        5 => MyType::UnsignedBigint,
        6 => MyType::Float32,
        7 => MyType::Float64,
        8 => {
            let (p, s): (u8, u8) = (u.arbitrary()?, u.arbitrary()?);
            match decimal_type(u64::from(p), u64::from(s)) {
                Ok(t) => t,
                Err(_) => return Ok(None),
            }
        }
        9 => MyType::Bit,
        10 => MyType::Year,
        11 => MyType::Text,
        12 => MyType::Binary,
        13 => MyType::Geometry,
        14 => MyType::Date,
        15 => MyType::DateTime,
        16 => MyType::Timestamp,
        17 => MyType::Time {
            fsp: u.arbitrary::<u8>()?.min(6),
        },
        _ => {
            // `column_types: {c: "decimal(p,s)"}`, as the config accepts it.
            let (p, s): (u8, i8) = (u.arbitrary()?, u.arbitrary()?);
            match ColumnTypeOverride::try_from(format!("decimal({p},{s})")) {
                Ok(ColumnTypeOverride::Decimal { precision, scale }) => {
                    MyType::Decimal { precision, scale }
                }
                _ => return Ok(None),
            }
        }
    }))
}

fn value(u: &mut Unstructured) -> Result<Option<Value>> {
    let tag: u8 = u.arbitrary()?;
    Ok(match tag % 9 {
        0 => Some(Value::NULL),
        1 => None,
        2 => {
            let len: u8 = u.arbitrary()?;
            Some(Value::Bytes(u.bytes(usize::from(len))?.to_vec()))
        }
        3 => Some(Value::Int(i64::from_le_bytes(array(u)?))),
        4 => Some(Value::UInt(u64::from_le_bytes(array(u)?))),
        5 => Some(Value::Float(f32::from_le_bytes(array(u)?))),
        6 => Some(Value::Double(f64::from_le_bytes(array(u)?))),
        7 => {
            let year = u16::from_le_bytes(array(u)?);
            let [month, day, hour, minute, second] = array(u)?;
            let micros = u32::from_le_bytes(array(u)?);
            Some(Value::Date(year, month, day, hour, minute, second, micros))
        }
        _ => {
            let negative: u8 = u.arbitrary()?;
            let days = u32::from_le_bytes(array(u)?);
            let [hours, minutes, seconds] = array(u)?;
            let micros = u32::from_le_bytes(array(u)?);
            Some(Value::Time(
                negative & 1 == 1,
                days,
                hours,
                minutes,
                seconds,
                micros,
            ))
        }
    })
}

fn run(u: &mut Unstructured) -> Result<()> {
    let count: u8 = u.arbitrary()?;
    let batch: u8 = u.arbitrary()?;
    let mut columns = Vec::new();
    for i in 0..count % 9 {
        let my_type = my_type(u)?;
        let flags: u8 = u.arbitrary()?;
        let Some(my_type) = my_type else {
            return Ok(());
        };
        columns.push(DecodeColumn {
            name: format!("c{i}"),
            my_type,
            nullable: flags & 1 == 1,
        });
    }
    let batch_rows = usize::from(batch & 7) + 1;
    let invalid_dates = if batch & 8 != 0 {
        InvalidDates::Fail
    } else {
        InvalidDates::Null
    };
    let mut decoder = RowDecoder::new(&columns, batch_rows, invalid_dates);
    let named = |e: &DecodeError| match e {
        DecodeError::Value { column, .. } => {
            assert!(columns.iter().any(|c| &c.name == column), "{e}")
        }
        other => panic!("a row of the right width failed without naming a column: {other}"),
    };
    while !u.is_empty() && !columns.is_empty() {
        let mut row = Vec::with_capacity(columns.len());
        for _ in &columns {
            match value(u) {
                Ok(v) => row.push(v),
                Err(_) => break,
            }
        }
        if row.len() != columns.len() {
            break;
        }
        match decoder.push_row(row) {
            Ok(Some(batch)) => assert!(batch.num_rows() <= batch_rows),
            Ok(None) => {}
            Err(e) => {
                named(&e);
                return Ok(());
            }
        }
    }
    if let Err(e) = decoder.finish() {
        named(&e);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
