//! When each event goes out, in wall-clock time since the replay started. Pure: the replay
//! loop asks and sleeps.

use std::time::Duration;

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as the sink takes them.
    Max,
    /// A fixed number of rows per second, whatever their event times.
    Rate(f64),
    /// Event time runs this many times faster than the wall clock: gaps between rows, and
    /// the label delay, shrink by this factor.
    Speedup(f64),
}

impl Pace {
    pub fn validate(self) -> Result<Self, String> {
        match self {
            Pace::Rate(r) | Pace::Speedup(r) if !(r.is_finite() && r > 0.0) => Err(format!(
                "rate and speed-up must be positive numbers, got {r}"
            )),
            p => Ok(p),
        }
    }
}

/// Maps rows and event times to wall-clock offsets from the start of the replay.
#[derive(Debug, Clone)]
pub struct Pacer {
    pace: Pace,
    /// The first row's event time: event time zero of a speed-up replay.
    origin: Option<i64>,
}

impl Pacer {
    pub fn new(pace: Pace) -> Self {
        Self { pace, origin: None }
    }

    /// When the `index`-th row sent (0-based) is due; `None` means now.
    pub fn row_at(&mut self, index: u64, event_time: i64) -> Option<Duration> {
        let origin = *self.origin.get_or_insert(event_time);
        match self.pace {
            Pace::Max => None,
            Pace::Rate(r) => Some(Duration::from_secs_f64(index as f64 / r)),
            Pace::Speedup(x) => Some(scaled(event_time - origin, x)),
        }
    }

    /// When something due at `event_time` (ground truth) goes out. Only a speed-up replay
    /// has a wall clock for event time; otherwise event time advances with the rows, and
    /// `None` means "as soon as the rows have got there".
    pub fn event_at(&self, event_time: i64) -> Option<Duration> {
        match (self.pace, self.origin) {
            (Pace::Speedup(x), Some(origin)) => Some(scaled(event_time - origin, x)),
            _ => None,
        }
    }
}

/// Event-time milliseconds compressed by the speed-up; rows before the origin (a file not
/// quite in order) are due at once.
fn scaled(event_ms: i64, speedup: f64) -> Duration {
    Duration::from_secs_f64((event_ms.max(0) as f64 / 1000.0) / speedup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_never_waits() {
        let mut p = Pacer::new(Pace::Max);
        assert_eq!(p.row_at(0, 1000), None);
        assert_eq!(p.row_at(5, 9000), None);
        assert_eq!(p.event_at(9000), None);
    }

    #[test]
    fn rate_spaces_rows_evenly_whatever_their_times() {
        let mut p = Pacer::new(Pace::Rate(4.0));
        assert_eq!(p.row_at(0, 50_000), Some(Duration::ZERO));
        assert_eq!(p.row_at(1, 50_000), Some(Duration::from_millis(250)));
        assert_eq!(p.row_at(8, 99_000_000), Some(Duration::from_secs(2)));
        assert_eq!(p.event_at(99_000_000), None);
    }

    #[test]
    fn speedup_compresses_event_time_from_the_first_row() {
        let mut p = Pacer::new(Pace::Speedup(3600.0));
        let t0 = 1_357_016_400_000;
        assert_eq!(p.row_at(0, t0), Some(Duration::ZERO));
        // An hour of event time is a second of wall time.
        assert_eq!(p.row_at(1, t0 + 3_600_000), Some(Duration::from_secs(1)));
        // A label delay of 30 minutes lands half a second after its row.
        assert_eq!(
            p.event_at(t0 + 3_600_000 + 1_800_000),
            Some(Duration::from_millis(1500))
        );
        // A row earlier than the first is due at once.
        assert_eq!(p.row_at(2, t0 - 60_000), Some(Duration::ZERO));
    }

    #[test]
    fn rejects_non_positive_rates() {
        assert!(Pace::Rate(0.0).validate().is_err());
        assert!(Pace::Speedup(f64::NAN).validate().is_err());
        assert!(Pace::Rate(10.0).validate().is_ok());
    }
}
