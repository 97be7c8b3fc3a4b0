//! The first piece of MySQL/MariaDB binlog CDC (issue 18): what mysql_async's binlog stream
//! returns, read from a position taken with `SHOW MASTER STATUS` up to a later one, decodes
//! (table map + write/update/delete rows events) into exactly the row changes the test made,
//! in commit order: an insert, an update whose before-image is the whole row
//! (`binlog_row_image = FULL`: the long text it left alone included), a key update, a delete
//! carrying the whole row, a transaction over two tables, and a transaction that started first
//! but committed last (it appears at its commit). Each transaction is `BEGIN` … XID. Values
//! arrive exactly (decimals as their text, `datetime(6)` to the microsecond). Reading the same
//! range again gives the same events, byte for byte: the primitive an exactly-once CDC run is
//! built on (read up to a target position, land, merge, then move the watermark). The traps:
//! a position whose file was purged, or that is not at an event, fails with error 1236, which
//! the engine must turn into a clear message; and without `binlog_row_metadata` (MINIMAL or
//! FULL) an unsigned column arrives as a signed number. On a private server with the binary log
//! on, which the shared one does not have, read by a user with replication privileges and SELECT.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, Opts, OptsBuilder, Row, Value};
use sluice_tests::private_mariadb::{PrivateMariadb, SERVER_ID};

/// The replication user's password; it protects nothing outside the test.
const PASSWORD: &str = "sluice-test-only";
/// The user CDC reads as: replication privileges and SELECT, nothing else.
const USER: &str = "sluice_cdc";
/// Our `server_id` as a replica; must differ from the server's.
const READER_ID: u32 = 4242;
const _: () = assert!(READER_ID != SERVER_ID);
/// What MariaDB sends, to a replica that has not said it understands them, in place of the
/// `Annotate_rows` event (the statement's text, `binlog_annotate_row_events` is on by default)
/// before each statement's rows: a query event of the same length, `# Dummy event replacing
/// event type 160 that slave cannot handle.` cut or padded with spaces to it.
const ANNOTATE_DUMMY: &str = "# Dummy event";

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Insert,
    Update,
    Delete,
}

/// What the stream said, as far as CDC cares: transactions and their row changes.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    /// A `BEGIN` query event (MariaDB's GTID event, rewritten for a replica without GTID).
    Begin,
    Row {
        table: String,
        op: Op,
        before: Option<Vec<Value>>,
        after: Option<Vec<Value>>,
    },
    /// An XID event: the transaction committed.
    Commit,
}

/// One range of the log, read.
#[derive(Debug, Clone, PartialEq)]
struct Read {
    items: Vec<Item>,
    /// Every event: (end position, type, body), for comparing two reads byte for byte.
    raw: Vec<(u32, u8, Vec<u8>)>,
    /// Every event's end position, type and a word about it, for the failure messages.
    transcript: Vec<String>,
    /// Query events in place of annotations ([`ANNOTATE_DUMMY`]).
    dummies: usize,
}

impl Read {
    fn bytes(&self) -> usize {
        self.raw.iter().map(|(_, _, body)| body.len()).sum()
    }

    fn dump(&self) -> String {
        self.transcript.join("\n")
    }
}

async fn connect(url: &str, password: Option<&str>) -> Conn {
    let opts = OptsBuilder::from_opts(Opts::from_url(url).unwrap()).pass(password);
    Conn::new(opts).await.unwrap()
}

async fn reader(my: &PrivateMariadb) -> Conn {
    connect(&my.url(USER), Some(PASSWORD)).await
}

/// Creates [`USER`] with what binlog CDC needs: REPLICATION SLAVE for the dump, REPLICATION
/// CLIENT (an alias of BINLOG MONITOR since 10.5) for `SHOW MASTER STATUS` / `SHOW BINARY
/// LOGS`, SELECT on the database for the snapshot.
fn create_cdc_user(my: &PrivateMariadb, database: &str) {
    my.sql(&format!(
        "CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';
         GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{USER}'@'127.0.0.1';
         GRANT SELECT ON {database}.* TO '{USER}'@'127.0.0.1';"
    ));
}

/// `SHOW MASTER STATUS` as the replication user: (file, position).
async fn master_status(conn: &mut Conn) -> (String, u64) {
    let row: Row = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .expect("the binary log is on");
    (row.get(0).unwrap(), row.get(1).unwrap())
}

/// `SHOW BINARY LOGS` as the replication user: the files the server still has.
async fn binary_logs(conn: &mut Conn) -> Vec<String> {
    let rows: Vec<Row> = conn.query("SHOW BINARY LOGS").await.unwrap();
    rows.iter().map(|row| row.get(0).unwrap()).collect()
}

fn bytes(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

fn values(row: BinlogRow) -> Vec<Value> {
    row.unwrap()
        .into_iter()
        .map(|v| Value::try_from(v).unwrap())
        .collect()
}

/// Reads the log from `(file, from)` until an event ends at or past `to` (in the same file);
/// or, `non_blocking`, asks the server to end the stream at the end of the log and reads until
/// it does. `capability` is sent as `@mariadb_slave_capability` first. Bounded in events and
/// time; a server error (opening the stream or later) is returned.
async fn read_range(
    my: &PrivateMariadb,
    file: &str,
    from: u64,
    to: u64,
    non_blocking: bool,
    capability: Option<u8>,
) -> mysql_async::Result<Read> {
    let mut request = BinlogStreamRequest::new(READER_ID)
        .with_filename(file.as_bytes())
        .with_pos(from);
    if non_blocking {
        request = request.with_non_blocking();
    }
    let mut conn = reader(my).await;
    if let Some(c) = capability {
        conn.query_drop(format!("SET @mariadb_slave_capability = {c}"))
            .await?;
    }
    let mut stream = conn.get_binlog_stream(request).await?;
    let mut read = Read {
        items: Vec::new(),
        raw: Vec::new(),
        transcript: Vec::new(),
        dummies: 0,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut reached = false;
    for _ in 0..10_000 {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{file}:{from}..{to} not read within 60 s; so far:\n{}",
                    read.dump()
                )
            });
        let Some(event) = next else {
            assert!(non_blocking, "the stream ended early:\n{}", read.dump());
            reached = true;
            break;
        };
        let event = event?;
        let header = event.header();
        read.raw.push((
            header.log_pos(),
            header.event_type_raw(),
            event.data().to_vec(),
        ));
        let word = match event.read_data().unwrap() {
            // MariaDB's own events (GTID 162, …) when the capability announces them.
            None => "(unknown to mysql_common)".to_owned(),
            Some(EventData::RowsEvent(rows)) => {
                let tme = stream
                    .get_tme(rows.table_id())
                    .expect("a table map event before its rows");
                let table = tme.table_name().into_owned();
                let op = match rows {
                    RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => {
                        Op::Insert
                    }
                    RowsEventData::UpdateRowsEventV1(_)
                    | RowsEventData::UpdateRowsEvent(_)
                    | RowsEventData::PartialUpdateRowsEvent(_) => Op::Update,
                    RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => {
                        Op::Delete
                    }
                };
                for row in rows.rows(tme) {
                    let (before, after) = row.unwrap();
                    read.items.push(Item::Row {
                        table: table.clone(),
                        op: op.clone(),
                        before: before.map(values),
                        after: after.map(values),
                    });
                }
                format!("{op:?} {table}")
            }
            Some(EventData::XidEvent(xid)) => {
                read.items.push(Item::Commit);
                format!("xid {}", xid.xid)
            }
            Some(EventData::QueryEvent(query)) => {
                if query.query() == "BEGIN" {
                    read.items.push(Item::Begin);
                }
                if query.query().starts_with(ANNOTATE_DUMMY) {
                    read.dummies += 1;
                }
                format!("{:?}", query.query().chars().take(70).collect::<String>())
            }
            Some(EventData::TableMapEvent(tme)) => {
                format!("{}.{}", tme.database_name(), tme.table_name())
            }
            Some(_) => String::new(),
        };
        read.transcript.push(format!(
            "{:>7} {:?} {word}",
            header.log_pos(),
            header.event_type()
        ));
        if !non_blocking && u64::from(header.log_pos()) >= to {
            reached = true;
            break;
        }
    }
    assert!(
        reached,
        "10,000 events without reaching {to}:\n{}",
        read.dump()
    );
    stream.close().await?;
    Ok(read)
}

/// The error of opening a stream that must fail, as the server sent it.
async fn stream_error(my: &PrivateMariadb, file: &str, pos: u64) -> mysql_async::ServerError {
    match read_range(my, file, pos, u64::MAX, true, None).await {
        Err(mysql_async::Error::Server(e)) => e,
        Err(other) => panic!("{file}:{pos}: not a server error: {other:?}"),
        Ok(read) => panic!("{file}:{pos} could be read:\n{}", read.dump()),
    }
}

#[tokio::test]
async fn binlog_rows_decode_into_exactly_the_changes_made() {
    let my = PrivateMariadb::start();
    my.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
         CREATE TABLE shop.docs (id bigint PRIMARY KEY, note varchar(100), amount decimal(12,2),
             body longtext, at datetime(6));
         CREATE TABLE shop.notes (id bigint PRIMARY KEY, doc_id bigint, meta json);",
    );
    create_cdc_user(&my, "shop");
    let grants = my.sql(&format!("SHOW GRANTS FOR '{USER}'@'127.0.0.1'"));
    assert!(
        grants.contains("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.*"),
        "{grants}"
    );

    let mut cdc = reader(&my).await;
    let (file, from) = master_status(&mut cdc).await;

    let mut a = connect(&format!("{}/shop", my.url("root")), None).await;
    let mut b = connect(&format!("{}/shop", my.url("root")), None).await;
    for conn in [&mut a, &mut b] {
        conn.query_drop("SET NAMES utf8mb4, time_zone = '+00:00'")
            .await
            .unwrap();
    }
    // Longer than 64 KiB (a 4-byte length), not ASCII.
    let body = format!("{}✓", "x".repeat(70_000));
    // Each statement a transaction of its own (autocommit).
    a.exec_drop(
        "INSERT INTO docs VALUES (1, 'first', 12345.67, ?, '2024-02-29 13:14:15.123456')",
        (body.as_str(),),
    )
    .await
    .unwrap();
    a.query_drop("UPDATE docs SET note = 'Grüße ✓' WHERE id = 1")
        .await
        .unwrap();
    a.query_drop("UPDATE docs SET id = 2 WHERE id = 1")
        .await
        .unwrap();
    a.query_drop("DELETE FROM docs WHERE id = 2").await.unwrap();
    // One transaction over two tables.
    a.query_drop(
        "BEGIN;
         INSERT INTO docs VALUES (3, NULL, -0.05, 'short', '1999-12-31 23:59:59.000001');
         INSERT INTO notes VALUES (1, 3, '{\"k\": [1, 2.50, \"ü\"]}');
         UPDATE docs SET amount = 9999999999.99 WHERE id = 3;
         COMMIT",
    )
    .await
    .unwrap();
    // A starts first, B commits first.
    a.query_drop("BEGIN").await.unwrap();
    a.query_drop("INSERT INTO docs VALUES (10, 'started first', 0, '', '2000-01-01 00:00:00')")
        .await
        .unwrap();
    b.query_drop("BEGIN").await.unwrap();
    b.query_drop("INSERT INTO docs VALUES (11, 'committed first', 1.5, 'b', NULL)")
        .await
        .unwrap();
    b.query_drop("COMMIT").await.unwrap();
    a.query_drop("COMMIT").await.unwrap();

    let (target_file, to) = master_status(&mut cdc).await;
    assert_eq!(target_file, file, "no rotation in between");
    assert!(to > from, "{from}..{to}");

    let read = read_range(&my, &file, from, to, false, None).await.unwrap();

    let at = Value::Date(2024, 2, 29, 13, 14, 15, 123_456);
    let doc1 = |id: i64, note: &str| {
        vec![
            Value::Int(id),
            bytes(note),
            bytes("12345.67"),
            bytes(&body),
            at.clone(),
        ]
    };
    let doc3 = |amount: &str| {
        vec![
            Value::Int(3),
            Value::NULL,
            bytes(amount),
            bytes("short"),
            Value::Date(1999, 12, 31, 23, 59, 59, 1),
        ]
    };
    let docs = |op, before: Option<Vec<Value>>, after: Option<Vec<Value>>| Item::Row {
        table: "docs".into(),
        op,
        before,
        after,
    };
    use Item::{Begin, Commit};
    let expected = vec![
        Begin,
        docs(Op::Insert, None, Some(doc1(1, "first"))),
        Commit,
        // FULL: the before-image has every column, the 70 KB body the update left alone too.
        Begin,
        docs(Op::Update, Some(doc1(1, "first")), Some(doc1(1, "Grüße ✓"))),
        Commit,
        // A key update is one update, old key before, new key after.
        Begin,
        docs(
            Op::Update,
            Some(doc1(1, "Grüße ✓")),
            Some(doc1(2, "Grüße ✓")),
        ),
        Commit,
        // A delete carries the whole row.
        Begin,
        docs(Op::Delete, Some(doc1(2, "Grüße ✓")), None),
        Commit,
        // One transaction: its statements in order, one commit.
        Begin,
        docs(Op::Insert, None, Some(doc3("-0.05"))),
        Item::Row {
            table: "notes".into(),
            op: Op::Insert,
            before: None,
            // MariaDB's json is longtext: the text as written, not a binary JSON.
            after: Some(vec![
                Value::Int(1),
                Value::Int(3),
                bytes("{\"k\": [1, 2.50, \"ü\"]}"),
            ]),
        },
        docs(Op::Update, Some(doc3("-0.05")), Some(doc3("9999999999.99"))),
        Commit,
        // B, which committed first.
        Begin,
        docs(
            Op::Insert,
            None,
            Some(vec![
                Value::Int(11),
                bytes("committed first"),
                bytes("1.50"),
                bytes("b"),
                Value::NULL,
            ]),
        ),
        Commit,
        // A, which started first, at its commit.
        Begin,
        docs(
            Op::Insert,
            None,
            Some(vec![
                Value::Int(10),
                bytes("started first"),
                bytes("0.00"),
                bytes(""),
                Value::Date(2000, 1, 1, 0, 0, 0, 0),
            ]),
        ),
        Commit,
    ];
    assert_eq!(
        read.items.len(),
        expected.len(),
        "{:?}\n{}",
        read.items,
        read.dump()
    );
    for (i, (got, want)) in read.items.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "item {i}\n{}", read.dump());
    }
    // The range ends exactly at the target: the XID of the last commit.
    assert_eq!(read.raw.last().unwrap().0 as u64, to);
    assert_eq!(read.raw.last().unwrap().1, 16, "an XID event");
    // Every statement's rows come after a dummy in place of its text: 9 statements.
    assert_eq!(read.dummies, 9, "{}", read.dump());

    // Replay: the same range again, this time with the server ending the stream at the end of
    // the log (which is the target: nothing was written since). The same events, byte for byte.
    let again = read_range(&my, &file, from, to, true, None).await.unwrap();
    assert_eq!(again, read, "{}\n---\n{}", again.dump(), read.dump());

    // A reader that says it tolerates holes in the stream (@mariadb_slave_capability = 2)
    // gets the same changes without the dummies, which are as long as the statements (70 KB
    // for the insert of the body alone).
    let lean = read_range(&my, &file, from, to, false, Some(2))
        .await
        .unwrap();
    assert_eq!(lean.items, read.items, "{}", lean.dump());
    assert_eq!(lean.dummies, 0, "{}", lean.dump());
    assert!(
        lean.bytes() + 70_000 < read.bytes(),
        "{} vs {}",
        lean.bytes(),
        read.bytes()
    );

    // A position inside an event (here the format description event of the next file).
    my.sql("FLUSH BINARY LOGS");
    let (next_file, _) = master_status(&mut cdc).await;
    assert_ne!(next_file, file);
    let bogus = stream_error(&my, &next_file, 123).await;
    assert_eq!(bogus.code, 1236, "{bogus:?}");
    assert!(
        bogus
            .message
            .starts_with("bogus data in log event; the first event"),
        "{bogus:?}"
    );

    // The trap: the watermark's file purged. PURGE leaves a file alone, without a word, until
    // the binlog checkpoint that FLUSH starts has been written: retried, bounded.
    let mut purged = false;
    for _ in 0..100 {
        my.sql(&format!("PURGE BINARY LOGS TO '{next_file}'"));
        if !binary_logs(&mut cdc).await.contains(&file) {
            purged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        purged,
        "{file} not purged: {:?}",
        binary_logs(&mut cdc).await
    );
    let gone = stream_error(&my, &file, from).await;
    assert_eq!(
        (gone.code, gone.state.as_str(), gone.message.as_str()),
        (
            1236,
            "HY000",
            "Could not find first log file name in binary log index file"
        ),
        "{gone:?}"
    );
    assert_eq!(
        mysql_async::Error::Server(gone).to_string(),
        "Server error: `ERROR 1236 (HY000): Could not find first log file name in binary log \
         index file'"
    );
}

/// How values of other types arrive, and the trap of unsigned columns: the table map event
/// says whether a column is unsigned only with `binlog_row_metadata` MINIMAL or FULL (the
/// default is NO_LOG), and without it mysql_common reads `bigint unsigned` 2⁶⁴-1 as -1 (and
/// `tinyint unsigned` 255 as -1). Column names come only with FULL.
#[tokio::test]
async fn binlog_values_by_type_and_unsigned_columns_without_row_metadata() {
    let my = PrivateMariadb::start();
    assert_eq!(my.sql("SELECT @@binlog_row_metadata"), "NO_LOG\n");
    my.sql(
        "CREATE DATABASE shop;
         CREATE TABLE shop.kinds (id bigint unsigned PRIMARY KEY, t tinyint unsigned,
             e enum('a','b'), ts timestamp(3) NULL, d date, tm time(6), f double, bi bit(3),
             c char(3), vb varbinary(4), y year, ts0 timestamp NULL);",
    );
    create_cdc_user(&my, "shop");
    let mut cdc = reader(&my).await;
    let (file, from) = master_status(&mut cdc).await;
    let insert = |id: &str| {
        format!(
            "SET time_zone = '+00:00';
             INSERT INTO shop.kinds VALUES ({id}, 255, 'b', '2024-01-02 03:04:05.678',
                 '2024-02-29', '-838:59:59.000001', 1.5, b'101', 'ab', x'00ff', 2024,
                 '2024-01-02 03:04:05')"
        )
    };
    my.sql(&insert("18446744073709551615"));
    // Dynamic: takes effect for the next table map event.
    my.sql("SET GLOBAL binlog_row_metadata = 'FULL'");
    my.sql(&insert("18446744073709551614"));
    let (_, to) = master_status(&mut cdc).await;

    let read = read_range(&my, &file, from, to, false, None).await.unwrap();
    let rows: Vec<&Vec<Value>> = read
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Row {
                op: Op::Insert,
                after: Some(after),
                ..
            } => Some(after),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 2, "{}", read.dump());
    let rest = vec![
        // enum: the index of the value, 1-based.
        Value::Int(2),
        // timestamp(n): seconds since the epoch as text, with six digits of fraction if any.
        bytes("1704164645.678000"),
        Value::Date(2024, 2, 29, 0, 0, 0, 0),
        // time: negative, days, hours, … (838 h = 34 days 22 h).
        Value::Time(true, 34, 22, 59, 59, 1),
        Value::Double(1.5),
        // bit: big-endian bytes.
        Value::Bytes(vec![0b101]),
        // char: without its padding.
        bytes("ab"),
        Value::Bytes(vec![0, 0xff]),
        // year: text.
        bytes("2024"),
        bytes("1704164645"),
    ];
    let mut no_log = vec![Value::Int(-1), Value::Int(-1)];
    no_log.extend(rest.iter().cloned());
    assert_eq!(rows[0], &no_log);
    let mut full = vec![Value::UInt(u64::MAX - 1), Value::Int(255)];
    full.extend(rest.iter().cloned());
    assert_eq!(rows[1], &full);
}
