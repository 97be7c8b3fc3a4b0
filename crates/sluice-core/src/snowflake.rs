//! Snowflake SQL text generated from Arrow schemas and run manifests: the one Arrow → Snowflake
//! type mapping, the RAW table DDL, the Parquet file format and COPY INTO with an explicit
//! file list. Pure text, unit-tested as such; the `sluice` crate runs it through the client.
//!
//! Every identifier is emitted quoted (so a source column keeps its exact case and may be a
//! reserved word) and every literal escaped; values that come from data are never spliced in:
//! the only literals here are sluice's own object keys.

use std::fmt;

use arrow_schema::{DataType, Field, Schema, TimeUnit};

use crate::manifest::ManifestColumn;

/// Snowflake loads at most this many files named in one `FILES = (…)` list.
pub const MAX_FILES_PER_COPY: usize = 1000;
/// The RAW column COPY fills with the file a row came from (`METADATA$FILENAME`).
pub const FILE_COLUMN: &str = "_sluice_file";
/// The RAW column COPY fills with the row's number in its file (`METADATA$FILE_ROW_NUMBER`).
pub const ROW_COLUMN: &str = "_sluice_row";

/// A Snowflake column type, as RAW declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnowflakeType {
    Number {
        precision: u8,
        scale: u8,
    },
    Float,
    Boolean,
    Varchar,
    Binary,
    Date,
    /// TIME(scale), scale 0–9 fractional digits.
    Time {
        scale: u8,
    },
    TimestampNtz {
        scale: u8,
    },
    TimestampTz {
        scale: u8,
    },
    /// Nested values (lists, structs, maps), loaded as VARIANT.
    Variant,
}

impl fmt::Display for SnowflakeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnowflakeType::Number { precision, scale } => write!(f, "NUMBER({precision},{scale})"),
            SnowflakeType::Float => f.write_str("FLOAT"),
            SnowflakeType::Boolean => f.write_str("BOOLEAN"),
            SnowflakeType::Varchar => f.write_str("VARCHAR"),
            SnowflakeType::Binary => f.write_str("BINARY"),
            SnowflakeType::Date => f.write_str("DATE"),
            SnowflakeType::Time { scale } => write!(f, "TIME({scale})"),
            SnowflakeType::TimestampNtz { scale } => write!(f, "TIMESTAMP_NTZ({scale})"),
            SnowflakeType::TimestampTz { scale } => write!(f, "TIMESTAMP_TZ({scale})"),
            SnowflakeType::Variant => f.write_str("VARIANT"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlGenError {
    #[error("column {column}: Arrow type {data_type} has no Snowflake type: {reason}")]
    UnsupportedType {
        column: String,
        data_type: String,
        reason: String,
    },
    #[error("column {column} is reserved for sluice's load metadata; rename it in the source")]
    ReservedColumn { column: String },
    #[error("manifest column {column}: cannot read its type {data_type:?}: {message}")]
    ManifestType {
        column: String,
        data_type: String,
        message: String,
    },
}

/// The Snowflake type of an Arrow type; `Err` says why there is none.
///
/// Integers get the exact NUMBER precision of their range; timestamps keep their unit as the
/// fractional scale; a timestamp with a time zone (an instant) is TIMESTAMP_TZ, one without
/// (a wall-clock reading) TIMESTAMP_NTZ. JSON arrives as text (VARCHAR in RAW) and becomes
/// VARIANT in the merge step; nested Arrow types load straight into VARIANT.
pub fn snowflake_type(data_type: &DataType) -> Result<SnowflakeType, String> {
    use SnowflakeType as S;
    let number = |precision: u8| S::Number {
        precision,
        scale: 0,
    };
    Ok(match data_type {
        DataType::Boolean => S::Boolean,
        DataType::Int8 | DataType::UInt8 => number(3),
        DataType::Int16 | DataType::UInt16 => number(5),
        DataType::Int32 | DataType::UInt32 => number(10),
        DataType::Int64 => number(19),
        DataType::UInt64 => number(20),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => decimal(*p, *s)?,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => S::Float,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => S::Varchar,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => S::Binary,
        DataType::Date32 | DataType::Date64 => S::Date,
        DataType::Time32(unit) | DataType::Time64(unit) => S::Time {
            scale: unit_scale(unit),
        },
        DataType::Timestamp(unit, None) => S::TimestampNtz {
            scale: unit_scale(unit),
        },
        DataType::Timestamp(unit, Some(_)) => S::TimestampTz {
            scale: unit_scale(unit),
        },
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::FixedSizeList(..)
        | DataType::Struct(_)
        | DataType::Map(..) => S::Variant,
        DataType::Dictionary(_, values) => snowflake_type(values)?,
        other => return Err(format!("{other} is not a type sluice loads")),
    })
}

fn decimal(precision: u8, scale: i8) -> Result<SnowflakeType, String> {
    if precision > 38 {
        return Err(format!("precision {precision} exceeds NUMBER's 38 digits"));
    }
    let scale = u8::try_from(scale)
        .map_err(|_| format!("negative scale {scale} has no NUMBER equivalent"))?;
    if scale > precision {
        return Err(format!("scale {scale} exceeds precision {precision}"));
    }
    Ok(SnowflakeType::Number { precision, scale })
}

fn unit_scale(unit: &TimeUnit) -> u8 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

/// The files' Arrow schema as a run manifest records it (types in Arrow's display form, which
/// parses back to the same type).
pub fn manifest_schema(columns: &[ManifestColumn]) -> Result<Schema, SqlGenError> {
    columns
        .iter()
        .map(|c| {
            let data_type =
                c.data_type
                    .parse::<DataType>()
                    .map_err(|e| SqlGenError::ManifestType {
                        column: c.name.clone(),
                        data_type: c.data_type.clone(),
                        message: e.to_string(),
                    })?;
            Ok(Field::new(&c.name, data_type, c.nullable))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Schema::new)
}

/// The Snowflake type of a field, the error naming the column.
pub fn column_type(field: &Field) -> Result<SnowflakeType, SqlGenError> {
    snowflake_type(field.data_type()).map_err(|reason| SqlGenError::UnsupportedType {
        column: field.name().clone(),
        data_type: field.data_type().to_string(),
        reason,
    })
}

/// Quotes an identifier (case kept, embedded `"` doubled).
pub fn quote(ident: &str) -> String {
    // Snowflake quotes identifiers as standard SQL does, which is PostgreSQL's way.
    crate::ident::Dialect::Postgres.quote(ident)
}

/// A single-quoted string literal: `'` doubled, and `\` doubled because Snowflake reads it as
/// an escape inside one.
pub fn string_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// A schema-level object: `"DATABASE"."SCHEMA"."name"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectName {
    pub database: String,
    pub schema: String,
    pub name: String,
}

impl ObjectName {
    pub fn new(database: &str, schema: &str, name: &str) -> ObjectName {
        ObjectName {
            database: database.to_owned(),
            schema: schema.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn quoted(&self) -> String {
        format!(
            "{}.{}.{}",
            quote(&self.database),
            quote(&self.schema),
            quote(&self.name)
        )
    }
}

/// Each column of `schema` with the Snowflake type it loads as (RAW's and the keys table's
/// columns, COPY's metadata columns aside).
pub fn schema_columns(schema: &Schema) -> Result<Vec<(String, SnowflakeType)>, SqlGenError> {
    schema
        .fields()
        .iter()
        .map(|f| Ok((f.name().clone(), column_type(f)?)))
        .collect()
}

/// `CREATE TABLE IF NOT EXISTS` for a RAW table: every field of the files' Arrow schema (the
/// source columns plus `_sluice_run_id` and `_sluice_extracted_at`, which the files carry)
/// with its mapped type, all nullable (RAW lands what came, checks belong to the merge), then
/// the columns COPY fills from the file's metadata.
pub fn raw_table_ddl(table: &ObjectName, schema: &Schema) -> Result<String, SqlGenError> {
    let mut columns = Vec::with_capacity(schema.fields().len() + 2);
    for field in schema.fields() {
        if field.name() == FILE_COLUMN || field.name() == ROW_COLUMN {
            return Err(SqlGenError::ReservedColumn {
                column: field.name().clone(),
            });
        }
        columns.push(format!(
            "    {} {}",
            quote(field.name()),
            column_type(field)?
        ));
    }
    columns.push(format!("    {} VARCHAR", quote(FILE_COLUMN)));
    columns.push(format!("    {} NUMBER(19,0)", quote(ROW_COLUMN)));
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {} (\n{}\n)",
        table.quoted(),
        columns.join(",\n")
    ))
}

/// The session parameters sluice sends with every SQL API request. The SQL API ignores the
/// account's and the user's `TIMEZONE` and applies only what the request carries
/// (<https://docs.snowflake.com/en/developer-guide/sql-api/handling-responses>), and the
/// default zone is `America/Los_Angeles`
/// (<https://docs.snowflake.com/en/sql-reference/parameters#timezone>). Parquet timestamps
/// with `isAdjustedToUTC` load as `TIMESTAMP_LTZ`
/// (<https://docs.snowflake.com/en/sql-reference/sql/copy-into-table>, TYPE = PARQUET), so the
/// zone decides the offset a `TIMESTAMP_TZ` column keeps and the day a cast to `DATE` gives:
/// sluice's days are UTC. Only parameters the SQL API lists are allowed here
/// (<https://docs.snowflake.com/en/developer-guide/sql-api/reference>, "parameters");
/// `QUOTED_IDENTIFIERS_IGNORE_CASE` is not one of them, so the set-up pins it on sluice's user.
pub const SESSION_PARAMETERS: &[(&str, &str)] = &[("TIMEZONE", "UTC")];

/// How sluice's Parquet files must be read. `USE_LOGICAL_TYPE = TRUE` because Snowflake's
/// default reads Parquet timestamps and decimals by their physical type and loads them wrong;
/// `BINARY_AS_TEXT = FALSE` so BINARY columns are not read as UTF-8 text; `NULL_IF = ()`
/// because the Parquet format's `NULL_IF` defaults to `\\N`, which would load the text `\N`
/// as NULL: sluice's files already say which values are NULL, so no string may become one
/// (<https://docs.snowflake.com/en/sql-reference/sql/create-file-format>, format type options,
/// TYPE = PARQUET).
pub const PARQUET_FORMAT_OPTIONS: &str =
    "TYPE = PARQUET USE_LOGICAL_TYPE = TRUE BINARY_AS_TEXT = FALSE NULL_IF = ()";

/// The named Parquet file format of the setup SQL (for people querying the stage by hand;
/// COPY states the options inline, so a changed format object cannot change a load).
pub fn parquet_file_format_ddl(format: &ObjectName) -> String {
    format!(
        "CREATE FILE FORMAT IF NOT EXISTS {} {PARQUET_FORMAT_OPTIONS}",
        format.quoted()
    )
}

/// COPY INTO RAW of exactly the listed files (keys relative to the stage's URL), in statements
/// of at most [`MAX_FILES_PER_COPY`] files each; no statement for no files. Columns match the
/// files' by name, the file name and row number land in `_sluice_file`/`_sluice_row`, and any
/// error aborts the statement. `FORCE = TRUE` because the pipeline deletes a run's RAW rows
/// before loading its files: a replayed run must load them again, which Snowflake's load
/// metadata (files seen in the last 64 days) would otherwise skip.
pub fn copy_into_raw(table: &ObjectName, stage: &ObjectName, files: &[String]) -> Vec<String> {
    files
        .chunks(MAX_FILES_PER_COPY)
        .map(|chunk| {
            let list = chunk
                .iter()
                .map(|f| string_literal(f))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "COPY INTO {table}\nFROM @{stage}\nFILES = ({list})\n\
                 FILE_FORMAT = ({PARQUET_FORMAT_OPTIONS})\n\
                 MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE\n\
                 INCLUDE_METADATA = ({file} = METADATA$FILENAME, {row} = METADATA$FILE_ROW_NUMBER)\n\
                 ON_ERROR = ABORT_STATEMENT\n\
                 FORCE = TRUE",
                table = table.quoted(),
                stage = stage.quoted(),
                file = quote(FILE_COLUMN),
                row = quote(ROW_COLUMN),
            )
        })
        .collect()
}

/// A Snowflake account identifier (`myorg-myaccount`, or a locator such as
/// `xy12345.eu-west-1`): it becomes the API's host name, so only letters, digits, `-`, `_`
/// and `.` are accepted, never anything that could turn the URL towards another host.
pub fn check_account_name(account: &str) -> Result<(), String> {
    let account = account.trim();
    if account.is_empty() {
        return Err("must not be empty".into());
    }
    match account
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        Some(c) => Err(format!(
            "'{account}' contains '{c}': an account identifier has only letters, digits, '-', '_' and '.'"
        )),
        None if account.starts_with('.') || account.ends_with('.') || account.contains("..") => {
            Err(format!("'{account}' is not an account identifier"))
        }
        None => Ok(()),
    }
}

/// The two forms Snowflake wants of one account identifier
/// (<https://docs.snowflake.com/en/user-guide/admin-account-identifier>,
/// <https://docs.snowflake.com/en/developer-guide/sql-api/authenticating>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountForms {
    /// The host of the account's URL, `<this>.snowflakecomputing.com`: `orgname-account-name`
    /// (the `.` of `orgname.account_name` becomes `-`, and underscores become hyphens, the
    /// form Snowflake accepts in URLs and every DNS name allows), or the account locator with
    /// its region and cloud as given.
    pub host: String,
    /// The account part of the key-pair JWT's `iss` and `sub`: upper case, `ORGNAME-ACCOUNT_NAME`
    /// ("if your account ID contains periods, you must replace them with hyphens"), or the
    /// locator without region and cloud ("exclude any region information").
    pub jwt: String,
}

/// The URL host and the JWT account of an identifier that passed [`check_account_name`]:
/// `myorg-my_account`, `myorg.my_account`, `xy12345`, `xy12345.us-east-2.aws`,
/// `myorg-my_account.privatelink`, each with or without `.snowflakecomputing.com`.
pub fn account_forms(account: &str) -> AccountForms {
    let lower = account.trim().to_ascii_lowercase();
    let lower = lower
        .strip_suffix(".snowflakecomputing.com")
        .unwrap_or(&lower);
    let segments: Vec<&str> = lower.split('.').collect();
    if let [locator_and_id, "global"] = segments.as_slice() {
        // The legacy global URL, `<locator>-<id>.global`: the JWT names the locator alone.
        let locator = locator_and_id.split('-').next().unwrap_or(locator_and_id);
        return AccountForms {
            host: lower.to_owned(),
            jwt: locator.to_ascii_uppercase(),
        };
    }
    // Organization and account names have no `-`; every region and cloud segment does, or is
    // a cloud name. So two dash-free segments are `orgname.account_name`.
    let org_account = match segments.as_slice() {
        [org, name] if !org.contains('-') && !name.contains('-') && !is_cloud(name) => {
            Some(format!("{org}-{name}"))
        }
        _ => None,
    };
    let (first, rest) = match &org_account {
        Some(joined) => (joined.as_str(), &[][..]),
        None => (segments[0], &segments[1..]),
    };
    let is_org_account = org_account.is_some() || first.contains('-');
    let host_first = if is_org_account {
        first.replace('_', "-")
    } else {
        first.to_owned()
    };
    let host = std::iter::once(host_first.as_str())
        .chain(rest.iter().copied())
        .collect::<Vec<_>>()
        .join(".");
    AccountForms {
        host,
        jwt: first.to_ascii_uppercase(),
    }
}

fn is_cloud(segment: &str) -> bool {
    matches!(segment, "aws" | "azure" | "gcp" | "privatelink")
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_account_identifier_form_gives_its_host_and_jwt_account() {
        // (configured, URL host before .snowflakecomputing.com, JWT account)
        let cases = [
            ("myorg-myaccount", "myorg-myaccount", "MYORG-MYACCOUNT"),
            ("MYORG-MYACCOUNT", "myorg-myaccount", "MYORG-MYACCOUNT"),
            ("myorg.myaccount", "myorg-myaccount", "MYORG-MYACCOUNT"),
            ("myorg-my_account", "myorg-my-account", "MYORG-MY_ACCOUNT"),
            ("myorg.my_account", "myorg-my-account", "MYORG-MY_ACCOUNT"),
            (
                "myorg-myaccount.snowflakecomputing.com",
                "myorg-myaccount",
                "MYORG-MYACCOUNT",
            ),
            (
                "myorg-myaccount.privatelink",
                "myorg-myaccount.privatelink",
                "MYORG-MYACCOUNT",
            ),
            ("xy12345", "xy12345", "XY12345"),
            ("xy12345.us-east-2.aws", "xy12345.us-east-2.aws", "XY12345"),
            ("xy12345.us-east-1", "xy12345.us-east-1", "XY12345"),
            (
                "xy12345.east-us-2.azure",
                "xy12345.east-us-2.azure",
                "XY12345",
            ),
            (
                "XY12345.eu-central-1.snowflakecomputing.com",
                "xy12345.eu-central-1",
                "XY12345",
            ),
            ("xy12345.privatelink", "xy12345.privatelink", "XY12345"),
            ("xy12345-abcd.global", "xy12345-abcd.global", "XY12345"),
        ];
        for (configured, host, jwt) in cases {
            assert_eq!(
                super::check_account_name(configured),
                Ok(()),
                "{configured}"
            );
            assert_eq!(
                super::account_forms(configured),
                super::AccountForms {
                    host: host.into(),
                    jwt: jwt.into()
                },
                "{configured}"
            );
        }
    }

    #[test]
    fn account_names_cannot_redirect_the_api() {
        for ok in ["myorg-acct", "xy12345.eu-west-1", "SLUICEORG_TEST"] {
            assert_eq!(super::check_account_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "x@evil.com#",
            "evil.com/x",
            "a b",
            "",
            ".x",
            "x..y",
            "x:8443",
        ] {
            assert!(super::check_account_name(bad).is_err(), "{bad}");
        }
    }

    use std::sync::Arc;

    use super::*;

    #[test]
    fn every_arrow_type_sluice_produces_has_its_snowflake_type() {
        let utc = Some(Arc::from("UTC"));
        let item = Arc::new(Field::new("item", DataType::Int32, true));
        let cases: Vec<(DataType, &str)> = vec![
            (DataType::Boolean, "BOOLEAN"),
            (DataType::Int8, "NUMBER(3,0)"),
            (DataType::Int16, "NUMBER(5,0)"),
            (DataType::Int32, "NUMBER(10,0)"),
            (DataType::Int64, "NUMBER(19,0)"),
            (DataType::UInt8, "NUMBER(3,0)"),
            (DataType::UInt16, "NUMBER(5,0)"),
            (DataType::UInt32, "NUMBER(10,0)"),
            (DataType::UInt64, "NUMBER(20,0)"),
            (DataType::Decimal128(12, 2), "NUMBER(12,2)"),
            (DataType::Decimal128(38, 30), "NUMBER(38,30)"),
            (DataType::Decimal128(20, 0), "NUMBER(20,0)"),
            (DataType::Float32, "FLOAT"),
            (DataType::Float64, "FLOAT"),
            (DataType::Utf8, "VARCHAR"),
            (DataType::LargeUtf8, "VARCHAR"),
            (DataType::Binary, "BINARY"),
            (DataType::FixedSizeBinary(16), "BINARY"),
            (DataType::Date32, "DATE"),
            (DataType::Time64(TimeUnit::Microsecond), "TIME(6)"),
            (DataType::Time32(TimeUnit::Second), "TIME(0)"),
            (
                DataType::Timestamp(TimeUnit::Microsecond, None),
                "TIMESTAMP_NTZ(6)",
            ),
            (
                DataType::Timestamp(TimeUnit::Microsecond, utc.clone()),
                "TIMESTAMP_TZ(6)",
            ),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, utc),
                "TIMESTAMP_TZ(9)",
            ),
            (
                DataType::Timestamp(TimeUnit::Millisecond, None),
                "TIMESTAMP_NTZ(3)",
            ),
            (DataType::List(item.clone()), "VARIANT"),
            (DataType::LargeList(item), "VARIANT"),
            (
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                "VARCHAR",
            ),
        ];
        for (data_type, expected) in cases {
            assert_eq!(
                snowflake_type(&data_type).unwrap().to_string(),
                expected,
                "{data_type}"
            );
        }
    }

    #[test]
    fn types_without_an_equivalent_are_errors_naming_the_column() {
        for (data_type, reason) in [
            (DataType::Decimal256(40, 2), "precision 40 exceeds"),
            (DataType::Decimal128(10, -2), "negative scale"),
            (
                DataType::Interval(arrow_schema::IntervalUnit::DayTime),
                "not a type sluice loads",
            ),
            (DataType::Null, "not a type sluice loads"),
        ] {
            let err = column_type(&Field::new("amount", data_type, true))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("column amount: Arrow type"), "{err}");
            assert!(err.contains(reason), "{err}");
        }
    }

    #[test]
    fn identifiers_are_quoted_and_literals_escaped() {
        assert_eq!(quote("Order \"Lines\""), "\"Order \"\"Lines\"\"\"");
        assert_eq!(string_literal(r"a'b\c"), r"'a''b\\c'");
        assert_eq!(
            ObjectName::new("SLUICE", "RAW", "public.orders").quoted(),
            "\"SLUICE\".\"RAW\".\"public.orders\""
        );
    }

    fn orders_schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("Total", DataType::Decimal128(12, 2), true),
            Field::new("select", DataType::Utf8, true),
            Field::new("_sluice_run_id", DataType::Utf8, false),
            Field::new(
                "_sluice_extracted_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
                false,
            ),
        ])
    }

    #[test]
    fn raw_ddl_lists_every_column_then_the_load_metadata() {
        let ddl = raw_table_ddl(
            &ObjectName::new("SLUICE", "RAW", "orders"),
            &orders_schema(),
        )
        .unwrap();
        assert_eq!(
            ddl,
            "CREATE TABLE IF NOT EXISTS \"SLUICE\".\"RAW\".\"orders\" (\n\
             \x20   \"id\" NUMBER(19,0),\n\
             \x20   \"Total\" NUMBER(12,2),\n\
             \x20   \"select\" VARCHAR,\n\
             \x20   \"_sluice_run_id\" VARCHAR,\n\
             \x20   \"_sluice_extracted_at\" TIMESTAMP_TZ(6),\n\
             \x20   \"_sluice_file\" VARCHAR,\n\
             \x20   \"_sluice_row\" NUMBER(19,0)\n\
             )"
        );
        let mut fields = orders_schema().fields().to_vec();
        fields.push(Arc::new(Field::new("_sluice_row", DataType::Int64, true)));
        let err =
            raw_table_ddl(&ObjectName::new("D", "RAW", "t"), &Schema::new(fields)).unwrap_err();
        assert!(
            err.to_string().contains("column _sluice_row is reserved"),
            "{err}"
        );
    }

    #[test]
    fn manifest_types_read_back_as_the_arrow_types_written() {
        let schema = orders_schema();
        let columns: Vec<ManifestColumn> = schema
            .fields()
            .iter()
            .map(|f| ManifestColumn {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                nullable: f.is_nullable(),
                parquet_type: String::new(),
            })
            .collect();
        assert_eq!(manifest_schema(&columns).unwrap(), schema);
        let bad = ManifestColumn {
            name: "amount".into(),
            data_type: "Money(2)".into(),
            nullable: true,
            parquet_type: String::new(),
        };
        let err = manifest_schema(&[bad]).unwrap_err().to_string();
        assert!(
            err.starts_with("manifest column amount: cannot read its type \"Money(2)\""),
            "{err}"
        );
    }

    #[test]
    fn file_format_uses_logical_types_and_turns_no_string_into_null() {
        assert_eq!(
            parquet_file_format_ddl(&ObjectName::new("SLUICE", "RAW", "sluice_parquet")),
            "CREATE FILE FORMAT IF NOT EXISTS \"SLUICE\".\"RAW\".\"sluice_parquet\" TYPE = PARQUET \
             USE_LOGICAL_TYPE = TRUE BINARY_AS_TEXT = FALSE NULL_IF = ()"
        );
    }

    #[test]
    fn copy_names_its_files_and_splits_at_the_limit() {
        let table = ObjectName::new("SLUICE", "RAW", "orders");
        let stage = ObjectName::new("SLUICE", "RAW", "sluice_stage");
        let files = vec![
            "postgres/shop/public.orders/2024-03-09/06/part-A-0000-0000.parquet".to_owned(),
            "postgres/shop/public.orders/2024-03-09/06/part-A-0001-0000.parquet".to_owned(),
        ];
        let statements = copy_into_raw(&table, &stage, &files);
        assert_eq!(
            statements,
            ["COPY INTO \"SLUICE\".\"RAW\".\"orders\"\n\
              FROM @\"SLUICE\".\"RAW\".\"sluice_stage\"\n\
              FILES = ('postgres/shop/public.orders/2024-03-09/06/part-A-0000-0000.parquet', \
              'postgres/shop/public.orders/2024-03-09/06/part-A-0001-0000.parquet')\n\
              FILE_FORMAT = (TYPE = PARQUET USE_LOGICAL_TYPE = TRUE BINARY_AS_TEXT = FALSE NULL_IF = ())\n\
              MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE\n\
              INCLUDE_METADATA = (\"_sluice_file\" = METADATA$FILENAME, \"_sluice_row\" = METADATA$FILE_ROW_NUMBER)\n\
              ON_ERROR = ABORT_STATEMENT\n\
              FORCE = TRUE"]
        );

        let many: Vec<String> = (0..2500).map(|i| format!("f{i:04}.parquet")).collect();
        let statements = copy_into_raw(&table, &stage, &many);
        let counts: Vec<usize> = statements
            .iter()
            .map(|s| s.matches(".parquet'").count())
            .collect();
        assert_eq!(counts, [1000, 1000, 500]);
        assert!(
            statements[1].contains("'f1000.parquet'") && statements[2].ends_with("FORCE = TRUE")
        );
        assert!(copy_into_raw(&table, &stage, &[]).is_empty());
    }
}
