//! Result rows as CSV lines, as the Nexmark queries' sinks would hold them: columns in the
//! order of the query's SELECT, timestamps as `yyyy-MM-dd HH:mm:ss.SSS` in UTC.

/// `millis` since the epoch as `yyyy-MM-dd HH:mm:ss.SSS` (UTC).
pub fn timestamp(millis: i64) -> String {
    let mut text = Row::default();
    text.push_timestamp(millis);
    String::from_utf8_lossy(&text.bytes).into_owned()
}

/// A CSV row being written, digit by digit into its bytes: no formatting machinery on the hot
/// path (`write!` costs more than the digits themselves), and the date of the last timestamp
/// kept, since consecutive events mostly fall on one day.
#[derive(Default)]
pub struct Row {
    pub bytes: Vec<u8>,
    /// The day number and `yyyy-MM-dd ` of the last timestamp written.
    day: Option<(i64, [u8; 11])>,
}

/// `00` to `99`, two bytes each.
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

impl Row {
    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    pub fn push(&mut self, byte: u8) {
        self.bytes.push(byte);
    }

    pub fn push_str(&mut self, text: &str) {
        self.bytes.extend_from_slice(text.as_bytes());
    }

    /// Appends `n` in decimal, two digits per division.
    pub fn push_u64(&mut self, mut n: u64) {
        let mut buf = [0u8; 20];
        let mut at = buf.len();
        while n >= 100 {
            let pair = (n % 100) as usize * 2;
            n /= 100;
            at -= 2;
            buf[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        }
        if n >= 10 {
            let pair = n as usize * 2;
            at -= 2;
            buf[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
        } else {
            at -= 1;
            buf[at] = b'0' + n as u8;
        }
        self.bytes.extend_from_slice(&buf[at..]);
    }

    /// Appends `millis` since the epoch as `yyyy-MM-dd HH:mm:ss.SSS` (UTC).
    pub fn push_timestamp(&mut self, millis: i64) {
        let day = millis.div_euclid(86_400_000);
        let date = match self.day {
            Some((last, date)) if last == day => date,
            _ => {
                let (year, month, day_of_month) = civil_from_days(day);
                let mut date = *b"0000-00-00 ";
                put_digits(&mut date[0..4], year.clamp(0, 9999) as u32);
                put_digits(&mut date[5..7], month);
                put_digits(&mut date[8..10], day_of_month);
                self.day = Some((day, date));
                date
            }
        };
        let of_day = millis.rem_euclid(86_400_000) as u32;
        let mut time = *b"00:00:00.000";
        put_digits(&mut time[0..2], of_day / 3_600_000);
        put_digits(&mut time[3..5], of_day / 60_000 % 60);
        put_digits(&mut time[6..8], of_day / 1_000 % 60);
        put_digits(&mut time[9..12], of_day % 1_000);
        self.bytes.extend_from_slice(&date);
        self.bytes.extend_from_slice(&time);
    }

    /// Appends [`euros`]`(price)`; in 64-bit arithmetic unless the product needs more (128-bit
    /// division is a slow library call in wasm).
    pub fn push_euros(&mut self, price: u64) {
        let (units, thousandths) = match price.checked_mul(908) {
            Some(t) => (u128::from(t / 1_000), (t % 1_000) as u32),
            None => {
                let t = u128::from(price) * 908;
                (t / 1_000, (t % 1_000) as u32)
            }
        };
        match u64::try_from(units) {
            Ok(units) => self.push_u64(units),
            Err(_) => self.push_str(&units.to_string()),
        }
        let mut decimals = *b".000";
        put_digits(&mut decimals[1..], thousandths);
        self.bytes.extend_from_slice(&decimals);
    }
}

/// Writes the last `slot.len()` decimal digits of `n` into `slot`, zero-padded.
fn put_digits(slot: &mut [u8], mut n: u32) {
    for digit in slot.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
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
    let mut text = Row::default();
    text.push_euros(price);
    String::from_utf8_lossy(&text.bytes).into_owned()
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
    fn a_row_keeps_the_date_only_for_its_day() {
        let mut row = Row::default();
        for millis in [
            1_436_918_400_000,
            1_436_918_400_001,
            1_437_004_799_999,
            1_437_004_800_000,
        ] {
            row.push_timestamp(millis);
            row.push(b',');
        }
        assert_eq!(
            String::from_utf8_lossy(&row.bytes),
            "2015-07-15 00:00:00.000,2015-07-15 00:00:00.001,2015-07-15 23:59:59.999,\
             2015-07-16 00:00:00.000,"
        );
    }

    #[test]
    fn numbers_are_decimal() {
        let mut row = Row::default();
        for n in [0, 7, 10, 99, 100, 1_234_567, u64::MAX] {
            row.push_u64(n);
            row.push(b' ');
        }
        assert_eq!(
            String::from_utf8_lossy(&row.bytes),
            format!("0 7 10 99 100 1234567 {} ", u64::MAX)
        );
    }

    #[test]
    fn euros_keep_three_exact_decimals() {
        assert_eq!(euros(0), "0.000");
        assert_eq!(euros(1), "0.908");
        assert_eq!(euros(73_134_520), "66406144.160");
        assert_eq!(euros(u64::MAX), "16749643618928272866.420");
    }
}
