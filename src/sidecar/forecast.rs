//! Least-squares trend of a series, like PromQL's `deriv` and `predict_linear`, with the
//! goodness of fit (R²) that decides whether a forecast is worth reporting.

/// A fitted line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Change per second.
    pub slope: f64,
    /// The line's value at `at_ms`.
    pub value_at_end: f64,
    /// Share of the variance the line explains, 0..1 (1 for a flat series).
    pub r_squared: f64,
    /// Points fitted.
    pub count: usize,
    /// Where `value_at_end` is taken.
    pub at_ms: i64,
}

/// Fits `points` (ms, value); None with fewer than three points or no time spread.
pub fn fit(points: impl Iterator<Item = (i64, f64)> + Clone, at_ms: i64) -> Option<Fit> {
    // Two passes around the means: exact for large timestamps and values alike.
    let (mut n, mut sx, mut sy) = (0usize, 0.0, 0.0);
    for (t, v) in points.clone() {
        n += 1;
        sx += (t - at_ms) as f64 / 1000.0;
        sy += v;
    }
    if n < 3 {
        return None;
    }
    let (mx, my) = (sx / n as f64, sy / n as f64);
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (t, v) in points {
        let dx = (t - at_ms) as f64 / 1000.0 - mx;
        let dy = v - my;
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r_squared = if syy <= f64::EPSILON * my.abs().max(1.0) {
        1.0
    } else {
        ((sxy * sxy) / (sxx * syy)).clamp(0.0, 1.0)
    };
    Some(Fit {
        slope,
        value_at_end: my - slope * mx,
        r_squared,
        count: n,
        at_ms,
    })
}

impl Fit {
    /// The line's value `seconds` after `at_ms` (PromQL's `predict_linear`).
    pub fn predict(&self, seconds: f64) -> f64 {
        self.value_at_end + self.slope * seconds
    }

    /// Seconds from `at_ms` until the line reaches `threshold`: 0 when it is already there,
    /// None when it moves away from it or stays flat.
    pub fn time_to(&self, threshold: f64, higher_is_worse: bool) -> Option<f64> {
        let beyond = if higher_is_worse {
            self.value_at_end >= threshold
        } else {
            self.value_at_end <= threshold
        };
        if beyond {
            return Some(0.0);
        }
        let toward = if higher_is_worse {
            self.slope > 0.0
        } else {
            self.slope < 0.0
        };
        if !toward {
            return None;
        }
        Some((threshold - self.value_at_end) / self.slope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_line() {
        let pts: Vec<(i64, f64)> = (0..10)
            .map(|i| (i * 60_000, 100.0 + 2.0 * i as f64))
            .collect();
        let f = fit(pts.iter().copied(), 9 * 60_000).expect("fit");
        assert!((f.slope - 2.0 / 60.0).abs() < 1e-12);
        assert!((f.value_at_end - 118.0).abs() < 1e-9);
        assert!((f.r_squared - 1.0).abs() < 1e-12);
        assert!((f.predict(60.0) - 120.0).abs() < 1e-9);
        let t = f.time_to(130.0, true).expect("reaches");
        assert!((t - 360.0).abs() < 1e-6);
        assert_eq!(f.time_to(130.0, false), Some(0.0));
        assert_eq!(f.time_to(100.0, false), None, "moving away");
    }

    #[test]
    fn noise_has_low_r_squared_and_flat_has_one() {
        let noisy = [
            (0, 1.0),
            (1000, -1.0),
            (2000, 1.0),
            (3000, -1.0),
            (4000, 1.0),
        ];
        let f = fit(noisy.iter().copied(), 4000).expect("fit");
        assert!(f.r_squared < 0.2, "{f:?}");
        let flat = [(0, 5.0), (1000, 5.0), (2000, 5.0)];
        let f = fit(flat.iter().copied(), 2000).expect("fit");
        assert_eq!(f.slope, 0.0);
        assert_eq!(f.r_squared, 1.0);
        assert_eq!(f.time_to(6.0, true), None);
        assert!(fit([(0, 1.0), (1, 2.0)].iter().copied(), 1).is_none());
    }
}
