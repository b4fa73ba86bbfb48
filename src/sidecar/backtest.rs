//! Offline scoring of CSV series with the live detector (`vitals backtest`).
