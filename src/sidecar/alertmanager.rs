//! Alert delivery to Alertmanager (API v2), behaving like Prometheus' notifier: every alert
//! goes to every configured Alertmanager in batches of at most [`MAX_BATCH`]; firing alerts
//! are re-sent every `resend_delay` with `endsAt = now + 4 x max(interval, resend_delay, 1m)`;
//! resolved alerts are sent with `endsAt` = the time they resolved and repeated for
//! [`RESOLVED_RETENTION`]. Labels are identity only; numbers go in annotations.
//!
//! Unlike Prometheus, nothing is lost during an Alertmanager outage or a sidecar restart (up
//! to `sidecar.alert_queue.max_alerts`): the [`Notifier`] keeps, per alert, the newest
//! version not yet accepted by each Alertmanager, and persists that queue together with the
//! alerts it tracks (start times, resolutions still being repeated) to one JSON file, written
//! atomically (temporary file, fsync, rename). On restart the file is reloaded: queued
//! notifications are delivered, resolutions keep being repeated, and alerts that were firing
//! keep their `startsAt` when the engine derives them again. A restored firing alert that the
//! engine has not derived again within a grace of a few cycles (long enough for the longest
//! recommendation `for`) is resolved then.
//!
//! The pure part ([`Notifier`]: what to send when) takes the time as an argument and is unit
//! tested; [`Delivery`] owns the HTTP clients and the file and runs on the sidecar's runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use super::anomaly::Severity;
use super::http::{HttpClient, HttpError, display_url};
use super::recommend::Finding;
use super::scheduler::{SeriesOut, Snapshot};
use crate::config::{Config, SidecarConfig};

/// Most alerts in one POST, as Prometheus.
pub const MAX_BATCH: usize = 64;
/// How long a resolved alert keeps being re-sent, as Prometheus.
pub const RESOLVED_RETENTION: Duration = Duration::from_secs(15 * 60);
/// `alertname` of an anomalous series.
pub const ANOMALY_ALERT: &str = "VitalsAnomaly";
/// `alertname` of an active recommendation.
pub const RECOMMENDATION_ALERT: &str = "VitalsRecommendation";
/// `alertname` of a cross-domain correlated event.
pub const CORRELATED_ALERT: &str = "VitalsCorrelatedAnomaly";
/// The uid of the Grafana dashboard alerts link to (dashboards/vitals-event-snapshot.json).
pub const EVENT_SNAPSHOT_UID: &str = "vitals-event-snapshot";
/// Half the time window of the Grafana link, around `startsAt`.
const LINK_HALF_WINDOW_MS: i64 = 30 * 60 * 1000;
/// Resends are due this much early, so that a cycle that starts a few milliseconds before
/// the exact resend time does not postpone the resend by a whole interval.
const RESEND_SLACK_MS: i64 = 1000;
/// Version of the queue file's format.
const FILE_VERSION: u32 = 1;
/// Longest wait between delivery attempts to an Alertmanager that failed.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// First wait after a failure.
const MIN_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Label set of an alert.
pub type Labels = BTreeMap<String, String>;

/// One alert as a source (anomalies, recommendations, correlated events, SLOs) states it in
/// a cycle: identity labels, annotations with the numbers, and when its episode started.
/// A source lists the alerts firing now; an alert missing from the list has resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Identity: `alertname`, `severity` and what the alert is about. Never numbers.
    pub labels: Labels,
    /// `summary`, `description`, `runbook_url`, `grafana_url` and the numbers.
    pub annotations: Labels,
    /// When the episode started (ms); the notifier keeps the first one of an episode.
    pub starts_at_ms: i64,
    /// Link back to the source (`generatorURL`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

/// Timing and size settings of the [`Notifier`].
#[derive(Debug, Clone, PartialEq)]
pub struct NotifierSettings {
    /// Firing (and resolved) alerts are re-sent this often.
    pub resend_delay: Duration,
    /// A firing alert's `endsAt` lies this far after the send.
    pub valid_for: Duration,
    /// Resolved alerts are repeated this long.
    pub resolved_retention: Duration,
    /// Most notifications queued (distinct alerts); the oldest is dropped beyond.
    pub max_alerts: usize,
    /// After a restart, cycles a restored firing alert waits to be derived again before it
    /// is resolved.
    pub restore_cycles: u32,
}

impl NotifierSettings {
    /// The settings a config asks for: `endsAt` 4 x max(interval, resend delay, 1m) after a
    /// send, restored alerts wait two cycles plus the longest recommendation `for`.
    pub fn from_config(c: &SidecarConfig) -> Self {
        let interval = c.interval.0.max(Duration::from_millis(1));
        let longest_for = super::recommend::effective(c)
            .iter()
            .map(|r| r.hold_for.0)
            .max()
            .unwrap_or_default();
        let for_cycles = longest_for.as_millis().div_ceil(interval.as_millis());
        Self {
            resend_delay: c.alert_resend_delay.0,
            valid_for: 4 * interval
                .max(c.alert_resend_delay.0)
                .max(Duration::from_secs(60)),
            resolved_retention: RESOLVED_RETENTION,
            max_alerts: usize::try_from(c.alert_queue.max_alerts.max(1)).unwrap_or(usize::MAX),
            restore_cycles: u32::try_from(for_cycles)
                .unwrap_or(u32::MAX)
                .saturating_add(2),
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The identity of an alert: its labels, as `{k="v", ...}`.
pub fn fingerprint(labels: &Labels) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{k}={v:?}");
    }
    s.push('}');
    s
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tracked {
    alert: Alert,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resolved_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_sent_ms: Option<i64>,
    /// Set for firing alerts restored from the file: cycles left to be derived again.
    #[serde(skip)]
    restore_left: Option<u32>,
}

/// The newest version of one alert not yet accepted by every Alertmanager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    /// Enqueue order; a newer version of the alert gets a new one.
    seq: u64,
    alert: Alert,
    ends_at_ms: i64,
    /// Alertmanagers (display URLs) that have not accepted this version.
    pending: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    version: u32,
    next_seq: u64,
    tracked: BTreeMap<String, Tracked>,
    queue: BTreeMap<String, Entry>,
}

/// One POST's worth of queued alerts for one Alertmanager.
#[derive(Debug, Clone)]
pub struct Batch {
    /// (fingerprint, version) of each alert, to acknowledge after the POST.
    pub items: Vec<(String, u64)>,
    /// The API v2 JSON body (`postableAlerts`).
    pub body: Bytes,
}

/// An alert as Alertmanager's API v2 takes it.
#[derive(Serialize)]
struct Postable<'a> {
    labels: &'a Labels,
    annotations: &'a Labels,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    generator_url: Option<&'a str>,
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What to send when: tracks the alerts the sources state, decides sends and resends, and
/// keeps the bounded queue of notifications not yet accepted by each Alertmanager.
#[derive(Debug)]
pub struct Notifier {
    settings: NotifierSettings,
    alertmanagers: BTreeSet<String>,
    state: State,
    dropped_total: u64,
}

impl Notifier {
    /// An empty notifier delivering to `alertmanagers` (display URLs).
    pub fn new(settings: NotifierSettings, alertmanagers: BTreeSet<String>) -> Self {
        Self {
            settings,
            alertmanagers,
            state: State {
                version: FILE_VERSION,
                ..State::default()
            },
            dropped_total: 0,
        }
    }

    /// A notifier restored from a queue file's contents: queued notifications for
    /// Alertmanagers still configured are kept; firing alerts wait
    /// [`NotifierSettings::restore_cycles`] cycles to be derived again.
    pub fn restore(
        settings: NotifierSettings,
        alertmanagers: BTreeSet<String>,
        json: &[u8],
    ) -> Result<Self, String> {
        let mut state: State = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        if state.version != FILE_VERSION {
            return Err(format!(
                "format version {} (this build reads {FILE_VERSION})",
                state.version
            ));
        }
        for t in state.tracked.values_mut() {
            if t.resolved_at_ms.is_none() {
                t.restore_left = Some(settings.restore_cycles);
            }
        }
        let mut n = Self {
            settings,
            alertmanagers: BTreeSet::new(),
            state,
            dropped_total: 0,
        };
        n.set_alertmanagers(alertmanagers);
        n.enforce_bound();
        Ok(n)
    }

    /// The state to persist, as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.state).unwrap_or_default()
    }

    /// New settings after a reload.
    pub fn set_settings(&mut self, settings: NotifierSettings) {
        self.settings = settings;
        self.enforce_bound();
    }

    /// Replaces the Alertmanagers: queued notifications for removed ones are forgotten;
    /// added ones get firing alerts at their next resend.
    pub fn set_alertmanagers(&mut self, alertmanagers: BTreeSet<String>) {
        self.alertmanagers = alertmanagers;
        let ams = &self.alertmanagers;
        self.state.queue.retain(|_, e| {
            e.pending.retain(|a| ams.contains(a));
            !e.pending.is_empty()
        });
    }

    /// Takes the alerts firing now (from every source) and queues what is due: new alerts
    /// and new episodes at once, firing ones every `resend_delay`, resolutions at once and
    /// then every `resend_delay` for `resolved_retention`.
    pub fn update(&mut self, alerts: Vec<Alert>, now_ms: i64) {
        let resend = ms(self.settings.resend_delay);
        // Saturating: times restored from the queue file may be anything.
        let due = |last: Option<i64>| {
            last.is_none_or(|l| now_ms.saturating_sub(l).saturating_add(RESEND_SLACK_MS) >= resend)
        };
        let valid_until = now_ms.saturating_add(ms(self.settings.valid_for));
        let mut seen = BTreeSet::new();
        let mut sends: Vec<(String, Alert, i64)> = Vec::new();
        for mut a in alerts {
            let fp = fingerprint(&a.labels);
            if !seen.insert(fp.clone()) {
                continue;
            }
            match self.state.tracked.get_mut(&fp) {
                Some(t) if t.resolved_at_ms.is_none() => {
                    a.starts_at_ms = t.alert.starts_at_ms;
                    t.alert = a;
                    t.restore_left = None;
                    if due(t.last_sent_ms) {
                        t.last_sent_ms = Some(now_ms);
                        sends.push((fp, t.alert.clone(), valid_until));
                    }
                }
                _ => {
                    a.starts_at_ms = a.starts_at_ms.min(now_ms);
                    sends.push((fp.clone(), a.clone(), valid_until));
                    self.state.tracked.insert(
                        fp,
                        Tracked {
                            alert: a,
                            resolved_at_ms: None,
                            last_sent_ms: Some(now_ms),
                            restore_left: None,
                        },
                    );
                }
            }
        }
        let retention = ms(self.settings.resolved_retention);
        self.state.tracked.retain(|fp, t| {
            if seen.contains(fp) {
                return true;
            }
            match t.resolved_at_ms {
                None => {
                    if let Some(left) = t.restore_left
                        && left > 0
                    {
                        // Restored after a restart and not derived again yet: still firing.
                        t.restore_left = Some(left - 1);
                        if due(t.last_sent_ms) {
                            t.last_sent_ms = Some(now_ms);
                            sends.push((fp.clone(), t.alert.clone(), valid_until));
                        }
                        return true;
                    }
                    t.resolved_at_ms = Some(now_ms);
                    t.restore_left = None;
                    t.last_sent_ms = Some(now_ms);
                    sends.push((fp.clone(), t.alert.clone(), now_ms));
                    true
                }
                Some(r) if now_ms.saturating_sub(r) >= retention => false,
                Some(r) => {
                    if due(t.last_sent_ms) {
                        t.last_sent_ms = Some(now_ms);
                        sends.push((fp.clone(), t.alert.clone(), r));
                    }
                    true
                }
            }
        });
        for (fp, alert, ends_at_ms) in sends {
            self.enqueue(fp, alert, ends_at_ms);
        }
        self.enforce_bound();
    }

    fn enqueue(&mut self, fp: String, alert: Alert, ends_at_ms: i64) {
        if self.alertmanagers.is_empty() {
            return;
        }
        let seq = self.state.next_seq;
        self.state.next_seq = self.state.next_seq.saturating_add(1);
        self.state.queue.insert(
            fp,
            Entry {
                seq,
                alert,
                ends_at_ms,
                pending: self.alertmanagers.clone(),
            },
        );
    }

    /// Drops the oldest queued notifications beyond `max_alerts` (counted), and forgets the
    /// oldest resolutions beyond it in the tracked set.
    fn enforce_bound(&mut self) {
        let max = self.settings.max_alerts;
        while self.state.queue.len() > max {
            let Some(oldest) = self
                .state
                .queue
                .iter()
                .min_by_key(|(_, e)| e.seq)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.state.queue.remove(&oldest);
            self.dropped_total += 1;
            tracing::warn!(alert = %oldest, max_alerts = max, "alert queue full: dropped the oldest notification");
        }
        let over = self.state.tracked.len().saturating_sub(max);
        if over > 0 {
            let mut resolved: Vec<(i64, String)> = self
                .state
                .tracked
                .iter()
                .filter_map(|(k, t)| t.resolved_at_ms.map(|r| (r, k.clone())))
                .collect();
            resolved.sort();
            for (_, k) in resolved.into_iter().take(over) {
                self.state.tracked.remove(&k);
            }
        }
    }

    /// The queued notifications for one Alertmanager, oldest first, in POSTs of at most
    /// [`MAX_BATCH`] alerts.
    pub fn batches(&self, alertmanager: &str) -> Vec<Batch> {
        let mut entries: Vec<(&String, &Entry)> = self
            .state
            .queue
            .iter()
            .filter(|(_, e)| e.pending.contains(alertmanager))
            .collect();
        entries.sort_by_key(|(_, e)| e.seq);
        entries
            .chunks(MAX_BATCH)
            .map(|chunk| {
                let body: Vec<Postable<'_>> = chunk
                    .iter()
                    .map(|(_, e)| Postable {
                        labels: &e.alert.labels,
                        annotations: &e.alert.annotations,
                        starts_at: rfc3339(e.alert.starts_at_ms),
                        ends_at: rfc3339(e.ends_at_ms),
                        generator_url: e.alert.generator_url.as_deref(),
                    })
                    .collect();
                Batch {
                    items: chunk.iter().map(|(k, e)| ((*k).clone(), e.seq)).collect(),
                    body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
                }
            })
            .collect()
    }

    /// Marks the versions in `items` as accepted by (or refused for good by) `alertmanager`;
    /// a notification accepted by every Alertmanager leaves the queue.
    pub fn ack(&mut self, alertmanager: &str, items: &[(String, u64)]) {
        for (fp, seq) in items {
            if let Some(e) = self.state.queue.get_mut(fp)
                && e.seq == *seq
            {
                e.pending.remove(alertmanager);
                if e.pending.is_empty() {
                    self.state.queue.remove(fp);
                }
            }
        }
    }

    /// Whether a notification waits for `alertmanager`.
    pub fn has_pending(&self, alertmanager: &str) -> bool {
        self.state
            .queue
            .values()
            .any(|e| e.pending.contains(alertmanager))
    }

    /// Notifications waiting for at least one Alertmanager.
    pub fn queue_len(&self) -> usize {
        self.state.queue.len()
    }

    /// Notifications dropped over the bound since start.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Firing alerts by `alertname`.
    pub fn active_by_alertname(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for t in self.state.tracked.values() {
            if t.resolved_at_ms.is_none() {
                let name = t.alert.labels.get("alertname").cloned().unwrap_or_default();
                *out.entry(name).or_insert(0) += 1;
            }
        }
        out
    }

    /// The firing alerts, for the landing page.
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.state
            .tracked
            .values()
            .filter(|t| t.resolved_at_ms.is_none())
            .map(|t| &t.alert)
    }
}

// ------------------------------------------------------------------------------ sources

/// Where the Grafana event-snapshot dashboard shows the hour around `starts_at_ms`, for
/// `target` when the alert names one.
pub fn grafana_link(base: &str, starts_at_ms: i64, target: Option<&str>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair(
        "from",
        &starts_at_ms.saturating_sub(LINK_HALF_WINDOW_MS).to_string(),
    );
    q.append_pair(
        "to",
        &starts_at_ms.saturating_add(LINK_HALF_WINDOW_MS).to_string(),
    );
    if let Some(t) = target {
        q.append_pair("var-target", t);
    }
    format!(
        "{}/d/{EVENT_SNAPSHOT_UID}/vitals-event-snapshot?{}",
        base.trim_end_matches('/'),
        q.finish()
    )
}

/// Adds the config's external labels (an alert's own label of the same name wins) and the
/// Grafana link.
fn finish(mut a: Alert, cfg: &SidecarConfig) -> Alert {
    for (k, v) in &cfg.external_labels {
        a.labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if let Some(g) = &cfg.grafana_url {
        let link = grafana_link(
            g,
            a.starts_at_ms,
            a.labels.get("target").map(String::as_str),
        );
        a.generator_url = Some(link.clone());
        a.annotations.insert("grafana_url".into(), link);
    }
    a
}

/// Labels the alert sets itself; a series label of the same name is kept as `exported_<name>`.
const RESERVED: [&str; 4] = ["alertname", "severity", "signal", "domain"];

fn num(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.is_finite() {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        v.to_string()
    }
}

fn anomaly_alert(s: &SeriesOut, at_ms: i64) -> Alert {
    let mut labels = Labels::new();
    for (k, v) in &s.labels {
        let k = if RESERVED.contains(&k.as_str()) {
            format!("exported_{k}")
        } else {
            k.clone()
        };
        labels.insert(k, v.clone());
    }
    labels.insert("alertname".into(), ANOMALY_ALERT.into());
    labels.insert("severity".into(), s.latest.severity.as_str().into());
    labels.insert("signal".into(), s.signal.to_string());
    labels.insert("domain".into(), s.domain.to_string());
    let l = &s.latest;
    let series: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    let mut description = format!(
        "{}{{{}}} is {} where {} was expected: z-score {:.2}, drift ratio {:.3}, anomaly score {:.3}",
        s.signal,
        series.join(", "),
        num(l.value),
        num(l.score.expected),
        l.score.zscore,
        l.score.drift_ratio,
        l.score.anomaly
    );
    for (window, b) in &s.baselines {
        let _ = write!(
            description,
            "; {window} baseline mean {} stddev {} (p5 {}, p95 {})",
            num(b.mean),
            num(b.stddev),
            num(b.quantiles[0]),
            num(b.quantiles[4])
        );
    }
    if let Some(t) = s.time_to_threshold {
        let _ = write!(
            description,
            "; reaches its threshold in {}",
            super::recommend::humanize_duration(t)
        );
    }
    let mut annotations = Labels::new();
    annotations.insert(
        "summary".into(),
        format!(
            "{} anomaly in {}: {} is {} (expected {})",
            l.severity.as_str(),
            s.domain,
            s.signal,
            num(l.value),
            num(l.score.expected)
        ),
    );
    annotations.insert("description".into(), description);
    annotations.insert("value".into(), num(l.value));
    annotations.insert("expected".into(), num(l.score.expected));
    annotations.insert("zscore".into(), format!("{:.3}", l.score.zscore));
    annotations.insert("drift_ratio".into(), format!("{:.4}", l.score.drift_ratio));
    annotations.insert("score".into(), format!("{:.4}", l.score.anomaly));
    if let Some((w, b)) = s.baselines.first() {
        annotations.insert(format!("baseline_{w}_mean"), num(b.mean));
        annotations.insert(format!("baseline_{w}_stddev"), num(b.stddev));
    }
    annotations.insert(
        "runbook_url".into(),
        "docs/runbooks.md#vitalsanomaly".into(),
    );
    Alert {
        labels,
        annotations,
        starts_at_ms: at_ms,
        generator_url: None,
    }
}

fn recommendation_alert(f: &Finding) -> Alert {
    let mut labels = Labels::new();
    labels.insert("alertname".into(), RECOMMENDATION_ALERT.into());
    labels.insert("severity".into(), f.severity.as_str().into());
    labels.insert("id".into(), f.id.clone());
    labels.insert("category".into(), f.category.as_str().into());
    labels.insert("target".into(), f.target.clone());
    labels.insert("title".into(), f.title.clone());
    let mut annotations = Labels::new();
    annotations.insert("summary".into(), f.title.clone());
    annotations.insert("description".into(), f.description.clone());
    annotations.insert("value".into(), num(f.value));
    if !f.remediation.is_empty() {
        let steps: Vec<String> = f
            .remediation
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}. {s}", i + 1))
            .collect();
        annotations.insert("remediation".into(), steps.join("\n"));
    }
    if let Some(u) = &f.runbook_url {
        annotations.insert("runbook_url".into(), u.clone());
    }
    Alert {
        labels,
        annotations,
        starts_at_ms: f.active_since_ms.unwrap_or(f.first_seen_ms),
        generator_url: None,
    }
}

/// The alerts firing in a cycle's snapshot: every anomalous series (warning or critical,
/// not muted), every active recommendation and the correlated event, with the config's
/// external labels and Grafana links. SLO alerts are appended by their own source.
pub fn alerts_from_snapshot(snap: &Snapshot, cfg: &Config) -> Vec<Alert> {
    let sc = &cfg.sidecar;
    let mut out = Vec::new();
    for s in &snap.series {
        if s.latest.severity > Severity::Ok && !s.latest.muted {
            out.push(finish(anomaly_alert(s, snap.at_ms), sc));
        }
    }
    if let Some(e) = &snap.correlation {
        let mut labels = Labels::new();
        labels.insert("alertname".into(), CORRELATED_ALERT.into());
        labels.insert("severity".into(), "warning".into());
        labels.insert("domains".into(), e.domains_label());
        let signals: Vec<String> = e.signals.iter().cloned().collect();
        let mut annotations = Labels::new();
        annotations.insert(
            "summary".into(),
            format!(
                "Anomalies in {} domains at once: {}",
                e.domains.len(),
                e.domains_label()
            ),
        );
        annotations.insert(
            "description".into(),
            format!(
                "Anomalous signals in domains {} since {}: {}. Several domains at the same time usually means one incident.",
                e.domains_label(),
                rfc3339(e.started_ms),
                signals.join(", ")
            ),
        );
        annotations.insert("signals".into(), signals.join(","));
        annotations.insert(
            "runbook_url".into(),
            "docs/runbooks.md#vitalscorrelatedanomaly".into(),
        );
        out.push(finish(
            Alert {
                labels,
                annotations,
                starts_at_ms: e.started_ms,
                generator_url: None,
            },
            sc,
        ));
    }
    for f in snap.recommendations.active() {
        out.push(finish(recommendation_alert(f), sc));
    }
    slo_alerts(snap, cfg, &mut out);
    out
}

/// The SLOs' page and ticket alerts in force, with the same identity labels as the rules of
/// `vitals rules slo` (alertname, severity, slo_alert and the SLO's labels) and the numbers in
/// the annotations.
fn slo_alerts(snap: &Snapshot, cfg: &Config, out: &mut Vec<Alert>) {
    use super::slo::{self, AlertKind};
    if snap.slos.statuses.is_empty() {
        return;
    }
    let specs = slo::effective(&cfg.sidecar);
    for st in &snap.slos.statuses {
        let Some(spec) = specs.iter().find(|s| s.name == st.slo) else {
            continue;
        };
        for (kind, firing) in [(AlertKind::Page, st.page), (AlertKind::Ticket, st.ticket)] {
            if firing != Some(true) {
                continue;
            }
            let mut labels: Labels = st.labels.clone();
            labels.extend(slo::alert_labels(spec, kind));
            labels.insert(
                "alertname".into(),
                if spec.alerting.name.is_empty() {
                    slo::DEFAULT_ALERT_NAME.to_string()
                } else {
                    spec.alerting.name.clone()
                },
            );
            let mut annotations = Labels::new();
            let burns: Vec<String> = st
                .windows
                .iter()
                .map(|w| format!("{} {}", w.window, num(w.burn_rate)))
                .collect();
            annotations.insert(
                "summary".into(),
                format!(
                    "SLO {} is burning its error budget ({} alert)",
                    st.slo,
                    kind.as_str()
                ),
            );
            annotations.insert(
                "description".into(),
                format!(
                    "SLO {} (objective {}%): burn rates {}; budget left {}; exhausted in {} at the current 1h burn rate.",
                    st.slo,
                    num(st.objective * 100.0),
                    burns.join(", "),
                    st.budget_remaining
                        .map_or("unknown".into(), |b| format!("{}%", num(b * 100.0))),
                    st.time_to_exhaustion_seconds
                        .map_or("never".into(), |t| format!("{} h", num(t / 3600.0))),
                ),
            );
            if let Some(b) = st.budget_remaining {
                annotations.insert("budget_remaining".into(), num(b));
            }
            annotations.insert("runbook_url".into(), "docs/slo.md".into());
            for (k, v) in spec
                .alerting
                .annotations
                .iter()
                .chain(match kind {
                    AlertKind::Page => spec.alerting.page_alert.annotations.iter(),
                    AlertKind::Ticket => spec.alerting.ticket_alert.annotations.iter(),
                })
                .filter(|(_, v)| !v.contains("{{"))
            {
                annotations.insert(k.clone(), v.clone());
            }
            out.push(finish(
                Alert {
                    labels,
                    annotations,
                    starts_at_ms: snap.at_ms,
                    generator_url: None,
                },
                &cfg.sidecar,
            ));
        }
    }
}

// ------------------------------------------------------------------------------ delivery

/// Where the queue lives when `sidecar.alert_queue.path` is not set: `$STATE_DIRECTORY`
/// (systemd's `StateDirectory=`), else `/var/lib/vitals` if it is a writable directory, else
/// `$XDG_STATE_HOME/vitals` or `~/.local/state/vitals`, else the temporary directory.
pub fn default_queue_path() -> PathBuf {
    const FILE: &str = "sidecar-alerts.json";
    let env_dir = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = env_dir("STATE_DIRECTORY") {
        // systemd may pass several, separated by ':'; the first is ours.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .map(PathBuf::from)
            .unwrap_or(d);
        return first.join(FILE);
    }
    let system = Path::new("/var/lib/vitals");
    if system.is_dir() && writable(system) {
        return system.join(FILE);
    }
    if let Some(d) = env_dir("XDG_STATE_HOME") {
        return d.join("vitals").join(FILE);
    }
    if let Some(h) = env_dir("HOME") {
        return h.join(".local/state/vitals").join(FILE);
    }
    std::env::temp_dir().join("vitals").join(FILE)
}

/// Whether a file can be created in `dir` (tried, not guessed from the mode bits).
fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".vitals-write-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            true
        }
        Err(_) => false,
    }
}

/// The queue file in force for a config.
pub fn queue_path(cfg: &SidecarConfig) -> PathBuf {
    cfg.alert_queue
        .path
        .clone()
        .unwrap_or_else(default_queue_path)
}

/// Delivery counters for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryStats {
    /// Alerts accepted, by Alertmanager.
    pub sent: BTreeMap<String, u64>,
    /// Alerts in failed POSTs, by Alertmanager.
    pub failed: BTreeMap<String, u64>,
    /// Notifications dropped over the queue bound.
    pub dropped: u64,
    /// Notifications queued.
    pub queue_length: usize,
    /// Firing alerts by alertname.
    pub active: BTreeMap<String, u64>,
    /// Failed writes of the queue file.
    pub save_errors: u64,
}

type L = Vec<(String, String)>;

/// Registers `vitals_sidecar_alerts_sent_total{alertmanager}`, `_failed_total`,
/// `_dropped_total`, `vitals_sidecar_alert_queue_length`, `vitals_sidecar_alerts_active
/// {alertname}` and `vitals_sidecar_alert_queue_save_errors_total`.
pub fn register(s: &DeliveryStats, reg: &mut Registry) {
    let sent = Family::<L, Counter<u64, AtomicU64>>::default();
    let failed = Family::<L, Counter<u64, AtomicU64>>::default();
    for (am, n) in &s.sent {
        sent.get_or_create(&vec![("alertmanager".into(), am.clone())])
            .inc_by(*n);
    }
    for (am, n) in &s.failed {
        failed
            .get_or_create(&vec![("alertmanager".into(), am.clone())])
            .inc_by(*n);
    }
    let dropped: Counter<u64, AtomicU64> = Counter::default();
    dropped.inc_by(s.dropped);
    let save_errors: Counter<u64, AtomicU64> = Counter::default();
    save_errors.inc_by(s.save_errors);
    let queue: Gauge = Gauge::default();
    queue.set(i64::try_from(s.queue_length).unwrap_or(i64::MAX));
    let active = Family::<L, Gauge>::default();
    for (name, n) in &s.active {
        active
            .get_or_create(&vec![("alertname".into(), name.clone())])
            .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    reg.register(
        "vitals_sidecar_alerts_sent",
        "Alerts accepted by an Alertmanager",
        sent,
    );
    reg.register(
        "vitals_sidecar_alerts_failed",
        "Alerts in POSTs to an Alertmanager that failed (they stay queued and are retried)",
        failed,
    );
    reg.register(
        "vitals_sidecar_alerts_dropped",
        "Alert notifications dropped because the queue was full (sidecar.alert_queue.max_alerts)",
        dropped,
    );
    reg.register(
        "vitals_sidecar_alert_queue_length",
        "Alert notifications waiting for at least one Alertmanager",
        queue,
    );
    reg.register(
        "vitals_sidecar_alerts_active",
        "Alerts firing, by alertname",
        active,
    );
    reg.register(
        "vitals_sidecar_alert_queue_save_errors",
        "Failed writes of the alert queue file",
        save_errors,
    );
}

struct Target {
    name: String,
    client: HttpClient,
    failures: u32,
    retry_at: Option<tokio::time::Instant>,
}

struct Shared {
    notifier: Notifier,
    path: PathBuf,
    /// Whether the file is used: only with Alertmanagers to deliver to.
    persist: bool,
    stats: DeliveryStats,
    save_failing: bool,
}

impl Shared {
    fn refresh_stats(&mut self) {
        self.stats.queue_length = self.notifier.queue_len();
        self.stats.dropped = self.notifier.dropped_total();
        self.stats.active = self.notifier.active_by_alertname();
    }
}

/// Why delivery could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// An Alertmanager's client settings are unusable.
    #[error("sidecar.alertmanagers[{index}]: {source}")]
    Client {
        /// Position in the list.
        index: usize,
        /// What was wrong.
        source: HttpError,
    },
}

fn build_targets(cfg: &SidecarConfig) -> Result<Vec<Target>, DeliveryError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (index, am) in cfg.alertmanagers.iter().enumerate() {
        let client =
            HttpClient::new(am).map_err(|source| DeliveryError::Client { index, source })?;
        let name = display_url(&am.url);
        if seen.insert(name.clone()) {
            out.push(Target {
                name,
                client,
                failures: 0,
                retry_at: None,
            });
        }
    }
    Ok(out)
}

/// Checks that a client can be built for every Alertmanager of a config.
pub fn check_clients(cfg: &SidecarConfig) -> Result<(), DeliveryError> {
    build_targets(cfg).map(|_| ())
}

/// Landing-page lines: the delivery state, then each firing alert (most severe first) with
/// its summary, start and Grafana link.
pub fn landing_lines(d: &Delivery, cfg: &SidecarConfig, max: usize) -> Vec<String> {
    let stats = d.stats();
    let mut out = Vec::new();
    if cfg.alertmanagers.is_empty() {
        out.push("Alerts: no Alertmanager configured (sidecar.alertmanagers); alerts are listed here only.".into());
    } else {
        let per: Vec<String> = stats
            .sent
            .iter()
            .map(|(am, n)| {
                format!(
                    "{am}: {n} sent, {} failed",
                    stats.failed.get(am).copied().unwrap_or(0)
                )
            })
            .collect();
        out.push(format!(
            "Alert delivery: {} notification(s) queued, {} dropped; {}",
            stats.queue_length,
            stats.dropped,
            per.join("; ")
        ));
    }
    let mut firing = d.firing();
    let rank = |a: &Alert| match a.labels.get("severity").map(String::as_str) {
        Some("critical" | "page") => 0,
        Some("warning" | "ticket") => 1,
        _ => 2,
    };
    firing.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then(a.starts_at_ms.cmp(&b.starts_at_ms))
    });
    for a in firing.iter().take(max) {
        let get = |k: &str| a.labels.get(k).map_or("", String::as_str);
        let mut line = format!(
            "Alert {} ({}) firing since {}: {}",
            get("alertname"),
            get("severity"),
            rfc3339(a.starts_at_ms),
            a.annotations.get("summary").map_or("", String::as_str)
        );
        if let Some(g) = a.annotations.get("grafana_url") {
            let _ = write!(line, " - Grafana: {g}");
        }
        out.push(line);
    }
    out
}

/// The delivery side: the notifier with its file, and the Alertmanager clients. Cheap to
/// clone; the sidecar's evaluation loop feeds it ([`Delivery::update`]) and a task of the
/// same runtime delivers ([`Delivery::run`]).
#[derive(Clone)]
pub struct Delivery {
    shared: Arc<Mutex<Shared>>,
    /// New clients after a reload, taken by the delivery task before its next round.
    new_targets: Arc<Mutex<Option<Vec<Target>>>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Delivery {
    /// Builds the clients and, when there are Alertmanagers to deliver to, reloads the queue
    /// file if there is one (an unreadable or corrupt file is logged and set aside as
    /// `<path>.corrupt`, and delivery starts empty). Without Alertmanagers nothing is read
    /// or written: alerts are only counted and listed.
    pub fn new(cfg: &SidecarConfig) -> Result<Delivery, DeliveryError> {
        let targets = build_targets(cfg)?;
        let names: BTreeSet<String> = targets.iter().map(|t| t.name.clone()).collect();
        let settings = NotifierSettings::from_config(cfg);
        let path = queue_path(cfg);
        let persist = !names.is_empty();
        let notifier = if !persist {
            Notifier::new(settings, names)
        } else {
            match std::fs::read(&path) {
                Ok(data) => match Notifier::restore(settings.clone(), names.clone(), &data) {
                    Ok(n) => {
                        tracing::info!(file = %path.display(), queued = n.queue_len(), "alert queue reloaded");
                        n
                    }
                    Err(e) => {
                        let aside = path.with_extension("json.corrupt");
                        tracing::error!(file = %path.display(), error = %e, moved_to = %aside.display(), "alert queue file unreadable; starting empty");
                        let _ = std::fs::rename(&path, &aside);
                        Notifier::new(settings, names)
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Notifier::new(settings, names)
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot read the alert queue file; starting empty");
                    Notifier::new(settings, names)
                }
            }
        };
        let mut stats = DeliveryStats::default();
        for t in &targets {
            stats.sent.insert(t.name.clone(), 0);
            stats.failed.insert(t.name.clone(), 0);
        }
        let mut shared = Shared {
            notifier,
            path,
            persist,
            stats,
            save_failing: false,
        };
        shared.refresh_stats();
        Ok(Delivery {
            shared: Arc::new(Mutex::new(shared)),
            new_targets: Arc::new(Mutex::new(Some(targets))),
            wake: Arc::new(tokio::sync::Notify::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the queue file (serialised under the lock, written outside it, so that
    /// `/metrics` never waits for an fsync).
    fn save(&self) {
        let (data, path) = {
            let mut s = self.lock();
            s.refresh_stats();
            if !s.persist {
                return;
            }
            (s.notifier.to_json(), s.path.clone())
        };
        let result = crate::fsutil::write_atomic(&path, &data);
        let mut s = self.lock();
        match result {
            Ok(()) => {
                if s.save_failing {
                    tracing::info!(file = %path.display(), "alert queue file written again");
                }
                s.save_failing = false;
            }
            Err(e) => {
                s.stats.save_errors += 1;
                if !s.save_failing {
                    tracing::error!(file = %path.display(), error = %e, "cannot write the alert queue file; alerts stay queued in memory only");
                }
                s.save_failing = true;
            }
        }
    }

    /// Applies a reloaded config: new clients, settings and queue bound (the queue file's
    /// path is only read at start).
    pub fn reconfigure(&self, cfg: &SidecarConfig) -> Result<(), DeliveryError> {
        let targets = build_targets(cfg)?;
        let names: BTreeSet<String> = targets.iter().map(|t| t.name.clone()).collect();
        *self
            .new_targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(targets);
        {
            let mut s = self.lock();
            s.notifier.set_settings(NotifierSettings::from_config(cfg));
            s.notifier.set_alertmanagers(names.clone());
            s.persist = !names.is_empty();
            s.stats.sent.retain(|k, _| names.contains(k));
            s.stats.failed.retain(|k, _| names.contains(k));
            for n in names {
                s.stats.sent.entry(n.clone()).or_insert(0);
                s.stats.failed.entry(n).or_insert(0);
            }
        }
        self.save();
        self.wake.notify_one();
        Ok(())
    }

    /// Takes the alerts firing now; queues what is due, saves the file and wakes delivery.
    pub fn update(&self, alerts: Vec<Alert>, now_ms: i64) {
        self.lock().notifier.update(alerts, now_ms);
        self.save();
        self.wake.notify_one();
    }

    /// The counters for `/metrics`.
    pub fn stats(&self) -> DeliveryStats {
        self.lock().stats.clone()
    }

    /// The firing alerts (a copy), for the landing page.
    pub fn firing(&self) -> Vec<Alert> {
        self.lock().notifier.firing().cloned().collect()
    }

    /// Delivers until `stop` turns true: after every update, and again after a failure
    /// (backing off from 1 s to 30 s per Alertmanager).
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut targets: Vec<Target> = Vec::new();
        loop {
            let fresh = self
                .new_targets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(t) = fresh {
                targets = t;
            }
            let next = self.deliver_once(&mut targets).await;
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = sleep => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// One round: every Alertmanager not backing off gets its queued batches (concurrently,
    /// so one that hangs does not delay the others). Returns when the next retry is due.
    async fn deliver_once(&self, targets: &mut [Target]) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        let work: Vec<(usize, Vec<Batch>)> = {
            let s = self.lock();
            targets
                .iter()
                .enumerate()
                .filter(|(_, t)| t.retry_at.is_none_or(|r| r <= now))
                .map(|(i, t)| (i, s.notifier.batches(&t.name)))
                .filter(|(_, b)| !b.is_empty())
                .collect()
        };
        let posts = work.into_iter().map(|(i, batches)| {
            let client = targets[i].client.clone();
            let name = targets[i].name.clone();
            let this = self.clone();
            async move {
                let mut ok = true;
                for b in batches {
                    let n = b.items.len() as u64;
                    let result = client
                        .post("/api/v2/alerts", "application/json", b.body.clone())
                        .await;
                    let mut s = this.lock();
                    match result {
                        Ok(r) if r.status.is_success() => {
                            s.notifier.ack(&name, &b.items);
                            *s.stats.sent.entry(name.clone()).or_insert(0) += n;
                        }
                        Ok(r) if r.status.is_client_error() && r.status.as_u16() != 429 => {
                            // Refused for good (a 4xx other than 429): retrying cannot help.
                            *s.stats.failed.entry(name.clone()).or_insert(0) += n;
                            s.notifier.ack(&name, &b.items);
                            let body = String::from_utf8_lossy(&r.body);
                            tracing::error!(alertmanager = %name, status = %r.status, alerts = n, answer = %body.chars().take(300).collect::<String>(), "Alertmanager refused alerts; they are not retried");
                        }
                        Ok(r) => {
                            *s.stats.failed.entry(name.clone()).or_insert(0) += n;
                            tracing::warn!(alertmanager = %name, status = %r.status, alerts = n, "sending alerts failed; they stay queued");
                            ok = false;
                        }
                        Err(e) => {
                            *s.stats.failed.entry(name.clone()).or_insert(0) += n;
                            tracing::warn!(alertmanager = %name, error = %e, alerts = n, "sending alerts failed; they stay queued");
                            ok = false;
                        }
                    }
                    drop(s);
                    if !ok {
                        break;
                    }
                }
                (i, ok)
            }
        });
        let results = futures_util::future::join_all(posts).await;
        if results.iter().any(|(_, ok)| *ok) {
            self.save();
        } else {
            self.lock().refresh_stats();
        }
        let resend = self.lock().notifier.settings.resend_delay;
        let now = tokio::time::Instant::now();
        for (i, ok) in results {
            let t = &mut targets[i];
            if ok {
                if t.failures > 0 {
                    tracing::info!(alertmanager = %t.name, "Alertmanager accepts alerts again");
                }
                t.failures = 0;
                t.retry_at = None;
            } else {
                t.failures = t.failures.saturating_add(1);
                // Never wait longer than a resend: retrying less often would be pointless.
                let delay = MIN_RETRY_DELAY
                    .saturating_mul(1u32 << (t.failures - 1).min(8))
                    .min(MAX_RETRY_DELAY.min(resend).max(MIN_RETRY_DELAY));
                t.retry_at = Some(now + delay);
            }
        }
        // The next wake-up: the earliest retry of an Alertmanager that still has work.
        let s = self.lock();
        targets
            .iter()
            .filter(|t| s.notifier.has_pending(&t.name))
            .filter_map(|t| t.retry_at)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    /// Fuzzing regression: times restored from a damaged queue file (any i64) overflowed
    /// the resend and retention arithmetic; a sequence number at its maximum overflowed on
    /// the next enqueue.
    #[test]
    fn extreme_times_and_sequence_in_the_queue_file_do_not_overflow() {
        let file = r#"{"version":1,"next_seq":18446744073709551615,"tracked":{
            "{alertname=\"A\"}":{"alert":{"labels":{"alertname":"A"},"annotations":{},"starts_at_ms":-9223372036854775808},"last_sent_ms":-9223372036854775808},
            "{alertname=\"B\"}":{"alert":{"labels":{"alertname":"B"},"annotations":{},"starts_at_ms":0},"resolved_at_ms":-9223372036854775808,"last_sent_ms":9223372036854775807}},
            "queue":{}}"#;
        let mut n = Notifier::restore(settings(), ams(&["am"]), file.as_bytes()).expect("restores");
        for now in [i64::MAX, 0, i64::MIN] {
            n.update(vec![alert("x", now)], now);
            n.update(Vec::new(), now);
        }
        assert!(n.queue_len() <= 100);
        assert!(grafana_link("http://g", i64::MIN, None).contains("from="));
    }

    fn settings() -> NotifierSettings {
        NotifierSettings {
            resend_delay: Duration::from_secs(60),
            valid_for: Duration::from_secs(240),
            resolved_retention: RESOLVED_RETENTION,
            max_alerts: 100,
            restore_cycles: 2,
        }
    }

    fn ams(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn alert(name: &str, starts: i64) -> Alert {
        let mut labels = Labels::new();
        labels.insert("alertname".into(), "Test".into());
        labels.insert("name".into(), name.into());
        Alert {
            labels,
            annotations: Labels::new(),
            starts_at_ms: starts,
            generator_url: None,
        }
    }

    /// Posts everything queued for `am` and returns the alerts sent (as JSON values).
    fn drain(n: &mut Notifier, am: &str) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for b in n.batches(am) {
            let v: Vec<serde_json::Value> = serde_json::from_slice(&b.body).expect("json");
            out.extend(v);
            n.ack(am, &b.items);
        }
        out
    }

    fn ts(v: &serde_json::Value, key: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(v[key].as_str().expect("string"))
            .expect("rfc3339")
            .timestamp_millis()
    }

    #[test]
    fn batches_hold_at_most_64_alerts_oldest_first() {
        let mut s = settings();
        s.max_alerts = 1000;
        let mut n = Notifier::new(s, ams(&["a"]));
        let alerts: Vec<Alert> = (0..150).map(|i| alert(&format!("{i:03}"), 0)).collect();
        n.update(alerts, 1000);
        let b = n.batches("a");
        assert_eq!(
            b.iter().map(|b| b.items.len()).collect::<Vec<_>>(),
            vec![64, 64, 22]
        );
        let seqs: Vec<u64> = b.iter().flat_map(|b| b.items.iter().map(|i| i.1)).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        let first: Vec<serde_json::Value> = serde_json::from_slice(&b[0].body).expect("json");
        assert_eq!(first.len(), 64);
        assert_eq!(first[0]["labels"]["alertname"], "Test");
    }

    #[test]
    fn ends_at_and_resend_timing() {
        let mut n = Notifier::new(settings(), ams(&["a"]));
        let t0 = 1_700_000_000_000;
        n.update(vec![alert("x", t0 - 5000)], t0);
        let sent = drain(&mut n, "a");
        assert_eq!(sent.len(), 1);
        assert_eq!(ts(&sent[0], "startsAt"), t0 - 5000);
        assert_eq!(ts(&sent[0], "endsAt"), t0 + 4 * MIN);
        // Within the resend delay: nothing new.
        n.update(vec![alert("x", t0 + 20_000)], t0 + 30_000);
        assert!(drain(&mut n, "a").is_empty());
        // A cycle that starts slightly early still resends; startsAt stays.
        n.update(vec![alert("x", t0 + 59_000)], t0 + MIN - 200);
        let sent = drain(&mut n, "a");
        assert_eq!(sent.len(), 1);
        assert_eq!(ts(&sent[0], "startsAt"), t0 - 5000);
        assert_eq!(ts(&sent[0], "endsAt"), t0 + MIN - 200 + 4 * MIN);
    }

    #[test]
    fn resolved_alerts_repeat_for_15_minutes_with_the_same_ends_at() {
        let mut n = Notifier::new(settings(), ams(&["a"]));
        let t0 = 1_700_000_000_000;
        n.update(vec![alert("x", t0)], t0);
        drain(&mut n, "a");
        let resolved = t0 + 2 * MIN;
        n.update(vec![], resolved);
        let sent = drain(&mut n, "a");
        assert_eq!(sent.len(), 1);
        assert_eq!(ts(&sent[0], "endsAt"), resolved);
        assert_eq!(ts(&sent[0], "startsAt"), t0);
        let mut repeats = 0;
        let mut t = resolved;
        while t < resolved + 20 * MIN {
            t += MIN;
            n.update(vec![], t);
            for v in drain(&mut n, "a") {
                assert_eq!(ts(&v, "endsAt"), resolved);
                repeats += 1;
            }
        }
        // Resent at +1m .. +14m (15m after resolving it is forgotten).
        assert_eq!(repeats, 14);
        assert!(n.firing().next().is_none());
        // Firing again after that: a new episode with a new startsAt.
        n.update(vec![alert("x", t)], t);
        let sent = drain(&mut n, "a");
        assert_eq!(ts(&sent[0], "startsAt"), t);
    }

    #[test]
    fn every_alertmanager_gets_every_alert_and_newer_versions_replace_queued_ones() {
        let mut n = Notifier::new(settings(), ams(&["a", "b"]));
        let t0 = 1_700_000_000_000;
        n.update(vec![alert("x", t0)], t0);
        assert_eq!(drain(&mut n, "a").len(), 1);
        assert_eq!(n.queue_len(), 1, "b has not taken it yet");
        // b is down for 5 minutes: the queue keeps one (the newest) version per alert.
        for i in 1..=5 {
            n.update(vec![alert("x", t0)], t0 + i * MIN);
            assert_eq!(drain(&mut n, "a").len(), 1);
        }
        assert_eq!(n.queue_len(), 1);
        let sent = drain(&mut n, "b");
        assert_eq!(sent.len(), 1);
        assert_eq!(ts(&sent[0], "endsAt"), t0 + 5 * MIN + 4 * MIN);
        assert_eq!(n.queue_len(), 0);
        // An ack of an older version does not remove a newer one.
        n.update(vec![alert("x", t0)], t0 + 6 * MIN);
        let stale = n.batches("b")[0].items.clone();
        n.update(vec![], t0 + 7 * MIN);
        n.ack("b", &stale);
        let sent = drain(&mut n, "b");
        assert_eq!(sent.len(), 1);
        assert_eq!(
            ts(&sent[0], "endsAt"),
            t0 + 7 * MIN,
            "the resolution survives"
        );
    }

    #[test]
    fn the_queue_is_bounded_and_drops_the_oldest() {
        let mut s = settings();
        s.max_alerts = 10;
        let mut n = Notifier::new(s, ams(&["a"]));
        let alerts: Vec<Alert> = (0..25).map(|i| alert(&format!("{i:02}"), 0)).collect();
        n.update(alerts, 1000);
        assert_eq!(n.queue_len(), 10);
        assert_eq!(n.dropped_total(), 15);
        let sent = drain(&mut n, "a");
        let names: Vec<&str> = sent
            .iter()
            .map(|v| v["labels"]["name"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(names.first(), Some(&"15"));
        assert_eq!(names.last(), Some(&"24"));
    }

    #[test]
    fn persistence_round_trip_keeps_queue_start_times_and_resolutions() {
        let t0 = 1_700_000_000_000;
        let mut n = Notifier::new(settings(), ams(&["a", "gone"]));
        n.update(vec![alert("x", t0 - MIN), alert("y", t0)], t0);
        n.update(vec![alert("x", t0)], t0 + MIN);
        // Nothing delivered (Alertmanager down): x firing and y resolved are queued.
        let json = n.to_json();
        let mut r = Notifier::restore(settings(), ams(&["a"]), &json).expect("restore");
        assert_eq!(r.queue_len(), 2);
        let sent = drain(&mut r, "a");
        assert_eq!(sent.len(), 2);
        let y = sent
            .iter()
            .find(|v| v["labels"]["name"] == "y")
            .expect("y queued");
        assert_eq!(ts(y, "endsAt"), t0 + MIN, "resolution survives the restart");
        // x is derived again with a later start: startsAt stays the first one.
        r.update(vec![alert("x", t0 + 3 * MIN)], t0 + 3 * MIN);
        let sent = drain(&mut r, "a");
        assert_eq!(ts(&sent[0], "startsAt"), t0 - MIN);
        // The resolution of y is still repeated after the restart.
        r.update(vec![alert("x", t0)], t0 + 4 * MIN);
        assert!(
            drain(&mut r, "a")
                .iter()
                .any(|v| v["labels"]["name"] == "y" && ts(v, "endsAt") == t0 + MIN)
        );
        assert!(Notifier::restore(settings(), ams(&["a"]), b"{not json").is_err());
    }

    #[test]
    fn restored_firing_alerts_wait_for_the_engine_then_resolve() {
        let t0 = 1_700_000_000_000;
        let mut n = Notifier::new(settings(), ams(&["a"]));
        n.update(vec![alert("x", t0)], t0);
        drain(&mut n, "a");
        let mut r = Notifier::restore(settings(), ams(&["a"]), &n.to_json()).expect("restore");
        // Two cycles without it (restore_cycles = 2): still firing, re-sent when due.
        r.update(vec![], t0 + MIN);
        let sent = drain(&mut r, "a");
        assert_eq!(sent.len(), 1);
        assert_eq!(ts(&sent[0], "endsAt"), t0 + MIN + 4 * MIN);
        r.update(vec![], t0 + 2 * MIN);
        assert_eq!(r.active_by_alertname().get("Test"), Some(&1));
        // The third: resolved.
        r.update(vec![], t0 + 3 * MIN);
        let sent = drain(&mut r, "a");
        assert!(sent.iter().any(|v| ts(v, "endsAt") == t0 + 3 * MIN));
        assert!(r.active_by_alertname().is_empty());
    }

    #[test]
    fn no_alertmanager_means_no_queue() {
        let mut n = Notifier::new(settings(), BTreeSet::new());
        n.update(vec![alert("x", 0)], 1);
        assert_eq!(n.queue_len(), 0);
        assert_eq!(n.active_by_alertname().get("Test"), Some(&1));
    }

    #[test]
    fn snapshot_alerts_have_identity_labels_and_numbers_in_annotations() {
        use super::super::baseline::Stats;
        use super::super::correlate::Event;
        use super::super::detector::Score;
        use super::super::recommend::{FindingState, Report};
        use super::super::scheduler::Latest;
        use crate::config::{Direction, RecommendationCategory, RecommendationSeverity};
        let series = |severity, muted| SeriesOut {
            signal: Arc::from("disk_used"),
            domain: Arc::from("disk"),
            direction: Direction::HigherIsWorse,
            labels: Labels::from([
                ("target".to_string(), "db1".to_string()),
                ("severity".to_string(), "x".to_string()),
            ]),
            latest: Latest {
                ts_ms: 1000,
                value: 95.5,
                score: Score {
                    anomaly: 0.99,
                    zscore: 6.25,
                    drift_ratio: 1.5,
                    expected: 60.0,
                    seasonal: false,
                },
                severity,
                muted,
            },
            baselines: vec![(
                "7d",
                Stats {
                    mean: 60.0,
                    stddev: 5.0,
                    quantiles: [52.0, 57.0, 60.0, 63.0, 68.0],
                    count: 100,
                },
            )],
            forecast: None,
            time_to_threshold: Some(7200.0),
        };
        let finding = Finding {
            id: "table_needs_vacuum".into(),
            category: RecommendationCategory::Vacuum,
            severity: RecommendationSeverity::Warning,
            target: "main/db/public.t".into(),
            title: "Table public.t needs VACUUM".into(),
            description: "41% dead".into(),
            remediation: vec!["VACUUM".into()],
            runbook_url: Some("https://r".into()),
            labels: Labels::new(),
            value: 0.41,
            state: FindingState::Active,
            first_seen_ms: 500,
            active_since_ms: Some(700),
            last_seen_ms: 2000,
            resolved_at_ms: None,
        };
        let mut resolved = finding.clone();
        resolved.title = "other".into();
        resolved.state = FindingState::Resolved;
        let snap = Snapshot {
            at_ms: 2000,
            series: vec![
                series(Severity::Critical, false),
                series(Severity::Warning, true),
                series(Severity::Ok, false),
            ],
            correlation: Some(Event {
                domains: ["disk".to_string(), "postgres".to_string()].into(),
                signals: ["disk_used".to_string(), "tps".to_string()].into(),
                started_ms: 1500,
            }),
            recommendations: Report {
                at_ms: 2000,
                findings: vec![finding, resolved],
                rules: vec![],
            },
            ..Snapshot::default()
        };
        let mut cfg = Config::default();
        cfg.sidecar.grafana_url = Some("http://g".into());
        cfg.sidecar.external_labels = Labels::from([
            ("cluster".to_string(), "eu".to_string()),
            ("target".to_string(), "ignored".to_string()),
        ]);
        let alerts = alerts_from_snapshot(&snap, &cfg);
        assert_eq!(alerts.len(), 3, "muted, ok and resolved ones do not fire");
        let a = &alerts[0];
        assert_eq!(
            fingerprint(&a.labels),
            r#"{alertname="VitalsAnomaly", cluster="eu", domain="disk", exported_severity="x", severity="critical", signal="disk_used", target="db1"}"#
        );
        assert_eq!(a.starts_at_ms, 2000);
        let d = &a.annotations["description"];
        for part in [
            "is 95.5 where 60 was expected",
            "z-score 6.25",
            "drift ratio 1.500",
            "anomaly score 0.990",
            "7d baseline mean 60 stddev 5 (p5 52, p95 68)",
            "reaches its threshold in 2h",
        ] {
            assert!(d.contains(part), "{part:?} not in {d:?}");
        }
        assert_eq!(a.annotations["zscore"], "6.250");
        assert_eq!(a.annotations["baseline_7d_mean"], "60");
        assert_eq!(
            a.annotations["grafana_url"],
            "http://g/d/vitals-event-snapshot/vitals-event-snapshot?from=-1798000&to=1802000&var-target=db1"
        );
        let c = &alerts[1];
        assert_eq!(c.labels["alertname"], CORRELATED_ALERT);
        assert_eq!(c.labels["domains"], "disk,postgres");
        assert_eq!(c.starts_at_ms, 1500);
        assert_eq!(c.annotations["signals"], "disk_used,tps");
        let r = &alerts[2];
        assert_eq!(
            fingerprint(&r.labels),
            r#"{alertname="VitalsRecommendation", category="vacuum", cluster="eu", id="table_needs_vacuum", severity="warning", target="main/db/public.t", title="Table public.t needs VACUUM"}"#
        );
        assert_eq!(r.starts_at_ms, 700);
        assert_eq!(r.annotations["description"], "41% dead");
        assert_eq!(r.annotations["runbook_url"], "https://r");
    }

    #[test]
    fn grafana_link_frames_the_start() {
        let l = grafana_link("http://g:3000/", 3_600_000, Some("main/db"));
        assert_eq!(
            l,
            "http://g:3000/d/vitals-event-snapshot/vitals-event-snapshot?from=1800000&to=5400000&var-target=main%2Fdb"
        );
    }

    #[test]
    fn settings_follow_the_config() {
        let mut c = SidecarConfig {
            interval: crate::config::PromDuration(Duration::from_secs(120)),
            ..SidecarConfig::default()
        };
        let s = NotifierSettings::from_config(&c);
        assert_eq!(s.valid_for, Duration::from_secs(480));
        c.interval = crate::config::PromDuration(Duration::from_secs(10));
        let s = NotifierSettings::from_config(&c);
        assert_eq!(s.valid_for, Duration::from_secs(240), "at least 4 x 1m");
        assert_eq!(s.resend_delay, Duration::from_secs(60));
    }

    #[test]
    fn the_file_is_written_atomically_and_read_back() {
        let dir = std::env::temp_dir().join(format!("vitals-am-test-{}", std::process::id()));
        let path = dir.join("sub").join("q.json");
        let mut n = Notifier::new(settings(), ams(&["a"]));
        n.update(vec![alert("x", 5)], 10);
        crate::fsutil::write_atomic(&path, &n.to_json()).expect("write");
        let data = std::fs::read(&path).expect("read");
        let r = Notifier::restore(settings(), ams(&["a"]), &data).expect("restore");
        assert_eq!(r.queue_len(), 1);
        assert_eq!(
            std::fs::read_dir(path.parent().expect("dir"))
                .expect("list")
                .count(),
            1,
            "no temporary file is left behind"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
