//! Log-based change data capture: the pure parts. A CDC run of a PostgreSQL table reads the
//! changes committed since its position through the replication slot's SQL interface
//! (`pg_logical_slot_peek_binary_changes` with the `pgoutput` plugin), in which every row is
//! one [`pgoutput`] message; decoding them is here, with no I/O, so every message shape is
//! unit-tested in milliseconds.

pub mod changes;
pub mod pgoutput;
