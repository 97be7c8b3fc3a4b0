//! Configuration in DynamoDB (a real moto server): YAML → DynamoDB → YAML is identical, a push
//! writes only what changed, and a hand-written bad item is refused naming the item and field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use aws_sdk_dynamodb::types::AttributeValue;
use sluice::config_store::{ConfigStore, ConfigStoreError};
use sluice_core::config::Lookback;
use sluice_core::{Config, ConfigError};
use sluice_tests::moto::{MotoServer, unique_name};

async fn store() -> (ConfigStore, aws_sdk_dynamodb::Client) {
    let sdk = MotoServer::shared().sdk_config().await;
    let store = ConfigStore::new(&sdk, unique_name("config"));
    assert!(store.create_table().await.unwrap());
    (store, aws_sdk_dynamodb::Client::new(&sdk))
}

fn shop() -> (String, Config) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/config/shop.yaml");
    let config = Config::from_yaml(&std::fs::read_to_string(path).unwrap(), "shop.yaml").unwrap();
    (config.to_yaml().unwrap(), config)
}

#[tokio::test]
async fn yaml_to_dynamodb_to_yaml_is_identical_and_pushes_write_only_changes() {
    let (store, _) = store().await;
    assert!(matches!(
        store.load().await,
        Err(ConfigStoreError::Empty { .. })
    ));
    let (yaml, config) = shop();
    let diff = store.push(&config).await.unwrap();
    // One item per source, table and gold procedure.
    assert_eq!(
        diff.changes.len(),
        config.sources.len() + config.tables.len() + config.gold.len()
    );
    assert!(
        !config.gold.is_empty(),
        "the shop config has gold to round-trip"
    );
    assert!(diff.changes.iter().all(|c| c.stored.is_none()));
    let pulled = store.load().await.unwrap();
    assert_eq!(pulled, config);
    assert_eq!(
        pulled.to_yaml().unwrap(),
        yaml,
        "the round trip is identical"
    );
    assert!(store.push(&config).await.unwrap().is_empty());

    // Change one table, drop another, reorder two: the diff says exactly that.
    let mut changed = config.clone();
    changed.tables[2].load.lookback = Some(Lookback::Duration {
        micros: 30 * 60 * 1_000_000,
        spelled: "30m".into(),
    });
    let dropped = changed.tables.remove(3);
    changed.tables.swap(0, 1);
    let dry = store.diff(&changed).await.unwrap();
    let rendered = dry.render();
    assert!(
        rendered.contains("~ change table shop/public.orders"),
        "{rendered}"
    );
    assert!(rendered.contains("-   lookback: 15m"), "{rendered}");
    assert!(rendered.contains("+   lookback: 30m"), "{rendered}");
    assert!(
        rendered.contains(&format!("- remove table {}", dropped.key())),
        "{rendered}"
    );
    // The two swapped, and the four after the dropped one moved up.
    assert_eq!(dry.reordered, 6, "{rendered}");
    assert_eq!(
        store.load().await.unwrap(),
        config,
        "a dry run writes nothing"
    );
    assert_eq!(store.push(&changed).await.unwrap(), dry);
    let pulled = store.load().await.unwrap();
    assert_eq!(pulled, changed);
    assert_eq!(pulled.to_yaml().unwrap(), changed.to_yaml().unwrap());
}

#[tokio::test]
async fn an_invalid_config_is_not_pushed() {
    let (store, _) = store().await;
    let (_, mut config) = shop();
    config.tables[0].load.cursor = None;
    let err = store.push(&config).await.unwrap_err().to_string();
    assert!(
        err.contains("tables[0].load.cursor: required when load.mode = incremental"),
        "{err}"
    );
    assert!(matches!(
        store.load().await,
        Err(ConfigStoreError::Empty { .. })
    ));
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

#[tokio::test]
async fn hand_written_bad_items_are_refused_naming_the_item_and_the_field() {
    let (store, client) = store().await;
    let (_, config) = shop();
    store.push(&config).await.unwrap();
    let put = |load: AttributeValue, extra: Option<(&str, AttributeValue)>| {
        let mut request = client
            .put_item()
            .table_name(store.table_name())
            .item("pk", s("TABLE"))
            .item("sk", s("shop/public.orders"))
            .item("source", s("shop"))
            .item("table", s("public.orders"))
            .item("load", load);
        if let Some((name, value)) = extra {
            request = request.item(name, value);
        }
        request.send()
    };
    let load = |mode: &str| AttributeValue::M([("mode".to_owned(), s(mode))].into_iter().collect());

    // Valid shape, broken rule: the validation path names the item by its key.
    put(load("incremental"), None).await.unwrap();
    let err = store.load().await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ConfigStoreError::Config(ConfigError::Invalid { .. })),
        "{text}"
    );
    assert!(
        text.contains(
            "tables[shop/public.orders].load.cursor: required when load.mode = incremental"
        ),
        "{text}"
    );
    assert!(text.contains(store.table_name()), "{text}");

    // A value of the wrong kind, and an unknown field: parse errors with the item and path.
    put(load("sometimes"), None).await.unwrap();
    let text = store.load().await.unwrap_err().to_string();
    assert!(text.contains("item table shop/public.orders"), "{text}");
    assert!(
        text.contains("tables[shop/public.orders].load.mode: unknown variant `sometimes`"),
        "{text}"
    );
    put(
        load("full"),
        Some(("colums", AttributeValue::L(vec![s("a")]))),
    )
    .await
    .unwrap();
    let text = store.load().await.unwrap_err().to_string();
    assert!(
        text.contains("tables[shop/public.orders].colums: unknown field `colums`"),
        "{text}"
    );
    put(load("full"), Some(("batch_rows", s("many"))))
        .await
        .unwrap();
    let text = store.load().await.unwrap_err().to_string();
    assert!(
        text.contains("tables[shop/public.orders].batch_rows: invalid type"),
        "{text}"
    );

    // An item whose key disagrees with its fields.
    client
        .put_item()
        .table_name(store.table_name())
        .item("pk", s("TABLE"))
        .item("sk", s("shop/public.other"))
        .item("source", s("shop"))
        .item("table", s("public.elsewhere"))
        .send()
        .await
        .unwrap();
    put(load("full"), None).await.unwrap();
    let text = store.load().await.unwrap_err().to_string();
    assert!(
        text.contains("tables[shop/public.other].table: the item's key (sk) is 'shop/public.other' but its fields name 'shop/public.elsewhere'"),
        "{text}"
    );
}

/// `connection.max_connections` in a source item: a number that round-trips, and a bad one
/// (out of range, or not a number) refused naming the source item and the field.
#[tokio::test]
async fn a_source_item_keeps_max_connections_and_refuses_a_bad_one() {
    let (store, client) = store().await;
    let (_, mut config) = shop();
    config.sources[0].connection.max_connections = Some(3);
    store.push(&config).await.unwrap();
    assert_eq!(store.load().await.unwrap(), config);
    let item = client
        .get_item()
        .table_name(store.table_name())
        .key("pk", s("SOURCE"))
        .key("sk", s(&config.sources[0].name))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let connection = item["connection"].as_m().unwrap();
    assert_eq!(
        connection["max_connections"],
        AttributeValue::N("3".into()),
        "a native number, as the console shows it: {item:?}"
    );

    let name = config.sources[0].name.clone();
    let put = |value: AttributeValue| {
        let mut connection = connection.clone();
        connection.insert("max_connections".into(), value);
        let mut item = item.clone();
        item.insert("connection".into(), AttributeValue::M(connection));
        client
            .put_item()
            .table_name(store.table_name())
            .set_item(Some(item))
            .send()
    };
    put(AttributeValue::N("0".into())).await.unwrap();
    let err = store.load().await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ConfigStoreError::Config(ConfigError::Invalid { .. })),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "sources[{name}].connection.max_connections: must be a whole number from 1 to 1000, not 0"
        )),
        "{text}"
    );
    put(s("3")).await.unwrap();
    let text = store.load().await.unwrap_err().to_string();
    assert!(
        text.contains(&format!(
            "sources[{name}].connection.max_connections: must be a whole number from 1 to 1000, not '3'"
        )),
        "{text}"
    );
}
