//! Explained recommendations: rules whose PromQL `condition` returns one series per problem
//! (a table needing vacuum, a database nobody uses, a disk filling up), each turned into a
//! finding with a stable title and target made from the series' labels and a description
//! that states the numbers behind it. Findings are deduplicated by (category, target, title),
//! become active once their condition has held for the rule's `for`, and resolve when the
//! condition stops returning them; a resolved finding is kept for [`RESOLVED_RETENTION`] so
//! that alert delivery can send the resolution.
//!
//! Templates are small on purpose: `{{name}}` inserts a label, `{{value}}` the condition's
//! value, and any name from the rule's `values`; `{{name | helper | default "text"}}` formats
//! it (helpers: [`Helper`]). docs/recommendations.md lists the shipped rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::promql::{InstantData, InstantSample, PromClient};
use crate::config::{
    Recommendation, RecommendationCategory, RecommendationSeverity, SidecarConfig,
};

/// The shipped default rules, as YAML.
pub const DEFAULTS_YAML: &str = include_str!("default_recommendations.yml");

/// How long a resolved finding stays in the report (delivery repeats resolutions this long).
pub const RESOLVED_RETENTION: Duration = Duration::from_secs(15 * 60);

/// Series labels, as the query API returns them.
pub type Labels = BTreeMap<String, String>;

/// The shipped default rules.
pub fn defaults() -> Vec<Recommendation> {
    // The file is part of the binary and covered by unit and integration tests; an error here
    // is a bug in this build, reported rather than panicking.
    // Through the config reader, as the configured ones: one deserializer per type in the
    // binary (each extra one is more code, and code pages are most of the resident memory).
    match crate::config::parse_yaml(DEFAULTS_YAML, "default_recommendations.yml") {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "the embedded default recommendations do not parse; using none");
            Vec::new()
        }
    }
}

/// Defaults (unless switched off) with configured rules replacing a default of the same
/// `id` or `title` and adding the rest, in order.
pub fn effective(cfg: &SidecarConfig) -> Vec<Recommendation> {
    let mut out = if cfg.default_recommendations {
        defaults()
    } else {
        Vec::new()
    };
    // Only the shipped rules are replaced by title; configured rules are distinct unless
    // they share an id (which validation reports).
    let shipped = out.len();
    for r in &cfg.recommendations {
        match out[..shipped]
            .iter_mut()
            .find(|d| d.id == r.id || d.title == r.title)
        {
            Some(d) => *d = r.clone(),
            None => out.push(r.clone()),
        }
    }
    out
}

// ------------------------------------------------------------------------------ templates

/// A formatting helper in a template step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helper {
    /// Prometheus' `humanize`: SI prefixes, 4 significant digits (`1.235M`, `12m`).
    Humanize,
    /// Prometheus' `humanize1024`: binary prefixes (`1.5Gi`).
    Humanize1024,
    /// `humanize1024` with a `B` unit: `1.5GiB`.
    Bytes,
    /// Prometheus' `humanizePercentage`: a ratio as percent, 4 significant digits (`41.38%`).
    HumanizePercentage,
    /// Prometheus' `humanizeDuration`: seconds as `6d 2h 3m 4s`.
    HumanizeDuration,
    /// A ratio as a short percentage: `41%` (one decimal below 10%).
    Percent,
    /// Seconds as a rough age: `6 days ago`, `3 hours ago`.
    Ago,
    /// Rounded to an integer.
    Round,
}

impl Helper {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "humanize" => Self::Humanize,
            "humanize1024" => Self::Humanize1024,
            "bytes" => Self::Bytes,
            "humanizePercentage" => Self::HumanizePercentage,
            "humanizeDuration" => Self::HumanizeDuration,
            "percent" => Self::Percent,
            "ago" => Self::Ago,
            "round" => Self::Round,
            _ => return None,
        })
    }

    fn apply(self, v: f64) -> String {
        match self {
            Self::Humanize => humanize(v),
            Self::Humanize1024 => humanize1024(v),
            Self::Bytes => format!("{}B", humanize1024(v)),
            Self::HumanizePercentage => humanize_percentage(v),
            Self::HumanizeDuration => humanize_duration(v),
            Self::Percent => percent(v),
            Self::Ago => ago(v),
            Self::Round => format_number(v.round()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Helper(Helper),
    /// Used when the value so far is missing or empty: a literal or another name.
    Default(Arg),
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Literal(String),
    Name(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field { name: String, steps: Vec<Step> },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_step(s: &str) -> Result<Step, TemplateError> {
    if let Some(arg) = s.strip_prefix("default") {
        let arg = arg.trim();
        if let Some(lit) = arg.strip_prefix('"').and_then(|a| a.strip_suffix('"')) {
            return Ok(Step::Default(Arg::Literal(lit.to_string())));
        }
        if is_name(arg) {
            return Ok(Step::Default(Arg::Name(arg.to_string())));
        }
        return Err(TemplateError(format!(
            "default needs a \"quoted text\" or a name, got {arg:?}"
        )));
    }
    Helper::parse(s).map(Step::Helper).ok_or_else(|| {
        TemplateError(format!(
            "unknown helper {s:?} (known: humanize, humanize1024, humanizePercentage, \
             humanizeDuration, bytes, percent, ago, round, default)"
        ))
    })
}

impl Template {
    /// Parses `text {{name | helper | default "x"}} text`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| TemplateError("unclosed {{".into()))?;
            let inner = &after[..close];
            let mut pieces = inner.split('|').map(str::trim);
            let name = pieces.next().unwrap_or_default();
            if !is_name(name) {
                return Err(TemplateError(format!(
                    "{{{{{inner}}}}}: {name:?} is not a label or value name"
                )));
            }
            let steps = pieces.map(parse_step).collect::<Result<Vec<_>, _>>()?;
            parts.push(Part::Field {
                name: name.to_string(),
                steps,
            });
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            return Err(TemplateError("}} without {{".into()));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// Every name the template reads (fields and `default` names).
    pub fn names(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        for p in &self.parts {
            if let Part::Field { name, steps } = p {
                out.insert(name.as_str());
                for s in steps {
                    if let Step::Default(Arg::Name(n)) = s {
                        out.insert(n.as_str());
                    }
                }
            }
        }
        out
    }

    /// Renders with a finding's labels, value and values.
    pub fn render(&self, ctx: &Context<'_>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field { name, steps } => {
                    let mut v = ctx.get(name);
                    for s in steps {
                        v = match (s, v) {
                            (Step::Helper(h), Val::Num(x)) => Val::Str(h.apply(x)),
                            (Step::Helper(h), Val::Str(t)) => match t.trim().parse::<f64>() {
                                Ok(x) => Val::Str(h.apply(x)),
                                Err(_) => Val::Str(t),
                            },
                            (Step::Default(a), Val::Missing) => default_of(ctx, a),
                            (Step::Default(a), Val::Str(t)) if t.is_empty() => default_of(ctx, a),
                            (_, v) => v,
                        };
                    }
                    match v {
                        Val::Num(x) => out.push_str(&format_number(x)),
                        Val::Str(t) => out.push_str(&t),
                        Val::Missing => {
                            if ctx.values.contains_key(name.as_str()) || name == "value" {
                                out.push_str("n/a");
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

fn default_of(ctx: &Context<'_>, a: &Arg) -> Val {
    match a {
        Arg::Literal(l) => Val::Str(l.clone()),
        Arg::Name(n) => ctx.get(n),
    }
}

enum Val {
    Num(f64),
    Str(String),
    Missing,
}

/// What a template sees of one finding.
pub struct Context<'a> {
    /// The series' labels.
    pub labels: &'a Labels,
    /// The condition's value, when rendering a description.
    pub value: Option<f64>,
    /// The rule's `values`, each `None` when no series matched the finding.
    pub values: &'a BTreeMap<String, Option<f64>>,
}

impl Context<'_> {
    fn get(&self, name: &str) -> Val {
        if name == "value" {
            return self.value.map_or(Val::Missing, Val::Num);
        }
        if let Some(v) = self.values.get(name) {
            return v.map_or(Val::Missing, Val::Num);
        }
        self.labels
            .get(name)
            .map_or(Val::Missing, |s| Val::Str(s.clone()))
    }
}

// ------------------------------------------------------------------------------ formatting

/// A number the way Go's `%.4g` prints it (`1.235e+06`, `0.0001234`, `41.38`).
fn g4(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v == 0.0 {
        return "0".into();
    }
    // The exponent after rounding to 4 significant digits.
    let sci = format!("{v:.3e}");
    let exp: i32 = sci
        .split_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    if !(-4..4).contains(&exp) {
        let (mant, _) = sci.split_once('e').unwrap_or((&sci, ""));
        let mant = trim_zeros(mant);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    let decimals = usize::try_from(3 - exp).unwrap_or(0);
    trim_zeros(&format!("{v:.decimals$}")).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// A plain number: integers without a fraction, others with up to 4 significant digits.
fn format_number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        g4(v)
    }
}

/// Scales `v` by `base` (down while it is at least `base`, or up while it is below 1 when
/// `up`), taking the next of `prefixes` at each step, as Prometheus' humanize functions do.
fn scale(mut v: f64, base: f64, prefixes: &[&'static str], up: bool) -> (f64, &'static str) {
    let mut prefix = "";
    for p in prefixes {
        let done = if up { v.abs() >= 1.0 } else { v.abs() < base };
        if done {
            break;
        }
        prefix = p;
        v = if up { v * base } else { v / base };
    }
    (v, prefix)
}

const LARGE: [&str; 8] = ["k", "M", "G", "T", "P", "E", "Z", "Y"];
const SMALL: [&str; 8] = ["m", "u", "n", "p", "f", "a", "z", "y"];

/// Prometheus' `humanize`.
pub fn humanize(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return g4(v);
    }
    let (v, prefix) = if v.abs() >= 1.0 {
        scale(v, 1000.0, &LARGE, false)
    } else {
        scale(v, 1000.0, &SMALL, true)
    };
    format!("{}{prefix}", g4(v))
}

/// Prometheus' `humanize1024`.
pub fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return g4(v);
    }
    let (v, prefix) = scale(
        v,
        1024.0,
        &["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"],
        false,
    );
    format!("{}{prefix}", g4(v))
}

/// Prometheus' `humanizePercentage`.
pub fn humanize_percentage(v: f64) -> String {
    format!("{}%", g4(v * 100.0))
}

/// Prometheus' `humanizeDuration`.
pub fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return g4(v);
    }
    if v == 0.0 {
        return "0s".into();
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let v = v.abs();
        // Truncation as in Prometheus (int64 conversion); durations fit easily.
        let d = v.trunc() as i64;
        let (s, m, h, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86_400);
        if days != 0 {
            return format!("{sign}{days}d {h}h {m}m {s}s");
        }
        if h != 0 {
            return format!("{sign}{h}h {m}m {s}s");
        }
        if m != 0 {
            return format!("{sign}{m}m {s}s");
        }
        return format!("{sign}{}s", g4(v));
    }
    let (v, prefix) = scale(v, 1000.0, &SMALL, true);
    format!("{}{prefix}s", g4(v))
}

/// A ratio as `41%`, or `4.2%` below ten percent.
pub fn percent(v: f64) -> String {
    if !v.is_finite() {
        return g4(v);
    }
    let p = v * 100.0;
    if p.abs() >= 10.0 || p == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{}%", trim_zeros(&format!("{p:.1}")))
    }
}

/// Seconds as a rough age in the largest fitting unit: `6 days ago`, `1 hour ago`.
pub fn ago(v: f64) -> String {
    if !v.is_finite() {
        return g4(v);
    }
    let s = v.abs();
    let (n, unit) = if s >= 2.0 * 86_400.0 {
        (s / 86_400.0, "day")
    } else if s >= 2.0 * 3600.0 {
        (s / 3600.0, "hour")
    } else if s >= 2.0 * 60.0 {
        (s / 60.0, "minute")
    } else {
        (s, "second")
    };
    let n = n.floor();
    let plural = if n == 1.0 { "" } else { "s" };
    format!("{n:.0} {unit}{plural} ago")
}

// ------------------------------------------------------------------------------ validation

/// What is wrong with a rule, as (field, reason) pairs; empty when it is usable. Used by the
/// config validation and when compiling rules.
pub fn rule_problems(r: &Recommendation) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut push = |k: &str, reason: String| out.push((k.to_string(), reason));
    if r.condition.trim().is_empty() {
        push("condition", "must not be empty".into());
    }
    for (name, expr) in &r.values {
        if !is_name(name) || name == "value" {
            push(
                &format!("values.{name}"),
                "must be a name of letters, digits and '_', not 'value'".into(),
            );
        }
        if expr.trim().is_empty() {
            push(&format!("values.{name}"), "must not be empty".into());
        }
    }
    for (field, text) in [
        ("title", &r.title),
        ("target", &r.target),
        ("description", &r.description),
    ] {
        if text.trim().is_empty() {
            push(field, "must not be empty".into());
            continue;
        }
        match Template::parse(text) {
            Err(e) => push(field, e.to_string()),
            Ok(t) if field != "description" => {
                let numbers: Vec<&str> = t
                    .names()
                    .into_iter()
                    .filter(|n| *n == "value" || r.values.contains_key(*n))
                    .collect();
                if !numbers.is_empty() {
                    push(
                        field,
                        format!(
                            "must use labels only, so it stays stable while the numbers move (uses {})",
                            numbers.join(", ")
                        ),
                    );
                }
            }
            Ok(_) => {}
        }
    }
    if let Some(u) = &r.runbook_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        push("runbook_url", "must be an http:// or https:// URL".into());
    }
    out
}

// ------------------------------------------------------------------------------ evaluation

/// The query API the evaluator reads: an instant query at a time. [`PromClient`] is the one
/// the sidecar uses.
pub trait QueryApi {
    /// Runs `expr` at `time_ms` and returns its series (a scalar as one series without
    /// labels); the error text is shown in logs and on the landing page.
    fn instant(
        &self,
        expr: &str,
        time_ms: i64,
    ) -> impl Future<Output = Result<Vec<InstantSample>, String>>;
}

impl QueryApi for PromClient {
    async fn instant(&self, expr: &str, time_ms: i64) -> Result<Vec<InstantSample>, String> {
        let r = self
            .query(expr, Some(time_ms))
            .await
            .map_err(|e| e.to_string())?;
        match r.data {
            InstantData::Vector(v) => Ok(v),
            InstantData::Scalar(ts_ms, value) => Ok(vec![InstantSample {
                labels: Labels::new(),
                ts_ms,
                value,
            }]),
            _ => Err("the query returned neither a vector nor a scalar".into()),
        }
    }
}

/// Where a finding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingState {
    /// The condition holds, but not yet for the rule's `for`.
    Pending,
    /// The condition holds: the recommendation stands.
    Active,
    /// The condition stopped returning the finding at `resolved_at_ms`.
    Resolved,
}

/// One finding: plain data for `/metrics`, the landing page and alert delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The rule that produced it.
    pub id: String,
    /// The rule's category.
    pub category: RecommendationCategory,
    /// The rule's severity.
    pub severity: RecommendationSeverity,
    /// Rendered target (identity).
    pub target: String,
    /// Rendered title (identity; labels only, stable).
    pub title: String,
    /// Rendered description with the numbers of the last evaluation.
    pub description: String,
    /// The rule's remediation steps.
    pub remediation: Vec<String>,
    /// The rule's runbook link.
    pub runbook_url: Option<String>,
    /// The condition series' labels (without `__name__`).
    pub labels: Labels,
    /// The condition's value at the last evaluation that returned the finding.
    pub value: f64,
    /// Pending, active or resolved.
    pub state: FindingState,
    /// When the condition first returned it (this episode).
    pub first_seen_ms: i64,
    /// When it became active.
    pub active_since_ms: Option<i64>,
    /// The last evaluation that returned it.
    pub last_seen_ms: i64,
    /// When it resolved.
    pub resolved_at_ms: Option<i64>,
}

/// Per-rule counters of the evaluator.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleStatus {
    /// The rule's id.
    pub id: String,
    /// Active findings of the rule.
    pub active: u64,
    /// Findings refused over `max_findings_per_recommendation`, summed over evaluations.
    pub dropped_total: u64,
    /// Failed condition or value queries.
    pub errors_total: u64,
    /// The last error, if the last evaluation failed.
    pub last_error: Option<String>,
}

/// The result of one evaluation: active and recently resolved findings (pending ones are
/// left out) and the per-rule counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// When the evaluation ran.
    pub at_ms: i64,
    /// Active findings first (most severe first), then resolved ones.
    pub findings: Vec<Finding>,
    /// One entry per rule, in rule order.
    pub rules: Vec<RuleStatus>,
}

impl Report {
    /// The active findings.
    pub fn active(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.state == FindingState::Active)
    }
}

struct Rule {
    spec: Recommendation,
    title: Template,
    target: Template,
    description: Template,
    /// Consecutive evaluations the condition must return a finding beyond the first.
    needed: u64,
    last_eval_ms: Option<i64>,
    status: RuleStatus,
}

/// Identity of a finding.
type Key = (RecommendationCategory, String, String);

struct Tracked {
    finding: Finding,
    rule: usize,
    /// Consecutive evaluations that returned it.
    seen: u64,
    /// The cycle that last touched it (returned it, or kept it while its rule was skipped).
    cycle: u64,
}

/// Evaluates recommendation rules cycle after cycle and keeps their findings.
pub struct Recommender {
    rules: Vec<Rule>,
    max_findings: usize,
    tracked: BTreeMap<Key, Tracked>,
    cycle: u64,
}

fn compile(spec: Recommendation, interval: Duration) -> Result<Rule, String> {
    let problems = rule_problems(&spec);
    if !problems.is_empty() {
        let text: Vec<String> = problems.iter().map(|(k, r)| format!("{k}: {r}")).collect();
        return Err(text.join("; "));
    }
    let parse = |t: &str| Template::parse(t).map_err(|e| e.to_string());
    let step = interval.max(spec.every.0).max(Duration::from_millis(1));
    let needed = spec.hold_for.0.as_millis().div_ceil(step.as_millis());
    Ok(Rule {
        title: parse(&spec.title)?,
        target: parse(&spec.target)?,
        description: parse(&spec.description)?,
        needed: u64::try_from(needed).unwrap_or(u64::MAX),
        last_eval_ms: None,
        status: RuleStatus {
            id: spec.id.clone(),
            ..RuleStatus::default()
        },
        spec,
    })
}

fn compile_all(specs: Vec<Recommendation>, interval: Duration) -> Vec<Rule> {
    specs
        .into_iter()
        .filter_map(|s| {
            let id = s.id.clone();
            compile(s, interval)
                .map_err(|e| tracing::error!(rule = %id, error = %e, "recommendation rule skipped"))
                .ok()
        })
        .collect()
}

/// The value of the series whose labels are a subset of `labels`, the most specific one
/// when several are.
fn join(series: &[(Labels, f64)], labels: &Labels) -> Option<f64> {
    series
        .iter()
        .filter(|(l, _)| l.iter().all(|(k, v)| labels.get(k) == Some(v)))
        .max_by_key(|(l, _)| l.len())
        .map(|(_, v)| *v)
}

fn strip_name(mut l: Labels) -> Labels {
    l.remove("__name__");
    l
}

impl Recommender {
    /// Compiles the rules (an invalid one is logged and skipped; config validation reports
    /// it first). `interval` is the evaluation interval, which turns `for` into cycles;
    /// `max_findings` bounds the findings per rule.
    pub fn new(rules: Vec<Recommendation>, interval: Duration, max_findings: u32) -> Self {
        Self {
            rules: compile_all(rules, interval),
            max_findings: usize::try_from(max_findings.max(1)).unwrap_or(usize::MAX),
            tracked: BTreeMap::new(),
            cycle: 0,
        }
    }

    /// The rules in force for a config: [`effective`] rules, its interval and bound.
    pub fn from_config(cfg: &SidecarConfig) -> Self {
        Self::new(
            effective(cfg),
            cfg.interval.0,
            cfg.max_findings_per_recommendation,
        )
    }

    /// Replaces the rules after a reload. Findings of rules that still exist (same id) are
    /// kept; those of removed rules resolve at the next evaluation.
    pub fn reconfigure(
        &mut self,
        rules: Vec<Recommendation>,
        interval: Duration,
        max_findings: u32,
    ) {
        let new = compile_all(rules, interval);
        let index: BTreeMap<&str, usize> = new
            .iter()
            .enumerate()
            .map(|(i, r)| (r.spec.id.as_str(), i))
            .collect();
        let old_ids: Vec<String> = self.rules.iter().map(|r| r.spec.id.clone()).collect();
        for t in self.tracked.values_mut() {
            let id = old_ids.get(t.rule).map(String::as_str).unwrap_or("");
            // usize::MAX: no rule owns it any more; it is not touched and resolves.
            t.rule = index.get(id).copied().unwrap_or(usize::MAX);
        }
        let mut new = new;
        for r in &mut new {
            if let Some(old) = self.rules.iter().find(|o| o.spec.id == r.spec.id) {
                r.status.dropped_total = old.status.dropped_total;
                r.status.errors_total = old.status.errors_total;
            }
        }
        self.rules = new;
        self.max_findings = usize::try_from(max_findings.max(1)).unwrap_or(usize::MAX);
    }

    /// Number of rules in force.
    pub fn rules(&self) -> usize {
        self.rules.len()
    }

    /// One evaluation at `now_ms`: runs every due rule's condition (and, when it returned
    /// something, its value queries) and returns the findings. A rule whose query fails keeps
    /// its findings as they were.
    pub async fn evaluate(&mut self, api: &impl QueryApi, now_ms: i64) -> Report {
        self.cycle += 1;
        let cycle = self.cycle;
        let mut claimed: BTreeSet<Key> = BTreeSet::new();
        for idx in 0..self.rules.len() {
            let due = {
                let r = &self.rules[idx];
                r.last_eval_ms.is_none_or(|last| {
                    i64::try_from(r.spec.every.0.as_millis())
                        .is_ok_and(|every| now_ms - last >= every)
                })
            };
            if !due {
                self.keep(idx, cycle, &mut claimed);
                continue;
            }
            let condition = self.rules[idx].spec.condition.clone();
            let samples = match api.instant(&condition, now_ms).await {
                Ok(s) => s,
                Err(e) => {
                    let r = &mut self.rules[idx];
                    tracing::warn!(rule = %r.spec.id, error = %e, "recommendation condition failed");
                    r.status.errors_total += 1;
                    r.status.last_error = Some(e);
                    self.keep(idx, cycle, &mut claimed);
                    continue;
                }
            };
            self.rules[idx].last_eval_ms = Some(now_ms);
            self.rules[idx].status.last_error = None;
            let mut values: BTreeMap<String, Vec<(Labels, f64)>> = BTreeMap::new();
            if !samples.is_empty() {
                let queries: Vec<(String, String)> = self.rules[idx]
                    .spec
                    .values
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (name, expr) in queries {
                    match api.instant(&expr, now_ms).await {
                        Ok(s) => {
                            values.insert(
                                name,
                                s.into_iter()
                                    .map(|s| (strip_name(s.labels), s.value))
                                    .collect(),
                            );
                        }
                        Err(e) => {
                            let r = &mut self.rules[idx];
                            tracing::warn!(rule = %r.spec.id, value = %name, error = %e, "recommendation value query failed");
                            r.status.errors_total += 1;
                            r.status.last_error = Some(format!("values.{name}: {e}"));
                        }
                    }
                }
            }
            self.apply(idx, samples, &values, now_ms, cycle, &mut claimed);
        }
        self.sweep(now_ms, cycle);
        self.report(now_ms)
    }

    /// Keeps the findings of a rule that was not evaluated this cycle.
    fn keep(&mut self, idx: usize, cycle: u64, claimed: &mut BTreeSet<Key>) {
        for (k, t) in &mut self.tracked {
            if t.rule == idx && t.finding.state != FindingState::Resolved {
                t.cycle = cycle;
                claimed.insert(k.clone());
            }
        }
    }

    fn apply(
        &mut self,
        idx: usize,
        samples: Vec<InstantSample>,
        values: &BTreeMap<String, Vec<(Labels, f64)>>,
        now_ms: i64,
        cycle: u64,
        claimed: &mut BTreeSet<Key>,
    ) {
        let rule = &self.rules[idx];
        let category = rule.spec.category;
        let no_values: BTreeMap<String, Option<f64>> = BTreeMap::new();
        // Render identities; the first series of a key wins, keys claimed by an earlier rule
        // this cycle are skipped (dedup across rules).
        let mut keyed: Vec<(Key, Labels, f64)> = Vec::new();
        let mut seen: BTreeSet<Key> = BTreeSet::new();
        let mut samples = samples;
        samples.sort_by(|a, b| a.labels.cmp(&b.labels));
        for s in samples {
            let labels = strip_name(s.labels);
            let ctx = Context {
                labels: &labels,
                value: None,
                values: &no_values,
            };
            let key = (category, rule.target.render(&ctx), rule.title.render(&ctx));
            if claimed.contains(&key) || !seen.insert(key.clone()) {
                continue;
            }
            keyed.push((key, labels, s.value));
        }
        // Findings already tracked go first, so the bound never churns known ones.
        keyed.sort_by_key(|(k, _, _)| {
            !self
                .tracked
                .get(k)
                .is_some_and(|t| t.finding.state != FindingState::Resolved)
        });
        let dropped = keyed.len().saturating_sub(self.max_findings);
        keyed.truncate(self.max_findings);
        let rule = &mut self.rules[idx];
        rule.status.dropped_total += u64::try_from(dropped).unwrap_or(u64::MAX);
        if dropped > 0 {
            tracing::debug!(rule = %rule.spec.id, dropped, "findings over max_findings_per_recommendation");
        }
        let rule = &self.rules[idx];
        for (key, labels, value) in keyed {
            let vals: BTreeMap<String, Option<f64>> = rule
                .spec
                .values
                .keys()
                .map(|n| {
                    (
                        n.clone(),
                        values.get(n).and_then(|series| join(series, &labels)),
                    )
                })
                .collect();
            let description = rule.description.render(&Context {
                labels: &labels,
                value: Some(value),
                values: &vals,
            });
            claimed.insert(key.clone());
            let t = self.tracked.entry(key.clone()).or_insert_with(|| Tracked {
                finding: Finding {
                    id: String::new(),
                    category,
                    severity: rule.spec.severity,
                    target: key.1.clone(),
                    title: key.2.clone(),
                    description: String::new(),
                    remediation: Vec::new(),
                    runbook_url: None,
                    labels: Labels::new(),
                    value,
                    state: FindingState::Pending,
                    first_seen_ms: now_ms,
                    active_since_ms: None,
                    last_seen_ms: now_ms,
                    resolved_at_ms: None,
                },
                rule: idx,
                seen: 0,
                cycle,
            });
            if t.finding.state == FindingState::Resolved {
                // A new episode.
                t.finding.state = FindingState::Pending;
                t.finding.first_seen_ms = now_ms;
                t.finding.active_since_ms = None;
                t.finding.resolved_at_ms = None;
                t.seen = 0;
            }
            t.seen += 1;
            t.rule = idx;
            t.cycle = cycle;
            let f = &mut t.finding;
            f.id.clone_from(&rule.spec.id);
            f.severity = rule.spec.severity;
            f.description = description;
            f.remediation.clone_from(&rule.spec.remediation);
            f.runbook_url.clone_from(&rule.spec.runbook_url);
            f.labels = labels;
            f.value = value;
            f.last_seen_ms = now_ms;
            if f.state == FindingState::Pending && t.seen > rule.needed {
                f.state = FindingState::Active;
                f.active_since_ms = Some(now_ms);
            }
        }
    }

    /// Resolves what was not seen this cycle and forgets old resolutions.
    fn sweep(&mut self, now_ms: i64, cycle: u64) {
        let keep_ms = i64::try_from(RESOLVED_RETENTION.as_millis()).unwrap_or(i64::MAX);
        self.tracked.retain(|_, t| {
            if t.cycle == cycle {
                return true;
            }
            match t.finding.state {
                FindingState::Pending => false,
                FindingState::Active => {
                    t.finding.state = FindingState::Resolved;
                    t.finding.resolved_at_ms = Some(now_ms);
                    t.seen = 0;
                    true
                }
                FindingState::Resolved => t
                    .finding
                    .resolved_at_ms
                    .is_some_and(|r| now_ms - r < keep_ms),
            }
        });
    }

    fn report(&mut self, now_ms: i64) -> Report {
        for r in &mut self.rules {
            r.status.active = 0;
        }
        let mut findings = Vec::new();
        for t in self.tracked.values() {
            match t.finding.state {
                FindingState::Pending => {}
                FindingState::Active => {
                    if let Some(r) = self.rules.get_mut(t.rule) {
                        r.status.active += 1;
                    }
                    findings.push(t.finding.clone());
                }
                FindingState::Resolved => findings.push(t.finding.clone()),
            }
        }
        findings.sort_by(|a, b| {
            let rank = |f: &Finding| f.state != FindingState::Active;
            rank(a)
                .cmp(&rank(b))
                .then(b.severity.cmp(&a.severity))
                .then(a.category.cmp(&b.category))
                .then(a.target.cmp(&b.target))
                .then(a.title.cmp(&b.title))
        });
        Report {
            at_ms: now_ms,
            findings,
            rules: self.rules.iter().map(|r| r.status.clone()).collect(),
        }
    }
}

// ------------------------------------------------------------------------------ exposition

type L = Vec<(String, String)>;

/// Registers the report's families: `recommendation_active{id, category, severity, target,
/// title}` = 1 per active finding, `recommendation_findings{id}` active findings per rule,
/// `recommendation_findings_dropped_total{id}` and
/// `vitals_sidecar_recommendation_errors_total{id}`. Descriptions are not labels (they carry
/// numbers); they are on the landing page and in alert annotations.
pub fn register(report: &Report, reg: &mut Registry) {
    let active = Family::<L, Gauge>::default();
    for f in report.active() {
        active
            .get_or_create(&vec![
                ("id".into(), f.id.clone()),
                ("category".into(), f.category.as_str().into()),
                ("severity".into(), f.severity.as_str().into()),
                ("target".into(), f.target.clone()),
                ("title".into(), f.title.clone()),
            ])
            .set(1);
    }
    let findings = Family::<L, Gauge>::default();
    let dropped = Family::<L, Counter<u64, AtomicU64>>::default();
    let errors = Family::<L, Counter<u64, AtomicU64>>::default();
    for r in &report.rules {
        let l: L = vec![("id".into(), r.id.clone())];
        findings
            .get_or_create(&l)
            .set(i64::try_from(r.active).unwrap_or(i64::MAX));
        dropped.get_or_create(&l).inc_by(r.dropped_total);
        errors.get_or_create(&l).inc_by(r.errors_total);
    }
    reg.register(
        "recommendation_active",
        "An active recommendation (1); its description with the numbers is on the landing page and in the alert",
        active,
    );
    reg.register(
        "recommendation_findings",
        "Active findings of a recommendation rule",
        findings,
    );
    reg.register(
        "recommendation_findings_dropped",
        "Findings refused over sidecar.max_findings_per_recommendation, summed over evaluations",
        dropped,
    );
    reg.register(
        "vitals_sidecar_recommendation_errors",
        "Failed condition or value queries of a recommendation rule",
        errors,
    );
}

/// One line per active finding, for the landing page.
pub fn landing_lines(report: &Report, max: usize) -> Vec<String> {
    report
        .active()
        .take(max)
        .map(|f| {
            let mut s = format!(
                "Recommendation ({}, {}) {}: {} - {}",
                f.severity.as_str(),
                f.category.as_str(),
                f.target,
                f.title,
                f.description
            );
            if let Some(u) = &f.runbook_url {
                let _ = write!(s, " (runbook: {u})");
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use prometheus_client::encoding::text::encode_registry;
    use std::cell::RefCell;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Canned answers per expression, for the evaluator's bookkeeping (the real query API is
    /// exercised by tests/integration/recommend.rs).
    type Answer = Result<Vec<(Labels, f64)>, String>;

    #[derive(Default)]
    struct Canned {
        answers: RefCell<BTreeMap<String, Answer>>,
        asked: RefCell<Vec<String>>,
    }

    impl Canned {
        fn set(&self, expr: &str, series: &[(&[(&str, &str)], f64)]) {
            self.answers.borrow_mut().insert(
                expr.to_string(),
                Ok(series.iter().map(|(l, v)| (labels(l), *v)).collect()),
            );
        }
        fn fail(&self, expr: &str) {
            self.answers
                .borrow_mut()
                .insert(expr.to_string(), Err("connection refused".into()));
        }
    }

    impl QueryApi for Canned {
        async fn instant(&self, expr: &str, _t: i64) -> Result<Vec<InstantSample>, String> {
            self.asked.borrow_mut().push(expr.to_string());
            match self.answers.borrow().get(expr) {
                Some(Ok(v)) => Ok(v
                    .iter()
                    .map(|(l, v)| InstantSample {
                        labels: l.clone(),
                        ts_ms: 0,
                        value: *v,
                    })
                    .collect()),
                Some(Err(e)) => Err(e.clone()),
                None => Ok(Vec::new()),
            }
        }
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn rule(id: &str, condition: &str) -> Recommendation {
        Recommendation {
            id: id.into(),
            category: RecommendationCategory::Vacuum,
            severity: RecommendationSeverity::Warning,
            condition: condition.into(),
            title: "Table {{relname}} needs VACUUM".into(),
            target: "{{target}}/{{relname}}".into(),
            description: "{{value | percent}} dead ({{dead | humanize}})".into(),
            values: BTreeMap::from([("dead".into(), "dead".into())]),
            remediation: vec!["VACUUM".into()],
            runbook_url: None,
            hold_for: PromDuration(Duration::ZERO),
            every: PromDuration(Duration::ZERO),
        }
    }

    use crate::config::PromDuration;

    const MIN: i64 = 60_000;

    #[test]
    fn prometheus_formatting_helpers() {
        for (v, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (1000.0, "1k"),
            (12345.0, "12.35k"),
            (1_234_567.0, "1.235M"),
            (2.9e6, "2.9M"),
            (0.001, "1m"),
            (0.0001, "100u"),
            (-1500.0, "-1.5k"),
        ] {
            assert_eq!(humanize(v), want, "humanize({v})");
        }
        for (v, want) in [
            (0.5, "0.5"),
            (1024.0, "1ki"),
            (1_048_576.0, "1Mi"),
            (1.5 * 1024.0 * 1024.0 * 1024.0, "1.5Gi"),
        ] {
            assert_eq!(humanize1024(v), want, "humanize1024({v})");
        }
        for (v, want) in [
            (0.0, "0s"),
            (1.0, "1s"),
            (1.234_567, "1.235s"),
            (60.0, "1m 0s"),
            (65.5, "1m 5s"),
            (3600.0, "1h 0m 0s"),
            (6.0 * 86_400.0 + 7384.0, "6d 2h 3m 4s"),
            (0.1, "100ms"),
            (0.0001, "100us"),
            (-90.0, "-1m 30s"),
        ] {
            assert_eq!(humanize_duration(v), want, "humanizeDuration({v})");
        }
        assert_eq!(humanize_percentage(0.4138), "41.38%");
        assert_eq!(humanize_percentage(1.0), "100%");
        assert_eq!(g4(1_234_567.0), "1.235e+06");
        assert_eq!(g4(0.000_012_34), "1.234e-05");
        assert_eq!(g4(9999.5), "1e+04");
        assert_eq!(g4(f64::NAN), "NaN");
        assert_eq!(percent(0.4138), "41%");
        assert_eq!(percent(0.042), "4.2%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(ago(6.3 * 86_400.0), "6 days ago");
        assert_eq!(ago(3600.0), "60 minutes ago");
        assert_eq!(ago(3.0 * 3600.0), "3 hours ago");
        assert_eq!(ago(1.0), "1 second ago");
        assert_eq!(format_number(3.0), "3");
        assert_eq!(format_number(0.25), "0.25");
    }

    #[test]
    fn templates_render_labels_values_helpers_and_defaults() {
        let t = Template::parse(
            "{{schemaname}}.{{relname}}: {{value | percent}} dead tuples ({{dead | humanize}} of \
             {{total|humanize}}), last autovacuum {{age | ago | default \"never\"}}",
        )
        .expect("parses");
        let l = labels(&[("schemaname", "public"), ("relname", "orders")]);
        let mut values = BTreeMap::from([
            ("dead".to_string(), Some(1.2e6)),
            ("total".to_string(), Some(2.9e6)),
            ("age".to_string(), Some(6.0 * 86_400.0 + 100.0)),
        ]);
        let ctx = Context {
            labels: &l,
            value: Some(0.4138),
            values: &values,
        };
        assert_eq!(
            t.render(&ctx),
            "public.orders: 41% dead tuples (1.2M of 2.9M), last autovacuum 6 days ago"
        );
        values.insert("age".into(), None);
        values.insert("dead".into(), None);
        let ctx = Context {
            labels: &l,
            value: Some(0.4138),
            values: &values,
        };
        assert_eq!(
            t.render(&ctx),
            "public.orders: 41% dead tuples (n/a of 2.9M), last autovacuum never"
        );
        // Missing labels are empty, as in Prometheus; default may name another label.
        let t = Template::parse("{{target | default instance}}:{{mountpoint}}{{nope}}")
            .expect("parses");
        let l = labels(&[("instance", "h:9100"), ("mountpoint", "/")]);
        let ctx = Context {
            labels: &l,
            value: None,
            values: &BTreeMap::new(),
        };
        assert_eq!(t.render(&ctx), "h:9100:/");
        // A helper on a numeric label formats it; on text it leaves it alone.
        let t = Template::parse("{{n | humanize}} {{s | humanize}}").expect("parses");
        let l = labels(&[("n", "1500"), ("s", "abc")]);
        let ctx = Context {
            labels: &l,
            value: None,
            values: &BTreeMap::new(),
        };
        assert_eq!(t.render(&ctx), "1.5k abc");
        assert_eq!(Template::parse("no fields").map(|t| t.names().len()), Ok(0));
    }

    #[test]
    fn template_errors_are_named() {
        for (bad, want) in [
            ("{{relname", "unclosed"),
            ("a }} b", "without"),
            ("{{ 1x }}", "not a label"),
            ("{{x | shout}}", "unknown helper"),
            ("{{x | default}}", "default needs"),
            ("{{}}", "not a label"),
        ] {
            let e = Template::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn rule_problems_keep_titles_free_of_numbers() {
        let mut r = rule("r", "x > 1");
        assert_eq!(rule_problems(&r), vec![]);
        r.title = "{{relname}} at {{value}}".into();
        r.target = "{{dead}}".into();
        r.runbook_url = Some("ftp://x".into());
        r.values.insert("value".into(), "y".into());
        r.condition = " ".into();
        let p = rule_problems(&r);
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "condition",
                "values.value",
                "title",
                "target",
                "runbook_url"
            ],
            "{p:?}"
        );
        assert!(p[2].1.contains("labels only"), "{p:?}");
    }

    #[test]
    fn config_validation_reports_rule_problems() {
        let mut cfg = Config::default();
        let mut bad = rule("dup", "x");
        bad.description = "{{x | nope}}".into();
        cfg.sidecar.recommendations = vec![rule("dup", "x"), bad];
        cfg.sidecar.max_findings_per_recommendation = 0;
        let problems: Vec<String> = cfg.validate().iter().map(|p| p.to_string()).collect();
        let text = problems.join("\n");
        assert!(
            text.contains("sidecar.max_findings_per_recommendation"),
            "{text}"
        );
        assert!(text.contains("sidecar.recommendations[1].id"), "{text}");
        assert!(
            text.contains("sidecar.recommendations[1].description"),
            "{text}"
        );
    }

    #[test]
    fn defaults_parse_validate_and_cover_the_categories() {
        let d = defaults();
        assert!(d.len() >= 36, "{}", d.len());
        let mut cfg = Config::default();
        cfg.sidecar.recommendations = d.clone();
        assert_eq!(cfg.validate(), vec![], "defaults are valid config");
        let rec = Recommender::new(d.clone(), Duration::from_secs(60), 100);
        assert_eq!(rec.rules(), d.len(), "every default compiles");
        let cats: BTreeSet<_> = d.iter().map(|r| r.category).collect();
        assert_eq!(cats.len(), 11, "{cats:?}");
        for r in &d {
            assert!(!r.remediation.is_empty(), "{} has no remediation", r.id);
            assert!(
                !Template::parse(&r.title).expect("title").names().is_empty(),
                "{}: a title without labels collapses all findings into one",
                r.id
            );
        }
    }

    /// Every metric name in a shipped rule is documented (grep, don't guess): docs/metrics.md
    /// for vitals' families and the sidecar's own, docs/ssh_disk.md for node_filesystem_*.
    #[test]
    fn every_metric_a_default_rule_uses_is_documented() {
        let docs = [
            include_str!("../../docs/metrics.md"),
            include_str!("../../docs/ssh_disk.md"),
        ]
        .concat();
        let re =
            regex::Regex::new(r"\b(?:pg|namedprocess|log|node|anomaly|forecast|vitals)_[a-z0-9_]+")
                .expect("regex");
        let mut missing = BTreeSet::new();
        let mut used = 0;
        for r in defaults() {
            for expr in std::iter::once(&r.condition).chain(r.values.values()) {
                for m in re.find_iter(expr) {
                    used += 1;
                    if !docs.contains(&format!("`{}`", m.as_str())) {
                        missing.insert(format!("{}: {}", r.id, m.as_str()));
                    }
                }
            }
        }
        assert!(used > 80, "{used}");
        assert!(missing.is_empty(), "undocumented metrics: {missing:?}");
        let doc = include_str!("../../docs/recommendations.md");
        for r in defaults() {
            assert!(
                doc.contains(&format!("`{}`", r.id)),
                "{} is not in docs/recommendations.md",
                r.id
            );
        }
    }

    #[test]
    fn configured_rules_replace_by_id_or_title_and_extend() {
        let mut cfg = SidecarConfig::default();
        let d = defaults();
        let mut by_id = d[0].clone();
        by_id.condition = "vector(1)".into();
        let mut by_title = rule("mine", "vector(2)");
        by_title.title = d[1].title.clone();
        cfg.recommendations = vec![by_id.clone(), by_title.clone(), rule("extra", "x")];
        let e = effective(&cfg);
        assert_eq!(e.len(), d.len() + 1);
        assert_eq!(e[0], by_id);
        assert_eq!(e[1], by_title);
        assert_eq!(e.last().map(|r| r.id.as_str()), Some("extra"));
        cfg.default_recommendations = false;
        assert_eq!(effective(&cfg).len(), 3);
    }

    #[test]
    fn findings_activate_after_for_dedup_and_resolve() {
        let api = Canned::default();
        let mut r1 = rule("dead", "cond");
        r1.hold_for = PromDuration(Duration::from_secs(120));
        // A second rule returning the same identity: deduplicated, the first rule names it.
        let r2 = Recommendation {
            id: "other".into(),
            condition: "cond2".into(),
            ..rule("other", "cond2")
        };
        let mut rec = Recommender::new(vec![r1, r2], Duration::from_secs(60), 100);
        let orders: &[(&str, &str)] = &[("__name__", "x"), ("target", "a"), ("relname", "orders")];
        let items: &[(&str, &str)] = &[("target", "a"), ("relname", "items")];
        api.set("cond", &[(orders, 0.41), (items, 0.3)]);
        api.set("cond2", &[(orders, 0.5)]);
        // The value query has more series; each finding takes the one whose labels it holds.
        api.set(
            "dead",
            &[
                (&[("target", "a"), ("relname", "orders")], 1.2e6),
                (&[("target", "a"), ("relname", "items")], 5000.0),
                (&[("target", "b"), ("relname", "orders")], 7.0),
            ],
        );
        let r = run(rec.evaluate(&api, 0));
        assert!(
            r.findings.is_empty(),
            "pending findings are not reported: {r:?}"
        );
        let r = run(rec.evaluate(&api, MIN));
        assert!(r.findings.is_empty(), "{r:?}");
        let r = run(rec.evaluate(&api, 2 * MIN));
        assert_eq!(r.active().count(), 2, "{r:?}");
        let f = &r.findings[1];
        assert_eq!(
            (f.id.as_str(), f.target.as_str(), f.title.as_str()),
            ("dead", "a/orders", "Table orders needs VACUUM")
        );
        assert_eq!(f.description, "41% dead (1.2M)");
        assert_eq!(f.active_since_ms, Some(2 * MIN));
        assert_eq!(f.first_seen_ms, 0);
        assert!(!f.labels.contains_key("__name__"));
        assert_eq!(r.rules[0].active, 2);
        assert_eq!(r.rules[1].active, 0, "the duplicate is not counted twice");
        // orders goes away: resolved, reported with its resolution time; items stays.
        api.set("cond", &[(items, 0.31)]);
        api.set("cond2", &[]);
        let r = run(rec.evaluate(&api, 3 * MIN));
        assert_eq!(r.active().count(), 1);
        let resolved: Vec<_> = r
            .findings
            .iter()
            .filter(|f| f.state == FindingState::Resolved)
            .collect();
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].target, "a/orders");
        assert_eq!(resolved[0].resolved_at_ms, Some(3 * MIN));
        // Kept for the retention, then forgotten.
        let late = 3 * MIN + i64::try_from(RESOLVED_RETENTION.as_millis()).unwrap_or(0);
        let r = run(rec.evaluate(&api, late - 1));
        assert_eq!(r.findings.len(), 2);
        let r = run(rec.evaluate(&api, late));
        assert_eq!(r.findings.len(), 1, "{r:?}");
        // Coming back is a new episode that waits out `for` again.
        api.set("cond", &[(orders, 0.5), (items, 0.31)]);
        let r = run(rec.evaluate(&api, late + MIN));
        assert_eq!(r.active().count(), 1);
    }

    #[test]
    fn failed_queries_keep_findings_and_are_counted() {
        let api = Canned::default();
        let mut rec = Recommender::new(vec![rule("dead", "cond")], Duration::from_secs(60), 100);
        api.set("cond", &[(&[("target", "a"), ("relname", "t")], 0.5)]);
        api.fail("dead");
        let r = run(rec.evaluate(&api, 0));
        assert_eq!(r.active().count(), 1);
        assert_eq!(r.findings[0].description, "50% dead (n/a)");
        assert_eq!(r.rules[0].errors_total, 1);
        api.fail("cond");
        let r = run(rec.evaluate(&api, MIN));
        assert_eq!(r.active().count(), 1, "a failed condition does not clear");
        assert_eq!(r.rules[0].errors_total, 2);
        assert!(r.rules[0].last_error.is_some());
        api.set("cond", &[]);
        let r = run(rec.evaluate(&api, 2 * MIN));
        assert_eq!(r.active().count(), 0);
        assert!(r.rules[0].last_error.is_none());
    }

    #[test]
    fn findings_are_bounded_per_rule_and_overflow_counted() {
        let api = Canned::default();
        let mut rec = Recommender::new(vec![rule("dead", "cond")], Duration::from_secs(60), 3);
        let names = ["a", "b", "c", "d", "e"];
        let series: Vec<Vec<(&str, &str)>> = names
            .iter()
            .map(|n| vec![("target", "t"), ("relname", *n)])
            .collect();
        let first: Vec<(&[(&str, &str)], f64)> =
            series[2..].iter().map(|l| (l.as_slice(), 1.0)).collect();
        api.set("cond", &first);
        let r = run(rec.evaluate(&api, 0));
        assert_eq!(r.active().count(), 3);
        let all: Vec<(&[(&str, &str)], f64)> = series.iter().map(|l| (l.as_slice(), 1.0)).collect();
        api.set("cond", &all);
        let r = run(rec.evaluate(&api, MIN));
        let targets: Vec<&str> = r.active().map(|f| f.target.as_str()).collect();
        assert_eq!(
            targets,
            vec!["t/c", "t/d", "t/e"],
            "known findings keep their place"
        );
        assert_eq!(r.rules[0].dropped_total, 2);
        let r = run(rec.evaluate(&api, 2 * MIN));
        assert_eq!(r.rules[0].dropped_total, 4);
    }

    #[test]
    fn every_skips_evaluations_and_keeps_findings() {
        let api = Canned::default();
        let mut r = rule("slow", "cond");
        r.every = PromDuration(Duration::from_secs(3600));
        r.values.clear();
        r.description = "{{value}}".into();
        let mut rec = Recommender::new(vec![r], Duration::from_secs(60), 100);
        api.set("cond", &[(&[("target", "a"), ("relname", "t")], 1.0)]);
        assert_eq!(run(rec.evaluate(&api, 0)).active().count(), 1);
        api.set("cond", &[]);
        for i in 1..60 {
            assert_eq!(run(rec.evaluate(&api, i * MIN)).active().count(), 1);
        }
        assert_eq!(api.asked.borrow().len(), 1, "queried once in the hour");
        assert_eq!(run(rec.evaluate(&api, 60 * MIN)).active().count(), 0);
    }

    #[test]
    fn reconfigure_keeps_known_rules_and_resolves_removed_ones() {
        let api = Canned::default();
        let mut rec = Recommender::new(
            vec![rule("a", "cond_a"), rule("b", "cond_b")],
            Duration::from_secs(60),
            100,
        );
        api.set("cond_a", &[(&[("target", "x"), ("relname", "1")], 1.0)]);
        api.set("cond_b", &[(&[("target", "x"), ("relname", "2")], 1.0)]);
        assert_eq!(run(rec.evaluate(&api, 0)).active().count(), 2);
        rec.reconfigure(vec![rule("b", "cond_b")], Duration::from_secs(60), 100);
        let r = run(rec.evaluate(&api, MIN));
        let active: Vec<&str> = r.active().map(|f| f.id.as_str()).collect();
        assert_eq!(active, vec!["b"]);
        assert_eq!(
            r.findings
                .iter()
                .filter(|f| f.state == FindingState::Resolved)
                .count(),
            1
        );
    }

    #[test]
    fn exposition_has_one_series_per_active_finding() {
        let api = Canned::default();
        let mut rec = Recommender::new(vec![rule("dead", "cond")], Duration::from_secs(60), 100);
        api.set(
            "cond",
            &[
                (&[("target", "a"), ("relname", "orders")], 0.4),
                (&[("target", "a"), ("relname", "x\"y")], 0.4),
            ],
        );
        let report = run(rec.evaluate(&api, 0));
        let mut reg = Registry::default();
        register(&report, &mut reg);
        let mut out = String::new();
        encode_registry(&mut out, &reg).expect("encodes");
        assert!(
            out.contains(
                "recommendation_active{id=\"dead\",category=\"vacuum\",severity=\"warning\",\
                 target=\"a/orders\",title=\"Table orders needs VACUUM\"} 1\n"
            ),
            "{out}"
        );
        assert_eq!(out.matches("recommendation_active{").count(), 2, "{out}");
        assert!(
            out.contains("recommendation_findings{id=\"dead\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("recommendation_findings_dropped_total{id=\"dead\"} 0\n"),
            "{out}"
        );
        assert!(
            !out.contains("dead ("),
            "descriptions are not labels: {out}"
        );
        let lines = landing_lines(&report, 10);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("40% dead"), "{lines:?}");
    }
}
