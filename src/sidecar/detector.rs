//! TEMPORARY STUB (replaced by feature/detector): the agreed API only.
#![allow(missing_docs)]
pub use crate::config::Direction;
#[derive(Debug, Clone, Default)]
pub struct DetectorConfig {
    pub direction: Direction,
}
pub struct Detector {
    cfg: DetectorConfig,
    n: u64,
    mean: f64,
    var: f64,
}
impl Detector {
    pub fn new(config: DetectorConfig) -> Detector {
        Detector {
            cfg: config,
            n: 0,
            mean: 0.0,
            var: 0.0,
        }
    }
    pub fn update(&mut self, _ts_ms: i64, value: f64) -> Score {
        if !value.is_finite() {
            return Score::default();
        }
        let sd = self.var.sqrt().max(1e-9);
        let z = if self.n > 2 {
            (value - self.mean) / sd
        } else {
            0.0
        };
        let zz = match self.cfg.direction {
            Direction::HigherIsWorse => z,
            Direction::LowerIsWorse => -z,
            Direction::Both => z.abs(),
        };
        self.n += 1;
        let a = 0.05;
        let d = value - self.mean;
        if self.n == 1 {
            self.mean = value;
        } else {
            self.mean += a * d;
            self.var = (1.0 - a) * (self.var + a * d * d);
        }
        Score {
            anomaly: (zz / 6.0).clamp(0.0, 1.0),
            zscore: z,
            drift_ratio: 1.0,
            expected: self.mean,
            seasonal: false,
        }
    }
    pub fn samples(&self) -> u64 {
        self.n
    }
}
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Score {
    pub anomaly: f64,
    pub zscore: f64,
    pub drift_ratio: f64,
    pub expected: f64,
    pub seasonal: bool,
}
pub const WARNING_THRESHOLD: f64 = 0.5;
pub const CRITICAL_THRESHOLD: f64 = 0.8;
