//! `duet web`: the chat in a browser. The same application loop as the terminal chat
//! ([`Talk`]: identity, pairing, history, outbox) runs on this thread; a web server
//! (`server`) on another serves the page, which shows the latest history on load, then
//! every event live over a WebSocket, and sends what is typed in it. A page may also pair
//! by code ([`pair::invite`] / [`pair::join`] on a thread of their own); the running
//! conversation then accepts the new peer.
//!
//! Text for the page is escaped as for a terminal line by line (control and invisible
//! characters; line breaks are kept), and the page inserts it as text, never as HTML.

mod bridge;
mod guard;
mod server;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use duet_core::session::Config;
use duet_core::text::Encoding;
use duet_core::time::Duration;

use super::WebOptions;
use super::banner;
use super::ui::{self, Output};
use crate::app::Error;
use crate::app::contacts::Contacts;
use crate::app::conversation::{Conversation, LegacyOptions, messages_of};
use crate::app::keys::PeerKey;
use crate::app::pair;
use crate::app::reach::Reaching;
use crate::app::store::{Direction, Store};
use crate::app::talk::{Happened, Mine, Talk};
use crate::platform::browser;
use crate::transport::reach::ReachConfig;
use crate::transport::{self, Link, TapOptions, parse_addr};
use bridge::{Bridge, Command, Inbox, Shelf, is_picture};
use guard::Access;

/// As in the terminal chat: a message is never given up on while duet runs (one failing
/// while later ones go on would arrive out of order when sent again).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
/// How many of the latest stored messages a page shows when it opens.
const HISTORY_ON_LOAD: u64 = 200;
/// Where files dropped onto a page wait to be sent, in the config directory.
const UPLOADS: &str = "web-uploads";
/// Typed messages waiting for the peer, at most; more are refused. Each is taken at once
/// (stored in the next turn's transaction), not held until the session has room: a page
/// shows it as sending, so it must survive duet being stopped.
const WAITING_MAX: usize = 1024;
/// Seconds a pairing started from a page waits for the other side.
const PAIRING_TIMEOUT: u64 = 300;

/// `duet web`: `dir` is the config directory (identity and paired peers).
pub fn web(args: WebOptions, dir: &Path) -> Result<(), Error> {
    let bind = parse_addr(&args.bind)?;
    let http = parse_addr(&args.http)?;
    let contacts = Contacts::load(dir)?;
    let target = args.peer.as_deref().map(|t| contacts.find(t)).transpose()?;
    let mut conversation = Conversation::duet(
        &contacts,
        target.as_ref(),
        Config {
            delivery_timeout: DELIVERY_TIMEOUT,
            ..Config::default()
        },
    )?;
    let looking = target.as_ref().is_some_and(|t| t.addr.is_none());
    if let Some(t) = target.as_ref().filter(|t| t.addr.is_none()) {
        conversation.discover(t, bind);
    }
    let peer_key = target.as_ref().map(|t| t.key);
    let pairing_reach = args.reach.config()?;
    let reach_config = pairing_reach.clone().filter(|_| peer_key.is_some());
    let stack = transport::open_reaching(bind, &TapOptions::default(), reach_config.is_some())?;
    let link = Link::bind(stack, bind, conversation)?;
    if looking {
        link.allow_broadcast()?;
    }
    let listener = TcpListener::bind(http)
        .map_err(|e| Error::Other(format!("cannot serve the chat page on {http}: {e}")))?;
    let served = listener
        .local_addr()
        .map_err(|e| Error::Other(format!("cannot serve the chat page: {e}")))?;
    let access = Access::new(served.port())
        .map_err(|e| Error::Other(format!("no randomness for the access token: {e}")))?;
    let url = server::url(served, &access);

    let mut out = Output::Lines;
    banner(&mut out, &LegacyOptions::default(), link.local_addr());
    let mut talk = Talk::new(link, Some(Store::open(dir)?), None, Encoding::Utf8);
    talk.set_file_options(args.files.clone());
    talk.serve_handoffs(dir)?;
    if let (Some(config), Some(key)) = (&reach_config, peer_key) {
        let port = talk.link.local_addr().port();
        match Reaching::start(config, &contacts.identity, key, port) {
            Ok(reaching) => talk.reach(reaching),
            Err(e) => out.line(&format!("* internet reach is off: {e}")),
        }
    }
    match talk.set_outbox_peer(peer_key) {
        Ok(0) => {}
        Ok(n) => out.line(&format!(
            "* {n} message(s) from before are queued for this peer"
        )),
        Err(e) => out.line(&format!("* {e}")),
    }
    // Stored by a run that stopped before it showed them: the page's history has them.
    talk.show_unshown(peer_key, |_| None)?;
    while talk.next_event().is_some() {}

    let (bridge, inbox) =
        bridge::bridge().map_err(|e| Error::Other(format!("cannot start the web server: {e}")))?;
    // Files dropped onto a page wait here until they are sent; what a run killed before it
    // could clean up goes now.
    let uploads = dir.join(UPLOADS);
    let _ = std::fs::remove_dir_all(&uploads);
    let shelf = Shelf::default();
    server::start(
        listener,
        access,
        bridge.clone(),
        shelf.clone(),
        uploads.clone(),
    )
    .map_err(|e| Error::Other(format!("cannot start the web server: {e}")))?;
    out.line(&format!(
        "* chat page on http://{served}; open it with this address (it holds the secret that \
         lets anyone read and write as you):"
    ));
    if !served.ip().is_loopback() {
        out.line(
            "* the page is plain HTTP, not encrypted: beyond this computer, whoever sees the \
             network between it and the browser can read the chat and the secret",
        );
    }
    // On a line of its own, whole, for copying and for scripts.
    ui::print(&url);
    if args.open
        && let Err(e) = browser::open(&url)
    {
        out.line(&format!(
            "* cannot open a browser ({e}): open the address above"
        ));
    }
    let mut web = Web {
        inbox,
        bridge,
        dir: dir.to_path_buf(),
        pairing_reach,
        pairing: false,
        contacts,
        peer_key,
        next_tag: 1,
        out,
        shelf,
        sending: HashMap::new(),
    };
    let result = web.run(&mut talk);
    let _ = std::fs::remove_dir_all(&uploads);
    result
}

/// The chat loop's side of the pages.
struct Web {
    inbox: Inbox,
    /// For pairings, which run on threads of their own.
    bridge: Bridge,
    /// The config directory.
    dir: PathBuf,
    /// Internet reach for pairing (`None`: by address only).
    pairing_reach: Option<ReachConfig>,
    /// A pairing is running.
    pairing: bool,
    contacts: Contacts,
    /// The peer typed messages go to, once known.
    peer_key: Option<PeerKey>,
    next_tag: u64,
    /// The terminal, for what the pages cannot show (problems).
    out: Output,
    /// The files pages may fetch: received ones, and those dropped onto a page.
    shelf: Shelf,
    /// Files dropped onto a page and being sent: the transfer, and where a page fetches
    /// the file.
    sending: HashMap<u64, Option<String>>,
}

impl Web {
    fn run(&mut self, talk: &mut Talk) -> Result<(), Error> {
        loop {
            let deadline = talk.turn()?;
            while let Some(happened) = talk.next_event() {
                self.show(talk, happened);
            }
            let mut took = false;
            for command in self.inbox.take() {
                match command {
                    Command::Hello { client } => self.hello(talk, client),
                    Command::Send { text } => took |= self.typed(talk, &text),
                    Command::SendFile { path } => took |= self.send_file(talk, &path),
                    Command::Pair { name, code, addr } => self.pair(name, code, addr),
                    Command::Paired(result) => self.paired(talk, result),
                    Command::Leave => {
                        self.leave(talk);
                        return Ok(());
                    }
                    Command::Stopped(why) => {
                        self.leave(talk);
                        return Err(Error::Other(why));
                    }
                }
            }
            if took {
                // Stored and sent in the next turn, at once.
                continue;
            }
            talk.wait(deadline, Some(self.inbox.fd()), None)?;
        }
    }

    /// A page asked to pair: invite (no code) or join, on a thread of its own; what it
    /// prints goes to the pages, line by line.
    fn pair(&mut self, name: String, code: Option<String>, addr: Option<String>) {
        let fail = |why: String| json!({"kind": "pairing", "done": true, "error": why}).to_string();
        if self.pairing {
            self.inbox
                .show(None, fail("a pairing is running already".into()));
            return;
        }
        let name = name.trim().to_string();
        if name.is_empty() {
            self.inbox.show(None, fail("give a name".into()));
            return;
        }
        let code = match code.map(|c| c.trim().parse::<pair::Code>()).transpose() {
            Ok(code) => code,
            Err(e) => {
                self.inbox.show(None, fail(e.to_string()));
                return;
            }
        };
        let addr = addr.map(|a| a.trim().to_string()).filter(|a| !a.is_empty());
        let dir = self.dir.clone();
        let reach = self.pairing_reach.clone();
        let bridge = self.bridge.clone();
        self.pairing = true;
        let spawned = std::thread::Builder::new()
            .name("pairing".into())
            .spawn(move || {
                let mut out = PageLines {
                    bridge: bridge.clone(),
                    line: Vec::new(),
                };
                let result = match code {
                    None => pair::invite(
                        &dir,
                        pair::InviteOptions {
                            name: name.clone(),
                            bind: "0.0.0.0:0".into(),
                            timeout: PAIRING_TIMEOUT,
                            reach,
                        },
                        &mut out,
                    ),
                    Some(code) => pair::join(
                        &dir,
                        pair::JoinOptions {
                            name: name.clone(),
                            code,
                            addr,
                            bind: "0.0.0.0:0".into(),
                            timeout: PAIRING_TIMEOUT,
                            reach,
                        },
                        &mut out,
                    ),
                };
                bridge.tell(Command::Paired(
                    result.map(|()| name).map_err(|e| e.to_string()),
                ));
            });
        if let Err(e) = spawned {
            self.pairing = false;
            self.inbox
                .show(None, fail(format!("cannot start pairing: {e}")));
        }
    }

    /// A pairing ended: accept the new peer in the running conversation.
    fn paired(&mut self, talk: &mut Talk, result: Result<String, String>) {
        self.pairing = false;
        let name = match result {
            Ok(name) => name,
            Err(why) => {
                let json = json!({"kind": "pairing", "done": true, "error": why});
                self.inbox.show(None, json.to_string());
                return;
            }
        };
        match Contacts::load(&self.dir) {
            Ok(contacts) => self.contacts = contacts,
            Err(e) => self
                .out
                .line(&format!("* cannot read the paired peers: {e}")),
        }
        let key = self
            .contacts
            .peers
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.key);
        if let Conversation::Duet { secure, names } = talk.conversation_mut()
            && let Some(key) = key
        {
            secure.allow(key.0);
            *names = self.contacts.names_by_key();
        }
        let json = json!({"kind": "pairing", "done": true, "paired": name});
        self.inbox.show(None, json.to_string());
    }

    /// Say goodbye to the peer; what it has not acknowledged stays in the outbox.
    fn leave(&mut self, talk: &mut Talk) {
        talk.close();
        let waiting = talk.waiting();
        if waiting > 0 {
            self.out.line(&format!(
                "* leaving; {waiting} message(s) not delivered yet stay in the outbox, sent the \
                 next time duet runs"
            ));
        }
    }

    /// Text typed in a page: one message per piece, shown on every page as sending;
    /// whether any was taken.
    fn typed(&mut self, talk: &mut Talk, text: &str) -> bool {
        if text.trim().is_empty() {
            return false;
        }
        let mut took = false;
        for piece in messages_of(text, false) {
            let tag = self.next_tag;
            self.next_tag += 1;
            if talk.waiting() >= WAITING_MAX {
                self.inbox.show(
                    None,
                    own(
                        &piece,
                        tag,
                        None,
                        "failed",
                        Some("too many messages waiting"),
                    ),
                );
                continue;
            }
            self.inbox
                .show(None, own(&piece, tag, None, "sending", None));
            talk.submit_tagged(&piece, tag);
            took = true;
        }
        took
    }

    /// A file dropped onto a page (uploaded to `path`): sent, and shown on every page as
    /// sending; whether it was taken.
    fn send_file(&mut self, talk: &mut Talk, path: &Path) -> bool {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        let url = self.shelf.put(path, &name);
        let (state, transfer, why) = match talk.send_file(path) {
            Ok(transfer) => {
                self.sending.insert(transfer, url.clone());
                ("sending", Some(transfer), None)
            }
            Err(e) => ("failed", None, Some(e.to_string())),
        };
        let json = json!({
            "kind": "file", "dir": "out", "at": now_ms(), "state": state,
            "transfer": transfer.map(|t| t.to_string()), "why": why.map(|w| shown(&w)),
            "file": file_json(&name, size, url.as_deref()),
        });
        self.inbox.show(None, json.to_string());
        transfer.is_some()
    }

    /// A page opened: its header and the latest history, to it alone.
    fn hello(&mut self, talk: &mut Talk, client: u64) {
        let peer = self.peer_key.or_else(|| talk_peer(talk));
        let history = match (talk.store(), peer) {
            (Some(store), Some(key)) => match store.history(Some(&key), None, HISTORY_ON_LOAD) {
                Ok(entries) => entries,
                Err(e) => {
                    self.out.line(&format!("* cannot read the history: {e}"));
                    Vec::new()
                }
            },
            _ => Vec::new(),
        };
        // Files received, by the id of their line in the history: shown as files (a
        // picture inline), fetched from the shelf.
        let received: HashMap<u64, (String, PathBuf)> = match (talk.store(), peer) {
            (Some(store), Some(key)) => store
                .received_files(&key, HISTORY_ON_LOAD)
                .unwrap_or_default()
                .into_iter()
                .map(|(uid, name, path)| (uid, (name, path)))
                .collect(),
            _ => HashMap::new(),
        };
        let items: Vec<Value> = history
            .iter()
            .map(|e| match e.direction {
                Direction::In => match received.get(&e.uid).filter(|(_, p)| p.is_file()) {
                    Some((name, path)) => {
                        let size = std::fs::metadata(path).map_or(0, |m| m.len());
                        let url = self.shelf.put(path, name);
                        json!({
                            "kind": "file", "dir": "in", "text": shown(&e.text),
                            "at": e.created_ms, "file": file_json(name, size, url.as_deref()),
                        })
                    }
                    None => json!({
                        "kind": "msg", "dir": "in", "text": shown(&e.text), "at": e.created_ms,
                    }),
                },
                Direction::Out => json!({
                    "kind": "msg", "dir": "out", "text": shown(&e.text), "at": e.created_ms,
                    "uid": e.uid.to_string(),
                    "state": if e.state == "delivered" { "delivered" } else { "sending" },
                }),
            })
            .collect();
        let peer_name = peer
            .and_then(|k| self.contacts.peers.by_key(&k))
            .map(|p| p.name.clone());
        let json = json!({
            "kind": "hello",
            "peer": peer_name,
            "up": talk.conversation().is_peer_up(),
            "history": items,
        });
        self.inbox.show(Some(client), json.to_string());
    }

    /// An event, for every page.
    fn show(&mut self, talk: &Talk, happened: Happened) {
        let json = match happened {
            Happened::Message { text, exact, .. } => json!({
                "kind": "msg", "dir": "in",
                "text": exact.as_deref().map_or(text, shown),
                "at": now_ms(),
            }),
            Happened::Delivered { mine, .. } => state(mine, "delivered", None),
            Happened::NotDelivered {
                mine, why, kept, ..
            } => {
                let why = if kept {
                    format!("{why}; kept in the outbox, sent again the next time duet runs")
                } else {
                    why.to_string()
                };
                state(mine, "failed", Some(&why))
            }
            Happened::Refused { mine, why, .. } => state(mine, "failed", Some(&why)),
            Happened::PeerUp(addr) => {
                if self.peer_key.is_none() {
                    // Whoever wrote first: the pages learn whom they talk to.
                    self.peer_key = talk_peer(talk);
                    let name = self.peer_key.and_then(|k| self.contacts.peers.by_key(&k));
                    if let Some(peer) = name {
                        let json = json!({"kind": "peer", "name": peer.name});
                        self.inbox.show(None, json.to_string());
                    }
                }
                json!({"kind": "status", "up": true, "text": format!("connected ({addr})")})
            }
            Happened::PeerDown => {
                json!({"kind": "status", "up": false, "text": "the peer is away (left, or not answering)"})
            }
            Happened::Path { kind, addr } => {
                json!({"kind": "status", "up": true, "text": format!("{} ({addr})", kind.as_str())})
            }
            Happened::Problem(text) => {
                self.out.line(&format!("* {text}"));
                json!({"kind": "problem", "text": text})
            }
            Happened::Unmappable { .. } | Happened::Oversized { .. } => return,
            // Files: one line in the terminal; on the pages, a received file as an item
            // of its own (a picture inline), and the state of one dropped onto a page.
            file @ (Happened::FileIncoming { .. }
            | Happened::FileReceived { .. }
            | Happened::FileAccepted { .. }
            | Happened::FileSent { .. }
            | Happened::FileProgress { .. }
            | Happened::FileFailed { .. }) => {
                let line = super::file_line(&file, talk.conversation().peer());
                if let Some(line) = &line
                    && !matches!(file, Happened::FileProgress { .. })
                {
                    self.out.line(line);
                }
                let text = line.map(|l| shown(&l));
                match file {
                    Happened::FileReceived {
                        name, size, path, ..
                    } => {
                        let url = self.shelf.put(&path, &name);
                        json!({
                            "kind": "file", "dir": "in", "text": text, "at": now_ms(),
                            "file": file_json(&name, size, url.as_deref()),
                        })
                    }
                    Happened::FileSent { transfer, .. } => {
                        self.sending.remove(&transfer);
                        json!({"kind": "filestate", "transfer": transfer.to_string(),
                               "state": "delivered"})
                    }
                    Happened::FileFailed {
                        transfer: Some(transfer),
                        why,
                        ..
                    } => {
                        self.sending.remove(&transfer);
                        json!({"kind": "filestate", "transfer": transfer.to_string(),
                               "state": "failed", "why": shown(&why)})
                    }
                    Happened::FileProgress {
                        transfer: Some(transfer),
                        done,
                        size,
                        ..
                    } => json!({"kind": "filestate", "transfer": transfer.to_string(),
                                "state": "sending", "done": done, "size": size}),
                    // Theirs failing or coming, or ours accepted: a line of status.
                    _ => match text {
                        Some(text) => json!({"kind": "status", "up": true, "text": text}),
                        None => return,
                    },
                }
            }
        };
        self.inbox.show(None, json.to_string());
    }
}

/// What a pairing prints, for the pages: each whole line as a `pairing` event.
struct PageLines {
    bridge: Bridge,
    line: Vec<u8>,
}

impl std::io::Write for PageLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                let text = String::from_utf8_lossy(&self.line).into_owned();
                self.line.clear();
                let json = json!({"kind": "pairing", "text": shown(&text)});
                self.bridge.show(json.to_string());
            } else {
                self.line.push(b);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The paired peer the conversation talks to now.
fn talk_peer(talk: &Talk) -> Option<PeerKey> {
    match talk.conversation() {
        Conversation::Duet { secure, .. } => secure.peer_key().map(PeerKey),
        Conversation::Legacy(_) => None,
    }
}

/// One of own messages, as the pages show it.
fn own(text: &str, tag: u64, uid: Option<u64>, state: &str, why: Option<&str>) -> String {
    json!({
        "kind": "msg", "dir": "out", "text": shown(text), "at": now_ms(),
        "tag": tag.to_string(), "uid": uid.map(|u| u.to_string()),
        "state": state, "why": why,
    })
    .to_string()
}

/// A change of state of one of own messages. Ids go as strings: JavaScript's numbers
/// cannot hold every 64-bit id.
fn state(mine: Mine, state: &str, why: Option<&str>) -> Value {
    json!({
        "kind": "state",
        "tag": mine.tag.map(|t| t.to_string()),
        "uid": mine.uid.map(|u| u.to_string()),
        "state": state,
        "why": why,
    })
}

/// Text as a page shows it: escaped as for a terminal, line by line, so line breaks stay.
/// A file as the pages show it: its name, size, where to fetch it and whether it is a
/// picture to show inline.
fn file_json(name: &str, size: u64, url: Option<&str>) -> Value {
    json!({"name": shown(name), "size": size, "url": url, "picture": is_picture(name)})
}

fn shown(text: &str) -> String {
    text.split('\n')
        .map(ui::escaped)
        .collect::<Vec<_>>()
        .join("\n")
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn page_text_keeps_line_breaks_and_escapes_the_rest() {
        assert_eq!(shown("a\nb"), "a\nb");
        assert_eq!(shown("a\u{202e}b\r\n"), "a\\u{202e}b\\r\n");
        assert_eq!(
            shown("<img src=x>"),
            "<img src=x>",
            "HTML is the page's to keep as text"
        );
    }
}
