//! `journalctl -o json` output: one JSON object per entry; MESSAGE is a string or, for
//! non-UTF-8 text, an array of bytes; PRIORITY is the syslog severity.

use std::borrow::Cow;

use super::{Level, LineParser, Parsed, Record};

/// The journald JSON parser.
pub struct Journald;

/// The journal cursor of an entry, for resuming with `--after-cursor`.
pub fn cursor(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v.get("__CURSOR")?.as_str().map(str::to_string)
}

impl LineParser for Journald {
    fn parse<'a>(&'a mut self, line: &'a str) -> Parsed<'a> {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return Parsed::Failure;
        };
        let message = match v.get("MESSAGE") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(bytes)) => {
                let raw: Vec<u8> = bytes
                    .iter()
                    .filter_map(|b| b.as_u64().and_then(|n| u8::try_from(n).ok()))
                    .collect();
                String::from_utf8_lossy(&raw).into_owned()
            }
            _ => return Parsed::Failure,
        };
        let text = |k: &str| v.get(k).and_then(|x| x.as_str());
        let level = text("PRIORITY")
            .and_then(|p| p.parse::<u8>().ok())
            .map_or_else(|| Level::infer(&message), Level::from_syslog_severity);
        let program = text("SYSLOG_IDENTIFIER")
            .or_else(|| text("_COMM"))
            .map(|s| Cow::Owned(s.to_string()));
        let timestamp = text("__REALTIME_TIMESTAMP")
            .and_then(|t| t.parse::<u64>().ok())
            .map(|us| us as f64 / 1e6);
        Parsed::Record(Record {
            level,
            timestamp,
            program,
            message: Cow::Owned(message),
            count: 1,
            sqlstate: None,
        })
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
    }
}
