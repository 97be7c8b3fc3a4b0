//! The Snowflake SQL API v2 stand-in (`scripts/snowflake_standin/server.py`, SQL on fakesnow)
//! on a free loopback port, with an RSA key pair made for the test binary.
//!
//! [`StandIn::shared`] starts one server per test binary, killed at process exit (PDEATHSIG,
//! as for moto); tests isolate themselves with a database of their own
//! ([`StandIn::config`]). [`StandIn::start`] starts a private one with other options (always
//! 202, an S3 endpoint, …), killed on drop. Keys come from the `openssl` command line tool.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sluice::warehouse::snowflake::{PrivateKey, SnowflakeClient, SnowflakeConfig};

use crate::process::{die_with_parent, start_for_process};

/// The account and user the stand-in expects in the JWT.
pub const ACCOUNT: &str = "SLUICEORG-TEST";
pub const USER: &str = "SLUICE_LOADER";
/// SQL containing this is executed by the shared stand-in and then answered 503, as if the
/// answer were lost on the way.
/// The shop tables as the warehouse tests load them: incremental orders in two chunks with
/// named targets, products reloaded whole with a JSON column, and the gold example reading
/// orders (last, at the top level: the configuration's `gold:`).
pub const SHOP_WAREHOUSE_TABLES: &str = "  - source: shop
    table: public.orders
    primary_key: [order_id]
    load: {mode: incremental, cursor: updated_at, lookback: 15m}
    partition: {column: order_id, chunks: 2}
    target:
      raw_table: RAW.SHOP_ORDERS
      staging_table: STAGING.SHOP_ORDERS
  - source: shop
    table: public.products
    primary_key: [product_id]
    load: {mode: full}
    target: {json_columns: [attributes]}
gold:
  - {procedure: GOLD.REFRESH_DAILY_REVENUE, inputs: [shop/public.orders]}
";

pub const LOSE_ANSWER: &str = "sluice-test:lose-answer";

/// An RSA key pair in the formats Snowflake users have: PKCS#8 PEM, plain and encrypted.
pub struct KeyPair {
    _dir: tempfile::TempDir,
    pub private_pem: String,
    pub encrypted_pem: String,
    pub passphrase: String,
    pub public_pem: PathBuf,
}

impl KeyPair {
    /// A new 2048-bit key pair.
    pub fn generate() -> KeyPair {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("rsa_key.p8");
        let encrypted = dir.path().join("rsa_key_enc.p8");
        let public = dir.path().join("rsa_key.pub");
        let passphrase = format!("pass-{}", sluice_core::RunId::new());
        let pass_arg = format!("pass:{passphrase}");
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            path(&private),
        ]);
        openssl(&[
            "pkey",
            "-in",
            path(&private),
            "-pubout",
            "-out",
            path(&public),
        ]);
        openssl(&[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            path(&private),
            "-out",
            path(&encrypted),
            "-passout",
            &pass_arg,
        ]);
        KeyPair {
            private_pem: std::fs::read_to_string(&private).unwrap(),
            encrypted_pem: std::fs::read_to_string(&encrypted).unwrap(),
            passphrase,
            public_pem: public,
            _dir: dir,
        }
    }

    /// The test binary's key pair, the one the shared stand-in trusts.
    pub fn shared() -> &'static KeyPair {
        static SHARED: OnceLock<KeyPair> = OnceLock::new();
        SHARED.get_or_init(KeyPair::generate)
    }

    pub fn private_key(&self) -> PrivateKey {
        PrivateKey::from_pkcs8_pem(&self.private_pem, None).unwrap()
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}); install it (scripts/setup)"));
    assert!(
        output.status.success(),
        "openssl {} failed: {}",
        args[0],
        String::from_utf8_lossy(&output.stderr)
    );
}

/// How to start a stand-in.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Answer 202 to every submission (`--sync-limit-seconds 0`).
    pub always_202: bool,
    /// Rows per result partition (0 = one partition).
    pub partition_rows: usize,
    /// The S3 endpoint (moto) that s3:// stages read from.
    pub s3_endpoint: Option<String>,
}

pub struct StandIn {
    pub port: u16,
    child: Option<Child>,
}

impl StandIn {
    /// The test binary's shared stand-in, trusting [`KeyPair::shared`].
    pub fn shared() -> &'static StandIn {
        static SHARED: OnceLock<StandIn> = OnceLock::new();
        SHARED.get_or_init(|| {
            let port = start_for_process(|| {
                let server = StandIn::spawn(&Options::default(), &[LOSE_ANSWER]);
                let port = server.port;
                // The child is kept for the rest of the process's life.
                std::mem::forget(server);
                port
            });
            StandIn { port, child: None }
        })
    }

    /// A private stand-in, killed on drop.
    pub fn start(options: &Options) -> StandIn {
        StandIn::spawn(options, &[])
    }

    fn spawn(options: &Options, lose_answer: &[&str]) -> StandIn {
        let workspace = workspace();
        let python = std::env::var("SLUICE_SNOWFLAKE_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace.join("target/tools/snowflake/bin/python"));
        let log = std::env::temp_dir().join(format!(
            "sluice-standin-{}-{}.log",
            std::process::id(),
            sluice_core::RunId::new()
        ));
        let mut command = Command::new(&python);
        command
            .arg(workspace.join("scripts/snowflake_standin/server.py"))
            .args(["--port", "0", "--account", ACCOUNT, "--user", USER])
            .arg("--public-key")
            .arg(&KeyPair::shared().public_pem)
            .args(["--partition-rows", &options.partition_rows.to_string()]);
        if options.always_202 {
            command.args(["--sync-limit-seconds", "0"]);
        }
        if let Some(endpoint) = &options.s3_endpoint {
            command.args(["--s3-endpoint", endpoint]);
        }
        for marker in lose_answer {
            command.args(["--lose-answer-when-contains", marker]);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        die_with_parent(&mut command);
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}); run scripts/setup to install the stand-in",
                python.display()
            )
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_default();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "the Snowflake stand-in did not report ready ({line:?}); its log: {}",
                    log.display()
                )
            });
        StandIn {
            port,
            child: Some(child),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client config for a database of the test's own.
    pub fn config(&self, label: &str) -> SnowflakeConfig {
        let mut config = SnowflakeConfig::new(ACCOUNT, USER);
        config.base_url = Some(self.base_url());
        config.database = Some(format!(
            "T_{}_{}",
            label.to_uppercase(),
            sluice_core::RunId::new()
        ));
        config.schema = Some("PUBLIC".into());
        config.warehouse = Some("LOAD_WH".into());
        config.role = Some("SLUICE".into());
        config
    }

    /// A client with the shared key for a database of the test's own.
    pub fn client(&self, label: &str) -> SnowflakeClient {
        SnowflakeClient::new(self.config(label), KeyPair::shared().private_key()).unwrap()
    }

    /// One request as a client other than sluice's would send it, signed with the shared key:
    /// `body` is the whole JSON body (so a test controls `parameters`, `bindings`, …), and the
    /// answer is returned undecoded (no gzip decoding), so a test sees what went over the wire.
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<serde_json::Value>,
    ) -> RawAnswer {
        let tokens = sluice::warehouse::snowflake::jwt::TokenSource::new(
            KeyPair::shared().private_key(),
            ACCOUNT,
            USER,
        );
        let (token, _) = tokens.token().unwrap();
        sluice::aws::install_crypto_provider();
        let http = reqwest::Client::builder()
            .no_gzip()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut request = http
            .request(method, format!("{}{path_and_query}", self.base_url()))
            .bearer_auth(&token.value)
            .header("X-Snowflake-Authorization-Token-Type", "KEYPAIR_JWT");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        RawAnswer {
            status: response.status().as_u16(),
            content_encoding: response
                .headers()
                .get("content-encoding")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: response.bytes().await.unwrap().to_vec(),
        }
    }

    /// The stand-in's own counters (`GET /_standin/stats`): distinctTokens, executions, …
    pub fn stats(&self) -> serde_json::Value {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "GET /_standin/stats HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (_, body) = response.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(body).unwrap()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An answer as it came over the wire.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub content_encoding: Option<String>,
    pub body: Vec<u8>,
}

impl RawAnswer {
    /// The body as JSON (panics on a compressed or non-JSON body, naming it).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {}: not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The statements of a SQL script (`;`-separated), skipping `--` comments and keeping `;`
/// inside quotes and `$$ … $$` bodies: how an admin's worksheet would run a file.
pub fn split_script(script: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let (mut in_dollar, mut in_quote) = (false, false);
    for line in script.lines() {
        if !in_dollar && !in_quote && line.trim_start().starts_with("--") {
            continue;
        }
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' && !in_quote && chars.peek() == Some(&'$') {
                chars.next();
                in_dollar = !in_dollar;
                current.push_str("$$");
                continue;
            }
            if c == '\'' && !in_dollar {
                in_quote = !in_quote;
            }
            if c == ';' && !in_dollar && !in_quote {
                statements.push(std::mem::take(&mut current).trim().to_owned());
                continue;
            }
            current.push(c);
        }
        current.push('\n');
    }
    statements.push(current.trim().to_owned());
    statements.retain(|s| !s.is_empty());
    statements
}

/// Fingerprints of every column of a warehouse result, in the canonical texts
/// [`crate::pg_fingerprints`] computes in PostgreSQL: integers and decimals as PostgreSQL
/// prints them, dates as days and timestamps as microseconds since the epoch, floats summed.
/// VARIANT columns are left out (compare them as JSON).
pub fn warehouse_fingerprints(
    result: &sluice::warehouse::QueryResult,
) -> std::collections::BTreeMap<String, crate::Fingerprint> {
    use sluice::warehouse::Value;
    let mut out = std::collections::BTreeMap::new();
    for (i, column) in result.columns.iter().enumerate() {
        if column.name.starts_with("_sluice_") || column.type_name == "variant" {
            continue;
        }
        let values: Vec<&Value> = result
            .rows
            .iter()
            .map(|r| &r[i])
            .filter(|v| **v != Value::Null)
            .collect();
        let count = values.len() as i64;
        let fingerprint = if column.type_name == "real" {
            let sum = values
                .iter()
                .map(|v| match v {
                    Value::Real(x) => *x,
                    other => panic!("{}: {other:?} is not a real", column.name),
                })
                .sum();
            crate::Fingerprint::Float { count, sum }
        } else {
            let texts = values
                .iter()
                .map(|v| match v {
                    Value::Number { unscaled, scale } => {
                        crate::decimal_text(*unscaled, *scale as i8)
                    }
                    Value::Text(t) => t.clone(),
                    Value::Boolean(b) => b.to_string(),
                    Value::Date(d) => (*d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
                        .num_days()
                        .to_string(),
                    Value::TimestampNtz(t) => t.and_utc().timestamp_micros().to_string(),
                    Value::TimestampLtz(t) => t.timestamp_micros().to_string(),
                    Value::TimestampTz(t) => t.timestamp_micros().to_string(),
                    other => panic!("{}: no canonical text for {other:?}", column.name),
                })
                .collect();
            crate::Fingerprint::Exact {
                count,
                md5: crate::md5_of_sorted(texts),
            }
        };
        out.insert(column.name.clone(), fingerprint);
    }
    out
}

/// STAGING holds exactly the source table: the same row count, the same columns (VARIANT ones
/// aside: compare those as JSON) and, per column, the same non-NULL count and checksum of
/// canonical values (floats: the same sum). `staging` is a quoted, qualified name.
pub async fn assert_staging_equals_source(
    client: &SnowflakeClient,
    pg: &tokio_postgres::Client,
    staging: &str,
    source: &str,
) {
    let result = select_all(client, staging).await;
    let (pg_rows, pg) = crate::pg_fingerprints(pg, source, None).await;
    assert_result_matches(&result, staging, pg_rows, &pg);
}

/// [`assert_staging_equals_source`] for a MySQL/MariaDB source table: `conn` is connected to
/// the table's database.
pub async fn assert_staging_equals_mysql(
    client: &SnowflakeClient,
    conn: &mut mysql_async::Conn,
    staging: &str,
    source: &str,
) {
    let result = select_all(client, staging).await;
    let (rows, expected) = crate::mysql::my_fingerprints(conn, source, None).await;
    assert_result_matches(&result, staging, rows, &expected);
}

async fn select_all(client: &SnowflakeClient, staging: &str) -> sluice::warehouse::QueryResult {
    client
        .execute(&sluice::warehouse::Statement::new(format!(
            "SELECT * FROM {staging}"
        )))
        .await
        .unwrap_or_else(|e| panic!("{staging}: {e}"))
}

/// A warehouse result holds `rows` rows whose columns have exactly the `source` fingerprints.
fn assert_result_matches(
    result: &sluice::warehouse::QueryResult,
    staging: &str,
    rows: i64,
    pg: &std::collections::BTreeMap<String, crate::Fingerprint>,
) {
    assert_eq!(result.rows.len() as i64, rows, "{staging}: row count");
    let ours = warehouse_fingerprints(result);
    let variant: Vec<String> = result
        .columns
        .iter()
        .filter(|c| c.type_name == "variant")
        .map(|c| c.name.clone())
        .collect();
    let expected: Vec<&String> = pg.keys().filter(|k| !variant.contains(k)).collect();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        expected,
        "{staging}: columns"
    );
    for (column, fingerprint) in &ours {
        fingerprint.assert_matches(&pg[column], &format!("{staging}.{column}"));
    }
}

/// What loading one run's Parquet files into a RAW table through a stand-in produced.
#[derive(Debug)]
pub struct RawLoad {
    /// The generated `CREATE TABLE` text.
    pub ddl: String,
    /// Column → type, as the DDL text states them, in order.
    pub ddl_types: Vec<(String, String)>,
    /// Column → `DATA_TYPE` as the stand-in's `INFORMATION_SCHEMA.COLUMNS` reports it, with
    /// `(NUMERIC_PRECISION,NUMERIC_SCALE)` appended for NUMBER.
    pub catalog_types: std::collections::BTreeMap<String, String>,
    /// The `rows_loaded` COPY reported, summed over its statements.
    pub rows_loaded: i64,
    /// `COUNT(*)` of the RAW table after the COPY.
    pub rows: i64,
    /// The RAW table's first column and its VARCHAR columns after the COPY, ordered by the
    /// first.
    pub table: sluice::warehouse::QueryResult,
}

impl RawLoad {
    /// The values of `column` by the row's first column (an integer id), as the stand-in
    /// returns them: text, or `None` for SQL NULL.
    pub fn text_by_id(&self, column: &str) -> std::collections::BTreeMap<i64, Option<String>> {
        let index = self
            .table
            .column_index(column)
            .unwrap_or_else(|| panic!("RAW has no column {column}"));
        self.table
            .rows
            .iter()
            .map(|row| {
                let value = match &row[index] {
                    sluice::warehouse::Value::Null => None,
                    sluice::warehouse::Value::Text(t) => Some(t.clone()),
                    other => panic!("{column}: not text: {other:?}"),
                };
                (row[0].as_i64().expect("an integer id first"), value)
            })
            .collect()
    }
}

/// The `"column" TYPE` lines of a generated `CREATE TABLE` (one column per line).
pub fn ddl_column_types(ddl: &str) -> Vec<(String, String)> {
    ddl.lines()
        .filter_map(|line| {
            let line = line.trim().trim_end_matches(',');
            let rest = line.strip_prefix('"')?;
            let end = rest.find("\" ")?;
            Some((
                rest[..end].replace("\"\"", "\""),
                rest[end + 2..].trim().to_owned(),
            ))
        })
        .collect()
}

/// Puts `files` (key, bytes) into a fresh moto bucket, creates the RAW table from
/// `raw_table_ddl(schema)` on a private stand-in reading that bucket, COPYs the files with
/// `copy_into_raw` and reads back what the table became.
pub async fn load_raw_through_standin(
    label: &str,
    files: Vec<(String, Vec<u8>)>,
    schema: &arrow::datatypes::Schema,
) -> RawLoad {
    use sluice::warehouse::Statement;
    use sluice_core::snowflake::{ObjectName, copy_into_raw, raw_table_ddl};

    let moto = crate::moto::MotoServer::shared();
    let keys: Vec<String> = files.iter().map(|(k, _)| k.clone()).collect();
    let bucket = moto
        .bucket_with(
            label,
            files.iter().map(|(k, b)| (k.as_str(), b.clone())).collect(),
        )
        .await;
    let standin = StandIn::start(&Options {
        s3_endpoint: Some(moto.endpoint()),
        ..Options::default()
    });
    let config = standin.config(label);
    let database = config.database.clone().unwrap();
    let client = SnowflakeClient::new(config, KeyPair::shared().private_key()).unwrap();
    let table = ObjectName::new(&database, "RAW", label);
    let stage = ObjectName::new(&database, "RAW", "sluice_stage");
    let ddl = raw_table_ddl(&table, schema).unwrap();
    for sql in [
        "CREATE SCHEMA IF NOT EXISTS RAW".to_owned(),
        ddl.clone(),
        format!("CREATE STAGE {} URL = 's3://{bucket}/'", stage.quoted()),
    ] {
        client.execute(&Statement::new(sql)).await.unwrap();
    }
    let mut rows_loaded = 0;
    for copy in copy_into_raw(&table, &stage, &keys) {
        let result = client
            .execute(&Statement::new(&copy))
            .await
            .unwrap_or_else(|e| panic!("{copy}: {e}"));
        let column = result.column_index("rows_loaded").unwrap();
        rows_loaded += result
            .rows
            .iter()
            .map(|r| r[column].as_i64().unwrap())
            .sum::<i64>();
    }
    let count = client
        .execute(&Statement::new(format!(
            "SELECT COUNT(*) FROM {}",
            table.quoted()
        )))
        .await
        .unwrap();
    let catalog = client
        .execute(&Statement::new(format!(
            "SELECT column_name, data_type, numeric_precision, numeric_scale \
             FROM {}.INFORMATION_SCHEMA.COLUMNS \
             WHERE table_schema = 'RAW' AND table_name = '{label}'",
            sluice_core::snowflake::quote(&database)
        )))
        .await
        .unwrap();
    // The first column (an id) and every text column: dates out of Python's range would not
    // come back through the stand-in, and text is what these rows are read for.
    let ddl_types = ddl_column_types(&ddl);
    let text_columns: Vec<String> = ddl_types
        .iter()
        .enumerate()
        .filter(|(i, (_, t))| *i == 0 || t == "VARCHAR")
        .map(|(_, (c, _))| sluice_core::snowflake::quote(c))
        .collect();
    let rows = client
        .execute(&Statement::new(format!(
            "SELECT {} FROM {} ORDER BY 1",
            text_columns.join(", "),
            table.quoted()
        )))
        .await
        .unwrap();
    RawLoad {
        table: rows,
        ddl_types: ddl_column_types(&ddl),
        ddl,
        catalog_types: catalog
            .rows
            .iter()
            .map(|r| {
                let name = r[1].as_str().unwrap();
                let data_type = match (r[2].as_i64(), r[3].as_i64()) {
                    (Some(p), Some(s)) if name == "NUMBER" => format!("NUMBER({p},{s})"),
                    _ => name.to_owned(),
                };
                (r[0].as_str().unwrap().to_owned(), data_type)
            })
            .collect(),
        rows_loaded,
        rows: count.rows[0][0].as_i64().unwrap(),
    }
}

/// [`load_raw_through_standin`] for a completed run of a local [`crate::Harness`]: its
/// manifest's files under their keys, and the schema the loader uses (`manifest_schema`).
pub async fn load_run_through_standin(
    h: &crate::Harness,
    record: &sluice_core::RunRecord,
    label: &str,
) -> RawLoad {
    let manifest = h.manifest(record);
    let schema = sluice_core::snowflake::manifest_schema(&manifest.schema).unwrap();
    let files = manifest
        .files
        .iter()
        .map(|f| {
            (
                f.key.clone(),
                std::fs::read(h.out_dir().join(&f.key)).unwrap(),
            )
        })
        .collect();
    load_raw_through_standin(label, files, &schema).await
}

/// Asserts that the RAW table got exactly `expected` (column, Snowflake type as the DDL
/// states it), that `expected` covers every column of `matrix` plus sluice's own, and that
/// COPY loaded `source_rows` rows. With `catalog`, the stand-in's INFORMATION_SCHEMA must agree
/// too: NUMBER with the same precision and scale, other types by name (the DDL type up to its
/// parenthesis, `_NTZ`/`_TZ` kept), VARCHAR reported as TEXT as Snowflake itself does.
pub fn assert_raw_types(
    load: &RawLoad,
    matrix: &[&str],
    expected: &[(&str, &str)],
    source_rows: i64,
    catalog: bool,
) {
    let named: std::collections::BTreeSet<&str> = expected.iter().map(|(c, _)| *c).collect();
    for column in matrix {
        assert!(named.contains(column), "no expected type for {column}");
    }
    let mut want: Vec<(String, String)> = expected
        .iter()
        .map(|(c, t)| ((*c).to_owned(), (*t).to_owned()))
        .collect();
    for (c, t) in [
        ("_sluice_run_id", "VARCHAR"),
        ("_sluice_extracted_at", "TIMESTAMP_TZ(6)"),
        ("_sluice_file", "VARCHAR"),
        ("_sluice_row", "NUMBER(19,0)"),
    ] {
        want.push((c.to_owned(), t.to_owned()));
    }
    let mut got = load.ddl_types.clone();
    want.sort();
    got.sort();
    let wrong: Vec<String> = want
        .iter()
        .filter(|w| !got.contains(w))
        .map(|(c, t)| {
            let actual = got.iter().find(|(g, _)| g == c).map(|(_, t)| t.as_str());
            format!("{c}: expected {t}, DDL says {actual:?}")
        })
        .chain(
            got.iter()
                .filter(|g| !want.iter().any(|(c, _)| *c == g.0))
                .map(|(c, t)| format!("{c}: unexpected column of type {t}")),
        )
        .collect();
    assert!(wrong.is_empty(), "{}\n{}", wrong.join("\n"), load.ddl);
    assert_eq!(load.rows_loaded, source_rows, "rows COPY reported");
    assert_eq!(load.rows, source_rows, "rows in RAW");
    if catalog {
        let wrong: Vec<String> = want
            .iter()
            .filter_map(|(c, t)| {
                let name = match t.split('(').next().unwrap() {
                    "NUMBER" => t.as_str(),
                    "VARCHAR" => "TEXT",
                    other => other,
                };
                let reported = load.catalog_types.get(c);
                (reported.map(String::as_str) != Some(name))
                    .then(|| format!("{c}: DDL {t}, INFORMATION_SCHEMA {reported:?}"))
            })
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}

/// A lake harness loading into a fresh stand-in database of its own.
pub struct Warehoused {
    /// The harness, its pipeline loading through `loader`.
    pub h: crate::s3::S3Harness,
    pub client: Arc<SnowflakeClient>,
    pub loader: Arc<sluice::warehouse::load::Loader>,
    pub standin: StandIn,
}

/// Starts a stand-in reading the shared moto's S3, creates database `label` in it with its
/// stage over `h`'s lake, and attaches a loader into it to `h`'s pipeline.
pub async fn warehoused(label: &str, h: crate::s3::S3Harness) -> Warehoused {
    let standin = StandIn::start(&Options {
        s3_endpoint: Some(crate::moto::MotoServer::shared().endpoint()),
        ..Options::default()
    });
    let sf = standin.config(label);
    let database = sf.database.clone().unwrap_or_default();
    let client = Arc::new(SnowflakeClient::new(sf, KeyPair::shared().private_key()).unwrap());
    let loader = stage_and_loader(
        &client,
        client.clone() as Arc<dyn sluice::warehouse::Warehouse>,
        &database,
        &h.bucket,
        &h.prefix,
    )
    .await;
    Warehoused {
        h: h.with_warehouse(loader.clone()),
        client,
        loader,
        standin,
    }
}

/// The admin's one-time set-up in a stand-in database (the RAW schema and the stage over
/// `s3://bucket/prefix/`), and a loader into it through `warehouse`.
pub async fn stage_and_loader(
    client: &SnowflakeClient,
    warehouse: Arc<dyn sluice::warehouse::Warehouse>,
    database: &str,
    bucket: &str,
    prefix: &str,
) -> Arc<sluice::warehouse::load::Loader> {
    let stage = sluice_core::snowflake::ObjectName::new(database, "RAW", "SLUICE_STAGE");
    for sql in [
        "CREATE SCHEMA IF NOT EXISTS RAW".to_owned(),
        format!(
            "CREATE STAGE IF NOT EXISTS {} URL = 's3://{bucket}/{prefix}/'",
            stage.quoted()
        ),
    ] {
        client
            .execute(&sluice::warehouse::Statement::new(sql))
            .await
            .unwrap();
    }
    Arc::new(sluice::warehouse::load::Loader::new(
        warehouse,
        sluice::warehouse::load::WarehouseTarget {
            database: database.to_owned(),
            stage,
        },
    ))
}
