//! Syslog files: RFC 3164 (`Jan  5 10:00:00 host tag[pid]: msg`, also with a year), RFC 5424
//! (`<34>1 2024-01-05T10:00:00Z host app pid msgid - msg`) and the ISO timestamps Debian 12's
//! rsyslog writes (`2024-01-05T10:00:00.123456+01:00 host tag[pid]: msg`).
//!
//! Files carry no severity unless a `<PRI>` is present; then the level is inferred from the
//! message words. `message repeated N times: [ msg ]` counts N, and sysklogd's
//! `last message repeated N times` repeats the previous entry N times.

use std::borrow::Cow;

use chrono::{Datelike, Local, NaiveDate, TimeZone};

use super::{Level, LineParser, Parsed, Record};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parser state: the previous entry, for `last message repeated N times` (kept in reused
/// buffers), and a cache of the local time of the current hour.
#[derive(Default)]
pub struct Syslog {
    last_level: Option<Level>,
    last_program: Option<String>,
    last_message: String,
    last_timestamp: Option<f64>,
}

impl LineParser for Syslog {
    fn parse<'a>(&'a mut self, line: &'a str) -> Parsed<'a> {
        let Some(mut rec) = parse_line(line) else {
            return Parsed::Failure;
        };
        if let Some(n) = repeated_last(&rec.message)
            && let Some(level) = self.last_level
        {
            return Parsed::Record(Record {
                level,
                timestamp: rec.timestamp.or(self.last_timestamp),
                program: self.last_program.as_deref().map(Cow::Borrowed),
                message: Cow::Borrowed(&self.last_message),
                count: n,
                sqlstate: None,
            });
        }
        if let Some((n, inner)) = repeated_inline(&rec.message) {
            let inner = inner.to_string();
            rec.count = n;
            if rec.level == Level::Info {
                rec.level = Level::infer(&inner);
            }
            rec.message = Cow::Owned(inner);
        }
        self.last_level = Some(rec.level);
        self.last_timestamp = rec.timestamp;
        self.last_message.clear();
        self.last_message.push_str(&rec.message);
        match (&mut self.last_program, rec.program.as_deref()) {
            (Some(p), Some(new)) => {
                p.clear();
                p.push_str(new);
            }
            (slot, new) => *slot = new.map(str::to_string),
        }
        Parsed::Record(rec)
    }
}

/// `last message repeated 3 times`
fn repeated_last(msg: &str) -> Option<u64> {
    let rest = msg.trim().strip_prefix("last message repeated ")?;
    let (n, tail) = rest.split_once(' ')?;
    tail.starts_with("time").then_some(())?;
    repeat_count(n)
}

/// A repeat count: 1 to `u32::MAX`. Zero would make the line count for nothing, and a count
/// near `u64::MAX` would overflow the counters it is added to.
fn repeat_count(n: &str) -> Option<u64> {
    n.parse::<u32>().ok().filter(|n| *n > 0).map(u64::from)
}

/// `message repeated 3 times: [ Failed password ...]`
fn repeated_inline(msg: &str) -> Option<(u64, &str)> {
    let rest = msg.strip_prefix("message repeated ")?;
    let (n, tail) = rest.split_once(' ')?;
    let inner = tail.strip_prefix("times: [")?;
    let inner = inner.strip_suffix(']').unwrap_or(inner);
    Some((repeat_count(n)?, inner.trim()))
}

/// Parses one syslog line into a record, or `None` when it has no syslog header.
pub fn parse_line(line: &str) -> Option<Record<'_>> {
    let line = line.trim_end();
    let (pri, rest) = match line.strip_prefix('<') {
        Some(r) => {
            let end = r.find('>')?;
            let pri: u16 = r[..end].parse().ok()?;
            (Some(pri), &r[end + 1..])
        }
        None => (None, line),
    };
    // RFC 5424: version "1" after PRI.
    if pri.is_some()
        && let Some(r) = rest.strip_prefix("1 ")
    {
        return parse_5424(pri, r);
    }
    let (ts, rest) = if rest.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        parse_iso_prefix(rest)?
    } else {
        parse_3164_time(rest)?
    };
    let rest = rest.trim_start();
    // Host, then tag.
    let (_host, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let (program, message) = split_tag(rest);
    let level = match pri {
        Some(p) => Level::from_syslog_severity((p % 8) as u8),
        None => Level::infer(message),
    };
    Some(Record {
        level,
        timestamp: ts,
        program: program.map(Cow::Borrowed),
        message: Cow::Borrowed(message),
        count: 1,
        sqlstate: None,
    })
}

fn parse_5424(pri: Option<u16>, rest: &str) -> Option<Record<'_>> {
    let mut it = rest.splitn(6, ' ');
    let ts = it.next()?;
    let _host = it.next()?;
    let app = it.next()?;
    let _procid = it.next()?;
    let _msgid = it.next()?;
    let tail = it.next().unwrap_or("");
    // Structured data: "-" or one or more [..] blocks.
    let msg = if let Some(m) = tail.strip_prefix("- ") {
        m
    } else if tail == "-" {
        ""
    } else if tail.starts_with('[') {
        let mut depth = 0usize;
        let mut end = tail.len();
        let bytes = tail.as_bytes();
        let mut i = 0;
        let mut escaped = false;
        let mut in_quotes = false;
        while i < bytes.len() {
            let b = bytes[i];
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quotes = !in_quotes;
            } else if !in_quotes && b == b'[' {
                depth += 1;
            } else if !in_quotes && b == b']' {
                depth = depth.saturating_sub(1);
                if depth == 0 && bytes.get(i + 1) != Some(&b'[') {
                    end = i + 1;
                    break;
                }
            }
            i += 1;
        }
        tail[end..].trim_start()
    } else {
        tail
    };
    let msg = msg.strip_prefix('\u{feff}').unwrap_or(msg);
    let timestamp = if ts == "-" {
        None
    } else {
        chrono::DateTime::parse_from_rfc3339(ts)
            .ok()
            .map(|d| d.timestamp_micros() as f64 / 1e6)
    };
    Some(Record {
        level: Level::from_syslog_severity((pri.unwrap_or(14) % 8) as u8),
        timestamp,
        program: (app != "-").then_some(Cow::Borrowed(app)),
        message: Cow::Borrowed(msg),
        count: 1,
        sqlstate: None,
    })
}

/// `2024-01-05T10:00:00.123456+01:00 rest` (or with a space instead of `T`).
fn parse_iso_prefix(s: &str) -> Option<(Option<f64>, &str)> {
    let end = s.find(' ')?;
    let (head, rest) = (&s[..end], &s[end..]);
    let ts = chrono::DateTime::parse_from_rfc3339(head)
        .ok()
        .map(|d| d.timestamp_micros() as f64 / 1e6)?;
    Some((Some(ts), rest))
}

fn two_digits(b: &[u8]) -> Option<u32> {
    match b {
        [a, c] if a.is_ascii_digit() && c.is_ascii_digit() => {
            Some(u32::from(a - b'0') * 10 + u32::from(c - b'0'))
        }
        [b' ', c] if c.is_ascii_digit() => Some(u32::from(c - b'0')),
        _ => None,
    }
}

/// `Jan  5 10:00:00 rest`, also `Jan  5 2024 10:00:00 rest`.
pub(super) fn parse_3164_time(s: &str) -> Option<(Option<f64>, &str)> {
    let b = s.as_bytes();
    if b.len() < 15 {
        return None;
    }
    let month = MONTHS.iter().position(|m| s.starts_with(m))? as u32 + 1;
    if b[3] != b' ' {
        return None;
    }
    let day = two_digits(&b[4..6])?;
    if b[6] != b' ' {
        return None;
    }
    let mut i = 7;
    let mut year = None;
    if b.len() >= i + 5 && b[i..i + 4].iter().all(u8::is_ascii_digit) && b[i + 4] == b' ' {
        year = s[i..i + 4].parse::<i32>().ok();
        i += 5;
    }
    if b.len() < i + 8 || b[i + 2] != b':' || b[i + 5] != b':' {
        return None;
    }
    let h = two_digits(&b[i..i + 2])?;
    let m = two_digits(&b[i + 3..i + 5])?;
    let sec = two_digits(&b[i + 6..i + 8])?;
    let mut j = i + 8;
    // Optional fraction.
    if b.get(j) == Some(&b'.') {
        j += 1;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
    }
    let ts = local_timestamp(year, month, day, h, m, sec);
    Some((ts, &s[j..]))
}

/// Cached (key, epoch of the local hour, when computed, hits since the clock was read).
type HourEntry = ((Option<i32>, u32, u32, u32), f64, std::time::Instant, u32);

/// Hits of [`HOUR_CACHE`] between two readings of the clock (reading it costs more than the
/// rest of the timestamp).
const HOUR_CACHE_CLOCK_EVERY: u32 = 64;

thread_local! {
    /// (year, month, day, hour) -> epoch of that local hour; refreshed every 10 minutes
    /// (looked at every [`HOUR_CACHE_CLOCK_EVERY`] hits) so a missing year follows the clock.
    /// Hours are where DST changes, so this is exact.
    static HOUR_CACHE: std::cell::Cell<Option<HourEntry>> =
        const { std::cell::Cell::new(None) };
}

/// Local time to epoch seconds; a missing year is the one that puts the date not in the
/// future (logs from December read in January belong to last year).
fn local_timestamp(year: Option<i32>, month: u32, day: u32, h: u32, m: u32, s: u32) -> Option<f64> {
    if m > 59 || s > 60 {
        return None;
    }
    let key = (year, month, day, h);
    let cached = HOUR_CACHE.with(|c| {
        let (k, base, at, hits) = c.get()?;
        if k != key {
            return None;
        }
        if hits < HOUR_CACHE_CLOCK_EVERY {
            c.set(Some((k, base, at, hits + 1)));
            return Some(base);
        }
        let fresh = at.elapsed() < std::time::Duration::from_secs(600);
        c.set(Some((k, base, at, 0)));
        fresh.then_some(base)
    });
    let base = match cached {
        Some(b) => b,
        None => {
            let b = local_hour(year, month, day, h)?;
            HOUR_CACHE.with(|c| c.set(Some((key, b, std::time::Instant::now(), 0))));
            b
        }
    };
    Some(base + f64::from(m * 60 + s))
}

/// Epoch seconds of the start of a local hour.
fn local_hour(year: Option<i32>, month: u32, day: u32, h: u32) -> Option<f64> {
    let (m, s) = (0, 0);
    let now = Local::now();
    let build = |y: i32| {
        NaiveDate::from_ymd_opt(y, month, day)
            .and_then(|d| d.and_hms_opt(h, m, s))
            .and_then(|dt| Local.from_local_datetime(&dt).earliest())
    };
    let dt = match year {
        Some(y) => build(y)?,
        None => {
            let this = build(now.year())?;
            if this.timestamp() > now.timestamp() + 86_400 {
                build(now.year() - 1)?
            } else {
                this
            }
        }
    };
    Some(dt.timestamp() as f64)
}

/// Splits `tag[pid]: message` into the program name and the message. Lines without a tag
/// keep the whole rest as message. The tag is the text before the first `: ` (or a `:`
/// ending the first 64 bytes) when it holds no space; one scan of those bytes decides.
fn split_tag(rest: &str) -> (Option<&str>, &str) {
    let head = &rest.as_bytes()[..floor_char_boundary(rest, rest.len().min(64))];
    for (i, &b) in head.iter().enumerate() {
        match b {
            // A space before any `: `: not a tag.
            b' ' => break,
            b':' if head.get(i + 1).is_none_or(|&n| n == b' ') => {
                let tag = &rest[..i];
                let program = tag.split(['[', '(']).next().unwrap_or(tag);
                let msg = rest.get(i + 1..).unwrap_or("").trim_start();
                return (Some(program), msg);
            }
            _ => {}
        }
    }
    // `tag[pid] message` without colon, or no tag at all.
    (None, rest)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(line: &str) -> Record<'_> {
        parse_line(line).unwrap_or_else(|| panic!("did not parse: {line}"))
    }

    #[test]
    fn rfc3164_forms() {
        let r = rec(
            "Dec 10 06:55:46 LabSZ sshd[24200]: Failed password for root from 1.2.3.4 port 22 ssh2",
        );
        assert_eq!(r.program.as_deref(), Some("sshd"));
        assert_eq!(
            r.message,
            "Failed password for root from 1.2.3.4 port 22 ssh2"
        );
        assert_eq!(r.level, Level::Error);
        assert!(r.timestamp.is_some());
        let r = rec(
            "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0",
        );
        assert_eq!(r.program.as_deref(), Some("sshd"));
        let r = rec("Jul  1 09:00:55 host kernel: eth0: link up");
        assert_eq!(r.program.as_deref(), Some("kernel"));
        assert_eq!(r.message, "eth0: link up");
        let r = rec("Jun 20 04:44:39 combo syslogd 1.4.1: restart.");
        assert_eq!(r.program, None);
        let r = rec("Jan  5 2024 10:00:00 host cron[1]: job done");
        assert_eq!(r.program.as_deref(), Some("cron"));
        // The tag ends at the first `: ` (or a `:` ending the line); a space before it
        // means there is no tag.
        let r = rec("Jan  5 10:00:00 host a:b[3]: x: y");
        assert_eq!(r.program.as_deref(), Some("a:b"));
        assert_eq!(r.message, "x: y");
        let r = rec("Jan  5 10:00:00 host prog:");
        assert_eq!(r.program.as_deref(), Some("prog"));
        assert_eq!(r.message, "");
        let r = rec("Jan  5 10:00:00 host no tag: here");
        assert_eq!(r.program, None);
        assert_eq!(r.message, "no tag: here");
    }

    #[test]
    fn iso_and_5424() {
        let r = rec(
            "2024-01-05T10:00:00.123456+01:00 db1 sshd[77]: Accepted publickey for bob from 10.0.0.1 port 50000 ssh2",
        );
        assert_eq!(r.timestamp, Some(1_704_445_200.123456));
        assert_eq!(r.program.as_deref(), Some("sshd"));
        let r = rec(
            "<34>1 2003-10-11T22:14:15.003Z mymachine su - ID47 - 'su root' failed for lonvick",
        );
        assert_eq!(r.level, Level::Critical);
        assert_eq!(r.program.as_deref(), Some("su"));
        assert_eq!(r.message, "'su root' failed for lonvick");
        let r = rec(
            "<165>1 2003-10-11T22:14:15.003Z host app 1 ID [ex@32473 iut=\"3\" a=\"]\"][x@1 b=\"c\"] BOMmsg here",
        );
        assert_eq!(r.level, Level::Notice);
        assert_eq!(r.message, "BOMmsg here");
    }

    #[test]
    fn repeated_messages_count() {
        let mut p = Syslog::default();
        match p.parse("Jan  5 10:00:00 h sshd[1]: message repeated 3 times: [ Failed password for root from 1.2.3.4 port 22 ssh2]") {
            Parsed::Record(r) => {
                assert_eq!(r.count, 3);
                assert_eq!(r.message, "Failed password for root from 1.2.3.4 port 22 ssh2");
                assert_eq!(r.level, Level::Error);
            }
            other => panic!("{other:?}"),
        }
        match p.parse("Jan  5 10:00:01 h sshd[1]: last message repeated 4 times") {
            Parsed::Record(r) => {
                assert_eq!(r.count, 4);
                assert!(r.message.starts_with("Failed password"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_syslog() {
        assert!(parse_line("hello world").is_none());
        assert!(parse_line("").is_none());
        assert!(parse_line("Foo 10 10:00:00 x").is_none());
    }

    /// Fuzzing regression (log_syslog): `repeated 0 times` made an entry that counted for
    /// nothing; absurd counts could overflow the line counters. Both are plain messages now.
    #[test]
    fn repeat_counts_are_between_one_and_u32_max() {
        let mut p = Syslog::default();
        for line in [
            "Jan  5 10:00:00 h sshd[1]: message repeated 0 times: [ x]",
            "Jan  5 10:00:00 h sshd[1]: message repeated 18446744073709551615 times: [ x]",
            "Jan  5 10:00:01 h sshd[1]: last message repeated 0 times",
        ] {
            match p.parse(line) {
                Parsed::Record(r) => assert_eq!(r.count, 1, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        assert_eq!(repeat_count("4294967295"), Some(u64::from(u32::MAX)));
    }
}
