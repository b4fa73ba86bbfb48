//! Health score 0–100 per domain. Each signal is a component that subtracts points: a lot
//! for a critical anomaly, some for a warning, a little for a clear but sub-threshold
//! deviation. The breakdown is exported so a low score can be traced to its signals.

use std::collections::BTreeMap;

use super::anomaly::Severity;

/// Points a critical anomaly takes off its domain's score.
pub const CRITICAL_PENALTY: f64 = 50.0;
/// Points a warning takes off.
pub const WARNING_PENALTY: f64 = 20.0;
/// Most points a sub-threshold deviation takes off (reached at |z| = 5).
pub const DEVIATION_PENALTY: f64 = 10.0;

/// What one series contributes.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// Severity in force.
    pub severity: Severity,
    /// Deviation in the bad direction, in sigmas (negative or small when fine).
    pub bad_zscore: f64,
}

/// Penalty of one series: the worst of its severity and its deviation.
pub fn penalty(o: Observation) -> f64 {
    let by_severity = match o.severity {
        Severity::Critical => CRITICAL_PENALTY,
        Severity::Warning => WARNING_PENALTY,
        Severity::Ok => 0.0,
    };
    let z = if o.bad_zscore.is_finite() {
        o.bad_zscore
    } else {
        0.0
    };
    let by_deviation = DEVIATION_PENALTY * ((z - 2.0) / 3.0).clamp(0.0, 1.0);
    by_severity.max(by_deviation)
}

/// Scores of the domains and their components.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    /// domain -> score 0..100.
    pub scores: BTreeMap<String, f64>,
    /// (domain, component) -> points taken off.
    pub components: BTreeMap<(String, String), f64>,
}

/// Accumulates observations into per-domain scores.
#[derive(Debug, Default)]
pub struct HealthBuilder {
    components: BTreeMap<(String, String), f64>,
}

impl HealthBuilder {
    /// Registers a component so that it shows (with 0) even when all is well.
    pub fn component(&mut self, domain: &str, component: &str) {
        self.components
            .entry((domain.to_string(), component.to_string()))
            .or_insert(0.0);
    }

    /// A series of `component` in `domain`: the component counts its worst series.
    pub fn observe(&mut self, domain: &str, component: &str, o: Observation) {
        let p = penalty(o);
        let e = self
            .components
            .entry((domain.to_string(), component.to_string()))
            .or_insert(0.0);
        *e = e.max(p);
    }

    /// Adds a component with a fixed penalty (SLO budgets and the like).
    pub fn penalize(&mut self, domain: &str, component: &str, points: f64) {
        let e = self
            .components
            .entry((domain.to_string(), component.to_string()))
            .or_insert(0.0);
        *e = e.max(points.clamp(0.0, 100.0));
    }

    /// Domain score = 100 minus the sum of its components' penalties, floored at 0.
    pub fn build(self) -> Health {
        let mut scores: BTreeMap<String, f64> = BTreeMap::new();
        for ((domain, _), p) in &self.components {
            *scores.entry(domain.clone()).or_insert(100.0) -= p;
        }
        for s in scores.values_mut() {
            *s = s.clamp(0.0, 100.0);
        }
        Health {
            scores,
            components: self.components,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_series_per_component_and_sum_per_domain() {
        let mut b = HealthBuilder::default();
        b.component("postgres", "connections");
        let ok = Observation {
            severity: Severity::Ok,
            bad_zscore: 0.5,
        };
        b.observe("postgres", "tps", ok);
        b.observe(
            "postgres",
            "tps",
            Observation {
                severity: Severity::Warning,
                bad_zscore: 3.0,
            },
        );
        b.observe(
            "postgres",
            "deadlocks",
            Observation {
                severity: Severity::Critical,
                bad_zscore: 9.0,
            },
        );
        b.observe("system", "cpu", ok);
        b.observe(
            "disk",
            "used",
            Observation {
                severity: Severity::Ok,
                bad_zscore: 3.5,
            },
        );
        let h = b.build();
        assert_eq!(h.scores["postgres"], 30.0);
        assert_eq!(h.scores["system"], 100.0);
        assert_eq!(h.scores["disk"], 95.0);
        assert_eq!(
            h.components[&("postgres".into(), "connections".into())],
            0.0
        );
        assert_eq!(h.components[&("postgres".into(), "tps".into())], 20.0);
    }

    #[test]
    fn floors_at_zero() {
        let mut b = HealthBuilder::default();
        for c in ["a", "b", "c"] {
            b.observe(
                "d",
                c,
                Observation {
                    severity: Severity::Critical,
                    bad_zscore: f64::NAN,
                },
            );
        }
        assert_eq!(b.build().scores["d"], 0.0);
    }
}
