//! `duet status`: how the duet running here reaches its peer.

use std::path::Path;

use crate::app::Error;
use crate::app::contacts::Contacts;
use crate::app::handoff;

/// Ask the running chat (or listen) of the config directory `dir` and print its answer.
pub fn status(dir: &Path) -> Result<(), Error> {
    let status = handoff::status(dir)
        .map_err(|e| Error::Other(format!("asking the running duet: {e}")))?
        .ok_or_else(|| {
            Error::Other(
                "no duet is running with this config directory (start `duet chat NAME`)".into(),
            )
        })?;
    let contacts = Contacts::load(dir)?;
    let name = status
        .peer
        .and_then(|k| contacts.peers.by_key(&k).map(|p| p.name.clone()))
        .unwrap_or_else(|| "no peer yet".to_owned());
    let line = match (&status.path, &status.addr) {
        (Some(path), Some(addr)) => format!(
            "path to {name}: {path} at {addr}, round trip {}",
            status
                .rtt_ms
                .map_or_else(|| "not measured yet".to_owned(), |ms| format!("{ms} ms"))
        ),
        _ => format!("path to {name}: none (the peer does not answer)"),
    };
    println!("{line}");
    Ok(())
}
