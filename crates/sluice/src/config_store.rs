//! Configuration in DynamoDB, where production reads it: one item per source and one per
//! table, each the same model as in the YAML file (the YAML is how it is authored and
//! reviewed; `sluice config push` writes it, `sluice config pull` reads back an equal
//! configuration in canonical YAML, which pushes back as a no-op).
//!
//! Items (partition `pk`, sort `sk`): `pk = SOURCE`, `sk = <name>` for a source,
//! `pk = TABLE`, `sk = <source>/<table>` for a table and `pk = GOLD`, `sk = <procedure>` for a
//! gold procedure; `ordinal` keeps the order of the file;
//! every other attribute is a field of the model, as a native DynamoDB value (maps, lists,
//! strings, numbers, booleans), so an item reads in the console like its YAML. An item that
//! does not parse or validate is reported with the item and the field's path, e.g.
//! `tables[shop/public.orders].load.cursor: required when load.mode = incremental`.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
use serde_json::Value;
use sluice_core::config::ConfigIssue;
use sluice_core::{Config, ConfigError, SourceConfig, TableConfig};
use thiserror::Error;

use crate::ddb::{self, Item, PK, SK, get_n, get_s, s, sdk_message};

#[derive(Debug, Error)]
pub enum ConfigStoreError {
    #[error("config table {table}: {message}")]
    Storage { table: String, message: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "config table {table} holds no sources or tables; write them with `sluice config push FILE`"
    )]
    Empty { table: String },
}

pub type Result<T, E = ConfigStoreError> = std::result::Result<T, E>;

/// Attributes of an item that are not fields of the model.
const KEY_ATTRS: [&str; 3] = [PK, SK, "ordinal"];
/// Most writes in one DynamoDB transaction.
const MAX_TRANSACTION_ITEMS: usize = 100;

/// What kind of item, and under which key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ItemKey {
    kind: &'static str,
    name: String,
}

impl ItemKey {
    fn source(name: &str) -> ItemKey {
        ItemKey {
            kind: "SOURCE",
            name: name.to_owned(),
        }
    }

    fn table(key: String) -> ItemKey {
        ItemKey {
            kind: "TABLE",
            name: key,
        }
    }

    fn gold(procedure: &str) -> ItemKey {
        ItemKey {
            kind: "GOLD",
            name: procedure.to_owned(),
        }
    }

    /// `sources[shop]` / `tables[shop/public.orders]` / `gold[GOLD.X]`: the path prefix of the
    /// item's fields.
    fn path(&self) -> String {
        match self.kind {
            "SOURCE" => format!("sources[{}]", self.name),
            "GOLD" => format!("gold[{}]", self.name),
            _ => format!("tables[{}]", self.name),
        }
    }
}

impl std::fmt::Display for ItemKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.to_lowercase(), self.name)
    }
}

/// One item as stored: its key, its place in the file, and its fields as JSON.
struct StoredItem {
    key: ItemKey,
    ordinal: Option<i64>,
    fields: Value,
}

/// How one item differs between what is stored and what would be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemChange {
    /// `source shop` or `table shop/public.orders`.
    pub item: String,
    /// The item's fields as YAML: `None` when it does not exist on that side.
    pub stored: Option<String>,
    pub new: Option<String>,
}

/// What `push` changes (or, for a dry run, would change).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigDiff {
    pub changes: Vec<ItemChange>,
    /// Items whose only change is their position in the file.
    pub reordered: usize,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.reordered == 0
    }

    /// A unified-style listing: `+` lines added, `-` lines removed, per item.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for change in &self.changes {
            let (mark, title) = match (&change.stored, &change.new) {
                (None, Some(_)) => ('+', "add"),
                (Some(_), None) => ('-', "remove"),
                _ => ('~', "change"),
            };
            out.push_str(&format!("{mark} {title} {}\n", change.item));
            let old = change.stored.as_deref().unwrap_or_default();
            let new = change.new.as_deref().unwrap_or_default();
            for line in line_diff(old, new) {
                out.push_str("    ");
                out.push_str(&line);
                out.push('\n');
            }
        }
        if self.reordered > 0 {
            out.push_str(&format!(
                "~ {} item(s) only change their position in the file\n",
                self.reordered
            ));
        }
        if out.is_empty() {
            out.push_str("no changes\n");
        }
        out
    }
}

/// Lines of `new` against `old`, each prefixed `+`, `-` or ` ` (a longest-common-subsequence
/// diff; items are a few dozen lines).
fn line_diff(old: &str, new: &str) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out
}

fn yaml(fields: &Value) -> String {
    serde_yaml_ng::to_string(fields).unwrap_or_else(|e| format!("(not printable: {e})\n"))
}

pub struct ConfigStore {
    client: Client,
    table: String,
}

impl ConfigStore {
    pub fn new(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> ConfigStore {
        ConfigStore {
            client: Client::new(sdk),
            table: table.into(),
        }
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }

    fn error(&self, message: impl Into<String>) -> ConfigStoreError {
        ConfigStoreError::Storage {
            table: self.table.clone(),
            message: message.into(),
        }
    }

    /// Creates the config table with production's layout unless it exists; returns whether
    /// it was created.
    pub async fn create_table(&self) -> Result<bool> {
        ddb::create_table(&self.client, &self.table, ddb::TableKind::Config)
            .await
            .map_err(|message| self.error(message))
    }

    /// The items of the three partitions as stored: sources, tables, gold.
    async fn raw_items(&self) -> Result<ConfigItems> {
        let mut found = Vec::new();
        for kind in ["SOURCE", "TABLE", "GOLD"] {
            found.push(
                ddb::query_partition(&self.client, &self.table, s(kind))
                    .await
                    .map_err(|message| self.error(message))?,
            );
        }
        let gold = found.pop().unwrap_or_default();
        let tables = found.pop().unwrap_or_default();
        let sources = found.pop().unwrap_or_default();
        Ok(ConfigItems {
            sources,
            tables,
            gold,
        })
    }

    /// Every stored item, sources first, each in file order.
    async fn items(&self) -> Result<Vec<StoredItem>> {
        stored_items(&self.table, &self.raw_items().await?)
    }

    /// The stored configuration, parsed and validated like a file: any problem names the item
    /// and the field.
    pub async fn load(&self) -> Result<Config> {
        config_from_items(&self.table, &self.raw_items().await?)
    }

    /// What writing `config` would change.
    pub async fn diff(&self, config: &Config) -> Result<ConfigDiff> {
        Ok(self.plan_push(config).await?.0)
    }

    /// Validates `config`, then makes the table hold exactly it: changed and new items are
    /// written, items no longer in it deleted. Up to 100 changed items are written in one
    /// transaction (all or nothing); larger pushes go in transactions of 100.
    pub async fn push(&self, config: &Config) -> Result<ConfigDiff> {
        config.validate().map_err(|issues| ConfigError::Invalid {
            origin: "configuration to push".into(),
            issues,
        })?;
        let (diff, writes) = self.plan_push(config).await?;
        for batch in writes.chunks(MAX_TRANSACTION_ITEMS) {
            self.client
                .transact_write_items()
                .set_transact_items(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| self.error(sdk_message(&e)))?;
        }
        Ok(diff)
    }

    async fn plan_push(&self, config: &Config) -> Result<(ConfigDiff, Vec<TransactWriteItem>)> {
        let stored: BTreeMap<ItemKey, StoredItem> = self
            .items()
            .await?
            .into_iter()
            .map(|item| (item.key.clone(), item))
            .collect();
        let mut wanted: Vec<(ItemKey, Value)> = Vec::new();
        let to_json = |value: Result<Value, serde_json::Error>| {
            value.map_err(|e| self.error(format!("cannot encode the configuration: {e}")))
        };
        for source in &config.sources {
            wanted.push((
                ItemKey::source(&source.name),
                to_json(serde_json::to_value(source))?,
            ));
        }
        for table in &config.tables {
            wanted.push((
                ItemKey::table(table.key()),
                to_json(serde_json::to_value(table))?,
            ));
        }
        for gold in &config.gold {
            wanted.push((
                ItemKey::gold(&gold.procedure),
                to_json(serde_json::to_value(gold))?,
            ));
        }
        let mut diff = ConfigDiff::default();
        let mut writes = Vec::new();
        let mut ordinals: BTreeMap<&'static str, i64> = BTreeMap::new();
        for (key, fields) in &wanted {
            let ordinal = ordinals.entry(key.kind).or_insert(0);
            let position = *ordinal;
            *ordinal += 1;
            let old = stored.get(key);
            let same_fields = old.is_some_and(|o| o.fields == *fields);
            if same_fields && old.is_some_and(|o| o.ordinal == Some(position)) {
                continue;
            }
            if same_fields {
                diff.reordered += 1;
            } else {
                diff.changes.push(ItemChange {
                    item: key.to_string(),
                    stored: old.map(|o| yaml(&o.fields)),
                    new: Some(yaml(fields)),
                });
            }
            let mut item: Item = match fields {
                Value::Object(map) => map
                    .iter()
                    .map(|(k, v)| (k.clone(), ddb::from_json(v)))
                    .collect(),
                _ => Item::new(),
            };
            item.insert(PK.into(), s(key.kind));
            item.insert(SK.into(), s(&key.name));
            item.insert("ordinal".into(), ddb::n(position));
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .build()
                .map_err(|e| self.error(e.to_string()))?;
            writes.push(TransactWriteItem::builder().put(put).build());
        }
        for (key, old) in &stored {
            if wanted.iter().any(|(k, _)| k == key) {
                continue;
            }
            diff.changes.push(ItemChange {
                item: key.to_string(),
                stored: Some(yaml(&old.fields)),
                new: None,
            });
            let delete = Delete::builder()
                .table_name(&self.table)
                .key(PK, s(key.kind))
                .key(SK, s(&key.name))
                .build()
                .map_err(|e| self.error(e.to_string()))?;
            writes.push(TransactWriteItem::builder().delete(delete).build());
        }
        Ok((diff, writes))
    }
}

/// The items of a config table, by partition.
#[derive(Debug, Clone, Default)]
pub struct ConfigItems {
    pub sources: Vec<Item>,
    pub tables: Vec<Item>,
    pub gold: Vec<Item>,
}

/// The configuration that a config table's items hold (`sources` from partition `SOURCE`,
/// `tables` from `TABLE`, `gold` from `GOLD`, in any order), parsed and validated like a file:
/// any problem names the item and the field. What [`ConfigStore::load`] does once it has read
/// the items; pure, so it is tested and fuzzed without DynamoDB. `table` names the config
/// table in errors.
pub fn config_from_items(table: &str, found: &ConfigItems) -> Result<Config> {
    let items = stored_items(table, found)?;
    if items.is_empty() {
        return Err(ConfigStoreError::Empty {
            table: table.to_owned(),
        });
    }
    let mut config = Config::default();
    for item in &items {
        let prefix = item.key.path();
        let parse_error = |e: serde_path_to_error::Error<serde_json::Error>| {
            let path = e.path().to_string();
            ConfigError::Parse {
                origin: origin(table, &item.key),
                path: if path == "." {
                    prefix.clone()
                } else {
                    format!("{prefix}.{path}")
                },
                message: e.into_inner().to_string(),
            }
        };
        if item.key.kind == "SOURCE" {
            let source: SourceConfig =
                serde_path_to_error::deserialize(&item.fields).map_err(parse_error)?;
            if source.name != item.key.name {
                return Err(mismatch(table, &item.key, "name", &source.name).into());
            }
            config.sources.push(source);
        } else if item.key.kind == "GOLD" {
            let gold: sluice_core::gold::GoldConfig =
                serde_path_to_error::deserialize(&item.fields).map_err(parse_error)?;
            if gold.procedure != item.key.name {
                return Err(mismatch(table, &item.key, "procedure", &gold.procedure).into());
            }
            config.gold.push(gold);
        } else {
            let table_config: TableConfig =
                serde_path_to_error::deserialize(&item.fields).map_err(parse_error)?;
            if table_config.key() != item.key.name {
                return Err(mismatch(table, &item.key, "table", &table_config.key()).into());
            }
            config.tables.push(table_config);
        }
    }
    config.validate().map_err(|issues| ConfigError::Invalid {
        origin: format!("config table {table}"),
        issues: issues
            .into_iter()
            .map(|issue| name_item_in_path(issue, &config))
            .collect(),
    })?;
    Ok(config)
}

/// Every partition's items with their fields as JSON: sources first, then tables, then gold,
/// each in file order.
fn stored_items(table: &str, found: &ConfigItems) -> Result<Vec<StoredItem>> {
    let mut items = Vec::new();
    for (kind, found) in [
        ("SOURCE", &found.sources),
        ("TABLE", &found.tables),
        ("GOLD", &found.gold),
    ] {
        let mut of_kind = found
            .iter()
            .map(|item| stored_item(table, kind, item))
            .collect::<Result<Vec<_>>>()?;
        of_kind.sort_by(|a, b| {
            (a.ordinal.unwrap_or(i64::MAX), &a.key).cmp(&(b.ordinal.unwrap_or(i64::MAX), &b.key))
        });
        items.extend(of_kind);
    }
    Ok(items)
}

fn stored_item(table: &str, kind: &str, item: &Item) -> Result<StoredItem> {
    let name = get_s(item, SK).unwrap_or_default().to_owned();
    let key = match kind {
        "SOURCE" => ItemKey::source(&name),
        "GOLD" => ItemKey::gold(&name),
        _ => ItemKey::table(name),
    };
    let mut fields = serde_json::Map::new();
    for (attr, value) in item {
        if KEY_ATTRS.contains(&attr.as_str()) {
            continue;
        }
        let value = ddb::to_json(value).map_err(|message| ConfigError::Parse {
            origin: origin(table, &key),
            path: format!("{}.{attr}", key.path()),
            message,
        })?;
        fields.insert(attr.clone(), value);
    }
    Ok(StoredItem {
        ordinal: get_n(item, "ordinal"),
        key,
        fields: Value::Object(fields),
    })
}

fn origin(table: &str, key: &ItemKey) -> String {
    format!("config table {table}, item {key}")
}

fn mismatch(table: &str, key: &ItemKey, field: &str, found: &str) -> ConfigError {
    ConfigError::Parse {
        origin: origin(table, key),
        path: format!("{}.{field}", key.path()),
        message: format!(
            "the item's key (sk) is '{}' but its fields name '{found}'; they must agree",
            key.name
        ),
    }
}

/// The configuration's warnings, with paths naming items by key as in DynamoDB.
pub fn warnings(config: &Config) -> Vec<ConfigIssue> {
    config
        .warnings()
        .into_iter()
        .map(|w| name_item_in_path(w, config))
        .collect()
}

/// `tables[3].load.cursor` → `tables[shop/public.orders].load.cursor`: in DynamoDB an item
/// is found by its key, not its position.
fn name_item_in_path(issue: ConfigIssue, config: &Config) -> ConfigIssue {
    let rename = |path: &str, list: &str, name_of: &dyn Fn(usize) -> Option<String>| {
        let rest = path.strip_prefix(list)?.strip_prefix('[')?;
        let (index, tail) = rest.split_once(']')?;
        let name = name_of(index.parse().ok()?)?;
        Some(format!("{list}[{name}]{tail}"))
    };
    let path = rename(&issue.path, "tables", &|i| {
        config.tables.get(i).map(|t| t.key())
    })
    .or_else(|| {
        rename(&issue.path, "sources", &|i| {
            config.sources.get(i).map(|s| s.name.clone())
        })
    })
    .or_else(|| {
        rename(&issue.path, "gold", &|i| {
            config.gold.get(i).map(|g| g.procedure.clone())
        })
    })
    .unwrap_or(issue.path);
    ConfigIssue {
        path,
        message: issue.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_diff_marks_added_and_removed_lines() {
        let got = line_diff("a: 1\nb: 2\nc: 3\n", "a: 1\nb: 5\nc: 3\nd: 4\n");
        assert_eq!(got, vec!["  a: 1", "- b: 2", "+ b: 5", "  c: 3", "+ d: 4"]);
    }

    #[test]
    fn issue_paths_name_the_item_not_its_position() {
        let config = Config::from_yaml(
            "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\n\
             tables:\n  - source: shop\n    table: public.a\n  - source: shop\n    table: public.orders\n",
            "t",
        )
        .unwrap();
        let renamed = name_item_in_path(
            ConfigIssue {
                path: "tables[1].load.cursor".into(),
                message: "m".into(),
            },
            &config,
        );
        assert_eq!(renamed.path, "tables[shop/public.orders].load.cursor");
        let renamed = name_item_in_path(
            ConfigIssue {
                path: "sources[0].connection.url".into(),
                message: "m".into(),
            },
            &config,
        );
        assert_eq!(renamed.path, "sources[shop].connection.url");
        let kept = name_item_in_path(
            ConfigIssue {
                path: "tables".into(),
                message: "m".into(),
            },
            &config,
        );
        assert_eq!(kept.path, "tables");
    }

    fn item(fields: serde_json::Value) -> Item {
        match fields {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| (k.clone(), ddb::from_json(v)))
                .collect(),
            _ => Item::new(),
        }
    }

    /// What `load` makes of the items it read: the configuration in file order, or an error
    /// naming the item and the field.
    #[test]
    fn items_parse_into_the_configuration_or_name_the_field() {
        let source = item(serde_json::json!({
            "pk": "SOURCE", "sk": "shop", "ordinal": 0, "name": "shop", "engine": "postgres",
            "connection": {"url": "postgres://u@h/db"},
        }));
        let table = |name: &str, ordinal: i64| {
            item(serde_json::json!({
                "pk": "TABLE", "sk": format!("shop/{name}"), "ordinal": ordinal,
                "source": "shop", "table": name,
            }))
        };
        let items = |sources: &[Item], tables: &[Item], gold: &[Item]| ConfigItems {
            sources: sources.to_vec(),
            tables: tables.to_vec(),
            gold: gold.to_vec(),
        };
        let gold = |procedure: &str, inputs: serde_json::Value| {
            item(serde_json::json!({
                "pk": "GOLD", "sk": procedure, "ordinal": 0, "procedure": procedure,
                "inputs": inputs,
            }))
        };
        let config = config_from_items(
            "cfg",
            &items(
                std::slice::from_ref(&source),
                &[table("public.b", 1), table("public.a", 0)],
                &[gold("GOLD.G", serde_json::json!(["shop/public.a"]))],
            ),
        )
        .unwrap();
        let tables: Vec<_> = config.tables.iter().map(|t| t.table.as_str()).collect();
        assert_eq!(tables, ["public.a", "public.b"]);
        assert_eq!(config.gold[0].inputs, ["shop/public.a"]);
        assert!(matches!(
            config_from_items("cfg", &ConfigItems::default()),
            Err(ConfigStoreError::Empty { .. })
        ));
        let mut bad = table("public.a", 0);
        bad.insert(
            "load".into(),
            ddb::from_json(&serde_json::json!({"mode": 3})),
        );
        let e = config_from_items("cfg", &items(std::slice::from_ref(&source), &[bad], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tables[shop/public.a].load.mode"), "{e}");
        // A gold item is named by its procedure, and checked against the tables.
        let e = config_from_items(
            "cfg",
            &items(
                std::slice::from_ref(&source),
                &[table("public.a", 0)],
                &[gold("GOLD.G", serde_json::json!(["shop/public.gone"]))],
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("gold[GOLD.G].inputs[0]: 'shop/public.gone' is neither"),
            "{e}"
        );
    }
}
