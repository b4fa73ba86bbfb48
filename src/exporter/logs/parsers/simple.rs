//! Single-line formats with a timestamp and a level: Apache and nginx error logs, fail2ban,
//! certbot, any `simple_timestamp` log, and `raw` lines.

use std::borrow::Cow;

use chrono::{DateTime, Local, NaiveDateTime, TimeZone};

use super::{Level, LineParser, Parsed, Record};

/// Every line is a message; the level is inferred from its words.
pub struct Raw;

impl LineParser for Raw {
    fn parse<'a>(&'a mut self, line: &'a str) -> Parsed<'a> {
        Parsed::Record(Record::new(Level::infer(line), line))
    }
}

fn local(naive: NaiveDateTime) -> Option<f64> {
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|d| d.timestamp_micros() as f64 / 1e6)
}

/// Reads a timestamp at the start of `s`: ISO 8601 (`T` or space, `.` or `,` fraction,
/// optional `Z` or offset), `YYYY/MM/DD HH:MM:SS`, or syslog's `Mmm dd HH:MM:SS`. Returns the
/// time and the rest of the line.
pub fn leading_timestamp(s: &str) -> Option<(Option<f64>, &str)> {
    let b = s.as_bytes();
    if b.first().is_some_and(u8::is_ascii_alphabetic) {
        return super::syslog::parse_3164_time(s);
    }
    // ASCII up to the seconds, so that the slices below fall on character boundaries.
    if b.len() < 19 || !b[..19].is_ascii() || !b[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sep = b[4];
    if !(sep == b'-' || sep == b'/') || b[7] != sep || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let mut end = 19;
    if matches!(b.get(end), Some(b'.') | Some(b',')) {
        end += 1;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
    }
    let base = format!(
        "{}-{}-{} {}",
        &s[0..4],
        &s[5..7],
        &s[8..10],
        s[11..end].replace(',', ".")
    );
    let naive = NaiveDateTime::parse_from_str(&base, "%Y-%m-%d %H:%M:%S%.f").ok()?;
    // Zone: Z, +hh:mm, +hhmm.
    let rest = &s[end..];
    if let Some(r) = rest.strip_prefix('Z') {
        return Some((Some(naive.and_utc().timestamp_micros() as f64 / 1e6), r));
    }
    if rest.starts_with('+') || rest.starts_with('-') {
        let zone_len = rest
            .bytes()
            .skip(1)
            .take_while(|c| c.is_ascii_digit() || *c == b':')
            .count()
            + 1;
        let zone = &rest[..zone_len];
        let with = format!(
            "{} {}",
            naive.format("%Y-%m-%dT%H:%M:%S%.f"),
            zone.replace(':', "")
        );
        if let Ok(dt) = DateTime::parse_from_str(&with, "%Y-%m-%dT%H:%M:%S%.f %z") {
            return Some((Some(dt.timestamp_micros() as f64 / 1e6), &rest[zone_len..]));
        }
    }
    Some((local(naive), rest))
}

/// Lines that start with a timestamp, then optionally a level word (bare, `[bracketed]` or
/// followed by `:`), then the message.
pub struct SimpleTimestamp;

impl LineParser for SimpleTimestamp {
    fn parse<'a>(&'a mut self, line: &'a str) -> Parsed<'a> {
        let Some((ts, rest)) = leading_timestamp(line) else {
            return Parsed::Failure;
        };
        let rest = rest.trim_start();
        let (word, after) = rest.split_once(' ').unwrap_or((rest, ""));
        let (level, message) = match Level::from_word(word) {
            Some(l) => (l, after.trim_start()),
            None => (Level::infer(rest), rest),
        };
        let mut r = Record::new(level, message);
        r.timestamp = ts;
        Parsed::Record(r)
    }
}

/// Apache httpd error log, 2.2 and 2.4 forms:
/// `[Wed Oct 11 14:32:52.123 2000] [core:error] [pid 1:tid 2] [client 1.2.3.4:5] message`.
pub struct ApacheError;

impl LineParser for ApacheError {
    fn parse<'a>(&'a mut self, line: &'a str) -> Parsed<'a> {
        let Some(rest) = line.strip_prefix('[') else {
            return Parsed::Failure;
        };
        let Some((time, mut rest)) = rest.split_once("] ") else {
            return Parsed::Failure;
        };
        let timestamp = NaiveDateTime::parse_from_str(time, "%a %b %d %H:%M:%S%.f %Y")
            .ok()
            .and_then(local);
        let Some(inner) = rest.strip_prefix('[') else {
            return Parsed::Failure;
        };
        let Some((lvl, after)) = inner.split_once(']') else {
            return Parsed::Failure;
        };
        let word = lvl.rsplit(':').next().unwrap_or(lvl);
        let Some(level) = Level::from_word(word) else {
            return Parsed::Failure;
        };
        rest = after.trim_start();
        // Skip [pid ...] and [client ...] groups.
        while rest.starts_with("[pid ")
            || rest.starts_with("[client ")
            || rest.starts_with("[remote ")
        {
            match rest.split_once("] ") {
                Some((_, r)) => rest = r,
                None => break,
            }
        }
        let mut r = Record::new(level, rest);
        r.timestamp = timestamp;
        r.program = Some(Cow::Borrowed("apache"));
        Parsed::Record(r)
    }
}

/// nginx error log: `2024/01/15 10:00:00 [error] 1234#1234: *5 message`.
pub struct NginxError;

impl LineParser for NginxError {
    fn parse<'a>(&'a mut self, line: &'a str) -> Parsed<'a> {
        let Some((ts, rest)) = leading_timestamp(line) else {
            return Parsed::Failure;
        };
        let Some(rest) = rest.strip_prefix(" [") else {
            return Parsed::Failure;
        };
        let Some((word, rest)) = rest.split_once("] ") else {
            return Parsed::Failure;
        };
        let Some(level) = Level::from_word(word) else {
            return Parsed::Failure;
        };
        let message = match rest.split_once(": ") {
            Some((pid, msg)) if pid.contains('#') => msg,
            _ => rest,
        };
        let message = match message.strip_prefix('*') {
            Some(m) => m.split_once(' ').map_or(m, |(_, r)| r),
            None => message,
        };
        let mut r = Record::new(level, message);
        r.timestamp = ts;
        r.program = Some(Cow::Borrowed("nginx"));
        Parsed::Record(r)
    }
}

/// fail2ban.log: `2024-01-15 10:00:00,123 fail2ban.actions [1234]: NOTICE  [sshd] Ban 1.2.3.4`.
pub struct Fail2ban;

impl LineParser for Fail2ban {
    fn parse<'a>(&'a mut self, line: &'a str) -> Parsed<'a> {
        let Some((ts, rest)) = leading_timestamp(line) else {
            return Parsed::Failure;
        };
        let rest = rest.trim_start();
        let Some((component, rest)) = rest.split_once(' ') else {
            return Parsed::Failure;
        };
        if !component.starts_with("fail2ban") {
            return Parsed::Failure;
        }
        let rest = rest.trim_start();
        let rest = match rest.strip_prefix('[') {
            Some(r) => r.split_once("]:").map_or(r, |(_, m)| m).trim_start(),
            None => rest,
        };
        let (word, msg) = rest.split_once(' ').unwrap_or((rest, ""));
        let Some(level) = Level::from_word(word) else {
            return Parsed::Failure;
        };
        let mut r = Record::new(level, msg.trim_start());
        r.timestamp = ts;
        r.program = Some(Cow::Borrowed("fail2ban"));
        Parsed::Record(r)
    }
}

/// certbot's letsencrypt.log: `2024-01-15 10:00:00,123:DEBUG:certbot._internal.main:message`.
pub struct Certbot;

impl LineParser for Certbot {
    fn parse<'a>(&'a mut self, line: &'a str) -> Parsed<'a> {
        let Some((ts, rest)) = leading_timestamp(line) else {
            return Parsed::Continuation;
        };
        let Some(rest) = rest.strip_prefix(':') else {
            return Parsed::Failure;
        };
        let mut parts = rest.splitn(3, ':');
        let (Some(word), Some(_logger), Some(msg)) = (parts.next(), parts.next(), parts.next())
        else {
            return Parsed::Failure;
        };
        let Some(level) = Level::from_word(word) else {
            return Parsed::Failure;
        };
        let mut r = Record::new(level, msg);
        r.timestamp = ts;
        r.program = Some(Cow::Borrowed("certbot"));
        Parsed::Record(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(p: &'a mut dyn LineParser, line: &'a str) -> Record<'a> {
        match p.parse(line) {
            Parsed::Record(r) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn timestamps() {
        let (t, rest) = leading_timestamp("2024-01-15T10:00:00Z rest").expect("iso z");
        assert_eq!((t, rest), (Some(1_705_312_800.0), " rest"));
        let (t, _) = leading_timestamp("2024-01-15T11:00:00.5+01:00 x").expect("offset");
        assert_eq!(t, Some(1_705_312_800.5));
        let (t, _) = leading_timestamp("2024-01-15 11:00:00,250+0100 x").expect("comma, +hhmm");
        assert_eq!(t, Some(1_705_312_800.25));
        assert!(leading_timestamp("2024/01/15 10:00:00 [error]").is_some());
        assert!(leading_timestamp("nope").is_none());
        assert!(leading_timestamp("12345").is_none());
    }

    #[test]
    fn simple_timestamp_levels() {
        let mut p = SimpleTimestamp;
        let r = record(&mut p, "2024-01-15T10:00:00Z ERROR disk full on /data");
        assert_eq!(
            (r.level, r.message.as_ref()),
            (Level::Error, "disk full on /data")
        );
        let r = record(&mut p, "2024-01-15 10:00:00 [warn] slow");
        assert_eq!(r.level, Level::Warning);
        let r = record(&mut p, "2024-01-15 10:00:00 backup finished");
        assert_eq!(
            (r.level, r.message.as_ref()),
            (Level::Info, "backup finished")
        );
        assert_eq!(p.parse("no time here"), Parsed::Failure);
    }

    #[test]
    fn apache_and_nginx() {
        let mut a = ApacheError;
        let r = record(
            &mut a,
            "[Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 35708:tid 4328636416] [client 72.15.99.187:1234] File does not exist: /x",
        );
        assert_eq!(
            (r.level, r.message.as_ref()),
            (Level::Error, "File does not exist: /x")
        );
        assert!(r.timestamp.is_some());
        let r = record(
            &mut a,
            "[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok /etc/httpd/conf/workers2.properties",
        );
        assert_eq!(r.level, Level::Notice);
        assert_eq!(a.parse("plain"), Parsed::Failure);
        let mut n = NginxError;
        let r = record(
            &mut n,
            "2024/01/15 10:00:00 [error] 1234#1234: *5 open() \"/x\" failed (2: No such file or directory), client: 1.2.3.4",
        );
        assert_eq!(r.level, Level::Error);
        assert!(r.message.starts_with("open() \"/x\" failed"));
        let r = record(
            &mut n,
            "2024/01/15 10:00:00 [emerg] 1#1: bind() to 0.0.0.0:80 failed",
        );
        assert_eq!(r.level, Level::Critical);
    }

    #[test]
    fn fail2ban_and_certbot() {
        let mut f = Fail2ban;
        let r = record(
            &mut f,
            "2024-01-15 10:00:00,123 fail2ban.actions        [1234]: NOTICE  [sshd] Ban 1.2.3.4",
        );
        assert_eq!(
            (r.level, r.message.as_ref()),
            (Level::Notice, "[sshd] Ban 1.2.3.4")
        );
        let mut c = Certbot;
        let r = record(
            &mut c,
            "2024-01-15 10:00:00,123:ERROR:certbot._internal.renewal:Failed to renew certificate example.com with error: x",
        );
        assert_eq!(r.level, Level::Error);
        assert!(r.message.starts_with("Failed to renew"));
        assert_eq!(
            c.parse("Traceback (most recent call last):"),
            Parsed::Continuation
        );
    }

    /// Fuzzing regression: a multi-byte character where the seconds end made the timestamp
    /// slice panic (log_simple_timestamp, log_nginx_error, log_fail2ban, log_certbot).
    #[test]
    fn multibyte_text_inside_a_timestamp_is_no_timestamp() {
        assert_eq!(leading_timestamp("2024-01-15 10:00:0\u{e9} x"), None);
        assert_eq!(leading_timestamp("2024-01-15 10:0\u{e9}:00 x"), None);
        assert_eq!(
            SimpleTimestamp.parse("2024-01-15T10:00:0\u{20ac} ERROR x"),
            Parsed::Failure
        );
        assert!(leading_timestamp("2024-01-15 10:00:00\u{e9}").is_some());
    }
}
