//! The embedded store (SQLite at `storage.path`): what must survive a restart.
//!
//! Today that is the HS256 secret generated on first start when the config names none, so
//! tokens minted by `wsgate token` keep working across restarts. API keys and revocations
//! live here too as they arrive. One connection behind a mutex: the store is touched at
//! start-up and by admin operations, never per message.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

#[derive(Debug, thiserror::Error)]
#[error("store {path}: {source}")]
pub struct StoreError {
    path: PathBuf,
    #[source]
    source: rusqlite::Error,
}

pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const JWT_SECRET_KEY: &str = "jwt_hs256_secret";

impl Store {
    /// Opens (creating if needed) the database and its schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let wrap = |source| StoreError {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(wrap)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
        )
        .map_err(wrap)?;
        Ok(Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn wrap(&self, source: rusqlite::Error) -> StoreError {
        StoreError {
            path: self.path.clone(),
            source,
        }
    }

    /// The generated HS256 secret, created (32 random bytes) on first use.
    pub fn jwt_secret(&self) -> Result<Vec<u8>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let get = |c: &Connection| {
            c.query_row(
                "SELECT value FROM settings WHERE key = ?1",
                params![JWT_SECRET_KEY],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
        };
        if let Some(s) = get(&conn).map_err(|e| self.wrap(e))? {
            return Ok(s);
        }
        let mut secret = vec![0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| {
            self.wrap(rusqlite::Error::ToSqlConversionFailure(Box::new(
                std::io::Error::other(e.to_string()),
            )))
        })?;
        // Another process may have raced us: keep whichever secret landed first.
        conn.execute(
            "INSERT OR IGNORE INTO settings (key, value) VALUES (?1, ?2)",
            params![JWT_SECRET_KEY, secret],
        )
        .map_err(|e| self.wrap(e))?;
        get(&conn)
            .map_err(|e| self.wrap(e))?
            .ok_or_else(|| self.wrap(rusqlite::Error::QueryReturnedNoRows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let first = Store::open(&path).unwrap().jwt_secret().unwrap();
        assert_eq!(first.len(), 32);
        let again = Store::open(&path).unwrap().jwt_secret().unwrap();
        assert_eq!(first, again);
    }
}
