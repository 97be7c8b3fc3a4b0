//! Text rendering of run records for people: the run summary, the run list, a run's story.

use chrono::{DateTime, Utc};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};
use sluice::state::TableState;
use sluice_core::{RunRecord, RunStatus};

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn right(text: impl ToString) -> Cell {
    Cell::new(text.to_string()).set_alignment(CellAlignment::Right)
}

/// The table printed at the end of `sluice run`.
pub fn summary(records: &[(String, Result<RunRecord, String>)]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "table", "run", "rows", "files", "bytes", "seconds", "status",
    ]);
    for (key, result) in records {
        match result {
            Ok(r) => {
                let status = match (&r.status, &r.error) {
                    (RunStatus::Failed, Some(e)) => format!("FAILED: {}", e.message),
                    (status, _) => status.to_string(),
                };
                table.add_row(vec![
                    Cell::new(key),
                    Cell::new(r.run_id),
                    right(r.rows()),
                    right(r.files()),
                    right(human_bytes(r.bytes())),
                    right(format!("{:.2}", r.seconds())),
                    Cell::new(status),
                ]);
            }
            Err(e) => {
                table.add_row(vec![
                    Cell::new(key),
                    Cell::new("-"),
                    right("-"),
                    right("-"),
                    right("-"),
                    right("-"),
                    Cell::new(format!("NOT RUN: {e}")),
                ]);
            }
        }
    }
    table.to_string()
}

/// A batch's gold steps, in the order they ran: level, procedure, outcome, why.
pub fn gold_steps(gold: &sluice_core::gold::GoldRecord) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec!["level", "gold procedure", "after", "status"]);
    for step in &gold.steps {
        let status = match &step.detail {
            Some(detail) => format!("{}: {detail}", step.status.as_str()),
            None => step.status.as_str().to_owned(),
        };
        table.add_row(vec![
            right(step.level),
            Cell::new(&step.procedure),
            Cell::new(step.inputs.join(", ")),
            Cell::new(status),
        ]);
    }
    format!("\nGold of batch {}:\n{table}", gold.batch_id)
}

/// The configuration's gold in dependency levels: level 1 reads only tables, level n reads
/// gold of lower levels; within a batch they run in this order.
pub fn gold_levels(config: &sluice_core::Config) -> String {
    let graph = config.gold_graph();
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec!["level", "gold procedure", "inputs"]);
    for node in &graph.nodes {
        table.add_row(vec![
            right(node.level),
            Cell::new(&node.procedure),
            Cell::new(config.gold[node.index].inputs.join(", ")),
        ]);
    }
    table.to_string()
}

/// The newest of `runs` of each table, in table order.
fn newest_per_table<'a>(runs: impl Iterator<Item = &'a RunRecord>) -> Vec<&'a RunRecord> {
    let mut newest: std::collections::BTreeMap<&str, &RunRecord> = Default::default();
    for r in runs {
        let entry = newest.entry(r.table_key.as_str()).or_insert(r);
        if r.created_at > entry.created_at {
            *entry = r;
        }
    }
    newest.into_values().collect()
}

/// Warnings under the run list: the newest listed run of each table whose upper bound one
/// transaction had held back longer than `hold_warn_after`.
pub fn hold_warnings(runs: &[RunRecord], hold_warn_after: std::time::Duration) -> Vec<String> {
    newest_per_table(runs.iter())
        .into_iter()
        .filter_map(|r| {
            let plan = r.plan.as_ref()?;
            let warning = plan
                .upper_hold()?
                .status_warning(plan.started_at, hold_warn_after)?;
            Some(format!(
                "warning: {} (run {}): {warning}",
                r.table_key, r.run_id
            ))
        })
        .collect()
}

/// Warnings under the run list: the newest listed run of each cdc table whose slot held more
/// WAL than the table allows (`load.max_slot_lag_mb`) when it was planned.
pub fn slot_warnings(runs: &[RunRecord]) -> Vec<String> {
    newest_per_table(
        runs.iter()
            .filter(|r| r.plan.as_ref().is_some_and(|p| p.cdc.is_some())),
    )
    .into_iter()
    .filter_map(|r| {
        let plan = r.plan.as_ref()?;
        let limit = plan
            .table
            .load
            .max_slot_lag_mb
            .unwrap_or(sluice_core::config::DEFAULT_MAX_SLOT_LAG_MB);
        let warning = plan.cdc.as_ref()?.lag_warning(limit)?;
        Some(format!(
            "warning: {} (run {}): {warning}",
            r.table_key, r.run_id
        ))
    })
    .collect()
}

pub fn run_list(runs: &[RunRecord]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "run",
        "table",
        "created (UTC)",
        "status",
        "rows",
        "files",
        "bytes",
        "seconds",
    ]);
    for r in runs {
        let table_key = match r.kind() {
            sluice_core::run::RunKind::Load => r.table_key.clone(),
            kind => format!("{} ({})", r.table_key, kind.as_str()),
        };
        table.add_row(vec![
            Cell::new(r.run_id),
            Cell::new(table_key),
            Cell::new(r.created_at.format("%Y-%m-%d %H:%M:%S")),
            Cell::new(r.status),
            right(r.rows()),
            right(r.files()),
            right(human_bytes(r.bytes())),
            right(format!("{:.2}", r.seconds())),
        ]);
    }
    table.to_string()
}

/// What `sluice validate` found for one table: the verdict, then every schema finding and
/// every metric on both sides.
pub fn validation(v: &sluice_core::validate::TableValidation) -> String {
    use sluice_core::validate::Verdict;
    let word = |verdict: Verdict| match verdict {
        Verdict::Ok => "OK",
        Verdict::Mismatch => "MISMATCH",
        Verdict::Pending => "PENDING",
    };
    let mut out = format!("{} → {}: {}\n", v.table, v.staging, word(v.verdict()));
    if let Some(up_to) = &v.up_to {
        out.push_str(&format!(
            "  compared up to the watermark {up_to}; {} source row(s) past it not yet loaded\n",
            v.not_yet_loaded.unwrap_or(0)
        ));
    }
    if !v.schema.is_empty() {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        table.set_header(vec!["column", "between", "problem", "result"]);
        for f in &v.schema {
            table.add_row(vec![
                Cell::new(&f.column),
                Cell::new(&f.between),
                Cell::new(&f.problem),
                Cell::new(word(f.verdict)),
            ]);
        }
        out.push_str(&table.to_string());
        out.push('\n');
    }
    if !v.metrics.is_empty() {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        table.set_header(vec!["metric", "source", "staging", "result"]);
        for m in &v.metrics {
            let shown = |value: &Option<String>| value.clone().unwrap_or_else(|| "NULL".into());
            table.add_row(vec![
                Cell::new(m.metric.to_string()),
                right(shown(&m.source)),
                right(shown(&m.staging)),
                Cell::new(word(m.verdict)),
            ]);
        }
        out.push_str(&table.to_string());
        out.push('\n');
    }
    if let Some(rows) = &v.rows {
        out.push_str(&format!(
            "  rows: {} compared in {} key range(s), {} source queries: {} missing, {} extra, {} different: {}\n",
            rows.rows_compared,
            rows.ranges,
            rows.source_queries,
            rows.missing,
            rows.extra,
            rows.different,
            word(rows.verdict)
        ));
        for diff in &rows.examples {
            let columns = if diff.columns.is_empty() {
                String::new()
            } else {
                format!(" in {}", diff.columns.join(", "))
            };
            out.push_str(&format!(
                "    key ({}) {:?}{columns}\n",
                diff.key.join(", "),
                diff.problem
            ));
        }
        if !rows.skipped.is_empty() {
            out.push_str(&format!(
                "  not in the row hashes (no text every engine prints alike): {}\n",
                rows.skipped.join(", ")
            ));
        }
    }
    if let Some(reason) = &v.rows_skipped {
        out.push_str(&format!("  rows not compared: {reason}\n"));
    }
    out
}

/// Everything known about one run, phase by phase. `hold_warn_after`: how long one open
/// transaction may hold the window's upper bound back before the story warns.
pub fn story(r: &RunRecord, state: &TableState, hold_warn_after: std::time::Duration) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("run       {}", r.run_id));
    line(format!("table     {}", r.table_key));
    line(format!("status    {}", r.status));
    line(format!(
        "created   {} UTC",
        r.created_at.format("%Y-%m-%d %H:%M:%S%.3f")
    ));
    if let Some(holder) = &r.holder {
        line(format!("holder    {holder}"));
    }
    for resumed in &r.resumptions {
        line(format!(
            "resumed   {} UTC with {} of {} chunks done: {}",
            resumed.at.format("%Y-%m-%d %H:%M:%S"),
            resumed.chunks_done,
            resumed.chunks_total,
            resumed.reason
        ));
    }
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|(phase, t)| match t.seconds() {
            Some(s) => format!("{phase} {s:.3}s"),
            None => format!(
                "{phase} (running since {})",
                t.started_at.format("%H:%M:%S")
            ),
        })
        .collect();
    line(format!("phases    {}", phases.join(" → ")));
    if r.kind() != sluice_core::run::RunKind::Load {
        line(format!("kind      {}", r.kind().as_str()));
    }
    if let Some(found) = &r.validation {
        if let Some(error) = &r.error {
            line(format!("error     {}", error.message));
        }
        line(validation(found));
        return out;
    }
    if let Some(plan) = &r.plan {
        line(format!("mode      {:?}", plan.table.load.mode).to_lowercase());
        if let Some(c) = &plan.cursor {
            line(format!(
                "window    {} > {} and <= {}",
                c.column,
                c.lower
                    .as_ref()
                    .map_or("(start)".into(), ToString::to_string),
                c.upper
                    .as_ref()
                    .map_or("(no rows)".into(), ToString::to_string)
            ));
            if let Some(hold) = &c.hold {
                line(format!("held      {}", hold.message()));
                if let Some(warning) = hold.status_warning(plan.started_at, hold_warn_after) {
                    line(format!("WARNING   {warning}"));
                }
            }
        }
        let blocks = plan
            .chunks
            .iter()
            .any(|c| matches!(c, sluice_core::plan::ChunkRange::Blocks { .. }));
        line(format!(
            "chunks    {} planned{}",
            plan.chunks.len(),
            match (&plan.partition_column, blocks) {
                (_, true) => " as heap-block ranges (ctid), all in the plan's snapshot".into(),
                (Some(c), false) => format!(" on {c}"),
                (None, false) => String::new(),
            }
        ));
    }
    if !r.chunks.is_empty() {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        table.set_header(vec!["chunk", "rows", "files", "bytes", "seconds"]);
        for (chunk, c) in &r.chunks {
            table.add_row(vec![
                right(chunk),
                right(c.rows),
                right(c.files.len()),
                right(human_bytes(c.bytes)),
                right(format!("{:.3}", c.seconds)),
            ]);
        }
        line(table.to_string());
    }
    line(format!(
        "total     {} rows, {} files, {}",
        r.rows(),
        r.files(),
        human_bytes(r.bytes())
    ));
    if let Some(source) = r.source_rows() {
        // What the run can prove about itself: the source's count (each chunk in its own
        // snapshot), the rows in its files, and the rows COPY loaded.
        let narrowed = r.plan.as_ref().is_some_and(|p| p.table.filter.is_some());
        line(format!(
            "counted   source {source}{} · read {}{}",
            if narrowed { " before where" } else { "" },
            r.rows(),
            r.loaded_rows
                .map(|n| format!(" · loaded {n}"))
                .unwrap_or_default()
        ));
    }
    if let Some(keys) = r.merged_keys {
        line(format!("merged    {keys} distinct keys"));
    }
    if let Some(duplicates) = r.duplicate_key_rows().filter(|n| *n > 0) {
        line(format!(
            "warning   {duplicates} loaded row(s) repeat a key of the same run (the merge kept the latest of each): a source without a unique primary key, or rows moved between chunks"
        ));
    }
    for (what, count) in r.warnings() {
        line(format!("warning   {what}: {count}"));
    }
    if let Some(key) = &r.manifest_key {
        line(format!("manifest  {key}"));
    }
    if let Some(merge) = &r.merge {
        line(format!("merge     {merge}"));
    }
    if r.keyset {
        line(format!(
            "key sets  this run {} · latest completed {}",
            if state.keyset_run_id == Some(r.run_id) {
                "is the table's latest"
            } else {
                "is not the table's latest"
            },
            state.keyset_run_id.map_or("-".into(), |id| id.to_string())
        ));
    }
    line(format!(
        "watermark before {} · committed {} · table now {}",
        r.watermark_before
            .as_ref()
            .map_or("-".into(), ToString::to_string),
        r.watermark_committed
            .as_ref()
            .map_or("-".into(), ToString::to_string),
        state
            .watermark
            .as_ref()
            .map_or("-".into(), ToString::to_string),
    ));
    if !r.removed_files.is_empty() {
        line(format!(
            "removed   {} file(s) no completed manifest lists:",
            r.removed_files.len()
        ));
        for key in &r.removed_files {
            line(format!("          {key}"));
        }
    }
    if let Some(e) = &r.error {
        line(format!(
            "error     in {}{}: {}",
            e.phase,
            e.chunk.map(|c| format!(", chunk {c}")).unwrap_or_default(),
            e.message
        ));
    }
    out
}

/// Where a DynamoDB state table's run history ends: its runs expire `retention` after they
/// started. "history kept 90 days: runs started before 2026-06-09 14:03 UTC are gone".
pub fn history_line(retention: std::time::Duration, now: DateTime<Utc>) -> String {
    let cutoff = chrono::Duration::from_std(retention)
        .ok()
        .and_then(|r| now.checked_sub_signed(r))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    format!(
        "history kept {}: runs started before {} UTC are gone",
        human_duration(retention),
        cutoff.format("%Y-%m-%d %H:%M")
    )
}

/// A duration in the largest whole unit that states it exactly: `90 days`, `36 hours`.
fn human_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = [(86_400, "day"), (3_600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(size, _)| secs > 0 && secs.is_multiple_of(*size))
        .map_or((secs, "second"), |(size, unit)| (secs / size, unit));
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// `sluice snowflake doctor`'s report: one row per check, the fix under a failure.
pub fn doctor_table(outcomes: &[sluice_core::doctor::Outcome]) -> String {
    use sluice_core::doctor::Verdict;
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec!["check", "target", "result", "fix"]);
    for o in outcomes {
        let result = match &o.verdict {
            Verdict::Pass => "ok".to_owned(),
            Verdict::Fail(why) => format!("FAILED: {why}"),
            Verdict::Skip(why) => format!("skipped: {why}"),
        };
        table.add_row(vec![
            Cell::new(&o.check),
            Cell::new(&o.target),
            Cell::new(result),
            Cell::new(
                o.fix
                    .iter()
                    .map(|f| format!("{f};"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        ]);
    }
    table.to_string()
}

/// `sluice status --tables`: one row per table with its last load, its lag, and the trend of
/// the loads covered (min / median / max over the completed ones, and a sparkline of their
/// rows, oldest first: `✗` a failed load, `·` one still going).
pub fn table_trends(trends: &[sluice_core::trend::TableTrend]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "table",
        "last run",
        "status",
        "ended (UTC)",
        "lag",
        "runs ok/failed",
        "retries",
        "rows min/median/max",
        "seconds min/median/max",
        "trend (rows)",
    ]);
    for t in trends {
        let (run, status, ended) = match &t.last_run {
            Some(last) => (
                last.run_id.to_string(),
                match (&last.status, &last.error) {
                    (RunStatus::Failed, Some(e)) => format!("FAILED: {}", first_line(e, 60)),
                    (status, _) => status.to_string(),
                },
                last.ended_at.map_or("-".to_owned(), |at| {
                    at.format("%Y-%m-%d %H:%M:%S").to_string()
                }),
            ),
            None => ("-".to_owned(), "no runs".to_owned(), "-".to_owned()),
        };
        let rows = t.rows.map_or("-".to_owned(), |s| {
            format!("{} / {} / {}", s.min, s.median, s.max)
        });
        let seconds = t.seconds.map_or("-".to_owned(), |s| {
            format!("{:.1} / {:.1} / {:.1}", s.min, s.median, s.max)
        });
        table.add_row(vec![
            Cell::new(&t.table_key),
            Cell::new(run),
            Cell::new(status),
            Cell::new(ended),
            right(t.lag.as_ref().map_or("-".to_owned(), lag_text)),
            right(format!("{}/{}", t.completed, t.failed)),
            right(t.retries),
            right(rows),
            right(seconds),
            Cell::new(sparkline(&t.history)),
        ]);
    }
    table.to_string()
}

fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// `2h 03m`, `4m 10s`, `12s`, `3d 4h`: a lag to read at a glance.
fn lag_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m {:02}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h {:02}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3_600),
    }
}

fn lag_text(lag: &sluice_core::trend::CurrentLag) -> String {
    let mut parts = Vec::new();
    if let Some(seconds) = lag.seconds {
        parts.push(lag_duration(seconds));
    }
    if let Some(bytes) = lag.slot_bytes {
        parts.push(format!("{} of log", human_bytes(bytes)));
    }
    let mut text = parts.join(", ");
    if lag.over == Some(true) {
        text.push_str(" (over its limit)");
    }
    text
}

/// The rows of each load, oldest first, as bars scaled between the smallest and the largest
/// completed load's; `✗` a failed load, `·` one not ended.
fn sparkline(history: &[sluice_core::trend::RunPoint]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let completed = history
        .iter()
        .filter(|p| p.status == RunStatus::Completed)
        .map(|p| p.rows);
    let (low, high) = completed.fold((u64::MAX, 0), |(lo, hi), r| (lo.min(r), hi.max(r)));
    history
        .iter()
        .map(|p| match p.status {
            RunStatus::Completed if high > low => {
                let step = (p.rows - low) as f64 / (high - low) as f64 * 7.0;
                BARS[(step.round() as usize).min(7)]
            }
            RunStatus::Completed => BARS[3],
            RunStatus::Failed => '✗',
            _ => '·',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shown_in_binary_units_with_one_decimal() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }

    /// A run of an incremental table planned at `planned` while a transaction open since
    /// `since` held its upper bound back.
    fn held_run(planned: DateTime<Utc>, since: DateTime<Utc>) -> RunRecord {
        use sluice_core::late_writers::{OpenWriter, WriterCheck};
        use sluice_core::plan::{CatalogFacts, build_plan};
        let config = sluice_core::Config::from_yaml(
            "sources:\n  - name: shop\n    engine: postgres\n    connection:\n      url: postgres://u@h/db\n\
             tables:\n  - source: shop\n    table: public.orders\n    primary_key: [id]\n    load: { mode: incremental, cursor: updated_at, lookback: 1s }\n",
            "test",
        )
        .unwrap();
        let table = &config.tables[0];
        let facts = CatalogFacts {
            columns: vec!["id".into(), "updated_at".into()],
            cursor_kind: Some(sluice_core::ScalarKind::TimestampTz),
            cursor_max: Some(sluice_core::ScalarValue::TimestampTz(planned)),
            partition: None,
            snapshot: None,
            blocks: None,
            casts: Default::default(),
            warnings: Default::default(),
            late_writers: Some(WriterCheck::seen(Some(OpenWriter {
                pid: 4321,
                since,
                since_local: since.naive_utc(),
            }))),
        };
        let run_id = sluice_core::RunId::at(planned);
        let mut record = RunRecord::new(run_id, table.key(), planned);
        record.plan = Some(
            build_plan(
                run_id,
                sluice_core::Engine::Postgres,
                planned,
                table,
                None,
                facts,
            )
            .unwrap(),
        );
        record
    }

    #[test]
    fn the_story_says_why_the_bound_was_held_and_warns_past_the_limit() {
        let planned = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let hour = std::time::Duration::from_secs(3600);
        let recent = held_run(planned, planned - chrono::Duration::minutes(5));
        let story = story(&recent, &TableState::default(), hour);
        assert!(
            story.contains(
                "held      upper bound held at 2026-12-06 11:54:59.999999Z by a transaction open since 2026-12-06 11:55:00.000000Z, pid 4321"
            ),
            "{story}"
        );
        assert!(!story.contains("WARNING"), "{story}");
        assert!(hold_warnings(std::slice::from_ref(&recent), hour).is_empty());

        // The table's newer run, held by a transaction open for 2½ hours.
        let later = planned + chrono::Duration::minutes(1);
        let stuck = held_run(later, later - chrono::Duration::minutes(150));
        let story = super::story(&stuck, &TableState::default(), hour);
        assert!(
            story.contains("WARNING   one transaction (pid 4321) has held the watermark back for 2h 30m (longer than 1h 00m)"),
            "{story}"
        );
        let warnings = hold_warnings(&[recent, stuck], hour);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("warning: shop/public.orders (run "),
            "{warnings:?}"
        );
        // A longer limit silences it.
        let story = super::story(
            &held_run(planned, planned - chrono::Duration::minutes(150)),
            &TableState::default(),
            hour * 3,
        );
        assert!(!story.contains("WARNING"), "{story}");
    }

    #[test]
    fn the_story_shows_the_source_count_beside_the_rows_read_and_loaded() {
        let planned = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut record = held_run(planned, planned - chrono::Duration::minutes(5));
        let hour = std::time::Duration::from_secs(3600);
        // Not every chunk counted (a record from before the count): no line at all.
        record
            .chunks
            .insert(0, sluice_core::run::ChunkOutcome::default());
        record.chunks.get_mut(&0).unwrap().rows = 40;
        assert!(!story(&record, &TableState::default(), hour).contains("counted"));
        record.chunks.get_mut(&0).unwrap().source_rows = Some(40);
        record.loaded_rows = Some(40);
        let text = story(&record, &TableState::default(), hour);
        assert!(
            text.contains("counted   source 40 · read 40 · loaded 40\n"),
            "{text}"
        );
        record.plan.as_mut().unwrap().table.filter = Some("id > 3".into());
        record.chunks.get_mut(&0).unwrap().source_rows = Some(45);
        let text = story(&record, &TableState::default(), hour);
        assert!(
            text.contains("counted   source 45 before where · read 40 · loaded 40\n"),
            "{text}"
        );
    }

    #[test]
    fn the_history_line_names_the_retention_and_the_first_start_still_kept() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T10:30:59Z")
            .unwrap()
            .with_timezone(&Utc);
        let days = |n: u64| std::time::Duration::from_secs(n * 86_400);
        assert_eq!(
            history_line(days(90), now),
            "history kept 90 days: runs started before 2026-09-07 10:30 UTC are gone"
        );
        assert_eq!(
            history_line(std::time::Duration::from_secs(36 * 3600), now),
            "history kept 36 hours: runs started before 2026-12-04 22:30 UTC are gone"
        );
        assert_eq!(human_duration(days(1)), "1 day");
        assert_eq!(
            human_duration(std::time::Duration::from_secs(90)),
            "90 seconds"
        );
    }
}
