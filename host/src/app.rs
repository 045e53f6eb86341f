//! duet's modes: `chat`, `send` and `listen`, over the duet session or legacy datagrams.
//!
//! Every mode runs the same [`Link`] (the core's driver plus a poll(2) wait); what differs
//! is only what is typed in and what is shown.

use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use duet_core::driver::Protocol;
use duet_core::legacy::{Plain, PlainEvent, PlainSendError};
use duet_core::secure::{PublicKey, Secure, SecureConfig, StaticKeys};
use duet_core::session::{self, Config, Event, MessageId, SendError};
use duet_core::text::{self, Encoding};
use duet_core::time::{Duration, Instant};
use duet_core::{MAX_DATAGRAM, Transmit};

use crate::cli::{ChatArgs, HistoryArgs, LegacyArgs, ListenArgs, SendArgs};
use crate::error::Error;
use crate::input::{Input, InputPipe, TerminalRestore};
use crate::keys::{Identity, PeerKey, Peers};
use crate::link::Link;
use crate::net;
use crate::store::{Direction, Store};
use crate::transport::{self, Stack};
use crate::ui::{self, Output};

/// How long `listen --count` stays after its last message when the sender does not say
/// goodbye: long enough to acknowledge retransmissions whose first acknowledgement was lost.
const LINGER_QUIET: Duration = Duration::from_millis(1500);
/// The longest `listen --count` lingers in any case.
const LINGER_MAX: Duration = Duration::from_secs(6);
/// duet's port: where a paired peer with no known address is looked for.
const DUET_PORT: u16 = 7789;

fn parse_addr(text: &str) -> Result<SocketAddr, Error> {
    net::resolve(text).map_err(|source| Error::BadAddress {
        text: text.to_owned(),
        source,
    })
}

/// 32 fresh random bytes to seed a secure session's generator.
fn new_seed() -> Result<[u8; 32], Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| Error::Other(format!("no randomness from the system: {e}")))?;
    Ok(seed)
}

/// Who this duet is and whom it is paired with.
pub struct Contacts {
    identity: Identity,
    peers: Peers,
}

/// A paired peer to talk to.
#[derive(Clone, Debug)]
pub struct Target {
    /// Its name in the peers file.
    pub name: String,
    /// Its static key.
    pub key: PeerKey,
    /// Where it is, if known.
    pub addr: Option<SocketAddr>,
}

impl Contacts {
    /// Load (or, the first time, create) the identity, and the paired peers.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        Ok(Contacts {
            identity: Identity::load_or_create(dir)?,
            peers: Peers::load(dir)?,
        })
    }

    /// A paired peer from `NAME` or `HOST:PORT`.
    pub fn find(&self, text: &str) -> Result<Target, Error> {
        let target = |p: &crate::keys::Peer, addr: Option<SocketAddr>| Target {
            name: p.name.clone(),
            key: p.key,
            addr: addr.or(p.addr),
        };
        if let Some(p) = self.peers.get(text) {
            return Ok(target(p, None));
        }
        if self.peers.iter().next().is_none() {
            return Err(Error::NotPaired);
        }
        if !text.contains(':') {
            return Err(Error::UnknownPeer {
                name: text.to_owned(),
                paired: self.names(),
            });
        }
        let addr = parse_addr(text)?;
        let at: Vec<_> = self.peers.iter().filter(|p| p.addr == Some(addr)).collect();
        let all: Vec<_> = self.peers.iter().collect();
        match (at.as_slice(), all.as_slice()) {
            ([one], _) | ([], [one]) => Ok(target(one, Some(addr))),
            _ => Err(Error::Other(format!(
                "which paired peer is at {addr}? name one: {} (or `duet pair add NAME KEY --addr {addr}`)",
                self.names()
            ))),
        }
    }

    fn names(&self) -> String {
        self.peers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn allowed(&self) -> Vec<PublicKey> {
        self.peers.iter().map(|p| p.key.0).collect()
    }

    fn names_by_key(&self) -> Vec<(PublicKey, String)> {
        self.peers
            .iter()
            .map(|p| (p.key.0, p.name.clone()))
            .collect()
    }
}

/// The duet session or the legacy datagrams, behind one [`Protocol`].
pub enum Conversation {
    /// duet's reliable session, sealed between paired keys.
    Duet {
        /// The session.
        secure: Box<Secure>,
        /// Paired peers' names, to show who wrote.
        names: Vec<(PublicKey, String)>,
    },
    /// Plain datagrams.
    Legacy(Box<Plain>),
}

impl Protocol for Conversation {
    fn wants_datagram(&self) -> bool {
        match self {
            Conversation::Duet { secure: s, .. } => s.wants_datagram(),
            Conversation::Legacy(p) => p.wants_datagram(),
        }
    }
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        match self {
            Conversation::Duet { secure: s, .. } => s.handle_datagram(now, from, datagram),
            Conversation::Legacy(p) => p.handle_datagram(now, from, datagram),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Conversation::Duet { secure: s, .. } => s.handle_timeout(now),
            Conversation::Legacy(p) => p.handle_timeout(now),
        }
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8; MAX_DATAGRAM]) -> Option<Transmit> {
        match self {
            Conversation::Duet { secure: s, .. } => s.poll_transmit(now, buf),
            Conversation::Legacy(p) => p.poll_transmit(now, buf),
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Conversation::Duet { secure: s, .. } => s.poll_timeout(),
            Conversation::Legacy(p) => p.poll_timeout(),
        }
    }
}

/// Something to show, owned, from either protocol.
#[derive(Debug)]
enum Shown {
    Message {
        from: Option<SocketAddr>,
        who: Option<String>,
        /// The text as shown (control characters escaped).
        text: String,
        /// For duet messages: who sent it, its id and its exact text, to store.
        stored: Option<(PeerKey, u64, String)>,
    },
    Delivered(MessageId),
    Failed(MessageId, session::FailReason),
    PeerUp(SocketAddr),
    PeerDown,
    Oversized {
        from: SocketAddr,
    },
}

impl Conversation {
    /// Legacy datagrams with `peer`.
    fn legacy(legacy: &LegacyArgs, peer: Option<SocketAddr>) -> Self {
        Conversation::Legacy(Box::new(Plain::new(peer, send_encoding(legacy))))
    }

    /// The sealed duet session: with `target`, talk to that peer only; without, accept any
    /// paired peer.
    fn duet(contacts: &Contacts, target: Option<&Target>, config: Config) -> Result<Self, Error> {
        let keys = StaticKeys::from_secret(contacts.identity.secret_bytes());
        let allowed = match target {
            Some(t) => vec![t.key.0],
            None => contacts.allowed(),
        };
        let peer = target.and_then(|t| Some((t.key.0, t.addr?)));
        let config = SecureConfig {
            session: config,
            ..SecureConfig::default()
        };
        let mut secure = Secure::new(Instant::now(), config, keys, &allowed, peer, new_seed()?);
        // Discovery probes carry the minute, so recorded ones go stale (docs/SECURITY.md).
        if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            let minutes = u32::try_from(since.as_secs() / 60).unwrap_or(u32::MAX);
            secure.set_unix_minutes(Instant::now(), minutes);
        }
        Ok(Conversation::Duet {
            secure: Box::new(secure),
            names: contacts.names_by_key(),
        })
    }

    fn next_shown(&mut self, read_encoding: Encoding) -> Option<Shown> {
        match self {
            Conversation::Duet { secure: s, names } => {
                let from = s.peer_addr();
                let who = s
                    .peer_key()
                    .and_then(|k| names.iter().find(|(key, _)| *key == k))
                    .map(|(_, name)| name.clone());
                let key = s.peer_key().map(PeerKey);
                let mut shown = match s.poll_event()? {
                    Event::Message(text) => Shown::Message {
                        from,
                        who,
                        text: ui::escaped(text),
                        stored: key.map(|k| (k, 0, text.to_owned())),
                    },
                    Event::Delivered(id) => Shown::Delivered(id),
                    Event::Failed(id, why) => Shown::Failed(id, why),
                    Event::PeerUp(addr) => Shown::PeerUp(addr),
                    Event::PeerDown => Shown::PeerDown,
                };
                if let Shown::Message {
                    stored: Some((_, uid, _)),
                    ..
                } = &mut shown
                {
                    *uid = s.session().message_id();
                }
                Some(shown)
            }
            Conversation::Legacy(p) => Some(match p.poll_event()? {
                PlainEvent::Datagram { from, bytes } => Shown::Message {
                    from: Some(from),
                    who: None,
                    text: ui::legacy_text(bytes, read_encoding).0,
                    stored: None,
                },
                PlainEvent::Oversized { from } => Shown::Oversized { from },
            }),
        }
    }

    /// Look for `target` on the LAN: PROBEs to every interface's broadcast address on
    /// duet's port (only `bind`'s interface when it is a specific address).
    fn discover(&mut self, target: &Target, bind: SocketAddr) {
        if let Conversation::Duet { secure: s, .. } = self {
            let targets: Vec<SocketAddr> = crate::lan::broadcast_addresses(bind.ip())
                .into_iter()
                .map(|ip| SocketAddr::new(ip, DUET_PORT))
                .collect();
            s.discover(Instant::now(), target.key.0, &targets);
        }
    }

    fn peer(&self) -> Option<SocketAddr> {
        match self {
            Conversation::Duet { secure: s, .. } => s.peer_addr(),
            Conversation::Legacy(p) => p.peer(),
        }
    }

    fn set_peer(&mut self, peer: SocketAddr, key: Option<PublicKey>) {
        match self {
            Conversation::Duet { secure: s, .. } => {
                if let Some(key) = key.or(s.peer_key()) {
                    s.set_peer(Instant::now(), key, peer);
                }
            }
            Conversation::Legacy(p) => p.set_peer(peer),
        }
    }

    /// Whether a new line of input can be queued now.
    fn has_room(&self) -> bool {
        match self {
            Conversation::Duet { secure: s, .. } => s.session().has_room_for_any(),
            Conversation::Legacy(p) => p.queued() == 0,
        }
    }

    /// Messages queued or in flight.
    fn in_flight(&self) -> usize {
        match self {
            Conversation::Duet { secure: s, .. } => s.session().pending(),
            Conversation::Legacy(p) => p.queued(),
        }
    }
}

fn send_encoding(legacy: &LegacyArgs) -> Encoding {
    match legacy.encoding {
        Some(Encoding::Auto) | None => Encoding::Utf8,
        Some(e) => e,
    }
}

fn read_encoding(legacy: &LegacyArgs) -> Encoding {
    legacy.encoding.unwrap_or(Encoding::Auto)
}

fn banner(out: &mut Output, legacy: &LegacyArgs, local: SocketAddr) {
    if legacy.legacy {
        out.line(&format!(
            "* listening on {local}; legacy mode: plain UDP datagrams, UNACKNOWLEDGED and UNENCRYPTED \
             (sending {}, reading {})",
            send_encoding(legacy).name(),
            read_encoding(legacy).name()
        ));
    } else {
        out.line(&format!(
            "* listening on {local} (duet: end-to-end encrypted, every message acknowledged)"
        ));
    }
}

/// How a sender is shown: its paired name and address, or what is known of them.
fn sender(who: Option<String>, from: Option<SocketAddr>) -> String {
    match (who, from) {
        (Some(name), Some(addr)) => format!("{name}@{addr}"),
        (Some(name), None) => name,
        (None, Some(addr)) => addr.to_string(),
        (None, None) => "?".to_owned(),
    }
}

/// A short quote of a message for status lines.
fn snippet(text: &str) -> String {
    let mut s: String = text.chars().take(40).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    ui::escaped(&s)
}

/// Cut text into messages: one if it fits, else several, each as many whole parts as one
/// message holds (greedy splitting is deterministic, so each piece splits the same way again).
fn messages_of(text: &str, legacy: bool) -> Vec<String> {
    if legacy {
        // Plain mode splits into datagrams itself, as many as its queue holds. A piece of
        // at most four datagrams' worth of UTF-8 never needs more than five datagrams in
        // UTF-8 or GBK (GBK is never longer), so every piece fits an empty queue.
        return text::split(text, 4 * MAX_DATAGRAM)
            .map(str::to_owned)
            .collect();
    }
    let parts: Vec<&str> = text::split(text, session::PART_TEXT).collect();
    parts
        .chunks(session::MAX_PARTS)
        .map(|c| c.concat())
        .collect()
}

/// Book-keeping of own messages: what each id said, how many were delivered or failed.
#[derive(Default)]
struct Sent {
    /// A quote of each message in flight, and its id in the store if it is stored.
    texts: HashMap<MessageId, (String, Option<u64>)>,
    delivered: usize,
    failed: usize,
    total: usize,
}

/// `duet chat`: `dir` is the config directory (identity and paired peers).
pub fn chat(args: ChatArgs, dir: &Path) -> Result<(), Error> {
    let bind = parse_addr(&args.bind)?;
    let peer_text = args.peer.clone();
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let _restore = interactive.then(TerminalRestore::save);
    let prompt = Arc::new(Mutex::new(format!("{}> ", args.name)));
    let mut editor = if interactive {
        Some(rustyline::DefaultEditor::new().map_err(|e| Error::Other(format!("terminal: {e}")))?)
    } else {
        None
    };
    // The paired peer looked for on the LAN, when no address is known.
    let mut looking = None;
    let (conversation, contacts, talking_to, outbox_peer) = if args.legacy.legacy {
        let mut peer = peer_text.as_deref().map(parse_addr).transpose()?;
        if let (None, Some(ed)) = (peer, editor.as_mut()) {
            peer = ask(
                ed,
                "peer address (HOST:PORT, Enter to wait for one): ",
                parse_addr,
            )?;
        }
        (
            Conversation::legacy(&args.legacy, peer),
            None,
            peer.map(|p| p.to_string()),
            None,
        )
    } else {
        let contacts = Contacts::load(dir)?;
        let mut target = peer_text.as_deref().map(|t| contacts.find(t)).transpose()?;
        if let (None, Some(ed)) = (&target, editor.as_mut()) {
            target = ask(
                ed,
                "talk to (paired NAME or HOST:PORT, Enter to wait): ",
                |t| contacts.find(t),
            )?;
        }
        if target.is_none() && contacts.peers.iter().next().is_none() {
            return Err(Error::NotPaired);
        }
        let mut conversation = Conversation::duet(&contacts, target.as_ref(), Config::default())?;
        if let Some(t) = target.as_ref().filter(|t| t.addr.is_none()) {
            conversation.discover(t, bind);
            looking = Some(t.name.clone());
        }
        let shown = target.as_ref().map(|t| match t.addr {
            Some(addr) => format!("{} at {addr}", t.name),
            None => t.name.clone(),
        });
        let key = target.map(|t| t.key);
        (conversation, Some(contacts), shown, key)
    };
    let mut link = Link::bind(transport::open(bind, &args.tap)?, bind, conversation)?;
    if looking.is_some() {
        link.allow_broadcast()?;
    }
    let (mut out, mut input) = match editor {
        Some(mut ed) => {
            let printer = ed
                .create_external_printer()
                .map_err(|e| Error::Other(format!("terminal: {e}")))?;
            let input = InputPipe::terminal(ed, Arc::clone(&prompt))?;
            (Output::Terminal(Box::new(printer)), input)
        }
        None => (Output::Lines, InputPipe::lines()?),
    };
    banner(&mut out, &args.legacy, link.local_addr());
    match talking_to {
        Some(p) => out.line(&format!("* talking to {p}; /help lists commands")),
        None if args.legacy.legacy => out.line(
            "* no peer yet: whoever writes first becomes the peer; /peer HOST:PORT picks one",
        ),
        None => out.line("* no peer yet: any paired peer may write; /peer NAME picks one"),
    }
    if let Some(name) = &looking {
        out.line(&format!("* looking for {name} on the LAN…"));
    }
    let mut chat = ChatState {
        name: args.name,
        prompt,
        legacy: args.legacy.legacy,
        read_encoding: read_encoding(&args.legacy),
        store: if contacts.is_some() {
            Some(Store::open(dir)?)
        } else {
            None
        },
        contacts,
        sent: Sent::default(),
        pending: VecDeque::new(),
        outbox_peer,
        kept: Vec::new(),
        quitting: false,
        interactive,
        looking: looking.map(|name| (name, None)),
    };
    chat.resume_outbox(&mut out);
    chat.run(&mut link, &mut out, &mut input)
}

/// Ask on the terminal until `parse` accepts the answer (Enter alone: none).
fn ask<T>(
    editor: &mut rustyline::DefaultEditor,
    question: &str,
    parse: impl Fn(&str) -> Result<T, Error>,
) -> Result<Option<T>, Error> {
    for _ in 0..5 {
        match editor.readline(question) {
            Ok(line) if line.trim().is_empty() => return Ok(None),
            Ok(line) => match parse(line.trim()) {
                Ok(value) => return Ok(Some(value)),
                Err(e) => eprintln!("{e}"),
            },
            Err(_) => return Err(Error::Other("no peer given".into())),
        }
    }
    Err(Error::Other("no valid peer given".into()))
}

struct ChatState {
    name: String,
    prompt: Arc<Mutex<String>>,
    legacy: bool,
    read_encoding: Encoding,
    /// Identity and paired peers (duet mode only).
    contacts: Option<Contacts>,
    sent: Sent,
    /// Messages typed but not yet accepted by the outbox (backpressure).
    pending: VecDeque<Pending>,
    /// The history and durable outbox (duet mode).
    store: Option<Store>,
    /// The paired peer typed messages are stored for, when one was named.
    outbox_peer: Option<PeerKey>,
    /// Stored messages that failed this time: sent again when the peer is back.
    kept: Vec<Pending>,
    quitting: bool,
    interactive: bool,
    /// The peer looked for on the LAN and where it was last found.
    looking: Option<(String, Option<SocketAddr>)>,
}

/// A message waiting for room in the session's outbox.
#[derive(Clone, Debug)]
struct Pending {
    text: String,
    /// Its id in the store, when it is stored (and so survives a restart).
    uid: Option<u64>,
}

const HELP: &str = "commands: /peer HOST:PORT (talk to someone else), /nick NAME, /status, /quit, /help; \
                    start a message with // to send a line that begins with /";

impl ChatState {
    fn run(
        &mut self,
        link: &mut Link<Stack, Conversation>,
        out: &mut Output,
        input: &mut InputPipe,
    ) -> Result<(), Error> {
        loop {
            let deadline = match link.poll() {
                Ok(deadline) => deadline,
                Err(e @ Error::Unreachable { .. }) => {
                    out.line(&format!("* {e}; retrying"));
                    Some(Instant::now() + Duration::from_millis(100))
                }
                Err(e) => return Err(e),
            };
            self.show_events(link, out);
            self.show_found(link, out);
            if self.quitting && self.pending.is_empty() && link.protocol.in_flight() == 0 {
                break;
            }
            let queued = self.queue_pending(link, out);
            let mut took_input = false;
            while self.pending.is_empty() && link.protocol.has_room() && !self.quitting {
                let Some(item) = input.try_next() else { break };
                took_input = true;
                self.handle_input(item, link, out);
                self.queue_pending(link, out);
            }
            if queued || took_input {
                continue;
            }
            let want_input = self.pending.is_empty() && link.protocol.has_room() && !self.quitting;
            link.wait(deadline, if want_input { input.fd() } else { None }, None)?;
        }
        if let Conversation::Duet { secure: s, .. } = &mut link.protocol {
            s.close();
            let _ = link.poll();
        }
        if self.sent.failed > 0 && !self.interactive {
            return Err(Error::NotDelivered {
                failed: self.sent.failed,
                total: self.sent.total,
            });
        }
        Ok(())
    }

    /// Say where discovery found the peer, once per address.
    fn show_found(&mut self, link: &Link<Stack, Conversation>, out: &mut Output) {
        if let Some((name, shown)) = &mut self.looking
            && let Some(addr) = link.protocol.peer()
            && *shown != Some(addr)
        {
            out.line(&format!("* found {name} at {addr}"));
            *shown = Some(addr);
        }
    }

    fn show_events(&mut self, link: &mut Link<Stack, Conversation>, out: &mut Output) {
        while let Some(shown) = link.protocol.next_shown(self.read_encoding) {
            match shown {
                Shown::Message { from, who, text, stored } => {
                    // Stored before it is shown, and before the next event is asked for
                    // (which is what acknowledges it): a crash cannot lose it.
                    if let (Some(store), Some((key, uid, raw))) = (&self.store, &stored) {
                        match store.receive(key, *uid, raw) {
                            Ok(true) => {}
                            // Stored by an earlier run: a retransmission, not a new message.
                            Ok(false) => continue,
                            Err(e) => out.line(&format!("* {e}")),
                        }
                    }
                    out.line(&format!("{}: {text}", sender(who, from)));
                }
                Shown::Delivered(id) => {
                    self.sent.delivered += 1;
                    let (text, uid) = self.sent.texts.remove(&id).unwrap_or_default();
                    if let (Some(store), Some(key), Some(uid)) = (&self.store, &self.outbox_peer, uid)
                        && let Err(e) = store.mark_delivered(key, uid)
                    {
                        out.line(&format!("* {e}"));
                    }
                    out.line(&format!("* {id} delivered: {text}"));
                }
                Shown::Failed(id, why) => {
                    self.sent.failed += 1;
                    let (text, uid) = self.sent.texts.remove(&id).unwrap_or_default();
                    if let Some(uid) = uid {
                        out.line(&format!(
                            "* {id} not delivered yet ({why}); kept in the outbox, sent again when the peer is back: {text}"
                        ));
                        if let Some(store) = &self.store
                            && let Some(key) = &self.outbox_peer
                            && let Ok(unsent) = store.unsent(key)
                            && let Some((_, full)) = unsent.into_iter().find(|(u, _)| *u == uid)
                        {
                            self.kept.push(Pending { text: full, uid: Some(uid) });
                        }
                    } else {
                        out.line(&format!("* {id} FAILED ({why}): {text}"));
                    }
                }
                Shown::PeerUp(addr) => {
                    out.line(&format!("* peer {addr} is up"));
                    if !self.kept.is_empty() {
                        out.line(&format!("* sending {} kept message(s) again", self.kept.len()));
                        self.pending.extend(self.kept.drain(..));
                    }
                }
                Shown::PeerDown => out.line("* peer is down (it left, or stopped answering)"),
                Shown::Oversized { from } => out.line(&format!(
                    "* dropped a datagram of more than {MAX_DATAGRAM} bytes from {from} (duet reads at most {MAX_DATAGRAM})"
                )),
            }
        }
    }

    /// Offer typed messages to the protocol; returns whether any was taken.
    fn queue_pending(&mut self, link: &mut Link<Stack, Conversation>, out: &mut Output) -> bool {
        let mut took = false;
        while let Some(Pending { text, uid }) = self.pending.front() {
            let result = match &mut link.protocol {
                Conversation::Duet { secure: s, .. } => match match uid {
                    Some(uid) => s.send_message(Instant::now(), *uid, text),
                    None => s.send_text(Instant::now(), text),
                } {
                    Ok(id) => {
                        self.sent.texts.insert(id, (snippet(text), *uid));
                        self.sent.total += 1;
                        Ok(())
                    }
                    Err(SendError::OutboxFull) => return took,
                    Err(e) => Err(e.to_string()),
                },
                Conversation::Legacy(p) => match p.send_text(text) {
                    Ok(report) => {
                        if report.unmappable > 0 {
                            out.line(&format!(
                                "* {} character(s) cannot be written in {} and were sent as '?'",
                                report.unmappable,
                                p.encoding().name()
                            ));
                        }
                        Ok(())
                    }
                    Err(PlainSendError::QueueFull) => return took,
                    Err(PlainSendError::NoPeer) => {
                        Err("no peer yet: /peer HOST:PORT first".to_owned())
                    }
                },
            };
            if let Err(why) = result {
                out.line(&format!("* not sent ({why}): {}", snippet(text)));
            }
            self.pending.pop_front();
            took = true;
        }
        took
    }

    fn handle_input(
        &mut self,
        input: Input,
        link: &mut Link<Stack, Conversation>,
        out: &mut Output,
    ) {
        let line = match input {
            Input::Line(line) => line,
            Input::Eof | Input::Interrupt => {
                self.quit(link, out);
                return;
            }
        };
        if let Some(literal) = line.strip_prefix("//") {
            self.enqueue(&format!("/{literal}"), out);
            return;
        }
        let Some(command) = line.strip_prefix('/') else {
            if !line.is_empty() {
                self.enqueue(&line, out);
            }
            return;
        };
        let (word, rest) = command.split_once(' ').unwrap_or((command, ""));
        let rest = rest.trim();
        match word {
            "quit" | "exit" | "q" => self.quit(link, out),
            "help" | "h" => out.line(&format!("* {HELP}")),
            "peer" => {
                let found = match &self.contacts {
                    Some(c) => c.find(rest).and_then(|t| match t.addr {
                        Some(addr) => Ok((addr, Some(t.key.0), t.name)),
                        None => Err(Error::Other(format!(
                            "no address known for {}: /peer HOST:PORT",
                            t.name
                        ))),
                    }),
                    None => parse_addr(rest).map(|a| (a, None, a.to_string())),
                };
                match found {
                    Ok((addr, key, name)) => {
                        link.protocol.set_peer(addr, key);
                        out.line(&format!("* talking to {name} at {addr}"));
                        if let Some(key) = key {
                            self.outbox_peer = Some(PeerKey(key));
                            self.resume_outbox(out);
                        }
                    }
                    Err(e) => out.line(&format!("* {e}")),
                }
            }
            "nick" if !rest.is_empty() => {
                self.name = rest.to_owned();
                if let Ok(mut p) = self.prompt.lock() {
                    *p = format!("{}> ", self.name);
                }
                out.line(&format!("* you are now {}", self.name));
            }
            "status" => {
                let peer = link
                    .protocol
                    .peer()
                    .map_or_else(|| "none yet".to_owned(), |p| p.to_string());
                let mut line = format!(
                    "* {} on {}, peer {peer}; sent {}, delivered {}, failed {}, in flight {}",
                    self.name,
                    link.local_addr(),
                    self.sent.total,
                    self.sent.delivered,
                    self.sent.failed,
                    link.protocol.in_flight()
                );
                if let Conversation::Duet { secure: s, .. } = &link.protocol {
                    line.push_str(&format!(
                        "; peer {}, {}; {}",
                        if s.session().is_peer_up() {
                            "up"
                        } else {
                            "not answering"
                        },
                        if s.is_established() {
                            "encrypted"
                        } else {
                            "no keys yet"
                        },
                        counters(s)
                    ));
                }
                out.line(&line);
            }
            _ => out.line(&format!("* unknown command /{word}; {HELP}")),
        }
    }

    /// Queue typed text: stored first when it is for a named paired peer, so it survives
    /// a restart.
    fn enqueue(&mut self, text: &str, out: &mut Output) {
        for piece in messages_of(text, self.legacy) {
            let uid = match (&self.store, &self.outbox_peer) {
                (Some(store), Some(key)) => match store.queue_out(key, &piece) {
                    Ok(uid) => Some(uid),
                    Err(e) => {
                        out.line(&format!("* {e}; sending without keeping it"));
                        None
                    }
                },
                _ => None,
            };
            self.pending.push_back(Pending { text: piece, uid });
        }
    }

    /// Queue what earlier runs left undelivered for the current peer.
    fn resume_outbox(&mut self, out: &mut Output) {
        let (Some(store), Some(key)) = (&self.store, &self.outbox_peer) else {
            return;
        };
        match store.unsent(key) {
            Ok(unsent) if !unsent.is_empty() => {
                out.line(&format!(
                    "* {} message(s) from before are queued for this peer",
                    unsent.len()
                ));
                let queued: Vec<u64> = self.pending.iter().filter_map(|p| p.uid).collect();
                self.pending.extend(
                    unsent
                        .into_iter()
                        .filter(|(uid, _)| !queued.contains(uid))
                        .map(|(uid, text)| Pending {
                            text,
                            uid: Some(uid),
                        }),
                );
            }
            Ok(_) => {}
            Err(e) => out.line(&format!("* {e}")),
        }
    }

    fn quit(&mut self, link: &Link<Stack, Conversation>, out: &mut Output) {
        if self.quitting {
            return;
        }
        self.quitting = true;
        let waiting = self.pending.len() + link.protocol.in_flight();
        if waiting > 0 {
            out.line(&format!(
                "* waiting for {waiting} message(s) to be acknowledged before leaving"
            ));
        }
    }
}

/// What a secure session received and refused, for `/status` and `listen -v`.
fn counters(s: &Secure) -> String {
    let st = s.session_stats();
    let sec = s.stats();
    format!(
        "received {} messages; rejected {} unauthenticated, {} replayed, {} from unpaired keys, \
         {} while busy, {} malformed inside; {} duplicates, {} retransmits; {} handshakes; \
         discovery probes: {} answered, {} refused",
        st.messages_in,
        sec.unauthenticated,
        sec.replayed,
        sec.unpaired,
        sec.busy,
        st.malformed + st.oversized,
        st.duplicates,
        st.retransmits,
        sec.handshakes,
        sec.probes_answered,
        sec.probes_refused
    )
}

/// `duet send`.
pub fn send(args: SendArgs, dir: &Path) -> Result<(), Error> {
    let bind = parse_addr(&args.bind)?;
    let text = args.text.join(" ");
    if text.is_empty() {
        return Err(Error::Other("nothing to send: the text is empty".into()));
    }
    let legacy = args.legacy.legacy;
    let pieces = messages_of(&text, legacy);
    if args.no_split && pieces.len() > 1 {
        return Err(Error::TooLong {
            len: text.len(),
            max: session::MAX_MESSAGE,
        });
    }
    let timeout = Duration::from_secs(args.timeout);
    let config = Config {
        delivery_timeout: timeout,
        ..Config::default()
    };
    let mut durable = None;
    let mut discovering = false;
    let (conversation, to) = if legacy {
        let to = parse_addr(&args.to)?;
        (Conversation::legacy(&args.legacy, Some(to)), to)
    } else {
        let contacts = Contacts::load(dir)?;
        let target = contacts.find(&args.to)?;
        durable = Some((Store::open(dir)?, target.key, target.name.clone()));
        let mut conversation = Conversation::duet(&contacts, Some(&target), config)?;
        let to = match target.addr {
            Some(to) => to,
            None => {
                // Looked for on the LAN; shown as where it was looked for until found.
                conversation.discover(&target, bind);
                discovering = true;
                SocketAddr::new(std::net::Ipv4Addr::BROADCAST.into(), DUET_PORT)
            }
        };
        (conversation, to)
    };
    let mut link = Link::bind(transport::open(bind, &args.tap)?, bind, conversation)?;
    if discovering {
        link.allow_broadcast()?;
    }
    let mut out = Output::Lines;
    if legacy {
        let (mut parts, mut unmappable) = (0, 0);
        for piece in &pieces {
            // Bounded: each round sends at least one queued datagram or queues the piece.
            for _ in 0..64 {
                let Conversation::Legacy(p) = &mut link.protocol else {
                    break;
                };
                match p.send_text(piece) {
                    Ok(report) => {
                        parts += report.parts;
                        unmappable += report.unmappable;
                        break;
                    }
                    Err(PlainSendError::QueueFull) => {
                        link.poll()?;
                    }
                    Err(e) => return Err(Error::Other(e.to_string())),
                }
            }
        }
        while link.protocol.in_flight() > 0 {
            link.poll()?;
        }
        eprintln!(
            "duet: sent {parts} datagram(s) to {to}; legacy mode: unacknowledged and unencrypted{}",
            if unmappable > 0 {
                " (some characters sent as '?')"
            } else {
                ""
            }
        );
        return Ok(());
    }
    let total = pieces.len();
    // Stored first: what cannot be delivered now is sent by the next chat with this peer.
    let mut pending: VecDeque<(u64, String)> = VecDeque::new();
    for piece in pieces {
        let uid = match &durable {
            Some((store, key, _)) => store.queue_out(key, &piece)?,
            None => 0,
        };
        pending.push_back((uid, piece));
    }
    let mut uids: HashMap<MessageId, u64> = HashMap::new();
    let mut heard = false;
    let (mut delivered, mut failed) = (0, 0);
    // Each piece may wait its turn for room and then its own delivery timeout.
    let give_up = Instant::now() + timeout.saturating_mul(total as u64 + 1);
    while delivered + failed < total {
        if let Conversation::Duet { secure: s, .. } = &mut link.protocol {
            while let Some((uid, piece)) = pending.front() {
                match s.send_message(Instant::now(), *uid, piece) {
                    Ok(id) => {
                        uids.insert(id, *uid);
                        pending.pop_front();
                    }
                    Err(SendError::OutboxFull) => break,
                    Err(e) => return Err(Error::Other(e.to_string())),
                }
            }
        }
        let deadline = link.poll()?;
        while let Some(shown) = link.protocol.next_shown(Encoding::Utf8) {
            match shown {
                Shown::Delivered(id) => {
                    delivered += 1;
                    if let (Some((store, key, _)), Some(uid)) = (&durable, uids.get(&id)) {
                        store.mark_delivered(key, *uid)?;
                    }
                }
                Shown::Failed(..) => failed += 1,
                Shown::PeerUp(_) => heard = true,
                _ => {}
            }
        }
        if Instant::now() >= give_up {
            failed = total - delivered;
            break;
        }
        if delivered + failed < total {
            link.wait(deadline, None, Some(give_up))?;
        }
    }
    if let Conversation::Duet { secure: s, .. } = &mut link.protocol {
        s.close();
        let _ = link.poll();
    }
    let to = link.protocol.peer().unwrap_or(to);
    if failed == 0 {
        out.line(&format!(
            "* delivered to {to}{}",
            if total > 1 {
                format!(" as {total} messages")
            } else {
                String::new()
            }
        ));
        Ok(())
    } else {
        if let Some((_, _, name)) = &durable {
            eprintln!(
                "duet: kept in the outbox: sent again the next time you chat with {name} (`duet chat {name}`)"
            );
        }
        if !heard {
            return Err(Error::NoAnswer {
                peer: to,
                waited: args.timeout,
            });
        }
        Err(Error::NotDelivered { failed, total })
    }
}

/// `duet history`: stored messages, oldest first.
pub fn history(args: HistoryArgs, dir: &Path) -> Result<(), Error> {
    let contacts = Contacts::load(dir)?;
    let peer = match &args.peer {
        Some(name) => {
            Some(
                contacts
                    .peers
                    .get(name)
                    .map(|p| p.key)
                    .ok_or_else(|| Error::UnknownPeer {
                        name: name.clone(),
                        paired: contacts.names(),
                    })?,
            )
        }
        None => None,
    };
    let store = Store::open(dir)?;
    if args.check {
        let verdict = store.integrity()?;
        println!("integrity: {verdict}");
        return if verdict == "ok" {
            Ok(())
        } else {
            Err(Error::Other("the history file is damaged".into()))
        };
    }
    let mut out = std::io::stdout().lock();
    for entry in store.history(peer.as_ref(), args.search.as_deref(), args.limit)? {
        let name = entry
            .peer
            .parse::<PeerKey>()
            .ok()
            .and_then(|k| contacts.peers.by_key(&k))
            .map_or_else(
                || entry.peer.chars().take(8).collect::<String>(),
                |p| p.name.clone(),
            );
        let when = chrono::DateTime::from_timestamp_millis(entry.created_ms)
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        let (arrow, state) = match entry.direction {
            Direction::In => ("<-", String::new()),
            Direction::Out => ("->", format!(" [{}]", entry.state)),
        };
        // A closed stdout (`| head`) ends the listing quietly.
        if writeln!(
            out,
            "{when} {arrow} {name}: {}{state}",
            ui::escaped(&entry.text)
        )
        .is_err()
        {
            break;
        }
    }
    Ok(())
}

/// `duet listen`.
pub fn listen(args: ListenArgs, dir: &Path) -> Result<(), Error> {
    let bind = parse_addr(&args.bind)?;
    let (conversation, store) = if args.legacy.legacy {
        (Conversation::legacy(&args.legacy, None), None)
    } else {
        let contacts = Contacts::load(dir)?;
        if contacts.peers.iter().next().is_none() {
            return Err(Error::NotPaired);
        }
        (
            Conversation::duet(&contacts, None, Config::default())?,
            Some(Store::open(dir)?),
        )
    };
    let mut link = Link::bind(transport::open(bind, &args.tap)?, bind, conversation)?;
    let mut out = Output::Lines;
    banner(&mut out, &args.legacy, link.local_addr());
    let encoding = read_encoding(&args.legacy);
    let mut received = 0u64;
    let mut linger_since: Option<(Instant, u32)> = None;
    let mut linger_start = None;
    loop {
        let deadline = link.poll()?;
        let mut peer_left = false;
        while let Some(shown) = link.protocol.next_shown(encoding) {
            match shown {
                Shown::Message { from, who, text, stored } => {
                    // Stored before it is shown and acknowledged; one stored by an earlier
                    // run is a retransmission and is not shown again.
                    if let (Some(store), Some((key, uid, raw))) = (&store, &stored)
                        && !store.receive(key, *uid, raw)?
                    {
                        continue;
                    }
                    received += 1;
                    out.line(&format!("{}: {text}", sender(who, from)));
                }
                Shown::Oversized { from } => out.line(&format!(
                    "* dropped a datagram of more than {MAX_DATAGRAM} bytes from {from} (duet reads at most {MAX_DATAGRAM})"
                )),
                Shown::PeerDown => peer_left = true,
                _ => {}
            }
            if args.count.is_some_and(|n| received >= n) && args.legacy.legacy {
                break;
            }
        }
        if args.count.is_some_and(|n| received >= n) {
            let Conversation::Duet { secure: s, .. } = &link.protocol else {
                break;
            };
            // Stay until the sender says goodbye or has been quiet for a while, so a lost
            // acknowledgement of the last message is answered when it is retransmitted.
            let now = Instant::now();
            let heard = s.session_stats().datagrams_in;
            let started = *linger_start.get_or_insert(now);
            let quiet_since = match linger_since {
                Some((t, n)) if n == heard => t,
                _ => {
                    linger_since = Some((now, heard));
                    now
                }
            };
            if peer_left || now >= quiet_since + LINGER_QUIET || now >= started + LINGER_MAX {
                break;
            }
            let limit = (quiet_since + LINGER_QUIET).min(started + LINGER_MAX);
            link.wait(deadline, None, Some(limit))?;
            continue;
        }
        link.wait(deadline, None, None)?;
    }
    if args.verbose
        && let Conversation::Duet { secure: s, .. } = &link.protocol
    {
        eprintln!("duet: {}", counters(s));
    }
    Ok(())
}
