//! The streaming anomaly detector, shared by the live sidecar and `vitals backtest`.
