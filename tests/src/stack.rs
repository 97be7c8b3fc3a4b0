//! The whole serverless flow on this machine: the three functions as their real binaries
//! under `cargo lambda watch` (the Lambda runtime API and function URLs), the async-invoke
//! shim in front of it (`scripts/lambda_shim`: Event invocations, retries, on-failure
//! destinations), moto for S3, DynamoDB, Glue and Secrets Manager, and the Snowflake
//! stand-in. Used by the end-to-end test and by `scripts/demo`.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::config_store::ConfigStore;
use sluice::state::dynamo::DynamoStateStore;
use sluice::state::prelude::*;
use sluice::warehouse::Statement;
use sluice::warehouse::snowflake::SnowflakeClient;
use sluice_core::Config;

use crate::moto::{MotoServer, REGION, unique_name};
use crate::process::die_with_parent;
use crate::snowflake::{ACCOUNT, KeyPair, Options, StandIn, USER, split_script, workspace};

/// Where the function binaries are, and what the extract function should crash on.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Directory holding `trigger`, `extract` and `finalize` (e.g. `target/debug`).
    pub bin_dir: PathBuf,
    /// `FAILPOINTS` for the extract function (needs a build with `--features failpoints`).
    pub extract_failpoints: Option<String>,
    /// Where the processes' logs go.
    pub log_dir: PathBuf,
    /// More environment for every function (settings under test).
    pub env: Vec<(String, String)>,
    /// Instances of the extract function polling the runtime API, i.e. how many chunks can
    /// extract at once, as Lambda would scale it (0 means 1). The shim delivers at least that
    /// many async events at once.
    pub extract_instances: usize,
    /// The shim delivers every extract event that succeeded once more (`--duplicate extract`),
    /// as Lambda's at-least-once async delivery may.
    pub duplicate_extract: bool,
}

struct Process {
    name: String,
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct LocalStack {
    pub moto: &'static MotoServer,
    pub standin: StandIn,
    pub snowflake: Arc<SnowflakeClient>,
    pub database: String,
    pub bucket: String,
    pub prefix: String,
    pub state_table: String,
    pub config_table: String,
    pub glue_database: String,
    pub watch_port: u16,
    pub shim_port: u16,
    pub log_dir: PathBuf,
    http: reqwest::Client,
    // Stopped on drop, in this order: the functions first, so their supervisors do not start
    // them again when the runtime API goes away under them.
    functions: Vec<FunctionProcess>,
    watch: Process,
    shim: Process,
}

/// A function's process, started again when it exits, as Lambda starts a new execution
/// environment when one dies. The runtime client in a function can give up on its own (when
/// `cargo lambda watch` drops its long poll, `lambda_runtime::run` returns `IncompleteMessage`
/// and the process ends), and a stack whose function stopped would leave every later event
/// unanswered until the test times out. At most [`MAX_RESTARTS`] times; each is logged.
struct FunctionProcess {
    name: String,
    stop: Arc<AtomicBool>,
    pid: Arc<AtomicU32>,
    supervisor: Option<std::thread::JoinHandle<()>>,
}

const MAX_RESTARTS: u32 = 5;

impl FunctionProcess {
    fn start(
        name: &str,
        command: impl Fn() -> Command + Send + 'static,
        log_dir: &Path,
    ) -> FunctionProcess {
        let log = log_dir.join(format!("{name}.log"));
        let stop = Arc::new(AtomicBool::new(false));
        let pid = Arc::new(AtomicU32::new(0));
        let mut child = start_logged(name, command(), &log, false);
        pid.store(child.id(), Ordering::Relaxed);
        let supervisor = {
            let (name, stop, pid) = (name.to_owned(), stop.clone(), pid.clone());
            std::thread::spawn(move || {
                let mut restarts = 0;
                loop {
                    let status = loop {
                        if stop.load(Ordering::Relaxed) {
                            let _ = child.kill();
                            let _ = child.wait();
                            return;
                        }
                        match child.try_wait() {
                            Ok(Some(status)) => break status,
                            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                            Err(_) => return,
                        }
                    };
                    if restarts == MAX_RESTARTS {
                        return;
                    }
                    restarts += 1;
                    if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(&log) {
                        use std::io::Write;
                        let _ = writeln!(
                            file,
                            "[stack] {name} exited ({status}); started again ({restarts} of {MAX_RESTARTS})"
                        );
                    }
                    child = start_logged(&name, command(), &log, true);
                    pid.store(child.id(), Ordering::Relaxed);
                }
            })
        };
        FunctionProcess {
            name: name.to_owned(),
            stop,
            pid,
            supervisor: Some(supervisor),
        }
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(120);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr} within 120 s; its log: {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn(name: &str, command: Command, log_dir: &Path) -> Process {
    let child = start_logged(name, command, &log_dir.join(format!("{name}.log")), false);
    Process {
        name: name.to_owned(),
        child,
    }
}

/// Starts `command` with its output in `log` (appended to with `append`), dying with us.
fn start_logged(name: &str, mut command: Command, log: &Path, append: bool) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(log)
        .expect("cannot create a log file");
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file);
    die_with_parent(&mut command);
    command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({e}); run scripts/setup"))
}

impl LocalStack {
    /// Provisions a stack of its own (bucket, tables, Glue database, secrets, config items,
    /// Snowflake database) for `config` and starts the functions. Source connections in
    /// `config` are moved into Secrets Manager secrets, as in production: each source's
    /// `connection.url` becomes a secret and the stored config carries only its ARN.
    pub async fn start(label: &str, config: &Config, options: &StackOptions) -> LocalStack {
        // One request at a time, as DynamoDB serializes the writes to one item: the stack runs
        // many functions at once, and moto checks a condition and writes in separate steps
        // (see crate::moto), which would let two holders take one lease, claim or slot.
        let moto = MotoServer::shared_serial();
        let sdk = moto.sdk_config().await;
        std::fs::create_dir_all(&options.log_dir).expect("cannot create the log directory");

        // Snowflake: a database of the stack's own, the stage over the bucket's prefix and
        // the gold example from infra/.
        let standin = StandIn::start(&Options {
            s3_endpoint: Some(moto.endpoint()),
            ..Options::default()
        });
        let sf_config = standin.config(label);
        let database = sf_config.database.clone().expect("database");
        let snowflake = Arc::new(
            SnowflakeClient::new(sf_config, KeyPair::shared().private_key())
                .expect("Snowflake client"),
        );

        let bucket = moto.bucket_with(label, Vec::new()).await;
        let prefix = "lake".to_owned();
        let state_table = unique_name(&format!("{label}-state"));
        let config_table = unique_name(&format!("{label}-config"));
        let glue_database = unique_name(&format!("{label}_glue")).replace('-', "_");
        DynamoStateStore::new(&sdk, state_table.clone())
            .create_table()
            .await
            .expect("state table");
        let store = ConfigStore::new(&sdk, config_table.clone());
        store.create_table().await.expect("config table");
        aws_sdk_glue::Client::new(&sdk)
            .create_database()
            .database_input(
                aws_sdk_glue::types::DatabaseInput::builder()
                    .name(&glue_database)
                    .build()
                    .expect("database input"),
            )
            .send()
            .await
            .expect("Glue database");

        let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
        let key_arn = secrets
            .create_secret()
            .name(unique_name("snowflake-key"))
            .secret_string(&KeyPair::shared().private_pem)
            .send()
            .await
            .expect("key secret")
            .arn
            .expect("arn");
        let mut stored = config.clone();
        for source in &mut stored.sources {
            // A secret needs a password; the local MariaDB's root has none, so MySQL sources
            // keep their URL (PostgreSQL's trust auth accepts any password).
            if source.engine != sluice_core::Engine::Postgres {
                continue;
            }
            let Some(url) = source.connection.url.take() else {
                continue;
            };
            let secret = database_secret(&url);
            let arn = secrets
                .create_secret()
                .name(unique_name(&format!("db-{}", source.name)))
                .secret_string(secret.to_string())
                .send()
                .await
                .expect("source secret")
                .arn
                .expect("arn");
            source.connection.secret_arn = Some(arn);
        }
        store.push(&stored).await.expect("config push");

        let stage = format!("\"{database}\".RAW.SLUICE_STAGE");
        let mut setup = vec![
            "CREATE SCHEMA IF NOT EXISTS RAW".to_owned(),
            format!("CREATE STAGE IF NOT EXISTS {stage} URL = 's3://{bucket}/{prefix}/'"),
        ];
        let gold = std::fs::read_to_string(
            workspace().join("infra/snowflake/gold/daily_order_revenue.sql"),
        )
        .expect("gold example");
        setup.extend(split_script(&gold));
        for sql in setup {
            snowflake
                .execute(&Statement::new(sql))
                .await
                .expect("Snowflake set-up");
        }

        // The Lambda runtime API (cargo lambda watch, functions started by us), then the shim.
        let log_dir = options.log_dir.clone();
        let watch_port = free_port();
        let cargo_lambda = std::env::var("SLUICE_CARGO_LAMBDA")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace().join("target/tools/cargo-lambda/bin/cargo-lambda"));
        let extract_instances = options.extract_instances.max(1);
        let mut watch = Command::new(&cargo_lambda);
        watch
            .current_dir(workspace())
            .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1"])
            .args(["-P", &watch_port.to_string()])
            .args(["--concurrency", &extract_instances.to_string()]);
        let watch = spawn("cargo-lambda-watch", watch, &log_dir);
        wait_for_port(
            watch_port,
            "cargo lambda watch",
            &log_dir.join("cargo-lambda-watch.log"),
        );

        let shim_port = free_port();
        let python = workspace().join("target/tools/moto/bin/python");
        let mut shim = Command::new(if python.exists() {
            python
        } else {
            "python3".into()
        });
        shim.arg(workspace().join("scripts/lambda_shim/server.py"))
            .args(["--host", "127.0.0.1", "--port", &shim_port.to_string()])
            .args(["--upstream", &format!("http://127.0.0.1:{watch_port}")])
            .args([
                "--on-failure",
                "extract=finalize",
                "--on-failure",
                "finalize=finalize",
            ])
            .args(["--workers", &(extract_instances + 3).max(4).to_string()]);
        if options.duplicate_extract {
            shim.args(["--duplicate", "extract"]);
        }
        let shim = spawn("lambda-shim", shim, &log_dir);
        wait_for_port(
            shim_port,
            "the Lambda shim",
            &log_dir.join("lambda-shim.log"),
        );

        let mut functions = Vec::new();
        let instances = (0..extract_instances).map(|i| {
            (
                "extract",
                if i == 0 {
                    "extract".to_owned()
                } else {
                    format!("extract-{i}")
                },
            )
        });
        let all = [("trigger", "trigger".to_owned())]
            .into_iter()
            .chain(instances)
            .chain([("finalize", "finalize".to_owned())]);
        for (name, process) in all {
            let mut env: Vec<(String, String)> = vec![
                ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
                (
                    "AWS_LAMBDA_RUNTIME_API".into(),
                    format!("http://127.0.0.1:{watch_port}/.rt/{name}"),
                ),
                ("AWS_LAMBDA_FUNCTION_NAME".into(), name.into()),
                ("AWS_LAMBDA_FUNCTION_VERSION".into(), "1".into()),
                ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), "1024".into()),
                ("AWS_REGION".into(), REGION.into()),
                ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
                ("AWS_ENDPOINT_URL".into(), moto.endpoint()),
                (
                    "AWS_ENDPOINT_URL_LAMBDA".into(),
                    format!("http://127.0.0.1:{shim_port}"),
                ),
                ("SLUICE_OUTPUT".into(), format!("s3://{bucket}/{prefix}")),
                ("SLUICE_STATE_TABLE".into(), state_table.clone()),
                ("SLUICE_CONFIG_TABLE".into(), config_table.clone()),
                ("SLUICE_GLUE_DATABASE".into(), glue_database.clone()),
                ("SLUICE_EXTRACT_FUNCTION".into(), "extract".into()),
                ("SLUICE_FINALIZE_FUNCTION".into(), "finalize".into()),
                ("SLUICE_SNOWFLAKE_ACCOUNT".into(), ACCOUNT.into()),
                ("SLUICE_SNOWFLAKE_USER".into(), USER.into()),
                (
                    "SLUICE_SNOWFLAKE_PRIVATE_KEY_SECRET".into(),
                    key_arn.clone(),
                ),
                ("SLUICE_SNOWFLAKE_DATABASE".into(), database.clone()),
                ("SLUICE_SNOWFLAKE_WAREHOUSE".into(), "LOAD_WH".into()),
                ("SLUICE_SNOWFLAKE_ROLE".into(), "SLUICE".into()),
                ("SLUICE_SNOWFLAKE_URL".into(), standin.base_url()),
                ("RUST_LOG".into(), "info".into()),
            ];
            env.extend(options.env.iter().cloned());
            if name == "extract"
                && let Some(failpoints) = &options.extract_failpoints
            {
                env.push(("FAILPOINTS".into(), failpoints.clone()));
            }
            let program = options.bin_dir.join(name);
            let command = move || {
                let mut command = Command::new(&program);
                command.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
                command
            };
            functions.push(FunctionProcess::start(&process, command, &log_dir));
        }

        LocalStack {
            moto,
            standin,
            snowflake,
            database,
            bucket,
            prefix,
            state_table,
            config_table,
            glue_database,
            watch_port,
            shim_port,
            log_dir,
            http: http_client(),
            watch,
            shim,
            functions,
        }
    }

    /// The trigger's URL for `endpoint` (`ingest`, `ingest_async`, `status`), as its function
    /// URL on the emulator: the request reaches the handler as an HTTP event.
    pub fn trigger_url(&self, endpoint: &str) -> String {
        format!(
            "http://127.0.0.1:{}/lambda-url/trigger/{endpoint}",
            self.watch_port
        )
    }

    /// Sends `rows` (`[row, arg, …]`) as Snowflake's external function does. Returns status and
    /// body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        endpoint: &str,
        batch_id: Option<&str>,
        rows: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, self.trigger_url(endpoint))
            .timeout(Duration::from_secs(120));
        for (name, value) in snowflake_headers(batch_id) {
            request = request.header(name, value);
        }
        if let Some(rows) = rows {
            request = request
                .header("content-type", "application/json")
                .body(json!({ "data": rows }).to_string());
        }
        let response = request.send().await.expect("the trigger did not answer");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// `SELECT sluice.ingest(...)` for each `(source, table)`, following Snowflake's async
    /// protocol: POST (202), then GET polls with the same batch id until 200. Returns each
    /// row's result, in row order.
    pub async fn ingest(&self, tables: &[(&str, &str)]) -> Vec<Value> {
        let batch_id = real_shape_batch_id();
        let rows: Vec<Value> = tables
            .iter()
            .enumerate()
            .map(|(i, (source, table))| json!([i, source, table]))
            .collect();
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "ingest",
                Some(&batch_id),
                Some(Value::Array(rows)),
            )
            .await;
        let body = match status {
            200 => body,
            202 => self.poll(&batch_id).await,
            other => panic!("POST /ingest answered {other}: {body}"),
        };
        let mut results: Vec<(u64, Value)> = body["data"]
            .as_array()
            .unwrap_or_else(|| panic!("no data in {body}"))
            .iter()
            .map(|r| (r[0].as_u64().expect("row number"), r[1].clone()))
            .collect();
        results.sort_by_key(|(row, _)| *row);
        results.into_iter().map(|(_, v)| v).collect()
    }

    /// Polls a batch until it answers 200 (bounded: five minutes).
    pub async fn poll(&self, batch_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (status, body) = self
                .call(reqwest::Method::GET, "ingest", Some(batch_id), None)
                .await;
            match status {
                200 => return body,
                202 => {}
                other => panic!("GET /ingest answered {other}: {body}"),
            }
            assert!(
                Instant::now() < deadline,
                "batch {batch_id} still running after 5 minutes; logs in {}",
                self.log_dir.display()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until the shim has delivered every asynchronous invocation (bounded: two
    /// minutes), and returns its counters.
    pub async fn settle(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let stats: Value = self
                .http
                .get(format!("http://127.0.0.1:{}/_shim/idle", self.shim_port))
                .send()
                .await
                .expect("shim")
                .json()
                .await
                .expect("shim stats");
            if stats["queued"] == 0 && stats["in_flight"] == 0 {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "the shim never went idle: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn state(&self) -> DynamoStateStore {
        DynamoStateStore::new(&self.moto.sdk_config().await, self.state_table.clone())
    }

    /// Replaces the stored config, as `sluice config push` does (sources keep their secrets).
    pub async fn push_tables(&self, tables: Vec<sluice_core::TableConfig>) {
        let store = ConfigStore::new(&self.moto.sdk_config().await, self.config_table.clone());
        let mut config = store.load().await.expect("config");
        config.tables = tables;
        store.push(&config).await.expect("config push");
    }

    /// The state store's view of a run.
    pub async fn run(&self, run_id: &str) -> sluice_core::RunRecord {
        self.state()
            .await
            .get_run(run_id.parse().expect("run id"))
            .await
            .expect("state")
            .expect("run exists")
    }

    pub async fn query(&self, sql: &str) -> sluice::warehouse::QueryResult {
        self.snowflake
            .execute(&Statement::new(sql))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A log file's lines, for evidence of what a process did.
    pub fn log_lines(&self, name: &str) -> Vec<String> {
        std::fs::File::open(self.log_dir.join(format!("{name}.log")))
            .map(|f| BufReader::new(f).lines().map_while(Result::ok).collect())
            .unwrap_or_default()
    }

    /// The names of the processes of the stack, for a summary.
    pub fn processes(&self) -> Vec<String> {
        std::iter::once(&self.watch)
            .chain(std::iter::once(&self.shim))
            .map(|p| format!("{} (pid {})", p.name, p.child.id()))
            .chain(
                self.functions
                    .iter()
                    .map(|f| format!("{} (pid {})", f.name, f.pid.load(Ordering::Relaxed))),
            )
            .collect()
    }
}

/// A plain HTTP client for loopback calls (rustls needs its provider chosen first).
pub fn http_client() -> reqwest::Client {
    sluice::aws::install_crypto_provider();
    // Every request here goes to a local server that answers at once; one that does not is
    // stuck, and the test fails instead of hanging.
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("an HTTP client builds")
}

/// The Secrets Manager JSON for a PostgreSQL URL, read by tokio-postgres's own parser.
fn database_secret(url: &str) -> Value {
    let config: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    json!({
        "host": host,
        "port": config.get_ports().first().copied().unwrap_or(5432),
        "username": config.get_user().unwrap_or("postgres"),
        // Trust auth on loopback: any password is accepted, and a secret must have one.
        "password": "unused",
        "dbname": config.get_dbname().unwrap_or("postgres"),
    })
}

/// A fresh batch id in the shape real Snowflake traffic carries
/// (`01b02bdf-0001-7b58-0003-27d60056b5a6:1:1:0:0`: a query id, then counters).
pub fn real_shape_batch_id() -> String {
    let hex: String = sluice_core::RunId::new()
        .to_string()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    // The ULID's random end, so ids made in one millisecond still differ.
    let hex = &hex[hex.len() - 32..];
    format!(
        "{}-{}-{}-{}-{}:1:1:0:0",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// What `scripts/demo` and `scripts/stack` print about a running stack.
impl LocalStack {
    /// The stack's endpoints and names, as JSON (`scripts/stack` keeps it in `endpoints.json`).
    pub fn endpoints(&self) -> Value {
        json!({
            "ingest": self.trigger_url("ingest"),
            "ingest_async": self.trigger_url("ingest_async"),
            "status": self.trigger_url("status"),
            "lambda_runtime_api": format!("http://127.0.0.1:{}", self.watch_port),
            "lambda_shim": format!("http://127.0.0.1:{}", self.shim_port),
            "moto": self.moto.endpoint(),
            "bucket": self.bucket,
            "prefix": self.prefix,
            "state_table": self.state_table,
            "config_table": self.config_table,
            "glue_database": self.glue_database,
            "snowflake_url": self.standin.base_url(),
            "snowflake_database": self.database,
            "log_dir": self.log_dir,
            "processes": self.processes(),
        })
    }

    /// The stack's pieces, one per line, for a person.
    pub fn summary(&self) -> String {
        [
            format!(
                "  bucket        s3://{}/{} (moto {})",
                self.bucket,
                self.prefix,
                self.moto.endpoint()
            ),
            format!(
                "  DynamoDB      {} (state), {} (config)",
                self.state_table, self.config_table
            ),
            format!("  Glue          {}", self.glue_database),
            format!(
                "  Snowflake     database {} on the stand-in {}",
                self.database,
                self.standin.base_url()
            ),
            format!("  functions     {}", self.processes().join(", ")),
            format!("  ingest        {}", self.trigger_url("ingest")),
            format!("  ingest_async  {}", self.trigger_url("ingest_async")),
            format!("  status        {}", self.trigger_url("status")),
            format!("  logs          {}", self.log_dir.display()),
        ]
        .join("\n")
    }
}

/// Reads `config_path`, starts a [`LocalStack`] for it (functions from `bin_dir`, logs in
/// `log_dir`) and prints its [`summary`](LocalStack::summary): what `local_stack_demo` and
/// `local_stack_up` begin with.
pub async fn start_and_print(
    label: &str,
    config_path: &str,
    bin_dir: &str,
    log_dir: &str,
) -> (Config, LocalStack) {
    let yaml = std::fs::read_to_string(config_path).expect("cannot read the config");
    let config = Config::from_yaml(&yaml, config_path).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let stack = LocalStack::start(
        label,
        &config,
        &StackOptions {
            bin_dir: PathBuf::from(bin_dir),
            extract_failpoints: None,
            log_dir: PathBuf::from(log_dir),
            env: Vec::new(),
            extract_instances: 1,
            duplicate_extract: false,
        },
    )
    .await;
    println!("Local stack up in {:.1}s:", started.elapsed().as_secs_f64());
    println!("{}", stack.summary());
    (config, stack)
}

/// The headers Snowflake sends with every external-function request, from the recorded shape
/// in `tests/fixtures/external_function/ingest_post.json` (all `sf-external-function-*`
/// headers and Snowflake's user agent), with `batch_id` as the batch id, or none.
pub fn snowflake_headers(batch_id: Option<&str>) -> Vec<(String, String)> {
    let path =
        crate::snowflake::workspace().join("tests/fixtures/external_function/ingest_post.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fixture["headers"]
        .as_object()
        .expect("headers")
        .iter()
        .filter(|(name, _)| name.as_str() != "content-type")
        .filter_map(|(name, value)| {
            let value = if name == "sf-external-function-query-batch-id" {
                batch_id?.to_owned()
            } else {
                value.as_str().expect("a header value").to_owned()
            };
            Some((name.clone(), value))
        })
        .collect()
}
