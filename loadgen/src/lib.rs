//! `flashsale-loadgen` as a library: the load generator's building blocks.
//!
//! - [`run`]: one scenario from start to report (the binary and the tests call it).
//! - [`baseline`]: raw EVALSHA, `/healthz`, MongoDB inserts and the purchase paths side by side,
//!   and open-loop latency at fractions of the measured capacity.
//! - [`target`]: the system under load (a local stack and in-process server, or `--url`).
//! - [`buyers`]: verified buyers made through the server crate's own code.
//! - [`sale`], [`browse`], [`auth`], [`mixed`]: the scenarios on goose (a crowd on one product;
//!   shoppers reading the catalogue; a sign-up rush at production password-hashing cost; all
//!   three at once);
//!   [`record`]: what they saw, per route and outcome; [`crowd`]: goose's settings they share.
//! - [`check`]: the correctness check after the load.
//! - [`costs`]: what a request, a sold unit, a rebuild, a reconciler pass and a login cost as a
//!   sale grows, measured at a few sizes.
//! - [`report`]: the report folder; [`machine`]: what it was measured on.
//! - [`openloop`]: an open-loop driver (fixed arrival rate, each request timed from its planned
//!   send time, so coordinated omission cannot hide stalls) and a closed-loop helper for capacity.
//! - [`hgrm`]: HdrHistogram percentile distribution files (`.hgrm`) and percentile summaries.
//! - [`wire`]: a bare HTTP/1.1 driver (requests as bytes on kept-alive connections) for the
//!   baselines, so the driver's own CPU takes as little as it can from what is measured.
//! - [`plots`]: self-contained SVG pictures (latency percentile spectrum, throughput and p99 over time).

pub mod auth;
pub mod baseline;
pub mod browse;
pub mod buyers;
pub mod check;
pub mod costs;
pub mod crowd;
pub mod hgrm;
pub mod machine;
pub mod mixed;
pub mod openloop;
pub mod plots;
pub mod record;
pub mod report;
pub mod run;
pub mod sale;
pub mod target;
pub mod wire;
