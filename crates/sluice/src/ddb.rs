//! What the DynamoDB adapters (state store, config store) share: the key schema of sluice's
//! tables and how they are created, reading typed attributes out of items, recognising a
//! failed condition, and the mapping between DynamoDB attribute values and JSON.
//!
//! The table layouts live here, in one place, so `sluice dev create-tables`, the tests and
//! the SAM template (which copies them) cannot drift apart.

use std::collections::HashMap;

pub use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType,
};
use serde_json::Value;

/// One DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

/// Partition and sort key of every sluice table (both strings).
pub const PK: &str = "pk";
pub const SK: &str = "sk";

/// The state table's index of runs by table: partition `table_key`, sort `run_id`.
pub const RUNS_BY_TABLE: &str = "runs_by_table";
/// The state table's index of all runs: partition `run_kind` (always `RUN`), sort `run_id`.
pub const RUNS_BY_TIME: &str = "runs_by_time";

/// Which of sluice's tables to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    State,
    Config,
}

/// The error of an AWS call, with the service's code and message but not the request.
pub fn sdk_message<E, R>(e: &SdkError<E, R>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    if e.code() == Some("ResourceNotFoundException") {
        return "the table does not exist (check the table name and region; `sluice dev create-tables` creates it on a local stack)".into();
    }
    DisplayErrorContext(e).to_string()
}

/// Whether a conditional write was refused because its condition did not hold.
pub fn is_condition_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

/// Creates a sluice table with the layout production uses (on-demand billing), unless it
/// exists. Returns whether it was created.
pub async fn create_table(client: &Client, name: &str, kind: TableKind) -> Result<bool, String> {
    let key = |attr: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(attr)
            .key_type(key_type)
            .build()
            .map_err(|e| e.to_string())
    };
    let string_attr = |attr: &str| {
        AttributeDefinition::builder()
            .attribute_name(attr)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| e.to_string())
    };
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .attribute_definitions(string_attr(PK)?)
        .attribute_definitions(string_attr(SK)?);
    if kind == TableKind::State {
        for attr in ["table_key", "run_kind", "run_id"] {
            request = request.attribute_definitions(string_attr(attr)?);
        }
        for (index, hash) in [(RUNS_BY_TABLE, "table_key"), (RUNS_BY_TIME, "run_kind")] {
            request = request.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index)
                    .key_schema(key(hash, KeyType::Hash)?)
                    .key_schema(key("run_id", KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::KeysOnly)
                            .build(),
                    )
                    .build()
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    match request.send().await {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("ResourceInUseException") => Ok(false),
        Err(e) => Err(sdk_message(&e)),
    }
}

/// Every item of one partition, read strongly consistently, all pages.
pub async fn query_partition(
    client: &Client,
    table: &str,
    pk: AttributeValue,
) -> Result<Vec<Item>, String> {
    let pages: Vec<_> = client
        .query()
        .table_name(table)
        .key_condition_expression("#pk = :pk")
        .expression_attribute_names("#pk", PK)
        .expression_attribute_values(":pk", pk)
        .consistent_read(true)
        .into_paginator()
        .items()
        .send()
        .collect()
        .await;
    pages
        .into_iter()
        .map(|item| item.map_err(|e| sdk_message(&e)))
        .collect()
}

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}

pub fn get_n(item: &Item, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// DynamoDB attribute values as JSON: maps and lists nest, numbers stay numbers (integers
/// when they are), sets become arrays, binary is refused (nothing in sluice's model is).
pub fn to_json(value: &AttributeValue) -> Result<Value, String> {
    Ok(match value {
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::N(n) => number(n)?,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::L(items) => {
            Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        AttributeValue::M(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        AttributeValue::Ss(items) => {
            Value::Array(items.iter().cloned().map(Value::String).collect())
        }
        AttributeValue::Ns(items) => {
            Value::Array(items.iter().map(|n| number(n)).collect::<Result<_, _>>()?)
        }
        _ => {
            return Err(
                "is a binary or unknown DynamoDB type; use a string, number, boolean, list or map"
                    .into(),
            );
        }
    })
}

fn number(text: &str) -> Result<Value, String> {
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Value::from(i));
    }
    if let Ok(u) = text.parse::<u64>() {
        return Ok(Value::from(u));
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| format!("'{text}' is not a number"))
}

/// JSON as DynamoDB attribute values: the inverse of [`to_json`] for what sluice writes.
pub fn from_json(value: &Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(items) => AttributeValue::L(items.iter().map(from_json).collect()),
        Value::Object(map) => {
            AttributeValue::M(map.iter().map(|(k, v)| (k.clone(), from_json(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_attribute_values() {
        let value = serde_json::json!({
            "name": "shop", "port": 5432, "big": 18446744073709551615u64, "neg": -3,
            "flag": true, "none": null, "list": ["a", 1, {"x": []}],
        });
        assert_eq!(to_json(&from_json(&value)).unwrap(), value);
        assert_eq!(
            to_json(&AttributeValue::Ns(vec!["1".into(), "2".into()])).unwrap(),
            serde_json::json!([1, 2])
        );
        assert!(to_json(&AttributeValue::N("x1".into())).is_err());
    }
}
