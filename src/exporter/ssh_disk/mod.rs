//! The `ssh_disk` collector: disk usage of remote hosts, read with `df` over SSH, exported
//! under node_exporter's filesystem names (`node_filesystem_*` with `device`, `fstype`,
//! `mountpoint`, plus `target`).
//!
//! SSH is slow and may hang, so scrapes never wait on it: a background refresher per target
//! runs [`df::REMOTE_COMMAND`] every `interval` (one refresh in flight per target, at most
//! `concurrency` over all targets) and stores the result; a scrape encodes the stored results.
//! Data older than the target's `max_age` is dropped rather than shown as current.
//!
//! The refreshers run on a runtime of their own, on one thread at a lower CPU priority
//! ([`REFRESH_NICE`]), so that SSH handshakes and parsing never hold a worker thread of the
//! runtime that answers scrapes, and lose to it when the CPU is short.

pub mod client;
pub mod df;
pub mod known_hosts;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::Semaphore;

use super::collector::{BoxFuture, CollectError, Collected, Collector, Scope, TargetReport};
use crate::config::{Config, SshTarget};
use client::{Endpoint, Failure, Reason};
use df::{Exclude, Filesystem};
use known_hosts::Policy;

type Labels = Vec<(&'static str, String)>;

/// The nice value of the refresher thread (0 is normal, 19 the lowest priority).
pub const REFRESH_NICE: i32 = 10;

/// The last successful refresh of a target.
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    wall: SystemTime,
    filesystems: Arc<Vec<Filesystem>>,
    unparsed_lines: usize,
}

/// The last refresh, successful or not.
#[derive(Debug, Clone)]
struct Attempt {
    duration: Duration,
    failure: Option<Failure>,
}

#[derive(Debug, Default)]
struct State {
    snapshot: Option<Snapshot>,
    last: Option<Attempt>,
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
    state: Mutex<State>,
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
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// One refresh: fetch, then store the result.
    async fn refresh(&self) {
        let started = Instant::now();
        // Filtering happens before the lock, which scrapes take too.
        let result = self.fetch().await.map(|mut out| {
            out.filesystems.retain(|f| !self.exclude.excludes(f));
            out
        });
        let duration = started.elapsed();
        let mut state = self.state();
        match result {
            Ok(out) => {
                if state.last.as_ref().is_some_and(|a| a.failure.is_some()) {
                    tracing::info!(target = %self.name, "ssh_disk target answers again");
                }
                if out.blocks_exit.unwrap_or(0) != 0 || out.unparsed_lines > 0 {
                    tracing::debug!(
                        target = %self.name,
                        df_exit = ?out.blocks_exit,
                        unparsed_lines = out.unparsed_lines,
                        "df output was partial; kept what it listed"
                    );
                }
                state.snapshot = Some(Snapshot {
                    at: Instant::now(),
                    wall: SystemTime::now(),
                    filesystems: Arc::new(out.filesystems),
                    unparsed_lines: out.unparsed_lines,
                });
                state.last = Some(Attempt {
                    duration,
                    failure: None,
                });
            }
            Err(failure) => {
                // Warn when a target goes down or fails differently; repeats go to debug.
                let repeated = state
                    .last
                    .as_ref()
                    .and_then(|a| a.failure.as_ref())
                    .is_some_and(|f| f.reason == failure.reason);
                if repeated {
                    tracing::debug!(target = %self.name, reason = %failure.reason, error = %failure.message, "ssh_disk refresh failed again");
                } else {
                    tracing::warn!(target = %self.name, reason = %failure.reason, error = %failure.message, "ssh_disk refresh failed");
                }
                if let Some(i) = Reason::ALL.iter().position(|r| *r == failure.reason)
                    && let Some(n) = state.failures.get_mut(i)
                {
                    *n += 1;
                }
                state.last = Some(Attempt {
                    duration,
                    failure: Some(failure),
                });
            }
        }
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

    /// Encodes the stored results of the targets `scope` wants. Never waits on SSH.
    fn snapshot(&self, scope: &Scope) -> Collected {
        let up = Family::<Labels, Gauge>::default();
        let duration = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let last_success = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let failures = Family::<Labels, Counter>::default();
        let unparsed = Family::<Labels, Gauge>::default();
        let size = Family::<Labels, Gauge>::default();
        let free = Family::<Labels, Gauge>::default();
        let avail = Family::<Labels, Gauge>::default();
        let files = Family::<Labels, Gauge>::default();
        let files_free = Family::<Labels, Gauge>::default();
        let mut reports = Vec::new();
        let now = Instant::now();
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for t in self.targets.iter().filter(|t| scope.wants(&t.name)) {
            let (snapshot, last, counts) = {
                let s = t.state();
                (s.snapshot.clone(), s.last.clone(), s.failures)
            };
            let target = vec![("target", t.name.clone())];
            let ok = last.as_ref().is_some_and(|a| a.failure.is_none());
            up.get_or_create(&target).set(i64::from(ok));
            for (reason, n) in Reason::ALL.iter().zip(counts) {
                let mut labels = target.clone();
                labels.push(("reason", reason.as_str().to_string()));
                failures.get_or_create(&labels).inc_by(n);
            }
            if let Some(a) = &last {
                duration
                    .get_or_create(&target)
                    .set(a.duration.as_secs_f64());
            }
            reports.push(TargetReport {
                target: t.name.clone(),
                up: ok,
                duration: last.as_ref().map_or(Duration::ZERO, |a| a.duration),
                error: match &last {
                    None => Some("waiting for the first refresh".into()),
                    Some(a) => a.failure.as_ref().map(ToString::to_string),
                },
            });
            let Some(snap) = snapshot else { continue };
            last_success.get_or_create(&target).set(
                snap.wall
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            );
            if now.saturating_duration_since(snap.at) > t.max_age {
                continue;
            }
            unparsed
                .get_or_create(&target)
                .set(int(snap.unparsed_lines as u64));
            for fs in snap.filesystems.iter() {
                let labels = vec![
                    ("target", t.name.clone()),
                    ("device", fs.device.clone()),
                    ("fstype", fs.fstype.clone()),
                    ("mountpoint", fs.mountpoint.clone()),
                ];
                size.get_or_create(&labels).set(int(fs.size_bytes));
                free.get_or_create(&labels).set(int(fs.free_bytes));
                avail.get_or_create(&labels).set(int(fs.avail_bytes));
                if let (Some(total), Some(free_inodes)) = (fs.files, fs.files_free) {
                    files.get_or_create(&labels).set(int(total));
                    files_free.get_or_create(&labels).set(int(free_inodes));
                }
            }
        }
        let mut r = Registry::default();
        r.register(
            "ssh_target_up",
            "Whether the last refresh of the target over SSH succeeded",
            up,
        );
        r.register_with_unit(
            "ssh_target_refresh_duration",
            "Time the last refresh of the target took",
            Unit::Seconds,
            duration,
        );
        r.register_with_unit(
            "ssh_target_last_success_timestamp",
            "When the target was last refreshed successfully",
            Unit::Seconds,
            last_success,
        );
        r.register(
            "ssh_target_refresh_failures",
            "Failed refreshes of the target by reason: connect, timeout, auth, hostkey, command, parse",
            failures,
        );
        r.register(
            "ssh_target_df_unparsed_lines",
            "Lines of the last df output that could not be read",
            unparsed,
        );
        r.register_with_unit(
            "node_filesystem_size",
            "Filesystem size in bytes",
            Unit::Bytes,
            size,
        );
        r.register_with_unit(
            "node_filesystem_free",
            "Filesystem free space in bytes",
            Unit::Bytes,
            free,
        );
        r.register_with_unit(
            "node_filesystem_avail",
            "Filesystem space available to non-root users in bytes",
            Unit::Bytes,
            avail,
        );
        r.register(
            "node_filesystem_files",
            "Filesystem total file nodes",
            files,
        );
        r.register(
            "node_filesystem_files_free",
            "Filesystem total free file nodes",
            files_free,
        );
        Collected {
            registry: r,
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
