//! Durations and byte sizes as people write them, in manifests and on the command line:
//! `250ms`, `2s`, `1m`; `512KiB`, `64MiB`, `1GiB` (or a plain number: milliseconds, bytes).

use std::time::Duration;

/// `250ms`, `2s`, `1m`, or a plain number of milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(s);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 500ms, 2s or 1m"))?;
    match unit {
        "" | "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!("`{s}`: the unit of a duration must be ms, s or m")),
    }
}

/// `512KiB`, `64MiB`, `1GiB` (also `KB`, `MB`, `GB`, `K`, `M`, `G`, all powers of 1024), or a
/// plain number of bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let (number, unit) = split_number(s);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 512KiB, 64MiB or 1GiB"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("`{s}`: the unit of a size must be KiB, MiB or GiB")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn split_number(s: &str) -> (&str, &str) {
    let s = s.trim();
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (&s[..end], s[end..].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse_with_their_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("40"), Ok(Duration::from_millis(40)));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_duration("2h").unwrap_err().contains("ms, s or m"));
        assert!(parse_bytes("lots").unwrap_err().contains("`lots`"));
        assert!(
            parse_bytes("99999999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
    }
}
