//! Who this duet is and whom it is paired with, and how a name or address the user typed
//! becomes a paired peer to talk to.

use std::net::SocketAddr;
use std::path::Path;

use duet_core::secure::PublicKey;

use super::Error;
use super::keys::{Identity, Peer, PeerKey, Peers};
use crate::transport::parse_addr;

/// Who this duet is and whom it is paired with.
pub struct Contacts {
    /// This duet's identity.
    pub identity: Identity,
    /// The paired peers.
    pub peers: Peers,
}

/// A paired peer to talk to.
#[derive(Clone, Debug)]
pub struct Target {
    /// Its name in the peers file.
    pub name: String,
    /// Its static key.
    pub key: PeerKey,
    /// Where it is, if known.
    pub addr: Option<SocketAddr>,
}

impl Contacts {
    /// Load (or, the first time, create) the identity, and the paired peers.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        Ok(Contacts {
            identity: Identity::load_or_create(dir)?,
            peers: Peers::load(dir)?,
        })
    }

    /// A paired peer from `NAME`, `NAME@HOST:PORT`, or the `HOST:PORT` recorded for one.
    pub fn find(&self, text: &str) -> Result<Target, Error> {
        let target = |p: &Peer, addr: Option<SocketAddr>| Target {
            name: p.name.clone(),
            key: p.key,
            addr: addr.or(p.addr),
        };
        if let Some(p) = self.peers.get(text) {
            return Ok(target(p, None));
        }
        if self.peers.iter().next().is_none() {
            return Err(Error::NotPaired);
        }
        // NAME@HOST:PORT: that peer, at that address (its key proves it is there).
        if let Some((name, at)) = text.split_once('@') {
            let peer = self.peers.get(name).ok_or_else(|| Error::UnknownPeer {
                name: name.to_owned(),
                paired: self.names(),
            })?;
            return Ok(target(peer, Some(parse_addr(at)?)));
        }
        if !text.contains(':') {
            return Err(Error::UnknownPeer {
                name: text.to_owned(),
                paired: self.names(),
            });
        }
        let addr = parse_addr(text)?;
        // An address alone names the peer recorded there, and no other: taking it for the
        // only paired peer (or any) would send that peer's messages somewhere it never was.
        let at: Vec<_> = self.peers.iter().filter(|p| p.addr == Some(addr)).collect();
        match at.as_slice() {
            [one] => Ok(target(one, Some(addr))),
            [] => Err(Error::NoPeerAt {
                addr,
                paired: self.names(),
            }),
            _ => Err(Error::Other(format!(
                "several paired peers are recorded at {addr}: name one ({})",
                self.names()
            ))),
        }
    }

    /// The paired peers' names, comma-separated.
    pub fn names(&self) -> String {
        self.peers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every paired peer's key.
    pub fn allowed(&self) -> Vec<PublicKey> {
        self.peers.iter().map(|p| p.key.0).collect()
    }

    /// Each paired peer's key and name.
    pub fn names_by_key(&self) -> Vec<(PublicKey, String)> {
        self.peers
            .iter()
            .map(|p| (p.key.0, p.name.clone()))
            .collect()
    }
}
