//! The exporter role: a registry of collectors, run concurrently for each scrape under one
//! deadline, and their output encoded with self metrics into one OpenMetrics page.

pub mod collector;
pub mod logs;
pub mod postgres;
pub mod process;
pub mod procfs;
pub mod ssh_disk;
pub mod vitals;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use crate::config::{Config, ConfigError, ConfigSource};
use crate::telemetry::Telemetry;
pub use collector::{BoxFuture, CollectError, Collected, Collector, Scope, TargetReport};

/// Builds a collector from the config; `Ok(None)` when the config gives it nothing to do.
pub type BuildFn = fn(&Config) -> Result<Option<Arc<dyn Collector>>, String>;

/// How a collector is built from the config, and whether it runs by default.
pub struct CollectorSpec {
    /// Name used in `--collector.NAME` and the `collector` label.
    pub name: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
    /// Whether it runs without `--collector.NAME`.
    pub default_enabled: bool,
    /// Builds the collector; `Ok(None)` when the config gives it nothing to do.
    pub build: BuildFn,
}

/// Every collector vitals has. Adding a collector is one line here.
pub static COLLECTORS: &[CollectorSpec] = &[
    vitals::SPEC, //
    postgres::SPEC,
    process::SPEC,
    logs::SPEC,
    ssh_disk::SPEC,
];

/// Which collectors run, after `--collector.NAME` / `--no-collector.NAME` flags.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    overrides: BTreeMap<String, bool>,
}

impl Selection {
    /// Turns a collector on or off explicitly.
    pub fn set(&mut self, name: &str, enabled: bool) {
        self.overrides.insert(name.to_string(), enabled);
    }

    /// Whether a collector runs.
    pub fn enabled(&self, spec: &CollectorSpec) -> bool {
        self.overrides
            .get(spec.name)
            .copied()
            .unwrap_or(spec.default_enabled)
    }
}

/// Why a scrape could not be answered at all.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// `/probe?target=` named no configured target.
    #[error("unknown target {0:?}")]
    UnknownTarget(String),
    /// Encoding the exposition failed.
    #[error("encoding metrics: {0}")]
    Encode(#[from] std::fmt::Error),
}

/// Why the exporter could not (re)load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A collector refused its part of the config.
    #[error("collector {collector}: {reason}")]
    Collector {
        /// The collector's name.
        collector: &'static str,
        /// Why.
        reason: String,
    },
}

struct Runtime {
    config: Arc<Config>,
    collectors: Vec<Arc<dyn Collector>>,
}

/// The last known state of a collector or target, shown on the landing page.
pub use crate::web::TargetRow as TargetState;

/// The exporter: holds the collectors built from the current config and answers scrapes.
pub struct Exporter {
    source: ConfigSource,
    selection: Selection,
    runtime: RwLock<Arc<Runtime>>,
    states: Arc<Mutex<BTreeMap<(String, String), TargetState>>>,
    flights: Arc<Flights>,
    telemetry: Arc<Telemetry>,
}

impl Exporter {
    /// Loads the config and builds the enabled collectors.
    pub fn new(
        source: ConfigSource,
        selection: Selection,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, LoadError> {
        let runtime = build_runtime(&source, &selection);
        telemetry.config_loaded(runtime.is_ok());
        Ok(Self {
            source,
            selection,
            runtime: RwLock::new(Arc::new(runtime?)),
            states: Arc::new(Mutex::new(BTreeMap::new())),
            flights: Arc::new(Flights::new()),
            telemetry,
        })
    }

    /// Stops every collector's background work (final checkpoints); used at exit.
    pub fn shutdown(&self) {
        for c in &self.current().collectors {
            c.shutdown();
        }
    }

    /// Re-reads the config; on any error the running config stays in place.
    pub fn reload(&self) -> Result<(), LoadError> {
        let result = build_runtime(&self.source, &self.selection);
        self.telemetry.config_loaded(result.is_ok());
        let runtime = result?;
        let old = std::mem::replace(
            &mut *self.runtime.write().unwrap_or_else(PoisonError::into_inner),
            Arc::new(runtime),
        );
        for c in &old.collectors {
            c.shutdown();
        }
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(())
    }

    fn current(&self) -> Arc<Runtime> {
        self.runtime
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.current().config.clone()
    }

    /// Where the config comes from.
    pub fn source(&self) -> &ConfigSource {
        &self.source
    }

    /// Names of the collectors that run.
    pub fn enabled_collectors(&self) -> Vec<&'static str> {
        self.current().collectors.iter().map(|c| c.name()).collect()
    }

    /// Last known state of every collector and target, sorted.
    pub fn states(&self) -> Vec<TargetState> {
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// How long a scrape may take: Prometheus' timeout header less the configured offset,
    /// or the configured default.
    pub fn scrape_budget(&self, header_timeout: Option<f64>) -> Duration {
        let cfg = self.config();
        let e = &cfg.exporter;
        match header_timeout {
            Some(t) if t.is_finite() && t > 0.0 => {
                let t = Duration::from_secs_f64(t.min(3600.0));
                let offset = e.scrape_timeout_offset.0;
                if t > offset * 2 { t - offset } else { t / 2 }
            }
            _ => e.scrape_timeout.0,
        }
    }

    /// Runs every enabled collector (or only the one owning `target`) concurrently and
    /// returns the OpenMetrics page. A collector that fails or misses the deadline is
    /// reported with `vitals_scrape_collector_success 0`; the others are unaffected.
    ///
    /// Scrapes that arrive while a collection for the same scope (all collectors, or one
    /// `/probe` target) is running join it instead of starting another (single-flight): the
    /// collectors run once and every waiter gets their output. A waiter whose own `budget`
    /// ends first answers with what has finished by then, the unfinished collectors reported
    /// as missing the deadline, exactly as if it had run them itself. A running collection
    /// that will be cut off before half of a new scrape's budget is not joined.
    pub async fn scrape(
        &self,
        target: Option<&str>,
        budget: Duration,
    ) -> Result<String, ScrapeError> {
        let deadline = Instant::now() + budget;
        let runtime = self.current();
        let collectors: Vec<Arc<dyn Collector>> = match target {
            None => runtime.collectors.clone(),
            Some(t) => {
                let owners: Vec<_> = runtime
                    .collectors
                    .iter()
                    .filter(|c| c.targets().iter().any(|n| n == t))
                    .cloned()
                    .collect();
                if owners.is_empty() {
                    return Err(ScrapeError::UnknownTarget(t.to_string()));
                }
                owners
            }
        };
        let flight = self.join_or_start(&runtime, target, collectors, deadline, budget);
        let mut done = flight.done.subscribe();
        let all_done = done.wait_for(|finished| *finished >= flight.names.len());
        if deadline >= flight.deadline {
            // The collection cuts every collector off at its own deadline, which comes first:
            // wait for it to report them all (as a scrape running its collectors would).
            let _ = all_done.await;
        } else {
            // This scrape must answer earlier than the collection's deadline.
            let _ =
                tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), all_done).await;
        }

        let mut out = String::with_capacity(16 * 1024);
        self.telemetry.encode(&mut out)?;
        let duration = Family::<Vec<(&'static str, String)>, Gauge<f64, AtomicU64>>::default();
        let success = Family::<Vec<(&'static str, String)>, Gauge>::default();
        {
            let slots = flight.slots.lock().unwrap_or_else(PoisonError::into_inner);
            for (name, slot) in flight.names.iter().zip(slots.iter()) {
                let labels = vec![("collector", (*name).to_string())];
                match slot {
                    Some(done) => {
                        duration
                            .get_or_create(&labels)
                            .set(done.elapsed.as_secs_f64());
                        match &done.outcome {
                            Ok(body) => {
                                success.get_or_create(&labels).set(1);
                                out.push_str(body);
                            }
                            Err(_) => {
                                success.get_or_create(&labels).set(0);
                            }
                        }
                    }
                    None => {
                        // Still running at this scrape's deadline.
                        duration
                            .get_or_create(&labels)
                            .set(flight.started.elapsed().as_secs_f64());
                        success.get_or_create(&labels).set(0);
                    }
                }
            }
        }
        let mut meta = Registry::default();
        meta.register_with_unit(
            "vitals_scrape_collector_duration",
            "Time a collector took in this scrape",
            Unit::Seconds,
            duration,
        );
        meta.register(
            "vitals_scrape_collector_success",
            "Whether a collector succeeded in this scrape",
            success,
        );
        encode_registry(&mut out, &meta)?;
        encode_registry(&mut out, &self.flights.registry)?;
        encode_eof(&mut out)?;
        Ok(out)
    }

    /// Returns the collection in flight for this scope, or starts one in its own task (so it
    /// finishes for the other waiters even when the scrape that started it goes away).
    fn join_or_start(
        &self,
        runtime: &Arc<Runtime>,
        target: Option<&str>,
        collectors: Vec<Arc<dyn Collector>>,
        deadline: Instant,
        budget: Duration,
    ) -> Arc<Flight> {
        let key = target.map(str::to_string);
        let mut running = self
            .flights
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = running.get(&key) {
            // A flight started under a config that a reload has since replaced is not joined,
            // nor one whose collectors have all finished (its task has yet to remove it): a
            // scrape that arrives after the collection ended gets a fresh one, never the
            // previous scrape's answer again. Nor one cut off much earlier than this scrape
            // may wait (a 20 ms probe must not truncate a 10 s scrape): that scrape starts
            // its own flight, which later scrapes join.
            let now = Instant::now();
            let cut_early = f.deadline.saturating_duration_since(now) * 2
                < deadline.saturating_duration_since(now);
            if Arc::ptr_eq(&f.runtime, runtime) && *f.done.borrow() < f.names.len() && !cut_early {
                self.flights.shared.inc();
                return f.clone();
            }
        }
        let (done, _) = tokio::sync::watch::channel(0usize);
        let flight = Arc::new(Flight {
            runtime: runtime.clone(),
            names: collectors.iter().map(|c| c.name()).collect(),
            started: Instant::now(),
            deadline,
            slots: Mutex::new((0..collectors.len()).map(|_| None).collect()),
            done,
        });
        running.insert(key.clone(), flight.clone());
        drop(running);
        self.flights.collections.inc();
        let scope = Arc::new(Scope {
            target: key.clone(),
            deadline,
        });
        let task_flight = flight.clone();
        let flights = self.flights.clone();
        let states = self.states.clone();
        tokio::spawn(async move {
            collect_all(&task_flight, collectors, scope, budget, &states).await;
            let mut running = flights
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if running
                .get(&key)
                .is_some_and(|f| Arc::ptr_eq(f, &task_flight))
            {
                running.remove(&key);
            }
        });
        flight
    }
}

/// One collection shared by every scrape that arrived while it ran.
struct Flight {
    /// The collectors' config generation, so reloads are not joined across.
    runtime: Arc<Runtime>,
    /// Collector names, in the order of `slots`.
    names: Vec<&'static str>,
    started: Instant,
    /// When the collectors are cut off.
    deadline: Instant,
    /// Each collector's outcome once it finished (or was cut off at the deadline).
    slots: Mutex<Vec<Option<CollectorDone>>>,
    /// How many slots are filled.
    done: tokio::sync::watch::Sender<usize>,
}

/// A finished collector: its encoded families, or why it failed.
struct CollectorDone {
    elapsed: Duration,
    outcome: Result<String, String>,
}

/// The single-flight table and its self metrics, shared with collection tasks.
struct Flights {
    running: Mutex<std::collections::HashMap<Option<String>, Arc<Flight>>>,
    registry: Registry,
    collections: Counter,
    shared: Counter,
}

impl Flights {
    fn new() -> Self {
        let collections = Counter::default();
        let shared = Counter::default();
        let mut registry = Registry::default();
        registry.register(
            "vitals_scrape_collections",
            "Collections run (all collectors of a /metrics scrape, or a /probe target's owner)",
            collections.clone(),
        );
        registry.register(
            "vitals_scrape_shared",
            "Scrapes answered from a collection already in flight instead of starting their own",
            shared.clone(),
        );
        Self {
            running: Mutex::new(std::collections::HashMap::new()),
            registry,
            collections,
            shared,
        }
    }
}

/// Runs the collectors of one flight concurrently, each cut off at the deadline, publishing
/// every outcome and the landing page's state rows as each collector finishes.
async fn collect_all(
    flight: &Flight,
    collectors: Vec<Arc<dyn Collector>>,
    scope: Arc<Scope>,
    budget: Duration,
    states: &Mutex<BTreeMap<(String, String), TargetState>>,
) {
    let mut set = tokio::task::JoinSet::new();
    let mut index_of = std::collections::HashMap::new();
    for (index, c) in collectors.iter().cloned().enumerate() {
        let scope = scope.clone();
        let handle = set.spawn(async move {
            let start = Instant::now();
            let result = tokio::time::timeout(scope.remaining(), c.collect(&scope)).await;
            let result = match result {
                Ok(r) => r,
                Err(_) => Err(CollectError::Other(format!(
                    "deadline of {:.3}s exceeded",
                    budget.as_secs_f64()
                ))),
            };
            (index, start.elapsed(), result)
        });
        index_of.insert(handle.id(), index);
    }
    let now = SystemTime::now();
    while let Some(joined) = set.join_next_with_id().await {
        let (index, elapsed, result) = match joined {
            Ok((_, r)) => r,
            Err(e) => {
                tracing::error!(error = %e, "collector task panicked");
                let Some(&i) = index_of.get(&e.id()) else {
                    continue;
                };
                (
                    i,
                    flight.started.elapsed(),
                    Err(CollectError::Other("collector task failed".into())),
                )
            }
        };
        let name = flight.names.get(index).copied().unwrap_or("unknown");
        let mut rows = Vec::new();
        let outcome = match result {
            Ok(collected) => {
                let mut body = String::new();
                match encode_registry(&mut body, &collected.registry) {
                    Ok(()) => {
                        rows.push(TargetState {
                            collector: name.to_string(),
                            target: String::new(),
                            up: true,
                            last_scrape: now,
                            duration: elapsed,
                            error: None,
                        });
                        rows.extend(collected.targets.into_iter().map(|t| TargetState {
                            collector: name.to_string(),
                            target: t.target,
                            up: t.up,
                            last_scrape: now,
                            duration: t.duration,
                            error: t.error,
                        }));
                        Ok(body)
                    }
                    Err(e) => Err(format!("encoding metrics: {e}")),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = &outcome {
            tracing::warn!(collector = name, error = %e, "collector failed");
            rows.push(TargetState {
                collector: name.to_string(),
                target: String::new(),
                up: false,
                last_scrape: now,
                duration: elapsed,
                error: Some(e.clone()),
            });
        }
        {
            let mut table = states.lock().unwrap_or_else(PoisonError::into_inner);
            for s in rows {
                table.insert((s.collector.clone(), s.target.clone()), s);
            }
        }
        if let Some(slot) = flight
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(index)
        {
            *slot = Some(CollectorDone { elapsed, outcome });
        }
        flight.done.send_modify(|n| *n += 1);
    }
}

fn build_runtime(source: &ConfigSource, selection: &Selection) -> Result<Runtime, LoadError> {
    let config = source.load()?;
    let mut collectors = Vec::new();
    for spec in COLLECTORS.iter().filter(|s| selection.enabled(s)) {
        match (spec.build)(&config) {
            Ok(Some(c)) => collectors.push(c),
            Ok(None) => {}
            Err(reason) => {
                return Err(LoadError::Collector {
                    collector: spec.name,
                    reason,
                });
            }
        }
    }
    warn_unimplemented(&config);
    Ok(Runtime {
        config: Arc::new(config),
        collectors,
    })
}

/// Config sections whose collectors arrive in later versions are accepted (so configs can be
/// written ahead) but said to do nothing, rather than silently ignored.
fn warn_unimplemented(config: &Config) {
    let e = &config.exporter;
    let pending = [
        ("exporter.postgres", !e.postgres.targets.is_empty()),
        (
            "exporter.process",
            !e.process.groups.is_empty() || !e.process.watch.is_empty(),
        ),
    ];
    for (section, used) in pending {
        if used && COLLECTORS.iter().all(|s| !section.ends_with(s.name)) {
            tracing::warn!(
                section,
                "this version has no collector for this section yet; it is validated but not collected"
            );
        }
    }
}

impl crate::web::Role for Exporter {
    fn role_name(&self) -> &'static str {
        "exporter"
    }

    fn metrics(
        &self,
        req: crate::web::MetricsRequest,
    ) -> BoxFuture<'_, Result<String, crate::web::RoleError>> {
        Box::pin(async move {
            let budget = self.scrape_budget(req.scrape_timeout);
            self.scrape(req.target.as_deref(), budget)
                .await
                .map_err(|e| match e {
                    ScrapeError::UnknownTarget(_) => {
                        crate::web::RoleError::BadRequest(e.to_string())
                    }
                    ScrapeError::Encode(_) => crate::web::RoleError::Internal(e.to_string()),
                })
        })
    }

    fn reload(&self) -> Result<(), String> {
        Exporter::reload(self).map_err(|e| e.to_string())
    }

    fn shutdown(&self) {
        Exporter::shutdown(self);
    }

    fn landing(&self) -> crate::web::LandingPage {
        let runtime = self.current();
        crate::web::LandingPage {
            role: "exporter".into(),
            config_source: self.source.describe(),
            collectors: runtime
                .collectors
                .iter()
                .map(|c| c.name().to_string())
                .collect(),
            probe_targets: runtime
                .collectors
                .iter()
                .flat_map(|c| c.targets())
                .collect(),
            rows: self.states(),
            notes: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A collector that takes longer than any scrape budget in these tests.
    struct Stuck;

    impl Collector for Stuck {
        fn name(&self) -> &'static str {
            "stuck"
        }
        fn targets(&self) -> Vec<String> {
            vec!["t1".into()]
        }
        fn collect<'a>(&'a self, _s: &'a Scope) -> BoxFuture<'a, Result<Collected, CollectError>> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(Collected::default())
            })
        }
    }

    fn exporter_with(extra: Arc<dyn Collector>) -> Exporter {
        let telemetry = Arc::new(Telemetry::new("exporter"));
        let e = Exporter::new(ConfigSource::Embedded, Selection::default(), telemetry)
            .expect("embedded config loads");
        {
            let mut rt = e.runtime.write().unwrap_or_else(PoisonError::into_inner);
            let mut collectors = rt.collectors.clone();
            collectors.push(extra);
            *rt = Arc::new(Runtime {
                config: rt.config.clone(),
                collectors,
            });
        }
        e
    }

    #[tokio::test]
    async fn a_stuck_collector_does_not_block_the_others() {
        let e = exporter_with(Arc::new(Stuck));
        let started = Instant::now();
        let page = e
            .scrape(None, Duration::from_millis(300))
            .await
            .expect("scrape answers");
        // Far below the stuck collector's 30 s: the deadline cut it off.
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            page.contains("vitals_scrape_collector_success{collector=\"stuck\"} 0"),
            "{page}"
        );
        assert!(
            page.contains("vitals_scrape_collector_success{collector=\"vitals\"} 1"),
            "{page}"
        );
        assert!(page.contains("process_cpu_seconds_total"), "{page}");
        assert!(page.ends_with("# EOF\n"));
        let states = e.states();
        let stuck = states
            .iter()
            .find(|s| s.collector == "stuck")
            .expect("state row");
        assert!(!stuck.up);
        assert!(stuck.error.as_deref().unwrap_or("").contains("deadline"));
    }

    #[tokio::test]
    async fn probe_routes_to_the_owner_and_rejects_unknown_targets() {
        let e = exporter_with(Arc::new(Stuck));
        let page = e
            .scrape(Some("t1"), Duration::from_millis(100))
            .await
            .expect("known target");
        assert!(page.contains("collector=\"stuck\""));
        assert!(
            !page.contains("collector=\"vitals\""),
            "probe runs only the owner"
        );
        assert!(matches!(
            e.scrape(Some("nope"), Duration::from_millis(100)).await,
            Err(ScrapeError::UnknownTarget(_))
        ));
    }

    /// A collector that counts its runs and takes a fixed time.
    struct Slow {
        runs: std::sync::atomic::AtomicUsize,
        takes: Duration,
    }

    impl Slow {
        fn taking(takes: Duration) -> Slow {
            Slow {
                runs: Default::default(),
                takes,
            }
        }
    }

    impl Collector for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }
        fn targets(&self) -> Vec<String> {
            vec!["s1".into()]
        }
        fn collect<'a>(&'a self, _s: &'a Scope) -> BoxFuture<'a, Result<Collected, CollectError>> {
            Box::pin(async move {
                self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(self.takes).await;
                let mut registry = Registry::default();
                let g = Gauge::<i64>::default();
                g.set(42);
                registry.register("slow_answer", "A slow collector's value", g);
                Ok(Collected {
                    registry,
                    targets: vec![],
                })
            })
        }
    }

    fn counter_value(page: &str, name: &str) -> Option<f64> {
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_one_collection() {
        // Long enough that all ten tasks start while it runs, even on a loaded machine.
        let slow = Arc::new(Slow::taking(Duration::from_millis(1000)));
        let e = Arc::new(exporter_with(slow.clone()));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let e = e.clone();
            tasks.push(tokio::spawn(async move {
                e.scrape(None, Duration::from_secs(5)).await
            }));
        }
        let mut pages = Vec::new();
        for t in tasks {
            pages.push(t.await.expect("task").expect("scrape answers"));
        }
        assert_eq!(
            slow.runs.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "ten overlapping scrapes ran the collector once"
        );
        for p in &pages {
            assert!(p.contains("slow_answer 42"), "{p}");
            assert!(
                p.contains("vitals_scrape_collector_success{collector=\"slow\"} 1"),
                "{p}"
            );
            assert!(p.ends_with("# EOF\n"));
        }
        let last = e
            .scrape(None, Duration::from_secs(5))
            .await
            .expect("scrape answers");
        // The eleventh scrape came after the first collection ended: it runs its own.
        assert_eq!(slow.runs.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(
            counter_value(&last, "vitals_scrape_collections_total"),
            Some(2.0),
            "{last}"
        );
        assert_eq!(
            counter_value(&last, "vitals_scrape_shared_total"),
            Some(9.0),
            "{last}"
        );
        // /probe targets have their own flights: a probe does not join a /metrics collection.
        let (a, b) = tokio::join!(
            e.scrape(Some("s1"), Duration::from_secs(5)),
            e.scrape(Some("s1"), Duration::from_secs(5))
        );
        assert!(a.expect("probe").contains("slow_answer 42"));
        assert!(b.expect("probe").contains("slow_answer 42"));
        assert_eq!(slow.runs.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scrape_after_a_finished_collection_runs_its_own() {
        // A collector that answers at once: the next scrape can arrive before the finished
        // flight's task has removed it from the table, and must not join it.
        let quick = Arc::new(Slow::taking(Duration::ZERO));
        let e = Arc::new(exporter_with(quick.clone()));
        for i in 1..=300 {
            let page = e
                .scrape(None, Duration::from_secs(5))
                .await
                .expect("scrape answers");
            assert_eq!(
                quick.runs.load(std::sync::atomic::Ordering::SeqCst),
                i,
                "sequential scrape {i} ran the collector\n{page}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_with_a_shorter_deadline_answers_on_time() {
        let slow = Arc::new(Slow::taking(Duration::from_millis(800)));
        let e = Arc::new(exporter_with(slow.clone()));
        let leader = {
            let e = e.clone();
            tokio::spawn(async move { e.scrape(None, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let short = e
            .scrape(None, Duration::from_millis(200))
            .await
            .expect("scrape answers");
        assert!(
            started.elapsed() < Duration::from_millis(600),
            "the waiter kept its own deadline: {:?}",
            started.elapsed()
        );
        assert!(
            short.contains("vitals_scrape_collector_success{collector=\"slow\"} 0"),
            "{short}"
        );
        assert!(!short.contains("slow_answer"), "{short}");
        // The fast collectors had finished: the waiter got them.
        assert!(
            short.contains("vitals_scrape_collector_success{collector=\"vitals\"} 1"),
            "{short}"
        );
        let full = leader.await.expect("task").expect("scrape answers");
        assert!(full.contains("slow_answer 42"), "{full}");
        assert_eq!(slow.runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_collection_is_not_joined_by_a_long_scrape() {
        let slow = Arc::new(Slow::taking(Duration::from_millis(400)));
        let e = Arc::new(exporter_with(slow.clone()));
        let short = {
            let e = e.clone();
            tokio::spawn(async move { e.scrape(None, Duration::from_millis(100)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Arrives while the 100 ms collection runs; joining it would cut this scrape at 100 ms.
        let long = e
            .scrape(None, Duration::from_secs(5))
            .await
            .expect("scrape answers");
        assert!(long.contains("slow_answer 42"), "{long}");
        let short = short.await.expect("task").expect("scrape answers");
        assert!(!short.contains("slow_answer"), "{short}");
        assert_eq!(slow.runs.load(std::sync::atomic::Ordering::SeqCst), 2);
        // A scrape with a similar budget arriving during the long collection shares it.
        let (a, b) = tokio::join!(e.scrape(None, Duration::from_secs(5)), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            e.scrape(None, Duration::from_secs(5)).await
        });
        assert!(a.expect("scrape").contains("slow_answer 42"));
        assert!(b.expect("scrape").contains("slow_answer 42"));
        assert_eq!(slow.runs.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_collection_finishes_for_waiters_when_its_starter_goes_away() {
        let slow = Arc::new(Slow::taking(Duration::from_millis(300)));
        let e = Arc::new(exporter_with(slow.clone()));
        let starter = {
            let e = e.clone();
            tokio::spawn(async move { e.scrape(None, Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        starter.abort();
        let page = e
            .scrape(None, Duration::from_secs(5))
            .await
            .expect("scrape answers");
        assert!(page.contains("slow_answer 42"), "{page}");
        assert_eq!(slow.runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn budget_follows_the_prometheus_header() {
        let telemetry = Arc::new(Telemetry::new("exporter"));
        let e = Exporter::new(ConfigSource::Embedded, Selection::default(), telemetry)
            .expect("embedded config loads");
        assert_eq!(e.scrape_budget(None), Duration::from_secs(10));
        assert_eq!(e.scrape_budget(Some(5.0)), Duration::from_millis(4500));
        assert_eq!(e.scrape_budget(Some(0.6)), Duration::from_millis(300));
        assert_eq!(e.scrape_budget(Some(f64::NAN)), Duration::from_secs(10));
    }
}
