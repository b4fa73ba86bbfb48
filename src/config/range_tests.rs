//! Every numeric and duration key with a meaningful range: a value outside it is refused,
//! and the message names the file, the key and the reason.

use super::Config;

/// An SSH target that is valid as it stands, to which a case appends one key.
const SSH: &str = "exporter:\n  ssh_disk:\n    targets:\n      - name: db1\n        host: 127.0.0.1\n        user: monitor\n        password_file: /dev/null\n        host_key_fingerprint: SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n";
/// A PostgreSQL target that is valid as it stands.
const PG: &str = "exporter:\n  postgres:\n    targets:\n      - name: main\n";
/// A valid signal.
const SIGNAL: &str = "sidecar:\n  signals:\n    - name: s\n      domain: db\n      expr: up\n      direction: both\n";
/// A valid SLO.
const SLO: &str = "sidecar:\n  slos:\n    - name: avail\n      objective: 99.9\n      sli:\n        events:\n          error_query: sum(rate(e[{{.window}}]))\n          total_query: sum(rate(t[{{.window}}]))\n      alerting: {name: Avail}\n";

/// (config text, key named in the error, part of the reason).
fn cases() -> Vec<(String, &'static str, &'static str)> {
    let ssh = |extra: &str| format!("{SSH}        {extra}\n");
    let pg = |extra: &str| format!("{PG}        {extra}\n");
    let logs = |extra: &str| format!("exporter:\n  logs:\n    {extra}\n");
    let sc = |extra: &str| format!("sidecar:\n  {extra}\n");
    vec![
        // Exporter.
        (
            "exporter:\n  scrape_timeout: 0s\n".into(),
            "exporter.scrape_timeout",
            "more than 0s",
        ),
        (
            "exporter:\n  scrape_timeout: 5s\n  scrape_timeout_offset: 5s\n".into(),
            "exporter.scrape_timeout_offset",
            "shorter than exporter.scrape_timeout",
        ),
        // PostgreSQL.
        (
            "exporter:\n  postgres:\n    max_connections: 0\n".into(),
            "exporter.postgres.max_connections",
            "between 2 and 10000",
        ),
        (
            "exporter:\n  postgres:\n    max_connections: 10001\n".into(),
            "exporter.postgres.max_connections",
            "between 2 and 10000",
        ),
        (
            pg("port: 0"),
            "exporter.postgres.targets[0].port",
            "1-65535",
        ),
        (
            pg("port: 65536"),
            "exporter.postgres.targets[0].port",
            "1-65535",
        ),
        (
            pg("port: -1"),
            "exporter.postgres.targets[0].port",
            "1-65535",
        ),
        (
            pg("max_connections: 1"),
            "exporter.postgres.targets[0].max_connections",
            "between 2 and 1000",
        ),
        (
            pg("max_connections: 1001"),
            "exporter.postgres.targets[0].max_connections",
            "between 2 and 1000",
        ),
        (
            pg("connect_timeout: 0s"),
            "exporter.postgres.targets[0].connect_timeout",
            "at least 1ms",
        ),
        (
            pg("statement_timeout: 0s"),
            "exporter.postgres.targets[0].statement_timeout",
            "at least 1ms",
        ),
        (
            pg("lock_timeout: 0s"),
            "exporter.postgres.targets[0].lock_timeout",
            "at least 1ms",
        ),
        (
            pg("size_refresh_interval: 0s"),
            "exporter.postgres.targets[0].size_refresh_interval",
            "at least 1ms",
        ),
        (
            pg("tables_top_n: 10001"),
            "exporter.postgres.targets[0].tables_top_n",
            "at most 10000",
        ),
        (
            pg("statements_top_n: 0"),
            "exporter.postgres.targets[0].statements_top_n",
            "between 1 and 10000",
        ),
        (
            pg("statements_top_n: 10001"),
            "exporter.postgres.targets[0].statements_top_n",
            "between 1 and 10000",
        ),
        // SSH.
        (
            "exporter:\n  ssh_disk:\n    concurrency: 0\n".into(),
            "exporter.ssh_disk.concurrency",
            "at least 1",
        ),
        (
            ssh("port: 0"),
            "exporter.ssh_disk.targets[0].port",
            "1-65535",
        ),
        (
            ssh("interval: 0s"),
            "exporter.ssh_disk.targets[0].interval",
            "at least 1s",
        ),
        (
            ssh("interval: 500ms"),
            "exporter.ssh_disk.targets[0].interval",
            "at least 1s",
        ),
        (
            ssh("connect_timeout: 0s"),
            "exporter.ssh_disk.targets[0].connect_timeout",
            "more than 0s",
        ),
        (
            ssh("command_timeout: 0s"),
            "exporter.ssh_disk.targets[0].command_timeout",
            "more than 0s",
        ),
        (
            ssh("max_age: 10s"),
            "exporter.ssh_disk.targets[0].max_age",
            "at least interval",
        ),
        // Logs.
        (
            logs("poll_interval: 0s"),
            "exporter.logs.poll_interval",
            "at least 10ms",
        ),
        (
            logs("poll_interval: 5ms"),
            "exporter.logs.poll_interval",
            "at least 10ms",
        ),
        (
            logs("checkpoint_interval: 0s"),
            "exporter.logs.checkpoint_interval",
            "more than 0s",
        ),
        (
            logs("pattern_idle_timeout: 0s"),
            "exporter.logs.pattern_idle_timeout",
            "more than 0s",
        ),
        (
            logs("pattern_budget: 0"),
            "exporter.logs.pattern_budget",
            "at least 1",
        ),
        (
            logs("ip_budget: 0"),
            "exporter.logs.ip_budget",
            "at least 1",
        ),
        (
            logs("ip_budget: -1"),
            "exporter.logs.ip_budget",
            "expected usize",
        ),
        (
            logs(
                "sources:\n      - {name: a, path: /var/log/a.log, parser: raw, max_line_bytes: 0}",
            ),
            "exporter.logs.sources[0].max_line_bytes",
            "at least 256",
        ),
        // Sidecar timing and sizes.
        (sc("interval: 0s"), "sidecar.interval", "at least 1s"),
        (sc("resolution: 0s"), "sidecar.resolution", "at least 1s"),
        (
            sc("resolution: 1h\n  history: 1h"),
            "sidecar.history",
            "at least two resolution steps",
        ),
        (
            sc("resolution: 1s\n  history: 30d"),
            "sidecar.history",
            "1000000 points",
        ),
        (
            sc("baseline_offset: 30d"),
            "sidecar.baseline_offset",
            "shorter than sidecar.history",
        ),
        // The coarse older history: on the resolution grid, at most an hour, and the
        // full-resolution part holds the 7-day baseline, the forecast window and the overlap.
        (
            sc("history_coarse_step: 7m"),
            "sidecar.history_coarse_step",
            "multiple of sidecar.resolution",
        ),
        (
            sc("resolution: 7m"),
            "sidecar.history_coarse_step",
            "multiple of sidecar.resolution",
        ),
        (
            sc("history_coarse_step: 2m"),
            "sidecar.history_coarse_step",
            "multiple of sidecar.resolution",
        ),
        (
            sc("history_coarse_step: 2h"),
            "sidecar.history_coarse_step",
            "at most 1h",
        ),
        (
            sc("history_full_resolution: 7d"),
            "sidecar.history_full_resolution",
            "7-day baseline plus sidecar.baseline_offset",
        ),
        (
            sc("history_full_resolution: 8d\n  baseline_offset: 2d"),
            "sidecar.history_full_resolution",
            "7-day baseline plus sidecar.baseline_offset",
        ),
        (
            sc("history_full_resolution: 8d\n  forecast: {window: 9d}"),
            "sidecar.history_full_resolution",
            "must cover sidecar.forecast.window",
        ),
        (
            sc("history_full_resolution: 8d\n  query_overlap: 8d"),
            "sidecar.history_full_resolution",
            "longer than sidecar.query_overlap",
        ),
        (sc("min_samples: 0"), "sidecar.min_samples", "at least 1"),
        (
            sc("max_series_per_signal: 0"),
            "sidecar.max_series_per_signal",
            "at least 1",
        ),
        (
            sc("max_findings_per_recommendation: 0"),
            "sidecar.max_findings_per_recommendation",
            "at least 1",
        ),
        (
            sc("alert_resend_delay: 0s"),
            "sidecar.alert_resend_delay",
            "at least 1s",
        ),
        (
            sc("alert_queue: {max_alerts: 0}"),
            "sidecar.alert_queue.max_alerts",
            "at least 1",
        ),
        // Forecasts: a share of variance is a ratio in [0, 1].
        (
            sc("forecast: {min_r_squared: -0.1}"),
            "sidecar.forecast.min_r_squared",
            "between 0 and 1",
        ),
        (
            sc("forecast: {min_r_squared: 1.5}"),
            "sidecar.forecast.min_r_squared",
            "between 0 and 1",
        ),
        (
            sc("forecast: {min_r_squared: .nan}"),
            "sidecar.forecast.min_r_squared",
            "between 0 and 1",
        ),
        (
            sc("forecast: {window: 10m}"),
            "sidecar.forecast.window",
            "three resolution steps",
        ),
        (
            sc("history: 2d\n  forecast: {window: 3d}"),
            "sidecar.forecast.window",
            "must not exceed sidecar.history",
        ),
        (
            sc("forecast: {horizon: 0s}"),
            "sidecar.forecast.horizon",
            "at least sidecar.resolution",
        ),
        // HTTP endpoints.
        (
            sc("prometheus: {url: 'http://127.0.0.1:9090', timeout: 0s}"),
            "sidecar.prometheus.timeout",
            "at least 1ms",
        ),
        (
            sc("prometheus: {url: 'http://127.0.0.1:9090', retries: 11}"),
            "sidecar.prometheus.retries",
            "at most 10",
        ),
        (
            sc("prometheus: {url: 'http://127.0.0.1:9090', retries: 2, retry_backoff: 0s}"),
            "sidecar.prometheus.retry_backoff",
            "more than 0s",
        ),
        (
            sc("alertmanagers: [{url: 'http://127.0.0.1:9093', timeout: 0s}]"),
            "sidecar.alertmanagers[0].timeout",
            "at least 1ms",
        ),
        // Thresholds.
        (
            format!("{SIGNAL}      threshold: .inf\n"),
            "sidecar.signals[0].threshold",
            "finite",
        ),
        (
            format!("{SIGNAL}      min_traffic: {{expr: up, min: .nan}}\n"),
            "sidecar.signals[0].min_traffic.min",
            "finite",
        ),
        (
            SLO.replace("99.9", "0"),
            "sidecar.slos[0].objective",
            "objective",
        ),
        (
            SLO.replace("99.9", "100"),
            "sidecar.slos[0].objective",
            "objective",
        ),
        (
            format!("{SLO}      period: 1d\n"),
            "sidecar.slos[0].period",
            "period",
        ),
        (
            format!("{SLO}      min_traffic: -1\n"),
            "sidecar.slos[0].min_traffic",
            "0 or more",
        ),
    ]
}

#[test]
fn the_base_configs_of_the_cases_are_valid() {
    for text in [SSH, PG, SIGNAL, SLO] {
        if let Err(e) = Config::parse(text, "vitals.yml", None) {
            panic!("{e}\n{text}");
        }
    }
}

#[test]
fn coarse_history_settings_in_range_are_accepted() {
    for text in [
        // The whole history at full resolution, either way.
        "sidecar:\n  history_coarse_step: 5m\n  history_full_resolution: 1d\n",
        "sidecar:\n  history: 7d\n  history_full_resolution: 8d\n",
        // A resolution that does not divide an hour, with a coarse step that is a multiple.
        "sidecar:\n  resolution: 7m\n  history_coarse_step: 56m\n",
        "sidecar:\n  history: 40d\n  history_full_resolution: 10d\n  history_coarse_step: 30m\n",
    ] {
        if let Err(e) = Config::parse(text, "vitals.yml", None) {
            panic!("{e}\n{text}");
        }
    }
}

#[test]
fn out_of_range_values_are_refused_naming_file_key_and_reason() {
    let mut failures = Vec::new();
    for (text, key, reason) in cases() {
        match Config::parse(&text, "vitals.yml", None) {
            Ok(_) => failures.push(format!("accepted:\n{text}")),
            Err(e) => {
                let msg = e.to_string();
                let names_key = msg.contains(&format!(" {key}: "));
                if !(msg.starts_with("vitals.yml") && names_key && msg.contains(reason)) {
                    failures.push(format!(
                        "want file, {key:?} and {reason:?}, got {msg:?} for:\n{text}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
