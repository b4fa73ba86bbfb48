//! The sidecar's results as metric families on its own `/metrics`: every series carries
//! `signal` and `domain` plus the source series' labels (a source label that clashes with
//! ours is kept as `exported_<name>`, as Prometheus does on scrape).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::baseline::QUANTILES;
use super::scheduler::{SeriesOut, Snapshot};

type Labels = Vec<(String, String)>;
type G = Family<Labels, Gauge<f64, AtomicU64>>;
type C = Family<Labels, Counter>;

/// Labels reserved by the sidecar's families.
const OURS: [&str; 6] = ["signal", "domain", "window", "q", "component", "domains"];

fn series_labels(s: &SeriesOut) -> Labels {
    let mut out: Labels = Vec::with_capacity(s.labels.len() + 2);
    out.push(("signal".into(), s.signal.to_string()));
    out.push(("domain".into(), s.domain.to_string()));
    for (k, v) in &s.labels {
        let k = if OURS.contains(&k.as_str()) {
            format!("exported_{k}")
        } else {
            k.clone()
        };
        out.push((k, v.clone()));
    }
    out
}

fn with(mut l: Labels, extra: &[(&str, String)]) -> Labels {
    l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    l
}

fn set(f: &G, l: &Labels, v: f64) {
    f.get_or_create(l).set(v);
}

/// Appends the snapshot's families, in OpenMetrics text without the EOF marker.
pub fn encode(snap: &Snapshot, out: &mut String) -> std::fmt::Result {
    let mut reg = Registry::default();
    let score = G::default();
    let zscore = G::default();
    let drift = G::default();
    let severity = G::default();
    let expected = G::default();
    let b_mean = G::default();
    let b_stddev = G::default();
    let b_quantile = G::default();
    let slope = G::default();
    let r2 = G::default();
    let ttt = G::default();
    for s in &snap.series {
        let l = series_labels(s);
        let sc = s.latest.score;
        if !s.latest.muted {
            set(&score, &l, sc.anomaly);
            set(&zscore, &l, sc.zscore);
            set(&drift, &l, sc.drift_ratio);
            set(&expected, &l, sc.expected);
        }
        set(&severity, &l, f64::from(s.latest.severity as u8));
        for (window, st) in &s.baselines {
            let wl = with(l.clone(), &[("window", (*window).to_string())]);
            set(&b_mean, &wl, st.mean);
            set(&b_stddev, &wl, st.stddev);
            for (q, v) in QUANTILES.iter().zip(st.quantiles) {
                set(&b_quantile, &with(wl.clone(), &[("q", q.to_string())]), v);
            }
        }
        if let Some(f) = s.forecast {
            set(&slope, &l, f.slope);
            set(&r2, &l, f.r_squared);
        }
        if let Some(t) = s.time_to_threshold {
            set(&ttt, &l, t);
        }
    }
    reg.register(
        "anomaly_score",
        "Anomaly score of the newest point, 0 to 1 (thresholds in docs/sidecar.md)",
        score,
    );
    reg.register(
        "anomaly_zscore",
        "Signed deviation of the newest point from what the detector expected, in robust standard deviations",
        zscore,
    );
    reg.register(
        "anomaly_drift_ratio",
        "Recent level relative to the long-term level (1 means no drift)",
        drift,
    );
    reg.register(
        "anomaly_severity",
        "Severity in force after debounce and hysteresis: 0 ok, 1 warning, 2 critical",
        severity,
    );
    reg.register(
        "anomaly_expected_value",
        "The value the detector expected for the newest point",
        expected,
    );
    reg.register(
        "baseline_mean",
        "Mean of the signal over the window, ending baseline_offset before the newest point",
        b_mean,
    );
    reg.register(
        "baseline_stddev",
        "Population standard deviation of the signal over the window",
        b_stddev,
    );
    reg.register(
        "baseline_quantile",
        "Quantile q of the signal over the window (PromQL quantile_over_time definition)",
        b_quantile,
    );
    reg.register(
        "forecast_slope",
        "Least-squares trend of the signal over the forecast window, per second",
        slope,
    );
    reg.register(
        "forecast_r_squared",
        "Share of the variance the trend explains over the forecast window",
        r2,
    );
    reg.register_with_unit(
        "forecast_time_to_threshold",
        "Time until the trend reaches the signal's threshold (0 when already there), when the fit is good enough",
        Unit::Seconds,
        ttt,
    );

    let health = G::default();
    for (domain, v) in &snap.health.scores {
        set(&health, &vec![("domain".into(), domain.clone())], *v);
    }
    let component = G::default();
    for ((domain, c), v) in &snap.health.components {
        set(
            &component,
            &vec![
                ("domain".into(), domain.clone()),
                ("component".into(), c.clone()),
            ],
            *v,
        );
    }
    reg.register("health_score", "Health of the domain, 0 to 100", health);
    reg.register(
        "health_score_component",
        "Points a component (signal) takes off its domain's health score",
        component,
    );
    let corr = G::default();
    if let Some(e) = &snap.correlation {
        set(
            &corr,
            &vec![("domains".into(), e.domains_label())],
            (e.started_ms as f64) / 1000.0,
        );
    }
    reg.register(
        "anomaly_correlation_started_timestamp_seconds",
        "Start of the correlated event in force: anomalies in all the listed domains at once",
        corr,
    );
    let events = Counter::<u64>::default();
    events.inc_by(snap.correlated_events_total);
    reg.register(
        "anomaly_correlated_events",
        "Correlated events raised: anomalies in two or more domains in one cycle",
        events,
    );
    super::recommend::register(&snap.recommendations, &mut reg);
    super::slo::encode(&snap.slos, &mut reg);
    encode_self(snap, &mut reg);
    encode_registry(out, &reg)
}

fn encode_self(snap: &Snapshot, reg: &mut Registry) {
    let sub = reg.sub_registry_with_prefix("vitals_sidecar");
    let cycles = Counter::<u64>::default();
    cycles.inc_by(snap.cycles);
    sub.register("cycles", "Evaluation cycles run", cycles);
    let duration = Gauge::<f64, AtomicU64>::default();
    duration.set(snap.cycle_duration.as_secs_f64());
    sub.register_with_unit(
        "cycle_duration",
        "Duration of the last evaluation cycle",
        Unit::Seconds,
        duration,
    );
    let last = Gauge::<f64, AtomicU64>::default();
    last.set(snap.at_ms as f64 / 1000.0);
    sub.register_with_unit(
        "last_cycle_timestamp",
        "When the last evaluation cycle ran",
        Unit::Seconds,
        last,
    );
    let queries = C::default();
    queries
        .get_or_create(&vec![("result".into(), "success".into())])
        .inc_by(snap.queries_ok);
    queries
        .get_or_create(&vec![("result".into(), "error".into())])
        .inc_by(snap.queries_failed);
    sub.register("queries", "PromQL queries by result", queries);
    let http = Counter::<u64>::default();
    http.inc_by(snap.http_requests);
    sub.register(
        "http_requests",
        "HTTP requests to the query API, retries included",
        http,
    );
    let history = Gauge::<i64>::default();
    history.set(i64::try_from(snap.history_bytes).unwrap_or(i64::MAX));
    sub.register_with_unit(
        "history",
        "Memory held by the series histories",
        Unit::Bytes,
        history,
    );
    let series = Family::<Labels, Gauge>::default();
    let up = Family::<Labels, Gauge>::default();
    let dropped = C::default();
    let errors = C::default();
    let warnings = C::default();
    let sig_duration = G::default();
    let backfill = G::default();
    for s in &snap.signals {
        let l: Labels = vec![
            ("signal".into(), s.name.clone()),
            ("domain".into(), s.domain.clone()),
        ];
        series
            .get_or_create(&l)
            .set(i64::try_from(s.series).unwrap_or(i64::MAX));
        up.get_or_create(&l).set(i64::from(s.up));
        dropped.get_or_create(&l).inc_by(s.dropped_total);
        errors.get_or_create(&l).inc_by(s.errors_total);
        warnings.get_or_create(&l).inc_by(s.warnings_total);
        set(&sig_duration, &l, s.duration.as_secs_f64());
        set(&backfill, &l, s.backfill_pending_ms as f64 / 1000.0);
    }
    sub.register("series", "Series tracked per signal", series);
    sub.register(
        "signal_up",
        "Whether the signal's last refresh succeeded",
        up,
    );
    sub.register(
        "series_dropped",
        "Series refused because of sidecar.max_series_per_signal",
        dropped,
    );
    sub.register("signal_errors", "Failed refreshes per signal", errors);
    sub.register(
        "query_warnings",
        "Warnings returned by the query API per signal",
        warnings,
    );
    sub.register_with_unit(
        "signal_refresh_duration",
        "Duration of the signal's last refresh",
        Unit::Seconds,
        sig_duration,
    );
    sub.register_with_unit(
        "signal_backfill_pending",
        "Stretch of the signal's full-resolution history still held at the coarse step, filled in by the next cycles",
        Unit::Seconds,
        backfill,
    );
}
