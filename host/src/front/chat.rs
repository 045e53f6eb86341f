//! `duet chat`: the terminal chat (a line editor, events printed above it) and line mode
//! (stdin lines in, one line per event out), over the application's conversation.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustyline::error::ReadlineError;

use duet_core::MAX_DATAGRAM;
use duet_core::session::Config;
use duet_core::time::{Duration, Instant};

use super::ChatOptions;
use super::input::{Input, InputPipe};
use super::ui::Output;
use super::{SenderLabel, banner, counters, file_line};
use crate::app::Error;
use crate::app::contacts::Contacts;
use crate::app::conversation::Conversation;
use crate::app::keys::{self, PeerKey};
use crate::app::pair::{self, Code, InviteOptions, JoinOptions};
use crate::app::reach::Reaching;
use crate::app::store::Store;
use crate::app::talk::{Happened, Talk};
use crate::platform::terminal::TerminalRestore;
use crate::transport::reach::ReachConfig;
use crate::transport::{self, Link, parse_addr};

/// How long a chat leaving at the end of its input (line mode) waits for a peer that is
/// not answering before it gives up on what is still unacknowledged (kept in the outbox).
const LEAVE_WAIT: Duration = Duration::from_secs(30);

/// A chat never gives up on a message while it runs: a message failing after a timeout
/// while later ones go on would arrive out of order when sent again. It waits for the peer
/// (the retransmission timeout is capped, so a returning peer gets it within seconds).
const CHAT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

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
    let mut peer_name = None;
    let reach_config = if args.legacy.legacy || args.tap.tap.is_some() {
        None
    } else {
        args.reach.config()?
    };
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
        let mut contacts = Contacts::load(dir)?;
        // Before asking whom to talk to: on a first run, pairing is the answer (on a
        // terminal, done right here; otherwise, how to do it).
        let mut paired_now = None;
        if contacts.peers.iter().next().is_none() {
            let Some(ed) = editor.as_mut() else {
                return Err(Error::NotPaired);
            };
            let Some(name) = pair_first(ed, dir, &args.bind, reach_config.as_ref())? else {
                return Err(Error::NotPaired);
            };
            contacts = Contacts::load(dir)?;
            paired_now = Some(name);
        }
        let mut target = peer_text
            .as_deref()
            .or(paired_now.as_deref())
            .map(|t| contacts.find(t))
            .transpose()?;
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
        let mut conversation = Conversation::duet(
            &contacts,
            target.as_ref(),
            Config {
                delivery_timeout: CHAT_DELIVERY_TIMEOUT,
                ..Config::default()
            },
        )?;
        if let Some(t) = target.as_ref().filter(|t| t.addr.is_none()) {
            conversation.discover(t, bind);
            looking = Some(t.name.clone());
        }
        peer_name = target.as_ref().map(|t| t.name.clone());
        let shown = target.as_ref().map(|t| match t.addr {
            Some(addr) => format!("{} at {addr}", t.name),
            None => t.name.clone(),
        });
        let key = target.map(|t| t.key);
        (conversation, Some(contacts), shown, key)
    };
    // Internet reach is for a named peer (a chat waiting for whoever writes has no one
    // to look up).
    let reach_config = reach_config.filter(|_| outbox_peer.is_some());
    let stack = transport::open_reaching(bind, &args.tap, reach_config.is_some())?;
    let link = Link::bind(stack, bind, conversation)?;
    if looking.is_some() {
        link.allow_broadcast()?;
    }
    // The line editor takes the terminal only once the lines of the start are printed: until
    // then they go straight to stdout, from this thread alone, in order. (Wine's console was
    // seen to stall when the editor's thread started while these were written through it.)
    let (mut out, terminal) = match editor {
        Some(mut ed) => {
            let printer = ed
                .create_external_printer()
                .map_err(|e| Error::Other(format!("terminal: {e}")))?;
            (Output::Lines, Some((ed, printer)))
        }
        None => (Output::Batched(String::new()), None),
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
        if reach_config.is_some() {
            out.line(&format!(
                "* looking for {name} on the LAN and across the internet…"
            ));
        } else {
            out.line(&format!("* looking for {name} on the LAN…"));
        }
    }
    let store = if contacts.is_some() {
        Some(Store::open(dir)?)
    } else {
        // Legacy mode keeps its datagrams in the history too, when it can.
        match Store::open(dir) {
            Ok(store) => Some(store),
            Err(e) => {
                out.line(&format!("* not keeping a history: {e}"));
                None
            }
        }
    };
    let mut talk = Talk::new(link, store, None, args.legacy.read_encoding());
    talk.set_file_options(args.files.clone());
    if !args.legacy.legacy {
        talk.serve_handoffs(dir)?;
    }
    if let Some(contacts) = &contacts {
        // Stored by a run that stopped before it showed them.
        talk.show_unshown(outbox_peer, |k| {
            contacts.peers.by_key(k).map(|p| p.name.clone())
        })?;
    }
    if let (Some(config), Some(key), Some(contacts)) = (&reach_config, outbox_peer, &contacts) {
        let port = talk.link.local_addr().port();
        match Reaching::start(config, &contacts.identity, key, port) {
            Ok(reaching) => talk.reach(reaching),
            Err(e) => out.line(&format!("* internet reach is off: {e}")),
        }
    }
    let mut input = match terminal {
        Some((ed, printer)) => {
            out = Output::Terminal(Box::new(printer));
            InputPipe::terminal(ed, Arc::clone(&prompt))?
        }
        None => InputPipe::lines()?,
    };
    let mut chat = ChatState {
        peer_name,
        name: args.name,
        prompt,
        contacts,
        quitting: None,
        heard: false,
        interactive,
        looking: looking.map(|name| (name, None)),
        label: SenderLabel::default(),
    };
    chat.set_outbox_peer(&mut talk, outbox_peer, &mut out);
    chat.run(&mut talk, &mut out, &mut input)
}

/// Ask on the terminal until `parse` accepts the answer: `Some(None)` for Enter alone (no
/// peer), `None` when the user leaves instead (ctrl-c, ctrl-d), which is not an error.
/// A first run on a terminal, nobody paired yet: offer to pair now, by inviting (a code to
/// read out) or by joining an invite with its code, through the same exchange as `duet pair
/// invite` and `duet pair join`. The new peer's name, or `None` when the user would rather
/// not (then the chat ends, saying how to pair later).
fn pair_first(
    ed: &mut rustyline::DefaultEditor,
    dir: &Path,
    bind: &str,
    reach: Option<&ReachConfig>,
) -> Result<Option<String>, Error> {
    println!(
        "* nobody is paired yet: duet talks only to people you paired with, once each, by a \
         one-time code that one of you reads to the other"
    );
    let Some(Some(invite)) = ask(
        ed,
        "pair now? i: invite someone (you get the code), j: join (they gave you a code), Enter: not now: ",
        |t| match t {
            "i" | "I" | "invite" => Ok(true),
            "j" | "J" | "join" => Ok(false),
            _ => Err(Error::Other("answer i, j, or Enter".into())),
        },
    )?
    else {
        return Ok(None);
    };
    let Some(Some(name)) = ask(ed, "their name (what you will call them): ", |t| {
        keys::check_name(t)?;
        Ok(t.to_owned())
    })?
    else {
        return Ok(None);
    };
    // Pairing across the internet needs the DHT; a relay alone cannot find an invite.
    let reach = reach.filter(|c| c.dht).cloned();
    let out = &mut std::io::stdout();
    if invite {
        pair::invite(
            dir,
            InviteOptions {
                name: name.clone(),
                bind: bind.to_owned(),
                timeout: PAIR_WAIT,
                reach,
            },
            out,
        )?;
    } else {
        let Some(Some(code)) = ask(ed, "the code they see: ", |t| {
            t.parse::<Code>().map_err(|e| Error::Other(e.to_string()))
        })?
        else {
            return Ok(None);
        };
        let question = if reach.is_some() {
            "their address (HOST:PORT; Enter: find the invite by its code across the internet): "
        } else {
            "their address (HOST:PORT): "
        };
        let mut addr = None;
        for _ in 0..5 {
            let Some(answer) = ask(ed, question, |t| {
                parse_addr(t)?;
                Ok(t.to_owned())
            })?
            else {
                return Ok(None);
            };
            addr = answer;
            if addr.is_some() || reach.is_some() {
                break;
            }
            println!(
                "the address is needed: finding an invite by its code needs the DHT, which is off"
            );
        }
        if addr.is_none() && reach.is_none() {
            return Ok(None);
        }
        pair::join(
            dir,
            JoinOptions {
                name: name.clone(),
                code,
                reach: if addr.is_some() { None } else { reach },
                addr,
                bind: "0.0.0.0:0".into(),
                timeout: PAIR_WAIT,
            },
            out,
        )?;
    }
    Ok(Some(name))
}

/// How long pairing from a first run waits for the other side, in seconds.
const PAIR_WAIT: u64 = 300;

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
    Err(Error::Other("no valid answer given".into()))
}

struct ChatState {
    /// The named peer's name, when one was named.
    peer_name: Option<String>,
    name: String,
    prompt: Arc<Mutex<String>>,
    /// Identity and paired peers (duet mode only).
    contacts: Option<Contacts>,
    /// Since when the chat is leaving (end of input, /quit), waiting for acknowledgements.
    quitting: Option<Instant>,
    /// Whether the peer was ever heard from.
    heard: bool,
    interactive: bool,
    /// The peer looked for on the LAN and where it was last found.
    looking: Option<(String, Option<SocketAddr>)>,
    /// Who received messages come from, as shown.
    label: SenderLabel,
}

const HELP: &str = "commands: /peer NAME or NAME@HOST:PORT (talk to someone else), /file PATH (send a file), /nick NAME, /status, /quit, /help; \
                    start a message with // to send a line that begins with /";

impl ChatState {
    fn run(
        &mut self,
        talk: &mut Talk,
        out: &mut Output,
        input: &mut InputPipe,
    ) -> Result<(), Error> {
        loop {
            let deadline = talk.turn()?;
            self.show_events(talk, out);
            self.show_found(talk, out);
            if let Some(since) = self.quitting {
                if talk.waiting() == 0 {
                    break;
                }
                if Instant::now() >= since + LEAVE_WAIT && !talk.conversation().is_peer_up() {
                    // Nobody answers: what is stored stays in the outbox for next time.
                    return Err(self.undelivered(talk));
                }
            }
            let mut took_input = false;
            while talk.has_room() && self.quitting.is_none() {
                let Some(item) = input.try_next() else { break };
                took_input = true;
                self.handle_input(item, talk, out);
            }
            if took_input {
                continue;
            }
            out.flush();
            let want_input = talk.has_room() && self.quitting.is_none();
            let limit = self.quitting.map(|since| since + LEAVE_WAIT);
            talk.wait(deadline, if want_input { input.fd() } else { None }, limit)?;
        }
        talk.close();
        let counts = talk.counts();
        if counts.failed > 0 && !self.interactive {
            return Err(Error::NotDelivered {
                failed: counts.failed,
                total: counts.total,
            });
        }
        Ok(())
    }

    /// The error for leaving with messages unacknowledged: no answer at all, or some.
    fn undelivered(&self, talk: &Talk) -> Error {
        let waiting = talk.waiting();
        match talk.conversation().peer() {
            Some(peer) if !self.heard => Error::NoAnswer {
                peer,
                waited: LEAVE_WAIT.as_millis() / 1000,
            },
            _ => Error::NotDelivered {
                failed: waiting + talk.counts().failed,
                total: talk.counts().total + talk.waiting() - talk.conversation().in_flight(),
            },
        }
    }

    /// Say where discovery found the peer, once per address.
    fn show_found(&mut self, talk: &Talk, out: &mut Output) {
        if let Some((name, shown)) = &mut self.looking
            && let Some(addr) = talk.conversation().peer()
            && *shown != Some(addr)
        {
            out.line(&format!("* found {name} at {addr}"));
            *shown = Some(addr);
        }
    }

    fn show_events(&mut self, talk: &mut Talk, out: &mut Output) {
        while let Some(happened) = talk.next_event() {
            match happened {
                Happened::Message { from, who, text, .. } => {
                    self.heard = true;
                    out.line_fmt(format_args!("{}: {text}", self.label.of(who, from)));
                }
                Happened::Delivered { id, quote, .. } => {
                    self.heard = true;
                    out.line_fmt(format_args!("* {id} delivered: {quote}"));
                }
                Happened::NotDelivered { id, why, quote, kept, .. } => {
                    if kept {
                        out.line(&format!(
                            "* {id} not delivered yet ({why}); kept in the outbox, sent the next time you chat: {quote}"
                        ));
                    } else {
                        out.line(&format!("* {id} FAILED ({why}): {quote}"));
                    }
                }
                Happened::Refused { why, quote, .. } => out.line(&format!("* not sent ({why}): {quote}")),
                Happened::Unmappable { count, encoding } => out.line(&format!(
                    "* {count} character(s) cannot be written in {} and were sent as '?'",
                    encoding.name()
                )),
                Happened::PeerUp(addr) => {
                    self.heard = true;
                    out.line(&format!("* peer {addr} is up"));
                }
                Happened::PeerDown => {
                    let waiting = talk.waiting();
                    out.line(&if waiting > 0 {
                        format!(
                            "* peer is down (it left, or stopped answering); {waiting} message(s) wait for it"
                        )
                    } else {
                        "* peer is down (it left, or stopped answering)".to_owned()
                    });
                }
                Happened::Oversized { from } => out.line(&format!(
                    "* dropped a datagram of more than {MAX_DATAGRAM} bytes from {from} (duet reads at most {MAX_DATAGRAM})"
                )),
                Happened::Path { kind, addr } => out.line(&format!(
                    "* path to {}: {} at {addr}",
                    self.peer_name.as_deref().unwrap_or("the peer"),
                    kind.as_str()
                )),
                Happened::Problem(text) => out.line(&format!("* {text}")),
                file @ (Happened::FileIncoming { .. }
                | Happened::FileReceived { .. }
                | Happened::FileAccepted { .. }
                | Happened::FileSent { .. }
                | Happened::FileProgress { .. }
                | Happened::FileFailed { .. }) => {
                    let from = talk.conversation().peer();
                    if let Some(line) = file_line(&file, from) {
                        out.line(&line);
                    }
                }
            }
        }
    }

    /// Store typed messages for `peer`, and queue what earlier runs left for it.
    fn set_outbox_peer(&mut self, talk: &mut Talk, peer: Option<PeerKey>, out: &mut Output) {
        match talk.set_outbox_peer(peer) {
            Ok(0) => {}
            Ok(n) => out.line(&format!(
                "* {n} message(s) from before are queued for this peer"
            )),
            Err(e) => out.line(&format!("* {e}")),
        }
    }

    fn handle_input(&mut self, input: Input, talk: &mut Talk, out: &mut Output) {
        let line = match input {
            Input::Line(line) => line,
            Input::Eof | Input::Interrupt => {
                self.quit(talk, out);
                return;
            }
        };
        if let Some(literal) = line.strip_prefix("//") {
            talk.submit(&format!("/{literal}"));
            return;
        }
        let Some(command) = line.strip_prefix('/') else {
            if !line.is_empty() {
                talk.submit(&line);
            }
            return;
        };
        let (word, rest) = command.split_once(' ').unwrap_or((command, ""));
        let rest = rest.trim();
        match word {
            "quit" | "exit" | "q" => self.quit(talk, out),
            "help" | "h" => out.line(&format!("* {HELP}")),
            "peer" => {
                if rest.is_empty() {
                    let whom = if self.contacts.is_none() {
                        "HOST:PORT"
                    } else {
                        "NAME or /peer NAME@HOST:PORT"
                    };
                    out.line(&format!("* usage: /peer {whom} (talk to someone else)"));
                    return;
                }
                let found = match &self.contacts {
                    Some(c) => c.find(rest).and_then(|t| match t.addr {
                        Some(addr) => Ok((addr, Some(t.key.0), t.name)),
                        None => Err(Error::Other(format!(
                            "no address known for {0}: /peer {0}@HOST:PORT",
                            t.name
                        ))),
                    }),
                    None => parse_addr(rest)
                        .map(|a| (a, None, a.to_string()))
                        .map_err(Error::from),
                };
                match found {
                    Ok((addr, key, name)) => {
                        talk.conversation_mut().set_peer(addr, key);
                        out.line(&format!("* talking to {name} at {addr}"));
                        if let Some(key) = key {
                            self.set_outbox_peer(talk, Some(PeerKey(key)), out);
                        }
                    }
                    Err(e) => out.line(&format!("* {e}")),
                }
            }
            "file" if rest.is_empty() => {
                out.line(
                    "* usage: /file PATH (send a file; the peer saves it in its save directory)",
                );
            }
            "file" => match talk.send_file(std::path::Path::new(unquoted(rest))) {
                Ok(_) => out.line(&format!(
                    "* sending file {} once its checksum is computed",
                    super::ui::escaped(rest)
                )),
                Err(e) => out.line(&format!("* {e}")),
            },
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
                let peer = talk
                    .conversation()
                    .peer()
                    .map_or_else(|| "none yet".to_owned(), |p| p.to_string());
                let counts = talk.counts();
                let mut line = format!(
                    "* {} on {}, peer {peer}; sent {}, delivered {}, failed {}, in flight {}",
                    self.name,
                    talk.link.local_addr(),
                    counts.total,
                    counts.delivered,
                    counts.failed,
                    talk.conversation().in_flight()
                );
                match talk.path() {
                    Some((kind, addr, rtt)) => line.push_str(&format!(
                        "; path: {} at {addr}, round trip {}",
                        kind.as_str(),
                        rtt.map_or_else(
                            || "not measured yet".to_owned(),
                            |r| format!("{} ms", r.as_millis())
                        )
                    )),
                    None => line.push_str("; path: none"),
                }
                if let Conversation::Duet { secure: s, .. } = talk.conversation() {
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

    fn quit(&mut self, talk: &Talk, out: &mut Output) {
        if self.quitting.is_some() {
            return;
        }
        self.quitting = Some(Instant::now());
        let waiting = talk.waiting();
        if waiting > 0 {
            out.line(&format!(
                "* waiting for {waiting} message(s) to be acknowledged before leaving"
            ));
        }
    }
}

/// A path as typed or dropped onto a terminal, which may put it in quotes.
fn unquoted(path: &str) -> &str {
    for quote in ['\'', '"'] {
        if let Some(inner) = path.strip_prefix(quote).and_then(|p| p.strip_suffix(quote)) {
            return inner;
        }
    }
    path
}
