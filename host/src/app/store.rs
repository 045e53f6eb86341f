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

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use super::Error;
use super::keys::PeerKey;

/// The database file in the config directory.
pub const STORE_FILE: &str = "history.sqlite3";

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
    /// The id the next queued message travels with: random at open, then counted up, so a
    /// message costs no system call for randomness (ids only need to differ per peer).
    next_uid: u64,
}

/// Everything one turn of the application's loop has to write, committed together in
/// one transaction by [`Store::commit`] (group commit: one disk sync per turn, not per
/// message).
#[derive(Debug, Default)]
pub struct Writes {
    /// Own messages to queue: the peer, the text.
    pub queue: Vec<(PeerKey, String)>,
    /// Messages received: the peer, the id it travels with, the text.
    pub received: Vec<(PeerKey, u64, String)>,
    /// Own messages the peer's application acknowledged: the peer, the id.
    pub delivered: Vec<(PeerKey, u64)>,
}

impl Writes {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.received.is_empty() && self.delivered.is_empty()
    }
}

/// What [`Store::commit`] wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// The id of each queued message, in the order given.
    pub queued: Vec<u64>,
    /// For each received message in the order given: whether it is new (false: stored
    /// before, a retransmission across a restart, not to be shown again).
    pub fresh: Vec<bool>,
}

fn store_err(path: &Path, e: rusqlite::Error) -> Error {
    Error::Other(format!("history {}: {e}", path.display()))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        let path = dir.join(STORE_FILE);
        let fail = |e: rusqlite::Error| Error::Other(format!("history {}: {e}", path.display()));
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
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Messages are as private as the key: readable by the owner only.
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| Error::Other(format!("no randomness: {e}")))?;
        Ok(Store {
            conn,
            path,
            next_uid: u64::from_be_bytes(seed),
        })
    }

    /// Write one turn's messages and state changes in one transaction: all of it is on
    /// disk when this returns `Ok`, none of it when it returns `Err`.
    pub fn commit(&mut self, writes: &Writes) -> Result<Committed, Error> {
        let mut committed = Committed::default();
        if writes.is_empty() {
            return Ok(committed);
        }
        let now = now_ms();
        let first_uid = self.next_uid;
        let tx = self
            .conn
            .transaction()
            .map_err(|e| store_err(&self.path, e))?;
        let result = (|| -> rusqlite::Result<()> {
            let mut uid = first_uid;
            let mut queue = tx.prepare_cached(
                "INSERT INTO messages (peer, direction, uid, text, state, created_ms, updated_ms)
                 VALUES (?1, 'out', ?2, ?3, 'queued', ?4, ?4)",
            )?;
            for (peer, text) in &writes.queue {
                // Stored as SQLite's signed 64-bit integer; the bits are the id.
                queue.execute(params![peer.to_string(), uid as i64, text, now])?;
                committed.queued.push(uid);
                uid = uid.wrapping_add(1);
            }
            let mut receive = tx.prepare_cached(
                "INSERT OR IGNORE INTO messages (peer, direction, uid, text, state, created_ms, updated_ms)
                 VALUES (?1, 'in', ?2, ?3, 'received', ?4, ?4)",
            )?;
            for (peer, uid, text) in &writes.received {
                let inserted =
                    receive.execute(params![peer.to_string(), *uid as i64, text, now])?;
                committed.fresh.push(inserted == 1);
            }
            let mut deliver = tx.prepare_cached(
                "UPDATE messages SET state = 'delivered', updated_ms = ?3
                 WHERE peer = ?1 AND direction = 'out' AND uid = ?2",
            )?;
            for (peer, uid) in &writes.delivered {
                deliver.execute(params![peer.to_string(), *uid as i64, now])?;
            }
            Ok(())
        })();
        result
            .and_then(|()| tx.commit())
            .map_err(|e| store_err(&self.path, e))?;
        self.next_uid = first_uid.wrapping_add(writes.queue.len() as u64);
        Ok(committed)
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        store_err(&self.path, e)
    }

    /// Store an outgoing message as queued; returns the id it travels with.
    pub fn queue_out(&mut self, peer: &PeerKey, text: &str) -> Result<u64, Error> {
        let writes = Writes {
            queue: vec![(*peer, text.to_owned())],
            ..Writes::default()
        };
        Ok(self.commit(&writes)?.queued[0])
    }

    /// The peer's application has the message.
    pub fn mark_delivered(&mut self, peer: &PeerKey, uid: u64) -> Result<(), Error> {
        let writes = Writes {
            delivered: vec![(*peer, uid)],
            ..Writes::default()
        };
        self.commit(&writes).map(drop)
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
    pub fn receive(&mut self, peer: &PeerKey, uid: u64, text: &str) -> Result<bool, Error> {
        let writes = Writes {
            received: vec![(*peer, uid, text.to_owned())],
            ..Writes::default()
        };
        Ok(self.commit(&writes)?.fresh[0])
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
        let mut store = Store::open(&dir).unwrap();
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

    #[test]
    fn an_incoming_message_is_stored_once() {
        let dir = temp_dir("in");
        let alice = PeerKey([1; 32]);
        let mut store = Store::open(&dir).unwrap();
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

    #[test]
    fn one_commit_writes_a_whole_turn_or_nothing() {
        let dir = temp_dir("batch");
        let (alice, bob) = (PeerKey([1; 32]), PeerKey([2; 32]));
        let mut store = Store::open(&dir).unwrap();
        let earlier = store.queue_out(&bob, "earlier").unwrap();
        let writes = Writes {
            queue: vec![(bob, "a".into()), (bob, "b".into())],
            received: vec![
                (alice, 5, "x".into()),
                (alice, 5, "x".into()),
                (alice, 6, "y".into()),
            ],
            delivered: vec![(bob, earlier)],
        };
        let done = store.commit(&writes).unwrap();
        assert_eq!(done.fresh, vec![true, false, true]);
        assert_eq!(done.queued.len(), 2);
        assert_ne!(done.queued[0], done.queued[1]);
        let unsent: Vec<String> = store
            .unsent(&bob)
            .unwrap()
            .into_iter()
            .map(|u| u.1)
            .collect();
        assert_eq!(unsent, ["a", "b"]);
        // A turn that cannot be written leaves nothing of itself behind.
        store
            .conn
            .execute_batch(
                "CREATE TRIGGER no_z BEFORE INSERT ON messages WHEN NEW.text = 'z'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        let failing = Writes {
            queue: vec![(bob, "c".into())],
            received: vec![(alice, 7, "z".into())],
            ..Writes::default()
        };
        assert!(store.commit(&failing).is_err());
        assert_eq!(store.unsent(&bob).unwrap().len(), 2);
        assert_eq!(store.history(None, None, 100).unwrap().len(), 5);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
