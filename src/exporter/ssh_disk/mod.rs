//! The `ssh_disk` collector: disk usage of remote hosts, read with `df` over SSH, exported
//! under node_exporter's filesystem names (`node_filesystem_*` with `device`, `fstype`,
//! `mountpoint`, plus `target`).
//!
//! SSH is slow and may hang, so scrapes never wait on it: a background refresher per target
//! runs [`df::REMOTE_COMMAND`] every `interval` (one refresh in flight per target, at most
//! `concurrency` over all targets) and publishes the result as an immutable snapshot behind
//! an `Arc`; a scrape clones the `Arc`s (the only moment it takes a lock) and encodes the
//! snapshots directly. Data older than the target's `max_age` is dropped rather than shown
//! as current.
//!
//! The refreshers run on a runtime of their own, on one thread at a lower CPU priority
//! ([`REFRESH_NICE`]), so that SSH handshakes and parsing never hold a worker thread of the
//! runtime that answers scrapes, and lose to it when the CPU is short.

pub mod client;
pub mod df;
pub mod known_hosts;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::Semaphore;

use super::collector::{BoxFuture, CollectError, Collected, Collector, Scope, TargetReport};
use crate::config::{Config, SshTarget};
use client::{Endpoint, Failure, Reason};
use df::{Exclude, Filesystem, Mount};
use known_hosts::Policy;

/// The nice value of the refresher thread (0 is normal, 19 the lowest priority).
pub const REFRESH_NICE: i32 = 10;

/// The last successful refresh of a target.
#[derive(Debug)]
struct Snapshot {
    at: Instant,
    wall: SystemTime,
    filesystems: Vec<Filesystem>,
    /// Mounts `df` could not read (`device_error` 1).
    unreadable: Vec<Mount>,
    unparsed_lines: usize,
}

/// The last refresh, successful or not.
#[derive(Debug)]
struct Attempt {
    duration: Duration,
    failure: Option<Failure>,
}

/// What a target's refresher publishes. Immutable once stored: a refresh builds the next
/// one and swaps the `Arc`, so a scrape holds the lock only to clone that `Arc` and never
/// copies filesystems or waits for a refresh to finish its bookkeeping.
#[derive(Debug, Default, Clone)]
struct State {
    snapshot: Option<Arc<Snapshot>>,
    last: Option<Arc<Attempt>>,
    failures: [u64; Reason::ALL.len()],
}

/// One target: its connection settings and the results its refresher stores.
#[derive(Debug)]
struct Target {
    name: String,
    endpoint: Endpoint,
    interval: Duration,
    max_age: Duration,
    exclude: Arc<Exclude>,
    state: Mutex<Arc<State>>,
}

impl Target {
    fn new(t: &SshTarget, exclude: Arc<Exclude>) -> Result<Self, String> {
        let auth = client::load_auth(t)?;
        Ok(Self {
            name: t.name.clone(),
            endpoint: Endpoint {
                host: t.host.clone(),
                port: t.port.0,
                user: t.user.clone(),
                auth,
                policy: Policy {
                    host: t.host.clone(),
                    port: t.port.0,
                    known_hosts: t.known_hosts.clone(),
                    fingerprint: t.host_key_fingerprint.clone(),
                    trust_on_first_use: t.trust_on_first_use,
                },
                connect_timeout: t.connect_timeout.0,
                command_timeout: t.command_timeout.0,
            },
            interval: t.interval.0,
            max_age: t.effective_max_age(),
            exclude,
            state: Mutex::new(Arc::default()),
        })
    }

    /// The published state: one `Arc` clone under the lock.
    fn state(&self) -> Arc<State> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs the remote command once and reads its output.
    async fn fetch(&self) -> Result<df::DfOutput, Failure> {
        let out = client::run(&self.endpoint, df::REMOTE_COMMAND).await?;
        let stderr = out.stderr.lines().next().unwrap_or("").trim().to_string();
        let with_stderr = |msg: String| {
            if stderr.is_empty() {
                msg
            } else {
                format!("{msg}: {stderr}")
            }
        };
        match df::parse(&out.stdout) {
            Ok(parsed) => Ok(parsed),
            Err(df::DfError::Failed(code)) => Err(Failure::new(
                Reason::Command,
                with_stderr(format!("df exited with status {code} and listed nothing")),
            )),
            Err(e @ df::DfError::NoTable { .. }) => match out.exit_status {
                Some(code) if code != 0 => Err(Failure::new(
                    Reason::Command,
                    with_stderr(format!("the command exited with status {code}")),
                )),
                _ => Err(Failure::new(Reason::Parse, with_stderr(e.to_string()))),
            },
        }
    }

    /// One refresh: fetch, then publish the result.
    async fn refresh(&self) {
        let started = Instant::now();
        // Filtering and building the snapshot happen before the lock, which scrapes take.
        let result = self.fetch().await.map(|mut out| {
            out.filesystems.retain(|f| !self.exclude.excludes(f));
            out.unreadable
                .retain(|m| !self.exclude.excludes_mount(&m.mountpoint, &m.fstype));
            out
        });
        let duration = started.elapsed();
        let mut next = State::clone(&self.state());
        let previous_failure = next.last.as_ref().and_then(|a| a.failure.as_ref());
        match result {
            Ok(out) => {
                if previous_failure.is_some() {
                    tracing::info!(target = %self.name, "ssh_disk target answers again");
                }
                if out.blocks_exit.unwrap_or(0) != 0 || out.unparsed_lines > 0 {
                    tracing::debug!(
                        target = %self.name,
                        df_exit = ?out.blocks_exit,
                        unparsed_lines = out.unparsed_lines,
                        unreadable = out.unreadable.len(),
                        "df output was partial; kept what it listed"
                    );
                }
                next.snapshot = Some(Arc::new(Snapshot {
                    at: Instant::now(),
                    wall: SystemTime::now(),
                    filesystems: out.filesystems,
                    unreadable: out.unreadable,
                    unparsed_lines: out.unparsed_lines,
                }));
                next.last = Some(Arc::new(Attempt {
                    duration,
                    failure: None,
                }));
            }
            Err(failure) => {
                // Warn when a target goes down or fails differently; repeats go to debug.
                if previous_failure.is_some_and(|f| f.reason == failure.reason) {
                    tracing::debug!(target = %self.name, reason = %failure.reason, error = %failure.message, "ssh_disk refresh failed again");
                } else {
                    tracing::warn!(target = %self.name, reason = %failure.reason, error = %failure.message, "ssh_disk refresh failed");
                }
                if let Some(i) = Reason::ALL.iter().position(|r| *r == failure.reason)
                    && let Some(n) = next.failures.get_mut(i)
                {
                    *n += 1;
                }
                next.last = Some(Arc::new(Attempt {
                    duration,
                    failure: Some(failure),
                }));
            }
        }
        // Only this target's refresher writes its state, so nothing changed since the read.
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
    }
}

/// Refreshes one target every `interval` for as long as the collector lives.
async fn refresher(target: Arc<Target>, limit: Arc<Semaphore>) {
    let mut ticker = tokio::time::interval(target.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Ok(_permit) = limit.acquire().await else {
            return;
        };
        target.refresh().await;
    }
}

/// Disk usage of remote hosts over SSH, refreshed in the background.
pub struct SshDiskCollector {
    targets: Vec<Arc<Target>>,
    /// The refreshers' runtime; shut down (without waiting) when the collector goes.
    runtime: Option<tokio::runtime::Runtime>,
}

/// A one-thread runtime whose thread runs at [`REFRESH_NICE`].
fn refresh_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .thread_name("vitals-ssh")
        .on_thread_start(|| {
            // On Linux a thread id names one thread of the process.
            let tid = rustix::thread::gettid();
            if let Err(e) = rustix::process::setpriority_process(Some(tid), REFRESH_NICE) {
                tracing::debug!(error = %e, "could not lower the SSH refresher's priority");
            }
        })
        .enable_all()
        .build()
        .map_err(|e| format!("starting the SSH refresher runtime: {e}"))
}

/// One target as one scrape sees it.
#[derive(Debug)]
struct TargetView {
    name: String,
    state: Arc<State>,
    /// How old the snapshot is at the scrape, if there is one.
    age: Option<Duration>,
    /// Whether the snapshot is young enough to be served.
    fresh: bool,
}

impl TargetView {
    fn up(&self) -> bool {
        self.state
            .last
            .as_ref()
            .is_some_and(|a| a.failure.is_none())
    }

    /// The snapshot, when it may be served.
    fn current(&self) -> Option<&Snapshot> {
        self.state.snapshot.as_deref().filter(|_| self.fresh)
    }
}

/// The published states of the targets one scrape wants, encoded straight from the
/// snapshots: no metric objects and no label copies are built per scrape.
#[derive(Debug)]
struct ScrapeView {
    targets: Vec<TargetView>,
}

/// Writes one family, or nothing when it has no sample.
fn family<S: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    samples: impl Iterator<Item = (S, M)>,
) -> std::fmt::Result {
    let mut samples = samples.peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The label set of one filesystem series, node_exporter's names plus `target`.
fn fs_labels<'a>(
    target: &'a str,
    device: &'a str,
    fstype: &'a str,
    mountpoint: &'a str,
) -> [(&'static str, &'a str); 4] {
    [
        ("target", target),
        ("device", device),
        ("fstype", fstype),
        ("mountpoint", mountpoint),
    ]
}

impl ScrapeView {
    /// `(target, device, fstype, mountpoint)` of each served filesystem with `value`'s figure.
    fn filesystems<'a, V: 'a>(
        &'a self,
        value: impl Fn(&'a Filesystem) -> Option<V> + Clone + 'a,
    ) -> impl Iterator<Item = ([(&'static str, &'a str); 4], V)> + 'a {
        self.targets.iter().flat_map(move |t| {
            let name = t.name.as_str();
            let value = value.clone();
            t.current()
                .map(|s| s.filesystems.as_slice())
                .unwrap_or_default()
                .iter()
                .filter_map(move |fs| {
                    value(fs).map(|v| (fs_labels(name, &fs.device, &fs.fstype, &fs.mountpoint), v))
                })
        })
    }

    /// The mounts `df` could not read, with their read-only flag.
    fn unreadable(&self) -> impl Iterator<Item = ([(&'static str, &str); 4], &Mount)> {
        self.targets.iter().flat_map(|t| {
            let name = t.name.as_str();
            t.current()
                .map(|s| s.unreadable.as_slice())
                .unwrap_or_default()
                .iter()
                .map(move |m| (fs_labels(name, &m.device, &m.fstype, &m.mountpoint), m))
        })
    }

    fn per_target<'a, V: 'a>(
        &'a self,
        value: impl Fn(&'a TargetView) -> Option<V> + 'a,
    ) -> impl Iterator<Item = ([(&'static str, &'a str); 1], V)> + 'a {
        self.targets
            .iter()
            .filter_map(move |t| value(t).map(|v| ([("target", t.name.as_str())], v)))
    }
}

/// A `node_filesystem_*` family: name, help, unit and the figure it shows.
type FsGauge<'u> = (
    &'static str,
    &'static str,
    Option<&'u Unit>,
    fn(&Filesystem) -> Option<u64>,
);

/// Seconds since the Unix epoch.
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl prometheus_client::collector::Collector for ScrapeView {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let seconds = Some(&Unit::Seconds);
        let bytes = Some(&Unit::Bytes);
        family(
            &mut e,
            "ssh_target_up",
            "Whether the last refresh of the target over SSH succeeded",
            None,
            Gauge,
            self.per_target(|t| Some(ConstGauge::new(i64::from(t.up())))),
        )?;
        family(
            &mut e,
            "ssh_target_duration",
            "Time the last refresh of the target took (connect, authenticate, run df)",
            seconds,
            Gauge,
            self.per_target(|t| {
                let a = t.state.last.as_ref()?;
                Some(ConstGauge::new(a.duration.as_secs_f64()))
            }),
        )?;
        family(
            &mut e,
            "ssh_target_failures",
            "Failed refreshes of the target by reason: connect, timeout, auth, hostkey, command, parse",
            None,
            Counter,
            self.targets.iter().flat_map(|t| {
                Reason::ALL.iter().zip(t.state.failures).map(|(r, n)| {
                    (
                        [("target", t.name.as_str()), ("reason", r.as_str())],
                        ConstCounter::new(n),
                    )
                })
            }),
        )?;
        family(
            &mut e,
            "ssh_target_last_success_timestamp",
            "When the target was last refreshed successfully",
            seconds,
            Gauge,
            self.per_target(|t| {
                let s = t.state.snapshot.as_ref()?;
                Some(ConstGauge::new(unix_seconds(s.wall)))
            }),
        )?;
        family(
            &mut e,
            "ssh_target_cache_age",
            "Age of the target's last successful refresh; its filesystem series are dropped past max_age",
            seconds,
            Gauge,
            self.per_target(|t| Some(ConstGauge::new(t.age?.as_secs_f64()))),
        )?;
        family(
            &mut e,
            "ssh_target_df_unparsed_lines",
            "Lines of the last df output that could not be read",
            None,
            Gauge,
            self.per_target(|t| {
                let n = t.current()?.unparsed_lines;
                Some(ConstGauge::new(u64::try_from(n).unwrap_or(u64::MAX)))
            }),
        )?;
        let fs_gauges: [FsGauge<'_>; 5] = [
            (
                "node_filesystem_size",
                "Filesystem size in bytes",
                bytes,
                |f| Some(f.size_bytes),
            ),
            (
                "node_filesystem_free",
                "Filesystem free space in bytes",
                bytes,
                |f| Some(f.free_bytes),
            ),
            (
                "node_filesystem_avail",
                "Filesystem space available to non-root users in bytes",
                bytes,
                |f| Some(f.avail_bytes),
            ),
            (
                "node_filesystem_files",
                "Filesystem total file nodes",
                None,
                |f| f.files.filter(|_| f.files_free.is_some()),
            ),
            (
                "node_filesystem_files_free",
                "Filesystem total free file nodes",
                None,
                |f| f.files_free.filter(|_| f.files.is_some()),
            ),
        ];
        for (name, help, unit, value) in fs_gauges {
            family(
                &mut e,
                name,
                help,
                unit,
                Gauge,
                self.filesystems(move |f| value(f).map(ConstGauge::new)),
            )?;
        }
        family(
            &mut e,
            "node_filesystem_readonly",
            "Filesystem read-only status",
            None,
            Gauge,
            self.filesystems(|f| f.readonly.map(|ro| ConstGauge::new(i64::from(ro))))
                .chain(
                    self.unreadable()
                        .map(|(l, m)| (l, ConstGauge::new(i64::from(m.readonly)))),
                ),
        )?;
        family(
            &mut e,
            "node_filesystem_device_error",
            "Whether an error occurred while getting statistics for the given device",
            None,
            Gauge,
            self.filesystems(|_| Some(ConstGauge::new(0_i64)))
                .chain(self.unreadable().map(|(l, _)| (l, ConstGauge::new(1_i64)))),
        )?;
        Ok(())
    }
}

impl SshDiskCollector {
    /// Builds the collector and starts one refresher per target on its own runtime;
    /// `Ok(None)` when no target is configured. Keys and passwords are read here, so a
    /// wrong passphrase stops the (re)load with the target's name.
    pub fn from_config(config: &Config) -> Result<Option<Self>, String> {
        let cfg = &config.exporter.ssh_disk;
        if cfg.targets.is_empty() {
            return Ok(None);
        }
        let exclude = Arc::new(Exclude::new(
            &cfg.mount_points_exclude,
            &cfg.fs_types_exclude,
        )?);
        let targets = cfg
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Target::new(t, exclude.clone())
                    .map(Arc::new)
                    .map_err(|e| format!("exporter.ssh_disk.targets[{i}] ({}): {e}", t.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let limit = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
        let runtime = refresh_runtime()?;
        for t in &targets {
            runtime.spawn(refresher(t.clone(), limit.clone()));
        }
        Ok(Some(Self {
            targets,
            runtime: Some(runtime),
        }))
    }

    fn build(config: &Config) -> Result<Option<Arc<dyn Collector>>, String> {
        Ok(Self::from_config(config)?.map(|c| Arc::new(c) as Arc<dyn Collector>))
    }

    /// The stored results of the targets `scope` wants, ready to encode. Never waits on SSH.
    fn snapshot(&self, scope: &Scope) -> Collected {
        let now = Instant::now();
        let targets: Vec<TargetView> = self
            .targets
            .iter()
            .filter(|t| scope.wants(&t.name))
            .map(|t| {
                let state = t.state();
                let age = state
                    .snapshot
                    .as_ref()
                    .map(|s| now.saturating_duration_since(s.at));
                TargetView {
                    name: t.name.clone(),
                    fresh: age.is_some_and(|a| a <= t.max_age),
                    age,
                    state,
                }
            })
            .collect();
        let reports = targets
            .iter()
            .map(|t| {
                let last = t.state.last.as_deref();
                TargetReport {
                    target: t.name.clone(),
                    up: t.up(),
                    duration: last.map_or(Duration::ZERO, |a| a.duration),
                    error: match last {
                        None => Some("waiting for the first refresh".into()),
                        Some(a) => a.failure.as_ref().map(ToString::to_string),
                    },
                }
            })
            .collect();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ScrapeView { targets }));
        Collected {
            registry,
            targets: reports,
        }
    }
}

impl Drop for SshDiskCollector {
    fn drop(&mut self) {
        // Cancels the refreshers and their connections; allowed inside async code, where
        // the last reference may be dropped after a reload.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Collector for SshDiskCollector {
    fn name(&self) -> &'static str {
        "ssh_disk"
    }

    fn targets(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.name.clone()).collect()
    }

    fn collect<'a>(&'a self, scope: &'a Scope) -> BoxFuture<'a, Result<Collected, CollectError>> {
        Box::pin(async move { Ok(self.snapshot(scope)) })
    }
}

/// The registration entry for [`super::COLLECTORS`].
pub const SPEC: super::CollectorSpec = super::CollectorSpec {
    name: "ssh_disk",
    help: "disk usage of remote hosts read with df over SSH (node_exporter filesystem names)",
    default_enabled: true,
    build: SshDiskCollector::build,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_forced_command_is_the_one_vitals_runs() {
        let doc = include_str!("../../../docs/ssh_disk.md");
        assert!(doc.contains(df::REMOTE_COMMAND), "plain command");
        let escaped = df::REMOTE_COMMAND.replace('"', "\\\"");
        assert!(
            doc.contains(&format!("restrict,command=\"{escaped}\" ssh-ed25519")),
            "authorized_keys line"
        );
    }
}
