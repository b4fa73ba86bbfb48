//! The streaming anomaly detector, shared by the live sidecar and `vitals backtest`.
//!
//! One [`Detector`] per series; [`Detector::update`] takes the next point and returns its
//! [`Score`]. It is causal (a point is scored with the state built from earlier points, then
//! learnt), allocation-free after construction and holds a few KiB of state.
//!
//! How a point is scored:
//!
//! 1. **Prediction errors at several scales.** A fast robust level (Huber-clipped exponential
//!    average over a few points) catches spikes and the onset of changes; a slow robust level
//!    (a few hundred points) catches drifts. Once enough history exists a seasonal
//!    expectation replaces the slow level: a time-of-day profile (48 slots) after
//!    [`DetectorConfig::daily_after`] and an hour-of-week profile (168 slots) after
//!    [`DetectorConfig::weekly_after`], each slot a robust average of the values seen in it,
//!    plus a slowly adapting offset. Each error is divided by its own robust scale (an
//!    exponential mean absolute deviation, floored at a small share of the range seen), giving
//!    robust z-scores. When [`DetectorConfig::fast_shift`] (or `slow_shift`) consecutive
//!    points fall beyond the clip on one side, that baseline jumps to the new level instead of
//!    crawling towards it: a level shift is flagged for a few points, not for hours.
//! 2. **Direction.** Deviations in the good direction are dropped before scoring.
//! 3. **Surprise.** The largest directed z-score is divided by this series' usual worst
//!    deviation: an envelope that moves part of the way (in log space) up to each larger
//!    deviation once that one has been scored, and decays slowly otherwise. A noisy series
//!    with routine spikes therefore needs a bigger spike than a clean one, and a repeated
//!    deviation of the same size becomes less surprising (fewer repeated alerts) — the
//!    calibration Numenta's anomaly likelihood provides, in O(1). A value beyond the whole
//!    range seen so far adds novelty (`novelty * excess / range`), as Numenta's detector does.
//! 4. **Squash.** `anomaly = u^2 / (u^2 + k^2)` for the surprise `u`: monotone, in `[0,1)`,
//!    without ties at the top.
//!
//! `drift_ratio` is the recent level (exponential average over about an hour of 5-minute
//! points) divided by the long-term level (about a week), 1.0 when the long-term level is
//! zero or not yet known.

pub use crate::config::Direction;

/// Tunables of the detector. `Default` is the tuning measured on NAB (see
/// docs/BENCHMARKS.md), with `direction: Both`.
#[derive(Debug, Clone)]
pub struct DetectorConfig {
    /// Which way is worse; deviations the other way do not raise `anomaly`.
    pub direction: Direction,
    /// Smoothing of the fast level, per point (0..1).
    pub fast_alpha: f64,
    /// Smoothing of the slow level and of the seasonal offset, per point.
    pub slow_alpha: f64,
    /// Smoothing of the robust scales (mean absolute deviations), per point.
    pub scale_alpha: f64,
    /// Smoothing of a seasonal slot each time a point falls in it.
    pub slot_alpha: f64,
    /// Huber clip, in robust sigmas: residuals beyond it move levels and scales as if they
    /// were this large, so one spike does not drag the baseline.
    pub clip: f64,
    /// Consecutive points beyond the clip, on one side, after which the fast level jumps to
    /// the new value (a level shift is then scored for these points only); 0 disables.
    pub fast_shift: u32,
    /// The same for the slow level and the seasonal offsets.
    pub slow_shift: u32,
    /// How far (in log space, 0..1) the series' usual worst deviation, which the surprise
    /// divides by, moves towards a larger raw deviation once it has been scored: repeated
    /// deviations of the same size become less surprising.
    pub usual_rate: f64,
    /// Decay of that usual worst deviation per point (log space) while deviations are
    /// smaller.
    pub usual_decay: f64,
    /// Lower bound of that usual worst deviation, in robust sigmas.
    pub z_floor: f64,
    /// `k` of the squash: the surprise at which `anomaly` is 0.5.
    pub half_at: f64,
    /// Weight of novelty: a value beyond the range seen so far adds
    /// `novelty * excess / range` to the surprise.
    pub novelty: f64,
    /// Points before any score is given.
    pub min_samples: u64,
    /// History (ms) after which the time-of-day profile takes part.
    pub daily_after: i64,
    /// History (ms) after which the hour-of-week profile takes part.
    pub weekly_after: i64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            direction: Direction::Both,
            fast_alpha: 0.2,
            slow_alpha: 0.005,
            scale_alpha: 0.01,
            slot_alpha: 0.3,
            clip: 2.5,
            fast_shift: 6,
            slow_shift: 12,
            usual_rate: 0.3,
            usual_decay: 0.0002,
            z_floor: 3.0,
            half_at: 2.0,
            novelty: 15.0,
            min_samples: 12,
            daily_after: 3 * DAY_MS,
            weekly_after: 3 * WEEK_MS,
        }
    }
}

impl DetectorConfig {
    /// Overrides one tunable by its field name (`vitals backtest --param fast_alpha=0.3`),
    /// for measuring how the scores move when the tuning is perturbed. `direction` takes
    /// `both`, `higher_is_worse` or `lower_is_worse`; durations are in milliseconds.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let float = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{name}: {value:?} is not a number"))
        };
        let int = || {
            value
                .parse::<i64>()
                .map_err(|_| format!("{name}: {value:?} is not an integer"))
        };
        match name {
            "direction" => {
                self.direction = match value {
                    "both" => Direction::Both,
                    "higher_is_worse" => Direction::HigherIsWorse,
                    "lower_is_worse" => Direction::LowerIsWorse,
                    _ => return Err(format!("direction: unknown {value:?}")),
                }
            }
            "fast_alpha" => self.fast_alpha = float()?,
            "slow_alpha" => self.slow_alpha = float()?,
            "scale_alpha" => self.scale_alpha = float()?,
            "slot_alpha" => self.slot_alpha = float()?,
            "clip" => self.clip = float()?,
            "fast_shift" => self.fast_shift = int()?.clamp(0, 1_000_000) as u32,
            "slow_shift" => self.slow_shift = int()?.clamp(0, 1_000_000) as u32,
            "usual_rate" => self.usual_rate = float()?,
            "usual_decay" => self.usual_decay = float()?,
            "z_floor" => self.z_floor = float()?,
            "half_at" => self.half_at = float()?,
            "novelty" => self.novelty = float()?,
            "min_samples" => self.min_samples = int()?.max(0) as u64,
            "daily_after" => self.daily_after = int()?,
            "weekly_after" => self.weekly_after = int()?,
            _ => return Err(format!("unknown detector parameter {name:?}")),
        }
        Ok(())
    }
}

/// Score at or above which a point counts as anomalous: the threshold NAB's standard profile
/// chose for the default tuning (0.263, a surprise of 1.2 times the series' usual worst
/// deviation; the reward_low_FP profile chose the same one).
pub const WARNING_THRESHOLD: f64 = 0.26;
/// Stricter score for critical severity: a surprise of twice the series' usual worst
/// deviation (NAB's profiles do not separate a stricter threshold for this tuning).
pub const CRITICAL_THRESHOLD: f64 = 0.5;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const WEEK_MS: i64 = 7 * DAY_MS;
/// Time-of-day slots (30 minutes each).
const DAY_SLOTS: usize = 48;
/// Hour-of-week slots.
const WEEK_SLOTS: usize = 168;
/// Gaussian consistency factor of the mean absolute deviation.
const MAD_TO_SIGMA: f64 = 1.2533;

/// The result of scoring one point.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Score {
    /// In `[0,1]`: the number NAB thresholds and severities are mapped from.
    pub anomaly: f64,
    /// Signed deviation of this point from `expected`, in robust sigmas.
    pub zscore: f64,
    /// Recent level over long-term level (1.0 = no drift).
    pub drift_ratio: f64,
    /// The value the detector expected.
    pub expected: f64,
    /// Whether the hour-of-week seasonal profile took part.
    pub seasonal: bool,
}

/// A robust exponential level with its scale and a level-shift detector.
#[derive(Debug, Clone, Copy, Default)]
struct RobustLevel {
    level: f64,
    /// Mean absolute deviation of residuals.
    mad: f64,
    n: u64,
    /// Consecutive residuals beyond the clip on the same side (sign gives the side).
    run: i32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    mean: f64,
    n: u32,
}

/// A seasonal profile: one robust average per slot, an offset and the residual scale.
#[derive(Debug, Clone)]
struct Profile<const N: usize> {
    slots: [Slot; N],
    offset: f64,
    mad: f64,
    /// Residuals learnt (points whose slot had been seen before).
    scored: u64,
    run: i32,
}

impl<const N: usize> Profile<N> {
    fn new() -> Self {
        Self {
            slots: [Slot::default(); N],
            offset: 0.0,
            mad: 0.0,
            scored: 0,
            run: 0,
        }
    }

    fn expected(&self, slot: usize) -> f64 {
        self.slots[slot].mean + self.offset
    }
}

/// The per-series detector state (about 4 KiB, fixed size).
#[derive(Debug, Clone)]
pub struct Detector {
    config: DetectorConfig,
    samples: u64,
    first_ts: i64,
    last_ts: i64,
    fast: RobustLevel,
    slow: RobustLevel,
    daily: Profile<DAY_SLOTS>,
    weekly: Box<Profile<WEEK_SLOTS>>,
    /// Running high quantile of the raw deviation (the series' own "usual worst").
    usual: f64,
    recent: f64,
    long: f64,
    min: f64,
    max: f64,
}

impl Detector {
    /// A detector with no history.
    pub fn new(config: DetectorConfig) -> Detector {
        Detector {
            config,
            samples: 0,
            first_ts: 0,
            last_ts: i64::MIN,
            fast: RobustLevel::default(),
            slow: RobustLevel::default(),
            daily: Profile::new(),
            weekly: Box::new(Profile::new()),
            usual: USUAL_START,
            recent: 0.0,
            long: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Points seen so far (for "minimum samples" guards).
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Feeds the next point (timestamp in ms since the Unix epoch, strictly increasing) and
    /// scores it. Causal: uses only this point and earlier ones. Non-finite values and
    /// timestamps not after the previous one are skipped (score 0, state untouched).
    pub fn update(&mut self, ts_ms: i64, value: f64) -> Score {
        if !value.is_finite() || ts_ms <= self.last_ts {
            return Score {
                drift_ratio: 1.0,
                ..Score::default()
            };
        }
        let c = &self.config;
        if self.samples == 0 {
            self.first_ts = ts_ms;
            self.fast.level = value;
            self.slow.level = value;
            self.recent = value;
            self.long = value;
        }
        self.last_ts = ts_ms;
        self.samples += 1;
        let history = ts_ms - self.first_ts;

        // Scale floor: a small share of the range seen and of the level, so flat series
        // do not divide by zero yet any real change on them stands out.
        let range = if self.max >= self.min {
            self.max - self.min
        } else {
            0.0
        };
        let floor = 1e-9_f64.max(1e-3 * range).max(1e-4 * self.slow.level.abs());

        // 1. Errors against each expectation, before learning this point.
        let z_fast = z(value - self.fast.level, self.fast.mad, floor);
        let z_slow = z(value - self.slow.level, self.slow.mad, floor);
        let day_slot = slot_of(ts_ms, DAY_MS, DAY_SLOTS);
        let week_slot = slot_of(ts_ms, WEEK_MS, WEEK_SLOTS);
        let weekly_ready = history >= c.weekly_after
            && self.weekly.scored >= SEASON_MIN_SCORED
            && self.weekly.slots[week_slot].n >= 2;
        let daily_ready = history >= c.daily_after
            && self.daily.scored >= SEASON_MIN_SCORED
            && self.daily.slots[day_slot].n >= 2;
        let (expected, zscore) = if weekly_ready {
            let e = self.weekly.expected(week_slot);
            (e, z(value - e, self.weekly.mad, floor))
        } else if daily_ready {
            let e = self.daily.expected(day_slot);
            (e, z(value - e, self.daily.mad, floor))
        } else {
            (self.slow.level, z_slow)
        };

        // 2. Direction.
        let directed = |z: f64| match c.direction {
            Direction::Both => z.abs(),
            Direction::HigherIsWorse => z.max(0.0),
            Direction::LowerIsWorse => (-z).max(0.0),
        };
        let raw = directed(z_fast).max(directed(zscore)).min(1e6);

        // 3. Surprise: the deviation over this series' usual worst deviation, plus novelty.
        let mut u = raw / self.usual.max(c.z_floor);
        if range > 0.0 {
            let over = match c.direction {
                Direction::Both => (value - self.max).max(self.min - value),
                Direction::HigherIsWorse => value - self.max,
                Direction::LowerIsWorse => self.min - value,
            };
            if over > 0.0 {
                u += c.novelty * over / range;
            }
        }
        let anomaly = if self.samples > c.min_samples && u > 0.0 {
            u * u / (u * u + c.half_at * c.half_at)
        } else {
            0.0
        };

        // Learn.
        if self.samples > c.min_samples {
            if raw > self.usual {
                self.usual *= (raw / self.usual).powf(c.usual_rate);
            } else {
                self.usual *= (-c.usual_decay).exp();
            }
            self.usual = self.usual.max(c.z_floor);
        }
        learn(&mut self.fast, value, c.fast_alpha, c, floor, c.fast_shift);
        learn(&mut self.slow, value, c.slow_alpha, c, floor, c.slow_shift);
        learn_profile(&mut self.daily, day_slot, value, c, floor);
        learn_profile(&mut self.weekly, week_slot, value, c, floor);
        self.recent += (value - self.recent) * (1.0 / 12.0);
        self.long += (value - self.long) * (1.0 / 2016.0);
        self.min = self.min.min(value);
        self.max = self.max.max(value);

        let drift_ratio = if self.long.abs() > 1e-12 && self.samples > c.min_samples {
            self.recent / self.long
        } else {
            1.0
        };
        Score {
            anomaly,
            zscore,
            drift_ratio,
            expected,
            seasonal: weekly_ready,
        }
    }
}

/// Starting value of the usual worst deviation, in robust sigmas.
const USUAL_START: f64 = 3.0;
/// Residuals a seasonal profile must have learnt before it takes part.
const SEASON_MIN_SCORED: u64 = 100;

fn z(residual: f64, mad: f64, floor: f64) -> f64 {
    residual / (MAD_TO_SIGMA * mad).max(floor)
}

fn slot_of(ts_ms: i64, period: i64, slots: usize) -> usize {
    // The Unix epoch was a Thursday; shift so slot 0 of a week is Monday 00:00 UTC.
    let shifted = if period == WEEK_MS {
        ts_ms + 3 * DAY_MS
    } else {
        ts_ms
    };
    let t = shifted.rem_euclid(period);
    ((t as i128 * slots as i128 / period as i128) as usize).min(slots - 1)
}

/// Counts consecutive clipped residuals on one side; returns true when `limit` is reached
/// (a level shift: the baseline should jump rather than crawl).
fn shifted(run: &mut i32, r: f64, bound: f64, limit: u32) -> bool {
    let side = if r > bound {
        1
    } else if r < -bound {
        -1
    } else {
        0
    };
    *run = if side != 0 && run.signum() == side {
        *run + side
    } else {
        side
    };
    limit > 0 && run.unsigned_abs() >= limit
}

fn learn(l: &mut RobustLevel, x: f64, alpha: f64, c: &DetectorConfig, floor: f64, shift: u32) {
    l.n += 1;
    let r = x - l.level;
    let sigma = (MAD_TO_SIGMA * l.mad).max(floor);
    let limit = c.clip * sigma;
    let sa = (1.0 / l.n as f64).max(c.scale_alpha);
    if l.n < 4 {
        l.level += alpha * r;
        l.mad += sa * (r.abs() - l.mad);
        return;
    }
    let rc = r.clamp(-limit, limit);
    l.mad += sa * (rc.abs() - l.mad);
    if shifted(&mut l.run, r, limit, shift) {
        l.level = x;
        l.run = 0;
    } else {
        l.level += alpha * rc;
    }
}

fn learn_profile<const N: usize>(
    p: &mut Profile<N>,
    slot: usize,
    x: f64,
    c: &DetectorConfig,
    floor: f64,
) {
    let sigma = (MAD_TO_SIGMA * p.mad).max(floor);
    let bound = c.clip * sigma;
    let seen = p.slots[slot].n > 0;
    if seen {
        let r = x - p.expected(slot);
        let rc = r.clamp(-bound, bound);
        p.scored += 1;
        let sa = (1.0 / p.scored as f64).max(c.scale_alpha);
        p.mad += sa * (rc.abs() - p.mad);
        if p.scored > SEASON_MIN_SCORED && shifted(&mut p.run, r, bound, c.slow_shift) {
            p.offset += r;
            p.run = 0;
        } else {
            p.offset += c.slow_alpha * rc;
        }
    }
    let s = &mut p.slots[slot];
    let target = x - p.offset;
    if s.n == 0 {
        s.mean = target;
    } else {
        let r = target - s.mean;
        let rc = if p.scored > SEASON_MIN_SCORED {
            r.clamp(-bound, bound)
        } else {
            r
        };
        let a = (1.0 / (s.n as f64 + 1.0)).max(c.slot_alpha);
        s.mean += a * rc;
    }
    s.n = s.n.saturating_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: i64 = 5 * 60 * 1000;
    /// Monday 2024-01-01 00:00 UTC.
    const START: i64 = 1_704_067_200_000;

    /// Deterministic noise in [-1, 1].
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        }
    }

    /// Requests per second with a daily curve peaking at noon, busier on weekdays.
    fn traffic(ts: i64, noise: &mut Noise) -> f64 {
        let day = (ts - START).div_euclid(DAY_MS);
        let hour = (ts - START).rem_euclid(DAY_MS) as f64 / HOUR_MS as f64;
        let weekday = day.rem_euclid(7) < 5;
        let curve = (-((hour - 12.0) / 3.5).powi(2)).exp();
        let peak = if weekday { 100.0 } else { 40.0 };
        10.0 + peak * curve + 2.0 * noise.next()
    }

    #[test]
    fn seasonal_weekday_peak_is_normal_but_noon_level_at_3am_is_not() {
        let mut d = Detector::new(DetectorConfig::default());
        let mut noise = Noise(7);
        // Four weeks and two days (to Wednesday 00:00 of week 5).
        let mut ts = START;
        let end = START + 4 * WEEK_MS + 2 * DAY_MS;
        while ts < end {
            d.update(ts, traffic(ts, &mut noise));
            ts += STEP;
        }
        // Wednesday 03:00: the usual night level is fine, noon's level is not.
        let three_am = end + 3 * HOUR_MS;
        while ts < three_am {
            d.update(ts, traffic(ts, &mut noise));
            ts += STEP;
        }
        let noon_level = traffic(end + 12 * HOUR_MS, &mut Noise(1));
        let mut probe = d.clone();
        let s = probe.update(ts, noon_level);
        assert!(
            s.seasonal,
            "the hour-of-week profile takes part after 4 weeks"
        );
        assert!(
            s.anomaly >= WARNING_THRESHOLD,
            "noon level at 3 a.m.: {s:?}"
        );
        assert!(s.zscore > 5.0 && s.expected < 20.0, "{s:?}");
        let s = d.update(ts, traffic(ts, &mut noise));
        assert!(s.anomaly < WARNING_THRESHOLD, "usual 3 a.m. level: {s:?}");
        ts += STEP;
        // The whole weekday peak (09:00-15:00) passes unflagged.
        let mut worst = Score::default();
        while ts <= end + 15 * HOUR_MS {
            let s = d.update(ts, traffic(ts, &mut noise));
            if ts >= end + 9 * HOUR_MS && s.anomaly > worst.anomaly {
                worst = s;
            }
            ts += STEP;
        }
        assert!(worst.anomaly < WARNING_THRESHOLD, "weekday peak: {worst:?}");
        assert!(worst.seasonal);
    }

    #[test]
    fn seasonal_profile_waits_for_enough_history() {
        let mut d = Detector::new(DetectorConfig::default());
        let mut noise = Noise(3);
        let mut ts = START;
        let mut seasonal_at = None;
        while ts < START + 5 * WEEK_MS {
            let s = d.update(ts, traffic(ts, &mut noise));
            if s.seasonal && seasonal_at.is_none() {
                seasonal_at = Some(ts - START);
            }
            ts += STEP;
        }
        let at = seasonal_at.expect("the weekly profile takes part within 5 weeks");
        assert!(at >= 3 * WEEK_MS, "took part after {at} ms");
    }

    fn noisy_flat(d: &mut Detector, n: usize, noise: &mut Noise) -> i64 {
        let mut ts = START;
        for _ in 0..n {
            d.update(ts, 50.0 + noise.next());
            ts += STEP;
        }
        ts
    }

    #[test]
    fn a_spike_scores_high_and_ordinary_points_low() {
        let mut d = Detector::new(DetectorConfig::default());
        let mut noise = Noise(11);
        let ts = noisy_flat(&mut d, 2000, &mut noise);
        let normal = d.clone().update(ts, 50.5);
        assert!(normal.anomaly < WARNING_THRESHOLD, "{normal:?}");
        let spike = d.update(ts, 70.0);
        assert!(spike.anomaly >= CRITICAL_THRESHOLD, "{spike:?}");
        assert!(spike.zscore > 10.0);
        assert!((spike.expected - 50.0).abs() < 1.0);
        assert!(spike.anomaly <= 1.0);
    }

    #[test]
    fn direction_suppresses_the_good_side() {
        let mut noise = Noise(5);
        let mut up = Detector::new(DetectorConfig {
            direction: Direction::HigherIsWorse,
            ..DetectorConfig::default()
        });
        let ts = noisy_flat(&mut up, 2000, &mut noise);
        let mut down = up.clone();
        let drop = down.update(ts, 30.0);
        assert!(drop.anomaly < WARNING_THRESHOLD, "a drop is good: {drop:?}");
        assert!(drop.zscore < -10.0, "the z-score keeps its sign: {drop:?}");
        assert!(up.update(ts, 70.0).anomaly >= WARNING_THRESHOLD);

        let mut noise = Noise(5);
        let mut low = Detector::new(DetectorConfig {
            direction: Direction::LowerIsWorse,
            ..DetectorConfig::default()
        });
        let ts = noisy_flat(&mut low, 2000, &mut noise);
        assert!(low.clone().update(ts, 70.0).anomaly < WARNING_THRESHOLD);
        assert!(low.update(ts, 30.0).anomaly >= WARNING_THRESHOLD);
    }

    #[test]
    fn a_level_shift_stops_being_anomalous() {
        let mut d = Detector::new(DetectorConfig::default());
        let mut noise = Noise(13);
        let mut ts = noisy_flat(&mut d, 2000, &mut noise);
        let mut flagged = 0;
        for i in 0..300 {
            let s = d.update(ts, 80.0 + noise.next());
            ts += STEP;
            if i < 2 {
                // Flagged on at least two consecutive points, so the live engine's
                // two-cycle debounce sees a sustained shift.
                assert!(
                    s.anomaly >= WARNING_THRESHOLD,
                    "point {i} after the shift: {s:?}"
                );
            }
            if s.anomaly >= WARNING_THRESHOLD {
                flagged += 1;
            }
        }
        assert!(
            flagged < 40,
            "{flagged} of 300 points after the shift flagged"
        );
        let s = d.update(ts, 80.0);
        assert!(s.anomaly < WARNING_THRESHOLD, "{s:?}");
        assert!(s.drift_ratio > 1.3, "{s:?}");
    }

    #[test]
    fn skips_non_finite_values_and_stale_timestamps() {
        let mut d = Detector::new(DetectorConfig::default());
        let mut noise = Noise(17);
        let ts = noisy_flat(&mut d, 100, &mut noise);
        let before = d.samples();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let s = d.update(ts, v);
            assert_eq!(s.anomaly, 0.0);
        }
        assert_eq!(d.update(START, 1e9).anomaly, 0.0, "timestamp in the past");
        assert_eq!(d.samples(), before);
        // Irregular gaps (a day's outage) do not break scoring.
        let s = d.update(ts + DAY_MS, 50.2);
        assert!(
            s.anomaly < WARNING_THRESHOLD && s.anomaly.is_finite(),
            "{s:?}"
        );
        assert_eq!(d.samples(), before + 1);
    }

    #[test]
    fn flat_series_and_constant_start_stay_finite() {
        let mut d = Detector::new(DetectorConfig::default());
        let mut ts = START;
        for _ in 0..500 {
            let s = d.update(ts, 0.0);
            assert_eq!(s.anomaly, 0.0);
            ts += STEP;
        }
        let s = d.update(ts, 1.0);
        assert!(s.anomaly >= CRITICAL_THRESHOLD && s.anomaly <= 1.0, "{s:?}");
        assert!(s.drift_ratio.is_finite() && s.drift_ratio > 1.0, "{s:?}");
    }

    #[test]
    fn state_is_bounded() {
        let size = std::mem::size_of::<Detector>() + std::mem::size_of::<Profile<WEEK_SLOTS>>();
        assert!(size <= 64 * 1024, "{size} bytes");
    }

    #[test]
    fn params_override_by_name() {
        let mut c = DetectorConfig::default();
        c.set("clip", "3.5").unwrap();
        c.set("direction", "lower_is_worse").unwrap();
        c.set("fast_shift", "0").unwrap();
        assert_eq!(c.clip, 3.5);
        assert_eq!(c.direction, Direction::LowerIsWorse);
        assert_eq!(c.fast_shift, 0);
        assert!(c.set("clip", "x").is_err());
        assert!(c.set("nope", "1").is_err());
    }
}
