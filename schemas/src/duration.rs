//! Durations given on the command line or in the environment: one parser for every option,
//! so a number means the same everywhere.

use std::time::Duration;

/// A number and its unit: `250ms`, `90s`, `30m` (or `30min`), `1.5h`, `7d`. A bare number
/// is refused (is `30` seconds or milliseconds?), except `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 250ms, 30s, 15m, 12h, 7d)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        "" if n == 0.0 => 0.0,
        "" => {
            return Err(format!(
                "{text:?} needs a unit: ms, s, m, h or d (e.g. {number}s)"
            ));
        }
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use ms, s, m, h or d)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

/// A positive duration (see [`parse_duration`]), in milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let d = parse_duration(text)?;
    i64::try_from(d.as_millis())
        .ok()
        .filter(|ms| *ms > 0)
        .ok_or_else(|| format!("{text:?} must be at least 1ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_units() {
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("7d"), Ok(7 * 86_400_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert!(
            parse_duration_ms("250").is_err(),
            "a bare number needs a unit"
        );
        assert!(parse_duration_ms("5w").is_err());
        assert!(parse_duration_ms("0s").is_err());
    }

    #[test]
    fn reads_every_unit_and_fractions() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("30min"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration(" 2 h "), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_a_bare_number_and_says_which_units() {
        let e = parse_duration("250").unwrap_err();
        assert!(e.contains("needs a unit") && e.contains("250s"), "{e}");
        assert!(parse_duration("5w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("").is_err());
    }
}
