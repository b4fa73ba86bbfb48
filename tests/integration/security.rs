//! Security of what vitals writes, against real servers (issue 10, "Security"):
//!
//! - secrets: every collector and the sidecar configured with distinct test secrets
//!   (PostgreSQL password files and `${ENV}`, SSH password file and key passphrase, web basic
//!   auth, sidecar bearer token and basic auth to Prometheus and Alertmanager), with failures
//!   exercised (wrong passwords, unreachable servers); no secret may appear in /metrics, the
//!   landing page, /probe answers, 400/401 answers, stdout/stderr at debug level, the state
//!   directories or `check-config` error messages;
//! - label values with quotes, backslashes and newlines (database names, process names, log
//!   messages and programs, a mount point) give an exposition that `promtool check metrics`
//!   accepts;
//! - hostile cardinality: a million sshd lines with random addresses and random error
//!   messages keep `log_ssh_auth_failures_by_ip_total` and `log_pattern_lines_total` within
//!   `ip_budget` / `pattern_budget`, and the RSS bounded.
//!
//! Narrower checks that already existed and are not repeated here: PostgreSQL `${ENV}` and
//! `password_file` secrets with the exporter at debug level
//! (exporter.rs `secrets_from_the_environment_never_reach_metrics_or_logs`), a restricted
//! role's password (postgres.rs `every_family_passes_promtool_..._secrets_stay_hidden`), SSH
//! key types, passphrases and wrong passwords (ssh_disk.rs
//! `ecdsa_rsa_encrypted_keys_and_passwords_authenticate_and_stay_secret`), PromQL client
//! basic auth and bearer tokens in error messages (promql.rs), web basic auth and TLS
//! (web.rs).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::postgres::Postgres;
use crate::support::prometheus::Prometheus;
use crate::support::server::{ServerProcess, start_on_free_port};
use crate::support::sshd::{Sshd, TEST_PASSWORD};
use crate::support::vitals::BINARY;
use crate::support::{
    Sample, chmod, free_port, http_client, kill_and_reap, parse_samples, poll_until,
    promtool_check, require_binary, run_ok, temp_dir, write_file,
};

const PG_GOOD: &str = "pg-GOOD-secret-4711";
const PG_WRONG: &str = "pg-WRONG-secret-0815";
const PG_DOWN: &str = "pg-DOWN-secret-2222";
const PG_ENV: &str = "pg-ENV-secret-1234";
const SSH_WRONG: &str = "ssh-WRONG-secret-3131";
const SSH_PASSPHRASE: &str = "ssh-PASSPHRASE-secret-5151";
const SSH_DOWN: &str = "ssh-DOWN-secret-6161";
const WEB_PW: &str = "web-BASIC-secret-7171";
const WEB_WRONG: &str = "web-WRONG-secret-7272";
const PROM_PW: &str = "prom-BASIC-secret-8181";
const PROM_TOKEN: &str = "prom-BEARER-secret-8282";
const AM_TOKEN: &str = "am-BEARER-secret-9191";
const AM_PW: &str = "am-BASIC-secret-9292";
const CONFIG_INLINE: &str = "cfg-INLINE-secret-1357";

/// Every secret above, plus the SSH harness user's password (used by a target here).
fn secrets() -> Vec<&'static str> {
    vec![
        PG_GOOD,
        PG_WRONG,
        PG_DOWN,
        PG_ENV,
        TEST_PASSWORD,
        SSH_WRONG,
        SSH_PASSPHRASE,
        SSH_DOWN,
        WEB_PW,
        WEB_WRONG,
        PROM_PW,
        PROM_TOKEN,
        AM_TOKEN,
        AM_PW,
        CONFIG_INLINE,
    ]
}

/// A vitals process behind `--web.config.file` basic auth (which the shared harness'
/// readiness poll cannot pass), logging at debug level to files in its directory; started
/// and waited for with the harness' start loop, killed on drop.
struct Guarded {
    /// Only held: the process is killed when the guard is dropped.
    _process: ServerProcess,
    port: u16,
    dir: PathBuf,
    client: reqwest::blocking::Client,
}

impl Guarded {
    /// Writes `config_yaml` to `<dir>/vitals.yml` and runs `vitals <subcommand>` on it in
    /// `dir`, behind the basic auth of `web`; returns once `/-/ready` answers 200 through it.
    fn start(
        subcommand: &str,
        dir: &Path,
        config_yaml: &str,
        web: &Path,
        env: &[(&str, &str)],
    ) -> Guarded {
        let config = dir.join("vitals.yml");
        write_file(&config, config_yaml);
        let (stdout, stderr) = (dir.join("stdout.log"), dir.join("stderr.log"));
        let client = http_client();
        let mut process = ServerProcess::default();
        let logs = [
            ("vitals stderr", stderr.as_path()),
            ("vitals stdout", stdout.as_path()),
        ];
        let port = start_on_free_port(&format!("vitals {subcommand}"), &logs, |port| {
            process.spawn(
                Command::new(BINARY)
                    .arg(subcommand)
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    .arg(format!("--config.file={}", config.display()))
                    .arg(format!("--web.config.file={}", web.display()))
                    .arg("--log.level=debug")
                    .envs(env.iter().copied())
                    .current_dir(dir),
                &stdout,
                &stderr,
            );
            let ready = format!("http://127.0.0.1:{port}/-/ready");
            process.wait_ready("vitals", &format!("{ready} did not answer 200"), || {
                get_as(&client, &ready, Some(("prom", WEB_PW)), None).0 == 200
            })
        });
        Guarded {
            _process: process,
            port,
            dir: dir.to_path_buf(),
            client,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// GET with the right basic auth; (status, body), or (0, error) when the request failed.
    fn get(&self, path: &str) -> (u16, String) {
        self.get_as(path, Some(("prom", WEB_PW)), None)
    }

    /// GET `path` with these credentials and `Accept` header (see [`get_as`]).
    fn get_as(
        &self,
        path: &str,
        auth: Option<(&str, &str)>,
        accept: Option<&str>,
    ) -> (u16, String) {
        get_as(&self.client, &self.url(path), auth, accept)
    }

    fn samples(&self) -> (String, Vec<Sample>) {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        let samples = parse_samples(&body);
        (body, samples)
    }

    fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.join(n)).unwrap_or_default();
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            read("stdout.log"),
            read("stderr.log")
        )
    }
}

/// GET `url` with an optional basic auth and `Accept` header, as a scrape (with a scrape
/// timeout header); (status, response headers and body), or (0, error) when it failed.
fn get_as(
    client: &reqwest::blocking::Client,
    url: &str,
    auth: Option<(&str, &str)>,
    accept: Option<&str>,
) -> (u16, String) {
    let mut req = client
        .get(url)
        .header("X-Prometheus-Scrape-Timeout-Seconds", "10");
    if let Some((u, p)) = auth {
        req = req.basic_auth(u, Some(p));
    }
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    match req.send() {
        Ok(r) => {
            let status = r.status().as_u16();
            let headers = format!("{:?}", r.headers());
            (
                status,
                format!("{headers}\n{}", r.text().unwrap_or_default()),
            )
        }
        Err(e) => (0, e.to_string()),
    }
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    crate::support::sample_value(samples, name, labels)
}

/// Every regular file under `dir`, with its text (lossy), for the secret grep.
fn files_under(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((
                p.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
    out
}

/// `vitals check-config` on a config text; its stdout and stderr together.
fn check_config(dir: &Path, name: &str, yaml: &str) -> String {
    let path = dir.join(name);
    write_file(&path, yaml);
    let out = Command::new(BINARY)
        .arg("check-config")
        .arg(&path)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {BINARY} check-config: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn closed_port() -> u16 {
    // Bound and released: nothing listens there (connection refused).
    free_port()
}

fn secret_file(dir: &Path, name: &str, secret: &str) -> String {
    let p = dir.join(name);
    write_file(&p, format!("{secret}\n"));
    chmod(&p, 0o600);
    p.display().to_string()
}

#[test]
fn no_secret_appears_anywhere_vitals_writes() {
    let pg = Postgres::start();
    pg.psql(&format!(
        "create role sec_mon login password '{PG_GOOD}' in role pg_monitor"
    ));
    let sshd = Sshd::start();
    let dir = temp_dir("security");
    let d = dir.path();
    chmod(d, 0o755);
    // An encrypted client key (its passphrase is a secret) that sshd accepts.
    let locked = d.join("id_locked");
    run_ok(
        Command::new(require_binary("/usr/bin/ssh-keygen", "openssh-client"))
            .args([
                "-q",
                "-t",
                "ed25519",
                "-C",
                "locked",
                "-N",
                SSH_PASSPHRASE,
                "-f",
            ])
            .arg(&locked),
        "ssh-keygen with a passphrase",
    );
    sshd.authorize_key(&locked, "");
    let web = d.join("web.yml");
    write_file(
        &web,
        format!(
            "basic_auth_users:\n  prom: {}\n",
            bcrypt::hash(WEB_PW, 4).expect("bcrypt")
        ),
    );
    let kh = sshd.known_hosts_path().display().to_string();
    let pg_target = |name: &str, port: u16, secret: String, extra: &str| {
        format!(
            "      - name: {name}\n        host: 127.0.0.1\n        port: {port}\n        user: sec_mon\n        {secret}\n        sslmode: disable\n        connect_timeout: 2s\n{extra}"
        )
    };
    let ssh_target = |name: &str, port: u16, auth: String| {
        format!(
            "      - name: {name}\n        host: 127.0.0.1\n        port: {port}\n        user: {}\n        known_hosts: {kh}\n        interval: 1s\n        connect_timeout: 3s\n        {auth}\n",
            sshd.user()
        )
    };
    let state = d.join("state");
    let auth_log = d.join("auth.log");
    write_file(
        &auth_log,
        "Jan  1 00:00:00 host sshd[1]: Failed password for root from 192.0.2.7 port 2222 ssh2\n",
    );
    let exporter_yaml = format!(
        "exporter:\n  postgres:\n    targets:\n{}{}{}{}  ssh_disk:\n    targets:\n{}{}{}{}  logs:\n    state_dir: {}\n    checkpoint_interval: 100ms\n    sources:\n      - name: auth\n        path: {}\n        parser: syslog\n        start_at: beginning\n",
        pg_target(
            "pggood",
            pg.port(),
            format!("password_file: {}", secret_file(d, "pg_good", PG_GOOD)),
            ""
        ),
        pg_target(
            "pgwrong",
            pg.port(),
            format!("password_file: {}", secret_file(d, "pg_wrong", PG_WRONG)),
            ""
        ),
        pg_target(
            "pgdown",
            closed_port(),
            format!("password_file: {}", secret_file(d, "pg_down", PG_DOWN)),
            ""
        ),
        pg_target(
            "pgenv",
            pg.port(),
            "password: ${VITALS_SEC_PG}".to_string(),
            ""
        ),
        ssh_target(
            "sshpw",
            sshd.port(),
            format!("password_file: {}", secret_file(d, "ssh_pw", TEST_PASSWORD))
        ),
        ssh_target(
            "sshwrong",
            sshd.port(),
            format!("password_file: {}", secret_file(d, "ssh_wrong", SSH_WRONG))
        ),
        ssh_target(
            "sshlocked",
            sshd.port(),
            format!(
                "key_file: {}\n        passphrase_file: {}",
                locked.display(),
                secret_file(d, "ssh_passphrase", SSH_PASSPHRASE)
            )
        ),
        ssh_target(
            "sshdown",
            closed_port(),
            format!("password_file: {}", secret_file(d, "ssh_down", SSH_DOWN))
        ),
        state.display(),
        auth_log.display(),
    );
    let exporter_dir = d.join("exporter");
    std::fs::create_dir_all(&exporter_dir).expect("mkdir");
    let exporter = Guarded::start(
        "exporter",
        &exporter_dir,
        &exporter_yaml,
        &web,
        &[("VITALS_SEC_PG", PG_ENV)],
    );

    // Every failure happened at least once: wrong passwords refused, unreachable targets down.
    let want = [
        ("pg_up", "pggood", 1.0),
        ("pg_up", "pgwrong", 0.0),
        ("pg_up", "pgdown", 0.0),
        ("pg_up", "pgenv", 0.0),
        ("ssh_target_up", "sshpw", 1.0),
        ("ssh_target_up", "sshlocked", 1.0),
        ("ssh_target_up", "sshwrong", 0.0),
        ("ssh_target_up", "sshdown", 0.0),
    ];
    let reached = poll_until(Duration::from_secs(60), || {
        let (_, s) = exporter.samples();
        want.iter()
            .all(|(name, t, v)| value(&s, name, &[("target", t)]) == Some(*v))
            .then_some(())
    });
    assert!(
        reached.is_some(),
        "targets never reached {want:?}:\n{}\n{}",
        exporter.samples().0,
        exporter.logs()
    );
    // Let the log collector checkpoint its state.
    std::thread::sleep(Duration::from_millis(500));

    let mut places: Vec<(String, String)> = Vec::new();
    let mut add = |what: &str, text: String| places.push((what.to_string(), text));
    add("exporter /metrics (text)", exporter.get("/metrics").1);
    add(
        "exporter /metrics (OpenMetrics)",
        exporter
            .get_as(
                "/metrics",
                Some(("prom", WEB_PW)),
                Some("application/openmetrics-text; version=1.0.0"),
            )
            .1,
    );
    let (status, landing) = exporter.get("/");
    assert_eq!(status, 200);
    assert!(
        landing.contains("pgwrong") && landing.contains("sshwrong"),
        "the landing page lists the failing targets: {landing}"
    );
    add("exporter landing page", landing);
    for t in [
        "pggood",
        "pgwrong",
        "pgdown",
        "pgenv",
        "sshpw",
        "sshwrong",
        "sshlocked",
        "sshdown",
    ] {
        let (status, body) = exporter.get(&format!("/probe?target={t}"));
        assert_eq!(status, 200, "/probe?target={t}: {body}");
        add(&format!("/probe?target={t}"), body);
    }
    let (status, body) = exporter.get(&format!("/probe?target={PG_WRONG}"));
    assert_eq!(status, 400, "{body}");
    // The unknown target is echoed by design (the caller sent it); only secrets vitals holds
    // matter, so this answer is checked without the name it was asked for.
    add(
        "/probe unknown target",
        body.replace(&format!("\"{PG_WRONG}\""), "\"<asked>\""),
    );
    for (who, auth) in [
        ("no credentials", None),
        ("wrong password", Some(("prom", WEB_WRONG))),
    ] {
        let (status, body) = exporter.get_as("/metrics", auth, None);
        assert_eq!(status, 401, "{who}: {body}");
        add(&format!("401 answer ({who})"), body);
    }

    // The sidecar: basic auth to a real Prometheus, a bearer token and basic auth to two
    // Alertmanagers that are down, one always-firing rule so that delivery is attempted.
    let prom = Prometheus::builder()
        .web_basic_auth("vitals", PROM_PW)
        .start();
    let sidecar_dir = d.join("sidecar");
    std::fs::create_dir_all(&sidecar_dir).expect("mkdir");
    let queue = sidecar_dir.join("queue").join("alerts.json");
    let sidecar_yaml = format!(
        r#"sidecar:
  prometheus:
    url: "{}"
    basic_auth: {{username: vitals, password_file: {}}}
  alertmanagers:
    - url: "http://127.0.0.1:{}"
      timeout: 1s
      retries: 0
      authorization: {{credentials_file: {}}}
    - url: "http://127.0.0.1:{}"
      timeout: 1s
      retries: 0
      basic_auth: {{username: am, password_file: {}}}
  interval: 1s
  alert_resend_delay: 1s
  alert_queue: {{path: "{}"}}
  default_signals: false
  default_recommendations: false
  recommendations:
    - id: always_sec
      category: configuration
      severity: warning
      condition: 'label_replace(vector(1), "target", "db1", "", "")'
      title: 'Always on {{{{target}}}}'
      target: '{{{{target}}}}'
      description: 'value {{{{value}}}}'
      remediation: ['none']
"#,
        prom.url(),
        secret_file(&sidecar_dir, "prom_pw", PROM_PW),
        closed_port(),
        secret_file(&sidecar_dir, "am_token", AM_TOKEN),
        closed_port(),
        secret_file(&sidecar_dir, "am_pw", AM_PW),
        queue.display(),
    );
    let sidecar = Guarded::start("sidecar", &sidecar_dir, &sidecar_yaml, &web, &[]);
    let failed_both = poll_until(Duration::from_secs(60), || {
        let (text, _) = sidecar.samples();
        let failing = text
            .lines()
            .filter(|l| l.starts_with("vitals_sidecar_alerts_failed_total{") && !l.ends_with(" 0"))
            .count();
        (failing >= 2 && queue.exists()).then_some(())
    });
    assert!(
        failed_both.is_some(),
        "delivery to both Alertmanagers was not attempted and failed:\n{}\n{}",
        sidecar.samples().0,
        sidecar.logs()
    );
    add("sidecar /metrics", sidecar.get("/metrics").1);
    add("sidecar landing page", sidecar.get("/").1);

    // A second sidecar whose bearer token (from the environment) Prometheus refuses.
    let refused_dir = d.join("sidecar-refused");
    std::fs::create_dir_all(&refused_dir).expect("mkdir");
    let refused_yaml = format!(
        "sidecar:\n  prometheus:\n    url: \"{}\"\n    retries: 0\n    authorization:\n      credentials: ${{VITALS_SEC_TOKEN}}\n  interval: 1s\n  alert_queue: {{path: \"{}\"}}\n",
        prom.url(),
        refused_dir.join("queue.json").display()
    );
    let refused = Guarded::start(
        "sidecar",
        &refused_dir,
        &refused_yaml,
        &web,
        &[("VITALS_SEC_TOKEN", PROM_TOKEN)],
    );
    let saw_401 = poll_until(Duration::from_secs(30), || {
        refused.logs().contains("401").then_some(())
    });
    assert!(
        saw_401.is_some(),
        "Prometheus' refusal (401) was not logged:\n{}",
        refused.logs()
    );
    add("refused sidecar /metrics", refused.get("/metrics").1);
    add("refused sidecar landing page", refused.get("/").1);

    // check-config: the full configs, and broken ones holding a secret inline.
    for (name, yaml) in [
        ("exporter.yml", exporter_yaml.clone()),
        ("sidecar.yml", sidecar_yaml.clone()),
        (
            "type.yml",
            format!(
                "exporter:\n  postgres:\n    targets:\n      - name: a\n        password: [{CONFIG_INLINE}]\n"
            ),
        ),
        (
            "typo.yml",
            format!(
                "exporter:\n  postgres:\n    targets:\n      - name: a\n        passwrd: {CONFIG_INLINE}\n"
            ),
        ),
        (
            "unterminated.yml",
            format!(
                "exporter:\n  postgres:\n    targets:\n      - name: a\n        password: \"{CONFIG_INLINE}\n"
            ),
        ),
        (
            "url.yml",
            format!("sidecar:\n  prometheus:\n    url: http://u:{CONFIG_INLINE}@127.0.0.1:1\n"),
        ),
        (
            "web-basic.yml",
            format!(
                "sidecar:\n  alertmanagers:\n    - url: http://127.0.0.1:1\n      basic_auth: {{username: a, password: {CONFIG_INLINE}, password_file: /x}}\n"
            ),
        ),
    ] {
        add(
            &format!("check-config {name}"),
            check_config(d, name, &yaml),
        );
    }

    drop(refused);
    drop(sidecar);
    drop(exporter);
    // Logs last, after every process stopped (its final lines included).
    for sub in ["exporter", "sidecar", "sidecar-refused"] {
        for f in ["stdout.log", "stderr.log"] {
            let p = d.join(sub).join(f);
            add(
                &format!("{sub} {f} (debug level)"),
                std::fs::read_to_string(&p).unwrap_or_default(),
            );
        }
    }
    let stderr = std::fs::read_to_string(d.join("exporter").join("stderr.log")).unwrap_or_default();
    assert!(
        stderr.contains("level=debug") || stderr.contains("\"DEBUG\"") || stderr.contains("DEBUG"),
        "the exporter logged at debug level"
    );
    for (path, text) in files_under(&state)
        .into_iter()
        .chain(files_under(queue.parent().expect("queue dir")))
    {
        add(&format!("state file {path}"), text);
    }
    assert!(
        places
            .iter()
            .any(|(w, _)| w.starts_with("state file") && w.contains("/state/")),
        "the log collector wrote its state: {:?}",
        places.iter().map(|(w, _)| w).collect::<Vec<_>>()
    );

    let mut leaks = Vec::new();
    for (what, text) in &places {
        for s in secrets() {
            if let Some(at) = text.find(s) {
                let from = at.saturating_sub(120);
                let to = (at + s.len() + 40).min(text.len());
                leaks.push(format!(
                    "{s} in {what}: ...{}...",
                    text.get(from..to).unwrap_or("")
                ));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets leaked ({} places checked):\n{}",
        places.len(),
        leaks.join("\n")
    );
    eprintln!(
        "security: {} secrets, none found in {} places",
        secrets().len(),
        places.len()
    );
}

/// A bind mount whose target is removed on drop.
struct BindMount {
    target: PathBuf,
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.target).status();
    }
}

#[test]
fn label_values_with_quotes_backslashes_and_newlines_pass_promtool() {
    let pg = Postgres::start();
    pg.psql("create database \"we\"\"ird\\db\"");
    pg.psql("create database \"line\nbreak\"");
    let sshd = Sshd::start();
    let dir = temp_dir("escape");
    let d = dir.path();
    chmod(d, 0o755);

    // Processes whose command names hold a quote, a backslash, a parenthesis, a newline.
    let sleep = require_binary("/usr/bin/sleep", "coreutils");
    let mut children = Vec::new();
    for name in ["q\"u\\o)x", "nl\nx"] {
        let exe = d.join(name);
        std::fs::copy(&sleep, &exe).expect("copy sleep");
        chmod(&exe, 0o755);
        children.push(
            Command::new(&exe)
                .arg("120")
                .spawn()
                .expect("spawn renamed sleep"),
        );
    }
    // A mount point with a quote and a backslash, reached over SSH.
    let source = d.join("source");
    let target = d.join("m\"nt\\x");
    std::fs::create_dir(&source).expect("mkdir");
    std::fs::create_dir(&target).expect("mkdir");
    run_ok(
        Command::new("mount")
            .arg("--bind")
            .arg(&source)
            .arg(&target),
        "mount --bind",
    );
    let _mount = BindMount {
        target: target.clone(),
    };
    // Log lines whose program and messages hold quotes and backslashes.
    let log = d.join("app.log");
    let mut text = String::new();
    for i in 0..5 {
        text.push_str(&format!(
            "Jan  1 00:00:0{i} host we\"ird\\prog[1]: error: cannot open \"C:\\temp\\{i}\" for user \"bob\\\"\n"
        ));
        text.push_str(&format!(
            "Jan  1 00:00:0{i} host app[2]: warning: quote \" backslash \\ and tab\there\n"
        ));
    }
    write_file(&log, text);

    let config = format!(
        "exporter:\n  postgres:\n    targets:\n      - name: pg\n        host: 127.0.0.1\n        port: {}\n        user: postgres\n        password: ${{VITALS_IT_PG_PW}}\n        sslmode: disable\n  ssh_disk:\n    targets:\n      - name: ssh\n        host: 127.0.0.1\n        port: {}\n        user: {}\n        key_file: {}\n        known_hosts: {}\n        interval: 1s\n  process:\n    groups:\n      - name: \"{{comm}}\"\n        comm: ['(?s).+']\n  logs:\n    state_dir: {}\n    sources:\n      - name: app\n        path: {}\n        parser: syslog\n        start_at: beginning\n",
        pg.port(),
        sshd.port(),
        sshd.user(),
        sshd.client_key_path().display(),
        sshd.known_hosts_path().display(),
        d.join("state").display(),
        log.display()
    );
    let v = crate::support::vitals::Vitals::builder()
        .config(&config)
        .env(
            "VITALS_IT_PG_PW",
            crate::support::postgres::SUPERUSER_PASSWORD,
        )
        .start();
    let wanted = [
        "datname=\"we\\\"ird\\\\db\"",
        "datname=\"line\\nbreak\"",
        "groupname=\"q\\\"u\\\\o)x\"",
        "groupname=\"nl\\nx\"",
        "mountpoint=\"",
        "pattern=\"",
    ];
    let mount_label = format!(
        "mountpoint=\"{}\"",
        target
            .display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    );
    let page = poll_until(Duration::from_secs(30), || {
        let page = v.metrics();
        (wanted.iter().all(|w| page.contains(w)) && page.contains(&mount_label)).then_some(page)
    })
    .unwrap_or_else(|| {
        let page = v.metrics();
        let missing: Vec<_> = wanted
            .iter()
            .copied()
            .chain([mount_label.as_str()])
            .filter(|w| !page.contains(w))
            .collect();
        panic!(
            "escaped label values missing: {missing:?}\n{page}\n{}",
            v.logs()
        )
    });
    for mut c in children {
        kill_and_reap(&mut c);
    }
    let (ok, out) = promtool_check(&page);
    assert!(ok, "promtool check metrics rejected the page: {out}");
    // The OpenMetrics page has the same label values (escaped the same way).
    let (status, om) = {
        let r = http_client()
            .get(format!("{}/metrics", v.base_url()))
            .header("Accept", "application/openmetrics-text; version=1.0.0")
            .send()
            .expect("GET");
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    assert_eq!(status, 200);
    assert!(om.contains("datname=\"line\\nbreak\""), "{om}");
    assert!(om.ends_with("# EOF\n"));
}

/// A small deterministic generator (xorshift64*), so the hostile log needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn word(&mut self) -> String {
        let len = 3 + (self.next() % 8) as usize;
        (0..len)
            .map(|_| char::from(b'a' + (self.next() % 26) as u8))
            .collect()
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_million_hostile_lines_stay_within_the_cardinality_budgets() {
    const LINES: u64 = 1_000_000;
    const IP_BUDGET: usize = 50;
    const PATTERN_BUDGET: usize = 20;
    /// Largest RSS allowed while and after the million lines are read.
    const RSS_LIMIT_MIB: u64 = 150;
    let dir = temp_dir("hostile");
    let log = dir.path().join("auth.log");
    {
        let file = std::fs::File::create(&log).expect("create log");
        let mut w = std::io::BufWriter::new(file);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for i in 0..LINES {
            let r = rng.next();
            let ip = format!(
                "{}.{}.{}.{}",
                1 + r % 223,
                (r >> 8) % 256,
                (r >> 16) % 256,
                (r >> 24) % 256
            );
            if i % 2 == 0 {
                writeln!(
                    w,
                    "Jan  1 00:00:00 host sshd[{}]: Failed password for {} from {ip} port {} ssh2",
                    r % 65536,
                    rng.word(),
                    r % 60000
                )
            } else {
                writeln!(
                    w,
                    "Jan  1 00:00:00 host app[1]: error: {} {} {} from {ip}",
                    rng.word(),
                    rng.word(),
                    rng.word()
                )
            }
            .expect("write log");
        }
        w.flush().expect("flush log");
    }
    let config = format!(
        "exporter:\n  logs:\n    state_dir: {}\n    ip_budget: {IP_BUDGET}\n    pattern_budget: {PATTERN_BUDGET}\n    sources:\n      - name: hostile\n        path: {}\n        parser: syslog\n        start_at: beginning\n",
        dir.path().join("state").display(),
        log.display()
    );
    let started = Instant::now();
    let v = crate::support::vitals::Vitals::builder()
        .config(&config)
        .arg("--no-collector.process")
        .start();
    let pid = v.pid().expect("pid");
    let mut rss_max = 0;
    let mut slowest = Duration::ZERO;
    let mut scrapes = 0;
    // Reading the million lines takes minutes in a debug build on a busy machine; scrapes
    // keep answering meanwhile (each one within the harness client's 10 s timeout).
    let done = poll_until(Duration::from_secs(600), || {
        rss_max = rss_max.max(rss_kib(pid));
        let asked = Instant::now();
        let page = v.metrics();
        slowest = slowest.max(asked.elapsed());
        scrapes += 1;
        let lines: f64 = parse_samples(&page)
            .iter()
            .filter(|s| s.name == "log_lines_total")
            .map(|s| s.value)
            .sum();
        (lines >= LINES as f64).then_some(page)
    });
    let page = done.unwrap_or_else(|| {
        panic!(
            "the million lines were not all read in 600 s:\n{}",
            v.metrics()
        )
    });
    rss_max = rss_max.max(rss_kib(pid));
    let samples = parse_samples(&page);
    let by_ip: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "log_ssh_auth_failures_by_ip_total")
        .collect();
    let patterns: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "log_pattern_lines_total")
        .collect();
    let infos = samples
        .iter()
        .filter(|s| s.name == "log_pattern_info")
        .count();
    let other_ip = by_ip
        .iter()
        .find(|s| s.labels.get("ip").map(String::as_str) == Some("other"))
        .map(|s| s.value)
        .unwrap_or(0.0);
    let named_patterns = patterns
        .iter()
        .filter(|s| s.labels.get("pattern").map(String::as_str) != Some("other"))
        .count();
    let levels = patterns
        .iter()
        .filter_map(|s| s.labels.get("level"))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    eprintln!(
        "hostile log: {LINES} lines read in {:.1} s; {} ip series (other = {other_ip}), {} pattern \
         series ({named_patterns} named, {levels} levels), {infos} pattern_info; RSS max {} MiB; \
         page {} bytes; {scrapes} scrapes while reading, slowest {:.3} s",
        started.elapsed().as_secs_f64(),
        by_ip.len(),
        patterns.len(),
        rss_max / 1024,
        page.len(),
        slowest.as_secs_f64()
    );
    assert!(
        scrapes >= 2,
        "the test saw the backlog being read, not only its end ({scrapes} scrapes)"
    );
    assert!(
        by_ip.len() <= IP_BUDGET + 1,
        "{} log_ssh_auth_failures_by_ip_total series, budget {IP_BUDGET} + other",
        by_ip.len()
    );
    assert!(
        other_ip >= (LINES / 2) as f64 - (IP_BUDGET as f64) * 10.0,
        "the addresses beyond the budget are counted under ip=\"other\": {other_ip}"
    );
    assert!(
        named_patterns <= PATTERN_BUDGET,
        "{named_patterns} named patterns, budget {PATTERN_BUDGET}"
    );
    assert!(
        patterns.len() <= PATTERN_BUDGET + levels,
        "{} log_pattern_lines_total series, budget {PATTERN_BUDGET} + one other per level",
        patterns.len()
    );
    assert!(infos <= PATTERN_BUDGET, "{infos} log_pattern_info series");
    assert!(
        rss_max <= RSS_LIMIT_MIB * 1024,
        "RSS reached {} MiB (limit {RSS_LIMIT_MIB})",
        rss_max / 1024
    );
    let (ok, out) = promtool_check(&page);
    assert!(ok, "promtool check metrics: {out}");
}
