//! `duet send`: one message (or several pieces of one text), exit once acknowledged.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use duet_core::legacy::PlainSendError;
use duet_core::session::{self, Config};
use duet_core::text::Encoding;
use duet_core::time::{Duration, Instant};

use super::ui::{self, Output};
use super::{SendOptions, file_line, sender};
use crate::app::Error;
use crate::app::contacts::Contacts;
use crate::app::conversation::DUET_PORT;
use crate::app::conversation::{Conversation, messages_of};
use crate::app::handoff::{self, Handed, Reply};
use crate::app::keys::Identity;
use crate::app::reach::Reaching;
use crate::app::store::{Direction, Store, Writes};
use crate::app::talk::{Happened, Talk};
use crate::transport::{self, Link, parse_addr};

/// `duet send`.
pub fn send(args: SendOptions, dir: &Path) -> Result<(), Error> {
    if let Some(path) = args.file.clone() {
        return send_file(args, dir, &path);
    }
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
    let mut reach = None;
    let mut discovering = false;
    let (conversation, to) = if legacy {
        let to = parse_addr(&args.to)?;
        (Conversation::legacy(&args.legacy, Some(to)), to)
    } else {
        let contacts = Contacts::load(dir)?;
        let target = contacts.find(&args.to)?;
        // A duet of this identity already talking to the peer sends it in its session;
        // a second session would take the peer's over and cut that duet off.
        if let Some(handed) = handoff::offer(dir, target.key, &text)
            .map_err(|e| Error::Other(format!("handing over to the running duet: {e}")))?
        {
            return handed_over(handed, &target.name, timeout);
        }
        durable = Some((Store::open(dir)?, target.key, target.name.clone()));
        if args.tap.tap.is_none() {
            reach = args.reach.config()?;
        }
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
    let stack = transport::open_reaching(bind, &args.tap, reach.is_some())?;
    let mut link = Link::bind(stack, bind, conversation)?;
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
        // Kept in the history too (best effort: the datagrams are gone already).
        let kept = Store::open(dir).and_then(|mut store| {
            let writes = Writes {
                plain: vec![(to, Direction::Out, ui::escaped(&text))],
                ..Writes::default()
            };
            store.commit(&writes).map(drop)
        });
        if let Err(e) = kept {
            eprintln!("duet: not kept in the history: {e}");
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
    let Some((store, key, name)) = durable else {
        return Err(Error::Other("duet mode needs the history".into()));
    };
    // Stored first (in the first turn's transaction): what cannot be delivered now is
    // sent by the next chat with this peer.
    let mut talk = Talk::new(link, Some(store), Some(key), Encoding::Utf8);
    if let Some(config) = &reach {
        let port = talk.link.local_addr().port();
        let identity = Identity::load_or_create(dir)?;
        match Reaching::start(config, &identity, key, port) {
            Ok(reaching) => talk.reach(reaching),
            Err(e) => eprintln!("duet: internet reach is off: {e}"),
        }
    }
    talk.submit(&text);
    let mut heard = false;
    let (mut delivered, mut failed) = (0, 0);
    // Each piece may wait its turn for room and then its own delivery timeout.
    let give_up = Instant::now() + timeout.saturating_mul(total as u64 + 1);
    while delivered + failed < total {
        let deadline = talk.turn()?;
        while let Some(happened) = talk.next_event() {
            match happened {
                Happened::Delivered { .. } => {
                    delivered += 1;
                    heard = true;
                }
                Happened::NotDelivered { .. } => failed += 1,
                Happened::PeerUp(_) => heard = true,
                // The peer wrote meanwhile: stored in the history, and shown.
                Happened::Message {
                    from, who, text, ..
                } => {
                    heard = true;
                    out.line(&format!("{}: {text}", sender(who, from)));
                }
                Happened::Refused { why, .. } => return Err(Error::Other(why)),
                Happened::Problem(text) => eprintln!("duet: {text}"),
                _ => {}
            }
        }
        if Instant::now() >= give_up {
            failed = total - delivered;
            break;
        }
        if delivered + failed < total {
            talk.wait(deadline, None, Some(give_up))?;
        }
    }
    talk.close();
    let durable = Some(name);
    let link = &talk.link;
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
        if let Some(name) = &durable {
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

/// Report what the running duet that took the text says became of it.
fn handed_over(mut handed: Handed, name: &str, timeout: Duration) -> Result<(), Error> {
    let total = handed.messages;
    let (mut delivered, mut failed) = (0, 0);
    let give_up = Instant::now() + timeout.saturating_mul(total as u64 + 1);
    while delivered + failed < total {
        let left = give_up.saturating_duration_since(Instant::now());
        if left == Duration::ZERO {
            break;
        }
        let wait = std::time::Duration::from_millis(left.as_millis());
        match handed.next(wait) {
            Ok(Some(Reply::Delivered)) => delivered += 1,
            Ok(Some(Reply::Failed(why))) => {
                failed += 1;
                eprintln!("duet: not delivered: {why}");
            }
            Ok(Some(_)) | Ok(None) => {}
            Err(e) => {
                eprintln!("duet: {e}");
                break;
            }
        }
    }
    if delivered == total {
        Output::Lines.line(&format!(
            "* delivered to {name} (sent by the duet already running here){}",
            if total > 1 {
                format!(" as {total} messages")
            } else {
                String::new()
            }
        ));
        return Ok(());
    }
    eprintln!("duet: the duet running here keeps sending what is not delivered yet");
    Err(Error::NotDelivered {
        failed: total - delivered,
        total,
    })
}

/// Report what the running duet that took a `send --file`'s file says became of it: news
/// of the file (progress) at least every `stall`, then saved, refused or failed.
fn file_handed_over(
    mut handed: Handed,
    path: &Path,
    stall: std::time::Duration,
) -> Result<(), Error> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut out = Output::Lines;
    out.line(&format!(
        "* file {} handed to the duet already running here",
        ui::escaped(&name)
    ));
    let mut news_at = std::time::Instant::now();
    loop {
        let left = (news_at + stall).saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(Error::Other(format!(
                "no news of the file from the running duet for {} s; it goes on sending it",
                stall.as_secs()
            )));
        }
        match handed.next(left) {
            Ok(Some(Reply::Progress(_))) => news_at = std::time::Instant::now(),
            Ok(Some(Reply::Delivered)) => {
                out.line(&format!(
                    "* file {} ({size} bytes) saved by the peer (sent by the duet already running here)",
                    ui::escaped(&name)
                ));
                return Ok(());
            }
            Ok(Some(Reply::NotSaved(why))) => return Err(Error::FileNotSaved { name, why }),
            Ok(Some(Reply::Failed(why))) => {
                return Err(Error::Other(format!(
                    "file {} NOT sent: {why}",
                    ui::escaped(&name)
                )));
            }
            Ok(Some(_)) | Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(Error::Other(
                    "the running duet stopped before the peer saved the file; run the same command again to go on where it stopped"
                        .into(),
                ));
            }
            Err(e) => return Err(Error::Other(format!("the running duet: {e}"))),
        }
    }
}

/// How long `send --file` waits for news of its file (an answer to the offer, chunks
/// acknowledged, SAVED) from a peer that otherwise answers, when `--timeout` is shorter: a
/// receiver checks a large partial file it resumes from before it answers.
const STALL: Duration = Duration::from_secs(60);

/// `duet send --file PATH`: offer the file, send what the peer lacks, exit 0 once the peer
/// saved it (checked end to end); a refusal or a failure says why, with its own exit code.
/// Run it again after a kill or a lost link and it goes on where it stopped.
fn send_file(args: SendOptions, dir: &Path, path: &Path) -> Result<(), Error> {
    let bind = parse_addr(&args.bind)?;
    let timeout = Duration::from_secs(args.timeout);
    let config = Config {
        delivery_timeout: timeout,
        ..Config::default()
    };
    let contacts = Contacts::load(dir)?;
    let target = contacts.find(&args.to)?;
    // A duet of this identity already talking to the peer sends the file in its session
    // (a second session would cut it off); it is told the file's absolute path, since it
    // may run elsewhere in the file tree.
    let absolute = fs::canonicalize(path)
        .map_err(|e| Error::Other(format!("cannot send {}: {e}", path.display())))?;
    if !fs::metadata(&absolute).is_ok_and(|m| m.is_file()) {
        return Err(Error::Other(format!(
            "cannot send {}: not a file",
            path.display()
        )));
    }
    if let Some(handed) = handoff::offer_file(dir, target.key, &absolute)
        .map_err(|e| Error::Other(format!("handing over to the running duet: {e}")))?
    {
        return file_handed_over(handed, &absolute, timeout.max(STALL).into());
    }
    let store = Store::open(dir)?;
    let reach = if args.tap.tap.is_none() {
        args.reach.config()?
    } else {
        None
    };
    let mut conversation = Conversation::duet(&contacts, Some(&target), config)?;
    let to = match target.addr {
        Some(to) => Some(to),
        None => {
            conversation.discover(&target, bind);
            None
        }
    };
    let stack = transport::open_reaching(bind, &args.tap, reach.is_some())?;
    let link = Link::bind(stack, bind, conversation)?;
    if to.is_none() {
        link.allow_broadcast()?;
    }
    let mut talk = Talk::new(link, Some(store), Some(target.key), Encoding::Utf8);
    // Nobody types here: the file may fill the whole window.
    talk.keep_room_for_typing(false);
    if let Some(config) = &reach {
        let port = talk.link.local_addr().port();
        let identity = Identity::load_or_create(dir)?;
        match Reaching::start(config, &identity, target.key, port) {
            Ok(reaching) => talk.reach(reaching),
            Err(e) => eprintln!("duet: internet reach is off: {e}"),
        }
    }
    let transfer = talk.send_file(path)?;
    let mut out = Output::Lines;
    let mut heard = false;
    let mut heard_count = 0;
    // Given up on after --timeout without a datagram from the peer (a file may take long;
    // a silent peer may not), or after STALL without any news of the file from a peer
    // that answers (one that takes binary messages but not files, such as a board).
    let stall = timeout.max(STALL);
    let mut progress_at = Instant::now();
    let mut file_news_at = Instant::now();
    let mut accepted = false;
    let result = loop {
        let deadline = talk.turn()?;
        let mut outcome = None;
        while let Some(happened) = talk.next_event() {
            match happened {
                Happened::FileSent { transfer: t, .. } if t == transfer => {
                    let from = talk.conversation().peer();
                    if let Some(line) = file_line(&happened, from) {
                        out.line(&line);
                    }
                    outcome = Some(Ok(()));
                }
                Happened::FileFailed {
                    transfer: Some(t),
                    name,
                    why,
                    refused,
                } if t == transfer => {
                    outcome = Some(Err(if refused {
                        Error::FileNotSaved { name, why }
                    } else if !heard {
                        Error::NoAnswer {
                            peer: talk.conversation().peer().or(to).unwrap_or(bind),
                            waited: args.timeout,
                        }
                    } else {
                        Error::Other(format!("file {name} NOT sent: {why}"))
                    }));
                }
                Happened::FileProgress { .. } => {
                    progress_at = Instant::now();
                    file_news_at = progress_at;
                }
                Happened::FileAccepted { from, .. } => {
                    heard = true;
                    accepted = true;
                    file_news_at = Instant::now();
                    if from > 0 {
                        let peer = talk.conversation().peer();
                        if let Some(line) = file_line(&happened, peer) {
                            out.line(&line);
                        }
                    }
                }
                Happened::PeerUp(_) => heard = true,
                Happened::Message {
                    from, who, text, ..
                } => {
                    heard = true;
                    out.line(&format!("{}: {text}", sender(who, from)));
                }
                Happened::Problem(text) => eprintln!("duet: {text}"),
                _ => {}
            }
        }
        if let Some(outcome) = outcome {
            break outcome;
        }
        // Anything from the peer counts as life: a large file's last chunk may wait long
        // for its check while acknowledgements of the rest keep coming.
        let count = talk.conversation().datagrams_heard();
        if count != heard_count {
            heard_count = count;
            heard = true;
            progress_at = Instant::now();
        }
        let give_up = (progress_at + timeout).min(file_news_at + stall);
        if Instant::now() >= file_news_at + stall {
            break Err(Error::Other(if accepted {
                format!(
                    "no news of the file from the peer for {} s; run the same command again to go on where it stopped",
                    stall.as_millis() / 1000
                )
            } else {
                format!(
                    "the peer answers but not about the file for {} s: it cannot take files (a board, or a duet from before file transfer)",
                    stall.as_millis() / 1000
                )
            }));
        }
        if Instant::now() >= give_up {
            let peer = talk.conversation().peer().or(to).unwrap_or(bind);
            break Err(if heard {
                Error::Other(format!(
                    "the peer stopped answering for {} s; run the same command again to go on where it stopped",
                    args.timeout
                ))
            } else {
                Error::NoAnswer {
                    peer,
                    waited: args.timeout,
                }
            });
        }
        talk.wait(deadline, None, Some(give_up))?;
    };
    talk.close();
    result
}
