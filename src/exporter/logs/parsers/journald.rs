//! `journalctl -o json` output: one JSON object per entry; MESSAGE is a string or, for
//! non-UTF-8 text, an array of bytes; PRIORITY is the syslog severity.
//!
//! Only the fields used are decoded (the others are skipped without being built), and a field
//! that occurs several times in one entry (journalctl prints an array of values) yields its
//! first value. journalctl prints fields larger than 4096 bytes as `null` unless `--all` is
//! given: such a MESSAGE gives a record with an empty message, flagged as truncated.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::{Level, LineParser, Parsed, Record};

/// The journald JSON parser.
pub struct Journald;

/// The fields of an entry that vitals reads.
#[derive(Deserialize)]
struct Fields {
    #[serde(rename = "__CURSOR", default)]
    cursor: Option<String>,
    /// `Some(Null)` when journalctl left the value out, `None` when the field is missing.
    #[serde(rename = "MESSAGE", default, deserialize_with = "present")]
    message: Option<Value>,
    #[serde(rename = "PRIORITY", default)]
    priority: Option<Value>,
    #[serde(rename = "SYSLOG_IDENTIFIER", default)]
    identifier: Option<Value>,
    #[serde(rename = "_COMM", default)]
    comm: Option<Value>,
    #[serde(rename = "__REALTIME_TIMESTAMP", default)]
    realtime: Option<Value>,
}

/// Keeps a `null` value as `Some(Value::Null)` (plain `Option` would make it `None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// One decoded journal entry.
pub struct Entry {
    /// The record to count.
    pub record: Record<'static>,
    /// The entry's cursor, for resuming with `--after-cursor`.
    pub cursor: Option<String>,
    /// MESSAGE was left out by journalctl (larger than 4096 bytes): the record's message is
    /// empty.
    pub truncated: bool,
}

/// A field value as text: a string, a byte array (decoded lossily), or the first of several
/// values.
fn text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Array(items) if items.iter().all(Value::is_u64) => {
            let raw: Vec<u8> = items
                .iter()
                .filter_map(|b| b.as_u64().and_then(|n| u8::try_from(n).ok()))
                .collect();
            Some(Cow::Owned(String::from_utf8_lossy(&raw).into_owned()))
        }
        Value::Array(items) => items.first().and_then(text),
        _ => None,
    }
}

/// Decodes one line of `journalctl -o json`; `None` when it is not a journal entry.
pub fn parse_entry(line: &str) -> Option<Entry> {
    let f: Fields = serde_json::from_str(line).ok()?;
    let (message, truncated) = match &f.message {
        Some(Value::Null) => (String::new(), true),
        Some(v) => (text(v)?.into_owned(), false),
        None => return None,
    };
    let level = f
        .priority
        .as_ref()
        .and_then(text)
        .and_then(|p| p.trim().parse::<u8>().ok())
        .map_or_else(|| Level::infer(&message), Level::from_syslog_severity);
    let program = f
        .identifier
        .as_ref()
        .and_then(text)
        .or_else(|| f.comm.as_ref().and_then(text))
        .map(|s| Cow::Owned(s.into_owned()));
    let timestamp = f
        .realtime
        .as_ref()
        .and_then(text)
        .and_then(|t| t.parse::<u64>().ok())
        .map(|us| us as f64 / 1e6);
    Some(Entry {
        record: Record {
            level,
            timestamp,
            program,
            message: Cow::Owned(message),
            count: 1,
            sqlstate: None,
        },
        cursor: f.cursor,
        truncated,
    })
}

/// The journal cursor of an entry, for resuming with `--after-cursor`.
pub fn cursor(line: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Cursor {
        #[serde(rename = "__CURSOR")]
        cursor: String,
    }
    serde_json::from_str::<Cursor>(line).ok().map(|c| c.cursor)
}

impl LineParser for Journald {
    fn parse<'a>(&'a mut self, line: &'a str) -> Parsed<'a> {
        match parse_entry(line) {
            Some(e) => Parsed::Record(e.record),
            None => Parsed::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_and_byte_messages() {
        let mut p = Journald;
        let line = r#"{"__CURSOR":"s=abc;i=1","__REALTIME_TIMESTAMP":"1705312800123456","PRIORITY":"3","SYSLOG_IDENTIFIER":"sshd","MESSAGE":"error: kex_exchange_identification"}"#;
        match p.parse(line) {
            Parsed::Record(r) => {
                assert_eq!(r.level, Level::Error);
                assert_eq!(r.program.as_deref(), Some("sshd"));
                assert_eq!(r.timestamp, Some(1_705_312_800.123456));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(cursor(line).as_deref(), Some("s=abc;i=1"));
        let bytes = r#"{"PRIORITY":"6","_COMM":"app","MESSAGE":[104,105,255]}"#;
        match p.parse(bytes) {
            Parsed::Record(r) => assert_eq!(r.message, "hi\u{fffd}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.parse("nope"), Parsed::Failure);
        assert_eq!(p.parse(r#"{"PRIORITY":"6"}"#), Parsed::Failure);
    }

    #[test]
    fn repeated_fields_and_oversized_messages() {
        // A field set twice is printed as an array of its values: the first one counts.
        let e = parse_entry(
            r#"{"__CURSOR":"c","PRIORITY":["4","6"],"SYSLOG_IDENTIFIER":["a","b"],"MESSAGE":["first",[104,105]]}"#,
        )
        .expect("entry");
        assert_eq!(e.record.level, Level::Warning);
        assert_eq!(e.record.program.as_deref(), Some("a"));
        assert_eq!(e.record.message, "first");
        assert!(!e.truncated);
        // Over 4096 bytes, journalctl prints null: counted with an empty message.
        let e = parse_entry(r#"{"__CURSOR":"d","PRIORITY":"2","MESSAGE":null}"#).expect("entry");
        assert_eq!(e.record.level, Level::Critical);
        assert_eq!((e.record.message.as_ref(), e.truncated), ("", true));
        assert_eq!(e.cursor.as_deref(), Some("d"));
    }
}
