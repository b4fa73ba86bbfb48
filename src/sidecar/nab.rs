//! NAB v1.1 scoring of a NAB-layout folder (`vitals backtest --nab`).
