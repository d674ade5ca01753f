//! q5 and q7: windows over bids.

use serde::{Deserialize, Serialize};
use weir_sdk::prelude::*;
use weir_sdk::window::AggregateFunction;

use crate::events::{Bid, Event};
use crate::format::timestamp;

/// q5's hop windows: 10 s, sliding every 2 s.
pub const Q5_SIZE: i64 = 10_000;
pub const Q5_SLIDE: i64 = 2_000;
/// q7's tumbling windows: 10 s.
pub const Q7_SIZE: i64 = 10_000;

/// Counts a window's bids (each an auction id).
pub struct Count;

impl AggregateFunction for Count {
    type In = u64;
    type Acc = u64;
    type Out = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _: u64) {
        *acc += 1;
    }
    fn result(&self, acc: u64) -> u64 {
        acc
    }
    fn merge(&self, a: u64, b: u64) -> Option<u64> {
        Some(a + b)
    }
}

/// One auction's bids in one hop window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuctionCount {
    pub window_end: i64,
    pub auction: u64,
    pub num: u64,
}

/// q5, the bids it counts: each bid line's auction id (8 bytes, little-endian: the `Fixed`
/// encoding of a `u64`), keyed by it and stamped with the bid's time. The line is read where it
/// lies in the batch, lazily: q5 needs nothing else of it.
pub fn bid_auctions() -> impl Operator {
    BidAuctions
}

struct BidAuctions;

impl Operator for BidAuctions {
    fn process(&mut self, record: Record<'_>, ctx: &mut Context<'_>) -> Result<(), OperatorError> {
        let needs = crate::simple::Fields::AUCTION.and(crate::simple::Fields::DATE_TIME);
        if let Some(b) = crate::simple::bid_fields(record.value, needs)? {
            let auction = b.auction.to_le_bytes();
            ctx.emit_record(Record {
                value: &auction,
                key: Some(&auction),
                timestamp: Some(b.date_time as i64),
            });
        }
        Ok(())
    }
}

/// q5, first step (keyed by auction): bids per auction and hop window.
pub fn q5_counts() -> impl Operator {
    keyed_process(window(
        Windows::sliding(Q5_SIZE, Q5_SLIDE),
        Count,
        |key: &[u8], w: TimeWindow, num: u64| {
            let auction = u64::from_le_bytes(key.try_into().unwrap_or([0; 8]));
            Some(AuctionCount {
                window_end: w.end,
                auction,
                num,
            })
        },
    ))
    .input(Fixed)
}

/// The auctions with the most bids in a window (all of them on a tie).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MostBids {
    num: u64,
    auctions: Vec<u64>,
}

pub struct Hottest;

impl AggregateFunction for Hottest {
    type In = AuctionCount;
    type Acc = MostBids;
    type Out = MostBids;
    fn create_accumulator(&self) -> MostBids {
        MostBids::default()
    }
    fn add(&self, acc: &mut MostBids, c: AuctionCount) {
        if c.num > acc.num {
            acc.num = c.num;
            acc.auctions.clear();
        }
        if c.num == acc.num {
            acc.auctions.push(c.auction);
        }
    }
    fn result(&self, acc: MostBids) -> MostBids {
        acc
    }
}

/// q5, second step (keyed by window end): `auction, num` of each window's hottest auctions.
/// A hop window's counts carry its last millisecond, which falls in exactly one slide-long
/// tumbling window: that one gathers them.
pub fn q5_hottest() -> impl Operator {
    keyed_process(window(
        Windows::tumbling(Q5_SLIDE),
        Hottest,
        |_: &[u8], _: TimeWindow, most: MostBids| {
            let num = most.num;
            most.auctions.into_iter().map(move |a| format!("{a},{num}"))
        },
    ))
    .output(Text)
}

/// The highest bids of a 10 s window, and the bids at its end (the first millisecond of the
/// next window, which q7's `BETWEEN` also counts).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Highest {
    price: u64,
    bids: Vec<Bid>,
    at_end: Vec<Bid>,
}

/// q7, highest bid: `auction, price, bidder, dateTime, extra` of every bid whose price is the
/// highest of a 10 s window and whose time lies in the window or at its end. Runs on one key.
#[derive(Default)]
pub struct Q7 {
    windows: Option<MapState<i64, Highest>>,
}

impl ProcessFunction for Q7 {
    type In = Event;
    type Out = String;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.windows = Some(ctx.map_state("highest"));
        Ok(())
    }

    fn process_element(
        &mut self,
        event: Event,
        ctx: &mut ProcessContext<'_, '_, String>,
    ) -> Result<(), OperatorError> {
        let Event::Bid(bid) = event else {
            return Ok(());
        };
        let windows = self.windows.as_ref().ok_or_else(not_open)?;
        let t = bid.date_time as i64;
        let start = t - t.rem_euclid(Q7_SIZE);
        if t == start && start - 1 > ctx.current_watermark() {
            // Also at the end of the window before, if that has not closed.
            let before = start - Q7_SIZE;
            let mut highest = windows.get(ctx, &before)?.unwrap_or_default();
            highest.at_end.push(bid.clone());
            windows.put(ctx, &before, &highest)?;
            ctx.register_event_time_timer(start - 1)?;
        }
        if start + Q7_SIZE - 1 <= ctx.current_watermark() {
            return Ok(());
        }
        let mut highest = windows.get(ctx, &start)?.unwrap_or_default();
        if bid.price > highest.price || highest.bids.is_empty() {
            highest.price = bid.price;
            highest.bids.clear();
        }
        if bid.price == highest.price {
            highest.bids.push(bid);
        }
        windows.put(ctx, &start, &highest)?;
        ctx.register_event_time_timer(start + Q7_SIZE - 1)
    }

    fn on_timer(
        &mut self,
        _: TimeDomain,
        ctx: &mut ProcessContext<'_, '_, String>,
    ) -> Result<(), OperatorError> {
        let windows = self.windows.as_ref().ok_or_else(not_open)?;
        let Some(end) = ctx.timestamp().map(|t| t + 1) else {
            return Ok(());
        };
        let start = end - Q7_SIZE;
        let Some(highest) = windows.get(ctx, &start)? else {
            return Ok(());
        };
        windows.remove(ctx, &start)?;
        if highest.bids.is_empty() {
            return Ok(());
        }
        for b in highest
            .bids
            .iter()
            .chain(highest.at_end.iter().filter(|b| b.price == highest.price))
        {
            ctx.emit(&format!(
                "{},{},{},{},{}",
                b.auction,
                b.price,
                b.bidder,
                timestamp(b.date_time as i64),
                b.extra
            ))?;
        }
        Ok(())
    }
}

fn not_open() -> OperatorError {
    OperatorError::Failed("used before open".into())
}
