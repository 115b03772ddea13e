//! The embedded store (SQLite at `storage.path`): what must survive a restart.
//!
//! Today that is the HS256 secret generated on first start when the config names none, so
//! tokens minted by `wsgate token` keep working across restarts. API keys and revocations
//! live here too as they arrive. One connection behind a mutex: the store is touched at
//! start-up and by admin operations, never per message.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use wsgate::Revoked;

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
             CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS revocations (
                 kind TEXT NOT NULL, value TEXT NOT NULL, at INTEGER NOT NULL, until INTEGER NOT NULL,
                 PRIMARY KEY (kind, value));",
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

impl Store {
    /// Records a revocation (keeping the later expiry if one exists).
    pub fn add_revocation(&self, r: &Revoked) -> Result<(), StoreError> {
        let (kind, value, at, until) = match r {
            Revoked::Jti { jti, until } => ("jti", jti, 0, *until),
            Revoked::Subject { sub, at, until } => ("sub", sub, *at, *until),
        };
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute(
            "INSERT INTO revocations (kind, value, at, until) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, value) DO UPDATE SET at = max(at, excluded.at), until = max(until, excluded.until)",
            params![kind, value, at as i64, until as i64],
        )
        .map_err(|e| self.wrap(e))?;
        Ok(())
    }

    /// Revocations still in force (expired ones are deleted on the way).
    pub fn revocations(&self) -> Result<Vec<Revoked>, StoreError> {
        let now = wsgate::verify::now_unix() as i64;
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute("DELETE FROM revocations WHERE until < ?1", params![now])
            .map_err(|e| self.wrap(e))?;
        let mut stmt = conn
            .prepare("SELECT kind, value, at, until FROM revocations")
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map([], |r| {
                let kind: String = r.get(0)?;
                let value: String = r.get(1)?;
                let at = r.get::<_, i64>(2)?.max(0) as u64;
                let until = r.get::<_, i64>(3)?.max(0) as u64;
                Ok(match kind.as_str() {
                    "jti" => Revoked::Jti { jti: value, until },
                    _ => Revoked::Subject {
                        sub: value,
                        at,
                        until,
                    },
                })
            })
            .map_err(|e| self.wrap(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.wrap(e))
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

    #[test]
    fn revocations_survive_reopening_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let now = wsgate::verify::now_unix();
        let s = Store::open(&path).unwrap();
        s.add_revocation(&Revoked::Jti {
            jti: "j".into(),
            until: now + 60,
        })
        .unwrap();
        s.add_revocation(&Revoked::Subject {
            sub: "b".into(),
            at: now,
            until: now + 60,
        })
        .unwrap();
        s.add_revocation(&Revoked::Jti {
            jti: "old".into(),
            until: now - 1,
        })
        .unwrap();
        drop(s);
        let mut got = Store::open(&path).unwrap().revocations().unwrap();
        got.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(got.len(), 2, "{got:?}");
    }
}
