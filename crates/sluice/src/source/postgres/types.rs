//! PostgreSQL → Arrow type mapping: one enum of the types sluice reads, one `match` from
//! catalog type to that enum, one `match` from that enum to Arrow.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, TimeUnit};
use sluice_core::ScalarKind;

/// Arrow's largest decimal precision in 128 bits.
pub const MAX_DECIMAL_PRECISION: u8 = 38;

/// The PostgreSQL types sluice decodes from binary COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// `numeric(p, s)` with a declared precision of at most 38.
    Numeric {
        precision: u8,
        scale: i8,
    },
    /// `text`, `varchar`, `bpchar`, `name`: UTF-8 as sent.
    Text,
    Json,
    /// `jsonb`'s binary form is a version byte followed by the JSON text.
    Jsonb,
    Uuid,
    Date,
    Timestamp,
    TimestampTz,
}

/// A column as found in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgColumn {
    pub name: String,
    /// `format_type(atttypid, atttypmod)`, for messages.
    pub type_text: String,
    pub type_name: String,
    pub typmod: i32,
    pub not_null: bool,
}

impl PgColumn {
    /// The decoder type of this column, or a reason it is not supported yet.
    pub fn pg_type(&self) -> Result<PgType, String> {
        Ok(match self.type_name.as_str() {
            "bool" => PgType::Bool,
            "int2" => PgType::Int2,
            "int4" => PgType::Int4,
            "int8" => PgType::Int8,
            "float4" => PgType::Float4,
            "float8" => PgType::Float8,
            "numeric" => {
                if self.typmod < 4 {
                    return Err("numeric without a declared precision is not supported yet; declare numeric(p,s) or list the column with a cast in a view".into());
                }
                let packed = self.typmod - 4;
                let precision = (packed >> 16) & 0xffff;
                // The scale is an 11-bit signed field since PostgreSQL 15.
                let raw_scale = packed & 0x7ff;
                let scale = if raw_scale & 0x400 != 0 {
                    raw_scale - 0x800
                } else {
                    raw_scale
                };
                if precision > i32::from(MAX_DECIMAL_PRECISION) {
                    return Err(format!(
                        "numeric({precision},{scale}) exceeds the 38 digits of an exact decimal"
                    ));
                }
                if !(0..=precision).contains(&scale) {
                    return Err(format!(
                        "numeric({precision},{scale}) has a scale outside 0..=precision"
                    ));
                }
                PgType::Numeric {
                    precision: u8::try_from(precision).map_err(|e| e.to_string())?,
                    scale: i8::try_from(scale).map_err(|e| e.to_string())?,
                }
            }
            "text" | "varchar" | "bpchar" | "name" => PgType::Text,
            "json" => PgType::Json,
            "jsonb" => PgType::Jsonb,
            "uuid" => PgType::Uuid,
            "date" => PgType::Date,
            "timestamp" => PgType::Timestamp,
            "timestamptz" => PgType::TimestampTz,
            other => return Err(format!("type {other} is not supported yet")),
        })
    }
}

impl PgType {
    pub fn arrow_type(self) -> DataType {
        match self {
            PgType::Bool => DataType::Boolean,
            PgType::Int2 => DataType::Int16,
            PgType::Int4 => DataType::Int32,
            PgType::Int8 => DataType::Int64,
            PgType::Float4 => DataType::Float32,
            PgType::Float8 => DataType::Float64,
            PgType::Numeric { precision, scale } => DataType::Decimal128(precision, scale),
            PgType::Text | PgType::Json | PgType::Jsonb | PgType::Uuid => DataType::Utf8,
            PgType::Date => DataType::Date32,
            PgType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgType::TimestampTz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
            }
        }
    }

    /// The kind this type has as a cursor or partition column, if it can be one.
    pub fn scalar_kind(self) -> Option<ScalarKind> {
        match self {
            PgType::Int2 | PgType::Int4 | PgType::Int8 => Some(ScalarKind::Int),
            PgType::Date => Some(ScalarKind::Date),
            PgType::Timestamp => Some(ScalarKind::Timestamp),
            PgType::TimestampTz => Some(ScalarKind::TimestampTz),
            _ => None,
        }
    }
}

pub fn arrow_field(column: &PgColumn, pg_type: PgType) -> Field {
    Field::new(&column.name, pg_type.arrow_type(), !column.not_null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(type_name: &str, typmod: i32) -> PgColumn {
        PgColumn {
            name: "c".into(),
            type_text: type_name.into(),
            type_name: type_name.into(),
            typmod,
            not_null: false,
        }
    }

    #[test]
    fn numeric_typmod_unpacks_precision_and_scale() {
        // numeric(12,2): ((12 << 16) | 2) + 4
        assert_eq!(
            col("numeric", ((12 << 16) | 2) + 4).pg_type(),
            Ok(PgType::Numeric {
                precision: 12,
                scale: 2
            })
        );
        assert!(col("numeric", -1).pg_type().is_err());
        assert!(
            col("numeric", (39 << 16) + 4)
                .pg_type()
                .unwrap_err()
                .contains("38 digits")
        );
    }

    #[test]
    fn each_supported_type_maps_to_its_arrow_type() {
        let cases = [
            ("bool", DataType::Boolean),
            ("int2", DataType::Int16),
            ("int4", DataType::Int32),
            ("int8", DataType::Int64),
            ("float4", DataType::Float32),
            ("float8", DataType::Float64),
            ("text", DataType::Utf8),
            ("varchar", DataType::Utf8),
            ("bpchar", DataType::Utf8),
            ("name", DataType::Utf8),
            ("json", DataType::Utf8),
            ("jsonb", DataType::Utf8),
            ("uuid", DataType::Utf8),
            ("date", DataType::Date32),
            (
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, None),
            ),
            (
                "timestamptz",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ),
        ];
        for (name, expected) in cases {
            assert_eq!(
                col(name, -1).pg_type().unwrap().arrow_type(),
                expected,
                "{name}"
            );
        }
        assert!(col("xml", -1).pg_type().unwrap_err().contains("xml"));
    }
}
