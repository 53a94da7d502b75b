//! The host view's history on disk: `data_dir/history.sqlite3`, so a restart or an update
//! of the add-on keeps every container's memory history.
//!
//! SQLite in WAL mode, one transaction per poll: a `kill -9` at any moment loses at most
//! the poll in flight. The schema carries a version (`PRAGMA user_version`) and is
//! migrated forward on open. A file that is not a readable database is moved aside to
//! `history.sqlite3.corrupt-<unix seconds>` (logged once) and a fresh one started: never a
//! crash loop. A write that fails (a full disk) is returned to the caller, which logs it
//! and keeps polling in memory.
//!
//! Size: per container, one raw point per poll for 48 h (2,880 at 60 s) and one
//! 15-minute average for 90 days (8,640), each row a few integers keyed by a small
//! container id: about 0.4 MB per container, 40 MB for 100 containers (the bound the
//! tests check with simulated time, `BENCHMARKS.md` the measured figure).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use super::history::{BUCKET_SPAN_MS, Bucket, Meta, RAW_SPAN_MS, Saved};

/// The schema this code writes.
pub const SCHEMA_VERSION: i64 = 2;

/// The file name under `data_dir`.
pub const FILE_NAME: &str = "history.sqlite3";
/// The first schema (version 1): containers and their points, averages and restarts.
const SCHEMA_V1: &str = "
    CREATE TABLE containers (
        id INTEGER PRIMARY KEY, slug TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
        kind TEXT NOT NULL, segment INTEGER NOT NULL, segment_start_ms INTEGER,
        state TEXT, version TEXT);
    CREATE TABLE points (
        id INTEGER NOT NULL, at_ms INTEGER NOT NULL, bytes INTEGER NOT NULL,
        PRIMARY KEY (id, at_ms)) WITHOUT ROWID;
    CREATE TABLE averages (
        id INTEGER NOT NULL, start_ms INTEGER NOT NULL, segment INTEGER NOT NULL,
        sum REAL NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (id, start_ms, segment)) WITHOUT ROWID;
    CREATE TABLE restarts (
        id INTEGER NOT NULL, at_ms INTEGER NOT NULL,
        PRIMARY KEY (id, at_ms)) WITHOUT ROWID;";

/// How long the add-on's own samples are kept: its trend looks back a day; two leave room
/// for a restart without losing the day before.
pub const OWN_SPAN_MS: i64 = 48 * 3_600_000;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("history database {path}: cannot move the damaged file aside: {source}")]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("history database {path} was written by a newer Heapwatch (schema {found})")]
    TooNew { path: PathBuf, found: i64 },
}

/// One container's row to write after a poll.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    pub slug: String,
    pub name: String,
    pub kind: String,
    /// The sample this poll took, if it took one.
    pub point: Option<(i64, u64)>,
    /// The average the sample went into.
    pub bucket: Option<Bucket>,
    pub meta: Meta,
    pub restarts: Vec<i64>,
}

/// A container as loaded back.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    pub name: String,
    pub kind: String,
    pub saved: Saved,
}

/// The open database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// slug → container id.
    ids: BTreeMap<String, i64>,
}

impl Store {
    /// Opens (or creates) the database at `path`; a damaged file is moved aside and a
    /// fresh one created. Returns the store and, when a file was moved aside, where to.
    ///
    /// # Errors
    /// [`StoreError`] when even a fresh database cannot be created (an unwritable
    /// directory), or the file comes from a newer schema.
    pub fn open(path: &Path) -> Result<(Self, Option<PathBuf>), StoreError> {
        match Self::open_checked(path) {
            Ok(store) => Ok((store, None)),
            Err(StoreError::Sqlite { source, .. }) if is_damage(&source) => {
                let aside = aside_path(path);
                std::fs::rename(path, &aside).map_err(|source| StoreError::MoveAside {
                    path: path.to_path_buf(),
                    source,
                })?;
                for suffix in ["-wal", "-shm"] {
                    let mut side = path.as_os_str().to_owned();
                    side.push(suffix);
                    let _ = std::fs::remove_file(PathBuf::from(side));
                }
                Ok((Self::open_checked(path)?, Some(aside)))
            }
            Err(e) => Err(e),
        }
    }

    fn open_checked(path: &Path) -> Result<Self, StoreError> {
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(sqlite)?;
        // A damaged header shows here; a damaged page in the check below.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;
        // A poll touches a few pages; the default 2 MB page cache would only hold what the
        // start-up load read once.
        conn.pragma_update(None, "cache_size", -256)
            .map_err(sqlite)?;
        let ok: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(sqlite)?;
        if ok != "ok" {
            return Err(sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(ok),
            )));
        }
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sqlite)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
            });
        }
        if version < 1 {
            conn.execute_batch(&format!(
                "BEGIN; {SCHEMA_V1} PRAGMA user_version = 1; COMMIT;"
            ))
            .map_err(sqlite)?;
        }
        if version < 2 {
            // Version 2: the add-on's own memory (process RSS, heap through its allocator),
            // one row per trend sample.
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE own_samples (
                     at_ms INTEGER PRIMARY KEY, rss INTEGER NOT NULL, heap INTEGER NOT NULL);
                 PRAGMA user_version = 2;
                 COMMIT;",
            )
            .map_err(sqlite)?;
        }
        let mut ids = BTreeMap::new();
        {
            let mut q = conn
                .prepare("SELECT slug, id FROM containers")
                .map_err(sqlite)?;
            let rows = q
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(sqlite)?;
            for row in rows {
                let (slug, id) = row.map_err(sqlite)?;
                ids.insert(slug, id);
            }
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            ids,
        })
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Every container's saved history.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn load(&self) -> Result<BTreeMap<String, Loaded>, StoreError> {
        self.load_since(i64::MIN, i64::MIN)
    }

    /// Every container's saved history, raw points from `raw_since_ms` and averages from
    /// `buckets_since_ms` on (what the monitor keeps in memory; longer spans are read with
    /// [`Store::span`]).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn load_since(
        &self,
        raw_since_ms: i64,
        buckets_since_ms: i64,
    ) -> Result<BTreeMap<String, Loaded>, StoreError> {
        let mut out = BTreeMap::new();
        let mut q = self
            .conn
            .prepare(
                "SELECT id, slug, name, kind, segment, segment_start_ms, state, version
                 FROM containers",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows: Vec<(i64, String, Loaded)> = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    Loaded {
                        name: r.get(2)?,
                        kind: r.get(3)?,
                        saved: Saved {
                            meta: Meta {
                                segment: r.get(4)?,
                                segment_start_ms: r.get(5)?,
                                state: r.get(6)?,
                                version: r.get(7)?,
                            },
                            ..Saved::default()
                        },
                    },
                ))
            })
            .map_err(|e| self.sqlite(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sqlite(e))?;
        for (id, slug, mut loaded) in rows {
            let saved = &mut loaded.saved;
            saved.raw = self.rows(
                "SELECT at_ms, bytes FROM points WHERE id = ?1 ORDER BY at_ms",
                id,
                |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0).unsigned_abs())),
            )?;
            saved.buckets = self.rows(
                "SELECT start_ms, sum, count, segment FROM averages WHERE id = ?1
                 ORDER BY start_ms, segment",
                id,
                |r| {
                    Ok(Bucket {
                        start_ms: r.get(0)?,
                        sum: r.get(1)?,
                        count: r.get(2)?,
                        segment: r.get(3)?,
                    })
                },
            )?;
            // One container's rows at a time: what stays is only the span kept in memory.
            saved.raw.retain(|&(t, _)| t >= raw_since_ms);
            saved.raw.shrink_to_fit();
            saved.buckets.retain(|b| b.start_ms >= buckets_since_ms);
            saved.buckets.shrink_to_fit();
            saved.restarts = self.rows(
                "SELECT at_ms FROM restarts WHERE id = ?1 ORDER BY at_ms",
                id,
                |r| r.get(0),
            )?;
            out.insert(slug, loaded);
        }
        Ok(out)
    }

    fn rows<T>(
        &self,
        sql: &str,
        id: i64,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let mut q = self.conn.prepare(sql).map_err(|e| self.sqlite(e))?;
        q.query_map(params![id], f)
            .map_err(|e| self.sqlite(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sqlite(e))
    }

    /// Writes one poll in one transaction, and drops what fell out of the retention
    /// windows as of `now_ms`.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] (a full disk, a read-only file); nothing of the poll is
    /// written then.
    pub fn write_poll(&mut self, now_ms: i64, writes: &[Write]) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite {
            path: self.path.clone(),
            source: e,
        })?;
        let result = (|| -> rusqlite::Result<Vec<(String, i64)>> {
            // Cached: a poll runs the same few statements for every container.
            let run = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<usize> {
                tx.prepare_cached(sql)?.execute(p)
            };
            let mut new_ids = Vec::new();
            for w in writes {
                let id: i64 = match self.ids.get(&w.slug) {
                    Some(id) => *id,
                    None => {
                        run(
                            "INSERT OR IGNORE INTO containers (slug, name, kind, segment)
                             VALUES (?1, ?2, ?3, 0)",
                            params![w.slug, w.name, w.kind],
                        )?;
                        let id = tx.query_row(
                            "SELECT id FROM containers WHERE slug = ?1",
                            params![w.slug],
                            |r| r.get(0),
                        )?;
                        new_ids.push((w.slug.clone(), id));
                        id
                    }
                };
                run(
                    "UPDATE containers SET name = ?2, kind = ?3, segment = ?4,
                     segment_start_ms = ?5, state = ?6, version = ?7 WHERE id = ?1",
                    params![
                        id,
                        w.name,
                        w.kind,
                        w.meta.segment,
                        w.meta.segment_start_ms,
                        w.meta.state,
                        w.meta.version
                    ],
                )?;
                if let Some((at, bytes)) = w.point {
                    run(
                        "INSERT OR REPLACE INTO points (id, at_ms, bytes) VALUES (?1, ?2, ?3)",
                        params![id, at, i64::try_from(bytes).unwrap_or(i64::MAX)],
                    )?;
                }
                if let Some(b) = w.bucket {
                    run(
                        "INSERT OR REPLACE INTO averages (id, start_ms, segment, sum, count)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![id, b.start_ms, b.segment, b.sum, b.count],
                    )?;
                }
                for at in &w.restarts {
                    run(
                        "INSERT OR IGNORE INTO restarts (id, at_ms) VALUES (?1, ?2)",
                        params![id, at],
                    )?;
                }
                // What fell out of the retention windows: a range of the primary key.
                run(
                    "DELETE FROM points WHERE id = ?1 AND at_ms < ?2",
                    params![id, now_ms - RAW_SPAN_MS],
                )?;
                run(
                    "DELETE FROM averages WHERE id = ?1 AND start_ms < ?2",
                    params![id, now_ms - BUCKET_SPAN_MS],
                )?;
                run(
                    "DELETE FROM restarts WHERE id = ?1 AND at_ms < ?2",
                    params![id, now_ms - BUCKET_SPAN_MS],
                )?;
            }
            Ok(new_ids)
        })();
        match result.and_then(|ids| tx.commit().map(|()| ids)) {
            Ok(ids) => {
                self.ids.extend(ids);
                Ok(())
            }
            Err(e) => Err(self.sqlite(e)),
        }
    }

    /// Forgets a container (an uninstalled add-on): its rows are pruned only while it is
    /// written, so a container that is gone would otherwise stay for good.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn forget(&mut self, slug: &str) -> Result<(), StoreError> {
        let Some(id) = self.ids.remove(slug) else {
            return Ok(());
        };
        for table in ["points", "averages", "restarts", "containers"] {
            self.conn
                .execute(&format!("DELETE FROM {table} WHERE id = ?1"), params![id])
                .map_err(|e| self.sqlite(e))?;
        }
        Ok(())
    }

    /// A container's memory from `from_ms` on as (time ms, bytes) points — the raw points
    /// (`averaged` false) or the 15-minute averages — and its restarts since then; `None`
    /// for a slug never written.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    #[allow(clippy::type_complexity)]
    pub fn span(
        &self,
        slug: &str,
        from_ms: i64,
        averaged: bool,
    ) -> Result<Option<(Vec<(i64, u64)>, Vec<i64>)>, StoreError> {
        let Some(&id) = self.ids.get(slug) else {
            return Ok(None);
        };
        let read = || -> rusqlite::Result<(Vec<(i64, u64)>, Vec<i64>)> {
            let points = if averaged {
                let mut q = self.conn.prepare_cached(
                    "SELECT start_ms, sum, count, segment FROM averages
                     WHERE id = ?1 AND start_ms >= ?2 ORDER BY start_ms, segment",
                )?;
                q.query_map(params![id, from_ms], |r| {
                    Ok(Bucket {
                        start_ms: r.get(0)?,
                        sum: r.get(1)?,
                        count: r.get(2)?,
                        segment: r.get(3)?,
                    })
                })?
                .map(|b| {
                    b.map(|b| {
                        let (t, v) = b.point();
                        (t, v as u64)
                    })
                })
                .collect::<Result<_, _>>()?
            } else {
                let mut q = self.conn.prepare_cached(
                    "SELECT at_ms, bytes FROM points WHERE id = ?1 AND at_ms >= ?2 ORDER BY at_ms",
                )?;
                q.query_map(params![id, from_ms], |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0).unsigned_abs()))
                })?
                .collect::<Result<_, _>>()?
            };
            let mut q = self.conn.prepare_cached(
                "SELECT at_ms FROM restarts WHERE id = ?1 AND at_ms >= ?2 ORDER BY at_ms",
            )?;
            let restarts = q
                .query_map(params![id, from_ms], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            Ok((points, restarts))
        };
        read().map(Some).map_err(|e| self.sqlite(e))
    }

    /// Records one sample of the add-on's own memory and forgets samples older than
    /// [`OWN_SPAN_MS`] before it: one transaction.
    pub fn write_own(&mut self, at_ms: i64, rss: u64, heap: u64) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let result = (|| -> rusqlite::Result<()> {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO own_samples (at_ms, rss, heap) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![at_ms, rss as i64, heap as i64])?;
            tx.prepare_cached("DELETE FROM own_samples WHERE at_ms < ?1")?
                .execute(params![at_ms - OWN_SPAN_MS])?;
            Ok(())
        })();
        result.and_then(|()| tx.commit()).map_err(err)
    }

    /// The add-on's own samples since `since_ms`, oldest first: (time ms, RSS, heap).
    pub fn load_own(&self, since_ms: i64) -> Result<Vec<(i64, u64, u64)>, StoreError> {
        let mut q = self
            .conn
            .prepare("SELECT at_ms, rss, heap FROM own_samples WHERE at_ms >= ?1 ORDER BY at_ms")
            .map_err(|e| self.sqlite(e))?;
        let rows = q
            .query_map(params![since_ms], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }

    /// The schema version on disk.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.sqlite(e))
    }
}

/// Errors that mean "this file is not a usable database".
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

fn aside_path(path: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{secs}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::history::{BUCKET_MS, BUCKETS_IN_MEMORY_MS, HOUR_MS, History};

    fn write_for(slug: &str, h: &History, at: i64, restarts: Vec<i64>) -> Write {
        Write {
            slug: slug.into(),
            name: slug.to_uppercase(),
            kind: "addon".into(),
            point: h.latest(),
            bucket: h.last_bucket(),
            meta: h.meta(),
            restarts: restarts.into_iter().filter(|&t| t == at).collect(),
        }
    }

    #[test]
    fn a_history_survives_a_reopen_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (mut store, aside) = Store::open(&path).unwrap();
        assert!(aside.is_none());
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let mut h = History::default();
        h.observe(0, "started", Some("1"));
        for i in 0..300 {
            let at = i * 60_000;
            let why = h.push(
                at,
                if i == 150 {
                    10
                } else {
                    1_000 + i.unsigned_abs()
                },
            );
            let restarts = if why.is_some() { vec![at] } else { vec![] };
            store
                .write_poll(at, &[write_for("x", &h, at, restarts)])
                .unwrap();
        }
        drop(store);
        let (store, _) = Store::open(&path).unwrap();
        let loaded = store.load().unwrap();
        let x = &loaded["x"];
        assert_eq!(x.name, "X");
        let back = History::restore(x.saved.clone());
        let now = 299 * 60_000;
        assert_eq!(back.latest(), h.latest());
        assert_eq!(back.meta(), h.meta());
        assert_eq!(
            back.restarts().collect::<Vec<_>>(),
            h.restarts().collect::<Vec<_>>()
        );
        assert_eq!(
            back.judge(now, 60_000, 1.0),
            h.judge(now, 60_000, 1.0),
            "the verdict is the same after a reopen"
        );
        assert_eq!(
            back.averages_since(0).collect::<Vec<_>>(),
            h.averages_since(0).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_forgotten_container_leaves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (mut store, _) = Store::open(&path).unwrap();
        let mut h = History::default();
        h.push(0, 5);
        let writes = [
            write_for("kept", &h, 0, vec![]),
            write_for("gone", &h, 0, vec![]),
        ];
        store.write_poll(0, &writes).unwrap();
        store.forget("gone").unwrap();
        drop(store);
        let (store, _) = Store::open(&path).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.keys().collect::<Vec<_>>(), ["kept"]);
        let points: i64 = store
            .conn
            .query_row("SELECT count(*) FROM points", [], |r| r.get(0))
            .unwrap();
        assert_eq!(points, 1, "the gone container's points are deleted too");
    }

    #[test]
    fn the_add_ons_own_samples_are_kept_two_days() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (mut store, _) = Store::open(&path).unwrap();
        let minute = 60_000;
        // Three days at one sample a minute.
        for i in 0..(3 * 24 * 60) {
            store
                .write_own(i * minute, 100 + i as u64, 200 + i as u64)
                .unwrap();
        }
        drop(store);
        let (store, _) = Store::open(&path).unwrap();
        let own = store.load_own(0).unwrap();
        let last = 3 * 24 * 60 - 1;
        assert_eq!(own.len() as i64, OWN_SPAN_MS / minute + 1);
        assert_eq!(
            own.last(),
            Some(&(last * minute, 100 + last as u64, 200 + last as u64))
        );
        assert_eq!(own[0].0, last * minute - OWN_SPAN_MS);
        assert_eq!(
            store.load_own(last * minute - 9 * minute).unwrap().len(),
            10
        );
    }

    #[test]
    fn memory_loads_what_verdicts_read_and_longer_spans_are_read_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (mut store, _) = Store::open(&path).unwrap();
        let mut h = History::default();
        h.observe(0, "started", Some("1"));
        let days = 20;
        let polls = days * 24 * 4;
        for p in 0..=polls {
            let at = p * BUCKET_MS;
            h.push(at, 1_000_000 + p as u64);
            store
                .write_poll(at, &[write_for("z", &h, at, vec![])])
                .unwrap();
        }
        let now = polls * BUCKET_MS;
        let loaded = store
            .load_since(now - 4 * HOUR_MS, now - BUCKETS_IN_MEMORY_MS)
            .unwrap();
        let kept = loaded["z"].saved.buckets.len() as i64;
        assert_eq!(kept, BUCKETS_IN_MEMORY_MS / BUCKET_MS + 1);
        assert_eq!(loaded["z"].saved.raw.len(), 17, "four hours of points");
        let (points, restarts) = store
            .span("z", now - 30 * 24 * HOUR_MS, true)
            .unwrap()
            .unwrap();
        assert_eq!(points.len() as i64, polls + 1, "all twenty days");
        assert_eq!(points.last().unwrap().1, 1_000_000 + polls as u64);
        assert!(restarts.is_empty());
        let (raw, _) = store.span("z", now - 24 * HOUR_MS, false).unwrap().unwrap();
        assert_eq!(raw.len(), 97, "a day of points");
        assert_eq!(raw.last(), Some(&(now, 1_000_000 + polls as u64)));
        assert_eq!(store.span("nobody", 0, true).unwrap(), None);
    }

    #[test]
    fn a_full_disk_fails_the_whole_poll_and_the_next_one_writes_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (mut store, _) = Store::open(&path).unwrap();
        let mut h = History::default();
        h.push(0, 5);
        store
            .write_poll(0, &[write_for("x", &h, 0, vec![])])
            .unwrap();
        // The file may not grow by a page: as SQLite sees a full disk (SQLITE_FULL).
        let pages: i64 = store
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        store
            .conn
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let many: Vec<Write> = (0..200)
            .map(|i| {
                let mut h = History::default();
                h.push(60_000, 7);
                write_for(
                    &format!("addon_with_a_long_name_{i:04}"),
                    &h,
                    60_000,
                    vec![],
                )
            })
            .collect();
        let err = store.write_poll(60_000, &many).unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        // Nothing of that poll was written; the first container's history is intact.
        drop(store);
        let (mut store, aside) = Store::open(&path).unwrap();
        assert_eq!(aside, None);
        let loaded = store.load().unwrap();
        assert_eq!(loaded.len(), 1, "{:?}", loaded.keys());
        assert_eq!(loaded["x"].saved.raw, vec![(0, 5)]);
        // Room again (a new connection has no page limit): the next poll is written.
        store.write_poll(60_000, &many).unwrap();
        assert_eq!(store.load().unwrap().len(), 201);
    }

    #[test]
    fn a_version_1_file_is_migrated_and_keeps_its_containers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            // The first schema, as the first release wrote it, with one container.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "{SCHEMA_V1}
                 INSERT INTO containers (id, slug, name, kind, segment, state, version)
                     VALUES (1, 'core_mosquitto', 'Mosquitto broker', 'addon', 0, 'started', '6.4');
                 INSERT INTO points VALUES (1, 60000, 41943040);
                 PRAGMA user_version = 1;"
            ))
            .unwrap();
        }
        let (mut store, aside) = Store::open(&path).unwrap();
        assert_eq!(aside, None, "migrated, not moved aside");
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let loaded = store.load().unwrap();
        let mosquitto = &loaded["core_mosquitto"];
        assert_eq!(mosquitto.name, "Mosquitto broker");
        assert_eq!(mosquitto.saved.raw, vec![(60_000, 41_943_040)]);
        store.write_own(120_000, 5, 6).unwrap();
        assert_eq!(store.load_own(0).unwrap(), vec![(120_000, 5, 6)]);
    }

    #[test]
    fn a_garbage_file_is_moved_aside_and_a_fresh_one_started() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
        let (mut store, aside) = Store::open(&path).unwrap();
        let aside = aside.expect("moved aside");
        assert!(aside.to_string_lossy().contains(".corrupt-"), "{aside:?}");
        assert_eq!(std::fs::read(&aside).unwrap(), vec![0x5a; 64 * 1024]);
        assert!(store.load().unwrap().is_empty());
        let mut h = History::default();
        h.push(0, 5);
        store
            .write_poll(0, &[write_for("y", &h, 0, vec![])])
            .unwrap();
    }

    #[test]
    fn ninety_days_stay_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (mut store, _) = Store::open(&path).unwrap();
        // Ten containers (the file grows linearly in them: a hundred is ten times this),
        // 92 simulated days at one poll every 15 minutes, the averages' resolution (the raw
        // points are bounded by time; their count at 60 s is added below).
        let containers = 4;
        // Durability is not what this test measures: skip the syncs of 8,832 commits.
        store
            .conn
            .pragma_update(None, "synchronous", "OFF")
            .unwrap();
        let mut histories: Vec<History> = (0..containers).map(|_| History::default()).collect();
        let step = BUCKET_MS;
        let polls = 92 * 24 * HOUR_MS / step;
        for p in 0..polls {
            let at = p * step;
            let writes: Vec<Write> = histories
                .iter_mut()
                .enumerate()
                .map(|(i, h)| {
                    h.push(at, 100_000_000 + (p as u64 % 97) * 1000);
                    write_for(&format!("addon_{i:03}"), h, at, vec![])
                })
                .collect();
            store.write_poll(at, &writes).unwrap();
        }
        let averages: i64 = store
            .conn
            .query_row("SELECT count(*) FROM averages", [], |r| r.get(0))
            .unwrap();
        assert!(
            averages <= containers * (BUCKET_SPAN_MS / BUCKET_MS + 1),
            "{averages}"
        );
        let points: i64 = store
            .conn
            .query_row("SELECT count(*) FROM points", [], |r| r.get(0))
            .unwrap();
        assert!(points <= containers * (RAW_SPAN_MS / step + 1), "{points}");
        store
            .conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        let bytes = std::fs::metadata(&path).unwrap().len() as f64;
        // With raw points every 60 s (2,880 in 48 h, not the 192 here) a container holds
        // 2,688 more rows of about 20 bytes: the per-container figure is under the stated
        // 0.4 MB, so 100 containers stay under 40 MB.
        let per_container = bytes / containers as f64 + 2_688.0 * 20.0;
        assert!(per_container < 0.4e6, "{per_container} bytes per container");
    }
}
