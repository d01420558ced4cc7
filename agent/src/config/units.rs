//! Human-written durations: "90s", "12h", "1h30m", "2d".

use std::time::Duration;

/// Parses a duration made of one or more `<number><unit>` parts, units s, m, h, d, each unit at
/// most once and largest first (so "1h30m" but not "30m1h", which is more likely a typo).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    let mut next_unit = 0; // index into UNITS: units must come in decreasing order
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number at \"{rest}\""));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("number \"{}\" is too large", &rest[..digits]))?;
        let unit = rest[digits..]
            .chars()
            .next()
            .ok_or_else(|| format!("\"{}\" has no unit (s, m, h or d)", &rest[..digits]))?;
        let pos = UNITS
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(|| format!("unknown unit '{unit}' (use s, m, h or d)"))?;
        if pos < next_unit {
            return Err(format!("unit '{unit}' is repeated or out of order (write the largest unit first, e.g. \"1h30m\")"));
        }
        next_unit = pos + 1;
        let part = number
            .checked_mul(UNITS[pos].1)
            .ok_or("duration is too large")?;
        total = total.checked_add(part).ok_or("duration is too large")?;
        rest = &rest[digits + unit.len_utf8()..];
    }
    Ok(Duration::from_secs(total))
}

/// Sizes in binary units: "512MiB", "2GiB", "20G" (K/M/G/T mean KiB/MiB/GiB/TiB, as in
/// qemu-img and virt-install). Decimal "GB" is refused rather than silently read as GiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    const UNITS: [(&str, u32); 8] = [
        ("KiB", 10),
        ("MiB", 20),
        ("GiB", 30),
        ("TiB", 40),
        ("K", 10),
        ("M", 20),
        ("G", 30),
        ("T", 40),
    ];
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 {
        return Err(format!("\"{text}\" does not start with a number"));
    }
    let number: u64 = text[..digits]
        .parse()
        .map_err(|_| format!("number \"{}\" is too large", &text[..digits]))?;
    let unit = text[digits..].trim();
    if unit.is_empty() {
        return Err(format!("\"{text}\" has no unit (MiB, GiB or TiB)"));
    }
    let shift = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, s)| *s)
        .ok_or_else(|| format!("unknown size unit \"{unit}\" (use KiB, MiB, GiB or TiB)"))?;
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| "size is too large".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary_and_need_a_unit() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert!(parse_size("2").is_err());
        assert!(parse_size("2GB").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn parses_single_and_combined_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("1d2h3m4s"),
            Ok(Duration::from_secs(86_400 + 7200 + 180 + 4))
        );
    }

    #[test]
    fn refuses_missing_units_unknown_units_and_disorder() {
        assert!(parse_duration("").is_err());
        assert!(parse_duration("60").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("30m1h").is_err());
        assert!(parse_duration("1h1h").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("999999999999999d").is_err());
    }
}
