//! Decoder of PostgreSQL's binary COPY format straight into Arrow builders.
//!
//! The stream is fed in whatever pieces the server sends; a row is decoded only once all of
//! its bytes are present, so a row split across messages is never half-appended.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListArray,
    StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use bytes::{Buf, BytesMut};
use thiserror::Error;

use sluice_core::InvalidDates;

use super::types::{MONEY_SCALE, PgType, arrow_field, list_item};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// A NULL in a column the catalog says is NOT NULL (the table changed under the read).
const NULL_IN_NOT_NULL: &str =
    "NULL in a column declared NOT NULL (did the table change during the read?)";
/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("binary COPY stream is malformed: {0}")]
    Malformed(String),
    #[error("column {column}: {message}")]
    Value { column: String, message: String },
    #[error("building an Arrow batch: {0}")]
    Arrow(#[from] ArrowError),
    #[error("binary COPY stream ended before its trailer: the connection was cut mid-stream")]
    Truncated,
}

enum Builder {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Oid(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal {
        builder: Decimal128Builder,
        precision: u8,
        scale: i8,
    },
    Money(Decimal128Builder),
    Text(StringBuilder),
    Jsonb(StringBuilder),
    Uuid(StringBuilder),
    Bytea(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    List {
        item: FieldRef,
        child: Box<Builder>,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
    },
}

impl Builder {
    fn new(pg_type: &PgType, capacity: usize) -> Builder {
        match pg_type {
            PgType::Bool => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
            PgType::Int2 => Builder::Int16(Int16Builder::with_capacity(capacity)),
            PgType::Int4 => Builder::Int32(Int32Builder::with_capacity(capacity)),
            PgType::Int8 => Builder::Int64(Int64Builder::with_capacity(capacity)),
            PgType::Oid => Builder::Oid(Int64Builder::with_capacity(capacity)),
            PgType::Float4 => Builder::Float32(Float32Builder::with_capacity(capacity)),
            PgType::Float8 => Builder::Float64(Float64Builder::with_capacity(capacity)),
            PgType::Numeric { precision, scale } => Builder::Decimal {
                builder: Decimal128Builder::with_capacity(capacity),
                precision: *precision,
                scale: *scale,
            },
            PgType::Money => Builder::Money(Decimal128Builder::with_capacity(capacity)),
            PgType::Text => Builder::Text(StringBuilder::with_capacity(capacity, capacity * 16)),
            PgType::Jsonb => Builder::Jsonb(StringBuilder::with_capacity(capacity, capacity * 32)),
            PgType::Uuid => Builder::Uuid(StringBuilder::with_capacity(capacity, capacity * 36)),
            PgType::Bytea => Builder::Bytea(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            PgType::Date => Builder::Date(Date32Builder::with_capacity(capacity)),
            PgType::Time => Builder::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            PgType::Timestamp => {
                Builder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
            PgType::TimestampTz => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            ),
            PgType::List(element) => {
                let mut offsets = Vec::with_capacity(capacity + 1);
                offsets.push(0);
                Builder::List {
                    item: Arc::new(list_item(element)),
                    child: Box::new(Builder::new(element, capacity)),
                    offsets,
                    nulls: NullBufferBuilder::new(capacity),
                }
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Builder::Bool(b) => b.len(),
            Builder::Int16(b) => b.len(),
            Builder::Int32(b) => b.len(),
            Builder::Int64(b) | Builder::Oid(b) => b.len(),
            Builder::Float32(b) => b.len(),
            Builder::Float64(b) => b.len(),
            Builder::Decimal { builder, .. } | Builder::Money(builder) => builder.len(),
            Builder::Text(b) | Builder::Jsonb(b) | Builder::Uuid(b) => b.len(),
            Builder::Bytea(b) => b.len(),
            Builder::Date(b) => b.len(),
            Builder::Time(b) => b.len(),
            Builder::Timestamp(b) => b.len(),
            Builder::List { offsets, .. } => offsets.len() - 1,
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::Int16(b) => b.append_null(),
            Builder::Int32(b) => b.append_null(),
            Builder::Int64(b) | Builder::Oid(b) => b.append_null(),
            Builder::Float32(b) => b.append_null(),
            Builder::Float64(b) => b.append_null(),
            Builder::Decimal { builder, .. } | Builder::Money(builder) => builder.append_null(),
            Builder::Text(b) | Builder::Jsonb(b) | Builder::Uuid(b) => b.append_null(),
            Builder::Bytea(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
            Builder::List {
                child,
                offsets,
                nulls,
                ..
            } => {
                offsets.push(i32::try_from(child.len()).unwrap_or(i32::MAX));
                nulls.append_null();
            }
        }
    }

    /// Appends one non-NULL value. A value written as NULL under the `invalid_dates` policy
    /// sets `nulled` to the reason, for the caller to count.
    fn append(
        &mut self,
        v: &[u8],
        policy: InvalidDates,
        nulled: &mut Option<&'static str>,
    ) -> Result<(), String> {
        match self {
            Builder::Bool(b) => b.append_value(fixed::<1>(v)?[0] != 0),
            Builder::Int16(b) => b.append_value(i16::from_be_bytes(fixed(v)?)),
            Builder::Int32(b) => b.append_value(i32::from_be_bytes(fixed(v)?)),
            Builder::Int64(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Builder::Oid(b) => b.append_value(i64::from(u32::from_be_bytes(fixed(v)?))),
            Builder::Float32(b) => b.append_value(f32::from_be_bytes(fixed(v)?)),
            Builder::Float64(b) => b.append_value(f64::from_be_bytes(fixed(v)?)),
            Builder::Decimal {
                builder,
                precision,
                scale,
            } => builder.append_value(numeric_to_i128(v, *precision, *scale)?),
            Builder::Money(b) => b.append_value(i128::from(i64::from_be_bytes(fixed(v)?))),
            Builder::Text(b) => b.append_value(utf8(v)?),
            Builder::Jsonb(b) => match v.split_first() {
                Some((1, text)) => b.append_value(utf8(text)?),
                _ => return Err("jsonb value with an unknown binary version".into()),
            },
            Builder::Uuid(b) => b.append_value(utf8(&format_uuid(&fixed::<16>(v)?))?),
            Builder::Bytea(b) => b.append_value(v),
            Builder::Date(b) => match i32::from_be_bytes(fixed(v)?) {
                i32::MAX | i32::MIN => {
                    invalid_date(policy, "infinite date")?;
                    b.append_null();
                    *nulled = Some("infinite date written as NULL");
                }
                days => match days.checked_add(PG_EPOCH_DAYS) {
                    Some(d) => b.append_value(d),
                    None => {
                        invalid_date(policy, "date out of range")?;
                        b.append_null();
                        *nulled = Some("date out of range written as NULL");
                    }
                },
            },
            Builder::Time(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Builder::Timestamp(b) => match i64::from_be_bytes(fixed(v)?) {
                i64::MAX | i64::MIN => {
                    invalid_date(policy, "infinite timestamp")?;
                    b.append_null();
                    *nulled = Some("infinite timestamp written as NULL");
                }
                micros => match micros.checked_add(PG_EPOCH_MICROS) {
                    Some(m) => b.append_value(m),
                    None => {
                        invalid_date(policy, "timestamp out of range")?;
                        b.append_null();
                        *nulled = Some("timestamp out of range written as NULL");
                    }
                },
            },
            Builder::List {
                child,
                offsets,
                nulls,
                ..
            } => {
                append_array(child, v, policy, nulled)?;
                offsets.push(
                    i32::try_from(child.len())
                        .map_err(|_| "array batch exceeds 2^31 elements".to_string())?,
                );
                nulls.append_non_null();
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        Ok(match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Int16(b) => Arc::new(b.finish()),
            Builder::Int32(b) => Arc::new(b.finish()),
            Builder::Int64(b) | Builder::Oid(b) => Arc::new(b.finish()),
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
            Builder::Money(b) => Arc::new(b.finish().with_precision_and_scale(19, MONEY_SCALE)?),
            Builder::Text(b) | Builder::Jsonb(b) | Builder::Uuid(b) => Arc::new(b.finish()),
            Builder::Bytea(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
            Builder::List {
                item,
                child,
                offsets,
                nulls,
            } => {
                let values = child.finish()?;
                let offsets =
                    OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                Arc::new(ListArray::try_new(
                    item.clone(),
                    offsets,
                    values,
                    nulls.finish(),
                )?)
            }
        })
    }
}

fn invalid_date(policy: InvalidDates, what: &str) -> Result<(), String> {
    match policy {
        InvalidDates::Null => Ok(()),
        InvalidDates::Fail => Err(format!(
            "{what} found and invalid_dates is fail; set invalid_dates: null to write NULL instead"
        )),
    }
}

/// Appends the elements of a binary array value (ndim, flags, element oid, dimensions, then
/// length-prefixed elements) to the list's child builder.
fn append_array(
    child: &mut Builder,
    v: &[u8],
    policy: InvalidDates,
    nulled: &mut Option<&'static str>,
) -> Result<(), String> {
    let header = |at: usize| -> Result<i32, String> {
        v.get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| "array value shorter than its header".to_string())
    };
    let ndim = header(0)?;
    match ndim {
        0 => return Ok(()),
        1 => {}
        n => {
            return Err(format!(
                "a {n}-dimensional array value in a column declared with fewer dimensions; declare the column as such (e.g. int[][]) or set column_types: string"
            ));
        }
    }
    let count = usize::try_from(header(12)?).map_err(|_| "negative array length".to_string())?;
    let mut pos = 20;
    for _ in 0..count {
        let len = header(pos)?;
        pos += 4;
        if len < 0 {
            child.append_null();
            continue;
        }
        let end = pos + len as usize;
        let element = v
            .get(pos..end)
            .ok_or_else(|| "array element runs past the value".to_string())?;
        child.append(element, policy, nulled)?;
        pos = end;
    }
    Ok(())
}

fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N], String> {
    v.try_into()
        .map_err(|_| format!("expected {N} bytes, the server sent {}", v.len()))
}

fn utf8(v: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(v)
        .map_err(|e| format!("text is not valid UTF-8 ({e}); is the database encoding UTF8?"))
}

/// A UUID's canonical text: 36 lowercase ASCII bytes, formatted on the stack.
fn format_uuid(b: &[u8; 16]) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut j = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[j] = b'-';
            j += 1;
        }
        out[j] = HEX[usize::from(byte >> 4)];
        out[j + 1] = HEX[usize::from(byte & 0xf)];
        j += 2;
    }
    out
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

/// Converts PostgreSQL's binary numeric (base-10000 digits) to an unscaled i128 at `scale`,
/// exactly: a value that does not fit `precision` digits is an error, never rounded.
pub fn numeric_to_i128(v: &[u8], precision: u8, scale: i8) -> Result<i128, String> {
    if v.len() < 8 {
        return Err("numeric value shorter than its header".into());
    }
    let ndigits = i32::from(i16::from_be_bytes([v[0], v[1]]));
    let weight = i32::from(i16::from_be_bytes([v[2], v[3]]));
    let sign = u16::from_be_bytes([v[4], v[5]]);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("numeric NaN cannot be stored as an exact decimal".into()),
        0xD000 | 0xF000 => {
            return Err("numeric infinity cannot be stored as an exact decimal".into());
        }
        other => return Err(format!("numeric with unknown sign word {other:#06x}")),
    }
    let digits = &v[8..];
    if digits.len()
        != usize::try_from(ndigits)
            .unwrap_or(usize::MAX)
            .saturating_mul(2)
    {
        return Err("numeric digit count does not match its length".into());
    }
    let overflow = || format!("numeric value does not fit decimal({precision},{scale})");
    let mut acc: i128 = 0;
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let d = i128::from(i16::from_be_bytes([pair[0], pair[1]]));
        if d == 0 {
            continue;
        }
        // PostgreSQL writes base-10000 digits; anything else is a damaged or hostile stream,
        // whose value would otherwise come out silently wrong.
        if !(1..10_000).contains(&d) {
            return Err(format!("numeric digit {d} is not a base-10000 digit"));
        }
        let exp = 4 * (weight - i32::try_from(i).map_err(|_| overflow())?) + i32::from(scale);
        if exp >= 0 {
            let pow = POW10
                .get(usize::try_from(exp).map_err(|_| overflow())?)
                .ok_or_else(overflow)?;
            acc = d
                .checked_mul(*pow)
                .and_then(|x| acc.checked_add(x))
                .ok_or_else(overflow)?;
        } else {
            // A base-10000 digit holds at most four decimal digits, so the division stays in
            // i32 (i128 division is a slow library call on the hot path).
            let shift = u32::try_from(-exp).unwrap_or(u32::MAX);
            let d = i32::try_from(d).map_err(|_| overflow())?;
            let div = if shift <= 4 {
                10i32.pow(shift)
            } else {
                i32::MAX
            };
            if d % div != 0 {
                return Err(format!(
                    "numeric value has more than {scale} decimal places"
                ));
            }
            acc = acc.checked_add(i128::from(d / div)).ok_or_else(overflow)?;
        }
    }
    if acc >= POW10[usize::from(precision.min(38))] {
        return Err(overflow());
    }
    Ok(if sign == 0x4000 { -acc } else { acc })
}

#[derive(PartialEq, Eq)]
enum State {
    Header,
    Rows,
    Done,
}

/// One column of the stream: its name, how its values decode, and whether NULL may occur.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeColumn {
    pub name: String,
    pub pg_type: PgType,
    pub nullable: bool,
}

/// Turns a binary COPY byte stream into Arrow record batches of at most `batch_rows` rows.
pub struct CopyBinaryDecoder {
    schema: SchemaRef,
    invalid_dates: InvalidDates,
    names: Vec<String>,
    /// Whether each column may hold NULL: a NULL in one that may not is the column's error.
    nullable: Vec<bool>,
    builders: Vec<Builder>,
    batch_rows: usize,
    rows: usize,
    pending: BytesMut,
    state: State,
    warnings: BTreeMap<String, u64>,
}

impl CopyBinaryDecoder {
    pub fn new(
        columns: &[DecodeColumn],
        batch_rows: usize,
        invalid_dates: InvalidDates,
    ) -> CopyBinaryDecoder {
        let batch_rows = batch_rows.max(1);
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| arrow_field(&c.name, &c.pg_type, c.nullable))
                .collect::<Vec<_>>(),
        ));
        CopyBinaryDecoder {
            schema,
            invalid_dates,
            names: columns.iter().map(|c| c.name.clone()).collect(),
            nullable: columns.iter().map(|c| c.nullable).collect(),
            builders: columns
                .iter()
                .map(|c| Builder::new(&c.pg_type, batch_rows))
                .collect(),
            batch_rows,
            rows: 0,
            pending: BytesMut::new(),
            state: State::Header,
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

    /// Feeds the next piece of the stream; complete batches are pushed to `out`.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        out: &mut VecDeque<RecordBatch>,
    ) -> Result<(), DecodeError> {
        // A unit the last piece cut short is completed from the front of this one, copying
        // only its own bytes: pieces are large (the tap's), and copying each whole behind a
        // cut row cost a copy of the table.
        while !self.pending.is_empty() && !data.is_empty() {
            let target = match self.unit_len(&self.pending)? {
                Ok(total) | Err(total) => total,
            };
            let take = target.saturating_sub(self.pending.len()).min(data.len());
            // A unit already whole would have been decoded; take a byte to be safe.
            let take = take.max(1);
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if matches!(self.unit_len(&self.pending)?, Ok(total) if total <= self.pending.len()) {
                let pending = std::mem::take(&mut self.pending);
                let consumed = self.decode(&pending, out)?;
                self.pending = pending;
                self.pending.advance(consumed);
            }
        }
        if self.pending.is_empty() {
            let consumed = self.decode(data, out)?;
            self.pending.extend_from_slice(&data[consumed..]);
        }
        Ok(())
    }

    /// The byte length of the next unit (header, row or trailer) at the start of `buf`:
    /// `Ok(length)` once its length is known, whether or not all of it is in `buf`, else
    /// `Err(at_least)`, the length `buf` must reach before more is known.
    fn unit_len(&self, buf: &[u8]) -> Result<Result<usize, usize>, DecodeError> {
        match self.state {
            State::Done => Ok(Ok(buf.len())),
            State::Header => {
                if buf.len() < 19 {
                    return Ok(Err(19));
                }
                Ok(Ok(19 + be_u32(&buf[15..19]) as usize))
            }
            State::Rows => {
                if buf.len() < 2 {
                    return Ok(Err(2));
                }
                let fields = i16::from_be_bytes([buf[0], buf[1]]);
                if fields == -1 {
                    return Ok(Ok(2));
                }
                if usize::try_from(fields).ok() != Some(self.builders.len()) {
                    return Err(DecodeError::Malformed(format!(
                        "row has {fields} fields, expected {}",
                        self.builders.len()
                    )));
                }
                let mut pos = 2;
                for _ in 0..self.builders.len() {
                    if buf.len() < pos + 4 {
                        return Ok(Err(pos + 4));
                    }
                    let len =
                        i32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]);
                    pos += 4 + usize::try_from(len).unwrap_or(0);
                }
                Ok(Ok(pos))
            }
        }
    }

    /// Ends the stream: returns the last partial batch, or an error if the trailer was never
    /// seen (the stream was cut).
    pub fn finish(&mut self) -> Result<Option<RecordBatch>, DecodeError> {
        if self.state != State::Done || !self.pending.is_empty() {
            return Err(DecodeError::Truncated);
        }
        if self.rows == 0 {
            return Ok(None);
        }
        self.flush_batch().map(Some)
    }

    fn flush_batch(&mut self) -> Result<RecordBatch, DecodeError> {
        let arrays = self
            .builders
            .iter_mut()
            .map(Builder::finish)
            .collect::<Result<Vec<_>, _>>()?;
        self.rows = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }

    /// Decodes as many whole units (header, rows, trailer) as `buf` holds; returns the bytes
    /// consumed.
    fn decode(
        &mut self,
        buf: &[u8],
        out: &mut VecDeque<RecordBatch>,
    ) -> Result<usize, DecodeError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Done => {
                    if pos < buf.len() {
                        return Err(DecodeError::Malformed("data after the trailer".into()));
                    }
                    return Ok(pos);
                }
                State::Header => {
                    let rest = &buf[pos..];
                    if rest.len() < 19 {
                        return Ok(pos);
                    }
                    if &rest[..11] != SIGNATURE {
                        return Err(DecodeError::Malformed("missing PGCOPY signature".into()));
                    }
                    let ext = be_u32(&rest[15..19]) as usize;
                    if rest.len() < 19 + ext {
                        return Ok(pos);
                    }
                    pos += 19 + ext;
                    self.state = State::Rows;
                }
                State::Rows => {
                    let row_len = match self.unit_len(&buf[pos..])? {
                        Ok(len) if pos + len <= buf.len() => len,
                        _ => return Ok(pos),
                    };
                    if row_len == 2 {
                        // The trailer: a field count of -1.
                        pos += 2;
                        self.state = State::Done;
                        continue;
                    }
                    self.decode_row(&buf[pos + 2..pos + row_len])?;
                    pos += row_len;
                    self.rows += 1;
                    if self.rows >= self.batch_rows {
                        out.push_back(self.flush_batch()?);
                    }
                }
            }
        }
    }

    fn decode_row(&mut self, mut row: &[u8]) -> Result<(), DecodeError> {
        for (i, builder) in self.builders.iter_mut().enumerate() {
            let len = i32::from_be_bytes([row[0], row[1], row[2], row[3]]);
            row = &row[4..];
            let column_error = |message: String| DecodeError::Value {
                column: self.names[i].clone(),
                message,
            };
            if len < 0 {
                if !self.nullable[i] {
                    return Err(column_error(NULL_IN_NOT_NULL.into()));
                }
                builder.append_null();
                continue;
            }
            let (value, rest) = row.split_at(len as usize);
            row = rest;
            let mut nulled = None;
            builder
                .append(value, self.invalid_dates, &mut nulled)
                .map_err(column_error)?;
            if let Some(reason) = nulled {
                if !self.nullable[i] {
                    return Err(column_error(format!(
                        "{reason}, but the column is NOT NULL so it cannot hold one; set column_types: string to read the server's text"
                    )));
                }
                *self
                    .warnings
                    .entry(format!("{}: {reason}", self.names[i]))
                    .or_insert(0) += 1;
            }
        }
        Ok(())
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Decimal128Array, Int32Array, Int64Array, StringArray};

    fn numeric(ndigits: i16, weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(ndigits.to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend(sign.to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for d in digits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_decode_exactly() {
        // 12345.67 = [1, 2345, 6700] weight 1
        assert_eq!(
            numeric_to_i128(&numeric(3, 1, 0, 2, &[1, 2345, 6700]), 12, 2),
            Ok(1_234_567)
        );
        // -0.05 = [500] weight -1
        assert_eq!(
            numeric_to_i128(&numeric(1, -1, 0x4000, 2, &[500]), 12, 2),
            Ok(-5)
        );
        // 0
        assert_eq!(numeric_to_i128(&numeric(0, 0, 0, 2, &[]), 12, 2), Ok(0));
        // 10^20 at scale 0: [1] weight 5
        assert_eq!(
            numeric_to_i128(&numeric(1, 5, 0, 0, &[1]), 38, 0),
            Ok(10i128.pow(20))
        );
        // 38 nines at scale 10
        let digits = [9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9900];
        assert_eq!(
            numeric_to_i128(&numeric(10, 6, 0, 10, &digits), 38, 10),
            Ok(10i128.pow(38) - 1)
        );
        assert!(
            numeric_to_i128(&numeric(1, 3, 0, 0, &[1]), 12, 2)
                .unwrap_err()
                .contains("does not fit")
        );
        assert!(
            numeric_to_i128(&numeric(0, 0, 0xC000, 0, &[]), 12, 2)
                .unwrap_err()
                .contains("NaN")
        );
        assert!(
            numeric_to_i128(&numeric(1, -1, 0, 4, &[1234]), 12, 2)
                .unwrap_err()
                .contains("decimal places")
        );
    }

    #[test]
    fn a_numeric_digit_outside_base_10000_is_refused_not_summed() {
        // A hostile stream: digits 1 and -100 (scale 2) used to come out as 0.99.
        for digits in [[1, -100], [1, 10_000], [1, i16::MAX]] {
            let err = numeric_to_i128(&numeric(2, 0, 0, 2, &digits), 12, 2).unwrap_err();
            assert!(
                err.contains("is not a base-10000 digit"),
                "{digits:?}: {err}"
            );
        }
    }

    fn column(name: &str, pg_type: PgType) -> DecodeColumn {
        DecodeColumn {
            name: name.into(),
            pg_type,
            nullable: true,
        }
    }

    fn stream(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut v = SIGNATURE.to_vec();
        v.extend(0u32.to_be_bytes());
        v.extend(0u32.to_be_bytes());
        for row in rows {
            v.extend((row.len() as i16).to_be_bytes());
            for field in row {
                match field {
                    None => v.extend((-1i32).to_be_bytes()),
                    Some(bytes) => {
                        v.extend((bytes.len() as i32).to_be_bytes());
                        v.extend(bytes);
                    }
                }
            }
        }
        v.extend((-1i16).to_be_bytes());
        v
    }

    /// Found by the `pg_copy_binary` fuzz target: a NULL (or an infinite date written as
    /// NULL) in a NOT NULL column failed the batch with Arrow's error instead of the column's.
    #[test]
    fn null_in_a_not_null_column_is_the_columns_error() {
        let mut id = column("id", PgType::Int4);
        id.nullable = false;
        let mut day = column("day", PgType::Date);
        day.nullable = false;
        for (row, name) in [
            (vec![None, Some(1i32.to_be_bytes().to_vec())], "id"),
            (
                vec![
                    Some(1i32.to_be_bytes().to_vec()),
                    Some(i32::MAX.to_be_bytes().to_vec()),
                ],
                "day",
            ),
        ] {
            let mut decoder =
                CopyBinaryDecoder::new(&[id.clone(), day.clone()], 8, InvalidDates::Null);
            let e = decoder
                .feed(&stream(&[row]), &mut VecDeque::new())
                .unwrap_err();
            assert!(
                matches!(&e, DecodeError::Value { column, .. } if column == name),
                "{e}"
            );
            assert!(e.to_string().contains("NOT NULL"), "{e}");
        }
    }

    #[test]
    fn rows_split_at_every_byte_boundary_decode_the_same() {
        let cols = [
            column("id", PgType::Int4),
            column("name", PgType::Text),
            column(
                "amount",
                PgType::Numeric {
                    precision: 12,
                    scale: 2,
                },
            ),
        ];
        let rows: Vec<Vec<Option<Vec<u8>>>> = (0..5)
            .map(|i: i32| {
                vec![
                    Some(i.to_be_bytes().to_vec()),
                    if i == 2 {
                        None
                    } else {
                        Some(format!("näme {i}").into_bytes())
                    },
                    Some(numeric(1, 0, 0, 2, &[i as i16])),
                ]
            })
            .collect();
        let bytes = stream(&rows);
        for split in 1..bytes.len() {
            let mut decoder = CopyBinaryDecoder::new(&cols, 2, InvalidDates::Null);
            let mut out = VecDeque::new();
            decoder.feed(&bytes[..split], &mut out).unwrap();
            decoder.feed(&bytes[split..], &mut out).unwrap();
            out.extend(decoder.finish().unwrap());
            assert_eq!(
                out.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
                vec![2, 2, 1]
            );
            let ids: Vec<i32> = out
                .iter()
                .flat_map(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<Int32Array>()
                        .unwrap()
                        .values()
                        .to_vec()
                })
                .collect();
            assert_eq!(ids, vec![0, 1, 2, 3, 4]);
            let names = out[1]
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            assert!(names.is_null(0));
            assert_eq!(names.value(1), "näme 3");
            let amounts = out[2]
                .column(2)
                .as_any()
                .downcast_ref::<Decimal128Array>()
                .unwrap();
            assert_eq!(amounts.value(0), 400);
        }
    }

    #[test]
    fn a_stream_fed_a_byte_at_a_time_or_in_uneven_pieces_decodes_the_same() {
        let cols = [column("id", PgType::Int8), column("name", PgType::Text)];
        let rows: Vec<Vec<Option<Vec<u8>>>> = (0..40i64)
            .map(|i| {
                vec![
                    Some(i.to_be_bytes().to_vec()),
                    (i % 5 != 0).then(|| "x".repeat(i as usize).into_bytes()),
                ]
            })
            .collect();
        let bytes = stream(&rows);
        for piece in [1, 2, 3, 5, 7, 11, 64, 333] {
            let mut decoder = CopyBinaryDecoder::new(&cols, 16, InvalidDates::Null);
            let mut out = VecDeque::new();
            for part in bytes.chunks(piece) {
                decoder.feed(part, &mut out).unwrap();
            }
            out.extend(decoder.finish().unwrap());
            let ids: Vec<i64> = out
                .iter()
                .flat_map(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap()
                        .values()
                        .to_vec()
                })
                .collect();
            assert_eq!(ids, (0..40).collect::<Vec<_>>(), "pieces of {piece}");
            let names: Vec<Option<String>> = out
                .iter()
                .flat_map(|b| {
                    let names = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
                    (0..names.len())
                        .map(|i| (!names.is_null(i)).then(|| names.value(i).to_owned()))
                        .collect::<Vec<_>>()
                })
                .collect();
            let expected: Vec<Option<String>> = (0..40)
                .map(|i| (i % 5 != 0).then(|| "x".repeat(i)))
                .collect();
            assert_eq!(names, expected, "pieces of {piece}");
        }
    }

    #[test]
    fn a_cut_stream_is_an_error_not_a_short_result() {
        let cols = [column("id", PgType::Int4)];
        let bytes = stream(&[vec![Some(7i32.to_be_bytes().to_vec())]]);
        let mut decoder = CopyBinaryDecoder::new(&cols, 10, InvalidDates::Null);
        let mut out = VecDeque::new();
        decoder.feed(&bytes[..bytes.len() - 2], &mut out).unwrap();
        assert!(matches!(decoder.finish(), Err(DecodeError::Truncated)));
    }

    #[test]
    fn infinite_timestamps_become_counted_nulls() {
        let cols = [column("ts", PgType::Timestamp)];
        let bytes = stream(&[
            vec![Some(i64::MAX.to_be_bytes().to_vec())],
            vec![Some(0i64.to_be_bytes().to_vec())],
        ]);
        let mut decoder = CopyBinaryDecoder::new(&cols, 10, InvalidDates::Null);
        let mut out = VecDeque::new();
        decoder.feed(&bytes, &mut out).unwrap();
        let batch = decoder.finish().unwrap().unwrap();
        assert!(batch.column(0).is_null(0));
        assert!(!batch.column(0).is_null(1));
        assert_eq!(
            decoder
                .take_warnings()
                .get("ts: infinite timestamp written as NULL"),
            Some(&1)
        );
    }

    #[test]
    fn uuids_are_canonical_lowercase() {
        let b: [u8; 16] = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];
        assert_eq!(&format_uuid(&b), b"12345678-9abc-def0-0123-456789abcdef");
    }
}
