//! Samples as the PostgreSQL collector produces them (a family description, labels and a
//! value), merged into one prometheus-client [`Registry`] per scrape.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// Label pairs of one series.
pub type Labels = Vec<(String, String)>;

/// Whether a family is a gauge or a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A cumulative count; exposed with `_total`.
    Counter,
}

/// The base unit a family is exposed in; appended to its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseUnit {
    /// `_seconds`
    Seconds,
    /// `_bytes`
    Bytes,
    /// `_ratio`
    Ratio,
}

/// A metric family: name without unit and `_total`, help text, unit and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    /// Name without the unit suffix and without `_total`.
    pub name: &'static str,
    /// Help text (prometheus-client appends a period).
    pub help: &'static str,
    /// Unit suffix, if any.
    pub unit: Option<BaseUnit>,
    /// Gauge or counter.
    pub kind: Kind,
}

impl Desc {
    /// A gauge without unit.
    pub const fn gauge(name: &'static str, help: &'static str) -> Desc {
        Desc {
            name,
            help,
            unit: None,
            kind: Kind::Gauge,
        }
    }

    /// A counter without unit.
    pub const fn counter(name: &'static str, help: &'static str) -> Desc {
        Desc {
            name,
            help,
            unit: None,
            kind: Kind::Counter,
        }
    }

    /// The same family in seconds.
    pub const fn seconds(mut self) -> Desc {
        self.unit = Some(BaseUnit::Seconds);
        self
    }

    /// The same family in bytes.
    pub const fn bytes(mut self) -> Desc {
        self.unit = Some(BaseUnit::Bytes);
        self
    }

    /// The same family as a ratio.
    pub const fn ratio(mut self) -> Desc {
        self.unit = Some(BaseUnit::Ratio);
        self
    }

    /// The name as it appears in the text exposition, e.g. `pg_stat_database_xact_commit_total`.
    pub fn exposed_name(&self) -> String {
        let mut n = self.name.to_string();
        match self.unit {
            Some(BaseUnit::Seconds) => n.push_str("_seconds"),
            Some(BaseUnit::Bytes) => n.push_str("_bytes"),
            Some(BaseUnit::Ratio) => n.push_str("_ratio"),
            None => {}
        }
        if self.kind == Kind::Counter {
            n.push_str("_total");
        }
        n
    }
}

/// One series value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Its family.
    pub desc: Desc,
    /// Its labels (the target's labels are added when the scrape is assembled).
    pub labels: Labels,
    /// Its value, in the family's base unit.
    pub value: f64,
}

/// Samples of one target, in the order they were produced.
#[derive(Debug, Default, Clone)]
pub struct Samples(pub Vec<Sample>);

impl Samples {
    /// Adds one sample.
    pub fn push(&mut self, desc: &Desc, labels: Labels, value: f64) {
        self.0.push(Sample {
            desc: *desc,
            labels,
            value,
        });
    }

    /// Adds all samples of another set.
    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// Prepends `prefix` to the labels of every sample.
    pub fn with_prefix(mut self, prefix: &Labels) -> Samples {
        if !prefix.is_empty() {
            for s in &mut self.0 {
                let mut l = prefix.clone();
                l.append(&mut s.labels);
                s.labels = l;
            }
        }
        self
    }
}

enum Fam {
    Gauge(Family<Labels, Gauge<f64, AtomicU64>>),
    Counter(Family<Labels, Counter<f64, AtomicU64>>),
}

/// Builds one registry from the samples of every target. Families are registered in name
/// order; a family whose samples disagree on type keeps the first one's.
pub fn into_registry(samples: impl IntoIterator<Item = Sample>) -> Registry {
    let mut families: BTreeMap<&'static str, (Desc, Fam)> = BTreeMap::new();
    for s in samples {
        if !s.value.is_finite() {
            continue;
        }
        let (_, fam) = families.entry(s.desc.name).or_insert_with(|| {
            let fam = match s.desc.kind {
                Kind::Gauge => Fam::Gauge(Family::default()),
                Kind::Counter => Fam::Counter(Family::default()),
            };
            (s.desc, fam)
        });
        match fam {
            Fam::Gauge(f) => {
                f.get_or_create(&s.labels).set(s.value);
            }
            Fam::Counter(f) => {
                f.get_or_create(&s.labels).inc_by(s.value.max(0.0));
            }
        }
    }
    let mut registry = Registry::default();
    for (name, (desc, fam)) in families {
        let unit = desc.unit.map(|u| match u {
            BaseUnit::Seconds => Unit::Seconds,
            BaseUnit::Bytes => Unit::Bytes,
            BaseUnit::Ratio => Unit::Other("ratio".into()),
        });
        match (fam, unit) {
            (Fam::Gauge(f), Some(u)) => registry.register_with_unit(name, desc.help, u, f),
            (Fam::Gauge(f), None) => registry.register(name, desc.help, f),
            (Fam::Counter(f), Some(u)) => registry.register_with_unit(name, desc.help, u, f),
            (Fam::Counter(f), None) => registry.register(name, desc.help, f),
        }
    }
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Desc = Desc::counter("pg_x_time", "Time").seconds();
    const G: Desc = Desc::gauge("pg_y", "Y");

    #[test]
    fn names_and_encoding() {
        assert_eq!(C.exposed_name(), "pg_x_time_seconds_total");
        assert_eq!(G.exposed_name(), "pg_y");
        let mut s = Samples::default();
        s.push(&C, vec![("datname".into(), "a".into())], 1.5);
        s.push(&G, vec![], 3.0);
        s.push(&G, vec![("k".into(), "nan".into())], f64::NAN);
        let s = s.with_prefix(&vec![("target".into(), "t".into())]);
        let r = into_registry(s.0);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).expect("encode");
        assert!(
            out.contains("pg_x_time_seconds_total{target=\"t\",datname=\"a\"} 1.5"),
            "{out}"
        );
        assert!(out.contains("pg_y{target=\"t\"} 3.0"), "{out}");
        assert!(!out.contains("nan"), "{out}");
    }
}
