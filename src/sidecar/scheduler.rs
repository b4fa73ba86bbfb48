//! The evaluation loop: each cycle queries the new grid points of every signal and again the
//! last `query_overlap` (one range query per signal, so queries grow with signals, not
//! series), merges them into the histories by timestamp, scores them (the provisional ones
//! again from the settled detector state), updates baselines and forecasts, and publishes an
//! immutable [`Snapshot`] that `/metrics` encodes. A signal's history is loaded when it starts,
//! in chunks of a day's points and then of about `CHUNK_POINTS` points: the part older than
//! `history_full_resolution` at `history_coarse_step` (one point an hour instead of twelve by
//! default), the rest at `resolution`. The first cycle asks only the newest day at
//! `resolution` (everything before it coarse, about an eighth of the points of a full load);
//! the following cycles fill in the rest of the full-resolution part, newest first, within a
//! budget of points a cycle shared by all signals, and once a signal's part is complete its
//! detectors are warmed up again on the whole history, so that they end as if everything had
//! been loaded at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::anomaly::{RAISE_POINTS, Severity, Tracker};
use super::baseline::{self, Stats};
use super::correlate::{Correlator, Event};
use super::detector::{Detector, DetectorConfig, Score};
use super::forecast::{self, Fit};
use super::health::{Health, HealthBuilder, Observation};
use super::promql::{InstantData, Labels, PromClient, RangeSeries};
use super::recommend::{Recommender, Report};
use super::slo::{SloEvaluator, SloReport};
use super::store::History;
use crate::config::{Direction, SidecarConfig, Signal};

const DAY_MS: i64 = 86_400_000;
/// Points (series x steps) a history chunk asks for once the signal's series count is
/// known; the first chunks hold a day's points a series (a day at `resolution`, 12 days at a
/// 1 h coarse step). Bounds the memory of an answer (about 16 bytes a point parsed, 20-25 as
/// JSON, two chunks at a time) while a signal loads its history in a few queries: every
/// query costs the server an index search and a pass over the series' blocks (about 0.1 s
/// of VictoriaMetrics CPU for 1,000 series, measured), and both sides a round trip.
const CHUNK_POINTS: i64 = 600_000;
/// Signals refreshed at once. Each has up to three range queries in flight while it loads
/// its history (one scored, [`AHEAD`] fetched), so at most six queries at a time reach the
/// server: VictoriaMetrics queues those beyond its default concurrency (4 on a 2-core host)
/// for a moment, and it is a small share of Prometheus' 20.
const CONCURRENT_QUERIES: usize = 2;
/// History chunks fetched ahead of the one being scored. Two keep the server busy while the
/// sidecar scores (with one, the next query went out only once the previous answer was
/// taken, and server and sidecar mostly took turns); each costs a chunk of memory.
const AHEAD: usize = 2;
/// Weeks of the same hour a seasonal baseline needs.
const SEASONAL_MIN_WEEKS: usize = 2;
/// The newest stretch the first load asks at `resolution` (at least the forecast window):
/// the live points, the forecast and the detector's recent warm-up. The rest of the
/// full-resolution part is filled in by the following cycles.
const FIRST_FULL_MS: i64 = DAY_MS;

/// The timing and size settings of a cycle, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Evaluation interval.
    pub interval: Duration,
    /// Grid step.
    pub resolution_ms: i64,
    /// History kept and loaded.
    pub history_ms: i64,
    /// The newest part of the history loaded at `resolution_ms`.
    pub full_resolution_ms: i64,
    /// Step at which the older part is loaded.
    pub coarse_step_ms: i64,
    /// Baselines end this long before the newest point.
    pub baseline_offset_ms: i64,
    /// Each cycle queries again at least this stretch before its newest grid point.
    pub query_overlap_ms: i64,
    /// Points before a series may raise an anomaly.
    pub min_samples: u64,
    /// Series kept per signal.
    pub max_series: usize,
    /// Forecast fit window.
    pub forecast_window_ms: i64,
    /// Forecast quality bar.
    pub min_r_squared: f64,
    /// Longest time to threshold reported, seconds.
    pub horizon_s: f64,
}

impl Settings {
    /// Takes the sidecar config's values.
    pub fn from_config(c: &SidecarConfig) -> Settings {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Settings {
            interval: c.interval.0,
            resolution_ms: ms(c.resolution.0).max(1),
            history_ms: ms(c.history.0),
            full_resolution_ms: ms(c.history_full_resolution.0),
            coarse_step_ms: ms(c.history_coarse_step.0),
            baseline_offset_ms: ms(c.baseline_offset.0),
            query_overlap_ms: ms(c.query_overlap.0),
            min_samples: u64::from(c.min_samples),
            max_series: c.max_series_per_signal as usize,
            forecast_window_ms: ms(c.forecast.window.0),
            min_r_squared: c.forecast.min_r_squared,
            horizon_s: c.forecast.horizon.0.as_secs_f64(),
        }
    }

    /// The step of the older history, when it is loaded coarser than `resolution`: a
    /// multiple of it (the config checks that; a setting that is not one loads everything
    /// at full resolution).
    fn coarse_ms(&self) -> Option<i64> {
        let (res, coarse) = (self.resolution_ms, self.coarse_step_ms);
        (coarse > res && coarse % res == 0 && self.full_resolution_ms < self.history_ms)
            .then_some(coarse)
    }

    /// Where a history loaded up to `end` becomes full resolution: `full_resolution_ms`
    /// before it, rounded down to a whole coarse step (so each coarse point stands for one
    /// whole step: one hour of the week by default). `i64::MIN` without a coarse part.
    fn full_from(&self, end: i64) -> i64 {
        match self.coarse_ms() {
            Some(c) => (end - self.full_resolution_ms).div_euclid(c) * c,
            None => i64::MIN,
        }
    }

    /// Where the first load of a history up to `end` switches to full resolution: the newest
    /// [`FIRST_FULL_MS`] (or forecast window, if longer) rounded down to a whole coarse step,
    /// never before [`Settings::full_from`]. `i64::MIN` without a coarse part.
    fn first_full_from(&self, end: i64) -> i64 {
        match self.coarse_ms() {
            Some(c) => {
                let span = FIRST_FULL_MS.max(self.forecast_window_ms);
                ((end - span).div_euclid(c) * c).max(self.full_from(end))
            }
            None => i64::MIN,
        }
    }

    /// The stretch before a cycle's newest grid point that it queries again: the overlap
    /// rounded up to whole steps, at least one step.
    fn overlap_ms(&self) -> i64 {
        let res = self.resolution_ms;
        (self.query_overlap_ms.max(1) + res - 1).div_euclid(res) * res
    }

    /// Series whose newest point is older than this are not exported any more.
    fn fresh_ms(&self) -> i64 {
        3 * self.resolution_ms + i64::try_from(self.interval.as_millis()).unwrap_or(0)
    }

    /// Series silent for longer than this are forgotten.
    fn forget_ms(&self) -> i64 {
        (3 * self.resolution_ms)
            .max(self.baseline_offset_ms)
            .max(3_600_000)
    }
}

/// The newest evaluated point of a series.
#[derive(Debug, Clone, Copy)]
pub struct Latest {
    /// Its timestamp.
    pub ts_ms: i64,
    /// Its value.
    pub value: f64,
    /// What the detector made of it.
    pub score: Score,
    /// Severity in force after it.
    pub severity: Severity,
    /// Whether anomalies are muted (too little traffic or history).
    pub muted: bool,
}

/// A series' detector and severity state after the points fed to it so far.
#[derive(Clone)]
struct Eval {
    detector: Detector,
    tracker: Tracker,
    /// Timestamp of the last point fed (`i64::MIN` before the first).
    until: i64,
    /// What the last point fed came to.
    last: Option<Latest>,
}

/// How a cycle evaluates a series' points.
#[derive(Clone, Copy)]
struct Judge {
    /// Points from here on count as live (raise and clear severities); older ones only
    /// teach the detector.
    live_from: i64,
    /// Whether the signal's traffic guard mutes the series.
    low_traffic: bool,
    /// Points the detector needs before the series may raise anything.
    min_samples: u64,
}

impl Eval {
    fn new(direction: Direction) -> Eval {
        // The detector's other tunables keep the values NAB was measured with.
        #[allow(clippy::needless_update)]
        let detector = Detector::new(DetectorConfig {
            direction,
            ..DetectorConfig::default()
        });
        Eval {
            detector,
            tracker: Tracker::default(),
            until: i64::MIN,
            last: None,
        }
    }

    /// Feeds the history's points after the last one fed, up to `to_ms`.
    fn feed(&mut self, history: &History, to_ms: i64, judge: Judge) {
        if to_ms <= self.until {
            return;
        }
        for (ts, v) in history.range(self.until.saturating_add(1), to_ms) {
            self.point(ts, v, judge);
        }
        self.until = to_ms;
    }

    fn point(&mut self, ts: i64, v: f64, judge: Judge) {
        let live = ts >= judge.live_from;
        if live && judge.low_traffic {
            // Ratios over a handful of events are noise: neither learned nor judged.
            self.tracker.observe(0.0, true);
            self.last = Some(Latest {
                ts_ms: ts,
                value: v,
                score: Score::default(),
                severity: Severity::Ok,
                muted: true,
            });
            return;
        }
        let score = self.detector.update(ts, v);
        let (severity, muted) = if live {
            let muted = self.detector.samples() < judge.min_samples;
            (self.tracker.observe(score.anomaly, muted), muted)
        } else {
            (self.tracker.severity(), false)
        };
        self.last = Some(Latest {
            ts_ms: ts,
            value: v,
            score,
            severity,
            muted,
        });
    }
}

struct SeriesState {
    /// The evaluation of the settled points: those older than the cycle's overlap, which
    /// no later cycle asks for again. The newer (provisional) points are evaluated from a
    /// copy of it every cycle, so a point the server corrects or delivers late is scored as
    /// if it had been right in the first place.
    settled: Eval,
    history: History,
    last: Option<Latest>,
    baselines: Vec<(&'static str, Stats)>,
    forecast: Option<Fit>,
    dirty: bool,
}

/// What a signal's last refresh did.
#[derive(Debug, Clone, Default)]
pub struct SignalStats {
    /// Signal name.
    pub name: String,
    /// Its domain.
    pub domain: String,
    /// Series tracked.
    pub series: usize,
    /// Series refused because of `max_series_per_signal`.
    pub dropped_total: u64,
    /// Failed queries.
    pub errors_total: u64,
    /// Warnings returned by the query API.
    pub warnings_total: u64,
    /// Whether the last refresh succeeded.
    pub up: bool,
    /// The last error, if the last refresh failed.
    pub last_error: Option<String>,
    /// How long the last refresh took.
    pub duration: Duration,
    /// The stretch of the full-resolution history still held coarse, to be filled in by
    /// the next cycles (ms).
    pub backfill_pending_ms: i64,
}

struct SignalState {
    def: Signal,
    loaded_until: Option<i64>,
    /// History before this is kept at the coarse step (`i64::MIN`: none); set by the
    /// first load.
    full_from: i64,
    /// History before this is held at the coarse step for now: from the first load's
    /// [`Settings::first_full_from`], moved back to `full_from` by [`SignalState::backfill`].
    coarse_until: i64,
    /// Points from here on are live: set by the first load to its newest few points.
    live_from: i64,
    series: HashMap<Labels, SeriesState>,
    stats: SignalStats,
}

/// One series as exported.
#[derive(Debug, Clone)]
pub struct SeriesOut {
    /// Signal name.
    pub signal: Arc<str>,
    /// Domain.
    pub domain: Arc<str>,
    /// Which way is worse.
    pub direction: Direction,
    /// The source series' labels (without `__name__`).
    pub labels: Labels,
    /// Newest point and its evaluation.
    pub latest: Latest,
    /// Baselines by window name.
    pub baselines: Vec<(&'static str, Stats)>,
    /// Trend fit, if enough points.
    pub forecast: Option<Fit>,
    /// Seconds until the signal's threshold, when the fit is good enough and heads there.
    pub time_to_threshold: Option<f64>,
}

/// Everything `/metrics` and the landing page show, from one cycle.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// When the cycle ran (ms), 0 before the first.
    pub at_ms: i64,
    /// Fresh series.
    pub series: Vec<SeriesOut>,
    /// Health by domain.
    pub health: Health,
    /// The correlated event in force.
    pub correlation: Option<Event>,
    /// Correlated events so far.
    pub correlated_events_total: u64,
    /// Per-signal refresh results.
    pub signals: Vec<SignalStats>,
    /// Cycles run.
    pub cycles: u64,
    /// Duration of the last cycle.
    pub cycle_duration: Duration,
    /// Queries that succeeded / failed.
    pub queries_ok: u64,
    /// Queries that failed.
    pub queries_failed: u64,
    /// HTTP requests made (retries included).
    pub http_requests: u64,
    /// Bytes held by series histories.
    pub history_bytes: usize,
    /// Recommendations found this cycle (active and recently resolved).
    pub recommendations: Report,
    /// SLO budgets and burn rates of this cycle.
    pub slos: SloReport,
}

/// The sidecar's analysis state.
pub struct Engine {
    settings: Settings,
    client: PromClient,
    signals: Vec<SignalState>,
    correlator: Correlator,
    recommender: Recommender,
    slos: SloEvaluator,
    cycles: u64,
    queries_ok: u64,
    queries_failed: u64,
}

impl Engine {
    /// An engine evaluating `signals` through `client`.
    pub fn new(
        settings: Settings,
        client: PromClient,
        signals: Vec<Signal>,
        recommender: Recommender,
        slos: SloEvaluator,
    ) -> Engine {
        Engine {
            settings,
            client,
            signals: signals.into_iter().map(SignalState::new).collect(),
            correlator: Correlator::default(),
            recommender,
            slos,
            cycles: 0,
            queries_ok: 0,
            queries_failed: 0,
        }
    }

    /// Applies a new configuration: unchanged signals keep their state; changed settings
    /// reset everything (the grid changed).
    pub fn reconfigure(
        &mut self,
        settings: Settings,
        client: Option<PromClient>,
        signals: Vec<Signal>,
    ) {
        if settings != self.settings {
            self.signals.clear();
        }
        if let Some(c) = client {
            self.client = c;
            self.signals.clear();
        }
        self.settings = settings;
        let mut old: HashMap<String, SignalState> = std::mem::take(&mut self.signals)
            .into_iter()
            .map(|s| (s.def.name.clone(), s))
            .collect();
        self.signals = signals
            .into_iter()
            .map(|def| match old.remove(&def.name) {
                Some(s) if s.def == def => s,
                _ => SignalState::new(def),
            })
            .collect();
    }

    /// Runs one cycle at wall-clock time `now_ms`.
    pub async fn cycle(&mut self, now_ms: i64) -> Snapshot {
        let started = Instant::now();
        let res = self.settings.resolution_ms;
        let end = now_ms.div_euclid(res) * res;
        let states = std::mem::take(&mut self.signals);
        let client = &self.client;
        let settings = &self.settings;
        // Points the signals may fill in this cycle, together (see `SignalState::backfill`).
        let backfill = AtomicI64::new(CHUNK_POINTS);
        let backfill = &backfill;
        let done: Vec<(SignalState, u64, u64)> = futures_util::stream::iter(states)
            .map(|mut st| async move {
                let (ok, failed) = st.refresh(client, settings, end, backfill).await;
                (st, ok, failed)
            })
            .buffered(CONCURRENT_QUERIES)
            .collect()
            .await;
        for (st, ok, failed) in done {
            self.queries_ok += ok;
            self.queries_failed += failed;
            self.signals.push(st);
        }
        let recommendations = self.recommender.evaluate(&self.client, now_ms).await;
        let slos = self.slos.evaluate(&self.client, now_ms).await;
        self.queries_ok += slos.queries_ok;
        self.queries_failed += slos.queries_failed;
        self.cycles += 1;
        self.snapshot(now_ms, end, started.elapsed(), recommendations, slos)
    }

    /// The SLO evaluator, for reconfiguration.
    pub fn slos_mut(&mut self) -> &mut SloEvaluator {
        &mut self.slos
    }

    /// The recommendation rules, for reconfiguration.
    pub fn recommender_mut(&mut self) -> &mut Recommender {
        &mut self.recommender
    }

    fn snapshot(
        &mut self,
        now_ms: i64,
        end: i64,
        took: Duration,
        recommendations: Report,
        slos: SloReport,
    ) -> Snapshot {
        let s = &self.settings;
        let mut series = Vec::new();
        let mut health = HealthBuilder::default();
        let mut anomalous = Vec::new();
        let mut history_bytes = 0;
        for st in &self.signals {
            let signal: Arc<str> = Arc::from(st.def.name.as_str());
            let domain: Arc<str> = Arc::from(st.def.domain.as_str());
            for (labels, ss) in &st.series {
                history_bytes += ss.history.heap_bytes();
                let Some(latest) = ss.last else { continue };
                // A series that stopped returning points is gone; but while the signal's
                // query fails, the last state is kept (as Prometheus keeps alert states when
                // rule evaluation fails), so an outage of the query API does not resolve
                // every anomaly and raise it again afterwards.
                if st.stats.up && latest.ts_ms < end - s.fresh_ms() {
                    continue;
                }
                health.component(&st.def.domain, &st.def.name);
                if !latest.muted {
                    health.observe(
                        &st.def.domain,
                        &st.def.name,
                        Observation {
                            severity: latest.severity,
                            bad_zscore: bad_direction(st.def.direction, latest.score.zscore),
                        },
                    );
                }
                if latest.severity > Severity::Ok {
                    anomalous.push((st.def.domain.clone(), st.def.name.clone()));
                }
                let time_to_threshold = match (ss.forecast, st.def.threshold) {
                    (Some(f), Some(t)) if f.r_squared >= s.min_r_squared => f
                        .time_to(t, st.def.direction != Direction::LowerIsWorse)
                        .filter(|secs| *secs <= s.horizon_s),
                    _ => None,
                };
                series.push(SeriesOut {
                    signal: signal.clone(),
                    domain: domain.clone(),
                    direction: st.def.direction,
                    labels: labels.clone(),
                    latest,
                    baselines: ss.baselines.clone(),
                    forecast: ss.forecast,
                    time_to_threshold,
                });
            }
        }
        slos.observe_health(&mut health);
        let correlation = self.correlator.observe(&anomalous, now_ms).cloned();
        Snapshot {
            at_ms: now_ms,
            series,
            health: health.build(),
            correlation,
            correlated_events_total: self.correlator.events_total(),
            signals: self.signals.iter().map(|s| s.stats.clone()).collect(),
            cycles: self.cycles,
            cycle_duration: took,
            queries_ok: self.queries_ok,
            queries_failed: self.queries_failed,
            http_requests: self.client.requests(),
            history_bytes,
            recommendations,
            slos,
        }
    }
}

/// The deviation in sigmas in the direction that is bad for this signal.
pub fn bad_direction(direction: Direction, z: f64) -> f64 {
    match direction {
        Direction::HigherIsWorse => z,
        Direction::LowerIsWorse => -z,
        Direction::Both => z.abs(),
    }
}

impl SignalState {
    fn new(def: Signal) -> SignalState {
        SignalState {
            stats: SignalStats {
                name: def.name.clone(),
                domain: def.domain.clone(),
                ..SignalStats::default()
            },
            def,
            loaded_until: None,
            full_from: i64::MIN,
            coarse_until: i64::MIN,
            live_from: i64::MIN,
            series: HashMap::new(),
        }
    }

    /// Queries the points after `loaded_until` up to `end`, and again the last
    /// [`Settings::overlap_ms`] before `end`, merges them into the histories by timestamp
    /// and evaluates them. Returns the numbers of successful and failed queries.
    ///
    /// The overlap is there because a query API's newest points are not final:
    /// VictoriaMetrics hides the points of the last `-search.latencyOffset` (30 s by default,
    /// never under 1 s) from range queries or repeats the previous value in their place, and
    /// remote-write senders deliver late. A point once answered (or absent) is therefore
    /// asked again until it is older than the overlap; only then is it settled.
    async fn refresh(
        &mut self,
        client: &PromClient,
        s: &Settings,
        end: i64,
        backfill: &AtomicI64,
    ) -> (u64, u64) {
        let res = s.resolution_ms;
        let overlap = s.overlap_ms();
        let first_load = self.loaded_until.is_none();
        let start = match self.loaded_until {
            None => {
                // On the first load only the newest points count as live, so that a
                // restart during an anomaly raises it again after the usual debounce, and
                // old history raises nothing.
                self.live_from = end - res * i64::from(RAISE_POINTS - 1);
                self.full_from = s.full_from(end);
                self.coarse_until = s.first_full_from(end);
                end - s.history_ms
            }
            Some(t) => (t + res).min(end - overlap),
        };
        if start > end {
            return (0, 0);
        }
        // Points up to here are never asked again: they are evaluated for good.
        let settled_to = end - overlap - res;
        let started = Instant::now();
        let (mut ok, mut failed) = (0, 0);
        let traffic = match &self.def.min_traffic {
            None => None,
            Some(m) => match client.query(&m.expr, Some(end)).await {
                Ok(r) => {
                    ok += 1;
                    self.stats.warnings_total += r.warnings.len() as u64;
                    Some(traffic_series(r.data))
                }
                Err(e) => {
                    failed += 1;
                    self.fail(&e.to_string(), started);
                    return (ok, failed);
                }
            },
        };
        let traffic = traffic.as_deref();
        // Chunks (see `Plan::chunk`); the next [`AHEAD`] chunks are fetched (and parsed, on
        // other worker threads) while this one is scored, so the server always has a query
        // to answer and a long history loads at the pace of the slower side rather than
        // their sum.
        let expr: Arc<str> = Arc::from(self.def.expr.as_str());
        let plan = Plan {
            end,
            full_from: self.coarse_until,
            coarse: s.coarse_ms().unwrap_or(res),
            res,
        };
        let fetch = |c: Chunk| {
            let (client, expr) = (client.clone(), expr.clone());
            let step = step_duration(c.step);
            let task =
                tokio::spawn(async move { client.query_range(&expr, c.from, c.to, step).await });
            (c, task)
        };
        let mut pending = std::collections::VecDeque::with_capacity(AHEAD + 1);
        let mut next_from = start;
        let mut up = true;
        loop {
            // Sized by the series seen so far (the chunks in flight are not parsed yet).
            while pending.len() <= AHEAD {
                let Some(c) = plan.chunk(next_from, self.series.len()) else {
                    break;
                };
                next_from = c.to + res;
                pending.push_back(fetch(c));
            }
            let Some((
                Chunk {
                    from: t0, to: t1, ..
                },
                task,
            )) = pending.pop_front()
            else {
                break;
            };
            let result = match task.await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(format!("query task failed: {e}")),
            };
            match result {
                Ok(r) => {
                    ok += 1;
                    self.note_warnings(&r.warnings);
                    tracing::debug!(
                        signal = %self.def.name,
                        start_ms = t0,
                        end_ms = t1,
                        series = r.series.len(),
                        points = r.series.iter().map(|s| s.samples.len()).sum::<usize>(),
                        newest_ms = r.series.iter().filter_map(|s| s.samples.last()).map(|p| p.0).max(),
                        "range query answered"
                    );
                    self.apply(r.series, s);
                    self.settle(t1.min(settled_to), traffic, s);
                    self.loaded_until = Some(t1);
                }
                Err(e) => {
                    for (_, next) in pending.drain(..) {
                        next.abort();
                    }
                    failed += 1;
                    self.fail(&e, started);
                    up = false;
                    break;
                }
            }
        }
        if up && !first_load && self.coarse_until > self.full_from {
            let (o, f) = self.backfill(client, s, backfill).await;
            ok += o;
            failed += f;
        }
        self.stats.backfill_pending_ms = self.coarse_until.saturating_sub(self.full_from).max(0);
        // Points already applied update the evaluation and the baselines even when a later
        // chunk failed; nothing is forgotten while the query fails.
        self.evaluate(traffic, s);
        if up {
            self.stats.up = true;
            self.stats.last_error = None;
            self.stats.duration = started.elapsed();
        }
        self.finish(s, end, up);
        (ok, failed)
    }

    /// Fills in the newest stretch of the full-resolution part still held coarse, in queries
    /// of whole coarse steps while the cycle's `budget` of points (series x steps, shared by
    /// all signals: about [`CHUNK_POINTS`] a cycle, so that no cycle does much more than a
    /// steady one plus a chunk) lasts; moves the series' coarse boundary back over it, and
    /// once nothing is left warms the detectors up again on the whole history. The points
    /// are older than any the detector still takes, so they only change baselines until
    /// then. Returns the successful and failed queries; a failure is retried next cycle and
    /// leaves the signal up (its live points were refreshed).
    async fn backfill(
        &mut self,
        client: &PromClient,
        s: &Settings,
        budget: &AtomicI64,
    ) -> (u64, u64) {
        let res = s.resolution_ms;
        let coarse = s.coarse_ms().unwrap_or(res);
        // At least one: a signal without series yet asks its stretch in one query.
        let series = self.series.len().max(1);
        let step = step_duration(res);
        let mut ok = 0;
        while self.coarse_until > self.full_from {
            let left = budget.load(Ordering::Relaxed);
            if left <= 0 {
                break;
            }
            let points = steps_per_query(left, series, res);
            let span = (points * res).div_euclid(coarse).max(1) * coarse;
            let to = self.coarse_until - res;
            let from = (self.coarse_until - span).max(self.full_from);
            // Taken before the query: the other signal refreshed at the same time sees it.
            let asked = i64::try_from(series).unwrap_or(i64::MAX);
            budget.fetch_sub(
                asked.saturating_mul((to - from) / res + 1),
                Ordering::Relaxed,
            );
            match client.query_range(&self.def.expr, from, to, step).await {
                Ok(r) => {
                    self.note_warnings(&r.warnings);
                    self.fill_in(r.series, from);
                    tracing::debug!(signal = %self.def.name, from_ms = from, to_ms = to, "full-resolution history filled in");
                    ok += 1;
                }
                Err(e) => {
                    tracing::warn!(signal = %self.def.name, error = %e, "filling in the full-resolution history failed; retried next cycle");
                    self.stats.errors_total += 1;
                    return (ok, 1);
                }
            }
        }
        (ok, 0)
    }

    /// Stores a backfill answer covering `from` up to the coarse boundary and moves the
    /// boundary back to `from`; warms the detectors up again once it reaches `full_from`.
    fn fill_in(&mut self, answer: Vec<RangeSeries>, from: i64) {
        for rs in answer {
            let mut labels = rs.labels;
            labels.remove("__name__");
            // A series seen only in this stretch (not in the coarse points nor since) is
            // long gone: nothing to fill in.
            if let Some(ss) = self.series.get_mut(&labels) {
                for (ts, v) in rs.samples {
                    if (from..self.coarse_until).contains(&ts) {
                        ss.history.set(ts, v);
                    }
                }
            }
        }
        for ss in self.series.values_mut() {
            ss.history.full_back_to(from);
            ss.dirty = true;
        }
        self.coarse_until = from;
        if from <= self.full_from {
            self.rewarm();
        }
    }

    /// Replaces every series' settled detector by one that learnt the whole history up to
    /// the same point: the same state a load of the whole full-resolution part at once
    /// would have reached (the severity tracker is kept). Live points a traffic guard muted,
    /// which the detector skipped, are learnt here: a guard mutes ratios of very few events.
    fn rewarm(&mut self) {
        for ss in self.series.values_mut() {
            let mut fresh = Eval::new(self.def.direction);
            for (ts, v) in ss.history.range(i64::MIN, ss.settled.until) {
                fresh.detector.update(ts, v);
            }
            ss.settled.detector = fresh.detector;
        }
        tracing::debug!(signal = %self.def.name, series = self.series.len(), "detectors warmed up on the full history");
    }

    /// Logs and counts the warnings of a range query's answer.
    fn note_warnings(&mut self, warnings: &[String]) {
        if !warnings.is_empty() {
            tracing::warn!(signal = %self.def.name, ?warnings, "query API warnings");
        }
        self.stats.warnings_total += warnings.len() as u64;
    }

    fn fail(&mut self, error: &str, started: Instant) {
        tracing::warn!(signal = %self.def.name, error, "signal query failed");
        self.stats.errors_total += 1;
        self.stats.up = false;
        self.stats.last_error = Some(error.to_string());
        self.stats.duration = started.elapsed();
    }

    /// Merges an answer into the histories: new points are appended, points already held
    /// take the answer's value (the server may have corrected it), late points fill gaps.
    fn apply(&mut self, series: Vec<RangeSeries>, s: &Settings) {
        for rs in series {
            let mut labels = rs.labels;
            labels.remove("__name__");
            if !self.series.contains_key(&labels) {
                if self.series.len() >= s.max_series {
                    self.stats.dropped_total += 1;
                    continue;
                }
                let weight = s.coarse_ms().map_or(1, |c| c / s.resolution_ms);
                let state = SeriesState {
                    settled: Eval::new(self.def.direction),
                    history: History::new(s.resolution_ms, s.history_ms)
                        .with_coarse_before(self.coarse_until, u32::try_from(weight).unwrap_or(1)),
                    last: None,
                    baselines: Vec::new(),
                    forecast: None,
                    dirty: false,
                };
                self.series.insert(labels.clone(), state);
            }
            let Some(ss) = self.series.get_mut(&labels) else {
                continue;
            };
            for (ts, v) in rs.samples {
                if ts > ss.settled.until && ss.history.set(ts, v) {
                    ss.dirty = true;
                }
            }
        }
    }

    fn judge(&self, labels: &Labels, traffic: Option<&[(Labels, f64)]>, s: &Settings) -> Judge {
        let low_traffic = match (traffic, &self.def.min_traffic) {
            (Some(t), Some(m)) => guarded(t, labels, m.min),
            _ => false,
        };
        Judge {
            live_from: self.live_from,
            low_traffic,
            min_samples: s.min_samples,
        }
    }

    /// Evaluates for good every series' points up to `to_ms`.
    fn settle(&mut self, to_ms: i64, traffic: Option<&[(Labels, f64)]>, s: &Settings) {
        let mut series = std::mem::take(&mut self.series);
        for (labels, ss) in &mut series {
            if ss.history.last_ts().is_some_and(|t| t > ss.settled.until) {
                let judge = self.judge(labels, traffic, s);
                ss.settled.feed(&ss.history, to_ms, judge);
            }
        }
        self.series = series;
    }

    /// The newest evaluation of the series that changed: a copy of the settled state fed
    /// the provisional points.
    fn evaluate(&mut self, traffic: Option<&[(Labels, f64)]>, s: &Settings) {
        let mut series = std::mem::take(&mut self.series);
        for (labels, ss) in series.iter_mut().filter(|(_, ss)| ss.dirty) {
            let judge = self.judge(labels, traffic, s);
            let newest = ss.history.last_ts().unwrap_or(i64::MIN);
            ss.last = if newest > ss.settled.until {
                let mut now = ss.settled.clone();
                now.feed(&ss.history, newest, judge);
                now.last
            } else {
                ss.settled.last
            };
        }
        self.series = series;
    }

    /// Recomputes baselines and forecasts of the series that got points; with `forget`,
    /// drops the series silent for longer than [`Settings::forget_ms`].
    fn finish(&mut self, s: &Settings, end: i64, forget: bool) {
        if forget {
            let silent = s.forget_ms();
            self.series
                .retain(|_, ss| ss.history.last_ts().is_some_and(|t| t >= end - silent));
        }
        let mut scratch = Vec::new();
        for ss in self.series.values_mut().filter(|ss| ss.dirty) {
            ss.dirty = false;
            let Some(newest) = ss.history.last_ts() else {
                continue;
            };
            let bend = newest - s.baseline_offset_ms;
            let min = usize::try_from(s.min_samples).unwrap_or(usize::MAX);
            ss.baselines.clear();
            for (name, w) in [("7d", 7 * DAY_MS), ("30d", 30 * DAY_MS)] {
                if w > s.history_ms {
                    continue;
                }
                if let Some(st) = baseline::window(&ss.history, bend, w, min, &mut scratch) {
                    ss.baselines.push((name, st));
                }
            }
            if let Some(st) = baseline::hour_of_week_stats(
                &ss.history,
                newest,
                bend,
                SEASONAL_MIN_WEEKS,
                &mut scratch,
            ) {
                ss.baselines.push(("hour_of_week", st));
            }
            let pts = ss.history.range(newest - s.forecast_window_ms, newest);
            ss.forecast = forecast::fit(pts, newest);
        }
        self.stats.series = self.series.len();
    }
}

/// One range query of a history load: points `from..=to` every `step` ms.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Chunk {
    from: i64,
    to: i64,
    step: i64,
}

/// How a signal's history up to `end` is asked for: before `full_from` one point per coarse
/// step (at its middle, on the resolution grid: so it stands for the step around it and an
/// hour of the week gets a point from inside that hour), from `full_from` on every `res`.
#[derive(Debug, Clone, Copy)]
struct Plan {
    end: i64,
    full_from: i64,
    coarse: i64,
    res: i64,
}

impl Plan {
    /// The range query for the points from `t0` on, or None past `end`. A chunk holds a
    /// day's points a series (a day at `res`) while the signal's series count is unknown
    /// (`series` 0), then about [`CHUNK_POINTS`] points (never fewer than a day's a series,
    /// never more than a query may return), and never spans the full-resolution boundary.
    fn chunk(&self, t0: i64, series: usize) -> Option<Chunk> {
        let span = |step: i64| steps_per_query(CHUNK_POINTS, series, self.res).saturating_mul(step);
        let mut t0 = t0;
        if t0 < self.full_from {
            let c = self.coarse;
            let mid = (c / 2).div_euclid(self.res) * self.res;
            let first = t0 + (mid - t0).rem_euclid(c);
            let last = self.full_from - c + mid;
            if first <= last {
                let to = (first + span(c) - c).min(last);
                return Some(Chunk {
                    from: first,
                    to,
                    step: c,
                });
            }
            // No coarse point left: the last one stands for the steps up to the boundary.
            t0 = self.full_from;
        }
        (t0 <= self.end).then(|| Chunk {
            from: t0,
            to: (t0 + span(self.res) - self.res).min(self.end),
            step: self.res,
        })
    }
}

/// Grid steps a series that one range query asks for: about `budget` points (series x
/// steps) over `series` series, a day's points while the count is unknown (0), never fewer
/// than a day's at `res`, never more than a query may return.
fn steps_per_query(budget: i64, series: usize, res: i64) -> i64 {
    let day = DAY_MS / res;
    let steps = match i64::try_from(series).unwrap_or(i64::MAX) {
        0 => day,
        n => (budget / n).max(day),
    };
    steps.clamp(1, super::promql::MAX_POINTS_PER_QUERY)
}

/// A step or duration in milliseconds as a [`Duration`] (at least 1 ms).
fn step_duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(1).max(1))
}

/// The labelled values of an instant query result.
fn traffic_series(data: InstantData) -> Vec<(Labels, f64)> {
    match data {
        InstantData::Vector(v) => v
            .into_iter()
            .map(|s| {
                let mut l = s.labels;
                l.remove("__name__");
                (l, s.value)
            })
            .collect(),
        InstantData::Scalar(_, v) => vec![(Labels::new(), v)],
        _ => Vec::new(),
    }
}

/// Whether a series is muted: some traffic series whose labels it all carries is below
/// `min`, or no traffic series matches it at all (no traffic is the least traffic).
fn guarded(traffic: &[(Labels, f64)], labels: &Labels, min: f64) -> bool {
    let mut matched = false;
    for (tl, v) in traffic {
        if tl.iter().all(|(k, val)| labels.get(k) == Some(val)) {
            matched = true;
            if v.is_nan() || *v < min {
                return true;
            }
        }
    }
    !matched
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(p: &[(&str, &str)]) -> Labels {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn traffic_guard_matches_by_label_subset() {
        let t = vec![
            (labels(&[("datname", "a")]), 5.0),
            (labels(&[("datname", "b")]), 0.01),
        ];
        let a = labels(&[("datname", "a"), ("target", "x")]);
        let b = labels(&[("datname", "b"), ("target", "x")]);
        let c = labels(&[("datname", "c")]);
        assert!(!guarded(&t, &a, 1.0));
        assert!(guarded(&t, &b, 1.0));
        assert!(guarded(&t, &c, 1.0), "no traffic series at all mutes");
        assert!(guarded(&[(Labels::new(), f64::NAN)], &a, 1.0));
    }

    fn settings() -> Settings {
        Settings::from_config(&SidecarConfig {
            resolution: crate::config::PromDuration(Duration::from_secs(60)),
            history: crate::config::PromDuration(Duration::from_secs(86_400)),
            query_overlap: crate::config::PromDuration(Duration::from_secs(120)),
            min_samples: 10,
            ..SidecarConfig::default()
        })
    }

    fn signal() -> SignalState {
        SignalState::new(Signal {
            name: "s".into(),
            domain: "d".into(),
            expr: "x".into(),
            direction: Direction::Both,
            threshold: None,
            min_traffic: None,
        })
    }

    fn answer(points: &[(i64, f64)]) -> Vec<RangeSeries> {
        vec![RangeSeries {
            labels: labels(&[("__name__", "x"), ("job", "a")]),
            samples: points.to_vec(),
        }]
    }

    /// One cycle as `refresh` runs it, with `points` as the server's answer.
    fn cycle(st: &mut SignalState, s: &Settings, end: i64, points: &[(i64, f64)]) -> Latest {
        st.apply(answer(points), s);
        st.settle(end - s.overlap_ms() - s.resolution_ms, None, s);
        st.evaluate(None, s);
        st.finish(s, end, true);
        st.series[&labels(&[("job", "a")])]
            .last
            .expect("a latest point")
    }

    #[test]
    fn late_and_corrected_points_are_scored_as_if_right_the_first_time() {
        let s = settings();
        let step = s.resolution_ms;
        let value = |i: i64| 100.0 + (i % 7) as f64;
        let t0 = 1_700_000_000_000 / step * step;
        let n = 200;
        // The truth, seen once with every point right.
        let mut truth = signal();
        truth.live_from = t0 + (n - 1) * step;
        let all: Vec<_> = (0..=n).map(|i| (t0 + i * step, value(i))).collect();
        let want = cycle(&mut truth, &s, t0 + n * step, &all);

        // The same points through a server that hides its newest point and repeats the
        // previous value in place of the one before (VictoriaMetrics' latency offset), one
        // cycle per step, each asking again the overlap.
        let mut st = signal();
        st.live_from = truth.live_from;
        let mut got = None;
        for k in 100..=n + 2 {
            let end = t0 + k.min(n) * step;
            let from = if k == 100 { t0 } else { end - s.overlap_ms() };
            let mut answer: Vec<_> = (0..=n)
                .map(|i| (t0 + i * step, value(i)))
                .filter(|p| p.0 >= from && p.0 <= end)
                .collect();
            if k < n + 2 {
                answer.pop();
                if let [.., a, b] = answer.as_mut_slice() {
                    b.1 = a.1;
                }
            }
            got = Some(cycle(&mut st, &s, end, &answer));
        }
        let got = got.expect("cycles ran");
        assert_eq!(got.ts_ms, want.ts_ms);
        assert_eq!(got.value, want.value);
        assert_eq!(
            got.score, want.score,
            "the same score as with the right points"
        );
        assert_eq!(got.severity, want.severity);
    }

    /// Every point a whole load asks for, and its number of queries.
    fn load(plan: &Plan, start: i64, series: usize) -> (Vec<(i64, i64)>, usize) {
        let (mut points, mut queries) = (Vec::new(), 0);
        let mut next = plan.chunk(start, 0);
        while let Some(c) = next {
            // The first `AHEAD + 1` chunks are asked before the first answer is parsed.
            let known = if queries < AHEAD { 0 } else { series };
            queries += 1;
            assert!(c.from <= c.to && c.to <= plan.end, "{c:?}");
            let n = (c.to - c.from) / c.step + 1;
            assert!(n <= super::super::promql::MAX_POINTS_PER_QUERY, "{c:?}");
            assert!(
                c.to < plan.full_from || c.from >= plan.full_from,
                "a chunk does not span the boundary: {c:?}"
            );
            points.extend((0..n).map(|k| (c.from + k * c.step, c.step)));
            next = plan.chunk(c.to + plan.res, known);
        }
        (points, queries)
    }

    #[test]
    fn the_older_history_is_asked_once_an_hour_at_the_middle_of_each_hour() {
        let s = Settings::from_config(&SidecarConfig::default());
        let (res, hour) = (s.resolution_ms, 3_600_000);
        assert_eq!(
            (s.coarse_ms(), s.full_resolution_ms),
            (Some(hour), 8 * DAY_MS)
        );
        let end = 1_704_067_200_000 + 30 * DAY_MS + 35 * 60_000;
        let full_from = s.full_from(end);
        assert_eq!(full_from % hour, 0);
        assert!(full_from <= end - 8 * DAY_MS && full_from > end - 8 * DAY_MS - hour);
        let plan = Plan {
            end,
            full_from,
            coarse: hour,
            res,
        };
        let start = end - s.history_ms;
        let (points, queries) = load(&plan, start, 1000);
        let (coarse, fine) = points
            .iter()
            .copied()
            .partition::<Vec<_>, _>(|p| p.0 < full_from);
        assert!(coarse.iter().all(|p| p.1 == hour && p.0 % hour == hour / 2));
        assert!(
            coarse.windows(2).all(|w| w[1].0 - w[0].0 == hour),
            "no hour skipped"
        );
        assert!(coarse[0].0 >= start && coarse[0].0 - hour < start);
        assert_eq!(coarse.last().map(|p| p.0), Some(full_from - hour / 2));
        let want: Vec<i64> = (full_from..=end).step_by(res as usize).collect();
        assert_eq!(fine.iter().map(|p| p.0).collect::<Vec<_>>(), want);
        assert!(fine.iter().all(|p| p.1 == res));
        // 22 days at 1 h (the first hour starts before `start`) and 8 days at 5 min: 2,839
        // points a series instead of 8,641.
        assert_eq!(points.len(), 22 * 24 - 1 + 8 * 288 + 7 + 1);
        // A day's points a series three times (12 days at 1 h, the rest of the coarse part, a
        // day at 5 minutes: asked before the series count is known), then about 600 points a
        // series.
        assert_eq!(queries, 2 + 1 + 4, "{points:?}");
        assert_eq!(
            load(&plan, start, 50).1,
            2 + 2,
            "50 series: the last 7 days in one query"
        );

        // A failed load resumes where it stopped: inside the coarse part, at the next hour.
        let resumed = plan.chunk(start + 3 * hour + res, 1000).expect("chunk");
        assert_eq!(resumed.from % hour, hour / 2);
        assert_eq!(resumed.step, hour);
        // Past the last coarse point, at the boundary.
        let c = plan.chunk(full_from - hour / 2 + res, 1000).expect("chunk");
        assert_eq!((c.from, c.step), (full_from, res));
    }

    #[test]
    fn the_first_load_asks_the_newest_day_at_resolution_and_the_older_history_hourly() {
        let s = Settings::from_config(&SidecarConfig::default());
        let (res, hour) = (s.resolution_ms, 3_600_000);
        let end = 1_704_067_200_000 + 30 * DAY_MS + 35 * 60_000;
        let first = s.first_full_from(end);
        assert_eq!(first % hour, 0);
        assert!(first <= end - DAY_MS && first > end - DAY_MS - hour);
        let plan = Plan {
            end,
            full_from: first,
            coarse: hour,
            res,
        };
        let (points, queries) = load(&plan, end - s.history_ms, 1000);
        // 29 days at 1 h and the newest day at 5 min: 983 points a series instead of 2,839
        // (everything from the 8-day boundary at 5 min) or 8,641; four queries (12, 12 and
        // 5 days at 1 h, then the day at 5 min).
        assert_eq!(points.len(), 29 * 24 - 1 + 288 + 7 + 1);
        assert_eq!(queries, 4);
        assert!(points.iter().filter(|p| p.0 >= first).all(|p| p.1 == res));
    }

    #[test]
    fn a_history_filled_in_after_the_first_load_ends_as_if_loaded_at_once() {
        let s = Settings::from_config(&SidecarConfig::default());
        let (res, hour) = (s.resolution_ms, 3_600_000);
        let end = 1_704_067_200_000 + 30 * DAY_MS + 35 * 60_000;
        // Varies within each hour, so a coarse point is not its hour's mean.
        let value =
            |ts: i64| 100.0 + 10.0 * ((ts / res) as f64 * 0.37).sin() + (ts / res % 13) as f64;
        let asked = |boundary: i64| -> Vec<(i64, f64)> {
            let plan = Plan {
                end,
                full_from: boundary,
                coarse: hour,
                res,
            };
            load(&plan, end - s.history_ms, 1)
                .0
                .iter()
                .map(|&(t, _)| (t, value(t)))
                .collect()
        };
        let key = labels(&[("job", "a")]);
        let started = |coarse_until: i64| {
            let mut st = signal();
            st.live_from = end - res;
            st.full_from = s.full_from(end);
            st.coarse_until = coarse_until;
            cycle(&mut st, &s, end, &asked(coarse_until));
            st
        };
        // Everything from the 8-day boundary at full resolution in the first load.
        let mut whole = started(s.full_from(end));
        // Only the newest day, the rest filled in two days at a time, newest first.
        let mut filled = started(s.first_full_from(end));
        assert_ne!(
            whole.series[&key].baselines, filled.series[&key].baselines,
            "before it is filled in, the 7-day baseline weighs hourly points"
        );
        let mut fills = 0;
        while filled.coarse_until > filled.full_from {
            let from = (filled.coarse_until - 2 * DAY_MS).max(filled.full_from);
            let points: Vec<_> = (from..filled.coarse_until)
                .step_by(res as usize)
                .map(|t| (t, value(t)))
                .collect();
            filled.fill_in(answer(&points), from);
            fills += 1;
        }
        assert_eq!(fills, 4);
        let next = end + res;
        let a = cycle(&mut whole, &s, next, &[(next, value(next))]);
        let b = cycle(&mut filled, &s, next, &[(next, value(next))]);
        assert_eq!(whole.series[&key].baselines, filled.series[&key].baselines);
        assert_eq!(
            a.score, b.score,
            "the detector warmed up again on the whole history"
        );
    }

    #[test]
    fn without_a_coarse_part_the_history_loads_at_resolution() {
        for c in [
            SidecarConfig {
                history_coarse_step: crate::config::PromDuration(Duration::from_secs(300)),
                ..SidecarConfig::default()
            },
            SidecarConfig {
                history: crate::config::PromDuration(Duration::from_secs(7 * 86_400)),
                ..SidecarConfig::default()
            },
        ] {
            let s = Settings::from_config(&c);
            assert_eq!((s.coarse_ms(), s.full_from(1_000_000)), (None, i64::MIN));
            let end = 1_704_067_200_000;
            let plan = Plan {
                end,
                full_from: s.full_from(end),
                coarse: s.resolution_ms,
                res: s.resolution_ms,
            };
            let (points, _) = load(&plan, end - s.history_ms, 1000);
            let want: Vec<i64> = (end - s.history_ms..=end).step_by(300_000).collect();
            assert_eq!(points.iter().map(|p| p.0).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn bad_direction_follows_the_signal() {
        assert_eq!(bad_direction(Direction::HigherIsWorse, -3.0), -3.0);
        assert_eq!(bad_direction(Direction::LowerIsWorse, -3.0), 3.0);
        assert_eq!(bad_direction(Direction::Both, -3.0), 3.0);
    }
}
