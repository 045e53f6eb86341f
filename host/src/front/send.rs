//! `duet send`: one message (or several pieces of one text), exit once acknowledged.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;

use duet_core::legacy::PlainSendError;
use duet_core::session::{self, Config, MessageId, SendError};
use duet_core::text::Encoding;
use duet_core::time::{Duration, Instant};

use super::SendOptions;
use super::ui::Output;
use crate::app::Error;
use crate::app::contacts::Contacts;
use crate::app::conversation::DUET_PORT;
use crate::app::conversation::{Conversation, Shown, messages_of};
use crate::app::store::Store;
use crate::transport::{self, Link, parse_addr};

/// `duet send`.
pub fn send(args: SendOptions, dir: &Path) -> Result<(), Error> {
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
