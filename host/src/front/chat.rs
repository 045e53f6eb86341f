//! `duet chat`: the terminal chat (a line editor, events printed above it) and line mode
//! (stdin lines in, one line per event out), over the application's conversation.

use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustyline::error::ReadlineError;

use duet_core::MAX_DATAGRAM;
use duet_core::legacy::PlainSendError;
use duet_core::session::{Config, MessageId, SendError};
use duet_core::text::Encoding;
use duet_core::time::{Duration, Instant};

use super::ChatOptions;
use super::input::{Input, InputPipe};
use super::ui::Output;
use super::{banner, counters, sender, snippet};
use crate::app::Error;
use crate::app::contacts::Contacts;
use crate::app::conversation::{Conversation, Shown, messages_of};
use crate::app::keys::PeerKey;
use crate::app::store::Store;
use crate::platform::terminal::TerminalRestore;
use crate::transport::{self, Link, Stack, parse_addr};

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
pub fn chat(args: ChatOptions, dir: &Path) -> Result<(), Error> {
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
            let Some(answer) = ask(
                ed,
                "peer address (HOST:PORT, Enter to wait for one): ",
                |t| Ok(parse_addr(t)?),
            )?
            else {
                return Ok(());
            };
            peer = answer;
        }
        (
            Conversation::legacy(&args.legacy, peer),
            None,
            peer.map(|p| p.to_string()),
            None,
        )
    } else {
        let contacts = Contacts::load(dir)?;
        // Before asking whom to talk to: on a first run, how to pair is the answer.
        if contacts.peers.iter().next().is_none() {
            return Err(Error::NotPaired);
        }
        let mut target = peer_text.as_deref().map(|t| contacts.find(t)).transpose()?;
        if let (None, Some(ed)) = (&target, editor.as_mut()) {
            let Some(answer) = ask(
                ed,
                "talk to (paired NAME or HOST:PORT, Enter to wait): ",
                |t| contacts.find(t),
            )?
            else {
                return Ok(());
            };
            target = answer;
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
        read_encoding: args.legacy.read_encoding(),
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

/// Ask on the terminal until `parse` accepts the answer: `Some(None)` for Enter alone (no
/// peer), `None` when the user leaves instead (ctrl-c, ctrl-d), which is not an error.
fn ask<T>(
    editor: &mut rustyline::DefaultEditor,
    question: &str,
    parse: impl Fn(&str) -> Result<T, Error>,
) -> Result<Option<Option<T>>, Error> {
    for _ in 0..5 {
        match editor.readline(question) {
            Ok(line) if line.trim().is_empty() => return Ok(Some(None)),
            Ok(line) => match parse(line.trim()) {
                Ok(value) => return Ok(Some(Some(value))),
                Err(e) => eprintln!("{e}"),
            },
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => return Ok(None),
            Err(e) => return Err(Error::Other(format!("terminal: {e}"))),
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
                Err(e @ transport::Error::Unreachable { .. }) => {
                    out.line(&format!("* {e}; retrying"));
                    Some(Instant::now() + Duration::from_millis(100))
                }
                Err(e) => return Err(e.into()),
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
                if rest.is_empty() {
                    let whom = if self.legacy {
                        "HOST:PORT"
                    } else {
                        "NAME or /peer HOST:PORT"
                    };
                    out.line(&format!("* usage: /peer {whom} (talk to someone else)"));
                    return;
                }
                let found = match &self.contacts {
                    Some(c) => c.find(rest).and_then(|t| match t.addr {
                        Some(addr) => Ok((addr, Some(t.key.0), t.name)),
                        None => Err(Error::Other(format!(
                            "no address known for {}: /peer HOST:PORT",
                            t.name
                        ))),
                    }),
                    None => parse_addr(rest)
                        .map(|a| (a, None, a.to_string()))
                        .map_err(Error::from),
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
            "nick" if rest.is_empty() => {
                out.line(&format!("* usage: /nick NAME (you are {})", self.name));
            }
            "nick" => {
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
