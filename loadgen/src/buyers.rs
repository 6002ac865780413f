//! Logged-in, verified buyers made before the load through the server crate's own code
//! (one password hash computed once, users inserted in batches, sessions written as a
//! login would), as the simulator does: the sale scenario measures the sale, not
//! argon2. Login at production argon2 cost is the `auth` scenario's business.

use std::net::Ipv4Addr;

use anyhow::Context;
use flashsale::auth::extract::Role;
use flashsale::auth::users;
use flashsale::auth::{password, session};
use flashsale::state::App;
use futures::StreamExt;
use uuid::Uuid;

/// Sessions written at once while making buyers.
pub const SETUP_CONCURRENCY: usize = 64;
/// Password of every load-test user (their hash is computed once).
const LOAD_PASSWORD: &str = "load-test-password-not-secret";

/// A verified buyer: the cookie of its session and the address it comes from.
#[derive(Debug, Clone)]
pub struct Buyer {
    pub user_id: Uuid,
    pub cookie: String,
    /// Its X-Forwarded-For (each buyer has its own, so per-IP limits act per buyer).
    pub ip: Ipv4Addr,
}

/// Makes `count` buyers; emails carry `run` so runs on shared backends never collide.
pub async fn make_buyers(app: &App, count: usize, run: &str) -> anyhow::Result<Vec<Buyer>> {
    let hash = password::hash_password(app, LOAD_PASSWORD.to_owned()).await?;
    let emails: Vec<String> = (0..count).map(|index| format!("buyer{index}-{run}@load.flashsale.test")).collect();
    let made = users::create_users_with_hash(app, &emails, &hash, Role::Buyer).await?;
    let sessions = futures::stream::iter(made.into_iter().enumerate().map(|(index, user)| async move {
        let token = session::create_verified_session_for(app, &user).await?;
        anyhow::Ok(Buyer { user_id: user.uuid()?, cookie: cookie(&token), ip: buyer_ip(index) })
    }))
    .buffer_unordered(SETUP_CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    sessions.into_iter().collect()
}

/// An administrator's session cookie (to create the product through the API).
pub async fn make_admin(app: &App, run: &str) -> anyhow::Result<String> {
    let hash = password::hash_password(app, LOAD_PASSWORD.to_owned()).await?;
    let email = format!("admin-{run}@load.flashsale.test");
    let made = users::create_users_with_hash(app, &[email], &hash, Role::Admin).await?;
    let user = made.first().context("no admin made")?;
    Ok(cookie(&session::create_verified_session_for(app, user).await?))
}

fn cookie(token: &str) -> String {
    format!("{}={token}", session::COOKIE_NAME)
}

/// A distinct address per buyer in 10.0.0.0/8 (16 million of them).
pub fn buyer_ip(index: usize) -> Ipv4Addr {
    let n = u32::try_from(index % (1 << 24)).unwrap_or(0);
    Ipv4Addr::from(0x0A00_0000 | n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_buyer_has_its_own_address() {
        let ips: std::collections::HashSet<Ipv4Addr> = (0..50_000).map(buyer_ip).collect();
        assert_eq!(ips.len(), 50_000);
        assert_eq!(buyer_ip(0), Ipv4Addr::new(10, 0, 0, 0));
        assert_eq!(buyer_ip(258), Ipv4Addr::new(10, 0, 1, 2));
    }
}
