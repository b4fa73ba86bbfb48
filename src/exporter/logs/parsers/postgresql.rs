//! PostgreSQL server logs: stderr with the usual `log_line_prefix` (`%m [%p] `, Debian's
//! `%m [%p] %q%u@%d `, optionally with `%e` for the SQLSTATE), csvlog and jsonlog.
//!
//! DETAIL, HINT, STATEMENT, CONTEXT and QUERY lines and tab-indented continuation lines belong
//! to the entry before them and are not counted as entries of their own.

use std::borrow::Cow;

use chrono::{Local, NaiveDateTime, TimeZone};

use super::{Level, LineParser, Parsed, Record};

/// Severity words of the entry line, mapped to levels.
fn severity(word: &str) -> Option<Level> {
    Some(match word {
        "LOG" | "INFO" => Level::Info,
        "NOTICE" => Level::Notice,
        "WARNING" => Level::Warning,
        "ERROR" => Level::Error,
        "FATAL" | "PANIC" => Level::Critical,
        w if w.starts_with("DEBUG") => Level::Debug,
        _ => return None,
    })
}

fn is_detail(word: &str) -> bool {
    matches!(
        word,
        "DETAIL" | "HINT" | "STATEMENT" | "CONTEXT" | "QUERY" | "LOCATION"
    )
}

fn is_sqlstate(tok: &str) -> bool {
    tok.len() == 5
        && tok
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// `2024-01-15 10:00:00.123 UTC` (also without fraction); UTC and GMT are honoured, other
/// zone names are read as local time.
fn parse_pg_time(s: &str) -> Option<f64> {
    let mut parts = s.splitn(3, ' ');
    let date = parts.next()?;
    let time = parts.next()?;
    let zone = parts.next().unwrap_or("");
    let naive =
        NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%Y-%m-%d %H:%M:%S%.f").ok()?;
    let ts = if zone == "UTC" || zone == "GMT" {
        naive.and_utc().timestamp_micros()
    } else {
        Local
            .from_local_datetime(&naive)
            .earliest()?
            .timestamp_micros()
    };
    Some(ts as f64 / 1e6)
}

/// Stderr-format parser.
#[derive(Default)]
pub struct Stderr;

impl LineParser for Stderr {
    fn parse<'a>(&'a mut self, line: &'a str) -> Parsed<'a> {
        if line.starts_with('\t') || line.starts_with(' ') {
            return Parsed::Continuation;
        }
        let mut search = 0;
        while let Some(i) = line[search..].find(":  ") {
            let at = search + i;
            let head = &line[..at];
            let word_start = head.rfind(' ').map_or(0, |p| p + 1);
            let word = &head[word_start..];
            if is_detail(word) {
                return Parsed::Continuation;
            }
            if let Some(level) = severity(word) {
                let prefix = head[..word_start].trim_end();
                let sqlstate = prefix
                    .rsplit(' ')
                    .next()
                    .filter(|t| is_sqlstate(t))
                    .map(Cow::Borrowed);
                let timestamp = prefix.find(" [").and_then(|p| parse_pg_time(&prefix[..p]));
                return Parsed::Record(Record {
                    level,
                    timestamp,
                    program: Some(Cow::Borrowed("postgres")),
                    message: Cow::Borrowed(&line[at + 3..]),
                    count: 1,
                    sqlstate,
                });
            }
            search = at + 3;
        }
        Parsed::Failure
    }
}

const MAX_RECORD: usize = 1 << 20;

/// csvlog parser: buffers lines until a record's quotes are balanced.
#[derive(Default)]
pub struct Csv {
    buf: String,
    /// Quotes in `buf`, counted as lines arrive (recounting the buffer for every line made
    /// a record of many lines quadratic: a client's multi-line query text could stall it).
    quotes: usize,
}

impl Csv {
    fn record(text: &str) -> Option<Record<'static>> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        let row = rdr.records().next()?.ok()?;
        let sev = row.get(11)?;
        let level = severity(sev)?;
        Some(Record {
            level,
            timestamp: row.get(0).and_then(parse_pg_time),
            program: Some(Cow::Borrowed("postgres")),
            message: Cow::Owned(row.get(13).unwrap_or("").to_string()),
            count: 1,
            sqlstate: row
                .get(12)
                .filter(|s| is_sqlstate(s))
                .map(|s| Cow::Owned(s.to_string())),
        })
    }
}

impl LineParser for Csv {
    fn parse<'a>(&'a mut self, line: &'a str) -> Parsed<'a> {
        if !self.buf.is_empty() {
            self.buf.push('\n');
        }
        self.buf.push_str(line);
        self.quotes += line.bytes().filter(|b| *b == b'"').count();
        if self.quotes % 2 == 1 {
            if self.buf.len() > MAX_RECORD {
                self.buf.clear();
                self.quotes = 0;
                return Parsed::Failure;
            }
            return Parsed::Continuation;
        }
        self.quotes = 0;
        let text = std::mem::take(&mut self.buf);
        match Self::record(&text) {
            Some(r) => Parsed::Record(r),
            None => Parsed::Failure,
        }
    }

    fn flush(&mut self) -> Option<Record<'static>> {
        self.quotes = 0;
        let text = std::mem::take(&mut self.buf);
        if text.is_empty() {
            None
        } else {
            Self::record(&text)
        }
    }
}

/// jsonlog parser (PostgreSQL 15+): one JSON object per line.
pub struct Json;

impl LineParser for Json {
    fn parse<'a>(&'a mut self, line: &'a str) -> Parsed<'a> {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return Parsed::Failure;
        };
        let Some(level) = v
            .get("error_severity")
            .and_then(|s| s.as_str())
            .and_then(severity)
        else {
            return Parsed::Failure;
        };
        Parsed::Record(Record {
            level,
            timestamp: v
                .get("timestamp")
                .and_then(|t| t.as_str())
                .and_then(parse_pg_time),
            program: Some(Cow::Borrowed("postgres")),
            message: Cow::Owned(
                v.get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("")
                    .to_string(),
            ),
            count: 1,
            sqlstate: v
                .get("state_code")
                .and_then(|s| s.as_str())
                .filter(|s| is_sqlstate(s))
                .map(|s| Cow::Owned(s.to_string())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(p: &mut dyn LineParser, line: &str) -> Record<'static> {
        match p.parse(line) {
            Parsed::Record(r) => r.into_owned(),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn stderr_prefixes() {
        let mut p = Stderr;
        let r = record(
            &mut p,
            "2024-01-15 10:00:00.123 UTC [12345] LOG:  database system is ready to accept connections",
        );
        assert_eq!(r.level, Level::Info);
        assert_eq!(r.timestamp, Some(1_705_312_800.123));
        assert_eq!(r.message, "database system is ready to accept connections");
        let r = record(
            &mut p,
            "2024-01-15 10:00:01.000 UTC [12346] postgres@app ERROR:  relation \"nope\" does not exist at character 15",
        );
        assert_eq!(r.level, Level::Error);
        assert_eq!(r.sqlstate, None);
        let r = record(
            &mut p,
            "2024-01-15 10:00:01.000 UTC [12346] 42P01 ERROR:  relation \"nope\" does not exist",
        );
        assert_eq!(r.sqlstate.as_deref(), Some("42P01"));
        let r = record(
            &mut p,
            "2024-01-15 10:00:02.000 UTC [12347] FATAL:  password authentication failed for user \"x\"",
        );
        assert_eq!(r.level, Level::Critical);
        assert_eq!(
            p.parse(
                "2024-01-15 10:00:01.000 UTC [12346] postgres@app STATEMENT:  select * from nope;"
            ),
            Parsed::Continuation
        );
        assert_eq!(p.parse("\tand more;"), Parsed::Continuation);
        assert_eq!(p.parse("something else"), Parsed::Failure);
    }

    #[test]
    fn csvlog_spanning_lines() {
        let mut p = Csv::default();
        let first = "2024-01-15 10:00:01.000 UTC,\"postgres\",\"app\",12346,\"[local]\",65a1,1,\"SELECT\",2024-01-15 10:00:00 UTC,3/7,0,ERROR,42601,\"syntax error at or near \"\"selec\"\"";
        assert_eq!(p.parse(first), Parsed::Continuation);
        let r = record(
            &mut p,
            "second line\",,,,,,\"selec 1;\",,,\"psql\",\"client backend\",,0",
        );
        assert_eq!(r.level, Level::Error);
        assert_eq!(r.sqlstate.as_deref(), Some("42601"));
        assert_eq!(r.message, "syntax error at or near \"selec\"\nsecond line");
    }

    #[test]
    fn jsonlog() {
        let mut p = Json;
        let r = record(
            &mut p,
            r#"{"timestamp":"2024-01-15 10:00:01.000 UTC","user":"postgres","dbname":"app","pid":12346,"error_severity":"ERROR","state_code":"42P01","message":"relation \"nope\" does not exist"}"#,
        );
        assert_eq!(r.level, Level::Error);
        assert_eq!(r.sqlstate.as_deref(), Some("42P01"));
        assert_eq!(p.parse("{not json"), Parsed::Failure);
    }

    /// A record spanning many lines (a client's multi-line query text) is one record, and
    /// costs time in proportion to its size: quotes are counted per line as it arrives, not
    /// over the whole buffer again for every line.
    #[test]
    fn csv_record_of_many_lines_is_one_record() {
        let mut p = Csv::default();
        let head = "2024-01-15 10:00:01.000 UTC,\"postgres\",\"app\",1,\"[local]\",65a1,1,\"SELECT\",2024-01-15 10:00:00 UTC,3/7,0,ERROR,42601,\"syntax error in";
        assert_eq!(p.parse(head), Parsed::Continuation);
        for _ in 0..20_000 {
            assert_eq!(p.parse("x"), Parsed::Continuation);
        }
        let r = record(&mut p, "end\",,,,,,,,,\"\",\"client backend\",,0");
        assert_eq!(r.level, Level::Error);
        assert_eq!(r.message.lines().count(), 20_002);
        assert_eq!(p.flush(), None);
    }
}
