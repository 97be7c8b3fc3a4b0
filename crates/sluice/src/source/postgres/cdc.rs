//! A CDC table's reads of the PostgreSQL change log, through the replication slot's SQL
//! interface (<https://www.postgresql.org/docs/current/functions-admin.html>, "Replication
//! Management Functions"):
//!
//! - planning checks the slot and publication, moves the slot up to the table's watermark
//!   with `pg_replication_slot_advance` (only after the run that set the watermark merged, so
//!   a crash anywhere replays and never loses), and fixes the run's upper bound at the flushed
//!   end of the log (`pg_current_wal_flush_lsn`: everything before it can be decoded);
//! - the run's one chunk peeks (never consumes) the changes with
//!   `pg_logical_slot_peek_binary_changes(slot, upto_lsn, upto_nchanges, …)`: "decoding will
//!   include only those transactions which commit prior to the specified LSN", and stops
//!   after the transaction in which `upto_nchanges` was reached. Peeking is repeatable until
//!   the slot advances, so a retried chunk reads the same changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use sluice_core::cdc::changes::{
    CHANGE_COLUMN_KINDS, CHANGE_COLUMNS, COPY_HEADER, COPY_TRAILER, ChangeColumnKind, ChangeRows,
    KeyLookup,
};
use sluice_core::cdc::pgoutput::{Datum, Lsn, decode};
use sluice_core::plan::CdcFacts;
use sluice_core::{RunPlan, TableConfig, TableName};
use tokio_postgres::Client;
use tracing::{debug, info};

use super::copy_binary::{CopyBinaryDecoder, DecodeColumn};
use super::types::PgType;
use super::{PostgresSource, pg_message, resolve_table, table_name};
use crate::source::estimated_row_bytes;
use crate::source::{CatalogTable, CdcReached, ChunkStream, Result, SourceError, Warnings};

/// The slot's facts, as `pg_replication_slots` shows them.
const SLOT_QUERY: &str = "SELECT confirmed_flush_lsn::text, plugin, database = current_database(), wal_status \
     FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND slot_type = 'logical'";

/// Whether the publication exists, publishes every kind of change, and includes the table.
const PUBLICATION_QUERY: &str = "SELECT p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, \
     EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables t \
             WHERE t.pubname = p.pubname AND t.schemaname = $2 AND t.tablename = $3) \
     FROM pg_catalog.pg_publication p WHERE p.pubname = $1";

/// The run's changes, in commit order. The options are `pgoutput`'s
/// (<https://www.postgresql.org/docs/current/protocol-logical-replication.html>, "Logical
/// Streaming Replication Parameters"): protocol version 1 and values in binary form.
const PEEK_QUERY: &str = "SELECT data FROM pg_catalog.pg_logical_slot_peek_binary_changes(\
     $1::text::name, $2::text::pg_lsn, $3::int4, \
     'proto_version', '1', 'publication_names', $4::text, 'binary', 'true')";

/// The schema and name of the table `oid` (a table named without its schema is found on the
/// search path; the log names it by both).
async fn qualified_name(client: &Client, name: &TableName, oid: u32) -> Result<(String, String)> {
    let row = client
        .query_one(
            "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            &[&oid],
        )
        .await
        .map_err(|e| SourceError::Query {
            table: name.to_string(),
            message: pg_message(&e),
        })?;
    Ok((row.get(0), row.get(1)))
}

/// What the log cannot give of a table, refused with the way out: a partitioned table (its
/// changes are logged under its partitions), generated columns the run would read (pgoutput
/// leaves them out), and a publication that filters the table's rows or columns (PostgreSQL
/// 15 and later).
async fn check_table_shape(
    client: &Client,
    table: &TableConfig,
    name: &TableName,
    oid: u32,
    publication: &str,
) -> Result<()> {
    let refuse = |message: String| SourceError::Query {
        table: name.to_string(),
        message,
    };
    let query_error = |e: tokio_postgres::Error| refuse(pg_message(&e));
    let row = client
        .query_one(
            "SELECT c.relkind::text, current_setting('server_version_num')::int, \
             ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a \
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> '' ORDER BY a.attnum) \
             FROM pg_catalog.pg_class c WHERE c.oid = $1",
            &[&oid],
        )
        .await
        .map_err(query_error)?;
    let (kind, version, generated): (String, i32, Vec<String>) =
        (row.get(0), row.get(1), row.get(2));
    if kind == "p" {
        return Err(refuse(format!(
            "{name} is a partitioned table, whose changes the log records under its partitions; cdc reads plain tables (load it incrementally, or make each partition a cdc table)"
        )));
    }
    let read = |column: &String| table.columns.as_ref().is_none_or(|c| c.contains(column));
    if let Some(column) = generated.iter().find(|c| read(c)) {
        return Err(refuse(format!(
            "column '{column}' is generated, and the log does not carry generated columns; leave it out of columns (STAGING can compute it)"
        )));
    }
    if version >= 150_000 {
        // Row filters and column lists came with PostgreSQL 15
        // (<https://www.postgresql.org/docs/15/view-pg-publication-tables.html>).
        let (schema, relname) = qualified_name(client, name, oid).await?;
        let row = client
            .query_opt(
                "SELECT rowfilter IS NOT NULL, attnames::text[] FROM pg_catalog.pg_publication_tables \
                 WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                &[&publication, &schema, &relname],
            )
            .await
            .map_err(query_error)?;
        if let Some(row) = row {
            let (filtered, published): (bool, Vec<String>) = (row.get(0), row.get(1));
            if filtered {
                return Err(refuse(format!(
                    "publication '{publication}' filters the rows of {name} (a WHERE on the table), so the log would leave changes out; publish the table whole"
                )));
            }
            let all: Vec<String> = client
                .query_one(
                    "SELECT ARRAY(SELECT attname::text FROM pg_catalog.pg_attribute WHERE attrelid = $1 \
                     AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum)",
                    &[&oid],
                )
                .await
                .map_err(query_error)?
                .get(0);
            if let Some(missing) = all.iter().find(|c| read(c) && !published.contains(c)) {
                return Err(refuse(format!(
                    "publication '{publication}' leaves column '{missing}' of {name} out (a column list); publish every column the table is read with"
                )));
            }
        }
    }
    Ok(())
}

/// Fails unless the slot still stands where the plan found it (or before): a slot that
/// something else consumed or advanced since starts the peek past the window's start, and the
/// changes between would be skipped without a word.
async fn check_slot_at(
    client: &Client,
    name: &TableName,
    window: &sluice_core::plan::CdcWindow,
) -> Result<()> {
    let confirmed: Option<String> = client
        .query_opt(SLOT_QUERY, &[&window.slot])
        .await
        .map_err(|e| SourceError::Query {
            table: name.to_string(),
            message: pg_message(&e),
        })?
        .and_then(|row| row.get(0));
    let Some(confirmed) = confirmed else {
        return Err(SourceError::Query {
            table: name.to_string(),
            message: format!(
                "replication slot '{}' is gone since the run was planned",
                window.slot
            ),
        });
    };
    let confirmed = parse_lsn(name, "the slot's confirmed_flush_lsn", &confirmed)?;
    if confirmed > window.from {
        return Err(SourceError::Query {
            table: name.to_string(),
            message: format!(
                "replication slot '{}' moved from {} to {} since the run was planned (something else consumed or advanced it): the changes between are lost to this run, which fails and merges nothing; take a new snapshot (sluice watermark reset)",
                window.slot,
                Lsn(window.from),
                Lsn(confirmed)
            ),
        });
    }
    Ok(())
}

/// Moves `slot`'s confirmed position up to `to` (never back); returns where it stands.
async fn advance_slot(client: &Client, name: &TableName, slot: &str, to: u64) -> Result<u64> {
    let advanced: String = client
        .query_one(
            "SELECT end_lsn::text FROM pg_catalog.pg_replication_slot_advance($1::text::name, $2::text::pg_lsn)",
            &[&slot, &Lsn(to).to_string()],
        )
        .await
        .map_err(|e| SourceError::Query {
            table: name.to_string(),
            message: format!(
                "advancing replication slot '{slot}' to {}: {}",
                Lsn(to),
                pg_message(&e)
            ),
        })?
        .get(0);
    parse_lsn(name, "pg_replication_slot_advance", &advanced)
}

/// How long a new snapshot waits for transactions that were running when its log position
/// was read.
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Waits until no transaction of `xids` holds the lock on its id (it has ended and left the
/// running set), or fails naming them after [`SNAPSHOT_WAIT`].
async fn wait_for_transactions(client: &Client, name: &TableName, xids: &[String]) -> Result<()> {
    let deadline = tokio::time::Instant::now() + SNAPSHOT_WAIT;
    loop {
        let still: Vec<String> = client
            .query(
                "SELECT DISTINCT transactionid::text FROM pg_catalog.pg_locks \
                 WHERE locktype = 'transactionid' AND granted AND mode = 'ExclusiveLock' \
                 AND transactionid::text = ANY($1)",
                &[&xids],
            )
            .await
            .map_err(|e| SourceError::Query {
                table: name.to_string(),
                message: pg_message(&e),
            })?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if still.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SourceError::Query {
                table: name.to_string(),
                message: format!(
                    "a new snapshot waits for the transactions running when it read the log's position, and {} are still open after {}s (xids {}; pg_stat_activity.backend_xid shows whose, pg_prepared_xacts a prepared one); end them or run again later",
                    still.len(),
                    SNAPSHOT_WAIT.as_secs(),
                    still.join(", ")
                ),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn parse_lsn(table: &TableName, what: &str, text: &str) -> Result<u64> {
    text.parse::<Lsn>()
        .map(|l| l.0)
        .map_err(|e| SourceError::Query {
            table: table.to_string(),
            message: format!("{what}: {e}"),
        })
}

impl PostgresSource {
    /// Creates what a CDC table reads through, where missing: the publication (naming the
    /// table) and the logical replication slot (`pgoutput`). Run by an operator whose role
    /// owns the table and has `REPLICATION` (`sluice cdc setup`), never by a run. Returns
    /// what it did, one line each; nothing when all was in place.
    pub(super) async fn create_publication_and_slot(
        &self,
        table: &TableConfig,
    ) -> Result<Vec<String>> {
        let name = table_name(table)?;
        let client = self.connect().await?;
        let refuse = |message: String| SourceError::Query {
            table: name.to_string(),
            message,
        };
        let query_error = |e: tokio_postgres::Error| refuse(pg_message(&e));
        // <https://www.postgresql.org/docs/current/runtime-config-wal.html>: "logical adds
        // information necessary to support logical decoding"; it takes a restart.
        let wal_level: String = client
            .query_one("SELECT current_setting('wal_level')", &[])
            .await
            .map_err(query_error)?
            .get(0);
        if wal_level != "logical" {
            return Err(refuse(format!(
                "wal_level is '{wal_level}'; logical decoding needs wal_level = logical (Amazon RDS and Aurora: rds.logical_replication = 1 in the parameter group), then a restart"
            )));
        }
        let resolved = resolve_table(&client, &name).await?;
        let (schema, relname) = qualified_name(&client, &name, resolved.oid).await?;
        let qualified = format!("{}.{}", quote_ident(&schema), quote_ident(&relname));
        let slot = table.cdc_slot();
        let publication = table.cdc_publication();
        let mut done = Vec::new();
        let published = client
            .query_opt(PUBLICATION_QUERY, &[&publication, &schema, &relname])
            .await
            .map_err(query_error)?;
        let statement = match published {
            None => Some(format!(
                "CREATE PUBLICATION {} FOR TABLE {qualified}",
                quote_ident(&publication)
            )),
            Some(row) if !row.get::<_, bool>(4) => Some(format!(
                "ALTER PUBLICATION {} ADD TABLE {qualified}",
                quote_ident(&publication)
            )),
            Some(_) => None,
        };
        if let Some(statement) = statement {
            client
                .batch_execute(&statement)
                .await
                .map_err(|e| refuse(format!("{statement}: {}", pg_message(&e))))?;
            done.push(statement);
        }
        if client
            .query_opt(SLOT_QUERY, &[&slot])
            .await
            .map_err(query_error)?
            .is_none()
        {
            // A statement of its own: a slot cannot be created in a transaction that wrote.
            client
                .query_one(
                    "SELECT pg_catalog.pg_create_logical_replication_slot($1::text::name, 'pgoutput')",
                    &[&slot],
                )
                .await
                .map_err(|e| {
                    refuse(format!(
                        "creating replication slot '{slot}': {}",
                        pg_message(&e)
                    ))
                })?;
            done.push(format!(
                "SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"
            ));
        }
        Ok(done)
    }

    /// What keeps `table` from running as a cdc table, one line each (empty: ready): the
    /// server's `wal_level`, the reading role's `REPLICATION` and `SELECT`, the table's
    /// replica identity, the slot and the publication. Changes nothing.
    pub(super) async fn check_cdc_prerequisites(&self, table: &TableConfig) -> Result<Vec<String>> {
        let name = table_name(table)?;
        let client = self.connect().await?;
        let query_error = |e: tokio_postgres::Error| SourceError::Query {
            table: name.to_string(),
            message: pg_message(&e),
        };
        let mut problems = Vec::new();
        let row = client
            .query_one(
                "SELECT current_setting('wal_level'), current_user::text, \
                 (SELECT rolreplication OR rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) \
                 OR CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'rds_replication') \
                    THEN pg_catalog.pg_has_role('rds_replication', 'MEMBER') ELSE FALSE END",
                &[],
            )
            .await
            .map_err(query_error)?;
        let (wal_level, user, replication): (String, String, Option<bool>) =
            (row.get(0), row.get(1), row.get(2));
        if wal_level != "logical" {
            problems.push(format!(
                "wal_level is '{wal_level}': set wal_level = logical (Amazon RDS/Aurora: rds.logical_replication = 1) and restart"
            ));
        }
        if replication != Some(true) {
            problems.push(format!(
                "role {user} lacks REPLICATION, which reading a slot takes: ALTER ROLE {} REPLICATION (Amazon RDS/Aurora: GRANT rds_replication TO it)",
                quote_ident(&user)
            ));
        }
        let resolved = match resolve_table(&client, &name).await {
            Ok(resolved) => resolved,
            Err(e) => {
                problems.push(e.to_string());
                return Ok(problems);
            }
        };
        let row = client
            .query_one(
                "SELECT pg_catalog.has_table_privilege(c.oid, 'SELECT'), c.relreplident::text, \
                 EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
                 FROM pg_catalog.pg_class c WHERE c.oid = $1",
                &[&resolved.oid],
            )
            .await
            .map_err(query_error)?;
        let (select, identity, has_primary_key): (bool, String, bool) =
            (row.get(0), row.get(1), row.get(2));
        if !select {
            problems.push(format!(
                "role {user} may not SELECT {name}: GRANT SELECT ON {} TO {}",
                name.quoted(sluice_core::Dialect::Postgres),
                quote_ident(&user)
            ));
        }
        // <https://www.postgresql.org/docs/current/sql-altertable.html#SQL-ALTERTABLE-REPLICA-IDENTITY>:
        // without an identity a published table refuses updates and deletes.
        if identity == "n" || (identity == "d" && !has_primary_key) {
            problems.push(format!(
                "{name} has no replica identity (no primary key, REPLICA IDENTITY {}): once published, the server refuses its updates and deletes. Add a primary key, or ALTER TABLE … REPLICA IDENTITY FULL",
                if identity == "n" { "NOTHING" } else { "DEFAULT" }
            ));
        }
        if let Err(e) = self.read_slot_and_publication(&client, table, &name).await {
            problems.push(match e {
                SourceError::Query { message, .. } => message,
                other => other.to_string(),
            });
        }
        Ok(problems)
    }

    /// Checks the table's slot (exists, logical, `pgoutput`, this database, WAL not lost) and
    /// publication (exists, includes the table, publishes every kind of change); returns the
    /// slot's `confirmed_flush_lsn`.
    async fn read_slot_and_publication(
        &self,
        client: &Client,
        table: &TableConfig,
        name: &TableName,
    ) -> Result<u64> {
        let slot = table.cdc_slot();
        let publication = table.cdc_publication();
        let query_error = |e: tokio_postgres::Error| SourceError::Query {
            table: name.to_string(),
            message: pg_message(&e),
        };
        let refuse = |message: String| SourceError::Query {
            table: name.to_string(),
            message,
        };
        let setup_hint = format!("create it with: sluice cdc setup --table {}", table.key());
        let found = client
            .query_opt(SLOT_QUERY, &[&slot])
            .await
            .map_err(query_error)?
            .ok_or_else(|| {
                refuse(format!(
                    "replication slot '{slot}' does not exist (or is not a logical slot); {setup_hint}"
                ))
            })?;
        let plugin: String = found.get(1);
        let same_database: bool = found.get(2);
        let wal_status: Option<String> = found.get(3);
        if plugin != "pgoutput" {
            return Err(refuse(format!(
                "replication slot '{slot}' decodes with '{plugin}'; sluice reads pgoutput (drop the slot and {setup_hint})"
            )));
        }
        if !same_database {
            return Err(refuse(format!(
                "replication slot '{slot}' belongs to another database than the source's"
            )));
        }
        // `lost`: the server removed WAL the slot still needed (max_slot_wal_keep_size), so
        // changes are gone for good.
        if wal_status.as_deref() == Some("lost") {
            return Err(refuse(format!(
                "replication slot '{slot}' has lost WAL it needed (wal_status = lost, see max_slot_wal_keep_size): changes are missing. Drop and recreate the slot (sluice cdc setup), then take a new snapshot: sluice watermark reset --table {} --yes",
                table.key()
            )));
        }
        let resolved = resolve_table(client, name).await?;
        check_table_shape(client, table, name, resolved.oid, &publication).await?;
        let (schema, relname) = qualified_name(client, name, resolved.oid).await?;
        let published = client
            .query_opt(PUBLICATION_QUERY, &[&publication, &schema, &relname])
            .await
            .map_err(query_error)?
            .ok_or_else(|| {
                refuse(format!(
                    "publication '{publication}' does not exist; {setup_hint}"
                ))
            })?;
        for (i, kind) in ["insert", "update", "delete", "truncate"]
            .iter()
            .enumerate()
        {
            if !published.get::<_, bool>(i) {
                return Err(refuse(format!(
                    "publication '{publication}' does not publish {kind}s, so the log would miss them (ALTER PUBLICATION … SET (publish = 'insert, update, delete, truncate'))"
                )));
            }
        }
        if !published.get::<_, bool>(4) {
            return Err(refuse(format!(
                "publication '{publication}' does not include {name} (ALTER PUBLICATION {} ADD TABLE {})",
                quote_ident(&publication),
                name.quoted(sluice_core::Dialect::Postgres),
            )));
        }
        let confirmed_text: Option<String> = found.get(0);
        let confirmed = parse_lsn(
            name,
            "the slot's confirmed_flush_lsn",
            confirmed_text.as_deref().unwrap_or("0/0"),
        )?;
        Ok(confirmed)
    }

    /// Checks the table's slot and publication, moves the slot up to `watermark` (the
    /// position the table's last completed run reached), and reads where the slot and the
    /// flushed log stand. Called before a snapshot is taken, so a snapshot plan's start is a
    /// position from which every change after the snapshot is still to come.
    pub(super) async fn read_cdc_facts(
        &self,
        table: &TableConfig,
        watermark: Option<u64>,
    ) -> Result<CdcFacts> {
        let name = table_name(table)?;
        let client = self.connect().await?;
        let slot = table.cdc_slot();
        let query_error = |e: tokio_postgres::Error| SourceError::Query {
            table: name.to_string(),
            message: pg_message(&e),
        };
        let mut confirmed = self
            .read_slot_and_publication(&client, table, &name)
            .await?;
        let flushed: String = client
            .query_one("SELECT pg_catalog.pg_current_wal_flush_lsn()::text", &[])
            .await
            .map_err(query_error)?
            .get(0);
        let flushed = parse_lsn(&name, "pg_current_wal_flush_lsn", &flushed)?;
        if let Some(watermark) = watermark
            && watermark > flushed
        {
            // Not a position this server has reached: a watermark of another load mode (a
            // cursor's), or a server restored or failed over to one behind the old.
            return Err(SourceError::Query {
                table: name.to_string(),
                message: format!(
                    "the stored position {} is past this server's log ({}): it is not a position of this server's log (a watermark left from another load mode, or a restore or failover?). Take a new snapshot: sluice watermark reset --table {} --yes",
                    Lsn(watermark),
                    Lsn(flushed),
                    table.key()
                ),
            });
        }
        if let Some(watermark) = watermark
            && watermark > confirmed
        {
            // The run that reached `watermark` has merged: what is before it may go.
            let advanced = advance_slot(&client, &name, &slot, watermark).await?;
            if advanced < watermark {
                return Err(SourceError::Query {
                    table: name.to_string(),
                    message: format!(
                        "replication slot '{slot}' moved only to {} of {}",
                        Lsn(advanced),
                        Lsn(watermark)
                    ),
                });
            }
            info!(table = %name, %slot, from = %Lsn(confirmed), to = %Lsn(advanced), "advanced the replication slot to the watermark");
            confirmed = advanced;
        }
        if watermark.is_none() {
            // A snapshot starts the table afresh: the log before now is not needed once the
            // snapshot holds its effect (changes sent before, of a type since altered, would
            // otherwise fail every run). But a transaction can be in the log before `flushed`
            // and still invisible to a snapshot taken now: it writes its commit record, then
            // (after a synchronous standby's answer, say) leaves the running set. Every such
            // transaction holds the lock on its own transaction id until it has left, so the
            // plan waits for the holders of those locks as they are right after reading
            // `flushed` (what slot creation does to reach its consistent point), and only
            // then moves the slot, so a plan that gives up has moved nothing.
            let holders: Vec<String> = client
                .query(
                    "SELECT DISTINCT transactionid::text FROM pg_catalog.pg_locks \
                     WHERE locktype = 'transactionid' AND granted AND mode = 'ExclusiveLock'",
                    &[],
                )
                .await
                .map_err(query_error)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            wait_for_transactions(&client, &name, &holders).await?;
            if flushed > confirmed {
                advance_slot(&client, &name, &slot, flushed).await?;
                info!(table = %name, %slot, from = %Lsn(confirmed), to = %Lsn(flushed), "a new snapshot: the slot starts at the flushed log");
                confirmed = flushed;
            }
        }
        let retained: i64 = client
            .query_one(
                "SELECT COALESCE(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn), 0)::int8 \
                 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(query_error)?
            .get(0);
        debug!(table = %name, %slot, confirmed = %Lsn(confirmed), flushed = %Lsn(flushed), retained, "cdc positions");
        Ok(CdcFacts {
            confirmed,
            flushed,
            retained: u64::try_from(retained).unwrap_or(0),
        })
    }

    /// Streams the changes of a CDC run's window as batches of the table's columns and the
    /// change metadata ([`CHANGE_COLUMNS`]).
    pub(super) async fn extract_changes(&self, plan: &RunPlan) -> Result<ChunkStream> {
        let name = table_name(&plan.table)?;
        let Some(window) = plan.cdc.clone() else {
            return Err(SourceError::Query {
                table: name.to_string(),
                message: "the plan reads no change log".into(),
            });
        };
        let (client, connection) = self.connect_tracked().await?;
        let resolved = resolve_table(&client, &name).await?;
        let (schema_name, relname) = qualified_name(&client, &name, resolved.oid).await?;
        let reads = resolved.plan_reads(&name, plan)?;
        let type_oids: Vec<u32> = reads.iter().map(|(c, _)| c.type_oid).collect();
        // Every column may be NULL in a change row: a delete carries only the key.
        let mut columns: Vec<DecodeColumn> = reads
            .into_iter()
            .map(|(c, r)| DecodeColumn {
                nullable: true,
                name: c.name,
                pg_type: r.pg_type,
            })
            .collect();
        for (column, kind) in CHANGE_COLUMNS.iter().zip(CHANGE_COLUMN_KINDS) {
            columns.push(DecodeColumn {
                name: (*column).to_owned(),
                pg_type: match kind {
                    ChangeColumnKind::Text => PgType::Text,
                    ChangeColumnKind::Int8 => PgType::Int8,
                    ChangeColumnKind::TimestampTz => PgType::TimestampTz,
                },
                nullable: true,
            });
        }
        let row_bytes = estimated_row_bytes(columns.iter().map(|c| c.pg_type.arrow_type()));
        let mut decoder = CopyBinaryDecoder::new(
            &columns,
            plan.table.batch_rows(row_bytes),
            plan.table.invalid_dates,
        );
        let schema = decoder.schema();
        let changes = ChangeRows::new(
            &schema_name,
            &relname,
            plan.columns.clone(),
            type_oids,
            plan.table.primary_key.clone(),
            plan.table.columns.is_none(),
        );
        let mut ready = std::collections::VecDeque::new();
        decoder
            .feed(COPY_HEADER, &mut ready)
            .map_err(|e| stream_error(&name, e.to_string()))?;
        let publication = quote_ident(&window.publication);
        let max_changes = i32::try_from(window.max_changes).unwrap_or(i32::MAX);
        let upto = Lsn(window.upto).to_string();
        debug!(table = %name, slot = %window.slot, from = %Lsn(window.from), upto = %upto, max_changes, "peeking the change log");
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&window.slot, &upto, &max_changes, &publication];
        check_slot_at(&client, &name, &window).await?;
        let rows = client
            .query_raw(PEEK_QUERY, params)
            .await
            .map_err(|e| SourceError::Query {
                table: name.to_string(),
                message: format!(
                    "reading replication slot '{}': {}",
                    window.slot,
                    pg_message(&e)
                ),
            })?;
        let reached: CdcReached = Arc::new(std::sync::Mutex::new(None));
        let state = PeekState {
            _client: client,
            rows: Box::pin(rows),
            ready,
            changes,
            decoder,
            buffer: Vec::new(),
            finished: false,
            name: name.clone(),
            upto: window.upto,
            max_changes: window.max_changes,
            window: window.clone(),
            reached: reached.clone(),
            source: self.clone(),
            qualified: format!("{}.{}", quote_ident(&schema_name), quote_ident(&relname)),
            lookups: None,
            prepared: BTreeMap::new(),
        };
        let batches = futures::stream::try_unfold(state, |mut st| async move {
            loop {
                if let Some(batch) = st.ready.pop_front() {
                    return Ok(Some((batch, st)));
                }
                if st.finished {
                    return Ok(None);
                }
                match st.rows.next().await {
                    Some(Ok(row)) => {
                        let data: &[u8] = row
                            .try_get(0)
                            .map_err(|e| stream_error(&st.name, pg_message(&e)))?;
                        let message =
                            decode(data).map_err(|e| stream_error(&st.name, e.to_string()))?;
                        st.buffer.clear();
                        let pushed = match st.changes.key_update_lookup(&message) {
                            Some(lookup) => {
                                let found = st.look_up(&lookup).await?;
                                st.changes.push_looked_up(&message, found, &mut st.buffer)
                            }
                            None => st.changes.push(&message, &mut st.buffer),
                        };
                        pushed.map_err(|e| stream_error(&st.name, e.to_string()))?;
                        if !st.buffer.is_empty() {
                            st.decoder
                                .feed(&st.buffer, &mut st.ready)
                                .map_err(|e| stream_error(&st.name, e.to_string()))?;
                        }
                    }
                    Some(Err(e)) => {
                        return Err(stream_error(
                            &st.name,
                            format!("reading the change log: {}", pg_message(&e)),
                        ));
                    }
                    None => {
                        st.finished = true;
                        // Nobody may have consumed the slot while the window was read either.
                        check_slot_at(&st._client, &st.name, &st.window).await?;
                        let end = st
                            .changes
                            .finish(st.upto, st.max_changes)
                            .map_err(|e| stream_error(&st.name, e.to_string()))?;
                        st.decoder
                            .feed(COPY_TRAILER, &mut st.ready)
                            .map_err(|e| stream_error(&st.name, e.to_string()))?;
                        let last = st
                            .decoder
                            .finish()
                            .map_err(|e| stream_error(&st.name, e.to_string()))?;
                        st.ready.extend(last);
                        info!(table = %st.name, messages = end.messages, rows = end.rows, reached = %Lsn(end.reached), "read the change log");
                        *st.reached.lock().unwrap_or_else(|e| e.into_inner()) = Some(end.reached);
                    }
                }
            }
        })
        .boxed();
        Ok(ChunkStream {
            schema,
            batches,
            warnings: Warnings::default(),
            bound_rows: u64::MAX,
            closed: Some(Box::pin(async move {
                let _ = connection.await;
            })),
            cdc_reached: Some(reached),
            source_count: None,
        })
    }
}

fn stream_error(name: &TableName, message: String) -> SourceError {
    SourceError::Stream {
        table: name.to_string(),
        chunk: 0,
        message,
    }
}

struct PeekState {
    /// Kept open until the stream ends: the rows are read through it.
    _client: Client,
    rows: std::pin::Pin<Box<tokio_postgres::RowStream>>,
    ready: std::collections::VecDeque<arrow::record_batch::RecordBatch>,
    changes: ChangeRows,
    decoder: CopyBinaryDecoder,
    buffer: Vec<u8>,
    finished: bool,
    name: TableName,
    upto: u64,
    max_changes: u32,
    window: sluice_core::plan::CdcWindow,
    reached: CdcReached,
    /// For [`KeyLookup`]s: the source, the table's quoted name, and a second connection
    /// (the first is busy streaming the log), opened at the first lookup.
    source: PostgresSource,
    qualified: String,
    lookups: Option<Client>,
    prepared: BTreeMap<String, tokio_postgres::Statement>,
}

impl PeekState {
    /// Reads `lookup`'s columns of the row under its key from the table as it is now;
    /// `None` when no row has the key.
    async fn look_up(&mut self, lookup: &KeyLookup) -> Result<Option<BTreeMap<String, Datum>>> {
        let query_error = |e: tokio_postgres::Error| {
            stream_error(
                &self.name,
                format!(
                    "reading the values a key update left unsent: {}",
                    pg_message(&e)
                ),
            )
        };
        if self.lookups.is_none() {
            self.lookups = Some(self.source.connect().await?);
        }
        let Some(client) = &self.lookups else {
            return Ok(None);
        };
        let columns = lookup
            .columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let conditions = lookup
            .key
            .iter()
            .enumerate()
            .map(|(i, (c, _))| format!("{} = ${}", quote_ident(c), i + 1))
            .collect::<Vec<_>>()
            .join(" AND ");
        let sql = format!(
            "SELECT {columns} FROM {} WHERE {conditions}",
            self.qualified
        );
        // Bulk key updates ask the same question row after row: prepared once per column set.
        let statement = match self.prepared.get(&sql) {
            Some(statement) => statement.clone(),
            None => {
                let statement = client.prepare(&sql).await.map_err(query_error)?;
                self.prepared.insert(sql, statement.clone());
                statement
            }
        };
        let values: Vec<SentValue> = lookup.key.iter().map(|(_, v)| SentValue(v)).collect();
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let row = client
            .query_opt(&statement, &params)
            .await
            .map_err(query_error)?;
        Ok(row.map(|row| {
            lookup
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let value: Option<ReceivedValue> = row.get(i);
                    (c.clone(), value.map_or(Datum::Null, |v| Datum::Binary(v.0)))
                })
                .collect()
        }))
    }
}

/// A value already in its type's binary send form (from the log), bound as it is.
#[derive(Debug)]
struct SentValue<'a>(&'a [u8]);

impl tokio_postgres::types::ToSql for SentValue<'_> {
    fn to_sql(
        &self,
        _ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        out.extend_from_slice(self.0);
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(_ty: &tokio_postgres::types::Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A value as the server sent it (binary form), whatever its type.
struct ReceivedValue(Vec<u8>);

impl<'a> tokio_postgres::types::FromSql<'a> for ReceivedValue {
    fn from_sql(
        _ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(ReceivedValue(raw.to_vec()))
    }

    fn accepts(_ty: &tokio_postgres::types::Type) -> bool {
        true
    }
}
