//! MariaDB fixtures: a throwaway database per test on the local server (dropped on Drop),
//! configs pointing at it, and fingerprints computed by the server to compare with
//! [`crate::arrow_fingerprints`] of the Parquet sluice wrote.

use std::collections::BTreeMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use crate::Fingerprint;

/// Where the local MariaDB listens; override with SLUICE_TEST_MYSQL (a URL without database).
pub fn my_server_url() -> String {
    std::env::var("SLUICE_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// A database created for one test and dropped when the value is dropped.
pub struct MyTestDb {
    pub name: String,
    pub url: String,
}

impl MyTestDb {
    pub async fn create(label: &str) -> MyTestDb {
        let name = format!(
            "sluice_t_{label}_{}",
            sluice_core::RunId::new().to_string().to_lowercase()
        );
        let mut admin = my_connect(&my_server_url()).await;
        admin
            .query_drop(format!(
                "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            ))
            .await
            .unwrap();
        let _ = admin.disconnect().await;
        MyTestDb {
            url: format!("{}/{name}", my_server_url()),
            name,
        }
    }

    /// A connection to the database in UTC with utf8mb4, like sluice's own sessions.
    pub async fn conn(&self) -> Conn {
        let mut conn = my_connect(&self.url).await;
        conn.query_drop("SET NAMES utf8mb4, time_zone = '+00:00'")
            .await
            .unwrap();
        conn
    }
}

impl Drop for MyTestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        crate::clean_up(async move {
            let mut admin = my_connect(&my_server_url()).await;
            // A test that panicked may leave its own connection open, inside a transaction
            // whose metadata lock would make the DROP wait for ever (lock_wait_timeout is a
            // year by default): end such connections first, and bound the wait.
            let ids: Vec<u64> = admin
                .exec(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
                    (name.as_str(),),
                )
                .await
                .unwrap_or_default();
            for id in ids {
                let _ = admin.query_drop(format!("KILL {id}")).await;
            }
            let _ = admin.query_drop("SET SESSION lock_wait_timeout = 60").await;
            let _ = admin
                .query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
                .await;
            let _ = admin.disconnect().await;
        });
    }
}

/// A MariaDB user made for a test, allowed to `SELECT` in the test's database only (from any
/// host and from `localhost`), dropped with the value.
pub struct MyUser {
    pub name: String,
}

impl MyUser {
    /// Creates `<prefix>_<the database's last 8 characters>`, with `password` if given.
    pub async fn create(db: &MyTestDb, prefix: &str, password: Option<&str>) -> MyUser {
        let name = format!("{prefix}_{}", &db.name[db.name.len() - 8..]);
        let identified = password
            .map(|p| format!(" IDENTIFIED BY '{p}'"))
            .unwrap_or_default();
        let mut conn = db.conn().await;
        conn.query_drop(format!(
            "CREATE USER '{name}'@'%'{identified}; CREATE USER '{name}'@'localhost'{identified};
             GRANT SELECT ON `{0}`.* TO '{name}'@'%'; GRANT SELECT ON `{0}`.* TO '{name}'@'localhost';",
            db.name
        ))
        .await
        .unwrap();
        MyUser { name }
    }
}

impl Drop for MyUser {
    fn drop(&mut self) {
        let user = self.name.clone();
        crate::clean_up(async move {
            let mut admin = my_connect(&my_server_url()).await;
            let _ = admin
                .query_drop(format!(
                    "DROP USER IF EXISTS '{user}'@'%', '{user}'@'localhost'"
                ))
                .await;
        });
    }
}

pub async fn my_connect(url: &str) -> Conn {
    let opts = OptsBuilder::from_opts(Opts::from_url(url).unwrap()).prefer_socket(false);
    Conn::new(opts).await.unwrap_or_else(|e| {
        panic!("cannot connect to {url}: {e} (is MariaDB running? scripts/setup starts it)")
    })
}

/// A config with one MariaDB source `shop` pointing at `db`, and the given tables section.
pub fn mysql_config(db: &MyTestDb, tables_yaml: &str) -> String {
    format!(
        "sources:\n  - name: shop\n    engine: mysql\n    connection:\n      url: {}\n      sslmode: disable\ntables:\n{tables_yaml}",
        db.url
    )
}

/// The canonical text of a column's values on the server side, in the form
/// [`crate::arrow_fingerprints`] produces from Arrow (None: floats, compared by sum).
fn canonical(column: &str, data_type: &str, column_type: &str) -> Option<String> {
    let c = format!("`{}`", column.replace('`', "``"));
    Some(match data_type {
        "float" | "double" => return None,
        "date" => format!("CAST(DATEDIFF({c}, '1970-01-01') AS CHAR)"),
        "datetime" | "timestamp" => {
            format!("CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {c}) AS CHAR)")
        }
        // Extracted with column_types: {c: boolean}.
        "tinyint" if column_type.starts_with("tinyint(1)") => {
            format!("IF({c} IS NULL, NULL, IF({c} <> 0, 'true', 'false'))")
        }
        _ => format!("CAST({c} AS CHAR)"),
    })
}

/// Fingerprints of every column of a table, computed by the server: per column, the
/// non-NULL count and the md5 of the values' canonical texts sorted bytewise.
pub async fn my_fingerprints(
    conn: &mut Conn,
    table: &str,
    filter: Option<&str>,
) -> (i64, BTreeMap<String, Fingerprint>) {
    conn.query_drop("SET SESSION group_concat_max_len = 1073741824")
        .await
        .unwrap();
    let columns: Vec<(String, String, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (table,),
        )
        .await
        .unwrap();
    let where_sql = filter.map(|f| format!(" WHERE {f}")).unwrap_or_default();
    let count: i64 = conn
        .query_first(format!("SELECT COUNT(*) FROM `{table}`{where_sql}"))
        .await
        .unwrap()
        .unwrap();
    let mut out = BTreeMap::new();
    for (column, data_type, column_type) in columns {
        let c = format!("`{column}`");
        let fp = match canonical(&column, &data_type, &column_type) {
            Some(expr) => {
                let (n, md5): (i64, String) = conn
                    .query_first(format!(
                        "SELECT COUNT({c}), COALESCE(MD5(GROUP_CONCAT({expr} ORDER BY CAST({expr} AS BINARY) SEPARATOR '\\n')), MD5('')) FROM `{table}`{where_sql}"
                    ))
                    .await
                    .unwrap()
                    .unwrap();
                Fingerprint::Exact { count: n, md5 }
            }
            None => {
                let (n, sum): (i64, f64) = conn
                    .query_first(format!(
                        "SELECT COUNT({c}), COALESCE(SUM({c}), 0) FROM `{table}`{where_sql}"
                    ))
                    .await
                    .unwrap()
                    .unwrap();
                Fingerprint::Float { count: n, sum }
            }
        };
        out.insert(column, fp);
    }
    (count, out)
}

/// Asserts that the batches hold exactly the rows of the server's table (optionally filtered).
pub async fn assert_same_as_mysql(
    conn: &mut Conn,
    table: &str,
    filter: Option<&str>,
    batches: &[arrow::record_batch::RecordBatch],
) {
    let (my_rows, my) = my_fingerprints(conn, table, filter).await;
    let (arrow_rows, arrow) = crate::arrow_fingerprints(batches);
    assert_eq!(arrow_rows, my_rows, "{table}: row count");
    assert_eq!(
        arrow.keys().collect::<Vec<_>>(),
        my.keys().collect::<Vec<_>>(),
        "{table}: columns"
    );
    for (column, expected) in &my {
        arrow[column].assert_matches(expected, &format!("{table}.{column}"));
    }
}

/// The shop tables as sluice tables of a MariaDB source, flags read as booleans.
pub const SHOP_TABLES_YAML: &str = "  - source: shop
    table: customers
    primary_key: [customer_id]
    column_types: { is_active: boolean }
  - source: shop
    table: products
    primary_key: [product_id]
    column_types: { in_stock: boolean }
  - source: shop
    table: orders
    primary_key: [order_id]
    partition: { column: order_id, chunks: 3 }
  - source: shop
    table: order_items
    primary_key: [order_id, line_no]
";
