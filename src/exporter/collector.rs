//! The Collector trait: one type per source of metrics, run for each scrape under a deadline.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

/// A boxed future, as returned by [`Collector::collect`] so collectors can live in a list.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What one scrape asks of a collector.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Only this target (for `/probe?target=NAME`); `None` means every target.
    pub target: Option<String>,
    /// When the answer must be ready; the orchestrator cancels the collector at this point.
    pub deadline: Instant,
}

impl Scope {
    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Whether a target is wanted by this scrape.
    pub fn wants(&self, target: &str) -> bool {
        self.target.as_deref().is_none_or(|t| t == target)
    }
}

/// The state of one remote target after a collection, for the landing page.
#[derive(Debug, Clone)]
pub struct TargetReport {
    /// Target name as configured.
    pub target: String,
    /// Whether the target answered.
    pub up: bool,
    /// How long the target took.
    pub duration: Duration,
    /// Why it is down, without secrets.
    pub error: Option<String>,
}

/// The output of one collection.
#[derive(Debug, Default)]
pub struct Collected {
    /// Metric families built for this scrape (or clones of long-lived ones).
    pub registry: Registry,
    /// Per-target states, for collectors with remote targets.
    pub targets: Vec<TargetReport>,
}

/// Why a collection failed as a whole. Failures of single targets are not errors: they are
/// reported as `up=0` series and [`TargetReport`]s.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// Reading a local source failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Any other failure, described.
    #[error("{0}")]
    Other(String),
}

/// A source of metrics. Overlapping scrapes of the same scope (`/metrics`, or one `/probe`
/// target) share one call of `collect` (see [`crate::exporter::Exporter::scrape`]), but
/// `collect` must still be safe to call concurrently: a `/metrics` scrape and a `/probe` of
/// one of the collector's targets run at the same time.
pub trait Collector: Send + Sync + 'static {
    /// The collector's name, as in `--collector.NAME` and the `collector` label.
    fn name(&self) -> &'static str;

    /// Names of the targets this collector owns, for `/probe` routing and the landing page.
    fn targets(&self) -> Vec<String> {
        Vec::new()
    }

    /// Collects metrics for one scrape. The future is dropped when the deadline passes, so
    /// in-flight work must be cancel-safe.
    fn collect<'a>(&'a self, scope: &'a Scope) -> BoxFuture<'a, Result<Collected, CollectError>>;

    /// Stops background work (threads, refreshers) and saves what must survive a restart.
    /// Called when a reload replaces the collector and when vitals stops.
    fn shutdown(&self) {}
}
