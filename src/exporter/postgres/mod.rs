//! The `postgres` collector: many PostgreSQL servers from one process.
//!
//! Each scrape runs every wanted target concurrently. Per target, the server-wide queries
//! (chosen for the server's version by [`queries`]) are pipelined on one connection to the
//! maintenance database; per-database families (largest tables, indexes, sequences) fan out
//! to one connection per database; database sizes come from a snapshot refreshed in the
//! background when scrapes find it older than `size_refresh_interval`. A query that fails
//! (permission denied, missing view) drops only its own families and is counted in
//! `pg_scrape_errors_total{reason}`; a server that cannot be reached shows `pg_up 0`.
//!
//! Every target reports `pg_up`, `pg_scrape_duration_seconds` and `pg_scrape_errors_total`
//! with its `target` label and the configured extra labels.

pub mod conn;
pub mod metrics;
pub mod queries;
pub mod settings;
pub mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::watch;

use super::collector::{BoxFuture, CollectError, Collected, Collector, Scope, TargetReport};
use crate::config::{Config, PostgresTarget};
use conn::{ConnError, Pool, query_reason};
use metrics::{Desc, Labels, Samples};
use queries::{Area, Query};

/// `pg_up`
pub const UP: Desc = Desc::gauge(
    "pg_up",
    "Whether the last scrape could connect to the PostgreSQL server: 1 yes, 0 no",
);
/// `pg_scrape_duration_seconds`
pub const SCRAPE_DURATION: Desc = Desc::gauge(
    "pg_scrape_duration",
    "Time the last scrape of this PostgreSQL target took",
)
.seconds();
/// `pg_scrape_errors_total`
pub const SCRAPE_ERRORS: Desc = Desc::counter(
    "pg_scrape_errors",
    "Failed connections and queries of this PostgreSQL target, by reason",
);
/// `vitals_postgres_connections`
pub const OPEN_CONNECTIONS: Desc = Desc::gauge(
    "vitals_postgres_connections",
    "Connections vitals holds to this PostgreSQL target (idle or in use)",
);

/// Reasons of `pg_scrape_errors_total`, exported from the start so that rates work.
pub const REASONS: &[&str] = &[
    "connect",
    "auth",
    "timeout",
    "permission",
    "missing",
    "query",
];

/// Collects the configured PostgreSQL targets.
pub struct PostgresCollector {
    targets: Vec<Arc<Target>>,
}

/// Why the collector could not be built from the config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A target's TLS settings are unusable.
    #[error("exporter.postgres target {target}: {source}")]
    Tls {
        /// Target name.
        target: String,
        /// The TLS error.
        source: tls::TlsError,
    },
}

impl PostgresCollector {
    /// Builds the collector for `exporter.postgres`; `None` when no target is configured.
    pub fn build(config: &Config) -> Result<Option<PostgresCollector>, BuildError> {
        let targets = &config.exporter.postgres.targets;
        if targets.is_empty() {
            return Ok(None);
        }
        let targets = targets
            .iter()
            .map(|t| Target::new(t).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(PostgresCollector { targets }))
    }
}

impl Collector for PostgresCollector {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn targets(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.cfg.name.clone()).collect()
    }

    fn collect<'a>(&'a self, scope: &'a Scope) -> BoxFuture<'a, Result<Collected, CollectError>> {
        Box::pin(async move {
            // Finish a little before the orchestrator's deadline so that late targets are
            // reported (with what they had) instead of the whole collector being cut off.
            let margin = (scope.remaining() / 20).min(Duration::from_millis(250));
            let deadline = scope.deadline.checked_sub(margin).unwrap_or(scope.deadline);
            let scrapes = self
                .targets
                .iter()
                .filter(|t| scope.wants(&t.cfg.name))
                .map(|t| t.scrape(deadline));
            let results = futures_util::future::join_all(scrapes).await;
            let mut samples = Vec::new();
            let mut reports = Vec::new();
            for (s, report) in results {
                samples.extend(s.0);
                reports.push(report);
            }
            Ok(Collected {
                registry: metrics::into_registry(samples),
                targets: reports,
            })
        })
    }
}

/// A snapshot of database sizes.
struct SizeSnapshot {
    taken: Instant,
    unix: f64,
    samples: Samples,
}

/// One configured server with its pool and its state across scrapes.
struct Target {
    cfg: PostgresTarget,
    labels: Labels,
    pool: Arc<Pool>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    failing: Mutex<BTreeSet<Area>>,
    was_up: AtomicBool,
    sizes: watch::Sender<Option<Arc<SizeSnapshot>>>,
    refreshing: AtomicBool,
}

/// What a scrape of one target has gathered so far (kept when the deadline cuts it off).
#[derive(Default)]
struct Progress {
    samples: Samples,
    up: bool,
    failed_areas: BTreeSet<&'static str>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Target {
    fn new(cfg: &PostgresTarget) -> Result<Target, BuildError> {
        let pool = Pool::new(cfg).map_err(|source| BuildError::Tls {
            target: cfg.name.clone(),
            source,
        })?;
        let mut labels = vec![("target".to_string(), cfg.name.clone())];
        labels.extend(cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(Target {
            cfg: cfg.clone(),
            labels,
            pool: Arc::new(pool),
            errors: Mutex::new(REASONS.iter().map(|r| (*r, 0)).collect()),
            failing: Mutex::new(BTreeSet::new()),
            was_up: AtomicBool::new(true),
            sizes: watch::channel(None).0,
            refreshing: AtomicBool::new(false),
        })
    }

    fn count_error(&self, reason: &'static str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(reason)
            .or_insert(0) += 1;
    }

    /// Records the outcome of one area's query; logs only changes, not every scrape.
    fn area_result(&self, area: Area, db: Option<&str>, error: Option<&tokio_postgres::Error>) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        match error {
            None => {
                if db.is_none() && failing.remove(&area) {
                    tracing::info!(target_name = %self.cfg.name, area = area.name(), "postgres query works again");
                }
            }
            Some(e) => {
                let reason = query_reason(e);
                drop(failing);
                self.count_error(reason);
                let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
                if failing.insert(area) {
                    tracing::warn!(
                        target_name = %self.cfg.name,
                        area = area.name(),
                        database = db.unwrap_or(&self.cfg.dbname),
                        reason,
                        error = %e,
                        "postgres query failed; its families are left out until it works"
                    );
                } else {
                    tracing::debug!(target_name = %self.cfg.name, area = area.name(), database = db.unwrap_or(&self.cfg.dbname), error = %e, "postgres query failed");
                }
            }
        }
    }

    async fn scrape(self: &Arc<Self>, deadline: Instant) -> (Samples, TargetReport) {
        let start = Instant::now();
        let mut p = Progress::default();
        let mut error = None;
        match tokio::time::timeout_at(deadline.into(), self.scrape_inner(deadline, &mut p)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if !matches!(e, ConnError::Backoff { .. }) {
                    self.count_error(e.reason());
                }
                if self.was_up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(target_name = %self.cfg.name, error = %e, "postgres target is down");
                } else {
                    tracing::debug!(target_name = %self.cfg.name, error = %e, "postgres target is still down");
                }
                error = Some(e.to_string());
            }
            Err(_) => {
                self.count_error("timeout");
                tracing::warn!(target_name = %self.cfg.name, "postgres scrape cut off at the deadline");
                error = Some(format!(
                    "scrape deadline reached after {:.3}s; partial results",
                    start.elapsed().as_secs_f64()
                ));
            }
        }
        if p.up {
            if !self.was_up.swap(true, Ordering::Relaxed) {
                tracing::info!(target_name = %self.cfg.name, "postgres target is up again");
            }
            if error.is_none() && !p.failed_areas.is_empty() {
                let areas: Vec<&str> = p.failed_areas.iter().copied().collect();
                error = Some(format!("queries failed: {}", areas.join(", ")));
            }
        }
        let duration = start.elapsed();
        let mut out = p.samples;
        out.push(&UP, vec![], if p.up { 1.0 } else { 0.0 });
        out.push(&SCRAPE_DURATION, vec![], duration.as_secs_f64());
        out.push(
            &OPEN_CONNECTIONS,
            vec![],
            self.pool.open_connections() as f64,
        );
        for (reason, n) in self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            out.push(
                &SCRAPE_ERRORS,
                vec![("reason".into(), (*reason).into())],
                *n as f64,
            );
        }
        let report = TargetReport {
            target: self.cfg.name.clone(),
            up: p.up,
            duration,
            error,
        };
        (out.with_prefix(&self.labels), report)
    }

    async fn scrape_inner(
        self: &Arc<Self>,
        deadline: Instant,
        p: &mut Progress,
    ) -> Result<(), ConnError> {
        let conn = self.pool.get(&self.cfg.dbname, deadline).await?;
        p.up = true;
        let version = conn.version();
        let statements = self
            .cfg
            .pg_stat_statements
            .then_some(self.cfg.statements_top_n);
        let queries = queries::server_queries(version, statements);
        let settings_query = settings::query(version);
        let (results, settings_rows) = futures_util::future::join(
            futures_util::future::join_all(queries.iter().map(|q| conn.query(&q.sql))),
            conn.query(&settings_query.sql),
        )
        .await;
        drop(conn);
        let mut fan_out = Vec::new();
        let none = Labels::new();
        for (q, r) in queries.iter().zip(results) {
            match r {
                Ok(rows) => {
                    self.area_result(q.area, None, None);
                    p.samples.extend(q.samples(&rows, &none));
                    if q.area == Area::Database {
                        fan_out = self.fan_out_databases(&rows);
                    }
                }
                Err(e) => {
                    self.area_result(q.area, None, Some(&e));
                    p.failed_areas.insert(q.area.name());
                }
            }
        }
        match settings_rows {
            Ok(rows) => {
                self.area_result(Area::Settings, None, None);
                p.samples.extend(settings::samples(&rows));
            }
            Err(e) => {
                self.area_result(Area::Settings, None, Some(&e));
                p.failed_areas.insert(Area::Settings.name());
            }
        }

        if let Some(s) = self.database_sizes(deadline).await {
            p.samples.extend(s);
        }

        if self.cfg.tables_top_n > 0 && !fan_out.is_empty() {
            let concurrency = (self.cfg.max_connections as usize).saturating_sub(1).max(1);
            let mut stream = futures_util::stream::iter(fan_out)
                .map(|db| self.scrape_database(db, version, deadline))
                .buffer_unordered(concurrency);
            while let Some((samples, failed)) = stream.next().await {
                p.samples.extend(samples);
                p.failed_areas.extend(failed);
            }
        }
        Ok(())
    }

    /// Databases to fan out to, from the database query's rows.
    fn fan_out_databases<R: queries::TextRow>(&self, rows: &[R]) -> Vec<String> {
        let all = self.cfg.databases.iter().any(|d| d == "all");
        rows.iter()
            .filter(|r| {
                r.cell("allow_conn").flatten() == Some("t")
                    && r.cell("is_template").flatten() == Some("f")
            })
            .filter_map(|r| r.cell("datname").flatten().map(str::to_string))
            .filter(|d| all || self.cfg.databases.contains(d))
            .filter(|d| !self.cfg.exclude.contains(d))
            .collect()
    }

    /// The per-database queries of one database of the fan-out.
    async fn scrape_database(
        self: &Arc<Self>,
        db: String,
        version: u32,
        deadline: Instant,
    ) -> (Samples, Vec<&'static str>) {
        let mut failed = Vec::new();
        let conn = match self.pool.get(&db, deadline).await {
            Ok(c) => c,
            Err(e) => {
                if !matches!(e, ConnError::Backoff { .. }) {
                    self.count_error(e.reason());
                }
                tracing::debug!(target_name = %self.cfg.name, database = %db, error = %e, "fan-out connection failed");
                failed.push("fan-out connection");
                return (Samples::default(), failed);
            }
        };
        let qs: Vec<Query> = queries::database_queries(version, self.cfg.tables_top_n);
        let results = futures_util::future::join_all(qs.iter().map(|q| conn.query(&q.sql))).await;
        drop(conn);
        let labels = vec![("datname".to_string(), db.clone())];
        let mut out = Samples::default();
        for (q, r) in qs.iter().zip(results) {
            match r {
                Ok(rows) => out.extend(q.samples(&rows, &labels)),
                Err(e) => {
                    self.area_result(q.area, Some(&db), Some(&e));
                    failed.push(q.area.name());
                }
            }
        }
        (out, failed)
    }

    /// Database sizes from the snapshot; starts a background refresh when it is stale, and
    /// waits for the first one (until the deadline) when there is none yet.
    async fn database_sizes(self: &Arc<Self>, deadline: Instant) -> Option<Samples> {
        let mut rx = self.sizes.subscribe();
        let stale = rx
            .borrow()
            .as_ref()
            .is_none_or(|s| s.taken.elapsed() >= self.cfg.size_refresh_interval.0);
        if stale && !self.refreshing.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            tokio::spawn(async move { me.refresh_sizes().await });
        }
        if rx.borrow().is_none() {
            let _ = tokio::time::timeout_at(deadline.into(), rx.changed()).await;
        }
        let snapshot = rx.borrow().clone()?;
        let mut out = snapshot.samples.clone();
        out.push(&queries::database::SIZE_TIMESTAMP, vec![], snapshot.unix);
        Some(out)
    }

    async fn refresh_sizes(self: Arc<Self>) {
        let budget = self.cfg.connect_timeout.0 + self.cfg.statement_timeout.0;
        let deadline = Instant::now() + budget + Duration::from_secs(1);
        let result = async {
            let conn = self.pool.get(&self.cfg.dbname, deadline).await?;
            let q = queries::database_size(conn.version());
            let rows = conn.query(&q.sql).await;
            Ok::<_, ConnError>((q, rows))
        };
        match tokio::time::timeout_at(deadline.into(), result).await {
            Ok(Ok((q, Ok(rows)))) => {
                self.area_result(Area::DatabaseSize, None, None);
                let samples = q.samples(&rows, &Labels::new());
                self.sizes.send_replace(Some(Arc::new(SizeSnapshot {
                    taken: Instant::now(),
                    unix: unix_now(),
                    samples,
                })));
            }
            Ok(Ok((_, Err(e)))) => self.area_result(Area::DatabaseSize, None, Some(&e)),
            Ok(Err(e)) => {
                tracing::debug!(target_name = %self.cfg.name, error = %e, "database size refresh could not connect");
            }
            Err(_) => {
                self.count_error("timeout");
                tracing::debug!(target_name = %self.cfg.name, "database size refresh timed out");
            }
        }
        self.refreshing.store(false, Ordering::Release);
        // Wake scrapes waiting for a first snapshot even when this refresh failed.
        self.sizes.send_modify(|_| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(yaml: &str) -> Arc<Target> {
        let cfg = Config::parse(yaml, "t.yml", None).expect("config");
        Arc::new(Target::new(&cfg.exporter.postgres.targets[0]).expect("target"))
    }

    struct Row(Vec<(&'static str, &'static str)>);
    impl queries::TextRow for Row {
        fn cell(&self, column: &str) -> Option<Option<&str>> {
            self.0
                .iter()
                .find(|(c, _)| *c == column)
                .map(|(_, v)| Some(*v))
        }
    }

    fn db(name: &'static str, allow: &'static str, template: &'static str) -> Row {
        Row(vec![
            ("datname", name),
            ("allow_conn", allow),
            ("is_template", template),
        ])
    }

    #[test]
    fn fan_out_follows_databases_and_exclude() {
        let rows = vec![
            db("postgres", "t", "f"),
            db("app", "t", "f"),
            db("old", "t", "f"),
            db("template1", "t", "t"),
            db("template0", "f", "t"),
        ];
        let t = target(
            "exporter:\n  postgres:\n    targets:\n      - name: a\n        exclude: [old]\n",
        );
        assert_eq!(t.fan_out_databases(&rows), vec!["postgres", "app"]);
        let t = target(
            "exporter:\n  postgres:\n    targets:\n      - name: a\n        databases: [app, template1]\n",
        );
        assert_eq!(t.fan_out_databases(&rows), vec!["app"]);
    }

    #[tokio::test]
    async fn unreachable_target_is_down_quickly_with_labels_and_no_secret() {
        // A port nobody listens on: connection refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let t = target(&format!(
            "exporter:\n  postgres:\n    targets:\n      - name: gone\n        port: {port}\n        password: hunter2-secret\n        labels: {{env: test}}\n"
        ));
        let started = Instant::now();
        let (samples, report) = t.scrape(Instant::now() + Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(!report.up);
        let err = report.error.expect("error");
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let up = samples
            .0
            .iter()
            .find(|s| s.desc == UP)
            .expect("pg_up sample");
        assert_eq!(up.value, 0.0);
        assert_eq!(
            up.labels,
            vec![
                ("target".to_string(), "gone".to_string()),
                ("env".to_string(), "test".to_string())
            ]
        );
        let connect_errors = samples
            .0
            .iter()
            .find(|s| {
                s.desc == SCRAPE_ERRORS
                    && s.labels
                        .iter()
                        .any(|(k, v)| k == "reason" && v == "connect")
            })
            .expect("connect errors");
        assert_eq!(connect_errors.value, 1.0);
    }
}

/// Every family the collector can produce on any supported version, for documentation.
pub fn families() -> Vec<Desc> {
    let mut out = vec![UP, SCRAPE_DURATION, SCRAPE_ERRORS, OPEN_CONNECTIONS];
    for v in [120000, 130000, 140000, 170000, 180000] {
        let mut qs = queries::server_queries(v, Some(1));
        qs.extend(queries::database_queries(v, 1));
        qs.push(queries::database_size(v));
        qs.push(queries::statements(v, 1));
        for q in qs {
            out.extend(q.columns.iter().map(|c| c.desc));
        }
    }
    out.push(queries::database::SIZE_TIMESTAMP);
    out.extend(settings::SETTINGS.iter().map(|(_, d)| *d));
    let mut seen = BTreeSet::new();
    out.retain(|d| seen.insert(d.name));
    out
}

#[cfg(test)]
mod doc_tests {
    #[test]
    fn every_family_is_documented() {
        let doc = include_str!("../../../docs/metrics.md");
        let missing: Vec<String> = super::families()
            .iter()
            .map(|d| d.exposed_name())
            .filter(|n| !doc.contains(&format!("`{n}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "undocumented in docs/metrics.md: {missing:?}"
        );
    }
}

/// The registration entry for [`super::COLLECTORS`].
pub const SPEC: super::CollectorSpec = super::CollectorSpec {
    name: "postgres",
    help: "PostgreSQL servers of exporter.postgres (pg_stat_* views)",
    default_enabled: true,
    build: |c| match PostgresCollector::build(c) {
        Ok(Some(p)) => Ok(Some(std::sync::Arc::new(p))),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    },
};
