//! A MariaDB server of the test's own: `mariadb-install-db` in a temporary directory, the
//! binary log on (row format, full row images), a free port on 127.0.0.1. Used where the
//! shared server cannot be reconfigured: binlog CDC needs `log_bin`, which the shared server
//! on 3306 has off (and it must not be restarted).
//!
//! The server runs as the current user, root included (`--user=root`): switching to `mysql`
//! would clear the parent-death signal ([`crate::process::die_with_parent`]) on the setuid, and
//! a test binary that crashed would leave the server running.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server's `server_id`; a binlog reader must register with a different one.
pub const SERVER_ID: u32 = 1;

/// How long the server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(60);

pub struct PrivateMariadb {
    // Dropped after the server is killed (fields drop after `Drop::drop`).
    dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
    /// The server's program and arguments, to start it again ([`PrivateMariadb::restart`]).
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A MariaDB program: on the PATH, or in the Debian package's directories (`mariadbd` is in
/// /usr/sbin, which a non-root PATH may lack).
fn program(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: a private MariaDB needs the server and client programs \
                 (on Debian: apt-get install mariadb-server mariadb-client; scripts/setup \
                 installs them)"
            )
        })
}

impl PrivateMariadb {
    /// Initialises a data directory and starts a server with the binary log on
    /// (`binlog_format = ROW`, `binlog_row_image = FULL`, `server_id` = [`SERVER_ID`]); returns
    /// once it accepts connections. root has no password, on the socket and on 127.0.0.1.
    pub fn start() -> PrivateMariadb {
        PrivateMariadb::start_with(&[])
    }

    /// [`PrivateMariadb::start`] with more server options (`--binlog-row-metadata=FULL`),
    /// after (so overriding) the defaults.
    pub fn start_with(options: &[&str]) -> PrivateMariadb {
        let install_db = program("mariadb-install-db");
        let mariadbd = program("mariadbd");
        // The client runs `sql` and the readiness check.
        program("mariadb");
        let dir = tempfile::Builder::new()
            .prefix("sluice-mariadb-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        // A server of its own for temporary files too: a starting server removes the
        // `#sql*` files it finds in its tmpdir, which in a shared /tmp are another starting
        // server's system tables (seen: "Installation of system tables failed" when two
        // tests started servers at once).
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let user = current_user();
        run(Command::new(&install_db)
            .arg("--no-defaults")
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={user}"))
            .arg("--skip-test-db"));
        let port = free_port();
        let mut command = Command::new(&mariadbd);
        command
            // Must come first: no /etc/mysql option files (the shared server's settings).
            .arg("--no-defaults")
            .arg(format!("--user={user}"))
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--socket={}", socket(dir.path()).display()))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mariadbd.pid").display()
            ))
            .arg(format!("--log-error={}", log_file(dir.path()).display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--skip-networking=0")
            .arg("--skip-name-resolve")
            .arg(format!("--log-bin={}", dir.path().join("binlog").display()))
            .arg("--binlog-format=ROW")
            .arg("--binlog-row-image=FULL")
            .arg(format!("--server-id={SERVER_ID}"))
            // A throwaway server: small, and no fsync per commit.
            .arg("--innodb-buffer-pool-size=32M")
            .arg("--innodb-flush-log-at-trx-commit=2")
            .arg("--sync-binlog=0")
            .args(options);
        let args: Vec<std::ffi::OsString> = command.get_args().map(Into::into).collect();
        let child = spawn(&mariadbd, &args);
        let mut my = PrivateMariadb {
            dir,
            child,
            port,
            program: mariadbd,
            args,
        };
        my.wait_ready();
        my
    }

    /// Shuts the server down cleanly (`mariadb-admin shutdown`: the binary log's file ends
    /// with a STOP event and the next start opens a new one), waits for it to exit, and starts
    /// it again with the same data, port and options.
    pub fn restart(&mut self) {
        run(Command::new(program("mariadb-admin"))
            .arg("--no-defaults")
            .arg(format!("--socket={}", socket(self.dir.path()).display()))
            .args(["-uroot", "shutdown"]));
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the private MariaDB's shutdown: {status}");
        self.child = spawn(&self.program, &self.args);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the private MariaDB exited ({status}) before accepting connections:\n{}",
                    self.log()
                );
            }
            let ping = Command::new(program("mariadb-admin"))
                .arg("--no-defaults")
                .arg(format!("--socket={}", socket(self.dir.path()).display()))
                .args(["-uroot", "--connect-timeout=2", "ping"])
                .output();
            if ping.map(|o| o.status.success()).unwrap_or(false) {
                return;
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "the private MariaDB did not accept connections within {READY_WITHIN:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `mysql://{user}@127.0.0.1:{port}`, without database (append `/name`) or password.
    pub fn url(&self, user: &str) -> String {
        format!("mysql://{user}@127.0.0.1:{}", self.port)
    }

    /// The server process's id (`mariadbd` is one process: its threads' CPU time is in
    /// `/proc/<pid>/stat`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the binary log files are (`binlog.000001`, …, and `binlog.index`).
    pub fn binlog_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(log_file(self.dir.path())).unwrap_or_default()
    }

    /// Runs SQL (one or more `;`-separated statements) as root through the local socket; what
    /// the statements print, tab-separated, without column names.
    pub fn sql(&self, sql: &str) -> String {
        run(Command::new(program("mariadb"))
            .arg("--no-defaults")
            .arg(format!("--socket={}", socket(self.dir.path()).display()))
            .args(["-uroot", "--batch", "--skip-column-names", "-e", sql]))
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        // A throwaway server: no clean shutdown, the directory goes with it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(program: &Path, args: &[std::ffi::OsString]) -> Child {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    crate::process::die_with_parent(&mut command);
    command
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()))
}

fn socket(dir: &Path) -> PathBuf {
    dir.join("mariadbd.sock")
}

fn log_file(dir: &Path) -> PathBuf {
    dir.join("mariadbd.err")
}

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
