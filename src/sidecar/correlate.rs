//! Cross-domain correlation: anomalies in two or more domains in the same cycle are one
//! event naming them all, because a slow disk, a busy database and an error burst in the logs
//! at the same minute are usually one incident, not three.

use std::collections::BTreeSet;

/// A correlated event in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The domains with anomalies, sorted.
    pub domains: BTreeSet<String>,
    /// The signals with anomalies, sorted.
    pub signals: BTreeSet<String>,
    /// When the event started (ms).
    pub started_ms: i64,
}

impl Event {
    /// The domains joined by commas (the `domains` label).
    pub fn domains_label(&self) -> String {
        self.domains.iter().cloned().collect::<Vec<_>>().join(",")
    }
}

/// Tracks the correlated event across cycles.
#[derive(Debug, Default)]
pub struct Correlator {
    active: Option<Event>,
    events_total: u64,
}

impl Correlator {
    /// Takes the (domain, signal) pairs with anomalies this cycle. Returns the event in
    /// force, which is new (and counted) when none was active or a domain joined that the
    /// active one did not name.
    pub fn observe(&mut self, anomalous: &[(String, String)], now_ms: i64) -> Option<&Event> {
        let domains: BTreeSet<String> = anomalous.iter().map(|(d, _)| d.clone()).collect();
        if domains.len() < 2 {
            self.active = None;
            return None;
        }
        let signals: BTreeSet<String> = anomalous.iter().map(|(_, s)| s.clone()).collect();
        match &mut self.active {
            Some(e) if domains.is_subset(&e.domains) => {
                e.signals = signals;
            }
            _ => {
                let started_ms = self.active.as_ref().map_or(now_ms, |e| e.started_ms);
                let mut all = domains;
                if let Some(e) = &self.active {
                    all.extend(e.domains.iter().cloned());
                }
                self.events_total += 1;
                tracing::warn!(
                    domains = %all.iter().cloned().collect::<Vec<_>>().join(","),
                    signals = %signals.iter().cloned().collect::<Vec<_>>().join(","),
                    "correlated anomalies in several domains"
                );
                self.active = Some(Event {
                    domains: all,
                    signals,
                    started_ms,
                });
            }
        }
        self.active.as_ref()
    }

    /// The event in force.
    pub fn active(&self) -> Option<&Event> {
        self.active.as_ref()
    }

    /// Events raised so far.
    pub fn events_total(&self) -> u64 {
        self.events_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn one_event_per_incident() {
        let mut c = Correlator::default();
        assert!(
            c.observe(&pairs(&[("db", "tps"), ("db", "locks")]), 1)
                .is_none()
        );
        let e = c
            .observe(&pairs(&[("db", "tps"), ("disk", "used")]), 2)
            .expect("event")
            .clone();
        assert_eq!(e.domains_label(), "db,disk");
        assert_eq!(c.events_total(), 1);
        // Same incident, one domain quiet again: no new event.
        c.observe(&pairs(&[("db", "tps"), ("disk", "used")]), 3);
        assert_eq!(c.events_total(), 1);
        // A third domain joins: a new event naming all three, same start.
        let e = c
            .observe(&pairs(&[("logs", "errors"), ("disk", "used")]), 4)
            .expect("event")
            .clone();
        assert_eq!(e.domains_label(), "db,disk,logs");
        assert_eq!(e.started_ms, 2);
        assert_eq!(c.events_total(), 2);
        assert!(c.observe(&[], 5).is_none());
        assert!(c.active().is_none());
    }
}
