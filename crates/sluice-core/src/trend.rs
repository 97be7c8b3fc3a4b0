//! Per-table figures drawn from recorded runs, for `sluice status --tables`: each table's
//! last run, how far its data is behind the source (its lag), and the trend of its last N
//! loads (rows, bytes, files, seconds, seconds per phase: min, median and max over the
//! completed runs; failures and retries counted over all of them). Pure: the caller reads the
//! runs and the watermark from the state store and renders the result.
//!
//! Only runs that load the table count (loads and full reloads): a key-set run reads the
//! primary keys only and a validation reads nothing of the table's, so their figures would
//! distort the table's trend (`sluice status` lists them).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::run::{RunId, RunRecord, RunStatus};

/// How many of a table's latest loads the trend covers unless told otherwise.
pub const DEFAULT_LAST_RUNS: usize = 10;

/// The smallest, middle and largest of some figures, and the newest one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread<T> {
    pub min: T,
    /// The middle value; for an even count, the mean of the two middle ones.
    pub median: T,
    pub max: T,
    /// The newest run's.
    pub last: T,
}

/// A figure the median of which is the mean of two middle values.
pub trait Figure: Copy + PartialOrd {
    fn midpoint(a: Self, b: Self) -> Self;
}

impl Figure for u64 {
    fn midpoint(a: u64, b: u64) -> u64 {
        // No overflow, whatever the values.
        a / 2 + b / 2 + (a % 2 + b % 2) / 2
    }
}

impl Figure for f64 {
    fn midpoint(a: f64, b: f64) -> f64 {
        a / 2.0 + b / 2.0
    }
}

impl<T: Figure> Spread<T> {
    /// Over `values`, oldest first; `None` when there are none.
    pub fn of(values: &[T]) -> Option<Spread<T>> {
        let last = *values.last()?;
        let mut sorted = values.to_vec();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            T::midpoint(sorted[n / 2 - 1], sorted[n / 2])
        };
        Some(Spread {
            min: sorted[0],
            median,
            max: sorted[n - 1],
            last,
        })
    }
}

/// How far a table's data is behind its source now, as the run metrics measure it
/// ([`crate::metrics::lag`], the figure the lag alarm watches), from the table's newest ended
/// load; when that one failed before it knew (an integer cursor or a full load has no time
/// but its plan's), from its newest completed load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurrentLag {
    /// Now minus the watermark's time, or minus the plan time of a load without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// A CDC table's slot (or binary log) lag when the run was planned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_bytes: Option<u64>,
    /// Over the table's `max_lag` (or, for CDC, `load.max_slot_lag_mb`); absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over: Option<bool>,
    /// The watermark the table holds after that run, as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// The run it is measured from.
    pub run_id: RunId,
}

/// The lag of a table whose latest loads are `loads` (newest first), at `now`.
pub fn current_lag(loads: &[&RunRecord], now: DateTime<Utc>) -> Option<CurrentLag> {
    let measured = |r: &RunRecord| {
        let lag = crate::metrics::lag(r, now, crate::metrics::lag_threshold(r));
        let watermark = if r.status == RunStatus::Completed {
            r.watermark_committed.as_ref()
        } else {
            r.watermark_before.as_ref()
        };
        (lag.seconds.is_some() || lag.slot_bytes.is_some()).then(|| CurrentLag {
            seconds: lag.seconds,
            slot_bytes: lag.slot_bytes,
            over: lag.over,
            watermark: watermark.map(ToString::to_string),
            run_id: r.run_id,
        })
    };
    let newest_ended = loads.iter().find(|r| r.status.is_terminal())?;
    measured(newest_ended).or_else(|| {
        loads
            .iter()
            .find(|r| r.status == RunStatus::Completed)
            .and_then(|r| measured(r))
    })
}

/// A run as the per-table view names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunPoint {
    pub run_id: RunId,
    pub status: RunStatus,
    pub created_at: DateTime<Utc>,
    /// When it ended, if it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    pub rows: u64,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunPoint {
    fn of(r: &RunRecord) -> RunPoint {
        RunPoint {
            run_id: r.run_id,
            status: r.status,
            created_at: r.created_at,
            ended_at: r.status.is_terminal().then_some(r.updated_at),
            rows: r.rows(),
            seconds: r.seconds(),
            error: r.error.as_ref().map(|e| e.message.clone()),
        }
    }
}

/// One table's figures over its last loads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableTrend {
    pub table_key: String,
    /// The newest load, whatever its status.
    pub last_run: Option<RunPoint>,
    pub lag: Option<CurrentLag>,
    /// Loads the trend covers (at most the N asked for).
    pub runs: usize,
    pub completed: usize,
    pub failed: usize,
    /// Still going (or died without anyone noticing yet).
    pub running: usize,
    /// Takeovers: times a load was carried on after the process driving it died.
    pub retries: usize,
    /// Over the completed loads only: a failed run's figures are partial.
    pub rows: Option<Spread<u64>>,
    pub bytes: Option<Spread<u64>>,
    pub files: Option<Spread<u64>>,
    pub seconds: Option<Spread<f64>>,
    /// By phase (`PLANNED`, `EXTRACTING`, `LOADING`, `MERGING`), over the completed loads.
    pub phase_seconds: BTreeMap<String, Spread<f64>>,
    /// Every load covered, oldest first: the trend as a series.
    pub history: Vec<RunPoint>,
}

/// The figures of `table_key` from its recorded runs (any order, any kind: only loads count,
/// the newest `last` of them), at `now`.
pub fn table_trend(
    table_key: &str,
    runs: &[RunRecord],
    last: usize,
    now: DateTime<Utc>,
) -> TableTrend {
    let mut loads: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.table_key == table_key && r.kind().loads_rows())
        .collect();
    // Newest first; run ids order runs by their start.
    loads.sort_by_key(|r| std::cmp::Reverse(r.run_id));
    loads.truncate(last);
    let lag = current_lag(&loads, now);
    loads.reverse();
    let completed: Vec<&RunRecord> = loads
        .iter()
        .copied()
        .filter(|r| r.status == RunStatus::Completed)
        .collect();
    let figures = |f: &dyn Fn(&RunRecord) -> u64| {
        Spread::of(&completed.iter().map(|r| f(r)).collect::<Vec<_>>())
    };
    let mut by_phase: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in &completed {
        for (phase, timing) in &r.phases {
            if let Some(seconds) = timing.seconds() {
                by_phase.entry(phase.to_string()).or_default().push(seconds);
            }
        }
    }
    TableTrend {
        table_key: table_key.to_owned(),
        last_run: loads.last().map(|r| RunPoint::of(r)),
        lag,
        runs: loads.len(),
        completed: completed.len(),
        failed: loads
            .iter()
            .filter(|r| r.status == RunStatus::Failed)
            .count(),
        running: loads.iter().filter(|r| !r.status.is_terminal()).count(),
        retries: loads.iter().map(|r| r.resumptions.len()).sum(),
        rows: figures(&|r| r.rows()),
        bytes: figures(&|r| r.bytes()),
        files: figures(&|r| r.files() as u64),
        seconds: Spread::of(&completed.iter().map(|r| r.seconds()).collect::<Vec<_>>()),
        phase_seconds: by_phase
            .into_iter()
            .filter_map(|(phase, values)| Some((phase, Spread::of(&values)?)))
            .collect(),
        history: loads.iter().map(|r| RunPoint::of(r)).collect(),
    }
}

/// The table keys `runs` are of, in order, without repeats.
pub fn tables_of(runs: &[RunRecord]) -> Vec<String> {
    let keys: std::collections::BTreeSet<&str> =
        runs.iter().map(|r| r.table_key.as_str()).collect();
    keys.into_iter().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{ChunkOutcome, Resumption};
    use chrono::Duration;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    /// A load of `rows` rows started at `start` that took `took` seconds and ended `status`.
    fn load(table: &str, start: i64, took: i64, rows: u64, status: RunStatus) -> RunRecord {
        let mut r = RunRecord::new(RunId::at(at(start)), table.into(), at(start));
        r.transition(RunStatus::Extracting, at(start + 1)).unwrap();
        r.chunks.insert(
            0,
            ChunkOutcome {
                rows,
                bytes: rows * 10,
                ..ChunkOutcome::default()
            },
        );
        match status {
            RunStatus::Completed => {
                r.transition(RunStatus::Loading, at(start + took - 1))
                    .unwrap();
                r.transition(RunStatus::Merging, at(start + took - 1))
                    .unwrap();
                r.transition(RunStatus::Completed, at(start + took))
                    .unwrap();
            }
            RunStatus::Failed => r.fail("boom".into(), Some(0), at(start + took)),
            _ => {}
        }
        r
    }

    #[test]
    fn spreads_take_the_middle_and_keep_the_newest() {
        assert_eq!(Spread::<u64>::of(&[]), None);
        let s = Spread::of(&[5u64, 1, 9]).unwrap();
        assert_eq!((s.min, s.median, s.max, s.last), (1, 5, 9, 9));
        let s = Spread::of(&[4u64, 1, 9, 2]).unwrap();
        assert_eq!((s.min, s.median, s.max, s.last), (1, 3, 9, 2));
        assert_eq!(u64::midpoint(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(Spread::of(&[1.0, 2.0]).unwrap().median, 1.5);
    }

    #[test]
    fn a_trend_covers_the_last_n_loads_of_its_table_and_counts_failures_and_retries() {
        let t = "shop/public.orders";
        let mut runs = vec![
            load(t, 0, 10, 100, RunStatus::Completed),
            load(t, 100, 20, 300, RunStatus::Completed),
            load(t, 200, 5, 7, RunStatus::Failed),
            load(t, 300, 30, 200, RunStatus::Completed),
            load("shop/public.other", 400, 1, 1, RunStatus::Completed),
        ];
        runs[3].resumptions.push(Resumption {
            at: at(310),
            reason: "holder died".into(),
            chunks_done: 0,
            chunks_total: 1,
            by: None,
            carried_out: true,
        });
        let mut keyset = load(t, 500, 1, 5000, RunStatus::Completed);
        keyset.set_kind(crate::run::RunKind::Keyset);
        runs.push(keyset);
        let now = at(1000);

        let all = table_trend(t, &runs, 10, now);
        assert_eq!(
            (all.runs, all.completed, all.failed, all.running),
            (4, 3, 1, 0)
        );
        assert_eq!(all.retries, 1);
        let rows = all.rows.unwrap();
        // The failed run's 7 rows and the key-set run's 5000 are not in it.
        assert_eq!(
            (rows.min, rows.median, rows.max, rows.last),
            (100, 200, 300, 200)
        );
        assert_eq!(all.bytes.unwrap().max, 3000);
        let seconds = all.seconds.unwrap();
        assert_eq!(
            (seconds.min, seconds.median, seconds.max),
            (10.0, 20.0, 30.0)
        );
        assert_eq!(all.phase_seconds["PLANNED"].max, 1.0);
        assert_eq!(all.phase_seconds["EXTRACTING"].median, 18.0);
        let last = all.last_run.unwrap();
        assert_eq!(last.run_id, runs[3].run_id);
        assert_eq!(last.ended_at, Some(at(330)));
        let statuses: Vec<RunStatus> = all.history.iter().map(|p| p.status).collect();
        assert_eq!(
            statuses,
            [
                RunStatus::Completed,
                RunStatus::Completed,
                RunStatus::Failed,
                RunStatus::Completed
            ],
            "oldest first"
        );
        assert_eq!(all.history[2].error.as_deref(), Some("boom"));

        // The last two only.
        let two = table_trend(t, &runs, 2, now);
        assert_eq!((two.runs, two.completed, two.failed), (2, 1, 1));
        assert_eq!(two.rows.unwrap().min, 200);

        // A table without runs has no figures, and says so.
        let none = table_trend("shop/public.never", &runs, 10, now);
        assert_eq!(
            (none.runs, none.last_run, none.lag, none.rows),
            (0, None, None, None)
        );
        assert_eq!(
            tables_of(&runs),
            ["shop/public.orders", "shop/public.other"]
        );
    }

    #[test]
    fn the_lag_is_measured_from_the_newest_ended_load_as_the_metrics_measure_it() {
        use crate::plan::ScalarValue;
        let t = "shop/public.orders";
        let now = at(10_000);
        let mut completed = load(t, 400, 10, 1, RunStatus::Completed);
        completed.watermark_committed =
            Some(ScalarValue::TimestampTz(now - Duration::seconds(900)));
        let mut failed = load(t, 500, 10, 1, RunStatus::Failed);
        failed.watermark_before = completed.watermark_committed.clone();
        let running = load(t, 600, 0, 0, RunStatus::Extracting);

        // The running load says nothing yet; the failed one left the watermark in place,
        // which is 900 s behind now.
        let lag = current_lag(&[&running, &failed, &completed], now).unwrap();
        assert_eq!(lag.seconds, Some(900.0));
        assert_eq!(lag.run_id, failed.run_id);
        assert_eq!(
            lag.watermark,
            completed
                .watermark_committed
                .as_ref()
                .map(|w| w.to_string())
        );
        assert_eq!((lag.slot_bytes, lag.over), (None, None));

        // An integer cursor: the failed run has no time; the completed one its plan's.
        let mut completed = load(t, 400, 10, 1, RunStatus::Completed);
        completed.watermark_committed = Some(ScalarValue::Int(7));
        completed.plan = Some(plan(completed.run_id, at(400), None));
        let mut failed = load(t, 500, 10, 1, RunStatus::Failed);
        failed.watermark_before = Some(ScalarValue::Int(7));
        let lag = current_lag(&[&failed, &completed], now).unwrap();
        assert_eq!((lag.seconds, lag.run_id), (Some(9_600.0), completed.run_id));
        assert_eq!(lag.watermark.as_deref(), Some("7"));

        // Nothing ended, nothing to say.
        assert_eq!(current_lag(&[&running], now), None);
        assert_eq!(current_lag(&[], now), None);
    }

    /// A plan of `shop/public.orders` started at `started_at`, with `cdc` if given.
    fn plan(
        run_id: RunId,
        started_at: DateTime<Utc>,
        cdc: Option<serde_json::Value>,
    ) -> crate::plan::RunPlan {
        let mut plan = serde_json::json!({
            "run_id": run_id,
            "engine": "postgres",
            "started_at": started_at,
            "table": {"source": "shop", "table": "public.orders"},
            "columns": [],
            "chunks": [],
        });
        if let Some(cdc) = cdc {
            plan["cdc"] = cdc;
        }
        serde_json::from_value(plan).unwrap()
    }

    #[test]
    fn a_cdc_tables_lag_carries_the_log_its_newest_plan_saw() {
        let t = "shop/public.orders";
        let now = at(10_000);
        let mut run = load(t, 500, 10, 1, RunStatus::Completed);
        run.plan = Some(plan(
            run.run_id,
            at(500),
            Some(serde_json::json!({
                "slot": "s", "publication": "p", "from": 1, "upto": 2,
                "max_changes": 10, "retained_wal": 5_242_880
            })),
        ));
        let trend = table_trend(t, &[run.clone()], 10, now);
        let lag = trend.lag.unwrap();
        assert_eq!(lag.slot_bytes, Some(5_242_880));
        assert_eq!(lag.run_id, run.run_id);
    }
}
