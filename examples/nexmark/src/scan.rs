//! A lazy reader of one event line: `{"Kind":{"field":value,...}}`, stepping over the JSON
//! values a query does not need instead of building them (a full parse of every field is most
//! of what a pass-through query costs). It is a JSON tokenizer, not a pattern match: strings
//! (escapes included), numbers, nested arrays and objects are stepped over by their grammar, so
//! a key inside a string is never taken for a field. Anything it does not understand is an
//! error naming the line, as a full parse would be.

use std::borrow::Cow;

/// The fields of an event line, in order, as raw JSON values.
pub struct EventFields<'a> {
    /// `Person`, `Auction` or `Bid`.
    pub kind: &'a str,
    line: &'a [u8],
    at: usize,
    done: bool,
}

/// What is wrong with a line, and where.
#[derive(Debug, PartialEq, Eq)]
pub struct ScanError {
    pub at: usize,
    pub expected: &'static str,
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "expected {} at byte {}", self.expected, self.at)
    }
}

type Scanned<T> = Result<T, ScanError>;

impl<'a> EventFields<'a> {
    /// Reads up to the first field of the event object.
    pub fn new(line: &'a [u8]) -> Scanned<Self> {
        let mut s = EventFields {
            kind: "",
            line,
            at: 0,
            done: false,
        };
        s.expect(b'{', "`{`")?;
        let kind = s.string()?;
        s.expect(b':', "`:`")?;
        s.expect(b'{', "the event object")?;
        s.kind = match kind {
            Cow::Borrowed(k) => k,
            Cow::Owned(_) => return Err(s.error("an event kind without escapes")),
        };
        s.skip_space();
        if s.peek() == Some(b'}') {
            s.at += 1;
            s.done = true;
        }
        Ok(s)
    }

    /// The next field: its key (the bytes between its quotes, escapes left as they are: event
    /// keys have none) and its raw value (read with [`Raw::number`] or [`Raw::text`]).
    pub fn next_field(&mut self) -> Scanned<Option<(&'a [u8], Raw<'a>)>> {
        if self.done {
            return Ok(None);
        }
        self.skip_space();
        let start = self.at;
        self.skip_string()?;
        let key = &self.line[start + 1..self.at - 1];
        self.expect(b':', "`:`")?;
        self.skip_space();
        let start = self.at;
        self.skip_value()?;
        let raw = Raw(&self.line[start..self.at]);
        self.skip_space();
        match self.bump() {
            Some(b',') => self.skip_space(),
            Some(b'}') => self.done = true,
            _ => return Err(self.error("`,` or `}`")),
        }
        Ok(Some((key, raw)))
    }

    fn error(&self, expected: &'static str) -> ScanError {
        ScanError {
            at: self.at,
            expected,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.line.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8, what: &'static str) -> Scanned<()> {
        self.skip_space();
        if self.bump() != Some(byte) {
            self.at = self.at.saturating_sub(1);
            return Err(self.error(what));
        }
        Ok(())
    }

    /// A string, borrowed when it has no escapes.
    fn string(&mut self) -> Scanned<Cow<'a, str>> {
        self.skip_space();
        let start = self.at;
        self.skip_string()?;
        Raw(&self.line[start..self.at])
            .text()
            .ok_or_else(|| self.error("a string"))
    }

    fn skip_string(&mut self) -> Scanned<()> {
        if self.bump() != Some(b'"') {
            return Err(self.error("a string"));
        }
        loop {
            // Straight to the next quote or backslash: one tight loop over the string's bytes.
            let rest = &self.line[self.at..];
            let Some(stop) = quote_or_escape(rest) else {
                self.at = self.line.len();
                return Err(self.error("the end of a string"));
            };
            self.at += stop + 1;
            if rest[stop] == b'"' {
                return Ok(());
            }
            self.bump().ok_or_else(|| self.error("an escape"))?;
        }
    }

    fn skip_value(&mut self) -> Scanned<()> {
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(b'{' | b'[') => {
                // Nested: step over strings, count brackets.
                let mut depth = 0usize;
                loop {
                    match self.peek() {
                        Some(b'"') => self.skip_string()?,
                        Some(b'{' | b'[') => {
                            depth += 1;
                            self.at += 1;
                        }
                        Some(b'}' | b']') => {
                            depth -= 1;
                            self.at += 1;
                            if depth == 0 {
                                return Ok(());
                            }
                        }
                        Some(_) => self.at += 1,
                        None => return Err(self.error("the end of a nested value")),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                while matches!(
                    self.peek(),
                    Some(b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'E')
                ) {
                    self.at += 1;
                }
                Ok(())
            }
            _ => Err(self.error("a value")),
        }
    }
}

/// Where the first `"` or `\` of `bytes` is.
fn quote_or_escape(bytes: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: the host's engine (wasmtime) runs wasm SIMD; an engine that did not would
        // refuse the module when it loads, before anything runs.
        unsafe { simd::quote_or_escape(bytes) }
    }
    #[cfg(not(target_arch = "wasm32"))]
    bytes.iter().position(|&b| b == b'"' || b == b'\\')
}

/// Sixteen bytes at a time: strings (urls, `extra`) are most of a line's bytes.
#[cfg(target_arch = "wasm32")]
mod simd {
    use core::arch::wasm32::{u8x16_bitmask, u8x16_eq, u8x16_splat, v128, v128_load, v128_or};

    #[target_feature(enable = "simd128")]
    pub(super) unsafe fn quote_or_escape(bytes: &[u8]) -> Option<usize> {
        let (quote, escape) = (u8x16_splat(b'"'), u8x16_splat(b'\\'));
        let mut at = 0;
        while at + 16 <= bytes.len() {
            // SAFETY: 16 bytes from `at` lie inside `bytes`; wasm loads need no alignment.
            let chunk = unsafe { v128_load(bytes.as_ptr().add(at).cast::<v128>()) };
            let found = u8x16_bitmask(v128_or(u8x16_eq(chunk, quote), u8x16_eq(chunk, escape)));
            if found != 0 {
                return Some(at + found.trailing_zeros() as usize);
            }
            at += 16;
        }
        bytes[at..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\')
            .map(|p| at + p)
    }
}

/// A field's value as it stands in the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a>(pub &'a [u8]);

impl<'a> Raw<'a> {
    /// An unsigned integer value (up to 19 digits: every `u64` an event holds).
    pub fn number(&self) -> Option<u64> {
        // 19 digits cannot overflow, so no checked (128-bit, in wasm) arithmetic is needed.
        if self.0.is_empty() || self.0.len() > 19 {
            return None;
        }
        let mut n: u64 = 0;
        for &b in self.0 {
            if !b.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u64::from(b - b'0');
        }
        Some(n)
    }

    /// A string value's contents, unescaped (borrowed when there is nothing to unescape).
    pub fn text(&self) -> Option<Cow<'a, str>> {
        let inner = self.0.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        // Inside a string a quote comes escaped, so neither means nothing to unescape.
        if quote_or_escape(inner).is_none() {
            return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
        }
        // Rare: let serde_json read the escapes.
        serde_json::from_slice::<String>(self.0)
            .ok()
            .map(Cow::Owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &str) -> Scanned<(String, Vec<(String, String)>)> {
        let mut scan = EventFields::new(line.as_bytes())?;
        let mut out = Vec::new();
        while let Some((k, v)) = scan.next_field()? {
            out.push((
                String::from_utf8(k.to_vec()).unwrap(),
                String::from_utf8(v.0.to_vec()).unwrap(),
            ));
        }
        Ok((scan.kind.to_string(), out))
    }

    #[test]
    fn fields_come_raw_in_order_and_strings_step_over_what_looks_like_syntax() {
        let (kind, got) = fields(
            r#"{"Bid":{"auction":1000,"url":"x,\"price\":9}","extra":"a\\b","nested":{"a":[1,{"b":"}"}]},"price":73}}"#,
        )
        .unwrap();
        assert_eq!(kind, "Bid");
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["auction", "url", "extra", "nested", "price"]);
        assert_eq!(Raw(got[0].1.as_bytes()).number(), Some(1000));
        assert_eq!(
            Raw(got[1].1.as_bytes()).text().as_deref(),
            Some("x,\"price\":9}")
        );
        assert_eq!(Raw(got[2].1.as_bytes()).text().as_deref(), Some("a\\b"));
        assert_eq!(Raw(got[4].1.as_bytes()).number(), Some(73));
    }

    #[test]
    fn broken_lines_are_errors_with_a_place() {
        for bad in [
            "",
            "[1]",
            r#"{"Bid":{"auction":1"#,
            r#"{"Bid":{"auction" 1}}"#,
            r#"{"Bid":{"a":"open}}"#,
            r#"{"Bid":{"a":1;"b":2}}"#,
        ] {
            let err = fields(bad).map(|_| ()).unwrap_err();
            assert!(err.at <= bad.len(), "{bad}: {err}");
        }
        assert_eq!(Raw(b"-1").number(), None);
        assert_eq!(Raw(b"99999999999999999999").number(), None);
        assert_eq!(
            Raw(b"9999999999999999999").number(),
            Some(9_999_999_999_999_999_999)
        );
    }
}
