//! PostgreSQL → Arrow type mapping: one enum of the value types sluice decodes from binary
//! COPY, one function from a catalog column to how it is read, one `match` to Arrow.
//!
//! Types with an exact binary decoder are read in binary; every other type (intervals,
//! `timetz`, network, geometric, range, bit string, text-search, composite and unknown
//! extension types, multi-dimensional arrays) is read in PostgreSQL's own text form through a
//! cast, so no custom type ever fails a run. The README's type table mirrors this file.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, TimeUnit};
use sluice_core::plan::ReadCast;
use sluice_core::{ColumnTypeOverride, ScalarKind};

/// Arrow's largest decimal precision in 128 bits.
pub const MAX_DECIMAL_PRECISION: u8 = 38;
/// The scale given to `numeric` declared without precision: 29 integer digits and 9
/// fractional ones. Values needing more fail the run; `column_types` overrides it.
pub const UNCONSTRAINED_NUMERIC_SCALE: i8 = 9;
/// `money`'s fractional digits (PostgreSQL's binary form is an integer count of them). This
/// assumes an lc_monetary with two, as nearly every locale has.
pub const MONEY_SCALE: i8 = 2;

/// The value types sluice decodes from binary COPY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    Bool,
    Int2,
    Int4,
    Int8,
    /// `oid`: unsigned 32-bit, widened to Int64.
    Oid,
    Float4,
    Float8,
    /// `numeric` read as an exact decimal of this precision and scale.
    Numeric {
        precision: u8,
        scale: i8,
    },
    /// `money`: a 64-bit count of cents.
    Money,
    /// UTF-8 text as sent: `text`, `varchar`, `bpchar`, `name`, `json`, `citext`, enum labels,
    /// and everything read through a text cast.
    Text,
    /// `jsonb`'s binary form: a version byte, then the JSON text.
    Jsonb,
    Uuid,
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    /// A one-dimensional array of a binary-decodable element type.
    List(Box<PgType>),
}

/// How one column is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRead {
    pub pg_type: PgType,
    pub cast: Option<ReadCast>,
}

impl ColumnRead {
    fn binary(pg_type: PgType) -> ColumnRead {
        ColumnRead {
            pg_type,
            cast: None,
        }
    }

    fn text() -> ColumnRead {
        ColumnRead {
            pg_type: PgType::Text,
            cast: Some(ReadCast::Text),
        }
    }
}

/// A column as found in `pg_attribute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgColumn {
    pub name: String,
    /// `format_type(atttypid, atttypmod)`, for messages.
    pub type_text: String,
    pub type_oid: u32,
    pub typmod: i32,
    pub not_null: bool,
    /// Declared array dimensions (`int[][]` → 2); PostgreSQL does not enforce them.
    pub dims: i32,
}

/// The rows of `pg_type` a set of columns needs: their types, domain base types and array
/// element types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTypeInfo {
    pub oid: u32,
    pub name: String,
    /// `b` base, `c` composite, `d` domain, `e` enum, `p` pseudo, `r` range, `m` multirange.
    pub kind: char,
    /// `A` for arrays.
    pub category: char,
    pub base_type: u32,
    pub base_typmod: i32,
    pub element: u32,
}

pub type TypeCatalog = HashMap<u32, PgTypeInfo>;

/// Follows domains down to their base type, keeping the innermost explicit typmod.
fn resolve_domain(types: &TypeCatalog, oid: u32, typmod: i32) -> Option<(&PgTypeInfo, i32)> {
    let mut info = types.get(&oid)?;
    let mut typmod = typmod;
    for _ in 0..32 {
        if info.kind != 'd' {
            return Some((info, typmod));
        }
        if typmod < 0 {
            typmod = info.base_typmod;
        }
        info = types.get(&info.base_type)?;
    }
    None
}

/// The binary decoder of a scalar (non-array) base type, if it has one.
fn binary_scalar(info: &PgTypeInfo, typmod: i32) -> Result<Option<PgType>, String> {
    if info.kind == 'e' {
        return Ok(Some(PgType::Text));
    }
    if info.kind != 'b' {
        return Ok(None);
    }
    Ok(Some(match info.name.as_str() {
        "bool" => PgType::Bool,
        "int2" => PgType::Int2,
        "int4" => PgType::Int4,
        "int8" => PgType::Int8,
        "oid" => PgType::Oid,
        "float4" => PgType::Float4,
        "float8" => PgType::Float8,
        "numeric" => numeric_type(typmod)?,
        "money" => PgType::Money,
        "text" | "varchar" | "bpchar" | "name" | "json" | "citext" => PgType::Text,
        "jsonb" => PgType::Jsonb,
        "uuid" => PgType::Uuid,
        "bytea" => PgType::Bytea,
        "date" => PgType::Date,
        "time" => PgType::Time,
        "timestamp" => PgType::Timestamp,
        "timestamptz" => PgType::TimestampTz,
        _ => return Ok(None),
    }))
}

/// `numeric(p,s)` → Decimal128. Precision above 38 is read as 38 digits (values that do not
/// fit fail the run); a negative scale becomes scale 0; no precision gets the default scale.
pub fn numeric_type(typmod: i32) -> Result<PgType, String> {
    if typmod < 4 {
        return Ok(PgType::Numeric {
            precision: MAX_DECIMAL_PRECISION,
            scale: UNCONSTRAINED_NUMERIC_SCALE,
        });
    }
    let packed = typmod - 4;
    let precision = (packed >> 16) & 0xffff;
    // An 11-bit signed field since PostgreSQL 15.
    let raw_scale = packed & 0x7ff;
    let scale = if raw_scale & 0x400 != 0 {
        raw_scale - 0x800
    } else {
        raw_scale
    };
    let (precision, scale) = if scale < 0 {
        (precision - scale, 0)
    } else {
        (precision, scale)
    };
    if scale > i32::from(MAX_DECIMAL_PRECISION) {
        return Err(format!(
            "numeric({precision},{scale}) has more than 38 decimal places; set column_types to string or decimal(p,s)"
        ));
    }
    let precision = precision.clamp(scale.max(1), i32::from(MAX_DECIMAL_PRECISION));
    Ok(PgType::Numeric {
        precision: u8::try_from(precision).map_err(|e| e.to_string())?,
        scale: i8::try_from(scale).map_err(|e| e.to_string())?,
    })
}

/// Decides how a column is read, honouring a `column_types` override.
pub fn column_read(
    column: &PgColumn,
    types: &TypeCatalog,
    override_type: Option<ColumnTypeOverride>,
) -> Result<ColumnRead, String> {
    let (info, typmod) = resolve_domain(types, column.type_oid, column.typmod)
        .ok_or_else(|| format!("type oid {} was not found in pg_type", column.type_oid))?;
    match override_type {
        Some(ColumnTypeOverride::String) => return Ok(ColumnRead::text()),
        Some(ColumnTypeOverride::Decimal { precision, scale }) => {
            return match info.name.as_str() {
                "numeric" => Ok(ColumnRead::binary(PgType::Numeric { precision, scale })),
                other => Err(format!(
                    "column_types: decimal(p,s) applies to numeric columns, not {other}; use string"
                )),
            };
        }
        Some(ColumnTypeOverride::Boolean) => {
            return Err(
                "column_types: boolean applies to MySQL tinyint(1) columns; PostgreSQL has bool"
                    .into(),
            );
        }
        None => {}
    }
    let is_array = info.category == 'A' && info.element != 0 && info.kind == 'b';
    if !is_array {
        return Ok(binary_scalar(info, typmod)?
            .map(ColumnRead::binary)
            .unwrap_or_else(ColumnRead::text));
    }
    if column.dims > 1 {
        return Ok(ColumnRead::text());
    }
    let (element, element_typmod) = resolve_domain(types, info.element, typmod)
        .ok_or_else(|| format!("element type oid {} was not found in pg_type", info.element))?;
    Ok(match binary_scalar(element, element_typmod)? {
        Some(pg_type) => ColumnRead::binary(PgType::List(Box::new(pg_type))),
        None => ColumnRead {
            pg_type: PgType::List(Box::new(PgType::Text)),
            cast: Some(ReadCast::TextArray),
        },
    })
}

/// The oids `column_read` needs to look at beyond the columns' own types.
pub fn referenced_types(info: &PgTypeInfo) -> [u32; 2] {
    [info.base_type, info.element]
}

impl PgType {
    pub fn arrow_type(&self) -> DataType {
        match self {
            PgType::Bool => DataType::Boolean,
            PgType::Int2 => DataType::Int16,
            PgType::Int4 => DataType::Int32,
            PgType::Int8 | PgType::Oid => DataType::Int64,
            PgType::Float4 => DataType::Float32,
            PgType::Float8 => DataType::Float64,
            PgType::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            PgType::Money => DataType::Decimal128(19, MONEY_SCALE),
            PgType::Text | PgType::Jsonb | PgType::Uuid => DataType::Utf8,
            PgType::Bytea => DataType::Binary,
            PgType::Date => DataType::Date32,
            PgType::Time => DataType::Time64(TimeUnit::Microsecond),
            PgType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgType::TimestampTz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
            }
            PgType::List(element) => DataType::List(Arc::new(list_item(element))),
        }
    }

    /// The kind this type has as a cursor or partition column, if it can be one.
    pub fn scalar_kind(&self) -> Option<ScalarKind> {
        match self {
            PgType::Int2 | PgType::Int4 | PgType::Int8 | PgType::Oid => Some(ScalarKind::Int),
            PgType::Numeric {
                scale: 0,
                precision,
            } if *precision <= 18 => Some(ScalarKind::Int),
            PgType::Date => Some(ScalarKind::Date),
            PgType::Timestamp => Some(ScalarKind::Timestamp),
            PgType::TimestampTz => Some(ScalarKind::TimestampTz),
            _ => None,
        }
    }
}

/// The element field of a list column (Arrow's conventional name `item`, nullable).
pub fn list_item(element: &PgType) -> Field {
    Field::new("item", element.arrow_type(), true)
}

pub fn arrow_field(name: &str, pg_type: &PgType, nullable: bool) -> Field {
    Field::new(name, pg_type.arrow_type(), nullable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> TypeCatalog {
        let mut t = TypeCatalog::new();
        let mut add = |oid: u32,
                       name: &str,
                       kind: char,
                       category: char,
                       base_type: u32,
                       base_typmod: i32,
                       element: u32| {
            t.insert(
                oid,
                PgTypeInfo {
                    oid,
                    name: name.into(),
                    kind,
                    category,
                    base_type,
                    base_typmod,
                    element,
                },
            );
        };
        for (oid, name) in [
            (16, "bool"),
            (21, "int2"),
            (23, "int4"),
            (20, "int8"),
            (26, "oid"),
            (700, "float4"),
            (701, "float8"),
            (1700, "numeric"),
            (790, "money"),
            (25, "text"),
            (1043, "varchar"),
            (1042, "bpchar"),
            (19, "name"),
            (114, "json"),
            (3802, "jsonb"),
            (2950, "uuid"),
            (17, "bytea"),
            (1082, "date"),
            (1083, "time"),
            (1114, "timestamp"),
            (1184, "timestamptz"),
            (1186, "interval"),
            (1266, "timetz"),
            (142, "xml"),
            (869, "inet"),
            (600, "point"),
        ] {
            add(oid, name, 'b', 'X', 0, -1, 0);
        }
        add(1007, "_int4", 'b', 'A', 0, -1, 23);
        add(1231, "_numeric", 'b', 'A', 0, -1, 1700);
        add(1041, "_inet", 'b', 'A', 0, -1, 869);
        add(50000, "mood", 'e', 'E', 0, -1, 0);
        add(
            50001,
            "positive_amount",
            'd',
            'N',
            1700,
            ((12 << 16) | 2) + 4,
            0,
        );
        add(50002, "address", 'c', 'C', 0, -1, 0);
        add(3904, "int4range", 'r', 'R', 0, -1, 0);
        add(50003, "_positive_amount", 'b', 'A', 0, -1, 50001);
        t
    }

    fn read(oid: u32, typmod: i32, dims: i32) -> ColumnRead {
        let column = PgColumn {
            name: "c".into(),
            type_text: "t".into(),
            type_oid: oid,
            typmod,
            not_null: false,
            dims,
        };
        column_read(&column, &catalog(), None).unwrap()
    }

    #[test]
    fn numeric_typmods_map_to_exact_decimals() {
        assert_eq!(
            numeric_type(((12 << 16) | 2) + 4),
            Ok(PgType::Numeric {
                precision: 12,
                scale: 2
            })
        );
        assert_eq!(
            numeric_type(-1),
            Ok(PgType::Numeric {
                precision: 38,
                scale: 9
            })
        );
        assert_eq!(
            numeric_type(((50 << 16) | 10) + 4),
            Ok(PgType::Numeric {
                precision: 38,
                scale: 10
            })
        );
        // numeric(5,-2): scale -2 is stored as 0x7fe in 11 bits.
        assert_eq!(
            numeric_type(((5 << 16) | 0x7fe) + 4),
            Ok(PgType::Numeric {
                precision: 7,
                scale: 0
            })
        );
        assert!(
            numeric_type(((100 << 16) | 50) + 4)
                .unwrap_err()
                .contains("more than 38 decimal places")
        );
    }

    #[test]
    fn every_binary_type_maps_to_its_arrow_type() {
        let cases: &[(u32, DataType)] = &[
            (16, DataType::Boolean),
            (21, DataType::Int16),
            (23, DataType::Int32),
            (20, DataType::Int64),
            (26, DataType::Int64),
            (700, DataType::Float32),
            (701, DataType::Float64),
            (790, DataType::Decimal128(19, 2)),
            (25, DataType::Utf8),
            (1043, DataType::Utf8),
            (1042, DataType::Utf8),
            (19, DataType::Utf8),
            (114, DataType::Utf8),
            (3802, DataType::Utf8),
            (2950, DataType::Utf8),
            (17, DataType::Binary),
            (1082, DataType::Date32),
            (1083, DataType::Time64(TimeUnit::Microsecond)),
            (1114, DataType::Timestamp(TimeUnit::Microsecond, None)),
            (
                1184,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ),
        ];
        for (oid, expected) in cases {
            let r = read(*oid, -1, 0);
            assert_eq!(r.cast, None, "{oid}");
            assert_eq!(&r.pg_type.arrow_type(), expected, "{oid}");
        }
    }

    #[test]
    fn other_types_are_read_in_text_form() {
        for oid in [1186, 1266, 142, 869, 600, 50002, 3904] {
            assert_eq!(read(oid, -1, 0), ColumnRead::text(), "{oid}");
        }
    }

    #[test]
    fn enums_domains_and_arrays_resolve_to_their_base() {
        assert_eq!(read(50000, -1, 0), ColumnRead::binary(PgType::Text));
        assert_eq!(
            read(50001, -1, 0),
            ColumnRead::binary(PgType::Numeric {
                precision: 12,
                scale: 2
            })
        );
        assert_eq!(
            read(1007, -1, 1),
            ColumnRead::binary(PgType::List(Box::new(PgType::Int4)))
        );
        assert_eq!(
            read(1231, ((10 << 16) | 3) + 4, 1),
            ColumnRead::binary(PgType::List(Box::new(PgType::Numeric {
                precision: 10,
                scale: 3
            })))
        );
        assert_eq!(
            read(50003, -1, 1),
            ColumnRead::binary(PgType::List(Box::new(PgType::Numeric {
                precision: 12,
                scale: 2
            })))
        );
        assert_eq!(
            read(1041, -1, 1),
            ColumnRead {
                pg_type: PgType::List(Box::new(PgType::Text)),
                cast: Some(ReadCast::TextArray)
            }
        );
        assert_eq!(
            read(1007, -1, 2),
            ColumnRead::text(),
            "multi-dimensional arrays are text"
        );
    }

    #[test]
    fn overrides_win_and_are_checked() {
        let column = PgColumn {
            name: "c".into(),
            type_text: "numeric".into(),
            type_oid: 1700,
            typmod: -1,
            not_null: false,
            dims: 0,
        };
        let r = column_read(&column, &catalog(), Some(ColumnTypeOverride::String)).unwrap();
        assert_eq!(r, ColumnRead::text());
        let r = column_read(
            &column,
            &catalog(),
            Some(ColumnTypeOverride::Decimal {
                precision: 20,
                scale: 4,
            }),
        )
        .unwrap();
        assert_eq!(
            r.pg_type,
            PgType::Numeric {
                precision: 20,
                scale: 4
            }
        );
        let text = PgColumn {
            type_oid: 25,
            ..column
        };
        assert!(
            column_read(
                &text,
                &catalog(),
                Some(ColumnTypeOverride::Decimal {
                    precision: 20,
                    scale: 4
                })
            )
            .is_err()
        );
    }
}
