//! Client of the Prometheus HTTP query API (Prometheus, Thanos, Mimir, VictoriaMetrics).
//!
//! Queries are POSTed form-encoded to `<url>/api/v1/query` and `<url>/api/v1/query_range`, as
//! Grafana does, so long expressions fit; `url` may carry a path prefix (Mimir and
//! VictoriaMetrics `/prometheus`, VictoriaMetrics cluster `/select/0/prometheus`). Answers are
//! deserialized straight into typed structs (no `serde_json::Value` tree), sample values are
//! parsed from their strings (`NaN`, `+Inf`, `-Inf` included) without an allocation per
//! sample, and range queries longer than Prometheus' 11,000 points per series are split into
//! chunks and stitched back together. Native histogram samples are skipped with a warning.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};

use super::http::{HttpClient, HttpError};

/// Most points per series that one range query asks for (Prometheus refuses more than
/// 11,000 steps).
pub const MAX_POINTS_PER_QUERY: i64 = 11_000;

/// Longest expression text kept in an error message.
const EXPR_IN_ERRORS: usize = 300;

/// The labels of a series; includes `__name__` when the server returns it.
pub type Labels = std::collections::BTreeMap<String, String>;

/// One series of a range query (or of an instant query for a range selector).
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// The series' labels.
    pub labels: Labels,
    /// `(timestamp in ms, value)`, ascending by time, without duplicates.
    pub samples: Vec<(i64, f64)>,
}

/// The answer of a range query.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeResult {
    /// The series, sorted by labels.
    pub series: Vec<RangeSeries>,
    /// Warnings and info annotations of the server (from every chunk, deduplicated), and
    /// notes of the client (skipped native histograms).
    pub warnings: Vec<String>,
}

/// One sample of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantSample {
    /// The series' labels.
    pub labels: Labels,
    /// Evaluation timestamp in ms.
    pub ts_ms: i64,
    /// The value.
    pub value: f64,
}

/// The result of an instant query, by PromQL type.
#[derive(Debug, Clone, PartialEq)]
pub enum InstantData {
    /// An instant vector.
    Vector(Vec<InstantSample>),
    /// A scalar: `(timestamp in ms, value)`.
    Scalar(i64, f64),
    /// A string: `(timestamp in ms, text)`.
    String(i64, String),
    /// A range vector (the expression was a range selector such as `x[5m]`).
    Matrix(Vec<RangeSeries>),
}

/// The answer of an instant query.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantResult {
    /// The result.
    pub data: InstantData,
    /// Warnings and info annotations of the server, and notes of the client.
    pub warnings: Vec<String>,
}

/// Why a query failed. Every variant names the endpoint (its URL without credentials) and,
/// for queries, the expression; none contains a password or token.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// The endpoint's settings cannot be used.
    #[error("Prometheus API {endpoint}: {reason}")]
    Config {
        /// The endpoint.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// The arguments of a query cannot be sent (e.g. end before start, zero step).
    #[error("query {expr:?} at {endpoint}: {reason}")]
    Invalid {
        /// The endpoint.
        endpoint: String,
        /// The expression.
        expr: String,
        /// What is wrong.
        reason: String,
    },
    /// A password or token file could not be read.
    #[error("query {expr:?} at {endpoint}: {reason}")]
    Credentials {
        /// The endpoint.
        endpoint: String,
        /// The expression.
        expr: String,
        /// Which file, and why.
        reason: String,
    },
    /// No connection (refused, reset, DNS, TLS handshake), after all retries.
    #[error("query {expr:?} at {endpoint}: cannot connect after {attempts} attempt(s): {reason}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The expression.
        expr: String,
        /// What the transport said.
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// No complete answer within the timeout, after all retries.
    #[error("query {expr:?} at {endpoint}: no answer within {} (after {attempts} attempt(s))", humantime::format_duration(*timeout))]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The expression.
        expr: String,
        /// The per-request timeout.
        timeout: Duration,
        /// Attempts made.
        attempts: u32,
    },
    /// The API answered with an error (`"status": "error"`): a bad query (HTTP 400), an
    /// execution error (422), a timeout or overload on the server (503) ...
    #[error("query {expr:?} at {endpoint}: HTTP {status}, {error_type}: {error}")]
    Api {
        /// The endpoint.
        endpoint: String,
        /// The expression.
        expr: String,
        /// The HTTP status.
        status: u16,
        /// The API's `errorType` (`bad_data`, `execution`, `timeout`, ...).
        error_type: String,
        /// The API's `error` message.
        error: String,
        /// Attempts made (1 for a 4xx answer, which is never retried).
        attempts: u32,
    },
    /// An HTTP error whose body is not the API's JSON (authentication, a proxy, a wrong
    /// path prefix).
    #[error("query {expr:?} at {endpoint}: HTTP {status}: {body}")]
    Http {
        /// The endpoint.
        endpoint: String,
        /// The expression.
        expr: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body, for diagnosis.
        body: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A successful status whose body is not the expected JSON.
    #[error("query {expr:?} at {endpoint}: bad JSON in the answer: {reason}")]
    BadJson {
        /// The endpoint.
        endpoint: String,
        /// The expression.
        expr: String,
        /// The parser's message.
        reason: String,
    },
}

impl PromError {
    /// The HTTP status of the answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            PromError::Api { status, .. } | PromError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How many HTTP requests the failed call made, when it made any.
    pub fn attempts(&self) -> Option<u32> {
        match self {
            PromError::Connect { attempts, .. }
            | PromError::Timeout { attempts, .. }
            | PromError::Api { attempts, .. }
            | PromError::Http { attempts, .. } => Some(*attempts),
            _ => None,
        }
    }
}

/// A client of one Prometheus-compatible query API; cheap to clone, shares one connection
/// pool and one request counter between clones.
#[derive(Debug, Clone)]
pub struct PromClient {
    http: HttpClient,
}

impl PromClient {
    /// Builds the client for `endpoint` (reads its TLS files; password and token files are
    /// read for each request so that rotation works).
    pub fn new(endpoint: &crate::config::PrometheusEndpoint) -> Result<PromClient, PromError> {
        let http = HttpClient::new(endpoint).map_err(|e| PromError::Config {
            endpoint: super::http::display_url(&endpoint.url),
            reason: e.to_string(),
        })?;
        Ok(PromClient { http })
    }

    /// The endpoint's URL (without credentials), for logs.
    pub fn endpoint(&self) -> &str {
        self.http.endpoint()
    }

    /// Number of HTTP requests made so far, retries included (for the sidecar's self
    /// metrics).
    pub fn requests(&self) -> u64 {
        self.http.requests()
    }

    /// Instant query at `time_ms` (None = server's now).
    pub async fn query(
        &self,
        expr: &str,
        time_ms: Option<i64>,
    ) -> Result<InstantResult, PromError> {
        let time = time_ms.map(format_ms);
        let mut pairs = vec![("query", expr)];
        if let Some(t) = &time {
            pairs.push(("time", t));
        }
        let body = self.call("/api/v1/query", expr, encode(&pairs)).await?;
        decode_instant(&body).map_err(|reason| self.bad_json(expr, reason))
    }

    /// Range query [start_ms, end_ms] at `step`, split into chunks of at most 11,000 points
    /// per series and stitched back (no duplicated or missing boundary points).
    pub async fn query_range(
        &self,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step: Duration,
    ) -> Result<RangeResult, PromError> {
        let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX);
        if step_ms <= 0 {
            return Err(self.invalid(expr, "step must be at least 1ms".into()));
        }
        if end_ms < start_ms {
            return Err(self.invalid(
                expr,
                format!("end {end_ms} ms is before start {start_ms} ms"),
            ));
        }
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut series: Vec<RangeSeries> = Vec::new();
        let mut warnings = Vec::new();
        let mut notes = Notes::default();
        let chunk_span = step_ms.saturating_mul(MAX_POINTS_PER_QUERY);
        let mut chunk_start = start_ms;
        loop {
            let chunk_end = end_ms.min(chunk_start.saturating_add(chunk_span - step_ms));
            let form = encode(&[
                ("query", expr),
                ("start", &format_ms(chunk_start)),
                ("end", &format_ms(chunk_end)),
                ("step", &format_ms(step_ms)),
            ]);
            let body = self.call("/api/v1/query_range", expr, form).await?;
            let response = parse::<RawData>(&body).map_err(|reason| self.bad_json(expr, reason))?;
            let chunk = match response.data {
                RawData::Matrix(chunk) => chunk,
                other => {
                    return Err(self.bad_json(
                        expr,
                        format!("a range query answered a {}, not a matrix", other.kind()),
                    ));
                }
            };
            drop(body);
            for raw in chunk {
                let new = raw.into_series(&mut notes);
                match index.get(&new.labels) {
                    Some(&i) => {
                        let old = &mut series[i].samples;
                        let last = old.last().map_or(i64::MIN, |s| s.0);
                        // Servers that align chunk edges to the step may repeat an edge point.
                        old.extend(new.samples.into_iter().filter(|s| s.0 > last));
                    }
                    None => {
                        index.insert(new.labels.clone(), series.len());
                        series.push(new);
                    }
                }
            }
            merge_warnings(&mut warnings, response.warnings, response.infos);
            if chunk_end >= end_ms {
                break;
            }
            chunk_start = chunk_start.saturating_add(chunk_span);
        }
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        notes.push_into(&mut warnings);
        Ok(RangeResult { series, warnings })
    }

    /// POSTs the form and returns the body of a successful answer, or the error.
    async fn call(&self, path: &str, expr: &str, form: String) -> Result<Bytes, PromError> {
        let endpoint = || self.http.endpoint().to_string();
        let response = self
            .http
            .post(path, "application/x-www-form-urlencoded", Bytes::from(form))
            .await
            .map_err(|e| match e {
                HttpError::Config(reason) => PromError::Config {
                    endpoint: endpoint(),
                    reason,
                },
                HttpError::Credentials(reason) => PromError::Credentials {
                    endpoint: endpoint(),
                    expr: short(expr),
                    reason,
                },
                HttpError::Connect { reason, attempts } => PromError::Connect {
                    endpoint: endpoint(),
                    expr: short(expr),
                    reason,
                    attempts,
                },
                HttpError::Timeout { timeout, attempts } => PromError::Timeout {
                    endpoint: endpoint(),
                    expr: short(expr),
                    timeout,
                    attempts,
                },
            })?;
        if response.status.is_success() {
            return Ok(response.body);
        }
        let status = response.status.as_u16();
        match serde_json::from_slice::<RawError>(&response.body) {
            Ok(err) if err.status == "error" => Err(PromError::Api {
                endpoint: endpoint(),
                expr: short(expr),
                status,
                error_type: err.error_type.unwrap_or_default(),
                error: err.error.unwrap_or_default(),
                attempts: response.attempts,
            }),
            _ => Err(PromError::Http {
                endpoint: endpoint(),
                expr: short(expr),
                status,
                body: body_excerpt(&response.body),
                attempts: response.attempts,
            }),
        }
    }

    fn bad_json(&self, expr: &str, reason: String) -> PromError {
        PromError::BadJson {
            endpoint: self.http.endpoint().to_string(),
            expr: short(expr),
            reason,
        }
    }

    fn invalid(&self, expr: &str, reason: String) -> PromError {
        PromError::Invalid {
            endpoint: self.http.endpoint().to_string(),
            expr: short(expr),
            reason,
        }
    }
}

/// `application/x-www-form-urlencoded` text of `pairs` (a plain function: the serializer is
/// not `Send` and must not live across an await).
fn encode(pairs: &[(&str, &str)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.extend_pairs(pairs);
    form.finish()
}

/// Milliseconds as the API's decimal seconds (`1700000000.123`), exact.
fn format_ms(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    format!("{sign}{}.{:03}", abs / 1000, abs % 1000)
}

/// The API's float seconds as milliseconds (rounded: `1.001` is not exactly representable).
fn seconds_to_ms(s: f64) -> i64 {
    (s * 1000.0).round() as i64
}

/// A sample value as the API writes it: a decimal, `NaN`, `+Inf` or `-Inf`.
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

fn short(expr: &str) -> String {
    if expr.len() <= EXPR_IN_ERRORS {
        return expr.to_string();
    }
    let mut end = EXPR_IN_ERRORS;
    while !expr.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &expr[..end])
}

fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    if text.is_empty() {
        "<empty body>".into()
    } else {
        text.to_string()
    }
}

fn merge_warnings(into: &mut Vec<String>, warnings: Vec<String>, infos: Vec<String>) {
    for w in warnings
        .into_iter()
        .chain(infos.into_iter().map(|i| format!("info: {i}")))
    {
        if !into.contains(&w) {
            into.push(w);
        }
    }
}

/// What the client dropped while converting an answer.
#[derive(Default)]
struct Notes {
    histograms: usize,
}

impl Notes {
    fn push_into(self, warnings: &mut Vec<String>) {
        if self.histograms > 0 {
            warnings.push(format!(
                "vitals: skipped {} native histogram sample(s) (not supported)",
                self.histograms
            ));
        }
    }
}

/// Decodes the body of a successful `/api/v1/query` answer (the error is the reason it is not
/// a valid answer). Public so that the fuzz targets can feed it malformed responses.
pub fn decode_instant(body: &[u8]) -> Result<InstantResult, String> {
    let response = parse::<RawData>(body)?;
    let mut notes = Notes::default();
    let data = match response.data {
        RawData::Vector(samples) => InstantData::Vector(
            samples
                .into_iter()
                .filter_map(|s| match s.value {
                    Some(Point(ts_ms, value)) => Some(InstantSample {
                        labels: s.metric,
                        ts_ms,
                        value,
                    }),
                    None => {
                        notes.histograms += usize::from(s.histogram.is_some());
                        None
                    }
                })
                .collect(),
        ),
        RawData::Matrix(series) => InstantData::Matrix(
            series
                .into_iter()
                .map(|s| s.into_series(&mut notes))
                .collect(),
        ),
        RawData::Scalar(Point(ts, v)) => InstantData::Scalar(ts, v),
        RawData::String(StrPoint(ts, s)) => InstantData::String(ts, s),
    };
    let mut warnings = Vec::new();
    merge_warnings(&mut warnings, response.warnings, response.infos);
    notes.push_into(&mut warnings);
    Ok(InstantResult { data, warnings })
}

/// Decodes the body of a successful `/api/v1/query_range` answer into its series, each with
/// samples in strictly increasing time order, and the warnings. Public so that the fuzz
/// targets can feed it malformed responses.
pub fn decode_range(body: &[u8]) -> Result<RangeResult, String> {
    let response = parse::<RawData>(body)?;
    let RawData::Matrix(raw) = response.data else {
        return Err(format!(
            "a range query answered a {}, not a matrix",
            response.data.kind()
        ));
    };
    let mut notes = Notes::default();
    let series = raw.into_iter().map(|s| s.into_series(&mut notes)).collect();
    let mut warnings = Vec::new();
    merge_warnings(&mut warnings, response.warnings, response.infos);
    notes.push_into(&mut warnings);
    Ok(RangeResult { series, warnings })
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<RawResponse<T>, String> {
    let response: RawResponse<T> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if response.status != "success" {
        return Err(format!("status {:?} with HTTP 200", response.status));
    }
    Ok(response)
}

// ---- the JSON, typed ----

#[derive(Deserialize)]
struct RawResponse<T> {
    status: String,
    data: T,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    infos: Vec<String>,
}

#[derive(Deserialize)]
struct RawError {
    status: String,
    #[serde(rename = "errorType", default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum RawData {
    Matrix(Vec<RawSeries>),
    Vector(Vec<RawSample>),
    Scalar(Point),
    String(StrPoint),
}

impl RawData {
    fn kind(&self) -> &'static str {
        match self {
            RawData::Matrix(_) => "matrix",
            RawData::Vector(_) => "vector",
            RawData::Scalar(_) => "scalar",
            RawData::String(_) => "string",
        }
    }
}

#[derive(Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: Labels,
    #[serde(default)]
    values: Vec<Point>,
    #[serde(default)]
    histograms: Vec<IgnoredAny>,
}

impl RawSeries {
    fn into_series(self, notes: &mut Notes) -> RangeSeries {
        notes.histograms += self.histograms.len();
        let mut samples: Vec<(i64, f64)> = self.values.into_iter().map(|p| (p.0, p.1)).collect();
        if !samples.is_sorted_by(|a, b| a.0 < b.0) {
            samples.sort_by_key(|s| s.0);
            samples.dedup_by_key(|s| s.0);
        }
        RangeSeries {
            labels: self.metric,
            samples,
        }
    }
}

#[derive(Deserialize)]
struct RawSample {
    #[serde(default)]
    metric: Labels,
    #[serde(default)]
    value: Option<Point>,
    #[serde(default)]
    histogram: Option<IgnoredAny>,
}

/// `[seconds, "value"]` as `(ms, value)`, parsed without allocating.
struct Point(i64, f64);

impl<'de> Deserialize<'de> for Point {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Point;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a [timestamp, \"value\"] pair")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Point, A::Error> {
                let ts: f64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let FloatStr(value) = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(Point(seconds_to_ms(ts), value))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A sample value string, parsed to f64.
struct FloatStr(f64);

impl<'de> Deserialize<'de> for FloatStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FloatStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sample value string such as \"1.5\", \"NaN\" or \"+Inf\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FloatStr, E> {
                parse_value(s)
                    .map(FloatStr)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_str(V)
    }
}

/// `[seconds, "text"]` of a string result.
struct StrPoint(i64, String);

impl<'de> Deserialize<'de> for StrPoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (ts, text): (f64, String) = Deserialize::deserialize(d)?;
        Ok(StrPoint(seconds_to_ms(ts), text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_including_specials() {
        assert_eq!(parse_value("1.5"), Some(1.5));
        assert_eq!(parse_value("-2e-3"), Some(-0.002));
        assert!(parse_value("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_value("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_value("-Inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_value("x"), None);
    }

    #[test]
    fn milliseconds_format_exactly() {
        assert_eq!(format_ms(1_700_000_000_123), "1700000000.123");
        assert_eq!(format_ms(5), "0.005");
        assert_eq!(format_ms(-1500), "-1.500");
        assert_eq!(seconds_to_ms(1_435_781_430.781), 1_435_781_430_781);
        assert_eq!(seconds_to_ms(1.001), 1001);
    }

    #[test]
    fn matrix_vector_scalar_string_deserialize() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"up","job":"a"},"values":[[1,"1"],[2.5,"NaN"],[4,"+Inf"]]},
            {"metric":{},"histograms":[[1,{"count":"1"}]]}]},"warnings":["w1"],"infos":["i1"]}"#;
        let r = parse::<RawData>(body).expect("parses");
        assert_eq!(r.warnings, vec!["w1"]);
        assert_eq!(r.infos, vec!["i1"]);
        let RawData::Matrix(series) = r.data else {
            panic!("matrix expected")
        };
        let mut notes = Notes::default();
        let s: Vec<_> = series
            .into_iter()
            .map(|s| s.into_series(&mut notes))
            .collect();
        assert_eq!(s[0].labels["job"], "a");
        assert_eq!(s[0].samples[0], (1000, 1.0));
        assert_eq!(s[0].samples[1].0, 2500);
        assert!(s[0].samples[1].1.is_nan());
        assert_eq!(s[0].samples[2], (4000, f64::INFINITY));
        assert_eq!(notes.histograms, 1);

        let body = br#"{"status":"success","data":{"resultType":"scalar","result":[10.5,"-Inf"]}}"#;
        let r = parse::<RawData>(body).expect("parses");
        assert!(matches!(r.data, RawData::Scalar(Point(10500, v)) if v == f64::NEG_INFINITY));
        let body =
            br#"{"status":"success","data":{"resultType":"string","result":[1,"hi \"x\""]}}"#;
        let r = parse::<RawData>(body).expect("parses");
        assert!(matches!(r.data, RawData::String(StrPoint(1000, ref s)) if s == "hi \"x\""));
        let body = br#"{"data":{"result":[{"metric":{"a":"b"},"value":[3,"7"]}],"resultType":"vector"},"status":"success"}"#;
        let r = parse::<RawData>(body).expect("result before resultType is fine too");
        assert!(matches!(r.data, RawData::Vector(ref v) if v.len() == 1));
        assert!(parse::<RawData>(br#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"z"]}]}}"#).is_err());
    }

    #[test]
    fn client_and_futures_are_send_and_sync() {
        fn send<T: Send>(_: &T) {}
        fn send_sync<T: Send + Sync + Clone>(_: &T) {}
        let c = PromClient::new(&crate::config::PrometheusEndpoint::default()).expect("client");
        send_sync(&c);
        send(&c.query("up", None));
        send(&c.query_range("up", 0, 1, Duration::from_secs(1)));
    }

    #[test]
    fn long_expressions_are_shortened_in_errors() {
        let long = "é".repeat(400);
        let s = short(&long);
        assert!(s.len() <= EXPR_IN_ERRORS + 3 && s.ends_with("..."));
        assert_eq!(short("up"), "up");
    }
}
