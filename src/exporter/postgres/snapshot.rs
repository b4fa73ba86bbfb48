//! Values that scrapes cannot afford to compute themselves (database sizes, the per-database
//! fan-out to many databases), computed in the background and served from a snapshot.
//!
//! The refresher is driven by reads, as DESIGN.md §1 asks: the first scrape that finds the
//! snapshot missing or due starts one task, which refreshes every `interval` for as long as
//! scrapes keep reading (at least one read since the previous refresh started) and stops
//! otherwise. A snapshot older than `max_age` is never served: the scrape waits (until its
//! deadline) for a refresh under way, and otherwise goes without. Only one refresh of a
//! snapshot runs at a time, however many scrapes overlap, and it uses the target's pool, so
//! it is bound by the same connection limit as the scrapes.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// A value with the time it was computed.
#[derive(Debug)]
pub struct Stamped<T> {
    /// When the refresh that produced it ended.
    pub taken: Instant,
    /// The same, since the Unix epoch.
    pub unix: f64,
    /// The value.
    pub value: T,
}

const STOPPED: u8 = 0;
const REFRESHING: u8 = 1;
const SLEEPING: u8 = 2;

/// A background-refreshed value; see the module documentation.
#[derive(Debug)]
pub struct Snapshot<T> {
    current: watch::Sender<Option<Arc<Stamped<T>>>>,
    state: AtomicU8,
    read: AtomicBool,
    interval: Duration,
    max_age: Duration,
}

/// Now since the Unix epoch, in seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl<T: Send + Sync + 'static> Snapshot<T> {
    /// An empty snapshot refreshed every `interval` while read, served up to `max_age`.
    pub fn new(interval: Duration, max_age: Duration) -> Snapshot<T> {
        Snapshot {
            current: watch::channel(None).0,
            state: AtomicU8::new(STOPPED),
            read: AtomicBool::new(false),
            interval,
            max_age,
        }
    }

    /// The oldest age at which the snapshot is still served.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The latest value, whatever its age (for a refresh that builds on it).
    pub fn latest(&self) -> Option<Arc<Stamped<T>>> {
        self.current.borrow().clone()
    }

    /// Whether a refresher task is running (refreshing or waiting for its next turn).
    pub fn is_running(&self) -> bool {
        self.state.load(Ordering::Acquire) != STOPPED
    }

    /// The value for a scrape. Starts the refresher with `spawn` (which must run
    /// [`Snapshot::run`] in a task) when it is not running and the value is missing or due.
    /// Returns a value no older than `max_age`; when there is none, waits until `deadline`
    /// for the refresh under way, if any.
    pub async fn read(&self, deadline: Instant, spawn: impl FnOnce()) -> Option<Arc<Stamped<T>>> {
        self.read.store(true, Ordering::Release);
        let mut rx = self.current.subscribe();
        let now = rx.borrow_and_update().clone();
        let due = now
            .as_ref()
            .is_none_or(|s| s.taken.elapsed() >= self.interval);
        if due
            && self
                .state
                .compare_exchange(STOPPED, REFRESHING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            spawn();
        }
        let fresh = |s: &Arc<Stamped<T>>| s.taken.elapsed() <= self.max_age;
        if let Some(s) = now.filter(fresh) {
            return Some(s);
        }
        if self.state.load(Ordering::Acquire) != REFRESHING {
            // The refresher waits for its next turn after failing: nothing to wait for.
            return None;
        }
        match tokio::time::timeout_at(deadline.into(), rx.changed()).await {
            Ok(Ok(())) => rx.borrow_and_update().clone().filter(fresh),
            _ => None,
        }
    }

    /// The refresher: calls `refresh` now and then every `interval` while the snapshot is
    /// read, until nobody read it since the previous refresh or `stop` turns true. A refresh
    /// that returns `None` keeps the previous value (and still wakes the scrapes waiting).
    pub async fn run<F, Fut>(&self, mut stop: watch::Receiver<bool>, mut refresh: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        // The read that started this task is served by the first refresh.
        self.read.store(false, Ordering::Release);
        loop {
            self.state.store(REFRESHING, Ordering::Release);
            let started = Instant::now();
            let value = tokio::select! {
                v = refresh() => v,
                _ = stop.wait_for(|s| *s) => break,
            };
            // Between turns before the value is out, so that a read woken by it does not
            // find the refresher still "refreshing" and wait for the next turn.
            self.state.store(SLEEPING, Ordering::Release);
            match value {
                Some(value) => {
                    self.current.send_replace(Some(Arc::new(Stamped {
                        taken: Instant::now(),
                        unix: unix_now(),
                        value,
                    })));
                }
                None => self.current.send_modify(|_| {}),
            }
            tokio::select! {
                _ = tokio::time::sleep_until((started + self.interval).into()) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            if !self.read.swap(false, Ordering::AcqRel) {
                break;
            }
        }
        self.state.store(STOPPED, Ordering::Release);
        // Wake scrapes still waiting, so they do not wait for a refresh that will not come.
        self.current.send_modify(|_| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    // Real time, scaled down: refresh every 200 ms, serve up to 600 ms.
    const INTERVAL: Duration = Duration::from_millis(200);
    const MAX_AGE: Duration = Duration::from_millis(600);

    fn spawn_run(
        s: &Arc<Snapshot<usize>>,
        calls: &Arc<AtomicUsize>,
        stop: &watch::Sender<bool>,
        fail: bool,
    ) -> impl FnOnce() + use<> {
        let (s, calls, stop) = (s.clone(), calls.clone(), stop.subscribe());
        move || {
            tokio::spawn(async move {
                s.run(stop, || {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        (!fail).then_some(n)
                    }
                })
                .await
            });
        }
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(2)
    }

    async fn sleep(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    #[tokio::test]
    async fn refreshes_while_read_and_stops_when_not() {
        let s = Arc::new(Snapshot::<usize>::new(INTERVAL, MAX_AGE));
        let calls = Arc::new(AtomicUsize::new(0));
        let (stop, _) = watch::channel(false);
        // The first read waits for the first refresh.
        let v = s
            .read(deadline(), spawn_run(&s, &calls, &stop, false))
            .await;
        assert_eq!(v.map(|v| v.value), Some(1));
        assert!(s.is_running());
        // Read every 80 ms for 1 s: about one refresh per 200 ms, never a second task.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(1) {
            sleep(80).await;
            let v = s
                .read(deadline(), || panic!("a second refresher"))
                .await
                .expect("fresh value");
            assert!(v.taken.elapsed() <= MAX_AGE, "{:?}", v.taken.elapsed());
        }
        let n = calls.load(Ordering::SeqCst);
        assert!((3..=7).contains(&n), "{n} refreshes in 1 s");
        // Nobody reads: the refresher stops after at most one more refresh.
        sleep(700).await;
        assert!(!s.is_running());
        let after = calls.load(Ordering::SeqCst);
        assert!(after <= n + 1, "{after} vs {n}");
        sleep(500).await;
        assert_eq!(calls.load(Ordering::SeqCst), after, "no timer nobody reads");
    }

    #[tokio::test]
    async fn stale_values_are_dropped_not_served() {
        let s = Arc::new(Snapshot::<usize>::new(INTERVAL, MAX_AGE));
        let calls = Arc::new(AtomicUsize::new(0));
        let (stop, _) = watch::channel(false);
        let v = s
            .read(deadline(), spawn_run(&s, &calls, &stop, false))
            .await;
        assert_eq!(v.map(|v| v.value), Some(1));
        // Unread, the refresher stops; once the value is past max_age a read starts a new
        // refresher and waits for its value rather than serve the old one.
        sleep(800).await;
        assert!(!s.is_running());
        let v = s
            .read(deadline(), spawn_run(&s, &calls, &stop, false))
            .await;
        assert!(
            v.as_ref()
                .is_some_and(|v| v.value == 2 && v.taken.elapsed() < INTERVAL),
            "{v:?}"
        );
        stop.send_replace(true);
        sleep(50).await;
        assert!(!s.is_running(), "stop ends the refresher");

        // A refresher that fails keeps the old value until max_age, then none at all, and
        // a read does not wait out its deadline for a refresher between turns.
        let s = Arc::new(Snapshot::<usize>::new(INTERVAL, MAX_AGE));
        let (stop, _) = watch::channel(false);
        let v = s
            .read(deadline(), spawn_run(&s, &calls, &stop, false))
            .await;
        assert!(v.is_some());
        sleep(800).await;
        let failing = Arc::new(AtomicUsize::new(0));
        let v = s
            .read(deadline(), spawn_run(&s, &failing, &stop, true))
            .await;
        assert!(v.is_none(), "stale value served: {v:?}");
        assert_eq!(failing.load(Ordering::SeqCst), 1);
        let started = Instant::now();
        let v = s.read(deadline(), || panic!("a second refresher")).await;
        assert!(v.is_none());
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "waited for nothing"
        );
        stop.send_replace(true);
    }
}
