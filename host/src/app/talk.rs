//! The application's loop, shared by every front-end: one [`Talk`] runs the conversation
//! over its link, keeps the history and the durable outbox, and hands the front-end what
//! to show as [`Happened`] events.
//!
//! One turn ([`Talk::turn`]): run the core's driver once (receive, timers, transmit);
//! take every event the conversation has; offer the session typed messages stored by an
//! earlier turn (up to 256 lines are taken and stored ahead while the session is full)
//! and send them at once, so an acknowledgement's room is used before this turn's commit;
//! write the whole turn — messages received,
//! messages typed, deliveries — in **one** SQLite transaction (group commit); only then
//! confirm the received messages to the session, which is what lets it acknowledge them;
//! then offer typed messages to the session, and send at once what that made due
//! ([`Link::transmit`]: the acknowledgements and the offered messages, not only after the
//! next batch of datagrams is read). So "delivered" on the sender's side always
//! means stored on this side, and a store that cannot be written holds messages
//! unacknowledged (the sender keeps them) and says so, instead of losing them.
//!
//! Files ride the same session ([`super::files`]): their chunks are written before the
//! turn's commit, a finished file's history row is in the turn's transaction, and only then
//! does the session acknowledge them, as it does text. Typed text goes before any chunk, and
//! a file leaves room for the next typed line ([`Talk::keep_room_for_typing`]).
//!
//! The front-end then waits ([`Talk::wait`]) for a datagram, its input or the next
//! deadline, and turns again.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use duet_core::legacy::PlainSendError;
use duet_core::session::{FailReason, MessageId, SendError};
use duet_core::text::Encoding;
use duet_core::time::{Duration, Instant};

use super::Error;
use super::conversation::{Conversation, Shown, messages_of};
use super::display;
use super::files::{FileEvent, FileOptions, Files};
use super::handoff::{self, Asked, Reply, Status};
use super::keys::PeerKey;
use super::reach::{self, PathKind, Reaching};
use super::store::{Direction, Store, Writes};
use crate::platform::ipc::{LocalListener, LocalStream};
use crate::platform::wait::WaitHandle;
use crate::transport::{self, Link, Stack, Woke};

/// Typed messages one turn takes at most, stored in its one commit. To a peer that takes
/// bundles, a burst of short lines goes ~20 to a part, so the session has room for several
/// hundred and the commit is what each line pays for: 256 a turn made chat line mode about
/// 1.7 times as fast as 16 (docs/PERFORMANCE.md), and more gained nothing. To an older peer
/// the session's 32 parts bound what goes out; the rest waits, stored, for room.
const TURN_LINES: usize = 256;
/// Typed messages held while no peer is known yet.
const HOLD_FOR_PEER: usize = 64;
/// How often a conversation with internet reach looks at its background work.
const REACH_TICK: Duration = Duration::from_millis(200);
/// How soon a turn that could not write the history tries again.
const STORE_RETRY: Duration = Duration::from_millis(500);
/// How often a conversation whose file is being hashed looks whether it is done, at most.
const HASH_TICK: Duration = Duration::from_millis(50);
/// How often a loop that did not sleep looks for hand-offs anyway.
const HANDOFF_LOOK: Duration = Duration::from_millis(100);
/// How often the session's generator gets fresh entropy and its clock a new reading.
const REFRESH_EVERY: Duration = Duration::from_secs(600);

/// Something for the front-end to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Happened {
    /// A message from the peer, stored (when there is a store) before it is shown.
    Message {
        /// Where it came from.
        from: Option<SocketAddr>,
        /// The paired peer's name.
        who: Option<String>,
        /// The text, escaped for one line.
        text: String,
        /// The text exactly as it arrived (duet mode), for a front-end that shows several
        /// lines and does its own escaping.
        exact: Option<String>,
    },
    /// The peer's application has one of ours.
    Delivered {
        /// Its number in this run.
        id: MessageId,
        /// A short quote.
        quote: String,
        /// Which of the typed messages it is.
        mine: Mine,
    },
    /// One of ours was not delivered this time.
    NotDelivered {
        /// Its number in this run.
        id: MessageId,
        /// Why.
        why: FailReason,
        /// A short quote.
        quote: String,
        /// Whether it stays in the durable outbox (sent again later).
        kept: bool,
        /// Which of the typed messages it is.
        mine: Mine,
    },
    /// A typed message was refused before it was sent.
    Refused {
        /// Why.
        why: String,
        /// A short quote.
        quote: String,
        /// Which of the typed messages it is.
        mine: Mine,
    },
    /// Some characters could not be written in legacy mode's encoding.
    Unmappable {
        /// How many.
        count: usize,
        /// The encoding.
        encoding: Encoding,
    },
    /// The peer is reachable, at this address.
    PeerUp(SocketAddr),
    /// The peer stopped answering or left.
    PeerDown,
    /// A legacy datagram longer than duet reads was dropped.
    Oversized {
        /// Its sender.
        from: SocketAddr,
    },
    /// The path to the peer changed (internet reach): how, and to which address.
    Path {
        /// LAN, direct through NAT, or relay.
        kind: PathKind,
        /// The peer's address on that path.
        addr: SocketAddr,
    },
    /// A file from the peer is coming (or continues where an earlier attempt stopped).
    FileIncoming {
        /// The paired peer's name.
        who: Option<String>,
        /// The name it is saved under.
        name: String,
        /// Bytes.
        size: u64,
        /// Bytes already here from an earlier attempt.
        resumed_at: u64,
    },
    /// A file from the peer is saved: checked end to end, in place, in the history.
    FileReceived {
        /// The paired peer's name.
        who: Option<String>,
        /// Its name as saved.
        name: String,
        /// Bytes.
        size: u64,
        /// Where it is.
        path: PathBuf,
        /// It was saved before: the peer offered it again, nothing new came.
        already: bool,
    },
    /// The peer takes a file of ours, from byte `from` on (above 0: it kept the bytes
    /// before from an earlier attempt).
    FileAccepted {
        /// The number [`Talk::send_file`] returned.
        transfer: u64,
        /// Its name.
        name: String,
        /// Bytes.
        size: u64,
        /// Where sending starts.
        from: u64,
    },
    /// A file of ours is saved by the peer ([`Talk::send_file`]).
    FileSent {
        /// The number [`Talk::send_file`] returned.
        transfer: u64,
        /// Its name.
        name: String,
        /// Bytes.
        size: u64,
        /// The peer had it already.
        already: bool,
    },
    /// How far a file is, at most once a second each way.
    FileProgress {
        /// Ours: the number [`Talk::send_file`] returned; theirs: `None`.
        transfer: Option<u64>,
        /// Its name.
        name: String,
        /// Bytes acknowledged (ours) or written (theirs).
        done: u64,
        /// Bytes in all.
        size: u64,
    },
    /// A file transfer stopped.
    FileFailed {
        /// Ours: the number [`Talk::send_file`] returned; theirs: `None`.
        transfer: Option<u64>,
        /// Its name.
        name: String,
        /// Why, in words.
        why: String,
        /// The peer refused or stopped it (its limit, its disk, damage in transit).
        refused: bool,
    },
    /// Something went wrong that the user must know, and duet goes on.
    Problem(String),
}

/// Which typed message an outcome is about, in the terms a front-end knows it by: the tag
/// it gave ([`Talk::submit_tagged`]) and the id in the store (the history's `uid`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mine {
    /// The front-end's tag, when it gave one.
    pub tag: Option<u64>,
    /// Its id in the store, once stored.
    pub uid: Option<u64>,
}

/// A typed message not yet in the session.
#[derive(Clone, Debug)]
struct Pending {
    text: String,
    /// Its id in the store, once stored.
    uid: Option<u64>,
    /// Whether to store it (a message for a named paired peer, in duet mode).
    durable: bool,
    /// The hand-off it came from, if a `duet send` handed it over.
    origin: Option<u64>,
    /// The front-end's tag for it.
    tag: Option<u64>,
}

/// Own messages in the session.
#[derive(Clone, Debug)]
struct InFlight {
    quote: String,
    uid: Option<u64>,
    origin: Option<u64>,
    tag: Option<u64>,
}

/// A `duet send` that handed its text to this duet, waiting for its messages' outcomes.
struct HandedIn {
    origin: u64,
    stream: LocalStream,
    /// Outcomes still to report.
    waiting: usize,
}

/// A `duet send --file` that handed its file to this duet, waiting for the outcome.
struct HandedFile {
    transfer: u64,
    stream: LocalStream,
}

/// A received message not yet stored.
#[derive(Clone, Debug)]
struct Received {
    from: Option<SocketAddr>,
    who: Option<String>,
    text: String,
    stored: Option<(PeerKey, u64, String)>,
}

/// Counts of own messages in this run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Given to the session.
    pub total: usize,
    /// Acknowledged by the peer's application.
    pub delivered: usize,
    /// Not delivered (kept in the outbox when stored).
    pub failed: usize,
}

/// The application's conversation with one peer (or, before one is known, with whichever
/// paired peer writes first).
pub struct Talk {
    /// The link: the core's driver over the transport, running the conversation.
    pub link: Link<Stack, Conversation>,
    store: Option<Store>,
    /// The paired peer typed messages are stored for, when one was named.
    outbox_peer: Option<PeerKey>,
    read_encoding: Encoding,
    pending: VecDeque<Pending>,
    in_flight: HashMap<MessageId, InFlight>,
    /// Received, waiting to be stored: confirmed to the session only once they are.
    unstored: Vec<Received>,
    /// Deliveries of stored messages not yet written.
    delivered: Vec<(PeerKey, u64)>,
    /// Received messages handed to the front-end to show, to mark shown in the store.
    shown: Vec<(PeerKey, u64)>,
    /// Legacy datagrams sent, to keep in the history.
    plain_sent: Vec<(SocketAddr, String)>,
    events: VecDeque<Happened>,
    counts: Counts,
    /// The last store error shown, so a failing disk is reported once, not every turn.
    store_problem: Option<String>,
    retry_store_at: Option<Instant>,
    /// Where `duet send` next to this duet hands its messages over, when served.
    handoff: Option<LocalListener>,
    handed_in: Vec<HandedIn>,
    handed_files: Vec<HandedFile>,
    next_origin: u64,
    /// Internet reach for the named peer, when on.
    reaching: Option<Reaching>,
    /// When to reseed the session's generator and re-read the wall clock next.
    refresh_at: Instant,
    /// Files, both ways.
    files: Files,
    /// Whether a file leaves room in the session for a typed line.
    keep_room: bool,
    /// The last wait saw a connection on the hand-off socket.
    handoff_waiting: bool,
    /// When the hand-off socket was last looked at.
    handoff_looked: Instant,
}

impl Drop for Talk {
    /// However the front-end ends, what it showed is marked shown (a later start would
    /// show it again otherwise).
    fn drop(&mut self) {
        self.flush_shown();
    }
}

impl Talk {
    /// Run `link`'s conversation, storing history in `store` (duet mode) and typed messages
    /// for `outbox_peer` in its durable outbox.
    pub fn new(
        link: Link<Stack, Conversation>,
        store: Option<Store>,
        outbox_peer: Option<PeerKey>,
        read_encoding: Encoding,
    ) -> Self {
        Talk {
            link,
            store,
            outbox_peer,
            read_encoding,
            pending: VecDeque::new(),
            in_flight: HashMap::new(),
            unstored: Vec::new(),
            delivered: Vec::new(),
            shown: Vec::new(),
            plain_sent: Vec::new(),
            events: VecDeque::new(),
            counts: Counts::default(),
            store_problem: None,
            retry_store_at: None,
            handoff: None,
            handed_in: Vec::new(),
            handed_files: Vec::new(),
            next_origin: 1,
            reaching: None,
            refresh_at: Instant::now() + REFRESH_EVERY,
            files: Files::new(FileOptions::default()),
            keep_room: true,
            handoff_waiting: true,
            handoff_looked: Instant::now(),
        }
    }

    /// Where received files go and how large they may be.
    pub fn set_file_options(&mut self, options: FileOptions) {
        self.files.set_options(options);
    }

    /// Send the file at `path` to the peer (after the files before it); returns the number
    /// its [`Happened::FileSent`], [`Happened::FileProgress`] and [`Happened::FileFailed`]
    /// carry. A file that cannot be read is refused at once; its hash is computed on a
    /// thread, and it is offered once known.
    pub fn send_file(&mut self, path: &Path) -> Result<u64, Error> {
        if matches!(self.link.protocol, Conversation::Legacy(_)) {
            return Err(Error::Other(
                "files go only between paired duets, not in legacy mode".into(),
            ));
        }
        self.files.send_file(path)
    }

    /// Whether a file being sent leaves room in the session for one typed line (on by
    /// default): off, it fills the window, for a front-end where nobody types.
    pub fn keep_room_for_typing(&mut self, keep: bool) {
        self.keep_room = keep;
    }

    /// File messages from the peer that did not parse (dropped).
    pub fn malformed_file_messages(&self) -> u64 {
        self.files.malformed()
    }

    /// Reach the peer across the internet too (see [`super::reach`]).
    pub fn reach(&mut self, reaching: Reaching) {
        self.reaching = Some(reaching);
    }

    /// The path to the peer and its round trip, when it answers.
    pub fn path(&self) -> Option<(PathKind, SocketAddr, Option<Duration>)> {
        let Conversation::Duet { secure, .. } = &self.link.protocol else {
            return None;
        };
        let rtt = secure.session().srtt();
        match &self.reaching {
            Some(r) => r.path().map(|(kind, addr)| (kind, addr, rtt)),
            None => match (secure.peer_addr(), secure.session().is_peer_up()) {
                (Some(addr), true) => Some((reach::kind_of_addr(addr), addr, rtt)),
                _ => None,
            },
        }
    }

    /// Take over the messages of a `duet send` to this duet's peer started next to it
    /// (see [`super::handoff`]), unless another duet of this config directory does already.
    pub fn serve_handoffs(&mut self, dir: &Path) -> Result<(), Error> {
        self.handoff = LocalListener::bind(&dir.join(handoff::SOCKET_FILE)).map_err(|e| {
            Error::Other(format!(
                "cannot offer {} to `duet send`: {e}",
                dir.join(handoff::SOCKET_FILE).display()
            ))
        })?;
        Ok(())
    }

    /// The conversation.
    pub fn conversation(&self) -> &Conversation {
        &self.link.protocol
    }

    /// The conversation, to change its peer.
    pub fn conversation_mut(&mut self) -> &mut Conversation {
        &mut self.link.protocol
    }

    /// Own messages so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The store, when there is one.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Show what an earlier run stored but never showed (it was stopped in between): from
    /// `peer` only when given; `names` says who each key is.
    pub fn show_unshown(
        &mut self,
        peer: Option<PeerKey>,
        names: impl Fn(&PeerKey) -> Option<String>,
    ) -> Result<(), Error> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        for (key, uid, text) in store.unshown(peer.as_ref())? {
            self.shown.push((key, uid));
            self.events.push_back(Happened::Message {
                from: None,
                who: names(&key),
                text: display::escaped(&text),
                exact: Some(text),
            });
        }
        Ok(())
    }

    /// Store typed messages for `peer` from now on, and queue what earlier runs left
    /// undelivered for it; returns how many of those there were.
    pub fn set_outbox_peer(&mut self, peer: Option<PeerKey>) -> Result<usize, Error> {
        self.outbox_peer = peer;
        let (Some(store), Some(key)) = (&self.store, &self.outbox_peer) else {
            return Ok(0);
        };
        let unsent = store.unsent(key)?;
        let known: Vec<u64> = self
            .pending
            .iter()
            .filter_map(|p| p.uid)
            .chain(self.in_flight.values().filter_map(|f| f.uid))
            .collect();
        // Written by an earlier run, so typed before anything waiting now: they go first.
        let earlier: Vec<Pending> = unsent
            .into_iter()
            .filter(|(uid, _)| !known.contains(uid))
            .map(|(uid, text)| Pending {
                text,
                uid: Some(uid),
                durable: true,
                origin: None,
                tag: None,
            })
            .collect();
        let resumed = earlier.len();
        for p in earlier.into_iter().rev() {
            self.pending.push_front(p);
        }
        Ok(resumed)
    }

    /// Queue typed text (split into messages if long). It is stored, in the next turn's
    /// transaction, before the session sends it.
    pub fn submit(&mut self, text: &str) {
        self.submit_from(text, None, None);
    }

    /// [`Talk::submit`], with `tag` in the outcomes' [`Mine`] (every piece of a long text
    /// has the same tag); returns how many messages the text became.
    pub fn submit_tagged(&mut self, text: &str, tag: u64) -> usize {
        self.submit_from(text, None, Some(tag))
    }

    /// [`Talk::submit`] for a hand-off or with a tag; returns how many messages the text
    /// became.
    fn submit_from(&mut self, text: &str, origin: Option<u64>, tag: Option<u64>) -> usize {
        let legacy = matches!(self.link.protocol, Conversation::Legacy(_));
        // In duet mode every typed message is kept: stored once the peer it goes to is
        // known (a chat waiting for whoever writes first holds it until then).
        let durable = !legacy && self.store.is_some();
        let pieces = messages_of(text, legacy);
        let count = pieces.len();
        for piece in pieces {
            self.pending.push_back(Pending {
                text: piece,
                uid: None,
                durable,
                origin,
                tag,
            });
        }
        count
    }

    /// Whether more typed text can be taken now (backpressure for the input).
    pub fn has_room(&self) -> bool {
        if self.outbox_peer.is_none() && self.store.is_some() {
            // Waiting for a peer: typed messages wait too, a bounded number of them.
            return self.pending.len() < HOLD_FOR_PEER;
        }
        // Several lines a turn (stored in one transaction, sent in one burst). A duet takes
        // and stores them even while its session is full: stored ahead, they go out as soon
        // as an acknowledgement makes room, without waiting for a commit (see `turn`).
        self.pending.len() < TURN_LINES
            && (matches!(self.link.protocol, Conversation::Duet { .. })
                || self.link.protocol.has_room())
    }

    /// Messages typed and not yet acknowledged (or failed), and files not yet saved by
    /// the peer.
    pub fn waiting(&self) -> usize {
        self.pending.len() + self.link.protocol.in_flight() + self.files.waiting()
    }

    /// The next thing to show.
    pub fn next_event(&mut self) -> Option<Happened> {
        self.events.pop_front()
    }

    /// One turn of the loop (see the module docs); returns when the conversation next
    /// needs a turn.
    pub fn turn(&mut self) -> Result<Option<Instant>, Error> {
        let now = Instant::now();
        if now >= self.refresh_at {
            self.refresh_at = now + REFRESH_EVERY;
            if let Err(e) = self.link.protocol.refresh(now) {
                self.events.push_back(Happened::Problem(e.to_string()));
            }
        }
        let polled = self.link.poll();
        let deadline = self.went_out(polled)?;
        self.collect();
        // Typed lines stored by an earlier turn take the room the acknowledgements just
        // made and go out now, before this turn's commit: the sender's store stays off the
        // path of the window's round trip.
        let offered = self.counts.total;
        self.offer_text();
        if self.counts.total != offered {
            let early = self.link.transmit();
            self.went_out(early)?;
        }
        if let Some(reaching) = &mut self.reaching {
            if let Some((kind, addr)) = reaching.step(&mut self.link) {
                self.events.push_back(Happened::Path { kind, addr });
            }
            while let Some(problem) = reaching.next_problem() {
                self.events.push_back(Happened::Problem(problem));
            }
        }
        self.take_handoffs();
        self.commit();
        self.offer();
        while let Some(event) = self.files.next_event() {
            let happened = self.file_happened(event);
            self.report_file(&happened);
            self.events.push_back(happened);
        }
        // What this turn stored may now be acknowledged, and what it offered sent: both go
        // out now, not after the next batch of datagrams is read.
        let transmitted = self.link.transmit();
        let sent = self.went_out(transmitted)?;
        // Plain mode's queue empties by sending, not by acknowledgements: when it did and
        // typed text waits for it (a line longer than the queue), the next turn comes now.
        let sent = if self.plain_room_for_pending() {
            Some(Instant::now())
        } else {
            sent
        };
        Ok(transport::earliest(
            transport::earliest(deadline, sent),
            self.retry_store_at,
        ))
    }

    /// The outcome of a [`Link`] call: an unreachable peer is a problem shown and tried again
    /// shortly (the session retransmits), anything else ends the conversation.
    fn went_out(
        &mut self,
        outcome: Result<Option<Instant>, transport::Error>,
    ) -> Result<Option<Instant>, Error> {
        match outcome {
            Ok(deadline) => Ok(deadline),
            Err(e @ transport::Error::Unreachable { .. }) => {
                self.events
                    .push_back(Happened::Problem(format!("{e}; retrying")));
                Ok(Some(Instant::now() + Duration::from_millis(100)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Wait for a datagram, the input (`input`), `deadline` or `limit`.
    pub fn wait(
        &mut self,
        deadline: Option<Instant>,
        input: Option<WaitHandle<'_>>,
        limit: Option<Instant>,
    ) -> Result<Woke, Error> {
        if !self.shown.is_empty() && self.link.readable_now() {
            // More is arriving: the next turn's transaction marks these shown with what it
            // stores, instead of a transaction of its own now.
            return Ok(Woke {
                input: false,
                other: false,
            });
        }
        self.flush_shown();
        let handoff = self.handoff.as_ref().map(LocalListener::wait_handle);
        // A file's hash is computed on a thread: look at it soon, then less often.
        let limit = match self.files.hashing_since() {
            Some(since) => {
                let now = Instant::now();
                let tick = hash_tick(now.saturating_duration_since(since));
                Some(limit.map_or(now + tick, |l| l.min(now + tick)))
            }
            None => limit,
        };
        // Internet reach's look-ups and publications finish on other threads: look at
        // them a few times a second while it runs.
        let limit = match &self.reaching {
            Some(_) => {
                let tick = Instant::now() + REACH_TICK;
                Some(limit.map_or(tick, |l| l.min(tick)))
            }
            None => limit,
        };
        let woke = self.link.wait_also(deadline, input, handoff, limit)?;
        self.handoff_waiting |= woke.other;
        Ok(woke)
    }

    /// Say goodbye to the peer and get it out.
    pub fn close(&mut self) {
        if let Conversation::Duet { secure, .. } = &mut self.link.protocol {
            secure.close();
            let _ = self.link.poll();
        }
    }

    /// Accept the texts of `duet send`s waiting on the hand-off socket: taken when they are
    /// for the peer this duet talks to, refused (the send goes on its own) otherwise.
    fn take_handoffs(&mut self) {
        let Some(listener) = &self.handoff else {
            return;
        };
        // Only when the wait saw a connection, or a while after the last look (a loop
        // that never sleeps, busy with a transfer, still takes them): not a failing
        // accept(2) every turn.
        let now = Instant::now();
        if !self.handoff_waiting && now < self.handoff_looked + HANDOFF_LOOK {
            return;
        }
        self.handoff_waiting = false;
        self.handoff_looked = now;
        // Bounded: a few connections per turn; the rest wait for the next.
        let mut accepted = Vec::new();
        for _ in 0..8 {
            match listener.accept(handoff::LINE_WAIT) {
                Ok(Some(stream)) => accepted.push(stream),
                Ok(None) => break,
                Err(e) => {
                    self.events
                        .push_back(Happened::Problem(format!("hand-off socket: {e}")));
                    break;
                }
            }
        }
        for mut stream in accepted {
            let request = match handoff::read_request(&mut stream) {
                Ok(Asked::Send(request)) => request,
                Ok(Asked::SendFile(request)) => {
                    self.take_handed_file(stream, request.peer, &request.path);
                    continue;
                }
                Ok(Asked::Status) => {
                    let _ = stream.write_all(self.status().line().as_bytes());
                    continue;
                }
                Err(_) => continue,
            };
            let peer = match &self.link.protocol {
                Conversation::Duet { secure, .. } => secure.peer_key().map(PeerKey),
                Conversation::Legacy(_) => None,
            };
            if peer != Some(request.peer) {
                let _ = stream.write_all(
                    Reply::Refused("this duet talks to someone else".into())
                        .line()
                        .as_bytes(),
                );
                continue;
            }
            if self.outbox_peer.is_none() && self.store.is_some() {
                // A listen with no outbox yet: keep the handed messages like a chat would.
                let _ = self.set_outbox_peer(Some(request.peer));
            }
            let origin = self.next_origin;
            self.next_origin += 1;
            let count = self.submit_from(&request.text, Some(origin), None);
            if stream
                .write_all(Reply::Queued(count).line().as_bytes())
                .is_ok()
            {
                self.handed_in.push(HandedIn {
                    origin,
                    stream,
                    waiting: count,
                });
            }
        }
    }

    /// A `duet send --file` handed its file over: sent in this session when it is for this
    /// duet's peer, its outcome reported to it ([`Talk::report_file`]).
    fn take_handed_file(&mut self, mut stream: LocalStream, peer: PeerKey, path: &Path) {
        let ours = match &self.link.protocol {
            Conversation::Duet { secure, .. } => secure.peer_key().map(PeerKey),
            Conversation::Legacy(_) => None,
        };
        let reply = if ours != Some(peer) {
            Reply::Refused("this duet talks to someone else".into())
        } else {
            match self.send_file(path) {
                Ok(transfer) => {
                    if stream.write_all(Reply::Queued(1).line().as_bytes()).is_ok() {
                        self.handed_files.push(HandedFile { transfer, stream });
                    }
                    return;
                }
                Err(e) => Reply::Refused(e.to_string()),
            }
        };
        let _ = stream.write_all(reply.line().as_bytes());
    }

    /// Tell the `duet send --file` a file came from how it goes.
    fn report_file(&mut self, happened: &Happened) {
        let (transfer, reply) = match happened {
            Happened::FileProgress {
                transfer: Some(t),
                done,
                ..
            } => (*t, Reply::Progress(*done)),
            Happened::FileSent { transfer, .. } => (*transfer, Reply::Delivered),
            Happened::FileFailed {
                transfer: Some(t),
                why,
                refused,
                ..
            } => (
                *t,
                if *refused {
                    Reply::NotSaved(why.clone())
                } else {
                    Reply::Failed(why.clone())
                },
            ),
            _ => return,
        };
        let Some(at) = self
            .handed_files
            .iter()
            .position(|h| h.transfer == transfer)
        else {
            return;
        };
        let gone = self.handed_files[at]
            .stream
            .write_all(reply.line().as_bytes())
            .is_err();
        if gone || !matches!(reply, Reply::Progress(_)) {
            self.handed_files.swap_remove(at);
        }
    }

    /// How the peer is reached now, for `duet status`.
    pub fn status(&self) -> Status {
        let peer = match &self.link.protocol {
            Conversation::Duet { secure, .. } => secure.peer_key().map(PeerKey),
            Conversation::Legacy(_) => None,
        };
        let path = self.path();
        Status {
            peer,
            path: path.map(|(kind, _, _)| kind.as_str().to_owned()),
            addr: path.map(|(_, addr, _)| addr.to_string()),
            rtt_ms: path.and_then(|(_, _, rtt)| rtt).map(|r| r.as_millis()),
        }
    }

    /// Tell the `duet send` a message came from what became of it.
    fn report(&mut self, origin: Option<u64>, reply: Reply) {
        let Some(origin) = origin else { return };
        if let Some(at) = self.handed_in.iter().position(|h| h.origin == origin) {
            let h = &mut self.handed_in[at];
            h.waiting = h.waiting.saturating_sub(1);
            // A send that went away no longer listens; the message went out all the same.
            let gone = h.stream.write_all(reply.line().as_bytes()).is_err();
            if gone || h.waiting == 0 {
                self.handed_in.swap_remove(at);
            }
        }
    }

    /// Mark what the front-end just showed as shown, before sleeping: the next turn's
    /// transaction would do it too, but that may be long after, and a run stopped
    /// meanwhile would show those messages again at its next start.
    fn flush_shown(&mut self) {
        if self.shown.is_empty() || self.retry_store_at.is_some() {
            return;
        }
        if let Some(store) = &mut self.store {
            let writes = Writes {
                shown: std::mem::take(&mut self.shown),
                ..Writes::default()
            };
            if store.commit(&writes).is_err() {
                // Written with the next turn's transaction instead.
                self.shown = writes.shown;
            }
        }
    }

    /// Take everything the conversation has to show.
    fn collect(&mut self) {
        loop {
            let (files, store) = (&mut self.files, self.store.as_ref());
            let Some(shown) = self
                .link
                .protocol
                .next_shown(self.read_encoding, &mut |from, bytes| {
                    files.receive(from, bytes, store)
                })
            else {
                break;
            };
            match shown {
                Shown::Delivered(id) if self.files.outcome(id, true) => {}
                Shown::Failed(id, _) if self.files.outcome(id, false) => {}
                Shown::Message {
                    from,
                    who,
                    text,
                    stored,
                } => self.unstored.push(Received {
                    from,
                    who,
                    text,
                    stored,
                }),
                Shown::Delivered(id) => {
                    self.counts.delivered += 1;
                    let sent = self.in_flight.remove(&id);
                    if let (Some(key), Some(uid)) =
                        (self.outbox_peer, sent.as_ref().and_then(|s| s.uid))
                    {
                        self.delivered.push((key, uid));
                    }
                    self.report(sent.as_ref().and_then(|s| s.origin), Reply::Delivered);
                    self.events.push_back(Happened::Delivered {
                        id,
                        mine: mine_of(sent.as_ref()),
                        quote: sent.map(|s| s.quote).unwrap_or_default(),
                    });
                }
                Shown::Failed(id, why) => {
                    self.counts.failed += 1;
                    let sent = self.in_flight.remove(&id);
                    let kept = sent.as_ref().is_some_and(|s| s.uid.is_some());
                    self.report(
                        sent.as_ref().and_then(|s| s.origin),
                        Reply::Failed(why.to_string()),
                    );
                    self.events.push_back(Happened::NotDelivered {
                        id,
                        why,
                        mine: mine_of(sent.as_ref()),
                        quote: sent.map(|s| s.quote).unwrap_or_default(),
                        kept,
                    });
                }
                Shown::PeerUp(addr) => {
                    self.events.push_back(Happened::PeerUp(addr));
                    // The first paired peer to write is the one typed messages go to.
                    if self.outbox_peer.is_none()
                        && let Conversation::Duet { secure, .. } = &self.link.protocol
                        && let Some(key) = secure.peer_key()
                        && let Err(e) = self.set_outbox_peer(Some(PeerKey(key)))
                    {
                        self.events.push_back(Happened::Problem(e.to_string()));
                    }
                }
                Shown::PeerDown => self.events.push_back(Happened::PeerDown),
                Shown::Oversized { from } => self.events.push_back(Happened::Oversized { from }),
            }
        }
    }

    /// Write the turn in one transaction; on success confirm what was received and show
    /// it, on failure keep it unacknowledged and say so once.
    fn commit(&mut self) {
        let now = Instant::now();
        if self.retry_store_at.is_some_and(|at| now < at) {
            return;
        }
        let Some(store) = &mut self.store else {
            // Legacy mode: nothing is stored, everything is shown at once.
            for r in self.unstored.drain(..) {
                self.events.push_back(Happened::Message {
                    from: r.from,
                    who: r.who,
                    text: r.text,
                    exact: None,
                });
            }
            return;
        };
        let mut writes = Writes {
            delivered: std::mem::take(&mut self.delivered),
            shown: std::mem::take(&mut self.shown),
            // Chunks written, a finished file checked and placed: before the commit that
            // lets the session acknowledge them.
            files: self.files.prepare_commit(),
            ..Writes::default()
        };
        // Legacy datagrams: kept as shown, with the address they came from or went to.
        let plain_sent = std::mem::take(&mut self.plain_sent);
        writes.plain.extend(
            plain_sent
                .iter()
                .map(|(addr, text)| (*addr, Direction::Out, display::escaped(text))),
        );
        writes.plain.extend(self.unstored.iter().filter_map(|r| {
            match (r.stored.is_none(), r.from) {
                (true, Some(from)) => Some((from, Direction::In, r.text.clone())),
                _ => None,
            }
        }));
        let queue_at: Vec<usize> = match self.outbox_peer {
            Some(key) => self
                .pending
                .iter()
                .enumerate()
                .filter(|(_, p)| p.durable && p.uid.is_none())
                .map(|(i, p)| {
                    writes.queue.push((key, p.text.clone()));
                    i
                })
                .collect(),
            None => Vec::new(),
        };
        writes.received = self
            .unstored
            .iter()
            .filter_map(|r| r.stored.clone())
            .collect();
        match store.commit(&writes) {
            Ok(done) => {
                for (i, uid) in queue_at.into_iter().zip(done.queued) {
                    if let Some(p) = self.pending.get_mut(i) {
                        p.uid = Some(uid);
                    }
                }
                let mut fresh = done.fresh.into_iter();
                for r in self.unstored.drain(..) {
                    // A message stored by an earlier run is a retransmission: not shown again.
                    let new = if r.stored.is_some() {
                        fresh.next().unwrap_or(true)
                    } else {
                        true
                    };
                    if new {
                        if let Some((key, uid, _)) = &r.stored {
                            // Marked shown in the next turn's transaction, once the
                            // front-end showed it.
                            self.shown.push((*key, *uid));
                        }
                        self.events.push_back(Happened::Message {
                            from: r.from,
                            who: r.who,
                            text: r.text,
                            exact: r.stored.map(|(_, _, exact)| exact),
                        });
                    }
                }
                self.files.committed();
                if let Conversation::Duet { secure, .. } = &mut self.link.protocol {
                    secure.confirm_received();
                }
                if self.store_problem.take().is_some() {
                    self.events
                        .push_back(Happened::Problem("the history can be written again".into()));
                }
                self.retry_store_at = None;
            }
            Err(e) => {
                // Nothing of the turn was written: deliveries are tried again, typed
                // messages wait, received ones stay unacknowledged (their sender keeps
                // them and sends them again) and unshown.
                self.delivered = writes.delivered;
                self.shown = writes.shown;
                self.plain_sent = plain_sent;
                let text = format!(
                    "cannot write the history ({e}): received messages are NOT acknowledged \
                     and typed ones NOT sent until it can be written"
                );
                if self.store_problem.as_deref() != Some(text.as_str()) {
                    self.events.push_back(Happened::Problem(text.clone()));
                    self.store_problem = Some(text);
                }
                self.retry_store_at = Some(now + STORE_RETRY);
            }
        }
    }

    /// Plain mode's queue is empty and typed text that may go out waits for it.
    fn plain_room_for_pending(&self) -> bool {
        let ready = self
            .pending
            .front()
            .is_some_and(|p| !p.durable || p.uid.is_some());
        ready && matches!(&self.link.protocol, Conversation::Legacy(p) if p.queued() == 0)
    }

    /// Offer what goes out to the session: file offers and answers, typed messages, then
    /// file chunks while there is room.
    fn offer(&mut self) {
        let now = Instant::now();
        if let Conversation::Duet { secure, .. } = &mut self.link.protocol {
            self.files.send_control(secure, now);
        }
        self.offer_text();
        // Typed text that did not fit waits for room; chunks do not take it.
        if self.pending.is_empty()
            && let Conversation::Duet { secure, .. } = &mut self.link.protocol
        {
            self.files.send_chunks(secure, now, self.keep_room);
        }
    }

    /// A file event, with the peer's name, for the front-end.
    fn file_happened(&self, event: FileEvent) -> Happened {
        let who = |from: Option<PeerKey>| from.and_then(|k| self.link.protocol.name_of(&k));
        match event {
            FileEvent::Incoming {
                from,
                name,
                size,
                resumed_at,
            } => Happened::FileIncoming {
                who: who(from),
                name,
                size,
                resumed_at,
            },
            FileEvent::Received {
                from,
                name,
                size,
                path,
                already,
            } => Happened::FileReceived {
                who: who(from),
                name,
                size,
                path,
                already,
            },
            FileEvent::Accepted {
                transfer,
                name,
                size,
                from,
            } => Happened::FileAccepted {
                transfer,
                name,
                size,
                from,
            },
            FileEvent::Sent {
                transfer,
                name,
                size,
                already,
            } => Happened::FileSent {
                transfer,
                name,
                size,
                already,
            },
            FileEvent::Progress {
                transfer,
                name,
                done,
                size,
            } => Happened::FileProgress {
                transfer,
                name,
                done,
                size,
            },
            FileEvent::Failed {
                transfer,
                name,
                why,
                refused,
            } => Happened::FileFailed {
                transfer,
                name,
                why,
                refused,
            },
        }
    }

    /// Offer typed messages to the session, in order; a durable one only once stored.
    fn offer_text(&mut self) {
        while let Some(p) = self.pending.front() {
            if p.durable && p.uid.is_none() {
                // Not stored yet (the store failed this turn): keep input order.
                return;
            }
            let quote = snippet(&p.text);
            let now = Instant::now();
            let result = match &mut self.link.protocol {
                Conversation::Duet { secure, .. } => {
                    let sent = match p.uid {
                        Some(uid) => secure.send_message(now, uid, &p.text),
                        None => secure.send_text(now, &p.text),
                    };
                    match sent {
                        Ok(id) => {
                            self.in_flight.insert(
                                id,
                                InFlight {
                                    quote: quote.clone(),
                                    uid: p.uid,
                                    origin: p.origin,
                                    tag: p.tag,
                                },
                            );
                            self.counts.total += 1;
                            Ok(())
                        }
                        Err(SendError::OutboxFull) => return,
                        Err(e) => Err(e.to_string()),
                    }
                }
                Conversation::Legacy(plain) => match plain.send_text(&p.text) {
                    Ok(report) => {
                        if let Some(to) = plain.peer() {
                            self.plain_sent.push((to, p.text.clone()));
                        }
                        if report.unmappable > 0 {
                            self.events.push_back(Happened::Unmappable {
                                count: report.unmappable,
                                encoding: plain.encoding(),
                            });
                        }
                        Ok(())
                    }
                    Err(PlainSendError::QueueFull) => return,
                    Err(PlainSendError::NoPeer) => {
                        Err("no peer yet: /peer HOST:PORT first".to_owned())
                    }
                },
            };
            if let Err(why) = result {
                let (origin, mine) = (
                    p.origin,
                    Mine {
                        tag: p.tag,
                        uid: p.uid,
                    },
                );
                self.report(origin, Reply::Failed(why.clone()));
                self.events
                    .push_back(Happened::Refused { why, quote, mine });
            }
            self.pending.pop_front();
        }
    }
}

/// Who an outcome is about, from what was in flight.
fn mine_of(sent: Option<&InFlight>) -> Mine {
    Mine {
        tag: sent.and_then(|s| s.tag),
        uid: sent.and_then(|s| s.uid),
    }
}

/// A short quote of a message for status lines: its first 40 characters, escaped.
pub fn snippet(text: &str) -> String {
    // Cut at the 41st character's byte offset: one allocation, where collecting the
    // characters one by one and escaping the copy took two and a few per cent of a
    // chatting duet's CPU.
    let cut = text.char_indices().nth(40).map_or(text.len(), |(at, _)| at);
    let mut quote = String::with_capacity(cut + 3);
    display::push_escaped(&mut quote, &text[..cut]);
    if cut < text.len() {
        quote.push('…');
    }
    quote
}

/// When to look again at a hash that has run for `hashing`: at first every millisecond (a
/// photo hashes in a few), then every eighth of the time it took so far (a large file takes
/// a while), up to [`HASH_TICK`]: the offer waits at most that long after the hash is known.
fn hash_tick(hashing: Duration) -> Duration {
    Duration::from_millis((hashing.as_millis() / 8).clamp(1, HASH_TICK.as_millis()))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_snippet_is_the_first_forty_characters_escaped() {
        assert_eq!(snippet("short"), "short");
        assert_eq!(snippet(""), "");
        let forty = "x".repeat(40);
        assert_eq!(snippet(&forty), forty);
        assert_eq!(snippet(&format!("{forty}y")), format!("{forty}…"));
        let wide = "你".repeat(41);
        assert_eq!(snippet(&wide), format!("{}…", "你".repeat(40)));
        assert_eq!(snippet("a\nb\x1b"), "a\\nb\\u{1b}");
    }

    #[test]
    fn a_hash_is_looked_at_soon_then_less_often() {
        let tick = |ms| hash_tick(Duration::from_millis(ms)).as_millis();
        assert_eq!(tick(0), 1, "at once");
        assert_eq!(tick(7), 1);
        assert_eq!(tick(80), 10, "an eighth of the time so far");
        assert_eq!(
            tick(10_000),
            HASH_TICK.as_millis(),
            "never rarer than the tick"
        );
    }
}
