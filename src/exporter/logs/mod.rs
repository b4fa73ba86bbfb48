//! The `logs` collector: metrics derived from log files.
//!
//! One thread per source follows its files ([`tail`]), parses lines ([`parsers`]), counts them
//! by level, mines error and warning patterns ([`fingerprint`]) and recognises security
//! events ([`security`]). Counters and read positions are saved together, atomically, in the
//! state directory, so a restart continues both from the same checkpoint: no line is lost,
//! and none is counted twice beyond what was read after the last checkpoint of a crash.
//! Scrapes only read the counters.

pub mod fingerprint;
mod journald;
pub mod parsers;
pub mod security;
pub mod tail;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};

use super::collector::{BoxFuture, CollectError, Collected, Collector, Scope};
use crate::config::{Config, LogSource, LogsConfig};
use fingerprint::{Miner, MinerOptions, PatternId};
use parsers::{Level, LineParser, Parsed, ParserKind, Record, RegexParser};
use security::Event;
use tail::{Line, Saved, Tailer, Watcher};

/// Counters of one source; saved with the read positions.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
struct Counters {
    /// Entries by level, in the order of [`Level::ALL`].
    lines: [u64; 6],
    bytes: u64,
    parse_failures: u64,
    dropped: BTreeMap<String, u64>,
    rotations: BTreeMap<String, u64>,
    read_errors: u64,
    /// (level index, pattern id or [`OTHER`]) -> lines.
    #[serde(with = "pattern_counts")]
    patterns: std::collections::HashMap<(u8, u64), u64>,
    ssh_failures: BTreeMap<String, u64>,
    /// Hashed: up to `ip_budget` keys, looked up on every failed login.
    ssh_by_ip: std::collections::HashMap<String, u64, rustc_hash::FxBuildHasher>,
    ssh_logins: BTreeMap<String, u64>,
    fail2ban: BTreeMap<String, u64>,
    firewall: BTreeMap<String, u64>,
    postgres_errors: BTreeMap<String, u64>,
    certbot: BTreeMap<String, u64>,
    last_timestamp: Option<f64>,
}

/// What is written to `<state_dir>/<source>.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    tail: Saved,
    counters: Counters,
    /// journald sources: the cursor of the last entry counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    journal_cursor: Option<String>,
}

const SEP: char = '\u{1f}';

/// Pattern key for lines beyond the pattern budget.
const OTHER: u64 = u64::MAX;

/// Pattern counters are saved as a list of `[level, pattern, count]` (JSON maps need string
/// keys).
mod pattern_counts {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::HashMap;

    pub fn serialize<S: Serializer>(
        map: &HashMap<(u8, u64), u64>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut v: Vec<(u8, u64, u64)> = map.iter().map(|((l, p), n)| (*l, *p, *n)).collect();
        v.sort_unstable();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<HashMap<(u8, u64), u64>, D::Error> {
        let v: Vec<(u8, u64, u64)> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|(l, p, n)| ((l, p), n)).collect())
    }
}

fn level_index(level: Level) -> usize {
    Level::ALL.iter().position(|l| *l == level).unwrap_or(0)
}

fn bump(map: &mut BTreeMap<String, u64>, key: impl AsRef<str> + Into<String>, n: u64) {
    match map.get_mut(key.as_ref()) {
        Some(v) => *v += n,
        None => {
            map.insert(key.into(), n);
        }
    }
}

/// Live state of a source, shared between its thread and scrapes.
struct SourceState {
    counters: Counters,
    miner: Miner,
    /// Live patterns -> (id, last seen).
    live_patterns: std::collections::HashMap<u64, (PatternId, Instant)>,
    backlog_bytes: u64,
    size_bytes: u64,
    files: u64,
    checkpoint_errors: u64,
    /// journald sources: whether journalctl is running.
    journal_up: Option<bool>,
}

impl SourceState {
    fn new() -> Self {
        Self {
            counters: Counters::default(),
            miner: Miner::new(MinerOptions::default()),
            live_patterns: std::collections::HashMap::new(),
            backlog_bytes: 0,
            size_bytes: 0,
            files: 0,
            checkpoint_errors: 0,
            journal_up: None,
        }
    }
}

struct Source {
    cfg: LogSource,
    limits: Limits,
    state: Mutex<SourceState>,
}

#[derive(Clone, Copy)]
struct Limits {
    pattern_budget: usize,
    pattern_idle: Duration,
    ip_budget: usize,
}

impl Source {
    fn process(&self, st: &mut SourceState, rec: &Record<'_>, now: Instant) {
        let c = &mut st.counters;
        c.lines[level_index(rec.level)] += rec.count;
        if let Some(t) = rec.timestamp {
            c.last_timestamp = Some(c.last_timestamp.map_or(t, |o: f64| o.max(t)));
        }
        if rec.level.is_problem() {
            let pid = st.miner.observe(&rec.message);
            let id = pid.as_u64();
            let key = if let Some(entry) = st.live_patterns.get_mut(&id) {
                entry.1 = now;
                id
            } else if st.live_patterns.len() < self.limits.pattern_budget {
                st.live_patterns.insert(id, (pid, now));
                id
            } else {
                OTHER
            };
            *st.counters
                .patterns
                .entry((level_index(rec.level) as u8, key))
                .or_insert(0) += rec.count;
        }
        let c = &mut st.counters;
        match security::classify(rec) {
            Some(Event::SshAuthFailure { reason, ip }) => {
                bump(&mut c.ssh_failures, reason, rec.count);
                // One hash lookup when the address is known; it is copied only when new.
                if let Some(v) = c.ssh_by_ip.get_mut(ip.as_ref()) {
                    *v += rec.count;
                } else if c.ssh_by_ip.len() < self.limits.ip_budget {
                    c.ssh_by_ip.insert(ip.into_owned(), rec.count);
                } else if let Some(v) = c.ssh_by_ip.get_mut("other") {
                    *v += rec.count;
                } else {
                    c.ssh_by_ip.insert("other".to_string(), rec.count);
                }
            }
            Some(Event::SshLogin { method }) => bump(&mut c.ssh_logins, method, rec.count),
            Some(Event::Fail2ban { jail, action }) => {
                bump(&mut c.fail2ban, format!("{jail}{SEP}{action}"), rec.count)
            }
            Some(Event::FirewallBlock { action, proto }) => {
                bump(&mut c.firewall, format!("{action}{SEP}{proto}"), rec.count)
            }
            Some(Event::PostgresError {
                severity,
                sqlstate_class,
            }) => bump(
                &mut c.postgres_errors,
                format!("{severity}{SEP}{sqlstate_class}"),
                rec.count,
            ),
            Some(Event::CertbotRenewal { result }) => bump(&mut c.certbot, result, rec.count),
            None => {}
        }
    }

    fn expire_patterns(&self, st: &mut SourceState, now: Instant) {
        let idle = self.limits.pattern_idle;
        let before = st.live_patterns.len();
        st.live_patterns
            .retain(|_, (_, seen)| now.duration_since(*seen) <= idle);
        if st.live_patterns.len() != before {
            let live = &st.live_patterns;
            st.counters
                .patterns
                .retain(|(_, p), _| *p == OTHER || live.contains_key(p));
        }
    }
}

/// State files in use, so that a reloaded collector waits for the old one's last checkpoint.
static IN_USE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
static RELEASED: Condvar = Condvar::new();

fn acquire(path: &Path, stop: &AtomicBool) -> bool {
    let mut guard = IN_USE.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let set = guard.get_or_insert_with(HashSet::new);
        if !set.contains(path) {
            set.insert(path.to_path_buf());
            return true;
        }
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        guard = RELEASED
            .wait_timeout(guard, Duration::from_millis(100))
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

fn release(path: &Path) {
    let mut guard = IN_USE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(set) = guard.as_mut() {
        set.remove(path);
    }
    RELEASED.notify_all();
}

/// Decodes a source's state file (`<state_dir>/<source>.json`) as a restart does and returns
/// the read positions it holds. Public so that the fuzz targets can feed it damaged files.
pub fn decode_checkpoint(text: &str) -> Result<Saved, String> {
    serde_json::from_str::<Checkpoint>(text)
        .map(|c| c.tail)
        .map_err(|e| e.to_string())
}

/// Counters above this were not written by vitals (it would take centuries of lines) and lose
/// precision as a Prometheus float: a state file holding one is damaged.
const MAX_RESTORED_COUNT: u64 = 1 << 53;

impl Counters {
    /// The largest count held, to refuse damaged state files before adding to them.
    fn max_count(&self) -> u64 {
        let maps = [
            &self.dropped,
            &self.rotations,
            &self.ssh_failures,
            &self.ssh_logins,
            &self.fail2ban,
            &self.firewall,
            &self.postgres_errors,
            &self.certbot,
        ];
        self.lines
            .iter()
            .chain([&self.bytes, &self.parse_failures, &self.read_errors])
            .chain(maps.into_iter().flat_map(|m| m.values()))
            .chain(self.patterns.values())
            .chain(self.ssh_by_ip.values())
            .copied()
            .max()
            .unwrap_or(0)
    }
}

fn load_checkpoint(path: &Path) -> Option<Checkpoint> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str::<Checkpoint>(&text) {
        Ok(mut c) => {
            if c.counters.max_count() > MAX_RESTORED_COUNT {
                // The read position is still good; the counters restart from zero (a counter
                // reset to Prometheus) instead of overflowing later.
                tracing::error!(file = %path.display(), "log state file holds impossible counts; counters restart from zero");
                c.counters = Counters::default();
            }
            Some(c)
        }
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "log state file unreadable; starting without it");
            None
        }
    }
}

/// Writes the checkpoint atomically (see [`crate::fsutil::write_atomic`]).
/// Saves a source's read position (file offsets, or the journal cursor) with its counters;
/// a failure is counted in `log_checkpoint_errors_total` and logged. True when saved.
fn save_state(path: &Path, st: &mut SourceState, tail: Saved, cursor: Option<String>) -> bool {
    let cp = Checkpoint {
        version: 1,
        tail,
        counters: st.counters.clone(),
        journal_cursor: cursor,
    };
    match save_checkpoint(path, &cp) {
        Ok(()) => true,
        Err(e) => {
            st.checkpoint_errors += 1;
            tracing::error!(file = %path.display(), error = %e, "cannot save the log position and counters");
            false
        }
    }
}

fn save_checkpoint(path: &Path, cp: &Checkpoint) -> std::io::Result<()> {
    let data = serde_json::to_vec(cp).map_err(std::io::Error::other)?;
    crate::fsutil::write_atomic(path, &data)
}

fn build_parser(cfg: &LogSource) -> Result<Box<dyn LineParser>, String> {
    if cfg.parser == "regex" {
        let re = cfg.regex.as_deref().ok_or("parser regex needs a regex")?;
        return Ok(Box::new(RegexParser::new(re)?));
    }
    ParserKind::from_name(&cfg.parser)
        .map(ParserKind::build)
        .ok_or_else(|| format!("unknown parser {:?}", cfg.parser))
}

/// Counts, parses and processes one line read from a file.
fn handle_line(
    source: &Source,
    st: &mut SourceState,
    parser: &mut dyn LineParser,
    line: Line<'_>,
    now: Instant,
) {
    st.counters.bytes += line.bytes.len() as u64 + 1;
    if line.truncated {
        bump(&mut st.counters.dropped, "truncated", 1);
    }
    let text = match std::str::from_utf8(line.bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => {
            bump(&mut st.counters.dropped, "invalid_utf8", 1);
            String::from_utf8_lossy(line.bytes)
        }
    };
    match parser.parse(&text) {
        Parsed::Record(r) => source.process(st, &r, now),
        Parsed::Continuation => {}
        Parsed::Failure => st.counters.parse_failures += 1,
    }
}

/// What `vitals logs check` reports for a file.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Entries by level.
    pub lines: BTreeMap<String, u64>,
    /// Bytes read.
    pub bytes: u64,
    /// Lines without the format.
    pub parse_failures: u64,
    /// Lines cut or repaired, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Failed SSH authentications by reason.
    pub ssh_auth_failures: BTreeMap<String, u64>,
    /// Failed SSH authentications by source address (budget applies).
    pub ssh_auth_failures_by_ip: BTreeMap<String, u64>,
    /// Accepted SSH logins by method.
    pub ssh_logins: BTreeMap<String, u64>,
    /// Live error/warning patterns.
    pub patterns: usize,
}

/// Runs a whole file through the same pipeline as the collector (parser, patterns, security
/// events) in one pass, for previews, coverage checks and benchmarks.
pub fn analyze(
    path: &Path,
    parser_name: &str,
    regex: Option<&str>,
    ip_budget: usize,
) -> Result<Summary, String> {
    use std::io::BufRead;
    let cfg = LogSource {
        name: "check".into(),
        path: Some(path.display().to_string()),
        journald: None,
        parser: parser_name.to_string(),
        regex: regex.map(str::to_string),
        start_at: crate::config::StartAt::Beginning,
        max_line_bytes: 65536,
        labels: BTreeMap::new(),
    };
    let mut parser = build_parser(&cfg)?;
    let source = Source {
        cfg,
        limits: Limits {
            pattern_budget: 1000,
            pattern_idle: Duration::from_secs(3600),
            ip_budget,
        },
        state: Mutex::new(SourceState::new()),
    };
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut st = source.state.lock().unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        let mut bytes = buf.strip_suffix(b"\n").unwrap_or(&buf);
        bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let truncated = bytes.len() > source.cfg.max_line_bytes;
        let bytes = &bytes[..bytes.len().min(source.cfg.max_line_bytes)];
        handle_line(
            &source,
            &mut st,
            parser.as_mut(),
            Line { bytes, truncated },
            now,
        );
    }
    if let Some(r) = parser.flush() {
        source.process(&mut st, &r, now);
    }
    let c = &st.counters;
    Ok(Summary {
        lines: Level::ALL
            .iter()
            .zip(c.lines)
            .filter(|(_, n)| *n > 0)
            .map(|(l, n)| (l.as_str().to_string(), n))
            .collect(),
        bytes: c.bytes,
        parse_failures: c.parse_failures,
        dropped: c.dropped.clone(),
        ssh_auth_failures: c.ssh_failures.clone(),
        ssh_auth_failures_by_ip: c.ssh_by_ip.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        ssh_logins: c.ssh_logins.clone(),
        patterns: st.live_patterns.len(),
    })
}

/// Lines handled under one hold of a source's state lock while following it.
const LINES_PER_LOCK: usize = 1024;

/// Follows one source until `stop` is set; saves a last checkpoint on the way out.
fn run_source(source: Arc<Source>, logs: LogsConfig, stop: Arc<AtomicBool>) {
    let Some(pattern) = source.cfg.path.clone() else {
        journald::run(source, logs, stop);
        return;
    };
    let state_path = logs.state_dir.join(format!("{}.json", source.cfg.name));
    if let Err(e) = std::fs::create_dir_all(&logs.state_dir) {
        tracing::error!(dir = %logs.state_dir.display(), error = %e, "cannot create the log state directory; positions will not be saved");
    }
    if !acquire(&state_path, &stop) {
        return;
    }
    let saved = load_checkpoint(&state_path);
    let mut parser = match build_parser(&source.cfg) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(source = %source.cfg.name, error = %e, "cannot build parser");
            release(&state_path);
            return;
        }
    };
    let positions = saved.as_ref().map(|c| c.tail.clone());
    if let Some(cp) = saved {
        source
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .counters = cp.counters;
    }
    let mut tailer = Tailer::new(
        &pattern,
        positions,
        source.cfg.start_at,
        source.cfg.max_line_bytes,
        Duration::from_secs(5),
    );
    let poll = logs.poll_interval.0.max(Duration::from_millis(10));
    let rescan = logs.inotify_rescan_interval.0.max(poll);
    let mut watcher = Watcher::new(&pattern, logs.inotify);
    let checkpoint_every = logs.checkpoint_interval.0;
    let mut last_checkpoint = Instant::now();
    let mut dirty = false;
    let mut read_failing = false;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let now = Instant::now();
        {
            let mut read_any = false;
            // The state lock is taken per batch of lines, not for the whole poll: a large
            // backlog (a file read from the beginning, a burst) takes minutes to parse, and
            // scrapes must keep reading the counters meanwhile.
            let mut batch = None;
            let mut in_batch = 0usize;
            let report = tailer.poll(&mut |line: Line<'_>| {
                read_any = true;
                let st = batch.get_or_insert_with(|| {
                    source.state.lock().unwrap_or_else(PoisonError::into_inner)
                });
                handle_line(&source, st, parser.as_mut(), line, now);
                in_batch += 1;
                if in_batch >= LINES_PER_LOCK {
                    in_batch = 0;
                    batch = None;
                    std::thread::yield_now();
                }
            });
            drop(batch);
            let mut st = source.state.lock().unwrap_or_else(PoisonError::into_inner);
            let st = &mut *st;
            if read_any {
                dirty = true;
            }
            if report.renamed > 0 {
                bump(&mut st.counters.rotations, "rename", report.renamed);
                dirty = true;
            }
            if report.truncated > 0 {
                bump(&mut st.counters.rotations, "truncate", report.truncated);
                dirty = true;
            }
            if !report.errors.is_empty() {
                st.counters.read_errors += report.errors.len() as u64;
                // A file that stays unreadable fails every poll: warn when it starts, not
                // several times a second (the counter has every one).
                for e in report.errors.iter().take(1) {
                    if read_failing {
                        tracing::debug!(source = %source.cfg.name, error = %e, "log read error");
                    } else {
                        tracing::warn!(source = %source.cfg.name, error = %e, "log read error; counted in log_read_errors_total, retried every poll");
                    }
                }
                read_failing = true;
            } else if read_failing {
                tracing::info!(source = %source.cfg.name, "log files are readable again");
                read_failing = false;
            }
            if read_any || report.renamed > 0 || report.truncated > 0 {
                tracing::debug!(source = %source.cfg.name, lines = st.counters.lines.iter().sum::<u64>(), renamed = report.renamed, truncated = report.truncated, "poll");
            }
            let (backlog, size) = tailer.backlog();
            st.backlog_bytes = backlog;
            st.size_bytes = size;
            st.files = tailer.open_files() as u64;
            source.expire_patterns(st, now);
            if stopping || (dirty && now.duration_since(last_checkpoint) >= checkpoint_every) {
                if save_state(&state_path, st, tailer.checkpoint(), None) {
                    dirty = false;
                }
                last_checkpoint = now;
            }
        }
        if stopping {
            break;
        }
        // Woken by inotify, or at the rescan (safety net) or polling interval; at least
        // every checkpoint interval while unsaved lines wait for their checkpoint. Waits are
        // cut in slices so that shutdown stays prompt. An unreadable file is retried every
        // poll even under inotify: a permission fixed by a group change or an ACL on a parent
        // directory raises no event on the file.
        let mut wait = if watcher.active() && !read_failing {
            rescan
        } else {
            poll
        };
        if dirty {
            wait = wait.min(checkpoint_every.max(Duration::from_millis(10)));
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero()
                || watcher.wait(left.min(Duration::from_millis(250)))
                || stop.load(Ordering::Relaxed)
            {
                break;
            }
        }
    }
    release(&state_path);
}

/// The logs collector: owns one following thread per file source.
pub struct LogsCollector {
    sources: Vec<Arc<Source>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl LogsCollector {
    /// Starts following every source.
    pub fn start(logs: &LogsConfig) -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let limits = Limits {
            pattern_budget: logs.pattern_budget,
            pattern_idle: logs.pattern_idle_timeout.0,
            ip_budget: logs.ip_budget,
        };
        let mut sources = Vec::new();
        let mut threads = Vec::new();
        for cfg in &logs.sources {
            build_parser(cfg).map_err(|e| format!("source {}: {e}", cfg.name))?;
            let source = Arc::new(Source {
                cfg: cfg.clone(),
                limits,
                state: Mutex::new(SourceState::new()),
            });
            let (s, l, st) = (source.clone(), logs.clone(), stop.clone());
            let handle = std::thread::Builder::new()
                .name(format!("logs-{}", cfg.name))
                .spawn(move || run_source(s, l, st))
                .map_err(|e| format!("starting a thread for source {}: {e}", cfg.name))?;
            threads.push(handle);
            sources.push(source);
        }
        Ok(Self {
            sources,
            stop,
            threads: Mutex::new(threads),
        })
    }

    fn build(config: &Config) -> Result<Option<Arc<dyn Collector>>, String> {
        if config.exporter.logs.sources.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Self::start(&config.exporter.logs)?)))
    }

    fn encode(&self) -> Registry {
        type L = Vec<(String, String)>;
        let counter = Family::<L, Counter<f64, std::sync::atomic::AtomicU64>>::default;
        let gauge = Family::<L, Gauge<f64, std::sync::atomic::AtomicU64>>::default;
        let [
            lines,
            bytes,
            failures,
            dropped,
            rotations,
            read_errors,
            patterns,
        ] = [(); 7].map(|()| counter());
        let [ssh_fail, ssh_ip, ssh_login, f2b, fw, pg, cb, cp_err] = [(); 8].map(|()| counter());
        let [info, backlog, size, files, last_ts, journal_up] = [(); 6].map(|()| gauge());
        let mut by_ip: BTreeMap<String, u64> = BTreeMap::new();
        for s in &self.sources {
            let st = s.state.lock().unwrap_or_else(PoisonError::into_inner);
            let base: L = std::iter::once(("source".to_string(), s.cfg.name.clone()))
                .chain(s.cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())))
                .collect();
            let with = |pairs: &[(&str, &str)]| -> L {
                let mut l = base.clone();
                l.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                l
            };
            let c = &st.counters;
            for level in Level::ALL {
                let n = c.lines[level_index(level)];
                lines
                    .get_or_create(&with(&[("level", level.as_str())]))
                    .inc_by(n as f64);
            }
            bytes.get_or_create(&base).inc_by(c.bytes as f64);
            failures
                .get_or_create(&base)
                .inc_by(c.parse_failures as f64);
            for reason in ["truncated", "invalid_utf8"] {
                let n = c.dropped.get(reason).copied().unwrap_or(0);
                dropped
                    .get_or_create(&with(&[("reason", reason)]))
                    .inc_by(n as f64);
            }
            for kind in ["rename", "truncate"] {
                let n = c.rotations.get(kind).copied().unwrap_or(0);
                rotations
                    .get_or_create(&with(&[("kind", kind)]))
                    .inc_by(n as f64);
            }
            read_errors
                .get_or_create(&base)
                .inc_by(c.read_errors as f64);
            cp_err
                .get_or_create(&base)
                .inc_by(st.checkpoint_errors as f64);
            for ((level, pattern), n) in &c.patterns {
                let level = Level::ALL
                    .get(usize::from(*level))
                    .map_or("info", |l| l.as_str());
                let pattern = if *pattern == OTHER {
                    "other".to_string()
                } else {
                    format!("{pattern:012x}")
                };
                patterns
                    .get_or_create(&with(&[("level", level), ("pattern", &pattern)]))
                    .inc_by(*n as f64);
            }
            for (pid, _) in st.live_patterns.values() {
                if let Some(template) = st.miner.template(*pid) {
                    let id = pid.to_string();
                    info.get_or_create(&with(&[("pattern", &id), ("template", template)]))
                        .set(1.0);
                }
            }
            for (reason, n) in &c.ssh_failures {
                ssh_fail
                    .get_or_create(&with(&[("reason", reason)]))
                    .inc_by(*n as f64);
            }
            for (ip, n) in &c.ssh_by_ip {
                *by_ip.entry(ip.clone()).or_insert(0) += n;
            }
            for (method, n) in &c.ssh_logins {
                ssh_login
                    .get_or_create(&with(&[("method", method)]))
                    .inc_by(*n as f64);
            }
            let pairs = |fam: &Family<L, Counter<f64, std::sync::atomic::AtomicU64>>,
                         map: &BTreeMap<String, u64>,
                         a: &str,
                         b: &str| {
                for (k, n) in map {
                    if let Some((x, y)) = k.split_once(SEP) {
                        fam.get_or_create(&with(&[(a, x), (b, y)]))
                            .inc_by(*n as f64);
                    }
                }
            };
            pairs(&f2b, &c.fail2ban, "jail", "action");
            pairs(&fw, &c.firewall, "action", "proto");
            pairs(&pg, &c.postgres_errors, "severity", "sqlstate_class");
            for (result, n) in &c.certbot {
                cb.get_or_create(&with(&[("result", result)]))
                    .inc_by(*n as f64);
            }
            backlog.get_or_create(&base).set(st.backlog_bytes as f64);
            size.get_or_create(&base).set(st.size_bytes as f64);
            files.get_or_create(&base).set(st.files as f64);
            if let Some(t) = c.last_timestamp {
                last_ts.get_or_create(&base).set(t);
            }
            if let Some(up) = st.journal_up {
                journal_up
                    .get_or_create(&base)
                    .set(if up { 1.0 } else { 0.0 });
            }
        }
        for (ip, n) in by_ip {
            ssh_ip
                .get_or_create(&vec![("ip".to_string(), ip)])
                .inc_by(n as f64);
        }
        let mut r = Registry::default();
        r.register(
            "log_lines",
            "Log entries read, by source and normalised level",
            lines,
        );
        r.register_with_unit("log", "Bytes read from log files", Unit::Bytes, bytes);
        r.register(
            "log_parse_failures",
            "Lines that did not have the source's format",
            failures,
        );
        r.register("log_lines_dropped", "Lines whose content was partly dropped: cut at max_line_bytes (truncated) or with invalid UTF-8 replaced", dropped);
        r.register(
            "log_rotations",
            "File rotations seen, by kind (rename or truncate)",
            rotations,
        );
        r.register(
            "log_read_errors",
            "Errors opening or reading log files; for journald sources, journalctl failures (not found, exited)",
            read_errors,
        );
        r.register(
            "log_journal_follower_up",
            "journald sources: 1 while journalctl runs and is read, 0 while it is being restarted",
            journal_up,
        );
        r.register(
            "log_checkpoint_errors",
            "Failed saves of read positions and counters",
            cp_err,
        );
        r.register_with_unit(
            "log_backlog",
            "Bytes written to followed files but not read yet",
            Unit::Bytes,
            backlog,
        );
        r.register_with_unit(
            "log_file_size",
            "Total size of the followed files",
            Unit::Bytes,
            size,
        );
        r.register("log_files_followed", "Files currently followed", files);
        r.register_with_unit(
            "log_last_line_timestamp",
            "Newest timestamp found in the source's entries",
            Unit::Seconds,
            last_ts,
        );
        r.register("log_pattern_lines", "Error and warning entries by mined pattern (overflow of the budget under pattern=\"other\")", patterns);
        r.register(
            "log_pattern_info",
            "Template text of each live pattern id (value 1)",
            info,
        );
        r.register(
            "log_ssh_auth_failures",
            "Failed SSH authentications, by reason",
            ssh_fail,
        );
        r.register("log_ssh_auth_failures_by_ip", "Failed SSH authentications by source address, within the per-source budget (ip=\"other\" beyond it)", ssh_ip);
        r.register(
            "log_ssh_logins",
            "Accepted SSH logins, by method",
            ssh_login,
        );
        r.register(
            "log_fail2ban_bans",
            "fail2ban actions, by jail and action",
            f2b,
        );
        r.register(
            "log_firewall_blocks",
            "Packets logged by the firewall, by action and protocol",
            fw,
        );
        r.register(
            "log_postgres_errors",
            "PostgreSQL errors (critical = FATAL or PANIC), by SQLSTATE class",
            pg,
        );
        r.register("log_certbot_renewals", "certbot renewal outcomes", cb);
        r
    }
}

impl Collector for LogsCollector {
    fn name(&self) -> &'static str {
        "logs"
    }

    fn collect<'a>(&'a self, _scope: &'a Scope) -> BoxFuture<'a, Result<Collected, CollectError>> {
        Box::pin(async move {
            Ok(Collected {
                registry: self.encode(),
                targets: Vec::new(),
            })
        })
    }

    fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let handles: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for LogsCollector {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The registration entry for [`super::COLLECTORS`].
pub const SPEC: super::CollectorSpec = super::CollectorSpec {
    name: "logs",
    help: "metrics derived from log files",
    default_enabled: true,
    build: LogsCollector::build,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_file_with_impossible_counts_keeps_its_position_and_restarts_the_counters() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("src.json");
        let mut cp = Checkpoint {
            version: 1,
            journal_cursor: Some("s=abc".into()),
            ..Checkpoint::default()
        };
        cp.counters.lines[1] = 41;
        cp.counters.ssh_by_ip.insert("1.2.3.4".into(), 7);
        save_checkpoint(&p, &cp).expect("save");
        let back = load_checkpoint(&p).expect("loads");
        assert_eq!(back.counters.lines[1], 41, "plausible counts are restored");
        assert_eq!(back.counters.max_count(), 41);

        cp.counters.ssh_by_ip.insert("5.6.7.8".into(), u64::MAX - 1);
        save_checkpoint(&p, &cp).expect("save");
        let back = load_checkpoint(&p).expect("loads");
        assert_eq!(back.counters.max_count(), 0, "counters restart from zero");
        assert_eq!(
            back.journal_cursor.as_deref(),
            Some("s=abc"),
            "position kept"
        );
    }

    #[test]
    fn analyze_counts_levels_failures_and_security() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("auth.log");
        std::fs::write(
            &p,
            b"Jan  5 10:00:00 h sshd[1]: Failed password for root from 1.2.3.4 port 22 ssh2\n\
             Jan  5 10:00:01 h sshd[1]: message repeated 2 times: [ Failed password for root from 1.2.3.4 port 22]\n\
             Jan  5 10:00:02 h sshd[2]: Accepted publickey for bob from 10.0.0.1 port 5 ssh2\n\
             Jan  5 10:00:03 h sshd[3]: Failed password for invalid user x from 5.6.7.8 port 1 ssh2\n\
             not a syslog line\n\
             Jan  5 10:00:04 h cron[4]: job \xff done\n",
        )
        .expect("write");
        let s = analyze(&p, "syslog", None, 1).expect("analyze");
        assert_eq!(s.parse_failures, 1);
        assert_eq!(s.lines.get("error"), Some(&4));
        assert_eq!(s.lines.get("info"), Some(&2));
        assert_eq!(s.ssh_auth_failures.get("password"), Some(&3));
        assert_eq!(s.ssh_auth_failures.get("invalid_user"), Some(&1));
        // An IP budget of one: the second address goes to "other".
        assert_eq!(s.ssh_auth_failures_by_ip.get("1.2.3.4"), Some(&3));
        assert_eq!(s.ssh_auth_failures_by_ip.get("other"), Some(&1));
        assert_eq!(s.ssh_logins.get("publickey"), Some(&1));
        assert_eq!(s.dropped.get("invalid_utf8"), Some(&1));
        assert!(s.patterns >= 2);
    }
}
