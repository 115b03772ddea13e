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

/// A store problem, said once, with what to do about it: `storage.path <file>: <problem>
/// (<hint>)`. The SQLite error is flattened into `problem` rather than kept as a source, so
/// a `{:#}` chain does not repeat it.
#[derive(Debug, thiserror::Error)]
#[error("storage.path {}: {problem}{hint}", path.display())]
pub struct StoreError {
    path: PathBuf,
    problem: String,
    hint: &'static str,
}

impl StoreError {
    fn new(path: &Path, source: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        let (problem, code) = match &source {
            rusqlite::Error::SqliteFailure(e, msg) => {
                (msg.clone().unwrap_or_else(|| e.to_string()), Some(e.code))
            }
            rusqlite::Error::ToSqlConversionFailure(e) => (e.to_string(), None),
            other => (other.to_string(), None),
        };
        let hint = match code {
            Some(CannotOpen) => {
                " (does the folder exist, and may wsgate write there? set [storage] path to a writable file)"
            }
            Some(NotADatabase) => {
                " (this file is not a wsgate store: point [storage] path at a new or existing wsgate.db)"
            }
            Some(ReadOnly | PermissionDenied) => {
                " (wsgate may not write this file: fix its permissions or choose another [storage] path)"
            }
            Some(DatabaseBusy | DatabaseLocked) => " (another process holds the store; try again)",
            _ => "",
        };
        Self {
            path: path.to_path_buf(),
            problem,
            hint,
        }
    }
}

pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const JWT_SECRET_KEY: &str = "jwt_hs256_secret";
const KEY_PEPPER: &str = "api_key_pepper";

/// One API key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub sub: String,
    pub channels: Vec<String>,
    pub publish: Vec<String>,
    pub created: u64,
    pub last_used: Option<u64>,
    pub expires: Option<u64>,
    pub revoked: Option<u64>,
    pub hash: Vec<u8>,
}

impl Store {
    /// Opens (creating if needed) the database and its schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let wrap = |source| StoreError::new(path, source);
        let conn = Connection::open(path).map_err(wrap)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS revocations (
                 kind TEXT NOT NULL, value TEXT NOT NULL, at INTEGER NOT NULL, until INTEGER NOT NULL,
                 PRIMARY KEY (kind, value));
             CREATE TABLE IF NOT EXISTS api_keys (
                 id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, sub TEXT NOT NULL,
                 channels TEXT NOT NULL, publish TEXT NOT NULL, hash BLOB NOT NULL,
                 created INTEGER NOT NULL, last_used INTEGER, expires INTEGER, revoked INTEGER);",
        )
        .map_err(wrap)?;
        check_schema(&conn).map_err(|problem| schema_error(path, problem))?;
        Ok(Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn wrap(&self, source: rusqlite::Error) -> StoreError {
        StoreError::new(&self.path, source)
    }

    /// An error about this store that did not come from SQLite.
    pub fn error(&self, what: &str) -> StoreError {
        StoreError {
            path: self.path.clone(),
            problem: what.to_owned(),
            hint: "",
        }
    }

    /// What `check-config` can say without creating anything: an existing file must be a
    /// SQLite database wsgate can open; a new one needs an existing folder to live in.
    pub fn check(path: &Path) -> Result<(), StoreError> {
        let problem = |problem: String, hint| StoreError {
            path: path.to_path_buf(),
            problem,
            hint,
        };
        if path.exists() {
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
            let conn =
                Connection::open_with_flags(path, flags).map_err(|e| StoreError::new(path, e))?;
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|e| StoreError::new(path, e))?;
            return check_schema(&conn).map_err(|problem| schema_error(path, problem));
        }
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        match std::fs::metadata(folder) {
            Ok(m) if m.is_dir() && !m.permissions().readonly() => Ok(()),
            Ok(m) if m.is_dir() => Err(problem(
                format!("the folder {} is read-only", folder.display()),
                " (choose a writable [storage] path)",
            )),
            _ => Err(problem(
                format!("the folder {} does not exist", folder.display()),
                " (create it, or set [storage] path to a file in an existing folder)",
            )),
        }
    }

    /// The generated HS256 secret, created (32 random bytes) on first use.
    pub fn jwt_secret(&self) -> Result<Vec<u8>, StoreError> {
        self.random_setting(JWT_SECRET_KEY)
    }

    /// The pepper API key hashes are keyed with, created on first use.
    pub fn key_pepper(&self) -> Result<Vec<u8>, StoreError> {
        self.random_setting(KEY_PEPPER)
    }

    fn random_setting(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let get = |c: &Connection| {
            c.query_row(
                "SELECT value FROM settings WHERE key = ?1",
                params![name],
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
            params![name, secret],
        )
        .map_err(|e| self.wrap(e))?;
        get(&conn)
            .map_err(|e| self.wrap(e))?
            .ok_or_else(|| self.wrap(rusqlite::Error::QueryReturnedNoRows))
    }
}

impl Store {
    pub fn insert_key(&self, k: &ApiKey) -> Result<(), StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute(
            "INSERT INTO api_keys (id, name, sub, channels, publish, hash, created, expires)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                k.id,
                k.name,
                k.sub,
                serde_json::to_string(&k.channels).unwrap_or_default(),
                serde_json::to_string(&k.publish).unwrap_or_default(),
                k.hash,
                sql_time(k.created),
                k.expires.map(sql_time),
            ],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                self.error(&format!("a key named `{}` already exists", k.name))
            }
            e => self.wrap(e),
        })?;
        Ok(())
    }

    fn key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKey> {
        let list = |s: String| serde_json::from_str::<Vec<String>>(&s).unwrap_or_default();
        let opt = |v: Option<i64>| v.map(|x| x.max(0) as u64);
        Ok(ApiKey {
            id: r.get(0)?,
            name: r.get(1)?,
            sub: r.get(2)?,
            channels: list(r.get(3)?),
            publish: list(r.get(4)?),
            hash: r.get(5)?,
            created: r.get::<_, i64>(6)?.max(0) as u64,
            last_used: opt(r.get(7)?),
            expires: opt(r.get(8)?),
            revoked: opt(r.get(9)?),
        })
    }

    const KEY_COLUMNS: &str =
        "id, name, sub, channels, publish, hash, created, last_used, expires, revoked";

    pub fn key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.query_row(
            &format!("SELECT {} FROM api_keys WHERE id = ?1", Self::KEY_COLUMNS),
            params![id],
            Self::key_from_row,
        )
        .optional()
        .map_err(|e| self.wrap(e))
    }

    pub fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {} FROM api_keys ORDER BY created, name",
                Self::KEY_COLUMNS
            ))
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map([], Self::key_from_row)
            .map_err(|e| self.wrap(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.wrap(e))
    }

    pub fn touch_key(&self, id: &str, now: u64) {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let _ = conn.execute(
            "UPDATE api_keys SET last_used = ?2 WHERE id = ?1",
            params![id, sql_time(now)],
        );
    }

    /// Revokes a key by id or name; `false` if there is no such key (or it was revoked).
    pub fn revoke_key(&self, id_or_name: &str) -> Result<bool, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let n = conn
            .execute(
                "UPDATE api_keys SET revoked = ?2 WHERE (id = ?1 OR name = ?1) AND revoked IS NULL",
                params![id_or_name, sql_time(wsgate::verify::now_unix())],
            )
            .map_err(|e| self.wrap(e))?;
        Ok(n > 0)
    }

    /// Revokes every key of `sub` not yet revoked; how many.
    pub fn revoke_keys_of(&self, sub: &str) -> Result<usize, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute(
            "UPDATE api_keys SET revoked = ?2 WHERE sub = ?1 AND revoked IS NULL",
            params![sub, sql_time(wsgate::verify::now_unix())],
        )
        .map_err(|e| self.wrap(e))
    }

    /// Keys revoked at or after `since` (unix seconds), with when.
    pub fn keys_revoked_since(&self, since: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn
            .prepare("SELECT id, revoked FROM api_keys WHERE revoked >= ?1")
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params![sql_time(since)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })
            .map_err(|e| self.wrap(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.wrap(e))
    }

    /// Records a revocation (keeping the later expiry if one exists).
    pub fn add_revocation(&self, r: &Revoked) -> Result<(), StoreError> {
        let pair;
        let (kind, value, at, until) = match r {
            Revoked::Jti { jti, until } => ("jti", jti, 0, *until),
            Revoked::Subject { sub, at, until } => ("sub", sub, *at, *until),
            Revoked::Claim {
                claim,
                value,
                at,
                until,
            } => {
                // One text column: the pair as a JSON array, unambiguous whatever it holds.
                pair = serde_json::json!([claim, value]).to_string();
                ("claim", &pair, *at, *until)
            }
        };
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute(
            "INSERT INTO revocations (kind, value, at, until) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, value) DO UPDATE SET at = max(at, excluded.at), until = max(until, excluded.until)",
            params![kind, value, sql_time(at), sql_time(until)],
        )
        .map_err(|e| self.wrap(e))?;
        Ok(())
    }

    /// Revocations still in force (expired ones are deleted on the way).
    pub fn revocations(&self) -> Result<Vec<Revoked>, StoreError> {
        let now = sql_time(wsgate::verify::now_unix());
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
                    "jti" => Some(Revoked::Jti { jti: value, until }),
                    // The pair as written by `add_revocation`; a row that is not one is skipped
                    // (nothing to guess a refusal from).
                    "claim" => serde_json::from_str::<(String, String)>(&value).ok().map(
                        |(claim, value)| Revoked::Claim {
                            claim,
                            value,
                            at,
                            until,
                        },
                    ),
                    _ => Some(Revoked::Subject {
                        sub: value,
                        at,
                        until,
                    }),
                })
            })
            .map_err(|e| self.wrap(e))?;
        let rows: Vec<Option<Revoked>> =
            rows.collect::<Result<_, _>>().map_err(|e| self.wrap(e))?;
        Ok(rows.into_iter().flatten().collect())
    }
}

/// Unix seconds as SQLite's signed integer, clamped rather than wrapped to a negative.
fn sql_time(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// The columns wsgate reads in each of its tables.
const SCHEMA: [(&str, &[&str]); 3] = [
    ("settings", &["key", "value"]),
    ("revocations", &["kind", "value", "at", "until"]),
    (
        "api_keys",
        &[
            "id",
            "name",
            "sub",
            "channels",
            "publish",
            "hash",
            "created",
            "last_used",
            "expires",
            "revoked",
        ],
    ),
];

/// A database that has one of wsgate's tables with other columns (another program's file,
/// another version's) is refused by name, at `check-config` and at start, rather than
/// failing later on a query.
fn check_schema(conn: &Connection) -> Result<(), String> {
    for (table, wanted) in SCHEMA {
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .map_err(|e| e.to_string())?;
        let columns = stmt
            .query_map([table], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| e.to_string())?;
        if columns.is_empty() {
            continue; // created on first use
        }
        if let Some(missing) = wanted
            .iter()
            .find(|c| !columns.iter().any(|have| have == *c))
        {
            return Err(format!(
                "it has another schema: table `{table}` has no column `{missing}`"
            ));
        }
    }
    Ok(())
}

fn schema_error(path: &Path, problem: String) -> StoreError {
    StoreError {
        path: path.to_path_buf(),
        problem,
        hint: " (point [storage] path at wsgate's own database, or at a new file)",
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
        // Beyond i64: clamped, not wrapped into the past (and deleted as expired).
        s.add_revocation(&Revoked::Jti {
            jti: "forever".into(),
            until: u64::MAX,
        })
        .unwrap();
        // A claim whose name and value hold what a separator would break on.
        let claim = Revoked::Claim {
            claim: "te=nant".into(),
            value: "a\",b".into(),
            at: now,
            until: now + 60,
        };
        s.add_revocation(&claim).unwrap();
        drop(s);
        let mut got = Store::open(&path).unwrap().revocations().unwrap();
        got.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got.contains(&claim), "{got:?}");
    }
}
