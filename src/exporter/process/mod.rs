//! The `process` collector: named process groups from /proc, with process-exporter's metric
//! names (`namedprocess_namegroup_*`, label `groupname`) so its dashboards keep working.
//!
//! Each scrape walks /proc once. Per process, what never changes (command line, executable,
//! group decision) is cached under the identity (pid, start time), and unmatched processes
//! cost one read of `stat`. Group counters are kept monotonic across member exits by adding
//! each exited member's last values to the group's total. A restart is counted when a
//! group's root process (one whose parent is not in the group) goes away and a new root
//! appears within [`RESTART_WINDOW`]; worker churn under a root (PostgreSQL backends) is not
//! a restart.

pub mod matcher;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use super::collector::{BoxFuture, CollectError, Collected, Collector, Scope};
use super::procfs;
use crate::config::{Config, ProcessConfig};
use matcher::{Matchers, ProcView};

/// How long a departed root process waits for a successor to count as a restart.
pub const RESTART_WINDOW: Duration = Duration::from_secs(600);
/// How often a process' open-files limit is re-read.
const LIMITS_TTL: Duration = Duration::from_secs(60);
/// How long the counters of a group with no members are kept, so that a group that comes
/// back continues its counters instead of resetting them.
const GROUP_TTL: Duration = Duration::from_secs(3600);

/// Process states as exported in `namedprocess_namegroup_states{state}`.
const STATES: [&str; 6] = [
    "Running", "Sleeping", "Waiting", "Zombie", "Stopped", "Other",
];

fn state_index(c: char) -> usize {
    match c {
        'R' => 0,
        'S' => 1,
        'D' => 2,
        'Z' => 3,
        'T' | 't' => 4,
        _ => 5,
    }
}

/// Raw per-process counters, in the kernel's units.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    utime: u64,
    stime: u64,
    read_bytes: u64,
    write_bytes: u64,
    voluntary: u64,
    nonvoluntary: u64,
    minflt: u64,
    majflt: u64,
}

impl Counters {
    /// Adds `o`, saturating: /proc values are the kernel's, but a sum must not wrap.
    fn add(&mut self, o: &Counters) {
        self.utime = self.utime.saturating_add(o.utime);
        self.stime = self.stime.saturating_add(o.stime);
        self.read_bytes = self.read_bytes.saturating_add(o.read_bytes);
        self.write_bytes = self.write_bytes.saturating_add(o.write_bytes);
        self.voluntary = self.voluntary.saturating_add(o.voluntary);
        self.nonvoluntary = self.nonvoluntary.saturating_add(o.nonvoluntary);
        self.minflt = self.minflt.saturating_add(o.minflt);
        self.majflt = self.majflt.saturating_add(o.majflt);
    }
}

#[derive(Debug)]
struct ProcEntry {
    starttime: u64,
    group: Option<Arc<str>>,
    last: Counters,
    was_root: bool,
    max_fds: Option<u64>,
    limits_read: Option<Instant>,
    seen_in_scrape: u64,
}

#[derive(Debug, Default)]
struct GroupAcc {
    dead: Counters,
    pending_departures: VecDeque<Instant>,
    restarts: u64,
    last_member: Option<Instant>,
}

/// One scrape's view of a group.
#[derive(Debug, Default)]
struct Snapshot {
    num_procs: u64,
    threads: u64,
    resident: u64,
    virtual_bytes: u64,
    swapped: u64,
    fds: u64,
    worst_fd_ratio: f64,
    states: [u64; 6],
    oldest_start_ticks: Option<u64>,
    live: Counters,
}

#[derive(Debug, Default)]
struct State {
    procs: HashMap<u32, ProcEntry>,
    groups: HashMap<Arc<str>, GroupAcc>,
    scrapes: u64,
    vanished: u64,
    read_errors: BTreeMap<&'static str, u64>,
    users: Option<(Instant, HashMap<u32, String>)>,
}

/// Collects named process groups from a /proc tree.
pub struct ProcessCollector {
    walker: Arc<Walker>,
}

/// The /proc walk and its cached state; shared with the blocking task of each scrape.
struct Walker {
    proc_path: PathBuf,
    matchers: Matchers,
    watch: Vec<String>,
    sys: procfs::SystemInfo,
    state: Mutex<State>,
}

impl ProcessCollector {
    /// Builds the collector; `Ok(None)` when no group is configured.
    pub fn from_config(cfg: &ProcessConfig) -> Result<Option<Self>, String> {
        if cfg.groups.is_empty() && cfg.watch.is_empty() {
            return Ok(None);
        }
        let matchers = Matchers::compile(cfg).map_err(|(k, r)| format!("{k}: {r}"))?;
        let sys = procfs::SystemInfo::read(&cfg.proc_path)
            .map_err(|e| format!("reading {}/stat: {e}", cfg.proc_path.display()))?;
        Ok(Some(Self {
            walker: Arc::new(Walker {
                proc_path: cfg.proc_path.clone(),
                matchers,
                watch: cfg.watch.clone(),
                sys,
                state: Mutex::new(State::default()),
            }),
        }))
    }

    fn build(config: &Config) -> Result<Option<Arc<dyn Collector>>, String> {
        Ok(Self::from_config(&config.exporter.process)?.map(|c| Arc::new(c) as Arc<dyn Collector>))
    }

    /// Runs one walk synchronously (for tools and tests that have no async runtime).
    pub fn scrape_now(&self) -> Result<Registry, CollectError> {
        self.walker.scrape()
    }
}

impl Walker {
    /// Walks /proc and returns this scrape's registry.
    fn scrape(&self) -> Result<Registry, CollectError> {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *guard;
        state.scrapes += 1;
        let scrape_no = state.scrapes;
        let now = Instant::now();
        let dir = std::fs::read_dir(&self.proc_path).map_err(|source| CollectError::Io {
            what: self.proc_path.display().to_string(),
            source,
        })?;
        let mut buf = String::with_capacity(4096);
        let mut bytes = Vec::with_capacity(4096);
        let mut snaps: HashMap<Arc<str>, Snapshot> = HashMap::new();
        // pid -> (group, ppid, is_new) for matched processes of this scrape.
        let mut members: Vec<(u32, Arc<str>, u32, bool)> = Vec::new();
        let needs_user = self.matchers_need_user();
        if needs_user {
            refresh_users(state, now);
        }
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let base = self.proc_path.join(pid.to_string());
            if read_into(&base.join("stat"), &mut buf).is_err() {
                state.vanished += 1;
                continue;
            }
            let stat = match procfs::parse_stat(&buf) {
                Ok(s) => s,
                Err(_) => {
                    *state.read_errors.entry("stat").or_default() += 1;
                    continue;
                }
            };
            let known = state
                .procs
                .get(&pid)
                .is_some_and(|e| e.starttime == stat.starttime);
            if !known {
                if let Some(old) = state.procs.remove(&pid) {
                    retire(state, old, now);
                }
                let group = self.classify(&base, &stat, &mut buf, &mut bytes, state, needs_user);
                state.procs.insert(
                    pid,
                    ProcEntry {
                        starttime: stat.starttime,
                        group,
                        last: Counters::default(),
                        was_root: false,
                        max_fds: None,
                        limits_read: None,
                        seen_in_scrape: scrape_no,
                    },
                );
            }
            let Some(entry) = state.procs.get_mut(&pid) else {
                continue;
            };
            entry.seen_in_scrape = scrape_no;
            let Some(group) = entry.group.clone() else {
                continue;
            };
            // Status, io, fds and limits only for processes that belong to a group.
            let status = match read_into(&base.join("status"), &mut buf) {
                Ok(()) => procfs::parse_status(&buf),
                Err(_) => {
                    *state.read_errors.entry("status").or_default() += 1;
                    procfs::Status::default()
                }
            };
            let io = match read_into(&base.join("io"), &mut buf) {
                Ok(()) => procfs::parse_io(&buf).ok(),
                Err(_) => None,
            };
            if io.is_none() {
                *state.read_errors.entry("io").or_default() += 1;
            }
            let fds = match procfs::count_fds(&base.join("fd")) {
                Ok(n) => Some(n),
                Err(_) => {
                    *state.read_errors.entry("fd").or_default() += 1;
                    None
                }
            };
            if entry
                .limits_read
                .is_none_or(|t| now.duration_since(t) > LIMITS_TTL)
            {
                entry.limits_read = Some(now);
                entry.max_fds = match read_into(&base.join("limits"), &mut buf) {
                    Ok(()) => procfs::parse_max_open_files(&buf).ok().flatten(),
                    Err(_) => {
                        *state.read_errors.entry("limits").or_default() += 1;
                        None
                    }
                };
            }
            let io = io.unwrap_or(procfs::Io {
                read_bytes: entry.last.read_bytes,
                write_bytes: entry.last.write_bytes,
            });
            entry.last = Counters {
                utime: stat.utime,
                stime: stat.stime,
                read_bytes: io.read_bytes,
                write_bytes: io.write_bytes,
                voluntary: status.voluntary_ctxt_switches,
                nonvoluntary: status.nonvoluntary_ctxt_switches,
                minflt: stat.minflt,
                majflt: stat.majflt,
            };
            let snap = snaps.entry(group.clone()).or_default();
            snap.num_procs += 1;
            snap.threads = snap.threads.saturating_add(stat.num_threads);
            snap.resident = snap
                .resident
                .saturating_add(stat.rss_pages.saturating_mul(self.sys.page_size));
            snap.virtual_bytes = snap.virtual_bytes.saturating_add(stat.vsize);
            snap.swapped = snap.swapped.saturating_add(status.swapped_bytes);
            if let Some(n) = fds {
                snap.fds += n;
                if let Some(max) = entry.max_fds.filter(|m| *m > 0) {
                    snap.worst_fd_ratio = snap.worst_fd_ratio.max(n as f64 / max as f64);
                }
            }
            snap.states[state_index(stat.state)] += 1;
            snap.oldest_start_ticks = Some(
                snap.oldest_start_ticks
                    .map_or(stat.starttime, |o| o.min(stat.starttime)),
            );
            snap.live.add(&entry.last);
            members.push((pid, group, stat.ppid, !known));
        }

        // Processes not seen in this walk have exited.
        let gone: Vec<u32> = state
            .procs
            .iter()
            .filter(|(_, e)| e.seen_in_scrape != scrape_no)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            if let Some(old) = state.procs.remove(&pid) {
                retire(state, old, now);
            }
        }

        // Roots and restarts.
        let group_of: HashMap<u32, &Arc<str>> =
            members.iter().map(|(p, g, _, _)| (*p, g)).collect();
        for (pid, group, ppid, is_new) in &members {
            let root = group_of.get(ppid).is_none_or(|g| *g != group);
            if let Some(e) = state.procs.get_mut(pid) {
                e.was_root = root;
            }
            let acc = state.groups.entry(group.clone()).or_default();
            acc.last_member = Some(now);
            if root && *is_new && scrape_no > 1 {
                while acc
                    .pending_departures
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
                {
                    acc.pending_departures.pop_front();
                }
                if acc.pending_departures.pop_front().is_some() {
                    acc.restarts += 1;
                }
            }
        }
        let watched: HashSet<&str> = self.watch.iter().map(String::as_str).collect();
        state.groups.retain(|name, acc| {
            watched.contains(&**name)
                || acc
                    .last_member
                    .is_some_and(|t| now.duration_since(t) < GROUP_TTL)
        });
        for w in &self.watch {
            let key: Arc<str> = Arc::from(w.as_str());
            state.groups.entry(key.clone()).or_default();
            snaps.entry(key).or_default();
        }
        Ok(self.encode(state, &snaps))
    }

    fn matchers_need_user(&self) -> bool {
        self.matchers.needs_user()
    }

    fn classify(
        &self,
        base: &Path,
        stat: &procfs::Stat,
        buf: &mut String,
        bytes: &mut Vec<u8>,
        state: &mut State,
        needs_user: bool,
    ) -> Option<Arc<str>> {
        if self.matchers.is_empty() {
            return None;
        }
        bytes.clear();
        let cmdline = match std::fs::File::open(base.join("cmdline"))
            .and_then(|mut f| f.read_to_end(bytes))
        {
            Ok(_) => procfs::parse_cmdline(bytes),
            Err(_) => String::new(),
        };
        let exe = std::fs::read_link(base.join("exe"))
            .map(|p| {
                p.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
            .unwrap_or_default();
        let view = ProcView {
            comm: &stat.comm,
            exe: &exe,
            cmdline: &cmdline,
        };
        let user_name = if needs_user {
            let uid = read_into(&base.join("status"), buf)
                .ok()
                .and_then(|()| procfs::parse_status(buf).uid);
            match uid {
                Some(u) => state
                    .users
                    .as_ref()
                    .and_then(|(_, m)| m.get(&u).cloned())
                    .unwrap_or_else(|| u.to_string()),
                None => String::new(),
            }
        } else {
            String::new()
        };
        self.matchers
            .group(&view, &|| user_name.clone())
            .map(|g| Arc::from(g.as_str()))
    }

    fn encode(&self, state: &State, snaps: &HashMap<Arc<str>, Snapshot>) -> Registry {
        type L = Vec<(&'static str, String)>;
        let tck = self.sys.clk_tck as f64;
        let gauge = Family::<L, Gauge<f64, AtomicU64>>::default;
        let num_procs = gauge();
        let cpu = Family::<L, ConstCounterF>::default();
        let memory = gauge();
        let fds = gauge();
        let worst = gauge();
        let threads = gauge();
        let states = gauge();
        let oldest = gauge();
        let read = Family::<L, ConstCounterF>::default();
        let write = Family::<L, ConstCounterF>::default();
        let ctx = Family::<L, ConstCounterF>::default();
        let majflt = Family::<L, ConstCounterF>::default();
        let minflt = Family::<L, ConstCounterF>::default();
        let restarts = Family::<L, ConstCounterF>::default();
        let mut names: Vec<&Arc<str>> = snaps.keys().collect();
        names.sort();
        let empty = Snapshot::default();
        for name in names {
            let snap = snaps.get(name).unwrap_or(&empty);
            let acc = state.groups.get(name);
            let mut total = acc.map(|a| a.dead).unwrap_or_default();
            total.add(&snap.live);
            let g = |extra: Option<(&'static str, &str)>| -> L {
                let mut l = vec![("groupname", name.to_string())];
                if let Some((k, v)) = extra {
                    l.push((k, v.to_string()));
                }
                l
            };
            num_procs.get_or_create(&g(None)).set(snap.num_procs as f64);
            cpu.get_or_create(&g(Some(("mode", "user"))))
                .set(total.utime as f64 / tck);
            cpu.get_or_create(&g(Some(("mode", "system"))))
                .set(total.stime as f64 / tck);
            memory
                .get_or_create(&g(Some(("memtype", "resident"))))
                .set(snap.resident as f64);
            memory
                .get_or_create(&g(Some(("memtype", "virtual"))))
                .set(snap.virtual_bytes as f64);
            memory
                .get_or_create(&g(Some(("memtype", "swapped"))))
                .set(snap.swapped as f64);
            fds.get_or_create(&g(None)).set(snap.fds as f64);
            worst.get_or_create(&g(None)).set(snap.worst_fd_ratio);
            threads.get_or_create(&g(None)).set(snap.threads as f64);
            for (i, s) in STATES.iter().enumerate() {
                states
                    .get_or_create(&g(Some(("state", s))))
                    .set(snap.states[i] as f64);
            }
            if let Some(t) = snap.oldest_start_ticks {
                oldest
                    .get_or_create(&g(None))
                    .set(self.sys.boot_time as f64 + t as f64 / tck);
            }
            read.get_or_create(&g(None)).set(total.read_bytes as f64);
            write.get_or_create(&g(None)).set(total.write_bytes as f64);
            ctx.get_or_create(&g(Some(("ctxswitchtype", "voluntary"))))
                .set(total.voluntary as f64);
            ctx.get_or_create(&g(Some(("ctxswitchtype", "nonvoluntary"))))
                .set(total.nonvoluntary as f64);
            majflt.get_or_create(&g(None)).set(total.majflt as f64);
            minflt.get_or_create(&g(None)).set(total.minflt as f64);
            restarts
                .get_or_create(&g(None))
                .set(acc.map(|a| a.restarts).unwrap_or(0) as f64);
        }
        let mut r = Registry::default();
        let p = "namedprocess_namegroup_";
        r.register(
            format!("{p}num_procs"),
            "Number of processes in this group",
            num_procs,
        );
        r.register_with_unit(
            format!("{p}cpu"),
            "CPU time consumed by processes of this group, by mode",
            Unit::Seconds,
            cpu,
        );
        r.register_with_unit(
            format!("{p}memory"),
            "Memory of processes of this group, by memtype",
            Unit::Bytes,
            memory,
        );
        r.register(
            format!("{p}open_filedesc"),
            "Open file descriptors of processes of this group",
            fds,
        );
        r.register(format!("{p}worst_fd_ratio"), "Highest ratio of open file descriptors to the soft limit among processes of this group", worst);
        r.register(
            format!("{p}num_threads"),
            "Threads of processes of this group",
            threads,
        );
        r.register(
            format!("{p}states"),
            "Processes of this group by state",
            states,
        );
        r.register_with_unit(
            format!("{p}oldest_start_time"),
            "Start time of the oldest process of this group since the Unix epoch",
            Unit::Seconds,
            oldest,
        );
        r.register(
            format!("{p}read_bytes"),
            "Bytes read from storage by processes of this group",
            read,
        );
        r.register(
            format!("{p}write_bytes"),
            "Bytes written to storage by processes of this group",
            write,
        );
        r.register(
            format!("{p}context_switches"),
            "Context switches of processes of this group, by type",
            ctx,
        );
        r.register(
            format!("{p}major_page_faults"),
            "Major page faults of processes of this group",
            majflt,
        );
        r.register(
            format!("{p}minor_page_faults"),
            "Minor page faults of processes of this group",
            minflt,
        );
        r.register(
            format!("{p}restarts"),
            "Root processes of this group replaced by a new one",
            restarts,
        );
        let errors = Family::<L, ConstCounterF>::default();
        for f in ["stat", "status", "io", "fd", "limits"] {
            let n = state.read_errors.get(f).copied().unwrap_or(0);
            errors
                .get_or_create(&vec![("file", f.to_string())])
                .set(n as f64);
        }
        r.register(
            "vitals_process_read_errors",
            "Files under /proc that could not be read or parsed, by file (io needs privileges for other users' processes)",
            errors,
        );
        r.register(
            "vitals_process_vanished",
            "Processes that exited between listing /proc and reading them",
            ConstCounter::new(state.vanished as f64),
        );
        r
    }
}

/// Counters are built fresh for every scrape, so `inc_by(total)` exports the running total
/// that this collector keeps.
type ConstCounterF = prometheus_client::metrics::counter::Counter<f64, AtomicU64>;

trait SetTotal {
    fn set(&self, v: f64);
}

impl SetTotal for ConstCounterF {
    fn set(&self, v: f64) {
        self.inc_by(v);
    }
}

fn retire(state: &mut State, old: ProcEntry, now: Instant) {
    if let Some(g) = old.group {
        let acc = state.groups.entry(g).or_default();
        acc.dead.add(&old.last);
        if old.was_root {
            acc.pending_departures.push_back(now);
        }
    }
}

fn read_into(path: &Path, buf: &mut String) -> std::io::Result<()> {
    buf.clear();
    std::fs::File::open(path)?.read_to_string(buf).map(|_| ())
}

fn refresh_users(state: &mut State, now: Instant) {
    if state
        .users
        .as_ref()
        .is_some_and(|(t, _)| now.duration_since(*t) < Duration::from_secs(60))
    {
        return;
    }
    let mut map = HashMap::new();
    if let Ok(text) = std::fs::read_to_string("/etc/passwd") {
        for line in text.lines() {
            let mut f = line.split(':');
            if let (Some(name), Some(_), Some(uid)) = (f.next(), f.next(), f.next())
                && let Ok(uid) = uid.parse::<u32>()
            {
                map.insert(uid, name.to_string());
            }
        }
    }
    state.users = Some((now, map));
}

impl Collector for ProcessCollector {
    fn name(&self) -> &'static str {
        "process"
    }

    fn collect<'a>(&'a self, _scope: &'a Scope) -> BoxFuture<'a, Result<Collected, CollectError>> {
        Box::pin(async move {
            let walker = self.walker.clone();
            let registry = tokio::task::spawn_blocking(move || walker.scrape())
                .await
                .map_err(|e| CollectError::Other(format!("process walk failed: {e}")))??;
            Ok(Collected {
                registry,
                targets: Vec::new(),
            })
        })
    }
}

/// The registration entry for [`super::COLLECTORS`].
pub const SPEC: super::CollectorSpec = super::CollectorSpec {
    name: "process",
    help: "named process groups from /proc (process-exporter names)",
    default_enabled: true,
    build: ProcessCollector::build,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProcessGroup;

    /// A fake /proc tree with processes written as the kernel formats them.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    struct P<'a> {
        pid: u32,
        comm: &'a str,
        state: char,
        ppid: u32,
        utime: u64,
        start: u64,
        cmdline: &'a str,
        io: bool,
        fds: usize,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("stat"), "cpu 1 2 3\nbtime 1700000000\n")
                .expect("write");
            Self { dir }
        }

        fn add(&self, p: P<'_>) {
            let base = self.dir.path().join(p.pid.to_string());
            std::fs::create_dir_all(base.join("fd")).expect("mkdir");
            std::fs::write(
                base.join("stat"),
                format!(
                    "{} ({}) {} {} 1 1 0 -1 0 100 0 2 0 {} 5 0 0 20 0 3 0 {} 8192000 50 18446744073709551615\n",
                    p.pid, p.comm, p.state, p.ppid, p.utime, p.start
                ),
            )
            .expect("write stat");
            std::fs::write(
                base.join("status"),
                "Name:\tx\nUid:\t0\t0\t0\t0\nVmSwap:\t4 kB\nvoluntary_ctxt_switches:\t10\nnonvoluntary_ctxt_switches:\t1\n",
            )
            .expect("write status");
            let mut cmd = p.cmdline.replace(' ', "\0");
            if !cmd.is_empty() {
                cmd.push('\0');
            }
            std::fs::write(base.join("cmdline"), cmd).expect("write cmdline");
            if p.io {
                std::fs::write(base.join("io"), "read_bytes: 100\nwrite_bytes: 200\n")
                    .expect("write io");
            }
            std::fs::write(
                base.join("limits"),
                "Max open files            100                  100                  files\n",
            )
            .expect("write limits");
            for i in 0..p.fds {
                std::fs::write(base.join("fd").join(i.to_string()), "").expect("write fd");
            }
        }

        fn remove(&self, pid: u32) {
            std::fs::remove_dir_all(self.dir.path().join(pid.to_string())).expect("remove");
        }

        fn collector(&self, watch: &[&str]) -> ProcessCollector {
            let cfg = ProcessConfig {
                proc_path: self.dir.path().to_path_buf(),
                groups: vec![ProcessGroup {
                    name: "{comm}".into(),
                    comm: vec!["web server|db".into()],
                    exe: vec![],
                    cmdline: vec![],
                }],
                watch: watch.iter().map(|s| s.to_string()).collect(),
            };
            ProcessCollector::from_config(&cfg)
                .expect("builds")
                .expect("has groups")
        }
    }

    fn scrape(c: &ProcessCollector) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &c.scrape_now().expect("scrape"))
            .expect("encode");
        out
    }

    fn value(page: &str, series: &str) -> f64 {
        page.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no series {series} in\n{page}"))
    }

    fn p(pid: u32, comm: &str, state: char, ppid: u32, utime: u64, start: u64) -> P<'_> {
        P {
            pid,
            comm,
            state,
            ppid,
            utime,
            start,
            cmdline: "bin arg",
            io: true,
            fds: 2,
        }
    }

    #[test]
    fn groups_states_and_odd_comm() {
        let f = Fixture::new();
        f.add(p(10, "web server", 'S', 1, 100, 1000));
        f.add(p(11, "web server", 'Z', 10, 50, 1100));
        f.add(P {
            io: false,
            fds: 7,
            ..p(12, "web server", 'D', 10, 0, 1200)
        });
        f.add(p(20, "db", 'R', 1, 300, 900));
        f.add(p(30, "other", 'S', 1, 1, 1));
        // A process that exited between the listing and the read of its stat.
        std::fs::create_dir(f.dir.path().join("99")).expect("mkdir");
        let c = f.collector(&[]);
        let page = scrape(&c);
        let ws = "{groupname=\"web server\"";
        assert_eq!(
            value(&page, &format!("namedprocess_namegroup_num_procs{ws}}}")),
            3.0
        );
        assert_eq!(
            value(&page, &format!("namedprocess_namegroup_num_threads{ws}}}")),
            9.0
        );
        assert_eq!(
            value(
                &page,
                &format!("namedprocess_namegroup_open_filedesc{ws}}}")
            ),
            11.0
        );
        assert_eq!(
            value(
                &page,
                &format!("namedprocess_namegroup_worst_fd_ratio{ws}}}")
            ),
            0.07
        );
        assert_eq!(
            value(
                &page,
                &format!("namedprocess_namegroup_states{ws},state=\"Zombie\"}}")
            ),
            1.0
        );
        assert_eq!(
            value(
                &page,
                &format!("namedprocess_namegroup_states{ws},state=\"Waiting\"}}")
            ),
            1.0
        );
        assert_eq!(
            value(
                &page,
                &format!("namedprocess_namegroup_states{ws},state=\"Sleeping\"}}")
            ),
            1.0
        );
        let tck = rustix::param::clock_ticks_per_second() as f64;
        assert_eq!(
            value(
                &page,
                &format!("namedprocess_namegroup_cpu_seconds_total{ws},mode=\"user\"}}")
            ),
            150.0 / tck
        );
        assert_eq!(
            value(
                &page,
                &format!("namedprocess_namegroup_oldest_start_time_seconds{ws}}}")
            ),
            1_700_000_000.0 + 1000.0 / tck
        );
        assert_eq!(
            value(
                &page,
                &format!("namedprocess_namegroup_memory_bytes{ws},memtype=\"swapped\"}}")
            ),
            3.0 * 4096.0
        );
        assert_eq!(
            value(&page, "vitals_process_read_errors_total{file=\"io\"}"),
            1.0
        );
        assert_eq!(value(&page, "vitals_process_vanished_total"), 1.0);
        assert!(
            !page.contains("groupname=\"other\""),
            "unmatched processes are not exported"
        );
    }

    #[test]
    fn counters_stay_monotonic_and_restarts_count_roots_only() {
        let f = Fixture::new();
        f.add(p(10, "db", 'S', 1, 100, 1000));
        f.add(p(11, "db", 'S', 10, 40, 1100));
        let c = f.collector(&["db", "web server"]);
        let tck = rustix::param::clock_ticks_per_second() as f64;
        let cpu = "namedprocess_namegroup_cpu_seconds_total{groupname=\"db\",mode=\"user\"}";
        let restarts = "namedprocess_namegroup_restarts_total{groupname=\"db\"}";
        let page = scrape(&c);
        assert_eq!(value(&page, cpu), 140.0 / tck);
        assert_eq!(
            value(
                &page,
                "namedprocess_namegroup_num_procs{groupname=\"web server\"}"
            ),
            0.0
        );

        // A worker exits and another starts: worker churn, not a restart.
        f.remove(11);
        f.add(p(12, "db", 'S', 10, 5, 1200));
        let page = scrape(&c);
        assert_eq!(
            value(&page, cpu),
            145.0 / tck,
            "the exited worker's CPU is kept"
        );
        assert_eq!(value(&page, restarts), 0.0);

        // The root is replaced (and its pid reused with a new start time): a restart.
        f.remove(10);
        f.remove(12);
        f.add(p(10, "db", 'S', 1, 1, 5000));
        let page = scrape(&c);
        assert_eq!(value(&page, restarts), 1.0);
        assert_eq!(value(&page, cpu), 146.0 / tck);
        assert_eq!(
            value(&page, "namedprocess_namegroup_num_procs{groupname=\"db\"}"),
            1.0
        );

        // Everything gone: watched groups stay with zero processes and their counters.
        f.remove(10);
        let page = scrape(&c);
        assert_eq!(
            value(&page, "namedprocess_namegroup_num_procs{groupname=\"db\"}"),
            0.0
        );
        assert_eq!(value(&page, cpu), 146.0 / tck);
    }

    #[test]
    fn live_proc_finds_this_test_process() {
        let me = std::fs::read_to_string("/proc/self/stat").expect("read own stat");
        let comm = procfs::parse_stat(&me).expect("parse").comm;
        let cfg = ProcessConfig {
            groups: vec![ProcessGroup {
                name: "me".into(),
                comm: vec![regex::escape(&comm)],
                exe: vec![],
                cmdline: vec![],
            }],
            ..ProcessConfig::default()
        };
        let c = ProcessCollector::from_config(&cfg)
            .expect("builds")
            .expect("groups");
        let page = scrape(&c);
        assert!(value(&page, "namedprocess_namegroup_num_procs{groupname=\"me\"}") >= 1.0);
        assert!(
            value(
                &page,
                "namedprocess_namegroup_num_threads{groupname=\"me\"}"
            ) >= 1.0
        );
    }

    /// Fuzzing regression: sums of per-process counters overflowed on huge /proc values.
    #[test]
    fn counter_sums_saturate() {
        let big = Counters {
            utime: u64::MAX,
            read_bytes: u64::MAX - 1,
            ..Counters::default()
        };
        let mut total = big;
        total.add(&big);
        assert_eq!(total.utime, u64::MAX);
        assert_eq!(total.read_bytes, u64::MAX);
    }
}
