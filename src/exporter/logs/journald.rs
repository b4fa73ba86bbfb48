//! Following a journald source: `journalctl --output=json --follow` with the source's filter.
//!
//! - journalctl is started without a shell; every filter value is one argument of its own
//!   (`--unit=VALUE`, `--identifier=VALUE`, `--directory=PATH`), so no value is interpreted
//!   by a shell or taken for another option.
//! - The cursor (`__CURSOR`) of the last entry counted is saved in the same atomic checkpoint
//!   as the counters; a restart passes it as `--after-cursor`, so entries written while
//!   vitals was down are counted, and none twice beyond the entries read after the last
//!   checkpoint of a crash (the counters are restored from the same checkpoint).
//! - At the very first start (no checkpoint), `start_at: end` (the default) behaves like
//!   `tail -F`: the cursor of the newest matching entry is taken (`--lines=1`) and saved at
//!   once, and only entries after it are counted; `start_at: beginning` counts the whole
//!   journal. When no entry matches yet, every entry that comes is new and is counted.
//! - If journalctl cannot be started (not installed) or exits, the failure is counted in
//!   `log_read_errors_total`, `log_journal_follower_up` drops to 0, and journalctl is started
//!   again after a backoff (1 s, doubling up to 1 min; reset once a run lasted a minute).
//! - On shutdown or reload, journalctl is killed and reaped, and a last checkpoint is saved.
//!   If vitals itself is killed (SIGKILL), the orphaned journalctl exits at its next write.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::parsers::journald::{cursor, parse_entry};
use super::{Source, SourceState, acquire, bump, load_checkpoint, release, save_state};
use crate::config::{JournaldFilter, LogsConfig, StartAt};

/// The program run; looked up on `PATH`.
const JOURNALCTL: &str = "journalctl";
/// First and longest wait before journalctl is started again.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// Longest JSON line read; longer entries are skipped and counted (journalctl already prints
/// fields over 4096 bytes as null, so this takes an entry with hundreds of large fields).
const MAX_JSON_LINE: usize = 1 << 20;
/// Entries handled under one lock of the source's state.
const BATCH: usize = 1024;

/// Where journalctl starts reading.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Start {
    /// After the entry with this cursor.
    AfterCursor(String),
    /// At the beginning of the (filtered) journal.
    Beginning,
}

/// The filter as journalctl arguments, one value per argument.
fn filter_args(f: &JournaldFilter) -> Vec<OsString> {
    let mut args = Vec::new();
    if let Some(dir) = &f.directory {
        let mut a = OsString::from("--directory=");
        a.push(dir);
        args.push(a);
    }
    for u in &f.units {
        args.push(format!("--unit={u}").into());
    }
    for i in &f.identifiers {
        args.push(format!("--identifier={i}").into());
    }
    args
}

/// Arguments that follow the journal from `start`.
fn follow_args(f: &JournaldFilter, start: &Start) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--output=json".into(), "--no-pager".into()];
    args.extend(filter_args(f));
    args.push("--follow".into());
    args.push(match start {
        Start::AfterCursor(c) => format!("--after-cursor={c}").into(),
        Start::Beginning => "--lines=all".into(),
    });
    args
}

/// Arguments that print the newest matching entry and exit.
fn newest_args(f: &JournaldFilter) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--output=json".into(), "--no-pager".into()];
    args.extend(filter_args(f));
    args.push("--lines=1".into());
    args
}

fn describe_spawn_error(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        format!("{JOURNALCTL} not found on PATH (install systemd): {e}")
    } else {
        format!("cannot start {JOURNALCTL}: {e}")
    }
}

/// The cursor of the newest entry matching the filter; `None` when no entry matches.
fn newest_cursor(f: &JournaldFilter) -> Result<Option<String>, String> {
    let out = Command::new(JOURNALCTL)
        .args(newest_args(f))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| describe_spawn_error(&e))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{JOURNALCTL} --lines=1 failed ({}): {}",
            out.status,
            err.trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(cursor))
}

/// A running journalctl, killed and reaped when dropped.
struct Journalctl(Child);

impl Drop for Journalctl {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the stdout reader hands over.
enum Item {
    /// One complete line, without its newline.
    Line(Vec<u8>),
    /// A line longer than [`MAX_JSON_LINE`], skipped.
    Overlong,
}

/// Reads complete lines from journalctl's stdout into the channel until EOF. An unterminated
/// last line (journalctl killed mid-write) is dropped: its entry was not counted, so its
/// cursor was not saved, and it is read again after a restart.
fn read_stdout(out: ChildStdout, tx: std::sync::mpsc::SyncSender<Item>) {
    let mut r = BufReader::with_capacity(64 * 1024, out);
    let mut line = Vec::with_capacity(4096);
    let mut overlong = false;
    loop {
        let (consumed, done) = match r.fill_buf() {
            Ok([]) => return,
            Ok(buf) => match buf.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    if !overlong {
                        line.extend_from_slice(&buf[..i]);
                    }
                    (i + 1, true)
                }
                None => {
                    if !overlong {
                        line.extend_from_slice(buf);
                    }
                    (buf.len(), false)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        r.consume(consumed);
        if line.len() > MAX_JSON_LINE {
            overlong = true;
            line.clear();
        }
        if done {
            let item = if overlong {
                Item::Overlong
            } else {
                Item::Line(std::mem::replace(&mut line, Vec::with_capacity(4096)))
            };
            overlong = false;
            if tx.send(item).is_err() {
                return;
            }
        }
    }
}

/// Logs journalctl's complaints and keeps the last one for the failure message.
fn read_stderr(err: ChildStderr, source: String, last: Arc<Mutex<String>>) {
    for line in BufReader::new(err).lines() {
        let Ok(line) = line else { return };
        let line = line.trim().to_string();
        if line.is_empty() {
            continue;
        }
        tracing::warn!(source = %source, message = %line, "journalctl");
        *last.lock().unwrap_or_else(PoisonError::into_inner) = line;
    }
}

/// The state a follower keeps between journalctl runs.
struct Follower {
    source: Arc<Source>,
    state_path: std::path::PathBuf,
    cursor: Option<String>,
    dirty: bool,
    last_checkpoint: Instant,
    checkpoint_every: Duration,
}

impl Follower {
    fn state(&self) -> std::sync::MutexGuard<'_, SourceState> {
        self.source
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one entry and remembers its cursor.
    fn handle(&mut self, st: &mut SourceState, item: Item, now: Instant) {
        let line = match item {
            Item::Line(l) => l,
            Item::Overlong => {
                st.counters.parse_failures += 1;
                bump(&mut st.counters.dropped, "truncated", 1);
                return;
            }
        };
        st.counters.bytes += line.len() as u64 + 1;
        // journalctl prints valid UTF-8 (non-UTF-8 fields as byte arrays).
        let Some(mut e) = std::str::from_utf8(&line).ok().and_then(parse_entry) else {
            st.counters.parse_failures += 1;
            return;
        };
        let max = self.source.cfg.max_line_bytes;
        if e.record.message.len() > max {
            let mut cut = max;
            while !e.record.message.is_char_boundary(cut) {
                cut -= 1;
            }
            e.record.message.to_mut().truncate(cut);
            e.truncated = true;
        }
        if e.truncated {
            bump(&mut st.counters.dropped, "truncated", 1);
        }
        self.source.process(st, &e.record, now);
        if e.cursor.is_some() {
            self.cursor = e.cursor;
        }
        self.dirty = true;
    }

    /// Saves counters and cursor when due (or now, with `force`).
    fn checkpoint(&mut self, st: &mut SourceState, force: bool) {
        let now = Instant::now();
        if !(force
            || (self.dirty && now.duration_since(self.last_checkpoint) >= self.checkpoint_every))
        {
            return;
        }
        if save_state(
            &self.state_path,
            st,
            Default::default(),
            self.cursor.clone(),
        ) {
            self.dirty = false;
        }
        self.last_checkpoint = now;
    }

    /// Counts a failure of journalctl and marks the follower down.
    fn failed(&self, what: &str) {
        let mut st = self.state();
        st.counters.read_errors += 1;
        st.journal_up = Some(false);
        tracing::error!(source = %self.source.cfg.name, error = %what, "journald follower failed; restarting journalctl after a backoff");
    }

    /// Reads entries until journalctl exits (returns false) or `stop` is set (returns true).
    fn pump(
        &mut self,
        rx: &Receiver<Item>,
        stop: &AtomicBool,
        journalctl: &mut Journalctl,
    ) -> bool {
        let tick = self
            .checkpoint_every
            .clamp(Duration::from_millis(10), Duration::from_millis(200));
        loop {
            let first = rx.recv_timeout(tick);
            let stopping = stop.load(Ordering::Relaxed);
            let source = self.source.clone();
            let mut guard = source.state.lock().unwrap_or_else(PoisonError::into_inner);
            let st = &mut *guard;
            let now = Instant::now();
            match first {
                Ok(item) => {
                    self.handle(st, item, now);
                    for item in rx.try_iter().take(BATCH) {
                        self.handle(st, item, now);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.checkpoint(st, false);
                    return false;
                }
            }
            self.source.expire_patterns(st, now);
            if stopping {
                // Kill journalctl, then count what it had already written.
                let _ = journalctl.0.kill();
                drop(guard);
                while let Ok(item) = rx.recv() {
                    let mut st = source.state.lock().unwrap_or_else(PoisonError::into_inner);
                    self.handle(&mut st, item, Instant::now());
                }
                let mut st = source.state.lock().unwrap_or_else(PoisonError::into_inner);
                self.checkpoint(&mut st, true);
                return true;
            }
            self.checkpoint(st, false);
        }
    }
}

/// Sleeps `d` unless `stop` is set first; returns whether to stop.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(
            until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100)),
        );
    }
    stop.load(Ordering::Relaxed)
}

/// Follows one journald source until `stop` is set; saves a last checkpoint on the way out.
pub(super) fn run(source: Arc<Source>, logs: LogsConfig, stop: Arc<AtomicBool>) {
    let Some(filter) = source.cfg.journald.clone() else {
        return;
    };
    let name = source.cfg.name.clone();
    let state_path = logs.state_dir.join(format!("{name}.json"));
    if let Err(e) = std::fs::create_dir_all(&logs.state_dir) {
        tracing::error!(dir = %logs.state_dir.display(), error = %e, "cannot create the log state directory; the journal cursor will not be saved");
    }
    if !acquire(&state_path, &stop) {
        return;
    }
    let saved = load_checkpoint(&state_path);
    // Whether the start point is settled: a checkpoint exists (a cursor, or nothing matched
    // yet, so that everything in the journal is new).
    // A state file of a file source renamed into a journald one does not count as one.
    let mut anchored = saved
        .as_ref()
        .is_some_and(|cp| cp.journal_cursor.is_some() || cp.tail.positions.is_empty());
    let mut f = Follower {
        source: source.clone(),
        state_path: state_path.clone(),
        cursor: None,
        dirty: false,
        last_checkpoint: Instant::now(),
        checkpoint_every: logs.checkpoint_interval.0,
    };
    {
        let mut st = source.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cp) = saved {
            st.counters = cp.counters;
            f.cursor = cp.journal_cursor;
        }
        st.journal_up = Some(false);
    }
    let mut backoff = BACKOFF_MIN;
    while !stop.load(Ordering::Relaxed) {
        let start = match &f.cursor {
            Some(c) => Start::AfterCursor(c.clone()),
            // Started before with nothing matching yet, or asked for the whole journal.
            None if anchored || source.cfg.start_at == StartAt::Beginning => Start::Beginning,
            // First start: like `tail -F`, from the newest entry on; saved at once, so that
            // entries written after this moment are counted even across a crash.
            None => match newest_cursor(&filter) {
                Ok(newest) => {
                    f.cursor = newest.clone();
                    let mut st = source.state.lock().unwrap_or_else(PoisonError::into_inner);
                    f.checkpoint(&mut st, true);
                    anchored = true;
                    newest.map_or(Start::Beginning, Start::AfterCursor)
                }
                Err(e) => {
                    f.failed(&e);
                    if sleep_unless_stopped(backoff, &stop) {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        let args = follow_args(&filter, &start);
        tracing::debug!(source = %name, ?args, "starting journalctl");
        let spawned = Command::new(JOURNALCTL)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => Journalctl(c),
            Err(e) => {
                f.failed(&describe_spawn_error(&e));
                if sleep_unless_stopped(backoff, &stop) {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let started = Instant::now();
        f.state().journal_up = Some(true);
        let (tx, rx) = sync_channel::<Item>(BATCH);
        let last_err = Arc::new(Mutex::new(String::new()));
        // Without its reader thread (no thread could be started), the channel is closed at
        // once and this run ends as a failure.
        let reader = child.0.stdout.take().and_then(|out| {
            std::thread::Builder::new()
                .name(format!("journal-{name}"))
                .spawn(move || read_stdout(out, tx))
                .ok()
        });
        let err_reader = child.0.stderr.take().and_then(|err| {
            let (n, l) = (name.clone(), last_err.clone());
            std::thread::Builder::new()
                .name(format!("journal-err-{name}"))
                .spawn(move || read_stderr(err, n, l))
                .ok()
        });
        let stopped = f.pump(&rx, &stop, &mut child);
        // journalctl has exited (its output ended) or is being stopped; give it a moment to
        // finish on its own (for its real exit status), then make sure of it.
        let until = Instant::now() + Duration::from_secs(1);
        while !stopped && Instant::now() < until && matches!(child.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.0.kill();
        let status = child.0.wait();
        if let Some(h) = reader {
            let _ = h.join();
        }
        if let Some(h) = err_reader {
            let _ = h.join();
        }
        drop(child);
        if stopped {
            break;
        }
        let last = last_err
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        f.failed(&format!("{JOURNALCTL} exited ({status}): {last}"));
        if matches!(start, Start::AfterCursor(_))
            && last.contains("cursor")
            && f.cursor
                .as_ref()
                .is_some_and(|c| Start::AfterCursor(c.clone()) == start)
        {
            // The saved cursor is not accepted (corrupt state file): start over from the
            // newest entry rather than failing forever.
            tracing::error!(source = %name, "journalctl rejects the saved cursor; continuing from the newest entry");
            f.cursor = None;
            anchored = false;
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = BACKOFF_MIN;
        }
        if sleep_unless_stopped(backoff, &stop) {
            break;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    {
        let mut st = source.state.lock().unwrap_or_else(PoisonError::into_inner);
        f.checkpoint(&mut st, true);
        st.journal_up = Some(false);
    }
    release(&state_path);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: Vec<OsString>) -> Vec<String> {
        v.into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn every_filter_value_is_one_argument() {
        let f = JournaldFilter {
            units: vec!["ssh.service".into(), "a b; rm -rf /".into()],
            identifiers: vec!["-n".into()],
            directory: Some("/var/log/journal/remote dir".into()),
        };
        assert_eq!(
            strings(follow_args(&f, &Start::AfterCursor("s=1;i=2".into()))),
            vec![
                "--output=json",
                "--no-pager",
                "--directory=/var/log/journal/remote dir",
                "--unit=ssh.service",
                "--unit=a b; rm -rf /",
                "--identifier=-n",
                "--follow",
                "--after-cursor=s=1;i=2",
            ]
        );
        let plain = JournaldFilter::default();
        assert_eq!(
            strings(follow_args(&plain, &Start::Beginning)),
            vec!["--output=json", "--no-pager", "--follow", "--lines=all"]
        );
        assert_eq!(
            strings(newest_args(&plain)),
            vec!["--output=json", "--no-pager", "--lines=1"]
        );
    }
}
