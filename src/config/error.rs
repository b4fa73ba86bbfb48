//! Configuration errors that point at the file, position and key that are wrong.

use std::fmt;
use std::path::PathBuf;

/// Where a problem sits inside a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// Why a configuration could not be loaded.
///
/// The display form is the one users grep for: `file:line:column: key.path: reason`.
/// It never contains a secret value, only key names and file paths.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{file}: cannot read config file: {source}")]
    Read {
        /// The file that was asked for.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but a key is unknown, mistyped or out of range.
    #[error("{}", format_invalid(.file, .position.as_ref(), .key, .reason))]
    Invalid {
        /// The file name as given by the user (or `<embedded default>`).
        file: String,
        /// Line and column, where the parser knows them.
        position: Option<Position>,
        /// Dotted key path such as `exporter.postgres.targets[1].port`.
        key: String,
        /// What is wrong, in words.
        reason: String,
    },
}

fn format_invalid(file: &str, position: Option<&Position>, key: &str, reason: &str) -> String {
    let mut out = String::from(file);
    if let Some(p) = position {
        out.push_str(&format!(":{}:{}", p.line, p.column));
    }
    out.push_str(": ");
    if !key.is_empty() {
        out.push_str(key);
        out.push_str(": ");
    }
    out.push_str(reason);
    out
}

/// A problem found by validation after parsing, before the file name is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl Problem {
    /// A problem at `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Turns a parser message into a bare reason: serde_norway adds its own key prefix and a
/// ` at line N column M` suffix, which the error's own fields already carry.
pub(crate) fn bare_reason(message: &str) -> String {
    let mut msg = message;
    if let Some(i) = msg.rfind(" at line ") {
        let tail = &msg[i + " at line ".len()..];
        if tail
            .split(" column ")
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            msg = &msg[..i];
        }
    }
    if let Some((head, rest)) = msg.split_once(": ") {
        let looks_like_path = !head.is_empty()
            && !head.contains(char::is_whitespace)
            && head
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '-'));
        if looks_like_path {
            msg = rest;
        }
    }
    msg.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_prefix_and_position() {
        assert_eq!(
            bare_reason("exporter.targets[1]: expected a number 1-65535 at line 5 column 7"),
            "expected a number 1-65535"
        );
        assert_eq!(
            bare_reason("unknown field `x`, expected `a` at line 2 column 3"),
            "unknown field `x`, expected `a`"
        );
        assert_eq!(bare_reason("plain reason"), "plain reason");
    }

    #[test]
    fn display_has_file_position_key_reason() {
        let e = ConfigError::Invalid {
            file: "vitals.yml".into(),
            position: Some(Position {
                line: 12,
                column: 5,
            }),
            key: "exporter.postgres.targets[1].port".into(),
            reason: "expected a number 1-65535".into(),
        };
        assert_eq!(
            e.to_string(),
            "vitals.yml:12:5: exporter.postgres.targets[1].port: expected a number 1-65535"
        );
    }
}
