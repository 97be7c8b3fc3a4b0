//! The configuration as DynamoDB holds it: items of attribute values through
//! `config_store::config_from_items`, what `ConfigStore::load` does once it has read them
//! (attributes to JSON, each item into a source or table, `Config::validate`). Every input is
//! tried two ways: as JSON (`{"sources": [item, …], "tables": [item, …]}`, each item's fields
//! turned into attribute values as `config push` writes them), and as items built with
//! `arbitrary`: any attribute value type, nested at most `MAX_DEPTH` deep, field names mostly
//! from the model.
#![no_main]

use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use libfuzzer_sys::fuzz_target;
use sluice::config_store::{ConfigStoreError, config_from_items};
use sluice::ddb::{Item, from_json};

const MAX_DEPTH: usize = 6;

/// Field names of the model (and the item keys), so random input finds real shapes.
const NAMES: [&str; 46] = [
    "pk",
    "sk",
    "ordinal",
    "name",
    "engine",
    "connection",
    "url",
    "host",
    "port",
    "user",
    "database",
    "secret_arn",
    "password_env",
    "sslmode",
    "ssl_root_cert",
    "statement_timeout",
    "max_connections",
    "source",
    "table",
    "columns",
    "primary_key",
    "load",
    "partition",
    "where",
    "target",
    "batch_rows",
    "column_types",
    "invalid_dates",
    "schedule",
    "deletes",
    "mode",
    "cursor",
    "lookback",
    "include_null_cursor",
    "column",
    "chunks",
    "chunk_rows",
    "max_concurrency",
    "raw_table",
    "staging_table",
    "merge_procedure",
    "gold_procedures",
    "json_columns",
    "incremental",
    "full",
    "postgres",
];
/// Values that mean something somewhere in the model.
const WORDS: [&str; 16] = [
    "shop",
    "postgres",
    "mysql",
    "public.orders",
    "shop/public.orders",
    "incremental",
    "full",
    "updated_at",
    "id",
    "1 hour",
    "postgres://u@h/db",
    "mysql://u@h/db",
    "string",
    "boolean",
    "decimal(10,2)",
    "require",
];

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Other(String),
}

impl Name {
    fn text(&self) -> String {
        match self {
            Name::Known(i) => NAMES[usize::from(*i) % NAMES.len()].to_owned(),
            Name::Other(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Text {
    Known(u8),
    Other(String),
}

impl Text {
    fn text(&self) -> String {
        match self {
            Text::Known(i) => WORDS[usize::from(*i) % WORDS.len()].to_owned(),
            Text::Other(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Number {
    Int(i64),
    Big(u64),
    Float(f64),
    Text(String),
}

impl Number {
    fn text(&self) -> String {
        match self {
            Number::Int(i) => i.to_string(),
            Number::Big(u) => u.to_string(),
            Number::Float(f) => f.to_string(),
            Number::Text(s) => s.clone(),
        }
    }
}

/// An attribute value, recursively.
#[derive(Arbitrary, Debug)]
enum Attr {
    S(Text),
    N(Number),
    Bool(bool),
    Null,
    L(Vec<Attr>),
    M(Vec<(Name, Attr)>),
    Ss(Vec<Text>),
    Ns(Vec<Number>),
    B(Vec<u8>),
}

impl Attr {
    fn value(&self, depth: usize) -> AttributeValue {
        if depth >= MAX_DEPTH {
            return AttributeValue::Null(true);
        }
        match self {
            Attr::S(t) => AttributeValue::S(t.text()),
            Attr::N(n) => AttributeValue::N(n.text()),
            Attr::Bool(b) => AttributeValue::Bool(*b),
            Attr::Null => AttributeValue::Null(true),
            Attr::L(items) => AttributeValue::L(items.iter().map(|a| a.value(depth + 1)).collect()),
            Attr::M(fields) => AttributeValue::M(
                fields
                    .iter()
                    .map(|(k, v)| (k.text(), v.value(depth + 1)))
                    .collect(),
            ),
            Attr::Ss(items) => AttributeValue::Ss(items.iter().map(Text::text).collect()),
            Attr::Ns(items) => AttributeValue::Ns(items.iter().map(Number::text).collect()),
            Attr::B(bytes) => AttributeValue::B(Blob::new(bytes.clone())),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct RawItem {
    sk: Text,
    ordinal: Option<Number>,
    fields: Vec<(Name, Attr)>,
}

impl RawItem {
    fn item(&self) -> Item {
        let mut item: Item = self
            .fields
            .iter()
            .map(|(k, v)| (k.text(), v.value(1)))
            .collect();
        item.insert("sk".into(), AttributeValue::S(self.sk.text()));
        if let Some(ordinal) = &self.ordinal {
            item.insert("ordinal".into(), AttributeValue::N(ordinal.text()));
        }
        item
    }
}

#[derive(Arbitrary, Debug)]
struct RawItems {
    sources: Vec<RawItem>,
    tables: Vec<RawItem>,
}

/// `{"sources": [...], "tables": [...]}`: each item a JSON object of attributes, as `config
/// push` writes them (`sk`, `ordinal` and the fields).
fn json_items(data: &[u8]) -> Option<(Vec<Item>, Vec<Item>)> {
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    let list = |name: &str| -> Option<Vec<Item>> {
        value
            .get(name)?
            .as_array()?
            .iter()
            .map(|item| {
                let object = item.as_object()?;
                Some(
                    object
                        .iter()
                        .map(|(k, v)| (k.clone(), from_json(v)))
                        .collect::<HashMap<_, _>>(),
                )
            })
            .collect()
    };
    Some((list("sources")?, list("tables")?))
}

fn check(sources: &[Item], tables: &[Item]) {
    match config_from_items("fuzz", sources, tables) {
        Ok(config) => assert!(config.validate().is_ok()),
        Err(ConfigStoreError::Empty { .. }) => assert!(sources.is_empty() && tables.is_empty()),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some((sources, tables)) = json_items(data) {
        check(&sources, &tables);
    }
    let mut u = Unstructured::new(data);
    if let Ok(raw) = RawItems::arbitrary(&mut u) {
        let sources: Vec<Item> = raw.sources.iter().map(RawItem::item).collect();
        let tables: Vec<Item> = raw.tables.iter().map(RawItem::item).collect();
        check(&sources, &tables);
    }
});
