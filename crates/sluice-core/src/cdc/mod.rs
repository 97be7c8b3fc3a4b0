//! Log-based change data capture: the pure parts. A CDC run of a PostgreSQL table reads the
//! changes committed since its position through the replication slot's SQL interface
//! (`pg_logical_slot_peek_binary_changes` with the `pgoutput` plugin), in which every row is
//! one [`pgoutput`] message; decoding them is here, with no I/O, so every message shape is
//! unit-tested in milliseconds. A MariaDB table's run reads the binary log instead; its
//! positions are [`binlog`]'s, and the engine turns its events into the same change rows.

pub mod binlog;
pub mod changes;
pub mod pgoutput;

use crate::config::TableConfig;
use crate::ident::{Dialect, TableName};

/// The SQL `sluice cdc setup` runs for `table`, for whoever would rather run it by hand: as
/// the table's owner (a publication names tables its creator owns), with a role that has
/// `REPLICATION` for the slot. A slot is created in a statement of its own: not in a
/// transaction that has written.
pub fn setup_sql(table: &TableConfig) -> Result<Vec<String>, String> {
    let name = TableName::parse(&table.table)?;
    let publication = Dialect::Postgres.quote(&table.cdc_publication());
    Ok(vec![
        format!(
            "CREATE PUBLICATION {publication} FOR TABLE {}",
            name.quoted(Dialect::Postgres)
        ),
        format!(
            "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
            table.cdc_slot()
        ),
    ])
}
