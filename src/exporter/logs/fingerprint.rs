//! Log template mining: groups messages into patterns with stable ids.
//!
//! Placeholder until the Drain-style miner lands: masks digits and groups identical masked
//! messages.

use std::collections::HashMap;
use std::fmt;

/// Miner settings.
#[derive(Debug, Clone)]
pub struct MinerOptions {
    /// Most clusters kept.
    pub max_clusters: usize,
    /// Similarity threshold.
    pub similarity: f64,
    /// Tree depth.
    pub depth: usize,
    /// Characters kept in a template.
    pub max_template_len: usize,
}

impl Default for MinerOptions {
    fn default() -> Self {
        Self {
            max_clusters: 1000,
            similarity: 0.4,
            depth: 4,
            max_template_len: 200,
        }
    }
}

/// A stable pattern id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PatternId(u64);

impl fmt::Display for PatternId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010x}", self.0 & 0xff_ffff_ffff)
    }
}

/// The miner.
pub struct Miner {
    opts: MinerOptions,
    clusters: HashMap<PatternId, (String, u64)>,
}

impl Miner {
    /// A new miner.
    pub fn new(opts: MinerOptions) -> Self {
        Self {
            opts,
            clusters: HashMap::new(),
        }
    }

    /// Assigns a pattern.
    pub fn observe(&mut self, message: &str) -> PatternId {
        let masked: String = message
            .split_whitespace()
            .map(|t| {
                if t.bytes().any(|b| b.is_ascii_digit()) {
                    "<*>"
                } else {
                    t
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        let mut h: u64 = 0xcbf29ce484222325;
        for b in masked.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        let id = PatternId(h);
        if self.clusters.len() >= self.opts.max_clusters && !self.clusters.contains_key(&id) {
            return id;
        }
        let max = self.opts.max_template_len;
        let e = self
            .clusters
            .entry(id)
            .or_insert_with(|| (masked.chars().take(max).collect(), 0));
        e.1 += 1;
        id
    }

    /// The template of a pattern.
    pub fn template(&self, id: PatternId) -> Option<&str> {
        self.clusters.get(&id).map(|(t, _)| t.as_str())
    }

    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    /// Whether no pattern exists.
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// Every pattern with its template and count.
    pub fn patterns(&self) -> impl Iterator<Item = (PatternId, &str, u64)> {
        self.clusters
            .iter()
            .map(|(id, (t, c))| (*id, t.as_str(), *c))
    }
}
