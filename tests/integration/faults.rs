//! Fault injection (issue 10, "Faults"): each test breaks one thing vitals depends on while it
//! runs, and asserts the same four properties:
//!
//! 1. vitals keeps serving: every `/metrics` during the fault answers 200 within its deadline;
//! 2. it reports the failure in metrics (the family and value are named in each test);
//! 3. it recovers by itself when the fault ends, in the same process (the recovery time is
//!    measured and printed, for docs/RELIABILITY.md);
//! 4. it loses no log line or alert that its guarantees cover (exact counts).
//!
//! Faults already proven elsewhere and not repeated here:
//! - log rotation (rename and copytruncate) with SIGKILL and SIGTERM restarts:
//!   `logs::no_line_lost_across_rotation_and_restarts`;
//! - Alertmanager stopped while alerts fire, with a sidecar restart in between:
//!   `alerting::alertmanager_outage_and_sidecar_restart_lose_no_alert`;
//! - Prometheus going away while the sidecar runs (signals down, anomaly held):
//!   `sidecar::sidecar_against_prometheus_backfilled_history`;
//! - unreachable and silent PostgreSQL targets (hung, refused) not delaying the others:
//!   `postgres::an_unreachable_target_does_not_delay_the_others`;
//! - a silent SSH server and an SSH host going away (stale data dropped after max_age):
//!   `ssh_disk::silent_servers_time_out_scrapes_stay_fast_and_stale_data_is_dropped`.
//!
//! Root ignores file permissions, and the tests run as root: the unreadable-file case runs
//! vitals through `setpriv` without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, so that it is
//! subject to permission checks like an unprivileged service. The read-only and full state
//! directory is a real tmpfs (64 KiB) mounted by the test, remounted read-only, or filled.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::alertmanager::Alertmanager;
use crate::support::postgres::{Postgres, SUPERUSER_PASSWORD};
use crate::support::prometheus::Prometheus;
use crate::support::sshd::Sshd;
use crate::support::vitals::{Vitals, VitalsBuilder};
use crate::support::{
    Sample, free_port, http_client, parse_samples, poll_until, require_binary, run_ok,
    sample_value, temp_dir, with_first_port,
};

/// How long a condition may take to show up before a test fails.
const WAIT: Duration = Duration::from_secs(30);

/// The scrape deadline sent as `X-Prometheus-Scrape-Timeout-Seconds` in these tests.
const DEADLINE_S: f64 = 3.0;

/// GETs `/metrics` as Prometheus would, with a [`DEADLINE_S`] deadline; asserts a 200 that
/// arrives within the deadline and returns the samples and the time taken.
fn scrape(v: &Vitals) -> (Vec<Sample>, Duration) {
    let started = Instant::now();
    let response = http_client()
        .get(format!("{}/metrics", v.base_url()))
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            DEADLINE_S.to_string(),
        )
        .send()
        .unwrap_or_else(|e| panic!("GET /metrics failed during a fault: {e}\n{}", v.logs()));
    let status = response.status().as_u16();
    let body = response.text().unwrap_or_default();
    let took = started.elapsed();
    assert_eq!(status, 200, "GET /metrics answered {status}: {body}");
    assert!(
        took < Duration::from_secs_f64(DEADLINE_S),
        "a scrape during the fault took {took:?}, beyond its {DEADLINE_S}s deadline"
    );
    (parse_samples(&body), took)
}

/// Scrapes until `check` holds (every scrape checked by [`scrape`]); panics with the last
/// samples of the families starting with `prefix` and the logs otherwise. Returns the samples,
/// the slowest scrape and how many scrapes it took.
fn scrape_until(
    v: &Vitals,
    what: &str,
    prefix: &str,
    check: impl Fn(&[Sample]) -> bool,
) -> (Vec<Sample>, Duration, usize) {
    let mut last = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut n = 0;
    let found = poll_until(WAIT, || {
        let (s, took) = scrape(v);
        slowest = slowest.max(took);
        n += 1;
        last = s;
        check(&last).then(|| last.clone())
    });
    let samples = found.unwrap_or_else(|| {
        let ours: Vec<String> = last
            .iter()
            .filter(|s| s.name.starts_with(prefix))
            .map(|s| format!("{}{:?} {}", s.name, s.labels, s.value))
            .collect();
        panic!(
            "timed out waiting for {what}; samples:\n{}\n{}",
            ours.join("\n"),
            v.logs()
        )
    });
    (samples, slowest, n)
}

fn value(s: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    sample_value(s, name, labels).unwrap_or(0.0)
}

/// The resident set size of a process, in bytes, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

const PG_CTL: &str = "/usr/lib/postgresql/15/bin/pg_ctl";

/// `pg_ctl <action>` on the harness' cluster, as the postgres OS user, on the same port.
fn pg_ctl(pg: &Postgres, action: &str) {
    let pg_ctl = require_binary(PG_CTL, "postgresql-15");
    run_ok(
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_ctl)
            .arg("--pgdata")
            .arg(pg.data_dir())
            .arg("--log")
            .arg(pg.log_path())
            .args(["--mode", "fast", "--wait", "--timeout", "30"])
            .arg("-o")
            .arg(format!("-p {}", pg.port()))
            .arg(action),
        &format!("pg_ctl {action}"),
    );
}

fn pg_target(name: &str, pg: &Postgres, extra: &str) -> String {
    format!(
        "      - name: {name}\n        host: 127.0.0.1\n        port: {}\n        user: postgres\n        password: ${{VITALS_IT_PG_PW}}\n        sslmode: disable\n        connect_timeout: 1s\n{extra}",
        pg.port()
    )
}

fn start_pg_vitals(targets: &str) -> Vitals {
    without_processes(&format!("exporter:\n  postgres:\n    targets:\n{targets}"))
        .env("VITALS_IT_PG_PW", SUPERUSER_PASSWORD)
        .start()
}

fn vitals_sessions(pg: &Postgres) -> u64 {
    pg.psql("select count(*) from pg_stat_activity where application_name = 'vitals'")
        .parse()
        .unwrap_or(u64::MAX)
}

#[test]
fn postgres_stopped_then_restarted_is_down_then_up_in_the_same_process() {
    let pg = Postgres::start();
    let v = start_pg_vitals(&pg_target("db", &pg, "        max_connections: 4\n"));
    let pid = v.pid();
    let up = |s: &[Sample]| sample_value(s, "pg_up", &[("target", "db")]);
    let connect_errors = |s: &[Sample]| {
        value(
            s,
            "pg_scrape_errors_total",
            &[("target", "db"), ("reason", "connect")],
        )
    };
    let (s, _, _) = scrape_until(&v, "pg_up 1", "pg_", |s| up(s) == Some(1.0));
    let errors_before = connect_errors(&s);

    // The server stops: pg_up 0 and a connect error, every scrape within its deadline.
    pg_ctl(&pg, "stop");
    let stopped = Instant::now();
    let (s, slowest_down, _) = scrape_until(&v, "pg_up 0 with a connect error", "pg_", |s| {
        up(s) == Some(0.0) && connect_errors(s) > errors_before
    });
    let detected = stopped.elapsed();
    assert!(
        s.iter().all(|x| !x.name.starts_with("pg_stat_database")),
        "no stale pg_stat_database data while the server is down"
    );
    // A few more seconds of outage, scraped as Prometheus would (every scrape checked).
    let mut slowest = slowest_down;
    let outage_end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < outage_end {
        let (s, took) = scrape(&v);
        slowest = slowest.max(took);
        assert_eq!(up(&s), Some(0.0));
        std::thread::sleep(Duration::from_millis(200));
    }

    // It starts again on the same port: vitals reconnects by itself.
    pg_ctl(&pg, "start");
    let started = Instant::now();
    let (s, took, _) = scrape_until(&v, "pg_up 1 again", "pg_", |s| {
        up(s) == Some(1.0)
            && sample_value(
                s,
                "pg_stat_database_xact_commit_total",
                &[("target", "db"), ("datname", "postgres")],
            )
            .is_some()
    });
    let recovered = started.elapsed();
    slowest = slowest.max(took);
    assert_eq!(v.pid(), pid, "the same vitals process");
    let mut v = v;
    assert!(v.has_exited().is_none(), "vitals is still running");
    let sessions = vitals_sessions(&pg);
    assert!(
        sessions <= 4,
        "{sessions} vitals sessions, above the target's max_connections 4"
    );
    assert!(value(&s, "vitals_postgres_connections", &[("target", "db")]) <= 4.0);
    eprintln!(
        "postgres stop/start: pg_up 0 after {:.2}s, pg_up 1 {:.2}s after the restart, slowest scrape {:.0} ms, {sessions} sessions after recovery",
        detected.as_secs_f64(),
        recovered.as_secs_f64(),
        slowest.as_secs_f64() * 1000.0
    );
}

#[test]
fn a_lock_held_on_a_table_fails_the_fan_out_not_the_scrape() {
    let pg = Postgres::start();
    pg.psql("create table locked_t (id int primary key); insert into locked_t select generate_series(1, 100); analyze locked_t");
    // `short` and `long` read the per-database families in every scrape: `short` gives up on
    // the lock after its lock_timeout (1s); `long` would wait 30s, so the scrape deadline cuts
    // it. `bg` serves them from a snapshot refreshed in the background every second, which
    // must not be served once older than three intervals.
    let fan = "        tables_refresh_interval: 0s\n";
    let targets = format!(
        "{}{}{}",
        pg_target("short", &pg, fan),
        pg_target(
            "long",
            &pg,
            &format!("{fan}        lock_timeout: 30s\n        statement_timeout: 30s\n")
        ),
        pg_target("bg", &pg, "        tables_refresh_interval: 1s\n")
    );
    let v = start_pg_vitals(&targets);
    let table = |s: &[Sample], t: &str| {
        sample_value(
            s,
            "pg_stat_user_tables_seq_scan_total",
            &[("target", t), ("relname", "locked_t")],
        )
        .is_some()
    };
    let timeouts = |s: &[Sample], t: &str| {
        value(
            s,
            "pg_scrape_errors_total",
            &[("target", t), ("reason", "timeout")],
        )
    };
    let (s, _, _) = scrape_until(&v, "locked_t in every target", "pg_", |s| {
        table(s, "short") && table(s, "long") && table(s, "bg")
    });
    let before = (timeouts(&s, "short"), timeouts(&s, "long"));

    // Another session holds an ACCESS EXCLUSIVE lock: pg_total_relation_size(locked_t) in the
    // fan-out statement waits for it.
    let mut holder = pg.session("postgres");
    holder.send("begin; lock table locked_t in access exclusive mode;");
    poll_until(WAIT, || {
        (pg.psql("select count(*) from pg_locks where mode = 'AccessExclusiveLock' and relation = 'locked_t'::regclass and granted") == "1").then_some(())
    })
    .expect("the lock is held");
    let mut slowest = Duration::ZERO;
    for round in 0..3 {
        let (s, took) = scrape(&v);
        slowest = slowest.max(took);
        let bg_age = value(
            &s,
            "vitals_postgres_fanout_age_seconds",
            &[("target", "bg")],
        );
        assert!(
            !table(&s, "bg") || bg_age <= 3.5,
            "round {round}: bg served per-database data {bg_age}s old (interval 1s)"
        );
        for t in ["short", "long", "bg"] {
            assert_eq!(
                sample_value(&s, "pg_up", &[("target", t)]),
                Some(1.0),
                "{t}"
            );
            assert!(
                sample_value(
                    &s,
                    "pg_stat_database_xact_commit_total",
                    &[("target", t), ("datname", "postgres")]
                )
                .is_some(),
                "round {round}: {t}'s server-wide families are still there"
            );
        }
        for t in ["short", "long"] {
            assert!(!table(&s, t), "round {round}: {t} served locked_t");
        }
        assert!(
            timeouts(&s, "short") > before.0 && timeouts(&s, "long") > before.1,
            "round {round}: the lock waits are counted as timeouts: {:?} -> ({}, {})",
            before,
            timeouts(&s, "short"),
            timeouts(&s, "long")
        );
    }
    // bg's snapshot, more than three intervals old by now, is no longer served.
    scrape_until(&v, "bg's stale per-database data dropped", "pg_", |s| {
        !table(s, "bg")
    });
    // The wait cut at the deadline does not linger on the server (bg's refreshes wait at
    // most their lock_timeout of 1s).
    let lingering = poll_until(Duration::from_secs(5), || {
        (pg.psql("select count(*) from pg_stat_activity where application_name = 'vitals' and wait_event_type = 'Lock' and now() - query_start > interval '3 s'") == "0").then_some(())
    });
    assert!(
        lingering.is_some(),
        "vitals queries still wait for the lock after their scrape ended: {}",
        pg.psql("select pid, state, wait_event_type, query from pg_stat_activity where application_name = 'vitals'")
    );

    // The lock goes away: the families come back by themselves.
    drop(holder);
    let released = Instant::now();
    scrape_until(&v, "locked_t again", "pg_", |s| {
        table(s, "short") && table(s, "long") && table(s, "bg")
    });
    let recovered = released.elapsed();
    let sessions = vitals_sessions(&pg);
    assert!(
        sessions <= 20,
        "{sessions} vitals sessions for two targets of 10"
    );
    eprintln!(
        "postgres lock: slowest scrape while locked {:.0} ms (deadline {DEADLINE_S}s), families back {:.2}s after the lock was released",
        slowest.as_secs_f64() * 1000.0,
        recovered.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// SSH

#[test]
fn sshd_stopped_restarted_and_with_a_changed_host_key() {
    let mut sshd = Sshd::start();
    let known_hosts = sshd.known_hosts_path().to_path_buf();
    let pinned = std::fs::read_to_string(&known_hosts).expect("known_hosts");
    let config = format!(
        "exporter:\n  ssh_disk:\n    targets:\n      - name: host\n        host: {}\n        port: {}\n        user: {}\n        interval: 1s\n        max_age: 3s\n        connect_timeout: 1s\n        key_file: '{}'\n        known_hosts: '{}'\n",
        sshd.host(),
        sshd.port(),
        sshd.user(),
        sshd.client_key_path().display(),
        known_hosts.display()
    );
    let v = without_processes(&config).start();
    let up = |s: &[Sample]| sample_value(s, "ssh_target_up", &[("target", "host")]);
    let failures = |s: &[Sample], reason: &str| {
        value(
            s,
            "ssh_target_failures_total",
            &[("target", "host"), ("reason", reason)],
        )
    };
    let has_data = |s: &[Sample]| {
        s.iter().any(|x| {
            x.name == "node_filesystem_size_bytes"
                && x.labels.get("target").map(String::as_str) == Some("host")
        })
    };
    scrape_until(&v, "the host up with data", "ssh_", |s| {
        up(s) == Some(1.0) && has_data(s)
    });

    // sshd stops: up 0 with reason connect, then the data goes after max_age.
    sshd.stop();
    let stopped = Instant::now();
    scrape_until(&v, "up 0, reason connect", "ssh_", |s| {
        up(s) == Some(0.0) && failures(s, "connect") >= 1.0
    });
    let down_after = stopped.elapsed();
    scrape_until(&v, "stale data dropped", "ssh_", |s| !has_data(s));
    let dropped_after = stopped.elapsed();
    assert!(
        dropped_after >= Duration::from_secs(1),
        "data dropped {dropped_after:?} after the stop, before max_age"
    );

    // sshd comes back: up 1 and data again, same process.
    sshd.restart();
    let restarted = Instant::now();
    let (s, _, _) = scrape_until(&v, "up 1 again", "ssh_", |s| {
        up(s) == Some(1.0) && has_data(s)
    });
    let recovered = restarted.elapsed();
    let hostkey_before = failures(&s, "hostkey");

    // The server gets new host keys (a reinstall, or an attacker): never accepted.
    let changed = Instant::now();
    sshd.regenerate_host_keys();
    sshd.restart();
    scrape_until(&v, "up 0, reason hostkey", "ssh_", |s| {
        up(s) == Some(0.0) && failures(s, "hostkey") > hostkey_before
    });
    let rejected_after = changed.elapsed();
    let (s, _, _) = scrape_until(&v, "data dropped after the key change", "ssh_", |s| {
        !has_data(s)
    });
    let count = failures(&s, "hostkey");
    // Still refused a few refreshes later, and known_hosts was not rewritten.
    let (s, _, _) = scrape_until(&v, "more hostkey refusals", "ssh_", |s| {
        failures(s, "hostkey") >= count + 2.0
    });
    assert_eq!(up(&s), Some(0.0), "a changed host key is never accepted");
    assert!(!has_data(&s));
    assert_eq!(
        std::fs::read_to_string(&known_hosts).expect("known_hosts"),
        pinned,
        "known_hosts is left as it was"
    );
    let (_, html) = v.get("/");
    assert!(html.contains("host key changed"), "{html}");
    eprintln!(
        "sshd: up 0 {:.2}s after the stop, data dropped after {:.2}s (max_age 3s), up 1 {:.2}s after the restart; changed host key refused after {:.2}s",
        down_after.as_secs_f64(),
        dropped_after.as_secs_f64(),
        recovered.as_secs_f64(),
        rejected_after.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Log files

fn append_lines(path: &Path, tag: &str, n: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} for append: {e}", path.display()));
    let mut buf = String::new();
    for i in 0..n {
        buf.push_str(&format!("{tag} line {i}\n"));
    }
    f.write_all(buf.as_bytes()).expect("append lines");
}

fn lines_of(s: &[Sample], source: &str) -> u64 {
    s.iter()
        .filter(|x| {
            x.name == "log_lines_total" && x.labels.get("source").is_some_and(|v| v == source)
        })
        .map(|x| x.value as u64)
        .sum()
}

/// Waits until `source` has counted exactly `expected` lines, and checks it stays there.
fn expect_lines(v: &Vitals, source: &str, expected: u64, step: &str) -> Vec<Sample> {
    scrape_until(v, &format!("{step}: {expected} lines"), "log_", |s| {
        lines_of(s, source) >= expected
    });
    std::thread::sleep(Duration::from_millis(300));
    let (s, _) = scrape(v);
    assert_eq!(
        lines_of(&s, source),
        expected,
        "{step}: counted lines vs written lines"
    );
    s
}

fn logs_config(state: &Path, log: &Path, extra: &str) -> String {
    format!(
        "exporter:\n  logs:\n    state_dir: {}\n    poll_interval: 50ms\n    checkpoint_interval: 100ms\n{extra}    sources:\n      - name: app\n        path: {}\n        parser: raw\n        start_at: beginning\n",
        state.display(),
        log.display()
    )
}

/// `setpriv` dropping the capabilities that let root ignore file permissions.
fn without_dac_override() -> Vec<String> {
    let setpriv = require_binary("/usr/bin/setpriv", "util-linux");
    vec![
        setpriv.display().to_string(),
        "--bounding-set".into(),
        "-dac_override,-dac_read_search".into(),
    ]
}

/// `vitals exporter` following `log` without the capabilities that bypass file permissions.
/// inotify's safety-net rescan is set far above the poll interval, so that the waits below
/// show an unreadable file being retried at the poll interval, not at the rescan.
fn start_unprivileged(state: &Path, log: &Path) -> Vitals {
    without_processes(&logs_config(
        state,
        log,
        "    inotify_rescan_interval: 10s\n",
    ))
    .wrapper(without_dac_override())
    .start()
}

/// `vitals exporter` with `config` and the process collector off (nothing here is about it).
fn without_processes(config: &str) -> VitalsBuilder {
    Vitals::builder()
        .config(config)
        .arg("--no-collector.process")
}

#[test]
fn log_file_deleted_replaced_truncated_unreadable_and_overlong() {
    let dir = temp_dir("faults-logs");
    let log = dir.path().join("app.log");
    let state = dir.path().join("state");
    let v = start_unprivileged(&state, &log);
    let pid = v.pid().expect("running");
    let rotations = |s: &[Sample], kind: &str| {
        value(
            s,
            "log_rotations_total",
            &[("source", "app"), ("kind", kind)],
        )
    };
    let mut expected = 0;

    append_lines(&log, "first", 100);
    expected += 100;
    expect_lines(&v, "app", expected, "initial");

    // Deleted, then a new file at the path.
    std::fs::remove_file(&log).expect("rm");
    std::thread::sleep(Duration::from_millis(200));
    append_lines(&log, "recreated", 50);
    expected += 50;
    let s = expect_lines(&v, "app", expected, "deleted and recreated");
    assert!(rotations(&s, "rename") >= 1.0);

    // Replaced atomically by another file (rename over it, as editors and some tools do).
    let replacement = dir.path().join("app.log.new");
    append_lines(&replacement, "replacement", 30);
    std::fs::rename(&replacement, &log).expect("rename over");
    expected += 30;
    let s = expect_lines(&v, "app", expected, "replaced");
    assert!(rotations(&s, "rename") >= 2.0);

    // Truncated in place, then written again.
    let truncations = rotations(&s, "truncate");
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .expect("truncate");
    append_lines(&log, "after truncation", 20);
    expected += 20;
    let s = expect_lines(&v, "app", expected, "truncated");
    assert_eq!(rotations(&s, "truncate"), truncations + 1.0);

    // One 10 MB line, then normal lines: the long one is counted once, cut and counted as
    // truncated; the ones after it are all counted; memory stays bounded.
    let rss_before = rss_bytes(pid);
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open");
        let mut huge = vec![b'x'; 10 * 1024 * 1024];
        huge.push(b'\n');
        f.write_all(&huge).expect("10 MB line");
    }
    append_lines(&log, "after the long line", 5);
    expected += 6;
    let s = expect_lines(&v, "app", expected, "10 MB line");
    assert_eq!(
        value(
            &s,
            "log_lines_dropped_total",
            &[("source", "app"), ("reason", "truncated")]
        ),
        1.0
    );
    let rss_after = rss_bytes(pid);
    assert!(
        rss_after < rss_before + 8 * 1024 * 1024,
        "RSS grew from {rss_before} to {rss_after} bytes reading a 10 MB line"
    );

    // Rotated, and the new file is unreadable (mode 000, e.g. created by a tool with the
    // wrong umask): read errors are counted, nothing else stops; once readable, every
    // line in it is counted.
    std::fs::rename(&log, dir.path().join("app.log.1")).expect("rotate");
    // Written and made unreadable under another name, then renamed into place: created
    // readable at the path, a poll between the write and the chmod would open it (seen in CI).
    let staged = dir.path().join("app.log.staged");
    append_lines(&staged, "unreadable", 10);
    crate::support::chmod(&staged, 0o000);
    std::fs::rename(&staged, &log).expect("unreadable file into place");
    let (s, _, _) = scrape_until(&v, "read errors", "log_", |s| {
        value(s, "log_read_errors_total", &[("source", "app")]) >= 10.0
    });
    assert_eq!(lines_of(&s, "app"), expected, "nothing read from it yet");
    crate::support::chmod(&log, 0o644);
    let readable = Instant::now();
    expected += 10;
    let s = expect_lines(&v, "app", expected, "readable again");
    let recovered = readable.elapsed();
    assert!(
        recovered < Duration::from_secs(5),
        "lines of a file made readable counted after {recovered:?}: retried at the 10 s rescan, not the 50 ms poll"
    );
    let errors = value(&s, "log_read_errors_total", &[("source", "app")]);
    std::thread::sleep(Duration::from_millis(300));
    let (s, _) = scrape(&v);
    assert_eq!(
        value(&s, "log_read_errors_total", &[("source", "app")]),
        errors,
        "no more read errors once the file is readable"
    );

    // The followed file loses its permissions: the open handle keeps reading it.
    crate::support::chmod(&log, 0o000);
    append_lines(&log, "while mode 000", 10);
    expected += 10;
    expect_lines(&v, "app", expected, "mode 000 on the open file");
    // vitals restarts while the file is unreadable: it cannot reopen it, counts read errors,
    // and resumes at its saved position once it can (nothing counted twice).
    let mut v = v;
    assert!(v.sigterm().success(), "{}", v.logs());
    let first_logs = v.stderr();
    drop(v);
    append_lines(&log, "while down", 10);
    let v = start_unprivileged(&state, &log);
    let (s, _, _) = scrape_until(&v, "read errors after the restart", "log_", |s| {
        value(s, "log_read_errors_total", &[("source", "app")]) >= errors + 10.0
    });
    assert_eq!(
        lines_of(&s, "app"),
        expected,
        "nothing read while unreadable"
    );
    crate::support::chmod(&log, 0o644);
    expected += 10;
    expect_lines(&v, "app", expected, "readable after the restart");

    let logs = format!("{first_logs}{}", v.stderr());
    let warnings = logs
        .lines()
        .filter(|l| l.contains("level=warn") && l.contains("log read error"))
        .count();
    assert_eq!(
        warnings, 2,
        "one warning per process for one unreadable file, not one per poll:\n{logs}"
    );
    eprintln!(
        "logs: {expected} lines counted exactly across delete, replace, truncate, a 10 MB line (RSS {} -> {} KiB), an unreadable new file ({errors} read errors; counted {:.2}s after chmod 644) and a restart while unreadable",
        rss_before / 1024,
        rss_after / 1024,
        recovered.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// State directory read-only and full

/// A tmpfs of 64 KiB mounted on a temp dir for the test, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Tmpfs {
        let dir = temp_dir("faults-tmpfs");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running mount failed: {e}"));
        assert!(
            out.status.success(),
            "mounting a tmpfs failed (these tests need root with CAP_SYS_ADMIN, as in CI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, mode: &str) {
        run_ok(
            Command::new("mount")
                .args(["-o", &format!("remount,{mode}")])
                .arg(self.dir.path()),
            &format!("remount {mode}"),
        );
    }

    /// Fills the file system with one file until ENOSPC; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        let chunk = vec![0u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        let _ = f.flush();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Lines counted in the checkpoint file of source `app` (what a restart resumes from).
fn checkpointed_lines(state: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(state.join("app.json")).ok()?;
    let json: Value = serde_json::from_str(&text).ok()?;
    json["counters"]["lines"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).sum())
}

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".tmp."))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn log_state_dir_read_only_then_full_then_writable() {
    let fs = Tmpfs::mount();
    let state = fs.path().to_path_buf();
    let dir = temp_dir("faults-state");
    let log = dir.path().join("app.log");
    let config = logs_config(&state, &log, "");
    let start = || without_processes(&config).start();
    let mut v = start();
    let cp_errors = |s: &[Sample]| value(s, "log_checkpoint_errors_total", &[("source", "app")]);
    let wait_checkpoint = |n: u64, what: &str| -> Duration {
        let t = Instant::now();
        poll_until(WAIT, || {
            (checkpointed_lines(&state) == Some(n)).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "{what}: the checkpoint never showed {n} lines (it shows {:?})",
                checkpointed_lines(&state)
            )
        });
        t.elapsed()
    };
    append_lines(&log, "before", 100);
    expect_lines(&v, "app", 100, "before the fault");
    wait_checkpoint(100, "before the fault");

    // Read-only: checkpoints fail and are counted, lines are still counted.
    fs.remount("ro");
    append_lines(&log, "read-only", 100);
    scrape_until(&v, "checkpoint errors (read-only)", "log_", |s| {
        cp_errors(s) >= 2.0
    });
    expect_lines(&v, "app", 200, "read-only state dir");
    assert_eq!(
        checkpointed_lines(&state),
        Some(100),
        "nothing could be written"
    );
    fs.remount("rw");
    let ro_recovery = wait_checkpoint(200, "writable again");

    // Full: the same, and a failed write leaves no partial temporary file behind.
    let filler = fs.fill();
    let (s, _) = scrape(&v);
    let errors = cp_errors(&s);
    append_lines(&log, "full", 100);
    scrape_until(&v, "checkpoint errors (full)", "log_", |s| {
        cp_errors(s) >= errors + 2.0
    });
    expect_lines(&v, "app", 300, "full state dir");
    assert_eq!(checkpointed_lines(&state), Some(200));
    // A crash while the disk is full: what is on disk is the last good checkpoint.
    v.kill_hard();
    drop(v);
    assert_eq!(
        temporaries(&state),
        Vec::<String>::new(),
        "failed checkpoint writes left temporary files on the full disk"
    );
    // Started again on the still full disk: it resumes from the checkpoint of 200 and
    // re-reads the rest, exactly 300, and counts its own failed checkpoints.
    let v = start();
    let s = expect_lines(&v, "app", 300, "restarted on a full state dir");
    assert!(
        cp_errors(&s) >= 1.0,
        "the new process counts its failed saves"
    );
    assert_eq!(checkpointed_lines(&state), Some(200));
    std::fs::remove_file(&filler).expect("remove filler");
    let full_recovery = wait_checkpoint(300, "space freed");
    assert_eq!(temporaries(&state), Vec::<String>::new());
    eprintln!(
        "state dir: checkpoint saved {:.2}s after remount rw, {:.2}s after space was freed; lines exact across a SIGKILL and a restart on the full disk",
        ro_recovery.as_secs_f64(),
        full_recovery.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Sidecar

/// An always-firing recommendation rule, as in alerting.rs.
fn sidecar_config(prom_port: u16, am_url: &str, queue: &Path) -> String {
    format!(
        r#"sidecar:
  prometheus: {{url: "http://127.0.0.1:{prom_port}", timeout: 1s, retries: 0}}
  alertmanagers:
    - url: "{am_url}"
      timeout: 2s
      retries: 0
  interval: 1s
  alert_resend_delay: 2s
  alert_queue: {{path: "{}"}}
  default_signals: false
  default_recommendations: false
  recommendations:
    - id: always_faults
      category: configuration
      severity: warning
      condition: 'label_replace(vector(7), "target", "faults", "", "")'
      title: 'Rule faults always fires on {{{{target}}}}'
      target: '{{{{target}}}}'
      description: 'the condition returned {{{{value}}}}'
      remediation: ['nothing to do, it is a test']
"#,
        queue.display()
    )
}

/// The sum of every sample of `name` (whatever the labels).
fn total(s: &[Sample], name: &str) -> f64 {
    s.iter().filter(|x| x.name == name).map(|x| x.value).sum()
}

/// Prometheus' and Alertmanager's own outages while the sidecar runs are covered by
/// sidecar.rs and alerting.rs (see the module doc); this one starts the sidecar with neither
/// of them reachable and its queue's file system read-only, then brings each back in turn,
/// with a SIGKILL of the sidecar while Alertmanager is still away.
#[test]
fn sidecar_started_without_prometheus_alertmanager_or_a_writable_queue_recovers() {
    let prom_port = free_port();
    let am_port = free_port();
    let am_url = format!("http://127.0.0.1:{am_port}");
    let fs = Tmpfs::mount();
    let queue = fs.path().join("alerts.json");
    fs.remount("ro");
    let config = sidecar_config(prom_port, &am_url, &queue);
    let start = || {
        Vitals::builder()
            .subcommand("sidecar")
            .config(&config)
            .start()
    };
    let mut v = start();
    let query_errors = |s: &[Sample]| {
        value(s, "vitals_sidecar_queries_total", &[("result", "error")])
            + total(s, "vitals_sidecar_recommendation_errors_total")
    };
    // Cycles run and count their failed queries while nothing answers on the port.
    let (s, _, _) = scrape_until(&v, "failed queries counted", "vitals_sidecar", |s| {
        value(s, "vitals_sidecar_cycles_total", &[]) >= 3.0 && query_errors(s) >= 2.0
    });
    assert_eq!(total(&s, "vitals_sidecar_alerts_active"), 0.0);

    // Prometheus appears on the configured port: the rule fires; delivery fails (no
    // Alertmanager) and the queue cannot be saved (read-only): both counted.
    let prom = with_first_port(prom_port, || Prometheus::start(""));
    assert_eq!(prom.port(), prom_port, "Prometheus could not take its port");
    let appeared = Instant::now();
    scrape_until(
        &v,
        "the alert queued, unsent and unsaved",
        "vitals_sidecar",
        |s| {
            total(s, "vitals_sidecar_alerts_active") >= 1.0
                && total(s, "vitals_sidecar_alerts_failed_total") >= 1.0
                && value(s, "vitals_sidecar_alert_queue_length", &[]) >= 1.0
                && value(s, "vitals_sidecar_alert_queue_save_errors_total", &[]) >= 1.0
        },
    );
    let queued_after = appeared.elapsed();
    assert!(!queue.exists());

    // Writable again: the queue is saved by itself.
    fs.remount("rw");
    let writable = Instant::now();
    poll_until(WAIT, || {
        std::fs::read_to_string(&queue)
            .ok()
            .filter(|t| t.contains("always_faults"))
    })
    .unwrap_or_else(|| {
        panic!(
            "the queue file was not written after remount rw\n{}",
            v.logs()
        )
    });
    let saved_after = writable.elapsed();
    let (s, _) = scrape(&v);
    let errors = value(&s, "vitals_sidecar_alert_queue_save_errors_total", &[]);
    std::thread::sleep(Duration::from_secs(2));
    let (s, _) = scrape(&v);
    assert_eq!(
        value(&s, "vitals_sidecar_alert_queue_save_errors_total", &[]),
        errors,
        "no save errors once writable"
    );

    // A crash while Alertmanager is still away; the new process takes over the saved queue.
    v.kill_hard();
    drop(v);
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let v = start();

    // Alertmanager appears: the alert arrives, with the start time from before the crash.
    let am = with_first_port(am_port, Alertmanager::start);
    assert_eq!(am.port(), am_port, "Alertmanager could not take its port");
    let am_back = Instant::now();
    let fired = poll_until(WAIT, || {
        am.alerts()
            .into_iter()
            .find(|a| a["labels"]["id"] == "always_faults")
    })
    .unwrap_or_else(|| {
        panic!(
            "the alert did not reach Alertmanager: {:#?}\n{}",
            am.alerts(),
            v.logs()
        )
    });
    let delivered_after = am_back.elapsed();
    let starts_ms = fired["startsAt"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(i64::MAX, |t| t.timestamp_millis());
    assert!(
        starts_ms < killed_ms,
        "the alert keeps its start from before the SIGKILL: {fired}"
    );
    scrape_until(&v, "the queue drained", "vitals_sidecar", |s| {
        value(s, "vitals_sidecar_alert_queue_length", &[]) == 0.0
            && total(s, "vitals_sidecar_alerts_sent_total") >= 1.0
    });
    eprintln!(
        "sidecar: alert queued {:.2}s after Prometheus appeared; queue file written {:.2}s after its file system became writable; after a SIGKILL, delivered {:.2}s after Alertmanager appeared, with its original startsAt",
        queued_after.as_secs_f64(),
        saved_after.as_secs_f64(),
        delivered_after.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// SIGKILL at random points

/// xorshift64*, seeded from the clock (or `VITALS_FAULTS_SEED`), printed for reruns.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("VITALS_FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
            | 1;
        eprintln!("faults: random seed {seed} (set VITALS_FAULTS_SEED to repeat)");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[test]
fn sigkill_at_random_points_loses_no_log_line() {
    const KILLS: usize = 8;
    let dir = temp_dir("faults-kill");
    let log = dir.path().join("app.log");
    let state = dir.path().join("state");
    let config = logs_config(&state, &log, "");
    let start = || without_processes(&config).start();
    let mut rng = Rng::new();

    // A writer appends continuously and rotates (rename) every 3000 lines.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, log, dir) = (
            stop.clone(),
            written.clone(),
            log.clone(),
            dir.path().to_path_buf(),
        );
        std::thread::spawn(move || {
            let mut rotation = 0;
            while !stop.load(Ordering::Relaxed) {
                let n = written.load(Ordering::Relaxed);
                append_lines(&log, &format!("batch {n}"), 50);
                written.fetch_add(50, Ordering::Relaxed);
                if (n + 50) % 3000 == 0 {
                    rotation += 1;
                    std::fs::rename(&log, dir.join(format!("app.log.{rotation}"))).expect("rotate");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // A scraper scrapes whichever vitals runs, as Prometheus would.
    let current: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let scrapes_ok = Arc::new(AtomicU64::new(0));
    let scraper = {
        let (stop, current, ok) = (stop.clone(), current.clone(), scrapes_ok.clone());
        std::thread::spawn(move || {
            let client = http_client();
            while !stop.load(Ordering::Relaxed) {
                let url = current.lock().map(|c| c.clone()).unwrap_or(None);
                if let Some(url) = url
                    && client
                        .get(format!("{url}/metrics"))
                        .timeout(Duration::from_secs(2))
                        .send()
                        .is_ok_and(|r| r.status() == 200)
                {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let mut delays = Vec::new();
    for _ in 0..KILLS {
        let mut v = start();
        *current.lock().expect("lock") = Some(v.base_url());
        let delay = Duration::from_millis(100 + rng.below(900));
        delays.push(delay.as_millis());
        std::thread::sleep(delay);
        *current.lock().expect("lock") = None;
        v.kill_hard();
        drop(v);
        std::thread::sleep(Duration::from_millis(rng.below(300)));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    scraper.join().expect("scraper");
    let total = written.load(Ordering::Relaxed);

    let v = start();
    let restarted = Instant::now();
    expect_lines(&v, "app", total, "after the last SIGKILL");
    let caught_up = restarted.elapsed();
    let served = scrapes_ok.load(Ordering::Relaxed);
    assert!(
        served >= KILLS as u64,
        "only {served} scrapes answered while vitals ran between kills"
    );
    eprintln!(
        "sigkill: {KILLS} kills after {delays:?} ms, {total} lines written with rotations, all counted exactly once {:.2}s after the last restart; {served} scrapes answered in between",
        caught_up.as_secs_f64()
    );
}
