//! q0-q2: a bid at a time.

use crate::events::{Bid, Event};
use crate::format::{euros, timestamp};

fn bid(event: Event) -> Option<Bid> {
    match event {
        Event::Bid(b) => Some(b),
        _ => None,
    }
}

/// q0, pass-through: `auction, bidder, price, dateTime, extra`.
pub fn q0(event: Event) -> Option<String> {
    let b = bid(event)?;
    Some(format!(
        "{},{},{},{},{}",
        b.auction,
        b.bidder,
        b.price,
        timestamp(b.date_time as i64),
        b.extra
    ))
}

/// q1, currency conversion: `auction, bidder, 0.908 * price, dateTime, extra`.
pub fn q1(event: Event) -> Option<String> {
    let b = bid(event)?;
    Some(format!(
        "{},{},{},{},{}",
        b.auction,
        b.bidder,
        euros(b.price),
        timestamp(b.date_time as i64),
        b.extra
    ))
}

/// q2, selection: `auction, price` of bids on every 123rd auction.
pub fn q2(event: Event) -> Option<String> {
    let b = bid(event)?;
    (b.auction % 123 == 0).then(|| format!("{},{}", b.auction, b.price))
}
