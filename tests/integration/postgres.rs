//! The `postgres` collector against a real PostgreSQL 15 (tests/support/postgres.rs): values
//! compared with psql, many databases under pgbench load, unreachable targets, bounded
//! connections under overlapping and cancelled scrapes, failing views, promtool, secrets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::postgres::{OTHER_HOST, Pki, Postgres, SUPERUSER_PASSWORD};
use crate::support::vitals::Vitals;
use crate::support::{http_client, poll_until, promtool_check, run_ok, temp_dir, write_file};

/// One series of a Prometheus text exposition.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A small parser for the text format vitals serves to non-OpenMetrics clients; enough for
/// label values without escaped quotes, which is all these tests produce.
fn parse(exposition: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in exposition.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            None => (head.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.trim_end_matches('}');
                let mut labels = BTreeMap::new();
                for pair in body.split("\",") {
                    if let Some((k, v)) = pair.split_once("=\"") {
                        labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                    }
                }
                (name.to_string(), labels)
            }
        };
        out.push(Series {
            name,
            labels,
            value,
        });
    }
    out
}

/// The value of the one series named `name` whose labels include `want`.
fn value(series: &[Series], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    series
        .iter()
        .find(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn names(series: &[Series]) -> std::collections::BTreeSet<String> {
    series.iter().map(|s| s.name.clone()).collect()
}

fn target_yaml(name: &str, pg: &Postgres, extra: &str) -> String {
    format!(
        "      - name: {name}\n        host: 127.0.0.1\n        port: {}\n        user: postgres\n        password: ${{VITALS_IT_PG_PW}}\n        sslmode: disable\n{extra}",
        pg.port()
    )
}

fn start_vitals(targets: &str) -> Vitals {
    Vitals::builder()
        .config(&format!("exporter:\n  postgres:\n    targets:\n{targets}"))
        .env("VITALS_IT_PG_PW", SUPERUSER_PASSWORD)
        .start()
}

/// GETs a path with Prometheus' scrape timeout header; returns status, body, elapsed time.
fn get_with_timeout(v: &Vitals, path: &str, timeout: f64) -> (u16, String, Duration) {
    let started = Instant::now();
    let r = http_client()
        .get(format!("{}{path}", v.base_url()))
        .header("X-Prometheus-Scrape-Timeout-Seconds", timeout.to_string())
        .send()
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", v.logs()));
    let status = r.status().as_u16();
    let body = r.text().expect("body");
    (status, body, started.elapsed())
}

fn int(s: &str) -> f64 {
    s.trim()
        .parse()
        .unwrap_or_else(|e| panic!("psql printed {s:?}, not a number: {e}"))
}

/// Rows `datname|value` from psql as a map.
fn psql_map(pg: &Postgres, sql: &str) -> BTreeMap<String, Vec<f64>> {
    pg.psql(sql)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split('|');
            let name = parts.next()?.to_string();
            Some((name, parts.map(int).collect()))
        })
        .collect()
}

#[test]
fn many_databases_under_pgbench_agree_with_psql() {
    let pg = Postgres::start();
    // Sizes and counters only move when the test moves them.
    pg.psql("alter system set autovacuum = off");
    pg.psql("select pg_reload_conf()");
    pg.psql("create database bench_tpl");
    run_ok(
        pg.pgbench().args(["-i", "-q", "-s", "1", "bench_tpl"]),
        "pgbench -i",
    );
    // Shrink the template so that 21 copies stay cheap.
    run_ok(
        std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
            .args(["-X", "-q", "-h"])
            .arg(pg.socket_dir())
            .args([
                "-p",
                &pg.port().to_string(),
                "-U",
                "postgres",
                "-d",
                "bench_tpl",
            ])
            .args([
                "-c",
                "delete from pgbench_accounts where aid > 2000",
                "-c",
                "vacuum full pgbench_accounts",
            ]),
        "shrinking the pgbench template",
    );
    let dbs: Vec<String> = (0..21).map(|i| format!("app{i:02}")).collect();
    for db in &dbs {
        pg.psql(&format!(
            "create database {db} template bench_tpl strategy file_copy"
        ));
    }
    let v = start_vitals(&target_yaml(
        "main",
        &pg,
        "        max_connections: 30\n        size_refresh_interval: 1s\n        tables_refresh_interval: 1s\n        tables_top_n: 5\n        exclude: [bench_tpl]\n",
    ));

    // Load 8 databases with a known number of pgbench transactions while scraping.
    const XACTS: u32 = 150;
    let loaded: Vec<String> = dbs.iter().take(8).cloned().collect();
    let children: Vec<_> = loaded
        .iter()
        .map(|db| {
            pg.pgbench()
                .args(["-n", "-c", "1", "-t", &XACTS.to_string(), db])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn pgbench")
        })
        .collect();
    let mut scrapes_under_load = 0;
    let load_started = Instant::now();
    let mut children = children;
    while children
        .iter_mut()
        .any(|c| c.try_wait().ok().flatten().is_none())
    {
        let m = parse(&v.metrics());
        assert_eq!(
            value(&m, "pg_up", &[("target", "main")]),
            Some(1.0),
            "{}",
            v.logs()
        );
        scrapes_under_load += 1;
        assert!(
            load_started.elapsed() < Duration::from_secs(60),
            "pgbench did not finish"
        );
    }
    for c in children {
        let out = c.wait_with_output().expect("pgbench");
        assert!(
            out.status.success(),
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(scrapes_under_load > 0);

    // Quiesced: compare with psql at the same moment. Counters only grow, so the scrape
    // (taken first) may be behind psql by the few transactions of vitals' own fan-out
    // queries in between; gauges must match exactly once vitals' connections are settled.
    // Database sizes and the per-table families come from background snapshots (refreshed
    // every second here, never served older than 3 s, and the scrape says how old): they
    // agree once a refresh after the load has run, which the polling waits for.
    let mut last = String::new();
    let agreed = poll_until(Duration::from_secs(20), || {
        let m = parse(&v.metrics());
        let sql = "select datname, xact_commit, numbackends, pg_database_size(datname) \
                   from pg_stat_database where datname like 'app%' order by 1";
        let p = psql_map(&pg, sql);
        let mut problems = Vec::new();
        for db in &dbs {
            let want = &p[db.as_str()];
            let l = [("target", "main"), ("datname", db.as_str())];
            let commit = value(&m, "pg_stat_database_xact_commit_total", &l);
            let backends = value(&m, "pg_stat_database_numbackends", &l);
            let size = value(&m, "pg_database_size_bytes", &l);
            match commit {
                Some(c) if c <= want[0] && want[0] - c <= 30.0 => {}
                other => problems.push(format!("{db} xact_commit {other:?} vs psql {}", want[0])),
            }
            if backends != Some(want[1]) {
                problems.push(format!("{db} numbackends {backends:?} vs psql {}", want[1]));
            }
            if size != Some(want[2]) {
                problems.push(format!("{db} size {size:?} vs psql {}", want[2]));
            }
            if loaded.contains(db) && commit.unwrap_or(0.0) < f64::from(XACTS) {
                problems.push(format!(
                    "{db} xact_commit {commit:?} below pgbench's {XACTS}"
                ));
            }
            if value(
                &m,
                "pg_stat_user_tables_n_tup_upd_total",
                &[("datname", db.as_str()), ("relname", "pgbench_branches")],
            )
            .is_none()
            {
                problems.push(format!("{db}: no fan-out table series"));
            }
        }
        // pgbench's updates reached the fan-out's per-table counters.
        let upd = value(
            &m,
            "pg_stat_user_tables_n_tup_upd_total",
            &[("datname", "app00"), ("relname", "pgbench_tellers")],
        );
        if upd != Some(f64::from(XACTS)) {
            problems.push(format!(
                "app00 pgbench_tellers n_tup_upd {upd:?}: pgbench updates one teller per transaction"
            ));
        }
        match value(
            &m,
            "vitals_postgres_fanout_age_seconds",
            &[("target", "main")],
        ) {
            Some(age) if age <= 3.0 => {}
            other => problems.push(format!("per-database data age {other:?}")),
        }
        if value(
            &m,
            "vitals_postgres_fanout_databases",
            &[("target", "main")],
        ) != Some((dbs.len() + 1) as f64)
        {
            problems.push("not every database's per-table data is served".into());
        }
        last = problems.join("\n");
        problems.is_empty().then_some(())
    });
    assert!(
        agreed.is_some(),
        "vitals and psql disagree:\n{last}\n{}",
        v.logs()
    );

    let m = parse(&v.metrics());
    assert_eq!(
        value(
            &m,
            "pg_scrape_errors_total",
            &[("target", "main"), ("reason", "query")]
        ),
        Some(0.0)
    );
    // The connections stay within the configured limit.
    let open =
        int(&pg.psql("select count(*) from pg_stat_activity where application_name = 'vitals'"));
    assert!(open <= 30.0, "{open} vitals connections");
}

#[test]
fn an_unreachable_target_does_not_delay_the_others() {
    let pg = Postgres::start();
    // Accepts TCP connections but never answers: only connect_timeout ends the attempt.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_port = hung.local_addr().expect("addr").port();
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let targets = format!(
        "{}      - name: hung\n        port: {hung_port}\n        connect_timeout: 1s\n        password: ${{VITALS_IT_PG_PW}}\n      - name: refused\n        port: {closed_port}\n        password: ${{VITALS_IT_PG_PW}}\n",
        target_yaml("good", &pg, "")
    );
    let v = start_vitals(&targets);
    for round in 0..2 {
        let (status, body, took) = get_with_timeout(&v, "/metrics", 5.0);
        assert_eq!(status, 200, "{body}");
        let m = parse(&body);
        assert_eq!(
            value(&m, "pg_up", &[("target", "good")]),
            Some(1.0),
            "{body}"
        );
        assert_eq!(
            value(&m, "pg_up", &[("target", "hung")]),
            Some(0.0),
            "{body}"
        );
        assert_eq!(
            value(&m, "pg_up", &[("target", "refused")]),
            Some(0.0),
            "{body}"
        );
        let good =
            value(&m, "pg_scrape_duration_seconds", &[("target", "good")]).expect("duration");
        assert!(good < 0.9, "round {round}: the good target took {good}s");
        assert!(
            took < Duration::from_secs(4),
            "round {round}: scrape took {took:?}"
        );
        assert!(
            value(
                &m,
                "pg_stat_database_xact_commit_total",
                &[("target", "good"), ("datname", "postgres")]
            )
            .is_some()
        );
        assert_eq!(
            value(
                &m,
                "vitals_scrape_collector_success",
                &[("collector", "postgres")]
            ),
            Some(1.0)
        );
    }
    let m = parse(&v.metrics());
    assert!(
        value(
            &m,
            "pg_scrape_errors_total",
            &[("target", "refused"), ("reason", "connect")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        value(
            &m,
            "pg_scrape_errors_total",
            &[("target", "hung"), ("reason", "timeout")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );

    // /probe?target= runs one target only.
    let (status, body, took) = get_with_timeout(&v, "/probe?target=good", 5.0);
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(1), "{took:?}");
    let m = parse(&body);
    assert_eq!(value(&m, "pg_up", &[("target", "good")]), Some(1.0));
    assert!(
        !body.contains("target=\"hung\"") && !body.contains("target=\"refused\""),
        "{body}"
    );
    let (status, body, _) = get_with_timeout(&v, "/probe?target=refused", 5.0);
    assert_eq!(status, 200);
    assert_eq!(
        value(&parse(&body), "pg_up", &[("target", "refused")]),
        Some(0.0)
    );

    // The landing page lists the targets with their state and the error, without secrets.
    let (_, html) = v.get("/");
    assert!(html.contains("/probe?target=hung"), "{html}");
    // `hung` and `refused` set no user: as libpq, the OS user's name is the role.
    let os_user = vitals::config::os_user_name().expect("the OS user's name");
    assert!(
        html.contains("DOWN") && html.contains(&format!("postgres://{os_user}@127.0.0.1:")),
        "{html}"
    );
    assert!(!html.contains(SUPERUSER_PASSWORD));
    drop(hung);
}

#[test]
fn a_thousand_overlapping_and_cancelled_scrapes_keep_connections_bounded() {
    const LIMIT: usize = 6;
    let pg = Postgres::start();
    for i in 0..3 {
        pg.psql(&format!("create database fan{i}"));
    }
    pg.psql("create table public.locked (id int)");
    // The per-database statement runs in every scrape here (tables_refresh_interval: 0s), so
    // that scrapes cut at their deadline cancel it; the background refresher's limits are
    // tested by background_fan_out_stays_within_limits_and_drops_stale_data.
    let v = Arc::new(start_vitals(&target_yaml(
        "main",
        &pg,
        &format!(
            "        max_connections: {LIMIT}\n        tables_top_n: 3\n        tables_refresh_interval: 0s\n        lock_timeout: 5s\n        statement_timeout: 10s\n"
        ),
    )));

    // Watch pg_stat_activity the whole time.
    let watcher = ActivityWatcher::start(&pg, Duration::from_millis(20));

    // 1000 scrapes from 4 threads: every third one with a 20 ms timeout (cut mid-query).
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let v = v.clone();
            std::thread::spawn(move || {
                let client = http_client();
                let mut ok = 0;
                for i in 0..250 {
                    let mut req = client.get(format!("{}/metrics", v.base_url()));
                    if (i + w) % 3 == 0 {
                        req = req.header("X-Prometheus-Scrape-Timeout-Seconds", "0.02");
                    }
                    let r = req.send().expect("scrape");
                    assert_eq!(r.status().as_u16(), 200);
                    let body = r.text().expect("body");
                    if body.contains("pg_up{target=\"main\"} 1") {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let ok: usize = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    let took = started.elapsed();
    eprintln!("1000 scrapes took {took:?}");

    // A lock makes the fan-out's table query wait; scrapes with a short deadline are cut
    // while it waits, and must cancel it on the server.
    let locker = {
        let sock = pg.socket_dir().to_path_buf();
        let port = pg.port();
        std::thread::spawn(move || {
            std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
                .args(["-X", "-q", "-h"])
                .arg(&sock)
                .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
                .args([
                    "-c",
                    "begin; lock table public.locked in access exclusive mode; select pg_sleep(2.5); commit;",
                ])
                .output()
                .expect("psql lock")
        })
    };
    let waited = poll_until(Duration::from_secs(5), || {
        (int(&pg.psql(
            "select count(*) from pg_locks where relation = 'public.locked'::regclass and granted",
        )) > 0.0)
            .then_some(())
    });
    assert!(waited.is_some(), "the lock was not taken");
    for _ in 0..3 {
        let (status, _, took) = get_with_timeout(&v, "/metrics", 0.6);
        assert_eq!(status, 200);
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }
    let cancelled = poll_until(Duration::from_secs(5), || {
        std::fs::read_to_string(pg.log_path())
            .ok()
            .filter(|log| log.contains("canceling statement due to user request"))
    });
    locker.join().expect("locker");

    // Afterwards no vitals query is left running and a normal scrape works.
    let settled = poll_until(Duration::from_secs(10), || {
        let active = int(&pg.psql(
            "select count(*) from pg_stat_activity where application_name = 'vitals' and state <> 'idle'",
        ));
        (active == 0.0).then_some(())
    });
    let (max_seen, samples) = watcher.stop();
    let m = parse(&v.metrics());
    assert_eq!(value(&m, "pg_up", &[("target", "main")]), Some(1.0));
    let timeouts = value(
        &m,
        "pg_scrape_errors_total",
        &[("target", "main"), ("reason", "timeout")],
    );

    assert!(samples > 20, "too few activity samples");
    assert!(
        max_seen <= LIMIT,
        "pg_stat_activity showed {max_seen} vitals connections, limit {LIMIT}"
    );
    assert!(
        max_seen >= 2,
        "the fan-out should have used several connections: {max_seen}"
    );
    assert!(
        ok >= 500,
        "only {ok} of 1000 scrapes had pg_up 1 (took {took:?})"
    );
    assert!(
        timeouts.unwrap_or(0.0) >= 1.0,
        "no scrape was cut: {timeouts:?}"
    );
    assert!(
        cancelled.is_some(),
        "no query was cancelled on the server\n{}",
        crate::support::tail(pg.log_path(), 40)
    );
    assert!(
        settled.is_some(),
        "vitals queries kept running after their scrapes ended"
    );
    assert!(!v.logs().contains("panicked"), "{}", v.logs());
}

#[test]
fn every_family_passes_promtool_failing_views_are_isolated_and_secrets_stay_hidden() {
    let pg = Postgres::start();
    pg.restart_with("shared_preload_libraries = 'pg_stat_statements'");
    pg.psql("create extension pg_stat_statements");
    pg.psql("select pg_create_physical_replication_slot('standby1', true)");
    run_ok(
        pg.pgbench().args(["-i", "-q", "-s", "1", "postgres"]),
        "pgbench -i",
    );
    run_ok(pg.pgbench().args(["-n", "-t", "50", "postgres"]), "pgbench");
    pg.psql("create sequence public.order_ids maxvalue 1000");
    pg.psql("select nextval('public.order_ids') from generate_series(1, 250)");
    // A role without pg_monitor: pg_ls_waldir() is denied to it, and pg_stat_statements is
    // missing in its database.
    pg.psql("create role limited login password 'limited-PW-31'");
    pg.psql("create database limited_db owner limited");

    let dir = temp_dir("pg-secret");
    let pass = dir.path().join("limited.pass");
    write_file(&pass, "limited-PW-31\n");
    let targets = format!(
        "{}      - name: limited\n        port: {}\n        user: limited\n        dbname: limited_db\n        password_file: {}\n        pg_stat_statements: true\n        sslmode: prefer\n        labels: {{env: test}}\n",
        target_yaml(
            "full",
            &pg,
            "        pg_stat_statements: true\n        statements_top_n: 20\n        labels: {env: test}\n"
        ),
        pg.port(),
        pass.display()
    ) + "      - name: wrongpw\n        port: PORT\n        password: not-the-password\n        sslmode: disable\n";
    let targets = targets.replace("PORT", &pg.port().to_string());
    let v = Vitals::builder()
        .config(&format!("exporter:\n  postgres:\n    targets:\n{targets}"))
        .env("VITALS_IT_PG_PW", SUPERUSER_PASSWORD)
        .arg("--log.level=debug")
        .start();
    let _ = v.metrics();
    let body = v.metrics();
    let (ok, report) = promtool_check(&body);
    assert!(
        ok && report.trim().is_empty(),
        "promtool check metrics: {report}\n{body}"
    );
    let m = parse(&body);
    let full = names(
        &m.iter()
            .filter(|s| s.labels.get("target").map(String::as_str) == Some("full"))
            .cloned()
            .collect::<Vec<_>>(),
    );
    for family in [
        "pg_up",
        "pg_scrape_duration_seconds",
        "pg_scrape_errors_total",
        "pg_server_info",
        "pg_postmaster_start_time_seconds",
        "pg_replication_is_replica",
        "pg_replication_lag_seconds",
        "pg_wal_position_bytes",
        "pg_stat_database_numbackends",
        "pg_stat_database_xact_commit_total",
        "pg_stat_database_blk_read_time_seconds_total",
        "pg_stat_database_session_time_seconds_total",
        "pg_database_frozen_xid_age",
        "pg_database_size_bytes",
        "pg_stat_activity_connections",
        "pg_stat_activity_max_tx_duration_seconds",
        "pg_stat_activity_max_wait_duration_seconds",
        "pg_xmin_horizon_age",
        "pg_locks",
        "pg_replication_slot_slot_is_active",
        "pg_replication_slot_retained_wal_bytes",
        "pg_settings_shared_buffers_bytes",
        "pg_settings_max_connections",
        "pg_stat_bgwriter_checkpoints_timed_total",
        "pg_stat_bgwriter_buffers_alloc_total",
        "pg_stat_wal_bytes_total",
        "pg_wal_segments",
        "pg_wal_size_bytes",
        "pg_stat_archiver_archived_total",
        "pg_stat_user_tables_seq_scan_total",
        "pg_stat_user_tables_n_live_tup",
        "pg_stat_user_tables_total_size_bytes",
        "pg_stat_user_indexes_idx_scan_total",
        "pg_stat_user_indexes_size_bytes",
        "pg_sequence_last_value",
        "pg_sequence_used_ratio",
        "pg_index_invalid",
        "pg_index_invalid_size_bytes",
        "pg_index_unused",
        "pg_index_unused_size_bytes",
        "pg_settings_pending_restart",
        "pg_stat_statements_calls_total",
        "pg_stat_statements_seconds_total",
    ] {
        assert!(
            full.contains(family),
            "{family} missing for the full target:\n{body}"
        );
    }
    let used = value(
        &m,
        "pg_sequence_used_ratio",
        &[("target", "full"), ("sequencename", "order_ids")],
    );
    assert!(
        (used.unwrap_or(0.0) - 249.0 / 999.0).abs() < 1e-9,
        "250 of 1..1000 used: {used:?}"
    );
    assert_eq!(
        value(
            &m,
            "pg_replication_slot_slot_is_active",
            &[("target", "full"), ("slot_name", "standby1")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &m,
            "pg_settings_shared_buffers_bytes",
            &[("target", "full")]
        ),
        Some(16.0 * 1024.0 * 1024.0)
    );
    let accounts =
        int(&pg
            .psql("select n_live_tup from pg_stat_user_tables where relname = 'pgbench_accounts'"));
    assert_eq!(
        value(
            &m,
            "pg_stat_user_tables_n_live_tup",
            &[
                ("target", "full"),
                ("datname", "postgres"),
                ("relname", "pgbench_accounts")
            ]
        ),
        Some(accounts)
    );
    // pgbench ran each of its statements 50 times; those are among the top 20.
    let most = m
        .iter()
        .filter(|s| s.name == "pg_stat_statements_calls_total" && s.labels["target"] == "full")
        .map(|s| s.value)
        .fold(0.0, f64::max);
    assert!(most >= 50.0, "{most}");
    let statements = m
        .iter()
        .filter(|s| s.name == "pg_stat_statements_calls_total" && s.labels["target"] == "full")
        .count();
    assert_eq!(statements, 20, "statements_top_n");
    assert!(!body.contains("UPDATE pgbench"), "no query text in labels");

    // Every family the compat rules read exists, but those that need a standby, archiving,
    // data checksums or a past (auto)vacuum/analyze to have a value.
    let may_be_absent = [
        "pg_stat_database_checksum_failures_total",
        "pg_stat_replication_replay_lag_bytes",
        "pg_stat_archiver_last_archive_age_seconds",
        "pg_stat_user_tables_last_autovacuum_seconds",
        "pg_stat_user_tables_last_autoanalyze_seconds",
        "pg_stat_user_tables_last_analyze_seconds",
    ];
    let all = names(&m);
    for source in compat_rule_sources() {
        assert!(
            all.contains(&source) || may_be_absent.contains(&source.as_str()),
            "compat rule source {source} is not a vitals family"
        );
    }

    // The limited target is up and keeps every family it may read; the denied and the
    // missing views are dropped and counted.
    let lim = [("target", "limited"), ("env", "test")];
    assert_eq!(value(&m, "pg_up", &lim), Some(1.0), "{body}");
    assert!(
        value(
            &m,
            "pg_stat_database_xact_commit_total",
            &[("target", "limited"), ("datname", "limited_db")]
        )
        .is_some()
    );
    assert!(value(&m, "pg_stat_bgwriter_buffers_alloc_total", &lim).is_some());
    // The views of the new families are readable by every role.
    for family in [
        "pg_settings_pending_restart",
        "pg_stat_activity_max_wait_duration_seconds",
    ] {
        assert!(
            m.iter().any(|s| s.name == family
                && s.labels.get("target").map(String::as_str) == Some("limited")),
            "{family} missing for the limited target"
        );
    }
    assert_eq!(
        m.iter()
            .filter(|s| s.name == "pg_xmin_horizon_age"
                && s.labels.get("target").map(String::as_str) == Some("limited"))
            .count(),
        3,
        "one series per holder"
    );
    assert!(
        value(&m, "pg_wal_size_bytes", &lim).is_none(),
        "pg_ls_waldir is denied"
    );
    assert!(
        value(
            &m,
            "pg_stat_statements_calls_total",
            &[("target", "limited")]
        )
        .is_none()
    );
    let perm = value(
        &m,
        "pg_scrape_errors_total",
        &[("target", "limited"), ("reason", "permission")],
    );
    let missing = value(
        &m,
        "pg_scrape_errors_total",
        &[("target", "limited"), ("reason", "missing")],
    );
    assert!(
        perm.unwrap_or(0.0) >= 2.0,
        "two scrapes, permission errors {perm:?}"
    );
    assert!(
        missing.unwrap_or(0.0) >= 2.0,
        "two scrapes, missing errors {missing:?}"
    );
    assert_eq!(
        value(
            &m,
            "pg_scrape_errors_total",
            &[("target", "full"), ("reason", "permission")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &m,
            "pg_scrape_errors_total",
            &[("target", "full"), ("reason", "missing")]
        ),
        Some(0.0)
    );
    let (_, html) = v.get("/");
    assert!(html.contains("queries failed: "), "{html}");

    // A wrong password is an auth error, and no password shows up anywhere.
    assert_eq!(value(&m, "pg_up", &[("target", "wrongpw")]), Some(0.0));
    assert!(
        value(
            &m,
            "pg_scrape_errors_total",
            &[("target", "wrongpw"), ("reason", "auth")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{body}"
    );
    let logs = v.logs();
    for text in [&body, &html, &logs] {
        assert!(
            !text.contains(SUPERUSER_PASSWORD),
            "superuser password leaked"
        );
        assert!(!text.contains("limited-PW-31"), "file password leaked");
    }
    assert!(
        logs.contains("pg_ls_waldir") || logs.contains("permission denied"),
        "{logs}"
    );
}

/// Runs `sql` as the superuser in database `db` over the unix socket.
fn psql_in(pg: &Postgres, db: &str, sql: &str) {
    run_ok(
        std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(pg.socket_dir())
            .args(["-p", &pg.port().to_string(), "-U", "postgres", "-d", db])
            .args(["-c", sql]),
        &format!("psql in {db}"),
    );
}

/// Sessions vitals opened to `db`, from the server log (`log_connections = on`).
fn sessions_opened(pg: &Postgres, db: &str) -> usize {
    let needle = format!("database={db} application_name=vitals");
    std::fs::read_to_string(pg.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("connection authorized") && l.contains(&needle))
        .count()
}

#[test]
fn background_fan_out_stays_within_limits_and_drops_stale_data() {
    // Seven databases to fan out to, more than max_connections allows to keep open: each
    // refresh opens and closes a connection per database, in the background, while scrapes
    // (some cut at 20 ms) overlap.
    const LIMIT: usize = 4;
    let pg = Postgres::start();
    psql_in(
        &pg,
        "template1",
        "create table public.items (id serial primary key, n int); insert into public.items (n) values (1); \
         grant select on sequence public.items_id_seq to public",
    );
    let fan: Vec<String> = (0..6).map(|i| format!("fan{i}")).collect();
    for db in &fan {
        pg.psql(&format!("create database {db}"));
    }
    pg.psql("create role mon login password 'mon-PW-7' in role pg_monitor");
    let dir = temp_dir("pg-fanout");
    let pass = dir.path().join("mon.pass");
    write_file(&pass, "mon-PW-7\n");
    // Over the unix socket (trusted: no SCRAM, which is slow in debug builds), so that a
    // refresh of the seven databases takes well under the interval.
    let v = Arc::new(start_vitals(&format!(
        "      - name: main\n        host: {}\n        port: {}\n        user: mon\n        password_file: {}\n        max_connections: {LIMIT}\n        tables_top_n: 3\n        tables_refresh_interval: 1s\n",
        pg.socket_dir().display(),
        pg.port(),
        pass.display()
    )));
    let interval = 1.0;
    let max_age = 3.0 * interval;

    let watcher = ActivityWatcher::start(&pg, Duration::from_millis(10));

    // 1. Overlapping scrapes while the refresher runs every second.
    let before = sessions_opened(&pg, "fan3");
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let v = v.clone();
            std::thread::spawn(move || {
                let client = http_client();
                for i in 0..60 {
                    let mut req = client.get(format!("{}/metrics", v.base_url()));
                    if (i + w) % 3 == 0 {
                        req = req.header("X-Prometheus-Scrape-Timeout-Seconds", "0.02");
                    }
                    let r = req.send().expect("scrape");
                    assert_eq!(r.status().as_u16(), 200);
                    std::thread::sleep(Duration::from_millis(30));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let refreshes = sessions_opened(&pg, "fan3") - before;
    assert!(
        refreshes >= 3,
        "the background refresh reconnected to fan3 only {refreshes} times"
    );
    let m = parse(&v.metrics());
    let l = |db: &'static str| [("target", "main"), ("datname", db), ("relname", "items")];
    // The per-database data is never older than `max_age`.
    let assert_fresh = |m: &[Series]| {
        let age = value(
            m,
            "vitals_postgres_fanout_age_seconds",
            &[("target", "main")],
        );
        assert!(age.is_some_and(|a| a <= max_age), "age {age:?}");
    };
    for db in ["fan0", "fan5"] {
        assert!(
            value(&m, "pg_stat_user_tables_n_live_tup", &l(db)).is_some(),
            "{db}: no table series\n{}",
            v.logs()
        );
    }
    assert_eq!(
        value(
            &m,
            "pg_sequence_last_value",
            &[("datname", "fan2"), ("sequencename", "items_id_seq")]
        ),
        Some(1.0)
    );
    assert!(
        value(
            &m,
            "pg_stat_user_indexes_idx_scan_total",
            &[("datname", "fan2"), ("indexrelname", "items_pkey")]
        )
        .is_some()
    );
    assert_eq!(
        value(
            &m,
            "vitals_postgres_fanout_databases",
            &[("target", "main")]
        ),
        Some(7.0)
    );
    assert_fresh(&m);
    assert!(
        value(
            &m,
            "vitals_postgres_fanout_refresh_duration_seconds",
            &[("target", "main")]
        )
        .is_some()
    );

    // 2. fan0 refuses vitals from now on: its last data is served until it is 3 s old,
    // then dropped, while the other databases stay fresh.
    pg.psql("revoke connect on database fan0 from public");
    let connect_errors = |m: &[Series]| {
        value(
            m,
            "pg_scrape_errors_total",
            &[("target", "main"), ("reason", "connect")],
        )
        .unwrap_or(0.0)
    };
    let errors_before = connect_errors(&m);
    let revoked = Instant::now();
    let dropped = poll_until(Duration::from_secs(15), || {
        let m = parse(&v.metrics());
        assert_fresh(&m);
        let gone = value(&m, "pg_stat_user_tables_n_live_tup", &l("fan0")).is_none();
        std::thread::sleep(Duration::from_millis(100));
        gone.then_some(m)
    });
    let m = dropped.expect("fan0's stale data was still served after 15 s");
    assert!(
        revoked.elapsed() >= Duration::from_secs_f64(max_age - interval - 0.5),
        "fan0 dropped after {:?}, before its data could be stale",
        revoked.elapsed()
    );
    assert!(value(&m, "pg_stat_user_tables_n_live_tup", &l("fan1")).is_some());
    assert_eq!(
        value(
            &m,
            "vitals_postgres_fanout_databases",
            &[("target", "main")]
        ),
        Some(6.0)
    );
    assert!(
        connect_errors(&m) > errors_before,
        "failed connections are counted"
    );
    let (_, html) = v.get("/");
    assert!(html.contains("fan-out connection"), "{html}");

    // A database dropped since the last refresh is not served from the snapshot.
    pg.psql("drop database fan5 with (force)");
    let m = parse(&v.metrics());
    assert!(value(&m, "pg_stat_user_tables_n_live_tup", &l("fan5")).is_none());
    assert_eq!(
        value(
            &m,
            "vitals_postgres_fanout_databases",
            &[("target", "main")]
        ),
        Some(5.0)
    );

    // 3. Nobody scrapes: the refresher stops (after at most one more refresh).
    std::thread::sleep(Duration::from_millis(2500));
    let idle_start = sessions_opened(&pg, "fan3");
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(
        sessions_opened(&pg, "fan3"),
        idle_start,
        "the refresher kept running with nobody scraping"
    );

    // 4. After the pause the snapshot is stale: the next scrape waits for a refresh and
    // serves fresh data, not the old.
    let m = parse(&v.metrics());
    assert_fresh(&m);
    assert!(value(&m, "pg_stat_user_tables_n_live_tup", &l("fan1")).is_some());
    assert!(
        poll_until(Duration::from_secs(5), || (sessions_opened(&pg, "fan3")
            > idle_start)
            .then_some(()))
        .is_some(),
        "scraping again did not restart the refresher"
    );

    let (max_seen, _) = watcher.stop();
    assert!(
        max_seen <= LIMIT,
        "pg_stat_activity showed {max_seen} vitals connections, limit {LIMIT}"
    );
    assert!(max_seen >= 2, "{max_seen}");
    assert!(!v.logs().contains("panicked"), "{}", v.logs());
}

const COMPAT_RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/rules/compat/postgres_exporter.yml"
);

/// The metric names the compat rules read (the first identifier of each `expr`).
fn compat_rule_sources() -> Vec<String> {
    let text = std::fs::read_to_string(COMPAT_RULES).expect("read the compat rules");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .map(|e| {
            let e = e.strip_prefix("label_replace(").unwrap_or(e);
            e.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn compat_rules_pass_promtool() {
    let promtool = crate::support::require_binary("/usr/bin/promtool", "prometheus");
    let dir = std::path::Path::new(COMPAT_RULES)
        .parent()
        .expect("rules dir");
    let out = run_ok(
        std::process::Command::new(&promtool)
            .current_dir(dir)
            .args(["check", "rules", "postgres_exporter.yml"]),
        "promtool check rules",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
    let out = run_ok(
        std::process::Command::new(&promtool)
            .current_dir(dir)
            .args(["test", "rules", "postgres_exporter_test.yml"]),
        "promtool test rules",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
    assert!(compat_rule_sources().len() > 40);
}

/// Counts vitals' sessions in pg_stat_activity (with psql over the unix socket) at a fixed
/// interval until stopped; returns the highest count and the number of samples.
struct ActivityWatcher {
    done: Arc<AtomicBool>,
    max_seen: Arc<AtomicUsize>,
    samples: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl ActivityWatcher {
    /// Starts counting on its own thread, one count every `interval`.
    fn start(pg: &Postgres, interval: Duration) -> ActivityWatcher {
        let done = Arc::new(AtomicBool::new(false));
        let max_seen = Arc::new(AtomicUsize::new(0));
        let samples = Arc::new(AtomicUsize::new(0));
        let (d, m, n) = (done.clone(), max_seen.clone(), samples.clone());
        let sock = pg.socket_dir().to_path_buf();
        let port = pg.port();
        let thread =
            std::thread::spawn(move || {
                while !d.load(Ordering::Relaxed) {
                    let out = std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
                    .args(["-X", "-A", "-t", "-h"])
                    .arg(&sock)
                    .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres", "-c"])
                    .arg("select count(*) from pg_stat_activity where application_name = 'vitals'")
                    .output()
                    .expect("psql");
                    if let Ok(v) = String::from_utf8_lossy(&out.stdout).trim().parse::<usize>() {
                        m.fetch_max(v, Ordering::Relaxed);
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(interval);
                }
            });
        ActivityWatcher {
            done,
            max_seen,
            samples,
            thread,
        }
    }

    /// Stops watching; returns (highest count, samples).
    fn stop(self) -> (usize, usize) {
        self.done.store(true, Ordering::Relaxed);
        self.thread.join().expect("watcher");
        (
            self.max_seen.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn a_global_connection_limit_holds_across_targets_and_starves_none() {
    // Four targets (the same server under four names, each with its own maintenance
    // database and one database to fan out to) share a global limit of 3 connections,
    // fewer than the targets: each target's connections are idle most of the time, and
    // the others must get their slots by closing them.
    const GLOBAL: usize = 3;
    const TARGETS: usize = 4;
    let pg = Postgres::start();
    let mut targets = String::new();
    for i in 0..TARGETS {
        pg.psql(&format!("create database main{i}"));
        pg.psql(&format!("create database fan{i}"));
        psql_in(
            &pg,
            &format!("fan{i}"),
            "create table public.items (id int primary key)",
        );
        // Over the unix socket (trusted): connections are cheap, so the test measures the
        // limit and the eviction, not SCRAM in a debug build.
        targets.push_str(&format!(
            "      - name: t{i}\n        host: {}\n        port: {}\n        user: postgres\n        dbname: main{i}\n        databases: [fan{i}]\n        max_connections: 4\n        tables_top_n: 3\n        tables_refresh_interval: 0s\n",
            pg.socket_dir().display(),
            pg.port()
        ));
    }
    let v = Arc::new(
        Vitals::builder()
            .config(&format!(
                "exporter:\n  postgres:\n    max_connections: {GLOBAL}\n    targets:\n{targets}"
            ))
            .start(),
    );
    let watcher = ActivityWatcher::start(&pg, Duration::from_millis(10));

    // 1. One target at a time through /probe: the idle connections the previous targets
    // keep fill the global limit, and the next target must not wait for them.
    for round in 0..3 {
        for i in 0..TARGETS {
            let (status, body, took) = get_with_timeout(&v, &format!("/probe?target=t{i}"), 5.0);
            assert_eq!(status, 200);
            let m = parse(&body);
            assert_eq!(
                value(&m, "pg_up", &[("target", &format!("t{i}"))]),
                Some(1.0),
                "round {round}, t{i}: {body}\n{}",
                v.logs()
            );
            assert!(
                value(
                    &m,
                    "pg_stat_user_tables_n_live_tup",
                    &[("datname", &format!("fan{i}")), ("relname", "items")]
                )
                .is_some(),
                "round {round}, t{i}: no fan-out data\n{body}"
            );
            assert!(
                took < Duration::from_secs(2),
                "round {round}, t{i}: probe took {took:?}"
            );
        }
    }

    // 2. Many overlapping scrapes of all targets, some cut at 20 ms.
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let v = v.clone();
            std::thread::spawn(move || {
                let client = http_client();
                let mut up = [0usize; TARGETS];
                let mut full = 0;
                for i in 0..50 {
                    let mut req = client.get(format!("{}/metrics", v.base_url()));
                    let cut = (i + w) % 5 == 0;
                    req = req.header(
                        "X-Prometheus-Scrape-Timeout-Seconds",
                        if cut { "0.02" } else { "5" },
                    );
                    let r = req.send().expect("scrape");
                    assert_eq!(r.status().as_u16(), 200);
                    let body = r.text().expect("body");
                    if cut {
                        continue;
                    }
                    full += 1;
                    for (t, n) in up.iter_mut().enumerate() {
                        if body.contains(&format!("pg_up{{target=\"t{t}\"}} 1")) {
                            *n += 1;
                        }
                    }
                }
                (full, up)
            })
        })
        .collect();
    let mut full = 0;
    let mut up = [0usize; TARGETS];
    for w in workers {
        let (f, u) = w.join().expect("worker");
        full += f;
        for (t, n) in u.iter().enumerate() {
            up[t] += n;
        }
    }
    let took = started.elapsed();
    // Afterwards, a plain scrape has every target up.
    let m = parse(&v.metrics());
    let (max_seen, samples) = watcher.stop();
    eprintln!(
        "global limit {GLOBAL}: {full} full scrapes in {took:?}, pg_up 1 per target {up:?}, max {max_seen} vitals sessions in {samples} samples"
    );
    for i in 0..TARGETS {
        assert_eq!(
            value(&m, "pg_up", &[("target", &format!("t{i}"))]),
            Some(1.0),
            "t{i}\n{}",
            v.logs()
        );
        assert!(
            up[i] * 10 >= full * 9,
            "t{i} was up in only {} of {full} full scrapes ({up:?})\n{}",
            up[i],
            v.logs()
        );
    }
    // The exporter reports the global limit and the evictions it needed.
    assert_eq!(
        value(&m, "vitals_postgres_global_connections_max", &[]),
        Some(GLOBAL as f64)
    );
    let open = value(&m, "vitals_postgres_global_connections", &[]);
    assert!(open.is_some_and(|o| o <= GLOBAL as f64), "{open:?}");
    let evictions = value(&m, "vitals_postgres_global_evictions_total", &[]);
    assert!(
        evictions.is_some_and(|e| e >= TARGETS as f64),
        "evictions {evictions:?}"
    );
    eprintln!("evictions: {evictions:?}");
    let (ok, report) = promtool_check(&v.metrics());
    assert!(ok && report.trim().is_empty(), "promtool: {report}");
    assert!(samples > 20, "too few activity samples: {samples}");
    assert!(
        max_seen <= GLOBAL,
        "pg_stat_activity showed {max_seen} vitals connections, global limit {GLOBAL}"
    );
    assert!(
        max_seen >= 2,
        "the targets should have used several connections: {max_seen}"
    );
    assert!(!v.logs().contains("panicked"), "{}", v.logs());
}

/// A TCP target with the superuser's password and the given TLS settings.
fn tls_target(
    name: &str,
    host: &str,
    pg: &Postgres,
    mode: &str,
    ca: Option<&std::path::Path>,
) -> String {
    let mut t = format!(
        "      - name: {name}\n        host: {host}\n        port: {}\n        user: postgres\n        password: ${{VITALS_IT_PG_PW}}\n        sslmode: {mode}\n        tables_top_n: 0\n",
        pg.port()
    );
    if let Some(ca) = ca {
        t.push_str(&format!("        sslrootcert: {}\n", ca.display()));
    }
    t
}

/// Scrapes once; for each `(target, up)` checks pg_up, and for the down ones that the
/// landing page's error contains every word of `why` and that the reason is counted.
fn check_tls(v: &Vitals, want: &[(&str, bool, &str, &[&str])]) {
    let body = v.metrics();
    let m = parse(&body);
    let (_, html) = v.get("/");
    for (target, up, reason, why) in want {
        assert_eq!(
            value(&m, "pg_up", &[("target", target)]),
            Some(if *up { 1.0 } else { 0.0 }),
            "{target}: {html}\n{}",
            v.logs()
        );
        if *up {
            continue;
        }
        assert!(
            value(
                &m,
                "pg_scrape_errors_total",
                &[("target", target), ("reason", reason)]
            )
            .unwrap_or(0.0)
                >= 1.0,
            "{target}: no reason={reason} error counted\n{body}"
        );
        // The landing page shows each target's last error.
        let row = html
            .split("<tr")
            .find(|r| r.contains(&format!("<td>{target}</td>")))
            .unwrap_or_else(|| panic!("{target} not on the landing page: {html}"));
        for w in *why {
            assert!(row.contains(w), "{target}: {w:?} not in its error: {row}");
        }
        assert!(!row.contains(SUPERUSER_PASSWORD));
    }
}

/// Sessions of vitals now open over TLS and without.
fn vitals_ssl_sessions(pg: &Postgres) -> (f64, f64) {
    let row = pg.psql(
        "select count(*) filter (where s.ssl), count(*) filter (where not s.ssl) \
         from pg_stat_activity a join pg_stat_ssl s using (pid) \
         where a.application_name = 'vitals' and a.client_addr is not null",
    );
    let (a, b) = row.split_once('|').expect("two columns");
    (int(a), int(b))
}

#[test]
fn tls_verify_modes_against_a_real_server() {
    let pg = Postgres::start();
    let pki = Pki::new();
    pg.enable_tls(&pki.localhost);
    let start = |targets: String| {
        Vitals::builder()
            .config(&format!("exporter:\n  postgres:\n    targets:\n{targets}"))
            .env("VITALS_IT_PG_PW", SUPERUSER_PASSWORD)
            .start()
    };

    // 1. The server's certificate names 127.0.0.1 and localhost and is signed by the CA.
    let ca = Some(pki.ca_file.as_path());
    let wrong = Some(pki.wrong_ca_file.as_path());
    let v = start(
        [
            tls_target("full_ip", "127.0.0.1", &pg, "verify-full", ca),
            tls_target("full_name", "localhost", &pg, "verify-full", ca),
            tls_target("ca_ok", "127.0.0.1", &pg, "verify-ca", ca),
            tls_target("full_wrong_ca", "127.0.0.1", &pg, "verify-full", wrong),
            tls_target("ca_wrong_ca", "127.0.0.1", &pg, "verify-ca", wrong),
            tls_target("require", "127.0.0.1", &pg, "require", None),
            tls_target("prefer", "127.0.0.1", &pg, "prefer", None),
            tls_target("disable", "127.0.0.1", &pg, "disable", None),
        ]
        .concat(),
    );
    let unknown: &[&str] = &["TLS handshake", "UnknownIssuer", "sslrootcert"];
    check_tls(
        &v,
        &[
            ("full_ip", true, "", &[]),
            ("full_name", true, "", &[]),
            ("ca_ok", true, "", &[]),
            ("full_wrong_ca", false, "tls", unknown),
            ("ca_wrong_ca", false, "tls", unknown),
            ("require", true, "", &[]),
            ("prefer", true, "", &[]),
            ("disable", true, "", &[]),
        ],
    );
    // Five targets hold sessions over TLS, `disable` one without.
    let (ssl, plain) = vitals_ssl_sessions(&pg);
    assert!(ssl >= 5.0 && plain >= 1.0, "ssl {ssl}, plain {plain}");
    drop(v);

    // 2. A certificate from the same CA, for another host name: the chain is good, the
    // name is not.
    pg.enable_tls(&pki.other_host);
    let v = start(
        [
            tls_target("ca_other", "127.0.0.1", &pg, "verify-ca", ca),
            tls_target("full_other", "127.0.0.1", &pg, "verify-full", ca),
            tls_target("require_other", "127.0.0.1", &pg, "require", None),
        ]
        .concat(),
    );
    check_tls(
        &v,
        &[
            ("ca_other", true, "", &[]),
            (
                "full_other",
                false,
                "tls",
                &["TLS handshake", "not valid for name"],
            ),
            ("require_other", true, "", &[]),
        ],
    );
    drop(v);

    // 3. TCP logins only over TLS: `disable` is refused with a reason that says so.
    pg.enable_tls(&pki.localhost);
    pg.hostssl_only();
    let v = start(
        [
            tls_target("disable", "127.0.0.1", &pg, "disable", None),
            tls_target("prefer", "127.0.0.1", &pg, "prefer", None),
            tls_target("full", "localhost", &pg, "verify-full", ca),
        ]
        .concat(),
    );
    check_tls(
        &v,
        &[
            (
                "disable",
                false,
                "auth",
                &[
                    "no pg_hba.conf entry",
                    "no encryption",
                    "only over TLS, and sslmode is disable",
                ],
            ),
            ("prefer", true, "", &[]),
            ("full", true, "", &[]),
        ],
    );
    let logs = v.logs();
    assert!(!logs.contains(SUPERUSER_PASSWORD), "password leaked");
    assert!(!logs.contains("panicked"), "{logs}");
    let _ = OTHER_HOST;
}

/// A socket target (trusted: no password) for a cluster.
fn socket_target(name: &str, pg: &Postgres) -> String {
    format!(
        "      - name: {name}\n        host: {}\n        port: {}\n        user: postgres\n        tables_top_n: 0\n",
        pg.socket_dir().display(),
        pg.port()
    )
}

#[test]
fn a_streaming_standby_and_its_primary_report_replication() {
    let primary = Postgres::start();
    primary.psql("alter system set autovacuum = off");
    primary.psql("select pg_reload_conf()");
    let standby = primary.start_standby("standby1");
    // A slot nobody uses, holding WAL back from now on.
    primary.psql("select pg_create_physical_replication_slot('stale', true)");
    // A transaction the standby has replayed, so that it knows a replay time.
    primary.psql("create table public.t (id int, pad text)");
    let replayed = poll_until(Duration::from_secs(10), || {
        (standby.psql("select count(*) from pg_class where relname = 't'") == "1").then_some(())
    });
    assert!(replayed.is_some(), "the standby did not replay the table");
    let v = Vitals::builder()
        .config(&format!(
            "exporter:\n  postgres:\n    targets:\n{}{}",
            socket_target("primary", &primary),
            socket_target("standby", &standby)
        ))
        .start();

    // Caught up: the standby is a replica with no lag, the primary is not.
    let m = parse(&v.metrics());
    let p = [("target", "primary")];
    let s = [("target", "standby")];
    assert_eq!(value(&m, "pg_up", &s), Some(1.0), "{}", v.logs());
    assert_eq!(value(&m, "pg_replication_is_replica", &s), Some(1.0));
    assert_eq!(value(&m, "pg_replication_is_replica", &p), Some(0.0));
    assert_eq!(value(&m, "pg_replication_lag_seconds", &p), Some(0.0));
    let caught_up = poll_until(Duration::from_secs(10), || {
        let m = parse(&v.metrics());
        (value(&m, "pg_replication_lag_seconds", &s) == Some(0.0)).then_some(())
    });
    assert!(caught_up.is_some(), "the idle standby shows a lag");
    // Nothing failed on the standby (no query that only works on a primary).
    for reason in ["query", "missing", "permission"] {
        assert_eq!(
            value(
                &m,
                "pg_scrape_errors_total",
                &[("target", "standby"), ("reason", reason)]
            ),
            Some(0.0),
            "{reason}\n{}",
            v.logs()
        );
    }

    // The standby as the primary sees it, labelled with its application_name.
    let standby_labels = [
        ("target", "primary"),
        ("application_name", "standby1"),
        ("client_addr", "local"),
        ("state", "streaming"),
    ];
    assert!(
        value(&m, "pg_stat_replication_replay_lag_bytes", &standby_labels).is_some(),
        "no pg_stat_replication series for standby1"
    );
    let slot = |name: &'static str| [("target", "primary"), ("slot_name", name)];
    assert_eq!(
        value(
            &m,
            "pg_replication_slot_slot_is_active",
            &slot("standby1_slot")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "pg_replication_slot_slot_is_active", &slot("stale")),
        Some(0.0)
    );
    for status in ["reserved", "extended", "unreserved", "lost"] {
        let want = if status == "reserved" { 1.0 } else { 0.0 };
        assert_eq!(
            value(
                &m,
                "pg_replication_slot_wal_status",
                &[
                    ("target", "primary"),
                    ("slot_name", "stale"),
                    ("wal_status", status)
                ]
            ),
            Some(want),
            "stale slot, {status}"
        );
    }

    // 2. Replay paused on the standby, 4 MB written on the primary: the standby receives
    // but does not replay; it lags by time, the primary sees it behind by bytes, and the
    // unused slot retains the WAL.
    std::thread::sleep(Duration::from_secs(2));
    standby.psql("select pg_wal_replay_pause()");
    primary
        .psql("insert into public.t select g, repeat('x', 1000) from generate_series(1, 4000) g");
    let received = poll_until(Duration::from_secs(10), || {
        (standby.psql("select pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()") == "t")
            .then_some(())
    });
    assert!(received.is_some(), "the standby did not receive the insert");
    // The primary learns the standby's positions from its status messages (every second).
    let mut last = String::new();
    let checked = poll_until(Duration::from_secs(10), || {
        let m = parse(&v.metrics());
        let lag = value(&m, "pg_replication_lag_seconds", &s);
        // What psql on the standby reads right after the scrape.
        let psql_lag = int(
            &standby.psql("select extract(epoch from now() - pg_last_xact_replay_timestamp())")
        );
        let behind = value(&m, "pg_stat_replication_replay_lag_bytes", &standby_labels);
        let stale = value(&m, "pg_replication_slot_retained_wal_bytes", &slot("stale"));
        last = format!("lag {lag:?} (psql {psql_lag}), behind {behind:?}, stale slot {stale:?}");
        let ok = lag.is_some_and(|l| l >= 2.0 && l <= psql_lag && psql_lag - l < 1.0)
            && behind.is_some_and(|b| b >= 4_000_000.0)
            && stale.is_some_and(|b| b >= 4_000_000.0);
        ok.then_some(())
    });
    assert!(checked.is_some(), "{last}\n{}", v.logs());
    // The slot's retained WAL agrees with psql on the quiet primary.
    let agreed = poll_until(Duration::from_secs(10), || {
        let m = parse(&v.metrics());
        let got = value(&m, "pg_replication_slot_retained_wal_bytes", &slot("stale"));
        let want = int(&primary.psql(
            "select pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) from pg_replication_slots where slot_name = 'stale'",
        ));
        last = format!("vitals {got:?}, psql {want}");
        (got == Some(want)).then_some(())
    });
    assert!(agreed.is_some(), "retained WAL of the stale slot: {last}");

    // 3. Replay resumed: the standby catches up and its lag returns to 0.
    standby.psql("select pg_wal_replay_resume()");
    let caught_up = poll_until(Duration::from_secs(15), || {
        let m = parse(&v.metrics());
        let lag = value(&m, "pg_replication_lag_seconds", &s);
        let behind = value(&m, "pg_stat_replication_replay_lag_bytes", &standby_labels);
        last = format!("lag {lag:?}, behind {behind:?}");
        (lag == Some(0.0) && behind == Some(0.0)).then_some(())
    });
    assert!(caught_up.is_some(), "after resuming: {last}");

    // 4. Streaming breaks (the standby's primary_conninfo points nowhere): received equals
    // replayed, yet the standby is not current, and its lag grows instead of showing 0.
    standby.psql(&format!(
        "alter system set primary_conninfo = 'host=127.0.0.1 port={} user=postgres connect_timeout=1'",
        crate::support::free_port()
    ));
    standby.reload();
    let cut = poll_until(Duration::from_secs(15), || {
        (standby.psql("select count(*) from pg_stat_wal_receiver") == "0").then_some(())
    });
    assert!(cut.is_some(), "the standby's WAL receiver kept running");
    primary.psql("insert into public.t values (0, 'unseen')");
    let grows = poll_until(Duration::from_secs(10), || {
        let m = parse(&v.metrics());
        let lag = value(&m, "pg_replication_lag_seconds", &s);
        last = format!("lag {lag:?}");
        lag.is_some_and(|l| l >= 1.0).then_some(())
    });
    assert!(grows.is_some(), "a standby without WAL receiver: {last}");
    let m = parse(&v.metrics());
    assert!(
        value(&m, "pg_stat_replication_replay_lag_bytes", &standby_labels).is_none(),
        "the disconnected standby is still listed on the primary"
    );
    let (ok, report) = promtool_check(&v.metrics());
    assert!(ok && report.trim().is_empty(), "promtool: {report}");
    assert!(!v.logs().contains("panicked"), "{}", v.logs());
}

/// `vitals` with no arguments but the listen address (so: the embedded default config),
/// in a private mount namespace where `/var/run/postgresql` is `socket_dir` (bind mount,
/// invisible to the rest of the host). Killed on drop.
struct DefaultVitals {
    child: std::process::Child,
    port: u16,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl DefaultVitals {
    fn start(socket_dir: &std::path::Path) -> DefaultVitals {
        let unshare = crate::support::require_binary("/usr/bin/unshare", "util-linux");
        let dir = temp_dir("vitals-default");
        let stderr = dir.path().join("stderr.log");
        let port = crate::support::free_port();
        let child = std::process::Command::new(unshare)
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount --bind '{}' /var/run/postgresql && exec '{}' --web.listen-address=127.0.0.1:{port}",
                socket_dir.display(),
                crate::support::vitals::BINARY
            ))
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn unshare");
        let mut v = DefaultVitals {
            child,
            port,
            stderr,
            _dir: dir,
        };
        let url = format!("http://127.0.0.1:{port}/-/ready");
        let client = http_client();
        let ready = poll_until(Duration::from_secs(30), || {
            if let Ok(Some(status)) = v.child.try_wait() {
                panic!("vitals exited with {status}:\n{}", v.logs());
            }
            client
                .get(&url)
                .send()
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        });
        assert!(
            ready.is_some(),
            "vitals did not become ready:\n{}",
            v.logs()
        );
        v
    }

    fn get(&self, path: &str) -> String {
        http_client()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for DefaultVitals {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The landing page's row of a target.
fn landing_row(html: &str, target: &str) -> String {
    html.split("<tr")
        .find(|r| r.contains(&format!("<td>{target}</td>")))
        .unwrap_or_else(|| panic!("{target} not on the landing page: {html}"))
        .to_string()
}

#[test]
fn the_default_config_shows_a_missing_local_server_as_down_with_the_reason() {
    // Nothing at 127.0.0.1:5432 on this host (the test says so if there is), and an empty
    // /var/run/postgresql in vitals' mount namespace.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", 5432)).is_err(),
        "something listens on 127.0.0.1:5432 on this host; this test needs it free"
    );
    let empty = temp_dir("pg-no-socket");
    let v = DefaultVitals::start(empty.path());
    let body = v.get("/metrics");
    let m = parse(&body);
    assert_eq!(
        value(&m, "pg_up", &[("target", "local")]),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        value(
            &m,
            "pg_scrape_errors_total",
            &[("target", "local"), ("reason", "connect")]
        ),
        Some(1.0)
    );
    // Fast: nothing to wait for when nothing listens.
    let took = value(&m, "pg_scrape_duration_seconds", &[("target", "local")]);
    assert!(took.is_some_and(|t| t < 1.0), "{took:?}");
    let row = landing_row(&v.get("/"), "local");
    for want in [
        "DOWN",
        "no server socket /var/run/postgresql/.s.PGSQL.5432",
        "127.0.0.1:5432: connection refused",
    ] {
        assert!(row.contains(want), "{want:?} not in {row}");
    }
    // The other collectors of the default config work as usual.
    assert_eq!(
        value(
            &m,
            "vitals_scrape_collector_success",
            &[("collector", "postgres")]
        ),
        Some(1.0),
        "{body}"
    );
    let (ok, report) = promtool_check(&body);
    assert!(ok && report.trim().is_empty(), "promtool: {report}");
}

#[test]
fn the_default_config_finds_the_local_server_with_peer_authentication() {
    let pg = Postgres::start();
    // Debian's default for the socket: peer authentication (the harness' own psql, as
    // role postgres from the root OS user, stays trusted).
    pg.set_hba(
        "local all postgres trust\nlocal all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n",
    );
    let os_user = vitals::config::os_user_name().expect("the OS user's name");
    // /var/run/postgresql for vitals: a directory whose .s.PGSQL.5432 is this cluster's.
    let dir = temp_dir("pg-default-socket");
    std::os::unix::fs::symlink(
        pg.socket_dir().join(format!(".s.PGSQL.{}", pg.port())),
        dir.path().join(".s.PGSQL.5432"),
    )
    .expect("symlink the socket");
    let v = DefaultVitals::start(dir.path());

    // 1. No role for the OS user yet: down, with the server's reason and what to do.
    let body = v.get("/metrics");
    assert_eq!(
        value(&parse(&body), "pg_up", &[("target", "local")]),
        Some(0.0),
        "{body}"
    );
    let row = landing_row(&v.get("/"), "local");
    let role_missing = format!("role &quot;{os_user}&quot; does not exist");
    for want in [role_missing.as_str(), "peer authentication", "pg_monitor"] {
        assert!(row.contains(want), "{want:?} not in {row}");
    }

    // 2. The OS user's role with pg_monitor, as the docs say: up, over peer authentication.
    pg.psql(&format!(
        "create role \"{os_user}\" login in role pg_monitor"
    ));
    let up = poll_until(Duration::from_secs(10), || {
        let m = parse(&v.get("/metrics"));
        (value(&m, "pg_up", &[("target", "local")]) == Some(1.0)).then_some(m)
    });
    let m = up.unwrap_or_else(|| panic!("the local target never came up:\n{}", v.logs()));
    assert!(
        value(
            &m,
            "pg_stat_database_xact_commit_total",
            &[("target", "local"), ("datname", "postgres")]
        )
        .is_some()
    );
    let seen = pg.psql(&format!(
        "select count(*) from pg_stat_activity where application_name = 'vitals' and usename = '{os_user}' and client_addr is null"
    ));
    assert!(
        int(&seen) >= 1.0,
        "no vitals session as {os_user} over the socket"
    );
}

#[test]
fn several_hosts_are_tried_in_order() {
    let pg = Postgres::start();
    let v = start_vitals(&format!(
        "      - name: fallback\n        host: /nonexistent/socket/dir, 127.0.0.1\n        port: {}\n        user: postgres\n        password: ${{VITALS_IT_PG_PW}}\n        sslmode: disable\n        tables_top_n: 0\n      - name: first\n        host: {},127.0.0.1\n        port: {}\n        user: postgres\n        tables_top_n: 0\n",
        pg.port(),
        pg.socket_dir().display(),
        pg.port()
    ));
    let m = parse(&v.metrics());
    assert_eq!(
        value(&m, "pg_up", &[("target", "fallback")]),
        Some(1.0),
        "{}",
        v.logs()
    );
    assert_eq!(
        value(&m, "pg_up", &[("target", "first")]),
        Some(1.0),
        "{}",
        v.logs()
    );
    // `first` is on the socket (no client address), `fallback` on TCP.
    let sessions = pg.psql(
        "select count(*) filter (where client_addr is null), count(*) filter (where client_addr is not null) \
         from pg_stat_activity where application_name = 'vitals'",
    );
    let (socket, tcp) = sessions.split_once('|').expect("two columns");
    assert!(
        int(socket) >= 1.0 && int(tcp) >= 1.0,
        "socket {socket}, tcp {tcp}"
    );
}

/// Runs `sql` as the superuser in database `db` and returns psql's unaligned output.
fn psql_out_in(pg: &Postgres, db: &str, sql: &str) -> String {
    let out = run_ok(
        std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(pg.socket_dir())
            .args(["-p", &pg.port().to_string(), "-U", "postgres", "-d", db])
            .args(["-c", sql]),
        &format!("psql in {db}"),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Ages of the three xmin horizon holders the test set up, as psql reads them.
fn holder_ages(pg: &Postgres) -> [f64; 3] {
    [
        int(&pg.psql(
            "select age(backend_xmin) from pg_stat_activity where application_name = 'holder'",
        )),
        int(&pg.psql(
            "select age(catalog_xmin) from pg_replication_slots where slot_name = 'vitals_slot'",
        )),
        int(&pg.psql("select age(transaction) from pg_prepared_xacts where gid = 'vitals_px'")),
    ]
}

fn burn_xids(pg: &Postgres, n: u32) {
    pg.psql(&format!(
        "do $$ begin for i in 1..{n} loop perform txid_current(); commit; end loop; end $$"
    ));
}

#[test]
fn lock_waits_xmin_horizon_index_health_sequences_and_pending_restart_agree_with_psql() {
    let pg = Postgres::start();
    // A prepared transaction and a logical slot hold the horizon too.
    pg.restart_with("max_prepared_transactions = 5\nwal_level = logical\n");
    pg.psql("create database app");
    psql_in(
        &pg,
        "app",
        "create table public.u (a int, b int); \
         insert into public.u select 1, g from generate_series(1, 1000) g; \
         create index u_b on public.u (b); create unique index u_unique_b on public.u (b); \
         create table public.w (id int primary key, n int); insert into public.w values (1, 1); \
         create sequence public.up maxvalue 1000; select setval('public.up', 990); \
         create sequence public.down increment -1 minvalue -100 maxvalue -1 start -1; \
         select setval('public.down', -95);",
    );
    // A unique CREATE INDEX CONCURRENTLY over duplicates fails and leaves an invalid index.
    let failed = std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(pg.socket_dir())
        .args(["-p", &pg.port().to_string(), "-U", "postgres", "-d", "app"])
        .args(["-c", "create unique index concurrently u_a on public.u (a)"])
        .output()
        .expect("run psql");
    assert!(
        !failed.status.success()
            && String::from_utf8_lossy(&failed.stderr).contains("could not create unique index"),
        "{failed:?}"
    );

    // The horizon's holders, oldest first: a logical slot (its catalog_xmin), a prepared
    // transaction, a repeatable read transaction that took its snapshot.
    pg.psql("select pg_create_logical_replication_slot('vitals_slot', 'test_decoding')");
    let mut prepared = pg.session("postgres");
    prepared.send("begin; create table public.px (a int); prepare transaction 'vitals_px';");
    poll_until(Duration::from_secs(10), || {
        (pg.psql("select count(*) from pg_prepared_xacts") == "1").then_some(())
    })
    .expect("prepared transaction");
    let mut holder = pg.session("postgres");
    holder.send(
        "set application_name = 'holder'; begin isolation level repeatable read; \
         select count(*) from pg_class;",
    );
    poll_until(Duration::from_secs(10), || {
        (pg.psql(
            "select count(*) from pg_stat_activity where application_name = 'holder' \
             and state = 'idle in transaction' and backend_xmin is not null",
        ) == "1")
            .then_some(())
    })
    .expect("repeatable read snapshot held");
    burn_xids(&pg, 200);

    // A row lock held by one session, waited for by another (a row lock, so that the
    // fan-out's size functions are not blocked).
    let mut locker = pg.session("app");
    locker.send("begin; select * from public.w where id = 1 for update;");
    poll_until(Duration::from_secs(10), || {
        (psql_out_in(
            &pg,
            "app",
            "select count(*) from pg_locks l join pg_class c on c.oid = l.relation \
             where c.relname = 'w' and l.mode = 'RowShareLock' and l.granted",
        ) == "1")
            .then_some(())
    })
    .expect("row lock held");
    let mut waiter = pg.session("app");
    waiter.send("set application_name = 'waiter'; update public.w set n = 2 where id = 1;");
    poll_until(Duration::from_secs(10), || {
        (pg.psql(
            "select count(*) from pg_stat_activity where application_name = 'waiter' \
             and wait_event_type = 'Lock'",
        ) == "1")
            .then_some(())
    })
    .expect("waiter blocked");
    std::thread::sleep(Duration::from_millis(1200));

    let v = start_vitals(&target_yaml(
        "t",
        &pg,
        "        tables_top_n: 5\n        tables_refresh_interval: 0s\n",
    ));
    let wait_sql = "select extract(epoch from now() - l.waitstart) from pg_locks l \
                    join pg_stat_activity a on a.pid = l.pid \
                    where a.application_name = 'waiter' and not l.granted";
    let wait_before = int(&pg.psql(wait_sql));
    let ages_before = holder_ages(&pg);
    let body = v.metrics();
    let ages_after = holder_ages(&pg);
    let wait_after = int(&pg.psql(wait_sql));
    let m = parse(&body);
    let t = ("target", "t");

    // Lock waits.
    let wait = value(
        &m,
        "pg_stat_activity_max_wait_duration_seconds",
        &[t, ("datname", "app")],
    )
    .unwrap_or_else(|| panic!("no max wait for app:\n{body}"));
    assert!(
        wait >= 1.0 && wait >= wait_before - 1e-3 && wait <= wait_after + 1e-3,
        "vitals {wait}, psql {wait_before}..{wait_after}"
    );
    assert_eq!(
        value(
            &m,
            "pg_stat_activity_max_wait_duration_seconds",
            &[t, ("datname", "postgres")]
        ),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        value(
            &m,
            "pg_stat_activity_waiting_connections",
            &[t, ("datname", "app"), ("state", "active")]
        ),
        Some(1.0),
        "{body}"
    );

    // The xmin horizon, one series per holder, between psql's readings before and after.
    let ages: Vec<f64> = ["backend", "replication_slot", "prepared_xact"]
        .iter()
        .map(|h| {
            value(&m, "pg_xmin_horizon_age", &[t, ("holder", h)])
                .unwrap_or_else(|| panic!("no xmin horizon age for {h}:\n{body}"))
        })
        .collect();
    for i in 0..3 {
        assert!(
            ages[i] >= 200.0 && ages[i] >= ages_before[i] && ages[i] <= ages_after[i],
            "holder {i}: vitals {}, psql {}..{}",
            ages[i],
            ages_before[i],
            ages_after[i]
        );
    }
    assert_eq!(
        m.iter().filter(|s| s.name == "pg_xmin_horizon_age").count(),
        3,
        "{body}"
    );

    // Invalid and unused indexes of app, as psql counts them from pg_stat_user_indexes.
    let invalid = psql_out_in(
        &pg,
        "app",
        "select count(*), coalesce(sum(pg_relation_size(indexrelid)), 0) from pg_index \
         where not indisvalid",
    );
    let unused = psql_out_in(
        &pg,
        "app",
        "select count(*), coalesce(sum(pg_relation_size(s.indexrelid)), 0) \
         from pg_stat_user_indexes s join pg_index i using (indexrelid) \
         where s.idx_scan = 0 and i.indisvalid and not i.indisunique and not i.indisprimary",
    );
    let pair = |s: &str| -> (f64, f64) {
        let (a, b) = s.split_once('|').expect("two columns");
        (int(a), int(b))
    };
    let (invalid_n, invalid_bytes) = pair(&invalid);
    let (unused_n, unused_bytes) = pair(&unused);
    assert_eq!((invalid_n, unused_n), (1.0, 1.0), "u_a invalid, u_b unused");
    assert!(unused_bytes > 0.0);
    let app = [t, ("datname", "app")];
    assert_eq!(
        value(&m, "pg_index_invalid", &app),
        Some(invalid_n),
        "{body}"
    );
    assert_eq!(
        value(&m, "pg_index_invalid_size_bytes", &app),
        Some(invalid_bytes),
        "{body}"
    );
    assert_eq!(value(&m, "pg_index_unused", &app), Some(unused_n), "{body}");
    assert_eq!(
        value(&m, "pg_index_unused_size_bytes", &app),
        Some(unused_bytes),
        "{body}"
    );
    assert_eq!(
        value(&m, "pg_index_invalid", &[t, ("datname", "postgres")]),
        Some(0.0),
        "{body}"
    );

    // Sequences near the end of their range, up and down.
    let last = |name: &str| {
        int(&psql_out_in(
            &pg,
            "app",
            &format!("select last_value from pg_sequences where sequencename = '{name}'"),
        ))
    };
    assert_eq!((last("up"), last("down")), (990.0, -95.0));
    for (name, want) in [("up", (990.0 - 1.0) / 999.0), ("down", 94.0 / 99.0)] {
        let used = value(
            &m,
            "pg_sequence_used_ratio",
            &[t, ("datname", "app"), ("sequencename", name)],
        );
        assert!(
            used.is_some_and(|u| (u - want).abs() < 1e-9),
            "{name}: {used:?}, want {want}"
        );
    }

    // No setting waits for a restart, until one that needs it changes.
    assert_eq!(value(&m, "pg_settings_pending_restart", &[t]), Some(0.0));
    pg.psql("alter system set max_connections = 60");
    pg.reload();
    assert_eq!(
        pg.psql("select name from pg_settings where pending_restart"),
        "max_connections"
    );

    // Burn more transaction IDs: every holder's age grows by at least as many.
    burn_xids(&pg, 300);
    let m2 = parse(&v.metrics());
    assert_eq!(value(&m2, "pg_settings_pending_restart", &[t]), Some(1.0));
    for (i, h) in ["backend", "replication_slot", "prepared_xact"]
        .iter()
        .enumerate()
    {
        let now = value(&m2, "pg_xmin_horizon_age", &[t, ("holder", h)]).unwrap_or(0.0);
        assert!(now >= ages[i] + 300.0, "{h}: {} then {now}", ages[i]);
    }
    // The wait is over once the lock is released.
    drop(locker);
    poll_until(Duration::from_secs(10), || {
        (pg.psql("select count(*) from pg_stat_activity where wait_event_type = 'Lock'") == "0")
            .then_some(())
    })
    .expect("waiter unblocked");
    let m3 = parse(&v.metrics());
    assert_eq!(
        value(
            &m3,
            "pg_stat_activity_max_wait_duration_seconds",
            &[t, ("datname", "app")]
        ),
        Some(0.0)
    );
    drop((waiter, holder, prepared));
    pg.psql("rollback prepared 'vitals_px'");
}

/// `stats_reset` of every database as psql reads it, 0 for NULL (never reset), by datname.
fn psql_stats_reset(pg: &Postgres) -> BTreeMap<String, f64> {
    psql_map(
        pg,
        "select datname, coalesce(extract(epoch from stats_reset), 0) \
         from pg_stat_database where datname is not null order by 1",
    )
    .into_iter()
    .map(|(db, v)| (db, v[0]))
    .collect()
}

#[test]
fn stats_reset_is_exported_for_every_database_and_moves_with_pg_stat_reset() {
    let pg = Postgres::start();
    for db in ["busy", "quiet"] {
        pg.psql(&format!("create database {db}"));
    }
    // Counters to reset: 200 committed transactions in `busy`.
    psql_in(
        &pg,
        "busy",
        "do $$ begin for i in 1..200 loop perform txid_current(); commit; end loop; end $$",
    );
    let v = start_vitals(&target_yaml("main", &pg, "        tables_top_n: 0\n"));
    const FAMILY: &str = "pg_stat_database_stats_reset_timestamp_seconds";

    // Every database of pg_database has the series, equal to what psql reads; the databases
    // created above were never reset, so their stats_reset is NULL and the series 0.
    let check_all = |m: &[Series]| -> Vec<String> {
        let want = psql_stats_reset(&pg);
        let mut problems = Vec::new();
        for (db, w) in &want {
            let got = value(m, FAMILY, &[("target", "main"), ("datname", db)]);
            if got != Some(*w) {
                problems.push(format!("{db}: vitals {got:?}, psql {w}"));
            }
        }
        let exported = m.iter().filter(|s| s.name == FAMILY).count();
        if exported != want.len() {
            problems.push(format!("{exported} series for {} databases", want.len()));
        }
        problems
    };
    let m = parse(&v.metrics());
    let problems = check_all(&m);
    assert!(problems.is_empty(), "{problems:?}\n{}", v.logs());
    let databases = psql_stats_reset(&pg);
    assert!(databases.len() >= 5, "{databases:?}");
    assert_eq!(databases["quiet"], 0.0, "a new database was never reset");
    assert_eq!(databases["busy"], 0.0, "a new database was never reset");
    let l = [("target", "main"), ("datname", "busy")];
    let commits_before =
        value(&m, "pg_stat_database_xact_commit_total", &l).expect("busy xact_commit");
    assert!(commits_before >= 200.0, "{commits_before}");

    // pg_stat_reset() in `busy` sets its stats_reset (and only its) to now.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    psql_in(&pg, "busy", "select pg_stat_reset()");
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    let m = parse(&v.metrics());
    let problems = check_all(&m);
    assert!(problems.is_empty(), "{problems:?}\n{}", v.logs());
    let reset = value(&m, FAMILY, &l).expect("busy stats_reset");
    assert!(
        reset >= before - 1.0 && reset <= after + 1.0,
        "stats_reset {reset} not between {before} and {after}"
    );
    let other = [("target", "main"), ("datname", "quiet")];
    assert_eq!(value(&m, FAMILY, &other), Some(0.0), "quiet was not reset");
    let commits_after =
        value(&m, "pg_stat_database_xact_commit_total", &l).expect("busy xact_commit");
    assert!(
        commits_after < commits_before,
        "the reset shows in the counters too: {commits_after} after, {commits_before} before"
    );

    // A second reset moves it forward.
    std::thread::sleep(Duration::from_millis(1100));
    psql_in(&pg, "busy", "select pg_stat_reset()");
    let m = parse(&v.metrics());
    let problems = check_all(&m);
    assert!(problems.is_empty(), "{problems:?}\n{}", v.logs());
    let again = value(&m, FAMILY, &l).expect("busy stats_reset");
    assert!(again >= reset + 1.0, "{again} after {reset}");
    // The exposition with the new family still passes promtool.
    let (ok, report) = promtool_check(&v.metrics());
    assert!(ok && report.trim().is_empty(), "promtool: {report}");
}
