//! Self-monitoring shared by both roles: build info, HTTP requests, config reloads.
//!
//! These series live as long as the process, unlike collector output, which is built per
//! scrape.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// The version printed by `--version` and exported in `vitals_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision vitals was built from, or `unknown` outside a checkout.
pub const REVISION: &str = env!("VITALS_GIT_REVISION");

type Labels = Vec<(&'static str, String)>;

/// Long-lived self metrics of one vitals process.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    http_requests: Family<Labels, Counter>,
    http_duration: Family<Labels, Histogram>,
    reload_ok: Gauge,
    reload_time: Gauge<f64, AtomicU64>,
}

impl Telemetry {
    /// Creates the families; `role` is `exporter` or `sidecar`.
    pub fn new(role: &str) -> Self {
        let mut registry = Registry::default();
        let build: Family<Labels, Gauge> = Family::default();
        build
            .get_or_create(&vec![
                ("version", VERSION.to_string()),
                ("revision", REVISION.to_string()),
                ("role", role.to_string()),
            ])
            .set(1);
        registry.register(
            "vitals_build_info",
            "A metric with a constant '1' value labelled by version, revision and role",
            build,
        );
        let http_requests = Family::<Labels, Counter>::default();
        registry.register(
            "vitals_http_requests",
            "HTTP requests served, by handler and status code",
            http_requests.clone(),
        );
        let http_duration = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0])
        });
        registry.register_with_unit(
            "vitals_http_request_duration",
            "Time to answer HTTP requests, by handler",
            Unit::Seconds,
            http_duration.clone(),
        );
        let reload_ok = Gauge::default();
        registry.register(
            "vitals_config_last_reload_successful",
            "Whether the last configuration load succeeded (1) or failed (0)",
            reload_ok.clone(),
        );
        let reload_time = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "vitals_config_last_reload_success_timestamp",
            "Time of the last successful configuration load, since the Unix epoch",
            Unit::Seconds,
            reload_time.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            reload_ok,
            reload_time,
        }
    }

    /// Counts one answered HTTP request.
    pub fn observe_request(&self, handler: &str, code: u16, elapsed: Duration) {
        self.http_requests
            .get_or_create(&vec![
                ("handler", handler.to_string()),
                ("code", code.to_string()),
            ])
            .inc();
        self.http_duration
            .get_or_create(&vec![("handler", handler.to_string())])
            .observe(elapsed.as_secs_f64());
    }

    /// Records the outcome of a config load.
    pub fn config_loaded(&self, ok: bool) {
        self.reload_ok.set(i64::from(ok));
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.reload_time.set(now);
        }
    }

    /// Appends the self metrics in OpenMetrics text (without `# EOF`).
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        encode_registry(out, &self.registry)
    }
}
