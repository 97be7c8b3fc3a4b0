//! Late-committing writers: holding an incremental window's upper bound below the oldest
//! transaction still writing on the source.
//!
//! A transaction that stamps its rows with its own start time (`now()` in PostgreSQL, a value
//! an application captured when it began) commits them later with a cursor value below what
//! other, already committed rows hold. If the window's upper bound, `max(cursor)`, passed that
//! value while the transaction was open, the next window starts above it and only the
//! lookback can still catch the rows. So at plan time the source reports the oldest open
//! writing transaction it can see, and the bound is held strictly below what that transaction
//! can stamp. Once it ends, the next run's window starts below the held bound and reads its
//! rows. The decisions are here; the sources only run the queries.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Engine, LoadMode, TableConfig};
use crate::plan::{ScalarKind, ScalarValue};

/// How long one transaction may hold a table's upper bound back before `sluice status` warns.
pub const DEFAULT_HOLD_WARN_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// The oldest open writing transaction a source saw when a run was planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenWriter {
    /// The server's id of the session: the backend pid in PostgreSQL, the connection
    /// (thread) id in MySQL, as `pg_stat_activity` and `SHOW PROCESSLIST` show it.
    pub pid: i64,
    /// When its transaction started, as an instant.
    pub since: DateTime<Utc>,
    /// The same moment as wall-clock time in the planning session's time zone (UTC, which
    /// sluice sets on every session), converted by the database: what a `timestamp`/`datetime`
    /// or `date` cursor stamped by that transaction holds, assuming the writer's session used
    /// the same zone.
    pub since_local: NaiveDateTime,
}

/// What a source learned about open writers at plan time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriterCheck {
    /// The oldest open writing transaction among those the source user can see.
    pub oldest: Option<OpenWriter>,
    /// Why the check could not see every session (a missing privilege, a failed query): the
    /// run warns with this, and holds only for the writers it did see.
    pub unseen: Option<String>,
}

impl WriterCheck {
    /// Every session was visible; `oldest` is the oldest writer among them, if any.
    pub fn seen(oldest: Option<OpenWriter>) -> WriterCheck {
        WriterCheck {
            oldest,
            unseen: None,
        }
    }

    /// The source user cannot see other users' sessions (PostgreSQL without
    /// `pg_read_all_stats`, MySQL without `PROCESS`).
    pub fn missing_privilege(engine: Engine, oldest: Option<OpenWriter>) -> WriterCheck {
        WriterCheck {
            oldest,
            unseen: Some(format!(
                "late writers not checked: the source user cannot see other sessions' transactions ({}); the upper bound is max(cursor) as without the check, so a writer open longer than load.lookback may be missed",
                grant_hint(engine)
            )),
        }
    }

    /// The check's query failed for another reason; the run goes on as without the check.
    pub fn failed(message: &str) -> WriterCheck {
        WriterCheck {
            oldest: None,
            unseen: Some(format!(
                "late writers not checked: {message}; the upper bound is max(cursor) as without the check"
            )),
        }
    }
}

/// The grant that lets a source user see every session's transactions.
pub fn grant_hint(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => "GRANT pg_read_all_stats TO <user>",
        Engine::Mysql => "GRANT PROCESS ON *.* TO <user>",
    }
}

/// What `sluice config check` says about a source with incremental tables.
pub fn grant_note(engine: Engine) -> String {
    let view = match engine {
        Engine::Postgres => "pg_stat_activity",
        Engine::Mysql => "information_schema.innodb_trx",
    };
    format!(
        "incremental runs hold their upper bound below the oldest open writing transaction, read from {view}; the source user needs `{}` to see other users' transactions (without it runs warn and use max(cursor))",
        grant_hint(engine)
    )
}

/// Whether planning `table` asks the source about open writers: incremental loads with a
/// cursor. The cursor's kind is not known yet (the check runs before the planning snapshot),
/// so an integer cursor is asked too and the answer ignored.
pub fn wants_check(table: &TableConfig) -> bool {
    table.load.mode == LoadMode::Incremental && table.load.cursor.is_some()
}

/// The highest cursor value a run may read while `writer` is open: strictly below anything the
/// writer can stamp. `None` when no bound can be derived: an integer cursor's values do not
/// follow a transaction's start time (ids are handed out at insert, and a sequence value taken
/// by a long transaction is below ids committed after it), so integer cursors are not held
/// and rely on the lookback alone.
pub fn writer_cap(kind: ScalarKind, writer: &OpenWriter) -> Option<ScalarValue> {
    // One microsecond: the finest precision either engine stores. MySQL reports a start in
    // whole seconds (rounded down), so one microsecond below it is still below the real start.
    let tick = Duration::microseconds(1);
    match kind {
        ScalarKind::Int => None,
        ScalarKind::TimestampTz => writer
            .since
            .checked_sub_signed(tick)
            .map(ScalarValue::TimestampTz),
        ScalarKind::Timestamp => writer
            .since_local
            .checked_sub_signed(tick)
            .map(ScalarValue::Timestamp),
        // A date cursor stamped by the writer holds its start day: only days before it are
        // complete.
        ScalarKind::Date => writer.since_local.date().pred_opt().map(ScalarValue::Date),
    }
}

/// Why a run's upper bound is below `max(cursor)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpperBoundHold {
    /// The bound the run used (and commits as its watermark).
    pub upper: ScalarValue,
    /// `max(cursor)` at plan time: the bound without the hold.
    pub cursor_max: ScalarValue,
    pub writer: OpenWriter,
}

impl UpperBoundHold {
    /// `upper bound held at … by a transaction open since …, pid …`.
    pub fn message(&self) -> String {
        format!(
            "upper bound held at {} by a transaction open since {}, pid {} (max(cursor) {})",
            self.upper,
            self.writer.since.format("%Y-%m-%d %H:%M:%S%.6fZ"),
            self.writer.pid,
            self.cursor_max
        )
    }

    /// How long the writer had been open when the run was planned.
    pub fn held_for(&self, planned_at: DateTime<Utc>) -> Duration {
        planned_at.signed_duration_since(self.writer.since)
    }

    /// A warning when the writer had been open longer than `warn_after` at plan time: one
    /// transaction is keeping every newer row of the table from arriving.
    pub fn status_warning(
        &self,
        planned_at: DateTime<Utc>,
        warn_after: std::time::Duration,
    ) -> Option<String> {
        let held = self.held_for(planned_at);
        let limit = Duration::from_std(warn_after).unwrap_or(Duration::MAX);
        (held > limit).then(|| {
            format!(
                "one transaction (pid {}) has held the watermark back for {} (longer than {}): rows newer than {} wait until it ends; find it on the source and end it if it is stuck",
                self.writer.pid,
                human(held),
                human(limit),
                self.upper
            )
        })
    }
}

/// `2h 05m`, `3m 20s`, `45s`.
fn human(d: Duration) -> String {
    let secs = d.num_seconds().max(0);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m"),
    }
}

/// An incremental window's upper bound, and the hold when an open writer lowered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldUpper {
    pub upper: Option<ScalarValue>,
    pub hold: Option<UpperBoundHold>,
}

/// The upper bound of an incremental window: `max(cursor)`, held strictly below what the
/// oldest open writer can stamp, and never below the previous watermark (the window does not
/// move backwards; if nothing newer may be read, the run reads only the lookback overlap).
pub fn incremental_upper(
    kind: ScalarKind,
    cursor_max: Option<&ScalarValue>,
    watermark: Option<&ScalarValue>,
    oldest_writer: Option<&OpenWriter>,
) -> HeldUpper {
    let cap = oldest_writer.and_then(|w| writer_cap(kind, w));
    let capped = match (cursor_max, &cap) {
        (Some(max), Some(cap)) if cap < max => Some(cap.clone()),
        (max, _) => max.cloned(),
    };
    let upper = match (capped, watermark) {
        (Some(upper), Some(w)) if &upper < w => Some(w.clone()),
        (None, Some(w)) => Some(w.clone()),
        (upper, _) => upper,
    };
    let hold = match (cursor_max, oldest_writer, &upper) {
        (Some(max), Some(writer), Some(held)) if held < max => Some(UpperBoundHold {
            upper: held.clone(),
            cursor_max: max.clone(),
            writer: writer.clone(),
        }),
        _ => None,
    };
    HeldUpper { upper, hold }
}

/// Parses a `--hold-warn-after` style duration (`30m`, `2h`, `1d`), naming `field` when it is
/// not one.
pub fn parse_warn_after(field: &str, text: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            format!("{field}: '{text}' is not a positive duration such as 30m, 2h or 1d")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    fn writer(since: &str) -> OpenWriter {
        OpenWriter {
            pid: 4242,
            since: at(since).and_utc(),
            since_local: at(since),
        }
    }

    fn tz(s: &str) -> ScalarValue {
        ScalarValue::TimestampTz(at(s).and_utc())
    }

    fn ts(s: &str) -> ScalarValue {
        ScalarValue::Timestamp(at(s))
    }

    fn day(y: i32, m: u32, d: u32) -> ScalarValue {
        ScalarValue::Date(NaiveDate::from_ymd_opt(y, m, d).unwrap())
    }

    #[test]
    fn the_cap_is_strictly_below_what_the_writer_can_stamp_per_cursor_kind() {
        let w = writer("2024-05-01 10:00:00.250000");
        assert_eq!(
            writer_cap(ScalarKind::TimestampTz, &w),
            Some(tz("2024-05-01 10:00:00.249999"))
        );
        assert_eq!(
            writer_cap(ScalarKind::Timestamp, &w),
            Some(ts("2024-05-01 10:00:00.249999"))
        );
        // A date cursor stamped today is complete only up to yesterday, even a microsecond
        // after midnight.
        assert_eq!(writer_cap(ScalarKind::Date, &w), Some(day(2024, 4, 30)));
        assert_eq!(
            writer_cap(ScalarKind::Date, &writer("2024-05-01 00:00:00")),
            Some(day(2024, 4, 30))
        );
        // An id does not follow a start time: integer cursors are not held.
        assert_eq!(writer_cap(ScalarKind::Int, &w), None);
    }

    #[test]
    fn a_timestamp_cursor_is_capped_on_the_wall_clock_the_database_converted_to() {
        // The planning session is UTC; the database cast 10:00Z to the wall time 10:00, and
        // that is what the cap of a zoneless cursor follows, not the instant.
        let w = OpenWriter {
            pid: 1,
            since: at("2024-05-01 10:00:00").and_utc(),
            since_local: at("2024-05-01 12:00:00"),
        };
        assert_eq!(
            writer_cap(ScalarKind::Timestamp, &w),
            Some(ts("2024-05-01 11:59:59.999999"))
        );
        assert_eq!(
            writer_cap(ScalarKind::TimestampTz, &w),
            Some(tz("2024-05-01 09:59:59.999999"))
        );
    }

    #[test]
    fn an_open_writer_holds_the_bound_below_its_start_and_says_why() {
        let w = writer("2024-05-01 10:00:00");
        let max = tz("2024-05-01 10:30:00");
        let wm = tz("2024-05-01 09:00:00");
        let held = incremental_upper(ScalarKind::TimestampTz, Some(&max), Some(&wm), Some(&w));
        assert_eq!(held.upper, Some(tz("2024-05-01 09:59:59.999999")));
        let hold = held.hold.unwrap();
        assert_eq!(hold.cursor_max, max);
        assert_eq!(
            hold.message(),
            "upper bound held at 2024-05-01 09:59:59.999999Z by a transaction open since 2024-05-01 10:00:00.000000Z, pid 4242 (max(cursor) 2024-05-01 10:30:00.000000Z)"
        );
    }

    #[test]
    fn without_a_writer_or_below_it_the_bound_is_max_cursor() {
        let max = tz("2024-05-01 10:30:00");
        let none = incremental_upper(ScalarKind::TimestampTz, Some(&max), None, None);
        assert_eq!(none.upper, Some(max.clone()));
        assert_eq!(none.hold, None);
        // A writer that started after every committed row does not hold anything back.
        let later = writer("2024-05-01 11:00:00");
        let free = incremental_upper(ScalarKind::TimestampTz, Some(&max), None, Some(&later));
        assert_eq!(free.upper, Some(max));
        assert_eq!(free.hold, None);
    }

    #[test]
    fn the_held_bound_never_moves_below_the_previous_watermark() {
        let w = writer("2024-05-01 10:00:00");
        let max = tz("2024-05-01 10:30:00");
        let wm = tz("2024-05-01 10:10:00");
        let held = incremental_upper(ScalarKind::TimestampTz, Some(&max), Some(&wm), Some(&w));
        assert_eq!(held.upper, Some(wm.clone()));
        // Still below max(cursor): the run records that it was held, at the watermark.
        assert_eq!(held.hold.unwrap().upper, wm);
        // A watermark at or past max(cursor) leaves nothing held.
        let past = tz("2024-05-01 11:00:00");
        let held = incremental_upper(ScalarKind::TimestampTz, Some(&max), Some(&past), Some(&w));
        assert_eq!(held.upper, Some(past));
        assert_eq!(held.hold, None);
        // An empty table keeps the watermark whatever is open.
        let held = incremental_upper(ScalarKind::TimestampTz, None, Some(&wm), Some(&w));
        assert_eq!(held.upper, Some(wm));
        assert_eq!(held.hold, None);
    }

    #[test]
    fn integer_and_date_cursors_follow_their_own_rules() {
        let w = writer("2024-05-01 10:00:00");
        let held = incremental_upper(
            ScalarKind::Int,
            Some(&ScalarValue::Int(900)),
            Some(&ScalarValue::Int(100)),
            Some(&w),
        );
        assert_eq!(held.upper, Some(ScalarValue::Int(900)));
        assert_eq!(held.hold, None);
        let held = incremental_upper(
            ScalarKind::Date,
            Some(&day(2024, 5, 1)),
            Some(&day(2024, 4, 20)),
            Some(&w),
        );
        assert_eq!(held.upper, Some(day(2024, 4, 30)));
        assert!(held.hold.is_some());
        // On the first run there is no watermark to keep: the bound is just held.
        let held = incremental_upper(ScalarKind::Date, Some(&day(2024, 5, 1)), None, Some(&w));
        assert_eq!(held.upper, Some(day(2024, 4, 30)));
    }

    #[test]
    fn status_warns_only_past_the_configured_time() {
        let hold = UpperBoundHold {
            upper: tz("2024-05-01 09:59:59.999999"),
            cursor_max: tz("2024-05-01 12:30:00"),
            writer: writer("2024-05-01 10:00:00"),
        };
        let planned = at("2024-05-01 12:05:00").and_utc();
        assert_eq!(hold.held_for(planned), Duration::minutes(125));
        let warning = hold
            .status_warning(planned, DEFAULT_HOLD_WARN_AFTER)
            .unwrap();
        assert!(
            warning.starts_with(
                "one transaction (pid 4242) has held the watermark back for 2h 05m (longer than 1h 00m)"
            ),
            "{warning}"
        );
        assert_eq!(
            hold.status_warning(planned, std::time::Duration::from_secs(3 * 3600)),
            None
        );
    }

    #[test]
    fn the_warn_after_setting_is_a_positive_duration() {
        assert_eq!(
            parse_warn_after("--hold-warn-after", "90m"),
            Ok(std::time::Duration::from_secs(5400))
        );
        for bad in ["0s", "soon", "10", ""] {
            let err = parse_warn_after("--hold-warn-after", bad).unwrap_err();
            assert!(err.starts_with("--hold-warn-after: '"), "{err}");
        }
    }

    #[test]
    fn the_missing_grant_is_named_per_engine() {
        let pg = WriterCheck::missing_privilege(Engine::Postgres, None);
        assert!(
            pg.unseen
                .unwrap()
                .contains("(GRANT pg_read_all_stats TO <user>)")
        );
        let my = WriterCheck::missing_privilege(Engine::Mysql, None);
        assert!(
            my.unseen
                .unwrap()
                .contains("(GRANT PROCESS ON *.* TO <user>)")
        );
        assert!(grant_note(Engine::Mysql).contains("information_schema.innodb_trx"));
    }
}
