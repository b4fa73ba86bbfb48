//! The exporter as a user meets it: the binary, its flags, its endpoints, reloads, and an
//! exposition checked by Prometheus' own `promtool`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::vitals::{BINARY, Vitals};
use crate::support::{SETUP_HINT, http_client, poll_until, require_binary, temp_dir, write_file};

/// Runs `promtool check metrics` on an exposition; returns its combined output and status.
pub(crate) fn promtool_check(exposition: &str) -> (bool, String) {
    let promtool = require_binary("/usr/bin/promtool", "prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[test]
fn no_arguments_serves_default_port_and_promtool_accepts_it() {
    let _ = SETUP_HINT;
    let mut child = Command::new(BINARY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vitals");
    let client = http_client();
    let body = poll_until(Duration::from_secs(30), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("vitals with no arguments exited with {status} (is port 9830 taken?)");
        }
        let r = client.get("http://127.0.0.1:9830/metrics").send().ok()?;
        (r.status() == 200).then(|| r.text().ok()).flatten()
    });
    let _ = child.kill();
    let _ = child.wait();
    let body = body.expect("vitals answered on its default port 9830");
    let (ok, report) = promtool_check(&body);
    assert!(
        ok && report.trim().is_empty(),
        "promtool check metrics reported: {report}\n{body}"
    );
    assert!(body.contains("vitals_build_info{"), "{body}");
    assert!(
        body.contains("# TYPE process_cpu_seconds_total counter"),
        "{body}"
    );
    assert_eq!(
        metric_value(
            &body,
            "vitals_scrape_collector_success{collector=\"vitals\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&body, "vitals_config_last_reload_successful"),
        Some(1.0)
    );
}

#[test]
fn openmetrics_is_served_to_clients_that_ask_for_it() {
    let v = Vitals::start("{}\n");
    let r = http_client()
        .get(format!("{}/metrics", v.base_url()))
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .expect("GET /metrics");
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = r.text().expect("body");
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    let (status, text) = v.get("/metrics");
    assert_eq!(status, 200);
    assert!(!text.contains("# EOF"));
}

#[test]
fn lifecycle_endpoints_and_landing_page() {
    let v = Vitals::start("exporter:\n  scrape_timeout: 5s\n");
    assert_eq!(v.get("/-/healthy").0, 200);
    assert_eq!(v.get("/-/ready").0, 200);
    assert_eq!(v.get("/-/reload").0, 405, "reload needs POST");
    assert_eq!(v.get("/nope").0, 404);
    let (status, body) = v.get("/probe?target=missing");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown target"), "{body}");
    assert_eq!(v.get("/probe").0, 400);
    let _ = v.metrics();
    let (status, html) = v.get("/");
    assert_eq!(status, 200);
    for want in [
        "vitals exporter",
        "/metrics",
        "Enabled collectors",
        "<td>vitals</td>",
        "UP",
    ] {
        assert!(html.contains(want), "landing page lacks {want:?}: {html}");
    }
    let metrics = v.metrics();
    assert!(
        metrics.contains("vitals_http_requests_total{handler=\"probe\",code=\"400\"}"),
        "{metrics}"
    );
}

#[test]
fn bad_config_on_reload_is_rejected_and_the_old_one_keeps_serving() {
    let mut v = Vitals::start("exporter:\n  scrape_timeout: 5s\n");
    v.write_config("exporter:\n  scrape_timeout: 5s\n  postgres:\n    targets:\n      - name: a\n        prot: 5432\n");
    let r = http_client()
        .post(format!("{}/-/reload", v.base_url()))
        .send()
        .expect("POST /-/reload");
    assert_eq!(r.status().as_u16(), 500);
    let msg = r.text().expect("body");
    let file = v.config_path().display().to_string();
    assert!(
        msg.contains(&format!(
            "{file}:6:9: exporter.postgres.targets[0].prot: unknown field `prot`"
        )),
        "{msg}"
    );
    let m = v.metrics();
    assert_eq!(
        metric_value(&m, "vitals_config_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&m, "vitals_scrape_collector_success{collector=\"vitals\"}"),
        Some(1.0),
        "the old config keeps collecting"
    );

    // SIGHUP with the same bad file: logged, still serving.
    v.sighup();
    let logged = poll_until(Duration::from_secs(10), || {
        v.stderr()
            .contains("reload after SIGHUP rejected")
            .then_some(())
    });
    assert!(logged.is_some(), "{}", v.logs());
    assert_eq!(v.get("/-/healthy").0, 200);

    // A fixed file loads on the next SIGHUP.
    v.write_config("exporter:\n  scrape_timeout: 7s\n");
    v.sighup();
    let reloaded = poll_until(Duration::from_secs(10), || {
        (metric_value(&v.metrics(), "vitals_config_last_reload_successful") == Some(1.0))
            .then_some(())
    });
    assert!(reloaded.is_some(), "{}", v.logs());
    assert!(!v.logs().contains("panicked"));
    let status = v.sigterm();
    assert!(
        status.success(),
        "SIGTERM should stop vitals cleanly: {status}"
    );
}

#[test]
fn check_config_exit_codes_and_messages() {
    let dir = temp_dir("check-config");
    let good = dir.path().join("good.yml");
    write_file(&good, "exporter:\n  scrape_timeout: 15s\n");
    let bad = dir.path().join("bad.yml");
    write_file(
        &bad,
        "exporter:\n  postgres:\n    targets:\n      - name: a\n        port: 70000\n",
    );
    let out = Command::new(BINARY)
        .args(["check-config"])
        .arg(&good)
        .output()
        .expect("run check-config");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = Command::new(BINARY)
        .args(["check-config"])
        .arg(&bad)
        .output()
        .expect("run check-config");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("{}:4:", bad.display());
    assert!(err.contains(&want), "{err}");
    assert!(
        err.contains("exporter.postgres.targets[0].port: expected a number 1-65535"),
        "{err}"
    );
    // A missing file is a clear error too.
    let out = Command::new(BINARY)
        .args(["check-config", "/nonexistent/vitals.yml"])
        .output()
        .expect("run check-config");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("/nonexistent/vitals.yml: cannot read config file")
    );
}

#[test]
fn exporter_refuses_to_start_on_a_bad_config() {
    let (status, logs) = Vitals::builder()
        .config("exporter:\n  scrape_timeout: soon\n")
        .run_until_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{logs}");
    assert!(
        logs.contains("exporter.scrape_timeout: expected a duration"),
        "{logs}"
    );
}

#[test]
fn version_and_help() {
    let out = Command::new(BINARY)
        .arg("--version")
        .output()
        .expect("run --version");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")) && text.contains("revision"),
        "{text}"
    );
    let out = Command::new(BINARY)
        .arg("--help")
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "exporter",
        "sidecar",
        "check-config",
        "backtest",
        "--web.listen-address",
        "--web.config.file",
        "--web.telemetry-path",
        "--collector.vitals",
        "--no-collector.vitals",
        "--log.level",
        "--log.format",
    ] {
        assert!(help.contains(want), "--help lacks {want}: {help}");
    }
}

#[test]
fn secrets_from_the_environment_never_reach_metrics_or_logs() {
    let dir = temp_dir("secret");
    let pass = dir.path().join("pg.pass");
    write_file(&pass, "file-secret-PW-77\n");
    let config = format!(
        "exporter:\n  postgres:\n    targets:\n      - name: envpw\n        password: ${{VITALS_IT_PG_PASSWORD}}\n      - name: filepw\n        password_file: {}\n",
        pass.display()
    );
    let v = Vitals::builder()
        .config(&config)
        .env("VITALS_IT_PG_PASSWORD", "env-secret-PW-42")
        .arg("--log.level=debug")
        .start();
    let metrics = v.metrics();
    let (_, landing) = v.get("/");
    for text in [&metrics, &landing, &v.logs()] {
        assert!(!text.contains("env-secret-PW-42") && !text.contains("file-secret-PW-77"));
    }
}
