//! Result rows as CSV lines, as the Nexmark queries' sinks would hold them: columns in the
//! order of the query's SELECT, timestamps as `yyyy-MM-dd HH:mm:ss.SSS` in UTC.

/// `millis` since the epoch as `yyyy-MM-dd HH:mm:ss.SSS` (UTC).
pub fn timestamp(millis: i64) -> String {
    let mut text = String::with_capacity(23);
    push_timestamp(&mut text, millis);
    text
}

/// Appends `millis` since the epoch as `yyyy-MM-dd HH:mm:ss.SSS` (UTC), digit by digit: no
/// formatting machinery on the hot path.
pub fn push_timestamp(out: &mut String, millis: i64) {
    let days = millis.div_euclid(86_400_000);
    let of_day = millis.rem_euclid(86_400_000) as u32;
    let (year, month, day) = civil_from_days(days);
    push_digits(out, year.clamp(0, 9999) as u32, 4);
    for (sep, n, width) in [
        ('-', month, 2),
        ('-', day, 2),
        (' ', of_day / 3_600_000, 2),
        (':', of_day / 60_000 % 60, 2),
        (':', of_day / 1_000 % 60, 2),
        ('.', of_day % 1_000, 3),
    ] {
        out.push(sep);
        push_digits(out, n, width);
    }
}

/// Appends the last `width` (at most 4) decimal digits of `n`, zero-padded.
fn push_digits(out: &mut String, mut n: u32, width: usize) {
    let mut buf = [b'0'; 4];
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    for &b in &buf[..width] {
        out.push(char::from(b));
    }
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
    let mut text = String::new();
    push_euros(&mut text, price);
    text
}

/// Appends [`euros`]`(price)`; in 64-bit arithmetic unless the product needs more (128-bit
/// division is a slow library call in wasm).
pub fn push_euros(out: &mut String, price: u64) {
    use std::fmt::Write;
    let _ = match price.checked_mul(908) {
        Some(t) => write!(out, "{}.{:03}", t / 1_000, t % 1_000),
        None => {
            let t = u128::from(price) * 908;
            write!(out, "{}.{:03}", t / 1_000, t % 1_000)
        }
    };
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
