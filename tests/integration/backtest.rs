//! `vitals backtest`: the detector over CSV files and NAB folders.
