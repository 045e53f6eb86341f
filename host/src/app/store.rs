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
//! - What waits (messages queued, and messages received but not shown) is found from a
//!   mark per peer and direction (`peers.sent_settled`, `received_settled`) below which
//!   every message is settled (delivered, shown): the look-ups at the start of a
//!   conversation read only the newest rows, and sending a message writes no index entry
//!   for the outbox.
//! - A file received or sent ([`super::files`]) is one row in `files` (its SHA-256, name,
//!   size and where it is) and one line in the history (`file NAME (SIZE bytes) saved to
//!   PATH`), written in the turn's transaction before the file's last chunk is acknowledged.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, ToSql, params};

use super::Error;
use super::keys::{self, PeerKey};
use crate::platform::files;

/// The database file in the config directory.
pub const STORE_FILE: &str = "history.sqlite3";

/// SQLite's write-ahead log beside it: the latest messages, until they are copied into the
/// database.
pub const WAL_FILE: &str = "history.sqlite3-wal";
/// SQLite's shared-memory index of the log.
pub const SHM_FILE: &str = "history.sqlite3-shm";

/// The schema. A history from before `peers` has `messages.peer` as the key's text; it is
/// migrated when it is opened ([`KEYED_ASIDE`]).
const SCHEMA: &str = "
-- Every peer key (base64) once; messages name their peer by its id here, so the rows and
-- the unique index of messages hold a small integer instead of a 44-character key.
CREATE TABLE IF NOT EXISTS peers (
    id         INTEGER PRIMARY KEY,
    key        TEXT NOT NULL UNIQUE,
    -- Every message sent to this peer whose seq is below `sent_settled` is delivered,
    -- and every one received from it below `received_settled` is shown. Only those from
    -- there on can be waiting, so the outbox and the unshown are found by a scan of the
    -- newest rows (see SETTLE in the source).
    sent_settled     INTEGER NOT NULL DEFAULT 0,
    received_settled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    seq        INTEGER PRIMARY KEY,
    peer       INTEGER NOT NULL REFERENCES peers (id),
    direction  TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    uid        INTEGER NOT NULL,
    text       TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('queued', 'delivered', 'received')),
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    shown      INTEGER NOT NULL DEFAULT 1,
    UNIQUE (peer, direction, uid)
);
-- No index but the unique one: the outbox and the unshown are found from the marks in
-- `peers`.
-- An index of queued rows (kept by earlier duets) cost every message sent an index entry
-- written and another removed: a sixth of a chatting duet's CPU.
DROP INDEX IF EXISTS messages_by_peer;
DROP INDEX IF EXISTS messages_queued;
CREATE TABLE IF NOT EXISTS files (
    seq        INTEGER PRIMARY KEY,
    peer       TEXT NOT NULL,
    direction  TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    sha256     BLOB NOT NULL,
    name       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    path       TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_hash ON files (sha256);
CREATE TABLE IF NOT EXISTS plain (
    seq        INTEGER PRIMARY KEY,
    addr       TEXT NOT NULL,
    direction  TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    text       TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
";

/// Added to the first schema, for files made before it (the schema has it now): whether a
/// received message was shown (it is stored before it is shown, so a kill in between
/// leaves it unshown, and the next run shows it).
const ADD_SHOWN: &str = "ALTER TABLE messages ADD COLUMN shown INTEGER NOT NULL DEFAULT 1;";

/// Added to `peers` for files made before them (the schema has them now): where the
/// peer's messages that may still wait begin, each way. 0, the start, until [`SETTLE`]
/// moves them on.
const ADD_SENT_SETTLED: &str =
    "ALTER TABLE peers ADD COLUMN sent_settled INTEGER NOT NULL DEFAULT 0;";
/// See [`ADD_SENT_SETTLED`].
const ADD_RECEIVED_SETTLED: &str =
    "ALTER TABLE peers ADD COLUMN received_settled INTEGER NOT NULL DEFAULT 0;";

/// Move each peer's marks up to its first message still queued (`sent_settled`) and its
/// first received message not shown (`received_settled`), or past the last message if
/// none is. Rows only ever become settled (queued to delivered, unshown to shown) and a new
/// row's seq is above every other (nothing is deleted; should rows have been deleted by
/// hand, [`BACK_TO_THE_END`] runs when the history is opened), so what lies below stays
/// settled. Each scan starts at the old mark: it reads only the rows written since, by
/// rowid (`+m.peer` keeps SQLite off the index by peer, which would read every message of
/// the peer), and stops at the first waiting row. A mark each way: a message queued for a
/// peer that never comes back holds back only the look-ups of that peer's outbox.
const SETTLE: &str = "
UPDATE peers SET
    sent_settled = (
        SELECT coalesce(min(m.seq), (SELECT coalesce(max(seq), 0) + 1 FROM messages))
        FROM messages m
        WHERE m.seq >= peers.sent_settled AND +m.peer = peers.id
          AND m.direction = 'out' AND m.state = 'queued'
    ),
    received_settled = (
        SELECT coalesce(min(m.seq), (SELECT coalesce(max(seq), 0) + 1 FROM messages))
        FROM messages m
        WHERE m.seq >= peers.received_settled AND +m.peer = peers.id
          AND m.direction = 'in' AND m.shown = 0
    );";

/// Whether a mark is past the end of `messages`: rows were deleted (duet never does), and
/// the next rows written would get seqs below the mark. See [`BACK_TO_THE_END`].
const PAST_THE_END: &str = "
SELECT EXISTS (
    SELECT 1 FROM peers
    WHERE max(sent_settled, received_settled) > (SELECT coalesce(max(seq), 0) + 1 FROM messages)
)";

/// Bring every mark past the end back to it, before anything new is written.
const BACK_TO_THE_END: &str = "
UPDATE peers SET
    sent_settled = min(sent_settled, (SELECT coalesce(max(seq), 0) + 1 FROM messages)),
    received_settled = min(received_settled, (SELECT coalesce(max(seq), 0) + 1 FROM messages))
WHERE max(sent_settled, received_settled) > (SELECT coalesce(max(seq), 0) + 1 FROM messages)";

/// The outbox of peer `?1`, oldest first: the newest rows, from its mark on.
const UNSENT: &str = "
SELECT uid, text FROM messages
WHERE seq >= (SELECT sent_settled FROM peers WHERE key = ?1)
  AND +peer = (SELECT id FROM peers WHERE key = ?1)
  AND direction = 'out' AND state = 'queued'
ORDER BY seq";

/// Received messages not shown, of peer `?1` or (NULL) every peer, oldest first: the
/// newest rows, from the lowest mark on (CROSS JOIN keeps SQLite reading `messages` by
/// rowid, and each row's peer by its id).
const UNSHOWN: &str = "
SELECT p.key, m.uid, m.text FROM messages m CROSS JOIN peers p
WHERE m.seq >= (SELECT min(received_settled) FROM peers) AND p.id = m.peer
  AND m.seq >= p.received_settled
  AND m.direction = 'in' AND m.shown = 0 AND (?1 IS NULL OR p.key = ?1)
ORDER BY m.seq";

/// For a history whose `messages.peer` is the key's text: the old table is set aside,
/// [`SCHEMA`] makes the new one, and [`PEERS_AS_IDS`] copies the rows over with the peer
/// as its id in `peers`. All in one transaction ([`migrate_peers`]), so a kill leaves
/// either the old table or the new.
const KEYED_ASIDE: &str = "
DROP INDEX IF EXISTS messages_queued;
ALTER TABLE messages RENAME TO messages_keyed;
";

/// See [`KEYED_ASIDE`].
const PEERS_AS_IDS: &str = "
INSERT OR IGNORE INTO peers (key) SELECT DISTINCT peer FROM messages_keyed ORDER BY peer;
INSERT INTO messages
    (seq, peer, direction, uid, text, state, created_ms, updated_ms, shown)
    SELECT m.seq, p.id, m.direction, m.uid, m.text, m.state, m.created_ms, m.updated_ms,
           m.shown
    FROM messages_keyed m JOIN peers p ON p.key = m.peer;
DROP TABLE messages_keyed;
";

/// Rows one INSERT writes, when a turn has that many: one statement's overhead for many
/// rows, not one each (a fifth of the cost of storing a message; 16, 32 and 64 rows
/// measured alike).
const CHUNK: usize = 32;

/// One queued message: peer id, uid, text, time.
const QUEUE_ROW: &str = "INSERT INTO messages
    (peer, direction, uid, text, state, created_ms, updated_ms)
    VALUES (?1, 'out', ?2, ?3, 'queued', ?4, ?4)";

/// One received message: peer id, uid, text, time; ignored if stored before.
const RECEIVE_ROW: &str = "INSERT OR IGNORE INTO messages
    (peer, direction, uid, text, state, created_ms, updated_ms, shown)
    VALUES (?1, 'in', ?2, ?3, 'received', ?4, ?4, 0)";

/// `row` (an INSERT of one row whose values are `?1` to `?4`) as an INSERT of `n` rows, the
/// k-th row's values `?(4k+1)` to `?(4k+4)`.
fn rows_of(row: &str, n: usize) -> String {
    let at = row.find("VALUES").map_or(row.len(), |i| i + "VALUES".len());
    let (head, one) = row.split_at(at);
    let mut sql = head.to_owned();
    for k in 0..n {
        sql.push_str(if k == 0 { " " } else { ", " });
        let mut rest = one.trim();
        while let Some(q) = rest.find('?') {
            sql.push_str(&rest[..=q]);
            rest = &rest[q + 1..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let i: usize = rest[..digits].parse().unwrap_or(0);
            sql.push_str(&(4 * k + i).to_string());
            rest = &rest[digits..];
        }
        sql.push_str(rest);
    }
    sql
}

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
    /// A legacy-mode datagram: `peer` is the other side's address, the text is escaped
    /// already (undecodable bytes as `\xHH`).
    pub plain: bool,
}

/// The open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The id the next queued message travels with: random at open, then counted up, so a
    /// message costs no system call for randomness (ids only need to differ per peer).
    next_uid: u64,
    /// [`QUEUE_ROW`] and [`RECEIVE_ROW`] for [`CHUNK`] rows.
    queue_rows: String,
    receive_rows: String,
}

/// A file that was received (saved) or sent (the peer saved it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRow {
    /// The peer.
    pub peer: PeerKey,
    /// Received or sent.
    pub direction: Direction,
    /// The SHA-256 of its content: its id.
    pub sha256: [u8; 32],
    /// Its name (as saved, for a received file).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Where it is: saved to, or sent from.
    pub path: PathBuf,
}

impl FileRow {
    /// Its line in the history.
    pub fn text(&self) -> String {
        match self.direction {
            Direction::In => format!(
                "file {} ({} bytes) saved to {}",
                self.name,
                self.size,
                self.path.display()
            ),
            Direction::Out => format!("file {} ({} bytes) sent", self.name, self.size),
        }
    }

    /// The id its history line is stored under: the hash's first 8 bytes, so the same file
    /// has one line however often it comes.
    fn uid(&self) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.sha256[..8]);
        u64::from_be_bytes(first)
    }
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
    /// Received messages now shown: the peer, the id.
    pub shown: Vec<(PeerKey, u64)>,
    /// Legacy mode's plain datagrams, sent or received: the other side's address, which
    /// way, the text as shown (escaped already).
    pub plain: Vec<(std::net::SocketAddr, Direction, String)>,
    /// Files received or sent.
    pub files: Vec<FileRow>,
}

impl Writes {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
            && self.received.is_empty()
            && self.delivered.is_empty()
            && self.shown.is_empty()
            && self.plain.is_empty()
            && self.files.is_empty()
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

/// Make a new history at `path`: built under a temporary name (0600) until it has its
/// schema, then linked into place, so a `history.sqlite3` of 0 bytes is never one duet is
/// making (SQLite writes nothing into a new file before its first change), only one that
/// lost its contents.
fn create(dir: &Path, path: &Path) -> Result<(), Error> {
    let tag = getrandom::u32().map_err(|e| Error::Other(format!("no randomness: {e}")))?;
    let temp = dir.join(format!(
        ".{STORE_FILE}.{}.{tag:08x}.tmp",
        std::process::id()
    ));
    files::private(&mut fs::OpenOptions::new())
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| io_error(path, e))?;
    let built = Connection::open(&temp)
        .and_then(|conn| {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.execute_batch(SCHEMA)?;
            // Closing copies the log into the file and removes it.
            conn.close().map_err(|(_, e)| e)
        })
        .map_err(|e| explain(path, e));
    let placed = built.and_then(|()| match fs::hard_link(&temp, path) {
        Ok(()) => Ok(()),
        // Another duet made one first: theirs stands.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        // A file system without hard links: a rename, after a look.
        Err(_) if !path.exists() => fs::rename(&temp, path).map_err(|e| io_error(path, e)),
        Err(e) => Err(io_error(path, e)),
    });
    for leftover in ["", "-wal", "-shm"] {
        let mut name = temp.clone().into_os_string();
        name.push(leftover);
        let _ = fs::remove_file(name);
    }
    placed
}

fn config_error(path: &Path, problem: String) -> Error {
    Error::Config {
        path: path.to_owned(),
        problem,
    }
}

fn not_a_file(meta: &fs::Metadata) -> String {
    format!(
        "is {}, where duet keeps its history: move it away",
        keys::kind_of(meta)
    )
}

/// How to move the history in `dir` aside.
fn move_aside(dir: &Path) -> String {
    let path = dir.join(STORE_FILE);
    let path = path.display();
    format!("mv {path} {path}.damaged, and its -wal and -shm likewise if they exist")
}

/// Below this many free bytes, SQLite's "disk I/O error" is taken for a full disk: it
/// reports ENOSPC as SQLITE_FULL only from some of its writes.
const NEARLY_FULL: u64 = 1 << 20;

/// A failed SQLite call on the history at `path`, in words a user can act on.
fn explain(path: &Path, e: rusqlite::Error) -> Error {
    let dir = path.parent().unwrap_or(Path::new("."));
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => disk_full(path),
        Some(ErrorCode::SystemIoFailure)
            if files::available_bytes(dir).is_ok_and(|n| n < NEARLY_FULL) =>
        {
            disk_full(path)
        }
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            unwritable(path).unwrap_or_else(|| config_error(path, format!("cannot open: {e}")))
        }
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => config_error(
            path,
            format!(
                "is damaged ({e}): duet cannot read its history. Move it aside ({}), and \
                 duet starts a new, empty history",
                move_aside(dir)
            ),
        ),
        _ => config_error(path, e.to_string()),
    }
}

/// A failed file operation on the history at `path`, in words a user can act on.
fn io_error(path: &Path, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::StorageFull => disk_full(path),
        io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => {
            unwritable(path).unwrap_or_else(|| config_error(path, e.to_string()))
        }
        _ => config_error(path, e.to_string()),
    }
}

fn disk_full(path: &Path) -> Error {
    let dir = path.parent().unwrap_or(Path::new("."));
    config_error(
        path,
        format!(
            "the disk is full: free space on the file system that holds {} (what duet had \
             stored is still there)",
            dir.display()
        ),
    )
}

/// Why the history at `path` cannot be written, if the file system or the permissions
/// say: SQLite needs to write the file and to create its `-wal` and `-shm` beside it.
fn unwritable(path: &Path) -> Option<Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let check = |at: &Path| match files::check_writable(at) {
        Err(e) if e.kind() == io::ErrorKind::ReadOnlyFilesystem => Some(config_error(
            at,
            "is on a read-only file system, and duet writes its history there (and SQLite \
             its -wal and -shm beside it): remount it read-write, or pass --config-dir DIR \
             on a writable one"
                .into(),
        )),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Some(config_error(
            at,
            format!(
                "is not writable by you, and duet writes its history there (and SQLite its \
                 -wal and -shm beside it): run chmod u+w {}, or pass --config-dir DIR",
                at.display()
            ),
        )),
        _ => None,
    };
    check(dir).or_else(|| path.exists().then(|| check(path)).flatten())
}

/// `ids` as runs of consecutive ids of one peer, in their order: (peer, first, last), as
/// stored (SQLite's signed 64-bit integers, so a run never wraps from the largest to the
/// smallest). Every id of a run is one of `ids`, so a `BETWEEN` over a run names exactly
/// those rows.
fn id_runs(ids: &[(PeerKey, u64)]) -> Vec<(PeerKey, i64, i64)> {
    let mut runs: Vec<(PeerKey, i64, i64)> = Vec::new();
    for (peer, uid) in ids {
        // Stored as SQLite's signed 64-bit integer; the bits are the id.
        let id = *uid as i64;
        match runs.last_mut() {
            Some((p, _, last)) if p == peer && last.checked_add(1) == Some(id) => *last = id,
            _ => runs.push((*peer, id, id)),
        }
    }
    runs
}

/// Run `add` (an `ALTER TABLE … ADD COLUMN`) unless `table` has `column` already, or got it
/// meanwhile from another duet opening the same history.
fn add_column(conn: &Connection, table: &str, column: &str, add: &str) -> rusqlite::Result<()> {
    let has = || -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
            params![table, column],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
    };
    if has()? {
        return Ok(());
    }
    match conn.execute_batch(add) {
        Err(_) if has()? => Ok(()),
        other => other,
    }
}

/// Give a history from before `peers` its peers as ids ([`KEYED_ASIDE`]), unless another
/// duet did it first.
fn migrate_peers(conn: &Connection) -> rusqlite::Result<()> {
    let peer_type = || {
        conn.query_row(
            "SELECT type FROM pragma_table_info('messages') WHERE name = 'peer'",
            [],
            |r| r.get::<_, String>(0),
        )
    };
    if peer_type()?.eq_ignore_ascii_case("INTEGER") {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    // Looked at again under the write lock: another duet on the same history may have
    // migrated it while this one waited.
    let migrated = peer_type().and_then(|t| {
        if t.eq_ignore_ascii_case("INTEGER") {
            Ok(())
        } else {
            conn.execute_batch(KEYED_ASIDE)?;
            conn.execute_batch(SCHEMA)?;
            conn.execute_batch(PEERS_AS_IDS)
        }
    });
    match migrated.and_then(|()| conn.execute_batch("COMMIT")) {
        Ok(()) => Ok(()),
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(e)
        }
    }
}

/// The ids in `peers` of one commit's peers, each looked up (and added if new) once per
/// commit: the commit may roll back, and an id it added with it.
#[derive(Default)]
struct PeerIds {
    last: Option<(PeerKey, i64)>,
}

impl PeerIds {
    fn of(&mut self, tx: &Connection, peer: &PeerKey) -> rusqlite::Result<i64> {
        match self.last {
            Some((key, id)) if key == *peer => Ok(id),
            _ => {
                let name = peer.to_string();
                tx.prepare_cached("INSERT OR IGNORE INTO peers (key) VALUES (?1)")?
                    .execute(params![name])?;
                let id = tx
                    .prepare_cached("SELECT id FROM peers WHERE key = ?1")?
                    .query_row(params![name], |r| r.get(0))?;
                self.last = Some((*peer, id));
                Ok(id)
            }
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Open the store in `dir`, or create it if there is none. The database, and the
    /// `-wal` and `-shm` files SQLite keeps beside it, are their owner's only: created so
    /// (SQLite gives the other two the database's mode), and made so, with a warning, if an
    /// older duet left them readable by others.
    ///
    /// A missing database is a new history; an empty one (0 bytes) is a history that was
    /// lost, refused with what to do, since duet never leaves one empty (see `create`).
    pub fn open(dir: &Path) -> Result<Store, Error> {
        let path = dir.join(STORE_FILE);
        match fs::metadata(&path) {
            Ok(meta) if !meta.is_file() => return Err(config_error(&path, not_a_file(&meta))),
            Ok(meta) if meta.len() == 0 => {
                return Err(config_error(
                    &path,
                    format!(
                        "is empty (0 bytes): the history kept here was lost or damaged, and \
                         duet will not start a new one over it. Move it aside ({}), and duet \
                         starts a new, empty history",
                        move_aside(dir)
                    ),
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The log of a history that is gone would be replayed into the new one.
                if fs::metadata(dir.join(WAL_FILE)).is_ok_and(|m| m.len() > 0) {
                    return Err(config_error(
                        &path,
                        format!(
                            "is missing, but {WAL_FILE} beside it holds the latest messages of \
                             a history, which SQLite would replay into a new one: put the \
                             history back, or move {WAL_FILE} and {SHM_FILE} aside too"
                        ),
                    ));
                }
                create(dir, &path)?;
            }
            Err(e) => return Err(io_error(&path, e)),
        }
        for name in [STORE_FILE, WAL_FILE, SHM_FILE] {
            keys::keep_private(&dir.join(name))?;
        }
        // Without SQLITE_OPEN_CREATE: only `create` makes a history.
        let flags = OpenFlags::default() - OpenFlags::SQLITE_OPEN_CREATE;
        let fail = |e| explain(&path, e);
        let conn = Connection::open_with_flags(&path, flags).map_err(fail)?;
        // WAL: readers never block the writer; NORMAL sync is durable against a killed
        // process (not against a power cut of the last transactions, which duet accepts).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail)?;
        // The schema's CHECKs document what a row may hold; every value they check is a
        // literal in this file's statements. Enforced, `state IN (three values)` makes
        // SQLite build a throw-away B-tree of the list for every row written: about a fifth
        // of a chatting duet's CPU per line (docs/PERFORMANCE.md). A rebuilt table with
        // cheaper CHECKs would need a migration of every history for the same result.
        conn.pragma_update(None, "ignore_check_constraints", true)
            .map_err(fail)?;
        // Checkpoint every 10,000 log pages (~40 MB) rather than SQLite's 1,000: a burst of
        // lines rewrites the same few pages (the newest leaves) in every commit, and a
        // checkpoint copies each page once however often it was logged, so a rarer one
        // copies far fewer pages per line and stalls the loop less often. Chat line mode
        // got ~40% faster (docs/PERFORMANCE.md). The log is reused, not regrown, and goes
        // away when duet closes the history; a reader never waits for it (WAL).
        conn.pragma_update(None, "wal_autocheckpoint", 10_000)
            .map_err(fail)?;
        conn.execute_batch(SCHEMA).map_err(fail)?;
        add_column(&conn, "messages", "shown", ADD_SHOWN).map_err(fail)?;
        add_column(&conn, "peers", "sent_settled", ADD_SENT_SETTLED).map_err(fail)?;
        add_column(&conn, "peers", "received_settled", ADD_RECEIVED_SETTLED).map_err(fail)?;
        migrate_peers(&conn).map_err(fail)?;
        // A look first, so that opening a history to read it writes nothing.
        if conn
            .query_row(PAST_THE_END, [], |r| r.get::<_, bool>(0))
            .map_err(fail)?
        {
            conn.execute_batch(BACK_TO_THE_END).map_err(fail)?;
        }
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| Error::Other(format!("no randomness: {e}")))?;
        Ok(Store {
            conn,
            path,
            next_uid: u64::from_be_bytes(seed),
            queue_rows: rows_of(QUEUE_ROW, CHUNK),
            receive_rows: rows_of(RECEIVE_ROW, CHUNK),
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
        // BEGIN and COMMIT as cached statements: rusqlite's `Transaction` parses both anew
        // for every commit, a few per cent of a chatting duet's CPU.
        let tx = &self.conn;
        tx.prepare_cached("BEGIN")
            .and_then(|mut begin| begin.execute([]))
            .map_err(|e| explain(&self.path, e))?;
        let result = (|| -> rusqlite::Result<()> {
            // A turn's rows are nearly always one peer's: its id is looked up once, not once
            // a row.
            let mut ids = PeerIds::default();
            let mut uid = first_uid;
            // Rows CHUNK at a time, one INSERT of CHUNK rows each, the rest one by one.
            let mut bound: Vec<(i64, i64)> = Vec::with_capacity(CHUNK);
            for chunk in writes.queue.chunks(CHUNK) {
                bound.clear();
                for (peer, _) in chunk {
                    // Stored as SQLite's signed 64-bit integer; the bits are the id.
                    bound.push((ids.of(tx, peer)?, uid as i64));
                    committed.queued.push(uid);
                    uid = uid.wrapping_add(1);
                }
                if chunk.len() == CHUNK {
                    let mut args: Vec<&dyn ToSql> = Vec::with_capacity(CHUNK * 4);
                    for ((peer, uid), (_, text)) in bound.iter().zip(chunk) {
                        args.extend([peer as &dyn ToSql, uid, text, &now]);
                    }
                    tx.prepare_cached(&self.queue_rows)?.execute(&args[..])?;
                } else {
                    let mut queue = tx.prepare_cached(QUEUE_ROW)?;
                    for ((peer, uid), (_, text)) in bound.iter().zip(chunk) {
                        queue.execute(params![peer, uid, text, now])?;
                    }
                }
            }
            for chunk in writes.received.chunks(CHUNK) {
                bound.clear();
                for (peer, uid, _) in chunk {
                    bound.push((ids.of(tx, peer)?, *uid as i64));
                }
                if chunk.len() < CHUNK {
                    let mut receive = tx.prepare_cached(RECEIVE_ROW)?;
                    for ((peer, uid), (_, _, text)) in bound.iter().zip(chunk) {
                        let inserted = receive.execute(params![peer, uid, text, now])?;
                        committed.fresh.push(inserted == 1);
                    }
                    continue;
                }
                let mut args: Vec<&dyn ToSql> = Vec::with_capacity(CHUNK * 4);
                for ((peer, uid), (_, _, text)) in bound.iter().zip(chunk) {
                    args.extend([peer as &dyn ToSql, uid, text, &now]);
                }
                let inserted = tx.prepare_cached(&self.receive_rows)?.execute(&args[..])?;
                drop(args);
                if inserted == CHUNK {
                    committed.fresh.extend([true; CHUNK]);
                    continue;
                }
                // Some were stored before (retransmissions across a restart). The rows this
                // INSERT added took the next seqs, one after the other: the last `inserted`
                // ones, up to the last rowid it inserted.
                let last = tx.last_insert_rowid();
                let new = (last - inserted as i64 + 1)..=last;
                let mut claimed: Vec<i64> = Vec::new();
                let mut seq_of = tx.prepare_cached(
                    "SELECT seq FROM messages WHERE peer = ?1 AND direction = 'in' AND uid = ?2",
                )?;
                for (peer, uid) in &bound {
                    let seq: i64 = seq_of.query_row(params![peer, uid], |r| r.get(0))?;
                    // The same message twice in one turn is new once.
                    let fresh = inserted > 0 && new.contains(&seq) && !claimed.contains(&seq);
                    if fresh {
                        claimed.push(seq);
                    }
                    committed.fresh.push(fresh);
                }
            }
            // By runs of consecutive ids (a peer's ids count up, and messages are delivered
            // and shown in order): one index search a run, not one a row. Without runs,
            // marking a chatting duet's lines delivered was a third of its CPU.
            let mut deliver = tx.prepare_cached(
                "UPDATE messages SET state = 'delivered', updated_ms = ?4
                 WHERE peer = ?1 AND direction = 'out' AND uid BETWEEN ?2 AND ?3",
            )?;
            for (peer, first, last) in id_runs(&writes.delivered) {
                deliver.execute(params![ids.of(tx, &peer)?, first, last, now])?;
            }
            let mut shown = tx.prepare_cached(
                "UPDATE messages SET shown = 1
                 WHERE peer = ?1 AND direction = 'in' AND uid BETWEEN ?2 AND ?3",
            )?;
            for (peer, first, last) in id_runs(&writes.shown) {
                shown.execute(params![ids.of(tx, &peer)?, first, last])?;
            }
            let mut plain = tx.prepare_cached(
                "INSERT INTO plain (addr, direction, text, created_ms) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (addr, direction, text) in &writes.plain {
                let way = match direction {
                    Direction::In => "in",
                    Direction::Out => "out",
                };
                plain.execute(params![addr.to_string(), way, text, now])?;
            }
            let mut file = tx.prepare_cached(
                "INSERT INTO files (peer, direction, sha256, name, size, path, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut line = tx.prepare_cached(
                "INSERT OR IGNORE INTO messages (peer, direction, uid, text, state, created_ms, updated_ms, shown)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 1)",
            )?;
            for row in &writes.files {
                let (way, state) = match row.direction {
                    Direction::In => ("in", "received"),
                    Direction::Out => ("out", "delivered"),
                };
                let peer = row.peer.to_string();
                let size = i64::try_from(row.size).unwrap_or(i64::MAX);
                let path = row.path.to_string_lossy();
                file.execute(params![
                    peer,
                    way,
                    &row.sha256[..],
                    row.name,
                    size,
                    path,
                    now
                ])?;
                let id = ids.of(tx, &row.peer)?;
                line.execute(params![id, way, row.uid() as i64, row.text(), state, now])?;
            }
            Ok(())
        })();
        let result = result.and_then(|()| tx.prepare_cached("COMMIT")?.execute([]).map(drop));
        if let Err(e) = result {
            // Nothing of the turn stays (what rusqlite's `Transaction` does when dropped);
            // SQLite may have rolled back already.
            if !tx.is_autocommit() {
                let _ = tx.execute_batch("ROLLBACK");
            }
            return Err(explain(&self.path, e));
        }
        self.next_uid = first_uid.wrapping_add(writes.queue.len() as u64);
        Ok(committed)
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        explain(&self.path, e)
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

    /// The latest `limit` files received from `peer`: the id of each one's line in the
    /// history, its name and where it was saved.
    pub fn received_files(
        &self,
        peer: &PeerKey,
        limit: u64,
    ) -> Result<Vec<(u64, String, PathBuf)>, Error> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT sha256, name, path FROM files WHERE direction = 'in' AND peer = ?1
                 ORDER BY seq DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![peer.to_string(), limit.min(i64::MAX as u64) as i64],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .map_err(|e| self.err(e))?;
        let mut found = Vec::new();
        for row in rows {
            let (sha256, name, path) = row.map_err(|e| self.err(e))?;
            if let Ok(sha256) = <[u8; 32]>::try_from(sha256.as_slice()) {
                let row = FileRow {
                    peer: *peer,
                    direction: Direction::In,
                    sha256,
                    name,
                    size: 0,
                    path: PathBuf::from(path),
                };
                found.push((row.uid(), row.name, row.path));
            }
        }
        Ok(found)
    }

    /// Where the file with this SHA-256 was last saved, if one was received.
    pub fn received_file(&self, sha256: &[u8; 32]) -> Result<Option<PathBuf>, Error> {
        self.conn
            .query_row(
                "SELECT path FROM files WHERE direction = 'in' AND sha256 = ?1
                 ORDER BY seq DESC LIMIT 1",
                params![&sha256[..]],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|p| p.map(PathBuf::from))
            .map_err(|e| self.err(e))
    }

    /// Received messages stored but never shown (duet stopped between the two), oldest
    /// first: from `peer` only, if given. Each is the peer's key, the id and the text.
    pub fn unshown(&self, peer: Option<&PeerKey>) -> Result<Vec<(PeerKey, u64, String)>, Error> {
        self.settle();
        let mut stmt = self.conn.prepare(UNSHOWN).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![peer.map(|p| p.to_string())], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut found = Vec::new();
        for row in rows {
            let (peer, uid, text) = row.map_err(|e| self.err(e))?;
            if let Ok(key) = peer.parse::<PeerKey>() {
                found.push((key, uid, text));
            }
        }
        Ok(found)
    }

    /// Outgoing messages to `peer` not yet delivered, oldest first.
    pub fn unsent(&self, peer: &PeerKey) -> Result<Vec<(u64, String)>, Error> {
        self.settle();
        let mut stmt = self.conn.prepare(UNSENT).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![peer.to_string()], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Move every peer's mark past the messages settled since ([`SETTLE`]), so the look-ups
    /// of what waits read only the newest rows. Only ever a saving: a mark left behind (the
    /// history busy or its disk full) is still below everything that waits, and the
    /// look-up reads a few more rows.
    fn settle(&self) {
        let _ = self.conn.execute_batch(SETTLE);
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
                "SELECT created_ms, peer, direction, state, text, uid, plain FROM (
                    SELECT m.created_ms AS created_ms, p.key AS peer, m.direction AS direction,
                           m.state AS state, m.text AS text, m.uid AS uid, m.seq AS seq,
                           0 AS plain
                    FROM messages m JOIN peers p ON p.id = m.peer
                    WHERE (?1 IS NULL OR p.key = ?1)
                      AND (?2 IS NULL OR m.text LIKE ?2 ESCAPE '\\')
                    UNION ALL
                    SELECT created_ms, addr, direction,
                           CASE direction WHEN 'in' THEN 'received' ELSE 'sent' END,
                           text, 0, seq, 1
                    FROM plain
                    WHERE ?1 IS NULL AND (?2 IS NULL OR text LIKE ?2 ESCAPE '\\')
                    ORDER BY created_ms DESC, plain DESC, seq DESC LIMIT ?3
                 ) ORDER BY created_ms, plain, seq",
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
                        plain: r.get::<_, i64>(6)? == 1,
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
    fn runs_of_ids_mark_exactly_the_ids_given() {
        let dir = temp_dir("runs");
        let (bob, carol) = (PeerKey([2; 32]), PeerKey([3; 32]));
        let mut store = Store::open(&dir).unwrap();
        let ids: Vec<u64> = (0..6)
            .map(|i| store.queue_out(&bob, &format!("m{i}")).unwrap())
            .collect();
        let theirs = store.queue_out(&carol, "carol's").unwrap();
        // Two runs with a gap (ids[3] stays queued), another peer's id between them.
        let delivered: Vec<(PeerKey, u64)> = [0, 1, 2, 4, 5]
            .iter()
            .map(|&i| (bob, ids[i]))
            .chain([(carol, theirs)])
            .collect();
        store
            .commit(&Writes {
                delivered,
                ..Writes::default()
            })
            .unwrap();
        assert_eq!(store.unsent(&bob).unwrap(), vec![(ids[3], "m3".to_owned())]);
        assert!(store.unsent(&carol).unwrap().is_empty());
        // Shown marks the same way: only the ids given.
        for uid in [10, 11, 13] {
            assert!(store.receive(&carol, uid, "in").unwrap());
        }
        store
            .commit(&Writes {
                shown: vec![(carol, 10), (carol, 11), (carol, 13)],
                ..Writes::default()
            })
            .unwrap();
        assert!(store.unshown(Some(&carol)).unwrap().is_empty());
        assert!(store.receive(&carol, 12, "late").unwrap());
        let unshown: Vec<u64> = store
            .unshown(Some(&carol))
            .unwrap()
            .into_iter()
            .map(|(_, uid, _)| uid)
            .collect();
        assert_eq!(unshown, [12]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// How SQLite runs `sql`: the details of its query plan, one per step.
    fn plan(store: &Store, sql: &str) -> Vec<String> {
        let mut stmt = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let params: Vec<Option<String>> = vec![None; stmt.parameter_count()];
        stmt.query_map(rusqlite::params_from_iter(params), |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    #[test]
    fn what_waits_is_found_among_the_newest_rows_only() {
        let dir = temp_dir("settled");
        let (bob, carol) = (PeerKey([2; 32]), PeerKey([3; 32]));
        let mut store = Store::open(&dir).unwrap();
        // A settled past: delivered and shown, both ways, with both peers.
        let mut writes = Writes::default();
        for i in 0..50u64 {
            writes.queue.push((bob, format!("to bob {i}")));
            writes.received.push((carol, i, format!("from carol {i}")));
        }
        let done = store.commit(&writes).unwrap();
        store
            .commit(&Writes {
                delivered: done.queued.iter().map(|&u| (bob, u)).collect(),
                shown: (0..50).map(|i| (carol, i)).collect(),
                ..Writes::default()
            })
            .unwrap();
        // Then one message left queued, one left unshown, and settled ones after them.
        let waiting = store.queue_out(&bob, "still queued").unwrap();
        assert!(store.receive(&carol, 100, "not shown yet").unwrap());
        let later = store.queue_out(&bob, "delivered later").unwrap();
        store.mark_delivered(&bob, later).unwrap();
        // Each peer's (sent_settled, received_settled): Bob's first, then Carol's.
        let marks = |store: &Store| -> Vec<(i64, i64)> {
            let mut stmt = store
                .conn
                .prepare("SELECT sent_settled, received_settled FROM peers ORDER BY key")
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let first_waiting = |store: &Store, sql: &str| -> i64 {
            store.conn.query_row(sql, [], |r| r.get(0)).unwrap()
        };
        for _ in 0..2 {
            assert_eq!(
                store.unsent(&bob).unwrap(),
                [(waiting, "still queued".to_owned())]
            );
            assert_eq!(
                store.unshown(None).unwrap(),
                [(carol, 100, "not shown yet".to_owned())]
            );
            assert_eq!(store.unshown(Some(&bob)).unwrap(), []);
            // Each mark is the peer's first waiting row that way, or the end: everything
            // below is settled.
            let queued = "SELECT seq FROM messages WHERE text = 'still queued'";
            let unshown = "SELECT seq FROM messages WHERE text = 'not shown yet'";
            let end = first_waiting(&store, "SELECT max(seq) + 1 FROM messages");
            assert_eq!(
                marks(&store),
                [
                    (first_waiting(&store, queued), end),
                    (end, first_waiting(&store, unshown))
                ]
            );
            drop(store);
            store = Store::open(&dir).unwrap();
        }
        // Carol's message shown: the received marks pass the end, while the message still
        // queued for Bob holds back his sent mark only (the look-up of the unshown starts
        // at the end, not at Bob's old message).
        store
            .commit(&Writes {
                shown: vec![(carol, 100)],
                ..Writes::default()
            })
            .unwrap();
        assert!(store.unshown(None).unwrap().is_empty());
        let end = first_waiting(&store, "SELECT max(seq) + 1 FROM messages");
        let queued = first_waiting(
            &store,
            "SELECT seq FROM messages WHERE text = 'still queued'",
        );
        assert_eq!(marks(&store), [(queued, end), (end, end)]);
        // A mark that cannot move (another writer holds the history) stays behind, and the
        // look-ups are still right.
        let before = marks(&store);
        store.mark_delivered(&bob, waiting).unwrap();
        let other = Connection::open(dir.join(STORE_FILE)).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        store.conn.busy_timeout(std::time::Duration::ZERO).unwrap();
        assert!(store.unsent(&bob).unwrap().is_empty());
        assert_eq!(marks(&store), before);
        other.execute_batch("ROLLBACK").unwrap();
        drop(other);
        store
            .conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        // Once nothing waits, the marks pass the end, and a new row is above them.
        store.mark_delivered(&bob, waiting).unwrap();
        assert!(store.unsent(&bob).unwrap().is_empty());
        assert!(store.unshown(None).unwrap().is_empty());
        let end = first_waiting(&store, "SELECT max(seq) + 1 FROM messages");
        assert_eq!(marks(&store), [(end, end), (end, end)]);
        let newest = store.queue_out(&bob, "newest").unwrap();
        assert_eq!(store.unsent(&bob).unwrap(), [(newest, "newest".to_owned())]);
        // Rows deleted by hand from the end while duet did not run: the mark past the end
        // comes back to it when the history is opened, and the rows written after are found.
        store.mark_delivered(&bob, newest).unwrap();
        assert!(store.unsent(&bob).unwrap().is_empty());
        store
            .conn
            .execute_batch("DELETE FROM messages WHERE seq > (SELECT max(seq) - 3 FROM messages)")
            .unwrap();
        drop(store);
        let mut store = Store::open(&dir).unwrap();
        let again = store.queue_out(&bob, "after a deletion").unwrap();
        assert_eq!(
            store.unsent(&bob).unwrap(),
            [(again, "after a deletion".to_owned())]
        );
        // SQLite reads the messages by rowid from the mark on, never all of them; "SEARCH
        // messages" alone is its one look at the largest rowid, for max(seq).
        for sql in [SETTLE, UNSENT, UNSHOWN, BACK_TO_THE_END] {
            let plan = plan(&store, sql);
            let messages: Vec<&String> = plan
                .iter()
                .filter(|step| step.contains("messages") || step.contains(" m "))
                .collect();
            assert!(
                messages
                    .iter()
                    .all(|s| s.contains("(rowid>?)") || *s == "SEARCH messages"),
                "{sql}\n{plan:#?}"
            );
        }
        for sql in [SETTLE, UNSENT, UNSHOWN] {
            assert!(
                plan(&store, sql).iter().any(|s| s.contains("(rowid>?)")),
                "{sql}"
            );
        }
        assert_eq!(store.integrity().unwrap(), "ok");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A history as duet wrote it before `peers`: the peer's key in every row. `shown`
    /// says whether it had the `shown` column yet.
    fn old_history(dir: &Path, shown: bool) {
        fs::create_dir_all(dir).unwrap();
        let conn = Connection::open(dir.join(STORE_FILE)).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE messages (
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
             CREATE INDEX messages_queued ON messages (peer, seq) WHERE state = 'queued';
             CREATE TABLE files (
                 seq INTEGER PRIMARY KEY, peer TEXT NOT NULL, direction TEXT NOT NULL,
                 sha256 BLOB NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL,
                 path TEXT NOT NULL, created_ms INTEGER NOT NULL
             );
             CREATE TABLE plain (
                 seq INTEGER PRIMARY KEY, addr TEXT NOT NULL, direction TEXT NOT NULL,
                 text TEXT NOT NULL, created_ms INTEGER NOT NULL
             );",
        )
        .unwrap();
        if shown {
            conn.execute_batch(ADD_SHOWN).unwrap();
        }
        let (bob, carol) = (PeerKey([2; 32]).to_string(), PeerKey([3; 32]).to_string());
        let rows: [(&str, &str, i64, &str, &str); 4] = [
            (&bob, "out", 1, "delivered to bob", "delivered"),
            (&carol, "in", 7, "from carol", "received"),
            (&bob, "out", 2, "queued for bob", "queued"),
            (&carol, "out", 1, "queued for carol", "queued"),
        ];
        for (i, (peer, way, uid, text, state)) in rows.iter().enumerate() {
            conn.execute(
                "INSERT INTO messages (peer, direction, uid, text, state, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![peer, way, uid, text, state, 1000 + i as i64],
            )
            .unwrap();
        }
        if shown {
            conn.execute("UPDATE messages SET shown = 0 WHERE uid = 7", [])
                .unwrap();
        }
        conn.close().unwrap();
    }

    #[test]
    fn a_history_with_keys_in_its_rows_is_migrated_whole_and_keeps_working() {
        for shown in [false, true] {
            let dir = temp_dir(if shown { "migrate-shown" } else { "migrate" });
            old_history(&dir, shown);
            let (bob, carol) = (PeerKey([2; 32]), PeerKey([3; 32]));
            let mut store = Store::open(&dir).unwrap();
            let texts: Vec<(String, Direction, String)> = store
                .history(None, None, 100)
                .unwrap()
                .into_iter()
                .map(|e| (e.peer, e.direction, e.text))
                .collect();
            assert_eq!(
                texts,
                [
                    (
                        bob.to_string(),
                        Direction::Out,
                        "delivered to bob".to_owned()
                    ),
                    (carol.to_string(), Direction::In, "from carol".to_owned()),
                    (bob.to_string(), Direction::Out, "queued for bob".to_owned()),
                    (
                        carol.to_string(),
                        Direction::Out,
                        "queued for carol".to_owned()
                    ),
                ]
            );
            assert_eq!(
                store.unsent(&bob).unwrap(),
                [(2, "queued for bob".to_owned())]
            );
            assert_eq!(
                store.unsent(&carol).unwrap(),
                [(1, "queued for carol".to_owned())]
            );
            let unshown: Vec<u64> = store
                .unshown(None)
                .unwrap()
                .into_iter()
                .map(|(_, uid, _)| uid)
                .collect();
            assert_eq!(unshown, if shown { vec![7] } else { vec![] });
            // The same (peer, id) is still recognised; a new one is stored.
            assert!(!store.receive(&carol, 7, "from carol").unwrap());
            assert!(store.receive(&carol, 8, "new from carol").unwrap());
            store.mark_delivered(&bob, 2).unwrap();
            assert!(store.unsent(&bob).unwrap().is_empty());
            assert_eq!(store.history(Some(&carol), None, 100).unwrap().len(), 3);
            assert_eq!(store.integrity().unwrap(), "ok");
            drop(store);
            // Opened again: nothing to migrate, nothing lost.
            let store = Store::open(&dir).unwrap();
            assert_eq!(store.history(None, None, 100).unwrap().len(), 5);
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn a_history_with_peers_but_no_marks_gets_them_and_loses_the_queued_index() {
        let dir = temp_dir("marks");
        fs::create_dir_all(&dir).unwrap();
        let (bob, carol) = (PeerKey([2; 32]), PeerKey([3; 32]));
        // As the duet before marks wrote it: `peers` without `settled`, an index of queued
        // rows, one message waiting each way among settled ones.
        let conn = Connection::open(dir.join(STORE_FILE)).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE peers (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE);
             CREATE TABLE messages (
                 seq        INTEGER PRIMARY KEY,
                 peer       INTEGER NOT NULL REFERENCES peers (id),
                 direction  TEXT NOT NULL CHECK (direction IN ('in', 'out')),
                 uid        INTEGER NOT NULL,
                 text       TEXT NOT NULL,
                 state      TEXT NOT NULL CHECK (state IN ('queued', 'delivered', 'received')),
                 created_ms INTEGER NOT NULL,
                 updated_ms INTEGER NOT NULL,
                 shown      INTEGER NOT NULL DEFAULT 1,
                 UNIQUE (peer, direction, uid)
             );
             CREATE INDEX messages_queued ON messages (peer, seq) WHERE state = 'queued';",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO peers (key) VALUES (?1), (?2)",
            params![bob.to_string(), carol.to_string()],
        )
        .unwrap();
        let rows: [(i64, &str, i64, &str, &str, i64); 5] = [
            (1, "out", 1, "delivered to bob", "delivered", 1),
            (2, "in", 7, "shown from carol", "received", 1),
            (1, "out", 2, "queued for bob", "queued", 1),
            (2, "in", 8, "unshown from carol", "received", 0),
            (1, "out", 3, "delivered to bob after", "delivered", 1),
        ];
        for (peer, way, uid, text, state, shown) in rows {
            conn.execute(
                "INSERT INTO messages
                     (peer, direction, uid, text, state, created_ms, updated_ms, shown)
                 VALUES (?1, ?2, ?3, ?4, ?5, 1000, 1000, ?6)",
                params![peer, way, uid, text, state, shown],
            )
            .unwrap();
        }
        conn.close().unwrap();
        let mut store = Store::open(&dir).unwrap();
        let index: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'messages_queued'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, 0);
        assert_eq!(
            store.unsent(&bob).unwrap(),
            [(2, "queued for bob".to_owned())]
        );
        assert_eq!(
            store.unshown(None).unwrap(),
            [(carol, 8, "unshown from carol".to_owned())]
        );
        store.mark_delivered(&bob, 2).unwrap();
        assert!(store.unsent(&bob).unwrap().is_empty());
        assert_eq!(store.integrity().unwrap(), "ok");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_insert_of_many_rows_numbers_each_rows_values() {
        assert_eq!(
            rows_of("INSERT INTO t (a, b) VALUES (?1, 'x', ?2, ?4, ?4)", 2),
            "INSERT INTO t (a, b) VALUES (?1, 'x', ?2, ?4, ?4), (?5, 'x', ?6, ?8, ?8)"
        );
        let many = rows_of(QUEUE_ROW, CHUNK);
        for i in 1..=4 * CHUNK {
            let uses =
                many.matches(&format!("?{i},")).count() + many.matches(&format!("?{i})")).count();
            assert_eq!(uses, if i % 4 == 0 { 2 } else { 1 }, "?{i} in {many}");
        }
    }

    #[test]
    fn many_messages_in_one_turn_are_stored_in_order_and_new_ones_told_apart() {
        let dir = temp_dir("chunks");
        let (bob, carol) = (PeerKey([2; 32]), PeerKey([3; 32]));
        let mut store = Store::open(&dir).unwrap();
        // 100 queued: three full INSERTs and four rows one by one, ids counting up.
        let queue: Vec<(PeerKey, String)> = (0..100).map(|i| (bob, format!("out {i}"))).collect();
        let done = store
            .commit(&Writes {
                queue: queue.clone(),
                ..Writes::default()
            })
            .unwrap();
        assert_eq!(done.queued.len(), 100);
        for pair in done.queued.windows(2) {
            assert_eq!(pair[1], pair[0].wrapping_add(1));
        }
        let unsent = store.unsent(&bob).unwrap();
        let expected: Vec<(u64, String)> = done
            .queued
            .iter()
            .zip(&queue)
            .map(|(uid, (_, text))| (*uid, text.clone()))
            .collect();
        assert_eq!(unsent, expected);
        // Received: some stored by an earlier turn, in a full chunk and in the rest, and one
        // message twice in the same turn (new once).
        for uid in [3, 40, 41, 70] {
            assert!(store.receive(&carol, uid, &format!("in {uid}")).unwrap());
        }
        let mut received: Vec<(PeerKey, u64, String)> = (0..72)
            .map(|uid| (carol, uid, format!("in {uid}")))
            .collect();
        received.insert(10, (carol, 5, "in 5".to_owned()));
        let done = store
            .commit(&Writes {
                received: received.clone(),
                ..Writes::default()
            })
            .unwrap();
        let expected: Vec<bool> = received
            .iter()
            .enumerate()
            .map(|(i, (_, uid, _))| ![3, 40, 41, 70].contains(uid) && i != 10)
            .collect();
        assert_eq!(done.fresh, expected);
        // A whole chunk stored before: none new.
        let again = store
            .commit(&Writes {
                received: received[..CHUNK].to_vec(),
                ..Writes::default()
            })
            .unwrap();
        assert_eq!(again.fresh, vec![false; CHUNK]);
        // A whole chunk of new ones.
        let fresh: Vec<(PeerKey, u64, String)> = (100..100 + CHUNK as u64)
            .map(|uid| (carol, uid, "new".into()))
            .collect();
        let done = store
            .commit(&Writes {
                received: fresh,
                ..Writes::default()
            })
            .unwrap();
        assert_eq!(done.fresh, vec![true; CHUNK]);
        let texts: Vec<String> = store
            .history(Some(&carol), None, 1000)
            .unwrap()
            .into_iter()
            .map(|e| e.text)
            .collect();
        assert_eq!(texts.len(), 4 + 72 - 4 + CHUNK);
        assert_eq!(store.integrity().unwrap(), "ok");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn id_runs_split_at_gaps_peers_and_the_signed_wrap() {
        let (a, b) = (PeerKey([1; 32]), PeerKey([2; 32]));
        let max = i64::MAX as u64;
        let ids = [
            (a, 1),
            (a, 2),
            (a, 3),
            (a, 5),
            (b, 6),
            (a, max),
            (a, max + 1),
            (a, max + 2),
        ];
        assert_eq!(
            id_runs(&ids),
            [
                (a, 1, 3),
                (a, 5, 5),
                (b, 6, 6),
                (a, i64::MAX, i64::MAX),
                (a, i64::MIN, i64::MIN + 1)
            ]
        );
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    #[cfg(unix)]
    fn the_database_and_its_wal_and_shm_are_private_whatever_the_umask() {
        // The test process keeps its inherited umask (usually 022, which left SQLite's
        // -wal and -shm readable by everyone).
        let dir = temp_dir("private");
        let mut store = Store::open(&dir).unwrap();
        store.receive(&PeerKey([1; 32]), 1, "a secret").unwrap();
        // The log and its index exist while the store is open.
        for name in [STORE_FILE, WAL_FILE, SHM_FILE] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn files_left_readable_by_others_are_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("loose");
        let mut store = Store::open(&dir).unwrap();
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
    fn a_missing_history_is_new_and_an_empty_one_is_refused_with_what_to_do() {
        let dir = temp_dir("empty");
        // Missing: a new history, which is never left empty on disk.
        drop(Store::open(&dir).unwrap());
        assert!(fs::metadata(dir.join(STORE_FILE)).unwrap().len() > 0);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [STORE_FILE]);
        // Emptied: refused, naming the file and how to move it aside.
        fs::File::create(dir.join(STORE_FILE)).unwrap();
        let err = Store::open(&dir)
            .err()
            .expect("an empty history was opened");
        let text = err.to_string();
        assert!(matches!(err, Error::Config { .. }), "{text}");
        assert!(text.contains("is empty (0 bytes)"), "{text}");
        assert!(
            text.contains(&dir.join(STORE_FILE).display().to_string()),
            "{text}"
        );
        assert!(text.contains(".damaged"), "{text}");
        assert_eq!(fs::metadata(dir.join(STORE_FILE)).unwrap().len(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_log_of_a_history_that_is_gone_is_not_replayed_into_a_new_one() {
        let dir = temp_dir("orphan");
        let mut store = Store::open(&dir).unwrap();
        store.receive(&PeerKey([1; 32]), 1, "in the log").unwrap();
        // A duet killed with its history open leaves the log; then the history goes.
        std::mem::forget(store);
        assert!(fs::metadata(dir.join(WAL_FILE)).unwrap().len() > 0);
        fs::remove_file(dir.join(STORE_FILE)).unwrap();
        let text = Store::open(&dir).err().expect("opened").to_string();
        assert!(text.contains("is missing"), "{text}");
        assert!(text.contains(WAL_FILE), "{text}");
        assert!(!dir.join(STORE_FILE).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn what_is_not_a_history_is_named_as_such() {
        let dir = temp_dir("notdb");
        fs::create_dir(dir.join(STORE_FILE)).unwrap();
        let text = Store::open(&dir).err().expect("opened").to_string();
        assert!(text.contains("is a directory"), "{text}");
        fs::remove_dir(dir.join(STORE_FILE)).unwrap();
        fs::write(
            dir.join(STORE_FILE),
            "not a database, but notes\n".repeat(200),
        )
        .unwrap();
        let text = Store::open(&dir).err().expect("opened").to_string();
        assert!(
            text.contains("is damaged") && text.contains(".damaged"),
            "{text}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn sqlite_errors_say_what_to_do() {
        use rusqlite::ffi;
        let dir = temp_dir("errors");
        let path = dir.join(STORE_FILE);
        let sqlite = |code| rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
        let text = explain(&path, sqlite(ffi::SQLITE_FULL)).to_string();
        assert!(text.contains("the disk is full: free space on"), "{text}");
        assert!(text.contains(&dir.display().to_string()), "{text}");
        let text = io_error(&path, io::Error::from(io::ErrorKind::StorageFull)).to_string();
        assert!(text.contains("the disk is full"), "{text}");
        let text = explain(&path, sqlite(ffi::SQLITE_NOTADB)).to_string();
        assert!(text.contains("is damaged"), "{text}");
        // A writable directory: nothing more to say than SQLite's words.
        let text = explain(&path, sqlite(ffi::SQLITE_CANTOPEN)).to_string();
        assert!(text.contains("cannot open"), "{text}");
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
    fn a_file_is_one_row_and_one_history_line_however_often_it_comes() {
        let dir = temp_dir("files");
        let alice = PeerKey([1; 32]);
        let mut store = Store::open(&dir).unwrap();
        let row = FileRow {
            peer: alice,
            direction: Direction::In,
            sha256: [7; 32],
            name: "a b.pdf".into(),
            size: 12,
            path: dir.join("a b.pdf"),
        };
        assert_eq!(store.received_file(&[7; 32]).unwrap(), None);
        for _ in 0..2 {
            let writes = Writes {
                files: vec![row.clone()],
                ..Writes::default()
            };
            store.commit(&writes).unwrap();
        }
        assert_eq!(
            store.received_file(&[7; 32]).unwrap(),
            Some(dir.join("a b.pdf"))
        );
        assert_eq!(store.received_file(&[8; 32]).unwrap(), None);
        let lines = store.history(None, None, 10).unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(
            lines[0].text,
            format!(
                "file a b.pdf (12 bytes) saved to {}",
                dir.join("a b.pdf").display()
            )
        );
        // Never shown again as a message at the next start.
        assert!(store.unshown(None).unwrap().is_empty());
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
            ..Writes::default()
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
        // ... and the next turn is written as usual.
        let next = Writes {
            queue: vec![(bob, "d".into())],
            ..Writes::default()
        };
        assert_eq!(store.commit(&next).unwrap().queued.len(), 1);
        assert_eq!(store.unsent(&bob).unwrap().len(), 3);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
