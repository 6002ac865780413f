//! `flashsale-loadgen` as a library: the load generator's building blocks.
//!
//! - [`openloop`]: an open-loop driver (fixed arrival rate, each request timed from its planned
//!   send time, so coordinated omission cannot hide stalls) and a closed-loop helper for capacity.
//! - [`hgrm`]: HdrHistogram percentile distribution files (`.hgrm`) and percentile summaries.
//! - [`plots`]: self-contained SVG pictures (latency percentile spectrum, throughput and p99 over time).
//!
//! The other modules (scenarios against the purchase path, `/healthz` and raw EVALSHA, goose
//! integration, reports and baselines) are still to come.

pub mod hgrm;
pub mod openloop;
pub mod plots;
