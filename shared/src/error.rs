//! The shared library's one error type.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("config {origin}: field `{field}`: {reason}")]
    Config {
        origin: String,
        field: String,
        reason: String,
    },
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    DbOpen {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
    #[error("database {path}: schema version {found} is newer than this build knows ({known})")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("user source: {0}")]
    UserSource(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("random number generator failed")]
    Random,
}

impl Error {
    /// A statement that gave up because it was asked to
    /// ([`crate::store::Store::share_the_core`]).
    pub fn is_interrupted(&self) -> bool {
        matches!(self, Error::Db(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::OperationInterrupted)
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
