//! A real single-node VictoriaMetrics (Debian package `victoria-metrics`) on a free loopback
//! port, with its own storage directory.
//!
//! Started with a 100-year retention (so backfilled history is kept). [`VictoriaMetrics::start`]
//! adds `-search.latencyOffset=0s` (recent points are visible at once; VictoriaMetrics still
//! hides or repeats the points of the last second) and `-search.disableCache` (a query never
//! answers from a cache filled before the latest import), for tests that compare answers with
//! what they just imported; [`VictoriaMetrics::start_with_default_search`] keeps the search
//! defaults users run with (30 s latency offset, response cache on). Readiness is
//! `GET /health` == 200.
//! History goes in with [`VictoriaMetrics::import_prometheus`], which returns only once every
//! imported series is queryable.
//!
//! VictoriaMetrics serves the Prometheus query API both at `/api/v1/...` and under the
//! `/prometheus` prefix, so `format!("{}/prometheus", vm.url())` tests a path prefix.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::prometheus::{HistorySeries, format_value};
use super::server::{ServerProcess, start_http_server};
use super::{
    LOOPBACK, STARTUP_TIMEOUT, http_client, log_block, parse_samples, poll_until, require_binary,
    send, temp_dir,
};

const BINARY: &str = "/usr/bin/victoria-metrics";
const PACKAGE: &str = "victoria-metrics";

/// A running VictoriaMetrics, killed on drop (its storage is removed).
pub struct VictoriaMetrics {
    port: u16,
    process: ServerProcess,
    log_path: std::path::PathBuf,
    client: reqwest::blocking::Client,
    dir: tempfile::TempDir,
}

impl VictoriaMetrics {
    /// Starts VictoriaMetrics with empty storage, recent points visible at once and no
    /// response cache. Panics with its log tail if it is not ready within [`STARTUP_TIMEOUT`].
    pub fn start() -> VictoriaMetrics {
        Self::start_with(&["-search.latencyOffset=0s", "-search.disableCache"])
    }

    /// Starts VictoriaMetrics with empty storage and its default search settings, as users
    /// run it: range queries hide the points of the last 30 s or repeat the previous value in
    /// their place (`-search.latencyOffset`), and answers are cached. Panics with its log
    /// tail if it is not ready within [`STARTUP_TIMEOUT`].
    pub fn start_with_default_search() -> VictoriaMetrics {
        Self::start_with(&[])
    }

    fn start_with(search_flags: &[&str]) -> VictoriaMetrics {
        let binary = require_binary(BINARY, PACKAGE);
        let dir = temp_dir("victoria");
        let log_path = dir.path().join("victoria-metrics.log");
        let client = http_client();
        let (process, port) = start_http_server(
            "VictoriaMetrics",
            ("victoria-metrics log", &log_path),
            &client,
            |port| format!("http://{LOOPBACK}:{port}/health"),
            |port| {
                let mut cmd = Command::new(&binary);
                cmd.arg(format!(
                    "-storageDataPath={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("-httpListenAddr={LOOPBACK}:{port}"))
                .arg("-retentionPeriod=100y")
                .args(search_flags)
                // Tests run side by side on 2 cores: the default 4 concurrent searches with a
                // 10 s queue turn a busy moment into 503s and retries.
                .arg("-search.maxConcurrentRequests=16")
                .arg("-search.maxQueueDuration=60s")
                .arg("-loggerLevel=INFO")
                .current_dir(dir.path());
                cmd
            },
        );
        VictoriaMetrics {
            port,
            process,
            log_path,
            client,
            dir,
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash (the Prometheus API is at
    /// `/api/v1/...` and at `/prometheus/api/v1/...`).
    pub fn url(&self) -> String {
        format!("http://{LOOPBACK}:{}", self.port)
    }

    /// The port VictoriaMetrics listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temp dir holding storage and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// VictoriaMetrics' own log.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Imports samples in the Prometheus text format with timestamps in **milliseconds**
    /// (`name{label="v"} value timestamp_ms` per line; `#` lines ignored; `NaN`, `+Inf`,
    /// `-Inf` allowed) through `POST /api/v1/import/prometheus`, then forces a flush and polls
    /// `/api/v1/export` until every imported series shows its newest imported timestamp.
    /// Panics (with the log tail) if that takes longer than [`STARTUP_TIMEOUT`].
    ///
    /// Example: `"x{a=\"1\"} 5 1700000000000\nx{a=\"1\"} 6 1700000060000\n"`.
    pub fn import_prometheus(&self, text: &str) {
        let expected = newest_per_series(text);
        let url = format!("{}/api/v1/import/prometheus", self.url());
        let request = self
            .client
            .post(&url)
            .timeout(Duration::from_secs(120))
            .body(text.to_string());
        let (status, body) = send(request, &format!("POST {url}"));
        assert!(
            status.is_success(),
            "POST {url} answered {status}: {body}\n{}",
            log_block("victoria-metrics log", &self.log_path)
        );
        // Only the tail is exported: from the oldest "newest sample" to the newest one.
        let (min_ts, max_ts) = expected
            .values()
            .fold((i64::MAX, i64::MIN), |(lo, hi), (_, last)| {
                (lo.min(*last), hi.max(*last))
            });
        let names: std::collections::BTreeSet<&str> = expected
            .keys()
            .filter_map(|labels| labels.get("__name__").map(String::as_str))
            .collect();
        let mut missing = Vec::new();
        let ready = poll_until(STARTUP_TIMEOUT, || {
            self.force_flush();
            let seen = self.export_newest(&names, min_ts, max_ts);
            missing = expected
                .iter()
                .filter(|(labels, (_, last))| seen.get(*labels).is_none_or(|s| s < last))
                .map(|(labels, _)| format!("{labels:?}"))
                .take(5)
                .collect();
            missing.is_empty().then_some(())
        });
        if ready.is_none() {
            panic!(
                "imported samples are not all queryable after {}s; first missing series: {missing:?}\n{}",
                STARTUP_TIMEOUT.as_secs(),
                log_block("victoria-metrics log", &self.log_path)
            );
        }
    }

    /// `GET /internal/force_flush`: makes recently ingested samples searchable now.
    pub fn force_flush(&self) {
        let url = format!("{}/internal/force_flush", self.url());
        let response = self
            .client
            .get(&url)
            .send()
            .unwrap_or_else(|e| panic!("GET {url} failed: {e}"));
        assert!(
            response.status().is_success(),
            "GET {url} answered {}",
            response.status()
        );
    }

    /// The newest exported timestamp of every series of the given metric names.
    fn export_newest(
        &self,
        names: &std::collections::BTreeSet<&str>,
        start_ms: i64,
        end_ms: i64,
    ) -> HashMap<BTreeMap<String, String>, i64> {
        let url = format!("{}/api/v1/export", self.url());
        let mut newest = HashMap::new();
        for name in names {
            let matcher = format!("{{__name__={name:?}}}");
            let start = format!("{}", start_ms as f64 / 1000.0);
            let end = format!("{}", end_ms as f64 / 1000.0);
            let Ok(response) = self
                .client
                .get(&url)
                .timeout(Duration::from_secs(60))
                .query(&[
                    ("match[]", matcher.as_str()),
                    ("start", start.as_str()),
                    ("end", end.as_str()),
                ])
                .send()
            else {
                continue;
            };
            let body = response.text().unwrap_or_default();
            for line in body.lines() {
                if let Some((labels, last)) = parse_export_line(line) {
                    newest.insert(labels, last);
                }
            }
        }
        newest
    }
}

/// The labels and newest timestamp of one `/api/v1/export` line,
/// `{"metric":{...},"values":[...],"timestamps":[...]}`. The values are not JSON when they
/// hold `+Inf` or `-Inf`, so the line is cut around them rather than parsed whole.
fn parse_export_line(line: &str) -> Option<(BTreeMap<String, String>, i64)> {
    let values = line.rfind(",\"values\":[")?;
    let metric = line
        .get(line.find('{')? + 1..values)?
        .strip_prefix("\"metric\":")?;
    let labels: BTreeMap<String, String> = serde_json::from_str(metric).ok()?;
    let ts_start = line.rfind("\"timestamps\":[")? + "\"timestamps\":[".len();
    let ts_end = ts_start + line[ts_start..].find(']')?;
    let last = line[ts_start..ts_end]
        .split(',')
        .filter_map(|t| t.trim().parse::<i64>().ok())
        .max()?;
    Some((labels, last))
}

/// For every series of a Prometheus text with ms timestamps: its labels (with `__name__`)
/// and its oldest and newest timestamp. VictoriaMetrics stores no NaN sample (it takes NaN for
/// a Prometheus staleness marker), so NaN lines are left out of the check.
fn newest_per_series(text: &str) -> HashMap<BTreeMap<String, String>, (i64, i64)> {
    // Per distinct series text first: parsing labels once per series, not once per line,
    // keeps imports of millions of samples quick.
    let mut by_head: HashMap<&str, (i64, i64)> = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.rsplitn(3, ' ');
        let (Some(ts), Some(value), Some(head)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("import line without a value and a timestamp: {line:?}");
        };
        let ts: i64 = ts
            .parse()
            .unwrap_or_else(|e| panic!("import line with a bad ms timestamp ({e}): {line:?}"));
        if value.eq_ignore_ascii_case("nan") {
            continue;
        }
        let entry = by_head.entry(head).or_insert((ts, ts));
        entry.0 = entry.0.min(ts);
        entry.1 = entry.1.max(ts);
    }
    by_head
        .into_iter()
        .map(|(head, span)| {
            let sample = parse_samples(&format!("{head} 0"))
                .pop()
                .unwrap_or_else(|| panic!("import series not understood: {head:?}"));
            let mut labels = sample.labels;
            labels.insert("__name__".into(), sample.name);
            (labels, span)
        })
        .collect()
}

/// Prometheus text with ms timestamps for [`VictoriaMetrics::import_prometheus`], from the
/// same [`HistorySeries`] that [`openmetrics_text`](super::prometheus::openmetrics_text)
/// renders for a Prometheus backfill.
pub fn prometheus_text_ms(series: &[HistorySeries]) -> String {
    let mut out = String::new();
    for s in series {
        let selector = s.selector();
        for (ts, v) in &s.samples {
            out.push_str(&format!("{selector} {} {ts}\n", format_value(*v)));
        }
    }
    out
}
