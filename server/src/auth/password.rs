//! Password hashing with argon2id, off the async executor.

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::config::Config;

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
