//! The `vitals` collector: build information and the process metrics of vitals itself
//! (`process_*`, the names every Prometheus client library uses).

use std::path::PathBuf;

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::collector::{BoxFuture, CollectError, Collected, Collector, Scope};
use super::procfs;

/// Reports vitals' own CPU, memory, file descriptors, threads and start time.
pub struct VitalsCollector {
    proc_self: PathBuf,
    proc_root: PathBuf,
}

impl VitalsCollector {
    /// A collector reading `/proc/self`.
    pub fn new() -> Self {
        Self {
            proc_self: PathBuf::from("/proc/self"),
            proc_root: PathBuf::from("/proc"),
        }
    }

    fn read(&self) -> Result<Registry, CollectError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| CollectError::Io { what, source }
        };
        let sys = procfs::SystemInfo::read(&self.proc_root).map_err(io("/proc/stat"))?;
        let stat_text =
            std::fs::read_to_string(self.proc_self.join("stat")).map_err(io("/proc/self/stat"))?;
        let stat =
            procfs::parse_stat(&stat_text).map_err(|e| CollectError::Other(e.to_string()))?;
        let limits = std::fs::read_to_string(self.proc_self.join("limits"))
            .map_err(io("/proc/self/limits"))?;
        let max_fds = procfs::parse_max_open_files(&limits)
            .map_err(|e| CollectError::Other(e.to_string()))?;
        let fds = procfs::count_fds(&self.proc_self.join("fd")).map_err(io("/proc/self/fd"))?;

        let tck = sys.clk_tck as f64;
        let mut r = Registry::default();
        r.register_with_unit(
            "process_cpu",
            "Total user and system CPU time spent by vitals",
            Unit::Seconds,
            ConstCounter::new((stat.utime + stat.stime) as f64 / tck),
        );
        r.register_with_unit(
            "process_resident_memory",
            "Resident memory size of vitals",
            Unit::Bytes,
            ConstGauge::new((stat.rss_pages * sys.page_size) as i64),
        );
        r.register_with_unit(
            "process_virtual_memory",
            "Virtual memory size of vitals",
            Unit::Bytes,
            ConstGauge::new(stat.vsize as i64),
        );
        r.register(
            "process_open_fds",
            "Number of open file descriptors of vitals",
            ConstGauge::new(fds as i64),
        );
        if let Some(max) = max_fds {
            r.register(
                "process_max_fds",
                "Soft limit on open file descriptors of vitals",
                ConstGauge::new(max as i64),
            );
        }
        r.register(
            "process_threads",
            "Number of OS threads of vitals",
            ConstGauge::new(stat.num_threads as i64),
        );
        r.register_with_unit(
            "process_start_time",
            "Start time of vitals since the Unix epoch",
            Unit::Seconds,
            ConstGauge::new(sys.boot_time as f64 + stat.starttime as f64 / tck),
        );
        Ok(r)
    }
}

impl Default for VitalsCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for VitalsCollector {
    fn name(&self) -> &'static str {
        "vitals"
    }

    fn collect<'a>(&'a self, _scope: &'a Scope) -> BoxFuture<'a, Result<Collected, CollectError>> {
        Box::pin(async move {
            Ok(Collected {
                registry: self.read()?,
                targets: Vec::new(),
            })
        })
    }
}

/// The registration entry for [`super::COLLECTORS`].
pub const SPEC: super::CollectorSpec = super::CollectorSpec {
    name: "vitals",
    help: "vitals' own process metrics",
    default_enabled: true,
    build: |_| Ok(Some(std::sync::Arc::new(VitalsCollector::new()))),
};
