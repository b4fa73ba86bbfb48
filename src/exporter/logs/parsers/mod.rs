//! Log line parsers: each turns raw lines of one format into [`Record`]s with a level from a
//! fixed set, so that every source is counted the same way.
//!
//! Parsers are stateful where formats span lines (PostgreSQL continuation lines and csvlog
//! records with newlines inside quotes), so a source owns one parser instance.

pub mod journald;
pub mod postgresql;
pub mod simple;
pub mod syslog;

use std::borrow::Cow;
use std::fmt;

/// Normalised severity. Every format's own levels map onto these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Emergency, alert, critical, fatal, panic.
    Critical,
    /// Errors.
    Error,
    /// Warnings.
    Warning,
    /// Notices.
    Notice,
    /// Informational messages (and lines whose format has no level).
    Info,
    /// Debugging output.
    Debug,
}

impl Level {
    /// Every level, for exporting zero series.
    pub const ALL: [Level; 6] = [
        Level::Critical,
        Level::Error,
        Level::Warning,
        Level::Notice,
        Level::Info,
        Level::Debug,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Critical => "critical",
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    /// Whether pattern metrics are kept for this level.
    pub fn is_problem(self) -> bool {
        matches!(self, Level::Critical | Level::Error | Level::Warning)
    }

    /// From a syslog severity number (0 emergency .. 7 debug).
    pub fn from_syslog_severity(sev: u8) -> Level {
        match sev {
            0..=2 => Level::Critical,
            3 => Level::Error,
            4 => Level::Warning,
            5 => Level::Notice,
            6 => Level::Info,
            _ => Level::Debug,
        }
    }

    /// From a level word as programs write it (`ERROR`, `warn`, `crit`, `FATAL`, ...).
    pub fn from_word(word: &str) -> Option<Level> {
        let w = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        Some(match w.to_ascii_lowercase().as_str() {
            "emerg" | "emergency" | "alert" | "crit" | "critical" | "fatal" | "panic"
            | "severe" => Level::Critical,
            "err" | "error" | "errors" => Level::Error,
            "warn" | "warning" | "warnings" => Level::Warning,
            "notice" => Level::Notice,
            "info" | "information" | "informational" | "log" => Level::Info,
            "debug" | "trace" | "debug1" | "debug2" | "debug3" | "debug4" | "debug5" => {
                Level::Debug
            }
            _ => return None,
        })
    }

    /// Guesses a level from message text, for formats that carry none (plain syslog files):
    /// the most severe level word found as a whole word, case-insensitively, in one pass.
    ///
    /// Runs on every line of such sources, so each word is folded to lower case into a `u64`
    /// while it is scanned (level words are 3 to 8 ASCII characters) and compared as one
    /// number, without a second pass over its bytes.
    pub fn infer(message: &str) -> Level {
        let b = message.as_bytes();
        let mut best = Level::Info;
        let mut i = 0;
        while i < b.len() {
            if !b[i].is_ascii_alphanumeric() {
                i += 1;
                continue;
            }
            let start = i;
            // Every level word starts with one of these letters (`| 0x20` lower-cases ASCII
            // letters and maps no other byte onto them): other words are skipped unread.
            if !matches!(b[i] | 0x20, b'p' | b'f' | b'e' | b'c' | b'w') {
                i += 1;
                while i < b.len() && b[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                continue;
            }
            // The word's first 8 bytes, lower-cased, little-endian (digits stay digits).
            let mut word = 0u64;
            while i < b.len() && b[i].is_ascii_alphanumeric() {
                if i - start < 8 {
                    word |= u64::from(b[i] | 0x20) << (8 * (i - start));
                }
                i += 1;
            }
            if (3..=8).contains(&(i - start))
                && let Some(level) = level_word(word)
                && level < best
            {
                best = level;
                if best == Level::Critical {
                    break;
                }
            }
        }
        best
    }
}

/// A lower-case ASCII word of up to 8 bytes packed little-endian into a `u64`.
const fn packed(w: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < w.len() {
        v |= (w[i] as u64) << (8 * i);
        i += 1;
    }
    v
}

/// The level a single word names, for [`Level::infer`]: the word as [`packed`] bytes.
fn level_word(word: u64) -> Option<Level> {
    const PANIC: u64 = packed(b"panic");
    const FATAL: u64 = packed(b"fatal");
    const EMERG: u64 = packed(b"emerg");
    const CRITICAL: u64 = packed(b"critical");
    const ERROR: u64 = packed(b"error");
    const FAILED: u64 = packed(b"failed");
    const FAILURE: u64 = packed(b"failure");
    const FAIL: u64 = packed(b"fail");
    const ERR: u64 = packed(b"err");
    const WARNING: u64 = packed(b"warning");
    const WARN: u64 = packed(b"warn");
    Some(match word {
        PANIC | FATAL | EMERG | CRITICAL => Level::Critical,
        ERROR | FAILED | FAILURE | FAIL | ERR => Level::Error,
        WARNING | WARN => Level::Warning,
        _ => return None,
    })
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One logical log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    /// Normalised level.
    pub level: Level,
    /// Time of the entry, seconds since the Unix epoch, when the format has one.
    pub timestamp: Option<f64>,
    /// The program that wrote it (syslog tag such as `sshd`), when known.
    pub program: Option<Cow<'a, str>>,
    /// The message text without header.
    pub message: Cow<'a, str>,
    /// How many times it occurred (`message repeated N times` counts N).
    pub count: u64,
    /// SQLSTATE code for PostgreSQL errors, when the format carries it.
    pub sqlstate: Option<Cow<'a, str>>,
}

impl<'a> Record<'a> {
    /// A record with just a message and level.
    pub fn new(level: Level, message: impl Into<Cow<'a, str>>) -> Self {
        Self {
            level,
            timestamp: None,
            program: None,
            message: message.into(),
            count: 1,
            sqlstate: None,
        }
    }

    /// Detaches the record from the input line.
    pub fn into_owned(self) -> Record<'static> {
        Record {
            level: self.level,
            timestamp: self.timestamp,
            program: self.program.map(|p| Cow::Owned(p.into_owned())),
            message: Cow::Owned(self.message.into_owned()),
            count: self.count,
            sqlstate: self.sqlstate.map(|s| Cow::Owned(s.into_owned())),
        }
    }
}

/// What a parser made of one input line.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed<'a> {
    /// A complete entry.
    Record(Record<'a>),
    /// The line continues an earlier entry (or is buffered until the entry is complete).
    Continuation,
    /// The line does not have the format; it is counted, never fatal.
    Failure,
}

/// A parser instance for one source.
pub trait LineParser: Send {
    /// Parses one line (without its line ending).
    fn parse<'a>(&'a mut self, line: &'a str) -> Parsed<'a>;
    /// Returns an entry still buffered at end of input (multi-line formats).
    fn flush(&mut self) -> Option<Record<'static>> {
        None
    }
}

/// The parsers a source can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParserKind {
    /// One message per line, no header.
    Raw,
    /// RFC 3164 (with or without year), RFC 5424 and ISO-timestamp syslog files.
    Syslog,
    /// PostgreSQL stderr log with the usual log_line_prefix.
    Postgresql,
    /// PostgreSQL csvlog.
    PostgresqlCsv,
    /// PostgreSQL jsonlog.
    PostgresqlJson,
    /// `journalctl -o json` output.
    Journald,
    /// Apache httpd error log.
    ApacheError,
    /// nginx error log.
    NginxError,
    /// fail2ban.log.
    Fail2ban,
    /// certbot's letsencrypt.log.
    Certbot,
    /// Any line starting with an ISO or common timestamp, level word optional.
    SimpleTimestamp,
}

impl ParserKind {
    /// Every name accepted in `parser:`.
    pub const NAMES: &'static [&'static str] = &[
        "raw",
        "syslog",
        "postgresql",
        "postgresql_csv",
        "postgresql_json",
        "journald",
        "apache_error",
        "nginx_error",
        "fail2ban",
        "certbot",
        "simple_timestamp",
        "regex",
    ];

    /// Looks up a parser by its config name (`regex` is built separately).
    pub fn from_name(name: &str) -> Option<ParserKind> {
        Some(match name {
            "raw" => ParserKind::Raw,
            "syslog" => ParserKind::Syslog,
            "postgresql" => ParserKind::Postgresql,
            "postgresql_csv" => ParserKind::PostgresqlCsv,
            "postgresql_json" => ParserKind::PostgresqlJson,
            "journald" => ParserKind::Journald,
            "apache_error" => ParserKind::ApacheError,
            "nginx_error" => ParserKind::NginxError,
            "fail2ban" => ParserKind::Fail2ban,
            "certbot" => ParserKind::Certbot,
            "simple_timestamp" => ParserKind::SimpleTimestamp,
            _ => return None,
        })
    }

    /// A fresh parser instance.
    pub fn build(self) -> Box<dyn LineParser> {
        match self {
            ParserKind::Raw => Box::new(simple::Raw),
            ParserKind::Syslog => Box::new(syslog::Syslog::default()),
            ParserKind::Postgresql => Box::new(postgresql::Stderr),
            ParserKind::PostgresqlCsv => Box::new(postgresql::Csv::default()),
            ParserKind::PostgresqlJson => Box::new(postgresql::Json),
            ParserKind::Journald => Box::new(journald::Journald),
            ParserKind::ApacheError => Box::new(simple::ApacheError),
            ParserKind::NginxError => Box::new(simple::NginxError),
            ParserKind::Fail2ban => Box::new(simple::Fail2ban),
            ParserKind::Certbot => Box::new(simple::Certbot),
            ParserKind::SimpleTimestamp => Box::new(simple::SimpleTimestamp),
        }
    }
}

/// A user-defined parser: a regex with named captures `message` (required), and optionally
/// `level` and `program`.
pub struct RegexParser {
    re: regex::Regex,
}

impl RegexParser {
    /// Compiles the pattern; it must have a `message` capture.
    pub fn new(pattern: &str) -> Result<Self, String> {
        let re = regex::Regex::new(pattern).map_err(|e| e.to_string())?;
        if !re.capture_names().flatten().any(|n| n == "message") {
            return Err("the regex needs a named capture (?P<message>...)".into());
        }
        Ok(Self { re })
    }
}

impl LineParser for RegexParser {
    fn parse<'a>(&'a mut self, line: &'a str) -> Parsed<'a> {
        let Some(c) = self.re.captures(line) else {
            return Parsed::Failure;
        };
        let Some(message) = c.name("message") else {
            return Parsed::Failure;
        };
        let message = message.as_str();
        let level = c
            .name("level")
            .and_then(|l| Level::from_word(l.as_str()))
            .unwrap_or_else(|| Level::infer(message));
        let mut r = Record::new(level, message);
        r.program = c.name("program").map(|p| Cow::Borrowed(p.as_str()));
        Parsed::Record(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(Level::from_word("ERROR"), Some(Level::Error));
        assert_eq!(Level::from_word("[warn]"), Some(Level::Warning));
        assert_eq!(Level::from_word("FATAL"), Some(Level::Critical));
        assert_eq!(Level::from_word("DEBUG3"), Some(Level::Debug));
        assert_eq!(Level::from_word("banana"), None);
        assert_eq!(Level::infer("Failed password for root"), Level::Error);
        assert_eq!(Level::infer("kernel: WARNING: CPU: 1 PID"), Level::Warning);
        assert_eq!(Level::infer("Accepted publickey for bob"), Level::Info);
        assert_eq!(
            Level::infer("errorless operation"),
            Level::Info,
            "whole words only"
        );
        assert_eq!(Level::from_syslog_severity(3), Level::Error);
        // Case, word boundaries, length limits and the most severe word.
        assert_eq!(Level::infer("FaIlEd to start"), Level::Error);
        assert_eq!(Level::infer("disk:WARN"), Level::Warning);
        assert_eq!(Level::infer("warn then PANIC!"), Level::Critical);
        assert_eq!(Level::infer("error warning"), Level::Error);
        assert_eq!(Level::infer("errors failures warnings er"), Level::Info);
        assert_eq!(Level::infer("critical1 xcritical criticals"), Level::Info);
        assert_eq!(Level::infer("tail-err"), Level::Error);
        assert_eq!(Level::infer("é-fatal-é"), Level::Critical);
        assert_eq!(Level::infer(""), Level::Info);
    }

    #[test]
    fn regex_parser() {
        let mut p =
            RegexParser::new(r"^(?P<level>\w+) (?P<program>\w+): (?P<message>.*)$").expect("valid");
        match p.parse("WARN app: disk almost full") {
            Parsed::Record(r) => {
                assert_eq!(r.level, Level::Warning);
                assert_eq!(r.program.as_deref(), Some("app"));
                assert_eq!(r.message, "disk almost full");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.parse("garbage"), Parsed::Failure);
        assert!(RegexParser::new("(?P<msg>.*)").is_err());
    }
}
