//! IP Messenger mode: `chat`/`send`/`listen --ipmsg` and `duet peers --ipmsg`, to talk with
//! IP Messenger, FeiQ (飞秋) and iptux users on the LAN.
//!
//! The protocol is the core's [`Ipmsg`], run over the same [`Link`] (the core's one driver
//! plus a poll(2) wait) as every other mode. This module adds only what a host has: a UDP
//! socket allowed to broadcast ([`LanStack`]), the interfaces' broadcast addresses, the
//! login and host names, the clock that seeds packet numbers, and the terminal.
//!
//! IP Messenger is plaintext: every mode says so before anything is sent.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IsTerminal};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use duet_core::ipmsg::{Ipmsg, IpmsgConfig, IpmsgEvent, IpmsgSendError, Peer, Profile};
use duet_core::session::MessageId;
use duet_core::text::{self, Encoding};
use duet_core::time::{Duration, Instant};
use duet_core::wire::ipmsg::PORT;

use super::input::{Input, InputPipe};
use super::ui::{self, Output};
use super::{ChatOptions, ListenOptions, PeersOptions, SendOptions};
use crate::app::Error;
use crate::platform::ifaces::{broadcast_addresses, host_name, local_addresses, login_name};
use crate::platform::terminal::TerminalRestore;
use crate::platform::wait::WaitHandle;
use crate::transport::broadcast::LanStack;
use crate::transport::{self, Link};

/// `--bind`'s default in `chat` and `listen` (cli.rs): with `--ipmsg` it means port 2425.
pub const CHAT_DEFAULT_BIND: &str = "0.0.0.0:7789";
/// `--bind`'s default in `send`: with `--ipmsg`, port 2425 too (real clients answer there
/// whatever port a packet came from).
pub const SEND_DEFAULT_BIND: &str = "0.0.0.0:0";

/// How long `send` waits for a peer given by address to introduce itself (to learn its
/// encoding) before writing to it in UTF-8.
const INTRODUCTION: Duration = Duration::from_secs(2);
/// How long `chat --peer NAME` holds typed lines for NAME to answer on the LAN.
const NAMED_PEER_WAIT: Duration = Duration::from_secs(10);
/// How long `listen --count` stays after its last message, to confirm a retransmission
/// whose first RECVMSG was lost.
const LINGER: Duration = Duration::from_millis(1500);
/// Polls after `close` at most, to get BR_EXIT out.
const LEAVE_POLLS: usize = 8;

const PLAINTEXT: &str = "PLAINTEXT: anyone on the LAN can read IP Messenger messages \
                         (duet's encryption does not exist here)";

/// The first packet number: the Unix time in seconds, as IP Messenger does, so a restart
/// numbers above the last run.
fn first_packet_no() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

pub(crate) fn bind_addr(text: &str, default: &str) -> Result<SocketAddr, Error> {
    if text == default {
        return Ok(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), PORT));
    }
    Ok(transport::parse_addr(text)?)
}

/// The encoding's name for people.
fn encoding_name(e: Encoding) -> &'static str {
    match e {
        Encoding::Auto => "encoding not known yet",
        e => e.name(),
    }
}

/// An address as IPMsg users know it: the IP alone when it is on the usual port.
fn short_addr(addr: SocketAddr) -> String {
    if addr.port() == PORT {
        addr.ip().to_canonical().to_string()
    } else {
        addr.to_string()
    }
}

/// One line describing a peer.
pub fn peer_line(p: &Peer) -> String {
    let mut line = ui::escaped(p.name());
    if !p.group.is_empty() {
        line.push_str(&format!(" [{}]", ui::escaped(&p.group)));
    }
    line.push_str(&format!(
        " {}@{} at {} ({}, {}{})",
        ui::escaped(&p.user),
        ui::escaped(&p.host),
        short_addr(p.addr),
        p.client.name(),
        encoding_name(p.encoding),
        if p.absent { ", away" } else { "" }
    ));
    line
}

/// Why a name picks no one.
#[derive(Debug, PartialEq, Eq)]
enum NotFound {
    Nobody,
    Ambiguous(String),
}

/// The peer `text` names: an address (`IP` or `IP:PORT`), a number from `/peers`, or a
/// nickname, login name or host name (exact first, then ignoring case).
fn find(peers: &[Peer], text: &str) -> Result<SocketAddr, NotFound> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        let known = peers.iter().find(|p| p.addr.ip() == ip);
        return Ok(known.map_or(SocketAddr::new(ip, PORT), |p| p.addr));
    }
    if let Ok(n) = text.parse::<usize>()
        && let Some(p) = n.checked_sub(1).and_then(|i| peers.get(i))
    {
        return Ok(p.addr);
    }
    let names = |p: &Peer| [p.nick.to_string(), p.user.to_string(), p.host.to_string()];
    let exact: Vec<&Peer> = peers
        .iter()
        .filter(|p| names(p).iter().any(|n| n == text))
        .collect();
    let folded: Vec<&Peer> = peers
        .iter()
        .filter(|p| {
            names(p)
                .iter()
                .any(|n| n.to_lowercase() == text.to_lowercase())
        })
        .collect();
    let hits = if exact.is_empty() { folded } else { exact };
    match hits.as_slice() {
        [] => Err(NotFound::Nobody),
        [one] => Ok(one.addr),
        many => Err(NotFound::Ambiguous(
            many.iter()
                .map(|p| format!("{} at {}", ui::escaped(p.name()), short_addr(p.addr)))
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// Something to show, owned (the core's events borrow it).
#[derive(Debug)]
enum Shown {
    Message {
        from: SocketAddr,
        name: String,
        text: String,
        note: Option<&'static str>,
    },
    Delivered(MessageId, SocketAddr),
    Failed(MessageId, SocketAddr, u8),
    Joined(String),
    Left(SocketAddr, String),
}

fn next_shown(ipmsg: &mut Ipmsg) -> Option<Shown> {
    Some(match ipmsg.poll_event()? {
        IpmsgEvent::Message(m) => Shown::Message {
            from: m.from,
            name: ui::escaped(m.name),
            text: ui::legacy_text(m.text, m.encoding).0,
            note: if m.encrypted {
                Some("encrypted with IP Messenger's own encryption, which duet does not read")
            } else if m.files {
                Some("files offered: duet does not receive files")
            } else if m.auto_reply {
                Some("automatic answer")
            } else {
                None
            },
        },
        IpmsgEvent::Delivered { id, to } => Shown::Delivered(id, to),
        IpmsgEvent::Failed { id, to, sends } => Shown::Failed(id, to, sends),
        IpmsgEvent::PeerJoined(p) => Shown::Joined(peer_line(p)),
        IpmsgEvent::PeerLeft(p) => Shown::Left(p.addr, ui::escaped(p.name())),
    })
}

/// The name of the peer at `addr`, or its address.
fn who(ipmsg: &Ipmsg, addr: SocketAddr) -> String {
    match ipmsg.peer(addr) {
        Some(p) => format!("{} ({})", ui::escaped(p.name()), short_addr(addr)),
        None => short_addr(addr),
    }
}

/// The IP Messenger protocol on one socket.
struct Lan {
    link: Link<LanStack, Ipmsg>,
    broadcasts: Vec<IpAddr>,
}

impl Lan {
    /// Bind `bind` and announce `nick` on the LAN.
    fn open(bind: SocketAddr, nick: &str, group: Option<&str>) -> Result<Lan, Error> {
        let broadcasts = broadcast_addresses(bind.ip());
        let (user, host) = (login_name(), host_name());
        let profile = Profile {
            user: &user,
            host: &host,
            nick,
            group: group.unwrap_or(""),
        };
        let ipmsg = Ipmsg::new(
            IpmsgConfig::default(),
            profile,
            &broadcasts,
            first_packet_no(),
        );
        let link = Link::bind(LanStack::new(bind.ip()), bind, ipmsg).inspect_err(|e| {
            if let transport::Error::Bind { source, .. } = e
                && source.kind() == io::ErrorKind::AddrInUse
                && bind.port() == PORT
            {
                eprintln!(
                    "duet: IP Messenger, FeiQ or iptux running on this computer holds port \
                     {PORT}: quit it first (IP Messenger clients only talk to port {PORT})"
                );
            }
        })?;
        let mut lan = Lan { link, broadcasts };
        let port = lan.link.local_addr().port();
        lan.ipmsg().set_own_addresses(&local_addresses(), port);
        Ok(lan)
    }

    fn ipmsg(&mut self) -> &mut Ipmsg {
        &mut self.link.protocol
    }

    /// Where the announcement went, for the banner, and a warning when broadcasts cannot
    /// reach us.
    fn announced(&self) -> String {
        let mut text = self
            .broadcasts
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if !self.link.local_addr().ip().is_unspecified() {
            text.push_str(
                " (bound to one address: others' broadcasts do not reach duet, so it sees \
                 only those who answer; --bind 0.0.0.0:2425 sees everyone)",
            );
        }
        text
    }

    /// Run the driver once. A send the network refuses at once (an interface without a
    /// route, say) is shown and survived: the protocol retries what matters.
    fn poll(&mut self, out: &mut Output) -> Result<Option<Instant>, Error> {
        match self.link.poll() {
            Ok(deadline) => Ok(deadline),
            Err(e @ transport::Error::Unreachable { .. }) => {
                out.line(&format!("* {e}; going on"));
                Ok(Some(Instant::now() + Duration::from_millis(100)))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn wait(
        &self,
        deadline: Option<Instant>,
        input: Option<WaitHandle<'_>>,
        limit: Option<Instant>,
    ) -> Result<bool, Error> {
        Ok(self.link.wait(deadline, input, limit)?.input)
    }

    /// Broadcast BR_EXIT and get it out.
    fn leave(&mut self, out: &mut Output) -> Result<(), Error> {
        self.ipmsg().close();
        for _ in 0..LEAVE_POLLS {
            self.poll(out)?;
            if !self.link.protocol.has_pending_transmit() {
                break;
            }
        }
        Ok(())
    }
}

/// `duet peers --ipmsg`: announce, collect answers for `--wait` seconds, list, leave.
pub fn peers(args: PeersOptions) -> Result<(), Error> {
    if !args.ipmsg {
        return Err(Error::Other(
            "duet peers lists who is on the LAN with IP Messenger's broadcast: add --ipmsg \
             (duet never announces you on the LAN unless you ask; IP Messenger is plaintext)"
                .into(),
        ));
    }
    let bind = bind_addr(&args.bind, "")?;
    let mut lan = Lan::open(bind, &args.name, args.group.as_deref())?;
    let mut out = Output::Lines;
    eprintln!(
        "duet: asking the LAN with IP Messenger's broadcast on {} for {} s ({PLAINTEXT})",
        lan.announced(),
        args.wait
    );
    let until = Instant::now() + Duration::from_secs(args.wait);
    loop {
        let deadline = lan.poll(&mut out)?;
        while next_shown(lan.ipmsg()).is_some() {}
        if Instant::now() >= until {
            break;
        }
        lan.wait(deadline, None, Some(until))?;
    }
    let lines: Vec<String> = lan.link.protocol.peers().iter().map(peer_line).collect();
    lan.leave(&mut out)?;
    for line in &lines {
        ui::print(line);
    }
    eprintln!("duet: {} IP Messenger user(s) on the LAN", lines.len());
    Ok(())
}

/// Cut text into messages that each fit one packet.
fn pieces(text: &str, max: usize) -> Vec<String> {
    text::split(text, max).map(str::to_owned).collect()
}

/// `duet send --ipmsg --to NAME|IP TEXT`.
pub fn send(args: SendOptions) -> Result<(), Error> {
    let text = args.text.join(" ");
    if text.is_empty() {
        return Err(Error::Other("nothing to send: the text is empty".into()));
    }
    let bind = bind_addr(&args.bind, SEND_DEFAULT_BIND)?;
    let mut lan = Lan::open(bind, &login_name(), args.ipmsg.group.as_deref())?;
    let mut out = Output::Lines;
    eprintln!(
        "duet: IP Messenger mode on {}, {PLAINTEXT}",
        lan.link.local_addr()
    );
    let started = Instant::now();
    let give_up = started + Duration::from_secs(args.timeout);
    // By address: ask it to introduce itself, to learn its encoding.
    let by_address = args.to.parse::<IpAddr>().is_ok() || args.to.parse::<SocketAddr>().is_ok();
    if let Ok(addr) = find(&[], &args.to)
        && by_address
    {
        lan.ipmsg().probe(addr);
    }
    let to = loop {
        let deadline = lan.poll(&mut out)?;
        while next_shown(lan.ipmsg()).is_some() {}
        let now = Instant::now();
        match find(lan.link.protocol.peers(), &args.to) {
            Ok(addr) if !by_address || lan.link.protocol.peer(addr).is_some() => break addr,
            Ok(addr) if now >= (started + INTRODUCTION).min(give_up) => break addr,
            Err(NotFound::Ambiguous(who)) => {
                lan.leave(&mut out)?;
                return Err(Error::Other(format!(
                    "'{}' names several people on the LAN: {who}; give an address",
                    args.to
                )));
            }
            _ if now >= give_up => {
                lan.leave(&mut out)?;
                return Err(Error::Other(format!(
                    "no one called '{}' answered on the LAN within {} s (`duet peers --ipmsg` \
                     lists who is there)",
                    args.to, args.timeout
                )));
            }
            _ => {}
        }
        let limit = if by_address {
            give_up.min(started + INTRODUCTION)
        } else {
            give_up
        };
        lan.wait(deadline, None, Some(limit))?;
    };
    let parts = pieces(&text, lan.link.protocol.max_text_len());
    if args.no_split && parts.len() > 1 {
        lan.leave(&mut out)?;
        return Err(Error::TooLong {
            len: text.len(),
            max: lan.link.protocol.max_text_len(),
        });
    }
    let total = parts.len();
    let mut queue: VecDeque<String> = parts.into();
    let (mut delivered, mut failed) = (0, 0);
    // Bounded by the core: each message is confirmed or fails after its retries.
    while delivered + failed < total {
        while lan.link.protocol.has_room()
            && let Some(piece) = queue.front()
        {
            match lan.ipmsg().send_text(Instant::now(), to, piece) {
                Ok(q) => {
                    if q.unmappable > 0 {
                        out.line(&format!(
                            "* {} character(s) cannot be written in {} and were sent as '?'",
                            q.unmappable,
                            q.encoding.name()
                        ));
                    }
                    queue.pop_front();
                }
                Err(IpmsgSendError::OutboxFull) => break,
                Err(e) => {
                    lan.leave(&mut out)?;
                    return Err(Error::Other(e.to_string()));
                }
            }
        }
        let deadline = lan.poll(&mut out)?;
        while let Some(shown) = next_shown(lan.ipmsg()) {
            match shown {
                Shown::Delivered(..) => delivered += 1,
                Shown::Failed(_, to, sends) => {
                    failed += 1;
                    eprintln!(
                        "duet: {} did not confirm after {sends} tries: is IP Messenger still \
                         running there?",
                        who(&lan.link.protocol, to)
                    );
                }
                _ => {}
            }
        }
        if delivered + failed < total {
            lan.wait(deadline, None, None)?;
        }
    }
    let name = who(&lan.link.protocol, to);
    lan.leave(&mut out)?;
    if failed > 0 {
        return Err(Error::NotDelivered { failed, total });
    }
    out.line(&format!(
        "* delivered to {name}{}",
        if total > 1 {
            format!(" as {total} messages")
        } else {
            String::new()
        }
    ));
    Ok(())
}

/// `duet listen --ipmsg`: show every message, confirm it, and who comes and goes.
pub fn listen(args: ListenOptions) -> Result<(), Error> {
    let bind = bind_addr(&args.bind, CHAT_DEFAULT_BIND)?;
    let mut lan = Lan::open(bind, &login_name(), args.ipmsg.group.as_deref())?;
    let mut out = Output::Lines;
    out.line(&format!(
        "* listening on {} (IP Messenger); {PLAINTEXT}; announced on {}",
        lan.link.local_addr(),
        lan.announced()
    ));
    let mut received = 0u64;
    let mut done_at: Option<Instant> = None;
    loop {
        let deadline = lan.poll(&mut out)?;
        while let Some(shown) = next_shown(lan.ipmsg()) {
            show(&mut out, &shown);
            if matches!(shown, Shown::Message { .. }) {
                received += 1;
            }
        }
        if done_at.is_none() && args.count.is_some_and(|n| received >= n) {
            done_at = Some(Instant::now() + LINGER);
        }
        if done_at.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        lan.wait(deadline, None, done_at)?;
    }
    lan.leave(&mut out)?;
    if args.verbose {
        eprintln!("duet: {:?}", lan.link.protocol.stats());
    }
    Ok(())
}

/// Print one event the way every mode shows it.
fn show(out: &mut Output, shown: &Shown) {
    match shown {
        Shown::Message {
            from,
            name,
            text,
            note,
        } => match note {
            Some(note) => out.line(&format!("{name}@{from}: {text} ({note})")),
            None => out.line(&format!("{name}@{from}: {text}")),
        },
        Shown::Joined(line) => out.line(&format!("* {line} is on the LAN")),
        Shown::Left(addr, name) => {
            out.line(&format!("* {name} ({}) left the LAN", short_addr(*addr)));
        }
        Shown::Delivered(..) | Shown::Failed(..) => {}
    }
}

const HELP: &str = "commands: /peers (who is on the LAN), /to NAME|NUMBER|IP (talk to them), \
                    /nick NAME, /status, /quit, /help; start a message with // to send a line \
                    that begins with /";

/// The chat's state besides the protocol.
struct Chat {
    prompt: Arc<Mutex<String>>,
    /// Whom typed messages go to.
    to: Option<SocketAddr>,
    /// A name given with --peer that is not on the LAN yet, and until when to wait for it.
    wanted: Option<(String, Instant)>,
    /// Typed messages waiting for room, or for `wanted` to appear.
    pending: VecDeque<String>,
    /// A quote of each message in flight.
    sent: HashMap<MessageId, String>,
    delivered: usize,
    failed: usize,
    total: usize,
    quitting: bool,
    interactive: bool,
}

/// `duet chat --ipmsg [--peer NAME]`.
pub fn chat(args: ChatOptions) -> Result<(), Error> {
    let bind = bind_addr(&args.bind, CHAT_DEFAULT_BIND)?;
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let _restore = interactive.then(TerminalRestore::save);
    let prompt = Arc::new(Mutex::new(format!("{}> ", args.name)));
    let mut lan = Lan::open(bind, &args.name, args.ipmsg.group.as_deref())?;
    let (mut out, mut input) = if interactive {
        let editor =
            rustyline::DefaultEditor::new().map_err(|e| Error::Other(format!("terminal: {e}")))?;
        let mut editor = editor;
        let printer = editor
            .create_external_printer()
            .map_err(|e| Error::Other(format!("terminal: {e}")))?;
        let input = InputPipe::terminal(editor, Arc::clone(&prompt))?;
        (Output::Terminal(Box::new(printer)), input)
    } else {
        (Output::Lines, InputPipe::lines()?)
    };
    out.line(&format!(
        "* listening on {} (IP Messenger) as {}; {PLAINTEXT}; announced on {}",
        lan.link.local_addr(),
        ui::escaped(&args.name),
        lan.announced()
    ));
    let mut chat = Chat {
        prompt,
        to: None,
        wanted: None,
        pending: VecDeque::new(),
        sent: HashMap::new(),
        delivered: 0,
        failed: 0,
        total: 0,
        quitting: false,
        interactive,
    };
    match &args.peer {
        Some(name) => {
            // Whoever it is answers our announcement within moments; typed lines wait.
            let wait = match find(&[], name) {
                Ok(addr) => {
                    lan.ipmsg().probe(addr);
                    INTRODUCTION
                }
                Err(_) => NAMED_PEER_WAIT,
            };
            chat.wanted = Some((name.clone(), Instant::now() + wait));
            out.line(&format!(
                "* waiting for {} to answer on the LAN; /help lists commands",
                ui::escaped(name)
            ));
        }
        None => out.line(
            "* no one picked yet: /peers lists who is on the LAN, /to NAME picks one \
             (whoever writes first is picked otherwise)",
        ),
    }
    chat.run(&mut lan, &mut out, &mut input)
}

impl Chat {
    fn run(&mut self, lan: &mut Lan, out: &mut Output, input: &mut InputPipe) -> Result<(), Error> {
        loop {
            let deadline = lan.poll(out)?;
            self.show_events(lan, out);
            self.resolve(lan, out);
            let busy = !self.pending.is_empty() || lan.link.protocol.in_flight() > 0;
            if self.quitting && !busy {
                break;
            }
            let queued = self.queue_pending(lan, out);
            let mut took_input = false;
            while self.pending.is_empty() && lan.link.protocol.has_room() && !self.quitting {
                let Some(item) = input.try_next() else { break };
                took_input = true;
                self.handle_input(item, lan, out);
                self.resolve(lan, out);
                self.queue_pending(lan, out);
            }
            if queued || took_input {
                continue;
            }
            let want_input =
                self.pending.is_empty() && lan.link.protocol.has_room() && !self.quitting;
            let limit = self.wanted.as_ref().map(|(_, until)| *until);
            lan.wait(deadline, want_input.then(|| input.fd()).flatten(), limit)?;
        }
        lan.leave(out)?;
        if self.failed > 0 && !self.interactive {
            return Err(Error::NotDelivered {
                failed: self.failed,
                total: self.total,
            });
        }
        Ok(())
    }

    fn show_events(&mut self, lan: &mut Lan, out: &mut Output) {
        while let Some(shown) = next_shown(lan.ipmsg()) {
            match &shown {
                Shown::Message { from, .. } if self.to.is_none() && self.wanted.is_none() => {
                    show(out, &shown);
                    self.to = Some(*from);
                    out.line(&format!(
                        "* talking to {}; /to NAME picks someone else",
                        who(&lan.link.protocol, *from)
                    ));
                }
                Shown::Delivered(id, to) => {
                    self.delivered += 1;
                    let text = self.sent.remove(id).unwrap_or_default();
                    out.line(&format!(
                        "* {id} delivered to {}: {text}",
                        who(&lan.link.protocol, *to)
                    ));
                }
                Shown::Failed(id, to, sends) => {
                    self.failed += 1;
                    let text = self.sent.remove(id).unwrap_or_default();
                    out.line(&format!(
                        "* {id} FAILED: {} did not confirm it after {sends} tries (is IP \
                         Messenger still running there?): {text}",
                        who(&lan.link.protocol, *to)
                    ));
                }
                _ => show(out, &shown),
            }
        }
    }

    /// Pick the --peer name once it is on the LAN; give up on it after a while.
    fn resolve(&mut self, lan: &mut Lan, out: &mut Output) {
        let Some((name, until)) = &self.wanted else {
            return;
        };
        let by_address = name.parse::<IpAddr>().is_ok() || name.parse::<SocketAddr>().is_ok();
        match find(lan.link.protocol.peers(), name) {
            Ok(addr) if !by_address || lan.link.protocol.peer(addr).is_some() => {
                self.to = Some(addr);
                self.wanted = None;
                out.line(&format!("* talking to {}", who(&lan.link.protocol, addr)));
            }
            Err(NotFound::Ambiguous(many)) => {
                out.line(&format!(
                    "* '{}' names several people: {many}; /to picks one",
                    ui::escaped(name)
                ));
                self.wanted = None;
            }
            found if Instant::now() >= *until => {
                match found {
                    // An address that never introduced itself: write to it anyway, in UTF-8.
                    Ok(addr) => {
                        self.to = Some(addr);
                        out.line(&format!(
                            "* talking to {} (it did not answer yet)",
                            short_addr(addr)
                        ));
                    }
                    Err(_) => {
                        out.line(&format!(
                            "* no one called '{}' answered on the LAN; /peers lists who is there",
                            ui::escaped(name)
                        ));
                        let dropped = self.pending.len();
                        self.pending.clear();
                        if dropped > 0 {
                            out.line(&format!("* {dropped} typed message(s) not sent"));
                        }
                    }
                }
                self.wanted = None;
            }
            _ => {}
        }
    }

    /// Offer typed messages to the protocol; whether any was taken.
    fn queue_pending(&mut self, lan: &mut Lan, out: &mut Output) -> bool {
        let mut took = false;
        while let Some(text) = self.pending.front() {
            if self.wanted.is_some() {
                return took;
            }
            let Some(to) = self.to else {
                out.line(&format!(
                    "* not sent (no one picked: /peers, then /to NAME): {}",
                    snippet(text)
                ));
                self.pending.pop_front();
                took = true;
                continue;
            };
            match lan.ipmsg().send_text(Instant::now(), to, text) {
                Ok(q) => {
                    if q.unmappable > 0 {
                        out.line(&format!(
                            "* {} character(s) cannot be written in {} and were sent as '?'",
                            q.unmappable,
                            q.encoding.name()
                        ));
                    }
                    self.sent.insert(q.id, snippet(text));
                    self.total += 1;
                }
                Err(IpmsgSendError::OutboxFull) => return took,
                Err(e) => out.line(&format!("* not sent ({e}): {}", snippet(text))),
            }
            self.pending.pop_front();
            took = true;
        }
        took
    }

    fn enqueue(&mut self, text: &str, lan: &Lan) {
        let max = lan.link.protocol.max_text_len();
        self.pending.extend(pieces(text, max));
    }

    fn handle_input(&mut self, input: Input, lan: &mut Lan, out: &mut Output) {
        let line = match input {
            Input::Line(line) => line,
            Input::Eof | Input::Interrupt => {
                self.quit(lan, out);
                return;
            }
        };
        if let Some(literal) = line.strip_prefix("//") {
            self.enqueue(&format!("/{literal}"), lan);
            return;
        }
        let Some(command) = line.strip_prefix('/') else {
            if !line.is_empty() {
                self.enqueue(&line, lan);
            }
            return;
        };
        let (word, rest) = command.split_once(' ').unwrap_or((command, ""));
        let rest = rest.trim();
        match word {
            "quit" | "exit" | "q" => self.quit(lan, out),
            "help" | "h" => out.line(&format!("* {HELP}")),
            "peers" => {
                let peers = lan.link.protocol.peers();
                if peers.is_empty() {
                    out.line("* no one on the LAN has answered (yet)");
                }
                for (i, p) in peers.iter().enumerate() {
                    let mark = if Some(p.addr) == self.to {
                        " <- talking to"
                    } else {
                        ""
                    };
                    out.line(&format!("* {}. {}{mark}", i + 1, peer_line(p)));
                }
            }
            "to" | "peer" if !rest.is_empty() => match find(lan.link.protocol.peers(), rest) {
                Ok(addr) => {
                    self.to = Some(addr);
                    self.wanted = None;
                    if lan.link.protocol.peer(addr).is_none() {
                        lan.ipmsg().probe(addr);
                    }
                    out.line(&format!("* talking to {}", who(&lan.link.protocol, addr)));
                }
                Err(NotFound::Nobody) => out.line(&format!(
                    "* no one called '{}' is on the LAN; /peers lists who is",
                    ui::escaped(rest)
                )),
                Err(NotFound::Ambiguous(many)) => out.line(&format!(
                    "* '{}' names several people: {many}; give the number or address",
                    ui::escaped(rest)
                )),
            },
            "to" | "peer" => out.line(
                "* usage: /peer NAME (a nickname, user or host name, a number from /peers, or an \
                 address)",
            ),
            "nick" if !rest.is_empty() => {
                lan.ipmsg().set_nick(rest);
                if let Ok(mut p) = self.prompt.lock() {
                    *p = format!("{rest}> ");
                }
                out.line(&format!("* you are now {}", ui::escaped(rest)));
            }
            "nick" => out.line(&format!(
                "* usage: /nick NAME (you are {})",
                ui::escaped(lan.link.protocol.nick())
            )),
            "status" => {
                let p = &lan.link.protocol;
                let to = self.to.map_or_else(|| "no one".to_owned(), |a| who(p, a));
                out.line(&format!(
                    "* {} on {} (IP Messenger, plaintext), talking to {to}; {} on the LAN; sent {}, \
                     delivered {}, failed {}, in flight {}; {:?}",
                    ui::escaped(p.nick()),
                    lan.link.local_addr(),
                    p.peers().len(),
                    self.total,
                    self.delivered,
                    self.failed,
                    p.in_flight(),
                    p.stats()
                ));
            }
            _ => out.line(&format!("* unknown command /{word}; {HELP}")),
        }
    }

    fn quit(&mut self, lan: &Lan, out: &mut Output) {
        if self.quitting {
            return;
        }
        self.quitting = true;
        let waiting = self.pending.len() + lan.link.protocol.in_flight();
        if waiting > 0 {
            out.line(&format!(
                "* waiting for {waiting} message(s) to be confirmed before leaving"
            ));
        }
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

#[cfg(test)]
mod test {
    use super::*;
    use duet_core::wire::ipmsg::Client;

    fn peer(addr: &str, nick: &str, user: &str, host: &str) -> Peer {
        let mut ipmsg = Ipmsg::new(
            IpmsgConfig::default(),
            Profile {
                user: "me",
                host: "here",
                nick: "me",
                group: "",
            },
            &[],
            1,
        );
        let addr: SocketAddr = addr.parse().unwrap();
        // ANSENTRY with UTF8OPT and CAPUTF8OPT: a UTF-8 nickname.
        let packet = format!("1:1:{user}:{host}:25165827:{nick}\0\0");
        duet_core::driver::Protocol::handle_datagram(
            &mut ipmsg,
            Instant::ZERO,
            addr,
            packet.as_bytes(),
        );
        ipmsg.peer(addr).unwrap().clone()
    }

    #[test]
    fn names_numbers_and_addresses_pick_a_peer() {
        let peers = [
            peer("10.0.0.1:2425", "Tux企鹅", "root", "vm"),
            peer("10.0.0.2:2425", "bob", "bob", "PC"),
            peer("10.0.0.3:2425", "Bob", "robert", "LAPTOP"),
        ];
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        assert_eq!(find(&peers, "Tux企鹅"), Ok(a("10.0.0.1:2425")));
        assert_eq!(find(&peers, "vm"), Ok(a("10.0.0.1:2425")));
        assert_eq!(find(&peers, "2"), Ok(a("10.0.0.2:2425")));
        assert_eq!(find(&peers, "10.0.0.3"), Ok(a("10.0.0.3:2425")));
        assert_eq!(find(&peers, "10.9.9.9"), Ok(a("10.9.9.9:2425")));
        assert_eq!(find(&peers, "10.0.0.3:9999"), Ok(a("10.0.0.3:9999")));
        // Exact beats case-folded; case-folded alone may be ambiguous.
        assert_eq!(find(&peers, "Bob"), Ok(a("10.0.0.3:2425")));
        assert_eq!(find(&peers, "laptop"), Ok(a("10.0.0.3:2425")));
        assert!(matches!(find(&peers, "BOB"), Err(NotFound::Ambiguous(_))));
        assert_eq!(find(&peers, "alice"), Err(NotFound::Nobody));
        assert_eq!(find(&peers, "4"), Err(NotFound::Nobody));
    }

    #[test]
    fn peer_line_shows_who_where_and_which_encoding() {
        let p = peer("10.0.0.1:2425", "Tux企鹅", "root", "vm");
        assert_eq!(p.client, Client::IpMsg);
        assert_eq!(
            peer_line(&p),
            "Tux企鹅 root@vm at 10.0.0.1 (IP Messenger, utf-8)"
        );
    }

    #[test]
    fn broadcast_addresses_are_never_empty() {
        assert!(!broadcast_addresses(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).is_empty());
        // An address no interface has: the limited broadcast, as a last resort.
        assert_eq!(
            broadcast_addresses(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 77))),
            [IpAddr::V4(Ipv4Addr::BROADCAST)]
        );
    }
}
