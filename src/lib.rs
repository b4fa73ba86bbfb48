//! # vitals
//!
//! PostgreSQL and infrastructure monitoring for the Prometheus ecosystem, as one binary with
//! two roles:
//!
//! - [`exporter`]: collectors behind one HTTP server that Prometheus scrapes;
//! - [`sidecar`]: reads series back through PromQL, analyses them and re-exports the results.
//!
//! The layout and conventions are described in DESIGN.md; the modules below follow it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod exporter;
pub mod fsutil;
pub mod run;
pub mod sidecar;
pub mod telemetry;
pub mod tls;
pub mod web;
