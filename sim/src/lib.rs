//! # flashsale-sim
//!
//! The flash-sale simulator. A seed expands into a plan ([`plan`]): products, thousands
//! of buyers with their behaviours, a schedule of faults. Real mode ([`runner`]) plays
//! the plan against real `redis-server` (or a local Redis Cluster) and FerretDB
//! processes behind fault proxies ([`proxy`]), with N instances of the server crate
//! ([`world`]); buyers ([`buyers`]) and faults ([`faults`]) write one history
//! ([`history`]); after healing and draining, the checker ([`checker`]) decides every
//! invariant of the purchase protocol, and [`report`] writes what an engineer reads.
//! `system-design/simulation.md` says what is deterministic and what is not.

pub mod buyers;
pub mod checker;
pub mod cli;
pub mod det;
pub mod faults;
pub mod history;
pub mod plan;
pub mod proxy;
pub mod report;
pub mod runner;
pub mod transport;
pub mod world;
