//! A real Prometheus server (Debian package `prometheus`) on a free loopback port.
//!
//! The generated prometheus.yml scrapes and evaluates every second so that tests see data
//! within a few seconds; callers supply the `scrape_configs` (see [`scrape_job`]) and
//! optionally rule files and Alertmanager targets. Firing alerts are resent every second
//! (`--rules.alert.resend-delay=1s`): Prometheus drops the first notification when it fires
//! before the Alertmanager target is discovered. Readiness is `GET /-/ready` == 200.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{
    LOOPBACK, START_ATTEMPTS, http_client, kill_and_reap, log_block, poll_until, require_binary,
    says_address_in_use, temp_dir, write_file,
};

const PROMETHEUS: &str = "/usr/bin/prometheus";
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

    /// Writes the config and rule files and starts Prometheus; see [`Prometheus::start`].
    pub fn start(self) -> Prometheus {
        Prometheus::launch(self)
    }
}

/// A running Prometheus, killed on drop (its TSDB and config are removed).
pub struct Prometheus {
    port: u16,
    child: Option<Child>,
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

        let mut prom = Prometheus {
            port: 0,
            child: None,
            config_path,
            log_path: dir.path().join("prometheus.log"),
            client: http_client(),
            dir,
        };
        for attempt in 1..=START_ATTEMPTS {
            prom.port = super::start_port();
            let log = std::fs::File::create(&prom.log_path)
                .unwrap_or_else(|e| panic!("creating {} failed: {e}", prom.log_path.display()));
            let log_err = log
                .try_clone()
                .unwrap_or_else(|e| panic!("cloning the log handle failed: {e}"));
            let child = Command::new(&binary)
                .arg(format!("--config.file={}", prom.config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    prom.dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={LOOPBACK}:{}", prom.port))
                .arg("--web.enable-lifecycle")
                // The first firing alert may be evaluated before the notifier has discovered
                // the Alertmanagers and is then dropped; resend every second, not every minute.
                .arg("--rules.alert.resend-delay=1s")
                .arg("--log.level=info")
                .args(&builder.extra_args)
                .current_dir(prom.dir.path())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {PROMETHEUS} failed: {e}"));
            prom.child = Some(child);
            match prom.wait_ready() {
                Ok(()) => return prom,
                Err(why) => {
                    if let Some(child) = prom.child.as_mut() {
                        kill_and_reap(child);
                    }
                    prom.child = None;
                    let log = std::fs::read_to_string(&prom.log_path).unwrap_or_default();
                    if attempt < START_ATTEMPTS && says_address_in_use(&log) {
                        continue;
                    }
                    panic!(
                        "Prometheus did not start on {LOOPBACK}:{} (attempt {attempt}): {why}\n{}",
                        prom.port,
                        log_block("prometheus log", &prom.log_path)
                    );
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let url = format!("{}/-/ready", self.url());
        let child = self.child.as_mut().expect("child is set before waiting");
        super::wait_http_ready(child, &self.client, &url, "prometheus")
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{LOOPBACK}:{}", self.port)
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
        let response = self
            .client
            .post(&url)
            .send()
            .unwrap_or_else(|e| panic!("POST {url} failed: {e}"));
        let status = response.status();
        let body = response.text().unwrap_or_default();
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
        let response = self
            .client
            .get(&url)
            .query(params)
            .send()
            .unwrap_or_else(|e| panic!("GET {url} failed: {e}"));
        let status = response.status();
        let body = response.text().unwrap_or_default();
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

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_and_reap(child);
        }
    }
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
    yaml
}
