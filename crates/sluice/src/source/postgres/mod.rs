//! PostgreSQL source: catalog lookups with `tokio-postgres`, data through
//! `COPY (SELECT …) TO STDOUT (FORMAT binary)` decoded straight into Arrow.

mod cdc;
pub mod copy_binary;
mod copy_tap;
pub mod tls;
pub mod types;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures::StreamExt;
use sluice_core::ColumnTypeOverride;
use sluice_core::SslMode;
use sluice_core::config::parse_duration;
use sluice_core::late_writers::{OpenWriter, WriterCheck, wants_check};
use sluice_core::plan::{CatalogFacts, ReadCast};
use sluice_core::{
    Dialect, Engine, RunPlan, ScalarKind, ScalarValue, SourceConfig, TableConfig, TableName,
};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::{debug, warn};

use self::copy_binary::{CopyBinaryDecoder, DecodeColumn};
use self::copy_tap::{Tap, TapReader, TapStream};
use self::types::{ColumnRead, PgColumn, PgTypeInfo, TypeCatalog, column_read, referenced_types};
use super::{
    CatalogTable, ChunkStream, ColumnRole, Credentials, GatheredFacts, PlanQueries, Result,
    SnapshotHold, Source, SourceCount, SourceError, Warnings, chunk_queries, gather_key_facts,
};
use super::{estimated_row_bytes, file_nullable};

/// Reads tables from one PostgreSQL database.
#[derive(Clone)]
pub struct PostgresSource {
    name: String,
    config: tokio_postgres::Config,
    /// `None` for `sslmode: disable`.
    tls: Option<MakeRustlsConnect>,
}

impl PostgresSource {
    /// Builds the connection settings from a source's config. `credentials` are what the
    /// caller resolved (a Secrets Manager secret in AWS, `password_env` locally); they are
    /// never read from the config itself.
    pub fn from_config(
        source: &SourceConfig,
        credentials: Option<&Credentials>,
    ) -> Result<PostgresSource> {
        let config_error = |message: String| SourceError::Config {
            source_name: source.name.clone(),
            message,
        };
        super::require_resolved_credentials(source, credentials)?;
        let c = &source.connection;
        let mut config = match &c.url {
            // The URL is not echoed in the error: it may hold credentials.
            Some(url) => url.parse::<tokio_postgres::Config>().map_err(|e| {
                config_error(format!("connection.url is not a valid PostgreSQL URL: {e}"))
            })?,
            None => {
                let mut config = tokio_postgres::Config::new();
                if let Some(host) = &c.host {
                    config.host(host);
                }
                if let Some(port) = c.port {
                    config.port(port);
                }
                if let Some(user) = &c.user {
                    config.user(user);
                }
                if let Some(database) = &c.database {
                    config.dbname(database);
                }
                config
            }
        };
        if let Some(credentials) = credentials {
            if let Some(user) = &credentials.user {
                config.user(user);
            }
            if let Some(password) = &credentials.password {
                config.password(password.as_bytes());
            }
        }
        if config.get_user().is_none() {
            config.user("postgres");
        }
        config.application_name("sluice");
        // Deterministic text forms for columns read through a cast: ISO-8601 intervals, ISO
        // dates, UTC, and floats that round-trip. No JIT: sluice's queries are plain scans,
        // where compiling costs each chunk's query more CPU than it saves.
        let mut options = String::from(
            "-c intervalstyle=iso_8601 -c datestyle=ISO,YMD -c timezone=UTC -c extra_float_digits=3 -c jit=off",
        );
        if let Some(timeout) = c.statement_timeout.as_deref().and_then(parse_duration) {
            options.push_str(&format!(" -c statement_timeout={}", timeout.as_millis()));
        }
        config.options(&options);
        config.connect_timeout(Duration::from_secs(10));
        let mode = c.sslmode.unwrap_or(SslMode::Prefer);
        config.ssl_mode(match mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            _ => PgSslMode::Require,
        });
        let tls = tls::connector(mode, c.ssl_root_cert.as_deref()).map_err(config_error)?;
        Ok(PostgresSource {
            name: source.name.clone(),
            config,
            tls,
        })
    }

    /// A new connection inside a `REPEATABLE READ READ ONLY` transaction: one consistent,
    /// harmless view of the data for everything that follows on it.
    async fn begin_snapshot(&self, table: &TableName) -> Result<Client> {
        Ok(self.begin_tracked_snapshot(table).await?.0)
    }

    /// [`PostgresSource::begin_snapshot`], with the task that drives the connection: it ends
    /// once the connection is closed.
    async fn begin_tracked_snapshot(
        &self,
        table: &TableName,
    ) -> Result<(Client, tokio::task::JoinHandle<()>)> {
        let (client, connection) = self.connect_tracked().await?;
        begin_snapshot_on(&client, table).await?;
        Ok((client, connection))
    }

    /// A chunk's transaction: in the plan's exported snapshot while the planning transaction
    /// still holds it (local runs), else in a fresh one; the plan's fixed cursor bounds keep
    /// separate snapshots consistent. Its connection carries a tap (see [`copy_tap`]) for
    /// the COPY that reads the chunk.
    async fn begin_chunk_snapshot(
        &self,
        table: &TableName,
        snapshot: Option<&str>,
        required: bool,
    ) -> Result<(Client, tokio::task::JoinHandle<()>, Tap)> {
        let (client, connection, tap) = self.connect_tapped().await?;
        begin_snapshot_on(&client, table).await?;
        let gone = || SourceError::SnapshotGone {
            table: table.to_string(),
        };
        let Some(id) = snapshot.filter(|id| is_snapshot_id(id)) else {
            if required {
                return Err(gone());
            }
            return Ok((client, connection, tap));
        };
        match client
            .batch_execute(&format!("SET TRANSACTION SNAPSHOT '{id}'"))
            .await
        {
            Ok(()) => {
                debug!(table = %table, snapshot = id, "chunk reads the plan's snapshot");
                Ok((client, connection, tap))
            }
            Err(e) => {
                if required {
                    debug!(table = %table, snapshot = id, error = %pg_message(&e), "plan snapshot gone");
                    return Err(gone());
                }
                debug!(table = %table, snapshot = id, error = %pg_message(&e), "plan snapshot gone; chunk reads a fresh snapshot");
                drop(client);
                let (client, connection, tap) = self.connect_tapped().await?;
                begin_snapshot_on(&client, table).await?;
                Ok((client, connection, tap))
            }
        }
    }

    /// A connection whose COPY data can be taken off in bulk: sluice opens the socket (and
    /// TLS, as `sslmode` asks) itself so that the tap sits on the decrypted stream, then hands
    /// that to tokio-postgres for the start-up, authentication and every other message. Hosts
    /// are tried in order, as tokio-postgres's own `connect` tries them: the next one after a
    /// host that does not answer, fails TLS or authentication, or whose session does not match
    /// `target_session_attrs`.
    fn connect_tapped(
        &self,
    ) -> futures::future::BoxFuture<'_, Result<(Client, tokio::task::JoinHandle<()>, Tap)>> {
        Box::pin(async move {
            let hosts = self
                .config
                .get_hosts()
                .len()
                .max(self.config.get_hostaddrs().len());
            let mut last = None;
            for host in 0..hosts {
                match self.connect_tapped_to(host).await {
                    Ok(connected) => return Ok(connected),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| SourceError::Unreachable {
                source_name: self.name.clone(),
                endpoint: endpoint(&self.config),
                message: "no host is configured".into(),
            }))
        })
    }

    async fn connect_tapped_to(
        &self,
        host: usize,
    ) -> Result<(Client, tokio::task::JoinHandle<()>, Tap)> {
        use tokio_postgres::config::TargetSessionAttrs;
        let (socket, domain) = self.open_socket(host).await?;
        let stream = match &self.tls {
            None => socket,
            Some(make) => self.negotiate_tls(socket, make, &domain).await?,
        };
        let tap = Tap::default();
        // TLS, if any, is done: tokio-postgres must not ask for it again.
        let mut config = self.config.clone();
        config.ssl_mode(PgSslMode::Disable);
        let (client, connection) = config
            .connect_raw(TapStream::new(stream, tap.clone()), NoTls)
            .await
            .map_err(|e| connect_error(&self.name, &self.config, &e))?;
        let connection = tokio::spawn(log_connection_end(connection));
        let wanted = self.config.get_target_session_attrs();
        if wanted != TargetSessionAttrs::Any {
            let read_only: String = client
                .query_one("SHOW transaction_read_only", &[])
                .await
                .and_then(|row| row.try_get(0))
                .map_err(|e| connect_error(&self.name, &self.config, &e))?;
            let fits = match wanted {
                TargetSessionAttrs::ReadWrite => read_only != "on",
                TargetSessionAttrs::ReadOnly => read_only == "on",
                _ => true,
            };
            if !fits {
                return Err(SourceError::Connect {
                    source_name: self.name.clone(),
                    message: format!(
                        "host {} (number {}) does not match target_session_attrs (transaction_read_only is {read_only})",
                        domain,
                        host + 1
                    ),
                });
            }
        }
        Ok((client, connection, tap))
    }

    /// PostgreSQL's TLS start: an `SSLRequest`, answered by one byte, `S` (go on with the
    /// handshake) or `N` (plain text only), then the handshake
    /// (https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SSL).
    /// `sslmode: prefer` goes on in plain text after `N`; every stricter mode refuses.
    async fn negotiate_tls(
        &self,
        mut socket: Box<dyn Socket>,
        make: &MakeRustlsConnect,
        domain: &str,
    ) -> Result<Box<dyn Socket>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
        let tls_error = |message: String| SourceError::Tls {
            source_name: self.name.clone(),
            endpoint: endpoint(&self.config),
            message,
        };
        // Length 8, then the request code 80877103 (1234 in the high 16 bits, 5679 in the low).
        const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        let mut answer = [0u8; 1];
        let asked = async {
            socket.write_all(&SSL_REQUEST).await?;
            socket.flush().await?;
            socket.read_exact(&mut answer).await
        };
        asked
            .await
            .map_err(|e| tls_error(format!("asking for TLS: {e}")))?;
        match answer[0] {
            b'S' => {}
            b'N' if self.config.get_ssl_mode() == PgSslMode::Prefer => return Ok(socket),
            b'N' => return Err(tls_error("server does not support TLS".into())),
            other => {
                return Err(tls_error(format!(
                    "unexpected answer {other:#04x} to the TLS request"
                )));
            }
        }
        let connector =
            match MakeTlsConnect::<Box<dyn Socket>>::make_tls_connect(&mut make.clone(), domain) {
                Ok(connector) => connector,
                Err(never) => match never {},
            };
        // TLS reads a record at a time: under it, a large buffer turns a hundred thousand small
        // socket reads of a big COPY into a few thousand.
        let socket: Box<dyn Socket> =
            Box::new(tokio::io::BufReader::with_capacity(TLS_READ_BUFFER, socket));
        let stream = TlsConnect::<Box<dyn Socket>>::connect(connector, socket)
            .await
            .map_err(|e| tls_error(format!("TLS handshake: {e}")))?;
        Ok(Box::new(stream))
    }

    /// A socket to configured host number `host` (its `hostaddr` when given), within the
    /// connect timeout, with TCP keepalives as the config asks (tokio-postgres's default: on,
    /// first probe after 2 hours idle) so a server that vanishes mid-COPY ends the read; with
    /// the host's name, which a server certificate is checked against.
    async fn open_socket(&self, host: usize) -> Result<(Box<dyn Socket>, String)> {
        use tokio_postgres::config::Host;
        let hosts = self.config.get_hosts();
        let addrs = self.config.get_hostaddrs();
        let ports = self.config.get_ports();
        let port = ports.get(host).or(ports.first()).copied().unwrap_or(5432);
        let timeout = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(10));
        let keepalive = self
            .config
            .get_keepalives()
            .then(|| self.config.get_keepalives_idle());
        let attempt = async {
            let socket: Box<dyn Socket> = match (addrs.get(host), hosts.get(host)) {
                (Some(ip), _) => tcp_socket(
                    tokio::net::TcpStream::connect((*ip, port)).await?,
                    keepalive,
                )?,
                (None, Some(Host::Tcp(name))) => tcp_socket(
                    tokio::net::TcpStream::connect((name.as_str(), port)).await?,
                    keepalive,
                )?,
                (None, Some(Host::Unix(dir))) => Box::new(
                    tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).await?,
                ),
                (None, None) => return Err(std::io::Error::other("no host")),
            };
            Ok(socket)
        };
        let message = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(socket)) => {
                let domain = match hosts.get(host) {
                    Some(Host::Tcp(name)) => name.clone(),
                    _ => String::new(),
                };
                return Ok((socket, domain));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} s", timeout.as_secs()),
        };
        Err(SourceError::Unreachable {
            source_name: self.name.clone(),
            endpoint: endpoint(&self.config),
            message,
        })
    }

    async fn connect(&self) -> Result<Client> {
        Ok(self.connect_tracked().await?.0)
    }

    /// A connection, with the task that drives it (it ends when the connection closes).
    async fn connect_tracked(&self) -> Result<(Client, tokio::task::JoinHandle<()>)> {
        let connected = match &self.tls {
            None => self
                .config
                .connect(NoTls)
                .await
                .map(|(client, connection)| (client, tokio::spawn(log_connection_end(connection)))),
            Some(tls) => self
                .config
                .connect(tls.clone())
                .await
                .map(|(client, connection)| (client, tokio::spawn(log_connection_end(connection)))),
        };
        connected.map_err(|e| connect_error(&self.name, &self.config, &e))
    }
}

/// Starts the `REPEATABLE READ READ ONLY` transaction on `client`. Its snapshot is taken at
/// the transaction's first statement, not here.
async fn begin_snapshot_on(client: &Client, table: &TableName) -> Result<()> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| SourceError::Query {
            table: table.to_string(),
            message: pg_message(&e),
        })
}

/// Whether the session sees every other session's transaction start: `pg_stat_activity`
/// shows `xact_start` of another role's session only to superusers and members of
/// `pg_read_all_stats` (`pg_has_role` is true for superusers).
const SEES_ALL_SESSIONS: &str = "SELECT pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE')";

/// The oldest open transaction writing in this database, other than this session: one that
/// has an assigned transaction id (it wrote something, anywhere in the database), or holds or
/// awaits a write lock on the table (it is writing to it now, perhaps before its first row).
/// `xact_start::timestamp` is the start as wall-clock time in this session's zone (UTC), the
/// conversion a `timestamp`/`date` cursor's cap follows. Sessions whose start this user may
/// not see have a NULL `xact_start` and drop out; autovacuum writes no table rows.
const OLDEST_WRITER: &str = "SELECT a.pid, a.xact_start, a.xact_start::timestamp \
     FROM pg_catalog.pg_stat_activity a \
     WHERE a.datid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database()) \
       AND a.pid <> pg_catalog.pg_backend_pid() \
       AND a.xact_start IS NOT NULL \
       AND a.backend_type IS DISTINCT FROM 'autovacuum worker' \
       AND (a.backend_xid IS NOT NULL OR EXISTS ( \
         SELECT 1 FROM pg_catalog.pg_locks l \
         WHERE l.pid = a.pid AND l.locktype = 'relation' \
           AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock') \
           AND l.relation = (SELECT c.oid FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = coalesce($1::text, current_schema()) AND c.relname = $2::text))) \
     ORDER BY a.xact_start LIMIT 1";

/// Reads the oldest open writer, before the planning snapshot exists: a transaction still
/// open when the snapshot is taken was then either seen here or started after this query, so
/// its rows are stamped after the moment read here (the lookback covers the few
/// milliseconds between the two). A failed check does not fail the run: it warns and the
/// run plans as without it.
async fn check_open_writers(client: &Client, table: &TableName) -> WriterCheck {
    let sees_all = match client.query_one(SEES_ALL_SESSIONS, &[]).await {
        Ok(row) => row.get::<_, bool>(0),
        Err(e) => {
            return WriterCheck::failed(&format!("checking pg_read_all_stats: {}", pg_message(&e)));
        }
    };
    let oldest = match client
        .query_opt(OLDEST_WRITER, &[&table.schema, &table.name])
        .await
    {
        Ok(row) => row.map(|row| OpenWriter {
            pid: i64::from(row.get::<_, i32>(0)),
            since: row.get(1),
            since_local: row.get(2),
        }),
        Err(e) => {
            return WriterCheck::failed(&format!(
                "reading pg_stat_activity and pg_locks: {}",
                pg_message(&e)
            ));
        }
    };
    if sees_all {
        WriterCheck::seen(oldest)
    } else {
        // Writers of the same role are still visible and still hold the bound.
        WriterCheck::missing_privilege(Engine::Postgres, oldest)
    }
}

async fn log_connection_end<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(
    connection: F,
) {
    if let Err(e) = connection.await {
        debug!(error = %e, "postgres connection closed with an error");
    }
}

/// Tells apart the failures a user fixes differently: credentials, network, TLS.
/// Bytes read from the socket at once under TLS (see `negotiate_tls`).
const TLS_READ_BUFFER: usize = 256 * 1024;

/// A socket a tapped connection runs over: TCP or a Unix socket.
trait Socket: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Socket for T {}

fn tcp_socket(
    stream: tokio::net::TcpStream,
    keepalive_idle: Option<Duration>,
) -> std::io::Result<Box<dyn Socket>> {
    // Small requests (the COPY, the COMMIT) go out at once, as tokio-postgres sends them.
    stream.set_nodelay(true)?;
    if let Some(idle) = keepalive_idle {
        socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(idle))?;
    }
    Ok(Box::new(stream))
}

/// The first host and port, as errors name them.
fn endpoint(config: &tokio_postgres::Config) -> String {
    format!(
        "{}:{}",
        config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .unwrap_or_default(),
        config.get_ports().first().copied().unwrap_or(5432)
    )
}

fn connect_error(
    source_name: &str,
    config: &tokio_postgres::Config,
    e: &tokio_postgres::Error,
) -> SourceError {
    let source_name = source_name.to_owned();
    let message = pg_message(e);
    let endpoint = endpoint(config);
    let code = e.as_db_error().map(|d| d.code().code().to_owned());
    match code.as_deref() {
        Some("28P01" | "28000") => SourceError::Auth {
            source_name,
            user: config.get_user().unwrap_or_default().to_owned(),
            message,
        },
        _ if message.contains("TLS")
            || message.contains("certificate")
            || message.contains("server does not support TLS") =>
        {
            SourceError::Tls {
                source_name,
                endpoint,
                message,
            }
        }
        None => SourceError::Unreachable {
            source_name,
            endpoint,
            message,
        },
        Some(_) => SourceError::Connect {
            source_name,
            message,
        },
    }
}

/// A PostgreSQL error with the server's own message, detail and hint, which the client's
/// `Display` leaves out.
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut message = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                message.push_str(&format!("; detail: {detail}"));
            }
            if let Some(hint) = db.hint() {
                message.push_str(&format!("; hint: {hint}"));
            }
            message
        }
        None => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                message.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            message
        }
    }
}

struct ResolvedTable {
    oid: u32,
    columns: Vec<PgColumn>,
    types: TypeCatalog,
    estimated_rows: u64,
}

const TYPE_QUERY: &str = "SELECT oid, typname::text, typtype::text, typcategory::text, \
     typbasetype, typtypmod, typelem FROM pg_catalog.pg_type WHERE oid = ANY($1)";

async fn resolve_table(client: &Client, table: &TableName) -> Result<ResolvedTable> {
    let display = table.to_string();
    let query_error = |e: tokio_postgres::Error| SourceError::Query {
        table: display.clone(),
        message: pg_message(&e),
    };
    let row = client
        .query_opt(
            "SELECT c.oid, greatest(c.reltuples, 0)::int8 \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = coalesce($1::text, current_schema()) AND c.relname = $2::text \
               AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(query_error)?
        .ok_or_else(|| SourceError::UnknownTable {
            table: display.clone(),
        })?;
    let oid: u32 = row.get(0);
    let estimated: i64 = row.get(1);
    let columns: Vec<PgColumn> = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.atttypid, \
                    a.atttypmod, a.attnotnull, a.attndims \
             FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(query_error)?
        .into_iter()
        .map(|r| PgColumn {
            name: r.get(0),
            type_text: r.get(1),
            type_oid: r.get(2),
            typmod: r.get(3),
            not_null: r.get(4),
            dims: r.get(5),
        })
        .collect();
    // Load the columns' types, then whatever they refer to (domain bases, array elements),
    // until nothing new is referenced.
    let mut types = TypeCatalog::new();
    let mut wanted: Vec<u32> = columns.iter().map(|c| c.type_oid).collect();
    for _ in 0..16 {
        wanted.retain(|oid| *oid != 0 && !types.contains_key(oid));
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            break;
        }
        let rows = client
            .query(TYPE_QUERY, &[&wanted])
            .await
            .map_err(query_error)?;
        wanted = Vec::new();
        for r in rows {
            let text = |i: usize| r.get::<_, String>(i).chars().next().unwrap_or(' ');
            let info = PgTypeInfo {
                oid: r.get(0),
                name: r.get(1),
                kind: text(2),
                category: text(3),
                base_type: r.get(4),
                base_typmod: r.get(5),
                element: r.get(6),
            };
            wanted.extend(referenced_types(&info));
            types.insert(info.oid, info);
        }
    }
    Ok(ResolvedTable {
        oid,
        columns,
        types,
        estimated_rows: u64::try_from(estimated).unwrap_or(0),
    })
}

impl CatalogTable for ResolvedTable {
    type Column = PgColumn;
    type Read = ColumnRead;

    fn columns(&self) -> &[PgColumn] {
        &self.columns
    }

    fn column_name(column: &PgColumn) -> &str {
        &column.name
    }

    fn column_type_text(column: &PgColumn) -> &str {
        &column.type_text
    }

    fn read_column(
        &self,
        column: &PgColumn,
        override_type: Option<ColumnTypeOverride>,
    ) -> std::result::Result<ColumnRead, String> {
        column_read(column, &self.types, override_type)
    }

    fn column_not_null(column: &PgColumn) -> bool {
        column.not_null
    }

    fn read_kind(read: &ColumnRead) -> Option<ScalarKind> {
        read.cast
            .is_none()
            .then(|| read.pg_type.scalar_kind())
            .flatten()
    }

    fn read_cast(read: &ColumnRead) -> Option<ReadCast> {
        read.cast
    }
}

fn table_name(table: &TableConfig) -> Result<TableName> {
    table.table_name().map_err(|message| SourceError::Query {
        table: table.table.clone(),
        message,
    })
}

/// Exported snapshot ids look like `00000003-0000001B-1`; anything else is refused before it
/// is spliced into `SET TRANSACTION SNAPSHOT '…'`.
fn is_snapshot_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// Planning queries on the planning transaction's connection.
struct PgPlanQueries<'a> {
    client: &'a Client,
}

#[async_trait]
impl PlanQueries for PgPlanQueries<'_> {
    async fn key_extremes(
        &mut self,
        sql: &str,
        kind: ScalarKind,
    ) -> std::result::Result<(Option<ScalarValue>, Option<ScalarValue>, Option<u64>), String> {
        let row = self
            .client
            .query_one(sql, &[])
            .await
            .map_err(|e| pg_message(&e))?;
        let typed = |i: usize| -> std::result::Result<Option<ScalarValue>, tokio_postgres::Error> {
            Ok(match kind {
                ScalarKind::Int => row.try_get::<_, Option<i64>>(i)?.map(ScalarValue::Int),
                ScalarKind::Date => row
                    .try_get::<_, Option<NaiveDate>>(i)?
                    .map(ScalarValue::Date),
                ScalarKind::Timestamp => row
                    .try_get::<_, Option<NaiveDateTime>>(i)?
                    .map(ScalarValue::Timestamp),
                ScalarKind::TimestampTz => row
                    .try_get::<_, Option<DateTime<Utc>>>(i)?
                    .map(ScalarValue::TimestampTz),
            })
        };
        let unreadable = |e: tokio_postgres::Error| {
            format!(
                "{} (infinite or out-of-range values are not supported as cursor or partition bounds)",
                pg_message(&e)
            )
        };
        let rows: Option<i64> = row.try_get(2).map_err(|e| pg_message(&e))?;
        Ok((
            typed(0).map_err(unreadable)?,
            typed(1).map_err(unreadable)?,
            rows.map(|n| u64::try_from(n).unwrap_or(0)),
        ))
    }

    async fn count(&mut self, sql: &str) -> std::result::Result<u64, String> {
        let row = self
            .client
            .query_one(sql, &[])
            .await
            .map_err(|e| pg_message(&e))?;
        let n: i64 = row.try_get(0).map_err(|e| pg_message(&e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// A chunk's transaction, begun in the plan's snapshot where it still exists, with the
/// table's columns checked against the plan: what reading or counting the chunk starts from.
struct OpenChunk {
    client: Client,
    /// Drives `client`'s connection; ends once it is closed.
    connection: tokio::task::JoinHandle<()>,
    /// Takes the COPY's data off `client`'s connection.
    tap: Tap,
    name: TableName,
    select: String,
    bound_count: String,
    decoder: CopyBinaryDecoder,
}

impl PostgresSource {
    async fn open_chunk(&self, plan: &RunPlan, chunk: u32) -> Result<OpenChunk> {
        let name = table_name(&plan.table)?;
        let (select, bound_count) = chunk_queries(plan, &name, chunk)?;
        // A block range is consistent only in the snapshot it was cut in: a row updated since
        // has moved to another block. Without that snapshot the chunk must not be read.
        let blocks = matches!(
            plan.chunks.get(chunk as usize),
            Some(sluice_core::plan::ChunkRange::Blocks { .. })
        );
        let (client, connection, tap) = self
            .begin_chunk_snapshot(&name, plan.snapshot.as_deref(), blocks)
            .await
            .map_err(|e| match e {
                SourceError::SnapshotGone { .. } => SourceError::Stream {
                    table: name.to_string(),
                    chunk,
                    message: "its rows are a range of heap blocks as they were in the plan's snapshot, and that snapshot has ended (the process that planned the run is gone): the run must be planned again; run the table again".into(),
                },
                e => e,
            })?;
        let resolved = resolve_table(&client, &name).await?;
        let reads = resolved.plan_reads(&name, plan)?;
        let columns: Vec<DecodeColumn> = reads
            .into_iter()
            .map(|(c, r)| DecodeColumn {
                nullable: file_nullable(
                    c.not_null,
                    &r.pg_type.arrow_type(),
                    plan.table.invalid_dates,
                ),
                name: c.name,
                pg_type: r.pg_type,
            })
            .collect();
        let row_bytes = estimated_row_bytes(columns.iter().map(|c| c.pg_type.arrow_type()));
        let batch_rows = plan.table.batch_rows(row_bytes);
        let decoder = CopyBinaryDecoder::new(&columns, batch_rows, plan.table.invalid_dates);
        Ok(OpenChunk {
            client,
            connection,
            tap,
            name,
            select,
            bound_count,
            decoder,
        })
    }
}

#[async_trait]
impl Source for PostgresSource {
    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    async fn gather_facts(
        &self,
        table: &TableConfig,
        window_lower: Option<&ScalarValue>,
    ) -> Result<GatheredFacts> {
        let name = table_name(table)?;
        let client = self.connect().await?;
        // Open writers are read before the snapshot is taken (see check_open_writers).
        let late_writers = if wants_check(table) {
            let check = check_open_writers(&client, &name).await;
            // The plan decides whether this matters (not for an integer cursor) and records
            // it among the run's warnings.
            if let Some(unseen) = &check.unseen {
                debug!(table = %name, "{unseen}");
            }
            Some(check)
        } else {
            None
        };
        // One read-only snapshot for every fact the plan is built on.
        begin_snapshot_on(&client, &name).await?;
        let query_error = |e: tokio_postgres::Error| SourceError::Query {
            table: name.to_string(),
            message: pg_message(&e),
        };
        let resolved = resolve_table(&client, &name).await?;
        let columns: Vec<String> = match &table.columns {
            Some(columns) => columns.clone(),
            None => resolved.columns.iter().map(|c| c.name.clone()).collect(),
        };
        let reads = resolved.reads(&name, &columns, table)?;
        let casts: BTreeMap<String, ReadCast> = reads
            .iter()
            .filter_map(|(c, r)| r.cast.map(|cast| (c.name.clone(), cast)))
            .collect();
        for key in &table.primary_key {
            resolved.column(&name, key, ColumnRole::PrimaryKey)?;
        }
        let key = gather_key_facts(
            &mut PgPlanQueries { client: &client },
            Dialect::Postgres,
            &resolved,
            &name,
            table,
            window_lower,
            resolved.estimated_rows,
            late_writers.as_ref(),
        )
        .await?;
        // Block ranges need a table with heap blocks (not a view, nor a partitioned parent)
        // and a TID range scan to read them with (PostgreSQL 14).
        let blocks: Option<i64> = if table.partition.is_some() {
            client
                .query_one(
                    "SELECT CASE WHEN c.relkind = 'r'                        AND current_setting('server_version_num')::int >= 140000                      THEN pg_catalog.pg_relation_size(c.oid)                           / current_setting('block_size')::int8 END                      FROM pg_catalog.pg_class c WHERE c.oid = $1",
                    &[&resolved.oid],
                )
                .await
                .map_err(query_error)?
                .get(0)
        } else {
            None
        };
        // Export the snapshot and keep its transaction open for as long as the caller holds
        // the returned guard, so the chunks can read exactly this state.
        let snapshot: String = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(query_error)?
            .get(0);
        debug!(table = %name, oid = resolved.oid, %snapshot, "gathered plan facts");
        Ok(GatheredFacts {
            facts: CatalogFacts {
                columns,
                cursor_kind: key.cursor_kind,
                cursor_max: key.cursor_max,
                partition: key.partition,
                snapshot: Some(snapshot),
                blocks: blocks.and_then(|b| u64::try_from(b).ok()),
                casts,
                warnings: key.warnings,
                late_writers,
            },
            hold: Some(SnapshotHold::new(client)),
        })
    }

    async fn query_text(
        &self,
        table: &TableConfig,
        queries: &[String],
    ) -> Result<Vec<Vec<Vec<Option<String>>>>> {
        let name = table_name(table)?;
        let client = self.begin_snapshot(&name).await?;
        let query_error = |e: tokio_postgres::Error| SourceError::Query {
            table: name.to_string(),
            message: pg_message(&e),
        };
        let mut answers = Vec::with_capacity(queries.len());
        for sql in queries {
            let rows = client.query(sql.as_str(), &[]).await.map_err(query_error)?;
            let rows = rows
                .iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| row.try_get::<_, Option<String>>(i))
                        .collect::<std::result::Result<Vec<_>, _>>()
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(query_error)?;
            answers.push(rows);
        }
        Ok(answers)
    }

    async fn chunk_schema(&self, plan: &RunPlan) -> Result<SchemaRef> {
        // The read-only transaction ends with the connection, having read nothing.
        Ok(self.open_chunk(plan, 0).await?.decoder.schema())
    }

    async fn cdc_facts(
        &self,
        table: &TableConfig,
        watermark: Option<u64>,
    ) -> Result<sluice_core::plan::CdcFacts> {
        self.read_cdc_facts(table, watermark).await
    }

    async fn setup_cdc(&self, table: &TableConfig) -> Result<Vec<String>> {
        self.create_publication_and_slot(table).await
    }

    async fn check_cdc(&self, table: &TableConfig) -> Result<Vec<String>> {
        self.check_cdc_prerequisites(table).await
    }

    async fn extract_chunk(&self, plan: &RunPlan, chunk: u32) -> Result<ChunkStream> {
        if plan.reads_changes() {
            return self.extract_changes(plan).await;
        }
        let OpenChunk {
            client,
            connection,
            tap,
            name,
            select,
            bound_count,
            decoder,
        } = self.open_chunk(plan, chunk).await?;
        let query_error = |e: tokio_postgres::Error| SourceError::Query {
            table: name.to_string(),
            message: pg_message(&e),
        };
        let schema = decoder.schema();
        // With a `where`, the chunk's range is counted up front without it (in the
        // transaction the COPY reads in, so both see the same rows): a read beyond the count
        // escaped its range. Without one the COPY reads exactly the range, and the count it
        // reports when done (`COPY <rows>`) checks the read for nothing: counting first cost
        // the server a scan of the chunk of its own, a fifth of the read.
        let (bound_rows, source_count) = if plan.table.filter.is_some() {
            let counted: i64 = client
                .query_one(bound_count.as_str(), &[])
                .await
                .and_then(|row| row.try_get(0))
                .map_err(|e| SourceError::Query {
                    table: name.to_string(),
                    message: format!("counting chunk {chunk}'s rows: {}", pg_message(&e)),
                })?;
            (u64::try_from(counted).unwrap_or(0), None)
        } else {
            (u64::MAX, Some(SourceCount::default()))
        };
        let copy = format!("COPY ({select}) TO STDOUT (FORMAT binary)");
        debug!(table = %name, chunk, sql = %copy, "starting binary COPY");
        // Nothing else is in flight on the connection: every CopyData from here is the COPY's.
        tap.arm();
        let stream = client.copy_out(copy.as_str()).await.map_err(query_error)?;
        let warnings = Warnings::default();
        let state = CopyState {
            client,
            stream: Box::pin(stream),
            tap: TapReader(tap),
            counted: source_count.clone(),
            ready: VecDeque::new(),
            finished: false,
            table: name.to_string(),
            chunk,
            warnings: warnings.clone(),
        };
        let batches =
            futures::stream::try_unfold((state, decoder), |(mut st, mut decoder)| async move {
                loop {
                    if let Some(batch) = st.ready.pop_front() {
                        return Ok(Some((batch, (st, decoder))));
                    }
                    if st.finished {
                        // Ending the read-only transaction politely; the connection closes on
                        // drop. Its answer comes after the COPY's `CommandComplete`, so the
                        // tap has read the COPY's row count by then.
                        if let Err(e) = st.client.batch_execute("COMMIT").await {
                            warn!(error = %pg_message(&e), "commit after COPY failed");
                        }
                        if let Some(counted) = &st.counted {
                            let Some(rows) = st.tap.0.copied_rows() else {
                                return Err(SourceError::Stream {
                                    table: st.table.clone(),
                                    chunk: st.chunk,
                                    message: "the server did not say how many rows its COPY sent (no `COPY <rows>` completion): the read cannot be checked, so nothing is loaded".into(),
                                });
                            };
                            *counted.lock().unwrap_or_else(|e| e.into_inner()) = Some(rows);
                        }
                        return Ok(None);
                    }
                    let stream_error = |message: String| SourceError::Stream {
                        table: st.table.clone(),
                        chunk: st.chunk,
                        message,
                    };
                    // Many rows at a time, straight from the tap: warnings are collected only
                    // when a batch completes.
                    if let Some(piece) = st.tap.0.next_data().await {
                        let before = st.ready.len();
                        decoder
                            .feed(&piece, &mut st.ready)
                            .map_err(|e| stream_error(e.to_string()))?;
                        st.tap.0.recycle(piece);
                        if st.ready.len() != before {
                            st.warnings.add_all(decoder.take_warnings());
                        }
                        continue;
                    }
                    // The COPY ended: its outcome (CopyDone or the server's error) is what
                    // tokio-postgres reads after the data.
                    loop {
                        match st.stream.next().await {
                            // Not expected (the tap takes every CopyData), but data all the same.
                            Some(Ok(bytes)) => decoder
                                .feed(&bytes, &mut st.ready)
                                .map_err(|e| stream_error(e.to_string()))?,
                            Some(Err(e)) => {
                                return Err(stream_error(format!(
                                    "reading COPY data: {}",
                                    pg_message(&e)
                                )));
                            }
                            None => break,
                        }
                    }
                    st.finished = true;
                    let last = decoder.finish().map_err(|e| stream_error(e.to_string()))?;
                    st.ready.extend(last);
                    st.warnings.add_all(decoder.take_warnings());
                }
            })
            .boxed();
        Ok(ChunkStream {
            schema,
            batches,
            warnings,
            bound_rows,
            source_count,
            closed: Some(Box::pin(async move {
                let _ = connection.await;
            })),
            cdc_reached: None,
        })
    }
}

struct CopyState {
    client: Client,
    stream: std::pin::Pin<Box<tokio_postgres::CopyOutStream>>,
    tap: TapReader,
    /// Where the COPY's own row count goes when it ends (no up-front count was made).
    counted: Option<SourceCount>,
    ready: VecDeque<arrow::record_batch::RecordBatch>,
    finished: bool,
    table: String,
    chunk: u32,
    warnings: Warnings,
}
