//! `vitals backtest`: the sidecar's detector over CSV series offline.
//!
//! Input is NAB's format, `timestamp,value` with a header row; output adds `anomaly_score`
//! written with Rust's shortest round-trip `Display` of `f64`, so no precision is lost to the
//! threshold sweep. Timestamps are copied as given; for the detector they are parsed as
//! `YYYY-MM-DD HH:MM:SS[.fff]` (UTC, NAB's form), RFC 3339, or Unix seconds / milliseconds.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::sidecar::detector::{Detector, DetectorConfig};

/// A CSV series: the timestamps as written, as milliseconds, and the values.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Timestamps exactly as in the file.
    pub raw_timestamps: Vec<String>,
    /// Timestamps in milliseconds since the Unix epoch, as parsed (NAB files repeat a few, at
    /// daylight-saving changes).
    pub ts_ms: Vec<i64>,
    /// Values (`NaN` and infinities are kept; the detector skips them).
    pub values: Vec<f64>,
}

/// What failed while reading or writing a series.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A row is malformed.
    #[error("{path}:{line}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

/// Parses a timestamp into milliseconds since the Unix epoch: `YYYY-MM-DD HH:MM:SS[.f]` or
/// with a `T` (taken as UTC), RFC 3339, or a number of Unix seconds (milliseconds when above
/// 1e11).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    let n: f64 = s.parse().ok()?;
    if !n.is_finite() {
        return None;
    }
    Some(if n.abs() > 1e11 { n } else { n * 1000.0 }.round() as i64)
}

/// Reads a `timestamp,value` CSV with a header row.
pub fn read_series(path: &Path) -> Result<Series, SeriesError> {
    let io = |source| SeriesError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(std::io::BufReader::new(file));
    let malformed = |line: u64, message: String| SeriesError::Malformed {
        path: path.to_path_buf(),
        line,
        message,
    };
    let headers = reader
        .headers()
        .map_err(|e| malformed(1, e.to_string()))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (ts_col, value_col) = match (column("timestamp"), column("value")) {
        (Some(t), Some(v)) => (t, v),
        _ => {
            return Err(malformed(
                1,
                format!("expected a header with `timestamp` and `value`, found {headers:?}"),
            ));
        }
    };
    let mut series = Series::default();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line());
                return Err(malformed(line, e.to_string()));
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        let (Some(ts), Some(value)) = (record.get(ts_col), record.get(value_col)) else {
            return Err(malformed(
                line,
                format!("expected {} fields, found {}", headers.len(), record.len()),
            ));
        };
        let ms =
            parse_timestamp(ts).ok_or_else(|| malformed(line, format!("bad timestamp {ts:?}")))?;
        let v: f64 = value
            .trim()
            .parse()
            .map_err(|_| malformed(line, format!("bad value {value:?}")))?;
        series.raw_timestamps.push(ts.to_string());
        series.ts_ms.push(ms);
        series.values.push(v);
    }
    Ok(series)
}

/// Which detector a backtest runs.
#[derive(Debug, Clone)]
pub enum Method {
    /// The sidecar's detector with this configuration.
    Vitals(DetectorConfig),
    /// NAB's `windowedGaussian` reference detector (validates the scorer).
    WindowedGaussian,
}

/// Scores a series with the chosen detector, one score per row.
pub fn score_series(series: &Series, method: &Method) -> Vec<f64> {
    match method {
        Method::Vitals(config) => {
            let mut d = Detector::new(config.clone());
            // The detector wants strictly increasing times: a repeated or earlier timestamp
            // is fed one millisecond after the previous one.
            let mut last = i64::MIN;
            series
                .ts_ms
                .iter()
                .zip(&series.values)
                .map(|(&t, &v)| {
                    last = t.max(last.saturating_add(1));
                    d.update(last, v).anomaly
                })
                .collect()
        }
        Method::WindowedGaussian => crate::sidecar::nab::windowed_gaussian(&series.values),
    }
}

/// Writes `timestamp,value,anomaly_score` with full precision.
pub fn write_scored(path: &Path, series: &Series, scores: &[f64]) -> Result<(), SeriesError> {
    let io = |source| SeriesError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "timestamp,value,anomaly_score").map_err(io)?;
    for ((ts, v), s) in series.raw_timestamps.iter().zip(&series.values).zip(scores) {
        writeln!(out, "{ts},{v},{s}").map_err(io)?;
    }
    out.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_nab_rfc3339_and_unix_forms() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:01"), Some(1000));
        assert_eq!(parse_timestamp("1970-01-01 00:00:01.500000"), Some(1500));
        assert_eq!(parse_timestamp("1970-01-01T00:00:02Z"), Some(2000));
        assert_eq!(parse_timestamp("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_timestamp("1400000000"), Some(1_400_000_000_000));
        assert_eq!(parse_timestamp("1400000000123"), Some(1_400_000_000_123));
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn malformed_rows_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        std::fs::write(
            &p,
            "timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00,x\n",
        )
        .unwrap();
        let e = read_series(&p).unwrap_err().to_string();
        assert!(e.ends_with("s.csv:3: bad value \"x\""), "{e}");
        std::fs::write(&p, "timestamp,value\n2020-01-01 00:05:00,1\nnoon,2\n").unwrap();
        let e = read_series(&p).unwrap_err().to_string();
        assert!(e.ends_with("s.csv:3: bad timestamp \"noon\""), "{e}");
        std::fs::write(&p, "timestamp,value\n2020-01-01 00:05:00\n").unwrap();
        let e = read_series(&p).unwrap_err().to_string();
        assert!(e.contains("s.csv:2: expected 2 fields, found 1"), "{e}");
        std::fs::write(&p, "time,v\n1,2\n").unwrap();
        let e = read_series(&p).unwrap_err().to_string();
        assert!(e.contains("s.csv:1: expected a header"), "{e}");
    }

    #[test]
    fn scored_csv_round_trips_scores_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.csv");
        let series = Series {
            raw_timestamps: vec!["a".into(), "b".into()],
            ts_ms: vec![0, 1],
            values: vec![1.5, 2.0],
        };
        let scores = [0.1 + 0.2, 1.0 / 3.0];
        write_scored(&p, &series, &scores).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let back: Vec<f64> = text
            .lines()
            .skip(1)
            .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(back, scores);
        assert!(text.starts_with("timestamp,value,anomaly_score\na,1.5,0.30000000000000004\n"));
    }
}
