//! The configuration file: serde structs in the shape of DESIGN.md §7, parsing with
//! positions in errors, secrets from files or the environment, and validation.
//!
//! Every struct denies unknown keys, so a typo is an error that names the file, the line and
//! the key instead of a setting that silently does nothing.

mod error;
#[cfg(test)]
mod range_tests;
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
    /// How often files are checked for new lines when inotify is off or unavailable.
    /// Default `250ms`.
    pub poll_interval: PromDuration,
    /// Wake the file readers on inotify events (modify, create, move, delete in the watched
    /// directories) instead of polling. Default `true`; falls back to polling at
    /// `poll_interval` when inotify cannot be used (limits exhausted, a glob in a directory
    /// component). Turn off for files on network filesystems, whose remote changes inotify
    /// does not see.
    pub inotify: bool,
    /// With inotify, files are still checked this often, as a safety net for missed events.
    /// Default `2s`.
    pub inotify_rescan_interval: PromDuration,
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
            inotify: true,
            inotify_rescan_interval: PromDuration(std::time::Duration::from_secs(2)),
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
    /// A journal directory to read (`journalctl --directory`) instead of the local system
    /// journal, e.g. journals collected from other hosts or a namespace's directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<PathBuf>,
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
    /// The newest part of `history` kept at `resolution`; the older part is loaded at
    /// `history_coarse_step` when a signal starts (one point standing for a whole coarse step
    /// in the baselines). The first cycle asks only the newest day of it at `resolution` and
    /// the next cycles fill in the rest, so that a start costs about an eighth of a full
    /// load. New points always come at `resolution`, so the coarse part ages out. Must cover
    /// the 7-day baseline plus `baseline_offset` and the forecast window. Default `8d`.
    pub history_full_resolution: PromDuration,
    /// Step at which the history older than `history_full_resolution` is loaded: a multiple
    /// of `resolution`, at most `1h` (so every hour of the week keeps a point from every
    /// week). Equal to `resolution`, the whole history is loaded at full resolution.
    /// Default `1h`.
    pub history_coarse_step: PromDuration,
    /// Baselines end this long before the newest point, so that an ongoing anomaly does not
    /// pull its own baseline towards it. Default `1h`.
    pub baseline_offset: PromDuration,
    /// Each cycle asks again for at least this stretch before the newest grid point and
    /// merges the answer by timestamp: servers hide or falsify their newest points for a
    /// while (VictoriaMetrics' `-search.latencyOffset`, 30 s by default) and remote-write
    /// senders deliver late. Default `2m`.
    pub query_overlap: PromDuration,
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
    /// Whether the shipped default recommendation rules are evaluated. Default `true`.
    pub default_recommendations: bool,
    /// Active findings kept per recommendation rule; more are dropped and counted.
    /// Default `100`.
    pub max_findings_per_recommendation: u32,
    /// Recommendation rules added to the shipped defaults; a rule with a default's `id` or
    /// `title` replaces it.
    pub recommendations: Vec<Recommendation>,
    /// Whether the shipped default SLOs are evaluated. Default `true`.
    pub default_slos: bool,
    /// Service level objectives, in Sloth's prometheus/v1 SLO format plus vitals' keys,
    /// added to the shipped defaults (an SLO with a default's name replaces it).
    pub slos: Vec<Slo>,
    /// How often firing alerts are re-sent to Alertmanager (resolved ones are repeated as
    /// often for 15 minutes). Default `1m`.
    pub alert_resend_delay: PromDuration,
    /// The persisted queue of alert notifications not yet accepted by every Alertmanager.
    pub alert_queue: AlertQueueConfig,
    /// Labels added to every alert (an alert's own label of the same name wins), e.g.
    /// `cluster`, as Prometheus' `external_labels`.
    pub external_labels: BTreeMap<String, String>,
    /// Base URL of the Grafana that has vitals' dashboards: alerts and the landing page link
    /// to the event-snapshot dashboard around each event. Default none (no links).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grafana_url: Option<String>,
}

/// Where and how much of the alert delivery queue is kept.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertQueueConfig {
    /// The queue file (JSON, written atomically). Default: `$STATE_DIRECTORY` (systemd),
    /// else `/var/lib/vitals` when writable, else `$XDG_STATE_HOME/vitals` or
    /// `~/.local/state/vitals`; file name `sidecar-alerts.json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Most notifications (distinct alerts) queued; beyond it the oldest is dropped and
    /// counted. Default `10000`.
    pub max_alerts: u32,
}

impl Default for AlertQueueConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_alerts: 10_000,
        }
    }
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
            history_full_resolution: d(8 * 86_400),
            history_coarse_step: d(3600),
            baseline_offset: d(3600),
            query_overlap: d(120),
            min_samples: 48,
            max_series_per_signal: 1000,
            default_signals: true,
            forecast: ForecastConfig::default(),
            signals: Vec::new(),
            default_recommendations: true,
            max_findings_per_recommendation: 100,
            recommendations: Vec::new(),
            default_slos: true,
            slos: Vec::new(),
            alert_resend_delay: d(60),
            alert_queue: AlertQueueConfig::default(),
            external_labels: BTreeMap::new(),
            grafana_url: None,
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

/// A Prometheus-compatible HTTP query API: Prometheus, Thanos, Mimir or VictoriaMetrics.
pub type PrometheusEndpoint = HttpEndpoint;

/// An Alertmanager API endpoint (same keys as the Prometheus endpoint).
pub type AlertmanagerEndpoint = HttpEndpoint;

/// An HTTP API vitals calls, and how: the keys of Prometheus' own `http_config` where they
/// exist. One type for the Prometheus query API and the Alertmanager API, so that both take
/// the same authentication, TLS and header settings (and errors keep exact key positions,
/// which `#[serde(flatten)]` would lose).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpEndpoint {
    /// Base URL, including any path prefix (Thanos, Mimir `/prometheus`, VictoriaMetrics
    /// `/prometheus` or `/select/0/prometheus`); the clients append the API paths.
    pub url: String,
    /// Time allowed for one request, from connecting to the last byte of the answer.
    /// Default `30s`.
    #[serde(default = "default_http_timeout")]
    pub timeout: PromDuration,
    /// Further attempts after a connection error, a timeout, HTTP 429 or a 5xx answer (never
    /// after another 4xx, such as a bad query). Default 2.
    #[serde(default = "default_http_retries")]
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one, with random jitter
    /// (x0.5 to x1.5). Default `500ms`.
    #[serde(default = "default_http_retry_backoff")]
    pub retry_backoff: PromDuration,
    /// HTTP basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// An `Authorization: <type> <credentials>` header, e.g. a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    /// TLS settings for `https://` URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<TlsClientConfig>,
    /// Extra request headers, e.g. `X-Scope-OrgID` for Mimir or Cortex tenants.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl HttpEndpoint {
    /// An endpoint at `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: default_http_timeout(),
            retries: default_http_retries(),
            retry_backoff: default_http_retry_backoff(),
            basic_auth: None,
            authorization: None,
            tls_config: None,
            headers: BTreeMap::new(),
        }
    }
}

impl Default for HttpEndpoint {
    /// A local Prometheus, `http://127.0.0.1:9090`.
    fn default() -> Self {
        Self::new("http://127.0.0.1:9090")
    }
}

fn default_http_timeout() -> PromDuration {
    PromDuration(std::time::Duration::from_secs(30))
}
fn default_http_retries() -> u32 {
    2
}
fn default_http_retry_backoff() -> PromDuration {
    PromDuration(std::time::Duration::from_millis(500))
}

/// HTTP basic authentication; the password comes from a file or `${ENV}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password, inline or as `${ENV_VAR}`; prefer `password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// File holding the password (one line), read for every request so rotation works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

/// An `Authorization` header with a type and credentials from a file or `${ENV}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// The scheme. Default `Bearer`.
    #[serde(rename = "type", default = "default_authorization_type")]
    pub kind: String,
    /// Credentials, inline or as `${ENV_VAR}`; prefer `credentials_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Secret>,
    /// File holding the credentials (one line), read for every request so that rotated
    /// tokens are picked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
}

fn default_authorization_type() -> String {
    "Bearer".into()
}

/// TLS client settings, as Prometheus' `tls_config`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsClientConfig {
    /// CA certificates (PEM) that sign the server's certificate. Default: the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require one; needs `key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Name the server's certificate must carry, when it differs from the URL's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Accept any server certificate. Default false; for tests only.
    pub insecure_skip_verify: bool,
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

/// What a recommendation is about; the `category` label of `recommendation_active`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RecommendationCategory {
    /// Dead tuples, wraparound: VACUUM's work.
    Vacuum,
    /// Unused or missing indexes.
    Indexes,
    /// Connection slots and reachability.
    Connections,
    /// Long, blocked, deadlocked or spilling queries.
    Queries,
    /// Standbys, slots, WAL archiving.
    Replication,
    /// Space and identifier ranges running out.
    Capacity,
    /// Processes: memory, CPU, file descriptors, crashes.
    Process,
    /// Error patterns in logs.
    Logs,
    /// Attacks and certificates.
    Security,
    /// Settings worth changing.
    Configuration,
    /// Databases nobody uses.
    Activity,
}

impl RecommendationCategory {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vacuum => "vacuum",
            Self::Indexes => "indexes",
            Self::Connections => "connections",
            Self::Queries => "queries",
            Self::Replication => "replication",
            Self::Capacity => "capacity",
            Self::Process => "process",
            Self::Logs => "logs",
            Self::Security => "security",
            Self::Configuration => "configuration",
            Self::Activity => "activity",
        }
    }
}

/// How urgent a recommendation is; the `severity` label of `recommendation_active`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RecommendationSeverity {
    /// Worth knowing; no harm yet.
    Info,
    /// Will hurt if left alone.
    Warning,
    /// Hurts now or very soon.
    Critical,
}

impl RecommendationSeverity {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// A recommendation rule: every series its PromQL `condition` returns is one finding, with
/// a stable title and target made from the series' labels and a description that states the
/// numbers (templates: docs/recommendations.md).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Recommendation {
    /// Stable identifier, the `id` label.
    pub id: String,
    /// What the finding is about.
    pub category: RecommendationCategory,
    /// How urgent it is.
    pub severity: RecommendationSeverity,
    /// PromQL; every series returned is one finding, its labels available to the templates.
    pub condition: String,
    /// Title template from labels only (never values), so it stays stable while the numbers
    /// move; with `category` and `target` it identifies the finding.
    pub title: String,
    /// Template naming what the finding is about, e.g. `{{target}}/{{datname}}`.
    pub target: String,
    /// Template stating the numbers: labels, `{{value}}` and the named `values`.
    pub description: String,
    /// Extra PromQL queries evaluated with the condition; each finding takes the value of the
    /// series whose labels are a subset of its own.
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    /// Steps that fix the problem.
    #[serde(default)]
    pub remediation: Vec<String>,
    /// Link to the runbook.
    #[serde(default)]
    pub runbook_url: Option<String>,
    /// The condition must hold this long (counted in evaluation cycles) before the finding
    /// becomes active. Default `0s`.
    #[serde(default = "zero_duration", rename = "for")]
    pub hold_for: PromDuration,
    /// Evaluate at most this often (expensive long-range conditions); findings keep their
    /// state in between. Default `0s`: every cycle.
    #[serde(default = "zero_duration")]
    pub every: PromDuration,
}

fn zero_duration() -> PromDuration {
    PromDuration(std::time::Duration::ZERO)
}

/// A service level objective, in Sloth's prometheus/v1 SLO format (so that a Sloth spec's
/// `slos:` entries can be pasted unchanged) plus vitals' own keys `service`, `period`,
/// `min_traffic` and `domain`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// SLO name, used as the `slo` label.
    pub name: String,
    /// Objective in percent of good events (or good time), above 0 and below 100, e.g. `99.9`.
    pub objective: f64,
    /// What the SLO promises, for people.
    #[serde(default)]
    pub description: String,
    /// The service the SLO belongs to, used as the `service` label (a Sloth spec's top-level
    /// `service`).
    #[serde(default)]
    pub service: Option<String>,
    /// Labels added to every series, rule and alert of the SLO.
    #[serde(default, deserialize_with = "scalar_map")]
    pub labels: BTreeMap<String, String>,
    /// How good and bad events are counted.
    pub sli: Sli,
    /// The burn-rate alerts.
    #[serde(default)]
    pub alerting: SloAlerting,
    /// Compliance period the error budget is computed over. Default `30d`.
    #[serde(default = "default_slo_period")]
    pub period: PromDuration,
    /// Total events per second (the unit of `total_query`) over an alert's short window
    /// below which that alert does not fire. Default `0`.
    #[serde(default)]
    pub min_traffic: f64,
    /// Health domain whose score the SLO's budget burn lowers. Default `slo`.
    #[serde(default = "default_slo_domain")]
    pub domain: String,
}

/// A map of label or annotation values that also takes numbers and booleans as their text, as
/// Sloth's Go YAML parser does (`severity: 1`, `disable: true` under `labels`).
pub(crate) fn scalar_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    use serde::de::Error;
    let raw = Option::<BTreeMap<String, serde_norway::Value>>::deserialize(d)?;
    raw.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                serde_norway::Value::String(s) => s,
                serde_norway::Value::Bool(b) => b.to_string(),
                serde_norway::Value::Number(n) => n.to_string(),
                serde_norway::Value::Null => String::new(),
                _ => return Err(D::Error::custom(format!("{k}: expected a text value"))),
            };
            Ok((k, text))
        })
        .collect()
}

fn default_slo_period() -> PromDuration {
    PromDuration(std::time::Duration::from_secs(30 * 86_400))
}

fn default_slo_domain() -> String {
    "slo".into()
}

/// The service level indicator: exactly one of `events` and `raw`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sli {
    /// Bad events over total events.
    #[serde(default)]
    pub events: Option<SliEvents>,
    /// An error ratio computed by the query itself.
    #[serde(default)]
    pub raw: Option<SliRaw>,
    /// Sloth's SLI plugins: accepted by the parser only to be refused with a clear reason.
    #[serde(default, skip_serializing)]
    pub plugin: Option<serde_norway::Value>,
}

/// An events SLI: both queries contain `{{.window}}`, replaced by each window (`5m`, `1h`...).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SliEvents {
    /// PromQL counting bad events over `{{.window}}` (e.g. `sum(rate(errors_total[{{.window}}]))`).
    pub error_query: String,
    /// PromQL counting all events over `{{.window}}`, in the same unit as `error_query`.
    pub total_query: String,
}

/// A raw SLI: the query returns the error ratio (0 to 1) over `{{.window}}` itself.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SliRaw {
    /// PromQL giving the error ratio over `{{.window}}`.
    pub error_ratio_query: String,
}

/// The multi-window, multi-burn-rate alerts of an SLO.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SloAlerting {
    /// Alert name (`alertname`) of both alerts; empty means `SloErrorBudgetBurn`.
    pub name: String,
    /// Labels of both alerts.
    #[serde(deserialize_with = "scalar_map")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of both alerts (`summary`, `description`, `runbook_url`...).
    #[serde(deserialize_with = "scalar_map")]
    pub annotations: BTreeMap<String, String>,
    /// The fast-burn alert (default label `severity: critical`).
    pub page_alert: SloAlert,
    /// The slow-burn alert (default label `severity: warning`).
    pub ticket_alert: SloAlert,
}

/// One of the two alerts of an SLO.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SloAlert {
    /// Do not raise this alert.
    pub disable: bool,
    /// Labels of this alert, over the SLO's alerting labels.
    #[serde(deserialize_with = "scalar_map")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of this alert, over the SLO's alerting annotations.
    #[serde(deserialize_with = "scalar_map")]
    pub annotations: BTreeMap<String, String>,
}

/// Deserializes YAML text into `T`; errors name `file`, the key path, the position and the
/// reason. Shared by the config and the Sloth SLO spec reader.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ConfigError> {
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
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
    })
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
            parse_yaml::<Config>(text, file)?
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
        let fix_http = |h: &mut HttpEndpoint| {
            if let Some(b) = h.basic_auth.as_mut() {
                fix(&mut b.password_file);
            }
            if let Some(a) = h.authorization.as_mut() {
                fix(&mut a.credentials_file);
            }
            if let Some(t) = h.tls_config.as_mut() {
                fix(&mut t.ca_file);
                fix(&mut t.cert_file);
                fix(&mut t.key_file);
            }
        };
        fix_http(&mut self.sidecar.prometheus);
        for am in &mut self.sidecar.alertmanagers {
            fix_http(am);
        }
    }

    /// Checks what single values cannot: unique names, exclusive keys, readable files.
    /// Returns every problem found, in file order.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let e = &self.exporter;
        if e.scrape_timeout.0.is_zero() {
            problems.push(Problem::new(
                "exporter.scrape_timeout",
                "must be more than 0s",
            ));
        }
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
            if t.tables_top_n > MAX_TOP_N {
                problems.push(Problem::new(
                    format!("{key}.tables_top_n"),
                    format!("must be at most {MAX_TOP_N}, got {}", t.tables_top_n),
                ));
            }
            if !(1..=MAX_TOP_N).contains(&t.statements_top_n) {
                problems.push(Problem::new(
                    format!("{key}.statements_top_n"),
                    format!(
                        "must be between 1 and {MAX_TOP_N}, got {} (pg_stat_statements: false turns statements off)",
                        t.statements_top_n
                    ),
                ));
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
        logs_problems(&e.logs, &mut problems);
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
            if let Some(j) = &s.journald {
                for (what, values) in [("units", &j.units), ("identifiers", &j.identifiers)] {
                    if values.iter().any(|v| v.trim().is_empty()) {
                        problems.push(Problem::new(
                            format!("{key}.journald.{what}"),
                            "empty values are not allowed",
                        ));
                    }
                }
                if j.directory
                    .as_ref()
                    .is_some_and(|d| d.as_os_str().is_empty())
                {
                    problems.push(Problem::new(
                        format!("{key}.journald.directory"),
                        "must not be empty",
                    ));
                }
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
        unique_names(
            "sidecar.slos",
            self.sidecar.slos.iter().map(|s| &s.name),
            &mut problems,
        );
        sidecar_problems(&self.sidecar, &mut problems);
        http_endpoint_problems(
            "sidecar.prometheus",
            &self.sidecar.prometheus,
            &mut problems,
        );
        for (i, am) in self.sidecar.alertmanagers.iter().enumerate() {
            http_endpoint_problems(&format!("sidecar.alertmanagers[{i}]"), am, &mut problems);
        }
        problems
    }
}

/// Most rows a `*_top_n` key may ask for: each is a set of series per database.
const MAX_TOP_N: u32 = 10_000;

/// Checks of the log collector's timing keys and budgets.
fn logs_problems(l: &LogsConfig, problems: &mut Vec<Problem>) {
    use std::time::Duration;
    let mut push = |key: &str, reason: &str| {
        problems.push(Problem::new(format!("exporter.logs.{key}"), reason));
    };
    if l.poll_interval.0 < Duration::from_millis(10) {
        push("poll_interval", "must be at least 10ms");
    }
    if l.checkpoint_interval.0.is_zero() {
        push("checkpoint_interval", "must be more than 0s");
    }
    if l.pattern_idle_timeout.0.is_zero() {
        push("pattern_idle_timeout", "must be more than 0s");
    }
    if l.pattern_budget == 0 {
        push("pattern_budget", "must be at least 1");
    }
    if l.ip_budget == 0 {
        push("ip_budget", "must be at least 1");
    }
}

/// Checks of the coarse older history: its step must fall on the resolution grid, and the
/// full-resolution part must hold everything that needs a regular grid (the 7-day baseline
/// ending `baseline_offset` back, the forecast window, the re-asked overlap).
fn coarse_history_problems(sc: &SidecarConfig, push: &mut impl FnMut(String, &str)) {
    use std::time::Duration;
    let (res, coarse) = (sc.resolution.0, sc.history_coarse_step.0);
    if res.as_millis() == 0 {
        return;
    }
    if coarse < res || coarse.as_millis() % res.as_millis() != 0 {
        push(
            "sidecar.history_coarse_step".into(),
            "must be a multiple of sidecar.resolution (equal to it loads the whole history at full resolution)",
        );
        return;
    }
    if coarse > Duration::from_secs(3600) {
        push(
            "sidecar.history_coarse_step".into(),
            "must be at most 1h, so every hour of the week keeps a point from every week",
        );
    }
    if coarse == res || sc.history_full_resolution.0 >= sc.history.0 {
        return;
    }
    let week = Duration::from_secs(7 * 86_400);
    if sc.history_full_resolution.0 < week + sc.baseline_offset.0 {
        push(
            "sidecar.history_full_resolution".into(),
            "must cover the 7-day baseline plus sidecar.baseline_offset",
        );
    }
    if sc.history_full_resolution.0 < sc.forecast.window.0 {
        push(
            "sidecar.history_full_resolution".into(),
            "must cover sidecar.forecast.window",
        );
    }
    if sc.history_full_resolution.0 <= sc.query_overlap.0 {
        push(
            "sidecar.history_full_resolution".into(),
            "must be longer than sidecar.query_overlap",
        );
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
    if sc.query_overlap.0 >= sc.history.0 {
        push(
            "sidecar.query_overlap".into(),
            "must be shorter than sidecar.history",
        );
    }
    coarse_history_problems(sc, &mut push);
    if sc.min_samples == 0 {
        push("sidecar.min_samples".into(), "must be at least 1");
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
    if sc.forecast.window.0 > sc.history.0 {
        push(
            "sidecar.forecast.window".into(),
            "must not exceed sidecar.history",
        );
    }
    if sc.forecast.horizon.0 < sc.resolution.0 {
        push(
            "sidecar.forecast.horizon".into(),
            "must be at least sidecar.resolution",
        );
    }
    if sc.max_findings_per_recommendation == 0 {
        push(
            "sidecar.max_findings_per_recommendation".into(),
            "must be at least 1",
        );
    }
    if sc.alert_resend_delay.0 < Duration::from_secs(1) {
        push("sidecar.alert_resend_delay".into(), "must be at least 1s");
    }
    if sc.alert_queue.max_alerts == 0 {
        push(
            "sidecar.alert_queue.max_alerts".into(),
            "must be at least 1",
        );
    }
    if sc
        .alert_queue
        .path
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty() || p.is_dir())
    {
        push(
            "sidecar.alert_queue.path".into(),
            "must name a file, not a directory",
        );
    }
    if let Some(g) = &sc.grafana_url
        && let Err(reason) = check_http_url(g)
    {
        push("sidecar.grafana_url".into(), &reason);
    }
    for name in sc.external_labels.keys() {
        let mut chars = name.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with("__");
        if !valid {
            push(
                format!("sidecar.external_labels.{name}"),
                "invalid label name (want [a-zA-Z_][a-zA-Z0-9_]*, not starting with __)",
            );
        }
    }
    let mut ids = BTreeSet::new();
    for (i, r) in sc.recommendations.iter().enumerate() {
        let key = |f: &str| format!("sidecar.recommendations[{i}].{f}");
        if r.id.trim().is_empty() {
            push(key("id"), "must not be empty");
        } else if !ids.insert(r.id.as_str()) {
            push(key("id"), &format!("duplicate id {:?}", r.id));
        }
        for (problem_key, reason) in crate::sidecar::recommend::rule_problems(r) {
            push(key(&problem_key), &reason);
        }
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
    for (i, s) in sc.slos.iter().enumerate() {
        problems.extend(slo_problems(&format!("sidecar.slos[{i}]"), s));
    }
}

/// Labels the SLO series, rules and alerts set themselves.
const SLO_RESERVED_LABELS: [&str; 5] = ["slo", "service", "window", "alert", "slo_alert"];

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

/// Checks of one SLO (`key` is where it sits, e.g. `sidecar.slos[0]`): one SLI kind with
/// `{{.window}}` queries, an objective that leaves a budget, a period that holds the longest
/// alert window, valid label and alert names. Also used for Sloth spec files.
pub fn slo_problems(key: &str, s: &Slo) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut push =
        |f: &str, reason: &str| problems.push(Problem::new(format!("{key}.{f}"), reason));
    if s.name.is_empty()
        || !s
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        push(
            "name",
            "must be a non-empty name of letters, digits, '-', '_', '.' and ':'",
        );
    }
    if !(s.objective > 0.0 && s.objective < 100.0) {
        push(
            "objective",
            "must be a percentage above 0 and below 100 (100 leaves no error budget)",
        );
    }
    let has_window = |q: &str| crate::sidecar::slo::has_window_placeholder(q);
    if s.sli.plugin.is_some() {
        push(
            "sli.plugin",
            "Sloth SLI plugins are not supported by vitals; write the plugin's queries as sli.events or sli.raw",
        );
    }
    match (&s.sli.events, &s.sli.raw) {
        (Some(e), None) => {
            for (f, q) in [
                ("sli.events.error_query", &e.error_query),
                ("sli.events.total_query", &e.total_query),
            ] {
                if !has_window(q) {
                    push(f, "must contain {{.window}}");
                }
            }
        }
        (None, Some(r)) => {
            if !has_window(&r.error_ratio_query) {
                push("sli.raw.error_ratio_query", "must contain {{.window}}");
            }
            if s.min_traffic != 0.0 {
                push(
                    "min_traffic",
                    "needs sli.events: a raw SLI has no total events to compare with",
                );
            }
        }
        (Some(_), Some(_)) => push("sli", "set one of sli.events and sli.raw, not both"),
        (None, None) if s.sli.plugin.is_none() => push("sli", "set sli.events or sli.raw"),
        (None, None) => {}
    }
    if s.period.0 < std::time::Duration::from_secs(3 * 86_400) {
        push(
            "period",
            "must be at least 3d, the longest burn-rate alert window",
        );
    }
    if !(s.min_traffic.is_finite() && s.min_traffic >= 0.0) {
        push("min_traffic", "must be a finite number, 0 or more");
    }
    if s.domain.is_empty()
        || !s
            .domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        push(
            "domain",
            "must be a non-empty word of letters, digits and '_'",
        );
    }
    if !s.alerting.name.is_empty() && !is_label_name(&s.alerting.name) {
        push(
            "alerting.name",
            "must be a valid alert name: letters, digits and '_', not starting with a digit",
        );
    }
    let label_sets = [
        ("labels", &s.labels),
        ("alerting.labels", &s.alerting.labels),
        ("alerting.page_alert.labels", &s.alerting.page_alert.labels),
        (
            "alerting.ticket_alert.labels",
            &s.alerting.ticket_alert.labels,
        ),
    ];
    for (f, labels) in label_sets {
        for k in labels.keys() {
            if !is_label_name(k) {
                push(f, &format!("{k:?} is not a valid label name"));
            } else if SLO_RESERVED_LABELS.contains(&k.as_str()) {
                push(f, &format!("{k:?} is set by vitals itself"));
            }
        }
    }
    problems
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

/// Request headers vitals sets itself, or that would break the request if overridden.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "proxy-authorization",
    "user-agent",
];

/// A secret given exactly one way, inline (`name`) or as a readable file (`name_file`):
/// the problems as (field, reason) under `section`.
fn secret_source_problems(
    (section, name): (&str, &str),
    inline: bool,
    file: Option<&Path>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match (inline, file) {
        (true, Some(_)) => out.push((
            format!("{section}.{name}_file"),
            format!("set either {name} or {name}_file, not both"),
        )),
        (false, None) => out.push((
            format!("{section}.{name}"),
            format!("set {name} or {name}_file"),
        )),
        _ => {}
    }
    if let Some(Err(reason)) = file.map(types::check_readable) {
        out.push((format!("{section}.{name}_file"), reason));
    }
    out
}

/// Checks of an HTTP API endpoint: a usable URL without credentials, one way to
/// authenticate, readable files, sane timing and header names.
fn http_endpoint_problems(key: &str, h: &HttpEndpoint, problems: &mut Vec<Problem>) {
    let mut push = |field: &str, reason: String| {
        problems.push(Problem::new(format!("{key}.{field}"), reason));
    };
    if let Err(reason) = check_http_url(&h.url) {
        push("url", reason);
    }
    if h.timeout.0 < std::time::Duration::from_millis(1) {
        push("timeout", "must be at least 1ms".into());
    }
    if h.retries > 10 {
        push("retries", format!("must be at most 10, got {}", h.retries));
    }
    if h.retries > 0 && h.retry_backoff.0.is_zero() {
        push(
            "retry_backoff",
            "must be more than 0s when retries > 0".into(),
        );
    }
    if h.basic_auth.is_some() && h.authorization.is_some() {
        push(
            "authorization",
            "set either basic_auth or authorization, not both".into(),
        );
    }
    if let Some(b) = &h.basic_auth {
        if b.username.is_empty() {
            push("basic_auth.username", "must not be empty".into());
        }
        let found = secret_source_problems(
            ("basic_auth", "password"),
            b.password.is_some(),
            b.password_file.as_deref(),
        );
        for (field, reason) in found {
            push(&field, reason);
        }
    }
    if let Some(a) = &h.authorization {
        let kind_ok = !a.kind.is_empty()
            && a.kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
        if !kind_ok {
            push(
                "authorization.type",
                format!("not a valid scheme: {:?}", a.kind),
            );
        } else if a.kind.eq_ignore_ascii_case("basic") {
            push(
                "authorization.type",
                "use basic_auth for basic authentication".into(),
            );
        }
        let found = secret_source_problems(
            ("authorization", "credentials"),
            a.credentials.is_some(),
            a.credentials_file.as_deref(),
        );
        for (field, reason) in found {
            push(&field, reason);
        }
    }
    if let Some(t) = &h.tls_config {
        for (field, path) in [
            ("ca_file", &t.ca_file),
            ("cert_file", &t.cert_file),
            ("key_file", &t.key_file),
        ] {
            if let Some(Err(reason)) = path.as_deref().map(types::check_readable) {
                push(&format!("tls_config.{field}"), reason);
            }
        }
        if t.cert_file.is_some() != t.key_file.is_some() {
            push(
                "tls_config.key_file",
                "cert_file and key_file go together".into(),
            );
        }
        if let Some(name) = &t.server_name
            && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            push(
                "tls_config.server_name",
                format!("not a valid DNS name or IP address: {name:?}"),
            );
        }
    }
    for (name, value) in &h.headers {
        if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            push(&format!("headers.{name}"), "invalid header name".into());
        } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            push(
                &format!("headers.{name}"),
                "reserved header: vitals sets it (use basic_auth or authorization for credentials)"
                    .into(),
            );
        }
        if hyper::header::HeaderValue::from_str(value).is_err() {
            push(
                &format!("headers.{name}"),
                "invalid header value (visible ASCII only)".into(),
            );
        }
    }
}

/// An `http://` or `https://` URL with a host, optionally a path prefix, and no user
/// information (credentials go to `basic_auth`), query or fragment.
pub fn check_http_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a valid URL ({e})"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must start with http:// or https://".into()),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| "must name a host".to_string())?;
    if authority.as_str().contains('@') {
        return Err("must not contain credentials: use basic_auth or authorization".into());
    }
    if authority.host().is_empty() {
        return Err("must name a host".into());
    }
    if uri.query().is_some() || url.contains('#') {
        return Err("must not have a query string or fragment".into());
    }
    Ok(())
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
    fn http_endpoint_keys_parse_and_are_checked() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let pass = tmp.path().join("prom.pass");
        std::fs::write(&pass, "pw\n").expect("write password");
        let text = "sidecar:\n  prometheus:\n    url: https://mimir:8080/prometheus\n    timeout: 5s\n    retries: 3\n    retry_backoff: 1s\n    basic_auth:\n      username: vitals\n      password_file: prom.pass\n    tls_config:\n      server_name: mimir.example\n      insecure_skip_verify: true\n    headers:\n      X-Scope-OrgID: team-a\n  alertmanagers:\n    - url: http://am:9093\n      authorization:\n        credentials: token\n";
        let c = Config::parse(text, "vitals.yml", Some(tmp.path())).expect("valid");
        let p = &c.sidecar.prometheus;
        assert_eq!(p.timeout.0, std::time::Duration::from_secs(5));
        assert_eq!(p.retries, 3);
        let basic = p.basic_auth.as_ref().expect("basic_auth");
        assert_eq!(basic.password_file.as_deref(), Some(pass.as_path()));
        assert_eq!(p.headers["X-Scope-OrgID"], "team-a");
        let am = &c.sidecar.alertmanagers[0];
        assert_eq!(
            am.authorization.as_ref().map(|a| a.kind.as_str()),
            Some("Bearer")
        );
        assert_eq!(am.timeout.0, std::time::Duration::from_secs(30));
        assert_eq!(Config::default().sidecar.prometheus.retries, 2);

        let msg = err("sidecar:\n  prometheus:\n    url: http://p:9090\n    timout: 5s\n");
        assert!(msg.contains("timout"), "unknown key not named: {msg}");
        let msg = err("sidecar:\n  prometheus:\n    url: http://p\n    tls_config: {ca_fil: x}\n");
        assert!(msg.contains("ca_fil"), "{msg}");
        let msg = err("sidecar:\n  prometheus:\n    url: http://u:secret@p:9090\n");
        assert!(
            msg.contains("sidecar.prometheus.url: must not contain credentials"),
            "{msg}"
        );
        assert!(!msg.contains("secret"), "the password leaked: {msg}");
        let msg = err("sidecar:\n  prometheus:\n    url: p:9090\n");
        assert!(msg.contains("sidecar.prometheus.url"), "{msg}");
        let msg =
            err("sidecar:\n  prometheus:\n    url: http://p\n    basic_auth: {username: u}\n");
        assert!(
            msg.contains("basic_auth.password: set password or password_file"),
            "{msg}"
        );
        let msg = err(
            "sidecar:\n  prometheus:\n    url: http://p\n    basic_auth: {username: u, password: x}\n    authorization: {credentials: y}\n",
        );
        assert!(
            msg.contains("set either basic_auth or authorization"),
            "{msg}"
        );
        let msg =
            err("sidecar:\n  prometheus:\n    url: http://p\n    headers: {Authorization: x}\n");
        assert!(
            msg.contains("headers.Authorization: reserved header"),
            "{msg}"
        );
        let msg = err(
            "sidecar:\n  prometheus:\n    url: http://p\n    tls_config: {cert_file: /nonexistent/c}\n",
        );
        assert!(
            msg.contains("tls_config.cert_file: cannot read /nonexistent/c"),
            "{msg}"
        );
        let msg = err(
            "sidecar:\n  alertmanagers:\n    - url: http://am\n      authorization: {type: Basic, credentials: x}\n",
        );
        assert!(
            msg.contains("sidecar.alertmanagers[0].authorization.type"),
            "{msg}"
        );
        let msg = err("sidecar:\n  prometheus:\n    url: http://p\n    timeout: 5\n");
        assert!(
            msg.starts_with("vitals.yml:3:")
                && msg.contains("sidecar.prometheus.timeout: expected a duration"),
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
                directory: Some("/var/log/journal/remote".into()),
            }),
            parser: "syslog".into(),
            regex: Some("(?P<message>.*)".into()),
            start_at: StartAt::End,
            max_line_bytes: 65536,
            labels: BTreeMap::from([("k".into(), "v".into())]),
        });
        c.sidecar.alertmanagers.push(full_http("http://am:9093"));
        c.sidecar.prometheus = full_http("http://p:9090");
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
        c.sidecar.recommendations.push(Recommendation {
            id: "r".into(),
            category: RecommendationCategory::Vacuum,
            severity: RecommendationSeverity::Warning,
            condition: "up == 0".into(),
            title: "{{job}} is down".into(),
            target: "{{instance}}".into(),
            description: "{{value}} and {{v | humanize}}".into(),
            values: BTreeMap::from([("v".into(), "up".into())]),
            remediation: vec!["start it".into()],
            runbook_url: Some("https://example.com/runbook".into()),
            hold_for: PromDuration(std::time::Duration::from_secs(60)),
            every: PromDuration(std::time::Duration::from_secs(60)),
        });
        let map = || BTreeMap::from([("k".to_string(), "v".to_string())]);
        let alert = SloAlert {
            disable: false,
            labels: map(),
            annotations: map(),
        };
        c.sidecar.slos.push(Slo {
            name: "s".into(),
            objective: 99.9,
            description: "d".into(),
            service: Some("svc".into()),
            labels: map(),
            sli: Sli {
                events: Some(SliEvents {
                    error_query: "e[{{.window}}]".into(),
                    total_query: "t[{{.window}}]".into(),
                }),
                raw: Some(SliRaw {
                    error_ratio_query: "r[{{.window}}]".into(),
                }),
                plugin: None,
            },
            alerting: SloAlerting {
                name: "A".into(),
                labels: map(),
                annotations: map(),
                page_alert: alert.clone(),
                ticket_alert: alert,
            },
            period: default_slo_period(),
            min_traffic: 1.0,
            domain: default_slo_domain(),
        });
        c.sidecar.alert_queue.path = Some("/var/lib/vitals/q.json".into());
        c.sidecar.grafana_url = Some("http://grafana:3000".into());
        c
    }

    /// Every key of an HTTP client set (headers stay an empty map: free-form).
    fn full_http(url: &str) -> HttpEndpoint {
        let secret: Secret = serde_norway::from_str("x").expect("secret");
        HttpEndpoint {
            basic_auth: Some(BasicAuth {
                username: "u".into(),
                password: Some(secret.clone()),
                password_file: Some("p".into()),
            }),
            authorization: Some(Authorization {
                kind: default_authorization_type(),
                credentials: Some(secret),
                credentials_file: Some("c".into()),
            }),
            tls_config: Some(TlsClientConfig {
                ca_file: Some("ca".into()),
                cert_file: Some("crt".into()),
                key_file: Some("key".into()),
                server_name: Some("n".into()),
                insecure_skip_verify: true,
            }),
            ..HttpEndpoint::new(url)
        }
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
                    // Free-form maps (labels, annotations, values) document the map, not their entries.
                    if path.ends_with(".labels")
                        || path.ends_with(".annotations")
                        || path.ends_with("].values")
                    {
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
