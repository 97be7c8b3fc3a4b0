//! `sluice status --tables`: per table, its last load, its lag and the trend of its last N
//! loads, read from the state store (local or DynamoDB) and computed by
//! `sluice_core::trend`. Which tables: the one `--table` names, else the configuration's
//! (`--config`/`--config-table`, so tables never run show too), else those with a run among
//! the latest [`DISCOVERY_RUNS`] recorded.

use anyhow::Result;
use sluice::state::StateStore;
use sluice_core::Config;
use sluice_core::trend::{DEFAULT_LAST_RUNS, TableTrend, table_trend, tables_of};

/// Without a configuration, tables are found among this many of the latest runs.
pub const DISCOVERY_RUNS: usize = 500;

/// The most loads per table a trend may cover: each is a record to read.
pub const MAX_LAST_RUNS: usize = 1_000;

/// `--last N`: at least one load, at most [`MAX_LAST_RUNS`].
pub fn parse_last(text: &str) -> Result<usize, String> {
    let n: usize = text.parse().map_err(|_| {
        format!("'{text}' is not a number of runs (e.g. --last {DEFAULT_LAST_RUNS})")
    })?;
    if n == 0 {
        return Err(format!(
            "must be at least 1: the number of each table's latest loads the trend covers (default {DEFAULT_LAST_RUNS})"
        ));
    }
    if n > MAX_LAST_RUNS {
        return Err(format!(
            "must be at most {MAX_LAST_RUNS} (each run is a record to read)"
        ));
    }
    Ok(n)
}

/// Where the table list came from, for the line under the table.
pub enum TableSource<'a> {
    One(&'a str),
    Config(&'a Config),
    Recent,
}

/// The trend of each table, in table order, and a note on how the tables were found.
pub async fn trends(
    store: &dyn StateStore,
    tables: TableSource<'_>,
    last: usize,
) -> Result<(Vec<TableTrend>, Option<String>)> {
    let (keys, note) = match tables {
        TableSource::One(key) => (vec![key.to_owned()], None),
        TableSource::Config(config) => {
            let mut keys: Vec<String> = config.tables.iter().map(|t| t.key()).collect();
            keys.sort();
            keys.dedup();
            (keys, None)
        }
        TableSource::Recent => {
            let recent = store.list_runs(None, DISCOVERY_RUNS).await?;
            let note = (recent.len() == DISCOVERY_RUNS).then(|| {
                format!(
                    "tables with a run among the latest {DISCOVERY_RUNS} recorded; --config or --config-table shows every configured table"
                )
            });
            (tables_of(&recent), note)
        }
    };
    let now = chrono::Utc::now();
    let mut trends = Vec::with_capacity(keys.len());
    for key in keys {
        let runs = loads_of(store, &key, last).await?;
        trends.push(table_trend(&key, &runs, last, now));
    }
    Ok((trends, note))
}

/// The table's latest runs, enough of them to hold its `last` latest loads when it has that
/// many: key-set runs and validations are recorded among them and do not count.
async fn loads_of(
    store: &dyn StateStore,
    key: &str,
    last: usize,
) -> Result<Vec<sluice_core::RunRecord>> {
    let ceiling = last.saturating_mul(8);
    let mut limit = last;
    loop {
        let runs = store.list_runs(Some(key), limit).await?;
        let loads = runs.iter().filter(|r| r.kind().loads_rows()).count();
        if loads >= last || runs.len() < limit || limit >= ceiling {
            return Ok(runs);
        }
        limit = limit.saturating_mul(2).min(ceiling);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_takes_one_to_a_thousand_and_says_why_not() {
        assert_eq!(parse_last("3"), Ok(3));
        assert!(parse_last("0").unwrap_err().contains("at least 1"));
        assert!(parse_last("1001").unwrap_err().contains("at most 1000"));
        assert!(parse_last("ten").unwrap_err().contains("not a number"));
    }
}
