//! `sluice watermark set|reset`: moving a table's watermark by hand, for backfills. It is the
//! one way to lose or re-read data on purpose, so it shows the change, refuses without
//! `--yes`, checks the value against the cursor's type, and takes the table's lease for the
//! write, so it never races a running run.

use anyhow::{Result, bail};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use sluice::state::{StateError, StateStore};
use sluice_core::{Config, LoadMode, RunId, ScalarKind, ScalarValue, TableConfig};

use crate::aws_args::AwsArgs;
use crate::backend::{ConfigArgs, StateArgs};

#[derive(Subcommand)]
pub enum WatermarkCommand {
    /// Set a table's watermark: its next incremental run reads rows with a cursor above it
    /// (minus the lookback).
    Set {
        #[command(flatten)]
        target: Target,
        /// The new watermark: an integer, a date (2024-05-01), a timestamp
        /// (2024-05-01 12:00:00.123456) or, for timestamptz cursors, an RFC 3339 instant
        /// (2024-05-01T12:00:00Z).
        #[arg(long)]
        value: String,
        /// The cursor's type, when sluice has not seen the table run yet.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
    },
    /// Remove a table's watermark: its next incremental run reads everything (a cdc table's
    /// next run takes a new snapshot).
    Reset {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Args)]
pub struct Target {
    /// The table: `source/schema.table`, `schema.table` or `table`.
    #[arg(long)]
    table: String,
    /// Really change it (without this, the change is only shown).
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum KindArg {
    Int,
    Date,
    Timestamp,
    Timestamptz,
}

impl From<KindArg> for ScalarKind {
    fn from(k: KindArg) -> ScalarKind {
        match k {
            KindArg::Int => ScalarKind::Int,
            KindArg::Date => ScalarKind::Date,
            KindArg::Timestamp => ScalarKind::Timestamp,
            KindArg::Timestamptz => ScalarKind::TimestampTz,
        }
    }
}

fn kind_name(kind: ScalarKind) -> &'static str {
    match kind {
        ScalarKind::Int => "int",
        ScalarKind::Date => "date",
        ScalarKind::Timestamp => "timestamp",
        ScalarKind::TimestampTz => "timestamptz",
    }
}

/// Parses a watermark typed by hand as a value of `kind`, at full precision.
pub fn parse_value(kind: ScalarKind, text: &str) -> Result<ScalarValue, String> {
    let text = text.trim();
    let parsed = match kind {
        ScalarKind::Int => text.parse().ok().map(ScalarValue::Int),
        ScalarKind::Date => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .map(ScalarValue::Date),
        ScalarKind::Timestamp => ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
            .map(ScalarValue::Timestamp),
        ScalarKind::TimestampTz => DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| ScalarValue::TimestampTz(t.with_timezone(&Utc))),
    };
    parsed.ok_or_else(|| {
        let expected = match kind {
            ScalarKind::Int => "a whole number",
            ScalarKind::Date => "a date like 2024-05-01",
            ScalarKind::Timestamp => "a timestamp like 2024-05-01 12:00:00.123456",
            ScalarKind::TimestampTz => "an RFC 3339 instant like 2024-05-01T12:00:00.123456Z",
        };
        format!(
            "--value '{text}' is not a {} value: expected {expected}",
            kind_name(kind)
        )
    })
}

/// The incremental table `selector` names in `config`.
fn find_table<'a>(config: &'a Config, selector: &str, origin: &str) -> Result<&'a TableConfig> {
    let found = config.find_tables(selector);
    let table = match found.as_slice() {
        [one] => *one,
        [] => bail!("--table {selector}: no such table in {origin}"),
        _ => bail!(
            "--table {selector} is ambiguous; use source/schema.table (one of {})",
            found.iter().map(|t| t.key()).collect::<Vec<_>>().join(", ")
        ),
    };
    if table.load.mode == LoadMode::Cdc {
        return Ok(table);
    }
    if table.load.mode != LoadMode::Incremental || table.load.cursor.is_none() {
        bail!(
            "table {} is not an incremental load (load.mode: full): it has no watermark",
            table.key()
        );
    }
    Ok(table)
}

/// The cursor's kind as sluice last saw it: the stored watermark's, else the newest run's
/// cursor window's.
async fn known_kind(state: &dyn StateStore, key: &str) -> Result<Option<ScalarKind>> {
    if let Some(w) = state.table_state(key).await?.watermark {
        return Ok(Some(w.kind()));
    }
    // Key sets and validations have no window: the newest run that had one.
    let runs = state.list_runs(Some(key), 20).await?;
    Ok(runs
        .iter()
        .filter_map(|r| r.plan.as_ref()?.cursor.as_ref())
        .find_map(|c| c.upper.as_ref().or(c.lower.as_ref()))
        .map(ScalarValue::kind))
}

pub async fn run(command: WatermarkCommand, aws: &AwsArgs) -> Result<bool> {
    let (target, new_value) = match &command {
        WatermarkCommand::Set {
            target,
            value,
            kind,
        } => (target, Some((value.as_str(), *kind))),
        WatermarkCommand::Reset { target } => (target, None),
    };
    let (config, origin) = target.config.load(aws).await?;
    let table = find_table(&config, &target.table, &origin)?;
    let key = table.key();
    if table.load.mode == LoadMode::Cdc && new_value.is_some() {
        bail!(
            "table {key} is a cdc table: its watermark is a position in the change log, which only its runs set. Reset it (sluice watermark reset) to take a new snapshot"
        );
    }
    let (state, location) = target.state.open(aws).await?;
    let new = match new_value {
        None => None,
        Some((text, given)) => {
            let known = known_kind(state.as_ref(), &key).await?;
            let kind = match (known, given.map(ScalarKind::from)) {
                (Some(known), Some(given)) if known != given => bail!(
                    "--kind {} does not match cursor '{}' of {key}, which is {}",
                    kind_name(given),
                    table.load.cursor.as_deref().unwrap_or_default(),
                    kind_name(known)
                ),
                (Some(kind), _) | (None, Some(kind)) => kind,
                (None, None) => bail!(
                    "sluice has not seen cursor '{}' of {key} yet (no watermark, no run), so its type is unknown; give --kind int|date|timestamp|timestamptz",
                    table.load.cursor.as_deref().unwrap_or_default()
                ),
            };
            Some(parse_value(kind, text).map_err(anyhow::Error::msg)?)
        }
    };
    let current = state.table_state(&key).await?.watermark;
    let show = |w: &Option<ScalarValue>| w.as_ref().map_or("(none)".into(), ToString::to_string);
    println!(
        "watermark of {key} in {location}: {} → {}",
        show(&current),
        show(&new)
    );
    if !target.yes {
        bail!("not changed: add --yes to change the watermark");
    }
    // The lease keeps a run from planning against the old watermark while it changes.
    let operator = RunId::new();
    let now = Utc::now();
    match state
        .acquire_lease(&key, operator, now, now + chrono::Duration::minutes(1))
        .await
    {
        // A run whose lease had expired is marked FAILED by the takeover (its files are not
        // removed here: only a run's own takeover in the pipeline does that).
        Ok(_) => {}
        Err(StateError::AlreadyRunning { run_id, .. }) => bail!(
            "table {key} is running (run {run_id}); change its watermark once that run has finished"
        ),
        Err(e) => return Err(e.into()),
    }
    let written = match &new {
        Some(value) => state.commit_watermark(&key, operator, value).await,
        None => state.clear_watermark(&key, operator).await,
    };
    state.release_lease(&key, operator).await?;
    written?;
    println!("watermark of {key} is now {}", show(&new));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_at_full_precision_or_say_what_is_expected() {
        assert_eq!(
            parse_value(ScalarKind::Int, "-42"),
            Ok(ScalarValue::Int(-42))
        );
        let ts = parse_value(ScalarKind::Timestamp, "2024-05-01 12:00:00.123456").unwrap();
        assert_eq!(ts.to_string(), "2024-05-01 12:00:00.123456");
        let tz = parse_value(ScalarKind::TimestampTz, "2024-05-01T14:00:00.5+02:00").unwrap();
        assert_eq!(tz.to_string(), "2024-05-01 12:00:00.500000Z");
        assert_eq!(
            parse_value(ScalarKind::Date, "2024-02-29")
                .unwrap()
                .to_string(),
            "2024-02-29"
        );
        let err = parse_value(ScalarKind::Date, "2023-02-29").unwrap_err();
        assert!(err.contains("is not a date value"), "{err}");
        let err = parse_value(ScalarKind::Int, "12.5").unwrap_err();
        assert!(err.contains("expected a whole number"), "{err}");
    }
}
