//! The PromQL client against real Prometheus and VictoriaMetrics.
//!
//! Both servers get the same history (Prometheus through `promtool tsdb create-blocks-from
//! openmetrics`, VictoriaMetrics through its import API), and the same checks run against
//! both: exact values of instant and range queries, range queries chunked past 11,000 points,
//! NaN and infinities, API errors without retries. Transport behaviour (timeouts, retries,
//! headers, the form-encoded POST) is checked against small loopback servers written here, as
//! no real server can be told to hang or fail on cue; authentication and TLS against a
//! Prometheus started with a web config.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vitals::config::{Authorization, Config, PromDuration, PrometheusEndpoint, TlsClientConfig};
use vitals::sidecar::promql::{
    InstantData, InstantResult, MAX_POINTS_PER_QUERY, PromClient, PromError, RangeResult,
};

use crate::support::prometheus::{HistorySeries, Prometheus, openmetrics_text};
use crate::support::victoria::{VictoriaMetrics, prometheus_text_ms};
use crate::support::{free_port, temp_dir, write_file};

const MINUTE: i64 = 60_000;

/// Points of the long series: more than one chunk of [`MAX_POINTS_PER_QUERY`].
const LONG_POINTS: i64 = 12_000;

/// The values of `vt_special`, one a minute from the start.
const SPECIALS: [f64; 5] = [1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 2.5];

/// The history both servers hold.
struct History {
    /// First sample, on a whole hour about 9 days ago.
    start: i64,
    series: Vec<HistorySeries>,
}

/// `vt_gauge{instance="a"}` at minute `i`: quarter steps, exact in binary and decimal.
fn gauge_a(i: i64) -> f64 {
    (i % 1000) as f64 * 0.25
}

/// `vt_gauge{instance="b"}` at minute `i`.
fn gauge_b(i: i64) -> f64 {
    1e6 - (i % 37) as f64
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("ms fit i64")
}

/// The full history: [`LONG_POINTS`] minutes of `vt_gauge`.
fn history() -> History {
    history_of(LONG_POINTS)
}

/// History with `points` minutes of `vt_gauge` (promtool's work grows with the number of
/// 2-hour blocks, so tests that need no long series use a short one).
fn history_of(points: i64) -> History {
    let start = (now_ms() - 9 * 86_400_000).div_euclid(3_600_000) * 3_600_000;
    let mut a = HistorySeries::new("vt_gauge", &[("instance", "a")]);
    let mut b = HistorySeries::new("vt_gauge", &[("instance", "b")]);
    for i in 0..points {
        a.samples.push((start + i * MINUTE, gauge_a(i)));
        b.samples.push((start + i * MINUTE, gauge_b(i)));
    }
    let mut special = HistorySeries::new("vt_special", &[("kind", "mixed")]);
    for (i, v) in (0i64..).zip(SPECIALS) {
        special.samples.push((start + i * MINUTE, v));
    }
    History {
        start,
        series: vec![a, b, special],
    }
}

fn prometheus_with(h: &History) -> Prometheus {
    Prometheus::builder()
        .backfill_openmetrics(&openmetrics_text(&h.series))
        .start()
}

fn victoria_with(h: &History) -> VictoriaMetrics {
    let vm = VictoriaMetrics::start();
    vm.import_prometheus(&prometheus_text_ms(&h.series));
    vm
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn client(url: &str) -> PromClient {
    PromClient::new(&PrometheusEndpoint::new(url)).expect("client for a valid URL")
}

/// Same value, NaN included.
fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// The one number of an instant result: a scalar, or a vector of one sample.
fn single_value(r: &InstantResult) -> f64 {
    match &r.data {
        InstantData::Scalar(_, v) => *v,
        InstantData::Vector(v) if v.len() == 1 => v[0].value,
        other => panic!("expected one number, got {other:?}"),
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Server {
    Prometheus,
    Victoria,
}

/// Every data check, against one server.
fn check_values(c: &PromClient, h: &History, server: Server) {
    let rt = runtime();
    let start = h.start;

    // Instant vector at a sample's own timestamp: both series, labels and exact values.
    let t = start + 100 * MINUTE;
    let r = rt
        .block_on(c.query("vt_gauge", Some(t)))
        .expect("instant query");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let InstantData::Vector(mut samples) = r.data else {
        panic!("vector expected: {r:?}")
    };
    samples.sort_by(|x, y| x.labels.cmp(&y.labels));
    assert_eq!(samples.len(), 2, "{samples:?}");
    assert_eq!(
        samples[0].labels.get("__name__").map(String::as_str),
        Some("vt_gauge")
    );
    assert_eq!(
        samples[0].labels.get("instance").map(String::as_str),
        Some("a")
    );
    assert_eq!(samples[0].labels.len(), 2, "{:?}", samples[0].labels);
    assert_eq!((samples[0].ts_ms, samples[0].value), (t, gauge_a(100)));
    assert_eq!((samples[1].ts_ms, samples[1].value), (t, gauge_b(100)));

    // An aggregation: no labels, exact sum.
    let r = rt
        .block_on(c.query("sum(vt_gauge)", Some(t + 30_000)))
        .expect("sum");
    let InstantData::Vector(v) = &r.data else {
        panic!("vector expected: {r:?}")
    };
    assert_eq!(v.len(), 1);
    assert!(v[0].labels.is_empty(), "{:?}", v[0].labels);
    assert_eq!(v[0].ts_ms, t + 30_000);
    assert_eq!(v[0].value, gauge_a(100) + gauge_b(100));

    // A short range: every point exact.
    let r = rt
        .block_on(c.query_range(
            "vt_gauge",
            start,
            start + 199 * MINUTE,
            Duration::from_secs(60),
        ))
        .expect("range query");
    assert_eq!(r.series.len(), 2);
    for (s, f) in r.series.iter().zip([gauge_a as fn(i64) -> f64, gauge_b]) {
        let want: Vec<(i64, f64)> = (0..200).map(|i| (start + i * MINUTE, f(i))).collect();
        assert_eq!(s.samples, want, "series {:?}", s.labels);
    }

    // 12,000 points: two requests (11,000 + 1,000), every point exactly once.
    let before = c.requests();
    let end = start + (LONG_POINTS - 1) * MINUTE;
    let r = rt
        .block_on(c.query_range("vt_gauge", start, end, Duration::from_secs(60)))
        .expect("chunked range query");
    assert_eq!(c.requests() - before, 2, "12,000 points take two requests");
    assert_long_range(&r, start, MINUTE, LONG_POINTS, |i| (gauge_a(i), gauge_b(i)));

    // Step 30 s over the same span: 23,999 points in three requests; between two samples
    // the older one is repeated (lookback).
    let before = c.requests();
    let r = rt
        .block_on(c.query_range("vt_gauge", start, end, Duration::from_secs(30)))
        .expect("chunked range query at 30s");
    let points = 2 * (LONG_POINTS - 1) + 1;
    assert_eq!(
        c.requests() - before,
        (points + MAX_POINTS_PER_QUERY - 1) as u64 / MAX_POINTS_PER_QUERY as u64
    );
    assert_long_range(&r, start, MINUTE / 2, points, |j| {
        (gauge_a(j / 2), gauge_b(j / 2))
    });

    // NaN and infinities stored in the TSDB. VictoriaMetrics drops NaN samples at ingestion
    // (it takes them for Prometheus staleness markers), so there the minute shows the
    // previous value, as lookback does.
    let r = rt
        .block_on(c.query_range(
            "vt_special",
            start,
            start + 4 * MINUTE,
            Duration::from_secs(60),
        ))
        .expect("specials");
    assert_eq!(r.series.len(), 1);
    let mut want = SPECIALS.to_vec();
    if server == Server::Victoria {
        want[1] = SPECIALS[0];
    }
    let got: Vec<f64> = r.series[0].samples.iter().map(|s| s.1).collect();
    assert!(
        got.len() == want.len() && got.iter().zip(&want).all(|(a, b)| same(*a, *b)),
        "{server:?}: got {got:?}, want {want:?}"
    );
    let r = rt
        .block_on(c.query("vt_special", Some(start + 2 * MINUTE)))
        .expect("+Inf sample");
    assert_eq!(single_value(&r), f64::INFINITY);

    // NaN and infinities computed by the query engine. VictoriaMetrics leaves NaN results
    // out of its answers altogether.
    for (expr, want) in [
        ("0/0", f64::NAN),
        ("1/0", f64::INFINITY),
        ("-1/0", f64::NEG_INFINITY),
    ] {
        let r = rt.block_on(c.query(expr, Some(t))).expect(expr);
        if server == Server::Victoria && want.is_nan() {
            assert_eq!(r.data, InstantData::Vector(vec![]), "{expr}");
            continue;
        }
        assert!(same(single_value(&r), want), "{server:?} {expr}: {r:?}");
    }

    // Nothing matches: empty results, not errors.
    let r = rt
        .block_on(c.query("vt_absent_metric", Some(t)))
        .expect("empty instant");
    assert_eq!(r.data, InstantData::Vector(vec![]));
    let r = rt
        .block_on(c.query_range("vt_absent_metric", start, end, Duration::from_secs(60)))
        .expect("empty range");
    assert!(r.series.is_empty());

    // A bad query: the API's error, one request, no retry.
    let before = c.requests();
    let err = rt
        .block_on(c.query("sum(vt_gauge", Some(t)))
        .expect_err("a syntax error");
    assert_eq!(c.requests() - before, 1, "a 4xx answer is not retried");
    let PromError::Api {
        status,
        ref error_type,
        ref error,
        attempts,
        ..
    } = err
    else {
        panic!("API error expected, got {err:?}")
    };
    let (want_status, want_type) = match server {
        Server::Prometheus => (400, "bad_data"),
        Server::Victoria => (422, "422"),
    };
    assert_eq!(
        (status, error_type.as_str(), attempts),
        (want_status, want_type, 1)
    );
    assert!(!error.is_empty());
    let text = err.to_string();
    assert!(
        text.contains(c.endpoint()) && text.contains("sum(vt_gauge") && text.contains(error),
        "the error names endpoint, expression and the server's message: {text}"
    );
    // A bad range query, too (VictoriaMetrics accepts `rate(x)` without a window, so the
    // error is an unknown function).
    let before = c.requests();
    let err = match rt.block_on(c.query_range(
        "no_such_function(vt_gauge)",
        start,
        end,
        Duration::from_secs(60),
    )) {
        Ok(r) => panic!("an unknown function answered {} series", r.series.len()),
        Err(e) => e,
    };
    assert!(
        matches!(
            err,
            PromError::Api {
                status: 400..=499,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        c.requests() - before,
        1,
        "the first chunk's 4xx ends the query"
    );
}

/// Checks a long range result of two series: `points` points `step_ms` apart from `start`,
/// each exactly once, with the values `values(i)` for `instance` a and b.
fn assert_long_range(
    r: &RangeResult,
    start: i64,
    step_ms: i64,
    points: i64,
    values: impl Fn(i64) -> (f64, f64),
) {
    assert_eq!(r.series.len(), 2);
    for (k, s) in r.series.iter().enumerate() {
        assert_eq!(
            s.samples.len() as i64,
            points,
            "series {:?}: every point once",
            s.labels
        );
        for (i, (ts, v)) in (0i64..).zip(&s.samples) {
            let want = values(i);
            let want = if k == 0 { want.0 } else { want.1 };
            assert_eq!(
                (*ts, *v),
                (start + i * step_ms, want),
                "series {:?} point {i}",
                s.labels
            );
        }
    }
}

#[test]
fn prometheus_answers_backfilled_history_exactly() {
    let h = history();
    let prom = prometheus_with(&h);
    let c = client(&prom.url());
    check_values(&c, &h, Server::Prometheus);

    // Types only Prometheus has: strings, and range vectors from an instant query (2.42
    // includes both ends of the range: 4 samples for 3m).
    let rt = runtime();
    let t = h.start + 10 * MINUTE;
    let r = rt.block_on(c.query("\"hello\"", Some(t))).expect("string");
    assert_eq!(r.data, InstantData::String(t, "hello".into()));
    let r = rt
        .block_on(c.query("vt_gauge{instance=\"a\"}[3m]", Some(t)))
        .expect("range vector");
    let InstantData::Matrix(m) = r.data else {
        panic!("matrix expected")
    };
    let want: Vec<(i64, f64)> = (7..=10)
        .map(|i| (h.start + i * MINUTE, gauge_a(i)))
        .collect();
    assert_eq!(m[0].samples, want);
}

#[test]
fn victoria_metrics_answers_the_same_history_exactly() {
    let h = history();
    let vm = victoria_with(&h);
    check_values(&client(&vm.url()), &h, Server::Victoria);

    // The same API under VictoriaMetrics' `/prometheus` prefix (as for Mimir and the
    // VictoriaMetrics cluster's `/select/0/prometheus`).
    let rt = runtime();
    let prefixed = client(&format!("{}/prometheus/", vm.url()));
    let t = h.start + 5 * MINUTE;
    let r = rt
        .block_on(prefixed.query("vt_gauge{instance=\"b\"}", Some(t)))
        .expect("query under /prometheus");
    assert_eq!(single_value(&r), gauge_b(5));
    let r = rt
        .block_on(prefixed.query_range(
            "vt_gauge{instance=\"b\"}",
            h.start,
            h.start + 9 * MINUTE,
            Duration::from_secs(60),
        ))
        .expect("range under /prometheus");
    let want: Vec<(i64, f64)> = (0..10)
        .map(|i| (h.start + i * MINUTE, gauge_b(i)))
        .collect();
    assert_eq!(r.series[0].samples, want);

    // A wrong prefix: a plain HTTP error naming the endpoint, not retried.
    let wrong = client(&format!("{}/nope", vm.url()));
    let err = rt
        .block_on(wrong.query("vt_gauge", Some(t)))
        .expect_err("wrong path prefix");
    assert!(
        matches!(
            err,
            PromError::Http {
                status: 400..=499,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("/nope"), "{err}");
}

#[test]
fn prometheus_warnings_are_surfaced() {
    // Prometheus 2.42 has no PromQL info annotations yet (rate() on a gauge warns from 2.46
    // on, and the API's `infos` from 3.0); its warnings come from storage. A remote-read
    // endpoint that refuses connections makes every query answer with data plus a warning.
    let h = history_of(240);
    let dead = free_port();
    let prom = Prometheus::builder()
        .backfill_openmetrics(&openmetrics_text(&h.series))
        .extra_config(&format!(
            "remote_read:\n  - url: 'http://127.0.0.1:{dead}/api/v1/read'\n    read_recent: true\n"
        ))
        .start();
    let c = client(&prom.url());
    let rt = runtime();
    let t = h.start + 3 * MINUTE;
    let r = rt
        .block_on(c.query("vt_gauge{instance=\"a\"}", Some(t)))
        .expect("query with a warning");
    assert_eq!(single_value(&r), gauge_a(3));
    assert!(
        r.warnings.iter().any(|w| w.contains(&dead.to_string())),
        "the remote-read failure is a warning: {:?}",
        r.warnings
    );
    // Range queries too, and a chunked one (12,000 steps of 1 s, two requests) reports the
    // warning of each chunk once.
    let before = c.requests();
    let r = rt
        .block_on(c.query_range(
            "vt_gauge{instance=\"a\"}",
            h.start,
            h.start + 11_999_000,
            Duration::from_secs(1),
        ))
        .expect("range query with a warning");
    assert_eq!(c.requests() - before, 2);
    assert_eq!(r.series[0].samples.len(), 12_000);
    assert_eq!(
        r.series[0].samples[11_999],
        (h.start + 11_999_000, gauge_a(199))
    );
    assert!(!r.warnings.is_empty());
    let mut unique = r.warnings.clone();
    unique.dedup();
    assert_eq!(unique, r.warnings, "warnings are deduplicated");
}

/// Accepts connections and never answers; keeps them open. Returns the port and a counter
/// of accepted connections.
fn silent_server() -> (u16, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(Mutex::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            *counter.lock().expect("lock") += 1;
            held.push(stream);
        }
    });
    (port, count)
}

#[test]
fn a_server_that_never_answers_times_out_after_the_retries() {
    let (port, accepted) = silent_server();
    let mut endpoint = PrometheusEndpoint::new(format!("http://127.0.0.1:{port}"));
    endpoint.timeout = PromDuration(Duration::from_millis(300));
    endpoint.retries = 1;
    endpoint.retry_backoff = PromDuration(Duration::from_millis(50));
    let c = PromClient::new(&endpoint).expect("client");
    let started = Instant::now();
    let err = runtime()
        .block_on(c.query("up", None))
        .expect_err("must time out");
    let elapsed = started.elapsed();
    assert!(
        matches!(err, PromError::Timeout { attempts: 2, timeout, .. } if timeout == Duration::from_millis(300)),
        "{err:?}"
    );
    assert_eq!(c.requests(), 2);
    assert_eq!(
        *accepted.lock().expect("lock"),
        2,
        "one connection per attempt"
    );
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_secs(5),
        "two attempts of 300 ms: {elapsed:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("no answer within 300ms") && text.contains(&port.to_string()),
        "{text}"
    );
}

/// Forwards every connection on `listener` to `upstream` (a TCP proxy, for a server that
/// appears on a port while the client is retrying).
fn forward(listener: TcpListener, upstream: SocketAddr) {
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(upstream) else {
                continue;
            };
            let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            let (mut c1, mut s1) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c1, &mut s1);
                let _ = s1.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}

#[test]
fn connection_refused_is_retried_until_the_server_is_up() {
    let h = history_of(60);
    let vm = victoria_with(&h);
    let upstream: SocketAddr = format!("127.0.0.1:{}", vm.port()).parse().expect("addr");
    let port = free_port();
    let mut endpoint = PrometheusEndpoint::new(format!("http://127.0.0.1:{port}"));
    endpoint.retries = 6;
    endpoint.retry_backoff = PromDuration(Duration::from_millis(200));
    let c = PromClient::new(&endpoint).expect("client");
    let rt = runtime();
    let t = h.start + 42 * MINUTE;
    let task = {
        let c = c.clone();
        rt.spawn(async move { c.query("vt_gauge{instance=\"a\"}", Some(t)).await })
    };
    // Drive the runtime until the first attempt has been refused, then open the port.
    let refused = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.requests() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        c.requests()
    });
    assert!(refused >= 1, "the first attempt never happened");
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the retried port");
    forward(listener, upstream);
    let r = rt
        .block_on(task)
        .expect("task")
        .expect("success after the port opened");
    assert_eq!(single_value(&r), gauge_a(42));
    assert!(c.requests() >= 2, "at least one retry: {}", c.requests());

    // Connection refused for good: a connect error after 1 + retries attempts.
    let mut endpoint = PrometheusEndpoint::new(format!("http://127.0.0.1:{}", free_port()));
    endpoint.retries = 2;
    endpoint.retry_backoff = PromDuration(Duration::from_millis(10));
    let c = PromClient::new(&endpoint).expect("client");
    let err = rt
        .block_on(c.query("up", None))
        .expect_err("nobody listens");
    assert!(
        matches!(err, PromError::Connect { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
}

/// One request as a loopback test server received it.
#[derive(Debug, Clone)]
struct Captured {
    request_line: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Captured {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

const VECTOR_OK: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"x"},"value":[1700000000.5,"7"]}]}}"#;
const MATRIX_OK: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"job":"x"},"values":[[1700000000,"1"],[1700000060,"2"]]}]},"warnings":["from the test server"]}"#;

/// A tiny HTTP/1.1 server that records every request and answers from `script` (status,
/// body) in order, then with `fallback` for `/api/v1/query` or [`MATRIX_OK`] for
/// `/api/v1/query_range`. Closes each connection after one answer.
fn capturing_server(script: Vec<(u16, String)>) -> (u16, Arc<Mutex<Vec<Captured>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        for mut stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let Some(req) = read_request(&mut stream) else {
                continue;
            };
            let (status, body) = script.next().unwrap_or_else(|| {
                let ok = if req.request_line.contains("query_range") {
                    MATRIX_OK
                } else {
                    VECTOR_OK
                };
                (200, ok.to_string())
            });
            record.lock().expect("lock").push(req);
            let answer = format!(
                "HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (port, seen)
}

fn read_request(stream: &mut TcpStream) -> Option<Captured> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Captured {
        request_line,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn form(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

#[test]
fn headers_credentials_and_the_form_post_reach_the_server() {
    let (port, seen) = capturing_server(vec![]);
    let dir = temp_dir("promql-headers");
    let token_file = dir.path().join("token");
    write_file(&token_file, "tok-123\n");
    let mut endpoint = PrometheusEndpoint::new(format!("http://127.0.0.1:{port}/prefix/"));
    endpoint
        .headers
        .insert("X-Scope-OrgID".into(), "tenant-1".into());
    endpoint.authorization = Some(Authorization {
        kind: "Bearer".into(),
        credentials: None,
        credentials_file: Some(token_file.clone()),
    });
    let c = PromClient::new(&endpoint).expect("client");
    let rt = runtime();
    // A long expression, as Grafana sends them: a form body, not a URL.
    let long_expr = format!(
        "sum(rate(x{{a=~\"{}\"}}[5m])) + 1",
        (0..2000)
            .map(|i| format!("v{i}"))
            .collect::<Vec<_>>()
            .join("|")
    );
    let r = rt
        .block_on(c.query(&long_expr, Some(1_700_000_000_123)))
        .expect("query");
    let InstantData::Vector(v) = &r.data else {
        panic!("vector expected")
    };
    assert_eq!((v[0].ts_ms, v[0].value), (1_700_000_000_500, 7.0));
    // The token file is read for each request: a rotated token is used at once.
    write_file(&token_file, "tok-456\n");
    let r = rt
        .block_on(c.query_range(
            "up",
            1_700_000_000_000,
            1_700_000_060_000,
            Duration::from_millis(60_000),
        ))
        .expect("range");
    assert_eq!(
        r.series[0].samples,
        vec![(1_700_000_000_000, 1.0), (1_700_000_060_000, 2.0)]
    );
    assert_eq!(r.warnings, vec!["from the test server".to_string()]);

    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    let q = &seen[0];
    assert_eq!(q.request_line, "POST /prefix/api/v1/query HTTP/1.1");
    assert_eq!(
        q.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(q.header("x-scope-orgid"), Some("tenant-1"));
    assert_eq!(q.header("authorization"), Some("Bearer tok-123"));
    assert!(
        q.header("user-agent")
            .is_some_and(|u| u.starts_with("vitals/"))
    );
    assert_eq!(
        form(&q.body),
        vec![
            ("query".to_string(), long_expr.clone()),
            ("time".to_string(), "1700000000.123".to_string())
        ]
    );
    let qr = &seen[1];
    assert_eq!(qr.request_line, "POST /prefix/api/v1/query_range HTTP/1.1");
    assert_eq!(qr.header("authorization"), Some("Bearer tok-456"));
    assert_eq!(qr.header("x-scope-orgid"), Some("tenant-1"));
    assert_eq!(
        form(&qr.body),
        vec![
            ("query".to_string(), "up".to_string()),
            ("start".to_string(), "1700000000.000".to_string()),
            ("end".to_string(), "1700000060.000".to_string()),
            ("step".to_string(), "60.000".to_string()),
        ]
    );
}

#[test]
fn overload_answers_are_retried_and_bad_requests_are_not() {
    let unavailable = r#"{"status":"error","errorType":"unavailable","error":"too busy"}"#;
    let (port, seen) = capturing_server(vec![
        (503, unavailable.into()),
        (429, "slow down".into()),
        (
            400,
            r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#.into(),
        ),
    ]);
    let mut endpoint = PrometheusEndpoint::new(format!("http://127.0.0.1:{port}"));
    endpoint.retries = 3;
    endpoint.retry_backoff = PromDuration(Duration::from_millis(20));
    let c = PromClient::new(&endpoint).expect("client");
    let rt = runtime();
    // 503, then 429, then 400: the 400 ends the call (it is not retried even with a retry
    // left), carrying the API's errorType and error.
    let err = rt
        .block_on(c.query("up", None))
        .expect_err("400 at the end");
    assert!(
        matches!(&err, PromError::Api { status: 400, error_type, error, attempts: 3, .. }
            if error_type == "bad_data" && error == "parse error"),
        "{err:?}"
    );
    assert_eq!(c.requests(), 3);
    // Now the script is used up: the next call succeeds at once.
    let r = rt.block_on(c.query("up", None)).expect("success");
    assert_eq!(single_value(&r), 7.0);
    assert_eq!(c.requests(), 4);
    assert_eq!(seen.lock().expect("lock").len(), 4);

    // Retries run out on a server that stays unavailable: the last answer's API error.
    let (port, _) = capturing_server(vec![(503, unavailable.into()); 3]);
    let mut endpoint = PrometheusEndpoint::new(format!("http://127.0.0.1:{port}"));
    endpoint.retries = 2;
    endpoint.retry_backoff = PromDuration(Duration::from_millis(20));
    let c = PromClient::new(&endpoint).expect("client");
    let err = rt.block_on(c.query("up", None)).expect_err("always 503");
    assert!(
        matches!(&err, PromError::Api { status: 503, attempts: 3, error_type, .. } if error_type == "unavailable"),
        "{err:?}"
    );
    assert_eq!(c.requests(), 3);
}

#[test]
fn basic_auth_and_tls_against_a_protected_prometheus() {
    const PASSWORD: &str = "s3cret-Pa55word";
    const WRONG: &str = "wr0ng-Pa55word";
    let h = history_of(20);
    let prom = Prometheus::builder()
        .backfill_openmetrics(&openmetrics_text(&h.series))
        .web_basic_auth("vitals", PASSWORD)
        .web_tls()
        .start();
    let ca = prom.tls_cert_path().expect("TLS certificate").to_path_buf();
    let dir = temp_dir("promql-auth");
    write_file(&dir.path().join("right.pass"), format!("{PASSWORD}\n"));
    write_file(&dir.path().join("wrong.pass"), format!("{WRONG}\n"));
    let rt = runtime();
    let t = h.start + 7 * MINUTE;

    // Through the config file, as a user writes it: relative paths, a password file.
    let config = |extra: &str| {
        let yaml = format!(
            "sidecar:\n  prometheus:\n    url: {}\n    retry_backoff: 10ms\n{extra}",
            prom.url()
        );
        let config = Config::parse(&yaml, "vitals.yml", Some(dir.path()))
            .unwrap_or_else(|e| panic!("config: {e}"));
        PromClient::new(&config.sidecar.prometheus).unwrap_or_else(|e| panic!("client: {e}"))
    };
    let tls = format!("    tls_config:\n      ca_file: {}\n", ca.display());
    let good = config(&format!(
        "    basic_auth:\n      username: vitals\n      password_file: right.pass\n{tls}"
    ));
    let r = rt
        .block_on(good.query("vt_gauge{instance=\"a\"}", Some(t)))
        .expect("authenticated query over TLS");
    assert_eq!(single_value(&r), gauge_a(7));
    assert!(good.endpoint().starts_with("https://"));

    // Wrong password: 401, not retried, and no password in the error.
    let bad = config(&format!(
        "    basic_auth:\n      username: vitals\n      password_file: wrong.pass\n{tls}"
    ));
    let err = rt
        .block_on(bad.query("vt_gauge", Some(t)))
        .expect_err("wrong password");
    assert!(
        matches!(
            err,
            PromError::Http {
                status: 401,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(bad.requests(), 1);
    for text in [err.to_string(), format!("{err:?}"), format!("{bad:?}")] {
        assert!(
            !text.contains(PASSWORD) && !text.contains(WRONG),
            "a password leaked: {text}"
        );
    }
    // An inline password (a `Secret`): same rule.
    let inline = config(&format!(
        "    basic_auth:\n      username: vitals\n      password: {WRONG}\n{tls}"
    ));
    let err = rt
        .block_on(inline.query("vt_gauge", Some(t)))
        .expect_err("wrong inline password");
    assert!(
        matches!(err, PromError::Http { status: 401, .. }),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?} {inline:?}").contains(WRONG));
    // No credentials at all.
    let anonymous = config(&tls);
    let err = rt
        .block_on(anonymous.query("vt_gauge", Some(t)))
        .expect_err("no credentials");
    assert!(
        matches!(err, PromError::Http { status: 401, .. }),
        "{err:?}"
    );

    // TLS: the self-signed certificate is unknown to the system roots ...
    let untrusted =
        config("    retries: 0\n    basic_auth: {username: vitals, password_file: right.pass}\n");
    let err = rt
        .block_on(untrusted.query("vt_gauge", Some(t)))
        .expect_err("unknown CA");
    assert!(
        matches!(err, PromError::Connect { attempts: 1, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // ... accepted with insecure_skip_verify ...
    let insecure = config(
        "    basic_auth: {username: vitals, password_file: right.pass}\n    tls_config: {insecure_skip_verify: true}\n",
    );
    let r = rt
        .block_on(insecure.query("vt_gauge{instance=\"a\"}", Some(t)))
        .expect("insecure_skip_verify");
    assert_eq!(single_value(&r), gauge_a(7));
    // ... and server_name must match the certificate (made for localhost and 127.0.0.1).
    let named = |name: &str| {
        let mut endpoint = PrometheusEndpoint::new(prom.url());
        endpoint.retries = 0;
        endpoint.basic_auth = good_basic_auth(dir.path());
        endpoint.tls_config = Some(TlsClientConfig {
            ca_file: Some(ca.clone()),
            server_name: Some(name.into()),
            ..TlsClientConfig::default()
        });
        PromClient::new(&endpoint).expect("client")
    };
    let r = rt
        .block_on(named("localhost").query("vt_gauge{instance=\"a\"}", Some(t)))
        .expect("server_name localhost");
    assert_eq!(single_value(&r), gauge_a(7));
    let err = rt
        .block_on(named("other.example").query("vt_gauge", Some(t)))
        .expect_err("certificate not valid for other.example");
    assert!(matches!(err, PromError::Connect { .. }), "{err:?}");
}

fn good_basic_auth(dir: &std::path::Path) -> Option<vitals::config::BasicAuth> {
    Some(vitals::config::BasicAuth {
        username: "vitals".into(),
        password: None,
        password_file: Some(dir.join("right.pass")),
    })
}

#[test]
fn a_second_victoria_import_is_queryable_when_it_returns() {
    // No response cache hides a sample imported into a VictoriaMetrics that has already
    // answered queries over the same range.
    let h = history_of(60);
    let vm = victoria_with(&h);
    let c = client(&vm.url());
    let rt = runtime();
    let t = h.start + 60 * MINUTE;
    let before = rt
        .block_on(c.query("vt_gauge{instance=\"a\"}", Some(t)))
        .expect("query");
    assert_eq!(single_value(&before), gauge_a(59), "lookback value");
    let mut more = HistorySeries::new("vt_gauge", &[("instance", "a")]);
    more.samples.push((t, -5.5));
    vm.import_prometheus(&prometheus_text_ms(&[more]));
    let after = rt
        .block_on(c.query("vt_gauge{instance=\"a\"}", Some(t)))
        .expect("query");
    assert_eq!(single_value(&after), -5.5);
}
