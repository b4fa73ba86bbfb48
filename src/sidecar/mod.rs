//! The sidecar role. This version serves its own self metrics, lifecycle endpoints and
//! config reloads; the analysis (baselines, anomalies, forecasts, SLOs) arrives with the
//! sidecar issues.

pub mod backtest;
pub mod detector;
pub mod http;
pub mod nab;
pub mod promql;

use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::encoding::text::encode_eof;

use crate::config::{Config, ConfigError, ConfigSource};
use crate::exporter::BoxFuture;
use crate::telemetry::Telemetry;
use crate::web::{LandingPage, MetricsRequest, Role, RoleError};

/// The sidecar: holds its config and answers its own /metrics.
pub struct Sidecar {
    source: ConfigSource,
    config: RwLock<Arc<Config>>,
    telemetry: Arc<Telemetry>,
}

impl Sidecar {
    /// Loads the config.
    pub fn new(source: ConfigSource, telemetry: Arc<Telemetry>) -> Result<Self, ConfigError> {
        let config = source.load();
        telemetry.config_loaded(config.is_ok());
        Ok(Self {
            source,
            config: RwLock::new(Arc::new(config?)),
            telemetry,
        })
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
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
            let mut out = String::new();
            self.telemetry
                .encode(&mut out)
                .and_then(|()| encode_eof(&mut out))
                .map_err(|e| RoleError::Internal(format!("encoding metrics: {e}")))?;
            Ok(out)
        })
    }

    fn reload(&self) -> Result<(), String> {
        let result = self.source.load();
        self.telemetry.config_loaded(result.is_ok());
        let config = result.map_err(|e| e.to_string())?;
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        Ok(())
    }

    fn landing(&self) -> LandingPage {
        let cfg = self.config();
        LandingPage {
            role: "sidecar".into(),
            config_source: self.source.describe(),
            collectors: vec![],
            probe_targets: vec![],
            rows: vec![],
            notes: vec![
                format!("Prometheus API: {}", cfg.sidecar.prometheus.url),
                "Analysis (baselines, anomalies, forecasts, SLOs, recommendations) is not available in this version yet.".into(),
            ],
        }
    }
}
