//! The Mainline DHT (BitTorrent's, BEP 5) as duet's rendezvous: publish our sealed
//! candidates for a paired peer, look up the peer's, and run a DHT node for private
//! networks (`duet dht-node`).
//!
//! The `mainline` crate does the protocol. Its queries take seconds (each request may wait
//! its 2 s timeout) and resolving the bootstrap names takes DNS, so nothing here runs on the
//! caller's thread: [`Rendezvous::spawn`] returns at once, a dispatcher thread builds the
//! DHT node (DNS, bind) and starts each operation on a thread of its own, at most
//! [`MAX_IN_FLIGHT`] at once, and every operation answers through a [`Pending`] the chat
//! loop polls. A query that never ends (it should not: mainline bounds every query by its
//! request timeout) holds one of those slots, never the chat.
//!
//! The DHT node uses a socket of its own, not the chat socket: DHT traffic does not need
//! the chat socket's NAT mapping, and keeping them apart keeps the chat socket's demux to
//! duet, STUN and TURN.
//!
//! Records and their secrets come from [`super::rendezvous`]; the BEP 44 sequence number
//! of a record is its timestamp (unix seconds), raised to one above the last one this
//! handle published when the clock did not move, so every publication supersedes the
//! previous one.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use futures_lite::future::block_on;
use mainline::async_dht::AsyncDht;
use mainline::{Dht, MutableItem};

use super::rendezvous::{self, PairSecret, Record, RecordSecrets, SALT_LEN};
use super::{Candidate, Pending, ReachConfig, ReachError};

/// Operations running at once, at most; more are refused with [`ReachError::Busy`].
pub const MAX_IN_FLIGHT: usize = 8;

/// How a DHT node is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhtConfig {
    /// Bootstrap nodes, `HOST:PORT` each; empty: the first node of a new network.
    pub bootstrap: Vec<String>,
    /// Address to bind the DHT socket to (default `0.0.0.0`). mainline is IPv4-only.
    pub bind: Ipv4Addr,
    /// Port to bind; `None`: any free port.
    pub port: Option<u16>,
    /// Per-request timeout; `None`: mainline's default (2 s).
    pub request_timeout: Option<Duration>,
}

impl DhtConfig {
    /// A client of the bootstrap nodes `config` names, on any port of every interface.
    pub fn from_reach(config: &ReachConfig) -> DhtConfig {
        DhtConfig {
            bootstrap: config.bootstrap.clone(),
            bind: Ipv4Addr::UNSPECIFIED,
            port: None,
            request_timeout: None,
        }
    }

    fn build(&self, server_mode: bool) -> Result<AsyncDht, ReachError> {
        let mut builder = Dht::builder();
        if self.bootstrap.is_empty() {
            builder.no_bootstrap();
        } else {
            // Resolves names: this runs on a worker thread (or in `duet dht-node`).
            builder.bootstrap(&self.bootstrap);
        }
        builder.bind_address(self.bind);
        if let Some(port) = self.port {
            builder.port(port);
        }
        if let Some(timeout) = self.request_timeout {
            builder.request_timeout(timeout);
        }
        if server_mode {
            builder.server_mode();
        }
        let dht = builder
            .build()
            .map_err(|e| ReachError::Dht(format!("cannot start a DHT node: {e}")))?;
        Ok(dht.as_async())
    }
}

/// A mutable item found on the DHT (its signature already checked by mainline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundItem {
    /// The item's value: for duet, a sealed record.
    pub value: Vec<u8>,
    /// Its BEP 44 sequence number.
    pub seq: i64,
}

/// Work for a DHT operation thread: given the node (or why there is none), do the
/// operation and report through the `Pending` it captured.
type Job = Box<dyn FnOnce(Result<AsyncDht, ReachError>) + Send>;

/// A DHT client on background threads. Dropping it stops the node once the operations in
/// flight have finished.
#[derive(Debug)]
pub struct Rendezvous {
    jobs: mpsc::Sender<Job>,
    last_seq: AtomicI64,
    config: DhtConfig,
}

impl Rendezvous {
    /// Start a DHT client. Returns at once: the node is built (bootstrap names resolved,
    /// socket bound) on a background thread; operations asked for meanwhile wait for it.
    pub fn spawn(config: DhtConfig) -> Result<Rendezvous, ReachError> {
        Rendezvous::spawn_after(config, 0)
    }

    fn spawn_after(config: DhtConfig, last_seq: i64) -> Result<Rendezvous, ReachError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let node_config = config.clone();
        std::thread::Builder::new()
            .name("duet-dht".into())
            .spawn(move || dispatch(&node_config, &queue))?;
        Ok(Rendezvous {
            jobs,
            last_seq: AtomicI64::new(last_seq),
            config,
        })
    }

    /// A new client with the same configuration, for when our public address changed.
    ///
    /// A DHT node hands out write tokens bound to the IP address that asked (BEP 5), and
    /// mainline keeps the closest nodes of a look-up with their tokens for up to five
    /// minutes and puts with them without asking again. After the address changed, those
    /// puts fail, every retry too (in the NAT testbed none was accepted: "PutQuery timed
    /// out with no responses"), and the peer never learns where we went. A fresh client has
    /// no tokens, routing table or socket of the old address: its first put looks up anew
    /// and gets tokens for the new one. The sequence numbers go on from this one's, so its
    /// records supersede ours. Operations in flight on this client finish or fail on their
    /// own.
    pub fn restart(&self) -> Result<Rendezvous, ReachError> {
        Rendezvous::spawn_after(self.config.clone(), self.last_seq.load(Ordering::Relaxed))
    }

    fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce(AsyncDht) -> Result<T, ReachError> + Send + 'static,
    ) -> Pending<Result<T, ReachError>> {
        let (reply, pending) = Pending::new();
        let job: Job = Box::new(move |dht| {
            // The receiver may be gone: then nobody wants the answer.
            let _ = reply.send(dht.and_then(work));
        });
        // If the dispatcher is gone the job (and its reply sender) is dropped, and the
        // Pending reports WorkerGone.
        let _ = self.jobs.send(job);
        pending
    }

    /// Put a mutable item signed by `secrets`' key under its salt.
    pub fn put(
        &self,
        secrets: &RecordSecrets,
        value: Vec<u8>,
        seq: i64,
    ) -> Pending<Result<(), ReachError>> {
        let salt = *secrets.salt();
        let key = secrets.signing_key();
        self.submit(move |dht| {
            let item = MutableItem::new(key, &value, seq, Some(&salt));
            block_on(dht.put_mutable(item, None))
                .map(|_| ())
                .map_err(|e| ReachError::Dht(e.to_string()))
        })
    }

    /// Get the most recent mutable item of `public_key` under `salt`; `None` if no node
    /// has it.
    pub fn get(
        &self,
        public_key: [u8; 32],
        salt: [u8; SALT_LEN],
    ) -> Pending<Result<Option<FoundItem>, ReachError>> {
        self.submit(move |dht| Ok(get_blocking(&dht, &public_key, &salt)))
    }

    /// The next sequence number: `unix_secs`, or one above the last one used.
    fn next_seq(&self, unix_secs: u64) -> i64 {
        let wanted = i64::try_from(unix_secs).unwrap_or(i64::MAX);
        let mut last = self.last_seq.load(Ordering::Relaxed);
        loop {
            let seq = wanted.max(last.saturating_add(1));
            match self
                .last_seq
                .compare_exchange(last, seq, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return seq,
                Err(now) => last = now,
            }
        }
    }

    /// Seal `candidates` for the paired peer and publish them for the period of
    /// `unix_secs`. Call it when the candidates change and when the period turns.
    pub fn publish_candidates(
        &self,
        pair: &PairSecret,
        unix_secs: u64,
        candidates: &[Candidate],
    ) -> Result<Pending<Result<(), ReachError>>, ReachError> {
        let secrets = pair.outgoing(rendezvous::period(unix_secs));
        self.publish_sealed(&secrets, unix_secs, candidates)
    }

    /// Publish the inviter's candidates under a pairing code's nameplate.
    pub fn publish_invite(
        &self,
        nameplate: &str,
        unix_secs: u64,
        candidates: &[Candidate],
    ) -> Result<Pending<Result<(), ReachError>>, ReachError> {
        let secrets = rendezvous::invite_secrets(nameplate, rendezvous::period(unix_secs));
        self.publish_sealed(&secrets, unix_secs, candidates)
    }

    fn publish_sealed(
        &self,
        secrets: &RecordSecrets,
        unix_secs: u64,
        candidates: &[Candidate],
    ) -> Result<Pending<Result<(), ReachError>>, ReachError> {
        let record = Record {
            timestamp: unix_secs,
            candidates: candidates.to_vec(),
        };
        let value = secrets.seal(&record, rendezvous::random_nonce()?)?;
        Ok(self.put(secrets, value, self.next_seq(unix_secs)))
    }

    /// Look up the paired peer's candidates: the record it published for us in the period
    /// of `unix_secs` (and, early in a period, the previous one). `Ok(None)`: no record.
    pub fn lookup_candidates(
        &self,
        pair: &PairSecret,
        unix_secs: u64,
    ) -> Pending<Result<Option<Record>, ReachError>> {
        let secrets: Vec<RecordSecrets> = rendezvous::lookup_periods(unix_secs)
            .into_iter()
            .map(|period| pair.incoming(period))
            .collect();
        self.lookup_sealed(secrets)
    }

    /// Look up an inviter's candidates by the pairing code's nameplate.
    pub fn lookup_invite(
        &self,
        nameplate: &str,
        unix_secs: u64,
    ) -> Pending<Result<Option<Record>, ReachError>> {
        let secrets = rendezvous::lookup_periods(unix_secs)
            .into_iter()
            .map(|period| rendezvous::invite_secrets(nameplate, period))
            .collect();
        self.lookup_sealed(secrets)
    }

    /// Try each record location in order; the first that holds a record that opens wins.
    fn lookup_sealed(
        &self,
        secrets: Vec<RecordSecrets>,
    ) -> Pending<Result<Option<Record>, ReachError>> {
        self.submit(move |dht| {
            let mut failure = None;
            for secrets in &secrets {
                let Some(item) = get_blocking(&dht, &secrets.public_key(), secrets.salt()) else {
                    continue;
                };
                match secrets.open(&item.value) {
                    Ok(record) => return Ok(Some(record)),
                    // Only the key's holder can sign an item there, so this is a bug or a
                    // newer format: report it if nothing else turns up.
                    Err(e) => failure = Some(ReachError::Record(e)),
                }
            }
            failure.map_or(Ok(None), Err)
        })
    }

    /// The DHT socket's local address, once the node is up.
    pub fn local_addr(&self) -> Pending<Result<SocketAddrV4, ReachError>> {
        self.submit(|dht| Ok(block_on(dht.info()).local_addr()))
    }
}

fn get_blocking(dht: &AsyncDht, public_key: &[u8; 32], salt: &[u8]) -> Option<FoundItem> {
    block_on(dht.get_mutable_most_recent(public_key, Some(salt))).map(|item| FoundItem {
        value: item.value().to_vec(),
        seq: item.seq(),
    })
}

/// The dispatcher: build the node, then start each job on its own thread.
fn dispatch(config: &DhtConfig, queue: &mpsc::Receiver<Job>) {
    let dht = config.build(false);
    if let Err(e) = &dht {
        log::warn!("{e}");
    }
    let in_flight = Arc::new(AtomicUsize::new(0));
    // Ends when the Rendezvous is dropped.
    while let Ok(job) = queue.recv() {
        let dht = match &dht {
            Ok(dht) => dht.clone(),
            Err(e) => {
                job(Err(ReachError::Dht(e.to_string())));
                continue;
            }
        };
        if in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
            in_flight.fetch_sub(1, Ordering::SeqCst);
            job(Err(ReachError::Busy));
            continue;
        }
        let counter = Arc::clone(&in_flight);
        let started = std::thread::Builder::new()
            .name("duet-dht-op".into())
            .spawn(move || {
                job(Ok(dht));
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = started {
            // The job went down with the closure; its Pending reports WorkerGone.
            in_flight.fetch_sub(1, Ordering::SeqCst);
            log::warn!("cannot start a DHT operation: {e}");
        }
    }
}

/// A DHT node in server mode: it answers other nodes' queries and stores their items.
/// For private networks (`duet dht-node`) and tests. Dropping it stops the node.
#[derive(Debug)]
pub struct DhtNode {
    dht: AsyncDht,
    addr: SocketAddrV4,
}

impl DhtNode {
    /// Start a node bound to `bind`, bootstrapped from `bootstrap` (`HOST:PORT` each; empty
    /// for the first node of a network). Blocks for DNS and the bind: call it from the
    /// `dht-node` command or a test, not from the chat loop.
    pub fn start(bind: SocketAddrV4, bootstrap: &[String]) -> Result<DhtNode, ReachError> {
        let config = DhtConfig {
            bootstrap: bootstrap.to_vec(),
            bind: *bind.ip(),
            port: (bind.port() != 0).then_some(bind.port()),
            request_timeout: None,
        };
        let dht = config.build(true)?;
        let mut addr = block_on(dht.info()).local_addr();
        if addr.ip().is_unspecified() {
            addr.set_ip(*bind.ip());
        }
        Ok(DhtNode { dht, addr })
    }

    /// The address other nodes bootstrap from.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// How many nodes this node knows of (its routing table's size).
    pub fn known_nodes(&self) -> usize {
        block_on(self.dht.to_bootstrap()).len()
    }
}

/// `duet dht-node --bind ADDR:PORT [--bootstrap HOST:PORT]`: run a server-mode node until
/// the process is stopped. Returns only on a start-up error.
pub fn run_dht_node(bind: SocketAddrV4, bootstrap: &[String]) -> Result<(), ReachError> {
    let node = DhtNode::start(bind, bootstrap)?;
    log::info!("DHT node listening on {}", node.local_addr());
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::reach::CandidateKind;
    use std::time::Instant;

    const WAIT: Duration = Duration::from_secs(60);

    fn loopback_network(size: usize) -> Vec<DhtNode> {
        let first = DhtNode::start(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), &[]).unwrap();
        let bootstrap = vec![first.local_addr().to_string()];
        let mut nodes = vec![first];
        for _ in 1..size {
            let node =
                DhtNode::start(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), &bootstrap).unwrap();
            assert_eq!(node.local_addr().ip(), &Ipv4Addr::LOCALHOST);
            nodes.push(node);
        }
        nodes
    }

    fn client(nodes: &[DhtNode]) -> Rendezvous {
        Rendezvous::spawn(DhtConfig {
            bootstrap: nodes.iter().map(|n| n.local_addr().to_string()).collect(),
            bind: Ipv4Addr::LOCALHOST,
            port: None,
            request_timeout: Some(Duration::from_millis(500)),
        })
        .unwrap()
    }

    fn pair(shared: u8) -> (PairSecret, PairSecret) {
        let (a, b) = ([0xa1; 32], [0xb2; 32]);
        (
            PairSecret::new([shared; 32], a, b).unwrap(),
            PairSecret::new([shared; 32], b, a).unwrap(),
        )
    }

    #[test]
    fn a_restarted_client_keeps_its_configuration_and_raises_its_sequence_numbers() {
        let config = DhtConfig {
            bootstrap: Vec::new(),
            bind: Ipv4Addr::LOCALHOST,
            port: None,
            request_timeout: Some(Duration::from_millis(500)),
        };
        let old = Rendezvous::spawn(config.clone()).unwrap();
        let last = old.next_seq(1_000);
        let fresh = old.restart().unwrap();
        assert_eq!(fresh.config, config);
        // Published in the same second: the fresh client's record still supersedes.
        assert_eq!(fresh.next_seq(1_000), last + 1);
    }

    #[test]
    fn candidates_published_by_one_client_are_found_by_the_other() {
        let nodes = loopback_network(3);
        let (alice_client, bob_client) = (client(&nodes), client(&nodes));
        let (alice, bob) = pair(0x33);
        let now = 1_774_800_000;
        let candidates = [
            Candidate {
                addr: "203.0.113.11:7789".parse().unwrap(),
                kind: CandidateKind::Stun,
            },
            Candidate {
                addr: "10.1.0.2:7789".parse().unwrap(),
                kind: CandidateKind::Lan,
            },
        ];
        let started = Instant::now();
        alice_client
            .publish_candidates(&alice, now, &candidates)
            .unwrap()
            .wait(WAIT)
            .unwrap()
            .unwrap();
        let record = bob_client
            .lookup_candidates(&bob, now + 60)
            .wait(WAIT)
            .unwrap()
            .unwrap()
            .expect("bob finds alice's record");
        assert_eq!(record.candidates, candidates);
        assert_eq!(record.timestamp, now);
        eprintln!("put and get on loopback took {:?}", started.elapsed());

        // A newer publication supersedes the older one.
        let moved = [Candidate {
            addr: "203.0.113.11:40000".parse().unwrap(),
            kind: CandidateKind::Mapped,
        }];
        alice_client
            .publish_candidates(&alice, now + 120, &moved)
            .unwrap()
            .wait(WAIT)
            .unwrap()
            .unwrap();
        let record = bob_client
            .lookup_candidates(&bob, now + 180)
            .wait(WAIT)
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(record.candidates, moved);

        // Alice's record is for bob only: alice looking up "bob's record for alice" finds
        // nothing, and neither does another pair.
        assert_eq!(
            alice_client
                .lookup_candidates(&alice, now + 60)
                .wait(WAIT)
                .unwrap()
                .unwrap(),
            None
        );
        let (_, stranger) = pair(0x44);
        assert_eq!(
            bob_client
                .lookup_candidates(&stranger, now + 60)
                .wait(WAIT)
                .unwrap()
                .unwrap(),
            None
        );
    }

    #[test]
    fn invite_record_is_found_by_nameplate() {
        let nodes = loopback_network(3);
        let (inviter, joiner) = (client(&nodes), client(&nodes));
        let now = 1_774_800_000;
        let candidates = [Candidate {
            addr: "198.51.100.4:7789".parse().unwrap(),
            kind: CandidateKind::Stun,
        }];
        inviter
            .publish_invite("42", now, &candidates)
            .unwrap()
            .wait(WAIT)
            .unwrap()
            .unwrap();
        let record = joiner
            .lookup_invite("42", now + 5)
            .wait(WAIT)
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(record.candidates, candidates);
    }

    #[test]
    fn a_client_with_no_reachable_bootstrap_fails_in_bounded_time() {
        // A port nobody listens on: the put finds no nodes.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rendezvous = Rendezvous::spawn(DhtConfig {
            bootstrap: vec![silent.local_addr().unwrap().to_string()],
            bind: Ipv4Addr::LOCALHOST,
            port: None,
            request_timeout: Some(Duration::from_millis(200)),
        })
        .unwrap();
        let (alice, _) = pair(0x55);
        let result = rendezvous
            .publish_candidates(&alice, 1_774_800_000, &[])
            .unwrap()
            .wait(WAIT)
            .unwrap();
        assert!(matches!(result, Err(ReachError::Dht(_))), "{result:?}");
    }

    #[test]
    fn sequence_numbers_always_rise() {
        let rendezvous = Rendezvous {
            jobs: mpsc::channel().0,
            last_seq: AtomicI64::new(0),
            config: DhtConfig {
                bootstrap: Vec::new(),
                bind: Ipv4Addr::LOCALHOST,
                port: None,
                request_timeout: None,
            },
        };
        assert_eq!(rendezvous.next_seq(100), 100);
        assert_eq!(rendezvous.next_seq(100), 101);
        assert_eq!(rendezvous.next_seq(50), 102);
        assert_eq!(rendezvous.next_seq(200), 200);
    }
}
