//! Client of the Prometheus HTTP query API (Prometheus, Thanos, Mimir, VictoriaMetrics).
