//! Benchmark building blocks: latency statistics, the broker's own publish
//! ceiling, an HTTP load generator for signed webhook events, CPU and memory
//! of a process from `/proc`, and the report (Markdown with an SVG plot)
//! `deploy/bench.sh` writes from the bench binaries' JSON results.

pub mod broker_ceiling;
pub mod child;
pub mod cpu_split;
pub mod http1;
pub mod http_load;
pub mod machine;
pub mod proc_stat;
pub mod report;
pub mod results;
pub mod stats;
pub mod svg;
pub mod sweep;
pub mod targets;
