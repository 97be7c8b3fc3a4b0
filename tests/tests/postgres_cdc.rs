//! The first piece of log-based CDC (issue 18): what a PostgreSQL replication slot's SQL
//! interface returns with the `pgoutput` plugin decodes, message by message, into exactly the
//! changes the test made, including the traps (a TOASTed column an update left alone, a key
//! update, a delete carrying only the key, a truncate); and peeking is repeatable until the
//! slot is advanced, the primitive an exactly-once CDC run is built on (read up to a target
//! position, land, merge, then advance). On a private server with `wal_level = logical`,
//! which the shared one does not have.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice_core::cdc::pgoutput::{Datum, Lsn, Message, OldTuple, decode};
use sluice_tests::private_pg::{PASSWORD, PrivatePg};

const PEEK: &str = "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes('sluice_slot', NULL, NULL, 'proto_version', '1', 'publication_names', 'sluice_pub')";

async fn connect(pg: &PrivatePg) -> tokio_postgres::Client {
    let url = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
        pg.port
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// The slot's pending messages, decoded, with the position of each.
async fn peek(client: &tokio_postgres::Client) -> Vec<(Lsn, Message)> {
    client
        .query(PEEK, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let lsn: String = row.get(0);
            let data: Vec<u8> = row.get(1);
            (lsn.parse().unwrap(), decode(&data).unwrap())
        })
        .collect()
}

fn text(s: &str) -> Datum {
    Datum::Text(s.to_owned())
}

#[tokio::test]
async fn pgoutput_from_a_slot_decodes_into_exactly_the_changes_made() {
    let pg = PrivatePg::start_with(
        "host all all 127.0.0.1/32 scram-sha-256",
        "wal_level = logical\nmax_replication_slots = 4\nmax_wal_senders = 4",
    );
    let client = connect(&pg).await;
    client
        .batch_execute(
            "CREATE TABLE public.docs (id bigint PRIMARY KEY, note text, body text);
             ALTER TABLE public.docs ALTER COLUMN body SET STORAGE EXTERNAL;
             CREATE PUBLICATION sluice_pub FOR TABLE public.docs;",
        )
        .await
        .unwrap();
    // In a transaction of its own: a slot cannot be created in one that has written.
    client
        .batch_execute("SELECT pg_create_logical_replication_slot('sluice_slot', 'pgoutput')")
        .await
        .unwrap();
    let body = "x".repeat(10_000);
    // Five transactions (a multi-statement batch would be one).
    for sql in [
        format!("INSERT INTO public.docs VALUES (1, 'first', '{body}')"),
        "UPDATE public.docs SET note = 'second' WHERE id = 1".to_owned(),
        "UPDATE public.docs SET id = 2 WHERE id = 1".to_owned(),
        "BEGIN; INSERT INTO public.docs VALUES (3, NULL, 'short'); DELETE FROM public.docs WHERE id = 2; COMMIT"
            .to_owned(),
        "TRUNCATE public.docs".to_owned(),
    ] {
        client.batch_execute(&sql).await.unwrap();
    }

    let messages = peek(&client).await;
    let relation = messages
        .iter()
        .find_map(|(_, m)| match m {
            Message::Relation(r) => Some(r.clone()),
            _ => None,
        })
        .expect("a relation message before the first change");
    assert_eq!(
        (relation.namespace.as_str(), relation.name.as_str()),
        ("public", "docs")
    );
    let names: Vec<&str> = relation.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "note", "body"]);
    assert_eq!(
        relation.columns.iter().map(|c| c.key).collect::<Vec<_>>(),
        [true, false, false]
    );
    let id = relation.id;
    let changes: Vec<Message> = messages
        .iter()
        .map(|(_, m)| m.clone())
        .filter(|m| {
            !matches!(
                m,
                Message::Begin { .. }
                    | Message::Commit { .. }
                    | Message::Relation(_)
                    | Message::Type { .. }
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            Message::Insert {
                relation: id,
                new: vec![text("1"), text("first"), text(&body)],
            },
            // The TOASTed body was not touched: not sent, to be kept as the target has it.
            Message::Update {
                relation: id,
                old: None,
                new: vec![text("1"), text("second"), Datum::Unchanged],
            },
            // The key changed: the old key comes along, the other columns as NULL.
            Message::Update {
                relation: id,
                old: Some(OldTuple::Key(vec![text("1"), Datum::Null, Datum::Null])),
                new: vec![text("2"), text("second"), Datum::Unchanged],
            },
            Message::Insert {
                relation: id,
                new: vec![text("3"), Datum::Null, text("short")],
            },
            // REPLICA IDENTITY DEFAULT: a delete carries only the key.
            Message::Delete {
                relation: id,
                old: OldTuple::Key(vec![text("2"), Datum::Null, Datum::Null]),
            },
            Message::Truncate {
                options: 0,
                relations: vec![id],
            },
        ]
    );
    // Five transactions, each one Begin and one Commit, in commit order.
    let commits: Vec<Lsn> = messages
        .iter()
        .filter_map(|(_, m)| match m {
            Message::Commit { end_lsn, .. } => Some(*end_lsn),
            _ => None,
        })
        .collect();
    assert_eq!(commits.len(), 5);
    assert!(commits.windows(2).all(|w| w[0] < w[1]));

    // Peeking consumes nothing: a run that died before its merge reads the same changes again.
    assert_eq!(peek(&client).await.len(), messages.len());
    // Advanced past the first two transactions (what a run does after its merge), the slot
    // gives only the rest.
    client
        .execute(
            "SELECT pg_replication_slot_advance('sluice_slot', $1::text::pg_lsn)",
            &[&commits[1].to_string()],
        )
        .await
        .unwrap();
    let rest = peek(&client).await;
    let begins = rest
        .iter()
        .filter(|(_, m)| matches!(m, Message::Begin { .. }))
        .count();
    assert_eq!(begins, 3, "{rest:?}");
    assert!(rest.iter().all(|(lsn, _)| *lsn >= commits[1]));
}
