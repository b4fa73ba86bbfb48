//! Proofs that each tests/support helper really starts and drives its server.
//!
//! Every test here starts its own servers on their own free ports and temp dirs, so they run
//! in parallel. They are blocking `#[test]`s, as the harness API is (see tests/support/mod.rs).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::alertmanager::Alertmanager;
use crate::support::postgres::Postgres;
use crate::support::prometheus::{Prometheus, sample_values, scrape_job};
use crate::support::sshd::{HOST_KEY_TYPES, Sshd, known_hosts_line, public_key, ssh_keygen};
use crate::support::victoria::VictoriaMetrics;
use crate::support::vitals::Vitals;
use crate::support::{
    free_port, poll_until, require_binary, tail, temp_dir, with_first_port, write_file,
};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn support_utilities_behave() {
    let port = free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("a port from free_port is bindable");

    let dir = temp_dir("utils");
    let log = dir.path().join("log");
    write_file(&log, "one\ntwo\nthree\nfour\n");
    assert_eq!(tail(&log, 2), "three\nfour");
    assert_eq!(tail(&log, 10), "one\ntwo\nthree\nfour");
    assert!(tail(&dir.path().join("missing"), 3).contains("cannot read"));

    let mut calls = 0;
    let got = poll_until(Duration::from_secs(5), || {
        calls += 1;
        (calls == 3).then_some(calls)
    });
    assert_eq!(got, Some(3));
    let started = Instant::now();
    assert_eq!(poll_until(Duration::from_millis(300), || None::<()>), None);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
#[should_panic(
    expected = "install the Debian package `no-such-package` (run scripts/setup-test-deps.sh)"
)]
fn missing_binary_panics_with_install_hint() {
    require_binary("/usr/bin/vitals-no-such-binary", "no-such-package");
}

/// Every helper comes up on a new port when its first port is already taken.
#[test]
fn helpers_retry_when_their_port_is_taken() {
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let port = taken.local_addr().expect("addr").port();

    let pg = with_first_port(port, Postgres::start);
    assert_ne!(pg.port(), port);
    assert_eq!(pg.psql("select 1"), "1");

    let sshd = with_first_port(port, Sshd::start);
    assert_ne!(sshd.port(), port);
    let output = sshd.ssh("true");
    assert!(output.status.success(), "{}", stderr(&output));

    let prom = with_first_port(port, || Prometheus::start(""));
    assert_ne!(prom.port(), port);
    assert_eq!(prom.query("vector(7)")[0]["value"][1], "7");

    let am = with_first_port(port, Alertmanager::start);
    assert_ne!(am.port(), port);
    assert!(am.alerts().is_empty());

    let vm = with_first_port(port, VictoriaMetrics::start);
    assert_ne!(vm.port(), port);
    vm.import_prometheus("harness_retry 7 1700000000000\n");

    let standby = with_first_port(port, || pg.start_standby("retry"));
    assert_ne!(standby.port(), port);
    assert_eq!(standby.psql("select pg_is_in_recovery()"), "t");
}

#[test]
#[should_panic(expected = "--- last 40 lines of prometheus log")]
fn prometheus_start_failure_shows_its_log() {
    Prometheus::start("  - this is: [not a scrape config");
}

#[test]
#[should_panic(expected = "--- last 40 lines of alertmanager log")]
fn alertmanager_start_failure_shows_its_log() {
    Alertmanager::start_with_config("route: {receiver: nowhere}\nreceivers: []\n");
}

#[test]
fn postgres_answers_over_socket_and_tcp_with_password() {
    let pg = Postgres::start();

    let version = pg.psql("select version()");
    assert!(version.contains("PostgreSQL 15"), "version(): {version}");
    assert_eq!(pg.psql("show fsync"), "off");
    assert_eq!(pg.psql("show port"), pg.port().to_string());
    assert!(
        pg.socket_dir()
            .join(format!(".s.PGSQL.{}", pg.port()))
            .exists(),
        "no unix socket in {}",
        pg.socket_dir().display()
    );

    // TCP with the password, as vitals connects.
    let ok = pg.psql_tcp(
        pg.user(),
        pg.password(),
        "select current_user, inet_server_addr()",
    );
    assert!(ok.status.success(), "TCP login failed: {}", stderr(&ok));
    assert_eq!(stdout(&ok).trim(), "postgres|127.0.0.1");

    // TCP really checks the password.
    let refused = pg.psql_tcp(pg.user(), "wrong-password", "select 1");
    assert!(!refused.status.success(), "a wrong password was accepted");
    assert!(
        stderr(&refused).contains("password authentication failed"),
        "unexpected error: {}",
        stderr(&refused)
    );

    let dsn = pg.dsn();
    for part in [
        format!("port={}", pg.port()),
        "host=127.0.0.1".to_string(),
        format!("password={}", pg.password()),
        format!("user={}", pg.user()),
    ] {
        assert!(dsn.contains(&part), "dsn {dsn:?} lacks {part}");
    }
}

#[test]
fn postgres_stops_on_drop() {
    let pg = Postgres::start();
    let data_dir = pg.data_dir().to_path_buf();
    let port = pg.port();
    drop(pg);
    assert!(
        !data_dir.exists(),
        "{} survived the drop",
        data_dir.display()
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something still listens on {port}"
    );
}

#[test]
fn sshd_key_auth_runs_df() {
    let sshd = Sshd::start();
    let output = sshd.ssh("LC_ALL=C df -P -T -B1 /");
    assert!(
        output.status.success(),
        "ssh df failed ({}): {}\n{}",
        output.status,
        stderr(&output),
        crate::support::log_block("sshd", sshd.log_path())
    );
    let text = stdout(&output);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.starts_with("Filesystem") && header.contains("Type") && header.contains("1-blocks"),
        "unexpected df header: {header:?}"
    );
    let root = lines.next().unwrap_or_default();
    assert!(root.ends_with(" /"), "unexpected df line for /: {root:?}");

    let who = sshd.ssh("id -un");
    assert!(who.status.success(), "{}", stderr(&who));
    assert_eq!(stdout(&who).trim(), sshd.user());
}

#[test]
fn sshd_password_auth_works_and_checks_the_password() {
    let sshd = Sshd::start();
    let ok = sshd.ssh_password(sshd.password(), "id -un");
    assert!(
        ok.status.success(),
        "password login failed ({}): {}\n{}",
        ok.status,
        stderr(&ok),
        crate::support::log_block("sshd", sshd.log_path())
    );
    assert_eq!(stdout(&ok).trim(), sshd.user());

    let refused = sshd.ssh_password("not-the-password", "id -un");
    assert!(
        !refused.status.success(),
        "a wrong password was accepted: {}",
        stdout(&refused)
    );
}

#[test]
fn sshd_client_rejects_a_wrong_host_key() {
    let sshd = Sshd::start();
    let dir = temp_dir("wrong-hostkeys");

    // known_hosts naming other keys, of every type, for the same [127.0.0.1]:port.
    let mut lines = String::new();
    for key_type in HOST_KEY_TYPES {
        let path = dir.path().join(format!("other_{key_type}"));
        ssh_keygen(key_type, &path, "not-the-server");
        lines.push_str(&known_hosts_line(sshd.port(), &public_key(&path)));
        lines.push('\n');
    }
    let wrong = dir.path().join("known_hosts");
    write_file(&wrong, &lines);
    let output = sshd
        .ssh_command_with(&wrong, sshd.client_key_path(), "true")
        .output()
        .expect("running ssh");
    assert!(!output.status.success(), "ssh accepted a wrong host key");
    assert!(
        stderr(&output).contains("Host key verification failed"),
        "unexpected ssh error: {}",
        stderr(&output)
    );

    // An empty known_hosts fails too (StrictHostKeyChecking=yes never adds keys)...
    let empty = dir.path().join("empty_known_hosts");
    write_file(&empty, "");
    let output = sshd
        .ssh_command_with(&empty, sshd.client_key_path(), "true")
        .output()
        .expect("running ssh");
    assert!(!output.status.success(), "ssh accepted an unknown host key");

    // ...while the harness' known_hosts, listing the real keys, works.
    let known = std::fs::read_to_string(sshd.known_hosts_path()).expect("known_hosts");
    assert_eq!(known.lines().count(), HOST_KEY_TYPES.len());
    assert!(known.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port())));
    let output = sshd.ssh("true");
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn sshd_authorized_key_options_apply() {
    let sshd = Sshd::start();
    let key = sshd.generate_client_key("restricted");

    let output = sshd
        .ssh_command_with(sshd.known_hosts_path(), &key, "id -un")
        .output()
        .expect("running ssh");
    assert!(
        !output.status.success(),
        "a key that is not authorized was accepted"
    );

    sshd.authorize_key(&key, r#"restrict,command="echo forced-command""#);
    let output = sshd
        .ssh_command_with(sshd.known_hosts_path(), &key, "id -un")
        .output()
        .expect("running ssh");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "forced-command");
}

#[test]
fn alertmanager_delivers_posted_alert_to_webhook() {
    let am = Alertmanager::start();
    let name = format!("HarnessProof{}", std::process::id());
    am.post_alerts(&json!([{
        "labels": {"alertname": name, "severity": "warning", "instance": "db1:5432"},
        "annotations": {"summary": "harness proof"},
    }]));

    let has_our_alert = |body: &Value| {
        body["alerts"]
            .as_array()
            .is_some_and(|alerts| alerts.iter().any(|a| a["labels"]["alertname"] == name))
    };
    let body = am.wait_for_webhook(has_our_alert, Duration::from_secs(10));
    assert_eq!(body["status"], "firing", "{body:#}");
    assert_eq!(body["receiver"], "harness-webhook");
    let alert = body["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["labels"]["alertname"] == name))
        .expect("checked by the predicate");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["labels"]["instance"], "db1:5432");
    assert_eq!(alert["annotations"]["summary"], "harness proof");

    let listed = am.alerts();
    assert!(
        listed
            .iter()
            .any(|a| a["labels"]["alertname"] == name && a["status"]["state"] == "active"),
        "/api/v2/alerts does not list {name} as active: {listed:#?}"
    );
}

#[test]
fn prometheus_rules_fire_into_alertmanager() {
    let am = Alertmanager::start();
    let rules = "groups:
  - name: harness
    rules:
      - alert: HarnessAlwaysFiring
        expr: vector(1)
        labels:
          severity: info
";
    let prom = Prometheus::builder()
        .scrape_configs(&scrape_job("nothing-listens", "127.0.0.1:1", "/metrics"))
        .rule_file("harness.rules.yml", rules)
        .alertmanager(&am.host_port())
        .start();

    // Nothing listens on port 1 (root-only, never bound here): the target must be down.
    let down = prom.wait_for(
        r#"up{job="nothing-listens"}"#,
        |r| sample_values(r) == [0.0],
        Duration::from_secs(30),
    );
    assert_eq!(sample_values(&down), [0.0]);

    let body = am.wait_for_webhook(
        |b| {
            b["alerts"].as_array().is_some_and(|alerts| {
                alerts
                    .iter()
                    .any(|a| a["labels"]["alertname"] == "HarnessAlwaysFiring")
            })
        },
        Duration::from_secs(30),
    );
    assert_eq!(body["status"], "firing");
}

#[test]
fn prometheus_scrapes_itself() {
    // Prometheus' own port is only known once it runs: point the job at it and reload.
    let prom = Prometheus::start("");
    let yaml = std::fs::read_to_string(prom.config_path()).expect("prometheus.yml");
    let yaml = yaml.replace(
        "scrape_configs: []\n",
        &format!(
            "scrape_configs:\n{}",
            scrape_job(
                "prometheus",
                &format!("127.0.0.1:{}", prom.port()),
                "/metrics"
            )
        ),
    );
    write_file(prom.config_path(), yaml);
    prom.reload();
    let result = prom.wait_for(
        r#"up{job="prometheus"}"#,
        |r| sample_values(r) == [1.0],
        Duration::from_secs(30),
    );
    assert_eq!(
        result[0]["metric"]["instance"],
        format!("127.0.0.1:{}", prom.port())
    );
}

/// Needs a working `vitals exporter`: proves the launcher's signals, retry and logs.
#[test]
fn vitals_launcher_retries_reloads_and_stops() {
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut vitals = with_first_port(port, || Vitals::start("{}\n"));
    assert_ne!(vitals.port(), port);
    assert!(vitals.config_path().is_file());

    vitals.write_config("");
    vitals.sighup();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        vitals.has_exited(),
        None,
        "SIGHUP killed vitals\n{}",
        vitals.logs()
    );
    let (status, body) = vitals.get("/-/ready");
    assert_eq!(status, 200, "{body}");

    let status = vitals.sigterm();
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        vitals.logs()
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", vitals.port())).is_err(),
        "vitals still listens after exiting"
    );
    assert!(!vitals.logs().trim().is_empty());
}

/// Needs a `vitals` binary that rejects malformed YAML at start-up.
#[test]
fn vitals_launcher_reports_a_failed_start() {
    let (status, logs) = Vitals::builder()
        .config("{ not: [yaml")
        .run_until_exit(Duration::from_secs(20));
    assert!(!status.success(), "vitals accepted malformed YAML\n{logs}");
    assert!(
        logs.contains("vitals.yml"),
        "the error names no config file:\n{logs}"
    );
}

#[test]
#[should_panic(expected = "--- last 40 lines of vitals stderr")]
fn vitals_start_failure_shows_its_stderr() {
    Vitals::start("{ not: [yaml");
}

/// Needs a working `vitals exporter` (serving /-/ready and /metrics, accepting `{}` as its
/// config): this is the end-to-end proof of the Vitals launcher.
#[test]
fn prometheus_scrapes_vitals_exporter() {
    let vitals = Vitals::start("{}\n");
    let (status, body) = vitals.get("/-/ready");
    assert_eq!(status, 200, "{body}");

    let prom = Prometheus::builder()
        .scrape("vitals", &vitals.host_port(), "/metrics")
        .start();
    let result = prom.wait_for(
        r#"up{job="vitals"}"#,
        |r| sample_values(r) == [1.0],
        Duration::from_secs(30),
    );
    assert_eq!(result[0]["metric"]["instance"], vitals.host_port());
}
