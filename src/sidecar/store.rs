//! Per-series history on the evaluation grid: one `f32` per resolution step, so 30 days at
//! 5 minutes cost 35 KiB a series. Baselines and forecasts read it; missing steps are gaps.
//!
//! The oldest part may be *coarse*: loaded at a multiple of the step (see
//! `sidecar.history_coarse_step`), so that only every Nth slot before the full-resolution
//! boundary holds a point, standing for the N steps around it. The history records that
//! boundary and gives each point its weight (N or 1); as new points arrive the coarse part
//! ages out, and once it has, the history is full resolution throughout.

use std::collections::VecDeque;

/// The last `capacity` grid points of one series; missing points are NaN.
#[derive(Debug, Clone)]
pub struct History {
    step_ms: i64,
    capacity: usize,
    /// Grid index (timestamp / step) of `values[0]`.
    first: i64,
    values: VecDeque<f32>,
    /// Points before this timestamp are coarse (`i64::MIN`: none).
    full_from: i64,
    /// Steps a coarse point stands for.
    coarse_weight: u32,
}

impl History {
    /// Keeps `span_ms` of history at `step_ms` per point.
    pub fn new(step_ms: i64, span_ms: i64) -> History {
        let step_ms = step_ms.max(1);
        let capacity = usize::try_from(span_ms / step_ms).unwrap_or(0).max(1) + 1;
        History {
            step_ms,
            capacity,
            first: 0,
            values: VecDeque::new(),
            full_from: i64::MIN,
            coarse_weight: 1,
        }
    }

    /// Marks the points before `full_from_ms` as coarse, each standing for `weight` grid
    /// steps. Call before storing points; `weight <= 1` means full resolution throughout.
    pub fn with_coarse_before(mut self, full_from_ms: i64, weight: u32) -> History {
        if weight > 1 {
            self.full_from = full_from_ms;
            self.coarse_weight = weight;
        }
        self
    }

    /// Moves the coarse boundary back to `full_from_ms` once the points from there on are
    /// stored at full resolution (filled in after the first load): the coarse points in
    /// between then count once, as the grid points they are.
    pub fn full_back_to(&mut self, full_from_ms: i64) {
        self.full_from = self.full_from.min(full_from_ms);
    }

    /// The timestamp from which the history is full resolution, while older (coarse)
    /// points are still held; None once they have aged out (or there never were any).
    pub fn full_from(&self) -> Option<i64> {
        let oldest = self.first.saturating_mul(self.step_ms);
        (self.full_from > oldest && !self.values.is_empty()).then_some(self.full_from)
    }

    /// Grid steps the point at `ts_ms` stands for: the coarse weight before the
    /// full-resolution boundary, 1 from it on.
    pub fn weight(&self, ts_ms: i64) -> u32 {
        if ts_ms < self.full_from {
            self.coarse_weight
        } else {
            1
        }
    }

    /// [`History::range`] with each point's weight ([`History::weight`]).
    pub fn weighted_range(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Iterator<Item = (i64, f64, u32)> + Clone + '_ {
        self.range(from_ms, to_ms)
            .map(|(ts, v)| (ts, v, self.weight(ts)))
    }

    fn index(&self, ts_ms: i64) -> i64 {
        // Round to the nearest grid point: servers return points exactly on the grid, but a
        // millisecond of rounding must not shift a point into its neighbour's slot.
        (ts_ms + self.step_ms / 2).div_euclid(self.step_ms)
    }

    /// Timestamp of the newest point, if any.
    pub fn last_ts(&self) -> Option<i64> {
        if self.values.is_empty() {
            None
        } else {
            Some((self.first + self.values.len() as i64 - 1) * self.step_ms)
        }
    }

    /// Appends a point. Points at or before the newest one are ignored (returns false);
    /// skipped grid steps become gaps.
    pub fn push(&mut self, ts_ms: i64, value: f64) -> bool {
        let idx = self.index(ts_ms);
        if self.values.is_empty() {
            self.first = idx;
        } else {
            let next = self.first + self.values.len() as i64;
            if idx < next {
                return false;
            }
            let gap = idx - next;
            if gap as usize >= self.capacity {
                self.values.clear();
                self.first = idx;
            } else {
                for _ in 0..gap {
                    self.values.push_back(f32::NAN);
                }
            }
        }
        self.values.push_back(value as f32);
        while self.values.len() > self.capacity {
            self.values.pop_front();
            self.first += 1;
        }
        true
    }

    /// Stores a point, appending it or replacing the value already at its grid step (a
    /// point the server answered again, possibly corrected, or one that arrived late into a
    /// gap). Points older than the kept span are ignored. Returns whether the stored value
    /// changed.
    pub fn set(&mut self, ts_ms: i64, value: f64) -> bool {
        let idx = self.index(ts_ms);
        let next = self.first + self.values.len() as i64;
        if self.values.is_empty() || idx >= next {
            return self.push(ts_ms, value);
        }
        let Ok(pos) = usize::try_from(idx - self.first) else {
            return false;
        };
        let new = value as f32;
        let slot = &mut self.values[pos];
        if slot.to_bits() == new.to_bits() {
            return false;
        }
        *slot = new;
        true
    }

    /// Points with `from_ms <= ts <= to_ms`, oldest first, gaps skipped.
    pub fn range(&self, from_ms: i64, to_ms: i64) -> impl Iterator<Item = (i64, f64)> + Clone + '_ {
        let lo = (from_ms.div_euclid(self.step_ms)
            + i64::from(from_ms.rem_euclid(self.step_ms) != 0))
        .max(self.first);
        let hi = to_ms
            .div_euclid(self.step_ms)
            .min(self.first + self.values.len() as i64 - 1);
        let step = self.step_ms;
        let first = self.first;
        (lo..=hi).filter_map(move |i| {
            let v = *self.values.get(usize::try_from(i - first).ok()?)?;
            v.is_finite().then_some((i * step, f64::from(v)))
        })
    }

    /// Number of stored points, gaps included.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no point was stored yet.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Bytes held by the point buffer.
    pub fn heap_bytes(&self) -> usize {
        self.values.capacity() * std::mem::size_of::<f32>()
    }

    /// The grid step in milliseconds.
    pub fn step_ms(&self) -> i64 {
        self.step_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_span_and_marks_gaps() {
        let mut h = History::new(10, 50);
        for t in [0, 10, 20, 50, 60] {
            assert!(h.push(t, t as f64));
        }
        assert!(!h.push(60, 1.0), "duplicates are ignored");
        assert!(!h.push(30, 1.0), "older points are ignored");
        let pts: Vec<_> = h.range(0, 100).collect();
        assert_eq!(pts, vec![(10, 10.0), (20, 20.0), (50, 50.0), (60, 60.0)]);
        assert_eq!(h.len(), 6, "capacity is span/step + 1");
        assert_eq!(h.last_ts(), Some(60));
        let inner: Vec<_> = h.range(15, 55).map(|p| p.0).collect();
        assert_eq!(inner, vec![20, 50]);
    }

    #[test]
    fn set_replaces_known_steps_and_fills_gaps() {
        let mut h = History::new(10, 50);
        assert!(h.set(10, 1.0));
        assert!(h.set(30, 3.0), "appends, leaving a gap at 20");
        assert!(h.set(20, 2.0), "a late point fills the gap");
        assert!(!h.set(20, 2.0), "the same value again changes nothing");
        assert!(h.set(30, 3.5), "a corrected value replaces the old one");
        assert!(!h.set(-100, 9.0), "older than the span");
        assert_eq!(
            h.range(0, 100).collect::<Vec<_>>(),
            vec![(10, 1.0), (20, 2.0), (30, 3.5)]
        );
        assert_eq!(h.last_ts(), Some(30));
    }

    #[test]
    fn tracks_the_full_resolution_boundary_until_the_coarse_part_ages_out() {
        // Steps of 10, coarse points every 30 (weight 3) before 90, full resolution after.
        let mut h = History::new(10, 200).with_coarse_before(90, 3);
        for t in [10, 40, 70] {
            assert!(h.set(t, 1.0));
        }
        for t in (90..=200).step_by(10) {
            assert!(h.push(t, 2.0));
        }
        assert_eq!(h.full_from(), Some(90));
        let w: Vec<_> = h.weighted_range(0, 100).map(|(t, _, w)| (t, w)).collect();
        assert_eq!(w, vec![(10, 3), (40, 3), (70, 3), (90, 1), (100, 1)]);
        // The span is 200: pushing up to 280 keeps slot 80 (a gap in the coarse part).
        for t in (210..=280).step_by(10) {
            h.push(t, 2.0);
        }
        assert_eq!(h.full_from(), Some(90), "slot 80 is still held");
        assert_eq!(h.weighted_range(0, 1000).filter(|p| p.2 == 3).count(), 0);
        h.push(290, 2.0);
        assert_eq!(h.full_from(), None, "the coarse part has aged out");
        assert!(h.weighted_range(0, 1000).all(|p| p.2 == 1));
        // Without a coarse part there is no boundary, and weight 1 means none.
        assert_eq!(History::new(10, 200).full_from(), None);
        let mut one = History::new(10, 200).with_coarse_before(90, 1);
        one.push(10, 1.0);
        assert_eq!((one.full_from(), one.weight(10)), (None, 1));
    }

    #[test]
    fn a_gap_longer_than_the_span_restarts() {
        let mut h = History::new(10, 50);
        h.push(0, 1.0);
        h.push(1000, 2.0);
        assert_eq!(h.range(0, 2000).collect::<Vec<_>>(), vec![(1000, 2.0)]);
    }

    #[test]
    fn off_grid_timestamps_round_to_the_nearest_step() {
        let mut h = History::new(1000, 10_000);
        h.push(999, 1.0);
        h.push(2001, 2.0);
        assert_eq!(
            h.range(0, 5000).collect::<Vec<_>>(),
            vec![(1000, 1.0), (2000, 2.0)]
        );
    }
}
