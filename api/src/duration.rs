//! Durations as people write them, on the command line and in the policy file: `90s`, `30m`,
//! `1h`, `2h30m`, `7d`.

use std::time::Duration;

/// Parses a duration made of `<number><unit>` parts, units `s`, `m`, `h`, `d`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("a duration may not be empty; examples: 30m, 1h, 2h30m, 7d".to_owned());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("unknown unit `{c}` in {text:?}; use s, m, h or d")),
        };
        if number.is_empty() {
            return Err(format!("`{c}` in {text:?} has no number before it"));
        }
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{number:?} in {text:?} is too large"))?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("{text:?} is too long"))?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!(
            "{text:?} ends without a unit; write e.g. {number}m or {number}h"
        ));
    }
    if total == 0 {
        return Err(format!("{text:?} is zero; a duration must be positive"));
    }
    Ok(Duration::from_secs(total))
}

/// Writes a duration the way [`parse`] reads it, in its largest exact units: `2h`, `1h30m`,
/// `90s` stays `1m30s`.
pub fn format(duration: Duration) -> String {
    let mut left = duration.as_secs();
    if left == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for (unit, secs) in [('d', 86_400), ('h', 3600), ('m', 60), ('s', 1)] {
        if left >= secs {
            text.push_str(&(left / secs).to_string());
            text.push(unit);
            left %= secs;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("30m"), Ok(Duration::from_mins(30)));
        assert_eq!(parse("1h"), Ok(Duration::from_hours(1)));
        assert_eq!(parse("2h30m"), Ok(Duration::from_mins(150)));
        assert_eq!(parse("7d"), Ok(Duration::from_hours(7 * 24)));
    }

    #[test]
    fn formats_what_it_parses() {
        for text in ["90s", "1m30s", "2h", "2h30m", "1d2h", "4h"] {
            let parsed = parse(text).expect(text);
            assert_eq!(parse(&format(parsed)), Ok(parsed), "{text}");
        }
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_mins(150)), "2h30m");
    }

    #[test]
    fn refuses_nonsense() {
        for bad in ["", "1", "h", "1x", "0m", "99999999999999999999d"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
