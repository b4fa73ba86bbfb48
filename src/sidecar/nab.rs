//! NAB v1.1 scoring of a NAB-layout folder (`vitals backtest --nab`).
//!
//! This follows the Numenta Anomaly Benchmark's own scorer (numenta/NAB, `nab/sweeper.py`,
//! `nab/optimizer.py`, `nab/runner.py` and `config/profiles.json`), re-implemented here so the
//! sidecar's detector can be measured without Python:
//!
//! - the first `min(floor(0.15 * rows), 750)` rows of each file are probationary: they are
//!   neither scored as detections nor as misses (a window with no row after the probation does
//!   not count);
//! - for a threshold `t`, a row is a detection when its anomaly score is `>= t`;
//! - each window earns `A_TP * S(p) / S(-1)` for its earliest detection, where
//!   `S(x) = 2 / (1 + e^(5x)) - 1` and `p = -(right - i + 1) / width` (so the window's first
//!   row earns `A_TP`), or `-A_FN` when nothing in it is detected;
//! - each detection outside every window costs `A_FP * S(d)` with `d = |i - prev_right| /
//!   (prev_width - 1)` after the previous window (`S` is `-1` from `d >= 3`), or `-A_FP` before
//!   any window;
//! - the threshold is swept over every distinct score and the one that maximises the score
//!   pooled over all files is kept (the highest such threshold on a tie, as NAB's stable sort);
//! - the pooled score is normalised to `100 * (raw - null) / (perfect - null)`, where the null
//!   detector (which never detects) scores `-A_FN` per scorable window and the perfect one
//!   `A_TP` per window.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::sidecar::backtest::{Series, SeriesError, read_series};

/// Share of each file's rows that is probationary.
pub const PROBATIONARY_PERCENT: f64 = 0.15;
/// NAB caps the probationary period at `PROBATIONARY_PERCENT * 5000` rows.
pub const PROBATIONARY_CAP: f64 = PROBATIONARY_PERCENT * 5000.0;

/// An application profile of NAB: the weights of true positives, false positives and false
/// negatives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Profile name as in NAB's `config/profiles.json`.
    pub name: &'static str,
    /// Weight of a detected window (`A_TP`).
    pub tp_weight: f64,
    /// Weight of a detection outside the windows (`A_FP`).
    pub fp_weight: f64,
    /// Weight of a missed window (`A_FN`).
    pub fn_weight: f64,
}

/// NAB's three profiles, as in its `config/profiles.json`.
pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "standard",
        tp_weight: 1.0,
        fp_weight: 0.11,
        fn_weight: 1.0,
    },
    Profile {
        name: "reward_low_FP_rate",
        tp_weight: 1.0,
        fp_weight: 0.22,
        fn_weight: 1.0,
    },
    Profile {
        name: "reward_low_FN_rate",
        tp_weight: 1.0,
        fp_weight: 0.11,
        fn_weight: 2.0,
    },
];

/// What failed while loading a NAB folder.
#[derive(Debug, thiserror::Error)]
pub enum NabError {
    /// The labels file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The labels file is not NAB's windows JSON.
    #[error("{path}: {message}")]
    Labels {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A data file failed to load.
    #[error(transparent)]
    Series(#[from] SeriesError),
}

/// One labelled file of a NAB corpus.
#[derive(Debug, Clone)]
pub struct CorpusFile {
    /// Path relative to `data/`, e.g. `realTraffic/speed_7578.csv`.
    pub name: String,
    /// The rows.
    pub series: Series,
    /// Anomaly windows as inclusive row ranges, in order.
    pub windows: Vec<(usize, usize)>,
}

/// Loads a NAB-layout folder: every file named in `labels/combined_windows.json`, read from
/// `data/<name>`.
pub fn load_corpus(dir: &Path) -> Result<Vec<CorpusFile>, NabError> {
    let labels = dir.join("labels").join("combined_windows.json");
    let text = std::fs::read_to_string(&labels).map_err(|source| NabError::Io {
        path: labels.clone(),
        source,
    })?;
    let parsed: BTreeMap<String, Vec<Vec<String>>> =
        serde_json::from_str(&text).map_err(|e| NabError::Labels {
            path: labels.clone(),
            message: e.to_string(),
        })?;
    let mut files = Vec::with_capacity(parsed.len());
    for (name, limits) in parsed {
        let series = read_series(&dir.join("data").join(&name))?;
        let mut windows = Vec::with_capacity(limits.len());
        for limit in &limits {
            let bad = |message: String| NabError::Labels {
                path: labels.clone(),
                message: format!("{name}: {message}"),
            };
            let [start, end] = limit.as_slice() else {
                return Err(bad(format!("a window is not [start, end]: {limit:?}")));
            };
            let t1 = crate::sidecar::backtest::parse_timestamp(start)
                .ok_or_else(|| bad(format!("bad window start {start:?}")))?;
            let t2 = crate::sidecar::backtest::parse_timestamp(end)
                .ok_or_else(|| bad(format!("bad window end {end:?}")))?;
            let first = series.ts_ms.partition_point(|&t| t < t1);
            let after = series.ts_ms.partition_point(|&t| t <= t2);
            if after <= first {
                return Err(bad(format!("window [{start}, {end}] holds no row")));
            }
            windows.push((first, after - 1));
        }
        windows.sort_unstable();
        files.push(CorpusFile {
            name,
            series,
            windows,
        });
    }
    Ok(files)
}

/// NAB's probationary length for a file of `rows` rows.
pub fn probationary_length(rows: usize) -> usize {
    let p = (PROBATIONARY_PERCENT * rows as f64).floor();
    p.min(PROBATIONARY_CAP) as usize
}

/// NAB's scaled sigmoid `2 / (1 + e^(5x)) - 1`, `-1` from `x >= 3`.
pub fn scaled_sigmoid(x: f64) -> f64 {
    if x >= 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * x).exp()) - 1.0
    }
}

/// One scored file: row count, windows and the detector's anomaly scores.
#[derive(Debug, Clone, Copy)]
pub struct ScoredFile<'a> {
    /// Anomaly windows as inclusive row ranges, in order, not overlapping.
    pub windows: &'a [(usize, usize)],
    /// One anomaly score per row.
    pub scores: &'a [f64],
}

/// The result of one profile over a corpus.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProfileResult {
    /// The profile.
    pub profile: Profile,
    /// The threshold that maximised the pooled score (1.1 when detecting nothing was best).
    pub threshold: f64,
    /// The pooled raw score at that threshold.
    pub raw: f64,
    /// The null detector's raw score.
    pub null: f64,
    /// The perfect detector's raw score.
    pub perfect: f64,
    /// `100 * (raw - null) / (perfect - null)`.
    pub normalized: f64,
    /// Windows with a detection at that threshold.
    pub detected_windows: usize,
    /// All windows.
    pub windows: usize,
    /// Detections outside windows at that threshold.
    pub false_positives: usize,
}

/// What a scorable row contributes when it is a detection (before weights).
#[derive(Debug, Clone, Copy)]
enum Contribution {
    /// Inside window `window` (index over the corpus): `S(p) / S(-1)`.
    Inside { window: usize, value: f64 },
    /// Outside: `S(d)` (negative), or `-1` before any window.
    Outside { value: f64 },
}

fn contributions(file: &ScoredFile<'_>, window_base: usize, out: &mut Vec<(f64, Contribution)>) {
    let n = file.scores.len();
    let probation = probationary_length(n);
    let max_tp = scaled_sigmoid(-1.0);
    let mut next = 0usize;
    let mut prev: Option<(usize, usize)> = None;
    for i in 0..n {
        while next < file.windows.len() && file.windows[next].1 < i {
            prev = Some(file.windows[next]);
            next += 1;
        }
        let inside = file
            .windows
            .get(next)
            .filter(|w| w.0 <= i && i <= w.1)
            .copied();
        if i < probation {
            continue;
        }
        let contribution = match inside {
            Some((start, end)) => {
                let width = (end - start + 1) as f64;
                let position = -((end - i + 1) as f64) / width;
                Contribution::Inside {
                    window: window_base + next,
                    value: scaled_sigmoid(position) / max_tp,
                }
            }
            None => match prev {
                None => Contribution::Outside { value: -1.0 },
                Some((start, end)) => {
                    let width = (end - start + 1) as f64;
                    let distance = (i - end) as f64 / (width - 1.0).max(1.0);
                    Contribution::Outside {
                        value: scaled_sigmoid(distance),
                    }
                }
            },
        };
        let score = file.scores[i];
        let score = if score.is_finite() { score } else { 0.0 };
        out.push((score, contribution));
    }
}

/// Scores a corpus for one profile with NAB's threshold sweep.
pub fn score_corpus(files: &[ScoredFile<'_>], profile: Profile) -> ProfileResult {
    let mut rows = Vec::new();
    let mut window_base = 0;
    let mut scorable = Vec::new();
    for file in files {
        let probation = probationary_length(file.scores.len());
        for w in file.windows {
            scorable.push(w.1 >= probation);
        }
        contributions(file, window_base, &mut rows);
        window_base += file.windows.len();
    }
    let total_windows = window_base;
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));

    let fn_part = -profile.fn_weight;
    let mut parts: Vec<f64> = vec![fn_part; total_windows];
    let scorable_windows = scorable.iter().filter(|s| **s).count();
    let null = fn_part * scorable_windows as f64;
    let mut total = null;
    let mut best = (1.1, total, 0usize, 0usize);
    let (mut detected, mut fps) = (0usize, 0usize);
    let mut i = 0;
    while i < rows.len() {
        let threshold = rows[i].0;
        while i < rows.len() && rows[i].0 == threshold {
            match rows[i].1 {
                Contribution::Inside { window, value } => {
                    let v = value * profile.tp_weight;
                    if parts[window] == fn_part {
                        detected += 1;
                    }
                    if v > parts[window] {
                        total += v - parts[window];
                        parts[window] = v;
                    }
                }
                Contribution::Outside { value } => {
                    total += value * profile.fp_weight;
                    fps += 1;
                }
            }
            i += 1;
        }
        if total > best.1 {
            best = (threshold, total, detected, fps);
        }
    }
    let perfect = profile.tp_weight * total_windows as f64;
    let normalized = if perfect > null {
        100.0 * (best.1 - null) / (perfect - null)
    } else {
        0.0
    };
    ProfileResult {
        profile,
        threshold: best.0,
        raw: best.1,
        null,
        perfect,
        normalized,
        detected_windows: best.2,
        windows: total_windows,
        false_positives: best.3,
    }
}

/// The raw score of one file at a given threshold (rows with score `>= threshold` detect).
pub fn score_file(file: &ScoredFile<'_>, profile: Profile, threshold: f64) -> f64 {
    let mut rows = Vec::new();
    contributions(file, 0, &mut rows);
    let probation = probationary_length(file.scores.len());
    let mut parts: Vec<Option<f64>> = file
        .windows
        .iter()
        .map(|w| (w.1 >= probation).then_some(-profile.fn_weight))
        .collect();
    let mut fp = 0.0;
    for (score, c) in rows {
        if score < threshold {
            continue;
        }
        match c {
            Contribution::Inside { window, value } => {
                if let Some(p) = parts[window].as_mut() {
                    *p = p.max(value * profile.tp_weight);
                }
            }
            Contribution::Outside { value } => fp += value * profile.fp_weight,
        }
    }
    fp + parts.iter().flatten().sum::<f64>()
}

/// NAB's `windowedGaussian` reference detector (numenta/NAB
/// `nab/detectors/gaussian/windowedGaussian_detector.py`, as in its published results): the
/// score of a value is `1 - Q(z)` (signed `z`, so only high values score high) under a normal
/// fitted to the previous 1,000 values (population standard deviation, `1e-6` when
/// zero), 0 for the first row. Deterministic, so it validates this scorer against NAB's
/// published numbers; it is not the sidecar's detector.
pub fn windowed_gaussian(values: &[f64]) -> Vec<f64> {
    const WINDOW: usize = 1000;
    let mut out = Vec::with_capacity(values.len());
    let mut window: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    let (mut mean, mut std) = (0.0, 1.0);
    for &x in values {
        let score = if window.is_empty() {
            0.0
        } else {
            // The published results (NAB's results/windowedGaussian at the v1.1 tables) are
            // one-sided: 1 - Q(z) with a signed z, and Q computed as erfc(z / 1.4142) / 2.
            let z = (x - mean) / std;
            1.0 - 0.5 * erfc(z / NAB_SQRT_2)
        };
        out.push(score);
        if window.len() == WINDOW {
            window.pop_front();
        }
        window.push_back(x);
        let n = window.len() as f64;
        mean = window.iter().sum::<f64>() / n;
        let var = window.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        std = var.sqrt();
        if std == 0.0 {
            std = 0.000001;
        }
    }
    out
}

/// NAB's (nupic's) rounded square root of 2 in `normalProbability`, kept to reproduce its rows.
#[allow(clippy::approx_constant)]
const NAB_SQRT_2: f64 = 1.4142;

/// Complementary error function (Numerical Recipes' Chebyshev fit, relative error below
/// 1.2e-7), enough for the reference detector's tail probabilities.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file<'a>(windows: &'a [(usize, usize)], scores: &'a [f64]) -> ScoredFile<'a> {
        ScoredFile { windows, scores }
    }

    #[test]
    fn probation_is_fifteen_percent_capped_at_750() {
        assert_eq!(probationary_length(1000), 150);
        assert_eq!(probationary_length(4032), 604);
        assert_eq!(probationary_length(10_000), 750);
        assert_eq!(probationary_length(5), 0);
    }

    #[test]
    fn sigmoid_matches_nab_values() {
        assert!((scaled_sigmoid(-1.0) - 0.986_614_298_1).abs() < 1e-9);
        assert!((scaled_sigmoid(-0.5) - 0.848_283_639_9).abs() < 1e-9);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert_eq!(scaled_sigmoid(3.0), -1.0);
    }

    #[test]
    fn perfect_detector_scores_100_and_null_scores_0() {
        let windows_a = [(300, 339), (600, 619)];
        let windows_b = [(500, 549)];
        let mut a = vec![0.0; 1000];
        let mut b = vec![0.0; 800];
        // Perfect: a detection at the first row of every window, nothing else.
        for w in windows_a {
            a[w.0] = 1.0;
        }
        b[500] = 1.0;
        for profile in PROFILES {
            let r = score_corpus(&[file(&windows_a, &a), file(&windows_b, &b)], profile);
            assert!((r.normalized - 100.0).abs() < 1e-9, "{profile:?}: {r:?}");
            assert_eq!(r.threshold, 1.0);
            assert_eq!(
                (r.detected_windows, r.windows, r.false_positives),
                (3, 3, 0)
            );
        }
        let zeros_a = vec![0.0; 1000];
        let zeros_b = vec![0.0; 800];
        for profile in PROFILES {
            let r = score_corpus(
                &[file(&windows_a, &zeros_a), file(&windows_b, &zeros_b)],
                profile,
            );
            assert_eq!(r.normalized, 0.0, "{profile:?}");
            assert_eq!(r.threshold, 1.1);
            assert_eq!(r.raw, -3.0 * profile.fn_weight);
        }
    }

    #[test]
    fn late_detection_and_false_positives_cost_what_nab_says() {
        let windows = [(200, 299)];
        let mut s = vec![0.0; 1000];
        // Detected half-way through the window: p = -(299 - 250 + 1) / 100 = -0.5.
        s[250] = 0.9;
        // One false positive before the window (-A_FP) and one 50 rows after it:
        // d = 50 / 99.
        s[160] = 0.95;
        s[349] = 0.95;
        let p = PROFILES[0];
        let tp = scaled_sigmoid(-0.5) / scaled_sigmoid(-1.0);
        let fp = -0.11 + 0.11 * scaled_sigmoid(50.0 / 99.0);
        let got = score_file(&file(&windows, &s), p, 0.9);
        assert!((got - (tp + fp)).abs() < 1e-12, "{got} vs {}", tp + fp);
        // At 0.95 only the false positives count and the window is missed.
        let got = score_file(&file(&windows, &s), p, 0.95);
        assert!((got - (fp - 1.0)).abs() < 1e-12);
        // The sweep picks the better of the two (tp + fp > -1 + fp).
        let r = score_corpus(&[file(&windows, &s)], p);
        assert_eq!(r.threshold, 0.9);
        assert!((r.raw - (tp + fp)).abs() < 1e-12);
        assert_eq!(r.false_positives, 2);
    }

    #[test]
    fn probationary_rows_are_ignored() {
        // 1000 rows: probation 150. A detection at row 10 costs nothing.
        let windows = [(400, 449)];
        let mut s = vec![0.0; 1000];
        s[10] = 1.0;
        s[400] = 1.0;
        let r = score_corpus(&[file(&windows, &s)], PROFILES[0]);
        assert!((r.normalized - 100.0).abs() < 1e-9);
        // A window wholly inside the probation neither counts as missed nor detected.
        let windows = [(10, 20), (400, 449)];
        let r = score_corpus(&[file(&windows, &s)], PROFILES[0]);
        assert_eq!(r.null, -1.0);
        assert_eq!(r.raw, 1.0);
    }

    #[test]
    fn windowed_gaussian_matches_nab_published_rows() {
        // First rows of NAB's results/windowedGaussian/realTraffic/windowedGaussian_speed_7578.csv.
        let values = [73.0, 62.0, 66.0, 69.0, 65.0, 76.0];
        let expected = [
            0.0,
            0.0,
            0.392_531_434_274,
            0.670_010_205_067,
            0.267_571_726_199,
            0.991_921_534_369,
        ];
        let got = windowed_gaussian(&values);
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 5e-6, "{got:?}");
        }
    }

    #[test]
    fn erfc_is_accurate() {
        assert!((erfc(0.0) - 1.0).abs() < 1e-7);
        assert!((erfc(1.0) - 0.157_299_207_050_285).abs() < 1e-7 * 0.16);
        assert!((erfc(-1.0) - 1.842_700_792_949_715).abs() < 1e-7);
        assert!((erfc(5.0) / 1.537_459_794_428_035e-12 - 1.0).abs() < 1e-6);
    }
}
