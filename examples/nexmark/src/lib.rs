//! The Nexmark benchmark's queries q0-q8 (q6 left out, as Flink's suite leaves it out),
//! written with the weir SDK as a user would write them, after the canonical Flink SQL of the
//! Nexmark suite. Each query is a job of its own (`examples/nexmark/q*.toml`): JSON lines of
//! events are parsed by the `events` operator, which stamps each with its `date_time` (the
//! event time, with watermarks 4 s behind it), and the query's operators write CSV rows; q0-q2,
//! which need no event time, parse their bids themselves. The component carries every query's
//! plan too: `--arg query=q5` picks one (`plan`).

pub mod events;
pub mod format;
pub mod joins;
pub mod plan;
pub mod scan;
pub mod simple;
pub mod windowed;

use weir_sdk::prelude::*;

use events::Events;
use joins::{Q3, Q4Average, Q4Max, Q8};
use simple::Fields;
use windowed::{AuctionCount, Q7};

weir_sdk::export_operators! {
    plan = plan::plan;
    "events" => process(Events::default()).input(Bytes),
    "q0" => simple::rows(simple::q0, Fields::ALL),
    "q1" => simple::rows(simple::q1, Fields::ALL),
    "q2" => simple::rows(simple::q2, Fields::AUCTION.and(Fields::PRICE)),
    "q3" => keyed_co_process(Q3::default()).output(Text),
    "q4-max" => keyed_co_process(Q4Max::default()),
    "q4-average" => keyed_process(Q4Average::default()).output(Text),
    "bid-auctions" => windowed::bid_auctions(),
    "q5-counts" => windowed::q5_counts(),
    "q5-by-window" => key_by(|c: &AuctionCount| c.window_end),
    "q5-hottest" => windowed::q5_hottest(),
    "q7" => keyed_process(Q7::default()).output(Text),
    "q8" => keyed_co_process(Q8::default()).output(Text),
}
