//! PostgreSQL's binary COPY stream through `CopyBinaryDecoder`. The first bytes choose the
//! columns and how the stream is cut; the rest is the stream, fed in pieces, then `finish`.
//! A malformed or hostile stream must end in an error (one naming the column when a value is
//! wrong), never a panic, a hang or unbounded memory.
//!
//! Layout (`fuzz/seeds/generate.py` writes the same):
//! - byte 0: column count (mod 9);
//! - byte 1: bits 0-2 rows per batch - 1, bit 3 `invalid_dates: fail`;
//! - byte 2: piece size - 1 (255: the whole stream in one piece);
//! - per column: a type byte, a flags byte (bit 0 nullable), then for `numeric` a big-endian
//!   typmod (4 bytes), for an override decimal precision and scale (2 bytes), for an array
//!   its element's type byte (and that element's extra bytes);
//! - then the stream.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use sluice::source::postgres::copy_binary::{CopyBinaryDecoder, DecodeColumn, DecodeError};
use sluice::source::postgres::types::{PgType, numeric_type};
use sluice_core::InvalidDates;
use sluice_core::config::ColumnTypeOverride;

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn i32(&mut self) -> Option<i32> {
        let mut bytes = [0; 4];
        for b in &mut bytes {
            *b = self.byte()?;
        }
        Some(i32::from_be_bytes(bytes))
    }
}

/// A column type as the source would choose it; `None` when its constructor refuses it.
fn pg_type(input: &mut Cursor, allow_list: bool) -> Option<Option<PgType>> {
    let t = input.byte()?;
    Some(Some(match t % 19 {
        0 => PgType::Bool,
        1 => PgType::Int2,
        2 => PgType::Int4,
        3 => PgType::Int8,
        4 => PgType::Oid,
        5 => PgType::Float4,
        6 => PgType::Float8,
        7 => match numeric_type(input.i32()?) {
            Ok(t) => t,
            Err(_) => return Some(None),
        },
        8 => PgType::Money,
        9 => PgType::Text,
        10 => PgType::Jsonb,
        11 => PgType::Uuid,
        12 => PgType::Bytea,
        13 => PgType::Date,
        14 => PgType::Time,
        15 => PgType::Timestamp,
        16 => PgType::TimestampTz,
        17 => {
            // `column_types: {c: "decimal(p,s)"}`, as the config accepts it.
            let (p, s) = (input.byte()?, input.byte()? as i8);
            match ColumnTypeOverride::try_from(format!("decimal({p},{s})")) {
                Ok(ColumnTypeOverride::Decimal { precision, scale }) => {
                    PgType::Numeric { precision, scale }
                }
                _ => return Some(None),
            }
        }
        _ if allow_list => match pg_type(input, false)? {
            Some(element) => PgType::List(Box::new(element)),
            None => return Some(None),
        },
        _ => PgType::Text,
    }))
}

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor(data);
    let (Some(count), Some(batch), Some(piece)) = (input.byte(), input.byte(), input.byte()) else {
        return;
    };
    let mut columns = Vec::new();
    for i in 0..count % 9 {
        let Some(pg_type) = pg_type(&mut input, true) else {
            return;
        };
        let Some(flags) = input.byte() else {
            return;
        };
        let Some(pg_type) = pg_type else {
            return;
        };
        columns.push(DecodeColumn {
            name: format!("c{i}"),
            pg_type,
            nullable: flags & 1 == 1,
        });
    }
    let batch_rows = usize::from(batch & 7) + 1;
    let invalid_dates = if batch & 8 != 0 {
        InvalidDates::Fail
    } else {
        InvalidDates::Null
    };
    let stream = input.0;
    let piece = if piece == 255 {
        stream.len().max(1)
    } else {
        usize::from(piece) + 1
    };
    let mut decoder = CopyBinaryDecoder::new(&columns, batch_rows, invalid_dates);
    let mut out = VecDeque::new();
    let mut result = Ok(());
    for part in stream.chunks(piece) {
        result = decoder.feed(part, &mut out);
        if result.is_err() {
            break;
        }
        while let Some(batch) = out.pop_front() {
            assert!(batch.num_rows() <= batch_rows);
        }
    }
    let result = result.and_then(|()| decoder.finish().map(|_| ()));
    match &result {
        Err(DecodeError::Value { column, .. }) => {
            assert!(columns.iter().any(|c| &c.name == column), "{result:?}")
        }
        // A bad value is the column's error, never a batch Arrow refuses.
        Err(DecodeError::Arrow(e)) => panic!("{e}"),
        _ => {}
    }
});
