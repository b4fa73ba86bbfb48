//! The sidecar end to end: eight days of history backfilled into a real Prometheus (promtool
//! tsdb create-blocks-from openmetrics) and a real VictoriaMetrics (import API), live points
//! on top (scraped by Prometheus, imported into VictoriaMetrics), and `vitals sidecar`
//! evaluating them: its /metrics must show baselines equal to the data's true statistics,
//! forecasts equal to PromQL's deriv / predict_linear over the same points, and an injected
//! anomaly raising anomaly_severity within two cycles of its first point. The oldest hours
//! are loaded at a coarse step, as `history_coarse_step` does with the older history.
//!
//! Then 30 days of 5-minute history, of which the sidecar loads the part older than 8 days
//! once an hour (the defaults): its 7-day baselines must be the data's exact statistics, its
//! 30-day ones the hourly-weighted statistics of the points it asked for, within the
//! sampling error of that estimate of the full data's mean and standard deviation.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::support::prometheus::Prometheus;
use crate::support::victoria::VictoriaMetrics;
use crate::support::vitals::Vitals;
use crate::support::{LOOPBACK, parse_samples, poll_until, sample_value};

/// Grid step of the data and of the sidecar, seconds.
const STEP: i64 = 5;
const HISTORY_DAYS: i64 = 8;
const TREND_SLOPE: f64 = 0.5;

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Deterministic noise in [-1, 1], roughly bell-shaped (mean of four uniforms).
fn noise(seed: i64) -> f64 {
    let mut x = seed as u64 ^ 0x9E37_79B9_7F4A_7C15;
    let mut sum = 0.0;
    for _ in 0..4 {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        sum += (z >> 11) as f64 / (1u64 << 53) as f64;
    }
    sum / 2.0 - 1.0
}

fn gauge(ts: i64) -> f64 {
    100.0 + 20.0 * noise(ts)
}

fn trend(ts: i64, t0: i64) -> f64 {
    1000.0 + TREND_SLOPE * (ts - t0) as f64 + 5.0 * noise(ts ^ 0x5555)
}

/// What the live source serves: normal values, or the anomaly.
struct Live {
    t0: i64,
    anomaly: AtomicBool,
}

impl Live {
    fn values(&self, ts: i64) -> (f64, f64) {
        let g = ts.div_euclid(STEP) * STEP;
        let v = if self.anomaly.load(Ordering::SeqCst) {
            gauge(g) + 400.0
        } else {
            gauge(g)
        };
        (v, trend(g, self.t0))
    }

    fn exposition(&self) -> String {
        let (g, t) = self.values(now_s());
        format!(
            "# TYPE vitals_test_gauge gauge\nvitals_test_gauge{{instance=\"a\",job=\"live\"}} {g}\n\
             # TYPE vitals_test_trend gauge\nvitals_test_trend{{instance=\"a\",job=\"live\"}} {t}\n"
        )
    }
}

/// A scrape target serving [`Live::exposition`] on a loopback port.
fn serve_live(live: Arc<Live>) -> String {
    let listener = TcpListener::bind((LOOPBACK, 0)).expect("binding the live source");
    let addr = listener.local_addr().expect("local addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = live.exposition();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// The backfilled history: (ts seconds, gauge, trend) on the grid, up to `end`.
fn history(t0: i64, end: i64) -> Vec<(i64, f64, f64)> {
    (0..)
        .map(|i| t0 + i * STEP)
        .take_while(|t| *t <= end)
        .map(|t| (t, gauge(t), trend(t, t0)))
        .collect()
}

fn openmetrics(h: &[(i64, f64, f64)]) -> String {
    let mut s = String::from("# TYPE vitals_test_gauge gauge\n");
    for (t, g, _) in h {
        s.push_str(&format!(
            "vitals_test_gauge{{instance=\"a\",job=\"live\"}} {g} {t}\n"
        ));
    }
    s.push_str("# TYPE vitals_test_trend gauge\n");
    for (t, _, tr) in h {
        s.push_str(&format!(
            "vitals_test_trend{{instance=\"a\",job=\"live\"}} {tr} {t}\n"
        ));
    }
    s.push_str("# EOF\n");
    s
}

fn prometheus_text_ms(h: &[(i64, f64, f64)]) -> String {
    let mut s = String::new();
    for (t, g, tr) in h {
        s.push_str(&format!(
            "vitals_test_gauge{{instance=\"a\",job=\"live\"}} {g} {ms}\nvitals_test_trend{{instance=\"a\",job=\"live\"}} {tr} {ms}\n",
            ms = t * 1000
        ));
    }
    s
}

fn sidecar_config(url: &str, threshold: f64) -> String {
    format!(
        r#"sidecar:
  prometheus:
    url: {url}
  interval: {STEP}s
  resolution: {STEP}s
  history: {HISTORY_DAYS}d
  # The oldest 22 hours are loaded once an hour: the 7-day baseline (ending an hour back)
  # must still see every point, and the detector copes with the coarse warm-up.
  history_full_resolution: 7d2h
  history_coarse_step: 1h
  baseline_offset: 1h
  default_signals: false
  # Only this test's signals: the default SLOs and recommendations query months-long ranges
  # every cycle, which only loads the server here.
  default_slos: false
  default_recommendations: false
  forecast:
    window: 1h
    min_r_squared: 0.5
    horizon: 30d
  signals:
    - name: test_gauge
      domain: app
      expr: vitals_test_gauge
      direction: higher_is_worse
    - name: test_gauge_db
      domain: db
      expr: 2 * vitals_test_gauge
      direction: higher_is_worse
    - name: test_trend
      domain: capacity
      expr: vitals_test_trend
      direction: higher_is_worse
      threshold: {threshold}
"#
    )
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    sample_value(&parse_samples(text), name, labels)
}

/// Population mean and standard deviation of the gauge over [from, to].
fn true_stats(h: &[(i64, f64, f64)], from: i64, to: i64) -> (f64, f64, usize) {
    let v: Vec<f64> = h
        .iter()
        .filter(|(t, _, _)| *t >= from && *t <= to)
        .map(|(_, g, _)| f64::from(*g as f32))
        .collect();
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt(), v.len())
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-9)
}

/// Waits up to 120 s for a cycle whose `signal` shows a `window` baseline and has its whole
/// full-resolution history (the first cycle loads only the newest day at full resolution,
/// the next ones fill in the rest). Returns that /metrics text and the longest
/// `vitals_sidecar_signal_backfill_pending_seconds` seen on the way.
fn wait_for_full_history(
    vitals: &Vitals,
    signal: &str,
    window: &str,
    diag: &dyn Fn() -> String,
) -> (String, f64) {
    let mut pending_seen = 0.0_f64;
    let text = poll_until(Duration::from_secs(120), || {
        let t = vitals.metrics();
        let pending = metric(
            &t,
            "vitals_sidecar_signal_backfill_pending_seconds",
            &[("signal", signal)],
        )?;
        pending_seen = pending_seen.max(pending);
        let baseline = metric(&t, "baseline_mean", &[("signal", signal), ("window", window)]);
        (pending == 0.0 && baseline.is_some()).then_some(t)
    })
    .unwrap_or_else(|| {
        panic!(
            "no {window} baseline of {signal} over its whole full-resolution history after 120 s\n{}\n--- logs ---\n{}\n{}",
            vitals.metrics(),
            vitals.logs(),
            diag()
        )
    });
    (text, pending_seen)
}

/// Waits for the first cycle that has baselines, checks them against the data, then
/// injects the anomaly and times its detection. Returns the sidecar's last /metrics text.
fn check_sidecar(
    vitals: &Vitals,
    live: &Live,
    h: &[(i64, f64, f64)],
    diag: &dyn Fn() -> String,
) -> String {
    let (text, _) = wait_for_full_history(vitals, "test_gauge", "7d", diag);
    let at = metric(&text, "vitals_sidecar_last_cycle_timestamp_seconds", &[])
        .expect("last cycle timestamp") as i64;
    let mean = metric(
        &text,
        "baseline_mean",
        &[("signal", "test_gauge"), ("window", "7d")],
    )
    .expect("mean");
    let sd = metric(
        &text,
        "baseline_stddev",
        &[("signal", "test_gauge"), ("window", "7d")],
    )
    .expect("stddev");
    // The newest point is the cycle's grid end or, if that point had not arrived, one
    // before it; the window ends baseline_offset (1h) before it and spans 7 days.
    let end = at.div_euclid(STEP) * STEP;
    let matched = (0..3).map(|k| end - k * STEP).find_map(|newest| {
        let (m, s, n) = true_stats(h, newest - 3600 - 7 * 86_400, newest - 3600);
        (close(mean, m, 1e-6) && close(sd, s, 1e-4)).then_some((newest, n))
    });
    assert!(
        matched.is_some(),
        "7d baseline mean {mean} / stddev {sd} match no window of the backfilled data: \
         true stats at the cycle's end {:?}",
        true_stats(h, end - 3600 - 7 * 86_400, end - 3600)
    );
    assert!(
        metric(
            &text,
            "baseline_quantile",
            &[("signal", "test_gauge"), ("window", "7d"), ("q", "0.5")]
        )
        .is_some_and(|q| (q - 100.0).abs() < 2.0),
        "median baseline near 100"
    );
    assert_eq!(
        metric(&text, "anomaly_severity", &[("signal", "test_gauge")]),
        Some(0.0),
        "no anomaly on normal data:\n{text}"
    );
    // Noise may put a point 2-3 sigmas out, which costs a few points (docs/sidecar.md), but
    // without an anomaly the domain keeps at least 90.
    let health = metric(&text, "health_score", &[("domain", "app")]);
    assert!(
        health.is_some_and(|h| h >= 90.0),
        "healthy before the anomaly: {health:?}"
    );

    // Inject: the gauge jumps by 20 of its ranges. Every cycle is watched (cycles are 5 s
    // apart, /metrics is read every 100 ms): the cycle that first shows the anomaly (an
    // anomalous score, or the severity itself when several anomalous points arrive at once)
    // and the next one are the two cycles the debounce may take.
    //
    // VictoriaMetrics (default -search.latencyOffset) shows a point to range queries only
    // 30 s after its timestamp, repeating the last older value in place of the newer ones:
    // the anomaly shows that much later there, and its first point arrives with about six
    // copies of it, so the newest point's score may already be lower (a level shift).
    let cycles = |t: &str| metric(t, "vitals_sidecar_cycles_total", &[]).unwrap_or(0.0);
    live.anomaly.store(true, Ordering::SeqCst);
    let mut first_seen: Option<f64> = None;
    let mut max_z = f64::NEG_INFINITY;
    let raised = poll_until(Duration::from_secs(90), || {
        let t = vitals.metrics();
        let c = cycles(&t);
        let score = metric(&t, "anomaly_score", &[("signal", "test_gauge")]).unwrap_or(0.0);
        let severity = metric(&t, "anomaly_severity", &[("signal", "test_gauge")]).unwrap_or(0.0);
        if let Some(z) = metric(&t, "anomaly_zscore", &[("signal", "test_gauge")]) {
            max_z = max_z.max(z);
        }
        if first_seen.is_none()
            && (score >= vitals::sidecar::detector::WARNING_THRESHOLD || severity >= 1.0)
        {
            first_seen = Some(c);
        }
        (severity >= 1.0).then_some(t)
    })
    .unwrap_or_else(|| {
        panic!(
            "no anomaly_severity after 90 s\n{}\n--- sidecar log ---\n{}\n{}",
            vitals.metrics(),
            vitals.logs(),
            diag()
        )
    });
    let first = first_seen.expect("the raising cycle shows the anomaly");
    assert!(
        cycles(&raised) - first <= 1.0,
        "anomaly_severity raised {} cycles after the first anomalous point was scored (within two cycles: that one and the next)",
        cycles(&raised) - first
    );
    assert!(
        max_z > 3.0,
        "z-score of the anomaly while it was raised: at most {max_z}\n{raised}"
    );
    // The same jump seen by a signal of another domain: one correlated event naming both.
    let correlated = poll_until(Duration::from_secs(30), || {
        let t = vitals.metrics();
        metric(
            &t,
            "anomaly_correlation_started_timestamp_seconds",
            &[("domains", "app,db")],
        )
        .map(|_| t)
    })
    .unwrap_or_else(|| panic!("no correlated event for app,db\n{}", vitals.metrics()));
    assert_eq!(
        metric(&correlated, "anomaly_correlated_events_total", &[]),
        Some(1.0),
        "one event for one incident"
    );
    assert!(
        metric(&raised, "health_score", &[("domain", "app")]).is_some_and(|h| h <= 80.0),
        "health drops by at least a warning's 20 points"
    );
    raised
}

fn setup(prefix_end_s: i64) -> (Arc<Live>, Vec<(i64, f64, f64)>, f64) {
    let hist_end = prefix_end_s.div_euclid(STEP) * STEP;
    let t0 = hist_end - HISTORY_DAYS * 86_400 + STEP;
    let live = Arc::new(Live {
        t0,
        anomaly: AtomicBool::new(false),
    });
    let h = history(t0, hist_end);
    // The trend reaches the threshold about two hours after the history ends.
    let threshold = trend(hist_end, t0) + TREND_SLOPE * 7200.0;
    (live, h, threshold)
}

#[test]
fn sidecar_against_prometheus_backfilled_history() {
    let (live, h, threshold) = setup(now_s() - 30);
    let source = serve_live(live.clone());
    let prom = Prometheus::builder()
        .backfill_openmetrics(&openmetrics(&h))
        // honor_labels keeps the exposed instance="a", so live points continue the
        // backfilled series instead of starting a new one.
        .scrape_configs(&format!(
            "  - job_name: 'live'\n    honor_labels: true\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: ['{source}']\n"
        ))
        .start();
    let vitals = Vitals::builder()
        .subcommand("sidecar")
        .config(&sidecar_config(&prom.url(), threshold))
        .start();
    let text = check_sidecar(&vitals, &live, &h, &|| {
        crate::support::log_block("prometheus log", prom.log_path())
    });

    // Forecast = PromQL's deriv / predict_linear over the same grid points (a subquery at
    // the sidecar's step), evaluated at the sidecar's newest point.
    let slope = metric(&text, "forecast_slope", &[("signal", "test_trend")]).expect("slope");
    let r2 = metric(&text, "forecast_r_squared", &[("signal", "test_trend")]).expect("r2");
    let ttt = metric(
        &text,
        "forecast_time_to_threshold_seconds",
        &[("signal", "test_trend")],
    )
    .expect("time to threshold");
    assert!(r2 > 0.99, "R² of a clean trend: {r2}");
    let at = metric(&text, "vitals_sidecar_last_cycle_timestamp_seconds", &[]).expect("ts") as i64;
    let end = at.div_euclid(STEP) * STEP;
    let mut seen = Vec::new();
    let agrees = (0..3).map(|k| end - k * STEP).any(|t| {
        let q = |expr: &str| -> Option<f64> {
            let r = prom.api_get(
                "/api/v1/query",
                &[("query", expr), ("time", &t.to_string())],
            )["result"]
                .clone();
            crate::support::prometheus::sample_values(&r)
                .first()
                .copied()
        };
        let d = q(&format!("deriv(vitals_test_trend[1h:{STEP}s])"));
        let p = q(&format!("predict_linear(vitals_test_trend[1h:{STEP}s], 0)"));
        seen.push((t, d, p));
        match (d, p) {
            // The sidecar stores points as f32 (7 significant digits): ~1e-6 of drift.
            (Some(d), Some(p)) => close(slope, d, 1e-4) && close(ttt, (threshold - p) / d, 1e-3),
            _ => false,
        }
    });
    assert!(
        agrees,
        "forecast slope {slope} / time to threshold {ttt} differ from PromQL {seen:?} (threshold {threshold})"
    );
    assert!(
        (slope - TREND_SLOPE).abs() < 0.01,
        "slope {slope} is per second"
    );

    // The query API goes away: the signals are down, and the anomaly is held rather than
    // resolved (its points go stale after 20 s; wait past that).
    drop(prom);
    let cycles = |t: &str| metric(t, "vitals_sidecar_cycles_total", &[]).unwrap_or(0.0);
    let down_at = cycles(&vitals.metrics());
    let held = poll_until(Duration::from_secs(60), || {
        let t = vitals.metrics();
        (cycles(&t) >= down_at + 6.0).then_some(t)
    })
    .expect("cycles go on without Prometheus");
    assert_eq!(
        metric(
            &held,
            "vitals_sidecar_signal_up",
            &[("signal", "test_gauge")]
        ),
        Some(0.0),
        "the signal is down"
    );
    assert!(
        metric(&held, "anomaly_severity", &[("signal", "test_gauge")]).is_some_and(|s| s >= 1.0),
        "the anomaly is held while the query API is unreachable:\n{held}"
    );
}

#[test]
fn sidecar_against_victoriametrics_imported_history() {
    let (live, h, _threshold) = setup(now_s() - 30);
    // VictoriaMetrics' search defaults, as users run it: range queries hide the points of
    // the last 30 s, or repeat the previous value in their place (-search.latencyOffset).
    // The sidecar asks for its newest points again until they have settled.
    let vm = VictoriaMetrics::start_with_default_search();
    vm.import_prometheus(&prometheus_text_ms(&h));
    // The import is visible at its newest point at once, but a busy VictoriaMetrics may take
    // a while before every older day answers: wait until the whole history counts.
    let want = h.len();
    let counted = wait_for_count(
        &vm,
        &format!("count_over_time(vitals_test_gauge[{}d])", HISTORY_DAYS + 1),
        want,
    );
    assert!(
        counted.is_some(),
        "VictoriaMetrics does not count the {want} imported points of the history within 60 s\n{}",
        crate::support::log_block("victoria-metrics log", vm.log_path())
    );
    // Live points: imported every second, as a remote-write client would.
    let stop = Arc::new(AtomicBool::new(false));
    let pushes = Arc::new(std::sync::Mutex::new((0u64, Vec::<String>::new())));
    let pusher = {
        let (live, stop, url, pushes) = (live.clone(), stop.clone(), vm.url(), pushes.clone());
        std::thread::spawn(move || {
            let client = crate::support::http_client();
            while !stop.load(Ordering::SeqCst) {
                let ts = now_s();
                let (g, t) = live.values(ts);
                let body = format!(
                    "vitals_test_gauge{{instance=\"a\",job=\"live\"}} {g} {ms}\nvitals_test_trend{{instance=\"a\",job=\"live\"}} {t} {ms}\n",
                    ms = ts * 1000
                );
                // Not flushed: like a remote-write client's samples, they become searchable
                // when VictoriaMetrics gets to them, and the sidecar must cope.
                let result = client
                    .post(format!("{url}/api/v1/import/prometheus"))
                    .body(body)
                    .send();
                let mut p = pushes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                p.0 += 1;
                match result {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => p.1.push(format!("{ts}: HTTP {}", r.status())),
                    Err(e) => p.1.push(format!("{ts}: {e}")),
                }
                std::thread::sleep(Duration::from_millis(1000));
            }
        })
    };
    let vitals = Vitals::builder()
        .subcommand("sidecar")
        .config(&sidecar_config(&vm.url(), 1e12))
        .start();
    check_sidecar(&vitals, &live, &h, &|| {
        let p = pushes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // What a range query like the sidecar's returns for the last minute.
        let end = now_s().div_euclid(STEP) * STEP;
        let recent = crate::support::http_client()
            .get(format!("{}/api/v1/query_range", vm.url()))
            .query(&[
                ("query", "vitals_test_gauge".to_string()),
                ("start", (end - 60).to_string()),
                ("end", end.to_string()),
                ("step", format!("{STEP}s")),
            ])
            .send()
            .and_then(|r| r.text())
            .unwrap_or_else(|e| e.to_string());
        format!(
            "live imports: {} (failures: {:?}), now {}\nlast minute from VictoriaMetrics: {recent}\n{}",
            p.0,
            p.1,
            now_s(),
            crate::support::log_block("victoria-metrics log", vm.log_path())
        )
    });
    stop.store(true, Ordering::SeqCst);
    let _ = pusher.join();
}

// ---------------------------------------------------------------------------------------
// 30 days of 5-minute history, of which the sidecar loads the part older than
// `history_full_resolution` (default 8d) once an hour (`history_coarse_step`, default 1h).

/// Grid step of the 30-day history, seconds.
const WAVE_STEP: i64 = 300;
const HOUR_S: i64 = 3600;
const DAY_S: i64 = 86_400;

/// A daily wave plus noise, stored as the sidecar stores it (f32).
fn wave(ts: i64) -> f64 {
    let phase = std::f64::consts::TAU * ts.rem_euclid(DAY_S) as f64 / DAY_S as f64;
    f64::from((100.0 + 20.0 * phase.sin() + 10.0 * noise(ts ^ 0x3333)) as f32)
}

/// The 30-day history (plus an hour) up to `end`, seconds and values.
fn wave_history(end: i64) -> Vec<(i64, f64)> {
    ((end - 30 * DAY_S - HOUR_S)..=end)
        .step_by(WAVE_STEP as usize)
        .map(|t| (t, wave(t)))
        .collect()
}

fn wave_config(url: &str) -> String {
    format!(
        r#"sidecar:
  prometheus:
    url: {url}
  interval: 5s
  resolution: {WAVE_STEP}s
  history: 30d
  baseline_offset: 1h
  default_signals: false
  default_slos: false
  default_recommendations: false
  signals:
    - name: wave
      domain: app
      expr: vitals_test_wave
      direction: both
"#
    )
}

/// Population mean and standard deviation.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    (mean, sd)
}

/// Checks the sidecar's baselines over a 30-day history whose first load ended at one of
/// the grid points from `newest` on (the test does not know which). The coarse points are
/// those at the middle of each hour, which the sidecar asks for.
fn check_coarse_baselines(vitals: &Vitals, h: &[(i64, f64)], diag: &dyn Fn() -> String) {
    let phase = HOUR_S / 2;
    let get = |t: &str, name: &str, window: &str| {
        metric(t, name, &[("signal", "wave"), ("window", window)])
    };
    let (text, pending_seen) = wait_for_full_history(vitals, "wave", "30d", diag);
    // The first cycle loaded the newest day at full resolution and hourly points before
    // it; the next filled in the days up to the 8-day boundary.
    assert!(
        pending_seen >= 6.0 * DAY_S as f64,
        "the first cycle left {pending_seen} s of the full-resolution part to fill in"
    );
    let value = |name: &str, window: &str| {
        get(&text, name, window).unwrap_or_else(|| panic!("no {name}{{window={window}}}:\n{text}"))
    };
    let (mean30, sd30) = (
        value("baseline_mean", "30d"),
        value("baseline_stddev", "30d"),
    );
    let (mean7, sd7) = (value("baseline_mean", "7d"), value("baseline_stddev", "7d"));
    let newest = h.last().expect("history").0;
    let full = |from: i64, to: i64| -> Vec<f64> {
        h.iter()
            .filter(|p| p.0 >= from && p.0 <= to)
            .map(|p| p.1)
            .collect()
    };

    // The 7-day window lies in the full-resolution part: the data's exact statistics. It
    // ends an hour before the sidecar's newest point: the data's newest or, once a cycle's
    // grid end has passed it, the next grid point (Prometheus 2.x answers the last value
    // again there, within its inclusive 5-minute lookback).
    let windows: Vec<_> = [newest, newest + WAVE_STEP]
        .iter()
        .map(|n| {
            let bend = n - HOUR_S;
            (bend, mean_sd(&full(bend - 7 * DAY_S, bend)))
        })
        .collect();
    let Some(&(bend, _)) = windows
        .iter()
        .find(|(_, (m, s))| close(mean7, *m, 1e-6) && close(sd7, *s, 1e-4))
    else {
        panic!("7d baseline {mean7} / {sd7}, data (window end, (mean, stddev)) {windows:?}")
    };

    // The 30-day window. Its first load ended at `end` (a grid point at or after the newest
    // one), became full resolution at `end - 8d` rounded down to the hour, and before that
    // got one point an hour (at `phase`), which stands for the hour's 12 points. The history
    // keeps the last 30 days before its newest point.
    let candidates: Vec<_> = (0..4)
        .map(|k| {
            let end = newest + k * WAVE_STEP;
            let full_from = (end - 8 * DAY_S).div_euclid(HOUR_S) * HOUR_S;
            let asked = end - 30 * DAY_S + (HOUR_S / 2 - (end - 30 * DAY_S)).rem_euclid(HOUR_S);
            let first = (asked - HOUR_S / 2 + phase).max(bend + HOUR_S - 30 * DAY_S);
            let first = first + (phase - first).rem_euclid(HOUR_S);
            (first, full_from)
        })
        .collect();
    let matched = candidates.iter().find_map(|&(first, full_from)| {
        let coarse: Vec<f64> = full(first, full_from - 1)
            .into_iter()
            .step_by((HOUR_S / WAVE_STEP) as usize)
            .collect();
        let weighted: Vec<f64> = coarse
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, (HOUR_S / WAVE_STEP) as usize))
            .chain(full(full_from, bend))
            .collect();
        let (m, s) = mean_sd(&weighted);
        (close(mean30, m, 1e-6) && close(sd30, s, 1e-4)).then_some((first, full_from, coarse))
    });
    let Some((first, full_from, coarse)) = matched else {
        panic!(
            "30d baseline {mean30} / {sd30} is not the hourly-weighted statistics of any first load {candidates:?}"
        )
    };

    // Against the full-resolution data over the same span: each coarse point is one draw
    // from the hour it stands for (stratified sampling, one unit per stratum), so the
    // estimate of the mean of y errs with standard error f * sqrt(mean_h(var_h(y)) / n)
    // (var_h: y's population variance within hour h; n: coarse hours; f: their share of the
    // window's weight). Checked at 4 standard errors for y = x (mean) and
    // y = (x - mean)^2 (variance, whose relative error the stddev halves).
    let span = full(first - phase, bend);
    let (true_mean, true_sd) = mean_sd(&span);
    let hours: Vec<Vec<f64>> = (0..coarse.len() as i64)
        .map(|k| {
            let start = first - phase + k * HOUR_S;
            full(start, start + HOUR_S - 1)
        })
        .collect();
    let f = hours.len() as f64 * 12.0 / span.len() as f64;
    let se = |y: fn(f64, f64) -> f64| {
        vitals::sidecar::baseline::coarse_standard_error(&hours, f, |x| y(x, true_mean))
    };
    let se_mean = se(|x, _| x);
    let se_sd = se(|x, m| (x - m).powi(2)) / (2.0 * true_sd);
    eprintln!(
        "30d mean {mean30} (full data {true_mean}, se {se_mean}), stddev {sd30} (full data {true_sd}, se {se_sd})"
    );
    assert!(
        (mean30 - true_mean).abs() <= 4.0 * se_mean,
        "30d mean {mean30} vs the full data's {true_mean}: more than 4 standard errors ({se_mean})"
    );
    assert!(
        (sd30 - true_sd).abs() <= 4.0 * se_sd,
        "30d stddev {sd30} vs the full data's {true_sd}: more than 4 standard errors ({se_sd})"
    );
    assert!(
        coarse.len() > 500 && full_from > first,
        "the load was coarse before {full_from}: {} points",
        coarse.len()
    );
    assert!(
        metric(
            &text,
            "baseline_mean",
            &[("signal", "wave"), ("window", "hour_of_week")]
        )
        .is_some(),
        "four weeks of history give an hour-of-week baseline"
    );
    assert_eq!(
        metric(&text, "anomaly_severity", &[("signal", "wave")]),
        Some(0.0),
        "no anomaly on normal data:\n{text}"
    );
}

fn wave_end() -> i64 {
    (now_s() - 60).div_euclid(WAVE_STEP) * WAVE_STEP
}

#[test]
fn sidecar_30d_baselines_from_coarse_older_history_prometheus() {
    let h = wave_history(wave_end());
    let mut om = String::from("# TYPE vitals_test_wave gauge\n");
    for (t, v) in &h {
        om.push_str(&format!(
            "vitals_test_wave{{instance=\"a\",job=\"hist\"}} {v} {t}\n"
        ));
    }
    om.push_str("# EOF\n");
    let prom = Prometheus::builder().backfill_openmetrics(&om).start();
    let vitals = Vitals::builder()
        .subcommand("sidecar")
        .config(&wave_config(&prom.url()))
        .start();
    check_coarse_baselines(&vitals, &h, &|| {
        crate::support::log_block("prometheus log", prom.log_path())
    });
}

#[test]
fn sidecar_30d_baselines_from_coarse_older_history_victoriametrics() {
    let h = wave_history(wave_end());
    let text: String = h
        .iter()
        .map(|(t, v)| {
            format!(
                "vitals_test_wave{{instance=\"a\",job=\"hist\"}} {v} {}\n",
                t * 1000
            )
        })
        .collect();
    // Without its response cache: with it, VictoriaMetrics rounds the start of a range query
    // of 50 or more points down to a multiple of the step, and answers the coarse points on
    // the hour instead of at its middle (docs/sidecar.md).
    let vm = VictoriaMetrics::start();
    vm.import_prometheus(&text);
    let counted = wait_for_count(&vm, "count_over_time(vitals_test_wave[31d])", h.len());
    assert!(
        counted.is_some(),
        "VictoriaMetrics does not count the {} imported points within 60 s\n{}",
        h.len(),
        crate::support::log_block("victoria-metrics log", vm.log_path())
    );
    let vitals = Vitals::builder()
        .subcommand("sidecar")
        .config(&wave_config(&vm.url()))
        .start();
    check_coarse_baselines(&vitals, &h, &|| {
        crate::support::log_block("victoria-metrics log", vm.log_path())
    });
}

/// Waits up to 60 s until `query` (a `count_over_time` of imported points) answers at least
/// `want` from VictoriaMetrics: a busy server may take a while before every older day of an
/// import answers. The count, or None when it never got there.
fn wait_for_count(vm: &VictoriaMetrics, query: &str, want: usize) -> Option<f64> {
    let client = crate::support::http_client();
    poll_until(Duration::from_secs(60), || {
        let r: serde_json::Value = client
            .get(format!("{}/api/v1/query", vm.url()))
            .query(&[("query", query)])
            .send()
            .ok()?
            .json()
            .ok()?;
        let n = r["data"]["result"][0]["value"][1]
            .as_str()?
            .parse::<f64>()
            .ok()?;
        (n as usize >= want).then_some(n)
    })
}
