//! A throwaway PostgreSQL 15 cluster on a free loopback port.
//!
//! initdb and postgres refuse to run as root, so both run as the `postgres` OS user (through
//! `runuser -u postgres --`) in a temp dir chowned to that user. Local (unix socket)
//! connections are trusted; TCP connections need the superuser's password (scram-sha-256), so
//! tests that connect the way vitals does really exercise password authentication.
//!
//! For TLS tests, [`Pki`] makes certificates with rcgen (a CA, an unrelated CA, a server
//! certificate for 127.0.0.1/localhost and one for another host name), and
//! [`Postgres::enable_tls`] / [`Postgres::hostssl_only`] switch a running cluster to them
//! with a reload.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::server::start_on_free_port;
use super::{LOOPBACK, STARTUP_TIMEOUT, log_block, require_binary, run_ok, temp_dir, write_file};

const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
const PACKAGE: &str = "postgresql-15";
const OS_USER: &str = "postgres";

/// Name of the database superuser created by initdb.
pub const SUPERUSER: &str = "postgres";

/// Password of [`SUPERUSER`]; TCP connections must present it.
pub const SUPERUSER_PASSWORD: &str = "vitals-pg-Secret1";

/// A server certificate and its private key, both in PEM.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// The certificate (signed by the CA it was made with).
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// Certificates for TLS tests, made with rcgen, with the CA files written to a temp dir.
pub struct Pki {
    /// PEM file of the CA that signed [`Pki::localhost`] and [`Pki::other_host`].
    pub ca_file: PathBuf,
    /// PEM file of another CA, which signed nothing the server uses.
    pub wrong_ca_file: PathBuf,
    /// Server certificate for `127.0.0.1` and `localhost`.
    pub localhost: ServerCert,
    /// Server certificate for [`OTHER_HOST`] only.
    pub other_host: ServerCert,
    _dir: tempfile::TempDir,
}

/// The only name in [`Pki::other_host`].
pub const OTHER_HOST: &str = "db.example.invalid";

impl Pki {
    /// Makes the two CAs and the two server certificates.
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let key = KeyPair::generate().expect("CA key");
            let cert = params.self_signed(&key).expect("CA certificate");
            (cert, key)
        };
        let (ca_cert, ca_key) = ca("vitals test CA");
        let (wrong_cert, _) = ca("vitals unrelated CA");
        let leaf = |names: &[&str]| {
            let mut params =
                CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                    .expect("server params");
            params.distinguished_name.push(
                DnType::CommonName,
                names.first().copied().unwrap_or("server"),
            );
            let key = KeyPair::generate().expect("server key");
            let cert = params
                .signed_by(&key, &ca_cert, &ca_key)
                .expect("signing the server certificate");
            ServerCert {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        };
        let dir = temp_dir("pg-pki");
        let ca_file = dir.path().join("ca.pem");
        let wrong_ca_file = dir.path().join("wrong-ca.pem");
        write_file(&ca_file, ca_cert.pem());
        write_file(&wrong_ca_file, wrong_cert.pem());
        Pki {
            ca_file,
            wrong_ca_file,
            localhost: leaf(&["127.0.0.1", "localhost"]),
            other_host: leaf(&[OTHER_HOST]),
            _dir: dir,
        }
    }
}

/// A running PostgreSQL 15 cluster, stopped (`pg_ctl stop -m immediate`) and deleted on drop.
pub struct Postgres {
    port: u16,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    started: bool,
    // Last field: removed after `Drop::drop` stopped the server.
    dir: tempfile::TempDir,
}

fn bin(name: &str) -> PathBuf {
    require_binary(&format!("{BIN_DIR}/{name}"), PACKAGE)
}

/// `runuser -u postgres -- <program>`, because initdb and postgres refuse to run as root.
fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", OS_USER, "--"]).arg(program);
    cmd
}

impl Postgres {
    /// Runs initdb, starts the cluster on a free port and waits until it accepts connections.
    ///
    /// Panics with the server log's tail if the cluster does not come up within
    /// [`STARTUP_TIMEOUT`], and with an install hint if PostgreSQL 15 is missing.
    pub fn start() -> Postgres {
        let initdb = bin("initdb");
        bin("pg_ctl");
        bin("postgres");
        bin("psql");

        let mut pg = Postgres::unstarted("pg");
        let pwfile = pg.dir.path().join("pwfile");
        write_file(&pwfile, format!("{SUPERUSER_PASSWORD}\n"));
        chown_to_postgres(&[&pwfile]);

        run_ok(
            as_postgres(&initdb)
                .current_dir(pg.dir.path())
                .arg("--pgdata")
                .arg(&pg.data_dir)
                .args([
                    "--username",
                    SUPERUSER,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ])
                .arg(format!("--pwfile={}", pwfile.display())),
            "initdb (as the postgres OS user)",
        );
        pg.append_conf(&format!(
            "# vitals test harness\n\
             listen_addresses = '{LOOPBACK}'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = 16MB\n\
             max_connections = 50\n\
             password_encryption = 'scram-sha-256'\n\
             log_connections = on\n\
             track_io_timing = on\n",
            pg.socket_dir.display()
        ));
        pg.start_on_free_port("PostgreSQL 15");
        pg
    }

    /// A cluster that is not set up yet: a temp dir `vitals-<prefix>-*` owned by the postgres
    /// OS user, with an empty socket directory and server log (also theirs); no data
    /// directory, no port.
    fn unstarted(prefix: &str) -> Postgres {
        let dir = temp_dir(prefix);
        let socket_dir = dir.path().join("sock");
        let log_path = dir.path().join("postgres.log");
        std::fs::create_dir(&socket_dir)
            .unwrap_or_else(|e| panic!("creating {} failed: {e}", socket_dir.display()));
        write_file(&log_path, "");
        chown_to_postgres(&[dir.path(), &socket_dir, &log_path]);
        Postgres {
            port: 0,
            data_dir: dir.path().join("data"),
            socket_dir,
            log_path,
            started: false,
            dir,
        }
    }

    /// Starts the set-up cluster on a free port with [`start_on_free_port`]; `what` names it
    /// in the panic when it does not come up.
    fn start_on_free_port(&mut self, what: &str) {
        let log_path = self.log_path.clone();
        start_on_free_port(what, &[("postgres.log", log_path.as_path())], |port| {
            self.port = port;
            self.try_start()
        });
    }

    /// Appends `lines` to postgresql.conf, after a blank line.
    fn append_conf(&self, lines: &str) {
        let conf_path = self.data_dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path)
            .unwrap_or_else(|e| panic!("reading {} failed: {e}", conf_path.display()));
        text.push('\n');
        text.push_str(lines);
        if !lines.ends_with('\n') {
            text.push('\n');
        }
        write_file(&conf_path, text);
    }

    /// One `pg_ctl start -w` on the current port, then a real query over the unix socket.
    fn try_start(&mut self) -> Result<(), String> {
        let output = as_postgres(&bin("pg_ctl"))
            .current_dir(self.dir.path())
            .arg("--pgdata")
            .arg(&self.data_dir)
            .arg("--log")
            .arg(&self.log_path)
            .args(["--wait", "--timeout"])
            .arg(STARTUP_TIMEOUT.as_secs().to_string())
            .arg("-o")
            .arg(format!("-p {}", self.port))
            .arg("start")
            .output()
            .map_err(|e| format!("could not run pg_ctl: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "pg_ctl start failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        self.started = true;
        let out = super::poll_until(Duration::from_secs(10), || {
            let o = self.psql_socket_output("select 1");
            (o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "1").then_some(())
        });
        out.ok_or_else(|| "pg_ctl reported started, but `select 1` did not succeed".to_string())
    }

    /// Appends `lines` to postgresql.conf and restarts the server on the same port
    /// (`pg_ctl restart -m fast`), for settings that need a restart such as
    /// `shared_preload_libraries`. Panics with the log's tail if it does not come back.
    pub fn restart_with(&self, lines: &str) {
        self.append_conf(lines);
        run_ok(
            as_postgres(&bin("pg_ctl"))
                .current_dir(self.dir.path())
                .arg("--pgdata")
                .arg(&self.data_dir)
                .arg("--log")
                .arg(&self.log_path)
                .args(["--mode", "fast", "--wait", "--timeout"])
                .arg(STARTUP_TIMEOUT.as_secs().to_string())
                .arg("-o")
                .arg(format!("-p {}", self.port))
                .arg("restart"),
            "pg_ctl restart (as the postgres OS user)",
        );
        let ok = super::poll_until(Duration::from_secs(10), || {
            let o = self.psql_socket_output("select 1");
            o.status.success().then_some(())
        });
        if ok.is_none() {
            panic!(
                "PostgreSQL did not answer after a restart\n{}",
                log_block("postgres.log", &self.log_path)
            );
        }
    }

    /// Serves TLS with `cert` (`ssl = on`, files in the data directory owned by the
    /// postgres user), through a reload; calling it again switches the certificate. Panics
    /// with the log's tail if the server does not take it.
    pub fn enable_tls(&self, cert: &ServerCert) {
        let crt = self.data_dir.join("server.crt");
        let key = self.data_dir.join("server.key");
        write_file(&crt, &cert.cert_pem);
        write_file(&key, &cert.key_pem);
        chown_to_postgres(&[&crt, &key]);
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod 600 {} failed: {e}", key.display()));
        if self.psql("show ssl") != "on" {
            self.append_conf(
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            );
        }
        self.reload();
        if self.psql("show ssl") != "on" {
            panic!(
                "PostgreSQL did not turn TLS on\n{}",
                log_block("postgres.log", &self.log_path)
            );
        }
    }

    /// Replaces pg_hba.conf so that TCP logins are accepted only over TLS (`hostssl`, with
    /// the password); the unix socket stays trusted. Applied with a reload.
    pub fn hostssl_only(&self) {
        self.set_hba(
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n",
        );
    }

    /// Replaces pg_hba.conf with `text` and reloads.
    pub fn set_hba(&self, text: &str) {
        let hba = self.data_dir.join("pg_hba.conf");
        write_file(&hba, text);
        chown_to_postgres(&[&hba]);
        self.reload();
    }

    /// `pg_reload_conf()`, then waits until new sessions see the reloaded configuration
    /// (`pg_conf_load_time()` moves once the postmaster has reloaded, TLS context included).
    pub fn reload(&self) {
        let before = self.psql("select pg_conf_load_time()");
        self.psql("select pg_reload_conf()");
        let reloaded = super::poll_until(Duration::from_secs(10), || {
            (self.psql("select pg_conf_load_time()") != before).then_some(())
        });
        if reloaded.is_none() {
            panic!(
                "PostgreSQL did not reload its configuration\n{}",
                log_block("postgres.log", &self.log_path)
            );
        }
    }

    /// Starts a streaming standby of this cluster on a new port: `pg_basebackup -R` over
    /// the unix socket, with a physical replication slot `<name>_slot` created on this
    /// server, and `cluster_name = '<name>'` so that the standby shows up in this server's
    /// `pg_stat_replication` with `application_name = '<name>'`. Waits until it streams.
    pub fn start_standby(&self, name: &str) -> Postgres {
        let basebackup = bin("pg_basebackup");
        let mut standby = Postgres::unstarted("pg-standby");
        run_ok(
            as_postgres(&basebackup)
                .current_dir(standby.dir.path())
                .env("PGPASSFILE", "/dev/null")
                .arg("--pgdata")
                .arg(&standby.data_dir)
                .arg("--host")
                .arg(&self.socket_dir)
                .arg("--port")
                .arg(self.port.to_string())
                .args(["--username", SUPERUSER, "--write-recovery-conf"])
                .args(["--checkpoint=fast", "--wal-method=stream", "--no-sync"])
                .arg("--create-slot")
                .arg(format!("--slot={name}_slot")),
            "pg_basebackup (as the postgres OS user)",
        );
        standby.append_conf(&format!(
            "# standby\nunix_socket_directories = '{}'\ncluster_name = '{name}'\nhot_standby = on\nwal_receiver_status_interval = 1s\n",
            standby.socket_dir.display()
        ));
        standby.start_on_free_port("the standby");
        let streaming = super::poll_until(STARTUP_TIMEOUT, || {
            (self.psql(&format!(
                "select state from pg_stat_replication where application_name = '{name}'"
            )) == "streaming")
                .then_some(())
        });
        if streaming.is_none() {
            panic!(
                "the standby {name} does not stream from the primary\n{}\n{}",
                log_block("standby postgres.log", &standby.log_path),
                log_block("primary postgres.log", &self.log_path)
            );
        }
        standby
    }

    /// A `pgbench` command (PostgreSQL 15's, package postgresql-15) aimed at this cluster's
    /// unix socket as the superuser; the caller adds the arguments and the database name.
    pub fn pgbench(&self) -> Command {
        let mut cmd = Command::new(bin("pgbench"));
        cmd.env("PGPASSFILE", "/dev/null")
            .env_remove("PGPASSWORD")
            .arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER]);
        cmd
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        LOOPBACK
    }

    /// The TCP port the cluster listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the cluster's unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The data directory (PGDATA).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log file (pg_ctl `--log`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The superuser's name.
    pub fn user(&self) -> &'static str {
        SUPERUSER
    }

    /// The superuser's password.
    pub fn password(&self) -> &'static str {
        SUPERUSER_PASSWORD
    }

    /// A libpq key=value connection string for TCP with the superuser's password.
    pub fn dsn(&self) -> String {
        format!(
            "host={LOOPBACK} port={} user={SUPERUSER} password={SUPERUSER_PASSWORD} dbname=postgres sslmode=disable connect_timeout=10",
            self.port
        )
    }

    /// A `postgres://` URL equivalent to [`Postgres::dsn`].
    pub fn url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}:{SUPERUSER_PASSWORD}@{LOOPBACK}:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// A psql command with a clean libpq environment, unaligned tuples-only output and
    /// `ON_ERROR_STOP`; the caller adds the connection target.
    fn psql_base(&self) -> Command {
        let mut cmd = Command::new(bin("psql"));
        for var in [
            "PGHOST",
            "PGHOSTADDR",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGPASSWORD",
            "PGSERVICE",
            "PGSSLMODE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("PGPASSFILE", "/dev/null")
            .env("PGCONNECT_TIMEOUT", "10")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
        cmd
    }

    fn psql_socket_output(&self, sql: &str) -> Output {
        self.psql_base()
            .arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", "postgres", "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("could not run psql: {e}"))
    }

    /// Runs `sql` as the superuser over the unix socket (trusted, no password) and returns
    /// psql's trimmed stdout (unaligned, tuples only: columns joined by `|`, rows by newlines).
    /// Panics with psql's stderr if it fails.
    pub fn psql(&self, sql: &str) -> String {
        let output = self.psql_socket_output(sql);
        if !output.status.success() {
            panic!(
                "psql failed ({}) for {sql:?}:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// Opens a psql session to `db` over the unix socket that stays connected until dropped,
    /// for tests that need a transaction or a lock held while something else looks.
    pub fn session(&self, db: &str) -> Session {
        let child = self
            .psql_base()
            .arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", db])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not run psql: {e}"));
        Session { child }
    }

    /// Runs `sql` over TCP to 127.0.0.1 as `user` with `password` (via PGPASSWORD) and returns
    /// psql's raw output, so tests can check both successful and refused logins.
    pub fn psql_tcp(&self, user: &str, password: &str, sql: &str) -> Output {
        self.psql_base()
            .env("PGPASSWORD", password)
            .env("PGSSLMODE", "disable")
            .args(["-h", LOOPBACK, "-p"])
            .arg(self.port.to_string())
            .args(["-U", user, "-d", "postgres", "-w", "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("could not run psql: {e}"))
    }
}

/// A psql session kept open (see [`Postgres::session`]); killed when dropped.
pub struct Session {
    child: std::process::Child,
}

impl Session {
    /// Sends `sql` (one or more statements, each ended by `;`) without waiting for it to
    /// run; callers poll the server for its effect.
    pub fn send(&mut self, sql: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("psql stdin is piped");
        stdin
            .write_all(format!("{sql}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to psql failed: {e}"));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if !self.started {
            return;
        }
        let stopped = as_postgres(Path::new(&format!("{BIN_DIR}/pg_ctl")))
            .current_dir(self.dir.path())
            .arg("--pgdata")
            .arg(&self.data_dir)
            .args(["--mode", "immediate", "--wait", "--timeout", "30", "stop"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !stopped {
            // Fall back to killing the postmaster named in postmaster.pid.
            let pid = std::fs::read_to_string(self.data_dir.join("postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
            if let Some(pid) = pid.filter(|p| *p > 1) {
                // SAFETY: kill(2) with a pid read from our own cluster's postmaster.pid.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// Hands files and directories to the postgres OS user, which the server runs as.
fn chown_to_postgres(paths: &[&Path]) {
    let (uid, gid) = postgres_ids();
    for path in paths {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown postgres {} failed: {e}", path.display()));
    }
}

/// The uid and gid of the `postgres` OS user (created by the postgresql-common package).
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let output = run_ok(
            Command::new("id").arg(flag).arg(OS_USER),
            "looking up the postgres OS user",
        );
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("`id {flag} postgres` printed no number: {e}"))
    };
    (id("-u"), id("-g"))
}
