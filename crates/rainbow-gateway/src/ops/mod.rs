//! What the backend can ask the gateway to do with its connections, typed
//! once: deliver to a channel (`send`), to one connection (`push`),
//! subscribe (`sub`), unsubscribe (`unsub`) and close (`close`).
//!
//! - [`request`]: the [`Request`] and its one validator, [`Request::parse`],
//!   which reads the fields from wherever they came (an HTTP query, a JSON
//!   body, a worker frame's header) and answers a bad one the way the
//!   original API did (`channel miss`, `qos level error`, `params error`).
//! - [`outcome`]: the one answer, [`Outcome`]: its JSON body
//!   (docs/protocol.md §8) and its metrics label.
//!
//! A request arrives through the signed HTTP API (`api::push`), a worker's
//! socket (`api::worker`) or another node of the cluster (`cluster`), and is
//! run by `api::execute`. Nothing here does IO.

pub mod outcome;
pub mod request;

pub use outcome::{Outcome, Problem};
pub use request::{Field, Fields, Message, Op, Query, Request};
