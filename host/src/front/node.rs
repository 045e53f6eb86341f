//! `duet dht-node`: a Mainline DHT node in server mode, for private networks where the
//! public DHT cannot be reached (a company network, a test bed).

use std::net::{SocketAddr, SocketAddrV4};

use crate::app::Error;
use crate::transport::parse_addr;
use crate::transport::reach::dht::DhtNode;

/// Run a DHT node bound to `bind`, joining the nodes in `bootstrap`, until stopped.
pub fn dht_node(bind: &str, bootstrap: &[String]) -> Result<(), Error> {
    let SocketAddr::V4(bind) = parse_addr(bind)? else {
        return Err(Error::Other(
            "the DHT speaks IPv4 only: --bind an IPv4 ADDR:PORT".into(),
        ));
    };
    let node = DhtNode::start(bind, bootstrap)
        .map_err(|e| Error::Other(format!("cannot start the DHT node: {e}")))?;
    let addr: SocketAddrV4 = node.local_addr();
    println!(
        "* DHT node listening on {addr}; others bootstrap from it with DUET_DHT_BOOTSTRAP={addr}"
    );
    // Serves on its own threads until the process is stopped.
    loop {
        std::thread::park();
    }
}
