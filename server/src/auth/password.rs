//! Password hashing with argon2id, off the async executor and bounded in concurrency
//! (each hash holds `argon2_m_kib` of memory).

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use tokio::sync::OwnedSemaphorePermit;

use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::state::App;

pub fn hasher(config: &Config) -> anyhow::Result<Argon2<'static>> {
    let params = Params::new(config.argon2_m_kib, config.argon2_t, config.argon2_p, None)
        .map_err(|err| anyhow::anyhow!("argon2 parameters: {err}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// A hash of a random password, verified for unknown users so that every login costs
/// the same.
pub fn dummy_hash(config: &Config) -> anyhow::Result<String> {
    let salt = SaltString::from_b64("ZHVtbXlzYWx0ZHVtbXlzYWx0").map_err(|err| anyhow::anyhow!("salt: {err}"))?;
    let hash = hasher(config)?
        .hash_password(b"no user has this password", &salt)
        .map_err(|err| anyhow::anyhow!("dummy hash: {err}"))?;
    Ok(hash.to_string())
}

/// Admission to one password check (a login or a registration), taken before any store
/// is read: at most `max_concurrent_hashes` hashes run and `max_queued_hashes` wait for
/// a slot. Past that the request is shed at once (503 `busy`, Retry-After) instead of
/// joining a queue that a flood of wrong passwords keeps seconds long. Held until the
/// request's check is done.
pub fn admit(app: &App) -> ApiResult<OwnedSemaphorePermit> {
    app.password_admission.clone().try_acquire_owned().map_err(|_| {
        app.metrics.password_checks_shed.inc();
        ApiError::Busy
    })
}

/// The PHC string of `password` under the configured parameters and a fresh salt.
pub async fn hash_password(app: &App, password: String) -> anyhow::Result<String> {
    let hasher = hasher(&app.config)?;
    let salt_bytes = app.ids.random_bytes::<16>();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|err| anyhow::anyhow!("salt: {err}"))?;
    let _permit = app.hashing.acquire().await.context("hashing semaphore closed")?;
    tokio::task::spawn_blocking(move || {
        hasher
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|err| anyhow::anyhow!("hashing a password: {err}"))
    })
    .await
    .context("hashing task")?
}

/// Whether `password` matches the PHC string `stored` (its own parameters apply).
/// A malformed stored hash is a corrupt record: it counts as a mismatch and is logged.
pub async fn verify_password(app: &App, password: String, stored: String) -> anyhow::Result<bool> {
    let hasher = hasher(&app.config)?;
    let _permit = app.hashing.acquire().await.context("hashing semaphore closed")?;
    tokio::task::spawn_blocking(move || match PasswordHash::new(&stored) {
        Ok(parsed) => hasher.verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(err) => {
            tracing::error!(error = %err, "a stored password hash is not a PHC string");
            false
        }
    })
    .await
    .context("verification task")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_parameters_give_an_argon2id_v19_hash_at_owasp_strength() {
        let config = Config::for_local("redis://x", "mongodb://x", "d", "p");
        let salt = SaltString::encode_b64(b"sixteen byte salt").expect("salt");
        let hash = hasher(&config).expect("hasher").hash_password(b"pass phrase", &salt).expect("hash").to_string();
        let parsed = PasswordHash::new(&hash).expect("PHC string");
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert_eq!(parsed.version, Some(19));
        let param = |name: &str| parsed.params.get_decimal(name).expect("parameter");
        assert!(param("m") >= 19_456 && param("t") >= 2 && param("p") >= 1, "{hash}");
    }
}
