//! MySQL/MariaDB → Arrow type mapping: one enum of the value types sluice decodes from the
//! binary protocol, one function from an `information_schema.COLUMNS` row to how the column
//! is read, one `match` to Arrow. The README's MySQL type table mirrors this file.
//!
//! Types without an exact binary decoder (MariaDB's `uuid`, `inet4`, `inet6` and anything
//! unknown) are read in the server's text form through `CAST(… AS CHAR)`, so no type fails a
//! run.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, TimeUnit};
use sluice_core::plan::ReadCast;
use sluice_core::{ColumnTypeOverride, ScalarKind};

/// Arrow's largest decimal precision in 128 bits.
pub const MAX_DECIMAL_PRECISION: u8 = 38;
/// `bigint unsigned` reaches 18446744073709551615: 20 digits.
pub const UNSIGNED_BIGINT_PRECISION: u8 = 20;

/// The value types sluice decodes from MySQL's binary protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MyType {
    /// `tinyint(1)` / `bool` / `bit(1)` with `column_types: {c: boolean}`: 0 or 1 only.
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    /// `bigint unsigned`: Decimal128(20,0), since Snowflake rejects large Parquet UINT64.
    UnsignedBigint,
    Float32,
    Float64,
    /// `decimal(p,s)` read exactly from the server's decimal text.
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// `bit(n)`, n ≤ 64: big-endian bytes → UInt64.
    Bit,
    /// `year` → Int16 (0 for the zero year).
    Year,
    /// UTF-8 text as sent in the connection's character set (always utf8mb4).
    Text,
    Binary,
    /// Geometry values: MySQL's internal form (4-byte little-endian SRID + WKB); the SRID
    /// is dropped so the column holds standard WKB.
    Geometry,
    Date,
    /// `datetime(fsp)`: no zone, isAdjustedToUTC = false.
    DateTime,
    /// `timestamp(fsp)`: an instant, read in session time zone +00:00.
    Timestamp,
    /// `time(fsp)`: MySQL's text `[-]H…H:MM:SS[.f…]` (range ±838:59:59), with `fsp` digits.
    Time {
        fsp: u8,
    },
}

/// How one column is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRead {
    pub my_type: MyType,
    pub cast: Option<ReadCast>,
}

impl ColumnRead {
    fn binary(my_type: MyType) -> ColumnRead {
        ColumnRead {
            my_type,
            cast: None,
        }
    }

    fn text() -> ColumnRead {
        ColumnRead {
            my_type: MyType::Text,
            cast: Some(ReadCast::Text),
        }
    }
}

/// A column as found in `information_schema.COLUMNS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyColumn {
    pub name: String,
    /// `DATA_TYPE`, lowercase: `int`, `varchar`, `datetime`, …
    pub data_type: String,
    /// `COLUMN_TYPE`, for messages and the `unsigned` / `tinyint(1)` details.
    pub column_type: String,
    pub not_null: bool,
    pub precision: Option<u64>,
    pub scale: Option<u64>,
    pub datetime_precision: Option<u64>,
}

impl MyColumn {
    fn unsigned(&self) -> bool {
        self.column_type.to_ascii_lowercase().contains("unsigned")
    }

    fn is_tinyint1(&self) -> bool {
        self.column_type
            .to_ascii_lowercase()
            .starts_with("tinyint(1)")
    }
}

/// `decimal(p,s)` → Decimal128. Precision above 38 is read as 38 digits (values that do not
/// fit fail the run, naming the column), as for PostgreSQL; MySQL's scale is at most 30.
pub fn decimal_type(precision: u64, scale: u64) -> Result<MyType, String> {
    let scale = i8::try_from(scale).map_err(|_| format!("decimal scale {scale} is too large"))?;
    if scale > MAX_DECIMAL_PRECISION as i8 {
        return Err(format!(
            "decimal with {scale} decimal places does not fit Decimal128; set column_types to string"
        ));
    }
    let precision = u8::try_from(precision.min(u64::from(MAX_DECIMAL_PRECISION)))
        .unwrap_or(MAX_DECIMAL_PRECISION)
        .max(scale.max(1) as u8);
    Ok(MyType::Decimal { precision, scale })
}

/// Decides how a column is read, honouring a `column_types` override.
pub fn column_read(
    column: &MyColumn,
    override_type: Option<ColumnTypeOverride>,
) -> Result<ColumnRead, String> {
    let data_type = column.data_type.to_ascii_lowercase();
    match override_type {
        Some(ColumnTypeOverride::String) => return Ok(ColumnRead::text()),
        Some(ColumnTypeOverride::Decimal { precision, scale }) => {
            return match data_type.as_str() {
                "decimal" | "numeric" | "fixed" => {
                    Ok(ColumnRead::binary(MyType::Decimal { precision, scale }))
                }
                other => Err(format!(
                    "column_types: decimal(p,s) applies to decimal columns, not {other}; use string"
                )),
            };
        }
        Some(ColumnTypeOverride::Boolean) => {
            let bit1 = data_type == "bit" && column.precision == Some(1);
            return if column.is_tinyint1() || bit1 {
                Ok(ColumnRead::binary(MyType::Bool))
            } else {
                Err(format!(
                    "column_types: boolean applies to tinyint(1) and bit(1) columns, not {}",
                    column.column_type
                ))
            };
        }
        None => {}
    }
    let unsigned = column.unsigned();
    let my_type = match data_type.as_str() {
        // tinyint(1) stays an integer by default: MySQL cannot tell a flag from a small
        // number, and `boolean` is the opt-in.
        "tinyint" if unsigned => MyType::Int16,
        "tinyint" => MyType::Int8,
        "smallint" if unsigned => MyType::Int32,
        "smallint" => MyType::Int16,
        "mediumint" => MyType::Int32,
        "int" | "integer" if unsigned => MyType::Int64,
        "int" | "integer" => MyType::Int32,
        "bigint" if unsigned => MyType::UnsignedBigint,
        "bigint" => MyType::Int64,
        "decimal" | "numeric" | "fixed" => {
            decimal_type(column.precision.unwrap_or(10), column.scale.unwrap_or(0))?
        }
        "float" => MyType::Float32,
        "double" | "real" | "double precision" => MyType::Float64,
        "bit" => match column.precision {
            Some(n) if n <= 64 => MyType::Bit,
            other => return Err(format!("bit({other:?}) is wider than 64 bits")),
        },
        "year" => MyType::Year,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set"
        | "json" => MyType::Text,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => MyType::Binary,
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => MyType::Geometry,
        "date" => MyType::Date,
        "datetime" => MyType::DateTime,
        "timestamp" => MyType::Timestamp,
        "time" => MyType::Time {
            fsp: u8::try_from(column.datetime_precision.unwrap_or(0).min(6)).unwrap_or(6),
        },
        // MariaDB's uuid, inet4, inet6 and any type sluice does not know: the server's text.
        _ => return Ok(ColumnRead::text()),
    };
    Ok(ColumnRead::binary(my_type))
}

impl MyType {
    pub fn arrow_type(&self) -> DataType {
        match self {
            MyType::Bool => DataType::Boolean,
            MyType::Int8 => DataType::Int8,
            MyType::Int16 | MyType::Year => DataType::Int16,
            MyType::Int32 => DataType::Int32,
            MyType::Int64 => DataType::Int64,
            MyType::UnsignedBigint => DataType::Decimal128(UNSIGNED_BIGINT_PRECISION, 0),
            MyType::Float32 => DataType::Float32,
            MyType::Float64 => DataType::Float64,
            MyType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            MyType::Bit => DataType::UInt64,
            MyType::Text | MyType::Time { .. } => DataType::Utf8,
            MyType::Binary | MyType::Geometry => DataType::Binary,
            MyType::Date => DataType::Date32,
            MyType::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
            MyType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
        }
    }

    /// The kind this type has as a cursor or partition column, if it can be one.
    pub fn scalar_kind(&self) -> Option<ScalarKind> {
        match self {
            MyType::Int8 | MyType::Int16 | MyType::Int32 | MyType::Int64 => Some(ScalarKind::Int),
            MyType::Decimal {
                scale: 0,
                precision,
            } if *precision <= 18 => Some(ScalarKind::Int),
            MyType::Date => Some(ScalarKind::Date),
            MyType::DateTime => Some(ScalarKind::Timestamp),
            MyType::Timestamp => Some(ScalarKind::TimestampTz),
            _ => None,
        }
    }
}

pub fn arrow_field(name: &str, my_type: &MyType, nullable: bool) -> Field {
    Field::new(name, my_type.arrow_type(), nullable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(data_type: &str, column_type: &str) -> MyColumn {
        MyColumn {
            name: "c".into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            not_null: false,
            precision: None,
            scale: None,
            datetime_precision: None,
        }
    }

    fn arrow_of(column: MyColumn) -> DataType {
        let r = column_read(&column, None).unwrap();
        assert_eq!(r.cast, None, "{column:?}");
        r.my_type.arrow_type()
    }

    #[test]
    fn integers_widen_when_unsigned() {
        use DataType as D;
        let cases = [
            ("tinyint", "tinyint(4)", D::Int8),
            ("tinyint", "tinyint(1)", D::Int8),
            ("tinyint", "tinyint(3) unsigned", D::Int16),
            ("smallint", "smallint(6)", D::Int16),
            ("smallint", "smallint(5) unsigned", D::Int32),
            ("mediumint", "mediumint(9)", D::Int32),
            ("mediumint", "mediumint(8) unsigned", D::Int32),
            ("int", "int(11)", D::Int32),
            ("int", "int(10) unsigned", D::Int64),
            ("bigint", "bigint(20)", D::Int64),
            ("bigint", "bigint(20) unsigned", D::Decimal128(20, 0)),
            ("year", "year(4)", D::Int16),
        ];
        for (data_type, column_type, expected) in cases {
            assert_eq!(
                arrow_of(col(data_type, column_type)),
                expected,
                "{column_type}"
            );
        }
        let mut bit = col("bit", "bit(5)");
        bit.precision = Some(5);
        assert_eq!(arrow_of(bit), D::UInt64);
    }

    #[test]
    fn decimals_are_exact_and_clamped_like_postgres() {
        let mut d = col("decimal", "decimal(12,2)");
        d.precision = Some(12);
        d.scale = Some(2);
        assert_eq!(arrow_of(d.clone()), DataType::Decimal128(12, 2));
        d.precision = Some(65);
        d.scale = Some(30);
        assert_eq!(arrow_of(d), DataType::Decimal128(38, 30));
        assert_eq!(
            MyType::Decimal {
                precision: 18,
                scale: 0
            }
            .scalar_kind(),
            Some(ScalarKind::Int)
        );
        assert_eq!(MyType::UnsignedBigint.scalar_kind(), None);
    }

    #[test]
    fn temporal_text_and_binary_types_map() {
        let us = TimeUnit::Microsecond;
        assert_eq!(arrow_of(col("date", "date")), DataType::Date32);
        assert_eq!(
            arrow_of(col("datetime", "datetime(6)")),
            DataType::Timestamp(us, None)
        );
        assert_eq!(
            arrow_of(col("timestamp", "timestamp(6)")),
            DataType::Timestamp(us, Some("UTC".into()))
        );
        assert_eq!(arrow_of(col("time", "time(3)")), DataType::Utf8);
        for t in ["varchar", "text", "enum", "set", "json", "longtext", "char"] {
            assert_eq!(arrow_of(col(t, t)), DataType::Utf8, "{t}");
        }
        for t in ["varbinary", "blob", "binary", "geometry", "point"] {
            assert_eq!(arrow_of(col(t, t)), DataType::Binary, "{t}");
        }
        for t in ["uuid", "inet6", "inet4", "something_new"] {
            assert_eq!(column_read(&col(t, t), None).unwrap(), ColumnRead::text());
        }
    }

    #[test]
    fn overrides_win_and_are_checked() {
        let flag = col("tinyint", "tinyint(1)");
        assert!(flag.is_tinyint1());
        assert_eq!(
            column_read(&flag, Some(ColumnTypeOverride::Boolean))
                .unwrap()
                .my_type,
            MyType::Bool
        );
        assert!(column_read(&col("int", "int(11)"), Some(ColumnTypeOverride::Boolean)).is_err());
        assert_eq!(
            column_read(&col("int", "int(11)"), Some(ColumnTypeOverride::String)).unwrap(),
            ColumnRead::text()
        );
        let mut d = col("decimal", "decimal(65,2)");
        d.precision = Some(65);
        d.scale = Some(2);
        let r = column_read(
            &d,
            Some(ColumnTypeOverride::Decimal {
                precision: 20,
                scale: 4,
            }),
        )
        .unwrap();
        assert_eq!(r.my_type.arrow_type(), DataType::Decimal128(20, 4));
        assert!(
            column_read(
                &col("varchar", "varchar(3)"),
                Some(ColumnTypeOverride::Decimal {
                    precision: 20,
                    scale: 4
                })
            )
            .is_err()
        );
    }
}
