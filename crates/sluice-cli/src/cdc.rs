//! `sluice cdc setup`: creating what a `load.mode: cdc` table reads its changes through (a
//! publication naming the table and a logical replication slot), once, by an operator. Runs
//! never create them: that takes the table's owner and the `REPLICATION` attribute, which
//! the role sluice reads with need not have beyond `REPLICATION`. A MariaDB binlog reader
//! keeps nothing on the server: setup only checks the server's settings, and `--print`
//! shows the settings and grants to give.

use anyhow::{Result, bail};
use clap::Subcommand;
use sluice_core::{Engine, LoadMode};

use crate::aws_args::AwsArgs;
use crate::backend::ConfigArgs;

#[derive(Subcommand)]
pub enum CdcCommand {
    /// Create the publication and the replication slot of cdc tables where missing (run it
    /// as a role that owns the tables and has REPLICATION: --url, or the source's own
    /// connection), or print the SQL with --print.
    Setup {
        #[command(flatten)]
        config: ConfigArgs,
        /// The tables: `source/schema.table`, `schema.table` or `table`. Repeatable; all cdc
        /// tables without it.
        #[arg(long, short)]
        table: Vec<String>,
        /// Print the SQL instead of running it.
        #[arg(long)]
        print: bool,
        /// Connect with this PostgreSQL URL instead of the source's connection (e.g. the
        /// tables' owner). Never printed.
        #[arg(long, env = "SLUICE_CDC_SETUP_URL")]
        url: Option<String>,
    },
    /// Check what cdc tables need at the source, as the role sluice reads with: wal_level,
    /// REPLICATION, SELECT, a replica identity, the slot and the publication. Names every
    /// problem; exits non-zero if there is one. Changes nothing.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
        /// The tables (repeatable; all cdc tables without it).
        #[arg(long, short)]
        table: Vec<String>,
    },
}

pub async fn run(command: CdcCommand, aws: &AwsArgs) -> Result<bool> {
    let (config, table, print, url, check) = match command {
        CdcCommand::Setup {
            config,
            table,
            print,
            url,
        } => (config, table, print, url, false),
        CdcCommand::Check { config, table } => (config, table, false, None, true),
    };
    let (mut config, origin) = config.load(aws).await?;
    let selected: Vec<sluice_core::TableConfig> = if table.is_empty() {
        config
            .tables
            .iter()
            .filter(|t| t.load.mode == LoadMode::Cdc)
            .cloned()
            .collect()
    } else {
        table
            .iter()
            .map(|selector| {
                config
                    .find_table(selector)
                    .cloned()
                    .map_err(|e| anyhow::anyhow!("--table {selector} ({origin}): {e}"))
            })
            .collect::<Result<_>>()?
    };
    if selected.is_empty() {
        bail!("no table in {origin} has load.mode: cdc");
    }
    for table in &selected {
        if table.load.mode != LoadMode::Cdc {
            bail!(
                "--table {}: load.mode is not cdc; only cdc tables read a replication slot",
                table.key()
            );
        }
    }
    if print {
        for table in &selected {
            let binlog = config.source(&table.source).map(|s| s.engine) == Some(Engine::Mysql);
            let statements = if binlog {
                println!(
                    "-- {}: as an administrator; <user> is the user sluice reads as",
                    table.key()
                );
                sluice_core::cdc::binlog::setup_sql(table)
            } else {
                println!("-- {}: as the table's owner, with REPLICATION", table.key());
                sluice_core::cdc::setup_sql(table)
            };
            for statement in statements.map_err(anyhow::Error::msg)? {
                println!("{statement};");
            }
        }
        return Ok(true);
    }
    if let Some(url) = url {
        let mut named: Vec<&str> = selected.iter().map(|t| t.source.as_str()).collect();
        named.sort_unstable();
        named.dedup();
        if named.len() > 1 {
            bail!(
                "--url connects to one database, and the tables are of sources {}: give --table of one source",
                named.join(", ")
            );
        }
        // The URL alone says who connects: no secret or password of the source's own role.
        for source in config
            .sources
            .iter_mut()
            .filter(|s| named.contains(&s.name.as_str()))
        {
            source.connection.url = Some(url.clone());
            source.connection.host = None;
            source.connection.port = None;
            source.connection.user = None;
            source.connection.database = None;
            source.connection.secret_arn = None;
            source.connection.password_env = None;
        }
    }
    let keys: Vec<String> = selected.iter().map(|t| t.key()).collect();
    let (tables, sources) = crate::selected_tables(&config, &origin, &keys, aws).await?;
    let mut ready = true;
    for table in tables {
        let Some(source) = sources.get(&table.source) else {
            bail!("table {}: no source '{}'", table.key(), table.source);
        };
        if check {
            let problems = source.check_cdc(table).await?;
            if problems.is_empty() {
                println!("{}: ready", table.key());
            }
            for problem in &problems {
                println!("{}: {problem}", table.key());
            }
            ready &= problems.is_empty();
            continue;
        }
        let done = source.setup_cdc(table).await?;
        if done.is_empty() && source.engine() == Engine::Postgres {
            println!(
                "{}: publication '{}' and slot '{}' are in place",
                table.key(),
                table.cdc_publication(),
                table.cdc_slot()
            );
        }
        for statement in done {
            println!("{}: {statement}", table.key());
        }
    }
    Ok(ready)
}
