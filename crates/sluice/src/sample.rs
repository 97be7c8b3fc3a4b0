//! The "shop" sample database: a deterministic, realistic small schema (customers, products,
//! orders, order_items) used by the demo, the tests and the benchmarks.
//!
//! Every value is a pure function of the row number, so two databases generated at the same
//! scale are identical. It covers the types a first real table needs: integers, exact
//! numerics, text with Unicode and empty strings, booleans, dates, timestamps with and
//! without time zone at microsecond precision, json/jsonb, uuid and NULLs.

use thiserror::Error;
use tokio_postgres::{Client, NoTls};

pub use tokio_postgres::Config as PgConfig;

use crate::source::postgres::pg_message;

/// Rows per table at scale 1; every table grows linearly with the scale.
pub const CUSTOMERS_PER_SCALE: u64 = 1_000;
pub const PRODUCTS_PER_SCALE: u64 = 200;
pub const ORDERS_PER_SCALE: u64 = 5_000;

/// The tables the generator owns, in dependency order.
pub const SHOP_TABLES: [&str; 4] = ["customers", "products", "orders", "order_items"];

#[derive(Debug, Error)]
#[error("creating the shop sample: {0}")]
pub struct SampleError(String);

/// Row counts of a generated shop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShopCounts {
    pub customers: u64,
    pub products: u64,
    pub orders: u64,
    pub order_items: u64,
}

/// The PostgreSQL DDL and data of the shop at `scale` (numbers only are interpolated).
pub fn shop_postgres_sql(schema: &str, scale: u32) -> String {
    let scale = u64::from(scale.max(1));
    let customers = CUSTOMERS_PER_SCALE * scale;
    let products = PRODUCTS_PER_SCALE * scale;
    let orders = ORDERS_PER_SCALE * scale;
    let s = sluice_core::Dialect::Postgres.quote(schema);
    format!(
        r#"
CREATE SCHEMA IF NOT EXISTS {s};
DROP TABLE IF EXISTS {s}.order_items, {s}.orders, {s}.products, {s}.customers;

CREATE TABLE {s}.customers (
    customer_id    bigint PRIMARY KEY,
    email          text NOT NULL,
    full_name      text NOT NULL,
    country        char(2) NOT NULL,
    segment        char(8) NOT NULL,
    loyalty_points integer,
    is_active      boolean NOT NULL,
    profile        jsonb,
    external_id    uuid NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamp NOT NULL,
    notes          text
);
INSERT INTO {s}.customers
SELECT i,
       'customer' || i || '@example.com',
       (ARRAY['Ada','Bjørn','Chloé','Dmitri','Eun-ji','Farah','Giulia','Hiro','Inès','José'])[1 + i % 10]
         || ' ' || (ARRAY['Lovelace','Øster','Dubois','Ivanov','Kim','Haddad','Rossi','Tanaka','Müller','Núñez'])[1 + (i * 7) % 10],
       (ARRAY['US','DE','FR','GB','NL','SE','JP','BR','IN','CA'])[1 + (i * 3) % 10],
       (ARRAY['retail','b2b','partner','staff'])[1 + i % 4],
       CASE WHEN i % 7 = 0 THEN NULL ELSE ((i * 37) % 5000)::int END,
       i % 11 <> 0,
       CASE WHEN i % 5 = 0 THEN NULL
            ELSE jsonb_build_object('tier', (ARRAY['bronze','silver','gold'])[1 + i % 3],
                                    'newsletter', i % 2 = 0,
                                    'tags', jsonb_build_array('t' || (i % 4), 'émoji 🛒')) END,
       md5('customer-' || i)::uuid,
       timestamptz '2023-01-01 00:00:00+00' + i * interval '37 minutes 13.123457 seconds',
       timestamp '2024-01-01 00:00:00' + i * interval '11 minutes 7.654321 seconds',
       CASE i % 3 WHEN 0 THEN NULL WHEN 1 THEN '' ELSE ' Ünïcödé note ' || i || ' ✓ ' END
FROM generate_series(1::bigint, {customers}) AS g(i);

CREATE TABLE {s}.products (
    product_id integer PRIMARY KEY,
    sku        varchar(32) NOT NULL,
    name       text NOT NULL,
    category   text NOT NULL,
    price      numeric(12,2) NOT NULL,
    weight_kg  numeric(8,3),
    attributes json,
    in_stock   boolean NOT NULL,
    rating     real,
    updated_at timestamp NOT NULL
);
INSERT INTO {s}.products
SELECT i,
       'SKU-' || lpad(i::text, 6, '0'),
       (ARRAY['Widget','Gadget','Gizmo','Doohickey','Thingamajig'])[1 + i % 5] || ' ' || i,
       (ARRAY['tools','garden','kitchen','toys','books','café'])[1 + (i * 5) % 6],
       ((i * 7919) % 100000) / 100.0 + 0.99,
       CASE WHEN i % 9 = 0 THEN NULL ELSE ((i * 131) % 50000) / 1000.0 END,
       CASE WHEN i % 4 = 0 THEN NULL ELSE json_build_object('color', (ARRAY['red','green','blue'])[1 + i % 3], 'size', i % 40) END,
       i % 6 <> 0,
       CASE WHEN i % 8 = 0 THEN NULL ELSE ((i * 17) % 50) / 10.0 END,
       timestamp '2024-01-01 00:00:00' + i * interval '53 minutes 1.000001 seconds'
FROM generate_series(1::bigint, {products}) AS g(i);

CREATE TABLE {s}.orders (
    order_id      bigint PRIMARY KEY,
    customer_id   bigint NOT NULL,
    status        varchar(16) NOT NULL,
    currency      char(3) NOT NULL,
    total         numeric(14,2) NOT NULL,
    discount_rate double precision,
    ordered_at    timestamptz NOT NULL,
    shipped_on    date,
    item_count    smallint NOT NULL,
    updated_at    timestamp NOT NULL
);
INSERT INTO {s}.orders
SELECT i,
       1 + (i * 7) % {customers},
       (ARRAY['new','paid','shipped','delivered','cancelled'])[1 + i % 5],
       (ARRAY['USD','EUR','GBP'])[1 + i % 3],
       ((i * 104729) % 10000000) / 100.0 + 1,
       CASE WHEN i % 4 = 0 THEN NULL ELSE (i % 20) / 100.0 END,
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute 3.333333 seconds',
       CASE WHEN i % 5 IN (2, 3) THEN date '2024-01-02' + (i % 400)::int ELSE NULL END,
       1 + i % 4,
       timestamp '2024-01-01 00:00:00' + i * interval '1 minute 7.000001 seconds'
FROM generate_series(1::bigint, {orders}) AS g(i);

CREATE TABLE {s}.order_items (
    order_id   bigint NOT NULL,
    line_no    smallint NOT NULL,
    product_id integer NOT NULL,
    quantity   integer NOT NULL,
    unit_price numeric(12,2) NOT NULL,
    line_total numeric(14,2) NOT NULL,
    updated_at timestamp NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
INSERT INTO {s}.order_items
SELECT o.order_id,
       l,
       1 + (o.order_id * 13 + l * 101) % {products},
       1 + (o.order_id + l) % 5,
       ((o.order_id * 31 + l * 7) % 20000) / 100.0 + 0.5,
       (1 + (o.order_id + l) % 5) * (((o.order_id * 31 + l * 7) % 20000) / 100.0 + 0.5),
       o.updated_at
FROM {s}.orders o, generate_series(1, o.item_count) AS l;

ANALYZE {s}.customers, {s}.products, {s}.orders, {s}.order_items;
"#
    )
}

/// Creates (or re-creates) the shop tables in `schema` of the connected database. Only the
/// four shop tables are dropped; nothing else in the database is touched.
pub async fn create_shop_postgres(
    client: &Client,
    schema: &str,
    scale: u32,
) -> Result<ShopCounts, SampleError> {
    sluice_core::ident::check_identifier(schema).map_err(|e| SampleError(format!("schema {e}")))?;
    client
        .batch_execute(&shop_postgres_sql(schema, scale))
        .await
        .map_err(|e| SampleError(pg_message(&e)))?;
    let s = sluice_core::Dialect::Postgres.quote(schema);
    let count = |table: &'static str| {
        let sql = format!("SELECT count(*) FROM {s}.{table}");
        async move {
            client
                .query_one(&sql, &[])
                .await
                .map(|r| r.get::<_, i64>(0) as u64)
                .map_err(|e| SampleError(pg_message(&e)))
        }
    };
    Ok(ShopCounts {
        customers: count("customers").await?,
        products: count("products").await?,
        orders: count("orders").await?,
        order_items: count("order_items").await?,
    })
}

/// Connects for sample generation (not an extraction path: no snapshot, no COPY).
pub async fn connect(config: &PgConfig) -> Result<Client, SampleError> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| SampleError(format!("cannot connect: {}", pg_message(&e))))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Creates `database` on the server `config` points at, if it does not exist yet.
pub async fn ensure_database(config: &PgConfig, database: &str) -> Result<(), SampleError> {
    sluice_core::ident::check_identifier(database)
        .map_err(|e| SampleError(format!("database {e}")))?;
    let mut admin = config.clone();
    admin.dbname("postgres");
    let client = connect(&admin).await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await
        .map_err(|e| SampleError(pg_message(&e)))?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!(
                "CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0",
                sluice_core::Dialect::Postgres.quote(database)
            ))
            .await
            .map_err(|e| SampleError(pg_message(&e)))?;
    }
    Ok(())
}
