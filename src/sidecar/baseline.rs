//! Baselines of a series: mean, standard deviation and quantiles over rolling windows and
//! over the same hour of the week. Definitions follow PromQL's `avg_over_time`,
//! `stddev_over_time` (population) and `quantile_over_time`, so a user can check them there.

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
    /// Points in the window.
    pub count: usize,
}

/// Statistics of `values` (reordered in place), or None when empty.
pub fn stats(values: &mut [f64]) -> Option<Stats> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    // Welford: stable for large values with small spread (byte counters).
    let (mut mean, mut m2) = (0.0, 0.0);
    for (i, &v) in values.iter().enumerate() {
        let d = v - mean;
        mean += d / (i + 1) as f64;
        m2 += d * (v - mean);
    }
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

/// Statistics over `[end - window, end]`, if at least `min_count` points fall in it.
pub fn window(
    h: &History,
    end_ms: i64,
    window_ms: i64,
    min_count: usize,
    scratch: &mut Vec<f64>,
) -> Option<Stats> {
    scratch.clear();
    scratch.extend(h.range(end_ms - window_ms, end_ms).map(|(_, v)| v));
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
        scratch.extend(h.range(start, hi).map(|(_, v)| v));
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
