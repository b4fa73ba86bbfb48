//! The logs collector on logs written during the test by real programs (PostgreSQL, sshd)
//! and by a writer that rotates its file while vitals restarts.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::support::postgres::Postgres;
use crate::support::sshd::Sshd;
use crate::support::vitals::Vitals;
use crate::support::{Sample, parse_samples, poll_until, sample_value, temp_dir};

fn wait_for(v: &Vitals, what: &str, check: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let mut last = Vec::new();
    let ok = poll_until(Duration::from_secs(30), || {
        last = parse_samples(&v.metrics());
        check(&last).then(|| last.clone())
    });
    ok.unwrap_or_else(|| {
        let logs: Vec<String> = last
            .iter()
            .filter(|s| s.name.starts_with("log_"))
            .map(|s| format!("{}{:?} {}", s.name, s.labels, s.value))
            .collect();
        panic!(
            "timed out waiting for {what}; log samples:\n{}\n{}",
            logs.join("\n"),
            v.logs()
        )
    })
}

fn value(s: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    sample_value(s, name, labels).unwrap_or(0.0)
}

#[test]
fn postgresql_errors_from_its_own_log() {
    let pg = Postgres::start();
    pg.psql("alter system set log_line_prefix = '%m [%p] %e '");
    pg.psql("select pg_reload_conf()");
    let state = temp_dir("logs-pg");
    let config = format!(
        "exporter:\n  logs:\n    state_dir: {}\n    poll_interval: 50ms\n    sources:\n      - name: pg\n        path: {}\n        parser: postgresql\n        start_at: beginning\n",
        state.path().display(),
        pg.log_path().display()
    );
    let v = Vitals::builder()
        .config(&config)
        .arg("--no-collector.process")
        .start();
    // Provoke an undefined table (42P01) and a failed password (28P01).
    let out = pg.psql_tcp(pg.user(), pg.password(), "select * from no_such_table");
    assert!(!out.status.success());
    let out = pg.psql_tcp(pg.user(), "wrong-password", "select 1");
    assert!(!out.status.success());
    let s = wait_for(&v, "PostgreSQL errors", |s| {
        value(
            s,
            "log_postgres_errors_total",
            &[("severity", "error"), ("sqlstate_class", "42")],
        ) >= 1.0
            && value(
                s,
                "log_postgres_errors_total",
                &[("severity", "critical"), ("sqlstate_class", "28")],
            ) >= 1.0
    });
    assert!(
        value(
            &s,
            "log_lines_total",
            &[("source", "pg"), ("level", "info")]
        ) >= 1.0,
        "startup LOG lines"
    );
    assert_eq!(
        value(&s, "log_parse_failures_total", &[("source", "pg")]),
        0.0
    );
    assert!(
        value(
            &s,
            "log_pattern_lines_total",
            &[("source", "pg"), ("level", "error")]
        ) >= 1.0
    );
    assert!(
        s.iter().any(|x| x.name == "log_pattern_info"
            && x.labels
                .get("template")
                .is_some_and(|t| t.contains("does not exist"))),
        "a pattern template names the error"
    );
    // The password never reaches a log series.
    assert!(!v.metrics().contains("wrong-password"));
}

#[test]
fn sshd_logins_and_failures_from_its_own_log() {
    let sshd = Sshd::start();
    let state = temp_dir("logs-ssh");
    let config = format!(
        "exporter:\n  logs:\n    state_dir: {}\n    poll_interval: 50ms\n    sources:\n      - name: sshd\n        path: {}\n        parser: raw\n        start_at: beginning\n",
        state.path().display(),
        sshd.log_path().display()
    );
    let v = Vitals::builder()
        .config(&config)
        .arg("--no-collector.process")
        .start();
    let ok = sshd.ssh("true");
    assert!(ok.status.success(), "key login: {ok:?}");
    for _ in 0..2 {
        let bad = sshd.ssh_password("not-the-password", "true");
        assert!(!bad.status.success());
    }
    let s = wait_for(&v, "ssh events", |s| {
        value(s, "log_ssh_logins_total", &[("method", "publickey")]) >= 1.0
            && value(s, "log_ssh_auth_failures_total", &[("reason", "password")]) >= 2.0
    });
    assert!(
        value(
            &s,
            "log_ssh_auth_failures_by_ip_total",
            &[("ip", "127.0.0.1")]
        ) >= 2.0
    );
}

fn write_lines(path: &Path, from: u64, to: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log for append");
    let mut buf = String::new();
    for i in from..to {
        buf.push_str(&format!("line {i} of the rotation test\n"));
    }
    f.write_all(buf.as_bytes()).expect("append lines");
}

fn total(s: &[Sample]) -> f64 {
    s.iter()
        .filter(|x| {
            x.name == "log_lines_total" && x.labels.get("source").is_some_and(|v| v == "rot")
        })
        .map(|x| x.value)
        .sum()
}

#[test]
fn no_line_lost_across_rotation_and_restarts() {
    rotation_and_restarts(true);
}

/// The same schedule with inotify off: the polling fallback loses nothing either.
#[test]
fn no_line_lost_across_rotation_and_restarts_polling() {
    rotation_and_restarts(false);
}

fn rotation_and_restarts(inotify: bool) {
    const LINES: u64 = 100_000;
    const BATCH: u64 = 2_000;
    let dir = temp_dir("logs-rot");
    let log = dir.path().join("app.log");
    let state = dir.path().join("state");
    let config = format!(
        "exporter:\n  logs:\n    state_dir: {}\n    poll_interval: 20ms\n    inotify: {inotify}\n    checkpoint_interval: 100ms\n    sources:\n      - name: rot\n        path: {}\n        parser: raw\n        start_at: beginning\n",
        state.display(),
        log.display()
    );
    let start = || {
        Vitals::builder()
            .config(&config)
            .arg("--no-collector.process")
            .arg("--log.level=debug")
            .start()
    };
    let mut v = Some(start());
    let mut rotations = (0, 0);
    let mut n = 0;
    let mut batch_no = 0;
    while n < LINES {
        write_lines(&log, n, n + BATCH);
        n += BATCH;
        batch_no += 1;
        match batch_no % 5 {
            // rename rotation (also while vitals is down, see below)
            2 => {
                std::fs::rename(&log, dir.path().join(format!("app.log.{batch_no}")))
                    .expect("rename");
                rotations.0 += 1;
            }
            // copytruncate, once vitals has caught up (the schedule that loses nothing)
            4 if v.is_some() => {
                let vit = v.as_ref().expect("running");
                wait_for(vit, "catch-up before copytruncate", |s| {
                    total(s) as u64 == n
                });
                std::fs::copy(&log, dir.path().join(format!("app.log.{batch_no}"))).expect("copy");
                std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&log)
                    .expect("truncate");
                rotations.1 += 1;
            }
            _ => {}
        }
        if batch_no == 12 {
            // Crash: SIGKILL, then write and rotate while down, then restart.
            let mut crashed = v.take().expect("running");
            crashed.kill_hard();
        }
        if batch_no == 14 {
            v = Some(start());
        }
        if batch_no == 30 {
            let mut stopped = v.take().expect("running");
            assert!(stopped.sigterm().success());
            v = Some(start());
        }
    }
    let vit = v.as_ref().expect("running at the end");
    let s = wait_for(vit, "every line counted", |s| total(s) as u64 >= LINES);
    std::thread::sleep(Duration::from_millis(300));
    let s2 = parse_samples(&vit.metrics());
    assert_eq!(total(&s) as u64, LINES, "counted vs written");
    assert_eq!(total(&s2) as u64, LINES, "nothing counted twice later");
    assert!(rotations.0 >= 5 && rotations.1 >= 3, "{rotations:?}");
    assert!(
        value(
            &s2,
            "log_rotations_total",
            &[("source", "rot"), ("kind", "truncate")]
        ) >= 1.0
    );
}

/// A real systemd-journald, standalone: a journal namespace of its own, run in a private
/// mount namespace where /run and /etc/systemd are bind mounts of this temp dir, so its
/// sockets and (volatile) journal files live in the temp dir and nothing of the host changes.
/// Entries are written by util-linux `logger` through journald's syslog socket, as a program
/// would; the journal files are read by vitals with `journalctl --directory`.
struct Journal {
    dir: tempfile::TempDir,
    namespace: String,
    child: Option<std::process::Child>,
    logger: std::path::PathBuf,
}

impl Journal {
    fn start() -> Journal {
        let mut j = Journal::prepare();
        j.run();
        j
    }

    /// Settles the directories (so that [`Journal::directory`] is known) without starting
    /// journald yet.
    fn prepare() -> Journal {
        crate::support::require_binary("/lib/systemd/systemd-journald", "systemd");
        crate::support::require_any_binary(&["journalctl"], "systemd");
        crate::support::require_any_binary(&["unshare"], "util-linux");
        let logger = crate::support::require_any_binary(&["logger"], "bsdutils");
        let dir = temp_dir("journal");
        let namespace = format!(
            "vitals{}x{}",
            std::process::id(),
            dir.path()
                .file_name()
                .map(|n| n
                    .to_string_lossy()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), ""))
                .unwrap_or_default()
        );
        std::fs::create_dir_all(dir.path().join("run")).expect("mkdir run");
        std::fs::create_dir_all(dir.path().join("etc")).expect("mkdir etc");
        // Volatile storage: the files go to /run/log/journal/<machine-id>.<namespace>.
        crate::support::write_file(
            &dir.path()
                .join("etc")
                .join(format!("journald@{namespace}.conf")),
            "[Journal]\nStorage=volatile\nRateLimitBurst=0\n",
        );
        Journal {
            dir,
            namespace,
            child: None,
            logger,
        }
    }

    /// Starts journald and waits until its socket and journal file exist.
    fn run(&mut self) {
        let unshare = crate::support::require_any_binary(&["unshare"], "util-linux");
        let journald = "/lib/systemd/systemd-journald";
        let dir = &self.dir;
        let log = std::fs::File::create(dir.path().join("journald.log")).expect("journald log");
        let child = std::process::Command::new(unshare)
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount --bind "$1" /run && mount --bind "$2" /etc/systemd && exec "$3" "$4""#)
            .arg("sh")
            .arg(dir.path().join("run"))
            .arg(dir.path().join("etc"))
            .arg(journald)
            .arg(&self.namespace)
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("starting systemd-journald under unshare");
        self.child = Some(child);
        let j = &mut *self;
        let ready = poll_until(Duration::from_secs(20), || {
            (j.socket().exists() && j.directory().join("system.journal").exists()).then_some(())
        });
        if ready.is_none() {
            let status = j.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            panic!(
                "systemd-journald did not start ({status:?}):\n{}",
                crate::support::tail(&j.dir.path().join("journald.log"), 40)
            );
        }
    }

    /// The directory holding the journal files (for `journald.directory`).
    fn directory(&self) -> std::path::PathBuf {
        let machine = std::fs::read_to_string("/etc/machine-id").expect("/etc/machine-id");
        self.dir.path().join("run/log/journal").join(format!(
            "{}.{}",
            machine.trim(),
            self.namespace
        ))
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir
            .path()
            .join("run/systemd")
            .join(format!("journal.{}", self.namespace))
            .join("dev-log")
    }

    /// Writes `n` entries (one per line to `logger`) with this identifier and priority.
    fn write(&self, identifier: &str, priority: &str, n: usize, text: &str) {
        let mut child = std::process::Command::new(&self.logger)
            .arg("--socket")
            .arg(self.socket())
            .args(["--socket-errors=on", "-t", identifier, "-p"])
            .arg(format!("user.{priority}"))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawning logger");
        let mut input = String::new();
        for i in 0..n {
            input.push_str(&format!("{text} {i}\n"));
        }
        child
            .stdin
            .take()
            .expect("logger stdin")
            .write_all(input.as_bytes())
            .expect("writing to logger");
        assert!(child.wait().expect("logger").success(), "logger failed");
    }

    /// Waits until journalctl sees `n` entries of `identifier` (journald received them all).
    fn wait_entries(&self, identifier: &str, n: usize) {
        let found = poll_until(Duration::from_secs(20), || {
            let out = std::process::Command::new("journalctl")
                .arg(format!("--directory={}", self.directory().display()))
                .arg(format!("--identifier={identifier}"))
                .args(["--output=cat", "--no-pager"])
                .output()
                .ok()?;
            let count = String::from_utf8_lossy(&out.stdout).lines().count();
            (count >= n).then_some(count)
        });
        assert!(
            found.is_some(),
            "journald did not store {n} entries of {identifier}"
        );
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            crate::support::kill_and_reap(c);
        }
    }
}

fn journal_config(state: &Path, directory: &Path, extra: &str) -> String {
    format!(
        "exporter:\n  logs:\n    state_dir: {}\n    checkpoint_interval: 100ms\n    sources:\n      - name: jd\n        journald:\n          identifiers: [vtapp, vtother]\n          directory: {}\n        parser: journald\n{extra}",
        state.display(),
        directory.display()
    )
}

fn level_counts(s: &[Sample], source: &str) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = s
        .iter()
        .filter(|x| {
            x.name == "log_lines_total"
                && x.labels.get("source").is_some_and(|v| v == source)
                && x.value > 0.0
        })
        .map(|x| {
            (
                x.labels.get("level").cloned().unwrap_or_default(),
                x.value as u64,
            )
        })
        .collect();
    v.sort();
    v
}

fn expect_levels(v: &Vitals, source: &str, want: &[(&str, u64)]) {
    let want: Vec<(String, u64)> = want.iter().map(|(l, n)| (l.to_string(), *n)).collect();
    wait_for(v, &format!("levels {want:?}"), |s| {
        level_counts(s, source) == want
    });
    // Nothing more arrives later (no double count).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(level_counts(&parse_samples(&v.metrics()), source), want);
}

#[test]
fn journald_entries_counted_by_level_across_sigterm_and_sigkill() {
    let journal = Journal::start();
    // Entries from before vitals' first start are not counted (start_at: end, like tail -F).
    journal.write("vtapp", "crit", 5, "before the first start");
    journal.wait_entries("vtapp", 5);
    let dir = temp_dir("logs-journal");
    let state = dir.path().join("state");
    let config = journal_config(&state, &journal.directory(), "");
    let start = || {
        let v = Vitals::builder()
            .config(&config)
            .arg("--no-collector.process")
            .start();
        wait_for(&v, "journalctl running", |s| {
            value(s, "log_journal_follower_up", &[("source", "jd")]) == 1.0
        });
        v
    };
    let mut v = start();
    journal.write("vtapp", "err", 3, "disk failure on sda");
    journal.write("vtapp", "warning", 2, "queue almost full");
    journal.write("vtother", "info", 4, "request served");
    // Not matched by the identifier filter.
    journal.write("unrelated", "err", 7, "not ours");
    expect_levels(&v, "jd", &[("error", 3), ("info", 4), ("warning", 2)]);
    let s = parse_samples(&v.metrics());
    assert!(
        s.iter().any(|x| x.name == "log_pattern_info"
            && x.labels.get("source").is_some_and(|v| v == "jd")
            && x.labels
                .get("template")
                .is_some_and(|t| t.contains("disk failure"))),
        "error entries are mined into patterns"
    );
    assert_eq!(
        value(&s, "log_parse_failures_total", &[("source", "jd")]),
        0.0
    );
    assert_eq!(value(&s, "log_read_errors_total", &[("source", "jd")]), 0.0);

    // SIGTERM, entries written while down, restart: counted once.
    assert!(v.sigterm().success());
    journal.write("vtapp", "err", 2, "written while stopped");
    journal.wait_entries("vtapp", 5 + 3 + 2 + 2);
    v = start();
    expect_levels(&v, "jd", &[("error", 5), ("info", 4), ("warning", 2)]);

    // SIGKILL while entries arrive: the restart continues from the last checkpoint's cursor
    // with the counters of the same checkpoint.
    journal.write("vtapp", "notice", 300, "batch before the crash");
    journal.write("vtapp", "debug", 200, "batch during the crash");
    v.kill_hard();
    journal.write("vtapp", "notice", 100, "written while crashed");
    v = start();
    expect_levels(
        &v,
        "jd",
        &[
            ("debug", 200),
            ("error", 5),
            ("info", 4),
            ("notice", 400),
            ("warning", 2),
        ],
    );
    assert_eq!(
        value(
            &parse_samples(&v.metrics()),
            "log_read_errors_total",
            &[("source", "jd")]
        ),
        0.0
    );
}

#[test]
fn journalctl_missing_is_counted_and_file_sources_keep_working() {
    let dir = temp_dir("logs-nojournalctl");
    let file = dir.path().join("app.log");
    write_lines(&file, 0, 1);
    let config = format!(
        "{}      - name: file\n        path: {}\n        parser: raw\n",
        journal_config(&dir.path().join("state"), &dir.path().join("journal"), ""),
        file.display()
    );
    // No directory on PATH holds journalctl.
    let empty = dir.path().join("empty-path");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let v = Vitals::builder()
        .config(&config)
        .arg("--no-collector.process")
        .env("PATH", &empty.display().to_string())
        .start();
    write_lines(&file, 1, 11);
    let s = wait_for(&v, "a journalctl failure and the file's lines", |s| {
        value(s, "log_read_errors_total", &[("source", "jd")]) >= 1.0 && total_of(s, "file") == 10.0
    });
    assert_eq!(
        value(&s, "log_journal_follower_up", &[("source", "jd")]),
        0.0
    );
    assert!(
        v.logs().contains("journalctl not found"),
        "the log says why: {}",
        v.logs()
    );
}

#[test]
fn journalctl_exiting_is_restarted() {
    // The journal directory does not exist yet: journalctl exits with an error, is counted
    // and restarted with backoff, and follows once journald has created the directory.
    let dir = temp_dir("logs-journal-late");
    let state = dir.path().join("state");
    let mut journal = Journal::prepare();
    let config = journal_config(
        &state,
        &journal.directory(),
        "        start_at: beginning\n",
    );
    let v = Vitals::builder()
        .config(&config)
        .arg("--no-collector.process")
        .start();
    wait_for(&v, "journalctl failures", |s| {
        value(s, "log_read_errors_total", &[("source", "jd")]) >= 1.0
            && value(s, "log_journal_follower_up", &[("source", "jd")]) == 0.0
    });
    assert!(v.logs().contains("journalctl exited"), "{}", v.logs());
    journal.run();
    journal.write("vtapp", "err", 4, "after the journal appeared");
    let s = wait_for(&v, "entries once journalctl runs", |s| {
        value(
            s,
            "log_lines_total",
            &[("source", "jd"), ("level", "error")],
        ) == 4.0
    });
    assert_eq!(
        value(&s, "log_journal_follower_up", &[("source", "jd")]),
        1.0
    );
}

fn total_of(s: &[Sample], source: &str) -> f64 {
    s.iter()
        .filter(|x| {
            x.name == "log_lines_total" && x.labels.get("source").is_some_and(|v| v == source)
        })
        .map(|x| x.value)
        .sum()
}

/// Write-to-counted latency of file lines: each sample appends one line and scrapes
/// `/metrics` until it is counted. Returns sorted latencies.
fn file_latencies(inotify: bool, samples: usize) -> Vec<Duration> {
    let dir = temp_dir("logs-latency");
    let file = dir.path().join("app.log");
    write_lines(&file, 0, 1);
    let config = format!(
        "exporter:\n  logs:\n    state_dir: {}\n    poll_interval: 250ms\n    inotify: {inotify}\n    sources:\n      - name: lat\n        path: {}\n        parser: raw\n        start_at: beginning\n",
        dir.path().join("state").display(),
        file.display()
    );
    let v = Vitals::builder()
        .config(&config)
        .arg("--no-collector.process")
        .start();
    wait_for(&v, "the first line", |s| total_of(s, "lat") == 1.0);
    let mut out = Vec::new();
    for i in 0..samples as u64 {
        // Spread the writes evenly over the 250 ms polling period (the previous line was
        // counted right after a poll).
        std::thread::sleep(Duration::from_millis(5 + (i * 53) % 250));
        write_lines(&file, i + 1, i + 2);
        let t = std::time::Instant::now();
        let want = (i + 2) as f64;
        loop {
            if total_of(&parse_samples(&v.metrics()), "lat") >= want {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "line {i} not counted"
            );
        }
        out.push(t.elapsed());
    }
    out.sort();
    out
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[test]
fn inotify_counts_lines_sooner_than_polling() {
    const SAMPLES: usize = 40;
    let inotify = file_latencies(true, SAMPLES);
    let polling = file_latencies(false, SAMPLES);
    let report = format!(
        "write-to-counted latency over {SAMPLES} lines (scrape included): inotify p50 {:?} p95 {:?}; polling (250ms) p50 {:?} p95 {:?}",
        quantile(&inotify, 0.5),
        quantile(&inotify, 0.95),
        quantile(&polling, 0.5),
        quantile(&polling, 0.95)
    );
    eprintln!("{report}");
    assert!(
        quantile(&inotify, 0.95) < quantile(&polling, 0.5),
        "inotify should count lines sooner than polling: {report}"
    );
}

/// journalctl processes whose parent is `pid`.
fn journalctl_children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if comm.ends_with("(journalctl") && ppid == Some(pid) {
            found.push(child);
        }
    }
    found
}

#[test]
fn journald_reload_replaces_journalctl_and_keeps_counting() {
    let journal = Journal::start();
    let dir = temp_dir("logs-journal-reload");
    let config = journal_config(&dir.path().join("state"), &journal.directory(), "");
    let mut v = Vitals::builder()
        .config(&config)
        .arg("--no-collector.process")
        .start();
    let pid = v.pid().expect("vitals pid");
    wait_for(&v, "journalctl running", |s| {
        value(s, "log_journal_follower_up", &[("source", "jd")]) == 1.0
    });
    let before = journalctl_children(pid);
    assert_eq!(before.len(), 1, "one journalctl: {before:?}");
    journal.write("vtapp", "err", 3, "before the reload");
    expect_levels(&v, "jd", &[("error", 3)]);
    // A reload with a changed setting: the old follower stops (its journalctl is killed and
    // reaped), the new one continues from the saved cursor.
    v.write_config(&config.replace("checkpoint_interval: 100ms", "checkpoint_interval: 200ms"));
    v.sighup();
    let replaced = poll_until(Duration::from_secs(20), || {
        let now = journalctl_children(pid);
        (now.len() == 1 && now != before).then_some(now)
    });
    assert!(
        replaced.is_some(),
        "journalctl replaced by exactly one new process: {:?}\n{}",
        journalctl_children(pid),
        v.logs()
    );
    journal.write("vtapp", "err", 2, "after the reload");
    expect_levels(&v, "jd", &[("error", 5)]);
    for p in before {
        assert!(
            !Path::new(&format!("/proc/{p}")).exists()
                || std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .is_ok_and(|s| !s.contains("(journalctl)")),
            "the old journalctl {p} is gone"
        );
    }
}
