//! q0-q2: a bid at a time, straight from its JSON line (no event time needed): the line is
//! read lazily ([`crate::scan`]), taking only the fields the queries print.

use weir_sdk::prelude::*;

use crate::format::Row;
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
    bid_fields(line, Fields::ALL)
}

/// Which fields of a bid a query reads: a set of the constants, decided once per query rather
/// than looked up per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields(u8);

impl Fields {
    pub const AUCTION: Fields = Fields(1);
    pub const BIDDER: Fields = Fields(2);
    pub const PRICE: Fields = Fields(4);
    pub const DATE_TIME: Fields = Fields(8);
    pub const EXTRA: Fields = Fields(16);
    /// Every field q0-q2 read.
    pub const ALL: Fields = Fields(31);

    pub const fn and(self, other: Fields) -> Fields {
        Fields(self.0 | other.0)
    }

    /// The field named `key`, if a bid query reads it.
    fn named(key: &[u8]) -> Option<Fields> {
        Some(match key {
            b"auction" => Fields::AUCTION,
            b"bidder" => Fields::BIDDER,
            b"price" => Fields::PRICE,
            b"date_time" => Fields::DATE_TIME,
            b"extra" => Fields::EXTRA,
            _ => return None,
        })
    }
}

/// The bid on `line` as far as fields `needs`: reading stops once they are all found (the
/// others read as 0 and an empty `extra`). The first of a repeated field counts.
pub fn bid_fields(line: &[u8], needs: Fields) -> Result<Option<BidLine<'_>>, OperatorError> {
    let mut fields = EventFields::new(line).map_err(|e| not_an_event(line, &e.to_string()))?;
    match fields.kind {
        "Bid" => {}
        "Person" | "Auction" => return Ok(None),
        _ => return Err(not_an_event(line, "an unknown event kind")),
    }
    let mut bid = BidLine {
        auction: 0,
        bidder: 0,
        price: 0,
        date_time: 0,
        extra: Raw(b"\"\""),
    };
    let mut missing = needs.0;
    while missing != 0
        && let Some((key, value)) = fields
            .next_field()
            .map_err(|e| not_an_event(line, &e.to_string()))?
    {
        let Some(field) = Fields::named(key).filter(|f| missing & f.0 != 0) else {
            continue;
        };
        missing &= !field.0;
        let slot = match field {
            Fields::AUCTION => &mut bid.auction,
            Fields::BIDDER => &mut bid.bidder,
            Fields::PRICE => &mut bid.price,
            Fields::DATE_TIME => &mut bid.date_time,
            _ => {
                bid.extra = value;
                continue;
            }
        };
        *slot = value.number().ok_or_else(|| not_a_bid(line))?;
    }
    if missing != 0 {
        return Err(not_a_bid(line));
    }
    Ok(Some(bid))
}

fn not_a_bid(line: &[u8]) -> OperatorError {
    not_an_event(
        line,
        "a bid needs numbers auction, bidder, price, date_time and a string extra",
    )
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
pub fn q0(b: &BidLine<'_>, line: &[u8], row: &mut Row) -> Result<bool, OperatorError> {
    row.push_u64(b.auction);
    row.push(b',');
    row.push_u64(b.bidder);
    row.push(b',');
    row.push_u64(b.price);
    row.push(b',');
    row.push_timestamp(b.date_time as i64);
    row.push(b',');
    row.push_str(&extra(b, line)?);
    Ok(true)
}

/// q1, currency conversion: `auction, bidder, 0.908 * price, dateTime, extra`.
pub fn q1(b: &BidLine<'_>, line: &[u8], row: &mut Row) -> Result<bool, OperatorError> {
    row.push_u64(b.auction);
    row.push(b',');
    row.push_u64(b.bidder);
    row.push(b',');
    row.push_euros(b.price);
    row.push(b',');
    row.push_timestamp(b.date_time as i64);
    row.push(b',');
    row.push_str(&extra(b, line)?);
    Ok(true)
}

/// q2, selection: `auction, price` of bids on every 123rd auction.
pub fn q2(b: &BidLine<'_>, _: &[u8], row: &mut Row) -> Result<bool, OperatorError> {
    if !b.auction.is_multiple_of(123) {
        return Ok(false);
    }
    row.push_u64(b.auction);
    row.push(b',');
    row.push_u64(b.price);
    Ok(true)
}

/// A query of one bid: writes its row, if any, and says whether it did.
pub type BidQuery = fn(&BidLine<'_>, &[u8], &mut Row) -> Result<bool, OperatorError>;

/// A bid-at-a-time query over JSON lines reading fields `needs`, writing CSV rows into one
/// reused buffer.
pub fn rows(query: BidQuery, needs: Fields) -> BidRows {
    BidRows {
        query,
        needs,
        row: Row::default(),
    }
}

/// See [`rows`].
pub struct BidRows {
    query: BidQuery,
    needs: Fields,
    row: Row,
}

impl Operator for BidRows {
    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let Some(b) = bid_fields(record.value, self.needs)? else {
            return Ok(());
        };
        self.row.clear();
        if (self.query)(&b, record.value, &mut self.row)? {
            ctx.emit_record(Record {
                value: &self.row.bytes,
                key: None,
                timestamp: record.timestamp,
            });
        }
        Ok(())
    }
}
