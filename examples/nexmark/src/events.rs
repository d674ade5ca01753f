//! Nexmark events as the `nexmark` crate (0.2.0) writes them with serde_json, one per line:
//! `{"Person":{...}}`, `{"Auction":{...}}` or `{"Bid":{...}}`, times in epoch milliseconds.

use serde::{Deserialize, Serialize};
use weir_sdk::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub id: u64,
    pub name: String,
    pub email_address: String,
    pub credit_card: String,
    pub city: String,
    pub state: String,
    pub date_time: u64,
    pub extra: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auction {
    pub id: u64,
    pub item_name: String,
    pub description: String,
    pub initial_bid: u64,
    pub reserve: u64,
    pub date_time: u64,
    pub expires: u64,
    pub seller: u64,
    pub category: u64,
    pub extra: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    pub auction: u64,
    pub bidder: u64,
    pub price: u64,
    pub channel: String,
    pub url: String,
    pub date_time: u64,
    pub extra: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Person(Person),
    Auction(Auction),
    Bid(Bid),
}

impl Event {
    /// The event's time: `dateTime` of the Nexmark queries.
    pub fn date_time(&self) -> u64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }
}

/// Which events an `events` operator passes on, and by which field it keys them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Person,
    Auction,
    Bid,
}

/// Parses JSON lines into events of one kind (`config.kind`: person, auction or bid), stamps
/// each with its `date_time` and keys it by `config.key` (a field holding an id: `id`,
/// `seller`, `auction`, `bidder`, `category`; `constant`, one key for all; or none). A line that is not a Nexmark event
/// fails the job naming the line.
#[derive(Default)]
pub struct Events {
    kind: Option<Kind>,
    key: Option<String>,
}

impl Events {
    fn key_of(&self, event: &Event) -> Result<Option<u64>, OperatorError> {
        let Some(field) = self.key.as_deref() else {
            return Ok(None);
        };
        let key = match (event, field) {
            (Event::Person(p), "id") => p.id,
            (Event::Auction(a), "id") => a.id,
            (Event::Auction(a), "seller") => a.seller,
            (Event::Auction(a), "category") => a.category,
            (Event::Bid(b), "auction") => b.auction,
            (Event::Bid(b), "bidder") => b.bidder,
            // One key for every event: a query over all of them in one place (q7).
            (_, "constant") => 0,
            (_, other) => {
                return Err(OperatorError::Config(format!(
                    "`key = \"{other}\"` is not an id field of these events"
                )));
            }
        };
        Ok(Some(key))
    }
}

impl ProcessFunction for Events {
    type In = Vec<u8>;
    type Out = Event;

    fn open(&mut self, ctx: &mut OpenContext<'_>) -> Result<(), OperatorError> {
        self.kind = Some(match ctx.config("kind") {
            Some("person") => Kind::Person,
            Some("auction") => Kind::Auction,
            Some("bid") => Kind::Bid,
            other => {
                return Err(OperatorError::Config(format!(
                    "`kind` must be person, auction or bid, not {other:?}"
                )));
            }
        });
        self.key = ctx.config("key").map(str::to_string);
        Ok(())
    }

    fn process_element(
        &mut self,
        line: Vec<u8>,
        ctx: &mut ProcessContext<'_, '_, Event>,
    ) -> Result<(), OperatorError> {
        // Lines of other kinds are told by their first key, without parsing them.
        let prefix: &[u8] = match self.kind {
            Some(Kind::Person) => b"{\"Person\":",
            Some(Kind::Auction) => b"{\"Auction\":",
            Some(Kind::Bid) => b"{\"Bid\":",
            None => b"",
        };
        let known = [&b"{\"Person\":"[..], b"{\"Auction\":", b"{\"Bid\":"];
        if !line.starts_with(prefix) && known.iter().any(|k| line.starts_with(k)) {
            return Ok(());
        }
        let event: Event = serde_json::from_slice(&line).map_err(|e| {
            OperatorError::Decode(format!(
                "not a Nexmark event ({e}): {}",
                String::from_utf8_lossy(&line[..line.len().min(200)])
            ))
        })?;
        let wanted = matches!(
            (self.kind, &event),
            (Some(Kind::Person), Event::Person(_))
                | (Some(Kind::Auction), Event::Auction(_))
                | (Some(Kind::Bid), Event::Bid(_))
        );
        if !wanted {
            return Ok(());
        }
        let time = Some(event.date_time() as i64);
        match self.key_of(&event)? {
            Some(key) => ctx.emit_keyed(&event, &key.to_le_bytes(), time),
            None => ctx.emit_at(&event, event.date_time() as i64),
        }
    }
}
