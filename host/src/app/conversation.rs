//! The conversation: duet's sealed session or legacy plain datagrams behind one
//! [`Protocol`], so every mode runs the same [`Link`](crate::transport::Link); what it has
//! to show comes out as owned [`Shown`] events.

use std::net::SocketAddr;

use duet_core::driver::Protocol;
use duet_core::legacy::{Plain, PlainEvent};
use duet_core::secure::{PublicKey, Secure, SecureConfig, StaticKeys};
use duet_core::session::{self, Config, Event, MessageId};
use duet_core::text::{self, Encoding};
use duet_core::time::Instant;
use duet_core::{MAX_DATAGRAM, Transmit};

use super::Error;
use super::contacts::{Contacts, Target};
use super::display;
use super::keys::PeerKey;
use crate::platform;

/// duet's port: where a paired peer with no known address is looked for.
pub const DUET_PORT: u16 = 7789;

/// How legacy mode writes text unless told: UTF-8, but GBK on Windows, where the plain UDP
/// chat programs duet talks to in legacy mode (and a Chinese Windows console) use the
/// system's ANSI code page, GBK.
pub const LEGACY_SEND_DEFAULT: Encoding = if cfg!(windows) {
    Encoding::Gbk
} else {
    Encoding::Utf8
};

/// Legacy mode's options (`--legacy`, `--encoding`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LegacyOptions {
    /// Plain datagrams instead of duet's session.
    pub legacy: bool,
    /// The text encoding: utf-8, gbk or auto.
    pub encoding: Option<Encoding>,
}

impl LegacyOptions {
    /// How text is written: auto means [`LEGACY_SEND_DEFAULT`].
    pub fn send_encoding(&self) -> Encoding {
        match self.encoding {
            Some(Encoding::Auto) | None => LEGACY_SEND_DEFAULT,
            Some(e) => e,
        }
    }

    /// How text is read: auto unless one was given.
    pub fn read_encoding(&self) -> Encoding {
        self.encoding.unwrap_or(Encoding::Auto)
    }
}

/// 32 fresh random bytes to seed a secure session's generator.
fn new_seed() -> Result<[u8; 32], Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| Error::Other(format!("no randomness from the system: {e}")))?;
    Ok(seed)
}

/// The wall clock in microseconds since the Unix epoch, unless it reads before 1970.
fn unix_micros() -> Option<u64> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
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
pub enum Shown {
    /// A message from the peer.
    Message {
        /// Where it came from.
        from: Option<SocketAddr>,
        /// The paired peer's name.
        who: Option<String>,
        /// The text as shown (control characters escaped).
        text: String,
        /// For duet messages: who sent it, its id and its exact text, to store.
        stored: Option<(PeerKey, u64, String)>,
    },
    /// The peer acknowledged one of ours.
    Delivered(MessageId),
    /// One of ours will not be delivered (this time).
    Failed(MessageId, session::FailReason),
    /// The peer is reachable, at this address.
    PeerUp(SocketAddr),
    /// The peer stopped answering or left.
    PeerDown,
    /// A legacy datagram longer than duet reads.
    Oversized {
        /// Its sender.
        from: SocketAddr,
    },
}

impl Conversation {
    /// Legacy datagrams with `peer`.
    pub fn legacy(legacy: &LegacyOptions, peer: Option<SocketAddr>) -> Self {
        Conversation::Legacy(Box::new(Plain::new(peer, legacy.send_encoding())))
    }

    /// The sealed duet session: with `target`, talk to that peer only; without, accept any
    /// paired peer.
    pub fn duet(
        contacts: &Contacts,
        target: Option<&Target>,
        config: Config,
    ) -> Result<Self, Error> {
        let keys = StaticKeys::from_secret(contacts.identity.secret_bytes());
        let allowed = match target {
            Some(t) => vec![t.key.0],
            None => contacts.allowed(),
        };
        let peer = target.and_then(|t| Some((t.key.0, t.addr?)));
        let config = SecureConfig {
            // The application stores each turn's messages in one transaction and confirms
            // them then (app::talk): never acknowledged before they are on disk.
            session: Config {
                confirm_receipt: true,
                ..config
            },
            ..SecureConfig::default()
        };
        let mut secure = Secure::new(Instant::now(), config, keys, &allowed, peer, new_seed()?);
        // Discovery probes carry the minute, so recorded ones go stale; initiations carry the
        // microsecond, so recorded ones are refused (docs/SECURITY.md).
        if let Some(micros) = unix_micros() {
            secure.set_unix_time(Instant::now(), micros);
        }
        Ok(Conversation::Duet {
            secure: Box::new(secure),
            names: contacts.names_by_key(),
        })
    }

    /// Mix fresh entropy from the system into the session's generator, and read the wall
    /// clock again (initiation timestamps follow it; the core keeps them growing even if it
    /// was set back). Legacy mode has neither.
    pub fn refresh(&mut self, now: Instant) -> Result<(), Error> {
        if let Conversation::Duet { secure, .. } = self {
            secure.reseed(new_seed()?);
            if let Some(micros) = unix_micros() {
                secure.set_unix_time(now, micros);
            }
        }
        Ok(())
    }

    /// The next event to show, owned; `read_encoding` decodes legacy datagrams. A binary
    /// message (an application protocol over the session) goes to `data` with the key of the
    /// peer it came from, borrowed: a file's chunks are never copied into owned events.
    pub fn next_shown(
        &mut self,
        read_encoding: Encoding,
        data: &mut dyn FnMut(Option<PeerKey>, &[u8]),
    ) -> Option<Shown> {
        match self {
            Conversation::Duet { secure: s, names } => loop {
                let from = s.peer_addr();
                let key = s.peer_key().map(PeerKey);
                let mut shown = match s.poll_event()? {
                    Event::Message(text) => Shown::Message {
                        from,
                        who: key
                            .and_then(|k| names.iter().find(|(n, _)| *n == k.0))
                            .map(|(_, name)| name.clone()),
                        text: display::escaped(text),
                        stored: key.map(|k| (k, 0, text.to_owned())),
                    },
                    Event::Data(bytes) => {
                        data(key, bytes);
                        continue;
                    }
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
                return Some(shown);
            },
            Conversation::Legacy(p) => Some(match p.poll_event()? {
                PlainEvent::Datagram { from, bytes } => Shown::Message {
                    from: Some(from),
                    who: None,
                    text: display::legacy_text(bytes, read_encoding).0,
                    stored: None,
                },
                PlainEvent::Oversized { from } => Shown::Oversized { from },
            }),
        }
    }

    /// Look for `target` on the LAN: PROBEs to every interface's broadcast address on
    /// duet's port (only `bind`'s interface when it is a specific address).
    pub fn discover(&mut self, target: &Target, bind: SocketAddr) {
        if let Conversation::Duet { secure: s, .. } = self {
            let targets: Vec<SocketAddr> = platform::ifaces::broadcast_addresses(bind.ip())
                .into_iter()
                .map(|ip| SocketAddr::new(ip, DUET_PORT))
                .collect();
            s.discover(Instant::now(), target.key.0, &targets);
        }
    }

    /// The paired name of `key`, if it is a paired peer's (duet mode).
    pub fn name_of(&self, key: &PeerKey) -> Option<String> {
        match self {
            Conversation::Duet { names, .. } => names
                .iter()
                .find(|(k, _)| *k == key.0)
                .map(|(_, name)| name.clone()),
            Conversation::Legacy(_) => None,
        }
    }

    /// Whether the peer answers (legacy datagrams: always, there is no way to know).
    pub fn is_peer_up(&self) -> bool {
        match self {
            Conversation::Duet { secure: s, .. } => s.session().is_peer_up(),
            Conversation::Legacy(_) => true,
        }
    }

    /// Authenticated datagrams heard from the peer so far (legacy: none are counted): when
    /// the number stops growing, the peer stopped answering.
    pub fn datagrams_heard(&self) -> u32 {
        match self {
            Conversation::Duet { secure: s, .. } => s.session_stats().datagrams_in,
            Conversation::Legacy(_) => 0,
        }
    }

    /// Where the peer is, if known.
    pub fn peer(&self) -> Option<SocketAddr> {
        match self {
            Conversation::Duet { secure: s, .. } => s.peer_addr(),
            Conversation::Legacy(p) => p.peer(),
        }
    }

    /// Talk to `peer` (with its key, for duet) from now on.
    pub fn set_peer(&mut self, peer: SocketAddr, key: Option<PublicKey>) {
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
    pub fn has_room(&self) -> bool {
        match self {
            Conversation::Duet { secure: s, .. } => s.session().has_room_for_any(),
            Conversation::Legacy(p) => p.queued() == 0,
        }
    }

    /// Messages queued or in flight.
    pub fn in_flight(&self) -> usize {
        match self {
            Conversation::Duet { secure: s, .. } => s.session().pending(),
            Conversation::Legacy(p) => p.queued(),
        }
    }
}

/// Cut text into messages: one if it fits, else several, each as many whole parts as one
/// message holds (greedy splitting is deterministic, so each piece splits the same way again).
pub fn messages_of(text: &str, legacy: bool) -> Vec<String> {
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
