//! Command-line interface in Prometheus style: dotted long flags, `--web.*`, `--log.*`,
//! and `--collector.NAME` / `--no-collector.NAME` generated from the collector list.

use std::path::PathBuf;

use clap::{
    Arg, ArgAction, ArgMatches, Args, Command, CommandFactory, FromArgMatches, Parser, Subcommand,
    ValueEnum,
};

use crate::exporter::{COLLECTORS, Selection};

/// `--version` output: version and git revision.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("VITALS_GIT_REVISION"),
    ")"
);

/// vitals: PostgreSQL and infrastructure monitoring for Prometheus.
///
/// With no command, runs the exporter (on the embedded default config when no
/// --config.file is given).
#[derive(Debug, Parser)]
#[command(name = "vitals", version = LONG_VERSION, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Option<Commands>,
    /// Exporter flags, when no command is given.
    #[command(flatten)]
    pub exporter: ServeArgs,
    /// Logging flags.
    #[command(flatten)]
    pub log: LogArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Serve /metrics for Prometheus (the default).
    Exporter(ServeArgs),
    /// Read series back from Prometheus, analyse them and re-export the results.
    Sidecar(ServeArgs),
    /// Validate a config file and exit 0 (valid) or 1 (invalid).
    CheckConfig(CheckConfigArgs),
    /// Run the anomaly detector over a CSV series offline.
    Backtest(BacktestArgs),
    /// Offline tools of the log collector: pattern mining on files and streams.
    #[command(subcommand)]
    Logs(LogsCommand),
    /// Write Prometheus rules for users who prefer Prometheus to evaluate them.
    #[command(subcommand)]
    Rules(RulesCommand),
}

/// `vitals rules ...`: Prometheus rule files generated from the config.
#[derive(Debug, Clone, Subcommand)]
pub enum RulesCommand {
    /// Recording and alerting rules for the SLOs of a vitals config (`sidecar.slos` and the
    /// shipped defaults) or of a Sloth prometheus/v1 spec, with the sidecar's math.
    Slo(RulesSloArgs),
}

/// Flags of `rules slo`.
#[derive(Debug, Clone, Args)]
pub struct RulesSloArgs {
    /// A vitals config file or a Sloth prometheus/v1 spec file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Where to write the rules; standard output when absent.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Default listen address of the exporter.
pub const EXPORTER_ADDRESS: &str = ":9830";
/// Default listen address of the sidecar.
pub const SIDECAR_ADDRESS: &str = ":9831";

/// Flags of a serving role.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// YAML config file; the embedded default is used when absent.
    #[arg(long = "config.file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Address to listen on; repeat for several.
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR",
        default_value = ":9830"
    )]
    pub listen: Vec<String>,
    /// Path under which metrics are served.
    #[arg(
        long = "web.telemetry-path",
        value_name = "PATH",
        default_value = "/metrics"
    )]
    pub telemetry_path: String,
    /// exporter-toolkit web config file (TLS, basic auth).
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
}

/// Flags of `check-config`.
#[derive(Debug, Clone, Args)]
pub struct CheckConfigArgs {
    /// The config file to validate.
    pub file: PathBuf,
    /// Also validate this web config file.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
}

/// Flags of `backtest`.
#[derive(Debug, Clone, Args)]
pub struct BacktestArgs {
    /// Input CSV (`timestamp,value`, NAB's format).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "nab",
        conflicts_with = "nab"
    )]
    pub input: Option<PathBuf>,
    /// Output CSV (`timestamp,value,anomaly_score`); stdout when absent.
    #[arg(long, value_name = "FILE", requires = "input")]
    pub output: Option<PathBuf>,
    /// Score a whole NAB-layout folder (data/<category>/*.csv and
    /// labels/combined_windows.json) with the NAB v1.1 rules and print the profile scores.
    #[arg(long, value_name = "DIR")]
    pub nab: Option<PathBuf>,
    /// With --nab: also write each file's scored CSV under this folder.
    #[arg(long = "output-dir", value_name = "DIR", requires = "nab")]
    pub output_dir: Option<PathBuf>,
    /// With --nab: also print each file's raw score at the standard profile's threshold.
    #[arg(long = "per-file", requires = "nab")]
    pub per_file: bool,
    /// Detector: the sidecar's own, or NAB's windowedGaussian reference (to check the
    /// scorer against NAB's published numbers).
    #[arg(long, value_enum, default_value_t = BacktestDetector::Vitals)]
    pub detector: BacktestDetector,
    /// Override a detector tunable, NAME=VALUE (repeatable), e.g. to measure how robust the
    /// scores are to the tuning.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

/// Detectors `backtest` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BacktestDetector {
    /// The sidecar's detector.
    Vitals,
    /// NAB's windowedGaussian (1,000-point rolling Gaussian tail probability).
    WindowedGaussian,
}

/// `vitals logs ...`: the log collector's pattern miner, offline.
#[derive(Debug, Clone, Subcommand)]
pub enum LogsCommand {
    /// Mine the patterns of a log file and print them, most frequent first, with their
    /// count, id and template.
    Patterns(LogsPatternsArgs),
    /// Read messages on stdin and print one pattern id per line, in order.
    Fingerprint(LogsFingerprintArgs),
    /// Run a log file through the collector's pipeline (parser, levels, patterns, security
    /// events) and print the counts as JSON.
    Check(LogsCheckArgs),
}

/// Flags of `logs check`.
#[derive(Debug, Clone, Args)]
pub struct LogsCheckArgs {
    /// The log file to read.
    pub file: PathBuf,
    /// Parser name, as in a source's `parser:`.
    #[arg(long, value_name = "PARSER", default_value = "raw")]
    pub parser: String,
    /// With `--parser regex`: the regex (named capture `message`, optional `level`, `program`).
    #[arg(long, value_name = "REGEX")]
    pub regex: Option<String>,
    /// Source addresses counted separately in ssh_auth_failures_by_ip (the rest as `other`).
    #[arg(long = "ip-budget", value_name = "N", default_value_t = 100)]
    pub ip_budget: usize,
}

/// Flags of `logs patterns`.
#[derive(Debug, Clone, Args)]
pub struct LogsPatternsArgs {
    /// The log file to read.
    pub file: PathBuf,
    /// How a line becomes a message: `raw` (the whole line) or any log parser (`syslog`,
    /// `postgresql`, ...).
    #[arg(long, value_name = "PARSER", default_value = "raw")]
    pub parser: String,
    /// Most patterns kept while mining (least recently used forgotten beyond).
    #[arg(long = "max-clusters", value_name = "N")]
    pub max_clusters: Option<usize>,
}

/// Flags of `logs fingerprint`.
#[derive(Debug, Clone, Args)]
pub struct LogsFingerprintArgs {
    /// How a line becomes a message: `raw` (the whole line) or any log parser (`syslog`,
    /// `postgresql`, ...).
    #[arg(long, value_name = "PARSER", default_value = "raw")]
    pub parser: String,
    /// Most patterns kept while mining (least recently used forgotten beyond).
    #[arg(long = "max-clusters", value_name = "N")]
    pub max_clusters: Option<usize>,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything, for troubleshooting.
    Debug,
    /// Normal operation.
    Info,
    /// Problems only.
    Warn,
    /// Failures only.
    Error,
}

/// Log line format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// key=value pairs, as Prometheus components write.
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// Logging flags, accepted before or after the command.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Only log messages at or above this level.
    #[arg(long = "log.level", value_enum, default_value = "info", global = true)]
    pub level: LogLevel,
    /// Output format of log messages.
    #[arg(
        long = "log.format",
        value_enum,
        default_value = "logfmt",
        global = true
    )]
    pub format: LogFormat,
}

/// The parsed command line plus the collector selection flags.
#[derive(Debug)]
pub struct Parsed {
    /// Typed flags.
    pub cli: Cli,
    /// `--collector.X` / `--no-collector.X`.
    pub selection: Selection,
}

fn with_collector_flags(mut cmd: Command) -> Command {
    cmd = cmd.arg(
        Arg::new("collector.disable-defaults")
            .long("collector.disable-defaults")
            .action(ArgAction::SetTrue)
            .help("Turn off every collector not enabled explicitly with --collector.NAME"),
    );
    for spec in COLLECTORS {
        let state = if spec.default_enabled { "on" } else { "off" };
        cmd = cmd
            .arg(
                Arg::new(format!("collector.{}", spec.name))
                    .long(format!("collector.{}", spec.name))
                    .action(ArgAction::SetTrue)
                    .help(format!(
                        "Enable the {} collector: {} (default {state})",
                        spec.name, spec.help
                    )),
            )
            .arg(
                Arg::new(format!("no-collector.{}", spec.name))
                    .long(format!("no-collector.{}", spec.name))
                    .action(ArgAction::SetTrue)
                    .help(format!("Disable the {} collector", spec.name)),
            );
    }
    cmd
}

/// The clap command with the generated collector flags, for parsing and for docs.
pub fn command() -> Command {
    let cmd = with_collector_flags(Cli::command());
    cmd.mut_subcommand("exporter", with_collector_flags)
}

fn selection(m: &ArgMatches) -> Selection {
    let mut s = Selection::default();
    if m.get_flag("collector.disable-defaults") {
        for spec in COLLECTORS {
            s.set(spec.name, false);
        }
    }
    for spec in COLLECTORS {
        if m.get_flag(&format!("collector.{}", spec.name)) {
            s.set(spec.name, true);
        }
        if m.get_flag(&format!("no-collector.{}", spec.name)) {
            s.set(spec.name, false);
        }
    }
    s
}

/// Parses the process arguments (exits with usage on error, as clap does).
pub fn parse() -> Parsed {
    parse_from(std::env::args_os())
}

/// Parses the given arguments.
pub fn parse_from<I, T>(args: I) -> Parsed
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sel = match matches.subcommand() {
        Some(("exporter", sub)) => selection(sub),
        _ => selection(&matches),
    };
    Parsed {
        cli,
        selection: sel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn default_is_exporter_with_prometheus_flags() {
        let p = parse_from([
            "vitals",
            "--web.listen-address=127.0.0.1:1",
            "--web.listen-address=:2",
            "--no-collector.vitals",
        ]);
        assert!(p.cli.command.is_none());
        assert_eq!(p.cli.exporter.listen, vec!["127.0.0.1:1", ":2"]);
        let spec = COLLECTORS
            .iter()
            .find(|s| s.name == "vitals")
            .expect("vitals collector");
        assert!(!p.selection.enabled(spec));
    }

    #[test]
    fn logs_subcommands_parse() {
        let p = parse_from(["vitals", "logs", "patterns", "x.log", "--parser", "raw"]);
        match p.cli.command {
            Some(Commands::Logs(LogsCommand::Patterns(a))) => {
                assert_eq!(a.file, PathBuf::from("x.log"));
                assert_eq!(a.parser, "raw");
                assert_eq!(a.max_clusters, None);
            }
            other => panic!("unexpected {other:?}"),
        }
        let p = parse_from(["vitals", "logs", "fingerprint", "--max-clusters=10"]);
        match p.cli.command {
            Some(Commands::Logs(LogsCommand::Fingerprint(a))) => {
                assert_eq!(a.parser, "raw");
                assert_eq!(a.max_clusters, Some(10));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rules_slo_parses() {
        let p = parse_from([
            "vitals",
            "rules",
            "slo",
            "--config",
            "c.yml",
            "--output=r.yml",
        ]);
        match p.cli.command {
            Some(Commands::Rules(RulesCommand::Slo(a))) => {
                assert_eq!(a.config, PathBuf::from("c.yml"));
                assert_eq!(a.output, Some(PathBuf::from("r.yml")));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn exporter_subcommand_takes_collector_flags() {
        let p = parse_from([
            "vitals",
            "exporter",
            "--collector.disable-defaults",
            "--collector.vitals",
            "--log.level=debug",
        ]);
        assert!(matches!(p.cli.command, Some(Commands::Exporter(_))));
        assert_eq!(p.cli.log.level, LogLevel::Debug);
        let spec = COLLECTORS
            .iter()
            .find(|s| s.name == "vitals")
            .expect("vitals collector");
        assert!(p.selection.enabled(spec));
    }
}
