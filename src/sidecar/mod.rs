//! The sidecar role: an evaluation loop on its own thread reads the signals back through
//! PromQL, scores every series, keeps baselines, forecasts and health scores, and publishes
//! a snapshot that `/metrics` and the landing page show.

pub mod alertmanager;
pub mod anomaly;
pub mod backtest;
pub mod baseline;
pub mod correlate;
pub mod detector;
pub mod forecast;
pub mod health;
pub mod http;
pub mod nab;
pub mod promql;
pub mod recommend;
pub mod reexport;
pub mod scheduler;
pub mod signals;
pub mod slo;
pub mod store;

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::config::{Config, ConfigError, ConfigSource};
use crate::exporter::BoxFuture;
use crate::telemetry::Telemetry;
use crate::web::{LandingPage, MetricsRequest, Role, RoleError, TargetRow};
use alertmanager::{Delivery, DeliveryError};
use promql::{PromClient, PromError};
use scheduler::{Engine, Settings, Snapshot};

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The query API client could not be built (TLS files and the like).
    #[error("sidecar.prometheus: {0}")]
    Client(#[from] PromError),
    /// An Alertmanager client could not be built.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// The evaluation thread could not start.
    #[error("starting the evaluation thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The sidecar: holds its config, runs the evaluation loop and answers its own /metrics.
pub struct Sidecar {
    source: ConfigSource,
    config: RwLock<Arc<Config>>,
    telemetry: Arc<Telemetry>,
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
    delivery: Delivery,
    config_tx: watch::Sender<Arc<Config>>,
    stop_tx: watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The evaluation loop: a cycle at start and then every interval, until stopped. Runs on its
/// own thread and runtime so that scoring never delays a scrape of `/metrics`.
async fn run_loop(
    mut engine: Engine,
    mut config_rx: watch::Receiver<Arc<Config>>,
    mut stop_rx: watch::Receiver<bool>,
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
    delivery: Delivery,
) {
    let mut config = config_rx.borrow_and_update().clone();
    tokio::spawn(delivery.clone().run(stop_rx.clone()));
    loop {
        let started = tokio::time::Instant::now();
        let snap = tokio::select! {
            s = engine.cycle(now_ms()) => s,
            _ = stop_rx.changed() => return,
        };
        tracing::debug!(
            duration_seconds = snap.cycle_duration.as_secs_f64(),
            series = snap.series.len(),
            "evaluation cycle done"
        );
        delivery.update(
            alertmanager::alerts_from_snapshot(&snap, &config),
            snap.at_ms,
        );
        *snapshot.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(snap);
        let next = started + config.sidecar.interval.0;
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop_rx.changed() => return,
            changed = config_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let new = config_rx.borrow_and_update().clone();
                let client = if new.sidecar.prometheus != config.sidecar.prometheus {
                    match PromClient::new(&new.sidecar.prometheus) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::error!(error = %e, "new query API settings rejected; keeping the previous ones");
                            None
                        }
                    }
                } else {
                    None
                };
                engine.reconfigure(
                    Settings::from_config(&new.sidecar),
                    client,
                    signals::effective(&new.sidecar),
                );
                engine.recommender_mut().reconfigure(
                    recommend::effective(&new.sidecar),
                    new.sidecar.interval.0,
                    new.sidecar.max_findings_per_recommendation,
                );
                engine.slos_mut().reconfigure(slo::effective(&new.sidecar));
                if let Err(e) = delivery.reconfigure(&new.sidecar) {
                    tracing::error!(error = %e, "new Alertmanager settings rejected; keeping the previous ones");
                }
                config = new;
                // Wait out the rest of the interval: a reload is not a reason to query early.
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = stop_rx.changed() => return,
                }
            }
        }
    }
}

impl Sidecar {
    /// Loads the config and starts the evaluation loop.
    pub fn new(source: ConfigSource, telemetry: Arc<Telemetry>) -> Result<Self, SidecarError> {
        let config = source.load();
        telemetry.config_loaded(config.is_ok());
        let config = Arc::new(config?);
        let client = PromClient::new(&config.sidecar.prometheus)?;
        let engine = Engine::new(
            Settings::from_config(&config.sidecar),
            client,
            signals::effective(&config.sidecar),
            recommend::Recommender::from_config(&config.sidecar),
            slo::SloEvaluator::from_config(&config.sidecar),
        );
        let delivery = Delivery::new(&config.sidecar)?;
        let snapshot = Arc::new(RwLock::new(Arc::new(Snapshot::default())));
        let (config_tx, config_rx) = watch::channel(config.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let snap = snapshot.clone();
        let deliver = delivery.clone();
        // The loop itself runs on this thread (block_on); range queries are fetched and
        // parsed on two workers meanwhile.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vitals-sidecar-io")
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("vitals-sidecar".into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(run_loop(engine, config_rx, stop_rx, snap, deliver));
                });
                if std::panic::catch_unwind(run).is_err() {
                    // A defect. Serving the last snapshot forever would look healthy while
                    // nothing is evaluated: exit, so that the target shows down and a
                    // supervisor (systemd, Docker) restarts the sidecar.
                    tracing::error!("the evaluation thread panicked; exiting with status 70");
                    std::process::exit(70);
                }
            })?;
        Ok(Self {
            source,
            config: RwLock::new(config),
            telemetry,
            snapshot,
            delivery,
            config_tx,
            stop_tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The results of the last cycle.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Role for Sidecar {
    fn role_name(&self) -> &'static str {
        "sidecar"
    }

    fn metrics(&self, req: MetricsRequest) -> BoxFuture<'_, Result<String, RoleError>> {
        Box::pin(async move {
            if let Some(t) = req.target {
                return Err(RoleError::BadRequest(format!("unknown target {t:?}")));
            }
            let snap = self.snapshot();
            let mut out = String::new();
            let mut reg = Registry::default();
            alertmanager::register(&self.delivery.stats(), &mut reg);
            reexport::encode(&snap, &mut out)
                .and_then(|()| encode_registry(&mut out, &reg))
                .and_then(|()| self.telemetry.encode(&mut out))
                .and_then(|()| encode_eof(&mut out))
                .map_err(|e| RoleError::Internal(format!("encoding metrics: {e}")))?;
            Ok(out)
        })
    }

    fn reload(&self) -> Result<(), String> {
        let result = self.source.load();
        self.telemetry.config_loaded(result.is_ok());
        let config = Arc::new(result.map_err(|e| e.to_string())?);
        PromClient::new(&config.sidecar.prometheus)
            .map_err(|e| format!("sidecar.prometheus: {e}"))?;
        alertmanager::check_clients(&config.sidecar).map_err(|e| e.to_string())?;
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config.clone();
        self.config_tx.send_replace(config);
        Ok(())
    }

    fn landing(&self) -> LandingPage {
        let cfg = self.config();
        let snap = self.snapshot();
        let at =
            SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(snap.at_ms).unwrap_or(0));
        let rows = snap
            .signals
            .iter()
            .map(|s| TargetRow {
                collector: format!("signal ({})", s.domain),
                target: s.name.clone(),
                up: s.up,
                last_scrape: at,
                duration: s.duration,
                error: s.last_error.clone(),
            })
            .collect();
        let mut notes = vec![format!("Prometheus API: {}", cfg.sidecar.prometheus.url)];
        if snap.cycles == 0 {
            notes
                .push("The first evaluation cycle is still running (it loads the history).".into());
        } else {
            notes.push(format!(
                "Cycle {} took {:.3} s: {} series from {} signals.",
                snap.cycles,
                snap.cycle_duration.as_secs_f64(),
                snap.series.len(),
                snap.signals.len()
            ));
        }
        for (d, v) in &snap.health.scores {
            notes.push(format!("Health of {d}: {v:.0}/100"));
        }
        if let Some(e) = &snap.correlation {
            notes.push(format!(
                "Correlated anomalies in {} (signals {})",
                e.domains_label(),
                e.signals.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let mut active: Vec<_> = snap
            .series
            .iter()
            .filter(|s| s.latest.severity > anomaly::Severity::Ok)
            .collect();
        active.sort_by(|a, b| b.latest.score.anomaly.total_cmp(&a.latest.score.anomaly));
        for s in active.iter().take(50) {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            let link = cfg
                .sidecar
                .grafana_url
                .as_deref()
                .map_or(String::new(), |g| {
                    format!(
                        " - Grafana: {}",
                        alertmanager::grafana_link(
                            g,
                            s.latest.ts_ms,
                            s.labels.get("target").map(String::as_str)
                        )
                    )
                });
            notes.push(format!(
                "Anomaly {} in {}: {}{{{}}} = {} (expected {:.4}, z {:.1}, score {:.3}){link}",
                s.latest.severity.as_str(),
                s.domain,
                s.signal,
                labels.join(", "),
                s.latest.value,
                s.latest.score.expected,
                s.latest.score.zscore,
                s.latest.score.anomaly
            ));
        }
        notes.extend(snap.slos.statuses.iter().map(|s| s.summary()));
        notes.extend(recommend::landing_lines(&snap.recommendations, 50));
        notes.extend(alertmanager::landing_lines(
            &self.delivery,
            &cfg.sidecar,
            100,
        ));
        LandingPage {
            role: "sidecar".into(),
            config_source: self.source.describe(),
            collectors: vec![],
            probe_targets: vec![],
            rows,
            notes,
        }
    }

    fn shutdown(&self) {
        self.stop_tx.send_replace(true);
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            tracing::error!("the evaluation thread panicked");
        }
    }
}
