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
use crate::config::{Config, ConfigError, Problem, SidecarConfig, Slo, slo_problems};

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
    // Through the config reader, as the configured ones: one deserializer per type in the
    // binary (each extra one is more code, and code pages are most of the resident memory).
    match crate::config::parse_yaml(DEFAULTS_YAML, "default_slos.yml") {
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

/// The error budget as a ratio: `objective` 99.9 (percent) → 0.001. Rounded to 1e-12 so
/// that `100 - 99.9` does not carry the binary rounding error of 99.9 into every burn rate.
pub fn error_budget(objective_percent: f64) -> f64 {
    ((100.0 - objective_percent) * 1e10).round() / 1e12
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
    // Through the config reader like everything else it reads (one deserializer per type).
    let value: serde_norway::Value = crate::config::parse_yaml(text, file).unwrap_or_default();
    let is_sloth = value
        .as_mapping()
        .is_some_and(|m| m.contains_key(serde_norway::Value::from("version")));
    if !is_sloth {
        let config = Config::parse(text, file, base_dir)?;
        return Ok(effective(&config.sidecar));
    }
    let spec: SlothSpec = crate::config::parse_yaml(text, file)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PromDuration, SliRaw};

    fn slo_events(objective: f64) -> Slo {
        serde_norway::from_str(&format!(
            "name: api\nobjective: {objective}\nsli:\n  events:\n    error_query: sum(rate(e[{{{{.window}}}}]))\n    total_query: sum(rate(t[{{{{.window}}}}]))\n"
        ))
        .expect("slo")
    }

    fn sample(labels: &[(&str, &str)], part: &str, value: f64) -> InstantSample {
        let mut l: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        l.insert(TAG.into(), part.into());
        InstantSample {
            labels: l,
            ts_ms: 0,
            value,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn window_placeholder_is_rendered_like_go_templates() {
        assert_eq!(
            render("rate(x[{{.window}}]) / rate(y[{{ .window }}])", "5m"),
            "rate(x[5m]) / rate(y[5m])"
        );
        assert_eq!(render("{{.other}} {{.window}}", "1h"), "{{.other}} 1h");
        assert_eq!(render("no {{ placeholder", "1h"), "no {{ placeholder");
        assert!(has_window_placeholder("x[{{.window}}]"));
        assert!(!has_window_placeholder("x[5m]"));
        assert!(!has_window_placeholder("{{.windows}}"));
    }

    #[test]
    fn durations_are_promql() {
        assert_eq!(prom_duration(300), "5m");
        assert_eq!(prom_duration(30 * 86_400), "30d");
        assert_eq!(prom_duration(5400), "1h30m");
        assert_eq!(prom_duration(90_061), "1d1h1m1s");
        assert_eq!(prom_duration(0), "0s");
    }

    #[test]
    fn windows_include_the_period_once() {
        let mut s = slo_events(99.9);
        let w: Vec<_> = windows(&s).into_iter().map(|w| w.name).collect();
        assert_eq!(w, ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]);
        s.period = PromDuration(std::time::Duration::from_secs(3 * 86_400));
        assert_eq!(windows(&s).len(), 7, "a 3d period is the 3d window");
        s.period = PromDuration(std::time::Duration::from_secs(7 * 86_400));
        assert_eq!(
            windows(&s).last().map(|w| w.name.clone()),
            Some("7d".into())
        );
    }

    #[test]
    fn burn_budget_and_exhaustion() {
        let b = error_budget(99.9);
        assert!(close(b, 0.001));
        assert!(close(burn_rate(0.0144, b), 14.4));
        assert!(close(burn_rate(0.0, b), 0.0));
        assert!(close(budget_remaining(0.00056, b), 0.44));
        assert!(
            close(budget_remaining(0.002, b), -1.0),
            "overspent goes negative"
        );
        // Half the budget left, burning at 2x: a 30-day budget lasts 0.5 * 30d / 2 = 7.5d.
        let tte = time_to_exhaustion(0.5, 2.0, 30.0 * 86_400.0).expect("tte");
        assert!(close(tte, 7.5 * 86_400.0));
        assert_eq!(time_to_exhaustion(-0.1, 2.0, 86_400.0), Some(0.0));
        assert_eq!(time_to_exhaustion(0.0, 2.0, 86_400.0), Some(0.0));
        assert_eq!(time_to_exhaustion(0.5, 0.0, 86_400.0), None);
        assert_eq!(time_to_exhaustion(f64::NAN, 1.0, 86_400.0), None);
    }

    #[test]
    fn factors_are_the_workbook_ones_for_30d_and_scale_with_the_period() {
        let month = 30.0 * 86_400.0;
        let f: Vec<f64> = CONDITIONS.iter().map(|c| c.factor(month)).collect();
        for (got, want) in f.iter().zip([14.4, 6.0, 3.0, 1.0]) {
            assert!(close(*got, want), "{f:?}");
        }
        let week = 7.0 * 86_400.0;
        // 2% of a 7-day budget in 1h: 0.02 * 168 = 3.36.
        assert!(close(CONDITIONS[0].factor(week), 3.36));
        assert!(close(CONDITIONS[1].factor(week), 0.05 * 168.0 / 6.0));
        assert!(close(CONDITIONS[2].factor(week), 0.1 * 7.0));
        assert!(close(CONDITIONS[3].factor(week), 0.1 * 7.0 / 3.0));
        // Spending that fraction within the long window needs exactly that burn rate.
        for c in CONDITIONS {
            let spent = c.factor(month) * c.long_s as f64 / month;
            assert!(close(spent, c.budget_fraction));
        }
    }

    #[test]
    fn conditions_need_both_windows_above_and_the_traffic() {
        let page = CONDITIONS[0];
        let month = 30.0 * 86_400.0;
        let ratios = |long: f64, short: f64| {
            move |s: u64| match s {
                3600 => Some(long),
                300 => Some(short),
                _ => None,
            }
        };
        let traffic = |t: f64| move |_s: u64| Some(t);
        assert!(page.holds(0.001, month, 0.0, ratios(0.02, 0.02), traffic(0.0)));
        assert!(!page.holds(0.001, month, 0.0, ratios(0.02, 0.01), traffic(0.0)));
        assert!(!page.holds(0.001, month, 0.0, ratios(0.01, 0.02), traffic(0.0)));
        assert!(
            !page.holds(0.001, month, 0.0, ratios(0.0144, 0.0144), traffic(0.0)),
            "strictly above"
        );
        assert!(!page.holds(0.001, month, 0.0, |_| None, traffic(0.0)));
        assert!(!page.holds(0.001, month, 5.0, ratios(0.5, 0.5), traffic(4.9)));
        assert!(page.holds(0.001, month, 5.0, ratios(0.5, 0.5), traffic(5.0)));
        assert!(!page.holds(0.001, month, 5.0, ratios(0.5, 0.5), |_| None));
    }

    #[test]
    fn combined_query_tags_every_part_once() {
        let s = slo_events(99.9);
        let q = combined_query(&s, &windows(&s));
        assert_eq!(q.matches("label_replace(").count(), 16);
        assert!(q.contains(
            "label_replace((sum(rate(e[5m]))), \"vitals_slo_part\", \"error:5m\", \"\", \"\")"
        ));
        assert!(q.contains("\"total:30d\""));
        assert_eq!(q.matches(" or ").count(), 15);
        let mut raw = s.clone();
        raw.sli = crate::config::Sli {
            raw: Some(SliRaw {
                error_ratio_query: "1 - avg_over_time(up[{{.window}}])".into(),
            }),
            ..Default::default()
        };
        let q = combined_query(&raw, &windows(&raw));
        assert_eq!(q.matches("label_replace(").count(), 8);
        assert!(q.contains("avg_over_time(up[2h])), \"vitals_slo_part\", \"ratio:2h\""));
    }

    #[test]
    fn assembly_matches_series_by_labels_and_evaluates_alerts() {
        let mut s = slo_events(99.9);
        s.service = Some("shop".into());
        s.labels = BTreeMap::from([("team".into(), "a".into())]);
        let w = windows(&s);
        let mut samples = Vec::new();
        // Series "x": 100% errors in the last 5m and 2% over 1h; 0.5% over the rest.
        for (win, err, total) in [
            ("5m", 10.0, 10.0),
            ("30m", 1.0, 50.0),
            ("1h", 2.0, 100.0),
            ("2h", 1.0, 200.0),
            ("6h", 3.0, 600.0),
            ("1d", 12.0, 2400.0),
            ("3d", 36.0, 7200.0),
            ("30d", 30.0, 100_000.0),
        ] {
            samples.push(sample(&[("route", "x")], &format!("error:{win}"), err));
            samples.push(sample(&[("route", "x")], &format!("total:{win}"), total));
        }
        // Series "y": no error series at all (no errors), and a window with no traffic.
        samples.push(sample(&[("route", "y")], "total:1h", 50.0));
        samples.push(sample(&[("route", "y")], "total:5m", 0.0));
        samples.push(sample(&[("route", "y")], "total:30d", 1000.0));
        // An error series without a total is ignored; NaN is no data.
        samples.push(sample(&[("route", "z")], "error:1h", 1.0));
        samples.push(sample(&[("route", "y")], "error:6h", f64::NAN));
        let out = assemble(&s, &w, samples);
        assert_eq!(out.len(), 2, "{out:#?}");
        let x = &out[0];
        assert_eq!(
            x.labels,
            BTreeMap::from([
                ("route".into(), "x".into()),
                ("service".into(), "shop".into()),
                ("slo".into(), "api".into()),
                ("team".into(), "a".into()),
            ])
        );
        let h = x.window(3600).expect("1h");
        assert!(close(h.error_ratio, 0.02));
        assert!(close(h.burn_rate, 20.0));
        assert_eq!(h.total, Some(100.0));
        let remaining = x.budget_remaining.expect("budget");
        assert!(close(remaining, 1.0 - 0.0003 / 0.001));
        let tte = x.time_to_exhaustion_seconds.expect("tte");
        assert!(close(tte, remaining * 30.0 * 86_400.0 / 20.0));
        assert_eq!(x.page, Some(true), "1h 2% and 5m 100% are above 1.44%");
        assert_eq!(x.ticket, Some(true), "3d 0.5% and 6h 0.5% are above 0.1%");
        assert_eq!(x.penalty(), CRITICAL_PENALTY);
        let y = &out[1];
        assert_eq!(y.labels.get("route").map(String::as_str), Some("y"));
        assert!(close(y.window(3600).expect("1h").error_ratio, 0.0));
        assert!(y.window(300).is_none(), "no traffic is no data");
        assert_eq!(y.budget_remaining, Some(1.0));
        assert_eq!(y.time_to_exhaustion_seconds, None);
        assert_eq!((y.page, y.ticket), (Some(false), Some(false)));
        assert_eq!(y.penalty(), 0.0);
    }

    #[test]
    fn disabled_alerts_and_penalties() {
        let mut s = slo_events(99.0);
        s.alerting.page_alert.disable = true;
        let st = status(
            &s,
            0.01,
            30 * 86_400,
            BTreeMap::new(),
            vec![WindowValue {
                window: "30d".into(),
                seconds: 30 * 86_400,
                error_ratio: 0.005,
                burn_rate: 0.5,
                total: Some(1.0),
            }],
        );
        assert_eq!(st.page, None);
        assert_eq!(st.ticket, Some(false));
        assert!(close(st.budget_remaining.expect("b"), 0.5));
        assert!(close(st.penalty(), DEVIATION_PENALTY * 0.5));
        let spent = SloStatus {
            budget_remaining: Some(-0.2),
            ..st.clone()
        };
        assert_eq!(spent.penalty(), WARNING_PENALTY);
        let ticket = SloStatus {
            ticket: Some(true),
            ..st
        };
        assert_eq!(ticket.penalty(), WARNING_PENALTY);
        let report = SloReport {
            statuses: vec![ticket.clone()],
            ..SloReport::default()
        };
        let mut h = HealthBuilder::default();
        report.observe_health(&mut h);
        let h = h.build();
        assert_eq!(h.scores["slo"], 100.0 - WARNING_PENALTY);
        assert!(h.components.contains_key(&("slo".into(), "slo:api".into())));
        assert!(ticket.summary().contains("50.0% of the error budget left"));
    }

    #[test]
    fn exports_pass_the_naming_rules_shape() {
        let s = slo_events(99.9);
        let w = windows(&s);
        let samples = vec![
            sample(&[("route", "x")], "error:1h", 1.0),
            sample(&[("route", "x")], "total:1h", 100.0),
            sample(&[("route", "x")], "error:30d", 1.0),
            sample(&[("route", "x")], "total:30d", 10_000.0),
        ];
        let report = SloReport {
            statuses: assemble(&s, &w, samples),
            slos: vec![SloQueryStats {
                slo: "api".into(),
                up: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut reg = Registry::default();
        encode(&report, &mut reg);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).expect("encode");
        for want in [
            "slo_objective_ratio{route=\"x\",slo=\"api\"} 0.999",
            "slo_period_seconds{route=\"x\",slo=\"api\"} 2592000",
            "slo_error_ratio{route=\"x\",slo=\"api\",window=\"1h\"} 0.01",
            "slo_burn_rate{route=\"x\",slo=\"api\",window=\"1h\"} 10",
            "slo_error_budget_remaining_ratio{route=\"x\",slo=\"api\"} 0.9",
            "slo_alert_active{alert=\"page\",route=\"x\",slo=\"api\"} 0",
            "slo_alert_active{alert=\"ticket\",route=\"x\",slo=\"api\"} 0",
            "vitals_sidecar_slo_up{slo=\"api\"} 1",
            "vitals_sidecar_slo_query_errors_total{slo=\"api\"} 0",
        ] {
            assert!(out.contains(want), "missing {want}:\n{out}");
        }
        assert!(out.contains("# TYPE slo_time_to_exhaustion_seconds gauge"));
    }

    /// An SLO spec in Sloth's documented prometheus/v1 format, with the quirks real specs
    /// have: quoted numbers, a multi-line query, `{{ .window }}` with spaces, a boolean
    /// under labels.
    const SLOTH_SPEC: &str = r##"
version: "prometheus/v1"
service: "myservice"
labels:
  owner: "myteam"
  tier: "2"
slos:
  - name: "requests-availability"
    objective: 99.9
    description: "Common SLO based on availability for HTTP request responses."
    labels:
      category: availability
    sli:
      events:
        error_query: sum(rate(http_request_duration_seconds_count{job="myservice",code=~"(5..|429)"}[{{.window}}]))
        total_query: sum(rate(http_request_duration_seconds_count{job="myservice"}[{{ .window }}]))
    alerting:
      name: MyServiceHighErrorRate
      labels:
        category: "availability"
      annotations:
        summary: "High error rate on 'myservice' requests responses"
      page_alert:
        labels:
          severity: pageteam
          routing_key: myteam
      ticket_alert:
        labels:
          severity: "slack"
          slack_channel: "#alerts-myteam"
  - name: "requests-latency"
    objective: 99
    description: "Latency under 400ms."
    sli:
      events:
        error_query: |
          (
            sum(rate(http_request_duration_seconds_count{job="myservice"}[{{.window}}]))
            -
            sum(rate(http_request_duration_seconds_bucket{job="myservice",le="0.4"}[{{.window}}]))
          )
        total_query: sum(rate(http_request_duration_seconds_count{job="myservice"}[{{.window}}]))
    alerting:
      name: MyServiceHighLatency
      page_alert:
        disable: true
      ticket_alert:
        labels:
          disable: true
  - name: "raw"
    objective: 95.5
    sli:
      raw:
        error_ratio_query: max(my:error_ratio:rate[{{.window}}])
    alerting:
      name: Raw
"##;

    #[test]
    fn a_sloth_spec_parses_unchanged_and_becomes_valid_rules() {
        let slos = parse(SLOTH_SPEC, "spec.yml", None).expect("parse");
        assert_eq!(slos.len(), 3);
        let a = &slos[0];
        assert_eq!(a.service.as_deref(), Some("myservice"));
        assert_eq!(a.objective, 99.9);
        assert_eq!(
            a.labels,
            BTreeMap::from([
                ("category".into(), "availability".into()),
                ("owner".into(), "myteam".into()),
                ("tier".into(), "2".into()),
            ])
        );
        assert_eq!(a.period.0.as_secs(), 30 * 86_400, "vitals defaults");
        assert_eq!(a.domain, "slo");
        assert_eq!(a.min_traffic, 0.0);
        let labels = alert_labels(a, AlertKind::Page);
        assert_eq!(labels["severity"], "pageteam");
        assert_eq!(labels["routing_key"], "myteam");
        assert_eq!(alert_labels(a, AlertKind::Ticket)["severity"], "slack");
        assert_eq!(
            alert_annotations(a, AlertKind::Page)["summary"],
            "High error rate on 'myservice' requests responses"
        );
        assert!(
            alert_annotations(a, AlertKind::Ticket)["description"].contains("burn rate above 3")
        );
        let l = &slos[1];
        assert!(l.alerting.page_alert.disable);
        assert_eq!(l.alerting.ticket_alert.labels["disable"], "true");
        assert!(
            l.sli
                .events
                .as_ref()
                .is_some_and(|e| e.error_query.contains("le=\"0.4\""))
        );
        assert!(slos[2].sli.raw.is_some());

        let rules = rules_yaml(&slos).expect("rules");
        assert!(rules.contains("- name: slo-myservice-requests-availability-sli"));
        assert!(rules.contains(
            "slo:sli_error:ratio_rate1h{slo=\"requests-availability\", service=\"myservice\"} > 0.0144"
        ));
        // 95.5%: 4.5% budget, 14.4 x 0.045 = 0.648.
        assert!(
            rules
                .contains("slo:sli_error:ratio_rate1h{slo=\"raw\", service=\"myservice\"} > 0.648")
        );
        assert_eq!(rules.matches("alert: MyServiceHighLatency").count(), 1);
        assert!(!rules.contains("\n\n"), "no blank lines in the YAML");
    }

    #[test]
    fn unsupported_and_invalid_specs_are_refused_clearly() {
        let plugin = SLOTH_SPEC.replace(
            "      raw:\n        error_ratio_query: max(my:error_ratio:rate[{{.window}}])",
            "      plugin:\n        id: sloth-common/kubernetes/apiserver/availability\n        options:\n          filter: x",
        );
        let e = parse(&plugin, "spec.yml", None)
            .expect_err("plugin")
            .to_string();
        assert!(e.contains("slos[2].sli.plugin"), "{e}");
        assert!(e.contains("not supported"), "{e}");
        let v2 = SLOTH_SPEC.replace("prometheus/v1", "prometheus/v2");
        let e = parse(&v2, "spec.yml", None).expect_err("v2").to_string();
        assert!(e.contains("prometheus/v1"), "{e}");
        let unknown = SLOTH_SPEC.replace("    objective: 95.5", "    objective: 95.5\n    info: x");
        let e = parse(&unknown, "spec.yml", None)
            .expect_err("unknown")
            .to_string();
        assert!(e.contains("info"), "{e}");
        let no_window =
            SLOTH_SPEC.replace("my:error_ratio:rate[{{.window}}]", "my:error_ratio:rate5m");
        let e = parse(&no_window, "spec.yml", None)
            .expect_err("window")
            .to_string();
        assert!(e.contains("{{.window}}"), "{e}");
        let full = SLOTH_SPEC.replace("objective: 95.5", "objective: 100");
        let e = parse(&full, "spec.yml", None).expect_err("100").to_string();
        assert!(e.contains("objective"), "{e}");
    }

    #[test]
    fn vitals_configs_take_defaults_and_configured_slos() {
        let cfg = "sidecar:\n  slos:\n    - name: pg-availability\n      objective: 99\n      period: 28d\n      domain: postgres\n      sli:\n        raw:\n          error_ratio_query: 1 - avg(avg_over_time(pg_up[{{.window}}]))\n    - name: mine\n      objective: 99.5\n      min_traffic: 1\n      sli:\n        events:\n          error_query: sum(rate(e[{{.window}}]))\n          total_query: sum(rate(t[{{.window}}]))\n";
        let slos = parse(cfg, "c.yml", None).expect("config");
        assert_eq!(slos.len(), defaults().len() + 1);
        assert_eq!(slos[0].objective, 99.0);
        assert_eq!(slos[0].period.0.as_secs(), 28 * 86_400);
        let rules = rules_yaml(&slos).expect("rules");
        // 28d: 2% of the budget in 1h is a burn of 0.02 * 672 = 13.44, times 1%.
        assert!(rules.contains("slo:sli_error:ratio_rate1h{slo=\"pg-availability\"} > 0.1344"));
        assert!(rules.contains("record: slo:sli_error:ratio_rate28d"));
        assert!(rules.contains("slo:sli_total:rate5m{slo=\"mine\"} >= 1"));
        let off = format!("{cfg}  default_slos: false\n");
        assert_eq!(parse(&off, "c.yml", None).expect("config").len(), 2);
        let bad = cfg.replace("min_traffic: 1", "min_traffic: -1");
        let e = parse(&bad, "c.yml", None).expect_err("bad").to_string();
        assert!(e.contains("sidecar.slos[1].min_traffic"), "{e}");
    }

    #[test]
    fn defaults_parse_validate_and_match_the_checked_in_rules() {
        let d = defaults();
        assert_eq!(d.len(), 5);
        for (i, s) in d.iter().enumerate() {
            assert_eq!(slo_problems(&format!("defaults[{i}]"), s), vec![]);
        }
        let mut cfg = Config::default();
        cfg.sidecar.slos = d.clone();
        assert_eq!(cfg.validate(), vec![]);
        let checked_in = include_str!("../../rules/slo/default.yml");
        assert_eq!(
            rules_yaml(&d).expect("rules"),
            checked_in,
            "rules/slo/default.yml is stale: run `vitals rules slo --config <empty file> --output rules/slo/default.yml`"
        );
        let example = parse(
            include_str!("../../rules/slo/example.sloth.yml"),
            "example.sloth.yml",
            None,
        )
        .expect("example");
        assert_eq!(
            rules_yaml(&example).expect("rules"),
            include_str!("../../rules/slo/example.yml"),
            "rules/slo/example.yml is stale: run `vitals rules slo --config rules/slo/example.sloth.yml --output rules/slo/example.yml`"
        );
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(fmt_num(14.4 * error_budget(99.9)), "0.0144");
        assert_eq!(fmt_num(0.999), "0.999");
        assert_eq!(fmt_num(1.0), "1");
        assert_eq!(fmt_num(2_592_000.0), "2592000");
        assert_eq!(quote("a\"b\\"), "\"a\\\"b\\\\\"");
    }
}
