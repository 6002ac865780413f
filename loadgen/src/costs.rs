//! `costs`: what a request, a sold unit, a rebuild, a reconciler pass and a login cost
//! as a sale grows (project issue 13). Each cost is measured at a few sizes on one local
//! stack, in one invocation, and written as a report folder: `README.md` (the tables, each
//! with its growth between the smallest and the largest size), `summary.json` and
//! `costs.svg` (every cost against its size, on log-log axes).
//!
//! - [`paths`]: the sold-out, replay and winner purchase paths on a product of each stock,
//!   Redis memory per sold unit, and the sold-out path on 1, 2 and 4 server instances;
//! - [`state`]: rebuilding a product's sale state from MongoDB, and a reconciler pass over
//!   many live products (each in a database and key prefix of its own);
//! - [`login`]: login with many users, and the user lookup by email beside a lookup by `_id`;
//! - [`drive`]: a fixed-count closed loop, orders and products written straight into
//!   MongoDB through the server crate, extra server instances;
//! - [`render`]: the report folder.
//!
//! Orders and users are written through the server crate's `Db` API, never over HTTP, so
//! that a size of 10⁵ takes seconds to set up; one password hash is computed and shared.

pub mod drive;
pub mod login;
pub mod paths;
pub mod render;
pub mod state;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use flashsale::config::Config;
use serde::Serialize;
use uuid::Uuid;

use crate::machine::Machine;
use crate::run::{BASELINE_PURCHASE_LIMIT, Place, utc_now};
use crate::target::Target;

/// Largest size any sweep accepts (stock, orders, users): what one run can set up in minutes.
pub const MAX_SIZE: usize = 1_000_000;
/// Most products of the reconciler sweep.
pub const MAX_LIVE_PRODUCTS: usize = 10_000;
/// Most server instances of the instance sweep.
pub const MAX_INSTANCES: usize = 8;
/// Login rate limits (per IP and per account, per minute) of the local server: the login
/// measure logs the same few accounts in from one address, back to back.
pub const COSTS_LOGIN_LIMIT: u32 = 1_000_000_000;

/// The sizes of every sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sizes {
    /// Stock of the products whose purchase paths are measured.
    pub stocks: Vec<usize>,
    /// Orders of the products whose rebuild is timed.
    pub rebuild_orders: Vec<usize>,
    /// Live products of the reconciler passes.
    pub live_products: Vec<usize>,
    /// Server instances sharing the sold-out path.
    pub instances: Vec<usize>,
    /// Users in the collection when logins are timed.
    pub users: Vec<usize>,
}

impl Sizes {
    /// The sizes of issue 13.
    pub fn full() -> Self {
        Self {
            stocks: vec![100, 10_000, 100_000],
            rebuild_orders: vec![1_000, 10_000, 100_000],
            live_products: vec![10, 1_000],
            instances: vec![1, 2, 4],
            users: vec![1_000, 10_000, 100_000],
        }
    }

    /// A run of about a minute, a tenth of the largest sizes (a smoke test of the command).
    pub fn quick() -> Self {
        Self {
            stocks: vec![100, 10_000],
            rebuild_orders: vec![1_000, 10_000],
            live_products: vec![10, 100],
            instances: vec![1, 2],
            users: vec![1_000, 10_000],
        }
    }

    /// Every sweep ascending, non-empty and within its bound.
    pub fn validate(&self) -> anyhow::Result<()> {
        let sweeps: [(&str, &[usize], usize); 5] = [
            ("stocks", &self.stocks, MAX_SIZE),
            ("rebuild orders", &self.rebuild_orders, MAX_SIZE),
            ("live products", &self.live_products, MAX_LIVE_PRODUCTS),
            ("instances", &self.instances, MAX_INSTANCES),
            ("users", &self.users, MAX_SIZE),
        ];
        for (name, sizes, bound) in sweeps {
            anyhow::ensure!(!sizes.is_empty(), "the {name} sweep is empty");
            anyhow::ensure!(sizes.windows(2).all(|pair| pair[0] < pair[1]), "the {name} sweep must ascend");
            anyhow::ensure!(sizes.iter().all(|size| (1..=bound).contains(size)), "{name} must be 1 to {bound}");
        }
        anyhow::ensure!(self.stocks.iter().all(|stock| *stock >= 2), "a stock must be at least 2 (one unit is won)");
        Ok(())
    }
}

/// Options of a `costs` run.
#[derive(Debug, Clone)]
pub struct CostsOptions {
    pub sizes: Sizes,
    pub place: Place,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct CostsReport {
    pub started_utc: String,
    pub machine: Machine,
    pub sizes: Sizes,
    pub argon2: String,
    pub paths: Vec<paths::PathCosts>,
    pub instances: Vec<paths::InstanceCost>,
    pub rebuilds: Vec<state::RebuildCost>,
    pub reconciler: Vec<state::ReconcilerCost>,
    pub logins: Vec<login::LoginCost>,
    pub total_s: f64,
}

/// Runs every sweep against a local stack and writes the report folder; returns its path.
pub async fn costs(options: &CostsOptions) -> anyhow::Result<PathBuf> {
    options.sizes.validate()?;
    anyhow::ensure!(options.place.target.url.is_none(), "costs starts its own stack: --url is not supported");
    let started = Instant::now();
    let (date, started_utc) = utc_now();
    let dir = options.place.reports_root.join(options.place.name.clone().unwrap_or_else(|| format!("{date}-costs")));
    let run = Uuid::now_v7().simple().to_string();
    let mut target = start_target(&options.place, &run).await?;
    let progress = options.place.progress;
    let say = move |line: &str| {
        if progress {
            eprintln!("[costs] {line}");
        }
    };
    let sizes = &options.sizes;

    let logins = login::sweep(&target, &sizes.users, &run, say).await.context("the login sweep")?;
    let most_winners = sizes.stocks.iter().map(|stock| paths::winners_of(*stock)).max().unwrap_or(1);
    let buyers = paths::Buyers {
        winners: crate::buyers::make_buyers(&target.admin, most_winners, &format!("{run}w")).await?,
        losers: crate::buyers::make_buyers(&target.admin, paths::LOSERS, &format!("{run}l")).await?,
    };
    let (paths, sold_out_product) =
        paths::sweep(&target, &buyers, &sizes.stocks, &run, say).await.context("the purchase path sweep")?;
    let instances = paths::instance_sweep(&target, &buyers.losers, sold_out_product, &sizes.instances, say)
        .await
        .context("the instance sweep")?;
    let rebuilds =
        state::rebuild_sweep(&target, &sizes.rebuild_orders, &run, say).await.context("the rebuild sweep")?;
    let reconciler =
        state::reconciler_sweep(&target, &sizes.live_products, &run, say).await.context("the reconciler sweep")?;
    target.stop_server();

    let config = &target.server_config;
    let report = CostsReport {
        started_utc,
        machine: Machine::describe(),
        sizes: sizes.clone(),
        argon2: format!("Argon2id m={} KiB t={} p={}", config.argon2_m_kib, config.argon2_t, config.argon2_p),
        paths,
        instances,
        rebuilds,
        reconciler,
        logins,
        total_s: started.elapsed().as_secs_f64(),
    };
    render::write(&dir, &report)?;
    Ok(dir)
}

/// A local stack and one server instance whose purchase and login limits no measure nears.
async fn start_target(place: &Place, run: &str) -> anyhow::Result<Target> {
    let mut target = place.target.clone();
    target.database = format!("costs_{}", &run[..12]);
    target.key_prefix = format!("cs{}", &run[..12]);
    if place.progress {
        eprintln!("[costs] starting the target");
    }
    Target::start(&target, |config: &mut Config| {
        config.limits.purchase_per_user_per_min = BASELINE_PURCHASE_LIMIT;
        config.limits.purchase_per_ip_per_min = BASELINE_PURCHASE_LIMIT;
        config.limits.login_per_ip_per_min = COSTS_LOGIN_LIMIT;
        config.limits.login_per_account_per_min = COSTS_LOGIN_LIMIT;
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_and_quick_sizes_are_valid() {
        Sizes::full().validate().expect("full");
        Sizes::quick().validate().expect("quick");
    }

    #[test]
    fn a_sweep_out_of_order_or_out_of_bounds_is_refused() {
        let mut sizes = Sizes::full();
        sizes.stocks = vec![10_000, 100];
        assert!(sizes.validate().is_err());
        let mut sizes = Sizes::full();
        sizes.instances = vec![1, MAX_INSTANCES + 1];
        assert!(sizes.validate().is_err());
        let mut sizes = Sizes::full();
        sizes.users.clear();
        assert!(sizes.validate().is_err());
        let mut sizes = Sizes::full();
        sizes.stocks = vec![1];
        assert!(sizes.validate().is_err());
    }
}
