//! Start-up of each command: logging, config, server, signals. This is the edge of the
//! program, so errors here are `anyhow` with context for the operator.

use std::sync::Arc;

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

use crate::cli::{
    Commands, LogArgs, LogFormat, LogLevel, LogsCommand, Parsed, RulesCommand, ServeArgs,
};
use crate::config::ConfigSource;
use crate::exporter::{Exporter, Selection};
use crate::sidecar::Sidecar;
use crate::telemetry::Telemetry;
use crate::web::{self, AppState, Role, WebConfigHandle};

/// Sets up `tracing` from `--log.level` and `--log.format`; logs go to stderr.
pub fn init_logging(args: &LogArgs) {
    let level = match args.level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    };
    let filter = EnvFilter::new(format!("{level},hyper=warn,rustls=warn,h2=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match args.format {
        LogFormat::Logfmt => registry
            .with(
                tracing_logfmt::builder()
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("vitals: logging already initialised: {e}");
    }
}

/// Runs the parsed command; returns the process exit code.
pub fn main(parsed: Parsed) -> anyhow::Result<i32> {
    init_logging(&parsed.cli.log);
    match parsed.cli.command {
        None => serve_exporter(parsed.cli.exporter, parsed.selection),
        Some(Commands::Exporter(args)) => serve_exporter(args, parsed.selection),
        Some(Commands::Sidecar(args)) => serve_sidecar(args),
        Some(Commands::CheckConfig(args)) => {
            let mut ok = true;
            match ConfigSource::File(args.file.clone()).load() {
                Ok(_) => println!("{}: OK", args.file.display()),
                Err(e) => {
                    eprintln!("{e}");
                    ok = false;
                }
            }
            if let Some(w) = &args.web_config_file {
                match web::WebConfig::load(w) {
                    Ok(_) => println!("{}: OK", w.display()),
                    Err(e) => {
                        eprintln!("{e}");
                        ok = false;
                    }
                }
            }
            Ok(if ok { 0 } else { 1 })
        }
        Some(Commands::Backtest(args)) => quiet_on_broken_pipe(backtest_command(&args)),
        Some(Commands::Logs(cmd)) => quiet_on_broken_pipe(logs_command(cmd)),
        Some(Commands::Rules(RulesCommand::Slo(args))) => {
            quiet_on_broken_pipe(rules_slo(&args.config, args.output.as_deref()))
        }
    }
}

/// `vitals rules slo`: SLO rules to a file or stdout; a bad input file is exit code 1.
fn rules_slo(config: &std::path::Path, output: Option<&std::path::Path>) -> anyhow::Result<i32> {
    use std::io::Write;
    let slos = match crate::sidecar::slo::load_file(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Ok(1);
        }
    };
    let text = crate::sidecar::slo::rules_yaml(&slos)?;
    match output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("writing the rules to {}", path.display()))?,
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .context("writing the rules to standard output")?,
    }
    Ok(0)
}

fn source_of(args: &ServeArgs) -> ConfigSource {
    match &args.config_file {
        Some(p) => ConfigSource::File(p.clone()),
        None => ConfigSource::Embedded,
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vitals")
        .build()
        .context("starting the async runtime")
}

fn serve_exporter(args: ServeArgs, selection: Selection) -> anyhow::Result<i32> {
    let telemetry = Arc::new(Telemetry::new("exporter"));
    let source = source_of(&args);
    tracing::info!(version = crate::cli::LONG_VERSION, config = %source.describe(), "starting vitals exporter");
    let rt = runtime()?;
    let exporter = rt
        .block_on(async { Exporter::new(source, selection, telemetry.clone()) })
        .context("loading the configuration")?;
    tracing::info!(collectors = ?exporter.enabled_collectors(), "collectors enabled");
    rt.block_on(serve_role(Arc::new(exporter), telemetry, args))?;
    Ok(0)
}

fn serve_sidecar(args: ServeArgs) -> anyhow::Result<i32> {
    let telemetry = Arc::new(Telemetry::new("sidecar"));
    let source = source_of(&args);
    tracing::info!(version = crate::cli::LONG_VERSION, config = %source.describe(), "starting vitals sidecar");
    let sidecar = Sidecar::new(source, telemetry.clone()).context("loading the configuration")?;
    let rt = runtime()?;
    rt.block_on(serve_role(Arc::new(sidecar), telemetry, args))?;
    Ok(0)
}

async fn serve_role(
    role: Arc<dyn Role>,
    telemetry: Arc<Telemetry>,
    mut args: ServeArgs,
) -> anyhow::Result<()> {
    if args.listen.is_empty() {
        let default = if role.role_name() == "sidecar" {
            crate::cli::SIDECAR_ADDRESS
        } else {
            crate::cli::EXPORTER_ADDRESS
        };
        args.listen.push(default.to_string());
    }
    let web_config = match &args.web_config_file {
        Some(p) => Some(Arc::new(
            WebConfigHandle::load(p).context("loading --web.config.file")?,
        )),
        None => None,
    };
    let listeners = web::bind(&args.listen).await?;
    let state = Arc::new(AppState {
        role: role.clone(),
        telemetry,
        telemetry_path: args.telemetry_path.clone(),
        web_config,
    });
    spawn_sighup(role.clone())?;
    web::serve(listeners, state, shutdown_signal()?).await;
    let r = role.clone();
    let _ = tokio::task::spawn_blocking(move || r.shutdown()).await;
    tracing::info!("stopped");
    Ok(())
}

fn spawn_sighup(role: Arc<dyn Role>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let role = role.clone();
            let result = tokio::task::spawn_blocking(move || role.reload()).await;
            match result {
                Ok(Ok(())) => tracing::info!("configuration reloaded after SIGHUP"),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "reload after SIGHUP rejected; the previous configuration keeps running")
                }
                Err(e) => tracing::error!(error = %e, "reload task failed"),
            }
        }
    });
    Ok(())
}

fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

// `vitals logs ...`: the log collector's pattern miner, offline. -----------------------------

/// Turns log lines into messages with one of the log collector's parsers.
struct MessageParser(Box<dyn crate::exporter::logs::parsers::LineParser>);

impl MessageParser {
    fn from_name(name: &str) -> anyhow::Result<Self> {
        use crate::exporter::logs::parsers::ParserKind;
        match ParserKind::from_name(name) {
            Some(kind) => Ok(Self(kind.build())),
            None => anyhow::bail!(
                "unknown parser {name:?} (one of {}; `regex` needs a config file)",
                ParserKind::NAMES.join(", ")
            ),
        }
    }

    /// The message of a line, `None` when the line holds none (continuation or no format).
    fn message(&mut self, line: &str) -> Option<String> {
        match self.0.parse(line) {
            crate::exporter::logs::parsers::Parsed::Record(r) => Some(r.message.into_owned()),
            _ => None,
        }
    }
}

fn miner_options(max_clusters: Option<usize>) -> crate::exporter::logs::fingerprint::MinerOptions {
    let mut opts = crate::exporter::logs::fingerprint::MinerOptions::default();
    if let Some(n) = max_clusters {
        opts.max_clusters = n;
    }
    opts
}

/// Reads lines (any bytes; invalid UTF-8 replaced) without their line ending and calls `f` on
/// each, holding one line at a time.
fn for_each_line(
    mut input: impl std::io::BufRead,
    mut f: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        let mut end = buf.len();
        while end > 0 && matches!(buf[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        f(&String::from_utf8_lossy(&buf[..end]))?;
    }
}

/// A reader that went away (`vitals logs ... | head`) ends the command quietly, as for other
/// command-line tools.
fn quiet_on_broken_pipe(r: anyhow::Result<i32>) -> anyhow::Result<i32> {
    match r {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(0)
        }
        other => other,
    }
}

fn logs_command(cmd: LogsCommand) -> anyhow::Result<i32> {
    use crate::exporter::logs::fingerprint::Miner;
    use std::io::Write;

    match cmd {
        LogsCommand::Patterns(args) => {
            let mut parser = MessageParser::from_name(&args.parser)?;
            let file = std::fs::File::open(&args.file)
                .with_context(|| format!("opening {}", args.file.display()))?;
            let mut miner = Miner::new(miner_options(args.max_clusters));
            for_each_line(std::io::BufReader::new(file), |line| {
                if let Some(m) = parser.message(line) {
                    miner.observe(&m);
                }
                Ok(())
            })
            .with_context(|| format!("reading {}", args.file.display()))?;
            let mut patterns: Vec<_> = miner.patterns().collect();
            patterns.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
            let width = patterns.first().map_or(1, |p| p.2.to_string().len());
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for (id, template, count) in patterns {
                writeln!(out, "{count:>width$}  {id}  {template}")?;
            }
            out.flush()?;
            Ok(0)
        }
        LogsCommand::Check(args) => {
            let summary = crate::exporter::logs::analyze(
                &args.file,
                &args.parser,
                args.regex.as_deref(),
                args.ip_budget,
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            serde_json::to_writer_pretty(&mut out, &summary)?;
            writeln!(out)?;
            out.flush()?;
            Ok(0)
        }
        LogsCommand::Fingerprint(args) => {
            let mut parser = MessageParser::from_name(&args.parser)?;
            let mut miner = Miner::new(miner_options(args.max_clusters));
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for_each_line(std::io::stdin().lock(), |line| {
                match parser.message(line) {
                    Some(m) => writeln!(out, "{}", miner.observe(&m))?,
                    None => writeln!(out, "-")?,
                }
                Ok(())
            })
            .context("reading stdin")?;
            out.flush()?;
            Ok(0)
        }
    }
}

/// `vitals backtest`: one CSV, or a NAB folder scored with the three NAB profiles.
fn backtest_command(args: &crate::cli::BacktestArgs) -> anyhow::Result<i32> {
    use crate::sidecar::backtest::{self, Method};
    use crate::sidecar::detector::DetectorConfig;
    use crate::sidecar::nab;
    use std::io::Write;

    let method = match args.detector {
        crate::cli::BacktestDetector::Vitals => {
            let mut config = DetectorConfig::default();
            for p in &args.params {
                let (name, value) = p
                    .split_once('=')
                    .with_context(|| format!("--param {p:?}: expected NAME=VALUE"))?;
                config
                    .set(name.trim(), value.trim())
                    .map_err(anyhow::Error::msg)?;
            }
            Method::Vitals(config)
        }
        crate::cli::BacktestDetector::WindowedGaussian => {
            anyhow::ensure!(
                args.params.is_empty(),
                "--param applies to the vitals detector only"
            );
            Method::WindowedGaussian
        }
    };
    if let Some(input) = &args.input {
        let series = backtest::read_series(input)?;
        let scores = backtest::score_series(&series, &method);
        match &args.output {
            Some(out) => backtest::write_scored(out, &series, &scores)?,
            None => {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                writeln!(out, "timestamp,value,anomaly_score")?;
                for ((ts, v), s) in series
                    .raw_timestamps
                    .iter()
                    .zip(&series.values)
                    .zip(&scores)
                {
                    writeln!(out, "{ts},{v},{s}")?;
                }
                out.flush()?;
            }
        }
        return Ok(0);
    }
    let Some(dir) = &args.nab else {
        anyhow::bail!("give --input FILE or --nab DIR");
    };
    let corpus = nab::load_corpus(dir)?;
    let started = std::time::Instant::now();
    let scores: Vec<Vec<f64>> = corpus
        .iter()
        .map(|f| backtest::score_series(&f.series, &method))
        .collect();
    let elapsed = started.elapsed();
    let points: usize = corpus.iter().map(|f| f.series.values.len()).sum();
    if let Some(out_dir) = &args.output_dir {
        for (f, s) in corpus.iter().zip(&scores) {
            backtest::write_scored(&out_dir.join(&f.name), &f.series, s)?;
        }
    }
    let files: Vec<nab::ScoredFile<'_>> = corpus
        .iter()
        .zip(&scores)
        .map(|(f, s)| nab::ScoredFile {
            windows: &f.windows,
            scores: s,
        })
        .collect();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(
        out,
        "NAB v1.1 on {} ({} files, {} windows, {} points; detection {:.0} ns/point)",
        dir.display(),
        corpus.len(),
        corpus.iter().map(|f| f.windows.len()).sum::<usize>(),
        points,
        elapsed.as_nanos() as f64 / points.max(1) as f64
    )?;
    let mut standard_threshold = None;
    for profile in nab::PROFILES {
        let r = nab::score_corpus(&files, profile);
        if standard_threshold.is_none() {
            standard_threshold = Some(r.threshold);
        }
        writeln!(
            out,
            "{:<19} score {:>6.2}  threshold {:.6}  raw {:.3} (null {:.0}, perfect {:.0})  windows detected {}/{}  false positives {}",
            profile.name,
            r.normalized,
            r.threshold,
            r.raw,
            r.null,
            r.perfect,
            r.detected_windows,
            r.windows,
            r.false_positives
        )?;
    }
    if args.per_file {
        let t = standard_threshold.unwrap_or(1.1);
        for (f, sf) in corpus.iter().zip(&files) {
            let raw = nab::score_file(sf, nab::PROFILES[0], t);
            writeln!(out, "{raw:>8.3}  {} ({} windows)", f.name, f.windows.len())?;
        }
    }
    out.flush()?;
    Ok(0)
}

#[cfg(test)]
mod logs_tests {
    use super::*;

    #[test]
    fn parsers_are_looked_up_by_name() {
        let mut p = MessageParser::from_name("syslog").expect("syslog exists");
        assert_eq!(
            p.message("Jan  5 10:00:00 h sshd[1]: hello").as_deref(),
            Some("hello")
        );
        assert_eq!(p.message("no header"), None);
        let err = MessageParser::from_name("nope")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("unknown parser \"nope\""), "{err}");
    }

    #[test]
    fn lines_are_read_without_endings_and_invalid_utf8_is_replaced() {
        let input: &[u8] = b"one\r\ntwo\n\xffthree";
        let mut seen = Vec::new();
        for_each_line(input, |l| {
            seen.push(l.to_string());
            Ok(())
        })
        .ok();
        assert_eq!(seen, vec!["one", "two", "\u{fffd}three"]);
    }
}
