//! A real Prometheus server (Debian package `prometheus`) on a free loopback port.
//!
//! The generated prometheus.yml scrapes and evaluates every second so that tests see data
//! within a few seconds; callers supply the `scrape_configs` (see [`scrape_job`]) and
//! optionally rule files and Alertmanager targets. Firing alerts are resent every second
//! (`--rules.alert.resend-delay=1s`): Prometheus drops the first notification when it fires
//! before the Alertmanager target is discovered. Readiness is `GET /-/ready` == 200.
//!
//! # History and protected servers
//!
//! [`PrometheusBuilder::backfill_openmetrics`] loads history into the TSDB before the start,
//! with `promtool tsdb create-blocks-from openmetrics` (read its rules there), and sets a
//! 100-year retention so the history is not deleted at the start.
//! [`PrometheusBuilder::web_basic_auth`] and [`PrometheusBuilder::web_tls`] start Prometheus
//! with a `--web.config.file` (bcrypt basic auth, TLS with a generated self-signed
//! certificate); the harness' own requests then authenticate and trust that certificate, so
//! [`Prometheus::query`] and friends keep working.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::server::{ServerProcess, start_http_server};
use super::{
    LOOPBACK, http_client, log_block, poll_until, require_binary, run_ok, send, temp_dir,
    write_file,
};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
const PACKAGE: &str = "prometheus";

/// A `scrape_configs` list entry (YAML, indented for [`Prometheus::start`]) for one static
/// target `host:port`, scraped every second at `metrics_path`.
pub fn scrape_job(job: &str, target: &str, metrics_path: &str) -> String {
    format!(
        "  - job_name: '{job}'\n    metrics_path: '{metrics_path}'\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n"
    )
}

/// The numbers of an instant-vector query result (as returned by [`Prometheus::query`]), in
/// result order. Non-numeric values (never produced by Prometheus) are skipped.
pub fn sample_values(result: &Value) -> Vec<f64> {
    result
        .as_array()
        .map(|samples| {
            samples
                .iter()
                .filter_map(|s| s["value"][1].as_str())
                .filter_map(|v| v.parse::<f64>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// What to put into the generated prometheus.yml; see [`Prometheus::builder`].
#[derive(Default)]
pub struct PrometheusBuilder {
    scrape_configs: String,
    rule_files: Vec<(String, String)>,
    alertmanagers: Vec<String>,
    extra_args: Vec<String>,
    extra_config: String,
    backfill: Vec<String>,
    basic_auth: Option<(String, String)>,
    tls: bool,
}

impl PrometheusBuilder {
    /// The body of `scrape_configs:`: list entries such as those made by [`scrape_job`].
    pub fn scrape_configs(mut self, yaml: &str) -> Self {
        self.scrape_configs = yaml.to_string();
        self
    }

    /// Adds one scrape job for a static target (see [`scrape_job`]).
    pub fn scrape(mut self, job: &str, target: &str, metrics_path: &str) -> Self {
        self.scrape_configs
            .push_str(&scrape_job(job, target, metrics_path));
        self
    }

    /// Adds a rule file named `file_name` (written into the temp dir) with `yaml` contents.
    pub fn rule_file(mut self, file_name: &str, yaml: &str) -> Self {
        self.rule_files
            .push((file_name.to_string(), yaml.to_string()));
        self
    }

    /// Adds an Alertmanager `host:port` that Prometheus sends firing alerts to.
    pub fn alertmanager(mut self, host_port: &str) -> Self {
        self.alertmanagers.push(host_port.to_string());
        self
    }

    /// Adds a command-line flag for prometheus, e.g. `--web.enable-admin-api`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_string());
        self
    }

    /// Appends top-level YAML to the generated prometheus.yml (e.g. a `remote_read:` section).
    pub fn extra_config(mut self, yaml: &str) -> Self {
        self.extra_config.push_str(yaml);
        if !yaml.ends_with('\n') {
            self.extra_config.push('\n');
        }
        self
    }

    /// Loads `text` (OpenMetrics: timestamps in **seconds**, optional `# TYPE` lines, `# EOF`
    /// added when missing) into the TSDB before Prometheus starts, with `promtool tsdb
    /// create-blocks-from openmetrics FILE DATA_DIR`; sets `--storage.tsdb.retention.time=100y`
    /// so old history survives the start. May be called several times (one promtool run each).
    ///
    /// promtool's rules: the samples of one series must be in ascending time order within a
    /// call, the families must not interleave, and values may be `NaN`, `+Inf`, `-Inf`. It
    /// cuts 2-hour blocks, so history up to "now" works; Prometheus then refuses scraped or
    /// pushed samples older than the newest backfilled one (its head starts there).
    ///
    /// Example: `"# TYPE x gauge\nx{a=\"1\"} 5 1700000000\nx{a=\"1\"} 6 1700000060\n"`.
    pub fn backfill_openmetrics(mut self, text: &str) -> Self {
        self.backfill.push(text.to_string());
        self
    }

    /// Protects every endpoint with HTTP basic auth (`basic_auth_users` in a
    /// `--web.config.file`, bcrypt-hashed by the harness).
    pub fn web_basic_auth(mut self, user: &str, password: &str) -> Self {
        self.basic_auth = Some((user.to_string(), password.to_string()));
        self
    }

    /// Serves HTTPS only (`tls_server_config` in a `--web.config.file`), with a self-signed
    /// certificate for `localhost` and `127.0.0.1`, written to [`Prometheus::tls_cert_path`].
    pub fn web_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Writes the config and rule files and starts Prometheus; see [`Prometheus::start`].
    pub fn start(self) -> Prometheus {
        Prometheus::launch(self)
    }
}

/// A running Prometheus, killed on drop (its TSDB and config are removed).
pub struct Prometheus {
    port: u16,
    scheme: &'static str,
    tls_cert_path: Option<PathBuf>,
    process: ServerProcess,
    config_path: PathBuf,
    log_path: PathBuf,
    client: reqwest::blocking::Client,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus with `scrape_configs_yaml` as the body of `scrape_configs:` (list
    /// entries, e.g. from [`scrape_job`]; may be empty), scrape and evaluation interval 1s.
    /// Panics with Prometheus' log tail if it is not ready within [`STARTUP_TIMEOUT`].
    pub fn start(scrape_configs_yaml: &str) -> Prometheus {
        Self::builder().scrape_configs(scrape_configs_yaml).start()
    }

    /// A builder for rule files, Alertmanager targets and extra flags.
    pub fn builder() -> PrometheusBuilder {
        PrometheusBuilder::default()
    }

    fn launch(builder: PrometheusBuilder) -> Prometheus {
        let binary = require_binary(PROMETHEUS, PACKAGE);
        let dir = temp_dir("prometheus");
        let mut rule_paths = Vec::new();
        for (name, yaml) in &builder.rule_files {
            let path = dir.path().join(name);
            write_file(&path, yaml);
            rule_paths.push(path);
        }
        let config_path = dir.path().join("prometheus.yml");
        write_file(&config_path, render_config(&builder, &rule_paths));
        let data_dir = dir.path().join("data");
        let mut extra_args = builder.extra_args.clone();
        for (i, text) in builder.backfill.iter().enumerate() {
            backfill(dir.path(), &data_dir, i, text);
        }
        if !builder.backfill.is_empty() {
            extra_args.push("--storage.tsdb.retention.time=100y".into());
        }
        let (web_config, tls_cert_path) = write_web_config(dir.path(), &builder);
        if let Some(path) = &web_config {
            extra_args.push(format!("--web.config.file={}", path.display()));
        }
        let client = harness_client(builder.basic_auth.as_ref(), tls_cert_path.is_some());

        let scheme = if builder.tls { "https" } else { "http" };
        let log_path = dir.path().join("prometheus.log");
        let (process, port) = start_http_server(
            "Prometheus",
            ("prometheus log", &log_path),
            &client,
            |port| format!("{scheme}://{LOOPBACK}:{port}/-/ready"),
            |port| {
                let mut cmd = Command::new(&binary);
                cmd.arg(format!("--config.file={}", config_path.display()))
                    .arg(format!("--storage.tsdb.path={}", data_dir.display()))
                    .arg(format!("--web.listen-address={LOOPBACK}:{port}"))
                    .arg("--web.enable-lifecycle")
                    // The first firing alert may be evaluated before the notifier has
                    // discovered the Alertmanagers and is then dropped; resend every second,
                    // not every minute.
                    .arg("--rules.alert.resend-delay=1s")
                    .arg("--log.level=info")
                    .args(&extra_args)
                    .current_dir(dir.path());
                cmd
            },
        );
        Prometheus {
            port,
            scheme,
            tls_cert_path,
            process,
            config_path,
            log_path,
            client,
            dir,
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` with [`PrometheusBuilder::web_tls`]), without a
    /// trailing slash.
    pub fn url(&self) -> String {
        format!("{}://{LOOPBACK}:{}", self.scheme, self.port)
    }

    /// The self-signed certificate (PEM) served with [`PrometheusBuilder::web_tls`]; it is
    /// its own CA, so it is the `ca_file` a client needs.
    pub fn tls_cert_path(&self) -> Option<&Path> {
        self.tls_cert_path.as_deref()
    }

    /// The port Prometheus listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The generated prometheus.yml; rewrite it and call [`Prometheus::reload`] to change it.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temp dir holding config, rule files, TSDB and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Prometheus' own log (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Reloads the configuration (`POST /-/reload`, enabled by `--web.enable-lifecycle`).
    /// Panics if Prometheus rejects it, e.g. because the config is invalid.
    pub fn reload(&self) {
        let url = format!("{}/-/reload", self.url());
        let (status, body) = send(self.client.post(&url), &format!("POST {url}"));
        assert!(
            status.is_success(),
            "POST {url} answered {status}: {body}\n{}",
            log_block("prometheus log", &self.log_path)
        );
    }

    /// GETs an API path (e.g. `/api/v1/targets`) and returns the `data` member of a
    /// successful answer; panics with the body when the status is not `success`.
    pub fn api_get(&self, path_and_query: &str, params: &[(&str, &str)]) -> Value {
        let url = format!("{}{path_and_query}", self.url());
        let (status, body) = send(self.client.get(&url).query(params), &format!("GET {url}"));
        let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!("GET {url} {params:?} answered {status} non-JSON ({e}): {body}")
        });
        assert!(
            json["status"] == "success",
            "GET {url} {params:?} answered {status}: {body}"
        );
        json["data"].clone()
    }

    /// Runs an instant query (`/api/v1/query`) and returns `data.result`: for a vector, an
    /// array of `{"metric": {...}, "value": [ts, "v"]}` (see [`sample_values`]). Panics if
    /// the query is not successful (e.g. a PromQL syntax error).
    pub fn query(&self, promql: &str) -> Value {
        self.api_get("/api/v1/query", &[("query", promql)])["result"].clone()
    }

    /// Polls [`Prometheus::query`] every 100 ms until `predicate` accepts its result, and
    /// returns that result. Panics on timeout with the last result and the scrape targets'
    /// health, which usually explains why a series is missing.
    pub fn wait_for(
        &self,
        promql: &str,
        predicate: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Value {
        let mut last = Value::Null;
        let found = poll_until(timeout, || {
            last = self.query(promql);
            predicate(&last).then(|| last.clone())
        });
        found.unwrap_or_else(|| {
            panic!(
                "after {:?}, the result of `{promql}` still does not satisfy the predicate.\n\
                 last result: {last}\ntargets: {}",
                timeout,
                self.targets_summary()
            )
        })
    }

    /// The active scrape targets (`/api/v1/targets` `data.activeTargets`).
    pub fn targets(&self) -> Value {
        self.api_get("/api/v1/targets", &[])["activeTargets"].clone()
    }

    /// One line per active target: job, URL, health, last error.
    pub fn targets_summary(&self) -> String {
        let targets = self.targets();
        let lines: Vec<String> = targets
            .as_array()
            .map(|ts| {
                ts.iter()
                    .map(|t| {
                        format!(
                            "job={} url={} health={} lastError={:?}",
                            t["labels"]["job"], t["scrapeUrl"], t["health"], t["lastError"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if lines.is_empty() {
            "<no active targets>".to_string()
        } else {
            lines.join("\n")
        }
    }
}

/// promtool's block length (`tsdb.DefaultBlockDuration`; promtool 2.42 has no flag for it).
const BLOCK_MS: i64 = 2 * 3600 * 1000;

/// Turns one OpenMetrics text into TSDB blocks under `data_dir`.
///
/// promtool 2.42 re-parses its whole input once per 2-hour block, which is quadratic: 20
/// series of 30 days at 5 minutes take 42 s in one run. The harness therefore splits the text
/// into one file per 2-hour window (every `#` line is kept in each, so families stay
/// declared), runs one promtool per window into its own directory, a few at a time, and moves
/// the blocks into `data_dir`: linear, about 40 ms of CPU per block.
fn backfill(dir: &Path, data_dir: &Path, index: usize, text: &str) {
    let promtool = require_binary(PROMTOOL, PACKAGE);
    let work = dir.join(format!("backfill-{index}"));
    std::fs::create_dir_all(&work)
        .unwrap_or_else(|e| panic!("creating {} failed: {e}", work.display()));
    std::fs::create_dir_all(data_dir)
        .unwrap_or_else(|e| panic!("creating {} failed: {e}", data_dir.display()));
    let windows = split_by_block(text);
    let files: Vec<PathBuf> = windows
        .into_iter()
        .map(|(window, mut body)| {
            body.push_str("# EOF\n");
            let file = work.join(format!("{window}.om"));
            write_file(&file, body);
            file
        })
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) + 2;
    std::thread::scope(|scope| {
        for _ in 0..workers.min(files.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(file) = files.get(i) else { break };
                    let out = file.with_extension("blocks");
                    run_ok(
                        Command::new(&promtool)
                            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
                            .arg(file)
                            .arg(&out),
                        &format!(
                            "promtool tsdb create-blocks-from openmetrics {}",
                            file.display()
                        ),
                    );
                }
            });
        }
    });
    for file in &files {
        let out = file.with_extension("blocks");
        let Ok(entries) = std::fs::read_dir(&out) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.join("meta.json").is_file() {
                let target = data_dir.join(entry.file_name());
                std::fs::rename(&path, &target).unwrap_or_else(|e| {
                    panic!(
                        "moving {} to {} failed: {e}",
                        path.display(),
                        target.display()
                    )
                });
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// Splits OpenMetrics text into one text per promtool block window (by sample timestamp),
/// each with every `#` line of the input (except `# EOF`) at its place.
fn split_by_block(text: &str) -> std::collections::BTreeMap<i64, String> {
    let window_of = |line: &str| -> i64 {
        assert!(
            !line.contains(" # "),
            "backfill_openmetrics: exemplars are not supported: {line:?}"
        );
        let ts = line
            .rsplit(' ')
            .next()
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or_else(|| {
                panic!("backfill_openmetrics: a sample needs a timestamp in seconds: {line:?}")
            });
        ((ts * 1000.0).round() as i64).div_euclid(BLOCK_MS)
    };
    let is_sample = |line: &str| !line.trim().is_empty() && !line.starts_with('#');
    let mut out: std::collections::BTreeMap<i64, String> = text
        .lines()
        .filter(|l| is_sample(l))
        .map(|l| (window_of(l), String::new()))
        .collect();
    for line in text.lines() {
        if line.trim().is_empty() || line.trim() == "# EOF" {
            continue;
        }
        if is_sample(line) {
            let body = out
                .get_mut(&window_of(line))
                .expect("window found in the first pass");
            body.push_str(line);
            body.push('\n');
        } else {
            for body in out.values_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    out
}

/// One series of history for a backfill or an import: metric name, labels and samples
/// `(timestamp in ms, value)` in ascending time order.
#[derive(Debug, Clone, PartialEq)]
pub struct HistorySeries {
    /// Metric name.
    pub name: String,
    /// Label pairs (without `__name__`).
    pub labels: Vec<(String, String)>,
    /// `(timestamp in ms, value)`, ascending.
    pub samples: Vec<(i64, f64)>,
}

impl HistorySeries {
    /// A series with these labels and no samples yet.
    pub fn new(name: &str, labels: &[(&str, &str)]) -> Self {
        Self {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            samples: Vec::new(),
        }
    }

    /// `name{a="1",b="2"}` (label values escaped for the text formats).
    pub fn selector(&self) -> String {
        if self.labels.is_empty() {
            return self.name.clone();
        }
        let pairs: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| {
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                format!("{k}=\"{v}\"")
            })
            .collect();
        format!("{}{{{}}}", self.name, pairs.join(","))
    }
}

/// A value as both text formats write it: `NaN`, `+Inf`, `-Inf`, or the shortest decimal that
/// parses back to the same f64.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v:?}")
    }
}

/// OpenMetrics text for [`PrometheusBuilder::backfill_openmetrics`]: one `# TYPE <name> gauge`
/// per metric name, the families in first-seen order, timestamps in seconds (with ms), `# EOF`.
pub fn openmetrics_text(series: &[HistorySeries]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for s in series {
        if !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    let mut out = String::new();
    for name in names {
        out.push_str(&format!("# TYPE {name} gauge\n"));
        for s in series.iter().filter(|s| s.name == name) {
            let selector = s.selector();
            for (ts, v) in &s.samples {
                let sign = if *ts < 0 { "-" } else { "" };
                let abs = ts.unsigned_abs();
                out.push_str(&format!(
                    "{selector} {} {sign}{}.{:03}\n",
                    format_value(*v),
                    abs / 1000,
                    abs % 1000
                ));
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Writes the `--web.config.file` (and the certificate) when the builder asks for basic auth
/// or TLS; returns the config path and the certificate path.
fn write_web_config(dir: &Path, builder: &PrometheusBuilder) -> (Option<PathBuf>, Option<PathBuf>) {
    if builder.basic_auth.is_none() && !builder.tls {
        return (None, None);
    }
    let mut yaml = String::new();
    let mut cert_path = None;
    if builder.tls {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), LOOPBACK.into()])
                .unwrap_or_else(|e| panic!("generating a self-signed certificate failed: {e}"));
        let cert = dir.join("web-cert.pem");
        let key = dir.join("web-key.pem");
        write_file(&cert, certified.cert.pem());
        write_file(&key, certified.key_pair.serialize_pem());
        yaml.push_str(&format!(
            "tls_server_config:\n  cert_file: '{}'\n  key_file: '{}'\n",
            cert.display(),
            key.display()
        ));
        cert_path = Some(cert);
    }
    if let Some((user, password)) = &builder.basic_auth {
        // Cost 4: the lowest bcrypt allows; Prometheus checks it on every request.
        let hash = bcrypt::hash(password, 4)
            .unwrap_or_else(|e| panic!("bcrypt-hashing the test password failed: {e}"));
        yaml.push_str(&format!("basic_auth_users:\n  '{user}': '{hash}'\n"));
    }
    let path = dir.join("web-config.yml");
    write_file(&path, yaml);
    (Some(path), cert_path)
}

/// The harness' own client: with the basic-auth header and trusting any certificate when the
/// server is protected (it is the server under test, not the client under test).
fn harness_client(basic_auth: Option<&(String, String)>, tls: bool) -> reqwest::blocking::Client {
    if basic_auth.is_none() && !tls {
        return http_client();
    }
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some((user, password)) = basic_auth {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let value = reqwest::header::HeaderValue::from_str(&format!("Basic {token}"))
            .unwrap_or_else(|e| panic!("building the basic-auth header failed: {e}"));
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::blocking::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .default_headers(headers)
        .danger_accept_invalid_certs(tls)
        .build()
        .unwrap_or_else(|e| panic!("building the HTTP client failed: {e}"))
}

fn render_config(builder: &PrometheusBuilder, rule_paths: &[PathBuf]) -> String {
    let mut yaml = String::from(
        "# vitals test harness\nglobal:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
    );
    if !rule_paths.is_empty() {
        yaml.push_str("rule_files:\n");
        for path in rule_paths {
            yaml.push_str(&format!("  - '{}'\n", path.display()));
        }
    }
    if !builder.alertmanagers.is_empty() {
        let targets: Vec<String> = builder
            .alertmanagers
            .iter()
            .map(|t| format!("'{t}'"))
            .collect();
        yaml.push_str(&format!(
            "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [{}]\n",
            targets.join(", ")
        ));
    }
    if builder.scrape_configs.trim().is_empty() {
        yaml.push_str("scrape_configs: []\n");
    } else {
        yaml.push_str("scrape_configs:\n");
        yaml.push_str(&builder.scrape_configs);
        if !builder.scrape_configs.ends_with('\n') {
            yaml.push('\n');
        }
    }
    yaml.push_str(&builder.extra_config);
    yaml
}
