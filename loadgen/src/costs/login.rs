//! Login as the users collection grows: users are written straight into MongoDB through
//! the server crate (one real Argon2id hash at the server's cost, shared by all), then
//! logins of existing users are timed one at a time over HTTP, and the two parts of a login
//! that could grow are timed on their own: the password check, and the user lookup by
//! email (`Db::find_user_by_email`) beside a lookup by `_id` (`Db::find_user`), the lookup
//! a user keyed by a value derived from the email would need.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use flashsale::auth::extract::Role;
use flashsale::auth::{password, users};
use flashsale::state::App;
use serde::Serialize;

use super::drive::{Figures, fixed_count};
use crate::target::Target;

/// Logins timed at each size, one at a time, of users spread evenly over the collection.
pub const LOGIN_REQUESTS: usize = 20;
/// Lookups timed per kind at each size (their median is reported).
pub const LOOKUPS: usize = 5;
/// Password checks timed (their median is reported).
pub const PASSWORD_CHECKS: usize = 3;
/// Password of every user of the sweep (hashed once).
const PASSWORD: &str = "cost-sweep-password-not-secret";

/// Login at one size of the users collection.
#[derive(Debug, Clone, Serialize)]
pub struct LoginCost {
    pub users: usize,
    /// Seconds to insert this size's new users (`insert_many` of `users::USER_BATCH`).
    pub insert_s: f64,
    /// `POST /api/v1/auth/login`, one at a time (the rate is its inverse).
    pub login: Figures,
    /// One password check at the server's cost, ms.
    pub password_check_ms: f64,
    /// The lookup by email of the first and of the last user inserted, ms.
    pub by_email_first_ms: f64,
    pub by_email_last_ms: f64,
    /// The lookup by `_id` of the last user inserted, ms.
    pub by_id_last_ms: f64,
    /// Lookups that failed (MongoDB's operation timeout, `mongo_op_timeout_ms`).
    pub lookups_failed: usize,
}

/// Login costs at each size of `sizes` (users added between sizes).
pub async fn sweep(target: &Target, sizes: &[usize], run: &str, say: impl Fn(&str)) -> anyhow::Result<Vec<LoginCost>> {
    let app = &target.admin;
    let hash = password::hash_password(app, PASSWORD.to_owned()).await?;
    let mut made: Vec<users::UserDoc> = Vec::new();
    let mut costs = Vec::with_capacity(sizes.len());
    let client = reqwest::Client::builder().build()?;
    for &size in sizes {
        say(&format!("login with {size} users"));
        let inserting = Instant::now();
        let emails: Vec<String> =
            (made.len()..size).map(|index| format!("cost{index}-{run}@load.flashsale.test")).collect();
        made.extend(users::create_users_with_hash(app, &emails, &hash, Role::Buyer).await?);
        let insert_s = inserting.elapsed().as_secs_f64();
        let login = timed_logins(&client, &target.base_url, &made).await;
        let (first, last) = (made.first().context("no user")?, made.last().context("no user")?);
        let mut lookups_failed = 0;
        let by_email_first_ms =
            median_ms(LOOKUPS, &mut lookups_failed, || app.db.find_user_by_email(&first.email)).await?;
        let by_email_last_ms =
            median_ms(LOOKUPS, &mut lookups_failed, || app.db.find_user_by_email(&last.email)).await?;
        let by_id_last_ms = median_ms(LOOKUPS, &mut lookups_failed, || app.db.find_user(&last.id)).await?;
        costs.push(LoginCost {
            users: size,
            insert_s,
            login,
            password_check_ms: password_check_ms(app, &hash).await?,
            by_email_first_ms,
            by_email_last_ms,
            by_id_last_ms,
            lookups_failed,
        });
    }
    Ok(costs)
}

/// The users of `spread_indices` logging in one at a time.
async fn timed_logins(client: &reqwest::Client, base_url: &str, made: &[users::UserDoc]) -> Figures {
    let emails: Arc<Vec<String>> = Arc::new(
        spread_indices(made.len(), LOGIN_REQUESTS).into_iter().map(|index| made[index].email.clone()).collect(),
    );
    let (client, url) = (client.clone(), format!("{base_url}/api/v1/auth/login"));
    fixed_count(emails.len(), 1, move |index| {
        let body = serde_json::json!({ "email": emails[index], "password": PASSWORD }).to_string();
        let request = client.post(&url).header("content-type", "application/json").body(body);
        async move { request.send().await.is_ok_and(|answer| answer.status().as_u16() == 200) }
    })
    .await
}

/// `count` indices spread evenly over `0..len`, the first and the last included.
pub fn spread_indices(len: usize, count: usize) -> Vec<usize> {
    match (len, count) {
        (0, _) | (_, 0) => Vec::new(),
        (_, 1) => vec![len - 1],
        _ => (0..count).map(|k| k * (len - 1) / (count - 1)).collect(),
    }
}

async fn password_check_ms(app: &App, hash: &str) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(PASSWORD_CHECKS);
    for _ in 0..PASSWORD_CHECKS {
        let started = Instant::now();
        let matches = password::verify_password(app, PASSWORD.to_owned(), hash.to_owned()).await?;
        anyhow::ensure!(matches, "the shared hash does not match its password");
        times.push(started.elapsed());
    }
    Ok(median(&mut times).as_secs_f64() * 1_000.0)
}

/// The median time of `count` calls of `lookup`, which must find its user. A call that
/// fails (the store's operation timeout) counts with the time it took to fail, and in
/// `failures`.
async fn median_ms<F, Fut, E>(count: usize, failures: &mut usize, lookup: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Option<users::UserDoc>, E>>,
{
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        match lookup().await {
            Ok(found) => _ = found.context("the user was not found")?,
            Err(_) => *failures += 1,
        }
        times.push(started.elapsed());
    }
    Ok(median(&mut times).as_secs_f64() * 1_000.0)
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_indices_cover_the_collection_from_end_to_end() {
        assert_eq!(spread_indices(1_000, 5), [0, 249, 499, 749, 999]);
        assert_eq!(spread_indices(3, 1), [2]);
        assert_eq!(spread_indices(2, 3), [0, 0, 1]);
        assert!(spread_indices(0, 5).is_empty() && spread_indices(5, 0).is_empty());
    }

    #[test]
    fn the_median_of_an_odd_count_is_its_middle() {
        let mut times = [3, 1, 2].map(Duration::from_millis);
        assert_eq!(median(&mut times), Duration::from_millis(2));
        assert_eq!(median(&mut []), Duration::ZERO);
    }
}
