//! Test harness: real servers from Debian packages, started on free loopback ports.
//!
//! Every helper here starts one real server (PostgreSQL 15, OpenSSH sshd, Prometheus,
//! Alertmanager, VictoriaMetrics, or the `vitals` binary under test) in its own
//! [`tempfile::TempDir`], on a port picked by [`free_port`], polls until the server is ready
//! (bounded by [`STARTUP_TIMEOUT`]), and
//! stops it and removes the directory when the helper is dropped. Tests run as root in parallel
//! processes under cargo nextest, so nothing here shares ports, directories or global state,
//! except the `vitalstest` OS user of [`sshd`], whose creation is serialised with a file lock.
//!
//! # Style: the harness API is blocking
//!
//! All helpers are synchronous and use `reqwest::blocking` and `std::process`. Write tests as
//! plain `#[test]` functions. Never call a helper from inside a tokio runtime thread (for
//! example from a `#[tokio::test]` body or an `async fn`): `reqwest::blocking` panics there.
//! A test that needs async code builds its own runtime for that part, or calls helpers
//! through `tokio::task::spawn_blocking`. The only async code in the harness is the
//! Alertmanager webhook receiver, which runs on its own thread with its own runtime.
//!
//! # Missing packages and failed starts
//!
//! A missing binary panics with the Debian package that provides it and the hint
//! `run scripts/setup-test-deps.sh` — a test never skips silently. A server that fails to
//! start panics with the tail of its log. A start that fails because another process took the
//! port between [`free_port`] and the server's bind is retried on a new port. That start loop
//! is written once, in [`server`]: every helper uses [`server::start_on_free_port`], and all
//! but PostgreSQL (run by pg_ctl) hold their process in a [`server::ServerProcess`].
#![allow(dead_code)]

pub mod alertmanager;
pub mod postgres;
pub mod prometheus;
pub mod server;
pub mod sshd;
pub mod victoria;
pub mod vitals;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long any helper waits for its server to become ready before panicking.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Interval between two readiness or condition checks in the polling helpers.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How many times a start is attempted when the chosen port turned out to be taken.
pub const START_ATTEMPTS: usize = 4;

/// Lines of a server log included in a panic message.
pub const LOG_TAIL_LINES: usize = 40;

/// The loopback address every test server listens on.
pub const LOOPBACK: &str = "127.0.0.1";

/// The hint every "binary not found" panic ends with.
pub const SETUP_HINT: &str = "run scripts/setup-test-deps.sh";

/// Returns a TCP port that was free on 127.0.0.1 a moment ago.
///
/// Binds `127.0.0.1:0`, reads the port the kernel chose and drops the listener, so the server
/// under test can bind it. Another process may take the port in between; the helpers detect
/// that ("address already in use" in the server log) and retry with a new port.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("binding 127.0.0.1:0 to find a free port failed: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("reading the address of a 127.0.0.1:0 listener failed: {e}"))
        .port()
}

thread_local! {
    static FIRST_PORT: std::cell::Cell<Option<u16>> = const { std::cell::Cell::new(None) };
}

/// The port for the next start attempt of a helper: the one forced by [`with_first_port`]
/// (once), else [`free_port`]. Helpers call this instead of [`free_port`].
pub fn start_port() -> u16 {
    FIRST_PORT.with(|p| p.take()).unwrap_or_else(free_port)
}

/// Runs `start` with the first start attempt on this thread forced onto `port`.
///
/// Exists to prove the "port taken, retry on a new one" path: pass a port that a listener
/// holds, and the helper must still come up, on another port.
pub fn with_first_port<T>(port: u16, start: impl FnOnce() -> T) -> T {
    FIRST_PORT.with(|p| p.set(Some(port)));
    let result = start();
    FIRST_PORT.with(|p| p.set(None));
    result
}

/// Calls `check` every [`POLL_INTERVAL`] until it returns `Some`, or `timeout` has passed.
///
/// Returns the first `Some` value, or `None` on timeout so that the caller can panic with a
/// message that carries the context it knows (log tails, last observed value). `check` is
/// always called at least once, and once more right at the deadline.
pub fn poll_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

/// Returns the last `lines` lines of the file at `path`, for panic messages.
///
/// Reads at most the last 64 KiB. A missing or unreadable file yields a short note instead of
/// an error, because this is only ever used while reporting another failure.
pub fn tail(path: &Path, lines: usize) -> String {
    const MAX_BYTES: u64 = 64 * 1024;
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) => return format!("<cannot read {}: {e}>", path.display()),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(MAX_BYTES);
    let mut bytes = Vec::new();
    if let Err(e) = file
        .seek(SeekFrom::Start(start))
        .and_then(|_| file.read_to_end(&mut bytes))
    {
        return format!("<cannot read {}: {e}>", path.display());
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    if all.is_empty() {
        format!("<{} is empty>", path.display())
    } else {
        all[from..].join("\n")
    }
}

/// Formats the tail of a log file as a labelled block for a panic message.
pub fn log_block(label: &str, path: &Path) -> String {
    format!(
        "--- last {LOG_TAIL_LINES} lines of {label} ({}) ---\n{}\n--- end of {label} ---",
        path.display(),
        tail(path, LOG_TAIL_LINES)
    )
}

/// Whether a server log says that its listen port was already taken.
pub fn says_address_in_use(log: &str) -> bool {
    let log = log.to_ascii_lowercase();
    log.contains("address already in use") || log.contains("address in use")
}

/// Returns `path` if it is an existing file, else panics naming the Debian package to install.
pub fn require_binary(path: &str, package: &str) -> PathBuf {
    let path = PathBuf::from(path);
    if !path.is_file() {
        panic!(
            "{} not found: install the Debian package `{package}` ({SETUP_HINT})",
            path.display()
        );
    }
    path
}

/// Finds the first of `candidates` that exists: absolute paths as they are, bare names on
/// `PATH`. Panics naming the Debian package when none exists.
pub fn require_any_binary(candidates: &[&str], package: &str) -> PathBuf {
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for candidate in candidates {
        if candidate.contains('/') {
            let path = PathBuf::from(candidate);
            if path.is_file() {
                return path;
            }
        } else if let Some(found) = path_dirs
            .iter()
            .map(|dir| dir.join(candidate))
            .find(|p| p.is_file())
        {
            return found;
        }
    }
    panic!("none of {candidates:?} found: install the Debian package `{package}` ({SETUP_HINT})");
}

/// Creates a temp dir named `vitals-<what>-XXXXXX` under the system temp dir.
pub fn temp_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("vitals-{what}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("creating a temp dir for {what} failed: {e}"))
}

/// Writes `contents` to `path`, panicking with the path on failure.
pub fn write_file(path: &Path, contents: impl AsRef<[u8]>) {
    std::fs::write(path, contents)
        .unwrap_or_else(|e| panic!("writing {} failed: {e}", path.display()));
}

/// Sets the Unix permission bits of `path`, panicking with the path on failure.
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {} failed: {e}", path.display()));
}

/// A blocking HTTP client with short timeouts, for talking to the servers under test.
///
/// Proxies from the environment are disabled: every server here is on loopback.
pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|e| panic!("building the HTTP client failed: {e}"))
}

/// Sends `request` and returns its status and body (empty when the body cannot be read);
/// panics naming the request, e.g. `POST http://127.0.0.1:9090/-/reload`, when it cannot be
/// sent.
pub fn send(
    request: reqwest::blocking::RequestBuilder,
    what: &str,
) -> (reqwest::StatusCode, String) {
    let response = request
        .send()
        .unwrap_or_else(|e| panic!("{what} failed: {e}"));
    let status = response.status();
    (status, response.text().unwrap_or_default())
}

/// Returns true if a GET of `url` answers with HTTP 200 within one second.
///
/// The short per-request timeout keeps readiness polls responsive: a port that accepts but
/// never answers (taken by another process) must not stall the poll loop, which also watches
/// for the server process exiting.
pub fn http_ok(client: &reqwest::blocking::Client, url: &str) -> bool {
    client
        .get(url)
        .timeout(Duration::from_secs(1))
        .send()
        .map(|r| r.status() == reqwest::StatusCode::OK)
        .unwrap_or(false)
}

/// Returns whether the child has exited, without blocking (and reaps it if so).
pub fn exited(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    child.try_wait().ok().flatten()
}

/// Kills a child process with SIGKILL and reaps it; errors (already gone) are ignored.
pub fn kill_and_reap(child: &mut std::process::Child) {
    if exited(child).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Runs a command to completion and panics with its stderr/stdout when it fails.
pub fn run_ok(cmd: &mut std::process::Command, what: &str) -> std::process::Output {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not run {cmd:?}: {e}"));
    if !output.status.success() {
        panic!(
            "{what} failed ({}): {cmd:?}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// One sample of a text exposition: metric name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Label pairs.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Parses the samples of a Prometheus text exposition (enough for comparing values in
/// tests: no escapes inside label values beyond `\"` and `\\`, no timestamps).
pub fn parse_samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.rfind(' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.find('{') {
            Some(i) => (&head[..i], &head[i + 1..head.len().saturating_sub(1)]),
            None => (head, ""),
        };
        let mut map = std::collections::BTreeMap::new();
        let mut rest = labels;
        while let Some(eq) = rest.find("=\"") {
            let key = rest[..eq].trim_start_matches(',').to_string();
            let after = &rest[eq + 2..];
            let mut end = 0;
            let bytes = after.as_bytes();
            while end < bytes.len()
                && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\'))
            {
                end += 1;
            }
            map.insert(
                key,
                after[..end].replace("\\\"", "\"").replace("\\\\", "\\"),
            );
            rest = after.get(end + 1..).unwrap_or("");
        }
        out.push(Sample {
            name: name.to_string(),
            labels: map,
            value,
        });
    }
    out
}

/// The value of the one sample with this name whose labels include all of `labels`.
pub fn sample_value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
        .map(|s| s.value)
}

/// Runs `promtool check metrics` (package prometheus) on an exposition in the Prometheus text
/// format; returns whether it passed and its combined output (empty when nothing is wrong).
pub fn promtool_check(exposition: &str) -> (bool, String) {
    let promtool = require_binary("/usr/bin/promtool", "prometheus");
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
