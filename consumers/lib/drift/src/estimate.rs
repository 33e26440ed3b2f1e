//! Performance before labels: NannyML's confidence-based performance estimation (CBPE)
//! of a binary classifier's accuracy.
//!
//! A prediction whose calibrated probability of the positive class is p is right with
//! chance p when it says positive and 1 − p when it says negative, so a window's expected
//! accuracy is the mean of those chances ([`expected_correct`]), known before any label
//! arrives. It is only as good as the probabilities, so they are first calibrated on the
//! reference's labelled rows by isotonic regression ([`Isotonic`], scikit-learn's
//! `IsotonicRegression(out_of_bounds="clip")`, as NannyML's `IsotonicCalibrator`).
//! `tests/cbpe_fixtures.rs` checks the calibration and the per-chunk estimates against
//! NannyML 0.13.1 on its car-loan data. (NannyML calibrates only when cross-validated
//! calibration lowers the pooled expected calibration error of its folds; on that data
//! it does.)

use driftline_schemas::events::{ClassCalibration, PerformanceEstimator, Prediction};

/// A monotone increasing step function fitted by pool-adjacent-violators, read between its
/// points by linear interpolation and clipped outside them (scikit-learn's
/// `IsotonicRegression(increasing=True, out_of_bounds="clip")`).
#[derive(Debug, Clone, PartialEq)]
pub struct Isotonic {
    /// Distinct inputs, ascending.
    x: Vec<f64>,
    /// The fitted value at each.
    y: Vec<f64>,
}

impl Isotonic {
    /// Fits `y` on `x` (pairs with a non-finite value are skipped); `None` without any.
    pub fn fit(x: &[f64], y: &[f64]) -> Option<Self> {
        let mut pairs: Vec<(f64, f64)> = x
            .iter()
            .zip(y)
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .map(|(a, b)| (*a, *b))
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        // Equal inputs pooled first: their mean with their count as weight.
        let mut xs: Vec<f64> = Vec::new();
        let mut sums: Vec<(f64, f64)> = Vec::new();
        for (a, b) in pairs {
            match (xs.last(), sums.last_mut()) {
                (Some(last), Some(s)) if *last == a => {
                    s.0 += b;
                    s.1 += 1.0;
                }
                _ => {
                    xs.push(a);
                    sums.push((b, 1.0));
                }
            }
        }
        if xs.is_empty() {
            return None;
        }
        // Pool adjacent violators: blocks of (weighted sum, weight, points).
        let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(sums.len());
        for (s, w) in sums {
            blocks.push((s, w, 1));
            while blocks.len() >= 2 {
                let (s2, w2, n2) = blocks[blocks.len() - 1];
                let (s1, w1, n1) = blocks[blocks.len() - 2];
                if s1 / w1 <= s2 / w2 {
                    break;
                }
                blocks.pop();
                let last = blocks.len() - 1;
                blocks[last] = (s1 + s2, w1 + w2, n1 + n2);
            }
        }
        let y = blocks
            .iter()
            .flat_map(|(s, w, n)| std::iter::repeat_n(s / w, *n))
            .collect();
        Some(Self { x: xs, y })
    }

    /// The fitted function at `x`: interpolated between the fitted points, the end value
    /// outside them.
    pub fn predict(&self, x: f64) -> f64 {
        let n = self.x.len();
        if x <= self.x[0] || n == 1 {
            return self.y[0];
        }
        if x >= self.x[n - 1] {
            return self.y[n - 1];
        }
        let i = self.x.partition_point(|v| *v <= x);
        let (x0, x1, y0, y1) = (self.x[i - 1], self.x[i], self.y[i - 1], self.y[i]);
        y0 + (x - x0) * (y1 - y0) / (x1 - x0)
    }
}

/// The chance a prediction is right: `p` (the calibrated probability of the positive
/// class) when it said positive, 1 − `p` when it said negative.
pub fn expected_correct(said_positive: bool, p: f64) -> f64 {
    if said_positive { p } else { 1.0 - p }
}

impl Isotonic {
    /// The fitted function from its points (as [`Isotonic::points`] gives them); `None`
    /// when they are empty, of different lengths or not ascending.
    pub fn from_points(x: &[f64], y: &[f64]) -> Option<Self> {
        let ok = !x.is_empty()
            && x.len() == y.len()
            && x.windows(2).all(|w| w[0] < w[1])
            && y.iter().all(|v| v.is_finite());
        ok.then(|| Self {
            x: x.to_vec(),
            y: y.to_vec(),
        })
    }

    /// Its distinct inputs, ascending, and the fitted value at each.
    pub fn points(&self) -> (&[f64], &[f64]) {
        (&self.x, &self.y)
    }
}

/// A holdout row an estimator is fitted on (rows in time order): the model's probability
/// of each class (in the estimator's class order), the class it said and the true one.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub probabilities: Vec<f64>,
    pub predicted: usize,
    pub truth: usize,
}

/// Fits CBPE on a classifier's holdout, as NannyML does: for two classes the second
/// (`classes[1]`, the positive one) alone, for more each class against the rest; a class's
/// isotonic calibration is kept only when cross-validation shows it lowers the calibration
/// error ([`needs_calibration`]). With it: the spread of the 0/1 correctness (the
/// estimate's sampling error) and the mean estimated error over sub-windows in time order
/// (the line for a drop). `None` for fewer than two classes or rows, or a holdout of one
/// class.
pub fn fit_estimator(classes: &[String], rows: &[Scored]) -> Option<PerformanceEstimator> {
    fit_estimator_deciding(classes, rows, |_, p, truth| needs_calibration(p, truth))
}

/// [`fit_estimator`] with the decision to calibrate a class taken by `calibrate(class
/// index, probabilities, 0/1 truths)` (NannyML's own decisions, in the parity tests).
pub fn fit_estimator_deciding(
    classes: &[String],
    rows: &[Scored],
    calibrate: impl Fn(usize, &[f64], &[f64]) -> bool,
) -> Option<PerformanceEstimator> {
    let k = classes.len();
    let rows: Vec<&Scored> = rows
        .iter()
        .filter(|r| {
            r.probabilities.len() == k
                && r.probabilities.iter().all(|p| p.is_finite())
                && r.predicted < k
                && r.truth < k
        })
        .collect();
    let n = rows.len();
    if k < 2 || n < 2 || rows.iter().all(|r| r.truth == rows[0].truth) {
        return None;
    }
    let calibrated: Vec<usize> = if k == 2 { vec![1] } else { (0..k).collect() };
    let calibrations = calibrated
        .iter()
        .map(|&c| {
            let p: Vec<f64> = rows.iter().map(|r| r.probabilities[c]).collect();
            let truth: Vec<f64> = rows
                .iter()
                .map(|r| f64::from(u8::from(r.truth == c)))
                .collect();
            let fitted = calibrate(c, &p, &truth)
                .then(|| Isotonic::fit(&p, &truth))
                .flatten();
            let (x, y) = fitted.map_or((Vec::new(), Vec::new()), |f| (f.x, f.y));
            ClassCalibration {
                class: classes[c].clone(),
                x,
                y,
            }
        })
        .collect();
    let record = PerformanceEstimator {
        classes: calibrations,
        correct_sd: 0.0,
        sub_windows: Vec::new(),
    };
    let estimator = Estimator::new(&record);
    let errors: Vec<f64> = rows
        .iter()
        .map(|r| 1.0 - estimator.chance_of(&r.probabilities, r.predicted, classes))
        .collect();
    let correct: Vec<f64> = rows
        .iter()
        .map(|r| f64::from(u8::from(r.predicted == r.truth)))
        .collect();
    let mean = correct.iter().sum::<f64>() / n as f64;
    let var = correct.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    Some(PerformanceEstimator {
        correct_sd: var.sqrt(),
        sub_windows: crate::calibrate::mean_sub_windows(&errors),
        ..record
    })
}

/// Whether isotonic calibration makes probabilities closer to the outcomes' frequencies,
/// as NannyML decides (`nannyml.calibration.needs_calibration`): calibrate on 90% of the
/// rows, read the other 10%, ten times; pool the held-out rows and compare their expected
/// calibration error ([`calibration_error`], 10 bins) before and after. NannyML draws the
/// ten folds by a seeded stratified shuffle; here fold k is every tenth row from the k-th,
/// so the same rows always give the same answer. Like NannyML, it says no when a single
/// class is present.
pub fn needs_calibration(p: &[f64], truth: &[f64]) -> bool {
    const FOLDS: usize = 10;
    let n = p.len().min(truth.len());
    if n < 2 * FOLDS || truth[..n].iter().all(|t| *t == truth[0]) {
        return false;
    }
    let (mut held_p, mut held_t, mut held_c) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..FOLDS {
        let (train_p, train_t): (Vec<f64>, Vec<f64>) = (0..n)
            .filter(|i| i % FOLDS != k)
            .map(|i| (p[i], truth[i]))
            .unzip();
        let Some(calibration) = Isotonic::fit(&train_p, &train_t) else {
            return false;
        };
        for i in (k..n).step_by(FOLDS) {
            held_p.push(p[i]);
            held_t.push(truth[i]);
            held_c.push(calibration.predict(p[i]));
        }
    }
    calibration_error(&held_t, &held_p, 10) > calibration_error(&held_t, &held_c, 10)
}

/// The expected calibration error as NannyML computes it: rows sorted by probability,
/// cut into `bins` of equal count (the last takes the remainder), the mean |mean
/// probability − frequency of positives| weighted by each bin's share of the rows.
pub fn calibration_error(truth: &[f64], p: &[f64], bins: usize) -> f64 {
    let n = p.len().min(truth.len());
    if n == 0 {
        return 0.0;
    }
    let bins = if n <= 2 * bins { (n / 2).max(1) } else { bins };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| p[*a].total_cmp(&p[*b]));
    let width = n / bins;
    let mut edges: Vec<usize> = (0..=n).step_by(width).collect();
    if let Some(last) = edges.last_mut() {
        *last = n;
    }
    edges
        .windows(2)
        .map(|e| {
            let rows = &order[e[0]..e[1]];
            let k = rows.len() as f64;
            let mean_p = rows.iter().map(|i| p[*i]).sum::<f64>() / k;
            let mean_t = rows.iter().map(|i| truth[*i]).sum::<f64>() / k;
            k / n as f64 * (mean_p - mean_t).abs()
        })
        .sum()
}

/// The live side of CBPE: each prediction's chance of being right, from the version's
/// [`PerformanceEstimator`].
#[derive(Debug, Clone, PartialEq)]
pub struct Estimator {
    /// Each calibrated class with its calibration (`None`: its probability as it is).
    classes: Vec<(String, Option<Isotonic>)>,
    correct_sd: f64,
}

impl Estimator {
    pub fn new(e: &PerformanceEstimator) -> Self {
        Self {
            classes: e
                .classes
                .iter()
                .map(|c| (c.class.clone(), Isotonic::from_points(&c.x, &c.y)))
                .collect(),
            correct_sd: e.correct_sd,
        }
    }

    fn calibrate(calibration: &Option<Isotonic>, p: f64) -> f64 {
        calibration.as_ref().map_or(p, |c| c.predict(p))
    }

    /// The chance `prediction` is right; `None` without a class or without a probability
    /// for each calibrated class. Binary (one calibrated class, the positive one): its
    /// calibrated probability p when it said that class, 1 − p otherwise. Multiclass: the
    /// said class's calibrated probability over the sum of all (1 / classes when they sum
    /// to 0, as NannyML).
    pub fn chance(&self, prediction: &Prediction) -> Option<f64> {
        let said = prediction.class.as_ref()?;
        if let [(positive, calibration)] = &self.classes[..] {
            let p = *prediction.probabilities.get(positive)?;
            if !p.is_finite() {
                return None;
            }
            return Some(expected_correct(
                said == positive,
                Self::calibrate(calibration, p),
            ));
        }
        let mut sum = 0.0;
        let mut own = 0.0;
        for (class, calibration) in &self.classes {
            let p = *prediction.probabilities.get(class)?;
            if !p.is_finite() {
                return None;
            }
            let c = Self::calibrate(calibration, p);
            sum += c;
            if class == said {
                own = c;
            }
        }
        Some(if sum != 0.0 {
            own / sum
        } else {
            1.0 / self.classes.len() as f64
        })
    }

    /// [`Estimator::chance`] of a holdout row: probabilities in `classes` order.
    fn chance_of(&self, probabilities: &[f64], predicted: usize, classes: &[String]) -> f64 {
        let prediction = Prediction {
            value: None,
            class: Some(classes[predicted].clone()),
            probabilities: classes
                .iter()
                .cloned()
                .zip(probabilities.iter().copied())
                .collect(),
        };
        self.chance(&prediction).unwrap_or(0.0)
    }

    /// NannyML's band around an estimate over `n` predictions: ± 3 sampling errors
    /// (the holdout's spread of correctness over √n), within [0, 1].
    pub fn band(&self, estimate: f64, n: usize) -> (f64, f64) {
        let (lower, upper) = band(estimate, self.correct_sd, n);
        (lower, upper.min(1.0))
    }
}

/// NannyML's band around an estimate over `n` predictions, CBPE's and DLE's alike:
/// ± 3 sampling errors (the holdout's per-row spread `sd` over √n), at least 0.
pub fn band(estimate: f64, sd: f64, n: usize) -> (f64, f64) {
    let half = 3.0 * sd / (n.max(1) as f64).sqrt();
    ((estimate - half).max(0.0), estimate + half)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violators_are_pooled_and_read_by_interpolation() {
        let f = Isotonic::fit(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!(f.y, [1.0, 2.5, 2.5, 4.0]);
        assert_eq!(f.predict(0.0), 1.0);
        assert_eq!(f.predict(1.5), 1.75);
        assert_eq!(f.predict(9.0), 4.0);
        // Equal inputs are one point: their mean.
        let g = Isotonic::fit(&[0.5, 0.5, 0.9], &[0.0, 1.0, 1.0]).unwrap();
        assert_eq!((g.x.len(), g.y[0]), (2, 0.5));
        assert_eq!(expected_correct(false, 0.2), 0.8);
    }

    #[test]
    fn an_estimator_read_back_from_its_record_gives_each_prediction_its_chance() {
        // Scores that overstate the positive class: calibration pulls them down.
        let classes = ["no".to_string(), "yes".to_string()];
        let rows: Vec<Scored> = (0..1000)
            .map(|i| {
                let p = (i % 100) as f64 / 100.0;
                Scored {
                    probabilities: vec![1.0 - p, p],
                    predicted: usize::from(p >= 0.5),
                    truth: usize::from(((i * 37) % 100) as f64 / 100.0 < p * p),
                }
            })
            .collect();
        let record = fit_estimator(&classes, &rows).unwrap();
        let [positive] = &record.classes[..] else {
            panic!("binary: the positive class alone")
        };
        assert_eq!(positive.class, "yes");
        assert!(!positive.x.is_empty(), "calibrated");
        assert!(!record.sub_windows.is_empty());
        let e = Estimator::new(&record);
        let said = |class: &str, p: f64| Prediction {
            value: None,
            class: Some(class.into()),
            probabilities: [("yes".to_string(), p), ("no".to_string(), 1.0 - p)].into(),
        };
        let c = Isotonic::from_points(&positive.x, &positive.y).unwrap();
        assert_eq!(e.chance(&said("yes", 0.7)), Some(c.predict(0.7)));
        assert_eq!(e.chance(&said("no", 0.3)), Some(1.0 - c.predict(0.3)));
        assert_eq!(e.chance(&Prediction::default()), None);
        let (lo, hi) = e.band(0.9, 100);
        assert!((hi - lo - 6.0 * record.correct_sd / 10.0).abs() < 1e-12 || hi == 1.0);
        // One class only: nothing to estimate from.
        let same: Vec<Scored> = rows
            .iter()
            .map(|r| Scored {
                truth: 1,
                ..r.clone()
            })
            .collect();
        assert_eq!(fit_estimator(&classes, &same), None);
    }

    #[test]
    fn a_multiclass_chance_is_the_said_class_share_of_the_calibrated_probabilities() {
        let e = Estimator::new(&PerformanceEstimator {
            classes: ["a", "b", "c"]
                .iter()
                .map(|c| ClassCalibration {
                    class: c.to_string(),
                    x: Vec::new(),
                    y: Vec::new(),
                })
                .collect(),
            correct_sd: 0.5,
            sub_windows: Vec::new(),
        });
        let said = |class: &str, p: [f64; 3]| Prediction {
            value: None,
            class: Some(class.into()),
            probabilities: ["a", "b", "c"]
                .iter()
                .map(|c| c.to_string())
                .zip(p)
                .collect(),
        };
        assert_eq!(e.chance(&said("b", [0.2, 0.6, 0.2])), Some(0.6));
        // Not summing to 1 (as calibrated ones need not): normalised.
        assert_eq!(e.chance(&said("a", [0.5, 0.25, 0.25])), Some(0.5));
        assert_eq!(e.chance(&said("a", [1.0, 0.5, 0.5])), Some(0.5));
        assert_eq!(e.chance(&said("c", [0.0, 0.0, 0.0])), Some(1.0 / 3.0));
    }
}
