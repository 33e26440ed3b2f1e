//! Concept drift on a model's error stream: ADWIN, Page-Hinkley and DDM.
//!
//! The monitor's window statistics see a change in what comes in; these see a change in
//! how wrong the model is, one joined error at a time, as soon as labels arrive. Each is
//! the detector River (`river.drift`) defines, with River's defaults and River's
//! arithmetic, so a stream gives the same verdicts here as there
//! (`tests/river_fixtures.rs`, fixtures made by River itself). As in River, a detector
//! that has signalled drift starts afresh on its next value.
//!
//! Pure state machines: the caller feeds values and keeps the state (they serialise).

use serde::{Deserialize, Serialize};

/// ADWIN's settings (River's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdwinParams {
    /// Confidence: the chance of a false cut at any one check.
    pub delta: f64,
    /// Check for a cut every `clock` values.
    pub clock: u64,
    /// Summaries of each size kept before two are merged.
    pub max_buckets: usize,
    /// The fewest values either side of a cut.
    pub min_window_length: u64,
    /// No check until the window holds more than this many values.
    pub grace_period: u64,
}

impl Default for AdwinParams {
    fn default() -> Self {
        Self {
            delta: 0.002,
            clock: 32,
            max_buckets: 5,
            min_window_length: 5,
            grace_period: 10,
        }
    }
}

/// One size class of ADWIN's exponential histogram: summaries of 2^i values each, the
/// oldest first, as (sum, sum of squared deviations from their own mean).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Row(Vec<(f64, f64)>);

/// ADaptive WINdowing (Bifet and Gavaldà, 2007): a window over the stream that drops its
/// oldest part whenever the means of an older and a newer part differ by more than a
/// Hoeffding-style bound allows; each drop is a drift. The window is kept as an
/// exponential histogram (row `i` summarises 2^i values), so memory grows with the log of
/// the window's width.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adwin {
    params: AdwinParams,
    /// Row 0 holds single values and is the newest.
    rows: Vec<Row>,
    width: f64,
    total: f64,
    /// The sum of squared deviations from the window's mean.
    variance: f64,
    tick: u64,
    drift: bool,
}

impl Adwin {
    pub fn new(params: AdwinParams) -> Self {
        Self {
            params,
            rows: vec![Row::default()],
            width: 0.0,
            total: 0.0,
            variance: 0.0,
            tick: 0,
            drift: false,
        }
    }

    /// Adds a value; true when the window was cut (a drift).
    pub fn update(&mut self, x: f64) -> bool {
        if self.drift {
            *self = Self::new(self.params);
        }
        self.insert(x);
        self.drift = self.cut();
        self.drift
    }

    /// How many values the window holds.
    pub fn width(&self) -> f64 {
        self.width
    }

    pub fn total(&self) -> f64 {
        self.total
    }

    /// The sum of squared deviations from the window's mean (River's `variance`).
    pub fn variance(&self) -> f64 {
        self.variance
    }

    /// The window's mean.
    pub fn estimation(&self) -> f64 {
        if self.width == 0.0 {
            0.0
        } else {
            self.total / self.width
        }
    }

    fn insert(&mut self, x: f64) {
        self.rows[0].0.push((x, 0.0));
        self.width += 1.0;
        if self.width > 1.0 {
            let d = x - self.total / (self.width - 1.0);
            self.variance += (self.width - 1.0) * d * d / self.width;
        }
        self.total += x;
        self.merge();
    }

    /// A row with one summary too many merges its two oldest into one of the next size,
    /// which may overflow in turn.
    fn merge(&mut self) {
        let mut i = 0;
        while self.rows[i].0.len() > self.params.max_buckets {
            let n = size(i);
            let (a, b) = (self.rows[i].0[0], self.rows[i].0[1]);
            let d = a.0 / n - b.0 / n;
            let merged = (a.0 + b.0, a.1 + b.1 + n * n * d * d / (n + n));
            self.rows[i].0.drain(..2);
            if self.rows.len() == i + 1 {
                self.rows.push(Row::default());
            }
            self.rows[i + 1].0.push(merged);
            i += 1;
        }
    }

    /// Every `clock` values, tries each cut from the oldest summary on; on a cut, drops
    /// the oldest summary and tries again.
    fn cut(&mut self) -> bool {
        self.tick += 1;
        let p = self.params;
        if !self.tick.is_multiple_of(p.clock) || self.width <= p.grace_period as f64 {
            return false;
        }
        let min = p.min_window_length as f64;
        let mut cut = false;
        'again: loop {
            let (mut n0, mut n1, mut u0, mut u1) = (0.0, self.width, 0.0, self.total);
            for i in (0..self.rows.len()).rev() {
                let n = size(i);
                let len = self.rows[i].0.len();
                for k in 0..len {
                    let u = self.rows[i].0[k].0;
                    n0 += n;
                    n1 -= n;
                    u0 += u;
                    u1 -= u;
                    if i == 0 && k == len - 1 {
                        // The newest value: nothing after it to compare with.
                        break 'again;
                    }
                    let delta_mean = u0 / n0 - u1 / n1;
                    if n1 >= min && n0 >= min && self.differ(n0, n1, delta_mean) {
                        cut = true;
                        if self.width > 0.0 {
                            self.drop_oldest();
                            continue 'again;
                        }
                    }
                }
            }
            break;
        }
        cut
    }

    /// Whether two parts of `n0` and `n1` values whose means differ by `delta_mean` differ
    /// by more than chance allows at confidence `delta`.
    fn differ(&self, n0: f64, n1: f64, delta_mean: f64) -> bool {
        let min = self.params.min_window_length as f64;
        let delta_prime = (2.0 * self.width.ln() / self.params.delta).ln();
        let m_recip = 1.0 / (n0 - min + 1.0) + 1.0 / (n1 - min + 1.0);
        let epsilon = (2.0 * m_recip * (self.variance / self.width) * delta_prime).sqrt()
            + 2.0 / 3.0 * delta_prime * m_recip;
        delta_mean.abs() > epsilon
    }

    fn drop_oldest(&mut self) {
        let last = self.rows.len() - 1;
        let n = size(last);
        let (u, v) = self.rows[last].0[0];
        self.width -= n;
        self.total -= u;
        let d = u / n - self.total / self.width;
        self.variance -= v + n * self.width * d * d / (n + self.width);
        self.rows[last].0.remove(0);
        if self.rows[last].0.is_empty() {
            self.rows.pop();
        }
    }
}

impl Default for Adwin {
    fn default() -> Self {
        Self::new(AdwinParams::default())
    }
}

/// How many values a summary in row `i` stands for.
fn size(i: usize) -> f64 {
    (1u64 << i) as f64
}

/// Which way of change Page-Hinkley watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The mean rises (an error stream: the model gets worse).
    Up,
    /// The mean falls.
    Down,
    #[default]
    Both,
}

/// Page-Hinkley's settings (River's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PageHinkleyParams {
    /// No verdict before this many values.
    pub min_instances: u64,
    /// The magnitude of change tolerated.
    pub delta: f64,
    /// The cumulative deviation that is a drift (lambda).
    pub threshold: f64,
    /// The fading factor of the cumulative sums.
    pub alpha: f64,
    pub mode: Mode,
}

impl Default for PageHinkleyParams {
    fn default() -> Self {
        Self {
            min_instances: 30,
            delta: 0.005,
            threshold: 50.0,
            alpha: 1.0 - 0.0001,
            mode: Mode::Both,
        }
    }
}

/// The Page-Hinkley test (Page, 1954): a CUSUM of each value's deviation from the running
/// mean, with a fading factor; a drift when the sum has moved more than `threshold`
/// from its extreme.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageHinkley {
    params: PageHinkleyParams,
    mean: Mean,
    sum_up: f64,
    sum_down: f64,
    /// The lowest `sum_up` so far (none yet: +infinity).
    min_up: Option<f64>,
    /// The highest `sum_down` so far; River starts it at -1, not at -infinity.
    max_down: f64,
    drift: bool,
}

impl PageHinkley {
    pub fn new(params: PageHinkleyParams) -> Self {
        Self {
            params,
            mean: Mean::default(),
            sum_up: 0.0,
            sum_down: 0.0,
            min_up: None,
            max_down: -1.0,
            drift: false,
        }
    }

    /// Adds a value; true on a drift.
    pub fn update(&mut self, x: f64) -> bool {
        if self.drift {
            *self = Self::new(self.params);
        }
        let p = self.params;
        self.mean.update(x);
        let dev = x - self.mean.mean;
        self.sum_up = p.alpha * self.sum_up + dev - p.delta;
        self.sum_down = p.alpha * self.sum_down + dev + p.delta;
        if self.min_up.is_none_or(|m| self.sum_up < m) {
            self.min_up = Some(self.sum_up);
        }
        if self.sum_down > self.max_down {
            self.max_down = self.sum_down;
        }
        if self.mean.n >= p.min_instances as f64 {
            let up = self.sum_up - self.min_up.unwrap_or(f64::INFINITY);
            let down = self.max_down - self.sum_down;
            self.drift = match p.mode {
                Mode::Up => up > p.threshold,
                Mode::Down => down > p.threshold,
                Mode::Both => up > p.threshold || down > p.threshold,
            };
        }
        self.drift
    }
}

impl Default for PageHinkley {
    fn default() -> Self {
        Self::new(PageHinkleyParams::default())
    }
}

/// DDM's settings (River's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DdmParams {
    /// No verdict until more than this many values.
    pub warm_start: u64,
    /// Standard deviations above the best error rate that are a warning.
    pub warning_threshold: f64,
    /// ... and a drift.
    pub drift_threshold: f64,
}

impl Default for DdmParams {
    fn default() -> Self {
        Self {
            warm_start: 30,
            warning_threshold: 2.0,
            drift_threshold: 3.0,
        }
    }
}

/// What a detector says after a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    Stable,
    Warning,
    Drift,
}

/// The Drift Detection Method (Gama et al., 2004) for a stream of mistakes (true: the
/// model was wrong): the error rate p and its binomial standard deviation s; a warning
/// when p + s passes the best p_min + 2 s_min seen, a drift past p_min + 3 s_min.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ddm {
    params: DdmParams,
    p: Mean,
    /// The best (p, s) so far: the lowest p + s after the warm start.
    best: Option<(f64, f64)>,
    signal: Signal,
}

impl Ddm {
    pub fn new(params: DdmParams) -> Self {
        Self {
            params,
            p: Mean::default(),
            best: None,
            signal: Signal::Stable,
        }
    }

    /// Adds one outcome (true: a mistake).
    pub fn update(&mut self, wrong: bool) -> Signal {
        if self.signal == Signal::Drift {
            *self = Self::new(self.params);
        }
        let params = self.params;
        self.p.update(if wrong { 1.0 } else { 0.0 });
        let (p, n) = (self.p.mean, self.p.n);
        let s = (p * (1.0 - p) / n).sqrt();
        if n > params.warm_start as f64 {
            if self.best.is_none_or(|(bp, bs)| p + s <= bp + bs) {
                self.best = Some((p, s));
            }
            let (p_min, s_min) = self.best.unwrap_or((p, s));
            self.signal = if p + s > p_min + params.drift_threshold * s_min {
                Signal::Drift
            } else if p + s > p_min + params.warning_threshold * s_min {
                Signal::Warning
            } else {
                Signal::Stable
            };
        }
        self.signal
    }
}

impl Default for Ddm {
    fn default() -> Self {
        Self::new(DdmParams::default())
    }
}

/// Which detector watches a model's error stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Watch {
    /// None: only the windowed error against the holdout speaks for performance.
    #[default]
    Off,
    Adwin,
    /// Page-Hinkley on rises only.
    PageHinkley,
    /// DDM, for classifiers (a regressor's errors are not mistakes; it never fires).
    Ddm,
}

impl std::str::FromStr for Watch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" | "none" => Ok(Self::Off),
            "adwin" => Ok(Self::Adwin),
            "page-hinkley" | "page_hinkley" | "ph" => Ok(Self::PageHinkley),
            "ddm" => Ok(Self::Ddm),
            other => Err(format!(
                "error detector {other:?}: expected off, adwin, page-hinkley or ddm"
            )),
        }
    }
}

/// A detector on one model version's errors: the absolute error of each regression, or
/// 1 for each classification mistake and 0 for each right answer. Only a rise counts: ADWIN
/// also cuts when the errors fall, and a model doing better is no reason to retrain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ErrorWatch {
    Adwin(Adwin),
    PageHinkley(PageHinkley),
    Ddm(Ddm),
}

impl ErrorWatch {
    /// River's default settings for each (Page-Hinkley watching rises only).
    pub fn new(watch: Watch) -> Option<Self> {
        match watch {
            Watch::Off => None,
            Watch::Adwin => Some(Self::Adwin(Adwin::default())),
            Watch::PageHinkley => Some(Self::PageHinkley(PageHinkley::new(PageHinkleyParams {
                mode: Mode::Up,
                ..Default::default()
            }))),
            Watch::Ddm => Some(Self::Ddm(Ddm::default())),
        }
    }

    /// Feeds one error; says why when the errors rose. A value that is not finite is
    /// skipped (one would poison every sum after it).
    pub fn update(&mut self, error: f64) -> Option<String> {
        if !error.is_finite() {
            return None;
        }
        match self {
            Self::Adwin(a) => {
                let before = a.estimation();
                (a.update(error) && a.estimation() > before).then(|| {
                    format!(
                        "ADWIN: the mean error rose from {before:.4} to {:.4} over the last {} joined predictions",
                        a.estimation(),
                        a.width()
                    )
                })
            }
            Self::PageHinkley(ph) => ph.update(error).then(|| {
                format!(
                    "Page-Hinkley: the error's cumulative rise passed {}",
                    ph.params.threshold
                )
            }),
            Self::Ddm(d) => (d.update(error > 0.0) == Signal::Drift).then(|| {
                let (p_min, s_min) = d.best.unwrap_or_default();
                format!(
                    "DDM: the error rate {:.4} passed its best {p_min:.4} by more than {} standard deviations of {s_min:.4}",
                    d.p.mean, d.params.drift_threshold
                )
            }),
        }
    }
}

/// A running mean, updated as River's `stats.Mean` is (same rounding).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Mean {
    n: f64,
    mean: f64,
}

impl Mean {
    fn update(&mut self, x: f64) {
        self.n += 1.0;
        self.mean += (1.0 / self.n) * (x - self.mean);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adwin_keeps_a_constant_stream_whole_in_a_logarithmic_number_of_rows() {
        let mut a = Adwin::default();
        for _ in 0..10_000 {
            assert!(!a.update(1.0));
        }
        assert_eq!(a.width(), 10_000.0);
        assert_eq!(a.estimation(), 1.0);
        assert!(a.rows.len() <= 14, "{} rows", a.rows.len());
    }

    #[test]
    fn adwin_cuts_a_jump_and_starts_afresh_after_it() {
        let mut a = Adwin::default();
        let hit = (0..2000)
            .map(|i| if i < 1000 { 0.0 } else { 10.0 })
            .position(|x| a.update(x))
            .unwrap();
        assert!((1000..1100).contains(&hit), "{hit}");
        assert!(a.width() < 1000.0, "the old part was dropped");
        a.update(10.0);
        assert_eq!(a.width(), 1.0, "a fresh window after a drift");
    }

    #[test]
    fn page_hinkley_up_ignores_a_fall_and_sees_a_rise() {
        let up = PageHinkleyParams {
            mode: Mode::Up,
            ..Default::default()
        };
        let mut ph = PageHinkley::new(up);
        assert!((0..2000).all(|i| !ph.update(if i < 1000 { 5.0 } else { 0.0 })));
        let mut ph = PageHinkley::new(up);
        assert!((0..2000).any(|i| ph.update(if i < 1000 { 0.0 } else { 5.0 })));
    }

    #[test]
    fn an_error_watch_speaks_of_rises_only() {
        let mut w = ErrorWatch::new(Watch::Adwin).unwrap();
        let falls: Vec<_> = (0..3000)
            .filter_map(|i| w.update(if i < 1500 { 2.0 } else { 0.5 }))
            .collect();
        assert!(falls.is_empty(), "{falls:?}");
        let mut w = ErrorWatch::new(Watch::Adwin).unwrap();
        let rises: Vec<_> = (0..3000)
            .filter_map(|i| w.update(if i < 1500 { 0.5 } else { 2.0 }))
            .collect();
        assert!(rises[0].contains("rose from 0.5"), "{rises:?}");
        assert!(ErrorWatch::new(Watch::Off).is_none());
        assert_eq!(w.update(f64::NAN), None);
    }

    #[test]
    fn ddm_warns_before_it_signals_drift_on_a_rising_error_rate() {
        let mut d = Ddm::default();
        let signals: Vec<Signal> = (0..4000)
            // 10% wrong, then every other one wrong.
            .map(|i| d.update(if i < 2000 { i % 10 == 0 } else { i % 2 == 0 }))
            .collect();
        let first = |s| signals.iter().position(|x| *x == s).unwrap();
        assert!(first(Signal::Warning) < first(Signal::Drift));
        assert!(first(Signal::Warning) >= 2000);
    }
}
