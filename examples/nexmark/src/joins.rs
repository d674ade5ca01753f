//! q3, q4 and q8: two inputs joined by key (`keyed_co_process`).

use serde::{Deserialize, Serialize};
use weir_sdk::prelude::*;

use crate::events::{Auction, Event, Person};
use crate::format::timestamp;

/// q8's tumbling windows: 10 s.
pub const Q8_SIZE: i64 = 10_000;

fn not_open() -> OperatorError {
    OperatorError::Failed("used before open".into())
}

/// q3, local item suggestion: `name, city, state, id` of auctions in category 10 by sellers in
/// Oregon, Idaho or California (the generator writes states in lower case). Keyed by person:
/// auctions (first input, keyed by seller) wait for their seller (second input, keyed by id).
#[derive(Default)]
pub struct Q3 {
    seller: Option<ValueState<Person>>,
    waiting: Option<MapState<u64, ()>>,
}

impl CoProcessFunction for Q3 {
    type In1 = Event;
    type In2 = Event;
    type Out = String;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.seller = Some(ctx.value_state("seller"));
        self.waiting = Some(ctx.map_state("waiting-auctions"));
        Ok(())
    }

    fn process_element1(
        &mut self,
        event: Event,
        ctx: &mut ProcessContext<'_, '_, String>,
    ) -> Result<(), OperatorError> {
        let Event::Auction(a) = event else {
            return Ok(());
        };
        if a.category != 10 {
            return Ok(());
        }
        match self.seller.as_ref().ok_or_else(not_open)?.get(ctx)? {
            Some(p) => ctx.emit(&row(&p, a.id)),
            None => self
                .waiting
                .as_ref()
                .ok_or_else(not_open)?
                .put(ctx, &a.id, &()),
        }
    }

    fn process_element2(
        &mut self,
        event: Event,
        ctx: &mut ProcessContext<'_, '_, String>,
    ) -> Result<(), OperatorError> {
        let Event::Person(p) = event else {
            return Ok(());
        };
        if !matches!(p.state.as_str(), "or" | "id" | "ca") {
            return Ok(());
        }
        let waiting = self.waiting.as_ref().ok_or_else(not_open)?;
        for (auction, ()) in waiting.entries(ctx)? {
            ctx.emit(&row(&p, auction))?;
        }
        waiting.clear(ctx)?;
        self.seller.as_ref().ok_or_else(not_open)?.set(ctx, &p)
    }
}

fn row(p: &Person, auction: u64) -> String {
    format!("{},{},{},{auction}", p.name, p.city, p.state)
}

/// What q4 knows of an auction: its category and bidding period, and its highest bid in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuctionMax {
    category: u64,
    opens: u64,
    expires: u64,
    max: Option<u64>,
}

/// A change to an auction's final price, for its category's average: the old price leaves,
/// the new one comes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalChange {
    pub category: u64,
    pub old: Option<u64>,
    pub new: u64,
}

/// q4, first step (keyed by auction id): each auction's highest bid within its bidding period
/// (`B.dateTime BETWEEN A.dateTime AND A.expires`), emitted as a change keyed by category
/// whenever it rises. Bids that come before their auction wait for it.
#[derive(Default)]
pub struct Q4Max {
    auction: Option<ValueState<AuctionMax>>,
    early: Option<MapState<(u64, u64), ()>>,
}

impl Q4Max {
    fn raise(
        &self,
        mut state: AuctionMax,
        price: u64,
        ctx: &mut ProcessContext<'_, '_, FinalChange>,
    ) -> Result<AuctionMax, OperatorError> {
        if state.max.is_some_and(|m| m >= price) {
            return Ok(state);
        }
        let change = FinalChange {
            category: state.category,
            old: state.max,
            new: price,
        };
        state.max = Some(price);
        ctx.emit_keyed(&change, &state.category.to_le_bytes(), ctx.timestamp())?;
        Ok(state)
    }
}

impl CoProcessFunction for Q4Max {
    type In1 = Event;
    type In2 = Event;
    type Out = FinalChange;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.auction = Some(ctx.value_state("auction"));
        self.early = Some(ctx.map_state("early-bids"));
        Ok(())
    }

    fn process_element1(
        &mut self,
        event: Event,
        ctx: &mut ProcessContext<'_, '_, FinalChange>,
    ) -> Result<(), OperatorError> {
        let Event::Auction(Auction {
            category,
            date_time,
            expires,
            ..
        }) = event
        else {
            return Ok(());
        };
        let mut state = AuctionMax {
            category,
            opens: date_time,
            expires,
            max: None,
        };
        let early = self.early.as_ref().ok_or_else(not_open)?;
        for ((time, price), ()) in early.entries(ctx)? {
            if (state.opens..=state.expires).contains(&time) {
                state = self.raise(state, price, ctx)?;
            }
        }
        early.clear(ctx)?;
        self.auction.as_ref().ok_or_else(not_open)?.set(ctx, &state)
    }

    fn process_element2(
        &mut self,
        event: Event,
        ctx: &mut ProcessContext<'_, '_, FinalChange>,
    ) -> Result<(), OperatorError> {
        let Event::Bid(bid) = event else {
            return Ok(());
        };
        let auction = self.auction.as_ref().ok_or_else(not_open)?;
        match auction.get(ctx)? {
            Some(state) => {
                if (state.opens..=state.expires).contains(&bid.date_time) {
                    let state = self.raise(state, bid.price, ctx)?;
                    auction.set(ctx, &state)?;
                }
                Ok(())
            }
            None => {
                self.early
                    .as_ref()
                    .ok_or_else(not_open)?
                    .put(ctx, &(bid.date_time, bid.price), &())
            }
        }
    }
}

/// A category's final prices: their sum and how many.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Average {
    sum: u128,
    count: u64,
}

impl Average {
    /// Flink's BIGINT average: the sum divided by the count, truncated.
    fn value(&self) -> Option<u128> {
        (self.count > 0).then(|| self.sum / u128::from(self.count))
    }
}

/// q4, second step (keyed by category): the average final price per category, as a changelog
/// (`+I`, `-U`/`+U`, `-D` lines of `category, average`).
#[derive(Default)]
pub struct Q4Average {
    average: Option<ValueState<Average>>,
}

impl ProcessFunction for Q4Average {
    type In = FinalChange;
    type Out = String;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.average = Some(ctx.value_state("average"));
        Ok(())
    }

    fn process_element(
        &mut self,
        change: FinalChange,
        ctx: &mut ProcessContext<'_, '_, String>,
    ) -> Result<(), OperatorError> {
        let state = self.average.as_ref().ok_or_else(not_open)?;
        let before = state.get(ctx)?.unwrap_or_default();
        let mut after = before;
        if let Some(old) = change.old {
            // The first step retracts only what it added before, through this same key.
            after.sum = after.sum.saturating_sub(u128::from(old));
            after.count = after.count.saturating_sub(1);
        }
        after.sum += u128::from(change.new);
        after.count += 1;
        state.set(ctx, &after)?;
        let category = change.category;
        match (before.value(), after.value()) {
            (None, Some(new)) => ctx.emit(&format!("+I,{category},{new}")),
            (Some(old), Some(new)) if old != new => {
                ctx.emit(&format!("-U,{category},{old}"))?;
                ctx.emit(&format!("+U,{category},{new}"))
            }
            (Some(old), None) => ctx.emit(&format!("-D,{category},{old}")),
            _ => Ok(()),
        }
    }
}

/// What q8 has seen of a person in one window: their name, and whether they opened an auction.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Seen {
    name: Option<String>,
    auctioned: bool,
}

/// q8, new users: `id, name, starttime` of every person who joined and opened an auction in
/// the same 10 s window. Keyed by person: persons (first input, by id) and auctions (second,
/// by seller) mark the window they fall in; when it closes, a person with both is emitted.
#[derive(Default)]
pub struct Q8 {
    windows: Option<MapState<i64, Seen>>,
}

impl Q8 {
    fn mark(
        &self,
        time: u64,
        ctx: &mut ProcessContext<'_, '_, String>,
        mark: impl FnOnce(&mut Seen),
    ) -> Result<(), OperatorError> {
        let time = time as i64;
        let start = time - time.rem_euclid(Q8_SIZE);
        let end = start + Q8_SIZE;
        if end - 1 <= ctx.current_watermark() {
            return Ok(());
        }
        let windows = self.windows.as_ref().ok_or_else(not_open)?;
        let mut seen = windows.get(ctx, &start)?.unwrap_or_default();
        mark(&mut seen);
        windows.put(ctx, &start, &seen)?;
        ctx.register_event_time_timer(end - 1)
    }
}

impl CoProcessFunction for Q8 {
    type In1 = Event;
    type In2 = Event;
    type Out = String;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.windows = Some(ctx.map_state("windows"));
        Ok(())
    }

    fn process_element1(
        &mut self,
        event: Event,
        ctx: &mut ProcessContext<'_, '_, String>,
    ) -> Result<(), OperatorError> {
        let Event::Person(p) = event else {
            return Ok(());
        };
        self.mark(p.date_time, ctx, |seen| seen.name = Some(p.name))
    }

    fn process_element2(
        &mut self,
        event: Event,
        ctx: &mut ProcessContext<'_, '_, String>,
    ) -> Result<(), OperatorError> {
        let Event::Auction(a) = event else {
            return Ok(());
        };
        self.mark(a.date_time, ctx, |seen| seen.auctioned = true)
    }

    fn on_timer(
        &mut self,
        _: TimeDomain,
        ctx: &mut ProcessContext<'_, '_, String>,
    ) -> Result<(), OperatorError> {
        let windows = self.windows.as_ref().ok_or_else(not_open)?;
        let Some(start) = ctx.timestamp().map(|t| t + 1 - Q8_SIZE) else {
            return Ok(());
        };
        let Some(seen) = windows.get(ctx, &start)? else {
            return Ok(());
        };
        windows.remove(ctx, &start)?;
        if let (Some(name), true) = (seen.name, seen.auctioned) {
            let id = ctx.key_as(&Fixed).unwrap_or(0u64);
            ctx.emit(&format!("{id},{name},{}", timestamp(start)))?;
        }
        Ok(())
    }
}
