//! One CDC run's changes to one table, as rows: each insert, update and delete the log holds
//! for the table becomes a row of the table's columns followed by the change's metadata
//! ([`CHANGE_COLUMNS`]), encoded as PostgreSQL binary COPY rows so the engine decodes them
//! into Arrow with the same decoder (and the same exact type mapping) a snapshot uses.
//!
//! Values arrive in each type's binary send form (`pgoutput`'s `binary` option), which is
//! exactly the field format of binary COPY
//! (<https://www.postgresql.org/docs/current/sql-copy.html>, "Binary Format": "the same
//! format used by the type's send function"), so they pass through untouched.
//!
//! What a change row says, and what the merge does with it:
//! - `_sluice_op` `I`, `U`, `D` or `T` (a truncate of the table: every row before it goes);
//! - `_sluice_lsn` the commit position of the change's transaction, `_sluice_commit_ts` its
//!   commit time, `_sluice_seq` the change's place in the run (the log's commit order, then
//!   its order inside the transaction): the last change of a key wins;
//! - `_sluice_unchanged` the columns the change did not send (TOASTed values an update left
//!   alone), as `,"a","b",` (each name a JSON string): the merge keeps their value from the
//!   run's earlier change of the key, or STAGING's, never NULL.
//! - An update that changes the key is a `D` of the old key and a `U` of the new one.

use std::collections::BTreeMap;

use thiserror::Error;

use super::pgoutput::{Datum, Lsn, Message, OldTuple, Relation};

pub const OP_COLUMN: &str = "_sluice_op";
pub const LSN_COLUMN: &str = "_sluice_lsn";
pub const COMMIT_TS_COLUMN: &str = "_sluice_commit_ts";
pub const SEQ_COLUMN: &str = "_sluice_seq";
pub const UNCHANGED_COLUMN: &str = "_sluice_unchanged";

/// The metadata columns every change row ends with, in order.
pub const CHANGE_COLUMNS: [&str; 5] = [
    OP_COLUMN,
    LSN_COLUMN,
    COMMIT_TS_COLUMN,
    SEQ_COLUMN,
    UNCHANGED_COLUMN,
];

/// The kinds of the metadata columns, for the engine to give each its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeColumnKind {
    Text,
    Int8,
    TimestampTz,
}

pub const CHANGE_COLUMN_KINDS: [ChangeColumnKind; 5] = [
    ChangeColumnKind::Text,
    ChangeColumnKind::Int8,
    ChangeColumnKind::TimestampTz,
    ChangeColumnKind::Int8,
    ChangeColumnKind::Text,
];

/// `schema` with the change columns it lacks added, typed as a CDC run's files type them:
/// the warehouse tables of a CDC table have them from its first (snapshot) run on.
pub fn with_change_columns(schema: &arrow_schema::Schema) -> arrow_schema::Schema {
    use arrow_schema::{DataType, Field, TimeUnit};
    let mut fields: Vec<arrow_schema::FieldRef> = schema.fields().iter().cloned().collect();
    for (name, kind) in CHANGE_COLUMNS.iter().zip(CHANGE_COLUMN_KINDS) {
        if schema.field_with_name(name).is_err() {
            let data_type = match kind {
                ChangeColumnKind::Text => DataType::Utf8,
                ChangeColumnKind::Int8 => DataType::Int64,
                ChangeColumnKind::TimestampTz => {
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
                }
            };
            fields.push(std::sync::Arc::new(Field::new(*name, data_type, true)));
        }
    }
    arrow_schema::Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// The header of a binary COPY stream with no header extension.
pub const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The trailer of a binary COPY stream: a field count of -1.
pub const COPY_TRAILER: &[u8] = &[0xff, 0xff];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChangeError {
    #[error(
        "column '{column}' of {table} has type oid {found_oid} in the change log but the run planned it as type oid {planned_oid}: the column was retyped. Take a new snapshot of the table (sluice watermark reset, then run it)"
    )]
    Retyped {
        table: String,
        column: String,
        found_oid: u32,
        planned_oid: u32,
    },
    #[error(
        "the change log has column '{column}' of {table}, which the table no longer has: it was dropped or renamed. Take a new snapshot of the table (sluice watermark reset, then run it)"
    )]
    Dropped { table: String, column: String },
    #[error(
        "{table}: a change arrived for relation {relation} before its Relation message (the log is read from a transaction boundary, so this is a server or decoding fault)"
    )]
    UnknownRelation { table: String, relation: u32 },
    #[error(
        "{table}: an update changed the primary key and left column '{column}' unsent (a TOASTed value); its value cannot be carried to the new key. Set REPLICA IDENTITY FULL on the table so the old row is sent whole"
    )]
    KeyUpdateUnchanged { table: String, column: String },
    #[error(
        "{table}: the log identifies rows by ({identity}) (the replica identity), but primary_key is ({primary_key}); deletes and key changes would miss their rows. Make primary_key the table's replica identity, or ALTER TABLE … REPLICA IDENTITY FULL"
    )]
    Identity {
        table: String,
        identity: String,
        primary_key: String,
    },
    #[error(
        "{table}: column '{column}' arrived in text form; cdc reads values in binary form only (is the column of a type without a binary send function?)"
    )]
    TextValue { table: String, column: String },
    #[error("{table}: {what}")]
    Stream { table: String, what: String },
}

/// Where each planned column sits in the table's current Relation message.
#[derive(Debug, Clone)]
struct RelationMap {
    id: u32,
    /// For each planned column, its index in the relation's tuples, when it has it.
    positions: Vec<Option<usize>>,
    /// The relation's indexes of the primary key columns.
    keys: Vec<usize>,
}

/// The transaction being read: from its Begin to its Commit.
#[derive(Debug, Clone, Copy)]
struct Transaction {
    commit_lsn: Lsn,
    commit_time: i64,
}

/// Turns a run's decoded messages into change rows of one table.
#[derive(Debug)]
pub struct ChangeRows {
    namespace: String,
    name: String,
    columns: Vec<String>,
    type_oids: Vec<u32>,
    primary_key: Vec<String>,
    /// Whether the plan reads every column: then a column the log has and the plan does not
    /// was dropped since; with a chosen `columns` list it is simply not read.
    all_columns: bool,
    relation: Option<RelationMap>,
    /// Relations of other tables in the publication, whose changes are skipped.
    others: Vec<u32>,
    transaction: Option<Transaction>,
    messages: u64,
    rows: u64,
    seq: i64,
    last_commit_end: Option<Lsn>,
}

/// Values an update left unsent that must be read from the table: the update moved the row to
/// a new key, so STAGING has nothing under that key to keep them from, and the log sent only
/// the old key. The engine reads them from the table as it is now, by the new key: a value
/// changed since is changed again by a later change in the log, and a row gone since is
/// deleted by one, so STAGING converges on the source either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLookup {
    /// The new key's columns and values (binary send form).
    pub key: Vec<(String, Vec<u8>)>,
    /// The planned columns to read.
    pub columns: Vec<String>,
}

/// What a finished read covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadEnd {
    /// The run's end in the log: the plan's `upto`, or the end of the last transaction read
    /// when the read stopped at `max_changes`.
    pub reached: u64,
    pub messages: u64,
    pub rows: u64,
}

impl ChangeRows {
    /// `columns` and `type_oids` are the plan's columns in order and their types in the
    /// source's catalog at plan time.
    pub fn new(
        namespace: &str,
        name: &str,
        columns: Vec<String>,
        type_oids: Vec<u32>,
        primary_key: Vec<String>,
        all_columns: bool,
    ) -> ChangeRows {
        ChangeRows {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            columns,
            type_oids,
            primary_key,
            all_columns,
            relation: None,
            others: Vec::new(),
            transaction: None,
            messages: 0,
            rows: 0,
            seq: 0,
            last_commit_end: None,
        }
    }

    /// The values `message` needs read from the table before it is pushed (see
    /// [`KeyLookup`]), if any.
    pub fn key_update_lookup(&self, message: &Message) -> Option<KeyLookup> {
        let Message::Update {
            relation,
            old: Some(OldTuple::Key(old)),
            new,
        } = message
        else {
            return None;
        };
        let map = self.relation.as_ref().filter(|r| r.id == *relation)?;
        if !map.keys.iter().any(|&k| old.get(k) != new.get(k)) {
            return None;
        }
        let columns: Vec<String> = self
            .columns
            .iter()
            .zip(&map.positions)
            .filter(|(_, p)| p.is_some_and(|i| new.get(i) == Some(&Datum::Unchanged)))
            .map(|(c, _)| c.clone())
            .collect();
        if columns.is_empty() {
            return None;
        }
        let key = self
            .primary_key
            .iter()
            .zip(&map.keys)
            .map(|(name, &i)| match new.get(i) {
                Some(Datum::Binary(bytes)) => Some((name.clone(), bytes.clone())),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(KeyLookup { key, columns })
    }

    /// [`ChangeRows::push`] of an update whose [`KeyLookup`] the engine answered: `found`
    /// holds the looked-up columns' values (`None`: the row is gone, they are NULL).
    pub fn push_looked_up(
        &mut self,
        message: &Message,
        found: Option<BTreeMap<String, Datum>>,
        out: &mut Vec<u8>,
    ) -> Result<(), ChangeError> {
        let (Message::Update { new, .. }, Some(map)) = (message, self.relation.clone()) else {
            return self.push(message, out);
        };
        let mut whole = new.clone();
        for (column, position) in self.columns.iter().zip(&map.positions) {
            if let Some(i) = position
                && whole.get(*i) == Some(&Datum::Unchanged)
            {
                whole[*i] = found
                    .as_ref()
                    .and_then(|f| f.get(column).cloned())
                    .unwrap_or(Datum::Null);
            }
        }
        let Message::Update { relation, old, .. } = message else {
            return self.push(message, out);
        };
        self.push(
            &Message::Update {
                relation: *relation,
                old: old.clone(),
                new: whole,
            },
            out,
        )
    }

    fn table(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    /// Takes the next message of the log; the rows it makes are appended to `out` as binary
    /// COPY rows (after [`COPY_HEADER`], which the caller writes once).
    pub fn push(&mut self, message: &Message, out: &mut Vec<u8>) -> Result<(), ChangeError> {
        self.messages += 1;
        match message {
            Message::Begin {
                final_lsn,
                commit_time,
                ..
            } => {
                self.transaction = Some(Transaction {
                    commit_lsn: *final_lsn,
                    commit_time: *commit_time,
                });
            }
            Message::Commit { end_lsn, .. } => {
                self.transaction = None;
                self.last_commit_end = Some(*end_lsn);
            }
            Message::Relation(relation) => self.relation_message(relation)?,
            Message::Insert { relation, new } => {
                if self.ours(*relation)? {
                    self.write_row(out, "I", new, None)?;
                }
            }
            Message::Update { relation, old, new } => {
                if self.ours(*relation)? {
                    self.update(out, old.as_ref(), new)?;
                }
            }
            Message::Delete { relation, old } => {
                if self.ours(*relation)? {
                    let old = match old {
                        OldTuple::Key(values) | OldTuple::Full(values) => values,
                    };
                    self.write_row(out, "D", old, None)?;
                }
            }
            Message::Truncate { relations, .. } => {
                let ours = self.relation.as_ref().map(|r| r.id);
                if relations.iter().any(|r| Some(*r) == ours) {
                    let nulls = vec![Datum::Null; self.relation_width()];
                    self.write_row(out, "T", &nulls, None)?;
                }
            }
            Message::Origin { .. } | Message::Type { .. } | Message::Logical { .. } => {}
        }
        Ok(())
    }

    /// Ends the read: where it reached, given the plan's `upto` and `max_changes` (reaching
    /// the count means the server stopped at the end of a transaction, so the run ends
    /// there, and the next run starts at the transaction after).
    pub fn finish(&self, upto: u64, max_changes: u32) -> Result<ReadEnd, ChangeError> {
        if self.transaction.is_some() {
            return Err(ChangeError::Stream {
                table: self.table(),
                what: "the change log ended inside a transaction (a Begin without its Commit)"
                    .into(),
            });
        }
        let capped = self.messages >= u64::from(max_changes);
        let reached = match (capped, self.last_commit_end) {
            (true, Some(end)) => end.0,
            _ => upto,
        };
        Ok(ReadEnd {
            reached,
            messages: self.messages,
            rows: self.rows,
        })
    }

    fn relation_width(&self) -> usize {
        self.relation.as_ref().map_or(0, |r| {
            r.positions.iter().flatten().max().map_or(0, |m| m + 1)
        })
    }

    fn relation_message(&mut self, relation: &Relation) -> Result<(), ChangeError> {
        if relation.namespace != self.namespace || relation.name != self.name {
            if !self.others.contains(&relation.id) {
                self.others.push(relation.id);
            }
            return Ok(());
        }
        let by_name: BTreeMap<&str, usize> = relation
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        if self.all_columns
            && let Some(dropped) = relation
                .columns
                .iter()
                .find(|c| !self.columns.contains(&c.name))
        {
            return Err(ChangeError::Dropped {
                table: self.table(),
                column: dropped.name.clone(),
            });
        }
        // A key the log identifies rows by other than the one STAGING is merged on would send
        // deletes and key changes under the wrong columns. `f` (FULL) sends the whole old row.
        if relation.replica_identity != b'f' {
            let identity: std::collections::BTreeSet<&str> = relation
                .columns
                .iter()
                .filter(|c| c.key)
                .map(|c| c.name.as_str())
                .collect();
            let configured: std::collections::BTreeSet<&str> =
                self.primary_key.iter().map(String::as_str).collect();
            if identity != configured {
                return Err(ChangeError::Identity {
                    table: self.table(),
                    identity: identity.into_iter().collect::<Vec<_>>().join(", "),
                    primary_key: self.primary_key.join(", "),
                });
            }
        }
        let mut positions = Vec::with_capacity(self.columns.len());
        for (column, planned_oid) in self.columns.iter().zip(&self.type_oids) {
            let position = by_name.get(column.as_str()).copied();
            if let Some(i) = position {
                let found = &relation.columns[i];
                if found.type_oid != *planned_oid {
                    return Err(ChangeError::Retyped {
                        table: self.table(),
                        column: column.clone(),
                        found_oid: found.type_oid,
                        planned_oid: *planned_oid,
                    });
                }
            }
            positions.push(position);
        }
        let keys = self
            .primary_key
            .iter()
            .map(|k| {
                by_name
                    .get(k.as_str())
                    .copied()
                    .ok_or_else(|| ChangeError::Dropped {
                        table: self.table(),
                        column: k.clone(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.relation = Some(RelationMap {
            id: relation.id,
            positions,
            keys,
        });
        Ok(())
    }

    /// Whether a change of `relation` is this table's.
    fn ours(&self, relation: u32) -> Result<bool, ChangeError> {
        match &self.relation {
            Some(r) if r.id == relation => Ok(true),
            _ if self.others.contains(&relation) => Ok(false),
            _ => Err(ChangeError::UnknownRelation {
                table: self.table(),
                relation,
            }),
        }
    }

    fn update(
        &mut self,
        out: &mut Vec<u8>,
        old: Option<&OldTuple>,
        new: &[Datum],
    ) -> Result<(), ChangeError> {
        let Some(map) = self.relation.clone() else {
            return Ok(());
        };
        let (old_values, old_full) = match old {
            Some(OldTuple::Key(values)) => (Some(values), false),
            Some(OldTuple::Full(values)) => (Some(values), true),
            None => (None, false),
        };
        let key_changed =
            old_values.is_some_and(|old| map.keys.iter().any(|&k| old.get(k) != new.get(k)));
        if key_changed && let Some(old) = old_values {
            self.write_row(out, "D", old, None)?;
        }
        // A whole old row (REPLICA IDENTITY FULL) carries what the new one left unsent.
        let fill = old_values.filter(|_| old_full);
        if key_changed && fill.is_none() {
            for (column, position) in self.columns.iter().zip(&map.positions) {
                if let Some(i) = position
                    && new.get(*i) == Some(&Datum::Unchanged)
                {
                    return Err(ChangeError::KeyUpdateUnchanged {
                        table: self.table(),
                        column: column.clone(),
                    });
                }
            }
        }
        self.write_row(out, "U", new, fill.map(|v| v.as_slice()))
    }

    /// Appends one change row: the planned columns from `values` (the relation's order), an
    /// unsent value taken from `fill` when it has it, then the metadata.
    fn write_row(
        &mut self,
        out: &mut Vec<u8>,
        op: &str,
        values: &[Datum],
        fill: Option<&[Datum]>,
    ) -> Result<(), ChangeError> {
        let Some(transaction) = self.transaction else {
            return Err(ChangeError::Stream {
                table: self.table(),
                what: format!("a change ({op}) outside a transaction"),
            });
        };
        let Some(map) = &self.relation else {
            return Ok(());
        };
        let fields = i16::try_from(self.columns.len() + CHANGE_COLUMNS.len()).map_err(|_| {
            ChangeError::Stream {
                table: self.table(),
                what: "too many columns for one row".into(),
            }
        })?;
        out.extend_from_slice(&fields.to_be_bytes());
        let mut unchanged = String::new();
        for (column, position) in self.columns.iter().zip(&map.positions) {
            let datum = match position {
                Some(i) => match values.get(*i) {
                    Some(Datum::Unchanged) => fill
                        .and_then(|f| f.get(*i))
                        .filter(|d| **d != Datum::Unchanged)
                        .unwrap_or(&Datum::Unchanged),
                    Some(datum) => datum,
                    None => &Datum::Null,
                },
                // Not in the log's row: the column was added after this change.
                None => &Datum::Unchanged,
            };
            match datum {
                Datum::Binary(bytes) => field(out, bytes),
                Datum::Null => null_field(out),
                Datum::Unchanged => {
                    null_field(out);
                    // A delete or truncate sends no values at all: nothing to keep.
                    if op == "I" || op == "U" {
                        unchanged.push(',');
                        unchanged.push_str(&json_string(column));
                    }
                }
                Datum::Text(_) => {
                    return Err(ChangeError::TextValue {
                        table: self.table(),
                        column: column.clone(),
                    });
                }
            }
        }
        field(out, op.as_bytes());
        field(out, &transaction.commit_lsn.0.to_be_bytes());
        field(out, &transaction.commit_time.to_be_bytes());
        field(out, &self.seq.to_be_bytes());
        if unchanged.is_empty() {
            null_field(out);
        } else {
            unchanged.push(',');
            field(out, unchanged.as_bytes());
        }
        self.seq += 1;
        self.rows += 1;
        Ok(())
    }
}

/// The marker of `column` in `_sluice_unchanged`: `,"name",` with the name as a JSON string.
/// Inside a JSON string every `"` is escaped, so `,"` and `",` occur only at element
/// boundaries and the marker matches exactly one column.
pub fn unchanged_marker(column: &str) -> String {
    format!(",{},", json_string(column))
}

fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn null_field(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i32).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::pgoutput::RelationColumn;

    const INT8: u32 = 20;
    const TEXT: u32 = 25;

    fn relation(id: u32, columns: &[(&str, u32)]) -> Message {
        Message::Relation(Relation {
            id,
            namespace: "public".into(),
            name: "docs".into(),
            replica_identity: b'd',
            columns: columns
                .iter()
                .map(|(name, oid)| RelationColumn {
                    key: *name == "id",
                    name: (*name).into(),
                    type_oid: *oid,
                    type_modifier: -1,
                })
                .collect(),
        })
    }

    fn begin(lsn: u64) -> Message {
        Message::Begin {
            final_lsn: Lsn(lsn),
            commit_time: 1_000,
            xid: 7,
        }
    }

    fn commit(lsn: u64, end: u64) -> Message {
        Message::Commit {
            flags: 0,
            commit_lsn: Lsn(lsn),
            end_lsn: Lsn(end),
            commit_time: 1_000,
        }
    }

    fn int(v: i64) -> Datum {
        Datum::Binary(v.to_be_bytes().to_vec())
    }

    fn text(v: &str) -> Datum {
        Datum::Binary(v.as_bytes().to_vec())
    }

    /// The rows in `out`, each as its fields (`None` for NULL).
    fn rows(mut out: &[u8]) -> Vec<Vec<Option<Vec<u8>>>> {
        let mut rows = Vec::new();
        while !out.is_empty() {
            let n = i16::from_be_bytes([out[0], out[1]]);
            out = &out[2..];
            let mut row = Vec::new();
            for _ in 0..n {
                let len = i32::from_be_bytes([out[0], out[1], out[2], out[3]]);
                out = &out[4..];
                if len < 0 {
                    row.push(None);
                } else {
                    row.push(Some(out[..len as usize].to_vec()));
                    out = &out[len as usize..];
                }
            }
            rows.push(row);
        }
        rows
    }

    fn docs() -> ChangeRows {
        ChangeRows::new(
            "public",
            "docs",
            vec!["id".into(), "body".into()],
            vec![INT8, TEXT],
            vec!["id".into()],
            true,
        )
    }

    fn op(row: &[Option<Vec<u8>>]) -> &str {
        std::str::from_utf8(row[2].as_deref().unwrap()).unwrap()
    }

    #[test]
    fn inserts_updates_and_deletes_become_ordered_rows_with_their_commit() {
        let mut changes = docs();
        let mut out = Vec::new();
        for m in [
            begin(100),
            relation(1, &[("id", INT8), ("body", TEXT)]),
            Message::Insert {
                relation: 1,
                new: vec![int(1), text("a")],
            },
            Message::Update {
                relation: 1,
                old: None,
                new: vec![int(1), Datum::Unchanged],
            },
            Message::Delete {
                relation: 1,
                old: OldTuple::Key(vec![int(1), Datum::Null]),
            },
            commit(100, 108),
        ] {
            changes.push(&m, &mut out).unwrap();
        }
        let rows = rows(&out);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows.iter().map(|r| op(r)).collect::<Vec<_>>(),
            ["I", "U", "D"]
        );
        for (seq, row) in rows.iter().enumerate() {
            assert_eq!(row[3].as_deref(), Some(&100u64.to_be_bytes()[..]));
            assert_eq!(row[5].as_deref(), Some(&(seq as i64).to_be_bytes()[..]));
        }
        // The unsent body is NULL and named, never a value.
        assert_eq!(rows[1][1], None);
        assert_eq!(rows[1][6].as_deref(), Some(&b",\"body\","[..]));
        assert_eq!(rows[0][6], None);
        // A delete keeps nothing of the unsent columns.
        assert_eq!(rows[2][6], None);
        assert_eq!(changes.finish(500, 100).unwrap().reached, 500);
    }

    #[test]
    fn a_key_update_deletes_the_old_key_and_a_full_old_row_fills_unsent_values() {
        let mut changes = docs();
        let mut out = Vec::new();
        changes.push(&begin(100), &mut out).unwrap();
        changes
            .push(&relation(1, &[("id", INT8), ("body", TEXT)]), &mut out)
            .unwrap();
        changes
            .push(
                &Message::Update {
                    relation: 1,
                    old: Some(OldTuple::Full(vec![int(1), text("kept")])),
                    new: vec![int(2), Datum::Unchanged],
                },
                &mut out,
            )
            .unwrap();
        let rows = rows(&out);
        assert_eq!(rows.len(), 2);
        assert_eq!((op(&rows[0]), op(&rows[1])), ("D", "U"));
        assert_eq!(rows[0][0].as_deref(), Some(&1i64.to_be_bytes()[..]));
        assert_eq!(rows[1][0].as_deref(), Some(&2i64.to_be_bytes()[..]));
        assert_eq!(rows[1][1].as_deref(), Some(&b"kept"[..]));
        assert_eq!(rows[1][6], None);

        // With only the old key, the unsent value cannot follow the row: refused.
        let err = changes
            .push(
                &Message::Update {
                    relation: 1,
                    old: Some(OldTuple::Key(vec![int(2), Datum::Null])),
                    new: vec![int(3), Datum::Unchanged],
                },
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(
            matches!(err, ChangeError::KeyUpdateUnchanged { ref column, .. } if column == "body"),
            "{err}"
        );
        // The same key in the old tuple is no key update.
        let mut out = Vec::new();
        changes
            .push(
                &Message::Update {
                    relation: 1,
                    old: Some(OldTuple::Key(vec![int(2), Datum::Null])),
                    new: vec![int(2), Datum::Unchanged],
                },
                &mut out,
            )
            .unwrap();
        assert_eq!(rows_of_ops(&out), ["U"]);
    }

    #[test]
    fn a_key_update_with_only_the_old_key_asks_for_the_unsent_values() {
        let mut changes = docs();
        let mut out = Vec::new();
        changes.push(&begin(100), &mut out).unwrap();
        changes
            .push(&relation(1, &[("id", INT8), ("body", TEXT)]), &mut out)
            .unwrap();
        let moved = Message::Update {
            relation: 1,
            old: Some(OldTuple::Key(vec![int(1), Datum::Null])),
            new: vec![int(2), Datum::Unchanged],
        };
        let lookup = changes.key_update_lookup(&moved).unwrap();
        assert_eq!(
            lookup,
            KeyLookup {
                key: vec![("id".into(), 2i64.to_be_bytes().to_vec())],
                columns: vec!["body".into()],
            }
        );
        let found = BTreeMap::from([("body".to_owned(), text("read now"))]);
        changes
            .push_looked_up(&moved, Some(found), &mut out)
            .unwrap();
        let moved_rows = rows(&out);
        assert_eq!((op(&moved_rows[0]), op(&moved_rows[1])), ("D", "U"));
        assert_eq!(moved_rows[1][1].as_deref(), Some(&b"read now"[..]));
        assert_eq!(moved_rows[1][6], None, "nothing left unsent");
        // Gone since: NULL, and a later delete in the log removes the row.
        let mut out = Vec::new();
        changes.push_looked_up(&moved, None, &mut out).unwrap();
        assert_eq!(rows(&out)[1][1], None);
        // Nothing to ask for: the same key, or every value sent.
        let same = Message::Update {
            relation: 1,
            old: Some(OldTuple::Key(vec![int(2), Datum::Null])),
            new: vec![int(2), Datum::Unchanged],
        };
        assert_eq!(changes.key_update_lookup(&same), None);
        let sent = Message::Update {
            relation: 1,
            old: Some(OldTuple::Key(vec![int(2), Datum::Null])),
            new: vec![int(3), text("x")],
        };
        assert_eq!(changes.key_update_lookup(&sent), None);
    }

    fn rows_of_ops(out: &[u8]) -> Vec<String> {
        rows(out).iter().map(|r| op(r).to_owned()).collect()
    }

    #[test]
    fn other_tables_are_skipped_and_truncates_of_ours_are_rows() {
        let mut changes = docs();
        let mut out = Vec::new();
        let other = Message::Relation(Relation {
            id: 2,
            namespace: "public".into(),
            name: "other".into(),
            replica_identity: b'd',
            columns: vec![],
        });
        for m in [
            begin(100),
            other,
            relation(1, &[("id", INT8), ("body", TEXT)]),
            Message::Insert {
                relation: 2,
                new: vec![],
            },
            Message::Truncate {
                options: 0,
                relations: vec![2],
            },
            Message::Truncate {
                options: 0,
                relations: vec![1, 2],
            },
            commit(100, 108),
        ] {
            changes.push(&m, &mut out).unwrap();
        }
        assert_eq!(rows_of_ops(&out), ["T"]);
        let err = changes
            .push(
                &Message::Insert {
                    relation: 9,
                    new: vec![],
                },
                &mut out,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            ChangeError::UnknownRelation { relation: 9, .. }
        ));
    }

    #[test]
    fn schema_changes_in_the_log_fail_clearly_or_evolve() {
        // Retyped.
        let err = docs()
            .push(
                &relation(1, &[("id", INT8), ("body", 1043)]),
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("column 'body'") && err.to_string().contains("retyped"),
            "{err}"
        );
        // A column the table no longer has: dropped.
        let err = docs()
            .push(
                &relation(1, &[("id", INT8), ("body", TEXT), ("gone", TEXT)]),
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(matches!(err, ChangeError::Dropped { ref column, .. } if column == "gone"));
        // ...unless the plan reads chosen columns only.
        let mut chosen = ChangeRows::new(
            "public",
            "docs",
            vec!["id".into()],
            vec![INT8],
            vec!["id".into()],
            false,
        );
        chosen
            .push(
                &relation(1, &[("id", INT8), ("body", TEXT)]),
                &mut Vec::new(),
            )
            .unwrap();
        // A column added after the change: absent from it, so kept as STAGING has it.
        let mut changes = docs();
        let mut out = Vec::new();
        changes.push(&begin(1), &mut out).unwrap();
        changes
            .push(&relation(1, &[("id", INT8)]), &mut out)
            .unwrap();
        changes
            .push(
                &Message::Insert {
                    relation: 1,
                    new: vec![int(5)],
                },
                &mut out,
            )
            .unwrap();
        let rows = rows(&out);
        assert_eq!(rows[0][1], None);
        assert_eq!(rows[0][6].as_deref(), Some(&b",\"body\","[..]));
    }

    #[test]
    fn a_replica_identity_other_than_the_primary_key_is_refused_unless_full() {
        let mut changes = ChangeRows::new(
            "public",
            "docs",
            vec!["id".into(), "body".into()],
            vec![INT8, TEXT],
            vec!["body".into()],
            true,
        );
        let err = changes
            .push(
                &relation(1, &[("id", INT8), ("body", TEXT)]),
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains(
                "identifies rows by (id) (the replica identity), but primary_key is (body)"
            ),
            "{err}"
        );
        let Message::Relation(mut full) = relation(1, &[("id", INT8), ("body", TEXT)]) else {
            unreachable!()
        };
        full.replica_identity = b'f';
        changes
            .push(&Message::Relation(full), &mut Vec::new())
            .unwrap();
    }

    #[test]
    fn a_read_capped_at_max_changes_ends_at_its_last_commit() {
        let mut changes = docs();
        let mut out = Vec::new();
        for m in [begin(100), commit(100, 108), begin(200), commit(200, 208)] {
            changes.push(&m, &mut out).unwrap();
        }
        let end = changes.finish(1_000, 4).unwrap();
        assert_eq!((end.reached, end.messages, end.rows), (208, 4, 0));
        assert_eq!(changes.finish(1_000, 5).unwrap().reached, 1_000);
        // A read that stops mid-transaction is no read.
        changes.push(&begin(300), &mut out).unwrap();
        assert!(changes.finish(1_000, 5).is_err());
    }

    #[test]
    fn unchanged_markers_match_exactly_one_column() {
        let names = ["body", "my\"body", "body\"", ",\"body\",", "b\\"];
        let mut list = String::new();
        for n in &names[1..] {
            list.push(',');
            list.push_str(&json_string(n));
        }
        list.push(',');
        assert!(!list.contains(&unchanged_marker("body")), "{list}");
        for n in &names[1..] {
            assert!(list.contains(&unchanged_marker(n)), "{n} in {list}");
        }
    }
}
