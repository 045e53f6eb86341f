//! `duet history`: stored messages, oldest first, or the file's integrity.

use std::io::Write as _;
use std::path::Path;

use super::HistoryOptions;
use super::ui::{self};
use crate::app::Error;
use crate::app::contacts::Contacts;
use crate::app::keys::PeerKey;
use crate::app::store::{Direction, Store};

/// `duet history`: stored messages, oldest first.
pub fn history(args: HistoryOptions, dir: &Path) -> Result<(), Error> {
    let contacts = Contacts::load(dir)?;
    let peer = match &args.peer {
        Some(name) => {
            Some(
                contacts
                    .peers
                    .get(name)
                    .map(|p| p.key)
                    .ok_or_else(|| Error::UnknownPeer {
                        name: name.clone(),
                        paired: contacts.names(),
                    })?,
            )
        }
        None => None,
    };
    let store = Store::open(dir)?;
    if args.check {
        let verdict = store.integrity()?;
        // The exit status carries the verdict too, so a reader that left (`| head -0`)
        // changes nothing.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "integrity: {verdict}").and_then(|()| out.flush());
        return if verdict == "ok" {
            Ok(())
        } else {
            Err(Error::Other("the history file is damaged".into()))
        };
    }
    let mut out = std::io::stdout().lock();
    for entry in store.history(peer.as_ref(), args.search.as_deref(), args.limit)? {
        let name = if entry.plain {
            format!("{} (plain)", entry.peer)
        } else {
            entry
                .peer
                .parse::<PeerKey>()
                .ok()
                .and_then(|k| contacts.peers.by_key(&k))
                .map_or_else(
                    || entry.peer.chars().take(8).collect::<String>(),
                    |p| p.name.clone(),
                )
        };
        let when = chrono::DateTime::from_timestamp_millis(entry.created_ms)
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        let (arrow, state) = match entry.direction {
            Direction::In => ("<-", String::new()),
            Direction::Out => ("->", format!(" [{}]", entry.state)),
        };
        // A closed stdout (`| head`) ends the listing quietly.
        if writeln!(
            out,
            "{when} {arrow} {name}: {}{state}",
            if entry.plain {
                // Escaped when it arrived, with its undecodable bytes as \xHH.
                entry.text.clone()
            } else {
                ui::escaped(&entry.text)
            }
        )
        .is_err()
        {
            break;
        }
    }
    Ok(())
}
