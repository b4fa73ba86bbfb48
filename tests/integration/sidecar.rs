//! The sidecar end to end: real Prometheus / VictoriaMetrics history, vitals sidecar /metrics.
