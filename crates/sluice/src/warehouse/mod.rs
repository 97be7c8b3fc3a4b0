//! The `Warehouse` port: how the pipeline runs SQL in the warehouse (Snowflake, or a local
//! stand-in) without knowing the wire protocol.
//!
//! Every value that comes from data or config travels as a [`Binding`], never spliced into the
//! SQL text; results come back typed by the warehouse's own column metadata ([`Value`]). The
//! run's COPY / MERGE / gold step is [`load::Loader`], on top of the port.

pub mod load;
pub mod snowflake;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Utc};

pub use snowflake::SnowflakeError;

/// One SQL statement with its positional (`?`) bindings.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub bindings: Vec<Binding>,
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Statement {
        Statement {
            sql: sql.into(),
            bindings: Vec::new(),
        }
    }

    /// Adds the value of the next `?` placeholder.
    pub fn bind(mut self, value: impl Into<Binding>) -> Statement {
        self.bindings.push(value.into());
        self
    }
}

/// A bound value. Dates and timestamps are bound as text and cast in the SQL
/// (`CAST(? AS TIMESTAMP_NTZ)`), which reads the same in every warehouse.
#[derive(Debug, Clone, PartialEq)]
pub enum Binding {
    Null,
    Text(String),
    Integer(i64),
    /// An exact decimal in its text form (`"-12.340"`).
    Decimal(String),
    Real(f64),
    Boolean(bool),
    Binary(Vec<u8>),
}

impl From<&str> for Binding {
    fn from(value: &str) -> Binding {
        Binding::Text(value.to_owned())
    }
}

impl From<String> for Binding {
    fn from(value: String) -> Binding {
        Binding::Text(value)
    }
}

impl From<i64> for Binding {
    fn from(value: i64) -> Binding {
        Binding::Integer(value)
    }
}

impl From<f64> for Binding {
    fn from(value: f64) -> Binding {
        Binding::Real(value)
    }
}

impl From<bool> for Binding {
    fn from(value: bool) -> Binding {
        Binding::Boolean(value)
    }
}

impl<T: Into<Binding>> From<Option<T>> for Binding {
    fn from(value: Option<T>) -> Binding {
        value.map_or(Binding::Null, Into::into)
    }
}

/// A result column as the warehouse describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The warehouse's type name, lower case (`fixed`, `text`, `timestamp_ntz`, …).
    pub type_name: String,
    pub precision: Option<u32>,
    pub scale: Option<u32>,
    pub nullable: bool,
}

/// A typed result value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Text(String),
    /// An exact number: `unscaled / 10^scale` (`NUMBER(p, s)`).
    Number {
        unscaled: i128,
        scale: u32,
    },
    Real(f64),
    Boolean(bool),
    Date(NaiveDate),
    Time(NaiveTime),
    TimestampNtz(NaiveDateTime),
    TimestampLtz(DateTime<Utc>),
    TimestampTz(DateTime<FixedOffset>),
    Binary(Vec<u8>),
    /// VARIANT, OBJECT and ARRAY.
    Variant(serde_json::Value),
}

impl Value {
    /// The value as an integer, when it is a whole number that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number { unscaled, scale } => {
                let divisor = 10i128.checked_pow(*scale)?;
                if unscaled % divisor != 0 {
                    return None;
                }
                i64::try_from(unscaled / divisor).ok()
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(text) => Some(text),
            _ => None,
        }
    }
}

/// The rows of one statement, typed by its columns.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// The warehouse's id of the statement (Snowflake's statement handle / query id).
    pub statement_id: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

impl QueryResult {
    /// The index of a column by name (case-insensitive, as unquoted identifiers are).
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// The single value of a one-row, one-column result (a count, a procedure's return value).
    pub fn scalar(&self) -> Option<&Value> {
        match (self.rows.as_slice(), self.columns.len()) {
            ([row], 1) => row.first(),
            _ => None,
        }
    }
}

/// Errors of the port: each adapter's own, so callers can match Snowflake's codes.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error(transparent)]
    Snowflake(#[from] SnowflakeError),
}

#[async_trait]
pub trait Warehouse: Send + Sync {
    /// Runs one statement.
    async fn execute(&self, statement: &Statement) -> Result<QueryResult, WarehouseError>;

    /// Runs statements in order as one request, stopping at the first failure; one result
    /// per statement. Plain SQL text only: Snowflake takes no bindings in a multi-statement
    /// request.
    async fn execute_all(&self, statements: &[String]) -> Result<Vec<QueryResult>, WarehouseError>;

    /// Runs one statement under `request_id` (a UUID the caller derives from what the statement
    /// is for), at most once: a warehouse that has seen the id answers with the first
    /// execution's outcome, even while it still runs. Without such a memory, like `execute`.
    async fn execute_once(
        &self,
        request_id: &str,
        statement: &Statement,
    ) -> Result<QueryResult, WarehouseError> {
        let _ = request_id;
        self.execute(statement).await
    }
}
