//! The `postgres` collector: many PostgreSQL servers from one process.
//!
//! Each scrape runs every wanted target concurrently. Per target, the server-wide queries
//! (chosen for the server's version by [`queries`]) are pipelined on one connection to the
//! maintenance database. Two kinds of families cost more than a scrape can afford on a
//! server with many databases, and come from [`snapshot`]s refreshed in the background
//! while scrapes read them: database sizes (every `size_refresh_interval`) and the
//! per-database families (largest tables, indexes, sequences, and the counts of invalid and
//! unused indexes: one statement per database over one connection per database, every
//! `tables_refresh_interval`; with `0s`, in every scrape instead). A snapshot is never served older than three refresh intervals, and each
//! scrape exports the age of the per-database data it carries. A query that fails
//! (permission denied, missing view) drops only its own families and is counted in
//! `pg_scrape_errors_total{reason}`; a server that cannot be reached shows `pg_up 0`.
//!
//! Every target reports `pg_up`, `pg_scrape_duration_seconds` and `pg_scrape_errors_total`
//! with its `target` label and the configured extra labels.

pub mod conn;
pub mod metrics;
pub mod queries;
pub mod settings;
pub mod snapshot;
pub mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;

use super::collector::{BoxFuture, CollectError, Collected, Collector, Scope, TargetReport};
use crate::config::{Config, PostgresTarget};
use conn::{ConnError, Limiter, MAIN_DB_CONNECTIONS, Pool, query_reason};
use metrics::{Block, BlockBuilder, Desc, Exposition, Labels, Samples, TargetOutput};
use queries::{Area, PerDatabase};
use snapshot::Snapshot;

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

/// `vitals_postgres_global_connections`
pub const GLOBAL_CONNECTIONS: Desc = Desc::gauge(
    "vitals_postgres_global_connections",
    "Connections vitals holds to all PostgreSQL targets together (idle, in use, or closing)",
);
/// `vitals_postgres_global_connections_max`
pub const GLOBAL_CONNECTIONS_MAX: Desc = Desc::gauge(
    "vitals_postgres_global_connections_max",
    "Most connections vitals holds to all PostgreSQL targets together (exporter.postgres.max_connections)",
);
/// `vitals_postgres_global_evictions_total`
pub const GLOBAL_EVICTIONS: Desc = Desc::counter(
    "vitals_postgres_global_evictions",
    "Idle PostgreSQL connections closed to make room under exporter.postgres.max_connections",
);

/// `vitals_postgres_fanout_age_seconds`
pub const FANOUT_AGE: Desc = Desc::gauge(
    "vitals_postgres_fanout_age",
    "Age of the oldest per-database data (tables, indexes, sequences) this scrape carries; 0 when the scrape gathered it itself",
)
.seconds();
/// `vitals_postgres_fanout_databases`
pub const FANOUT_DATABASES: Desc = Desc::gauge(
    "vitals_postgres_fanout_databases",
    "Databases whose per-database families (tables, indexes, sequences) this scrape carries",
);
/// `vitals_postgres_fanout_refresh_duration_seconds`
pub const FANOUT_REFRESH_DURATION: Desc = Desc::gauge(
    "vitals_postgres_fanout_refresh_duration",
    "Time the last background refresh of the per-database families took",
)
.seconds();

/// Most databases a background refresh works on at once.
pub const BACKGROUND_CONCURRENCY: usize = 2;

/// A snapshot older than this many refresh intervals is dropped rather than served.
pub const MAX_AGE_INTERVALS: u32 = 3;

/// Reasons of `pg_scrape_errors_total`, exported from the start so that rates work.
pub const REASONS: &[&str] = &[
    "connect",
    "auth",
    "tls",
    "timeout",
    "permission",
    "missing",
    "query",
];

/// Collects the configured PostgreSQL targets.
pub struct PostgresCollector {
    targets: Vec<Arc<Target>>,
    global: Arc<Limiter>,
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
        // One limit on the connections of all targets together.
        let global = Limiter::new(config.exporter.postgres.max_connections as usize);
        let targets = targets
            .iter()
            .map(|t| Target::new(t, global.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(PostgresCollector { targets, global }))
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
            let mut exposition = Exposition::default();
            let mut reports = Vec::with_capacity(results.len());
            for (output, report) in results {
                exposition.targets.push(output);
                reports.push(report);
            }
            // The global limit's state, without a target label.
            let mut samples = Samples::default();
            samples.push(&GLOBAL_CONNECTIONS, vec![], self.global.open() as f64);
            samples.push(&GLOBAL_CONNECTIONS_MAX, vec![], self.global.limit() as f64);
            samples.push(&GLOBAL_EVICTIONS, vec![], self.global.evictions() as f64);
            exposition.targets.push(TargetOutput {
                prefix: Labels::new(),
                blocks: Vec::new(),
                samples,
            });
            Ok(Collected {
                registry: exposition.into_registry(),
                targets: reports,
            })
        })
    }

    fn shutdown(&self) {
        for t in &self.targets {
            t.stop.send_replace(true);
            t.pool.close_idle();
        }
    }
}

/// The per-database data of one database, as of one refresh.
#[derive(Debug)]
struct DatabaseData {
    db: String,
    taken: Instant,
    blocks: Vec<Arc<Block>>,
}

/// The per-database families of every database of a fan-out.
#[derive(Debug, Default)]
struct FanOut {
    databases: Vec<DatabaseData>,
    /// Areas that failed, for the target's report.
    failed: BTreeSet<&'static str>,
    duration: Duration,
}

/// One configured server with its pool and its state across scrapes.
struct Target {
    cfg: PostgresTarget,
    labels: Labels,
    pool: Arc<Pool>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    failing: Mutex<BTreeSet<Area>>,
    was_up: AtomicBool,
    /// Databases of the fan-out, as the last scrape's database query found them.
    fan_out_list: Mutex<Arc<Vec<String>>>,
    sizes: Snapshot<Arc<Block>>,
    fan_out: Snapshot<FanOut>,
    /// Turns true when the collector is shut down: ends the refreshers.
    stop: watch::Sender<bool>,
    /// Whether the last per-database refresh took longer than its interval (logged once).
    refresh_slow: AtomicBool,
}

/// What a scrape of one target has gathered so far (kept when the deadline cuts it off).
#[derive(Default)]
struct Progress {
    blocks: Vec<Arc<Block>>,
    samples: Samples,
    up: bool,
    failed_areas: BTreeSet<&'static str>,
}

impl Target {
    fn new(cfg: &PostgresTarget, global: Arc<Limiter>) -> Result<Target, BuildError> {
        let pool = Pool::new(cfg, global).map_err(|source| BuildError::Tls {
            target: cfg.name.clone(),
            source,
        })?;
        let mut labels = vec![("target".to_string(), cfg.name.clone())];
        labels.extend(cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let sizes = cfg.size_refresh_interval.0;
        let tables = cfg.tables_refresh_interval.0;
        Ok(Target {
            cfg: cfg.clone(),
            labels,
            pool: Arc::new(pool),
            errors: Mutex::new(REASONS.iter().map(|r| (*r, 0)).collect()),
            failing: Mutex::new(BTreeSet::new()),
            was_up: AtomicBool::new(true),
            fan_out_list: Mutex::new(Arc::new(Vec::new())),
            sizes: Snapshot::new(sizes, sizes * MAX_AGE_INTERVALS),
            fan_out: Snapshot::new(tables, tables * MAX_AGE_INTERVALS),
            stop: watch::channel(false).0,
            refresh_slow: AtomicBool::new(false),
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
                        error = %conn::describe(e),
                        "postgres query failed; its families are left out until it works"
                    );
                } else {
                    tracing::debug!(target_name = %self.cfg.name, area = area.name(), database = db.unwrap_or(&self.cfg.dbname), error = %conn::describe(e), "postgres query failed");
                }
            }
        }
    }

    async fn scrape(self: &Arc<Self>, deadline: Instant) -> (TargetOutput, TargetReport) {
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
        let mut samples = p.samples;
        samples.push(&UP, vec![], if p.up { 1.0 } else { 0.0 });
        samples.push(&SCRAPE_DURATION, vec![], duration.as_secs_f64());
        samples.push(
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
            samples.push(
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
        let output = TargetOutput {
            prefix: self.labels.clone(),
            blocks: p.blocks,
            samples,
        };
        (output, report)
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
        // Pipelined on the one connection; each result becomes its block as its rows arrive.
        let runs = queries.into_iter().map(|q| {
            let conn = &conn;
            async move {
                let q = Arc::new(q);
                let mut block = BlockBuilder::new(q.clone(), Labels::new());
                let mut list = (q.area == Area::Database).then(Vec::new);
                let result = conn
                    .for_each_row(&q.sql, |row| {
                        block.push(row);
                        if let (Some(list), Some(db)) = (list.as_mut(), self.fan_out_database(row))
                        {
                            list.push(db);
                        }
                    })
                    .await;
                (q.area, result.map(|()| (block.finish(), list)))
            }
        });
        let settings_run = async {
            let mut samples = Samples::default();
            let result = conn
                .for_each_row(&settings_query.sql, |row| {
                    if let Some((desc, value)) = settings::sample(row) {
                        samples.push(desc, vec![], value);
                    }
                })
                .await;
            result.map(|()| samples)
        };
        let (results, settings) =
            futures_util::future::join(futures_util::future::join_all(runs), settings_run).await;
        drop(conn);
        let mut fan_out = None;
        for (area, r) in results {
            match r {
                Ok((block, list)) => {
                    self.area_result(area, None, None);
                    if let Some(list) = list {
                        fan_out = Some(Arc::new(list));
                    }
                    p.blocks.push(Arc::new(block));
                }
                Err(e) => {
                    self.area_result(area, None, Some(&e));
                    p.failed_areas.insert(area.name());
                }
            }
        }
        match settings {
            Ok(samples) => {
                self.area_result(Area::Settings, None, None);
                p.samples.extend(samples);
            }
            Err(e) => {
                self.area_result(Area::Settings, None, Some(&e));
                p.failed_areas.insert(Area::Settings.name());
            }
        }
        if let Some(list) = &fan_out {
            *self
                .fan_out_list
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = list.clone();
        }

        if let Some(sizes) = self.database_sizes(deadline).await {
            p.blocks.push(sizes.value.clone());
            p.samples
                .push(&queries::database::SIZE_TIMESTAMP, vec![], sizes.unix);
        }

        match fan_out {
            Some(list) if self.cfg.tables_top_n > 0 && !list.is_empty() => {
                self.per_database_families(&list, version, deadline, p)
                    .await;
            }
            _ => {}
        }
        Ok(())
    }

    /// The database of a row of the database query, if it is one to fan out to.
    fn fan_out_database<R: queries::TextRow>(&self, row: &R) -> Option<String> {
        if row.cell("allow_conn").flatten() != Some("t")
            || row.cell("is_template").flatten() != Some("f")
        {
            return None;
        }
        let db = row.cell("datname").flatten()?;
        let all = self.cfg.databases.iter().any(|d| d == "all");
        let wanted = all || self.cfg.databases.iter().any(|d| d == db);
        (wanted && !self.cfg.exclude.iter().any(|d| d == db)).then(|| db.to_string())
    }

    /// Adds the per-database families to a scrape: gathered now when
    /// `tables_refresh_interval` is 0, otherwise from the background snapshot (what is no
    /// older than its maximum age).
    async fn per_database_families(
        self: &Arc<Self>,
        list: &Arc<Vec<String>>,
        version: u32,
        deadline: Instant,
        p: &mut Progress,
    ) {
        if self.cfg.tables_refresh_interval.0.is_zero() {
            let fan_out = self.gather_fan_out(list, version, Some(deadline)).await;
            p.failed_areas.extend(fan_out.failed.iter().copied());
            p.samples
                .push(&FANOUT_DATABASES, vec![], fan_out.databases.len() as f64);
            if !fan_out.databases.is_empty() {
                p.samples.push(&FANOUT_AGE, vec![], 0.0);
            }
            for d in fan_out.databases {
                p.blocks.extend(d.blocks);
            }
            return;
        }
        let me = self.clone();
        let stop = self.stop.subscribe();
        let snapshot = self
            .fan_out
            .read(deadline, move || {
                tokio::spawn(async move {
                    let t = me.clone();
                    me.fan_out.run(stop, || t.refresh_fan_out()).await;
                });
            })
            .await;
        let Some(snapshot) = snapshot else {
            p.samples.push(&FANOUT_DATABASES, vec![], 0.0);
            return;
        };
        let max_age = self.fan_out.max_age();
        // Only databases this scrape still found (one dropped since the refresh is gone).
        let current: std::collections::HashSet<&str> = list.iter().map(String::as_str).collect();
        let mut served = 0;
        let mut oldest = Duration::ZERO;
        for d in &snapshot.value.databases {
            let age = d.taken.elapsed();
            if age > max_age || !current.contains(d.db.as_str()) {
                continue;
            }
            served += 1;
            oldest = oldest.max(age);
            p.blocks.extend(d.blocks.iter().cloned());
        }
        p.failed_areas.extend(snapshot.value.failed.iter().copied());
        p.samples.push(&FANOUT_DATABASES, vec![], served as f64);
        if served > 0 {
            p.samples.push(&FANOUT_AGE, vec![], oldest.as_secs_f64());
        }
        p.samples.push(
            &FANOUT_REFRESH_DURATION,
            vec![],
            snapshot.value.duration.as_secs_f64(),
        );
    }

    /// One background refresh of the per-database families, for the databases the last
    /// scrape found. A database that fails keeps its previous data (served until it is
    /// too old); databases no longer in the list are dropped.
    async fn refresh_fan_out(self: &Arc<Self>) -> Option<FanOut> {
        let list = self
            .fan_out_list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let version = self.pool.server_version();
        let mut fresh = self.gather_fan_out(&list, version, None).await;
        if let Some(previous) = self.fan_out.latest() {
            for old in &previous.value.databases {
                let missing = !fresh.databases.iter().any(|d| d.db == old.db);
                if missing && list.contains(&old.db) {
                    fresh.databases.push(DatabaseData {
                        db: old.db.clone(),
                        taken: old.taken,
                        blocks: old.blocks.clone(),
                    });
                }
            }
        }
        tracing::debug!(
            target_name = %self.cfg.name,
            databases = list.len(),
            duration = ?fresh.duration,
            "per-database families refreshed"
        );
        // Data older than three intervals is dropped: say so before it happens.
        let slow = fresh.duration > self.cfg.tables_refresh_interval.0;
        if slow != self.refresh_slow.swap(slow, Ordering::Relaxed) {
            if slow {
                tracing::warn!(
                    target_name = %self.cfg.name,
                    databases = list.len(),
                    duration = ?fresh.duration,
                    interval = %self.cfg.tables_refresh_interval,
                    "refreshing the per-database families takes longer than tables_refresh_interval; raise it (or max_connections)"
                );
            } else {
                tracing::info!(target_name = %self.cfg.name, "per-database refresh fits its interval again");
            }
        }
        Some(fresh)
    }

    /// Runs the per-database statement on every database of `list`, over at most
    /// `max_connections` less the maintenance database's share at once. With a `deadline`
    /// (a scrape), every database must be done by then; without (the background), each gets
    /// `connect_timeout` plus `statement_timeout` from its start. Connections stay open for
    /// the next time only when the pool can keep one per database.
    async fn gather_fan_out(
        self: &Arc<Self>,
        list: &[String],
        version: u32,
        deadline: Option<Instant>,
    ) -> FanOut {
        let started = Instant::now();
        let statement = Arc::new(queries::per_database(version, self.cfg.tables_top_n));
        let limit = self.pool.limit();
        let keep = list.len() + MAIN_DB_CONNECTIONS <= limit;
        let mut concurrency = limit.saturating_sub(MAIN_DB_CONNECTIONS).max(1);
        if deadline.is_none() {
            // In the background nothing waits for the refresh: go gently on the server (and
            // on scrapes running meanwhile) rather than fast.
            concurrency = concurrency.min(BACKGROUND_CONCURRENCY);
        }
        let budget =
            self.cfg.connect_timeout.0 + self.cfg.statement_timeout.0 + Duration::from_secs(1);
        let mut out = FanOut::default();
        // Owned futures: the stream is polled from a spawned task (the refresher).
        let mut stream = futures_util::stream::iter(list.to_vec())
            .map(|db| {
                let deadline = deadline.unwrap_or_else(|| Instant::now() + budget);
                let (me, statement) = (self.clone(), statement.clone());
                async move { me.scrape_database(&db, &statement, keep, deadline).await }
            })
            .buffer_unordered(concurrency);
        while let Some(result) = stream.next().await {
            match result {
                Ok(data) => out.databases.push(data),
                Err(area) => {
                    out.failed.insert(area);
                }
            }
        }
        out.duration = started.elapsed();
        out
    }

    /// The per-database statement on one database; the name of what failed otherwise.
    async fn scrape_database(
        self: &Arc<Self>,
        db: &str,
        statement: &PerDatabase,
        keep: bool,
        deadline: Instant,
    ) -> Result<DatabaseData, &'static str> {
        let mut conn = match self.pool.get(db, deadline).await {
            Ok(c) => c,
            Err(e) => {
                if !matches!(e, ConnError::Backoff { .. }) {
                    self.count_error(e.reason());
                }
                tracing::debug!(target_name = %self.cfg.name, database = %db, error = %e, "fan-out connection failed");
                return Err("fan-out connection");
            }
        };
        if !keep {
            conn.close_when_done();
        }
        let extra = vec![("datname".to_string(), db.to_string())];
        let mut parts: Vec<BlockBuilder> = statement
            .parts
            .iter()
            .map(|(_, q)| BlockBuilder::new(q.clone(), extra.clone()))
            .collect();
        let mut part_column = None;
        let rows = conn.for_each_row(&statement.sql, |row| {
            let i = *part_column
                .get_or_insert_with(|| queries::TextRow::position(row, queries::PART_COLUMN));
            let tag = i.and_then(|i| queries::TextRow::at(row, i));
            if let Some(b) = statement
                .parts
                .iter()
                .position(|(t, _)| Some(*t) == tag)
                .and_then(|b| parts.get_mut(b))
            {
                b.push(row);
            }
        });
        match tokio::time::timeout_at(deadline.into(), rows).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.area_result(Area::PerDatabase, Some(db), Some(&e));
                return Err(Area::PerDatabase.name());
            }
            Err(_) => {
                // Dropping the query marked the connection: it is cancelled on the server.
                self.count_error("timeout");
                tracing::debug!(target_name = %self.cfg.name, database = %db, "per-database statement timed out");
                return Err(Area::PerDatabase.name());
            }
        };
        drop(conn);
        let taken = Instant::now();
        let blocks = parts
            .into_iter()
            .map(BlockBuilder::finish)
            .filter(|b| b.rows() > 0)
            .map(Arc::new)
            .collect();
        Ok(DatabaseData {
            db: db.to_string(),
            taken,
            blocks,
        })
    }

    /// Database sizes from their snapshot (see [`snapshot`]).
    async fn database_sizes(
        self: &Arc<Self>,
        deadline: Instant,
    ) -> Option<Arc<snapshot::Stamped<Arc<Block>>>> {
        let me = self.clone();
        let stop = self.stop.subscribe();
        self.sizes
            .read(deadline, move || {
                tokio::spawn(async move {
                    let t = me.clone();
                    me.sizes.run(stop, || t.refresh_sizes()).await;
                });
            })
            .await
    }

    async fn refresh_sizes(self: &Arc<Self>) -> Option<Arc<Block>> {
        let budget = self.cfg.connect_timeout.0 + self.cfg.statement_timeout.0;
        let deadline = Instant::now() + budget + Duration::from_secs(1);
        let result = async {
            let conn = self.pool.get(&self.cfg.dbname, deadline).await?;
            let query = queries::database_size(conn.version());
            let sql = query.sql.clone();
            let mut block = BlockBuilder::new(Arc::new(query), Labels::new());
            let rows = conn.for_each_row(&sql, |row| block.push(row)).await;
            Ok::<_, ConnError>((block, rows))
        };
        match tokio::time::timeout_at(deadline.into(), result).await {
            Ok(Ok((block, Ok(())))) => {
                self.area_result(Area::DatabaseSize, None, None);
                Some(Arc::new(block.finish()))
            }
            Ok(Ok((_, Err(e)))) => {
                self.area_result(Area::DatabaseSize, None, Some(&e));
                None
            }
            Ok(Err(e)) => {
                tracing::debug!(target_name = %self.cfg.name, error = %e, "database size refresh could not connect");
                None
            }
            Err(_) => {
                self.count_error("timeout");
                tracing::debug!(target_name = %self.cfg.name, "database size refresh timed out");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(yaml: &str) -> Arc<Target> {
        let cfg = Config::parse(yaml, "t.yml", None).expect("config");
        let global = Limiter::new(cfg.exporter.postgres.max_connections as usize);
        Arc::new(Target::new(&cfg.exporter.postgres.targets[0], global).expect("target"))
    }

    struct Row(Vec<(&'static str, &'static str)>);
    impl queries::TextRow for Row {
        fn position(&self, column: &str) -> Option<usize> {
            self.0.iter().position(|(c, _)| *c == column)
        }
        fn at(&self, index: usize) -> Option<&str> {
            self.0.get(index).map(|(_, v)| *v)
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
        let rows = [
            db("postgres", "t", "f"),
            db("app", "t", "f"),
            db("old", "t", "f"),
            db("template1", "t", "t"),
            db("template0", "f", "t"),
        ];
        let t = target(
            "exporter:\n  postgres:\n    targets:\n      - name: a\n        exclude: [old]\n",
        );
        let fan_out = |t: &Target| -> Vec<String> {
            rows.iter().filter_map(|r| t.fan_out_database(r)).collect()
        };
        assert_eq!(fan_out(&t), vec!["postgres", "app"]);
        let t = target(
            "exporter:\n  postgres:\n    targets:\n      - name: a\n        databases: [app, template1]\n",
        );
        assert_eq!(fan_out(&t), vec!["app"]);
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
        let (output, report) = t.scrape(Instant::now() + Duration::from_secs(5)).await;
        let samples = output.samples;
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
        assert!(up.labels.is_empty());
        assert_eq!(
            output.prefix,
            vec![
                ("target".to_string(), "gone".to_string()),
                ("env".to_string(), "test".to_string())
            ]
        );
        assert!(output.blocks.is_empty());
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
    let mut out = vec![
        UP,
        SCRAPE_DURATION,
        SCRAPE_ERRORS,
        OPEN_CONNECTIONS,
        GLOBAL_CONNECTIONS,
        GLOBAL_CONNECTIONS_MAX,
        GLOBAL_EVICTIONS,
        FANOUT_AGE,
        FANOUT_DATABASES,
        FANOUT_REFRESH_DURATION,
    ];
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
    out.retain(|d| seen.insert(d.exposed_name()));
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
