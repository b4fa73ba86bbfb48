//! What the PostgreSQL collector produces and how it is encoded.
//!
//! Query results are kept as [`Block`]s: one list of label values and one value per metric
//! column for each row, so a row of 20 columns costs one label set instead of 20. Blocks are
//! immutable and shared (`Arc`) between a background snapshot and every scrape that serves
//! it. A scrape assembles the blocks and single [`Samples`] of its targets into an
//! [`Exposition`], which encodes itself straight into the scrape's text through
//! prometheus-client's [`Collector`](prometheus_client::collector::Collector) interface:
//! nothing is copied per series on the way.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::queries::{Query, TextRow, parse_number};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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
    /// Help text (a period is appended in the exposition).
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
    /// Its labels (the target's labels are added when the exposition is encoded).
    pub labels: Labels,
    /// Its value, in the family's base unit.
    pub value: f64,
}

/// Single samples of one target (its state, settings), in the order they were produced.
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
}

/// One result row: its label values (in the order of the query's label columns) and one
/// value per metric column (NaN where the cell was NULL, missing or not a number).
#[derive(Debug, Clone, PartialEq)]
struct Row {
    labels: Box<[Box<str>]>,
    values: Box<[f64]>,
}

/// The rows of one query, compact, with the labels every row shares (`datname` for the
/// per-database queries).
#[derive(Debug, Clone)]
pub struct Block {
    query: Arc<Query>,
    extra: Labels,
    rows: Vec<Row>,
}

/// Positions of a query's label and value columns in its result.
type Positions = (Vec<Option<usize>>, Vec<Option<usize>>);

/// Builds a [`Block`] from rows as they arrive, so that a result is never held twice.
#[derive(Debug)]
pub struct BlockBuilder {
    query: Arc<Query>,
    extra: Labels,
    /// Positions of the label and value columns, looked up on the first row (one result
    /// set, one column layout).
    positions: Option<Positions>,
    rows: Vec<Row>,
}

impl BlockBuilder {
    /// An empty block of `query`'s rows, with `extra` labels on every row.
    pub fn new(query: Arc<Query>, extra: Labels) -> BlockBuilder {
        BlockBuilder {
            query,
            extra,
            positions: None,
            rows: Vec::new(),
        }
    }

    /// Adds one result row.
    pub fn push<R: TextRow>(&mut self, row: &R) {
        let query = &self.query;
        let (labels, values) = self.positions.get_or_insert_with(|| {
            (
                query.labels.iter().map(|l| row.position(l)).collect(),
                query.columns.iter().map(|c| row.position(c.name)).collect(),
            )
        });
        let labels = labels
            .iter()
            .map(|p| Box::<str>::from(p.and_then(|i| row.at(i)).unwrap_or("")))
            .collect();
        let values = values
            .iter()
            .zip(&query.columns)
            .map(|(p, c)| {
                p.and_then(|i| row.at(i))
                    .and_then(parse_number)
                    .map_or(f64::NAN, |v| v * c.scale)
            })
            .collect();
        self.rows.push(Row { labels, values });
    }

    /// The block; rows whose label values repeat an earlier row's are dropped, so that
    /// every series is exposed once.
    pub fn finish(mut self) -> Block {
        dedup(&mut self.rows);
        self.rows.shrink_to_fit();
        Block {
            query: self.query,
            extra: self.extra,
            rows: self.rows,
        }
    }
}

impl Block {
    /// Turns result rows into a block (see [`BlockBuilder`]).
    pub fn from_rows<R: TextRow>(query: Arc<Query>, extra: Labels, rows: &[R]) -> Block {
        let mut b = BlockBuilder::new(query, extra);
        for row in rows {
            b.push(row);
        }
        b.finish()
    }

    /// The query the rows came from.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// The labels shared by every row.
    pub fn extra(&self) -> &Labels {
        &self.extra
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Every finite value of the family `desc` with its labels (extra labels first), for tests
    /// and checks; the exposition does not go through here.
    pub fn series(&self, desc: &Desc) -> Vec<(Labels, f64)> {
        let mut out = Vec::new();
        for (c, column) in self.query.columns.iter().enumerate() {
            if column.desc != *desc {
                continue;
            }
            for row in &self.rows {
                let Some(v) = row.values.get(c).copied().filter(|v| v.is_finite()) else {
                    continue;
                };
                let mut labels = self.extra.clone();
                labels.extend(
                    self.query
                        .labels
                        .iter()
                        .zip(row.labels.iter())
                        .map(|(k, v)| ((*k).to_string(), v.to_string())),
                );
                out.push((labels, v));
            }
        }
        out
    }

    fn has_value(&self, column: usize) -> bool {
        self.rows
            .iter()
            .any(|r| r.values.get(column).is_some_and(|v| v.is_finite()))
    }
}

/// Drops rows whose labels repeat an earlier row's (keeps the first), without copying labels.
fn dedup(rows: &mut Vec<Row>) {
    if rows.len() < 2 {
        return;
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|a, b| {
        let (ra, rb) = (&rows[*a], &rows[*b]);
        ra.labels.cmp(&rb.labels).then(a.cmp(b))
    });
    let mut duplicate = vec![false; rows.len()];
    for w in order.windows(2) {
        if rows[w[0]].labels == rows[w[1]].labels {
            duplicate[w[1]] = true;
        }
    }
    if !duplicate.contains(&true) {
        return;
    }
    let mut i = 0;
    rows.retain(|_| {
        let keep = !duplicate[i];
        i += 1;
        keep
    });
}

/// What one target contributes to a scrape.
#[derive(Debug, Default)]
pub struct TargetOutput {
    /// Labels put first on every series of the target (`target` and the configured ones).
    pub prefix: Labels,
    /// Query results, some shared with a background snapshot.
    pub blocks: Vec<Arc<Block>>,
    /// Single samples.
    pub samples: Samples,
}

/// Everything a scrape of the collector exposes; encodes itself family by family, in name
/// order, merging the targets' series of each family.
#[derive(Debug, Default)]
pub struct Exposition {
    /// One entry per scraped target.
    pub targets: Vec<TargetOutput>,
}

/// A family's name without unit suffix, and its unit.
type FamilyKey = (&'static str, Option<BaseUnit>);

/// Where the series of a family come from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// Column `column` of block `block` of target `target`.
    Column {
        target: usize,
        block: usize,
        column: usize,
    },
    /// Sample `sample` of target `target`.
    Sample { target: usize, sample: usize },
}

/// Labels of one series, borrowed from where they are kept.
struct SeriesLabels<'a> {
    prefix: &'a [(String, String)],
    extra: &'a [(String, String)],
    names: &'a [&'static str],
    values: &'a [Box<str>],
}

impl EncodeLabelSet for SeriesLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        for (k, v) in self.prefix.iter().chain(self.extra) {
            (k.as_str(), v.as_str()).encode(encoder.encode_label())?;
        }
        for (k, v) in self.names.iter().zip(self.values) {
            (*k, &**v).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

impl Exposition {
    /// A registry holding this exposition, for [`Collected`](super::super::Collected).
    pub fn into_registry(self) -> Registry {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        registry
    }

    /// Families in name order with the sources of their series, keyed by name and unit (two
    /// families may share a name before the unit suffix, as `..._replay_lag_bytes` and
    /// `..._replay_lag_seconds` do); a family whose sources disagree on type keeps the first
    /// one's. Families without a finite value are left out.
    fn index(&self) -> BTreeMap<FamilyKey, (Desc, Vec<Source>)> {
        let mut families: BTreeMap<FamilyKey, (Desc, Vec<Source>)> = BTreeMap::new();
        for (t, out) in self.targets.iter().enumerate() {
            for (b, block) in out.blocks.iter().enumerate() {
                for (c, column) in block.query.columns.iter().enumerate() {
                    if block.has_value(c) {
                        families
                            .entry((column.desc.name, column.desc.unit))
                            .or_insert_with(|| (column.desc, Vec::new()))
                            .1
                            .push(Source::Column {
                                target: t,
                                block: b,
                                column: c,
                            });
                    }
                }
            }
            for (s, sample) in out.samples.0.iter().enumerate() {
                if sample.value.is_finite() {
                    families
                        .entry((sample.desc.name, sample.desc.unit))
                        .or_insert_with(|| (sample.desc, Vec::new()))
                        .1
                        .push(Source::Sample {
                            target: t,
                            sample: s,
                        });
                }
            }
        }
        families
    }
}

fn encode_value(
    kind: Kind,
    value: f64,
    encoder: prometheus_client::encoding::MetricEncoder,
) -> Result<(), std::fmt::Error> {
    match kind {
        Kind::Gauge => ConstGauge::new(value).encode(encoder),
        Kind::Counter => ConstCounter::new(value.max(0.0)).encode(encoder),
    }
}

impl prometheus_client::collector::Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut help = String::new();
        for ((name, _), (desc, sources)) in self.index() {
            let unit = desc.unit.map(|u| match u {
                BaseUnit::Seconds => Unit::Seconds,
                BaseUnit::Bytes => Unit::Bytes,
                BaseUnit::Ratio => Unit::Other("ratio".into()),
            });
            let metric_type = match desc.kind {
                Kind::Gauge => MetricType::Gauge,
                Kind::Counter => MetricType::Counter,
            };
            help.clear();
            help.push_str(desc.help);
            help.push('.');
            let mut family = encoder.encode_descriptor(name, &help, unit.as_ref(), metric_type)?;
            for source in sources {
                match source {
                    Source::Column {
                        target,
                        block,
                        column,
                    } => {
                        let Some(out) = self.targets.get(target) else {
                            continue;
                        };
                        let Some(block) = out.blocks.get(block) else {
                            continue;
                        };
                        for row in &block.rows {
                            let Some(v) = row.values.get(column).copied() else {
                                continue;
                            };
                            if !v.is_finite() {
                                continue;
                            }
                            let labels = SeriesLabels {
                                prefix: &out.prefix,
                                extra: &block.extra,
                                names: block.query.labels,
                                values: &row.labels,
                            };
                            encode_value(desc.kind, v, family.encode_family(&labels)?)?;
                        }
                    }
                    Source::Sample { target, sample } => {
                        let Some(out) = self.targets.get(target) else {
                            continue;
                        };
                        let Some(s) = out.samples.0.get(sample) else {
                            continue;
                        };
                        let labels = SeriesLabels {
                            prefix: &out.prefix,
                            extra: &s.labels,
                            names: &[],
                            values: &[],
                        };
                        encode_value(desc.kind, s.value, family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::queries::{Area, Column};
    use super::*;

    const C: Desc = Desc::counter("pg_x_time", "Time").seconds();
    const G: Desc = Desc::gauge("pg_y", "Y");
    const R: Desc = Desc::gauge("pg_z_used", "Used").ratio();

    struct Row(Vec<(&'static str, Option<&'static str>)>);
    impl TextRow for Row {
        fn position(&self, column: &str) -> Option<usize> {
            self.0.iter().position(|(c, _)| *c == column)
        }
        fn at(&self, index: usize) -> Option<&str> {
            self.0.get(index).and_then(|(_, v)| *v)
        }
    }

    fn query() -> Arc<Query> {
        Arc::new(Query {
            area: Area::Tables,
            sql: String::new(),
            labels: &["relname"],
            columns: vec![
                Column {
                    name: "t",
                    desc: C,
                    scale: 0.001,
                },
                Column {
                    name: "u",
                    desc: R,
                    scale: 1.0,
                },
            ],
        })
    }

    fn encode(e: Exposition) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &e.into_registry()).expect("encode");
        out
    }

    #[test]
    fn names_and_encoding() {
        assert_eq!(C.exposed_name(), "pg_x_time_seconds_total");
        assert_eq!(G.exposed_name(), "pg_y");
        let mut s = Samples::default();
        s.push(&C, vec![("datname".into(), "a".into())], 1.5);
        s.push(&G, vec![], 3.0);
        s.push(&G, vec![("k".into(), "nan".into())], f64::NAN);
        let out = encode(Exposition {
            targets: vec![TargetOutput {
                prefix: vec![("target".into(), "t".into())],
                blocks: vec![],
                samples: s,
            }],
        });
        assert!(
            out.contains("pg_x_time_seconds_total{target=\"t\",datname=\"a\"} 1.5"),
            "{out}"
        );
        assert!(out.contains("pg_y{target=\"t\"} 3.0"), "{out}");
        assert!(out.contains("# HELP pg_y Y.\n"), "{out}");
        assert!(!out.contains("nan"), "{out}");
    }

    #[test]
    fn blocks_of_several_targets_merge_into_one_family_each() {
        let rows = vec![
            Row(vec![
                ("relname", Some("a")),
                ("t", Some("1500")),
                ("u", None),
            ]),
            Row(vec![
                ("relname", Some("b")),
                ("t", Some("x")),
                ("u", Some("0.5")),
            ]),
            // A repeated label set is exposed once (the first row wins).
            Row(vec![("relname", Some("a")), ("t", Some("9")), ("u", None)]),
            Row(vec![("relname", None), ("t", Some("-3")), ("u", None)]),
        ];
        let block = Arc::new(Block::from_rows(
            query(),
            vec![("datname".into(), "app".into())],
            &rows,
        ));
        assert_eq!(block.rows(), 3);
        let series = block.series(&C);
        assert_eq!(series.len(), 2, "{series:?}");
        assert!((series[0].1 - 1.5).abs() < 1e-9, "milliseconds to seconds");
        let target = |name: &str, block: &Arc<Block>| TargetOutput {
            prefix: vec![("target".into(), name.into()), ("env".into(), "x".into())],
            blocks: vec![block.clone()],
            samples: Samples::default(),
        };
        let out = encode(Exposition {
            targets: vec![target("one", &block), target("two", &block)],
        });
        assert_eq!(
            out.matches("# TYPE pg_x_time_seconds counter").count(),
            1,
            "{out}"
        );
        assert_eq!(
            out.matches("# TYPE pg_z_used_ratio gauge").count(),
            1,
            "{out}"
        );
        assert!(out.contains(
            "pg_x_time_seconds_total{target=\"one\",env=\"x\",datname=\"app\",relname=\"a\"} 1.5\n"
        ), "{out}");
        assert!(
            out.contains(
                "pg_z_used_ratio{target=\"two\",env=\"x\",datname=\"app\",relname=\"b\"} 0.5\n"
            ),
            "{out}"
        );
        // Counters never go below zero; a NULL label is an empty value.
        assert!(out.contains(
            "pg_x_time_seconds_total{target=\"one\",env=\"x\",datname=\"app\",relname=\"\"} 0.0\n"
        ), "{out}");
        assert_eq!(out.matches("relname=\"a\"").count(), 2, "{out}");
        // Families come in name order.
        let x = out.find("pg_x_time").unwrap_or(usize::MAX);
        let z = out.find("pg_z_used").unwrap_or(0);
        assert!(x < z, "{out}");
    }

    #[test]
    fn families_sharing_a_name_before_the_unit_stay_apart() {
        const BYTES: Desc = Desc::gauge("pg_lag", "Lag in bytes").bytes();
        const SECONDS: Desc = Desc::gauge("pg_lag", "Lag in time").seconds();
        let mut s = Samples::default();
        s.push(&BYTES, vec![], 100.0);
        s.push(&SECONDS, vec![], 2.0);
        let out = encode(Exposition {
            targets: vec![TargetOutput {
                prefix: vec![],
                blocks: vec![],
                samples: s,
            }],
        });
        assert!(out.contains("# TYPE pg_lag_bytes gauge\n"), "{out}");
        assert!(out.contains("# TYPE pg_lag_seconds gauge\n"), "{out}");
        assert!(out.contains("\npg_lag_bytes{} 100.0\n"), "{out}");
        assert!(out.contains("\npg_lag_seconds{} 2.0\n"), "{out}");
    }

    #[test]
    fn an_empty_exposition_encodes_nothing() {
        let empty = Block::from_rows::<Row>(query(), vec![], &[]);
        assert_eq!(empty.rows(), 0);
        let out = encode(Exposition {
            targets: vec![TargetOutput {
                prefix: vec![],
                blocks: vec![Arc::new(empty)],
                samples: Samples::default(),
            }],
        });
        assert_eq!(out, "# EOF\n");
    }
}
