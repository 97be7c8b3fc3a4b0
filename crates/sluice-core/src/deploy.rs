//! A deployment's settings, as a Lambda function reads them from its environment (the SAM
//! template sets them) and the CLI from its options: where files go, which DynamoDB tables
//! hold config and state, the Glue database, Parquet sizing, the functions to invoke.
//!
//! Every value is checked here, once, at cold start: a function with a bad setting refuses
//! to start with a message naming the variable, instead of failing runs one by one.

use std::collections::BTreeMap;
use std::time::Duration;

use thiserror::Error;

use crate::catalog::check_database_name;
use crate::config::parse_duration;
use crate::output::OutputLocation;

/// Bounds of the Parquet sizing settings, shared with the CLI's options.
pub const ROW_GROUP_MB: (u32, u32) = (1, 1024);
pub const FILE_MB: (u32, u32) = (1, 16384);
/// S3 parts are 5 MiB to 5 GiB.
pub const PART_MB: (u32, u32) = (5, 5120);
/// Rows of one external-function batch the trigger accepts: the deployed
/// `SLUICE_MAX_BATCH_ROWS` (the template's `MaxBatchRows`), and the `MAX_BATCH_ROWS` of the
/// external functions `sluice snowflake sql` creates. One value for both, so Snowflake never
/// sends a batch the trigger refuses.
pub const DEFAULT_MAX_BATCH_ROWS: usize = 100;
/// At most 1,000: each row's answer is kept under a few KiB (`batch::run_status_result`), so a
/// whole batch stays well inside Lambda's 6 MB synchronous answer
/// (<https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html>).
pub const MAX_BATCH_ROWS_RANGE: (u32, u32) = (1, 1_000);

/// Checks a batch-row limit against [`MAX_BATCH_ROWS_RANGE`].
pub fn check_max_batch_rows(rows: usize) -> Result<(), String> {
    let (low, high) = MAX_BATCH_ROWS_RANGE;
    if (low as usize..=high as usize).contains(&rows) {
        Ok(())
    } else {
        Err(format!(
            "{rows} must be a whole number from {low} to {high}"
        ))
    }
}

/// How long run records are kept: a run's items in the DynamoDB state table expire (DynamoDB
/// TTL on `expires_at`) this long after the run started. The deployed
/// `SLUICE_RUN_RETENTION` (the template's `RunRetention`) and the CLI's `--run-retention`
/// share this default and these bounds.
pub const DEFAULT_RUN_RETENTION: Duration = Duration::from_secs(90 * DAY_SECONDS);
pub const RUN_RETENTION_RANGE: (Duration, Duration) = (
    Duration::from_secs(2 * DAY_SECONDS),
    Duration::from_secs(3650 * DAY_SECONDS),
);
/// How long a deployed run's lease outlives its last renewal by default. The run's live
/// invocations renew it, but between them an event can wait in Lambda's asynchronous queue:
/// a failed event is retried after about a minute and then two more
/// (<https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html>), and
/// throttling delays delivery. Fifteen minutes outlasts those waits, so a live run is never
/// taken over between its invocations, while a run whose invocations all died frees its table
/// in a quarter of an hour rather than hours.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15 * 60);

/// How much longer than the lease TTL a run's record must be kept: a run still holding its
/// table's lease (or finishing just after it lapsed) must never lose its record.
pub const RUN_RETENTION_OVER_LEASE: Duration = Duration::from_secs(DAY_SECONDS);
const DAY_SECONDS: u64 = 86_400;

/// Parses a run retention (`90d`, `2160h`, …) and checks it against [`RUN_RETENTION_RANGE`].
pub fn parse_run_retention(text: &str) -> Result<Duration, String> {
    let (low, high) = RUN_RETENTION_RANGE;
    match parse_duration(text) {
        Some(d) if (low..=high).contains(&d) => Ok(d),
        _ => Err(format!(
            "'{}' must be a duration from {}d to {}d (e.g. 90d)",
            text.trim(),
            low.as_secs() / DAY_SECONDS,
            high.as_secs() / DAY_SECONDS
        )),
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{} problem(s) in the function's settings:\n  {}", .0.len(), .0.join("\n  "))]
pub struct DeployError(pub Vec<String>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Snappy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentSettings {
    /// Must be `s3://…` in Lambda (a function has no lasting disk).
    pub output: OutputLocation,
    pub glue_database: Option<String>,
    pub state_table: String,
    pub config_table: String,
    pub compression: Compression,
    pub row_group_mb: u32,
    pub file_mb: u32,
    pub part_mb: u32,
    /// How long a table's lease outlives its last renewal: every extract and finalize
    /// invocation of the run renews it while it works (see [`DEFAULT_LEASE_TTL`]).
    pub lease_ttl: Duration,
    /// How long a run's record is kept after the run started (see [`DEFAULT_RUN_RETENTION`]).
    pub run_retention: Duration,
    /// The extract function the trigger fans out to, and the finalize function the last
    /// chunk invokes (names or ARNs).
    pub extract_function: Option<String>,
    pub finalize_function: Option<String>,
    /// Rows of one external-function batch the trigger accepts.
    pub max_batch_rows: usize,
    /// Loads every run into Snowflake when set.
    pub snowflake: Option<SnowflakeSettings>,
    /// How far back the scheduler looks for a missed fire time (see `schedule::is_due`).
    pub schedule_lookback: Duration,
    /// The longest a chunk may take, below the function's own deadline: a chunk stuck on a
    /// slow source fails its run at this point instead of holding the lease until the
    /// Lambda timeout. Absent: only the deadline limits it.
    pub chunk_timeout: Option<Duration>,
    /// The longest planning one run may take (connecting to the source, reading its catalog
    /// and bounds), counted from the trigger's request: the trigger leases the table for this
    /// long and the planner renews it for this long when it starts, so a planner that dies
    /// leaves the table locked no longer than this.
    pub plan_timeout: Duration,
}

/// [`DeploymentSettings::plan_timeout`] when `SLUICE_PLAN_TIMEOUT` is unset.
pub const DEFAULT_PLAN_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Where and as whom runs are loaded into Snowflake. The private key never appears here:
/// only the Secrets Manager secret that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnowflakeSettings {
    pub account: String,
    pub user: String,
    pub private_key_secret: String,
    pub database: String,
    pub warehouse: Option<String>,
    pub role: Option<String>,
    /// The SQL API's base URL, for a local stand-in; Snowflake's own URL otherwise.
    pub url: Option<String>,
}

impl DeploymentSettings {
    /// Reads `SLUICE_*` variables from `env` and reports every problem at once.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<DeploymentSettings, DeployError> {
        let mut problems = Vec::new();
        let get = |name: &str| {
            env.get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let required = |name: &str, problems: &mut Vec<String>| {
            get(name).unwrap_or_else(|| {
                problems.push(format!("{name}: required"));
                String::new()
            })
        };
        let output_text = required("SLUICE_OUTPUT", &mut problems);
        let output = match OutputLocation::parse("SLUICE_OUTPUT", &output_text) {
            Ok(OutputLocation::LocalDir(_)) if !output_text.is_empty() => {
                problems.push(format!(
                    "SLUICE_OUTPUT: '{output_text}' is not an s3:// location (a function has no lasting disk)"
                ));
                None
            }
            Ok(location) => Some(location),
            Err(e) if !output_text.is_empty() => {
                problems.push(e.to_string());
                None
            }
            Err(_) => None,
        };
        let state_table = required("SLUICE_STATE_TABLE", &mut problems);
        let config_table = required("SLUICE_CONFIG_TABLE", &mut problems);
        for (name, value) in [
            ("SLUICE_STATE_TABLE", &state_table),
            ("SLUICE_CONFIG_TABLE", &config_table),
        ] {
            if !value.is_empty()
                && let Err(e) = check_dynamodb_table_name(value)
            {
                problems.push(format!("{name}: '{value}' {e}"));
            }
        }
        let glue_database = get("SLUICE_GLUE_DATABASE");
        if let Some(db) = &glue_database
            && let Err(e) = check_database_name(db)
        {
            problems.push(format!("SLUICE_GLUE_DATABASE: '{db}' {e}"));
        }
        let compression = match get("SLUICE_PARQUET_COMPRESSION").as_deref() {
            None | Some("zstd") => Compression::Zstd,
            Some("snappy") => Compression::Snappy,
            Some(other) => {
                problems.push(format!(
                    "SLUICE_PARQUET_COMPRESSION: '{other}' is not one of zstd, snappy"
                ));
                Compression::Zstd
            }
        };
        let mut number = |name: &str, default: u32, (low, high): (u32, u32)| match get(name) {
            None => default,
            Some(text) => match text.parse::<u32>() {
                Ok(n) if (low..=high).contains(&n) => n,
                _ => {
                    problems.push(format!(
                        "{name}: '{text}' must be a whole number from {low} to {high}"
                    ));
                    default
                }
            },
        };
        let row_group_mb = number("SLUICE_ROW_GROUP_MB", 32, ROW_GROUP_MB);
        let file_mb = number("SLUICE_FILE_MB", 256, FILE_MB);
        let part_mb = number("SLUICE_PART_MB", 10, PART_MB);
        let max_batch_rows = number(
            "SLUICE_MAX_BATCH_ROWS",
            DEFAULT_MAX_BATCH_ROWS as u32,
            MAX_BATCH_ROWS_RANGE,
        ) as usize;
        // None when unset; a bad value is a problem and also None, so defaults apply below.
        let mut duration = |name: &str, (at_least, shown): (Duration, &str), example: &str| {
            let text = get(name)?;
            match parse_duration(&text) {
                Some(d) if d >= at_least => Some(d),
                _ => {
                    problems.push(format!(
                        "{name}: '{text}' must be a duration of at least {shown} (e.g. {example})"
                    ));
                    None
                }
            }
        };
        let minute = (Duration::from_secs(60), "1m");
        let lease_ttl =
            duration("SLUICE_LEASE_TTL", minute, "15m, 30m").unwrap_or(DEFAULT_LEASE_TTL);
        let schedule_lookback =
            duration("SLUICE_SCHEDULE_LOOKBACK", minute, "1h").unwrap_or(Duration::from_secs(3600));
        let chunk_timeout = duration(
            "SLUICE_CHUNK_TIMEOUT",
            (Duration::from_secs(1), "1s"),
            "10m",
        );
        let plan_timeout = duration("SLUICE_PLAN_TIMEOUT", (Duration::from_secs(1), "1s"), "5m")
            .unwrap_or(DEFAULT_PLAN_TIMEOUT);
        if plan_timeout >= lease_ttl {
            problems.push(format!(
                "SLUICE_PLAN_TIMEOUT: {}s must be shorter than SLUICE_LEASE_TTL ({}s): planning holds the table on a short lease, which the run lengthens once it is planned",
                plan_timeout.as_secs(),
                lease_ttl.as_secs()
            ));
        }
        let run_retention = match get("SLUICE_RUN_RETENTION") {
            None => DEFAULT_RUN_RETENTION,
            Some(text) => match parse_run_retention(&text) {
                Ok(d) if d >= lease_ttl + RUN_RETENTION_OVER_LEASE => d,
                Ok(_) => {
                    problems.push(format!(
                        "SLUICE_RUN_RETENTION: '{text}' must be at least a day longer than SLUICE_LEASE_TTL ({}s), so no run's record expires while the run may still hold its table's lease",
                        lease_ttl.as_secs()
                    ));
                    DEFAULT_RUN_RETENTION
                }
                Err(e) => {
                    problems.push(format!("SLUICE_RUN_RETENTION: {e}"));
                    DEFAULT_RUN_RETENTION
                }
            },
        };
        let snowflake = snowflake_settings(&get, &mut problems);
        let (Some(output), true) = (output, problems.is_empty()) else {
            return Err(DeployError(problems));
        };
        Ok(DeploymentSettings {
            output,
            glue_database,
            state_table,
            config_table,
            compression,
            row_group_mb,
            file_mb,
            part_mb,
            lease_ttl,
            run_retention,
            extract_function: get("SLUICE_EXTRACT_FUNCTION"),
            finalize_function: get("SLUICE_FINALIZE_FUNCTION"),
            max_batch_rows,
            snowflake,
            schedule_lookback,
            chunk_timeout,
            plan_timeout,
        })
    }
}

/// `SLUICE_SNOWFLAKE_*`: all or nothing, so a half-configured warehouse is a start-up error
/// rather than runs that silently skip the load.
fn snowflake_settings(
    get: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<SnowflakeSettings> {
    const VARS: [&str; 7] = [
        "SLUICE_SNOWFLAKE_ACCOUNT",
        "SLUICE_SNOWFLAKE_USER",
        "SLUICE_SNOWFLAKE_PRIVATE_KEY_SECRET",
        "SLUICE_SNOWFLAKE_DATABASE",
        "SLUICE_SNOWFLAKE_WAREHOUSE",
        "SLUICE_SNOWFLAKE_ROLE",
        "SLUICE_SNOWFLAKE_URL",
    ];
    let Some(account) = get("SLUICE_SNOWFLAKE_ACCOUNT") else {
        let stray: Vec<&str> = VARS.iter().copied().filter(|v| get(v).is_some()).collect();
        if !stray.is_empty() {
            problems.push(format!(
                "SLUICE_SNOWFLAKE_ACCOUNT: required when {} is set",
                stray.join(", ")
            ));
        }
        return None;
    };
    let before = problems.len();
    if let Err(e) = crate::snowflake::check_account_name(&account) {
        problems.push(format!("SLUICE_SNOWFLAKE_ACCOUNT: {e}"));
    }
    let mut required = |name: &str| {
        get(name).unwrap_or_else(|| {
            problems.push(format!("{name}: required with SLUICE_SNOWFLAKE_ACCOUNT"));
            String::new()
        })
    };
    let user = required("SLUICE_SNOWFLAKE_USER");
    let private_key_secret = required("SLUICE_SNOWFLAKE_PRIVATE_KEY_SECRET");
    let database = required("SLUICE_SNOWFLAKE_DATABASE");
    for (name, value) in [
        ("SLUICE_SNOWFLAKE_DATABASE", Some(database.clone())),
        (
            "SLUICE_SNOWFLAKE_WAREHOUSE",
            get("SLUICE_SNOWFLAKE_WAREHOUSE"),
        ),
        ("SLUICE_SNOWFLAKE_ROLE", get("SLUICE_SNOWFLAKE_ROLE")),
    ] {
        if let Some(value) = value.filter(|v| !v.is_empty())
            && let Err(e) = crate::ident::check_identifier(&value)
        {
            problems.push(format!("{name}: {e}"));
        }
    }
    let url = get("SLUICE_SNOWFLAKE_URL");
    if let Some(u) = &url
        && let Err(e) = crate::output::check_endpoint_url(u)
    {
        problems.push(format!("SLUICE_SNOWFLAKE_URL: {e}"));
    }
    (problems.len() == before).then(|| SnowflakeSettings {
        account,
        user,
        private_key_secret,
        database,
        warehouse: get("SLUICE_SNOWFLAKE_WAREHOUSE"),
        role: get("SLUICE_SNOWFLAKE_ROLE"),
        url,
    })
}

/// DynamoDB's rules for table names.
fn check_dynamodb_table_name(name: &str) -> Result<(), String> {
    if !(3..=255).contains(&name.len()) {
        return Err("must be 3 to 255 characters long".into());
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_-.".contains(*c)))
    {
        Some(c) => Err(format!(
            "contains '{c}': use letters, digits, '_', '-' and '.'"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const MINIMAL: [(&str, &str); 3] = [
        ("SLUICE_OUTPUT", "s3://lake/raw"),
        ("SLUICE_STATE_TABLE", "sluice-state"),
        ("SLUICE_CONFIG_TABLE", "sluice-config"),
    ];

    #[test]
    fn the_minimal_environment_gets_the_documented_defaults() {
        let s = DeploymentSettings::from_env(&env(&MINIMAL)).unwrap();
        assert_eq!(
            s.output,
            OutputLocation::S3 {
                bucket: "lake".into(),
                prefix: "raw".into()
            }
        );
        assert_eq!(s.glue_database, None);
        assert_eq!(s.compression, Compression::Zstd);
        assert_eq!((s.row_group_mb, s.file_mb, s.part_mb), (32, 256, 10));
        assert_eq!(s.lease_ttl, Duration::from_secs(900));
        assert_eq!(s.plan_timeout, Duration::from_secs(300));
        assert_eq!(s.max_batch_rows, 100);
        assert_eq!(s.run_retention, Duration::from_secs(90 * 86_400));
    }

    #[test]
    fn the_run_retention_is_a_bounded_duration_longer_than_the_lease() {
        let with = |pairs: &[(&str, &str)]| {
            let mut all: Vec<(&str, &str)> = MINIMAL.to_vec();
            all.extend_from_slice(pairs);
            DeploymentSettings::from_env(&env(&all))
        };
        let days = |n: u64| Duration::from_secs(n * 86_400);
        for (text, expected) in [
            ("30d", days(30)),
            (" 365d ", days(365)),
            ("72h", days(3)),
            ("2d", days(2)),
            ("3650d", days(3650)),
        ] {
            let s = with(&[("SLUICE_RUN_RETENTION", text)]).unwrap();
            assert_eq!(s.run_retention, expected, "{text}");
        }
        // An empty variable counts as unset (the template passes every parameter).
        let s = with(&[("SLUICE_RUN_RETENTION", "")]).unwrap();
        assert_eq!(s.run_retention, DEFAULT_RUN_RETENTION);

        for bad in [
            "1d", "47h", "3651d", "90", "90 days", "-5d", "forever", "1.5d",
        ] {
            let err = with(&[("SLUICE_RUN_RETENTION", bad)])
                .unwrap_err()
                .to_string();
            let expected = format!(
                "SLUICE_RUN_RETENTION: '{}' must be a duration from 2d to 3650d (e.g. 90d)",
                bad.trim()
            );
            assert!(err.contains(&expected), "{bad}: {err}");
        }
        // A run may hold its lease for the lease TTL: its record must outlive that by a day.
        let err = with(&[("SLUICE_LEASE_TTL", "3d"), ("SLUICE_RUN_RETENTION", "3d")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SLUICE_RUN_RETENTION: '3d' must be at least a day longer than SLUICE_LEASE_TTL (259200s)"),
            "{err}"
        );
        let s = with(&[("SLUICE_LEASE_TTL", "3d"), ("SLUICE_RUN_RETENTION", "4d")]).unwrap();
        assert_eq!(s.run_retention, days(4));
        assert_eq!(parse_run_retention("90d"), Ok(DEFAULT_RUN_RETENTION));
    }

    #[test]
    fn planning_leases_the_table_for_less_than_the_lease_ttl() {
        let with = |extra: &[(&str, &str)]| {
            let mut vars = env(&MINIMAL);
            vars.extend(env(extra));
            DeploymentSettings::from_env(&vars)
        };
        let err = with(&[("SLUICE_LEASE_TTL", "10m"), ("SLUICE_PLAN_TIMEOUT", "10m")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SLUICE_PLAN_TIMEOUT: 600s must be shorter than SLUICE_LEASE_TTL (600s)"),
            "{err}"
        );
        let s = with(&[("SLUICE_LEASE_TTL", "10m"), ("SLUICE_PLAN_TIMEOUT", "9m")]).unwrap();
        assert_eq!(s.plan_timeout, Duration::from_secs(540));
        assert_eq!(
            with(&[("SLUICE_PLAN_TIMEOUT", "3s")]).unwrap().plan_timeout,
            Duration::from_secs(3)
        );
    }

    #[test]
    fn snowflake_settings_are_all_or_nothing() {
        let with = |pairs: &[(&str, &str)]| {
            let mut all: Vec<(&str, &str)> = MINIMAL.to_vec();
            all.extend_from_slice(pairs);
            DeploymentSettings::from_env(&env(&all))
        };
        let ok = with(&[
            ("SLUICE_SNOWFLAKE_ACCOUNT", "myorg-acct"),
            ("SLUICE_SNOWFLAKE_USER", "LOADER"),
            (
                "SLUICE_SNOWFLAKE_PRIVATE_KEY_SECRET",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:sf-AbCdEf",
            ),
            ("SLUICE_SNOWFLAKE_DATABASE", "ANALYTICS"),
        ])
        .unwrap();
        let snowflake = ok.snowflake.unwrap();
        assert_eq!(snowflake.database, "ANALYTICS");
        assert_eq!(snowflake.url, None);
        assert_eq!(ok.schedule_lookback, Duration::from_secs(3600));

        let stray = with(&[("SLUICE_SNOWFLAKE_USER", "LOADER")])
            .unwrap_err()
            .to_string();
        assert!(
            stray.contains("SLUICE_SNOWFLAKE_ACCOUNT: required when SLUICE_SNOWFLAKE_USER is set"),
            "{stray}"
        );
        let half = with(&[
            ("SLUICE_SNOWFLAKE_ACCOUNT", "x@evil.com#"),
            ("SLUICE_SNOWFLAKE_DATABASE", "bad name"),
            ("SLUICE_SNOWFLAKE_URL", "http://snowflake.example.com"),
            ("SLUICE_SCHEDULE_LOOKBACK", "5s"),
            ("SLUICE_CHUNK_TIMEOUT", "soon"),
            ("SLUICE_PLAN_TIMEOUT", "later"),
        ])
        .unwrap_err()
        .to_string();
        for expected in [
            "SLUICE_SNOWFLAKE_ACCOUNT: 'x@evil.com#' contains '@'",
            "SLUICE_SNOWFLAKE_USER: required with SLUICE_SNOWFLAKE_ACCOUNT",
            "SLUICE_SNOWFLAKE_PRIVATE_KEY_SECRET: required with SLUICE_SNOWFLAKE_ACCOUNT",
            "SLUICE_SNOWFLAKE_DATABASE:",
            "SLUICE_SNOWFLAKE_URL: 'http://snowflake.example.com': plain http is allowed only on loopback",
            "SLUICE_SCHEDULE_LOOKBACK: '5s' must be a duration of at least 1m",
            "SLUICE_CHUNK_TIMEOUT: 'soon' must be a duration of at least 1s",
            "SLUICE_PLAN_TIMEOUT: 'later' must be a duration of at least 1s",
        ] {
            assert!(half.contains(expected), "missing '{expected}' in:\n{half}");
        }
    }

    #[test]
    fn every_bad_setting_is_named_at_once() {
        let err = DeploymentSettings::from_env(&env(&[
            ("SLUICE_OUTPUT", "/tmp/out"),
            ("SLUICE_STATE_TABLE", "st"),
            ("SLUICE_GLUE_DATABASE", "Raw-DB"),
            ("SLUICE_PARQUET_COMPRESSION", "gzip"),
            ("SLUICE_PART_MB", "4"),
            ("SLUICE_FILE_MB", "lots"),
            ("SLUICE_LEASE_TTL", "10s"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for expected in [
            "8 problem(s)",
            "SLUICE_OUTPUT: '/tmp/out' is not an s3:// location",
            "SLUICE_STATE_TABLE: 'st' must be 3 to 255 characters long",
            "SLUICE_CONFIG_TABLE: required",
            "SLUICE_GLUE_DATABASE: 'Raw-DB' contains 'R'",
            "SLUICE_PARQUET_COMPRESSION: 'gzip' is not one of zstd, snappy",
            "SLUICE_PART_MB: '4' must be a whole number from 5 to 5120",
            "SLUICE_FILE_MB: 'lots' must be a whole number",
            "SLUICE_LEASE_TTL: '10s' must be a duration of at least 1m",
        ] {
            assert!(text.contains(expected), "missing '{expected}' in:\n{text}");
        }
        let missing = DeploymentSettings::from_env(&env(&[])).unwrap_err();
        assert_eq!(missing.0.len(), 3, "{missing}");
        let bad_bucket = DeploymentSettings::from_env(&env(&[
            ("SLUICE_OUTPUT", "s3://Lake/raw"),
            MINIMAL[1],
            MINIMAL[2],
        ]))
        .unwrap_err();
        assert!(
            bad_bucket
                .to_string()
                .contains("SLUICE_OUTPUT: bucket 'Lake'"),
            "{bad_bucket}"
        );
    }
}
