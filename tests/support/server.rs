//! The start loop every server helper shares: spawn the server with its output in a log,
//! wait until it answers, retry on a new port when another process took the port, and panic
//! with the log's tail when it does not come up.
//!
//! [`ServerProcess`] owns a server's child process (killed and reaped on drop) and waits for
//! it to be ready; [`start_on_free_port`] is the retry loop around one start attempt, used as
//! it is by PostgreSQL (whose process pg_ctl runs) and around a [`ServerProcess`] by the other
//! servers.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

use super::{
    LOOPBACK, START_ATTEMPTS, STARTUP_TIMEOUT, exited, http_ok, kill_and_reap, log_block,
    poll_until, says_address_in_use, write_file,
};

/// A log file of a server and the name a panic message gives it, e.g.
/// `("prometheus log", path)`.
pub type ServerLog<'a> = (&'a str, &'a Path);

/// Starts a server on a free loopback port and returns that port.
///
/// Calls `attempt` with a port from [`start_port`](super::start_port) (so
/// [`with_first_port`](super::with_first_port) can force the first one). `attempt` starts the
/// server on that port and waits until it is ready; when it fails, it leaves no process
/// running and says why. If one of `logs` then says the address was in use, the logs are
/// emptied (so that the next attempt's failure is its own) and a new port is tried, up to
/// [`START_ATTEMPTS`] attempts in all. Any other failure, or the last attempt's, panics with
/// `what`, the port, the reason and the tail of every log.
pub fn start_on_free_port(
    what: &str,
    logs: &[ServerLog<'_>],
    mut attempt: impl FnMut(u16) -> Result<(), String>,
) -> u16 {
    for n in 1..=START_ATTEMPTS {
        let port = super::start_port();
        let Err(why) = attempt(port) else {
            return port;
        };
        let text: String = logs
            .iter()
            .map(|(_, path)| std::fs::read_to_string(path).unwrap_or_default())
            .collect();
        if n < START_ATTEMPTS && says_address_in_use(&text) {
            for (_, path) in logs {
                write_file(path, "");
            }
            continue;
        }
        panic!(
            "{what} did not start on {LOOPBACK}:{port} (attempt {n}): {why}\n{}",
            log_blocks(logs)
        );
    }
    unreachable!("the last attempt returns or panics")
}

/// [`start_on_free_port`] for a server that writes one log (stdout and stderr) and is ready
/// when a GET of `ready_url(port)` answers 200: every attempt spawns `command(port)` into
/// one [`ServerProcess`], with stdout and stderr in `log`. Returns the running process and
/// its port.
pub fn start_http_server(
    what: &str,
    log: ServerLog<'_>,
    client: &reqwest::blocking::Client,
    ready_url: impl Fn(u16) -> String,
    mut command: impl FnMut(u16) -> Command,
) -> (ServerProcess, u16) {
    let mut process = ServerProcess::default();
    let port = start_on_free_port(what, &[log], |port| {
        process.spawn(&mut command(port), log.1, log.1);
        process.wait_http_ready(client, &ready_url(port), what)
    });
    (process, port)
}

/// Panics because a server that ran before did not come back after a restart on `port`,
/// with `why` and the tail of every log.
pub fn restart_failed(what: &str, port: u16, why: &str, logs: &[ServerLog<'_>]) -> ! {
    panic!(
        "{what} did not restart on {LOOPBACK}:{port}: {why}\n{}",
        log_blocks(logs)
    )
}

/// The [`log_block`] of every log, one after the other.
fn log_blocks(logs: &[ServerLog<'_>]) -> String {
    logs.iter()
        .map(|(label, path)| log_block(label, path))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A server's child process, if one runs; killed and reaped on drop.
///
/// Declare it before the server's temp dir in the owning struct, so that the process is gone
/// before its directory is removed.
#[derive(Default)]
pub struct ServerProcess {
    child: Option<Child>,
}

impl ServerProcess {
    /// Spawns `cmd` with stdin from /dev/null, stdout appended to `stdout_log` and stderr to
    /// `stderr_log` (pass the same path twice for one combined log); panics if it cannot be
    /// spawned. Appending keeps a restarted server's earlier lines in its log;
    /// [`start_on_free_port`] empties the logs before it retries on a new port.
    pub fn spawn(&mut self, cmd: &mut Command, stdout_log: &Path, stderr_log: &Path) {
        let stdout = open_log(stdout_log);
        let stderr = if stderr_log == stdout_log {
            stdout
                .try_clone()
                .unwrap_or_else(|e| panic!("cloning the log handle failed: {e}"))
        } else {
            open_log(stderr_log)
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {} failed: {e}", cmd.get_program().display()));
        self.child = Some(child);
    }

    /// Calls `ready` every [`POLL_INTERVAL`](super::POLL_INTERVAL) until it says yes, for at
    /// most [`STARTUP_TIMEOUT`]. If the process exits first or the time runs out, kills it
    /// and returns why: `what` exited (with its status), or `not_ready` within the timeout.
    pub fn wait_ready(
        &mut self,
        what: &str,
        not_ready: &str,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let child = self
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("{what} is spawned before waiting for it"));
        let mut exit = None;
        let up = poll_until(STARTUP_TIMEOUT, || {
            if let Some(status) = exited(child) {
                exit = Some(status);
                return Some(false);
            }
            ready().then_some(true)
        });
        let why = match (up, exit) {
            (Some(true), _) => return Ok(()),
            (_, Some(status)) => format!("{what} exited before it was ready, with {status}"),
            _ => format!("{not_ready} within {}s", STARTUP_TIMEOUT.as_secs()),
        };
        self.stop();
        Err(why)
    }

    /// [`ServerProcess::wait_ready`] for a GET of `url` answering 200 (see [`http_ok`]).
    pub fn wait_http_ready(
        &mut self,
        client: &reqwest::blocking::Client,
        url: &str,
        what: &str,
    ) -> Result<(), String> {
        self.wait_ready(what, &format!("{url} did not answer 200"), || {
            http_ok(client, url)
        })
    }

    /// Sends `signal` to the process, unless it has already exited: then returns its exit
    /// status and sends nothing. Panics if no process was spawned.
    pub fn signal(&mut self, signal: libc::c_int) -> Result<(), ExitStatus> {
        let child = self.child.as_mut().expect("the process was spawned");
        if let Some(status) = exited(child) {
            return Err(status);
        }
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child, which has just been checked not to be reaped (we
        // hold the Child and only reap through it), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
        Ok(())
    }

    /// The running (or exited but not yet reaped) child, if any.
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// The process id, while a child is held.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process with SIGKILL and reaps it; nothing happens when none runs.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_and_reap(child);
        }
        self.child = None;
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn open_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {} failed: {e}", path.display()))
}
