//! Hostile input at volume: a corpus of bad `POST /webhook` requests, one
//! family per defect, sent over raw TCP to a running ingest *while* a
//! steady stream of good signed events goes on; then the queues are read
//! back to prove nothing of the corpus was published and every good event
//! was, once.
//!
//! Every request is built when it is sent ([`corpus::build`] takes the
//! current time), so a request that must carry a current timestamp still
//! does however long the run takes, and is refused for its own defect,
//! not for being stale. Where a signature can matter it is correct (over
//! the exact bytes sent, with the endpoint's secret); the exceptions say
//! why in their family's builder.
//!
//! What counts as *refused* is defined per family by
//! [`family::Family::expect`]: the statuses that are the right answer, the
//! words the answer's reason must hold when ingest itself answers, and
//! whether a connection closed by the server without an answer also counts
//! (only for connection-level attacks: truncated, oversized, chunked and
//! slow senders, whose answer may be cut by the server's close). A `2xx`,
//! a `5xx`, a wrong reason, or no answer and no close within the client's
//! deadline is never refused.
//!
//! Used by `tests/tests/hostile_input.rs` (in-process ingest) and the
//! `hostile_ingest` binary (`deploy/hostile.sh`, the release binary).

pub mod attack;
mod bodies;
pub mod corpus;
pub mod family;
pub mod good_stream;
mod headers;
mod json;
pub mod process;
pub mod published;
pub mod report;
pub mod run;
mod signatures;
mod slow;
