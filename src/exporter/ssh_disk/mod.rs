//! The `ssh_disk` collector: disk usage of remote hosts, read with `df` over SSH.

pub mod client;
pub mod df;
pub mod known_hosts;
