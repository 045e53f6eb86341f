//! Network settings fixed when the firmware is built (see `build.rs` for the environment
//! variables that set them and their defaults).

include!(concat!(env!("OUT_DIR"), "/config.rs"));

/// The peer the session greets at boot. Only a default: while it is not answering,
/// whoever reaches the board first becomes the peer (the core's peer rules), and the
/// console's `/peer` changes it.
pub fn default_peer() -> core::net::SocketAddr {
    core::net::SocketAddr::from((PEER_IP, PEER_PORT))
}
