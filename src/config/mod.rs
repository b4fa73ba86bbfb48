//! The configuration file: serde structs in the shape of DESIGN.md §7, parsing with
//! positions in errors, secrets from files or the environment, and validation.
//!
//! Every struct denies unknown keys, so a typo is an error that names the file, the line and
//! the key instead of a setting that silently does nothing.

mod error;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::{ConfigError, Position, Problem};
pub use types::{Port, PromDuration, Secret, expand_env, parse_duration, resolve_relative};

/// The config used when no `--config.file` is given: sensible on any Linux host.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.yml");

/// The label used in errors for the embedded default config.
pub const EMBEDDED_NAME: &str = "<embedded default>";

/// Where the config comes from; kept so that a reload reads the same place again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A YAML file given with `--config.file`.
    File(PathBuf),
    /// The built-in default.
    Embedded,
}

impl ConfigSource {
    /// Reads, parses and validates the config.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    file: path.clone(),
                    source,
                })?;
                Config::parse(&text, &path.display().to_string(), path.parent())
            }
            ConfigSource::Embedded => Config::parse(EMBEDDED_DEFAULT, EMBEDDED_NAME, None),
        }
    }

    /// A short name for logs and the landing page.
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Embedded => EMBEDDED_NAME.to_string(),
        }
    }
}

/// The whole configuration of both roles.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Settings of `vitals exporter`.
    pub exporter: ExporterConfig,
    /// Settings of `vitals sidecar`.
    pub sidecar: SidecarConfig,
}

/// Settings of the exporter role.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExporterConfig {
    /// Deadline for one scrape when Prometheus does not send
    /// `X-Prometheus-Scrape-Timeout-Seconds`. Default `10s`.
    pub scrape_timeout: PromDuration,
    /// Time kept free before Prometheus' own scrape timeout so the answer arrives in time.
    /// Default `500ms`.
    pub scrape_timeout_offset: PromDuration,
    /// Remote PostgreSQL servers.
    pub postgres: PostgresConfig,
    /// Disk usage of remote hosts over SSH.
    pub ssh_disk: SshDiskConfig,
    /// Local process groups from /proc.
    pub process: ProcessConfig,
    /// Metrics derived from log files and journald.
    pub logs: LogsConfig,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        Self {
            scrape_timeout: PromDuration(std::time::Duration::from_secs(10)),
            scrape_timeout_offset: PromDuration(std::time::Duration::from_millis(500)),
            postgres: PostgresConfig::default(),
            ssh_disk: SshDiskConfig::default(),
            process: ProcessConfig::default(),
            logs: LogsConfig::default(),
        }
    }
}

/// PostgreSQL targets.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// Most connections vitals holds to all PostgreSQL targets together (2-10000), on top of
    /// each target's own `max_connections`; when it is reached, the least recently used
    /// idle connection of any target is closed to make room. Default 100.
    pub max_connections: u32,
    /// The servers to scrape; each becomes `target="<name>"` and `/probe?target=<name>`.
    pub targets: Vec<PostgresTarget>,
}

/// Default of `exporter.postgres.max_connections`.
pub const DEFAULT_PG_GLOBAL_MAX_CONNECTIONS: u32 = 100;

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            max_connections: DEFAULT_PG_GLOBAL_MAX_CONNECTIONS,
            targets: Vec::new(),
        }
    }
}

/// TLS mode for PostgreSQL connections, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it.
    #[default]
    Prefer,
    /// Require TLS, without checking the certificate.
    Require,
    /// Require TLS and a certificate signed by `sslrootcert`.
    VerifyCa,
    /// As verify-ca, and the host name must match the certificate.
    VerifyFull,
}

/// One PostgreSQL server.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PostgresTarget {
    /// Target name, used as the `target` label.
    pub name: String,
    /// Host name, IP address, or a Unix socket directory (starting with `/`); several,
    /// comma-separated, are tried in order until one accepts the connection (as libpq's
    /// `host`), e.g. `/var/run/postgresql,127.0.0.1`.
    #[serde(default = "default_pg_host")]
    pub host: String,
    /// TCP port (also selects the socket file name). Default 5432.
    #[serde(default = "default_pg_port")]
    pub port: Port,
    /// Role to connect as. Default: the name of the OS user vitals runs as, as libpq (psql)
    /// does, which is what peer authentication on a Unix socket accepts.
    #[serde(default = "default_pg_user")]
    pub user: String,
    /// Password, inline or as `${ENV_VAR}`; prefer `password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// File holding the password (one line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// TLS mode. Default `prefer`.
    #[serde(default)]
    pub sslmode: SslMode,
    /// CA certificate file for `verify-ca` and `verify-full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslrootcert: Option<PathBuf>,
    /// Databases to fan out to; `all` means every database that accepts connections.
    #[serde(default = "default_pg_databases")]
    pub databases: Vec<String>,
    /// Databases left out of the fan-out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Extra labels attached to every series of this target.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Database for server-wide queries. Default `postgres`.
    #[serde(default = "default_pg_dbname")]
    pub dbname: String,
    /// Time allowed to open one connection. Default `5s`.
    #[serde(default = "default_pg_connect_timeout")]
    pub connect_timeout: PromDuration,
    /// Server-side `statement_timeout` of vitals' sessions. Default `5s`.
    #[serde(default = "default_pg_statement_timeout")]
    pub statement_timeout: PromDuration,
    /// Server-side `lock_timeout` of vitals' sessions. Default `1s`.
    #[serde(default = "default_pg_lock_timeout")]
    pub lock_timeout: PromDuration,
    /// Most connections vitals holds to this server at once, fan-out included (2-1000).
    /// Default 10.
    #[serde(default = "default_pg_max_connections")]
    pub max_connections: u32,
    /// How often database sizes are refreshed in the background. Default `1m`.
    #[serde(default = "default_pg_size_refresh_interval")]
    pub size_refresh_interval: PromDuration,
    /// Largest tables, indexes and sequences reported per database; 0 turns these families
    /// off (and the fan-out with them). Default 20.
    #[serde(default = "default_pg_tables_top_n")]
    pub tables_top_n: u32,
    /// How often the per-database families (tables, indexes, sequences) are gathered in the
    /// background while scrapes read them; scrapes serve that snapshot, never older than
    /// three intervals. `0s` gathers them in every scrape instead. Default `1m`.
    #[serde(default = "default_pg_tables_refresh_interval")]
    pub tables_refresh_interval: PromDuration,
    /// Whether to read `pg_stat_statements` (the extension must be installed in `dbname`).
    /// Default false.
    #[serde(default)]
    pub pg_stat_statements: bool,
    /// Statements reported from `pg_stat_statements`, by total execution time. Default 50.
    #[serde(default = "default_pg_statements_top_n")]
    pub statements_top_n: u32,
}

fn default_pg_host() -> String {
    "127.0.0.1".into()
}
fn default_pg_port() -> Port {
    Port(5432)
}
fn default_pg_user() -> String {
    os_user_name().unwrap_or_else(|| "postgres".into())
}

/// The name of the OS user this process runs as: from /etc/passwd by uid (as libpq's
/// getpwuid), else `$USER` or `$LOGNAME`.
pub fn os_user_name() -> Option<String> {
    let uid = rustix::process::getuid().as_raw().to_string();
    let from_passwd = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let uid_field = fields.nth(1)?;
                (uid_field == uid && !name.is_empty()).then(|| name.to_string())
            })
        });
    from_passwd.or_else(|| {
        ["USER", "LOGNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
    })
}
fn default_pg_databases() -> Vec<String> {
    vec!["all".into()]
}
fn default_pg_dbname() -> String {
    "postgres".into()
}
fn default_pg_connect_timeout() -> PromDuration {
    PromDuration(std::time::Duration::from_secs(5))
}
fn default_pg_statement_timeout() -> PromDuration {
    PromDuration(std::time::Duration::from_secs(5))
}
fn default_pg_lock_timeout() -> PromDuration {
    PromDuration(std::time::Duration::from_secs(1))
}
fn default_pg_max_connections() -> u32 {
    10
}
fn default_pg_size_refresh_interval() -> PromDuration {
    PromDuration(std::time::Duration::from_secs(60))
}
fn default_pg_tables_top_n() -> u32 {
    20
}
fn default_pg_tables_refresh_interval() -> PromDuration {
    PromDuration(std::time::Duration::from_secs(60))
}
fn default_pg_statements_top_n() -> u32 {
    50
}

/// SSH disk targets.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SshDiskConfig {
    /// How many targets may be refreshed at the same time, over all targets. Default 16.
    pub concurrency: usize,
    /// Mount points left out (regex, anchored by the user as node_exporter's
    /// `--collector.filesystem.mount-points-exclude`). Default: node_exporter's.
    #[serde(deserialize_with = "regex_string")]
    pub mount_points_exclude: String,
    /// Filesystem types left out (regex, as node_exporter's
    /// `--collector.filesystem.fs-types-exclude`). Default: node_exporter's.
    #[serde(deserialize_with = "regex_string")]
    pub fs_types_exclude: String,
    /// Hosts whose filesystems are read over SSH.
    pub targets: Vec<SshTarget>,
}

/// node_exporter's default `--collector.filesystem.mount-points-exclude` (Linux).
pub const DEFAULT_MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";

/// node_exporter's default `--collector.filesystem.fs-types-exclude` (Linux).
pub const DEFAULT_FS_TYPES_EXCLUDE: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs)$";

impl Default for SshDiskConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            mount_points_exclude: DEFAULT_MOUNT_POINTS_EXCLUDE.into(),
            fs_types_exclude: DEFAULT_FS_TYPES_EXCLUDE.into(),
            targets: Vec::new(),
        }
    }
}

/// A string that must compile as a regular expression; checked while parsing so that a bad
/// pattern is reported with its position.
fn regex_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    regex::Regex::new(&s).map_err(|e| serde::de::Error::custom(format!("invalid regex: {e}")))?;
    Ok(s)
}

/// A host key fingerprint as `ssh-keygen -l` prints it: `SHA256:` and 43 base64 characters;
/// checked while parsing.
fn sha256_fingerprint<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    let ok = s.strip_prefix("SHA256:").is_some_and(|b64| {
        b64.len() == 43
            && b64
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    });
    if !ok {
        return Err(serde::de::Error::custom(
            "expected SHA256: followed by 43 base64 characters, as `ssh-keygen -l -f KEY` prints",
        ));
    }
    Ok(Some(s))
}

/// One host reached over SSH.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SshTarget {
    /// Target name, used as the `target` label.
    pub name: String,
    /// Host name or address.
    pub host: String,
    /// SSH port. Default 22.
    #[serde(default = "default_ssh_port")]
    pub port: Port,
    /// Remote user.
    pub user: String,
    /// Private key file (ed25519, ECDSA or RSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// File holding the password, when no key is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// OpenSSH known_hosts file used to verify the host key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<PathBuf>,
    /// File holding the passphrase of an encrypted `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<PathBuf>,
    /// The host key's SHA-256 fingerprint (`SHA256:...`); the key must match it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "sha256_fingerprint"
    )]
    pub host_key_fingerprint: Option<String>,
    /// When the host has no entry in `known_hosts`, accept its key and append it there.
    /// Default false: an unknown host is refused.
    #[serde(default)]
    pub trust_on_first_use: bool,
    /// Time between two refreshes. Default `30s`.
    #[serde(default = "default_ssh_interval")]
    pub interval: PromDuration,
    /// Time allowed for TCP connect, SSH handshake and authentication. Default `5s`.
    #[serde(default = "default_ssh_connect_timeout")]
    pub connect_timeout: PromDuration,
    /// Time allowed for running the remote command. Default `10s`.
    #[serde(default = "default_ssh_command_timeout")]
    pub command_timeout: PromDuration,
    /// Data older than this is no longer exported. Default: three times `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<PromDuration>,
}

impl SshTarget {
    /// `max_age`, or its default of three intervals.
    pub fn effective_max_age(&self) -> std::time::Duration {
        self.max_age.map_or(self.interval.0 * 3, |d| d.0)
    }
}

fn default_ssh_port() -> Port {
    Port(22)
}
fn default_ssh_interval() -> PromDuration {
    PromDuration(std::time::Duration::from_secs(30))
}
fn default_ssh_connect_timeout() -> PromDuration {
    PromDuration(std::time::Duration::from_secs(5))
}
fn default_ssh_command_timeout() -> PromDuration {
    PromDuration(std::time::Duration::from_secs(10))
}

/// Process groups.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// Mount point of procfs. Default `/proc`.
    pub proc_path: PathBuf,
    /// Matchers, first match wins.
    pub groups: Vec<ProcessGroup>,
    /// Groups that are expected to exist; exported with `num_procs` 0 when absent.
    pub watch: Vec<String>,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            proc_path: PathBuf::from("/proc"),
            groups: Vec::new(),
            watch: Vec::new(),
        }
    }
}

/// One process matcher with a group name template.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProcessGroup {
    /// Group name template: `{comm}`, `{exe_base}`, `{user}` or named captures.
    pub name: String,
    /// Regexes on the command name.
    #[serde(default)]
    pub comm: Vec<String>,
    /// Regexes on the executable path.
    #[serde(default)]
    pub exe: Vec<String>,
    /// Regexes on the command line.
    #[serde(default)]
    pub cmdline: Vec<String>,
}

/// Log sources.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Directory for read positions and counters. Default `/var/lib/vitals`.
    pub state_dir: PathBuf,
    /// How often files are checked for new lines. Default `250ms`.
    pub poll_interval: PromDuration,
    /// How often positions and counters are saved. Default `1s`.
    pub checkpoint_interval: PromDuration,
    /// Live error/warning patterns per source; more are counted as `other`. Default 100.
    pub pattern_budget: usize,
    /// How long a pattern without new lines keeps its series. Default `1h`.
    pub pattern_idle_timeout: PromDuration,
    /// Source addresses with their own `log_ssh_auth_failures_by_ip_total` series per
    /// source; more are counted as `other`. Default 100.
    pub ip_budget: usize,
    /// Files and journald filters to read.
    pub sources: Vec<LogSource>,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/vitals"),
            poll_interval: PromDuration(std::time::Duration::from_millis(250)),
            checkpoint_interval: PromDuration(std::time::Duration::from_secs(1)),
            pattern_budget: 100,
            pattern_idle_timeout: PromDuration(std::time::Duration::from_secs(3600)),
            ip_budget: 100,
            sources: Vec::new(),
        }
    }
}

/// Where to start in a file met for the first time with no saved position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// Only lines written from now on (as `tail -F`).
    #[default]
    End,
    /// The whole existing content.
    Beginning,
}

fn default_max_line_bytes() -> usize {
    65536
}

/// One log source: a file (or glob) or a journald filter.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSource {
    /// Source name, used as the `source` label.
    pub name: String,
    /// File path or glob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// journald filter, instead of a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journald: Option<JournaldFilter>,
    /// Parser name (postgresql, syslog, journald, apache_error, ...).
    pub parser: String,
    /// For `parser: regex`: a regex with a `message` capture (and optional `level`, `program`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Where to start in files present at the first start. Default `end`.
    #[serde(default)]
    pub start_at: StartAt,
    /// Longer lines are truncated (and counted). Default 65536.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Extra labels on this source's series.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Which journal entries a journald source reads.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JournaldFilter {
    /// systemd units, e.g. `ssh.service`.
    pub units: Vec<String>,
    /// Syslog identifiers.
    pub identifiers: Vec<String>,
}

/// Settings of the sidecar role.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SidecarConfig {
    /// The Prometheus-compatible query API to read series from.
    pub prometheus: PrometheusEndpoint,
    /// Alertmanagers that receive every alert.
    pub alertmanagers: Vec<AlertmanagerEndpoint>,
    /// Evaluation interval. Default `1m`.
    pub interval: PromDuration,
    /// Step of the range queries: the grid of points the detector, baselines and forecasts
    /// see. Default `5m`; memory per series grows with `history / resolution`.
    pub resolution: PromDuration,
    /// History loaded when a signal starts and kept per series; the longest baseline window.
    /// Default `30d`.
    pub history: PromDuration,
    /// Baselines end this long before the newest point, so that an ongoing anomaly does not
    /// pull its own baseline towards it. Default `1h`.
    pub baseline_offset: PromDuration,
    /// Points a series needs before it may raise an anomaly. Default `48`.
    pub min_samples: u32,
    /// Series kept per signal; more are dropped and counted. Default `1000`.
    pub max_series_per_signal: u32,
    /// Whether the shipped default signals are evaluated. Default `true`.
    pub default_signals: bool,
    /// Trend forecasts.
    pub forecast: ForecastConfig,
    /// Signals added to the shipped defaults.
    pub signals: Vec<Signal>,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        let d = |s: u64| PromDuration(std::time::Duration::from_secs(s));
        Self {
            prometheus: PrometheusEndpoint::default(),
            alertmanagers: Vec::new(),
            interval: d(60),
            resolution: d(300),
            history: d(30 * 86_400),
            baseline_offset: d(3600),
            min_samples: 48,
            max_series_per_signal: 1000,
            default_signals: true,
            forecast: ForecastConfig::default(),
            signals: Vec::new(),
        }
    }
}

/// Settings of the least-squares trend forecasts.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastConfig {
    /// Points of the last `window` are fitted. Default `6h`.
    pub window: PromDuration,
    /// Forecasts whose fit explains less than this share of the variance are not reported.
    /// Default `0.8`.
    pub min_r_squared: f64,
    /// Times to threshold further away than this are not reported. Default `30d`.
    pub horizon: PromDuration,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            window: PromDuration(std::time::Duration::from_secs(6 * 3600)),
            min_r_squared: 0.8,
            horizon: PromDuration(std::time::Duration::from_secs(30 * 86_400)),
        }
    }
}

/// A Prometheus-compatible HTTP API.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrometheusEndpoint {
    /// Base URL, including any path prefix (Thanos, Mimir).
    pub url: String,
}

impl Default for PrometheusEndpoint {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9090".into(),
        }
    }
}

/// An Alertmanager API endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerEndpoint {
    /// Base URL.
    pub url: String,
}

/// Which way a signal gets worse.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher values are bad (latency, errors).
    #[default]
    HigherIsWorse,
    /// Lower values are bad (free space, cache hit ratio).
    LowerIsWorse,
    /// Any deviation is bad.
    Both,
}

/// A PromQL expression the sidecar watches.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    /// Signal name, used as the `signal` label.
    pub name: String,
    /// Health domain, used as the `domain` label.
    pub domain: String,
    /// PromQL expression.
    pub expr: String,
    /// Which way is worse.
    #[serde(default)]
    pub direction: Direction,
    /// Capacity threshold: forecasts report the time until the signal reaches it.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// No anomaly is raised while the traffic behind the signal is below a minimum.
    #[serde(default)]
    pub min_traffic: Option<MinTraffic>,
}

/// A minimum-traffic guard: ratios over a handful of requests are noise, not anomalies.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MinTraffic {
    /// PromQL giving the traffic (e.g. requests per second); its series apply to the signal's
    /// series whose labels include all of theirs.
    pub expr: String,
    /// Traffic below this value mutes the signal's anomalies.
    pub min: f64,
}

impl Config {
    /// Parses and validates YAML text. `file` names the source in errors; relative file
    /// references are resolved against `base_dir`.
    pub fn parse(text: &str, file: &str, base_dir: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            Config::default()
        } else {
            let de = serde_norway::Deserializer::from_str(text);
            serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
                let key = e.path().to_string();
                let inner = e.into_inner();
                ConfigError::Invalid {
                    file: file.to_string(),
                    position: inner.location().map(|l| Position {
                        line: l.line(),
                        column: l.column(),
                    }),
                    key: if key == "." { String::new() } else { key },
                    reason: error::bare_reason(&inner.to_string()),
                }
            })?
        };
        config.resolve_paths(base_dir);
        if let Some(p) = config.validate().into_iter().next() {
            return Err(ConfigError::Invalid {
                file: file.to_string(),
                position: None,
                key: p.key,
                reason: p.reason,
            });
        }
        Ok(config)
    }

    fn resolve_paths(&mut self, base: Option<&Path>) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p.as_mut() {
                *path = types::resolve_relative(base, path);
            }
        };
        for t in &mut self.exporter.postgres.targets {
            fix(&mut t.password_file);
            fix(&mut t.sslrootcert);
        }
        for t in &mut self.exporter.ssh_disk.targets {
            fix(&mut t.key_file);
            fix(&mut t.password_file);
            fix(&mut t.known_hosts);
            fix(&mut t.passphrase_file);
        }
    }

    /// Checks what single values cannot: unique names, exclusive keys, readable files.
    /// Returns every problem found, in file order.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let e = &self.exporter;
        if e.scrape_timeout_offset >= e.scrape_timeout {
            problems.push(Problem::new(
                "exporter.scrape_timeout_offset",
                "must be shorter than exporter.scrape_timeout",
            ));
        }
        if !(2..=10000).contains(&e.postgres.max_connections) {
            problems.push(Problem::new(
                "exporter.postgres.max_connections",
                format!(
                    "must be between 2 and 10000, got {}",
                    e.postgres.max_connections
                ),
            ));
        }
        let pg = "exporter.postgres.targets";
        unique_names(
            pg,
            e.postgres.targets.iter().map(|t| &t.name),
            &mut problems,
        );
        for (i, t) in e.postgres.targets.iter().enumerate() {
            let key = format!("{pg}[{i}]");
            if t.password.is_some() && t.password_file.is_some() {
                problems.push(Problem::new(
                    format!("{key}.password_file"),
                    "set either password or password_file, not both",
                ));
            }
            readable(
                &key,
                "password_file",
                t.password_file.as_deref(),
                &mut problems,
            );
            readable(&key, "sslrootcert", t.sslrootcert.as_deref(), &mut problems);
            if matches!(t.sslmode, SslMode::VerifyCa | SslMode::VerifyFull)
                && t.sslrootcert.is_none()
            {
                problems.push(Problem::new(
                    format!("{key}.sslrootcert"),
                    "required when sslmode is verify-ca or verify-full",
                ));
            }
            label_names(&key, &t.labels, &mut problems);
            if !(2..=1000).contains(&t.max_connections) {
                problems.push(Problem::new(
                    format!("{key}.max_connections"),
                    format!("must be between 2 and 1000, got {}", t.max_connections),
                ));
            }
            if t.dbname.trim().is_empty() {
                problems.push(Problem::new(format!("{key}.dbname"), "must not be empty"));
            }
            if t.host.split(',').all(|h| h.trim().is_empty()) {
                problems.push(Problem::new(format!("{key}.host"), "must not be empty"));
            }
            for (field, d) in [
                ("connect_timeout", t.connect_timeout),
                ("statement_timeout", t.statement_timeout),
                ("lock_timeout", t.lock_timeout),
                ("size_refresh_interval", t.size_refresh_interval),
            ] {
                if d.0 < std::time::Duration::from_millis(1) {
                    problems.push(Problem::new(
                        format!("{key}.{field}"),
                        "must be at least 1ms",
                    ));
                }
            }
            for reserved in ["target", "datname"] {
                if t.labels.contains_key(reserved) {
                    problems.push(Problem::new(
                        format!("{key}.labels.{reserved}"),
                        "reserved label name: vitals sets it",
                    ));
                }
            }
        }
        let ssh = "exporter.ssh_disk.targets";
        unique_names(
            ssh,
            e.ssh_disk.targets.iter().map(|t| &t.name),
            &mut problems,
        );
        for (i, t) in e.ssh_disk.targets.iter().enumerate() {
            let key = format!("{ssh}[{i}]");
            match (&t.key_file, &t.password_file) {
                (None, None) => problems.push(Problem::new(
                    format!("{key}.key_file"),
                    "set key_file or password_file",
                )),
                (Some(_), Some(_)) => problems.push(Problem::new(
                    format!("{key}.password_file"),
                    "set either key_file or password_file, not both",
                )),
                _ => {}
            }
            readable(&key, "key_file", t.key_file.as_deref(), &mut problems);
            readable(
                &key,
                "password_file",
                t.password_file.as_deref(),
                &mut problems,
            );
            ssh_target_problems(&key, t, &mut problems);
        }
        if e.ssh_disk.concurrency == 0 {
            problems.push(Problem::new(
                "exporter.ssh_disk.concurrency",
                "must be at least 1",
            ));
        }
        for (i, g) in e.process.groups.iter().enumerate() {
            if g.comm.is_empty() && g.exe.is_empty() && g.cmdline.is_empty() {
                problems.push(Problem::new(
                    format!("exporter.process.groups[{i}]"),
                    "needs at least one of comm, exe or cmdline",
                ));
            }
        }
        if let Err((key, reason)) = crate::exporter::process::matcher::Matchers::compile(&e.process)
        {
            problems.push(Problem::new(key, reason));
        }
        let logs = "exporter.logs.sources";
        unique_names(logs, e.logs.sources.iter().map(|s| &s.name), &mut problems);
        for (i, s) in e.logs.sources.iter().enumerate() {
            if s.path.is_some() == s.journald.is_some() {
                problems.push(Problem::new(
                    format!("{logs}[{i}]"),
                    "set exactly one of path or journald",
                ));
            }
            label_names(&format!("{logs}[{i}]"), &s.labels, &mut problems);
            let key = format!("{logs}[{i}]");
            let known =
                crate::exporter::logs::parsers::ParserKind::NAMES.contains(&s.parser.as_str());
            if !known {
                problems.push(Problem::new(
                    format!("{key}.parser"),
                    format!(
                        "unknown parser {:?} (one of {})",
                        s.parser,
                        crate::exporter::logs::parsers::ParserKind::NAMES.join(", ")
                    ),
                ));
            }
            match (s.parser.as_str(), &s.regex) {
                ("regex", None) => problems.push(Problem::new(
                    format!("{key}.regex"),
                    "required with parser: regex",
                )),
                ("regex", Some(re)) => {
                    if let Err(e) = crate::exporter::logs::parsers::RegexParser::new(re) {
                        problems.push(Problem::new(format!("{key}.regex"), e));
                    }
                }
                (_, Some(_)) => problems.push(Problem::new(
                    format!("{key}.regex"),
                    "only used with parser: regex",
                )),
                _ => {}
            }
            if s.journald.is_some() && s.parser != "journald" {
                problems.push(Problem::new(
                    format!("{key}.parser"),
                    "journald sources use parser: journald",
                ));
            }
            if s.max_line_bytes < 256 {
                problems.push(Problem::new(
                    format!("{key}.max_line_bytes"),
                    "must be at least 256",
                ));
            }
        }
        if e.logs
            .sources
            .iter()
            .any(|s| s.name.contains(['/', '\\']) || s.name.starts_with('.'))
        {
            problems.push(Problem::new(
                logs,
                "source names are used as state file names: no '/', no leading '.'",
            ));
        }
        let sig = "sidecar.signals";
        unique_names(
            sig,
            self.sidecar.signals.iter().map(|s| &s.name),
            &mut problems,
        );
        sidecar_problems(&self.sidecar, &mut problems);
        problems
    }
}

/// Checks of the sidecar's timing keys and signals.
fn sidecar_problems(sc: &SidecarConfig, problems: &mut Vec<Problem>) {
    use std::time::Duration;
    let mut push = |key: String, reason: &str| problems.push(Problem::new(key, reason));
    if sc.interval.0 < Duration::from_secs(1) {
        push("sidecar.interval".into(), "must be at least 1s");
    }
    if sc.resolution.0 < Duration::from_secs(1) {
        push("sidecar.resolution".into(), "must be at least 1s");
    }
    if sc.history.0 < sc.resolution.0 * 2 {
        push(
            "sidecar.history".into(),
            "must cover at least two resolution steps",
        );
    } else if sc.history.0.as_secs() / sc.resolution.0.as_secs().max(1) > 1_000_000 {
        push(
            "sidecar.history".into(),
            "history / resolution must not exceed 1000000 points per series",
        );
    }
    if sc.baseline_offset.0 >= sc.history.0 {
        push(
            "sidecar.baseline_offset".into(),
            "must be shorter than sidecar.history",
        );
    }
    if sc.max_series_per_signal == 0 {
        push("sidecar.max_series_per_signal".into(), "must be at least 1");
    }
    if !(0.0..=1.0).contains(&sc.forecast.min_r_squared) {
        push(
            "sidecar.forecast.min_r_squared".into(),
            "must be between 0 and 1",
        );
    }
    if sc.forecast.window.0 < sc.resolution.0 * 3 {
        push(
            "sidecar.forecast.window".into(),
            "must cover at least three resolution steps",
        );
    }
    for (i, s) in sc.signals.iter().enumerate() {
        let key = |f: &str| format!("sidecar.signals[{i}].{f}");
        if s.name.is_empty() {
            push(key("name"), "must not be empty");
        }
        if s.domain.is_empty()
            || !s
                .domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            push(
                key("domain"),
                "must be a non-empty word of letters, digits and '_'",
            );
        }
        if s.expr.trim().is_empty() {
            push(key("expr"), "must not be empty");
        }
        if s.threshold.is_some_and(|t| !t.is_finite()) {
            push(key("threshold"), "must be a finite number");
        }
        if let Some(m) = &s.min_traffic {
            if m.expr.trim().is_empty() {
                push(key("min_traffic.expr"), "must not be empty");
            }
            if !m.min.is_finite() {
                push(key("min_traffic.min"), "must be a finite number");
            }
        }
    }
}

/// Cross-field checks of one SSH target: host keys are always verified, and the timing keys
/// must make sense together.
fn ssh_target_problems(key: &str, t: &SshTarget, problems: &mut Vec<Problem>) {
    let mut push = |field: &str, reason: &str| {
        problems.push(Problem::new(format!("{key}.{field}"), reason));
    };
    if t.known_hosts.is_none() && t.host_key_fingerprint.is_none() {
        push(
            "known_hosts",
            "set known_hosts or host_key_fingerprint: host keys are always verified",
        );
    }
    if t.trust_on_first_use && t.known_hosts.is_none() {
        push(
            "trust_on_first_use",
            "needs known_hosts to write the learned key to",
        );
    }
    if t.passphrase_file.is_some() && t.key_file.is_none() {
        push("passphrase_file", "only used with key_file");
    }
    if let Some(p) = t.passphrase_file.as_deref()
        && let Err(reason) = types::check_readable(p)
    {
        push("passphrase_file", &reason);
    }
    if let Some(p) = t.known_hosts.as_deref() {
        // With trust on first use the file may not exist yet; its directory must.
        let missing_ok = t.trust_on_first_use && !p.exists();
        if missing_ok {
            if !p.parent().is_some_and(Path::is_dir) {
                push("known_hosts", "its directory does not exist");
            }
        } else if let Err(reason) = types::check_readable(p) {
            push("known_hosts", &reason);
        }
    }
    let second = std::time::Duration::from_secs(1);
    if t.interval.0 < second {
        push("interval", "must be at least 1s");
    }
    if t.connect_timeout.0.is_zero() {
        push("connect_timeout", "must be more than 0s");
    }
    if t.command_timeout.0.is_zero() {
        push("command_timeout", "must be more than 0s");
    }
    if t.max_age.is_some_and(|m| m < t.interval) {
        push("max_age", "must be at least interval");
    }
}

fn unique_names<'a>(
    list: &str,
    names: impl Iterator<Item = &'a String>,
    problems: &mut Vec<Problem>,
) {
    let mut seen = BTreeSet::new();
    for (i, name) in names.enumerate() {
        if name.trim().is_empty() {
            problems.push(Problem::new(
                format!("{list}[{i}].name"),
                "must not be empty",
            ));
        } else if !seen.insert(name.as_str()) {
            problems.push(Problem::new(
                format!("{list}[{i}].name"),
                format!("duplicate name {name:?}"),
            ));
        }
    }
}

fn readable(key: &str, field: &str, path: Option<&Path>, problems: &mut Vec<Problem>) {
    if let Some(p) = path
        && let Err(reason) = types::check_readable(p)
    {
        problems.push(Problem::new(format!("{key}.{field}"), reason));
    }
}

/// Label names must follow Prometheus' rules and must not clash with reserved ones.
fn label_names(key: &str, labels: &BTreeMap<String, String>, problems: &mut Vec<Problem>) {
    for name in labels.keys() {
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with("__");
        if !valid {
            problems.push(Problem::new(
                format!("{key}.labels.{name}"),
                "invalid label name (want [a-zA-Z_][a-zA-Z0-9_]*, not starting with __)",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "vitals.yml", None)
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn embedded_default_is_valid() {
        ConfigSource::Embedded
            .load()
            .expect("embedded default must load");
    }

    #[test]
    fn postgres_global_connection_limit_is_checked() {
        let c =
            Config::parse("exporter:\n  postgres:\n    targets: []\n", "x", None).expect("valid");
        assert_eq!(
            c.exporter.postgres.max_connections,
            DEFAULT_PG_GLOBAL_MAX_CONNECTIONS
        );
        let msg = err("exporter:\n  postgres:\n    max_connections: 1\n");
        assert!(
            msg.contains("exporter.postgres.max_connections: must be between 2 and 10000, got 1"),
            "{msg}"
        );
    }

    #[test]
    fn empty_and_comment_only_files_are_defaults() {
        assert_eq!(Config::parse("", "x", None).ok(), Some(Config::default()));
        assert_eq!(
            Config::parse("# nothing\n", "x", None).ok(),
            Some(Config::default())
        );
        assert_eq!(Config::parse("{}", "x", None).ok(), Some(Config::default()));
    }

    #[test]
    fn port_out_of_range_names_file_position_key() {
        let text = "exporter:\n  postgres:\n    targets:\n      - name: a\n      - name: b\n        port: 70000\n";
        let msg = err(text);
        assert!(
            msg.starts_with("vitals.yml:5:"),
            "position missing or wrong: {msg}"
        );
        assert!(
            msg.contains("exporter.postgres.targets[1].port: expected a number 1-65535"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let msg = err("exporter:\n  postgres:\n    targets:\n      - name: a\n        prot: 1\n");
        assert!(
            msg.starts_with(
                "vitals.yml:5:9: exporter.postgres.targets[0].prot: unknown field `prot`"
            ),
            "{msg}"
        );
        let msg = err("exportr: {}\n");
        assert!(msg.contains("exportr: unknown field `exportr`"), "{msg}");
    }

    #[test]
    fn bad_duration_is_rejected() {
        let msg = err("exporter:\n  scrape_timeout: 10\n");
        assert!(
            msg.contains("exporter.scrape_timeout: expected a duration"),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_names_and_exclusive_keys() {
        let msg = err("exporter:\n  postgres:\n    targets:\n      - name: a\n      - name: a\n");
        assert_eq!(
            msg,
            "vitals.yml: exporter.postgres.targets[1].name: duplicate name \"a\""
        );
        let msg =
            err("exporter:\n  ssh_disk:\n    targets:\n      - {name: a, host: h, user: u}\n");
        assert!(
            msg.contains("targets[0].key_file: set key_file or password_file"),
            "{msg}"
        );
    }

    #[test]
    fn ssh_target_keys_are_checked() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        let key = dir.join("id");
        std::fs::write(&key, "k").expect("write key");
        let kh = dir.join("known_hosts");
        std::fs::write(&kh, "").expect("write known_hosts");
        let target = |extra: &str| {
            format!(
                "exporter:\n  ssh_disk:\n    targets:\n      - name: a\n        host: h\n        user: u\n        key_file: {}\n{extra}",
                key.display()
            )
        };
        let msg = err(&target(""));
        assert!(
            msg.contains("targets[0].known_hosts: set known_hosts or host_key_fingerprint"),
            "{msg}"
        );
        let msg = err(&target("        host_key_fingerprint: MD5:ab:cd\n"));
        assert!(msg.starts_with("vitals.yml:4:"), "position: {msg}");
        assert!(
            msg.contains("host_key_fingerprint: expected SHA256:"),
            "{msg}"
        );
        let fp = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8";
        let ok = Config::parse(
            &target(&format!("        host_key_fingerprint: {fp}\n")),
            "vitals.yml",
            None,
        )
        .expect("a pinned fingerprint is enough");
        let t = &ok.exporter.ssh_disk.targets[0];
        assert_eq!(t.interval.0, std::time::Duration::from_secs(30));
        assert_eq!(t.effective_max_age(), std::time::Duration::from_secs(90));
        assert_eq!(ok.exporter.ssh_disk.concurrency, 16);
        let msg = err(&target(&format!(
            "        host_key_fingerprint: {fp}\n        trust_on_first_use: true\n"
        )));
        assert!(
            msg.contains("trust_on_first_use: needs known_hosts"),
            "{msg}"
        );
        let msg = err(&target(&format!(
            "        known_hosts: {}\n        interval: 10s\n        max_age: 5s\n",
            kh.display()
        )));
        assert!(msg.contains("max_age: must be at least interval"), "{msg}");
        let msg = err(&target(&format!(
            "        known_hosts: {}\n        passphrase_file: /nonexistent/pp\n",
            kh.display()
        )));
        assert!(
            msg.contains("passphrase_file: cannot read /nonexistent/pp"),
            "{msg}"
        );
        // A known_hosts file that does not exist yet is fine with trust on first use.
        Config::parse(
            &target(&format!(
                "        known_hosts: {}\n        trust_on_first_use: true\n",
                dir.join("new_known_hosts").display()
            )),
            "vitals.yml",
            None,
        )
        .expect("known_hosts is created on first use");
        let msg = err("exporter:\n  ssh_disk:\n    fs_types_exclude: '(('\n");
        assert!(msg.starts_with("vitals.yml:3:"), "position: {msg}");
        assert!(msg.contains("fs_types_exclude: invalid regex"), "{msg}");
        let msg = err("exporter:\n  ssh_disk:\n    concurrency: 0\n");
        assert!(msg.contains("concurrency: must be at least 1"), "{msg}");
    }

    #[test]
    fn missing_secret_file_is_named_without_content() {
        let msg = err(
            "exporter:\n  postgres:\n    targets:\n      - name: a\n        password_file: /nonexistent/pg.pass\n",
        );
        assert!(
            msg.contains("targets[0].password_file: cannot read /nonexistent/pg.pass"),
            "{msg}"
        );
    }

    #[test]
    fn env_secret_is_expanded_and_hidden() {
        // SAFETY of the test: a variable name used by no other test.
        let text = "exporter:\n  postgres:\n    targets:\n      - name: a\n        password: ${VITALS_TEST_UNSET_VARIABLE_X}\n";
        let msg = err(text);
        assert!(
            msg.contains("VITALS_TEST_UNSET_VARIABLE_X is not set"),
            "{msg}"
        );
    }

    #[test]
    fn relative_paths_resolve_against_config_dir() {
        let dir = std::env::temp_dir();
        let file = dir.join("vitals-config-test-pass");
        std::fs::write(&file, "pw\n").expect("write temp file");
        let text = "exporter:\n  postgres:\n    targets:\n      - name: a\n        password_file: vitals-config-test-pass\n";
        let c = Config::parse(text, "x", Some(&dir)).expect("valid");
        assert_eq!(
            c.exporter.postgres.targets[0].password_file.as_deref(),
            Some(file.as_path())
        );
        let _ = std::fs::remove_file(file);
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    /// A config with every list non-empty and every optional key set, so that serializing it
    /// shows every key there is.
    fn full() -> Config {
        let secret: Secret = serde_norway::from_str("x").expect("secret");
        let mut c = Config::default();
        c.exporter.postgres.targets.push(PostgresTarget {
            name: "a".into(),
            host: default_pg_host(),
            port: default_pg_port(),
            user: default_pg_user(),
            password: Some(secret),
            password_file: Some("p".into()),
            sslmode: SslMode::Prefer,
            sslrootcert: Some("ca".into()),
            databases: default_pg_databases(),
            exclude: vec!["x".into()],
            labels: BTreeMap::from([("k".into(), "v".into())]),
            dbname: default_pg_dbname(),
            connect_timeout: default_pg_connect_timeout(),
            statement_timeout: default_pg_statement_timeout(),
            lock_timeout: default_pg_lock_timeout(),
            max_connections: default_pg_max_connections(),
            size_refresh_interval: default_pg_size_refresh_interval(),
            tables_top_n: default_pg_tables_top_n(),
            tables_refresh_interval: default_pg_tables_refresh_interval(),
            pg_stat_statements: true,
            statements_top_n: default_pg_statements_top_n(),
        });
        c.exporter.ssh_disk.targets.push(SshTarget {
            name: "s".into(),
            host: "h".into(),
            port: default_ssh_port(),
            user: "u".into(),
            key_file: Some("k".into()),
            password_file: Some("p".into()),
            known_hosts: Some("kh".into()),
            passphrase_file: Some("pp".into()),
            host_key_fingerprint: Some("SHA256:x".into()),
            trust_on_first_use: true,
            interval: default_ssh_interval(),
            connect_timeout: default_ssh_connect_timeout(),
            command_timeout: default_ssh_command_timeout(),
            max_age: Some(default_ssh_interval()),
        });
        c.exporter.process.groups.push(ProcessGroup {
            name: "{comm}".into(),
            comm: vec!["a".into()],
            exe: vec!["b".into()],
            cmdline: vec!["c".into()],
        });
        c.exporter.process.watch.push("postgres".into());
        c.exporter.logs.sources.push(LogSource {
            name: "l".into(),
            path: Some("/var/log/x".into()),
            journald: Some(JournaldFilter {
                units: vec!["u".into()],
                identifiers: vec!["i".into()],
            }),
            parser: "syslog".into(),
            regex: Some("(?P<message>.*)".into()),
            start_at: StartAt::End,
            max_line_bytes: 65536,
            labels: BTreeMap::from([("k".into(), "v".into())]),
        });
        c.sidecar
            .alertmanagers
            .push(AlertmanagerEndpoint { url: "u".into() });
        c.sidecar.signals.push(Signal {
            name: "n".into(),
            domain: "d".into(),
            expr: "up".into(),
            direction: Direction::Both,
            threshold: Some(0.9),
            min_traffic: Some(MinTraffic {
                expr: "rate(x[5m])".into(),
                min: 1.0,
            }),
        });
        c
    }

    fn keys(prefix: &str, v: &serde_norway::Value, out: &mut BTreeSet<String>) {
        match v {
            serde_norway::Value::Mapping(m) => {
                for (k, child) in m {
                    let Some(k) = k.as_str() else { continue };
                    let path = if prefix.is_empty() {
                        k.to_string()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    // Free-form maps (labels) document the map, not their entries.
                    if path.ends_with(".labels") {
                        out.insert(path);
                        continue;
                    }
                    out.insert(path.clone());
                    keys(&path, child, out);
                }
            }
            serde_norway::Value::Sequence(s) => {
                for child in s {
                    keys(&format!("{prefix}[]"), child, out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../../docs/configuration.md");
        let value = serde_norway::to_value(full()).expect("serialize");
        let mut all = BTreeSet::new();
        keys("", &value, &mut all);
        all.retain(|k| k.contains('.'));
        let missing: Vec<_> = all
            .iter()
            .filter(|k| !doc.contains(&format!("`{k}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "undocumented keys in docs/configuration.md: {missing:?}"
        );
        assert!(all.len() > 40, "the walk found too few keys: {all:?}");
    }
}
