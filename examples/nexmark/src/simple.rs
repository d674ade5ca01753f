//! q0-q2: a bid at a time, straight from its JSON line (no event time needed): the line is
//! read lazily ([`crate::scan`]), taking only the fields the queries print.

use std::fmt::Write;

use weir_sdk::prelude::*;

use crate::format::{push_euros, push_timestamp};
use crate::scan::{EventFields, Raw};

/// What q0-q2 need of a bid; `extra` as the line holds it, read only by the queries that print
/// it.
pub struct BidLine<'a> {
    pub auction: u64,
    pub bidder: u64,
    pub price: u64,
    pub date_time: u64,
    pub extra: Raw<'a>,
}

/// The bid on `line`, or `None` for a person's or an auction's line.
pub fn bid(line: &[u8]) -> Result<Option<BidLine<'_>>, OperatorError> {
    bid_fields(line, ALL_FIELDS)
}

/// Every field q0-q2 read.
pub const ALL_FIELDS: &[&[u8]] = &[b"auction", b"bidder", b"price", b"date_time", b"extra"];

/// The bid on `line` as far as fields `needs`: reading stops once they are all found (the
/// others read as 0 and an empty `extra`).
pub fn bid_fields<'a>(
    line: &'a [u8],
    needs: &[&[u8]],
) -> Result<Option<BidLine<'a>>, OperatorError> {
    let mut fields = EventFields::new(line).map_err(|e| not_an_event(line, &e.to_string()))?;
    match fields.kind {
        "Bid" => {}
        "Person" | "Auction" => return Ok(None),
        _ => return Err(not_an_event(line, "an unknown event kind")),
    }
    let unneeded = |name: &[u8]| !needs.contains(&name);
    let (mut auction, mut bidder, mut price, mut date_time, mut extra) = (
        unneeded(b"auction").then_some(0),
        unneeded(b"bidder").then_some(0),
        unneeded(b"price").then_some(0),
        unneeded(b"date_time").then_some(0),
        unneeded(b"extra").then_some(Raw(b"\"\"")),
    );
    let mut missing = needs.len();
    while missing > 0
        && let Some((key, value)) = fields
            .next_field()
            .map_err(|e| not_an_event(line, &e.to_string()))?
    {
        let slot_was_empty = match key {
            b"auction" if auction.is_none() => {
                auction = value.number();
                true
            }
            b"bidder" if bidder.is_none() => {
                bidder = value.number();
                true
            }
            b"price" if price.is_none() => {
                price = value.number();
                true
            }
            b"date_time" if date_time.is_none() => {
                date_time = value.number();
                true
            }
            b"extra" if extra.is_none() => {
                extra = Some(value);
                true
            }
            _ => false,
        };
        if slot_was_empty {
            missing -= 1;
        }
    }
    match (auction, bidder, price, date_time, extra) {
        (Some(auction), Some(bidder), Some(price), Some(date_time), Some(extra)) => {
            Ok(Some(BidLine {
                auction,
                bidder,
                price,
                date_time,
                extra,
            }))
        }
        _ => Err(not_an_event(
            line,
            "a bid needs numbers auction, bidder, price, date_time and a string extra",
        )),
    }
}

fn not_an_event(line: &[u8], why: &str) -> OperatorError {
    OperatorError::Decode(format!(
        "not a Nexmark event ({why}): {}",
        String::from_utf8_lossy(&line[..line.len().min(200)])
    ))
}

/// The text of a bid's `extra`, unescaped.
fn extra<'a>(b: &BidLine<'a>, line: &[u8]) -> Result<std::borrow::Cow<'a, str>, OperatorError> {
    b.extra
        .text()
        .ok_or_else(|| not_an_event(line, "`extra` is not a string"))
}

/// q0, pass-through: `auction, bidder, price, dateTime, extra`.
pub fn q0(b: &BidLine<'_>, line: &[u8], row: &mut String) -> Result<bool, OperatorError> {
    let _ = write!(row, "{},{},{},", b.auction, b.bidder, b.price);
    push_timestamp(row, b.date_time as i64);
    row.push(',');
    row.push_str(&extra(b, line)?);
    Ok(true)
}

/// q1, currency conversion: `auction, bidder, 0.908 * price, dateTime, extra`.
pub fn q1(b: &BidLine<'_>, line: &[u8], row: &mut String) -> Result<bool, OperatorError> {
    let _ = write!(row, "{},{},", b.auction, b.bidder);
    push_euros(row, b.price);
    row.push(',');
    push_timestamp(row, b.date_time as i64);
    row.push(',');
    row.push_str(&extra(b, line)?);
    Ok(true)
}

/// q2, selection: `auction, price` of bids on every 123rd auction.
pub fn q2(b: &BidLine<'_>, _: &[u8], row: &mut String) -> Result<bool, OperatorError> {
    if !b.auction.is_multiple_of(123) {
        return Ok(false);
    }
    let _ = write!(row, "{},{}", b.auction, b.price);
    Ok(true)
}

/// A query of one bid: writes its row, if any, and says whether it did.
pub type BidQuery = fn(&BidLine<'_>, &[u8], &mut String) -> Result<bool, OperatorError>;

/// A bid-at-a-time query over JSON lines reading fields `needs`, writing CSV rows into one
/// reused buffer.
pub fn rows(query: BidQuery, needs: &'static [&'static [u8]]) -> BidRows {
    BidRows {
        query,
        needs,
        row: String::new(),
    }
}

/// See [`rows`].
pub struct BidRows {
    query: BidQuery,
    needs: &'static [&'static [u8]],
    row: String,
}

impl Operator for BidRows {
    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let Some(b) = bid_fields(record.value, self.needs)? else {
            return Ok(());
        };
        self.row.clear();
        if (self.query)(&b, record.value, &mut self.row)? {
            ctx.emit_record(Record {
                value: self.row.as_bytes(),
                key: None,
                timestamp: record.timestamp,
            });
        }
        Ok(())
    }
}
