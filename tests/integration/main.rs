//! Integration tests: vitals against real servers started on loopback by tests/support.

#[path = "../support/mod.rs"]
mod support;

mod alerting;
mod backtest;
mod ecosystem;
mod exporter;
mod faults;
mod harness;
mod load;
mod logs;
mod postgres;
mod process;
mod promql;
mod recommend;
mod security;
mod sidecar;
mod slo;
mod ssh_disk;
mod web;
