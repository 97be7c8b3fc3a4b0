//! The `sluice` command: run tables locally, check configuration, tell a run's story, and
//! create the sample database. A thin shell over the `sluice` engine: parse arguments, build
//! the adapters, call one engine function, print the result.

mod aws_args;
mod backend;
mod cdc;
mod check;
mod output_args;
mod render;
mod snowflake;
mod status_tables;
mod trigger;
mod watermark;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use sluice::ddb::TableKind;
use sluice::secrets::SecretResolver;
use sluice::source::{Credentials, Source};
use sluice::{Pipeline, PipelineOptions, RunObserver, RunStart};
use sluice_core::run::ChunkOutcome;
use sluice_core::{Config, RunId, RunRecord, RunStatus};

use crate::aws_args::AwsArgs;
use crate::backend::{ConfigArgs, StateArgs, config_store, load_file};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Move tables from PostgreSQL and MySQL into Snowflake through date/hour-partitioned Parquet.",
    long_about = "Move tables from PostgreSQL and MySQL into Snowflake through date/hour-partitioned Parquet.\n\n\
        Locally, `sluice run` extracts the tables of a config file into Parquet under --output and keeps \
        watermarks and run history under --state-dir. Start with `sluice config check FILE`, then \
        `sluice run --config FILE`, then `sluice status`.\n\n\
        With --config-table and --state-table (env SLUICE_CONFIG_TABLE, SLUICE_STATE_TABLE) the \
        configuration and the state live in DynamoDB, as in production: `sluice config push FILE` \
        writes the configuration there, `sluice dev create-tables` creates the tables on a local stack."
)]
struct Cli {
    /// Log more (info); set SLUICE_LOG for finer control, e.g. SLUICE_LOG=sluice=debug.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Write logs as JSON lines (as in Lambda).
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(flatten)]
    aws: aws_args::AwsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Extract tables from their sources into Parquet, one run per table.
    Run(RunArgs),
    /// Validate and inspect configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show recent runs, or the whole story of one run.
    Status(StatusArgs),
    /// Prove STAGING holds what the source holds: each table's schema (source, last run's
    /// files, STAGING) and metrics (rows, NULLs per column, exact min/max/sum of integer and
    /// decimal columns, TRUE counts), on the source in one snapshot and in Snowflake. Exits
    /// 0 only when everything matches.
    Validate(ValidateArgs),
    /// Set or reset a table's watermark (backfills); refuses without --yes.
    #[command(subcommand)]
    Watermark(watermark::WatermarkCommand),
    /// Create sample data to try sluice on.
    #[command(subcommand)]
    Sample(SampleCommand),
    /// Development helpers for a local stack.
    #[command(subcommand)]
    Dev(DevCommand),
    /// Snowflake set-up: print the one-time SQL, or apply its non-privileged part.
    #[command(subcommand)]
    Snowflake(snowflake::SnowflakeCommand),
    /// Start tables through the deployed trigger function (or a local stack's).
    Trigger(trigger::TriggerArgs),
    /// Log-based change data capture: set up what cdc tables read (publication, slot).
    #[command(subcommand)]
    Cdc(cdc::CdcCommand),
    /// Pre-flight: check, read-only and in parallel, everything a run needs (each source's
    /// connection, TLS, tables, columns, keys, cursor index, privileges, timeouts; the AWS
    /// resources named). Prints a table (check, target, result, fix), or JSON with --json.
    /// Exits 0 when nothing failed (warnings pass), 1 when a check failed.
    Check(check::CheckArgs),
}

#[derive(Subcommand)]
enum DevCommand {
    /// Create the DynamoDB state and config tables with production's key schema (existing
    /// tables are left alone).
    CreateTables {
        #[arg(long, env = "SLUICE_STATE_TABLE")]
        state_table: Option<String>,
        #[arg(long, env = "SLUICE_CONFIG_TABLE")]
        config_table: Option<String>,
    },
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Run only these tables: `source/schema.table`, `schema.table` or `table`. Repeatable.
    #[arg(long, short)]
    table: Vec<String>,
    #[command(flatten)]
    output: output_args::OutputArgs,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    warehouse: snowflake::WarehouseArgs,
    /// Take each selected table from the run holding it even if that run looks alive, and
    /// resume that run: for a holder on another machine you know is dead. (A holder that
    /// stopped renewing its lease, or whose process on this host is gone, is taken over
    /// without it.) Asks to confirm; --yes confirms for scripts.
    #[arg(long)]
    takeover: bool,
    /// Confirm --takeover without asking.
    #[arg(long, requires = "takeover")]
    yes: bool,
    /// Cut PostgreSQL 14+ tables' chunks by heap blocks (`ctid` ranges, one sequential scan in
    /// all) instead of key ranges (a scan each), every chunk in the plan's one snapshot. The
    /// price: a run whose process dies cannot be resumed (its other chunks would need that
    /// snapshot); it fails, and the next run starts the table anew.
    #[arg(long)]
    block_chunks: bool,
    /// Run key sets instead of loads: read the primary key of every row of each selected
    /// table with `deletes.keyset`, and delete (or mark) the STAGING rows whose key is gone.
    /// Without --table, every such table. (Without --keyset, a table's key set runs after its
    /// load whenever `deletes.keyset.every` has passed since its last one.)
    #[arg(long)]
    keyset: bool,
    /// How long a table's lease outlives its run's last heartbeat (every quarter of this):
    /// how soon a table frees after its run's process dies on another machine (e.g. 2m, 90s).
    #[arg(long, env = "SLUICE_LEASE_TTL", value_name = "DURATION", default_value = "2m", value_parser = parse_lease_ttl)]
    lease_ttl: std::time::Duration,
}

/// At least 10 s (a heartbeat every 2.5 s at most), at most a day.
fn parse_lease_ttl(text: &str) -> std::result::Result<std::time::Duration, String> {
    let ttl = sluice_core::config::parse_duration(text)
        .ok_or_else(|| format!("'{text}' is not a duration (e.g. 90s, 2m, 1h)"))?;
    if ttl < std::time::Duration::from_secs(10) || ttl > std::time::Duration::from_secs(86_400) {
        return Err(format!(
            "'{text}' is out of range: a lease TTL is between 10s and 1d"
        ));
    }
    Ok(ttl)
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file (or, without FILE, the configuration stored in
    /// --config-table) and list every problem with the field it concerns.
    Check {
        /// Configuration file (YAML).
        file: Option<PathBuf>,
        #[arg(long, env = "SLUICE_CONFIG_TABLE")]
        config_table: Option<String>,
    },
    /// Validate a configuration file, then make the config table hold exactly it.
    Push {
        /// Configuration file (YAML).
        file: PathBuf,
        /// Only print what would change (a diff against what is stored).
        #[arg(long)]
        dry_run: bool,
        #[arg(long, env = "SLUICE_CONFIG_TABLE")]
        config_table: String,
    },
    /// Print the stored configuration as canonical YAML (pushing it back changes nothing).
    Pull {
        /// Write it to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[arg(long, env = "SLUICE_CONFIG_TABLE")]
        config_table: String,
    },
}

#[derive(Args)]
struct ValidateArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Validate only these tables: `source/schema.table`, `schema.table` or `table`.
    /// Repeatable; default every table.
    #[arg(long, short)]
    table: Vec<String>,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    warehouse: snowflake::WarehouseArgs,
    /// How deep to look: schema, metrics (default; includes schema) or rows (includes both;
    /// every row's hash on both sides, range by range).
    #[arg(long, value_enum, default_value = "metrics")]
    level: ValidateLevel,
    /// The most differing rows the rows level lists per table (all are counted).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_rows: u64,
    /// One JSON object per table instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ValidateLevel {
    Schema,
    Metrics,
    Rows,
}

#[derive(Args)]
struct StatusArgs {
    /// A run id (ULID) to tell the story of; without it, lists recent runs.
    run_id: Option<String>,
    /// Only runs of this table (`source/schema.table`).
    #[arg(long)]
    table: Option<String>,
    /// How many recent runs to list.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Per table instead of per run: its last run, its lag, and the trend of its latest loads
    /// (rows, seconds, failures, retries). The tables are --table's, else the configuration's
    /// (--config / --config-table), else those with a recent run.
    #[arg(long, conflicts_with = "run_id")]
    tables: bool,
    /// With --tables: how many of each table's latest loads the trend covers [default: 10].
    #[arg(long, value_name = "N", requires = "tables", value_parser = status_tables::parse_last)]
    last: Option<usize>,
    /// With --tables: the configuration whose tables to show, those never run included.
    #[command(flatten)]
    config: ConfigArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Warn when one open transaction on the source has held a table's upper bound (and so
    /// its watermark) back for longer than this (e.g. 30m, 2h, 1d).
    #[arg(long, env = "SLUICE_HOLD_WARN_AFTER", value_name = "DURATION", default_value = "1h", value_parser = parse_hold_warn_after)]
    hold_warn_after: std::time::Duration,
    #[command(flatten)]
    state: StateArgs,
}

fn parse_hold_warn_after(text: &str) -> std::result::Result<std::time::Duration, String> {
    sluice_core::late_writers::parse_warn_after("--hold-warn-after", text)
}

#[derive(Subcommand)]
enum SampleCommand {
    /// Create the "shop" sample (customers, products, orders, order_items) in PostgreSQL or
    /// MariaDB, with the same rows and values in both.
    Shop {
        /// The database server to fill.
        #[arg(long, value_enum, default_value = "postgres")]
        engine: SampleEngine,
        /// URL of the database to fill; it is created if missing. Default:
        /// postgres://postgres@127.0.0.1:5432/sluice_shop, or
        /// mysql://root@127.0.0.1:3306/sluice_shop with --engine mysql.
        #[arg(long)]
        url: Option<String>,
        /// Size: scale 1 is 1,000 customers, 200 products, 5,000 orders and ~12,500 order
        /// items (MariaDB: at most 200, where its TIMESTAMP range ends).
        #[arg(long, default_value_t = 1)]
        scale: u32,
        /// Schema to create the tables in (PostgreSQL; MariaDB uses the URL's database).
        #[arg(long, default_value = "public")]
        schema: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SampleEngine {
    Postgres,
    Mysql,
}

fn main() {
    // Before the runtime starts any thread: allocator tuning is set-up, not run-time, work.
    sluice::memory::keep_large_buffers_out_of_the_heap();
    let cli = Cli::parse();
    // `run` talks to sources, some over Unix sockets: a write to a server that went away must
    // stay an error there (with SIGPIPE's default it would kill the run mid-way, lease held).
    // It prints its summary at the end, without panicking on a closed pipe.
    if !matches!(cli.command, Command::Run(_) | Command::Check(_)) {
        end_quietly_on_a_closed_pipe();
    }
    #[cfg(feature = "failpoints")]
    let _failpoints = crash_at_failpoints();
    run_command(cli);
}

/// `sluice status | head`: once the reader has gone, the next write ends the process by
/// SIGPIPE, quietly and with the status shells know (141), as `ls` and `git` do. Rust's runtime
/// ignores SIGPIPE, which turns that write into an error and `println!` into a panic
/// ("failed printing to stdout: Broken pipe", exit 101). Only for the commands whose one
/// output is what they print (status, config, watermark, snowflake sql, …).
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Test builds only: arms `FAILPOINTS` and turns any panic into an abort, so a failpoint set
/// to `panic` kills the process where it stands (no destructor, no lease given back, no
/// upload finished or aborted), exactly as `kill -9` would.
#[cfg(feature = "failpoints")]
fn crash_at_failpoints() -> fail::FailScenario<'static> {
    let scenario = fail::FailScenario::setup();
    std::panic::set_hook(Box::new(|info| {
        eprintln!("crashed: {info}");
        std::process::abort();
    }));
    scenario
}

#[tokio::main]
async fn run_command(cli: Cli) {
    init_tracing(cli.verbose, cli.json_logs);
    let aws = &cli.aws;
    let outcome = match cli.command {
        Command::Run(args) => run(args, aws).await,
        Command::Config(ConfigCommand::Check { file, config_table }) => {
            config_check(file, config_table, aws).await
        }
        Command::Config(ConfigCommand::Push {
            file,
            dry_run,
            config_table,
        }) => config_push(&file, dry_run, &config_table, aws).await,
        Command::Config(ConfigCommand::Pull {
            output,
            config_table,
        }) => config_pull(output, &config_table, aws).await,
        Command::Status(args) => status(args, aws).await,
        Command::Watermark(command) => watermark::run(command, aws).await,
        Command::Snowflake(command) => snowflake::run(command, aws).await,
        Command::Validate(args) => validate(args, aws).await,
        Command::Trigger(args) => trigger::run(args, aws).await,
        Command::Cdc(command) => cdc::run(command, aws).await,
        Command::Check(args) => check::run(args, aws).await,
        Command::Dev(DevCommand::CreateTables {
            state_table,
            config_table,
        }) => create_tables(state_table, config_table, aws).await,
        Command::Sample(SampleCommand::Shop {
            engine: SampleEngine::Postgres,
            url,
            scale,
            schema,
        }) => {
            let url =
                url.unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/sluice_shop".to_owned());
            sample_shop(&url, scale, &schema).await
        }
        Command::Sample(SampleCommand::Shop {
            engine: SampleEngine::Mysql,
            url,
            scale,
            ..
        }) => {
            let url = url.unwrap_or_else(|| "mysql://root@127.0.0.1:3306/sluice_shop".to_owned());
            sample_shop_mysql(&url, scale).await
        }
    };
    match outcome {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn init_tracing(verbose: bool, json: bool) {
    let default = if verbose { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

async fn config_check(
    file: Option<PathBuf>,
    config_table: Option<String>,
    aws: &AwsArgs,
) -> Result<bool> {
    let (config, origin) = ConfigArgs {
        config: file,
        config_table,
    }
    .load(aws)
    .await?;
    println!(
        "{origin}: ok ({} source(s), {} table(s))",
        config.sources.len(),
        config.tables.len()
    );
    for table in &config.tables {
        let mut notes: Vec<String> = table
            .partition
            .iter()
            .map(|p| format!("partitioned by {}", p.column))
            .collect();
        notes.push(match table.deletes.mode {
            sluice_core::DeleteMode::Off => "deletes off".to_owned(),
            mode => format!(
                "deletes {} (at most {}% of STAGING per run){}",
                format!("{mode:?}").to_lowercase(),
                table.deletes.max_fraction * 100.0,
                match table.deletes.keyset.as_ref().map(|k| k.every.as_deref()) {
                    Some(Some(every)) => format!(" by key sets every {every}"),
                    Some(None) => " by key sets on request".to_owned(),
                    None => String::new(),
                }
            ),
        });
        println!(
            "  {:<40} {:<12} {}",
            table.key(),
            format!("{:?}", table.load.mode).to_lowercase(),
            notes.join(", ")
        );
    }
    if !config.gold.is_empty() {
        println!(
            "gold, by level (a batch calls each once, after its inputs in the batch merged; not if one failed):\n{}",
            render::gold_levels(&config)
        );
    }
    // Sources whose incremental runs check for open writers need a grant to see them all.
    for source in &config.sources {
        let checked = config
            .tables
            .iter()
            .any(|t| t.source == source.name && sluice_core::late_writers::wants_check(t));
        if checked {
            println!(
                "  note: source {}: {}",
                source.name,
                sluice_core::late_writers::grant_note(source.engine)
            );
        }
    }
    Ok(true)
}

async fn config_push(file: &PathBuf, dry_run: bool, table: &str, aws: &AwsArgs) -> Result<bool> {
    let config = load_file(file)?;
    let store = config_store(aws, table).await;
    if dry_run {
        let diff = store.diff(&config).await?;
        print!("{}", diff.render());
        println!("dry run: config table {table} was not changed");
        return Ok(true);
    }
    let diff = store.push(&config).await?;
    print!("{}", diff.render());
    println!(
        "config table {table} now holds {} ({} source(s), {} table(s))",
        file.display(),
        config.sources.len(),
        config.tables.len()
    );
    Ok(true)
}

async fn config_pull(output: Option<PathBuf>, table: &str, aws: &AwsArgs) -> Result<bool> {
    let config = config_store(aws, table).await.load().await?;
    let yaml = config.to_yaml()?;
    match output {
        Some(path) => {
            std::fs::write(&path, yaml)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("config table {table} written to {}", path.display());
        }
        None => print!("{yaml}"),
    }
    Ok(true)
}

async fn create_tables(
    state_table: Option<String>,
    config_table: Option<String>,
    aws: &AwsArgs,
) -> Result<bool> {
    if state_table.is_none() && config_table.is_none() {
        bail!(
            "give --state-table and/or --config-table (or SLUICE_STATE_TABLE, SLUICE_CONFIG_TABLE)"
        );
    }
    let sdk = aws.sdk_config().await;
    let client = sluice::ddb::Client::new(&sdk);
    for (name, kind) in [
        (state_table, TableKind::State),
        (config_table, TableKind::Config),
    ] {
        let Some(name) = name else { continue };
        let created = sluice::ddb::create_table(&client, &name, kind)
            .await
            .map_err(|e| anyhow::anyhow!("creating DynamoDB table {name}: {e}"))?;
        println!(
            "{name}: {}",
            if created { "created" } else { "exists already" }
        );
    }
    Ok(true)
}

async fn build_sources(
    config: &Config,
    aws: &AwsArgs,
) -> Result<BTreeMap<String, Arc<dyn Source>>> {
    let mut sources: BTreeMap<String, Arc<dyn Source>> = BTreeMap::new();
    let mut resolver = None;
    for source in &config.sources {
        if source.connection.secret_arn.is_some() {
            if resolver.is_none() {
                resolver = Some(SecretResolver::new(&aws.sdk_config().await));
            }
            if let Some(resolver) = &resolver {
                let (resolved, credentials) = resolver.resolve(source).await?;
                sources.insert(
                    source.name.clone(),
                    sluice::source::connect::source_adapter(&resolved, credentials.as_ref())?,
                );
            }
            continue;
        }
        // Locally, a password comes only from the environment variable the config names.
        let credentials = match &source.connection.password_env {
            Some(var) => Some(Credentials {
                user: None,
                password: Some(std::env::var(var).map_err(|_| {
                    anyhow::anyhow!(
                        "source '{}': connection.password_env names {var}, which is not set",
                        source.name
                    )
                })?),
            }),
            None => None,
        };
        sources.insert(
            source.name.clone(),
            sluice::source::connect::source_adapter(source, credentials.as_ref())?,
        );
    }
    Ok(sources)
}

/// The tables `selectors` name (all without any), and the sources they read, built. Only
/// those sources are built, so one broken source does not block the others.
pub(crate) async fn selected_tables<'c>(
    config: &'c Config,
    origin: &str,
    selectors: &[String],
    aws: &AwsArgs,
) -> Result<(
    Vec<&'c sluice_core::TableConfig>,
    BTreeMap<String, Arc<dyn Source>>,
)> {
    let mut tables = Vec::new();
    if selectors.is_empty() {
        tables.extend(config.tables.iter());
    } else {
        for selector in selectors {
            let table = config
                .find_table(selector)
                .map_err(|e| anyhow::anyhow!("--table {selector} ({origin}): {e}"))?;
            tables.push(table);
        }
    }
    let needed: Vec<_> = config
        .sources
        .iter()
        .filter(|s| tables.iter().any(|t| t.source == s.name))
        .cloned()
        .collect();
    let sources = build_sources(
        &Config {
            sources: needed,
            ..Config::default()
        },
        aws,
    )
    .await?;
    Ok((tables, sources))
}

async fn validate(args: ValidateArgs, aws: &AwsArgs) -> Result<bool> {
    let (config, origin) = args.config.load(aws).await?;
    let (tables, sources) = selected_tables(&config, &origin, &args.table, aws).await?;
    let Some((warehouse, database)) = args.warehouse.client(aws).await? else {
        bail!(
            "validate compares with STAGING in Snowflake: give --snowflake-account (and its --snowflake-* options, or SLUICE_SNOWFLAKE_*)"
        );
    };
    let (state, _) = args.state.open_existing(aws).await?;
    let mut all_match = true;
    for table in tables {
        let source = sources
            .get(&table.source)
            .with_context(|| format!("table {}: no source '{}'", table.key(), table.source))?;
        let started = chrono::Utc::now();
        let validation = sluice::validate::validate_table(
            source.as_ref(),
            warehouse.as_ref(),
            &database,
            state.as_ref(),
            table,
            sluice::validate::ValidateOptions {
                level: match args.level {
                    ValidateLevel::Schema => sluice_core::validate::Level::Schema,
                    ValidateLevel::Metrics => sluice_core::validate::Level::Metrics,
                    ValidateLevel::Rows => sluice_core::validate::Level::Rows,
                },
                max_rows: usize::try_from(args.max_rows).unwrap_or(usize::MAX),
                ..Default::default()
            },
        )
        .await?;
        // A level asked for and not run proves nothing: no pass.
        all_match &= validation.verdict() == sluice_core::validate::Verdict::Ok
            && validation.rows_skipped.is_none();
        let text = if args.json {
            format!("{}\n", serde_json::to_string(&validation)?)
        } else {
            render::validation(&validation)
        };
        // As `status`: a reader that went away ends the output, not the validation.
        let printed = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes()).is_ok();
        // Printed first: a store that refuses the record (read-only credentials) costs the
        // history, not the answer.
        match sluice::validate::record_validation(state.as_ref(), table, started, validation).await
        {
            Ok(recorded) => eprintln!(
                "{}: validation recorded as run {} ({}; sluice status {})",
                table.key(),
                recorded.run_id,
                recorded.status,
                recorded.run_id
            ),
            Err(e) => eprintln!(
                "{}: warning: the validation was not recorded in the state store: {e}",
                table.key()
            ),
        }
        if !printed {
            break;
        }
    }
    Ok(all_match)
}

async fn run(args: RunArgs, aws: &AwsArgs) -> Result<bool> {
    let (config, origin) = args.config.load(aws).await?;
    let (mut tables, sources) = selected_tables(&config, &origin, &args.table, aws).await?;
    if args.keyset && args.table.is_empty() {
        tables.retain(|t| t.deletes_by_keyset());
        if tables.is_empty() {
            bail!(
                "--keyset: no table in {origin} finds deletes by key sets (deletes.mode hard or soft with deletes.keyset, on an incremental table)"
            );
        }
    }
    let output = args.output.build(aws).await?;
    let loader = args
        .warehouse
        .loader(output.location.starts_with("s3://"), aws)
        .await?;
    let (state, _) = args.state.open(aws).await?;
    if args.takeover && !args.yes {
        confirm_takeover(&tables)?;
    }
    let batch_id = format!("run-{}", sluice_core::RunId::new());
    let options = PipelineOptions {
        prefix: output.prefix.clone(),
        parquet: output.parquet,
        lease_ttl: chrono::Duration::from_std(args.lease_ttl)?,
        record_holder: true,
        batch_id: Some(batch_id.clone()),
        // This process extracts every chunk while it holds the plan's snapshot; a crash then
        // leaves nothing to resume the run with, so only when asked.
        block_chunks: args.block_chunks,
        ..PipelineOptions::default()
    };
    // Sources with connection.max_connections count their connections in the state store,
    // shared with the deployed functions when the state is DynamoDB's.
    let mut pipeline = Pipeline::new(sources, output.sink.clone(), state, options)
        .with_catalog(output.catalog)
        .with_connection_limits(&config.sources);
    let has_warehouse = loader.is_some();
    if args.keyset && !has_warehouse {
        bail!(
            "--keyset: a key set deletes from STAGING what the source no longer has, so it needs the warehouse: give --snowflake-account (and its --snowflake-* options)"
        );
    }
    if let Some(loader) = loader {
        pipeline = pipeline.with_warehouse(loader);
    }
    let progress = Progress::new();
    let mut records: Vec<(String, Result<RunRecord, String>)> = Vec::new();
    let start = RunStart {
        full_reload: false,
        keyset: args.keyset,
        take_over: args.takeover,
    };
    for table in tables {
        let mut run = async |start: RunStart, label: String| {
            progress.start(&label);
            let result = pipeline.run_table_with(table, &progress, start).await;
            progress.finish(&label, &result);
            let result = match result {
                Ok(record) => Ok(record),
                Err(e) => Err(not_run(pipeline.state().as_ref(), &table.key(), e).await),
            };
            let completed = matches!(&result, Ok(r) if r.status == RunStatus::Completed);
            records.push((label, result));
            completed
        };
        let label = if args.keyset {
            format!("{} (key set)", table.key())
        } else {
            table.key()
        };
        let loaded = run(start, label).await;
        // A key set that has come due runs after a load that completed (it reconciles
        // STAGING, so only with the warehouse).
        if loaded && !args.keyset && has_warehouse {
            let last =
                sluice::state::latest_keyset_attempt(pipeline.state().as_ref(), &table.key(), 10)
                    .await?;
            if sluice_core::schedule::keyset_due(table, last, chrono::Utc::now()) {
                let keyset = RunStart {
                    keyset: true,
                    take_over: false,
                    ..start
                };
                run(keyset, format!("{} (key set)", table.key())).await;
            }
        }
    }
    // One `sluice run` is one batch: its gold runs once, after every run of it ended, and
    // only where the warehouse is (there is nothing to call without it).
    let gold = if has_warehouse && !config.gold.is_empty() {
        let runs: Vec<RunRecord> = records
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().cloned())
            .collect();
        let holder = format!("sluice run, pid {}", std::process::id());
        // The runs' summary is printed even when the gold could not be run.
        match pipeline
            .run_batch_gold(&config, &batch_id, &holder, &runs)
            .await
        {
            Ok(gold) => gold,
            Err(e) => {
                println!("{}", render::summary(&records));
                bail!("the batch's gold could not run: {e}");
            }
        }
    } else {
        None
    };
    // A reader that went away (`sluice run | head`) misses the summary; the runs are done
    // and recorded, so a failed print is no failure of the command.
    let summary = format!(
        "{}{}\nParquet files and manifests are under {}\nRun history: {}\n",
        render::summary(&records),
        gold.as_ref().map(render::gold_steps).unwrap_or_default(),
        output.location,
        args.state.status_hint()
    );
    let _ = std::io::Write::write_all(&mut std::io::stdout(), summary.as_bytes());
    let gold_ok = gold.is_none_or(|g| {
        g.steps
            .iter()
            .all(|s| s.status != sluice_core::gold::GoldStatus::Failed)
    });
    Ok(gold_ok
        && records
            .iter()
            .all(|(_, r)| matches!(r, Ok(rec) if rec.status == RunStatus::Completed)))
}

/// `--takeover` may take a table from a run that is alive, whose work would then be done twice:
/// a person confirms it (`--yes` for scripts).
fn confirm_takeover(tables: &[&sluice_core::TableConfig]) -> Result<()> {
    let keys: Vec<String> = tables.iter().map(|t| t.key()).collect();
    if !std::io::stdin().is_terminal() {
        bail!(
            "--takeover takes {} from whichever run holds it, even one still alive: add --yes to confirm",
            keys.join(", ")
        );
    }
    eprint!(
        "Take over {} from the run holding it? Do this only if that run's process is dead. [y/N] ",
        keys.join(", ")
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("not taken over: nothing was run");
    }
    Ok(())
}

/// Why a table was not run, with what to do about a table held by another run.
async fn not_run(
    state: &dyn sluice::state::StateStore,
    key: &str,
    error: sluice::PipelineError,
) -> String {
    let sluice::PipelineError::State(sluice::state::StateError::AlreadyRunning { run_id, .. }) =
        &error
    else {
        return error.to_string();
    };
    let holder = match state.get_run(*run_id).await {
        Ok(Some(record)) => record.holder.map(|h| format!(", held by {h}")),
        _ => None,
    };
    let expires = match state.table_state(key).await {
        Ok(t) => t.lease.map(|l| {
            format!(
                "; its lease lapses at {} unless it renews it",
                l.expires_at.format("%H:%M:%S UTC")
            )
        }),
        Err(_) => None,
    };
    format!(
        "{error}{}{}. A live run renews its lease; one that died frees the table when the lease lapses. If you know its process is dead, run again with --takeover --table {key}",
        holder.unwrap_or_default(),
        expires.unwrap_or_default()
    )
}

/// Progress bars on a terminal, plain lines otherwise.
struct Progress {
    bars: Option<MultiProgress>,
    current: Mutex<BTreeMap<String, ProgressBar>>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            bars: std::io::stderr().is_terminal().then(MultiProgress::new),
            current: Mutex::new(BTreeMap::new()),
        }
    }

    fn start(&self, table: &str) {
        match &self.bars {
            Some(bars) => {
                let bar = bars.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {prefix:<36} {human_pos:>12} rows  {per_sec:>14}  {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(table.to_owned());
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                if let Ok(mut current) = self.current.lock() {
                    current.insert(table.to_owned(), bar);
                }
            }
            None => eprintln!("{table}: planning"),
        }
    }

    fn finish(&self, table: &str, result: &Result<RunRecord, sluice::PipelineError>) {
        let message = match result {
            Ok(r) => format!("{} ({} rows, {} files)", r.status, r.rows(), r.files()),
            Err(e) => format!("not run: {e}"),
        };
        let bar = self.current.lock().ok().and_then(|mut c| c.remove(table));
        match bar {
            Some(bar) => bar.finish_with_message(message),
            None => eprintln!("{table}: {message}"),
        }
    }
}

impl RunObserver for Progress {
    fn planned(&self, record: &RunRecord) {
        let chunks = record.plan.as_ref().map_or(0, |p| p.chunks.len());
        if self.bars.is_none() {
            eprintln!(
                "{}: run {} planned, {chunks} chunk(s)",
                record.table_key, record.run_id
            );
        }
    }

    fn resumed(&self, record: &RunRecord) {
        let total = record.plan.as_ref().map_or(0, |p| p.chunks.len());
        let line = format!(
            "{}: resuming run {}: {} of {total} chunks done",
            record.table_key,
            record.run_id,
            record.chunks.len()
        );
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn rows_written(&self, table_key: &str, rows: u64) {
        if let Ok(current) = self.current.lock()
            && let Some(bar) = current.get(table_key)
        {
            bar.inc(rows);
        }
    }

    fn chunk_done(&self, table_key: &str, chunk: u32, outcome: &ChunkOutcome) {
        if self.bars.is_none() {
            eprintln!(
                "{table_key}: chunk {chunk} done, {} rows, {} files, {:.2}s",
                outcome.rows,
                outcome.files.len(),
                outcome.seconds
            );
        }
    }
}

async fn status(args: StatusArgs, aws: &AwsArgs) -> Result<bool> {
    let (store, location) = args.state.open_existing(aws).await?;
    if args.tables {
        return status_tables(&args, store.as_ref(), &location, aws).await;
    }
    let history = args
        .state
        .history_limit()
        .map(|retention| render::history_line(retention, chrono::Utc::now()));
    match &args.run_id {
        Some(id) => {
            let run_id: RunId = id.parse().map_err(anyhow::Error::msg)?;
            let Some(record) = store.get_run(run_id).await? else {
                match &history {
                    Some(history) => bail!("run {run_id} not found in {location} ({history})"),
                    None => bail!("run {run_id} not found in {location}"),
                }
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                let state = store.table_state(&record.table_key).await?;
                println!("{}", render::story(&record, &state, args.hold_warn_after));
                // Gold runs per batch: the story of a run ends with its batch's.
                if let Some(batch_id) = &record.batch_id
                    && let Some(gold) = store.get_gold(batch_id).await?
                {
                    println!("{}", render::gold_steps(&gold));
                }
            }
        }
        None => {
            let runs = store.list_runs(args.table.as_deref(), args.limit).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else if runs.is_empty() {
                println!("no runs recorded in {location}");
            } else {
                println!("{}", render::run_list(&runs));
                for warning in render::hold_warnings(&runs, args.hold_warn_after)
                    .into_iter()
                    .chain(render::slot_warnings(&runs))
                {
                    println!("{warning}");
                }
            }
        }
    }
    // Not under --json, whose output is one JSON document.
    if let (Some(history), false) = (history, args.json) {
        println!("{history}");
    }
    Ok(true)
}

/// `sluice status --tables` (see [`status_tables`]).
async fn status_tables(
    args: &StatusArgs,
    store: &dyn sluice::state::StateStore,
    location: &str,
    aws: &AwsArgs,
) -> Result<bool> {
    use status_tables::TableSource;
    let config = match (&args.table, &args.config.config, &args.config.config_table) {
        (None, Some(_), _) | (None, None, Some(_)) => Some(args.config.load(aws).await?.0),
        _ => None,
    };
    let tables = match (&args.table, &config) {
        (Some(key), _) => TableSource::One(key),
        (None, Some(config)) => TableSource::Config(config),
        (None, None) => TableSource::Recent,
    };
    let last = args.last.unwrap_or(sluice_core::trend::DEFAULT_LAST_RUNS);
    let (trends, note) = status_tables::trends(store, tables, last).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&trends)?);
        return Ok(true);
    }
    if trends.is_empty() {
        println!("no runs recorded in {location}");
    } else {
        println!("{}", render::table_trends(&trends));
        println!("trend: each table's latest {last} loads, oldest first (✗ failed, · not ended)");
    }
    if let Some(note) = note {
        println!("{note}");
    }
    if let Some(history) = args
        .state
        .history_limit()
        .map(|retention| render::history_line(retention, chrono::Utc::now()))
    {
        println!("{history}");
    }
    Ok(true)
}

async fn sample_shop(url: &str, scale: u32, schema: &str) -> Result<bool> {
    let config: sluice::sample::PgConfig = url
        .parse()
        .map_err(|e| anyhow::anyhow!("--url is not a valid PostgreSQL URL: {e}"))?;
    let database = config
        .get_dbname()
        .context("--url must name a database, e.g. postgres://postgres@127.0.0.1:5432/sluice_shop")?
        .to_owned();
    sluice_core::ident::check_identifier(&database)
        .map_err(|e| anyhow::anyhow!("--url database {e}"))?;
    sluice::sample::ensure_database(&config, &database).await?;
    let client = sluice::sample::connect(&config).await?;
    let counts = sluice::sample::create_shop_postgres(&client, schema, scale).await?;
    println!(
        "shop sample at scale {scale} in database {database}, schema {schema}: {} customers, {} products, {} orders, {} order items",
        counts.customers, counts.products, counts.orders, counts.order_items
    );
    Ok(true)
}

async fn sample_shop_mysql(url: &str, scale: u32) -> Result<bool> {
    let database = sluice::sample_mysql::url_database(url)?
        .context("--url must name a database, e.g. mysql://root@127.0.0.1:3306/sluice_shop")?;
    sluice_core::ident::check_identifier(&database)
        .map_err(|e| anyhow::anyhow!("--url database {e}"))?;
    sluice::sample_mysql::ensure_database(url, &database).await?;
    let mut conn = sluice::sample_mysql::connect(url).await?;
    let counts = sluice::sample_mysql::create_shop_mysql(&mut conn, scale).await?;
    println!(
        "shop sample at scale {scale} in MariaDB database {database}: {} customers, {} products, {} orders, {} order items",
        counts.customers, counts.products, counts.orders, counts.order_items
    );
    Ok(true)
}
