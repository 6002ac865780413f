//! The `mixed` scenario on goose: a sale day's traffic at once. For the run's duration,
//! goose users are dealt by weight to three kinds, each with its own address:
//!
//! - shoppers ([`SHOPPER_WEIGHT`]): `browse`'s round (the list, then product pages), a
//!   think time between rounds;
//! - buyers ([`BUYER_WEIGHT`]): `sale`'s buyer on their first round, all at the start, on
//!   the one product on sale; afterwards they replay their own key now and then, as a
//!   buyer refreshing their order (a loser is told sold-out again);
//! - newcomers ([`SIGN_UP_WEIGHT`]): `auth`'s sign-up at the server's Argon2id cost on
//!   their first round, then they read their profile now and then.
//!
//! The checks are the three scenarios' own, together: the sale's (orders = stock, nobody
//! twice, replays consistent, every acknowledged order stored, Redis agreeing), every
//! read answered and right, every newcomer verified and reading their own profile.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use goose::metrics::GooseMetrics;
use goose::prelude::*;

use crate::auth::{self, Auth};
use crate::browse::{self, Browse};
use crate::sale::{self, ROUTE_REPLAY, Sale};

/// How goose deals users to the three kinds: 6 shoppers, 3 buyers, 1 newcomer in 10.
pub const SHOPPER_WEIGHT: usize = 6;
pub const BUYER_WEIGHT: usize = 3;
pub const SIGN_UP_WEIGHT: usize = 1;
/// Think time between two rounds of one user, per kind (drawn uniformly by goose).
pub const SHOPPER_THINK: (Duration, Duration) = (Duration::from_millis(100), Duration::from_millis(500));
pub const BUYER_THINK: (Duration, Duration) = (Duration::from_millis(250), Duration::from_millis(1_000));
pub const SIGN_UP_THINK: (Duration, Duration) = (Duration::from_millis(500), Duration::from_millis(2_000));
/// Per-request timeout of goose's client, in seconds (sign-ups queue for password hashes).
pub const REQUEST_TIMEOUT_S: u32 = 60;

/// What every goose user shares: the three scenarios' states, on one recorder.
#[derive(Debug)]
pub struct Mixed {
    pub sale: Arc<Sale>,
    pub browse: Arc<Browse>,
    pub auth: Arc<Auth>,
    /// Buyers who made their attempt (the sale's check needs how many took part).
    buyers_started: AtomicUsize,
}

impl Mixed {
    pub fn new(sale: Arc<Sale>, browse: Arc<Browse>, auth: Arc<Auth>) -> Self {
        Self { sale, browse, auth, buyers_started: AtomicUsize::new(0) }
    }

    /// Buyers who made their attempt.
    pub fn buyers_started(&self) -> usize {
        self.buyers_started.load(Ordering::Relaxed)
    }
}

/// Runs the scenario: `users` goose users, all started within one second and dealt to
/// the three kinds by weight, for `duration`.
pub async fn run(
    mixed: Arc<Mixed>,
    base_url: &str,
    users: usize,
    duration: Duration,
    reports: Vec<String>,
    baseline: Option<String>,
) -> anyhow::Result<GooseMetrics> {
    let mut config = crate::crowd::configuration(base_url, users, REQUEST_TIMEOUT_S, reports, baseline);
    config.run_time = Some(duration.as_secs().max(1).to_string());
    let (shared_shop, shared_buy, shared_sign) = (Arc::clone(&mixed), Arc::clone(&mixed), Arc::clone(&mixed));
    let shop = Transaction::new(Arc::new(move |user| Box::pin(browse::shopper(user, Arc::clone(&shared_shop.browse)))))
        .set_name("shopper");
    let buy = Transaction::new(Arc::new(move |user| Box::pin(buyer(user, Arc::clone(&shared_buy))))).set_name("buyer");
    let sign_up =
        Transaction::new(Arc::new(move |user| Box::pin(newcomer(user, Arc::clone(&shared_sign))))).set_name("newcomer");
    let metrics = GooseAttack::initialize_with_config(config)?
        .register_scenario(
            scenario!("shoppers")
                .set_weight(SHOPPER_WEIGHT)?
                .set_wait_time(SHOPPER_THINK.0, SHOPPER_THINK.1)?
                .register_transaction(shop),
        )
        .register_scenario(
            scenario!("buyers")
                .set_weight(BUYER_WEIGHT)?
                .set_wait_time(BUYER_THINK.0, BUYER_THINK.1)?
                .register_transaction(buy),
        )
        .register_scenario(
            scenario!("newcomers")
                .set_weight(SIGN_UP_WEIGHT)?
                .set_wait_time(SIGN_UP_THINK.0, SIGN_UP_THINK.1)?
                .register_transaction(sign_up),
        )
        .execute()
        .await?;
    Ok(metrics)
}

/// A buyer's round: the whole attempt first, then a replay of their own key.
async fn buyer(user: &mut GooseUser, mixed: Arc<Mixed>) -> TransactionResult {
    if user.get_iterations() == 0 {
        mixed.buyers_started.fetch_add(1, Ordering::Relaxed);
        return sale::buyer(user, Arc::clone(&mixed.sale)).await;
    }
    let index = user.weighted_users_index;
    let Some(buyer) = mixed.sale.buyer_of(index) else { return Ok(()) };
    sale::buy(user, &mixed.sale, &buyer, &sale::key_of(index), ROUTE_REPLAY).await?;
    Ok(())
}

/// A newcomer's round: signing up first, then reading their profile.
async fn newcomer(user: &mut GooseUser, mixed: Arc<Mixed>) -> TransactionResult {
    if user.get_iterations() == 0 {
        return auth::person(user, Arc::clone(&mixed.auth)).await;
    }
    auth::profile(user, &mixed.auth).await
}
