//! Baselines of a series: mean, standard deviation and quantiles over rolling windows and
//! over the same hour of the week. Definitions follow PromQL's `avg_over_time`,
//! `stddev_over_time` (population) and `quantile_over_time`, so a user can check them there.
//!
//! A coarse point of the history (loaded at `sidecar.history_coarse_step`, see
//! [`History::weight`]) counts as many times as the grid steps it stands for: the statistics
//! are those of the full-resolution series in which every step of a coarse stretch repeats its
//! sampled point. A coarse point is a systematic sample of the steps it stands for, so the
//! mean is an unbiased estimate of the full-resolution mean, and stddev and quantiles are
//! consistent estimates (exact when the series is constant over each coarse step). The
//! full-resolution part (at least the 7-day window, see `sidecar.history_full_resolution`)
//! gives exact figures.

use super::store::History;

/// Quantiles exported for every baseline.
pub const QUANTILES: [f64; 5] = [0.05, 0.25, 0.5, 0.75, 0.95];

/// Statistics of one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Arithmetic mean.
    pub mean: f64,
    /// Population standard deviation.
    pub stddev: f64,
    /// Values at [`QUANTILES`].
    pub quantiles: [f64; 5],
    /// Grid points the window stands for: a coarse point counts for the steps it covers.
    pub count: usize,
}

/// Statistics of `values` (reordered in place), or None when empty.
pub fn stats(values: &mut [f64]) -> Option<Stats> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    // Two passes (the mean, then squared deviations from it): as stable as Welford for
    // large values with small spread (byte counters), without a division per value, which
    // made this loop a tenth of the sidecar's start-up CPU (perf, 1,000 series x 30 days).
    let mean = values.iter().sum::<f64>() / n as f64;
    let m2: f64 = values.iter().map(|&v| (v - mean) * (v - mean)).sum();
    // Selection instead of a full sort: each quantile needs two order statistics, found in
    // the part of the slice above the previous one (QUANTILES ascend).
    let mut quantiles = [0.0; 5];
    let mut from = 0;
    for (q, out) in QUANTILES.iter().zip(quantiles.iter_mut()) {
        let rank = q * (n - 1) as f64;
        let lo = (rank.floor() as usize).clamp(from, n - 1);
        let w = rank - lo as f64;
        let (_, lo_v, rest) = values[from..].select_nth_unstable_by(lo - from, f64::total_cmp);
        let lo_v = *lo_v;
        let hi_v = if w > 0.0 {
            rest.iter().copied().min_by(f64::total_cmp).unwrap_or(lo_v)
        } else {
            lo_v
        };
        *out = lo_v * (1.0 - w) + hi_v * w;
        from = lo;
    }
    Some(Stats {
        mean,
        stddev: (m2 / n as f64).max(0.0).sqrt(),
        quantiles,
        count: n,
    })
}

/// Appends the points of `h` in `[from_ms, to_ms]` to `out`, each repeated by its weight.
fn extend_weighted(out: &mut Vec<f64>, h: &History, from_ms: i64, to_ms: i64) {
    // The full-resolution part (all of it once the coarse part has aged out) is copied as
    // it is: the steady cycle recomputes every series' baselines.
    let full_from = h.full_from().unwrap_or(i64::MIN);
    if from_ms < full_from {
        for (_, v, w) in h.weighted_range(from_ms, to_ms.min(full_from - 1)) {
            out.extend(std::iter::repeat_n(v, w as usize));
        }
    }
    out.extend(h.range(from_ms.max(full_from), to_ms).map(|(_, v)| v));
}

/// Statistics over `[end - window, end]`, if the points in it stand for at least
/// `min_count` grid points.
pub fn window(
    h: &History,
    end_ms: i64,
    window_ms: i64,
    min_count: usize,
    scratch: &mut Vec<f64>,
) -> Option<Stats> {
    scratch.clear();
    extend_weighted(scratch, h, end_ms - window_ms, end_ms);
    if scratch.len() < min_count.max(1) {
        return None;
    }
    stats(scratch)
}

/// Slot 0..168 of a Unix timestamp: hours since Monday 00:00 UTC.
pub fn hour_of_week(ts_ms: i64) -> i64 {
    let hours = ts_ms.div_euclid(3_600_000);
    // 1970-01-01 was a Thursday: 3 days after a Monday.
    (hours + 72).rem_euclid(168)
}

/// Statistics of the points in the same hour of the week as `at_ms`, up to `end_ms`, once
/// they come from at least `min_weeks` different weeks.
pub fn hour_of_week_stats(
    h: &History,
    at_ms: i64,
    end_ms: i64,
    min_weeks: usize,
    scratch: &mut Vec<f64>,
) -> Option<Stats> {
    const WEEK: i64 = 7 * 86_400_000;
    const HOUR: i64 = 3_600_000;
    let slot_start = at_ms.div_euclid(HOUR) * HOUR;
    scratch.clear();
    let mut weeks = 0;
    let mut start = slot_start - WEEK;
    // Walk back week by week through the stored history.
    let oldest = end_ms - (h.len() as i64 + 1) * h.step_ms();
    while start + HOUR > oldest {
        let before = scratch.len();
        let hi = (start + HOUR - 1).min(end_ms);
        extend_weighted(scratch, h, start, hi);
        if scratch.len() > before {
            weeks += 1;
        }
        start -= WEEK;
    }
    if weeks < min_weeks.max(1) {
        return None;
    }
    stats(scratch)
}

/// The standard error of a window statistic (the mean of `y(x)`) whose coarse part keeps one
/// sample of each hour: `share * sqrt(mean within-hour variance of y / hours)`, where `hours`
/// holds the full-resolution values of each coarse hour and `share` is the coarse points'
/// weight in the window. It bounds how far a 30-day baseline loaded with coarse older
/// history may stand from the full-resolution one, for tests and for judging the setting.
pub fn coarse_standard_error(hours: &[Vec<f64>], share: f64, y: impl Fn(f64) -> f64) -> f64 {
    let full: Vec<&Vec<f64>> = hours.iter().filter(|xs| !xs.is_empty()).collect();
    if full.is_empty() {
        return 0.0;
    }
    let n = full.len() as f64;
    let within = full
        .iter()
        .map(|xs| {
            let m = xs.iter().map(|&x| y(x)).sum::<f64>() / xs.len() as f64;
            xs.iter().map(|&x| (y(x) - m).powi(2)).sum::<f64>() / xs.len() as f64
        })
        .sum::<f64>()
        / n;
    share * (within / n).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_promql_definitions() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0, 5.0];
        let s = stats(&mut v).expect("stats");
        assert_eq!(s.mean, 3.0);
        assert!((s.stddev - 2f64.sqrt()).abs() < 1e-12);
        // quantile_over_time(0.25, ...) of 1..5 is 2, of 0.05 is 1.2.
        assert!((s.quantiles[1] - 2.0).abs() < 1e-12);
        assert!((s.quantiles[0] - 1.2).abs() < 1e-12);
        assert_eq!(s.quantiles[2], 3.0);
        assert!(stats(&mut []).is_none());
        // Large values with a small spread (a byte counter's level) keep their spread.
        let mut big: Vec<f64> = (0..5).map(|i| 1e12 + f64::from(i)).collect();
        let s = stats(&mut big).expect("stats");
        assert_eq!(s.mean, 1e12 + 2.0);
        assert!((s.stddev - 2f64.sqrt()).abs() < 1e-9, "{}", s.stddev);
    }

    #[test]
    fn selection_matches_sorting() {
        // Pseudo-random values with ties; compare with the sorted-rank definition.
        let mut x: u64 = 7;
        let mut v: Vec<f64> = (0..1001)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                ((x >> 33) % 97) as f64
            })
            .collect();
        let mut sorted = v.clone();
        sorted.sort_by(f64::total_cmp);
        let s = stats(&mut v).expect("stats");
        for (q, got) in QUANTILES.iter().zip(s.quantiles) {
            let rank = q * 1000.0;
            let (lo, w) = (rank.floor() as usize, rank - rank.floor());
            let want = sorted[lo] * (1.0 - w) + sorted[(lo + 1).min(1000)] * w;
            assert_eq!(got, want, "q {q}");
        }
        let mut two = vec![2.0, 1.0];
        let s = stats(&mut two).expect("stats");
        assert!((s.quantiles[0] - 1.05).abs() < 1e-12);
        assert!((s.quantiles[4] - 1.95).abs() < 1e-12);
        let mut one = vec![3.0];
        assert_eq!(stats(&mut one).expect("stats").quantiles, [3.0; 5]);
    }

    const STEP: i64 = 300_000;
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 86_400_000;
    /// Monday 2024-01-01 00:00 UTC.
    const T0: i64 = 1_704_067_200_000;
    /// End of the 30 days, and the full-resolution boundary 8 days before it.
    const END: i64 = T0 + 30 * DAY;
    const FULL_FROM: i64 = END - 8 * DAY;

    /// Deterministic pseudo-random numbers in [0, 1).
    fn unit(seed: i64) -> f64 {
        let mut z = (seed as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The same 30 days of 5-minute points held in full, and held as the sidecar loads them
    /// by default: before `FULL_FROM` only the point at the middle of each hour (weight 12).
    fn full_and_coarse(value: impl Fn(i64) -> f64) -> (History, History) {
        let mut full = History::new(STEP, 30 * DAY);
        let mut coarse = History::new(STEP, 30 * DAY).with_coarse_before(FULL_FROM, 12);
        for t in (T0..=END).step_by(STEP as usize) {
            full.push(t, value(t));
            if t >= FULL_FROM || t.rem_euclid(HOUR) == HOUR / 2 {
                coarse.push(t, value(t));
            }
        }
        (full, coarse)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn coarse_points_weighted_by_their_span_give_the_full_statistics_of_hourly_levels() {
        // Constant within each hour: a coarse point is exactly the hour it stands for.
        let (full, coarse) = full_and_coarse(|t| (unit(t / HOUR) * 100.0).round());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (from, to) in [(END - 30 * DAY, END), (END - 20 * DAY, END - HOUR)] {
            let want = window(&full, to, to - from, 1, &mut a).expect("full");
            let got = window(&coarse, to, to - from, 1, &mut b).expect("coarse");
            assert_eq!(got.count, want.count, "the same points stood for");
            assert!(close(got.mean, want.mean), "{got:?} {want:?}");
            assert!(close(got.stddev, want.stddev), "{got:?} {want:?}");
            assert_eq!(got.quantiles, want.quantiles);
        }
        // The same hour of the week: one week at full resolution, three of coarse points.
        for at in [END, END + 5 * HOUR] {
            let want = hour_of_week_stats(&full, at, END - HOUR, 2, &mut a).expect("full");
            let got = hour_of_week_stats(&coarse, at, END - HOUR, 2, &mut b).expect("coarse");
            assert_eq!(got.count, 4 * 12);
            assert_eq!((got.count, got.quantiles), (want.count, want.quantiles));
            assert!(close(got.mean, want.mean) && close(got.stddev, want.stddev));
        }
    }

    #[test]
    fn coarse_estimates_of_a_noisy_wave_stay_within_their_sampling_error() {
        // A daily wave plus noise (sum of four uniforms, sd 3.5).
        let value = |t: i64| {
            let wave = 20.0 * (std::f64::consts::TAU * (t % DAY) as f64 / DAY as f64).sin();
            let noise: f64 = (0..4).map(|k| unit(t * 4 + k) - 0.5).sum::<f64>() * 12.0;
            f64::from((100.0 + wave + noise) as f32)
        };
        let (full, coarse) = full_and_coarse(value);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        // The 7-day window lies in the full-resolution part: exact.
        let bend = END - HOUR;
        let want = window(&full, bend, 7 * DAY, 1, &mut a).expect("full");
        let got = window(&coarse, bend, 7 * DAY, 1, &mut b).expect("coarse");
        assert_eq!(
            (got.mean, got.stddev, got.quantiles),
            (want.mean, want.stddev, want.quantiles)
        );

        // The 30-day window: each coarse point is one draw from the hour it stands for, so
        // (stratified sampling, one unit per stratum) the estimate of the mean of any
        // function y of the points errs with standard error f * sqrt(mean_h(var_h(y)) / n),
        // where var_h is y's population variance within hour h, n the coarse hours and f
        // their share of the window's weight. Checked at 4 standard errors for y = x (the
        // mean), y = (x - mean)^2 (the variance; the stddev errs by about half its relative
        // error) and y = [x <= q] (the share of the full series under a quantile estimate).
        let want = window(&full, END, 30 * DAY, 1, &mut a).expect("full");
        let got = window(&coarse, END, 30 * DAY, 1, &mut b).expect("coarse");
        assert_eq!(got.count, want.count);
        let hours: Vec<Vec<f64>> = (T0..FULL_FROM)
            .step_by(HOUR as usize)
            .map(|h| full.range(h, h + HOUR - 1).map(|p| p.1).collect())
            .collect();
        let f = hours.len() as f64 * 12.0 / got.count as f64;
        let se_mean = coarse_standard_error(&hours, f, |x| x);
        assert!(
            (got.mean - want.mean).abs() <= 4.0 * se_mean,
            "{got:?} {want:?} se {se_mean}"
        );
        let var = want.stddev.powi(2);
        let se_sd =
            coarse_standard_error(&hours, f, |x| (x - want.mean).powi(2)) / (2.0 * want.stddev);
        assert!(
            (got.stddev - want.stddev).abs() <= 4.0 * se_sd,
            "{got:?} {want:?} se {se_sd}"
        );
        assert!(
            se_sd < 0.02 * var.sqrt(),
            "the bound itself is tight: {se_sd}"
        );
        let all: Vec<f64> = full.range(T0, END).map(|p| p.1).collect();
        for (i, (q, est)) in QUANTILES.iter().zip(got.quantiles).enumerate() {
            let share = all.iter().filter(|&&x| x <= est).count() as f64 / all.len() as f64;
            let exact = want.quantiles[i];
            let se_q = coarse_standard_error(&hours, f, |x| f64::from(u8::from(x <= exact)));
            assert!(
                (share - q).abs() <= 4.0 * se_q + 1.0 / all.len() as f64,
                "q {q}: estimate {est} has {share} of the full series under it (se {se_q})"
            );
        }
    }

    #[test]
    fn monday_midnight_is_slot_zero() {
        // 2024-01-01 00:00 UTC was a Monday.
        assert_eq!(hour_of_week(1_704_067_200_000), 0);
        assert_eq!(hour_of_week(1_704_067_200_000 + 3_600_000 * 27), 27);
        assert_eq!(hour_of_week(1_704_067_200_000 - 3_600_000), 167);
    }

    #[test]
    fn windows_and_hour_of_week() {
        let step = 300_000;
        let day = 86_400_000;
        let mut h = History::new(step, 30 * day);
        let t0 = 1_704_067_200_000;
        // Value = hour of day, so each hour-of-week slot holds one constant.
        let mut t = t0;
        while t < t0 + 21 * day {
            h.push(t, ((t - t0) / 3_600_000 % 24) as f64);
            t += step;
        }
        let end = t - step;
        let mut scratch = Vec::new();
        let w = window(&h, end, day, 10, &mut scratch).expect("window");
        assert!((w.mean - 11.5).abs() < 0.1, "{w:?}");
        let at = end + step; // next point: hour 0 of day 21 (a Monday)
        let s = hour_of_week_stats(&h, at, end, 2, &mut scratch).expect("seasonal");
        assert_eq!(s.mean, 0.0);
        assert_eq!(s.count, 12 * 3, "three weeks of twelve points");
        assert!(hour_of_week_stats(&h, at, end, 4, &mut scratch).is_none());
        assert!(window(&h, end, day, 10_000, &mut scratch).is_none());
    }
}
