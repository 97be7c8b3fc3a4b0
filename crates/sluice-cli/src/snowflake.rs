//! `sluice snowflake sql` and `sluice snowflake apply`: the one-time Snowflake set-up, printed
//! for an admin to review and run, and its non-privileged part run through the SQL API.
//! The SQL itself is generated in `sluice_core::setup`; nothing here builds SQL text.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use sluice::warehouse::Statement;
use sluice::warehouse::load::{Loader, WarehouseTarget};
use sluice::warehouse::snowflake::{PrivateKey, SnowflakeClient, SnowflakeConfig};
use sluice_core::setup::{STAGE_NAME, SetupOptions, SetupSql, setup_sql};
use sluice_core::snowflake::ObjectName;
use sluice_core::staging::RAW_SCHEMA;

use crate::backend::load_file;

#[derive(Subcommand)]
pub enum SnowflakeCommand {
    /// Print every statement a Snowflake admin runs once (database, integrations, schemas,
    /// file format, stage, merge logs, external functions), and write it to
    /// <out-dir>/setup.sql. Idempotent: safe to run again.
    Sql {
        #[command(flatten)]
        setup: SetupArgs,
        /// Where to write setup.sql.
        #[arg(long, default_value = "infra/snowflake")]
        out_dir: PathBuf,
        /// Only print; write nothing.
        #[arg(long)]
        no_write: bool,
    },
    /// Run the objects part of the set-up (schemas, file format, stage, merge logs) as
    /// sluice's role through the SQL API. The account part needs an admin.
    Apply {
        #[command(flatten)]
        setup: SetupArgs,
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Check a deployed account against the set-up, as sluice's user and role: the
    /// integrations, file format, stage (it must list the bucket), external functions (URL,
    /// MAX_BATCH_ROWS), warehouse grants, session parameters and merge procedures. Prints a
    /// table (check, target, result, fix) and exits 0 only when nothing failed. Read-only
    /// unless --probe.
    Doctor {
        #[command(flatten)]
        setup: SetupArgs,
        #[command(flatten)]
        connection: ConnectionArgs,
        /// Also create, call and drop a probe procedure of the shape sluice generates in
        /// <database>.SLUICE, proving the account compiles and runs it; with --with-tables,
        /// also compile (create and drop, never call) each table's generated merge procedure
        /// there under a probe name.
        #[arg(long)]
        probe: bool,
        /// The outcomes as JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct SetupArgs {
    /// The configuration file whose tables to set up.
    #[arg(long)]
    config: PathBuf,
    /// The database sluice loads into.
    #[arg(long, env = "SLUICE_SNOWFLAKE_DATABASE")]
    database: String,
    /// The Snowflake role sluice runs as.
    #[arg(long, env = "SLUICE_SNOWFLAKE_ROLE")]
    role: String,
    /// The key-pair service user sluice signs in as.
    #[arg(long, env = "SLUICE_SNOWFLAKE_USER", default_value = "SLUICE")]
    user: String,
    /// The warehouse sluice's statements run on.
    #[arg(long, env = "SLUICE_SNOWFLAKE_WAREHOUSE", default_value = "SLUICE_WH")]
    warehouse: String,
    /// The deployed trigger's batch limit (the template's MaxBatchRows): the external
    /// functions' MAX_BATCH_ROWS.
    #[arg(long, env = "SLUICE_MAX_BATCH_ROWS", default_value_t = sluice_core::deploy::DEFAULT_MAX_BATCH_ROWS)]
    max_batch_rows: usize,
    /// The bucket sluice writes Parquet to.
    #[arg(long, env = "SLUICE_BUCKET")]
    bucket: String,
    /// The key prefix sluice writes under, if any (e.g. raw/v1).
    #[arg(long, env = "SLUICE_PREFIX")]
    prefix: Option<String>,
    /// The IAM role Snowflake's storage integration assumes to read the bucket.
    #[arg(long)]
    storage_role_arn: String,
    /// The IAM role Snowflake's API integration assumes to call API Gateway.
    #[arg(long)]
    api_role_arn: String,
    /// The API Gateway stage URL behind the external functions.
    #[arg(long)]
    api_url: String,
    /// Also generate each table's RAW/STAGING tables, merge log and merge procedure, from
    /// the source's catalog (connects to every source; reads no rows).
    #[arg(long)]
    with_tables: bool,
}

#[derive(Args)]
pub struct ConnectionArgs {
    /// Account identifier (myorg-myaccount).
    #[arg(long, env = "SLUICE_SNOWFLAKE_ACCOUNT")]
    account: String,
    /// The user's PKCS#8 PEM private key (the public half set as its RSA_PUBLIC_KEY).
    #[arg(long, env = "SLUICE_SNOWFLAKE_PRIVATE_KEY_FILE")]
    private_key_file: Option<PathBuf>,
    /// Or: the Secrets Manager secret holding it (the PEM, or JSON with private_key and
    /// passphrase), as the functions read it.
    #[arg(long, env = "SLUICE_SNOWFLAKE_PRIVATE_KEY_SECRET")]
    private_key_secret: Option<String>,
    /// Name of an environment variable holding the key's passphrase, if it is encrypted.
    #[arg(long)]
    passphrase_env: Option<String>,
    /// The SQL API's base URL, for a local stand-in (default: the account's URL).
    #[arg(long, env = "SLUICE_SNOWFLAKE_URL")]
    base_url: Option<String>,
}

pub async fn run(command: SnowflakeCommand, aws: &crate::aws_args::AwsArgs) -> Result<bool> {
    match command {
        SnowflakeCommand::Sql {
            setup,
            out_dir,
            no_write,
        } => {
            let (_, sql) = generate(&setup, aws).await?;
            let text = sql.render();
            print!("{text}");
            if !no_write {
                std::fs::create_dir_all(&out_dir)
                    .with_context(|| format!("cannot create {}", out_dir.display()))?;
                let path = out_dir.join("setup.sql");
                std::fs::write(&path, &text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            Ok(true)
        }
        SnowflakeCommand::Apply { setup, connection } => {
            let (_, sql) = generate(&setup, aws).await?;
            let client = client(&connection, &setup, aws).await?;
            let tables = sql.tables.iter().flat_map(|(_, statements)| statements);
            for statement in sql.objects.iter().chain(tables) {
                client
                    .execute(&Statement::new(statement.as_str()))
                    .await
                    .with_context(|| format!("running: {statement}"))?;
            }
            eprintln!(
                "applied {} statements; the account part and the external functions are for an admin (sluice snowflake sql)",
                sql.objects.len() + sql.tables.iter().map(|(_, s)| s.len()).sum::<usize>()
            );
            Ok(true)
        }
        SnowflakeCommand::Doctor {
            setup,
            connection,
            probe,
            json,
        } => doctor(&setup, &connection, probe, json, aws).await,
    }
}

/// `sluice snowflake doctor`: each probe's statement through the SQL API, judged by
/// `sluice_core::doctor`.
async fn doctor(
    setup: &SetupArgs,
    connection: &ConnectionArgs,
    probe: bool,
    json: bool,
    aws: &crate::aws_args::AwsArgs,
) -> Result<bool> {
    use sluice_core::doctor::{
        Outcome, Verdict, judge, merge_procedure_probes, probes, procedure_probe,
    };

    let (config, sql) = generate(setup, aws).await?;
    let options = setup_options(setup);
    let client = client(connection, setup, aws).await?;
    let mut outcomes: Vec<Outcome> = Vec::new();
    for check in probes(&config, &options) {
        let answer = client
            .execute(&Statement::new(check.sql.as_str()))
            .await
            .map(|result| sluice::check::snowflake::answer_of(&result))
            .map_err(|e| e.to_string());
        outcomes.push(judge(
            &check,
            answer.as_ref().map_err(String::as_str),
            &options,
            &sql,
        ));
    }
    if probe {
        let (name, statements, drop) = procedure_probe(&options.database);
        let mut verdict = Verdict::Pass;
        for statement in &statements {
            if let Err(e) = client.execute(&Statement::new(statement.as_str())).await {
                verdict = Verdict::Fail(format!("{e}"));
                break;
            }
        }
        // Whatever happened: no probe stays behind.
        if let Err(e) = client.execute(&Statement::new(drop.as_str())).await
            && verdict == Verdict::Pass
        {
            verdict = Verdict::Fail(format!("dropping the probe: {e}"));
        }
        outcomes.push(Outcome {
            check: "procedure compiles and runs".into(),
            target: name.quoted(),
            verdict,
            fix: Vec::new(),
        });
        for (key, create, drop) in merge_procedure_probes(&config, &options.database, &sql) {
            let verdict = match client.execute(&Statement::new(create.as_str())).await {
                Ok(_) => Verdict::Pass,
                Err(e) => Verdict::Fail(format!("{e}")),
            };
            let dropped = client.execute(&Statement::new(drop.as_str())).await;
            let verdict = match (verdict, dropped) {
                (Verdict::Pass, Err(e)) => Verdict::Fail(format!("dropping the probe: {e}")),
                (verdict, _) => verdict,
            };
            outcomes.push(Outcome {
                check: "merge procedure compiles".into(),
                target: key,
                verdict,
                fix: Vec::new(),
            });
        }
    }
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::Fail(_)))
        .count();
    if json {
        for o in &outcomes {
            let (result, detail) = match &o.verdict {
                Verdict::Pass => ("pass", String::new()),
                Verdict::Fail(why) => ("fail", why.clone()),
                Verdict::Skip(why) => ("skip", why.clone()),
            };
            println!(
                "{}",
                serde_json::json!({"check": o.check, "target": o.target, "result": result, "detail": detail, "fix": o.fix})
            );
        }
    } else {
        println!("{}", crate::render::doctor_table(&outcomes));
        if failed > 0 {
            println!(
                "\n{failed} check(s) failed; run the statements under \"fix\" as an admin, then sluice snowflake doctor again."
            );
        } else {
            println!("\nAll checks passed.");
        }
    }
    Ok(failed == 0)
}

fn setup_options(args: &SetupArgs) -> SetupOptions {
    SetupOptions {
        database: args.database.clone(),
        role: args.role.clone(),
        user: args.user.clone(),
        warehouse: args.warehouse.clone(),
        max_batch_rows: args.max_batch_rows,
        bucket: args.bucket.clone(),
        prefix: args.prefix.clone(),
        storage_role_arn: args.storage_role_arn.clone(),
        api_role_arn: args.api_role_arn.clone(),
        api_url: args.api_url.clone(),
    }
}

async fn generate(
    args: &SetupArgs,
    aws: &crate::aws_args::AwsArgs,
) -> Result<(sluice_core::Config, SetupSql)> {
    let config = load_file(&args.config)?;
    let options = setup_options(args);
    let mut sql = setup_sql(&config, &options).map_err(|issues| {
        anyhow::anyhow!(
            "{} problem(s) with the Snowflake options:\n{}",
            issues.len(),
            issues
                .iter()
                .map(|i| format!("  - {i}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    if args.with_tables {
        let sources = crate::build_sources(&config, aws).await?;
        for table in &config.tables {
            let source = sources
                .get(&table.source)
                .with_context(|| format!("table {}: no source '{}'", table.key(), table.source))?;
            let schema = sluice::pipeline::file_schema_of(source.as_ref(), table)
                .await
                .with_context(|| format!("reading the catalog of {}", table.key()))?;
            sql.add_table(table, &options.database, &schema)
                .with_context(|| format!("table {}", table.key()))?;
        }
    }
    Ok((config, sql))
}

async fn client(
    args: &ConnectionArgs,
    setup: &SetupArgs,
    aws: &crate::aws_args::AwsArgs,
) -> Result<SnowflakeClient> {
    let key = private_key(
        ("--private-key-file", args.private_key_file.as_ref()),
        ("--private-key-secret", args.private_key_secret.as_deref()),
        args.passphrase_env.as_deref(),
        aws,
    )
    .await?;
    build_client(&args.account, &setup.user, key, |config| {
        config.base_url = args.base_url.clone();
        config.warehouse = Some(setup.warehouse.clone());
        config.role = Some(setup.role.clone());
        config.database = Some(setup.database.clone());
    })
}

/// The key from exactly one of a PKCS#8 PEM file or a Secrets Manager secret; a passphrase
/// from the secret, else from the named environment variable. Neither is ever printed.
async fn private_key(
    (file_flag, file): (&str, Option<&PathBuf>),
    (secret_flag, secret): (&'static str, Option<&str>),
    passphrase_env: Option<&str>,
    aws: &crate::aws_args::AwsArgs,
) -> Result<PrivateKey> {
    let from_env = || -> Result<Option<String>> {
        match passphrase_env {
            Some(var) => match std::env::var(var) {
                Ok(value) => Ok(Some(value)),
                Err(_) => bail!("passphrase environment variable {var} is not set"),
            },
            None => Ok(None),
        }
    };
    let (pem, passphrase) = match (file, secret) {
        (Some(_), Some(_)) => bail!("give {file_flag} or {secret_flag}, not both"),
        (None, None) => bail!("the Snowflake key is required: give {file_flag} or {secret_flag}"),
        (Some(path), None) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("{file_flag}: cannot read {}", path.display()))?,
            from_env()?,
        ),
        (None, Some(arn)) => {
            let sdk = aws.sdk_config().await;
            let key = sluice::secrets::SecretResolver::new(&sdk)
                .snowflake_key(arn, secret_flag)
                .await?;
            let passphrase = match key.passphrase {
                Some(p) => Some(p),
                None => from_env()?,
            };
            (key.pem, passphrase)
        }
    };
    Ok(PrivateKey::from_pkcs8_pem(&pem, passphrase.as_deref())?)
}

/// A SQL API client for `account` and `user` with `key`.
fn build_client(
    account: &str,
    user: &str,
    key: PrivateKey,
    configure: impl FnOnce(&mut SnowflakeConfig),
) -> Result<SnowflakeClient> {
    let mut config = SnowflakeConfig::new(account, user);
    configure(&mut config);
    Ok(SnowflakeClient::new(config, key)?)
}

/// `sluice run` options that load each run into Snowflake (COPY into RAW, the STAGING merge,
/// gold procedures) before its watermark moves. Off unless --snowflake-account is given.
#[derive(Args)]
pub struct WarehouseArgs {
    /// Load runs into this Snowflake account (myorg-myaccount); needs an s3:// --output.
    #[arg(long, env = "SLUICE_SNOWFLAKE_ACCOUNT")]
    snowflake_account: Option<String>,
    #[arg(long, env = "SLUICE_SNOWFLAKE_USER")]
    snowflake_user: Option<String>,
    /// The user's PKCS#8 PEM private key.
    #[arg(long, env = "SLUICE_SNOWFLAKE_PRIVATE_KEY_FILE")]
    snowflake_private_key_file: Option<PathBuf>,
    /// Or: the Secrets Manager secret holding it (the PEM, or JSON with private_key and
    /// passphrase).
    #[arg(long, env = "SLUICE_SNOWFLAKE_PRIVATE_KEY_SECRET")]
    snowflake_private_key_secret: Option<String>,
    /// Name of an environment variable holding the key's passphrase, if it is encrypted.
    #[arg(long)]
    snowflake_passphrase_env: Option<String>,
    /// The SQL API's base URL, for a local stand-in.
    #[arg(long, env = "SLUICE_SNOWFLAKE_URL")]
    snowflake_url: Option<String>,
    #[arg(long, env = "SLUICE_SNOWFLAKE_DATABASE")]
    snowflake_database: Option<String>,
    #[arg(long, env = "SLUICE_SNOWFLAKE_ROLE")]
    snowflake_role: Option<String>,
    #[arg(long, env = "SLUICE_SNOWFLAKE_WAREHOUSE")]
    snowflake_warehouse: Option<String>,
}

impl WarehouseArgs {
    /// Whether --snowflake-account was given (the Snowflake options are in use).
    pub fn given(&self) -> bool {
        self.snowflake_account.is_some()
    }

    /// The user, role and warehouse the options name (role and warehouse may be the user's
    /// defaults, so absent).
    pub fn session_names(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
        (
            self.snowflake_user.as_deref(),
            self.snowflake_role.as_deref(),
            self.snowflake_warehouse.as_deref(),
        )
    }

    /// The loader, when --snowflake-account is given; the stage is the set-up's
    /// (`<database>.RAW.SLUICE_STAGE`, over the --output prefix).
    pub async fn loader(
        &self,
        output_is_s3: bool,
        aws: &crate::aws_args::AwsArgs,
    ) -> Result<Option<Arc<Loader>>> {
        if self.snowflake_account.is_some() && !output_is_s3 {
            bail!(
                "--snowflake-account needs an s3:// --output: Snowflake's stage reads the files from S3"
            );
        }
        let Some((client, database)) = self.client(aws).await? else {
            return Ok(None);
        };
        let stage = ObjectName::new(&database, RAW_SCHEMA, STAGE_NAME);
        Ok(Some(Arc::new(Loader::new(
            client,
            WarehouseTarget { database, stage },
        ))))
    }

    /// The SQL API client and the database, when --snowflake-account is given.
    pub async fn client(
        &self,
        aws: &crate::aws_args::AwsArgs,
    ) -> Result<Option<(Arc<dyn sluice::warehouse::Warehouse>, String)>> {
        let Some(account) = &self.snowflake_account else {
            return Ok(None);
        };
        let required = |value: &Option<String>, flag: &str| {
            value
                .clone()
                .with_context(|| format!("{flag} is required with --snowflake-account"))
        };
        let user = required(&self.snowflake_user, "--snowflake-user")?;
        let database = required(&self.snowflake_database, "--snowflake-database")?;
        if let Err(message) = sluice_core::ident::check_identifier(&database) {
            bail!("--snowflake-database: {message}");
        }
        let key = private_key(
            (
                "--snowflake-private-key-file",
                self.snowflake_private_key_file.as_ref(),
            ),
            (
                "--snowflake-private-key-secret",
                self.snowflake_private_key_secret.as_deref(),
            ),
            self.snowflake_passphrase_env.as_deref(),
            aws,
        )
        .await?;
        let client = build_client(account, &user, key, |config| {
            config.base_url = self.snowflake_url.clone();
            config.warehouse = self.snowflake_warehouse.clone();
            config.role = self.snowflake_role.clone();
            config.database = Some(database.clone());
        })?;
        Ok(Some((Arc::new(client), database)))
    }
}
