//! A private OpenSSH server on a free loopback port, with generated host and client keys.
//!
//! sshd runs in the foreground (`-D -e`) from its absolute path with a generated config: host
//! keys (ed25519, ecdsa, rsa) and `authorized_keys` live in the temp dir, the only allowed
//! login is the test OS user [`TEST_USER`] (created with `useradd -m` when missing, password
//! set to [`TEST_PASSWORD`] with chpasswd), and both public-key and password authentication
//! are on. The client side uses the OpenSSH client with strict host key checking against a
//! `known_hosts` file written from the generated host keys, so tests really verify host keys.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::server::{ServerProcess, restart_failed, start_on_free_port};
use super::{LOOPBACK, chmod, require_binary, run_ok, temp_dir, write_file};

const SSHD: &str = "/usr/sbin/sshd";
const SSH: &str = "/usr/bin/ssh";
const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
const SSHPASS: &str = "/usr/bin/sshpass";

/// The OS user that tests log in as.
pub const TEST_USER: &str = "vitalstest";

/// The password of [`TEST_USER`], for password authentication.
pub const TEST_PASSWORD: &str = "vitals-ssh-Secret1";

/// Host key types generated for every server.
pub const HOST_KEY_TYPES: [&str; 3] = ["ed25519", "ecdsa", "rsa"];

/// A running sshd, killed on drop (its temp dir with keys and config is removed).
pub struct Sshd {
    port: u16,
    process: ServerProcess,
    config_path: PathBuf,
    log_path: PathBuf,
    client_key: PathBuf,
    known_hosts: PathBuf,
    authorized_keys: PathBuf,
    dir: tempfile::TempDir,
}

/// Generates an unencrypted key pair of type `key_type` at `path` (and `path.pub`) with
/// ssh-keygen. RSA keys are 2048 bits to keep test start-up fast.
pub fn ssh_keygen(key_type: &str, path: &Path, comment: &str) {
    let keygen = require_binary(SSH_KEYGEN, "openssh-client");
    let mut cmd = Command::new(keygen);
    cmd.args(["-q", "-t", key_type, "-N", "", "-C", comment]);
    if key_type == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    cmd.arg("-f").arg(path);
    run_ok(&mut cmd, "ssh-keygen");
}

/// Reads the public half (`<path>.pub`) of a key pair made by [`ssh_keygen`], trimmed.
pub fn public_key(private_key_path: &Path) -> String {
    let pub_path = PathBuf::from(format!("{}.pub", private_key_path.display()));
    std::fs::read_to_string(&pub_path)
        .unwrap_or_else(|e| panic!("reading {} failed: {e}", pub_path.display()))
        .trim()
        .to_string()
}

/// A known_hosts line `[127.0.0.1]:PORT keytype base64` for a public key line
/// (`keytype base64 [comment]`; the comment is dropped).
pub fn known_hosts_line(port: u16, public_key: &str) -> String {
    let mut parts = public_key.split_whitespace();
    let key_type = parts.next().unwrap_or_default();
    let base64 = parts.next().unwrap_or_default();
    format!("[{LOOPBACK}]:{port} {key_type} {base64}")
}

impl Sshd {
    /// Generates keys and config and starts sshd on a free port; returns once the server has
    /// sent its SSH banner. Panics with sshd's stderr tail if it does not start within
    /// [`STARTUP_TIMEOUT`], and with an install hint if openssh-server is missing.
    pub fn start() -> Sshd {
        let sshd = require_binary(SSHD, "openssh-server");
        require_binary(SSH, "openssh-client");
        require_binary(SSH_KEYGEN, "openssh-client");
        ensure_test_user();
        std::fs::create_dir_all("/run/sshd")
            .unwrap_or_else(|e| panic!("mkdir -p /run/sshd failed: {e}"));

        let dir = temp_dir("sshd");
        // The user's side of sshd reads authorized_keys as TEST_USER: the dir must be
        // traversable by it. Private keys stay 0600.
        chmod(dir.path(), 0o755);
        for key_type in HOST_KEY_TYPES {
            let path = dir.path().join(format!("ssh_host_{key_type}_key"));
            ssh_keygen(key_type, &path, &format!("vitals-test-host-{key_type}"));
        }
        let client_key = dir.path().join("id_ed25519");
        ssh_keygen("ed25519", &client_key, "vitals-test-client");
        let authorized_keys = dir.path().join("authorized_keys");
        write_file(&authorized_keys, format!("{}\n", public_key(&client_key)));
        chmod(&authorized_keys, 0o644);

        let mut server = Sshd {
            port: 0,
            process: ServerProcess::default(),
            config_path: dir.path().join("sshd_config"),
            log_path: dir.path().join("sshd.log"),
            client_key,
            known_hosts: dir.path().join("known_hosts"),
            authorized_keys,
            dir,
        };
        let log_path = server.log_path.clone();
        start_on_free_port("sshd", &[("sshd stderr", log_path.as_path())], |port| {
            server.port = port;
            server.write_config();
            server.spawn_and_wait(&sshd)
        });
        server.write_known_hosts();
        server
    }

    /// Stops sshd (SIGKILL); [`Sshd::restart`] starts it again on the same port.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts sshd again on the same port with the same config and keys (as they are now on
    /// disk) and waits for its banner; panics with its log if it does not come up.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.spawn_and_wait(&require_binary(SSHD, "openssh-server")) {
            restart_failed(
                "sshd",
                self.port,
                &why,
                &[("sshd stderr", self.log_path.as_path())],
            );
        }
    }

    /// Replaces every host key with a new one (as a reinstalled server would have). The
    /// running sshd keeps its keys until [`Sshd::restart`]; `known_hosts_path` is not
    /// updated, so clients that check it see a changed host key.
    pub fn regenerate_host_keys(&self) {
        for key_type in HOST_KEY_TYPES {
            let path = self.dir.path().join(format!("ssh_host_{key_type}_key"));
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(format!("{}.pub", path.display()));
            ssh_keygen(key_type, &path, &format!("vitals-test-host-{key_type}-new"));
        }
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let host_keys: String = HOST_KEY_TYPES
            .iter()
            .map(|t| {
                format!(
                    "HostKey {}\n",
                    d.join(format!("ssh_host_{t}_key")).display()
                )
            })
            .collect();
        let config = format!(
            "# vitals test harness\n\
             Port {port}\n\
             ListenAddress {LOOPBACK}\n\
             {host_keys}\
             PidFile {pid}\n\
             AuthorizedKeysFile {ak}\n\
             StrictModes no\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\n\
             PermitEmptyPasswords no\n\
             UsePAM no\n\
             PermitRootLogin no\n\
             AllowUsers {TEST_USER}\n\
             X11Forwarding no\n\
             AllowTcpForwarding no\n\
             PrintMotd no\n\
             UseDNS no\n\
             MaxStartups 100:30:200\n\
             MaxSessions 50\n\
             LogLevel VERBOSE\n",
            port = self.port,
            pid = d.join("sshd.pid").display(),
            ak = self.authorized_keys.display(),
        );
        write_file(&self.config_path, config);
    }

    /// Runs sshd in the foreground with the generated config, its stderr (`-e`) in the log,
    /// and waits until it is ready: a TCP connection receives the `SSH-2.0-` banner.
    fn spawn_and_wait(&mut self, sshd: &Path) -> Result<(), String> {
        self.process.spawn(
            Command::new(sshd)
                .args(["-D", "-e", "-f"])
                .arg(&self.config_path)
                .current_dir(self.dir.path()),
            &self.log_path,
            &self.log_path,
        );
        let port = self.port;
        self.process
            .wait_ready("sshd", "no SSH banner", || banner(port))
    }

    fn write_known_hosts(&self) {
        let lines: String = self
            .host_public_keys()
            .iter()
            .map(|k| format!("{}\n", known_hosts_line(self.port, k)))
            .collect();
        write_file(&self.known_hosts, lines);
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        LOOPBACK
    }

    /// The port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The OS user to log in as.
    pub fn user(&self) -> &'static str {
        TEST_USER
    }

    /// The OS user's password.
    pub fn password(&self) -> &'static str {
        TEST_PASSWORD
    }

    /// The temp dir holding keys, config and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The generated client private key (ed25519, unencrypted, mode 0600), authorized for
    /// [`TEST_USER`] without options.
    pub fn client_key_path(&self) -> &Path {
        &self.client_key
    }

    /// The public keys of the server's host keys, one `keytype base64 comment` per entry, in
    /// [`HOST_KEY_TYPES`] order.
    pub fn host_public_keys(&self) -> Vec<String> {
        HOST_KEY_TYPES
            .iter()
            .map(|t| public_key(&self.dir.path().join(format!("ssh_host_{t}_key"))))
            .collect()
    }

    /// A known_hosts file listing all host keys as `[127.0.0.1]:PORT keytype base64`.
    pub fn known_hosts_path(&self) -> &Path {
        &self.known_hosts
    }

    /// The authorized_keys file sshd consults for [`TEST_USER`].
    pub fn authorized_keys_path(&self) -> &Path {
        &self.authorized_keys
    }

    /// sshd's stderr log (`-e`), with `LogLevel VERBOSE`.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Appends one raw line to authorized_keys, e.g.
    /// `restrict,command="df -P" ssh-ed25519 AAAA... comment`. sshd reads the file on every
    /// login, so the line applies to the next connection.
    pub fn add_authorized_key(&self, line: &str) {
        let mut file = OpenOptions::new()
            .append(true)
            .open(&self.authorized_keys)
            .unwrap_or_else(|e| panic!("opening {} failed: {e}", self.authorized_keys.display()));
        writeln!(file, "{}", line.trim())
            .unwrap_or_else(|e| panic!("appending to authorized_keys failed: {e}"));
    }

    /// Generates a new ed25519 client key pair `<dir>/<name>` and returns the private key
    /// path. It is not authorized; add it with [`Sshd::authorize_key`].
    pub fn generate_client_key(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        ssh_keygen("ed25519", &path, &format!("vitals-test-{name}"));
        path
    }

    /// Authorizes the public half of `private_key_path` with authorized_keys `options`
    /// (e.g. `restrict,command="..."`; empty for none).
    pub fn authorize_key(&self, private_key_path: &Path, options: &str) {
        let key = public_key(private_key_path);
        if options.is_empty() {
            self.add_authorized_key(&key);
        } else {
            self.add_authorized_key(&format!("{options} {key}"));
        }
    }

    /// An OpenSSH client command for `remote_cmd` as [`TEST_USER`], authenticating with
    /// `identity` and checking the host key strictly against `known_hosts`. The user's own
    /// ssh config, agent and keys are ignored; BatchMode is on, so nothing ever prompts.
    pub fn ssh_command_with(
        &self,
        known_hosts: &Path,
        identity: &Path,
        remote_cmd: &str,
    ) -> Command {
        let mut cmd = Command::new(SSH);
        cmd.args(["-F", "/dev/null", "-T", "-p"])
            .arg(self.port.to_string())
            .arg("-i")
            .arg(identity)
            .args(ssh_common_options(known_hosts))
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "PreferredAuthentications=publickey"])
            .arg(format!("{TEST_USER}@{LOOPBACK}"))
            .arg(remote_cmd)
            .stdin(Stdio::null());
        cmd
    }

    /// [`Sshd::ssh_command_with`] using the generated client key and known_hosts.
    pub fn ssh_command(&self, remote_cmd: &str) -> Command {
        self.ssh_command_with(&self.known_hosts, &self.client_key, remote_cmd)
    }

    /// Runs `remote_cmd` over SSH with the generated client key and returns the output
    /// (exit status, stdout, stderr) unchecked.
    pub fn ssh(&self, remote_cmd: &str) -> Output {
        self.ssh_command(remote_cmd)
            .output()
            .unwrap_or_else(|e| panic!("running {SSH} failed: {e}"))
    }

    /// Runs `remote_cmd` over SSH authenticating with `password` (via sshpass; public keys
    /// disabled), host key checked strictly. Panics with an install hint if sshpass is missing.
    pub fn ssh_password(&self, password: &str, remote_cmd: &str) -> Output {
        let sshpass = require_binary(SSHPASS, "sshpass");
        Command::new(sshpass)
            .arg("-e")
            .env("SSHPASS", password)
            .arg(SSH)
            .args(["-F", "/dev/null", "-T", "-p"])
            .arg(self.port.to_string())
            .args(ssh_common_options(&self.known_hosts))
            .args(["-o", "BatchMode=no", "-o", "PubkeyAuthentication=no"])
            .args(["-o", "PreferredAuthentications=password"])
            .args(["-o", "NumberOfPasswordPrompts=1"])
            .arg(format!("{TEST_USER}@{LOOPBACK}"))
            .arg(remote_cmd)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running sshpass + {SSH} failed: {e}"))
    }
}

fn ssh_common_options(known_hosts: &Path) -> Vec<String> {
    [
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "GlobalKnownHostsFile=/dev/null".to_string(),
        "StrictHostKeyChecking=yes".to_string(),
        "CheckHostIP=no".to_string(),
        "IdentityAgent=none".to_string(),
        "ConnectTimeout=10".to_string(),
        "ServerAliveInterval=5".to_string(),
        "LogLevel=ERROR".to_string(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect()
}

/// Whether a connection to 127.0.0.1:`port` receives an SSH protocol banner.
fn banner(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &(std::net::Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_secs(1),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    stream.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-2.0-")
}

/// Creates [`TEST_USER`] if missing and (re)sets its password, under an exclusive file lock
/// so that parallel test processes do not race on /etc/passwd and /etc/shadow.
fn ensure_test_user() {
    let lock_path = std::env::temp_dir().join("vitals-test-user.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("opening {} failed: {e}", lock_path.display()));
    // SAFETY: flock(2) on a file descriptor we own for the rest of this function; the lock is
    // released when `lock` is closed.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {} failed", lock_path.display());

    let exists = Command::new("id")
        .arg("-u")
        .arg(TEST_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !exists {
        run_ok(
            Command::new("useradd").args(["-m", "-s", "/bin/sh", TEST_USER]),
            "useradd (the tests run as root)",
        );
    }
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning chpasswd failed: {e}"));
    chpasswd
        .stdin
        .take()
        .expect("chpasswd stdin is piped")
        .write_all(format!("{TEST_USER}:{TEST_PASSWORD}\n").as_bytes())
        .unwrap_or_else(|e| panic!("writing to chpasswd failed: {e}"));
    let output = chpasswd
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for chpasswd failed: {e}"));
    assert!(
        output.status.success(),
        "chpasswd for {TEST_USER} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    drop(lock);
}
