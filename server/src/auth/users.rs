//! User records (`users`): email rules, creation, lookup and roles. The record and the
//! role live in `db::records`, with every other stored document.

use uuid::Uuid;

use crate::db::records::Role;
pub use crate::db::records::UserDoc;
use crate::db::{DbError, DuplicateIndex};
use crate::error::ApiError;
use crate::redis::keys::sha256_hex;
use crate::state::App;

/// Longest accepted email address (RFC 5321 path limit).
pub const MAX_EMAIL_CHARS: usize = 254;
/// Longest accepted local part (RFC 5321).
pub const MAX_EMAIL_LOCAL_CHARS: usize = 64;
/// Shortest accepted password (NIST SP 800-63B).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest accepted password: long passphrases are welcome, unbounded hashing input is not.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Unicode's default-ignorable code points (`Default_Ignorable_Code_Point`, Unicode 15):
/// characters that render as nothing (zero-width spaces and joiners, bidi controls,
/// variation selectors, fillers, tags). In an address they only make a second account
/// that looks like an existing one (`admin@example.com` followed by U+200B).
pub const INVISIBLE_CHARS: [std::ops::RangeInclusive<char>; 17] = [
    '\u{00AD}'..='\u{00AD}',
    '\u{034F}'..='\u{034F}',
    '\u{061C}'..='\u{061C}',
    '\u{115F}'..='\u{1160}',
    '\u{17B4}'..='\u{17B5}',
    '\u{180B}'..='\u{180F}',
    '\u{200B}'..='\u{200F}',
    '\u{202A}'..='\u{202E}',
    '\u{2060}'..='\u{206F}',
    '\u{3164}'..='\u{3164}',
    '\u{FE00}'..='\u{FE0F}',
    '\u{FEFF}'..='\u{FEFF}',
    '\u{FFA0}'..='\u{FFA0}',
    '\u{FFF0}'..='\u{FFF8}',
    '\u{1BCA0}'..='\u{1BCA3}',
    '\u{1D173}'..='\u{1D17A}',
    '\u{E0000}'..='\u{E0FFF}',
];

fn is_invisible(c: char) -> bool {
    INVISIBLE_CHARS.iter().any(|range| range.contains(&c))
}

/// The form every email is stored and compared in: trimmed and lowercased.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The rate-limit account of an email, named by a hash so that limits work the same
/// for unknown addresses and Redis never holds the address itself.
pub fn account_hash(normalised_email: &str) -> String {
    sha256_hex(normalised_email.as_bytes())
}

/// Checks an email address, trimmed; the error says what is wrong. The rules are the
/// `pattern` of the OpenAPI description's `email` fields.
pub fn validate_email(email: &str) -> Result<(), ApiError> {
    let invalid = |why: &str| Err(ApiError::InvalidBody(format!("email: {why}")));
    if email.is_empty() || email.chars().count() > MAX_EMAIL_CHARS {
        return invalid("must be 1 to 254 characters");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid("must not contain spaces or control characters");
    }
    if email.chars().any(is_invisible) {
        return invalid("must not contain invisible characters (zero-width, bidi controls, variation selectors)");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return invalid("must contain one '@'");
    };
    if domain.contains('@') {
        return invalid("must contain one '@'");
    }
    if local.is_empty() || local.chars().count() > MAX_EMAIL_LOCAL_CHARS {
        return invalid("the part before '@' must be 1 to 64 characters");
    }
    let labels_ok = domain.split('.').all(|label| !label.is_empty());
    if !domain.contains('.') || !labels_ok {
        return invalid("the domain must have a dot and no empty labels, like example.com");
    }
    Ok(())
}

/// Checks a password's length in characters (NIST: at least 8, allow long passphrases).
pub fn validate_password(password: &str) -> Result<(), ApiError> {
    let chars = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        return Err(ApiError::InvalidBody(format!(
            "password: must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        )));
    }
    Ok(())
}

/// The role an email gets: administrators are named in the configuration.
pub fn configured_role(app: &App, normalised_email: &str) -> Role {
    let is_admin = app.config.admin_emails.iter().any(|admin| normalise_email(admin) == normalised_email);
    if is_admin { Role::Admin } else { Role::Buyer }
}

/// Inserts a user; `Ok(None)` when the email is already taken (unique index).
pub async fn insert_user(app: &App, email: &str, password_hash: &str, role: Role) -> Result<Option<Uuid>, DbError> {
    let id = app.ids.new_record_id();
    let user = UserDoc {
        id: id.to_string(),
        email: normalise_email(email),
        password_hash: password_hash.to_owned(),
        role,
        created_at_ms: app.ids.now_ms(),
    };
    match app.db.insert_user(&user).await {
        Ok(()) => Ok(Some(id)),
        Err(DbError::DuplicateKey { index: DuplicateIndex::UserEmail }) => Ok(None),
        // The index named is a hint (FerretDB names none, or `_id_` for any): read
        // whether the email is taken.
        Err(err @ DbError::DuplicateKey { .. }) => match app.db.find_user_by_email(&user.email).await? {
            Some(_) => Ok(None),
            None => Err(err),
        },
        Err(err) => Err(err),
    }
}

/// Inserts a user with an already computed hash (tests, the simulator).
pub async fn create_user_with_hash(app: &App, email: &str, password_hash: &str, role: Role) -> anyhow::Result<Uuid> {
    match insert_user(app, email, password_hash, role).await? {
        Some(id) => Ok(id),
        None => anyhow::bail!("a user with email {email:?} already exists"),
    }
}

/// Users inserted per `insert_many` by [`create_users_with_hash`].
pub const USER_BATCH: usize = 1_000;

/// Inserts many users sharing one precomputed hash, in batches (the simulator's setup:
/// thousands of buyers before the sale). Fails if any email is taken.
pub async fn create_users_with_hash(
    app: &App,
    emails: &[String],
    password_hash: &str,
    role: Role,
) -> anyhow::Result<Vec<UserDoc>> {
    let users: Vec<UserDoc> = emails
        .iter()
        .map(|email| UserDoc {
            id: app.ids.new_record_id().to_string(),
            email: normalise_email(email),
            password_hash: password_hash.to_owned(),
            role,
            created_at_ms: app.ids.now_ms(),
        })
        .collect();
    for batch in users.chunks(USER_BATCH) {
        app.db.insert_users(batch).await?;
    }
    Ok(users)
}

pub async fn find_by_email(app: &App, normalised_email: &str) -> Result<Option<UserDoc>, DbError> {
    app.db.find_user_by_email(normalised_email).await
}

pub async fn find_by_id(app: &App, id: Uuid) -> Result<Option<UserDoc>, DbError> {
    app.db.find_user(&id.to_string()).await
}

/// Sets the role of the user with this email (`flashsale admin promote`).
pub async fn set_role(app: &App, email: &str, role: Role) -> anyhow::Result<()> {
    let email = normalise_email(email);
    if !app.db.set_user_role(&email, role).await? {
        anyhow::bail!("no user has the email {email:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_addresses_are_accepted() {
        for email in ["a@b.co", "first.last+tag@example.com", "x@sub.domain.example"] {
            assert!(validate_email(email).is_ok(), "{email}");
        }
    }

    #[test]
    fn malformed_addresses_are_refused() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_total = format!("a@{}.com", "b".repeat(250));
        for email in
            ["", "plain", "a@@b.co", "a@b@c.co", "@b.co", "a@localhost", "a@.co", "a@b..co", "a b@c.co", "a@b.co\n"]
        {
            assert!(validate_email(email).is_err(), "{email:?}");
        }
        assert!(validate_email(&long_local).is_err());
        assert!(validate_email(&long_total).is_err());
    }

    #[test]
    fn an_address_with_a_character_that_renders_as_nothing_is_refused() {
        for invisible in
            ['\u{200B}', '\u{200D}', '\u{202E}', '\u{2066}', '\u{FEFF}', '\u{00AD}', '\u{FE0F}', '\u{E0041}']
        {
            for email in [format!("admin@example.com{invisible}"), format!("ad{invisible}min@example.com")] {
                assert!(validate_email(&email).is_err(), "{email:?}");
            }
        }
        // Visible non-ASCII stays accepted (internationalised addresses).
        for email in ["jürgen@example.de", "用户@例子.广告", "ａdmin@example.com"] {
            assert!(validate_email(email).is_ok(), "{email}");
        }
    }

    #[test]
    fn emails_are_normalised_by_trimming_and_lowercasing() {
        assert_eq!(normalise_email("  Alice@Example.COM "), "alice@example.com");
    }

    #[test]
    fn passwords_between_8_and_128_characters_are_accepted() {
        assert!(validate_password("1234567").is_err());
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password(&"é".repeat(128)).is_ok());
        assert!(validate_password(&"a".repeat(129)).is_err());
    }
}
