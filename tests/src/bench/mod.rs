//! Benchmark building blocks: latency statistics, the broker's own publish
//! ceiling, and an HTTP load generator for signed webhook events.

pub mod broker_ceiling;
pub mod http1;
pub mod http_load;
pub mod stats;
