//! duet's modes: `chat`, `send` and `listen`, over the duet session or legacy datagrams.
//!
//! Every mode runs the same [`Link`] (the core's driver plus a poll(2) wait); what differs
//! is only what is typed in and what is shown.

use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use duet_core::driver::Protocol;
use duet_core::legacy::{Plain, PlainEvent, PlainSendError};
use duet_core::session::{self, Config, Event, MessageId, SendError, Session};
use duet_core::text::{self, Encoding};
use duet_core::time::{Duration, Instant};
use duet_core::wire::frame::MAX_PAYLOAD;
use duet_core::{MAX_DATAGRAM, Transmit};

use crate::cli::{ChatArgs, LegacyArgs, ListenArgs, SendArgs};
use crate::error::Error;
use crate::input::{Input, InputPipe};
use crate::link::Link;
use crate::net;
use crate::ui::{self, Output};

/// How long `listen --count` stays after its last message when the sender does not say
/// goodbye: long enough to acknowledge retransmissions whose first acknowledgement was lost.
const LINGER_QUIET: Duration = Duration::from_millis(1500);
/// The longest `listen --count` lingers in any case.
const LINGER_MAX: Duration = Duration::from_secs(6);

fn parse_addr(text: &str) -> Result<SocketAddr, Error> {
    net::resolve(text).map_err(|source| Error::BadAddress {
        text: text.to_owned(),
        source,
    })
}

/// A fresh random epoch for a new session (see `Session::new`).
fn new_epoch() -> Result<u32, Error> {
    getrandom::u32().map_err(|e| Error::Other(format!("no randomness from the system: {e}")))
}

/// The duet session or the legacy datagrams, behind one [`Protocol`].
pub enum Conversation {
    /// duet's reliable session.
    Duet(Box<Session>),
    /// Plain datagrams.
    Legacy(Box<Plain>),
}

impl Protocol for Conversation {
    fn wants_datagram(&self) -> bool {
        match self {
            Conversation::Duet(s) => s.wants_datagram(),
            Conversation::Legacy(p) => p.wants_datagram(),
        }
    }
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        match self {
            Conversation::Duet(s) => s.handle_datagram(now, from, datagram),
            Conversation::Legacy(p) => p.handle_datagram(now, from, datagram),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Conversation::Duet(s) => s.handle_timeout(now),
            Conversation::Legacy(p) => p.handle_timeout(now),
        }
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8; MAX_DATAGRAM]) -> Option<Transmit> {
        match self {
            Conversation::Duet(s) => s.poll_transmit(now, buf),
            Conversation::Legacy(p) => p.poll_transmit(now, buf),
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Conversation::Duet(s) => s.poll_timeout(),
            Conversation::Legacy(p) => p.poll_timeout(),
        }
    }
}

/// Something to show, owned, from either protocol.
#[derive(Debug)]
enum Shown {
    Message {
        from: Option<SocketAddr>,
        text: String,
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
    fn new(legacy: &LegacyArgs, peer: Option<SocketAddr>, config: Config) -> Result<Self, Error> {
        Ok(if legacy.legacy {
            Conversation::Legacy(Box::new(Plain::new(peer, send_encoding(legacy))))
        } else {
            Conversation::Duet(Box::new(Session::new(
                Instant::now(),
                config,
                new_epoch()?,
                peer,
            )))
        })
    }

    fn next_shown(&mut self, read_encoding: Encoding) -> Option<Shown> {
        match self {
            Conversation::Duet(s) => {
                let from = s.peer();
                Some(match s.poll_event()? {
                    Event::Message(text) => Shown::Message {
                        from,
                        text: ui::escaped(text),
                    },
                    Event::Delivered(id) => Shown::Delivered(id),
                    Event::Failed(id, why) => Shown::Failed(id, why),
                    Event::PeerUp(addr) => Shown::PeerUp(addr),
                    Event::PeerDown => Shown::PeerDown,
                })
            }
            Conversation::Legacy(p) => Some(match p.poll_event()? {
                PlainEvent::Datagram { from, bytes } => Shown::Message {
                    from: Some(from),
                    text: ui::legacy_text(bytes, read_encoding).0,
                },
                PlainEvent::Oversized { from } => Shown::Oversized { from },
            }),
        }
    }

    fn peer(&self) -> Option<SocketAddr> {
        match self {
            Conversation::Duet(s) => s.peer(),
            Conversation::Legacy(p) => p.peer(),
        }
    }

    fn set_peer(&mut self, peer: SocketAddr) {
        match self {
            Conversation::Duet(s) => s.set_peer(Instant::now(), peer),
            Conversation::Legacy(p) => p.set_peer(peer),
        }
    }

    /// Whether a new line of input can be queued now.
    fn has_room(&self) -> bool {
        match self {
            Conversation::Duet(s) => s.has_room(session::MAX_PARTS),
            Conversation::Legacy(p) => p.queued() == 0,
        }
    }

    /// Messages queued or in flight.
    fn in_flight(&self) -> usize {
        match self {
            Conversation::Duet(s) => s.pending(),
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
            "* listening on {local} (duet: every message acknowledged)"
        ));
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
        // Plain mode splits into datagrams itself.
        return vec![text.to_owned()];
    }
    let parts: Vec<&str> = text::split(text, MAX_PAYLOAD).collect();
    parts
        .chunks(session::MAX_PARTS)
        .map(|c| c.concat())
        .collect()
}

/// Book-keeping of own messages: what each id said, how many were delivered or failed.
#[derive(Default)]
struct Sent {
    texts: HashMap<MessageId, String>,
    delivered: usize,
    failed: usize,
    total: usize,
}

/// `duet chat`.
pub fn chat(args: ChatArgs) -> Result<(), Error> {
    let bind = parse_addr(&args.bind)?;
    let mut peer = args.peer.as_deref().map(parse_addr).transpose()?;
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let prompt = Arc::new(Mutex::new(format!("{}> ", args.name)));
    let mut editor = None;
    if interactive {
        let mut ed =
            rustyline::DefaultEditor::new().map_err(|e| Error::Other(format!("terminal: {e}")))?;
        if peer.is_none() {
            peer = ask_peer(&mut ed)?;
        }
        editor = Some(ed);
    }
    let conversation = Conversation::new(&args.legacy, peer, Config::default())?;
    let mut link = Link::bind_udp(bind, conversation)?;
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
    match peer {
        Some(p) => out.line(&format!("* talking to {p}; /help lists commands")),
        None => out.line(
            "* no peer yet: whoever writes first becomes the peer; /peer HOST:PORT picks one",
        ),
    }
    let mut chat = ChatState {
        name: args.name,
        prompt,
        legacy: args.legacy.legacy,
        read_encoding: read_encoding(&args.legacy),
        sent: Sent::default(),
        pending: VecDeque::new(),
        quitting: false,
        interactive,
    };
    chat.run(&mut link, &mut out, &mut input)
}

fn ask_peer(editor: &mut rustyline::DefaultEditor) -> Result<Option<SocketAddr>, Error> {
    for _ in 0..5 {
        match editor.readline("peer address (HOST:PORT, Enter to wait for one): ") {
            Ok(line) if line.trim().is_empty() => return Ok(None),
            Ok(line) => match parse_addr(line.trim()) {
                Ok(addr) => return Ok(Some(addr)),
                Err(e) => eprintln!("{e}"),
            },
            Err(_) => return Err(Error::Other("no peer address given".into())),
        }
    }
    Err(Error::Other("no valid peer address given".into()))
}

struct ChatState {
    name: String,
    prompt: Arc<Mutex<String>>,
    legacy: bool,
    read_encoding: Encoding,
    sent: Sent,
    /// Messages typed but not yet accepted by the outbox (backpressure).
    pending: VecDeque<String>,
    quitting: bool,
    interactive: bool,
}

const HELP: &str = "commands: /peer HOST:PORT (talk to someone else), /nick NAME, /status, /quit, /help; \
                    start a message with // to send a line that begins with /";

impl ChatState {
    fn run(
        &mut self,
        link: &mut Link<net::HostStack, Conversation>,
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
        if let Conversation::Duet(s) = &mut link.protocol {
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

    fn show_events(&mut self, link: &mut Link<net::HostStack, Conversation>, out: &mut Output) {
        while let Some(shown) = link.protocol.next_shown(self.read_encoding) {
            match shown {
                Shown::Message { from, text } => {
                    let who = from.map_or_else(|| "?".to_owned(), |a| a.to_string());
                    out.line(&format!("{who}: {text}"));
                }
                Shown::Delivered(id) => {
                    self.sent.delivered += 1;
                    let text = self.sent.texts.remove(&id).unwrap_or_default();
                    out.line(&format!("* {id} delivered: {text}"));
                }
                Shown::Failed(id, why) => {
                    self.sent.failed += 1;
                    let text = self.sent.texts.remove(&id).unwrap_or_default();
                    out.line(&format!("* {id} FAILED ({why}): {text}"));
                }
                Shown::PeerUp(addr) => out.line(&format!("* peer {addr} is up")),
                Shown::PeerDown => out.line("* peer is down (it left, or stopped answering)"),
                Shown::Oversized { from } => out.line(&format!(
                    "* dropped a datagram of more than {MAX_DATAGRAM} bytes from {from} (duet reads at most {MAX_DATAGRAM})"
                )),
            }
        }
    }

    /// Offer typed messages to the protocol; returns whether any was taken.
    fn queue_pending(
        &mut self,
        link: &mut Link<net::HostStack, Conversation>,
        out: &mut Output,
    ) -> bool {
        let mut took = false;
        while let Some(text) = self.pending.front() {
            let result = match &mut link.protocol {
                Conversation::Duet(s) => match s.send_text(Instant::now(), text) {
                    Ok(id) => {
                        self.sent.texts.insert(id, snippet(text));
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
        link: &mut Link<net::HostStack, Conversation>,
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
            self.pending
                .extend(messages_of(&format!("/{literal}"), self.legacy));
            return;
        }
        let Some(command) = line.strip_prefix('/') else {
            if !line.is_empty() {
                self.pending.extend(messages_of(&line, self.legacy));
            }
            return;
        };
        let (word, rest) = command.split_once(' ').unwrap_or((command, ""));
        let rest = rest.trim();
        match word {
            "quit" | "exit" | "q" => self.quit(link, out),
            "help" | "h" => out.line(&format!("* {HELP}")),
            "peer" => match parse_addr(rest) {
                Ok(addr) => {
                    link.protocol.set_peer(addr);
                    out.line(&format!("* talking to {addr}"));
                }
                Err(e) => out.line(&format!("* {e}")),
            },
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
                if let Conversation::Duet(s) = &link.protocol {
                    let st = s.stats();
                    line.push_str(&format!(
                        "; peer {}; received {} messages; rejected {} malformed, {} oversized, {} foreign; \
                         {} duplicates, {} retransmits; rto {}",
                        if s.is_peer_up() { "up" } else { "not answering" },
                        st.messages_in,
                        st.malformed,
                        st.oversized,
                        st.foreign,
                        st.duplicates,
                        st.retransmits,
                        s.rto()
                    ));
                }
                out.line(&line);
            }
            _ => out.line(&format!("* unknown command /{word}; {HELP}")),
        }
    }

    fn quit(&mut self, link: &Link<net::HostStack, Conversation>, out: &mut Output) {
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

/// `duet send`.
pub fn send(args: SendArgs) -> Result<(), Error> {
    let to = parse_addr(&args.to)?;
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
    let mut link = Link::bind_udp(bind, Conversation::new(&args.legacy, Some(to), config)?)?;
    let mut out = Output::Lines;
    if legacy {
        if let Conversation::Legacy(p) = &mut link.protocol {
            let report = p
                .send_text(&text)
                .map_err(|e| Error::Other(e.to_string()))?;
            while p_queued(&link) > 0 {
                link.poll()?;
            }
            eprintln!(
                "duet: sent {} datagram(s) to {to}; legacy mode: unacknowledged and unencrypted{}",
                report.parts,
                if report.unmappable > 0 {
                    " (some characters sent as '?')"
                } else {
                    ""
                }
            );
        }
        return Ok(());
    }
    let total = pieces.len();
    let mut pending: VecDeque<String> = pieces.into();
    let mut heard = false;
    let (mut delivered, mut failed) = (0, 0);
    // Each piece may wait its turn for room and then its own delivery timeout.
    let give_up = Instant::now() + timeout.saturating_mul(total as u64 + 1);
    while delivered + failed < total {
        if let Conversation::Duet(s) = &mut link.protocol {
            while let Some(piece) = pending.front() {
                match s.send_text(Instant::now(), piece) {
                    Ok(_) => {
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
                Shown::Delivered(_) => delivered += 1,
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
    if let Conversation::Duet(s) = &mut link.protocol {
        s.close();
        let _ = link.poll();
    }
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
    } else if !heard {
        Err(Error::NoAnswer {
            peer: to,
            waited: args.timeout,
        })
    } else {
        Err(Error::NotDelivered { failed, total })
    }
}

fn p_queued(link: &Link<net::HostStack, Conversation>) -> usize {
    link.protocol.in_flight()
}

/// `duet listen`.
pub fn listen(args: ListenArgs) -> Result<(), Error> {
    let bind = parse_addr(&args.bind)?;
    let mut link = Link::bind_udp(
        bind,
        Conversation::new(&args.legacy, None, Config::default())?,
    )?;
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
                Shown::Message { from, text } => {
                    received += 1;
                    let who = from.map_or_else(|| "?".to_owned(), |a| a.to_string());
                    out.line(&format!("{who}: {text}"));
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
            let Conversation::Duet(s) = &link.protocol else {
                break;
            };
            // Stay until the sender says goodbye or has been quiet for a while, so a lost
            // acknowledgement of the last message is answered when it is retransmitted.
            let now = Instant::now();
            let heard = s.stats().datagrams_in;
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
        && let Conversation::Duet(s) = &link.protocol
    {
        let st = s.stats();
        eprintln!(
            "duet: {} messages; rejected {} malformed, {} oversized, {} foreign, {} stale datagrams; {} duplicates",
            st.messages_in, st.malformed, st.oversized, st.foreign, st.stale, st.duplicates
        );
    }
    Ok(())
}
