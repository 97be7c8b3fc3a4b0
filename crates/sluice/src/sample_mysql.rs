//! The "shop" sample in MariaDB: the same four tables, row counts and values as the
//! PostgreSQL generator in [`crate::sample`], generated with MariaDB's sequence engine
//! (`seq_1_to_N`), so both engines can be extracted and compared.
//!
//! Type choices where MySQL has no exact twin: `timestamptz` → `timestamp(6)` (UTC-based),
//! `timestamp` → `datetime(6)`, `jsonb`/`json` → `json` holding the text PostgreSQL prints
//! (jsonb's key order and spacing, json_build_object's ` : `), `uuid` → `char(36)` (MariaDB's
//! `uuid` type refuses md5-made values, whose version nibble is not a real UUID version),
//! `boolean` → `tinyint(1)` (extract it with `column_types: {col: boolean}`), `real` →
//! `float`. MariaDB's `timestamp` ends in 2038, which bounds the scale (see [`MAX_SCALE`]).

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use thiserror::Error;

use crate::sample::{
    CUSTOMERS_PER_SCALE, ORDERS_PER_SCALE, PRODUCTS_PER_SCALE, SHOP_TABLES, ShopCounts,
};
use crate::source::mysql::my_message;

/// customers.created_at grows by 37 min 13.123457 s per customer from 2023-01-01; beyond
/// this scale it would pass MariaDB's last TIMESTAMP (2038-01-19).
pub const MAX_SCALE: u32 = 200;

#[derive(Debug, Error)]
#[error("creating the MariaDB shop sample: {0}")]
pub struct MysqlSampleError(String);

fn sql_error(e: mysql_async::Error) -> MysqlSampleError {
    MysqlSampleError(my_message(&e))
}

/// The DDL and data statements of the shop at `scale`, for the connection's database
/// (numbers only are interpolated).
pub fn shop_mysql_statements(scale: u32) -> Result<Vec<String>, MysqlSampleError> {
    if scale > MAX_SCALE {
        return Err(MysqlSampleError(format!(
            "scale {scale} is above {MAX_SCALE}: customers.created_at would pass MariaDB's last TIMESTAMP (2038-01-19)"
        )));
    }
    let scale = u64::from(scale.max(1));
    let customers = CUSTOMERS_PER_SCALE * scale;
    let products = PRODUCTS_PER_SCALE * scale;
    let orders = ORDERS_PER_SCALE * scale;
    Ok(vec![
        "DROP TABLE IF EXISTS order_items, orders, products, customers".into(),
        "CREATE TABLE customers (
            customer_id    bigint PRIMARY KEY,
            email          text NOT NULL,
            full_name      text NOT NULL,
            country        char(2) NOT NULL,
            segment        char(8) NOT NULL,
            loyalty_points int,
            is_active      boolean NOT NULL,
            profile        json,
            external_id    char(36) CHARACTER SET ascii NOT NULL,
            created_at     timestamp(6) NOT NULL DEFAULT '1970-01-02 00:00:00',
            updated_at     datetime(6) NOT NULL,
            notes          text
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            .into(),
        format!(
            "INSERT INTO customers
             SELECT i,
                    CONCAT('customer', i, '@example.com'),
                    CONCAT(ELT(1 + i % 10, 'Ada','Bjørn','Chloé','Dmitri','Eun-ji','Farah','Giulia','Hiro','Inès','José'),
                           ' ', ELT(1 + (i * 7) % 10, 'Lovelace','Øster','Dubois','Ivanov','Kim','Haddad','Rossi','Tanaka','Müller','Núñez')),
                    ELT(1 + (i * 3) % 10, 'US','DE','FR','GB','NL','SE','JP','BR','IN','CA'),
                    ELT(1 + i % 4, 'retail','b2b','partner','staff'),
                    CASE WHEN i % 7 = 0 THEN NULL ELSE (i * 37) % 5000 END,
                    i % 11 <> 0,
                    CASE WHEN i % 5 = 0 THEN NULL
                         ELSE CONCAT('{{\"tags\": [\"t', i % 4, '\", \"émoji 🛒\"], \"tier\": \"',
                                     ELT(1 + i % 3, 'bronze','silver','gold'), '\", \"newsletter\": ',
                                     IF(i % 2 = 0, 'true', 'false'), '}}') END,
                    INSERT(INSERT(INSERT(INSERT(MD5(CONCAT('customer-', i)), 21, 0, '-'), 17, 0, '-'), 13, 0, '-'), 9, 0, '-'),
                    TIMESTAMP '2023-01-01 00:00:00' + INTERVAL (i * 2233123457) MICROSECOND,
                    TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (i * 667654321) MICROSECOND,
                    CASE i % 3 WHEN 0 THEN NULL WHEN 1 THEN '' ELSE CONCAT(' Ünïcödé note ', i, ' ✓ ') END
             FROM (SELECT seq AS i FROM seq_1_to_{customers}) AS g"
        ),
        "CREATE TABLE products (
            product_id int PRIMARY KEY,
            sku        varchar(32) NOT NULL,
            name       text NOT NULL,
            category   text NOT NULL,
            price      decimal(12,2) NOT NULL,
            weight_kg  decimal(8,3),
            attributes json,
            in_stock   boolean NOT NULL,
            rating     float,
            updated_at datetime(6) NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            .into(),
        format!(
            "INSERT INTO products
             SELECT i,
                    CONCAT('SKU-', LPAD(i, 6, '0')),
                    CONCAT(ELT(1 + i % 5, 'Widget','Gadget','Gizmo','Doohickey','Thingamajig'), ' ', i),
                    ELT(1 + (i * 5) % 6, 'tools','garden','kitchen','toys','books','café'),
                    ((i * 7919) % 100000) / 100.0 + 0.99,
                    CASE WHEN i % 9 = 0 THEN NULL ELSE ((i * 131) % 50000) / 1000.0 END,
                    CASE WHEN i % 4 = 0 THEN NULL
                         ELSE CONCAT('{{\"color\" : \"', ELT(1 + i % 3, 'red','green','blue'), '\", \"size\" : ', i % 40, '}}') END,
                    i % 6 <> 0,
                    CASE WHEN i % 8 = 0 THEN NULL ELSE ((i * 17) % 50) / 10.0 END,
                    TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (i * 3181000001) MICROSECOND
             FROM (SELECT seq AS i FROM seq_1_to_{products}) AS g"
        ),
        "CREATE TABLE orders (
            order_id      bigint PRIMARY KEY,
            customer_id   bigint NOT NULL,
            status        varchar(16) NOT NULL,
            currency      char(3) NOT NULL,
            total         decimal(14,2) NOT NULL,
            discount_rate double,
            ordered_at    timestamp(6) NOT NULL DEFAULT '1970-01-02 00:00:00',
            shipped_on    date,
            item_count    smallint NOT NULL,
            updated_at    datetime(6) NOT NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            .into(),
        format!(
            "INSERT INTO orders
             SELECT i,
                    1 + (i * 7) % {customers},
                    ELT(1 + i % 5, 'new','paid','shipped','delivered','cancelled'),
                    ELT(1 + i % 3, 'USD','EUR','GBP'),
                    ((i * 104729) % 10000000) / 100.0 + 1,
                    CASE WHEN i % 4 = 0 THEN NULL ELSE (i % 20) / 100.0 END,
                    TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (i * 63333333) MICROSECOND,
                    CASE WHEN i % 5 IN (2, 3) THEN DATE '2024-01-02' + INTERVAL (i % 400) DAY ELSE NULL END,
                    1 + i % 4,
                    TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (i * 67000001) MICROSECOND
             FROM (SELECT seq AS i FROM seq_1_to_{orders}) AS g"
        ),
        "CREATE TABLE order_items (
            order_id   bigint NOT NULL,
            line_no    smallint NOT NULL,
            product_id int NOT NULL,
            quantity   int NOT NULL,
            unit_price decimal(12,2) NOT NULL,
            line_total decimal(14,2) NOT NULL,
            updated_at datetime(6) NOT NULL,
            PRIMARY KEY (order_id, line_no)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            .into(),
        format!(
            "INSERT INTO order_items
             SELECT o.order_id,
                    l.seq,
                    1 + (o.order_id * 13 + l.seq * 101) % {products},
                    1 + (o.order_id + l.seq) % 5,
                    ((o.order_id * 31 + l.seq * 7) % 20000) / 100.0 + 0.5,
                    (1 + (o.order_id + l.seq) % 5) * (((o.order_id * 31 + l.seq * 7) % 20000) / 100.0 + 0.5),
                    o.updated_at
             FROM orders o JOIN seq_1_to_4 l ON l.seq <= o.item_count"
        ),
        "ANALYZE TABLE customers, products, orders, order_items".into(),
    ])
}

/// Creates (or re-creates) the shop tables in the connection's database. Only the four shop
/// tables are dropped; nothing else in the database is touched.
pub async fn create_shop_mysql(
    conn: &mut Conn,
    scale: u32,
) -> Result<ShopCounts, MysqlSampleError> {
    // UTC, so timestamp(6) columns hold the same instants as PostgreSQL's timestamptz.
    conn.query_drop("SET NAMES utf8mb4, time_zone = '+00:00'")
        .await
        .map_err(sql_error)?;
    for statement in shop_mysql_statements(scale)? {
        conn.query_drop(statement).await.map_err(sql_error)?;
    }
    let mut counts = [0u64; 4];
    for (count, table) in counts.iter_mut().zip(SHOP_TABLES) {
        let n: Option<u64> = conn
            .query_first(format!("SELECT COUNT(*) FROM `{table}`"))
            .await
            .map_err(sql_error)?;
        *count = n.unwrap_or(0);
    }
    Ok(ShopCounts {
        customers: counts[0],
        products: counts[1],
        orders: counts[2],
        order_items: counts[3],
    })
}

fn builder(url: &str) -> Result<OptsBuilder, MysqlSampleError> {
    let url = match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_owned(),
    };
    let opts = Opts::from_url(&url)
        .map_err(|e| MysqlSampleError(format!("not a valid MySQL URL: {e}")))?;
    Ok(OptsBuilder::from_opts(opts).prefer_socket(false))
}

async fn open(builder: OptsBuilder) -> Result<Conn, MysqlSampleError> {
    Conn::new(builder)
        .await
        .map_err(|e| MysqlSampleError(format!("cannot connect: {}", my_message(&e))))
}

/// Connects for sample generation (not an extraction path). `mariadb://` URLs are accepted.
pub async fn connect(url: &str) -> Result<Conn, MysqlSampleError> {
    open(builder(url)?).await
}

/// The database a URL names, if any.
pub fn url_database(url: &str) -> Result<Option<String>, MysqlSampleError> {
    Ok(Opts::from(builder(url)?).db_name().map(str::to_owned))
}

/// Creates `database` on the server `url` points at, if it does not exist yet.
pub async fn ensure_database(url: &str, database: &str) -> Result<(), MysqlSampleError> {
    sluice_core::ident::check_identifier(database)
        .map_err(|e| MysqlSampleError(format!("database {e}")))?;
    // Connected to no database: the one in the URL may not exist yet.
    let mut admin = open(builder(url)?.db_name(None::<String>)).await?;
    admin
        .query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
            sluice_core::Dialect::Mysql.quote(database)
        ))
        .await
        .map_err(sql_error)?;
    let _ = admin.disconnect().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_bounded_by_the_timestamp_range() {
        assert!(shop_mysql_statements(MAX_SCALE).is_ok());
        let err = shop_mysql_statements(MAX_SCALE + 1).unwrap_err();
        assert!(err.to_string().contains("2038"), "{err}");
        let statements = shop_mysql_statements(2).unwrap();
        assert!(statements.iter().any(|s| s.contains("seq_1_to_10000")));
    }
}
