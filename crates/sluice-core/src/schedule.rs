//! Per-table schedules: a table's `schedule` is a five-field cron expression in UTC, and the
//! trigger function, woken by one EventBridge rule every few minutes, starts each table whose
//! schedule has come due. Changing a schedule is a config change, never a redeploy.
//!
//! Whether a table is due is a pure function of its cron, when its last run started and now,
//! so the rule's rate only bounds how late a run starts, and a missed or doubled wake-up
//! neither loses nor repeats a scheduled run.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A parsed, checked schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    text: String,
}

impl Schedule {
    /// Parses a standard five-field cron expression (minute hour day-of-month month
    /// day-of-week), read in UTC. Seconds are refused: the trigger wakes every few minutes.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("must not be empty".into());
        }
        if trimmed.split_whitespace().count() != 5 {
            return Err(format!(
                "'{trimmed}' is not a five-field cron expression (minute hour day-of-month month day-of-week, UTC), e.g. '0 2 * * *'"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .build()
            .parse(trimmed)
            .map_err(|e| format!("'{trimmed}' is not a valid cron expression: {e}"))?;
        // A pattern that never fires (e.g. 30 February) would silently never run the table.
        if cron.find_next_occurrence(&Utc::now(), false).is_err() {
            return Err(format!("'{trimmed}' never fires"));
        }
        Ok(Schedule {
            cron,
            text: trimmed.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The latest time at or before `now` the schedule fires.
    pub fn last_fire(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&now, true).ok()
    }

    /// True when the schedule has fired since the table's last run started, looking back at
    /// most `lookback`: a new table, or one whose schedule just changed, starts at its next
    /// fire time rather than catching up on a backlog of missed ones.
    pub fn is_due(
        &self,
        last_run_started: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        lookback: Duration,
    ) -> bool {
        let Some(fired) = self.last_fire(now) else {
            return false;
        };
        if fired < now - lookback {
            return false;
        }
        last_run_started.is_none_or(|started| started < fired)
    }
}

/// Whether `table`'s key set is due at `now`: it has `deletes.keyset.every`, and no key-set
/// run completed within that long (`last`: the latest completed one, whose id says when it
/// started). Only tables that find deletes by key sets are ever due.
pub fn keyset_due(
    table: &crate::TableConfig,
    last: Option<crate::RunId>,
    now: DateTime<Utc>,
) -> bool {
    let Some(every) = table
        .deletes
        .keyset
        .as_ref()
        .and_then(|k| k.every())
        .filter(|_| table.deletes_by_keyset())
        .and_then(|every| Duration::from_std(every).ok())
    else {
        return false;
    };
    last.is_none_or(|last| now - last.opened_at() >= every)
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Schedule::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_set_is_due_every_so_often_and_only_where_configured() {
        let table = |deletes: &str| {
            let yaml = format!(
                "sources:\n  - name: s\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\n\
                 tables:\n  - source: s\n    table: public.t\n    primary_key: [id]\n\
                 \x20   load: {{ mode: incremental, cursor: updated_at }}\n{deletes}"
            );
            crate::Config::from_yaml(&yaml, "t")
                .unwrap()
                .tables
                .remove(0)
        };
        let now = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        let every_day = table("    deletes: { mode: hard, keyset: { every: 24h } }\n");
        let ran = |hours_ago: i64| Some(crate::RunId::at(now - Duration::hours(hours_ago)));
        assert!(keyset_due(&every_day, None, now));
        assert!(!keyset_due(&every_day, ran(23), now));
        assert!(keyset_due(&every_day, ran(24), now));
        // Only when asked, or no deletes at all: never due.
        assert!(!keyset_due(
            &table("    deletes: { mode: soft, keyset: {} }\n"),
            None,
            now
        ));
        assert!(!keyset_due(&table(""), None, now));
    }
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, h, m, 0).unwrap()
    }

    #[test]
    fn five_field_cron_in_utc() {
        let s = Schedule::parse(" 0 2 * * * ").unwrap();
        assert_eq!(s.as_str(), "0 2 * * *");
        assert_eq!(s.last_fire(at(3, 10)), Some(at(2, 0)));
        assert_eq!(s.last_fire(at(2, 0)), Some(at(2, 0)));
    }

    #[test]
    fn bad_schedules_say_why() {
        for (text, expected) in [
            ("", "must not be empty"),
            ("0 2 * *", "not a five-field cron"),
            ("0 0 2 * * *", "not a five-field cron"),
            ("61 2 * * *", "not a valid cron expression"),
            ("0 2 * * funday", "not a valid cron expression"),
            ("0 0 30 2 *", "never fires"),
        ] {
            let err = Schedule::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn due_once_per_fire_time() {
        let s = Schedule::parse("*/15 * * * *").unwrap();
        let lookback = Duration::hours(1);
        // Fired at 10:15; the last run started at 10:00: due.
        assert!(s.is_due(Some(at(10, 0)), at(10, 17), lookback));
        // A run started at 10:16 for that fire time: not due again until 10:30.
        assert!(!s.is_due(Some(at(10, 16)), at(10, 20), lookback));
        assert!(s.is_due(Some(at(10, 16)), at(10, 30), lookback));
        // Never run: due at its latest fire time within the lookback.
        assert!(s.is_due(None, at(10, 17), lookback));
    }

    #[test]
    fn no_backlog_beyond_the_lookback() {
        let daily = Schedule::parse("0 2 * * *").unwrap();
        // A table added at 09:00 does not run for the 02:00 it missed.
        assert!(!daily.is_due(None, at(9, 0), Duration::hours(1)));
        assert!(daily.is_due(None, at(2, 30), Duration::hours(1)));
        // A wake-up that came late (02:40) still starts it within the lookback.
        assert!(daily.is_due(
            Some(at(1, 0) - Duration::days(1)),
            at(2, 40),
            Duration::hours(1)
        ));
    }
}
