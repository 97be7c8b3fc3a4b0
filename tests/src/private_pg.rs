//! A PostgreSQL server of the test's own: initdb in a temporary directory, TLS with a
//! certificate from a CA made for the test, password (SCRAM) authentication, a free port on
//! 127.0.0.1. Used where the shared server cannot be reconfigured (TLS and auth tests).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// The superuser's password on the private server. It protects nothing outside the test.
pub const PASSWORD: &str = "sluice-test-only";

pub struct PrivatePg {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    pub port: u16,
    /// PEM of the CA that signed the server's certificate.
    pub ca_file: PathBuf,
    /// PEM of an unrelated CA, for "wrong trust anchor" tests.
    pub other_ca_file: PathBuf,
}

fn pg_bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect(
            "PostgreSQL server binaries under /usr/lib/postgresql (scripts/setup installs them)",
        )
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

impl PrivatePg {
    /// Starts a server whose pg_hba.conf is `hba` (lines such as
    /// `hostssl all all 127.0.0.1/32 scram-sha-256`).
    pub fn start(hba: &str) -> PrivatePg {
        PrivatePg::start_with(hba, "")
    }

    /// [`PrivatePg::start`] with `settings` (`postgresql.conf` lines, e.g. `wal_level =
    /// logical`) added: what the shared server cannot be restarted with.
    pub fn start_with(hba: &str, settings: &str) -> PrivatePg {
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let bin = pg_bin_dir();
        let as_postgres = is_root();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if as_postgres {
            // PostgreSQL refuses to run as root.
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()));
        }
        let pg = PrivatePg {
            port: free_port(),
            ca_file: dir.path().join("ca.pem"),
            other_ca_file: dir.path().join("other-ca.pem"),
            data,
            bin,
            as_postgres,
            _dir: dir,
        };
        pg.run_pg(
            "initdb",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "-U",
                "postgres",
                "--pwfile",
                pwfile.to_str().unwrap(),
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
        );
        let ca = ca("sluice test CA");
        let server_key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server_cert = params.signed_by(&server_key, &ca).unwrap();
        std::fs::write(&pg.ca_file, ca.pem()).unwrap();
        std::fs::write(
            &pg.other_ca_file,
            crate::private_pg::ca("unrelated CA").pem(),
        )
        .unwrap();
        write_owned(
            &pg.data.join("server.crt"),
            &server_cert.pem(),
            pg.as_postgres,
        );
        write_owned(
            &pg.data.join("server.key"),
            &server_key.serialize_pem(),
            pg.as_postgres,
        );
        let socket_dir = pg.data.parent().unwrap().to_str().unwrap().to_owned();
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{socket_dir}'\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nfsync = off\n",
            pg.port
        );
        append_owned(
            &pg.data.join("postgresql.conf"),
            &format!("{conf}{settings}\n"),
        );
        write_owned(
            &pg.data.join("pg_hba.conf"),
            &format!("local all all trust\n{hba}\n"),
            pg.as_postgres,
        );
        let log = pg.data.parent().unwrap().join("server.log");
        pg.run_pg(
            "pg_ctl",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        pg
    }

    pub fn url(&self, user: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's log so far (connection and authentication failures are logged).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.parent().unwrap().join("server.log")).unwrap_or_default()
    }

    /// Runs SQL as the superuser through the local socket (trust).
    pub fn psql(&self, sql: &str) {
        let socket_dir = self.data.parent().unwrap().to_str().unwrap().to_owned();
        self.run_pg(
            "psql",
            &[
                "-h",
                &socket_dir,
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                sql,
            ],
        );
    }

    fn run_pg(&self, tool: &str, args: &[&str]) {
        let program = if tool == "psql" {
            PathBuf::from("psql")
        } else {
            self.bin.join(tool)
        };
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command.args(args);
        run(&mut command);
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap().to_owned();
        let pg_ctl = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            Command::new(pg_ctl)
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}

fn run(command: &mut Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_owned(path: &Path, text: &str, as_postgres: bool) {
    std::fs::write(path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    if as_postgres {
        run(Command::new("chown").arg("postgres:postgres").arg(path));
    }
}

fn append_owned(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}
