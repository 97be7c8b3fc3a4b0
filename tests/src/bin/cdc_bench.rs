//! `scripts/bench --cdc`: log-based CDC throughput (issue 18). How many changes per second
//! sluice takes from the source's log to STAGING-ready Parquet, and what reading them costs
//! the source, beside a cursor-based (`updated_at`) run over the same changes and what the
//! key-set run the cursor way needs to find deletes reads. Two modes, each with a private
//! server of its own: `cdc_bench` (or `cdc_bench postgres`) reads PostgreSQL's write-ahead log,
//! `cdc_bench mariadb` MariaDB's binary log. The workload, the runs and the report's rows are
//! the same; the source-side counters are each server's own.
//!
//! # PostgreSQL
//!
//! It starts a private PostgreSQL with `wal_level = logical` on 127.0.0.1 (initdb in a
//! temporary directory; `fsync = off` as every private test server; autovacuum off so that
//! no background vacuum lands inside a measurement), creates `public.bench_orders` with
//! `BASE_ROWS` rows, a role with `REPLICATION` and `SELECT` only, and the table's publication
//! and slot (`setup_cdc`). Then:
//!
//! 1. the CDC table's first run (the snapshot) and the cursor table's first run (its
//!    watermark), untimed;
//! 2. `CHANGES` changes in transactions of 100 (50 inserts, 40 updates, 10 deletes, each
//!    transaction one loop turn of a server-side `DO` block with `generate_series`), every
//!    insert and update stamping `updated_at = now()`; then `VACUUM ANALYZE` and a
//!    `CHECKPOINT`, so that neither falls inside a measurement;
//! 3. the CDC run(s) until the log is caught up (`max_changes` is set above the changes, so
//!    it is one run), timed;
//! 4. the same window of the log decoded by the server alone
//!    (`pg_logical_slot_peek_binary_changes` with only a count sent back): the source's share
//!    of the CDC run;
//! 5. the incremental run (`cursor: updated_at`, watermark from step 1), then what a key-set
//!    run reads (every key of the table, how an incremental table finds deletes), read as a
//!    load of the primary key alone (`TableConfig::keyset_read`: a real key-set run needs the
//!    warehouse, to delete what is missing), each timed.
//!
//! The pipeline is a local one: a local directory sink, local state, no warehouse, so the
//! figure is "log → Parquet" (planning, peeking the slot, decoding `pgoutput`, Parquet
//! encoding, the files, the manifest and the run's state). S3 and the STAGING merge are not
//! in it.
//!
//! Source-side cost, per run: the CPU time of the PostgreSQL server's processes (the
//! postmaster's reaped children plus the live ones, from `/proc`, so backends that exit at
//! the end of a run are counted), `pg_stat_database` deltas (shared blocks hit/read, tuples
//! returned/fetched, temp bytes) and `pg_stat_replication_slots` deltas (bytes decoded and
//! spilled to disk). `pg_stat_statements` is not loaded. Backends flush their counters when
//! they exit: each snapshot waits until no other client session is left.
//!
//! Debezium: no throughput figure for its PostgreSQL connector published by the Debezium
//! project itself could be found (its docs describe metrics, not figures; its one
//! performance post, "Measuring Debezium Server performance when streaming MySQL to Kafka",
//! 2026-02-02, is about MySQL: see below). The figures found are Sequin's, a competitor, who
//! publish their benchmark (https://github.com/sequinstream/sequin-vs-debezium-benchmark):
//! - https://sequinstream.com/docs/performance: "The highest throughput we were able to
//!   consistently achieve with Debezium deployed on AWS MSK Connect was 6k ops/sec. At 10k
//!   ops/sec, Debezium's latency grew unbounded." Conditions: changes to a single table
//!   (mixed INSERT/UPDATE/DELETE) on AWS RDS PostgreSQL (17.2, db.r6g.2xlarge in the
//!   benchmark's terraform), Debezium's PostgreSQL connector with pgoutput on MSK Connect (1
//!   worker, 8 MCU, tasks.max 1) into AWS MSK; throughput = records delivered to Kafka per
//!   second, sustained with bounded latency (258 ms average, 499 ms p99).
//! - https://github.com/sequinstream/sequin (README, "Performance"): "Debezium · Server
//!   23 k ops / s", 210 ms average and 440 ms p99 latency, same methodology.
//!
//! Those are sustained streaming rates to Kafka across a network with a latency bound; this
//! bench drains a backlog into local Parquet on one machine. They are context, not a
//! like-for-like comparison.
//!
//! # MariaDB
//!
//! It starts a private MariaDB on 127.0.0.1 ([`PrivateMariadb`]: `mariadb-install-db` in a
//! temporary directory; the binary log on with `binlog_format = ROW` and
//! `binlog_row_image = FULL`, and here `binlog_row_metadata = FULL`, as binlog CDC needs;
//! `sync_binlog = 0` and `innodb_flush_log_at_trx_commit = 2` as every private test server; a
//! 128 MB buffer pool, MariaDB's default), creates `shop.bench_orders` (the same columns, in
//! MariaDB's types, with `STATS_AUTO_RECALC = 0` so that no background statistics run lands
//! inside a measurement) with `BASE_ROWS` rows, and a user with `REPLICATION SLAVE`,
//! `REPLICATION CLIENT` and `SELECT` only. There is no slot or publication to set up: a binlog
//! reader keeps nothing on the server. Then:
//!
//! 1. the CDC table's first run (the snapshot, whose watermark is a consistent snapshot's
//!    binlog position) and the cursor table's first run, untimed;
//! 2. the same `CHANGES` changes in transactions of 100, each transaction one loop turn of a
//!    stored procedure (`INSERT … SELECT` from the sequence engine's `seq_1_to_50`, then the
//!    `UPDATE` and the `DELETE`), every insert and update stamping `updated_at = NOW(6)`; then
//!    `ANALYZE LOCAL TABLE` (kept out of the binary log), and a wait for InnoDB's purge of the
//!    old row versions and for every dirty page to be flushed, so that none of it falls inside
//!    a measurement;
//! 3. the binlog CDC run(s) until the log is caught up, timed;
//! 4. the same window of the log sent by the server alone: a bare `COM_BINLOG_DUMP` as the
//!    reading user, events counted and nothing decoded (what any binlog reader costs the
//!    server: it reads its files and sends them; unlike PostgreSQL's, it decodes nothing);
//! 5. the incremental run and the key-set read, as for PostgreSQL.
//!
//! Source-side cost, per run: the CPU time of the `mariadbd` process (all its threads, from
//! `/proc/<pid>/stat`), the binary log the run read (its window, from the positions), and
//! `SHOW GLOBAL STATUS` deltas (`Bytes_sent`, `Rows_read`, `Innodb_buffer_pool_read_requests`
//! and `Innodb_buffer_pool_reads`). Global status sums the
//! live sessions too: no waiting is needed.
//!
//! Debezium: the Debezium project's own MySQL post, "Measuring Debezium Server performance
//! when streaming MySQL to Kafka" (alvarvg, 2026-02-02,
//! https://debezium.io/blog/2026/02/02/measuring-debezium-server-performance-mysql-streaming/;
//! `_posts/2026-02-02-measuring-debezium-server-performance-mysql-streaming.adoc` in
//! github.com/debezium/debezium.github.io), gives no maximum: Debezium Server (in Docker), MySQL
//! and one Kafka container ran on one AWS EC2 c5a.xlarge (4 vCPUs, 8 GiB), YCSB's load came
//! from a second, all with default configurations, and the post says it does not aim "to
//! identify absolute throughput limits". Its highest target was 1,500 operations per second
//! on one table, which MySQL itself "fails to keep pace" with; Debezium's throughput "closely
//! mirrors MySQL activity" with no backlog, and it concludes that "the upper throughput limit
//! is dictated by MySQL's ability to sustain write operations". The phase it shows in detail
//! runs 300 inserts and 300 updates per second. A live stream that kept up with a source
//! writing under 1,500 changes/s, against a backlog drained here: context, not a comparison.
//!
//! Usage: cdc_bench [postgres|mariadb]   (env: CHANGES, default 200000; BASE_ROWS, default
//! 10000)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use sluice::Quiet;
use sluice::source::Source;
use sluice::source::postgres::PostgresSource;
use sluice_core::cdc::binlog::BinlogPosition;
use sluice_core::{RunRecord, RunStatus, TableConfig};
use sluice_tests::Harness;
use sluice_tests::private_mariadb::PrivateMariadb;
use sluice_tests::private_pg::PrivatePg;

const SETTINGS: &str =
    "wal_level = logical\nmax_replication_slots = 4\nmax_wal_senders = 4\nautovacuum = off";

/// Changes per transaction, and how they split.
const PER_TXN: u64 = 100;
const INSERTS: u64 = 50;
const UPDATES: u64 = 40;
const DELETES: u64 = 10;

const DEBEZIUM: &str = "\
Debezium, for context (not like for like: those are sustained streaming rates into Kafka
across a network, with a latency bound; this is a backlog drained into local Parquet):
  No throughput figure for Debezium's PostgreSQL connector published by the Debezium project
  itself was found (its docs list metrics, not figures; its performance post of 2026-02-02 is
  about MySQL). The published figures found are Sequin's, a competitor's, with an open
  benchmark (github.com/sequinstream/sequin-vs-debezium-benchmark):
  - https://sequinstream.com/docs/performance: Debezium on AWS MSK Connect sustained 6k ops/s
    at most (\"At 10k ops/sec, Debezium's latency grew unbounded\"); avg latency 258 ms, p99
    499 ms. One table, mixed INSERT/UPDATE/DELETE, AWS RDS PostgreSQL 17 (db.r6g.2xlarge),
    pgoutput, MSK Connect 1 worker / 8 MCU / tasks.max 1, into AWS MSK; ops/s = records
    delivered to Kafka per second.
  - https://github.com/sequinstream/sequin (README, Performance): Debezium Server 23k ops/s,
    avg latency 210 ms, p99 440 ms, same methodology.";

const DEBEZIUM_MYSQL: &str = "\
Debezium, for context (not like for like: a live stream into Kafka that kept up with its source,
not a backlog drained into local Parquet):
  The Debezium project's own MySQL figures: \"Measuring Debezium Server performance when
  streaming MySQL to Kafka\", 2026-02-02,
  https://debezium.io/blog/2026/02/02/measuring-debezium-server-performance-mysql-streaming/
  Debezium Server (Docker), MySQL and one Kafka container on one AWS c5a.xlarge (4 vCPUs,
  8 GiB), YCSB load from a second one, default configurations; it does not aim \"to identify
  absolute throughput limits\". Its highest target, 1,500 operations/s on one table, was more
  than MySQL itself kept pace with; Debezium's throughput \"closely mirrors MySQL activity\",
  with no backlog, and the post puts the limit at MySQL's write rate, not Debezium's (the
  phase it shows in detail: 300 inserts/s + 300 updates/s). So: no Debezium maximum, and
  under 1,500 changes/s is all that was asked of it.";

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, got '{text}'")),
        _ => default,
    }
}

fn progress(message: &str) {
    eprintln!("cdc bench: {message}");
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Runs `statements`, each on its own (`VACUUM` refuses a multi-statement query), on a
/// connection of its own, closed afterwards: its backend exits and flushes its statistics
/// before the next snapshot, instead of inside a measurement.
async fn run_apart(pg: &PrivatePg, statements: &[&str]) {
    let client = connect(&pg.url("postgres")).await;
    for sql in statements {
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// `/proc/<pid>/stat` fields after the command (field 3, the state, is index 0).
fn proc_stat(pid: u32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse::<i64>().map_or(0, |v| v.max(0) as u64))
            .collect(),
    )
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU seconds used so far by the server: the postmaster's own and its reaped children's
/// (utime, stime, cutime, cstime), plus every live child's (utime, stime).
fn server_cpu_seconds(postmaster: u32) -> f64 {
    let mut ticks = proc_stat(postmaster).map_or(0, |f| f[11] + f[12] + f[13] + f[14]);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(f) = proc_stat(pid)
                && f.get(1) == Some(&u64::from(postmaster))
            {
                ticks += f[11] + f[12];
            }
        }
    }
    ticks as f64 / clock_ticks_per_second()
}

/// This process's peak resident set (VmHWM), in bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Resets VmHWM to the current resident set (Linux 4.0+), so the next reading is the peak
/// of what runs in between. Says whether it could.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU seconds (user and system, every thread) this process has used so far.
fn own_cpu_seconds() -> f64 {
    proc_stat(std::process::id()).map_or(0, |f| f[11] + f[12]) as f64 / clock_ticks_per_second()
}

/// Counters read before and after a measurement: what changed in between.
trait Delta: Copy + Default {
    fn since(self, before: Self) -> Self;
}

/// A source server whose counters a measurement reads around its runs.
trait Costs {
    type Counters: Delta;
    async fn counters(&self) -> Self::Counters;
}

/// What the server has done so far, as far as it counts.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    cpu: f64,
    blks_hit: i64,
    blks_read: i64,
    tup_returned: i64,
    tup_fetched: i64,
    temp_bytes: i64,
    decoded_bytes: i64,
    spill_bytes: i64,
}

impl Delta for Counters {
    fn since(self, before: Counters) -> Counters {
        Counters {
            cpu: self.cpu - before.cpu,
            blks_hit: self.blks_hit - before.blks_hit,
            blks_read: self.blks_read - before.blks_read,
            tup_returned: self.tup_returned - before.tup_returned,
            tup_fetched: self.tup_fetched - before.tup_fetched,
            temp_bytes: self.temp_bytes - before.temp_bytes,
            decoded_bytes: self.decoded_bytes - before.decoded_bytes,
            spill_bytes: self.spill_bytes - before.spill_bytes,
        }
    }
}

struct Server {
    pg: PrivatePg,
    /// The monitoring session: reads counters, runs nothing that is measured.
    admin: tokio_postgres::Client,
    postmaster: u32,
}

impl Costs for Server {
    type Counters = Counters;

    /// Waits until no client session but this one is left (their counters are flushed when
    /// they exit), then reads the counters.
    async fn counters(&self) -> Counters {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let others: i64 = self
                .admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if others == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let db = self
            .admin
            .query_one(
                "SELECT blks_hit, blks_read, tup_returned, tup_fetched, temp_bytes FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await
            .unwrap();
        let slots = self
            .admin
            .query_one(
                "SELECT coalesce(sum(total_bytes), 0)::bigint, coalesce(sum(spill_bytes), 0)::bigint FROM pg_stat_replication_slots",
                &[],
            )
            .await
            .unwrap();
        Counters {
            cpu: server_cpu_seconds(self.postmaster),
            blks_hit: db.get(0),
            blks_read: db.get(1),
            tup_returned: db.get(2),
            tup_fetched: db.get(3),
            temp_bytes: db.get(4),
            decoded_bytes: slots.get(0),
            spill_bytes: slots.get(1),
        }
    }
}

impl Server {
    async fn lsn(&self) -> String {
        self.admin
            .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
            .await
            .unwrap()
            .get(0)
    }

    async fn lsn_bytes(&self, from: &str, to: &str) -> i64 {
        self.admin
            .query_one(
                "SELECT pg_wal_lsn_diff($2::text::pg_lsn, $1::text::pg_lsn)::bigint",
                &[&from, &to],
            )
            .await
            .unwrap()
            .get(0)
    }
}

/// One measured column of the report.
struct Measured<C> {
    rows: u64,
    seconds: f64,
    extract_seconds: f64,
    runs: usize,
    parquet_bytes: u64,
    peak_rss: Option<u64>,
    /// CPU seconds of this process (sluice's side) over the run(s).
    client_cpu: f64,
    cost: C,
}

/// A config of the one bench table, read as the bench's reading user.
fn config(engine: &str, url: &str, table: &str, load: &str, deletes: &str) -> String {
    format!(
        "sources:
  - name: bench
    engine: {engine}
    connection:
      url: {url}
      sslmode: disable
tables:
  - source: bench
    table: {table}
    primary_key: [id]
    load: {load}
    deletes: {deletes}
"
    )
}

fn completed(record: RunRecord, what: &str) -> RunRecord {
    assert_eq!(
        record.status,
        RunStatus::Completed,
        "{what} failed: {:?}",
        record.error
    );
    record
}

fn extract_seconds(record: &RunRecord) -> f64 {
    record.chunks.values().map(|c| c.seconds).sum()
}

/// Runs `table` with the server's counters, this process's CPU time and its peak RSS around
/// it, until `done` says the run caught up (at most 20 runs).
async fn measure<S: Costs>(
    server: &S,
    h: &Harness,
    table: &TableConfig,
    done: impl Fn(&RunRecord) -> bool,
) -> Measured<S::Counters> {
    let before = server.counters().await;
    let rss_reset = reset_peak_rss();
    let cpu_before = own_cpu_seconds();
    let mut m = Measured {
        rows: 0,
        seconds: 0.0,
        extract_seconds: 0.0,
        runs: 0,
        parquet_bytes: 0,
        peak_rss: None,
        client_cpu: 0.0,
        cost: S::Counters::default(),
    };
    loop {
        let timer = Instant::now();
        let record = h.pipeline.run_table(table, &Quiet).await.unwrap();
        m.seconds += timer.elapsed().as_secs_f64();
        let record = completed(record, "a measured run");
        m.runs += 1;
        m.rows += record.rows();
        m.parquet_bytes += record.bytes();
        m.extract_seconds += extract_seconds(&record);
        if done(&record) || m.runs >= 20 {
            break;
        }
    }
    m.client_cpu = own_cpu_seconds() - cpu_before;
    m.peak_rss = rss_reset.then(peak_rss);
    m.cost = server.counters().await.since(before);
    m
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn signed(n: i64) -> String {
    if n < 0 {
        format!("-{}", thousands(n.unsigned_abs()))
    } else {
        thousands(n as u64)
    }
}

fn mb(bytes: f64) -> String {
    let mb = bytes / 1e6;
    if mb.abs() < 1.0 && mb != 0.0 {
        format!("{mb:.2} MB")
    } else {
        format!("{mb:.1} MB")
    }
}

fn row(label: &str, cells: &[String]) {
    let mut line = format!("  {label:<34}");
    for cell in cells {
        line.push_str(&format!("{cell:>22}"));
    }
    println!("{}", line.trim_end());
}

/// The report's first line: the bench, when, on what.
fn machine(title: &str) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1_048_576.0);
    format!(
        "{title} (scripts/bench --cdc), {}, {cores} cores, {mem_gib:.0} GiB RAM, {} build",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        if cfg!(debug_assertions) {
            "debug (figures not representative)"
        } else {
            "release"
        }
    )
}

/// The report's rows on sluice's side, the same for every engine: the log run, the cursor
/// run and the key-set read.
fn sluice_rows<C>(cols: [&Measured<C>; 3], deletes: u64) {
    row(
        "",
        &[
            "log (load: cdc)".into(),
            "cursor (updated_at)".into(),
            "key set (all keys)".into(),
        ],
    );
    row("rows written", &cols.map(|m| thousands(m.rows)));
    row(
        "deletes seen",
        &[
            thousands(deletes),
            "0 (cannot see them)".into(),
            "by absence".into(),
        ],
    );
    row("runs", &cols.map(|m| m.runs.to_string()));
    row("wall seconds", &cols.map(|m| format!("{:.2}", m.seconds)));
    row(
        "  of which chunk extraction",
        &cols.map(|m| format!("{:.2}", m.extract_seconds)),
    );
    row(
        "rows/s (changes/s for the log)",
        &cols.map(|m| thousands((m.rows as f64 / m.seconds.max(1e-9)).round() as u64)),
    );
    row("Parquet", &cols.map(|m| mb(m.parquet_bytes as f64)));
    row(
        "peak RSS (this process)",
        &cols.map(|m| m.peak_rss.map_or("n/a".into(), |b| mb(b as f64))),
    );
    row(
        "CPU seconds (this process)",
        &cols.map(|m| format!("{:.2}", m.client_cpu)),
    );
}

/// The changes the workload makes: `CHANGES` rounded up to whole transactions, as
/// (transactions, changes).
fn workload() -> (u64, u64) {
    let changes_wanted = env_number("CHANGES", 200_000).max(PER_TXN);
    let txns = changes_wanted.div_ceil(PER_TXN);
    (txns, txns * PER_TXN)
}

/// `max_changes` for the cdc table: enough for every message of the changes (BEGIN, COMMIT
/// and the relation come on top of the rows) in one run.
fn max_changes(changes: u64) -> u64 {
    (changes + changes / 5 + 10_000)
        .max(1_000_000)
        .min(i32::MAX as u64)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    match std::env::args().nth(1).as_deref() {
        None | Some("postgres" | "postgresql" | "pg") => postgres().await,
        Some("mariadb" | "mysql") => mariadb().await,
        Some(other) => {
            eprintln!("usage: cdc_bench [postgres|mariadb] (got '{other}')");
            std::process::exit(2);
        }
    }
}

async fn postgres() {
    let base_rows = env_number("BASE_ROWS", 10_000);
    let (txns, changes) = workload();

    progress("starting a private PostgreSQL (wal_level = logical) on 127.0.0.1");
    let pg = PrivatePg::start_with("host all all 127.0.0.1/32 trust", SETTINGS);
    let admin = connect(&pg.url("postgres")).await;
    let backend: i32 = admin
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let postmaster = proc_stat(u32::try_from(backend).unwrap())
        .and_then(|f| f.get(1).copied())
        .and_then(|p| u32::try_from(p).ok())
        .expect("the server's postmaster, from /proc/<backend>/stat");
    let version: String = admin
        .query_one("SHOW server_version", &[])
        .await
        .unwrap()
        .get(0);
    let server = Server {
        pg,
        admin,
        postmaster,
    };

    progress(&format!(
        "creating public.bench_orders with {base_rows} rows"
    ));
    run_apart(
        &server.pg,
        &[&format!(
            "CREATE TABLE public.bench_orders (id bigint PRIMARY KEY, customer_id int, status text, amount numeric(12,2), note text, updated_at timestamptz);
             CREATE INDEX bench_orders_updated_at ON public.bench_orders (updated_at);
             INSERT INTO public.bench_orders
               SELECT g, (g % 5000)::int, 'new', round((g % 100000) / 100.0, 2), 'order ' || g || ' ' || md5(g::text), now()
               FROM generate_series(1, {base_rows}) g;
             CREATE ROLE sluice_cdc LOGIN REPLICATION;
             GRANT SELECT ON public.bench_orders TO sluice_cdc;
             GRANT pg_read_all_stats TO sluice_cdc;"
        ),
        "VACUUM ANALYZE public.bench_orders",
        ]
    )
    .await;

    let url = server.pg.url("sluice_cdc");
    let table = "public.bench_orders";
    let cdc = Harness::new(&config(
        "postgres",
        &url,
        table,
        &format!("{{mode: cdc, max_changes: {}}}", max_changes(changes)),
        "{mode: hard}",
    ));
    let cursor = Harness::new(&config(
        "postgres",
        &url,
        table,
        "{mode: incremental, cursor: updated_at}",
        "{mode: hard, keyset: {}}",
    ));
    // What a key-set run of the cursor table reads (the primary key of every row), read as a
    // load: a real key-set run needs the warehouse, to delete from STAGING what is missing.
    let keys = Harness::new(&config(
        "postgres",
        &url,
        table,
        "{mode: full}",
        "{mode: off}",
    ));
    let cdc_table = cdc.table("public.bench_orders").clone();
    let cursor_table = cursor.table("public.bench_orders").clone();
    let keys_table = cursor_table.keyset_read();

    progress("sluice cdc setup (publication and slot, as the table's owner)");
    let mut owner = cdc.config.sources[0].clone();
    owner.connection.url = Some(server.pg.url("postgres"));
    let done = PostgresSource::from_config(&owner, None)
        .unwrap()
        .setup_cdc(&cdc_table)
        .await
        .unwrap();
    assert_eq!(done.len(), 2, "publication and slot created: {done:?}");

    progress("the CDC snapshot and the cursor table's first run (untimed)");
    let snapshot = completed(
        cdc.pipeline.run_table(&cdc_table, &Quiet).await.unwrap(),
        "the CDC snapshot",
    );
    assert!(
        snapshot
            .plan
            .as_ref()
            .and_then(|p| p.cdc.as_ref())
            .is_some_and(|c| c.snapshot),
        "the first CDC run is a snapshot"
    );
    completed(
        cursor
            .pipeline
            .run_table(&cursor_table, &Quiet)
            .await
            .unwrap(),
        "the cursor table's first run",
    );

    progress(&format!(
        "generating {changes} changes in {txns} transactions of {PER_TXN}"
    ));
    let wal_before = server.lsn().await;
    let generating = Instant::now();
    run_apart(
        &server.pg,
        &[&format!(
            "DO $$
             DECLARE
               base bigint := {base_rows};
             BEGIN
               FOR t IN 0..{last} LOOP
                 INSERT INTO public.bench_orders
                   SELECT g, (g % 5000)::int, 'new', round((g % 100000) / 100.0, 2), 'order ' || g || ' ' || md5(g::text), now()
                   FROM generate_series(base + t * {INSERTS} + 1, base + t * {INSERTS} + {INSERTS}) g;
                 UPDATE public.bench_orders SET status = 'shipped', amount = amount + 1, updated_at = now()
                   WHERE id BETWEEN t::bigint * {INSERTS} + 1 AND t::bigint * {INSERTS} + {UPDATES};
                 DELETE FROM public.bench_orders
                   WHERE id BETWEEN t::bigint * {INSERTS} + {UPDATES} + 1 AND t::bigint * {INSERTS} + {UPDATES} + {DELETES};
                 COMMIT;
               END LOOP;
             END $$",
            last = txns - 1
        )],
    )
    .await;
    let generated_in = generating.elapsed().as_secs_f64();
    let wal_after = server.lsn().await;
    let wal_bytes = server.lsn_bytes(&wal_before, &wal_after).await;
    let live: i64 = server
        .admin
        .query_one("SELECT count(*) FROM public.bench_orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        live as u64,
        base_rows + txns * (INSERTS - DELETES),
        "every update and delete of the workload found its row"
    );
    progress("VACUUM ANALYZE and CHECKPOINT (outside the measurements)");
    run_apart(
        &server.pg,
        &["VACUUM ANALYZE public.bench_orders", "CHECKPOINT"],
    )
    .await;
    let target = server.lsn().await;

    progress("the CDC run(s), until caught up");
    let target_lsn: u64 = target.parse::<sluice_core::cdc::pgoutput::Lsn>().unwrap().0;
    let log = measure(&server, &cdc, &cdc_table, |r| {
        r.chunks
            .values()
            .filter_map(|c| c.cdc_reached)
            .max()
            .is_some_and(|reached| reached >= target_lsn)
            || r.rows() == 0
    })
    .await;

    progress("the same window of the log, decoded by the server alone");
    let before = server.counters().await;
    let timer = Instant::now();
    let peeked = {
        let client = connect(&server.pg.url("sluice_cdc")).await;
        client
            .query_one(
                "SELECT count(*), coalesce(sum(octet_length(data)), 0)::bigint \
                 FROM pg_logical_slot_peek_binary_changes($1::text::name, NULL, NULL, \
                 'proto_version', '1', 'publication_names', $2::text, 'binary', 'true')",
                &[
                    &cdc_table.cdc_slot(),
                    &format!("\"{}\"", cdc_table.cdc_publication()),
                ],
            )
            .await
            .unwrap()
    };
    let peek_seconds = timer.elapsed().as_secs_f64();
    let peek_messages: i64 = peeked.get(0);
    let peek_bytes: i64 = peeked.get(1);
    let peek_cost = server.counters().await.since(before);

    progress("the cursor (updated_at) run");
    let by_cursor = measure(&server, &cursor, &cursor_table, |_| true).await;
    progress("what a key-set run reads (every key: how the cursor way finds deletes)");
    let keyset = measure(&server, &keys, &keys_table, |_| true).await;

    // --- report -------------------------------------------------------------------------
    println!("{}", machine("sluice CDC bench"));
    println!(
        "PostgreSQL {version}, private on 127.0.0.1 (wal_level = logical, fsync = off, autovacuum = off), same machine as sluice"
    );
    println!(
        "Workload: {} changes in {} transactions of {PER_TXN} ({INSERTS} inserts, {UPDATES} updates, {DELETES} deletes), every insert/update sets updated_at = now();",
        thousands(changes),
        thousands(txns)
    );
    println!(
        "  public.bench_orders(id bigint pk, customer_id int, status text, amount numeric(12,2), note text, updated_at timestamptz, index on updated_at),"
    );
    println!(
        "  {} rows before, {} after; generated in {generated_in:.1} s; WAL written by the changes: {}",
        thousands(base_rows),
        thousands(live as u64),
        mb(wal_bytes as f64)
    );
    println!(
        "Each column: sluice runs through a local pipeline (local directory sink and state, no S3, no warehouse); wall time of the run(s)."
    );
    println!();
    let cols = [&log, &by_cursor, &keyset];
    sluice_rows(cols, txns * DELETES);
    println!("  source side:");
    row(
        "server CPU seconds",
        &cols.map(|m| format!("{:.2}", m.cost.cpu)),
    );
    row(
        "shared blocks hit / read",
        &cols.map(|m| format!("{} / {}", signed(m.cost.blks_hit), signed(m.cost.blks_read))),
    );
    row(
        "tuples returned / fetched",
        &cols.map(|m| {
            format!(
                "{} / {}",
                signed(m.cost.tup_returned),
                signed(m.cost.tup_fetched)
            )
        }),
    );
    row("temp bytes", &cols.map(|m| mb(m.cost.temp_bytes as f64)));
    row(
        "decoded by the slot / spilled",
        &cols.map(|m| {
            format!(
                "{} / {}",
                mb(m.cost.decoded_bytes as f64),
                mb(m.cost.spill_bytes as f64)
            )
        }),
    );
    println!();
    println!(
        "Server-side decoding alone (pg_logical_slot_peek_binary_changes over the same window, only a count sent back):"
    );
    println!(
        "  {:.2} s wall, {:.2} server CPU s, {} pgoutput messages, {} of pgoutput, {} decoded / {} spilled by the slot, {} temp",
        peek_seconds,
        peek_cost.cpu,
        thousands(u64::try_from(peek_messages).unwrap_or(0)),
        mb(peek_bytes as f64),
        mb(peek_cost.decoded_bytes as f64),
        mb(peek_cost.spill_bytes as f64),
        mb(peek_cost.temp_bytes as f64)
    );
    println!(
        "  i.e. {:.0}% of the CDC run's wall time is the server decoding the log; the rest is sluice (decode, Parquet, files, state).",
        100.0 * peek_seconds / log.seconds.max(1e-9)
    );
    println!(
        "  (the function returns its rows only once all are decoded, kept in a tuplestore that goes to a temp file past work_mem:"
    );
    println!(
        "  the \"temp bytes\" of the log run; server decoding and sluice's work do not overlap)"
    );
    println!();
    println!("Notes:");
    println!(
        "  - The cursor run reads each changed row's latest version once ({} rows for {} changes) and cannot see deletes at all:",
        thousands(by_cursor.rows),
        thousands(changes)
    );
    println!(
        "    an incremental table finds them only by a key-set run, which reads every key of the table (third column)."
    );
    println!(
        "    It is read here as a load of the primary key alone (TableConfig::keyset_read): a real key-set run also needs the warehouse."
    );
    println!(
        "  - The log run writes every change (inserts, each update, deletes with their key) in commit order: STAGING's merge applies them."
    );
    if log.rows != changes {
        println!(
            "  - The log run wrote {} rows for {} changes: look into it.",
            thousands(log.rows),
            thousands(changes)
        );
    }
    println!(
        "  - Server CPU is every server process's (backends, walwriter, checkpointer) over the measurement; counters are pg_stat_database's and pg_stat_replication_slots'."
    );
    println!("{DEBEZIUM}");
}

// --- MariaDB ------------------------------------------------------------------------------

/// The bare dump's `server_id`: unlike the server's (1) and sluice's readers' (drawn from the
/// upper half of the range), so that neither ends the other's dump.
const DUMP_SERVER_ID: u32 = 2;

/// `@mariadb_slave_capability` as sluice's reader sends it (holes tolerated: the statements'
/// text is left out rather than padded), so that the bare dump receives the same events.
const SLAVE_CAPABILITY: u8 = 2;

/// MariaDB's own counters (`SHOW GLOBAL STATUS`) and the server's CPU time.
#[derive(Debug, Clone, Copy, Default)]
struct MyCounters {
    cpu: f64,
    bytes_sent: i64,
    rows_read: i64,
    page_requests: i64,
    page_reads: i64,
}

impl Delta for MyCounters {
    fn since(self, before: MyCounters) -> MyCounters {
        MyCounters {
            cpu: self.cpu - before.cpu,
            bytes_sent: self.bytes_sent - before.bytes_sent,
            rows_read: self.rows_read - before.rows_read,
            page_requests: self.page_requests - before.page_requests,
            page_reads: self.page_reads - before.page_reads,
        }
    }
}

async fn my_connect(url: &str) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(url).unwrap())
        .prefer_socket(false);
    mysql_async::Conn::new(opts)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

struct MyServer {
    my: PrivateMariadb,
    /// root's session on 127.0.0.1: writes the workload, reads the counters, runs nothing
    /// that is measured.
    admin: tokio::sync::Mutex<mysql_async::Conn>,
}

impl Costs for MyServer {
    type Counters = MyCounters;

    async fn counters(&self) -> MyCounters {
        let status = self
            .status(&[
                "Bytes_sent",
                "Rows_read",
                "Innodb_buffer_pool_read_requests",
                "Innodb_buffer_pool_reads",
            ])
            .await;
        let ticks = proc_stat(self.my.pid()).map_or(0, |f| f[11] + f[12]);
        MyCounters {
            cpu: ticks as f64 / clock_ticks_per_second(),
            bytes_sent: status[0],
            rows_read: status[1],
            page_requests: status[2],
            page_reads: status[3],
        }
    }
}

impl MyServer {
    async fn exec(&self, sql: &str) {
        self.admin
            .lock()
            .await
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Global status variables, in the order asked.
    async fn status(&self, names: &[&str]) -> Vec<i64> {
        let list = names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows: Vec<(String, String)> = self
            .admin
            .lock()
            .await
            .query(format!(
                "SHOW GLOBAL STATUS WHERE Variable_name IN ({list})"
            ))
            .await
            .unwrap();
        names
            .iter()
            .map(|n| {
                rows.iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(n))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or_else(|| panic!("no numeric status variable {n}: {rows:?}"))
            })
            .collect()
    }

    /// Where the binary log ends (`SHOW MASTER STATUS`): the file's name and the position.
    async fn log_end(&self) -> (String, BinlogPosition) {
        let row: mysql_async::Row = self
            .admin
            .lock()
            .await
            .query_first("SHOW MASTER STATUS")
            .await
            .unwrap()
            .expect("the binary log is on");
        let file: String = row.get(0).unwrap();
        let offset: u64 = row.get(1).unwrap();
        let at = BinlogPosition::from_file(&file, offset).unwrap();
        (file, at)
    }

    /// Bytes of the binary log from `from` to `to` (`SHOW BINARY LOGS` for the files between).
    async fn log_bytes(&self, from: BinlogPosition, to: BinlogPosition) -> u64 {
        if to <= from {
            return 0;
        }
        if to.file == from.file {
            return u64::from(to.offset - from.offset);
        }
        let files: Vec<mysql_async::Row> = self
            .admin
            .lock()
            .await
            .query("SHOW BINARY LOGS")
            .await
            .unwrap();
        files
            .iter()
            .filter_map(|r| {
                let name: String = r.get(0)?;
                let size: u64 = r.get(1)?;
                Some((sluice_core::cdc::binlog::file_number(&name).ok()?, size))
            })
            .map(|(n, size)| {
                if n == from.file {
                    size.saturating_sub(u64::from(from.offset))
                } else if n == to.file {
                    u64::from(to.offset)
                } else if n > from.file && n < to.file {
                    size
                } else {
                    0
                }
            })
            .sum()
    }

    /// InnoDB's history list: committed changes whose old versions purge has not removed.
    async fn history_length(&self) -> i64 {
        let rows: Vec<(String, String, String)> = self
            .admin
            .lock()
            .await
            .query("SHOW ENGINE INNODB STATUS")
            .await
            .unwrap();
        rows.iter()
            .flat_map(|(_, _, status)| status.lines())
            .find_map(|l| l.strip_prefix("History list length "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// After the changes, what PostgreSQL's bench does with `VACUUM ANALYZE` and a
    /// `CHECKPOINT`: fresh statistics (`ANALYZE LOCAL`, kept out of the binary log), then a
    /// wait until purge has removed the old row versions and every dirty page is flushed
    /// (`innodb_max_dirty_pages_pct = 0` meanwhile), so that neither falls inside a
    /// measurement. What was left after two minutes, if anything.
    async fn settle(&self) -> Option<String> {
        self.exec("ANALYZE LOCAL TABLE shop.bench_orders").await;
        let pct: String = self
            .admin
            .lock()
            .await
            .query_first("SELECT CAST(@@GLOBAL.innodb_max_dirty_pages_pct AS CHAR)")
            .await
            .unwrap()
            .unwrap();
        self.exec("SET GLOBAL innodb_max_dirty_pages_pct = 0").await;
        let deadline = Instant::now() + Duration::from_secs(120);
        let left = loop {
            let dirty = self.status(&["Innodb_buffer_pool_pages_dirty"]).await[0];
            let history = self.history_length().await;
            if (dirty == 0 && history == 0) || Instant::now() >= deadline {
                break (dirty, history);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        self.exec(&format!("SET GLOBAL innodb_max_dirty_pages_pct = {pct}"))
            .await;
        (left != (0, 0)).then(|| {
            format!(
                "{} dirty pages and a history list of {} were left after 120 s",
                left.0, left.1
            )
        })
    }
}

/// Reads the binary log from `from` to its end as the reading user, as a replica would
/// (non-blocking: the server ends the stream at the log's end), counting the events and their
/// bytes and decoding no row: what the server does for any binlog reader.
async fn bare_dump(my: &PrivateMariadb, file: &str, from: BinlogPosition) -> (u64, u64) {
    let mut conn = my_connect(&format!("{}/shop", my.url("sluice_cdc"))).await;
    conn.query_drop(format!(
        "SET @mariadb_slave_capability = {SLAVE_CAPABILITY}"
    ))
    .await
    .unwrap();
    let request = mysql_async::BinlogStreamRequest::new(DUMP_SERVER_ID)
        .with_filename(file.as_bytes())
        .with_pos(u64::from(from.offset))
        .with_non_blocking();
    let mut stream = conn.get_binlog_stream(request).await.unwrap();
    let (mut events, mut bytes) = (0_u64, 0_u64);
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        events += 1;
        bytes += u64::from(event.header().event_size());
    }
    (events, bytes)
}

async fn mariadb() {
    let base_rows = env_number("BASE_ROWS", 10_000);
    let (txns, changes) = workload();

    progress("starting a private MariaDB (binary log on, binlog_row_metadata = FULL) on 127.0.0.1");
    let my = PrivateMariadb::start_with(&[
        "--binlog-row-metadata=FULL",
        // MariaDB's default; the private server's 32 MB is for tests.
        "--innodb-buffer-pool-size=128M",
    ]);
    let admin = my_connect(&my.url("root")).await;
    let server = MyServer {
        my,
        admin: tokio::sync::Mutex::new(admin),
    };
    let version: String = server
        .admin
        .lock()
        .await
        .query_first("SELECT VERSION()")
        .await
        .unwrap()
        .unwrap();
    // 10.11.19-MariaDB-0+deb12u1-log: the release alone.
    let version = version.split('-').next().unwrap_or_default().to_owned();

    progress(&format!("creating shop.bench_orders with {base_rows} rows"));
    server
        .exec(
            "CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
             CREATE TABLE shop.bench_orders (id bigint PRIMARY KEY, customer_id int, status varchar(16),
                 amount decimal(12,2), note varchar(100), updated_at datetime(6),
                 KEY bench_orders_updated_at (updated_at)) STATS_AUTO_RECALC = 0;
             CREATE USER 'sluice_cdc'@'127.0.0.1';
             GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'sluice_cdc'@'127.0.0.1';
             GRANT SELECT ON shop.* TO 'sluice_cdc'@'127.0.0.1';",
        )
        .await;
    if base_rows > 0 {
        server
            .exec(&format!(
                "INSERT INTO shop.bench_orders
                   SELECT seq, seq % 5000, 'new', ROUND((seq % 100000) / 100.0, 2), CONCAT('order ', seq, ' ', MD5(seq)), NOW(6)
                   FROM shop.seq_1_to_{base_rows}"
            ))
            .await;
    }
    server.exec("ANALYZE LOCAL TABLE shop.bench_orders").await;
    // Each loop turn one transaction, as the PostgreSQL bench's DO block.
    server
        .exec(&format!(
            "CREATE PROCEDURE shop.bench_changes(IN base BIGINT, IN txns BIGINT)
             BEGIN
               DECLARE t BIGINT DEFAULT 0;
               WHILE t < txns DO
                 START TRANSACTION;
                 INSERT INTO shop.bench_orders
                   SELECT g, g % 5000, 'new', ROUND((g % 100000) / 100.0, 2), CONCAT('order ', g, ' ', MD5(g)), NOW(6)
                   FROM (SELECT base + t * {INSERTS} + seq AS g FROM shop.seq_1_to_{INSERTS}) s;
                 UPDATE shop.bench_orders SET status = 'shipped', amount = amount + 1, updated_at = NOW(6)
                   WHERE id BETWEEN t * {INSERTS} + 1 AND t * {INSERTS} + {UPDATES};
                 DELETE FROM shop.bench_orders
                   WHERE id BETWEEN t * {INSERTS} + {UPDATES} + 1 AND t * {INSERTS} + {UPDATES} + {DELETES};
                 COMMIT;
                 SET t = t + 1;
               END WHILE;
             END"
        ))
        .await;

    let url = format!("{}/shop", server.my.url("sluice_cdc"));
    let table = "shop.bench_orders";
    let cdc = Harness::new(&config(
        "mysql",
        &url,
        table,
        &format!("{{mode: cdc, max_changes: {}}}", max_changes(changes)),
        "{mode: hard}",
    ));
    let cursor = Harness::new(&config(
        "mysql",
        &url,
        table,
        "{mode: incremental, cursor: updated_at}",
        "{mode: hard, keyset: {}}",
    ));
    let keys = Harness::new(&config("mysql", &url, table, "{mode: full}", "{mode: off}"));
    let cdc_table = cdc.table(table).clone();
    let cursor_table = cursor.table(table).clone();
    let keys_table = cursor_table.keyset_read();

    progress("the CDC snapshot and the cursor table's first run (untimed)");
    let snapshot = completed(
        cdc.pipeline.run_table(&cdc_table, &Quiet).await.unwrap(),
        "the CDC snapshot",
    );
    let window = snapshot
        .plan
        .as_ref()
        .and_then(|p| p.cdc.clone())
        .expect("the CDC snapshot's plan reads the log");
    assert!(window.snapshot, "the first CDC run is a snapshot");
    let start = BinlogPosition::decode(window.from);
    completed(
        cursor
            .pipeline
            .run_table(&cursor_table, &Quiet)
            .await
            .unwrap(),
        "the cursor table's first run",
    );

    progress(&format!(
        "generating {changes} changes in {txns} transactions of {PER_TXN}"
    ));
    let (_, log_before) = server.log_end().await;
    let generating = Instant::now();
    server
        .exec(&format!("CALL shop.bench_changes({base_rows}, {txns})"))
        .await;
    let generated_in = generating.elapsed().as_secs_f64();
    let (_, log_after) = server.log_end().await;
    let binlog_written = server.log_bytes(log_before, log_after).await;
    let live: u64 = server
        .admin
        .lock()
        .await
        .query_first("SELECT COUNT(*) FROM shop.bench_orders")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        live,
        base_rows + txns * (INSERTS - DELETES),
        "every update and delete of the workload found its row"
    );
    progress("ANALYZE, InnoDB's purge and a flush of the dirty pages (outside the measurements)");
    let settle_note = server.settle().await;
    let (end_file, target) = server.log_end().await;

    progress("the binlog CDC run(s), until caught up");
    let reached = Cell::new(start.encode());
    let log = measure(&server, &cdc, &cdc_table, |r| {
        let got = r.chunks.values().filter_map(|c| c.cdc_reached).max();
        if let Some(got) = got {
            reached.set(reached.get().max(got));
        }
        got.is_some_and(|got| got >= target.encode()) || r.rows() == 0
    })
    .await;
    let reached = BinlogPosition::decode(reached.get());
    let binlog_read = server.log_bytes(start, reached).await;

    progress("the same window of the log, sent by the server alone (a bare dump)");
    let before = server.counters().await;
    let timer = Instant::now();
    let (dump_events, dump_bytes) = bare_dump(&server.my, &start.file_name(&end_file), start).await;
    let dump_seconds = timer.elapsed().as_secs_f64();
    let dump_cost = server.counters().await.since(before);

    progress("the cursor (updated_at) run");
    let by_cursor = measure(&server, &cursor, &cursor_table, |_| true).await;
    progress("what a key-set run reads (every key: how the cursor way finds deletes)");
    let keyset = measure(&server, &keys, &keys_table, |_| true).await;

    // --- report -------------------------------------------------------------------------
    println!("{}", machine("sluice binlog CDC bench"));
    println!(
        "MariaDB {version}, private on 127.0.0.1 (log_bin, binlog_format = ROW, binlog_row_image = FULL, binlog_row_metadata = FULL,"
    );
    println!(
        "  sync_binlog = 0, innodb_flush_log_at_trx_commit = 2, 128 MB buffer pool), same machine as sluice"
    );
    println!(
        "Workload: {} changes in {} transactions of {PER_TXN} ({INSERTS} inserts, {UPDATES} updates, {DELETES} deletes; a stored procedure), every insert/update sets updated_at = NOW(6);",
        thousands(changes),
        thousands(txns)
    );
    println!(
        "  shop.bench_orders(id bigint pk, customer_id int, status varchar(16), amount decimal(12,2), note varchar(100), updated_at datetime(6), index on updated_at),"
    );
    println!(
        "  {} rows before, {} after; generated in {generated_in:.1} s; binary log written by the changes: {}",
        thousands(base_rows),
        thousands(live),
        mb(binlog_written as f64)
    );
    if let Some(note) = &settle_note {
        println!("  (before the measurements: {note})");
    }
    println!(
        "Each column: sluice runs through a local pipeline (local directory sink and state, no S3, no warehouse); wall time of the run(s)."
    );
    println!();
    let cols = [&log, &by_cursor, &keyset];
    sluice_rows(cols, txns * DELETES);
    println!("  source side:");
    row(
        "server CPU seconds (mariadbd)",
        &cols.map(|m| format!("{:.2}", m.cost.cpu)),
    );
    row(
        "binary log read",
        &[mb(binlog_read as f64), "0".into(), "0".into()],
    );
    row(
        "bytes sent by the server",
        &cols.map(|m| mb(m.cost.bytes_sent as f64)),
    );
    row(
        "rows read (Rows_read)",
        &cols.map(|m| signed(m.cost.rows_read)),
    );
    row(
        "buffer pool page requests / reads",
        &cols.map(|m| {
            format!(
                "{} / {}",
                signed(m.cost.page_requests),
                signed(m.cost.page_reads)
            )
        }),
    );
    println!();
    println!(
        "The server sending the same window alone (a bare COM_BINLOG_DUMP as sluice_cdc, events counted, no row decoded):"
    );
    println!(
        "  {:.2} s wall, {:.2} server CPU s, {} events, {} of binary log, {} sent",
        dump_seconds,
        dump_cost.cpu,
        thousands(dump_events),
        mb(dump_bytes as f64),
        mb(dump_cost.bytes_sent as f64)
    );
    println!(
        "  i.e. the floor of any binlog reader here: {:.0}% of the CDC run's wall time. The server decodes nothing: it reads its files and",
        100.0 * dump_seconds / log.seconds.max(1e-9)
    );
    println!(
        "  sends them while sluice decodes the rows as they stream in, so the two overlap; the rest is sluice (rows, Parquet, files, state)."
    );
    println!();
    println!("Notes:");
    println!(
        "  - The cursor run reads each changed row's latest version once ({} rows for {} changes) and cannot see deletes at all:",
        thousands(by_cursor.rows),
        thousands(changes)
    );
    println!(
        "    an incremental table finds them only by a key-set run, which reads every key of the table (third column)."
    );
    println!(
        "    It is read here as a load of the primary key alone (TableConfig::keyset_read): a real key-set run also needs the warehouse."
    );
    println!(
        "  - The log run writes every change (inserts, each update's after-image, deletes) in commit order: STAGING's merge applies them."
    );
    if log.rows != changes {
        println!(
            "  - The log run wrote {} rows for {} changes: look into it.",
            thousands(log.rows),
            thousands(changes)
        );
    }
    println!(
        "  - Server CPU is the mariadbd process's (every thread: the connections, the dump, InnoDB's background) over the measurement;"
    );
    println!(
        "    counters are SHOW GLOBAL STATUS deltas (the monitoring session's own few kB of Bytes_sent included)."
    );
    println!("{DEBEZIUM_MYSQL}");
}
