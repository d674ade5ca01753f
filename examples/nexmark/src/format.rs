//! Result rows as CSV lines, as the Nexmark queries' sinks would hold them: columns in the
//! order of the query's SELECT, timestamps as `yyyy-MM-dd HH:mm:ss.SSS` in UTC.

/// `millis` since the epoch as `yyyy-MM-dd HH:mm:ss.SSS` (UTC).
pub fn timestamp(millis: i64) -> String {
    let days = millis.div_euclid(86_400_000);
    let of_day = millis.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1_000 % 60,
        of_day % 1_000
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `price` (cents) times 0.908, exactly, with three decimals (q1's DECIMAL(23, 3)).
pub fn euros(price: u64) -> String {
    let thousandths = u128::from(price) * 908;
    format!("{}.{:03}", thousandths / 1_000, thousandths % 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000");
        assert_eq!(timestamp(1_436_918_400_000), "2015-07-15 00:00:00.000");
        assert_eq!(timestamp(951_782_400_123), "2000-02-29 00:00:00.123");
        assert_eq!(timestamp(1_709_251_199_999), "2024-02-29 23:59:59.999");
        assert_eq!(timestamp(-1), "1969-12-31 23:59:59.999");
    }

    #[test]
    fn euros_keep_three_exact_decimals() {
        assert_eq!(euros(0), "0.000");
        assert_eq!(euros(1), "0.908");
        assert_eq!(euros(73_134_520), "66406144.160");
        assert_eq!(euros(u64::MAX), "16749643618928272866.420");
    }
}
