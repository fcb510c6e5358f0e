//! Built-in users: the `users` table of our own database.

use crate::store::Store;
use crate::users::{Credential, DirectoryEntry, Secret, User};
use crate::{Error, Result};

/// Login names we accept for built-in users: extension numbers, e-mail-like names.
pub fn validate_username(username: &str) -> Result<()> {
    let ok = (1..=64).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(
            "username must be 1-64 characters of A-Z a-z 0-9 . _ @ + -".into(),
        ))
    }
}

/// Display names: up to 128 characters, no control characters (the name ends
/// up in apps' lists and in `user list`'s columns).
pub fn validate_display_name(name: &str) -> Result<()> {
    if name.chars().count() <= 128 && !name.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(Error::Invalid(
            "display name must be at most 128 characters, without control characters".into(),
        ))
    }
}

/// Roles a token may carry.
pub fn validate_role(role: &str) -> Result<()> {
    if matches!(role, "user" | "admin") {
        Ok(())
    } else {
        Err(Error::Invalid("role must be `user` or `admin`".into()))
    }
}

pub fn find(store: &Store, username: &str) -> Result<Option<Credential>> {
    Ok(store.user(username)?.map(|row| Credential {
        user: User {
            id: row.id,
            username: row.username,
            role: row.role,
        },
        secret: Secret::Hash(row.password_hash),
        disabled: row.disabled,
    }))
}

/// Enabled users with their display names, sorted for the directory.
pub fn directory(store: &Store) -> Result<Vec<DirectoryEntry>> {
    store.directory()
}
