//! The durable outbox and history: every message sent and received, in SQLite.
//!
//! SQLite (through rusqlite, with the library bundled so every machine runs the same
//! version) in WAL mode is the field's usual embedded store: a transaction that returned is
//! on disk for any later reader, even if the process is killed right after, and a kill in the
//! middle of a write leaves the previous state. One file, `DIR/history.sqlite3`.
//!
//! - An outgoing message is stored as `queued` *before* it is handed to the session, with a
//!   random 64-bit id that travels with it; it becomes `delivered` when the peer's
//!   application acknowledged it. A message still `queued` when duet stops is sent again,
//!   with the same id, the next time duet talks to that peer.
//! - An incoming message is stored *before* it is shown (and before the session is asked
//!   for the next event, which is what lets it be acknowledged). A message whose
//!   (peer, id) is already stored is a retransmission across a restart: not shown again.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use super::Error;
use super::keys::{self, PeerKey};

/// The database file in the config directory.
pub const STORE_FILE: &str = "history.sqlite3";

/// SQLite's write-ahead log beside it: the latest messages, until they are copied into the
/// database.
pub const WAL_FILE: &str = "history.sqlite3-wal";
/// SQLite's shared-memory index of the log.
pub const SHM_FILE: &str = "history.sqlite3-shm";

/// The schema; `user_version` says which one a file has.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq        INTEGER PRIMARY KEY,
    peer       TEXT NOT NULL,
    direction  TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    uid        INTEGER NOT NULL,
    text       TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('queued', 'delivered', 'received')),
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    UNIQUE (peer, direction, uid)
);
CREATE INDEX IF NOT EXISTS messages_by_peer ON messages (peer, state);
";

/// Which way a message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received from the peer.
    In,
    /// Sent to the peer.
    Out,
}

/// One stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// When it was first stored, ms since the Unix epoch.
    pub created_ms: i64,
    /// The peer's key (base64).
    pub peer: String,
    /// Which way.
    pub direction: Direction,
    /// `queued`, `delivered` or `received`.
    pub state: String,
    /// The text.
    pub text: String,
    /// Its id on the wire.
    pub uid: u64,
}

/// The open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Open (or create) the store in `dir`. The database, and the `-wal` and `-shm` files
    /// SQLite keeps beside it, are its owner's only: created so (SQLite gives the other
    /// two the database's mode), and made so, with a warning, if an older duet left them
    /// readable by others.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        let path = dir.join(STORE_FILE);
        let fail = |e: rusqlite::Error| Error::Other(format!("history {}: {e}", path.display()));
        for name in [STORE_FILE, WAL_FILE, SHM_FILE] {
            keys::keep_private(&dir.join(name))?;
        }
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::Other(format!("history {}: {e}", path.display()))),
        }
        let conn = Connection::open(&path).map_err(fail)?;
        // WAL: readers never block the writer; NORMAL sync is durable against a killed
        // process (not against a power cut of the last transactions, which duet accepts).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail)?;
        conn.execute_batch(SCHEMA).map_err(fail)?;
        Ok(Store { conn, path })
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        Error::Other(format!("history {}: {e}", self.path.display()))
    }

    /// Store an outgoing message as queued; returns the id it travels with.
    pub fn queue_out(&self, peer: &PeerKey, text: &str) -> Result<u64, Error> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| Error::Other(format!("no randomness: {e}")))?;
        // Stored as SQLite's signed 64-bit integer; the bits are the id.
        let uid = u64::from_be_bytes(bytes);
        let now = now_ms();
        self.conn
            .execute(
                "INSERT INTO messages (peer, direction, uid, text, state, created_ms, updated_ms)
                 VALUES (?1, 'out', ?2, ?3, 'queued', ?4, ?4)",
                params![peer.to_string(), uid as i64, text, now],
            )
            .map_err(|e| self.err(e))?;
        Ok(uid)
    }

    /// The peer's application has the message.
    pub fn mark_delivered(&self, peer: &PeerKey, uid: u64) -> Result<(), Error> {
        self.conn
            .execute(
                "UPDATE messages SET state = 'delivered', updated_ms = ?3
                 WHERE peer = ?1 AND direction = 'out' AND uid = ?2",
                params![peer.to_string(), uid as i64, now_ms()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Outgoing messages to `peer` not yet delivered, oldest first.
    pub fn unsent(&self, peer: &PeerKey) -> Result<Vec<(u64, String)>, Error> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT uid, text FROM messages
                 WHERE peer = ?1 AND direction = 'out' AND state = 'queued' ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![peer.to_string()], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Store an incoming message; false if it was stored before (a retransmission across a
    /// restart), which must then not be shown again.
    pub fn receive(&self, peer: &PeerKey, uid: u64, text: &str) -> Result<bool, Error> {
        let now = now_ms();
        let inserted = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO messages (peer, direction, uid, text, state, created_ms, updated_ms)
                 VALUES (?1, 'in', ?2, ?3, 'received', ?4, ?4)",
                params![peer.to_string(), uid as i64, text, now],
            )
            .map_err(|e| self.err(e))?;
        Ok(inserted == 1)
    }

    /// Stored messages, oldest first: the last `limit` of them, with `peer` only if given,
    /// containing `search` if given.
    pub fn history(
        &self,
        peer: Option<&PeerKey>,
        search: Option<&str>,
        limit: u64,
    ) -> Result<Vec<Entry>, Error> {
        let peer = peer.map(|p| p.to_string());
        let pattern = search.map(|s| {
            format!(
                "%{}%",
                s.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            )
        });
        let mut stmt = self
            .conn
            .prepare(
                "SELECT created_ms, peer, direction, state, text, uid FROM (
                    SELECT * FROM messages
                    WHERE (?1 IS NULL OR peer = ?1) AND (?2 IS NULL OR text LIKE ?2 ESCAPE '\\')
                    ORDER BY seq DESC LIMIT ?3
                 ) ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![peer, pattern, limit.min(i64::MAX as u64) as i64],
                |r| {
                    let direction: String = r.get(2)?;
                    Ok(Entry {
                        created_ms: r.get(0)?,
                        peer: r.get(1)?,
                        direction: if direction == "in" {
                            Direction::In
                        } else {
                            Direction::Out
                        },
                        state: r.get(3)?,
                        text: r.get(4)?,
                        uid: r.get::<_, i64>(5)? as u64,
                    })
                },
            )
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// SQLite's own consistency check: "ok" when the file is sound.
    pub fn integrity(&self) -> Result<String, Error> {
        self.conn
            .query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
            .optional()
            .map_err(|e| self.err(e))
            .map(|r| r.unwrap_or_default())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("duet-store-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn outgoing_messages_stay_queued_until_delivered_and_survive_reopening() {
        let dir = temp_dir("out");
        let bob = PeerKey([2; 32]);
        let store = Store::open(&dir).unwrap();
        let a = store.queue_out(&bob, "one").unwrap();
        let b = store.queue_out(&bob, "two 你好").unwrap();
        assert_ne!(a, b);
        store.mark_delivered(&bob, a).unwrap();
        drop(store);
        let store = Store::open(&dir).unwrap();
        assert_eq!(
            store.unsent(&bob).unwrap(),
            vec![(b, "two 你好".to_owned())]
        );
        assert!(store.unsent(&PeerKey([3; 32])).unwrap().is_empty());
        assert_eq!(store.integrity().unwrap(), "ok");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_database_and_its_wal_and_shm_are_private_whatever_the_umask() {
        // The test process keeps its inherited umask (usually 022, which left SQLite's
        // -wal and -shm readable by everyone).
        let dir = temp_dir("private");
        let store = Store::open(&dir).unwrap();
        store.receive(&PeerKey([1; 32]), 1, "a secret").unwrap();
        // The log and its index exist while the store is open.
        for name in [STORE_FILE, WAL_FILE, SHM_FILE] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn files_left_readable_by_others_are_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("loose");
        let store = Store::open(&dir).unwrap();
        store.receive(&PeerKey([1; 32]), 1, "a secret").unwrap();
        // What an older duet left: all three readable by everyone (the store stays open,
        // so the log and its index stay too).
        for name in [STORE_FILE, WAL_FILE, SHM_FILE] {
            fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o644)).unwrap();
        }
        let again = Store::open(&dir).unwrap();
        for name in [STORE_FILE, WAL_FILE, SHM_FILE] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
        assert_eq!(again.history(None, None, 10).unwrap().len(), 1);
        drop((store, again));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_incoming_message_is_stored_once() {
        let dir = temp_dir("in");
        let alice = PeerKey([1; 32]);
        let store = Store::open(&dir).unwrap();
        assert!(store.receive(&alice, 7, "hi").unwrap());
        assert!(!store.receive(&alice, 7, "hi").unwrap());
        assert!(
            store
                .receive(&PeerKey([9; 32]), 7, "same id, other peer")
                .unwrap()
        );
        let all = store.history(None, None, 100).unwrap();
        assert_eq!(all.len(), 2);
        let found = store.history(Some(&alice), Some("h"), 10).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].direction, found[0].text.as_str()),
            (Direction::In, "hi")
        );
        // LIKE wildcards in a search are taken literally.
        assert!(store.history(None, Some("%"), 10).unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
