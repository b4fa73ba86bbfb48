//! The PromQL client against real Prometheus and VictoriaMetrics.
