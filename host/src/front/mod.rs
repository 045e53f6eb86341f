//! Front-ends: what is typed in and how events look. The terminal chat and line mode
//! ([`chat`]), the chat in a browser ([`web`]), one-shot [`send`] and [`listen`],
//! [`history`], and IP Messenger mode ([`lan`]). Each takes plain options (the command line fills them) and runs the
//! application's conversation; none knows about clap or exit codes.

pub mod chat;
pub mod history;
pub mod input;
pub mod lan;
pub mod listen;
pub mod node;
pub mod send;
pub mod status;
pub mod ui;
pub mod web;

use std::net::SocketAddr;

use duet_core::secure::Secure;

use crate::app::Error;
use crate::app::conversation::LegacyOptions;
use crate::app::files::FileOptions;
use crate::app::talk::Happened;
use crate::transport::TapOptions;
use crate::transport::reach::ReachConfig;
use ui::Output;

/// IP Messenger mode's options (`--ipmsg`, `--group`).
#[derive(Clone, Debug, Default)]
pub struct IpmsgOptions {
    /// Speak IP Messenger on the LAN instead of duet.
    pub ipmsg: bool,
    /// The group shown next to the name.
    pub group: Option<String>,
}

/// Internet reach's settings as given (flags or `DUET_*` variables; `None`: not given).
#[derive(Clone, Debug, Default)]
pub struct ReachOptions {
    /// `DUET_DHT`: on or off.
    pub dht: Option<String>,
    /// `DUET_DHT_BOOTSTRAP`: comma-separated `HOST:PORT`.
    pub bootstrap: Option<String>,
    /// `DUET_STUN`: comma-separated `HOST:PORT`.
    pub stun: Option<String>,
    /// `DUET_TURN`: `USER:PASS@HOST:PORT`.
    pub turn: Option<String>,
}

impl ReachOptions {
    /// The configuration, or `None` when internet reach is off (`DUET_DHT=off` and no
    /// STUN or TURN server given).
    pub fn config(&self) -> Result<Option<ReachConfig>, Error> {
        let config = ReachConfig::from_vars(
            self.dht.as_deref(),
            self.bootstrap.as_deref(),
            self.stun.as_deref(),
            self.turn.as_deref(),
        )
        .map_err(|e| Error::Other(e.to_string()))?;
        let on = config.dht || config.turn.is_some();
        Ok(on.then_some(config))
    }
}

/// `duet chat`.
#[derive(Clone, Debug)]
pub struct ChatOptions {
    /// Local address, `ADDR:PORT`.
    pub bind: String,
    /// Who to talk to: a paired peer's name, or `HOST:PORT`.
    pub peer: Option<String>,
    /// The name shown for own messages.
    pub name: String,
    /// Legacy mode.
    pub legacy: LegacyOptions,
    /// TAP mode.
    pub tap: TapOptions,
    /// IP Messenger mode.
    pub ipmsg: IpmsgOptions,
    /// Internet reach.
    pub reach: ReachOptions,
    /// Where received files go.
    pub files: FileOptions,
}

/// `duet web`.
#[derive(Clone, Debug)]
pub struct WebOptions {
    /// Who to talk to: a paired peer's name, or `HOST:PORT`.
    pub peer: Option<String>,
    /// Local address for the peer (UDP), `ADDR:PORT`.
    pub bind: String,
    /// Where the page is served (HTTP), `ADDR:PORT`.
    pub http: String,
    /// Open the default browser on the page.
    pub open: bool,
    /// Internet reach.
    pub reach: ReachOptions,
    /// Where received files go.
    pub files: FileOptions,
}

/// `duet send`.
#[derive(Clone, Debug)]
pub struct SendOptions {
    /// Who to send to.
    pub to: String,
    /// Local address, `ADDR:PORT`.
    pub bind: String,
    /// Seconds without an acknowledgement before giving up.
    pub timeout: u64,
    /// Refuse text longer than one message.
    pub no_split: bool,
    /// Legacy mode.
    pub legacy: LegacyOptions,
    /// TAP mode.
    pub tap: TapOptions,
    /// IP Messenger mode.
    pub ipmsg: IpmsgOptions,
    /// The words of the text.
    pub text: Vec<String>,
    /// A file to send instead of text.
    pub file: Option<std::path::PathBuf>,
    /// Internet reach.
    pub reach: ReachOptions,
}

/// `duet listen`.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// Local address, `ADDR:PORT`.
    pub bind: String,
    /// Exit after this many messages.
    pub count: Option<u64>,
    /// Print counters of rejected datagrams when exiting.
    pub verbose: bool,
    /// Legacy mode.
    pub legacy: LegacyOptions,
    /// TAP mode.
    pub tap: TapOptions,
    /// IP Messenger mode.
    pub ipmsg: IpmsgOptions,
    /// Where received files go.
    pub files: FileOptions,
}

/// `duet history`.
#[derive(Clone, Debug)]
pub struct HistoryOptions {
    /// Only messages with this paired peer.
    pub peer: Option<String>,
    /// Only messages containing this text.
    pub search: Option<String>,
    /// At most this many, the latest.
    pub limit: u64,
    /// Check the file's integrity instead.
    pub check: bool,
}

/// `duet peers --ipmsg`.
#[derive(Clone, Debug)]
pub struct PeersOptions {
    /// Ask the LAN with IP Messenger's broadcast.
    pub ipmsg: bool,
    /// Seconds to wait for answers.
    pub wait: u64,
    /// Local address, `ADDR:PORT`.
    pub bind: String,
    /// The name shown meanwhile.
    pub name: String,
    /// The group shown next to it.
    pub group: Option<String>,
}

/// The first line of a mode: where it listens and what it promises.
pub(crate) fn banner(out: &mut Output, legacy: &LegacyOptions, local: SocketAddr) {
    if legacy.legacy {
        out.line(&format!(
            "* listening on {local}; legacy mode: plain UDP datagrams, UNACKNOWLEDGED and UNENCRYPTED \
             (sending {}, reading {})",
            legacy.send_encoding().name(),
            legacy.read_encoding().name()
        ));
    } else {
        out.line(&format!(
            "* listening on {local} (duet: end-to-end encrypted, every message acknowledged)"
        ));
    }
}

/// How a sender is shown: its paired name and address, or what is known of them.
pub(crate) fn sender(who: Option<String>, from: Option<SocketAddr>) -> String {
    match (who, from) {
        (Some(name), Some(addr)) => format!("{name}@{addr}"),
        (Some(name), None) => name,
        (None, Some(addr)) => addr.to_string(),
        (None, None) => "?".to_owned(),
    }
}

/// [`sender`], made again only when it changes: a burst of messages comes from one sender,
/// and formatting its address for each of them was a few per cent of a receiver's CPU.
#[derive(Default)]
pub(crate) struct SenderLabel {
    /// The sender the label is of, once there is one.
    of: Option<(Option<String>, Option<SocketAddr>)>,
    label: String,
}

impl SenderLabel {
    /// The label of `who` at `from`.
    pub(crate) fn of(&mut self, who: Option<String>, from: Option<SocketAddr>) -> &str {
        let same = self
            .of
            .as_ref()
            .is_some_and(|(w, f)| *w == who && *f == from);
        if !same {
            self.label = sender(who.clone(), from);
            self.of = Some((who, from));
        }
        &self.label
    }
}

/// The one line a file event shows as, for the chat, `listen` and `send`: `from` is the
/// peer's address, `None` for events that are not about a file.
pub(crate) fn file_line(happened: &Happened, from: Option<SocketAddr>) -> Option<String> {
    let esc = ui::escaped;
    Some(match happened {
        Happened::FileIncoming {
            who,
            name,
            size,
            resumed_at,
        } => {
            let mut line = format!(
                "* receiving file {} ({size} bytes) from {}",
                esc(name),
                sender(who.clone(), from)
            );
            if *resumed_at > 0 {
                line.push_str(&format!(
                    ", continuing after the {resumed_at} bytes already here"
                ));
            }
            line
        }
        Happened::FileReceived {
            who,
            name,
            size,
            path,
            already,
        } => format!(
            "{}: file {} ({size} bytes) saved to {}{}",
            sender(who.clone(), from),
            esc(name),
            esc(&path.display().to_string()),
            if *already { " (already there)" } else { "" }
        ),
        Happened::FileAccepted {
            name, size, from, ..
        } => {
            if *from == 0 {
                format!("* sending file {} ({size} bytes)", esc(name))
            } else {
                format!(
                    "* sending file {} ({size} bytes), continuing after the {from} bytes the peer has",
                    esc(name)
                )
            }
        }
        Happened::FileSent {
            name,
            size,
            already,
            ..
        } => format!(
            "* file {} ({size} bytes) {}",
            esc(name),
            if *already {
                "was saved by the peer already"
            } else {
                "saved by the peer"
            }
        ),
        Happened::FileProgress {
            transfer,
            name,
            done,
            size,
        } => format!(
            "* {} {}: {done} of {size} bytes ({}%)",
            if transfer.is_some() {
                "sending"
            } else {
                "receiving"
            },
            esc(name),
            done.saturating_mul(100) / (*size).max(1)
        ),
        Happened::FileFailed {
            transfer,
            name,
            why,
            ..
        } => match transfer {
            Some(_) => format!("* file {} NOT sent: {}", esc(name), esc(why)),
            None => format!("* file {} from the peer NOT saved: {}", esc(name), esc(why)),
        },
        _ => return None,
    })
}

/// What a secure session received and refused, for `/status` and `listen -v`.
pub(crate) fn counters(s: &Secure) -> String {
    let st = s.session_stats();
    let sec = s.stats();
    format!(
        "received {} messages; rejected {} unauthenticated, {} replayed, {} from unpaired keys, \
         {} while busy, {} malformed inside; {} duplicates, {} retransmits; {} handshakes; \
         discovery probes: {} answered, {} refused; handshakes dropped: {} with a wrong mac1, \
         {} stale initiations, {} rate-limited",
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
        sec.probes_refused,
        sec.rejected_mac,
        sec.rejected_replay,
        sec.rate_limited
    )
}
