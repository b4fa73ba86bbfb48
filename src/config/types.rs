//! Value types that validate themselves while they are parsed, so that a bad value is
//! reported with the line and column the YAML parser knows.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// A TCP port, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const WANT: &str = "expected a number 1-65535";
        let v = i64::deserialize(d).map_err(|_| de::Error::custom(WANT))?;
        match u16::try_from(v) {
            Ok(p) if p > 0 => Ok(Port(p)),
            _ => Err(de::Error::custom(format!("{WANT}, got {v}"))),
        }
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

/// A duration written the Prometheus way: `30s`, `5m`, `1h30m`, `500ms`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PromDuration(pub Duration);

impl PromDuration {
    /// Seconds as a float, for exposition.
    pub fn as_secs_f64(&self) -> f64 {
        self.0.as_secs_f64()
    }
}

impl From<Duration> for PromDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)
            .map_err(|_| de::Error::custom("expected a duration such as 30s, 5m or 1h"))?;
        parse_duration(&s)
            .map(PromDuration)
            .map_err(de::Error::custom)
    }
}

impl Serialize for PromDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Parses a Prometheus-style duration; a bare number is refused because its unit is unclear.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() || t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "expected a duration with a unit such as 30s, 5m or 1h, got {t:?}"
        ));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("expected a duration such as 30s, 5m or 1h, got {t:?} ({e})"))
}

/// A secret written inline in the config, optionally as `${ENV_VAR}` references that are
/// expanded when the config is loaded. It never prints its value.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// The secret's text, for the one place that must hand it to a client library.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Reads a secret from a file, dropping one trailing newline as `echo > file` writes.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
        let trimmed = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        Ok(Self(SecretString::from(trimmed.to_string())))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        expand_env(&raw, |name| std::env::var(name).ok())
            .map(|s| Secret(SecretString::from(s)))
            .map_err(de::Error::custom)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<secret>")
    }
}

/// Expands `${NAME}` references; `$$` stands for a literal `$`. An unset variable is an
/// error naming the variable (never the value of anything).
pub fn expand_env(raw: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| "unterminated ${...} reference".to_string())?;
            let name = &body[..end];
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            let value =
                lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A path that must name an existing, readable file when the config is validated.
pub fn check_readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Resolves a path relative to the directory of the config file that names it, as
/// Prometheus does for file references.
pub fn resolve_relative(base_dir: Option<&Path>, path: &Path) -> PathBuf {
    match base_dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn env_expansion() {
        let lookup = |n: &str| (n == "PG_PASSWORD").then(|| "s3cret".to_string());
        assert_eq!(
            expand_env("${PG_PASSWORD}", lookup).as_deref(),
            Ok("s3cret")
        );
        assert_eq!(expand_env("a$$b", lookup).as_deref(), Ok("a$b"));
        assert_eq!(expand_env("pa$s", lookup).as_deref(), Ok("pa$s"));
        let err = expand_env("${MISSING}", lookup).unwrap_err();
        assert!(err.contains("MISSING") && !err.contains("s3cret"));
        assert!(expand_env("${UNCLOSED", lookup).is_err());
    }

    #[test]
    fn secret_debug_hides_value() {
        let s = Secret(SecretString::from("hunter2".to_string()));
        assert_eq!(format!("{s:?}"), "<secret>");
    }

    #[test]
    fn port_range() {
        let ok: Port = serde_norway::from_str("5432").unwrap();
        assert_eq!(ok.0, 5432);
        assert!(serde_norway::from_str::<Port>("0").is_err());
        assert!(serde_norway::from_str::<Port>("70000").is_err());
        assert!(serde_norway::from_str::<Port>("abc").is_err());
    }
}
