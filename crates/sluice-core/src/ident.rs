//! Identifiers from configuration: strict validation and engine-specific quoting.
//!
//! Every identifier that reaches SQL passes [`check_identifier`] first and is then always
//! emitted quoted, so mixed-case and reserved-word names work and nothing is spliced raw.

use std::fmt;

use serde::{Deserialize, Serialize};

/// PostgreSQL truncates identifiers at 63 bytes and MySQL rejects more than 64; the stricter wins.
pub const MAX_IDENTIFIER_LEN: usize = 63;

/// Checks one identifier against `^[A-Za-z_][A-Za-z0-9_$]*$`, at most 63 characters.
///
/// Returns a message suitable for a config error (the caller adds the field path).
pub fn check_identifier(ident: &str) -> Result<(), String> {
    if ident.is_empty() {
        return Err("must not be empty".into());
    }
    if ident.len() > MAX_IDENTIFIER_LEN {
        return Err(format!(
            "'{ident}' is {} characters long; at most {MAX_IDENTIFIER_LEN} are allowed",
            ident.len()
        ));
    }
    let mut chars = ident.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if !first_ok || !rest_ok {
        return Err(format!(
            "'{ident}' is not a valid identifier: use letters, digits, '_' or '$', starting with a letter or '_'"
        ));
    }
    Ok(())
}

/// SQL dialects sluice generates text for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
}

impl Dialect {
    /// Quotes an identifier for this dialect, doubling any embedded quote character so the
    /// result is safe even for identifiers that did not pass [`check_identifier`].
    pub fn quote(self, ident: &str) -> String {
        match self {
            Dialect::Postgres => format!("\"{}\"", ident.replace('"', "\"\"")),
            Dialect::Mysql => format!("`{}`", ident.replace('`', "``")),
        }
    }
}

/// A table name as written in config: `schema.table` or just `table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    /// Parses and validates `schema.table` or `table`.
    pub fn parse(text: &str) -> Result<TableName, String> {
        let parts: Vec<&str> = text.split('.').collect();
        let (schema, name) = match parts.as_slice() {
            [name] => (None, *name),
            [schema, name] => (Some(*schema), *name),
            _ => {
                return Err(format!(
                    "'{text}' must be 'schema.table' or 'table' (at most one '.')"
                ));
            }
        };
        if let Some(schema) = schema {
            check_identifier(schema).map_err(|e| format!("schema {e}"))?;
        }
        check_identifier(name).map_err(|e| format!("table {e}"))?;
        Ok(TableName {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    /// The fully quoted name for a dialect, e.g. `"public"."Orders"`.
    pub fn quoted(&self, dialect: Dialect) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", dialect.quote(schema), dialect.quote(&self.name)),
            None => dialect.quote(&self.name),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_mixed_case_and_dollar_identifiers() {
        for ok in ["orders", "Orders", "_tmp", "order$2", "a1", "select"] {
            assert!(check_identifier(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_identifiers_that_could_smuggle_sql() {
        for bad in [
            "",
            "1abc",
            "a b",
            "a;drop",
            "a\"b",
            "a-b",
            "a.b",
            "ü",
            "a--",
            &"x".repeat(64),
        ] {
            assert!(check_identifier(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn quoting_doubles_embedded_quotes() {
        assert_eq!(Dialect::Postgres.quote("Order"), "\"Order\"");
        assert_eq!(Dialect::Postgres.quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(Dialect::Mysql.quote("a`b"), "`a``b`");
    }

    #[test]
    fn table_names_parse_with_and_without_schema() {
        let t = TableName::parse("public.Orders").unwrap();
        assert_eq!(t.schema.as_deref(), Some("public"));
        assert_eq!(t.quoted(Dialect::Postgres), "\"public\".\"Orders\"");
        assert_eq!(t.to_string(), "public.Orders");
        let t = TableName::parse("orders").unwrap();
        assert_eq!(t.quoted(Dialect::Mysql), "`orders`");
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse("public.").is_err());
        assert!(TableName::parse("public.x;y").is_err());
    }
}
