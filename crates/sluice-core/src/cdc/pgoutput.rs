//! Decoding of PostgreSQL's logical replication messages (`pgoutput`, protocol version 1),
//! as the replication slot SQL interface returns them, one message per row
//! (<https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>:
//! "These messages are returned either by the replication slot SQL interface or are sent by a
//! walsender"). Integers are big-endian; strings end with a NUL byte; LSNs and commit times
//! are 64-bit (times in microseconds since 2000-01-01).
//!
//! A column's value is kept as the text PostgreSQL sent (protocol version 1 sends text), or as
//! "unchanged": a TOASTed value an update did not touch, which the message leaves out and the
//! merge must keep as STAGING has it, never overwrite with NULL.

use thiserror::Error;

/// A log sequence number: a position in PostgreSQL's write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl std::fmt::Display for Lsn {
    /// PostgreSQL's own spelling, `16/B374D848`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl std::str::FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Lsn, String> {
        let bad = || format!("'{s}' is not an LSN (two hexadecimal numbers, as 16/B374D848)");
        let (high, low) = s.trim().split_once('/').ok_or_else(bad)?;
        let high = u32::from_str_radix(high, 16).map_err(|_| bad())?;
        let low = u32::from_str_radix(low, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

/// One column of a relation, as its Relation message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity (the key an update's or delete's old tuple carries).
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// A table's shape, sent before its first change in a stream and again after it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    /// Empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    /// `relreplident`: `d` default (the primary key), `n` nothing, `f` full, `i` an index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// One column's value in a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// A TOASTed value the change did not touch: not sent. Keep what the target holds.
    Unchanged,
    /// The value in PostgreSQL's text output form.
    Text(String),
    /// The value in the type's binary send form (protocol version 2 and later, when asked).
    Binary(Vec<u8>),
}

/// What an update or delete carries of the row before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// The replica identity's columns only (others Null).
    Key(Vec<Datum>),
    /// The whole row (`REPLICA IDENTITY FULL`).
    Full(Vec<Datum>),
}

/// One logical replication message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin {
        final_lsn: Lsn,
        /// Microseconds since 2000-01-01 00:00:00 UTC.
        commit_time: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    },
    Origin {
        lsn: Lsn,
        name: String,
    },
    Relation(Relation),
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    /// `old` is present when the key changed, or with `REPLICA IDENTITY FULL`.
    Update {
        relation: u32,
        old: Option<OldTuple>,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        old: OldTuple,
    },
    Truncate {
        /// Bit 1: CASCADE, bit 2: RESTART IDENTITY.
        options: u8,
        relations: Vec<u32>,
    },
    /// A logical decoding message (`pg_logical_emit_message`), sent only when asked.
    Logical {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("a pgoutput message is empty")]
    Empty,
    #[error("pgoutput message '{kind}' ends {needed} byte(s) early, at byte {at}")]
    Truncated {
        kind: char,
        at: usize,
        needed: usize,
    },
    #[error("pgoutput message '{kind}' has {extra} byte(s) after its end")]
    Trailing { kind: char, extra: usize },
    #[error("pgoutput message '{kind}': {what}")]
    Malformed { kind: char, what: String },
    #[error(
        "pgoutput message kind '{0}' is not one sluice reads (protocol version 1: B, C, O, R, Y, I, U, D, T, M)"
    )]
    UnknownKind(char),
}

/// Decodes one message, refusing a byte short or over.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let (&tag, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    let kind = char::from(tag);
    let mut r = Reader {
        kind,
        bytes: body,
        at: 0,
    };
    let message = match tag {
        b'B' => Message::Begin {
            final_lsn: Lsn(r.u64()?),
            commit_time: r.i64()?,
            xid: r.u32()?,
        },
        b'C' => Message::Commit {
            flags: r.u8()?,
            commit_lsn: Lsn(r.u64()?),
            end_lsn: Lsn(r.u64()?),
            commit_time: r.i64()?,
        },
        b'O' => Message::Origin {
            lsn: Lsn(r.u64()?),
            name: r.string()?,
        },
        b'R' => {
            let id = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            let replica_identity = r.u8()?;
            let count = r.u16()?;
            let mut columns = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                columns.push(RelationColumn {
                    key: r.u8()? & 1 == 1,
                    name: r.string()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            Message::Relation(Relation {
                id,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => Message::Type {
            oid: r.u32()?,
            namespace: r.string()?,
            name: r.string()?,
        },
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N', "the new tuple")?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let old = match r.u8()? {
                b'K' => Some(OldTuple::Key(r.tuple()?)),
                b'O' => Some(OldTuple::Full(r.tuple()?)),
                b'N' => None,
                other => return Err(r.malformed(format!("tuple marker {other:#04x}"))),
            };
            if old.is_some() {
                r.expect(b'N', "the new tuple")?;
            }
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let old = match r.u8()? {
                b'K' => OldTuple::Key(r.tuple()?),
                b'O' => OldTuple::Full(r.tuple()?),
                other => return Err(r.malformed(format!("old tuple marker {other:#04x}"))),
            };
            Message::Delete { relation, old }
        }
        b'T' => {
            let count = r.u32()?;
            let options = r.u8()?;
            let relations = (0..count).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate { options, relations }
        }
        b'M' => {
            let transactional = r.u8()? & 1 == 1;
            let lsn = Lsn(r.u64()?);
            let prefix = r.string()?;
            let length = r.u32()?;
            let content = r.take(length as usize)?.to_vec();
            Message::Logical {
                transactional,
                lsn,
                prefix,
                content,
            }
        }
        other => return Err(DecodeError::UnknownKind(char::from(other))),
    };
    let extra = r.bytes.len() - r.at;
    if extra > 0 {
        return Err(DecodeError::Trailing { kind, extra });
    }
    Ok(message)
}

struct Reader<'a> {
    kind: char,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(DecodeError::Truncated {
                kind: self.kind,
                at: self.at + 1,
                needed: n - (self.bytes.len() - self.at),
            });
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let rest = &self.bytes[self.at..];
        let end = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(DecodeError::Truncated {
                kind: self.kind,
                at: self.bytes.len() + 1,
                needed: 1,
            })?;
        let text = std::str::from_utf8(&rest[..end])
            .map_err(|e| self.malformed(format!("a name that is not UTF-8: {e}")))?
            .to_owned();
        self.at += end + 1;
        Ok(text)
    }

    fn expect(&mut self, marker: u8, what: &str) -> Result<(), DecodeError> {
        match self.u8()? {
            found if found == marker => Ok(()),
            found => Err(self.malformed(format!(
                "expected '{}' before {what}, found {found:#04x}",
                char::from(marker)
            ))),
        }
    }

    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let count = self.u16()?;
        let mut datums = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            datums.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let length = self.u32()? as usize;
                    let bytes = self.take(length)?;
                    Datum::Text(String::from_utf8(bytes.to_vec()).map_err(|e| {
                        self.malformed(format!("a text value that is not UTF-8: {e}"))
                    })?)
                }
                b'b' => {
                    let length = self.u32()? as usize;
                    Datum::Binary(self.take(length)?.to_vec())
                }
                other => return Err(self.malformed(format!("column marker {other:#04x}"))),
            });
        }
        Ok(datums)
    }

    fn malformed(&self, what: String) -> DecodeError {
        DecodeError::Malformed {
            kind: self.kind,
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds message bytes the way PostgreSQL's `logicalrep_write_*` functions do.
    #[derive(Default)]
    struct Wire(Vec<u8>);

    impl Wire {
        fn byte(mut self, b: u8) -> Wire {
            self.0.push(b);
            self
        }
        fn u16(mut self, v: u16) -> Wire {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Wire {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Wire {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn string(mut self, s: &str) -> Wire {
            self.0.extend(s.as_bytes());
            self.0.push(0);
            self
        }
        fn text(self, s: &str) -> Wire {
            let w = self.byte(b't').u32(s.len() as u32);
            let mut w = w;
            w.0.extend(s.as_bytes());
            w
        }
    }

    #[test]
    fn lsns_read_and_print_as_postgresql_spells_them() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn, Lsn(0x16_B374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        assert!(
            "16B374D848"
                .parse::<Lsn>()
                .unwrap_err()
                .contains("not an LSN")
        );
        assert!("x/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn every_message_kind_decodes_field_by_field() {
        let begin = Wire::default().byte(b'B').u64(0x0100).u64(42).u32(7).0;
        assert_eq!(
            decode(&begin).unwrap(),
            Message::Begin {
                final_lsn: Lsn(0x0100),
                commit_time: 42,
                xid: 7
            }
        );
        let relation = Wire::default()
            .byte(b'R')
            .u32(16384)
            .string("public")
            .string("orders")
            .byte(b'd')
            .u16(2)
            .byte(1)
            .string("order_id")
            .u32(20)
            .u32(u32::MAX)
            .byte(0)
            .string("note")
            .u32(25)
            .u32(u32::MAX)
            .0;
        let Message::Relation(r) = decode(&relation).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(
            (r.id, r.namespace.as_str(), r.name.as_str()),
            (16384, "public", "orders")
        );
        assert_eq!(r.replica_identity, b'd');
        assert!(r.columns[0].key && !r.columns[1].key);
        assert_eq!(r.columns[1].type_modifier, -1);

        // An update that left a TOASTed column alone, with its old key (the key changed).
        let update = Wire::default()
            .byte(b'U')
            .u32(16384)
            .byte(b'K')
            .u16(2)
            .text("5")
            .byte(b'n')
            .byte(b'N')
            .u16(2)
            .text("6")
            .byte(b'u')
            .0;
        assert_eq!(
            decode(&update).unwrap(),
            Message::Update {
                relation: 16384,
                old: Some(OldTuple::Key(vec![Datum::Text("5".into()), Datum::Null])),
                new: vec![Datum::Text("6".into()), Datum::Unchanged],
            }
        );
        let delete = Wire::default()
            .byte(b'D')
            .u32(16384)
            .byte(b'K')
            .u16(1)
            .text("6")
            .0;
        assert_eq!(
            decode(&delete).unwrap(),
            Message::Delete {
                relation: 16384,
                old: OldTuple::Key(vec![Datum::Text("6".into())])
            }
        );
        let truncate = Wire::default().byte(b'T').u32(2).byte(1).u32(10).u32(11).0;
        assert_eq!(
            decode(&truncate).unwrap(),
            Message::Truncate {
                options: 1,
                relations: vec![10, 11]
            }
        );
        let commit = Wire::default().byte(b'C').byte(0).u64(1).u64(2).u64(3).0;
        assert_eq!(
            decode(&commit).unwrap(),
            Message::Commit {
                flags: 0,
                commit_lsn: Lsn(1),
                end_lsn: Lsn(2),
                commit_time: 3
            }
        );
    }

    #[test]
    fn a_message_a_byte_short_or_over_is_refused_by_name() {
        let insert = Wire::default()
            .byte(b'I')
            .u32(1)
            .byte(b'N')
            .u16(1)
            .text("héllo")
            .0;
        assert_eq!(
            decode(&insert).unwrap(),
            Message::Insert {
                relation: 1,
                new: vec![Datum::Text("héllo".into())]
            }
        );
        for cut in 1..insert.len() {
            let err = decode(&insert[..cut]).unwrap_err();
            assert!(
                matches!(err, DecodeError::Truncated { kind: 'I', .. }),
                "{cut}: {err}"
            );
        }
        let mut over = insert.clone();
        over.push(0);
        assert_eq!(
            decode(&over).unwrap_err(),
            DecodeError::Trailing {
                kind: 'I',
                extra: 1
            }
        );
        assert_eq!(decode(&[]).unwrap_err(), DecodeError::Empty);
        assert_eq!(decode(b"Z").unwrap_err(), DecodeError::UnknownKind('Z'));
        let bad_marker = Wire::default().byte(b'I').u32(1).byte(b'X').0;
        assert!(
            decode(&bad_marker)
                .unwrap_err()
                .to_string()
                .contains("expected 'N'")
        );
    }
}
