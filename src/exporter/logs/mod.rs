//! The `logs` collector: metrics derived from log files and journald.

pub mod fingerprint;
pub mod parsers;
pub mod security;
pub mod tail;
