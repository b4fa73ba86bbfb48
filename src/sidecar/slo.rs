//! Service level objectives with error budgets and burn rates, in Sloth's prometheus/v1 SLO
//! format (see docs/slo.md).
//!
//! Each cycle the sidecar reads every SLO's error ratio over the SRE Workbook windows (5m,
//! 30m, 1h, 2h, 6h, 1d, 3d) and over its period in **one** PromQL query per SLO (the windows
//! and the error and total parts are tagged with `label_replace` and joined with `or`), then
//! computes in Rust: burn rates, the traffic-weighted error budget left over the period, the
//! time until it is gone at the current 1h burn rate, and the multi-window, multi-burn-rate
//! page and ticket alerts. The same math is written as Prometheus rules by
//! `vitals rules slo` ([`rules_yaml`]) for users who prefer Prometheus to evaluate it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use futures_util::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};

use super::health::{CRITICAL_PENALTY, DEVIATION_PENALTY, HealthBuilder, WARNING_PENALTY};
use super::promql::{InstantData, InstantSample, Labels, PromClient};
use crate::config::{Config, ConfigError, Position, Problem, SidecarConfig, Slo, slo_problems};

/// The shipped default SLOs, as YAML.
pub const DEFAULTS_YAML: &str = include_str!("default_slos.yml");

/// The windows whose error ratio is evaluated besides the period, with their length in
/// seconds: the SRE Workbook's multi-window, multi-burn-rate alert windows.
pub const WINDOWS: [(&str, u64); 7] = [
    ("5m", 300),
    ("30m", 1800),
    ("1h", 3600),
    ("2h", 7200),
    ("6h", 21_600),
    ("1d", 86_400),
    ("3d", 259_200),
];

/// Label that tags each part of the combined query (`error:5m`, `total:1h`, `ratio:30d`).
const TAG: &str = "vitals_slo_part";
/// SLO statuses are kept through failed queries for this long, then dropped.
const STALE_MS: i64 = 10 * 60 * 1000;
/// SLO queries run at once.
const CONCURRENT_QUERIES: usize = 4;
/// Alert name when the SLO's `alerting.name` is empty.
pub const DEFAULT_ALERT_NAME: &str = "SloErrorBudgetBurn";

/// Why SLOs could not be loaded or written as rules.
#[derive(Debug, thiserror::Error)]
pub enum SloError {
    /// The file is not a valid vitals config or Sloth spec.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The rules could not be rendered.
    #[error("rendering the rules: {0}")]
    Render(String),
}

/// The shipped default SLOs.
pub fn defaults() -> Vec<Slo> {
    // The file is part of the binary and covered by a unit test; an error here is a bug in
    // this build, reported rather than panicking.
    match serde_norway::from_str(DEFAULTS_YAML) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "the embedded default SLOs do not parse; using none");
            Vec::new()
        }
    }
}

/// Defaults (unless `default_slos: false`) with configured SLOs replacing defaults of the
/// same name and adding the rest, in order.
pub fn effective(cfg: &SidecarConfig) -> Vec<Slo> {
    let mut out = if cfg.default_slos {
        defaults()
    } else {
        Vec::new()
    };
    for s in &cfg.slos {
        match out.iter_mut().find(|d| d.name == s.name) {
            Some(d) => *d = s.clone(),
            None => out.push(s.clone()),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Windows and templates

/// Whether a query contains Sloth's `{{.window}}` placeholder (spaces inside the braces
/// allowed, as Go templates do).
pub fn has_window_placeholder(query: &str) -> bool {
    render(query, "") != query
}

/// The query with every `{{.window}}` replaced by `window` (a PromQL duration).
pub fn render(query: &str, window: &str) -> String {
    let mut out = String::with_capacity(query.len() + 8);
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        if after[..end].trim() == ".window" {
            out.push_str(&rest[..start]);
            out.push_str(window);
        } else {
            out.push_str(&rest[..start + 2 + end + 2]);
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Whole seconds as a PromQL duration: `300` → `5m`, `2592000` → `30d`, `5400` → `1h30m`.
pub fn prom_duration(seconds: u64) -> String {
    if seconds == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = seconds;
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if rest >= len {
            out.push_str(&format!("{}{unit}", rest / len));
            rest %= len;
        }
    }
    out
}

/// A window an SLO is evaluated over.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// PromQL duration, also the `window` label (`5m`, `30d`).
    pub name: String,
    /// Length in seconds.
    pub seconds: u64,
}

fn period_seconds(slo: &Slo) -> u64 {
    slo.period.0.as_secs()
}

/// The SLO's windows: the alert windows and its period, each once, shortest first.
pub fn windows(slo: &Slo) -> Vec<Window> {
    let mut out: Vec<Window> = WINDOWS
        .iter()
        .map(|(n, s)| Window {
            name: (*n).to_string(),
            seconds: *s,
        })
        .collect();
    let p = period_seconds(slo);
    if !out.iter().any(|w| w.seconds == p) {
        out.push(Window {
            name: prom_duration(p),
            seconds: p,
        });
        out.sort_by_key(|w| w.seconds);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Math

/// The error budget as a ratio: `objective` 99.9 (percent) → 0.001.
pub fn error_budget(objective_percent: f64) -> f64 {
    (100.0 - objective_percent) / 100.0
}

/// How many times faster than sustainable the budget is spent: error ratio / budget.
pub fn burn_rate(error_ratio: f64, budget: f64) -> f64 {
    error_ratio / budget
}

/// Share of the period's error budget left, from the error ratio over the whole period
/// (traffic-weighted when the SLI counts events): `1 - ratio / budget`, negative once the
/// budget is overspent.
pub fn budget_remaining(period_error_ratio: f64, budget: f64) -> f64 {
    1.0 - period_error_ratio / budget
}

/// Seconds until the budget is gone if the current burn rate holds: a burn rate of 1 spends
/// the whole budget in one period. `Some(0)` when it is already gone; `None` when nothing
/// is burning or the inputs are not numbers. Errors leaving the rolling period are ignored,
/// so this is the pessimistic linear estimate.
pub fn time_to_exhaustion(remaining: f64, burn: f64, period_s: f64) -> Option<f64> {
    if !(remaining.is_finite() && burn.is_finite() && period_s > 0.0) {
        return None;
    }
    if remaining <= 0.0 {
        return Some(0.0);
    }
    if burn <= 0.0 {
        return None;
    }
    Some(remaining * period_s / burn)
}

/// The two alerts of an SLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertKind {
    /// Fast burn: wake someone up.
    Page,
    /// Slow burn: look at it during working hours.
    Ticket,
}

impl AlertKind {
    /// `page` or `ticket`, the `alert` / `slo_alert` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Page => "page",
            AlertKind::Ticket => "ticket",
        }
    }

    /// Default `severity` label.
    pub fn default_severity(self) -> &'static str {
        match self {
            AlertKind::Page => "critical",
            AlertKind::Ticket => "warning",
        }
    }
}

/// One multi-window condition: the error ratio over both windows is above `factor × budget`,
/// where the factor spends `budget_fraction` of the period's budget within the long window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    /// Which alert it raises.
    pub kind: AlertKind,
    /// The long window, seconds.
    pub long_s: u64,
    /// The short window that makes the alert reset quickly, seconds.
    pub short_s: u64,
    /// Share of the period's budget spent within the long window.
    pub budget_fraction: f64,
}

/// The SRE Workbook's conditions: page on 2% of the budget in 1h (checked over 5m too) or
/// 5% in 6h (30m); ticket on 10% in 1d (2h) or 10% in 3d (6h). For a 30d period the
/// factors are 14.4, 6, 3 and 1.
pub const CONDITIONS: [Condition; 4] = [
    Condition {
        kind: AlertKind::Page,
        long_s: 3600,
        short_s: 300,
        budget_fraction: 0.02,
    },
    Condition {
        kind: AlertKind::Page,
        long_s: 21_600,
        short_s: 1800,
        budget_fraction: 0.05,
    },
    Condition {
        kind: AlertKind::Ticket,
        long_s: 86_400,
        short_s: 7200,
        budget_fraction: 0.10,
    },
    Condition {
        kind: AlertKind::Ticket,
        long_s: 259_200,
        short_s: 21_600,
        budget_fraction: 0.10,
    },
];

impl Condition {
    /// The burn-rate factor for a period: `fraction × period / long window`.
    pub fn factor(&self, period_s: f64) -> f64 {
        self.budget_fraction * period_s / self.long_s as f64
    }

    /// Whether the condition holds, given the error ratio and total of a window by its
    /// length in seconds. With `min_traffic > 0`, the total over the short window must reach
    /// it too: that is where a handful of events makes a noisy ratio.
    pub fn holds(
        &self,
        budget: f64,
        period_s: f64,
        min_traffic: f64,
        ratio: impl Fn(u64) -> Option<f64>,
        total: impl Fn(u64) -> Option<f64>,
    ) -> bool {
        let threshold = self.factor(period_s) * budget;
        let above = |s| ratio(s).is_some_and(|r| r > threshold);
        let traffic = min_traffic <= 0.0 || total(self.short_s).is_some_and(|t| t >= min_traffic);
        above(self.long_s) && above(self.short_s) && traffic
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation

/// One window's numbers for a series.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowValue {
    /// Window name (`5m` ... `30d`).
    pub window: String,
    /// Window length, seconds.
    pub seconds: u64,
    /// Error ratio over the window, 0 to 1.
    pub error_ratio: f64,
    /// Error ratio / error budget.
    pub burn_rate: f64,
    /// The total events over the window (events SLIs only).
    pub total: Option<f64>,
}

/// One SLO series after a cycle: what the sidecar exports and alerts on.
#[derive(Debug, Clone, PartialEq)]
pub struct SloStatus {
    /// SLO name.
    pub slo: String,
    /// Health domain.
    pub domain: String,
    /// Every label of the exported series: the query's series labels, overridden by the
    /// SLO's labels, `service` and `slo` (as rule labels override in Prometheus).
    pub labels: BTreeMap<String, String>,
    /// Objective as a ratio (0.999).
    pub objective: f64,
    /// Period, seconds.
    pub period_seconds: u64,
    /// Windows that had data, shortest first.
    pub windows: Vec<WindowValue>,
    /// Share of the period's budget left (negative when overspent), if the period had data.
    pub budget_remaining: Option<f64>,
    /// Seconds until the budget is gone at the current 1h burn rate.
    pub time_to_exhaustion_seconds: Option<f64>,
    /// Page alert state; `None` when the page alert is disabled.
    pub page: Option<bool>,
    /// Ticket alert state; `None` when the ticket alert is disabled.
    pub ticket: Option<bool>,
}

impl SloStatus {
    /// The window's values, by length in seconds.
    pub fn window(&self, seconds: u64) -> Option<&WindowValue> {
        self.windows.iter().find(|w| w.seconds == seconds)
    }

    /// Points this series takes off its domain's health score: a firing page alert counts as
    /// a critical anomaly, a ticket or an overspent budget as a warning, otherwise up to
    /// [`DEVIATION_PENALTY`] in proportion to the budget spent.
    pub fn penalty(&self) -> f64 {
        if self.page == Some(true) {
            return CRITICAL_PENALTY;
        }
        if self.ticket == Some(true) || self.budget_remaining.is_some_and(|r| r <= 0.0) {
            return WARNING_PENALTY;
        }
        self.budget_remaining
            .map_or(0.0, |r| DEVIATION_PENALTY * (1.0 - r).clamp(0.0, 1.0))
    }

    /// One line for the landing page: budget left, burn rate and alerts.
    pub fn summary(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "slo")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        let budget = self
            .budget_remaining
            .map_or("unknown".to_string(), |r| format!("{:.1}%", r * 100.0));
        let burn = self
            .window(3600)
            .map_or("unknown".to_string(), |w| format!("{:.2}", w.burn_rate));
        let mut alerts = Vec::new();
        if self.page == Some(true) {
            alerts.push("PAGE");
        }
        if self.ticket == Some(true) {
            alerts.push("TICKET");
        }
        let tte = self
            .time_to_exhaustion_seconds
            .map(|s| format!(", budget gone in {}", prom_duration(s as u64)))
            .unwrap_or_default();
        format!(
            "SLO {}{{{}}} ({:.3}%): {} of the error budget left, 1h burn rate {}{}{}",
            self.slo,
            labels.join(", "),
            self.objective * 100.0,
            budget,
            burn,
            tte,
            if alerts.is_empty() {
                String::new()
            } else {
                format!(", alerts {}", alerts.join(" "))
            }
        )
    }
}

/// How an SLO's query went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SloQueryStats {
    /// SLO name.
    pub slo: String,
    /// Whether the last query succeeded.
    pub up: bool,
    /// Series the SLO evaluated.
    pub series: usize,
    /// Failed queries so far.
    pub errors_total: u64,
    /// Warnings returned by the query API so far.
    pub warnings_total: u64,
    /// The last error, if the last query failed.
    pub last_error: Option<String>,
}

/// Everything one SLO cycle produced, as plain data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SloReport {
    /// Evaluation time, ms.
    pub at_ms: i64,
    /// Every SLO series (statuses of a failed query are kept for up to ten minutes).
    pub statuses: Vec<SloStatus>,
    /// Per-SLO query results.
    pub slos: Vec<SloQueryStats>,
    /// Queries this cycle that succeeded.
    pub queries_ok: u64,
    /// Queries this cycle that failed.
    pub queries_failed: u64,
}

impl SloReport {
    /// Adds every SLO to the health builder: component `slo:<name>` in the SLO's domain,
    /// with the worst [`SloStatus::penalty`] of its series.
    pub fn observe_health(&self, health: &mut HealthBuilder) {
        for s in &self.statuses {
            health.penalize(&s.domain, &format!("slo:{}", s.slo), s.penalty());
        }
    }
}

struct SloState {
    def: Slo,
    windows: Vec<Window>,
    query: String,
    last: Vec<SloStatus>,
    last_ok_ms: i64,
    stats: SloQueryStats,
}

impl SloState {
    fn new(def: Slo) -> SloState {
        let windows = windows(&def);
        let query = combined_query(&def, &windows);
        SloState {
            stats: SloQueryStats {
                slo: def.name.clone(),
                ..SloQueryStats::default()
            },
            def,
            windows,
            query,
            last: Vec::new(),
            last_ok_ms: i64::MIN,
        }
    }
}

/// Evaluates the SLOs: one query per SLO per cycle, everything else computed here.
pub struct SloEvaluator {
    slos: Vec<SloState>,
}

impl SloEvaluator {
    /// An evaluator of `slos` (see [`effective`] for the config's list).
    pub fn new(slos: Vec<Slo>) -> SloEvaluator {
        SloEvaluator {
            slos: slos.into_iter().map(SloState::new).collect(),
        }
    }

    /// An evaluator of the config's effective SLOs (defaults plus configured).
    pub fn from_config(cfg: &SidecarConfig) -> SloEvaluator {
        Self::new(effective(cfg))
    }

    /// Applies a new SLO list; unchanged SLOs keep their counters and last statuses.
    pub fn reconfigure(&mut self, slos: Vec<Slo>) {
        let mut old: BTreeMap<String, SloState> = std::mem::take(&mut self.slos)
            .into_iter()
            .map(|s| (s.def.name.clone(), s))
            .collect();
        self.slos = slos
            .into_iter()
            .map(|def| match old.remove(&def.name) {
                Some(s) if s.def == def => s,
                _ => SloState::new(def),
            })
            .collect();
    }

    /// The SLOs evaluated.
    pub fn slos(&self) -> impl Iterator<Item = &Slo> {
        self.slos.iter().map(|s| &s.def)
    }

    /// The PromQL query each SLO runs per cycle, by SLO name (for docs and debugging).
    pub fn queries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.slos
            .iter()
            .map(|s| (s.def.name.as_str(), s.query.as_str()))
    }

    /// Runs one cycle at `now_ms`: one instant query per SLO, at most four at once.
    pub async fn evaluate(&mut self, client: &PromClient, now_ms: i64) -> SloReport {
        let results: Vec<_> = futures_util::stream::iter(self.slos.iter().map(|s| s.query.clone()))
            .map(|q| async move { client.query(&q, Some(now_ms)).await })
            .buffered(CONCURRENT_QUERIES)
            .collect()
            .await;
        let mut report = SloReport {
            at_ms: now_ms,
            ..SloReport::default()
        };
        for (state, result) in self.slos.iter_mut().zip(results) {
            match result {
                Ok(r) => {
                    report.queries_ok += 1;
                    state.stats.warnings_total += r.warnings.len() as u64;
                    for w in &r.warnings {
                        tracing::warn!(slo = %state.def.name, warning = %w, "SLO query warning");
                    }
                    let samples = match r.data {
                        InstantData::Vector(v) => v,
                        _ => Vec::new(),
                    };
                    state.last = assemble(&state.def, &state.windows, samples);
                    state.last_ok_ms = now_ms;
                    state.stats.up = true;
                    state.stats.last_error = None;
                }
                Err(e) => {
                    report.queries_failed += 1;
                    tracing::warn!(slo = %state.def.name, error = %e, "SLO query failed");
                    state.stats.errors_total += 1;
                    state.stats.up = false;
                    state.stats.last_error = Some(e.to_string());
                    if now_ms.saturating_sub(state.last_ok_ms) > STALE_MS {
                        state.last.clear();
                    }
                }
            }
            state.stats.series = state.last.len();
            report.statuses.extend(state.last.iter().cloned());
            report.slos.push(state.stats.clone());
        }
        report
    }
}

/// The one query of an SLO: every window's error and total (events) or ratio (raw), each
/// tagged with `vitals_slo_part="<part>:<window>"` and joined with `or`.
pub fn combined_query(slo: &Slo, windows: &[Window]) -> String {
    let tag = |expr: String, part: &str, w: &Window| {
        format!(
            "label_replace(({expr}), \"{TAG}\", \"{part}:{}\", \"\", \"\")",
            w.name
        )
    };
    let mut parts = Vec::new();
    for w in windows {
        if let Some(e) = &slo.sli.events {
            parts.push(tag(render(&e.error_query, &w.name), "error", w));
            parts.push(tag(render(&e.total_query, &w.name), "total", w));
        } else if let Some(r) = &slo.sli.raw {
            parts.push(tag(render(&r.error_ratio_query, &w.name), "ratio", w));
        }
    }
    parts.join(" or ")
}

#[derive(Default)]
struct Parts {
    error: BTreeMap<u64, f64>,
    total: BTreeMap<u64, f64>,
    ratio: BTreeMap<u64, f64>,
}

/// Turns the combined query's samples into one status per series: samples are grouped by
/// their labels (without the tag and `__name__`), a missing error count with a total counts
/// as no errors, a zero total as no data.
pub fn assemble(slo: &Slo, windows: &[Window], samples: Vec<InstantSample>) -> Vec<SloStatus> {
    let mut series: BTreeMap<Labels, Parts> = BTreeMap::new();
    for s in samples {
        let mut labels = s.labels;
        labels.remove("__name__");
        let Some(tag) = labels.remove(TAG) else {
            continue;
        };
        let Some((part, wname)) = tag.split_once(':') else {
            continue;
        };
        let Some(w) = windows.iter().find(|w| w.name == wname) else {
            continue;
        };
        if s.value.is_nan() {
            continue;
        }
        let p = series.entry(labels).or_default();
        let map = match part {
            "error" => &mut p.error,
            "total" => &mut p.total,
            _ => &mut p.ratio,
        };
        map.insert(w.seconds, s.value);
    }
    let budget = error_budget(slo.objective);
    let period_s = period_seconds(slo);
    let mut out = Vec::new();
    for (labels, parts) in series {
        let mut values = Vec::new();
        for w in windows {
            let (ratio, total) = if slo.sli.events.is_some() {
                match parts.total.get(&w.seconds) {
                    Some(&t) if t > 0.0 && t.is_finite() => (
                        Some(parts.error.get(&w.seconds).copied().unwrap_or(0.0) / t),
                        Some(t),
                    ),
                    Some(&t) => (None, Some(t)),
                    None => (None, None),
                }
            } else {
                (parts.ratio.get(&w.seconds).copied(), None)
            };
            if let Some(r) = ratio.filter(|r| r.is_finite()) {
                values.push(WindowValue {
                    window: w.name.clone(),
                    seconds: w.seconds,
                    error_ratio: r,
                    burn_rate: burn_rate(r, budget),
                    total,
                });
            }
        }
        if values.is_empty() {
            continue;
        }
        out.push(status(
            slo,
            budget,
            period_s,
            export_labels(slo, labels),
            values,
        ));
    }
    out
}

fn status(
    slo: &Slo,
    budget: f64,
    period_s: u64,
    labels: BTreeMap<String, String>,
    windows: Vec<WindowValue>,
) -> SloStatus {
    let get = |s: u64| windows.iter().find(|w| w.seconds == s);
    let budget_remaining = get(period_s).map(|w| budget_remaining(w.error_ratio, budget));
    let time_to_exhaustion_seconds = match (budget_remaining, get(3600)) {
        (Some(r), Some(h)) => time_to_exhaustion(r, h.burn_rate, period_s as f64),
        _ => None,
    };
    let alert = |kind: AlertKind| {
        CONDITIONS.iter().filter(|c| c.kind == kind).any(|c| {
            c.holds(
                budget,
                period_s as f64,
                slo.min_traffic,
                |s| get(s).map(|w| w.error_ratio),
                |s| get(s).and_then(|w| w.total),
            )
        })
    };
    let a = &slo.alerting;
    SloStatus {
        slo: slo.name.clone(),
        domain: slo.domain.clone(),
        labels,
        objective: slo.objective / 100.0,
        period_seconds: period_s,
        budget_remaining,
        time_to_exhaustion_seconds,
        page: (!a.page_alert.disable).then(|| alert(AlertKind::Page)),
        ticket: (!a.ticket_alert.disable).then(|| alert(AlertKind::Ticket)),
        windows,
    }
}

/// The labels an SLO sets on its series and records: its labels, `service`, `slo`.
pub fn slo_labels(slo: &Slo) -> BTreeMap<String, String> {
    let mut out = slo.labels.clone();
    if let Some(s) = slo.service.as_ref().filter(|s| !s.is_empty()) {
        out.insert("service".into(), s.clone());
    }
    out.insert("slo".into(), slo.name.clone());
    out
}

fn export_labels(slo: &Slo, series: Labels) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = series.into_iter().collect();
    out.extend(slo_labels(slo));
    out
}

// ---------------------------------------------------------------------------------------
// Exports

type L = Vec<(String, String)>;
type G = Family<L, Gauge<f64, AtomicU64>>;

fn with(labels: &BTreeMap<String, String>, extra: &[(&str, &str)]) -> L {
    let mut m = labels.clone();
    for (k, v) in extra {
        m.insert((*k).to_string(), (*v).to_string());
    }
    m.into_iter().collect()
}

/// Registers the report's `slo_*` families (and the SLO query self-metrics) in `reg`.
pub fn encode(report: &SloReport, reg: &mut Registry) {
    let objective = G::default();
    let period = G::default();
    let ratio = G::default();
    let burn = G::default();
    let remaining = G::default();
    let tte = G::default();
    let alert = G::default();
    for s in &report.statuses {
        let base = with(&s.labels, &[]);
        objective.get_or_create(&base).set(s.objective);
        period.get_or_create(&base).set(s.period_seconds as f64);
        for w in &s.windows {
            let l = with(&s.labels, &[("window", &w.window)]);
            ratio.get_or_create(&l).set(w.error_ratio);
            if w.burn_rate.is_finite() {
                burn.get_or_create(&l).set(w.burn_rate);
            }
        }
        if let Some(r) = s.budget_remaining {
            remaining.get_or_create(&base).set(r);
        }
        if let Some(t) = s.time_to_exhaustion_seconds {
            tte.get_or_create(&base).set(t);
        }
        for (kind, state) in [(AlertKind::Page, s.page), (AlertKind::Ticket, s.ticket)] {
            if let Some(on) = state {
                let l = with(&s.labels, &[("alert", kind.as_str())]);
                alert.get_or_create(&l).set(if on { 1.0 } else { 0.0 });
            }
        }
    }
    reg.register(
        "slo_objective_ratio",
        "Objective of the SLO: the share of good events (or time) it promises",
        objective,
    );
    reg.register_with_unit(
        "slo_period",
        "Compliance period the SLO's error budget is computed over",
        Unit::Seconds,
        period,
    );
    reg.register(
        "slo_error_ratio",
        "Share of bad events (or time) over the window",
        ratio,
    );
    reg.register(
        "slo_burn_rate",
        "Error ratio over the window divided by the error budget (1 spends the budget in exactly one period)",
        burn,
    );
    reg.register(
        "slo_error_budget_remaining_ratio",
        "Share of the period's error budget left, traffic-weighted; negative once overspent",
        remaining,
    );
    reg.register_with_unit(
        "slo_time_to_exhaustion",
        "Time until the error budget is gone at the current 1h burn rate (0 when already gone)",
        Unit::Seconds,
        tte,
    );
    reg.register(
        "slo_alert_active",
        "Whether the SLO's multi-window burn-rate alert (page or ticket) holds: 1 yes, 0 no",
        alert,
    );
    let sub = reg.sub_registry_with_prefix("vitals_sidecar_slo");
    let up = Family::<L, Gauge>::default();
    let errors = Family::<L, Counter>::default();
    for q in &report.slos {
        let l = vec![("slo".to_string(), q.slo.clone())];
        up.get_or_create(&l).set(i64::from(q.up));
        errors.get_or_create(&l).inc_by(q.errors_total);
    }
    sub.register("up", "Whether the SLO's last query succeeded", up);
    sub.register("query_errors", "Failed queries per SLO", errors);
}

// ---------------------------------------------------------------------------------------
// Loading for `vitals rules slo`

/// A Sloth prometheus/v1 spec file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlothSpec {
    version: String,
    service: String,
    #[serde(default, deserialize_with = "crate::config::scalar_map")]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    slos: Vec<Slo>,
}

fn invalid(file: &str, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_string(),
        position: None,
        key: key.into(),
        reason: reason.into(),
    }
}

/// Reads the SLOs of a file for `vitals rules slo`: a Sloth prometheus/v1 spec (recognised by
/// its `version` key; its `service` and `labels` apply to every SLO) or a vitals config (the
/// effective `sidecar.slos`: defaults unless switched off, plus the configured ones).
pub fn load_file(path: &Path) -> Result<Vec<Slo>, SloError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    parse(&text, &path.display().to_string(), path.parent())
}

/// As [`load_file`], from text; `file` names the source in errors.
pub fn parse(text: &str, file: &str, base_dir: Option<&Path>) -> Result<Vec<Slo>, SloError> {
    let value: serde_norway::Value = serde_norway::from_str(text).unwrap_or_default();
    let is_sloth = value
        .as_mapping()
        .is_some_and(|m| m.contains_key(serde_norway::Value::from("version")));
    if !is_sloth {
        let config = Config::parse(text, file, base_dir)?;
        return Ok(effective(&config.sidecar));
    }
    let de = serde_norway::Deserializer::from_str(text);
    let spec: SlothSpec = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        ConfigError::Invalid {
            file: file.to_string(),
            position: inner.location().map(|l| Position {
                line: l.line(),
                column: l.column(),
            }),
            key: if key == "." { String::new() } else { key },
            reason: inner.to_string(),
        }
    })?;
    if spec.version != "prometheus/v1" {
        return Err(invalid(
            file,
            "version",
            format!(
                "only Sloth's prometheus/v1 specs are supported, not {:?}",
                spec.version
            ),
        )
        .into());
    }
    let mut names = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(spec.slos.len());
    for (i, mut slo) in spec.slos.into_iter().enumerate() {
        if slo.service.is_none() && !spec.service.is_empty() {
            slo.service = Some(spec.service.clone());
        }
        let mut labels = spec.labels.clone();
        labels.extend(std::mem::take(&mut slo.labels));
        slo.labels = labels;
        let key = format!("slos[{i}]");
        if let Some(Problem { key, reason }) = slo_problems(&key, &slo).into_iter().next() {
            return Err(invalid(file, key, reason).into());
        }
        if !names.insert(slo.name.clone()) {
            return Err(invalid(
                file,
                format!("{key}.name"),
                format!("duplicate name {:?}", slo.name),
            )
            .into());
        }
        out.push(slo);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Rules

#[derive(Serialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Serialize)]
struct RuleGroup {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    rules: Vec<Rule>,
}

#[derive(Serialize)]
struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<String>,
    expr: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// Record name of the error ratio over a window.
pub fn ratio_record(window: &str) -> String {
    format!("slo:sli_error:ratio_rate{window}")
}

/// Record name of the total events over a window (recorded only with `min_traffic`).
pub fn total_record(window: &str) -> String {
    format!("slo:sli_total:rate{window}")
}

/// A number for PromQL and people: at most 12 significant digits, no trailing zeros.
pub fn fmt_num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = 11 - x.abs().log10().floor() as i32;
    let s = format!("{:.*}", digits.clamp(0, 20) as usize, x);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Selector matching an SLO's records: its `slo` and `service` labels.
fn selector(slo: &Slo) -> String {
    let mut parts = vec![format!("slo={}", quote(&slo.name))];
    if let Some(s) = slo.service.as_ref().filter(|s| !s.is_empty()) {
        parts.push(format!("service={}", quote(s)));
    }
    format!("{{{}}}", parts.join(", "))
}

fn one_line(q: &str) -> String {
    q.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn ratio_expr(slo: &Slo, window: &str) -> String {
    if let Some(e) = &slo.sli.events {
        let err = one_line(&render(&e.error_query, window));
        let total = one_line(&render(&e.total_query, window));
        format!("((({err}) or (0 * ({total}))) / ({total}))")
    } else if let Some(r) = &slo.sli.raw {
        format!("({})", one_line(&render(&r.error_ratio_query, window)))
    } else {
        "vector(0)".into()
    }
}

/// The labels of an SLO's alert: `alerting.labels`, the default `severity`, the alert's own
/// labels, and `slo_alert` (`page` or `ticket`). The SLO's labels come with the records.
pub fn alert_labels(slo: &Slo, kind: AlertKind) -> BTreeMap<String, String> {
    let a = &slo.alerting;
    let own = match kind {
        AlertKind::Page => &a.page_alert,
        AlertKind::Ticket => &a.ticket_alert,
    };
    let mut out = a.labels.clone();
    out.entry("severity".into())
        .or_insert_with(|| kind.default_severity().into());
    out.extend(own.labels.clone());
    out.insert("slo_alert".into(), kind.as_str().into());
    out
}

/// The annotations of an SLO's alert: a `summary` and a `description` stating the
/// thresholds, overridden by `alerting.annotations` and the alert's own annotations.
pub fn alert_annotations(slo: &Slo, kind: AlertKind) -> BTreeMap<String, String> {
    let a = &slo.alerting;
    let own = match kind {
        AlertKind::Page => &a.page_alert,
        AlertKind::Ticket => &a.ticket_alert,
    };
    let period_s = period_seconds(slo) as f64;
    let budget = error_budget(slo.objective);
    let conds: Vec<String> = CONDITIONS
        .iter()
        .filter(|c| c.kind == kind)
        .map(|c| {
            format!(
                "{}% of the budget in {} (burn rate above {} over {} and {})",
                fmt_num(c.budget_fraction * 100.0),
                prom_duration(c.long_s),
                fmt_num(c.factor(period_s)),
                prom_duration(c.long_s),
                prom_duration(c.short_s)
            )
        })
        .collect();
    let speed = match kind {
        AlertKind::Page => "fast",
        AlertKind::Ticket => "steady",
    };
    let mut description = format!(
        "Error ratio {{{{ $value | humanizePercentage }}}} for SLO {} (objective {}%, error budget {}% over {}): a {speed} burn that spends {}.",
        slo.name,
        fmt_num(slo.objective),
        fmt_num(budget * 100.0),
        prom_duration(period_seconds(slo)),
        conds.join(" or ")
    );
    if !slo.description.is_empty() {
        description.push(' ');
        description.push_str(&slo.description);
    }
    let mut out = BTreeMap::from([
        (
            "summary".to_string(),
            format!(
                "SLO {}: the error budget is burning {}",
                slo.name,
                match kind {
                    AlertKind::Page => "fast",
                    AlertKind::Ticket => "too steadily",
                }
            ),
        ),
        ("description".to_string(), description),
    ]);
    out.extend(a.annotations.clone());
    out.extend(own.annotations.clone());
    out
}

fn alert_expr(slo: &Slo, kind: AlertKind) -> String {
    let sel = selector(slo);
    let budget = error_budget(slo.objective);
    let period_s = period_seconds(slo) as f64;
    let branches: Vec<String> = CONDITIONS
        .iter()
        .filter(|c| c.kind == kind)
        .map(|c| {
            let thr = fmt_num(c.factor(period_s) * budget);
            let long = prom_duration(c.long_s);
            let short = prom_duration(c.short_s);
            let mut terms = vec![
                format!("{}{sel} > {thr}", ratio_record(&long)),
                format!("{}{sel} > {thr}", ratio_record(&short)),
            ];
            if slo.min_traffic > 0.0 {
                terms.push(format!(
                    "{}{sel} >= {}",
                    total_record(&short),
                    fmt_num(slo.min_traffic)
                ));
            }
            format!("({})", terms.join(" and "))
        })
        .collect();
    branches.join(" or ")
}

fn group_name(slo: &Slo, what: &str) -> String {
    match slo.service.as_ref().filter(|s| !s.is_empty()) {
        Some(s) => format!("slo-{s}-{}-{what}", slo.name),
        None => format!("slo-{}-{what}", slo.name),
    }
}

/// Recording and alerting rules equivalent to the sidecar's evaluation, as a Prometheus rule
/// file: per SLO a group recording the error ratio of each alert window (and the total when
/// `min_traffic` is set) followed by the page and ticket alerts, and a 5-minute group
/// recording the period's ratio, the objective and the budget left.
pub fn rules_yaml(slos: &[Slo]) -> Result<String, SloError> {
    let mut groups = Vec::new();
    for slo in slos {
        let first = groups.len();
        let labels = slo_labels(slo);
        let period = period_seconds(slo);
        let period_name = prom_duration(period);
        let mut sli = Vec::new();
        for (w, _) in WINDOWS {
            sli.push(Rule {
                record: Some(ratio_record(w)),
                alert: None,
                expr: ratio_expr(slo, w),
                labels: labels.clone(),
                annotations: BTreeMap::new(),
            });
        }
        if slo.min_traffic > 0.0
            && let Some(e) = &slo.sli.events
        {
            for c in CONDITIONS {
                let w = prom_duration(c.short_s);
                sli.push(Rule {
                    record: Some(total_record(&w)),
                    alert: None,
                    expr: format!("({})", one_line(&render(&e.total_query, &w))),
                    labels: labels.clone(),
                    annotations: BTreeMap::new(),
                });
            }
        }
        let mut budget_rules = Vec::new();
        if !WINDOWS.iter().any(|(_, s)| *s == period) {
            budget_rules.push(Rule {
                record: Some(ratio_record(&period_name)),
                alert: None,
                expr: ratio_expr(slo, &period_name),
                labels: labels.clone(),
                annotations: BTreeMap::new(),
            });
        }
        let sel = selector(slo);
        budget_rules.push(Rule {
            record: Some("slo:objective:ratio".into()),
            alert: None,
            expr: format!("vector({})", fmt_num(slo.objective / 100.0)),
            labels: labels.clone(),
            annotations: BTreeMap::new(),
        });
        budget_rules.push(Rule {
            record: Some("slo:error_budget_remaining:ratio".into()),
            alert: None,
            expr: format!(
                "1 - {}{sel} / {}",
                ratio_record(&period_name),
                fmt_num(error_budget(slo.objective))
            ),
            labels: labels.clone(),
            annotations: BTreeMap::new(),
        });
        groups.push(RuleGroup {
            name: group_name(slo, "budget"),
            interval: Some("5m".into()),
            rules: budget_rules,
        });
        // The alerts follow the records in the same group, so they see this evaluation's
        // ratios rather than the previous one's.
        let mut rules = sli;
        for (kind, alert) in [
            (AlertKind::Page, &slo.alerting.page_alert),
            (AlertKind::Ticket, &slo.alerting.ticket_alert),
        ] {
            if alert.disable {
                continue;
            }
            rules.push(Rule {
                record: None,
                alert: Some(if slo.alerting.name.is_empty() {
                    DEFAULT_ALERT_NAME.to_string()
                } else {
                    slo.alerting.name.clone()
                }),
                expr: alert_expr(slo, kind),
                labels: alert_labels(slo, kind),
                annotations: alert_annotations(slo, kind),
            });
        }
        groups.insert(
            first,
            RuleGroup {
                name: group_name(slo, "sli"),
                interval: None,
                rules,
            },
        );
    }
    let body = serde_norway::to_string(&RuleFile { groups })
        .map_err(|e| SloError::Render(e.to_string()))?;
    Ok(format!(
        "# Generated by `vitals rules slo`: SLO error ratios per window, error budget and\n\
         # multi-window burn-rate alerts, the same math as the vitals sidecar (docs/slo.md).\n{body}"
    ))
}
