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
    const LINES: u64 = 100_000;
    const BATCH: u64 = 2_000;
    let dir = temp_dir("logs-rot");
    let log = dir.path().join("app.log");
    let state = dir.path().join("state");
    let config = format!(
        "exporter:\n  logs:\n    state_dir: {}\n    poll_interval: 20ms\n    checkpoint_interval: 100ms\n    sources:\n      - name: rot\n        path: {}\n        parser: raw\n        start_at: beginning\n",
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
