//! From scores to severities: tiers, debounce (two consecutive points before a level is
//! raised) and hysteresis on clearing (the score must fall clearly below the level's
//! threshold for several points), so a series hovering at a threshold does not flap.

use super::detector::{CRITICAL_THRESHOLD, WARNING_THRESHOLD};

/// Severity levels, exported as `anomaly_severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Severity {
    /// Nothing unusual.
    #[default]
    Ok = 0,
    /// Unusual.
    Warning = 1,
    /// Far outside the usual.
    Critical = 2,
}

impl Severity {
    /// Lower-case name, for labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Points in a row above a level before it is raised.
pub const RAISE_POINTS: u8 = 2;
/// Points in a row clearly below a level before it is lowered.
pub const CLEAR_POINTS: u8 = 3;
/// "Clearly below": under this share of the level's threshold.
pub const CLEAR_FACTOR: f64 = 0.75;

fn level(score: f64, factor: f64) -> Severity {
    if score >= CRITICAL_THRESHOLD * factor {
        Severity::Critical
    } else if score >= WARNING_THRESHOLD * factor {
        Severity::Warning
    } else {
        Severity::Ok
    }
}

/// The severity state of one series.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    current: Severity,
    up_streak: u8,
    up_level: Severity,
    down_streak: u8,
}

impl Tracker {
    /// The severity in force.
    pub fn severity(&self) -> Severity {
        self.current
    }

    /// Takes the score of a new point; `muted` (too little traffic or history) clears at once.
    pub fn observe(&mut self, score: f64, muted: bool) -> Severity {
        if muted {
            *self = Tracker::default();
            return self.current;
        }
        let raw = level(score, 1.0);
        if raw > self.current {
            self.up_level = if self.up_streak == 0 {
                raw
            } else {
                self.up_level.min(raw)
            };
            self.up_streak = self.up_streak.saturating_add(1);
            if self.up_streak >= RAISE_POINTS {
                self.current = self.up_level;
                self.up_streak = 0;
            }
        } else {
            self.up_streak = 0;
        }
        let low = level(score, CLEAR_FACTOR);
        if low < self.current {
            self.down_streak = self.down_streak.saturating_add(1);
            if self.down_streak >= CLEAR_POINTS {
                self.current = low;
                self.down_streak = 0;
            }
        } else {
            self.down_streak = 0;
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_after_two_points_and_clears_after_three_quiet_ones() {
        let mut t = Tracker::default();
        let hi = CRITICAL_THRESHOLD.max(WARNING_THRESHOLD) + 1e-9;
        assert_eq!(
            t.observe(hi, false),
            Severity::Ok,
            "one point is not enough"
        );
        assert_eq!(t.observe(0.0, false), Severity::Ok);
        assert_eq!(t.observe(hi, false), Severity::Ok);
        assert_eq!(t.observe(hi, false), Severity::Critical);
        // Just under the threshold but above the clearing level: stays.
        let hover = CRITICAL_THRESHOLD * 0.9;
        for _ in 0..5 {
            assert_eq!(t.observe(hover, false), Severity::Critical);
        }
        assert_eq!(t.observe(0.0, false), Severity::Critical);
        assert_eq!(t.observe(0.0, false), Severity::Critical);
        assert_eq!(t.observe(0.0, false), Severity::Ok);
    }

    #[test]
    fn mixed_levels_raise_to_the_lower_and_muting_clears() {
        let mut t = Tracker::default();
        let warn = (WARNING_THRESHOLD + CRITICAL_THRESHOLD) / 2.0;
        t.observe(CRITICAL_THRESHOLD, false);
        assert_eq!(t.observe(warn, false), Severity::Warning);
        assert_eq!(t.observe(CRITICAL_THRESHOLD, false), Severity::Warning);
        assert_eq!(t.observe(CRITICAL_THRESHOLD, false), Severity::Critical);
        assert_eq!(t.observe(CRITICAL_THRESHOLD, true), Severity::Ok);
    }
}
