//! `duet listen`: print every message received, one line each.

use std::path::Path;

use duet_core::MAX_DATAGRAM;
use duet_core::session::Config;
use duet_core::time::{Duration, Instant};

use super::ListenOptions;
use super::ui::Output;
use super::{SenderLabel, banner, counters, file_line};
use crate::app::Error;
use crate::app::contacts::Contacts;
use crate::app::conversation::Conversation;
use crate::app::store::Store;
use crate::app::talk::{Happened, Talk};
use crate::transport::{self, Link, parse_addr};

/// How long `listen --count` stays after its last message when the sender does not say
/// goodbye: long enough to acknowledge retransmissions whose first acknowledgement was lost.
const LINGER_QUIET: Duration = Duration::from_millis(1500);
/// The longest `listen --count` lingers in any case.
const LINGER_MAX: Duration = Duration::from_secs(6);
/// `duet listen`.
pub fn listen(args: ListenOptions, dir: &Path) -> Result<(), Error> {
    let bind = parse_addr(&args.bind)?;
    let (conversation, store, shown_names) = if args.legacy.legacy {
        // Legacy mode keeps its datagrams in the history too, when it can.
        let store = Store::open(dir)
            .inspect_err(|e| eprintln!("duet: not keeping a history: {e}"))
            .ok();
        (Conversation::legacy(&args.legacy, None), store, None)
    } else {
        let contacts = Contacts::load(dir)?;
        if contacts.peers.iter().next().is_none() {
            return Err(Error::NotPaired);
        }
        (
            Conversation::duet(&contacts, None, Config::default())?,
            Some(Store::open(dir)?),
            Some(contacts),
        )
    };
    let link = Link::bind(transport::open(bind, &args.tap)?, bind, conversation)?;
    let mut out = Output::Batched(String::new());
    banner(&mut out, &args.legacy, link.local_addr());
    let mut talk = Talk::new(link, store, None, args.legacy.read_encoding());
    talk.set_file_options(args.files.clone());
    // Nobody types here: a file sent back through a hand-off may fill the window.
    talk.keep_room_for_typing(false);
    if !args.legacy.legacy {
        talk.serve_handoffs(dir)?;
    }
    if let Some(contacts) = &shown_names {
        // Stored by a run that stopped before it showed them.
        talk.show_unshown(None, |k| contacts.peers.by_key(k).map(|p| p.name.clone()))?;
    }
    let mut received = 0u64;
    let mut label = SenderLabel::default();
    let mut linger_since: Option<(Instant, u32)> = None;
    let mut linger_start = None;
    loop {
        let deadline = talk.turn()?;
        let mut peer_left = false;
        while let Some(happened) = talk.next_event() {
            match happened {
                // Stored before it is shown and acknowledged; one stored by an earlier run
                // is a retransmission and does not come out again.
                Happened::Message { from, who, text, .. } => {
                    received += 1;
                    out.line_fmt(format_args!("{}: {text}", label.of(who, from)));
                }
                Happened::Oversized { from } => out.line(&format!(
                    "* dropped a datagram of more than {MAX_DATAGRAM} bytes from {from} (duet reads at most {MAX_DATAGRAM})"
                )),
                // A file is one message: one line, naming it, its size and where it is.
                Happened::FileReceived { .. } => {
                    received += 1;
                    if let Some(line) = file_line(&happened, talk.conversation().peer()) {
                        out.line(&line);
                    }
                }
                Happened::FileFailed { .. } => {
                    if let Some(line) = file_line(&happened, talk.conversation().peer()) {
                        out.line(&line);
                    }
                }
                Happened::PeerDown => peer_left = true,
                Happened::Problem(text) => out.line(&format!("* {text}")),
                _ => {}
            }
            if args.count.is_some_and(|n| received >= n) && args.legacy.legacy {
                break;
            }
        }
        if args.count.is_some_and(|n| received >= n) {
            let Conversation::Duet { secure: s, .. } = talk.conversation() else {
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
            // Our own messages first: a file's SAVED is how its sender learns it is saved,
            // and the session gives up on it by itself after its delivery timeout.
            let ours = s.session().pending();
            let done = now >= quiet_since + LINGER_QUIET || now >= started + LINGER_MAX;
            if peer_left || (ours == 0 && done) {
                break;
            }
            // Past the linger's end only for our own messages: their deadlines wake us.
            let limit = (!done).then(|| (quiet_since + LINGER_QUIET).min(started + LINGER_MAX));
            out.flush();
            talk.wait(deadline, None, limit)?;
            continue;
        }
        out.flush();
        talk.wait(deadline, None, None)?;
    }
    let link = &talk.link;
    if args.verbose
        && let Conversation::Duet { secure: s, .. } = &link.protocol
    {
        eprintln!("duet: {}", counters(s));
    }
    Ok(())
}
