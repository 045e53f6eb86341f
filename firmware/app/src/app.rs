//! The application: take the board's devices, then run duet's one driver loop with the
//! console beside it.
//!
//! Everything large lives in statics handed out once (`StaticCell`/`ConstStaticCell`), so
//! `llvm-size` shows the firmware's whole RAM use and the stack stays small; the few whose
//! type depends on the board are in the board's [`Cells`]. The chat itself is `duet_core`:
//! the same sealed session (`Secure`, a `Session` inside a Noise handshake), `Driver` and
//! smoltcp adapter as the host's; this file only wires them to the board.

use core::convert::Infallible;
use core::net::{Ipv4Addr, SocketAddr};

use duet_core::smoltcp_stack::{self, SmoltcpStack};
use duet_core::{Clock, Driver, SecureConfig, StaticKeys};
use embedded_nal::{UdpClientStack, UdpFullStack};
use heapless::Vec;
use smoltcp::iface::{self, Interface, SocketSet, SocketStorage};
use smoltcp::socket::udp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};
use static_cell::{ConstStaticCell, StaticCell};

use crate::console::{BoardStatus, Console, LINE_MAX, Request};
use crate::keys::{KeyStore, StoredKeys, boot_keys};
use crate::outbox_record::OutboxRecord;
use crate::print::Print;
use crate::{Board, ConsoleIo, Nic, Parts, Settings};

/// Bytes of text the session queues for sending: the console's longest line twice.
pub const OUTBOX_BYTES: usize = 2 * LINE_MAX;
/// Bytes of text the session holds on receipt: the longest message a peer may send, and
/// room to hold a few short parts that arrive ahead of a missing one.
pub const INBOX_BYTES: usize = 4096;
/// The sealed session at the board's sizes (the host's defaults hold ~64 KiB of text).
pub type Secure = duet_core::Secure<OUTBOX_BYTES, INBOX_BYTES>;

/// The network stack the driver loop runs on.
type Stack<B> = SmoltcpStack<'static, <B as Board>::Nic, <B as Board>::Clock>;

/// The discard service (RFC 863): where the boot announcement goes.
const DISCARD_PORT: u16 = 9;
/// Datagrams the UDP socket buffers on receive; a flood beyond this is dropped by smoltcp
/// before it costs the session anything.
const RX_PACKETS: usize = 8;
/// Bytes of received datagrams buffered: four of the largest duet datagrams, more of the
/// usual short ones. Sized with the stack in mind: static RAM plus the ~9 KiB a handshake
/// needs must fit a 64 KiB part.
const RX_BYTES: usize = 4 * duet_core::MAX_DATAGRAM;
/// Datagrams queued for sending. Each `send_to` flushes at once, so the queue only fills
/// while the gateway's Ethernet address is being resolved.
const TX_PACKETS: usize = 4;
/// Bytes of queued datagrams.
const TX_BYTES: usize = 2 * duet_core::MAX_DATAGRAM;

static SOCKETS: ConstStaticCell<[SocketStorage<'static>; 1]> =
    ConstStaticCell::new([SocketStorage::EMPTY; 1]);
static RX_META: ConstStaticCell<[udp::PacketMetadata; RX_PACKETS]> =
    ConstStaticCell::new([udp::PacketMetadata::EMPTY; RX_PACKETS]);
static RX_DATA: ConstStaticCell<[u8; RX_BYTES]> = ConstStaticCell::new([0; RX_BYTES]);
static TX_META: ConstStaticCell<[udp::PacketMetadata; TX_PACKETS]> =
    ConstStaticCell::new([udp::PacketMetadata::EMPTY; TX_PACKETS]);
static TX_DATA: ConstStaticCell<[u8; TX_BYTES]> = ConstStaticCell::new([0; TX_BYTES]);
static LINE: ConstStaticCell<Vec<u8, LINE_MAX>> = ConstStaticCell::new(Vec::new());
static SESSION: StaticCell<Secure> = StaticCell::new();

/// The statics whose types depend on the board: the board's image declares one,
/// `static CELLS: Cells<MyBoard> = Cells::new();`, and hands it to [`run`].
pub struct Cells<B: Board> {
    stack: StaticCell<Stack<B>>,
    driver: StaticCell<Driver<Stack<B>>>,
    console: StaticCell<Console<'static, B::Console>>,
}

impl<B: Board> Cells<B> {
    /// Empty cells.
    pub const fn new() -> Self {
        Cells {
            stack: StaticCell::new(),
            driver: StaticCell::new(),
            console: StaticCell::new(),
        }
    }
}

impl<B: Board> Default for Cells<B> {
    fn default() -> Self {
        Self::new()
    }
}

/// Why the board could not start chatting.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum BootError {
    /// The build-time address or route did not fit smoltcp's tables.
    AddressTable,
    /// A static buffer was already handed out: `run` ran twice.
    StaticTaken,
    /// duet's UDP port could not be bound.
    Bind(smoltcp_stack::Error),
}

impl BootError {
    /// Say what went wrong, in words, on `out` (the console: no `core::fmt` there).
    fn print(self, out: &mut impl Print, settings: &Settings) {
        match self {
            BootError::AddressTable => {
                out.text("address or route table full");
            }
            BootError::StaticTaken => {
                out.text("static buffers already in use");
            }
            BootError::Bind(e) => {
                out.text("cannot bind UDP port ")
                    .decimal(settings.port)
                    .text(": ")
                    .text(e.as_str());
            }
        }
    }
}

/// Start the application on the board's devices and chat until power-off. Returns only by
/// halting the board on a boot error.
///
/// Call it early: the first thing it does is read what the run before a warm reset left
/// undelivered (in `.uninit` RAM), before anything can overwrite it.
pub fn run<B: Board>(mut board: B, parts: Parts<B>, cells: &'static Cells<B>) -> ! {
    let Some(outbox_record) = OutboxRecord::take() else {
        error!("outbox record taken twice");
        board.halt();
    };
    let Parts {
        nic,
        clock,
        console,
        keys,
    } = parts;
    let Some(console) = LINE
        .try_take()
        .and_then(|line| cells.console.try_init(Console::new(console, line)))
    else {
        error!("console taken twice");
        board.halt();
    };
    console.say(|out| {
        out.text(concat!("duet firmware ", env!("CARGO_PKG_VERSION"), " on "))
            .text(B::NAME);
    });
    match Chat::boot(&mut board, cells, nic, clock, keys) {
        Ok(chat) => match chat.run(board, console, outbox_record) {},
        Err(error) => {
            error!("boot failed: {}", error);
            console.say(|out| error.print(out.text("boot failed: "), &B::SETTINGS));
            board.halt();
        }
    }
}

/// The chat's parts, each in its static.
struct Chat<B: Board> {
    stack: &'static mut Stack<B>,
    driver: &'static mut Driver<Stack<B>>,
    session: &'static mut Secure,
    clock: B::Clock,
    keys: B::Keys,
    /// What the key store holds, or would if the board had one.
    stored: StoredKeys,
    network_errors: u32,
    /// The board's public key, for the console.
    public_key: [u8; 32],
}

impl<B: Board> Chat<B> {
    // Never inlined: the boot's locals (the session is built on the stack before it moves
    // into its static, ~6 KB) would otherwise stay in the caller's frame under the chat loop
    // for as long as the board runs.
    #[inline(never)]
    fn boot(
        board: &mut B,
        cells: &'static Cells<B>,
        mut nic: B::Nic,
        clock: B::Clock,
        mut keys: B::Keys,
    ) -> Result<Chat<B>, BootError> {
        let settings = &B::SETTINGS;
        let mut seed = [0u8; 32];
        board.fill_random(&mut seed);

        let mut iface_config =
            iface::Config::new(HardwareAddress::Ethernet(EthernetAddress(nic.mac())));
        // smoltcp draws on its seed only for TCP, DHCP and DNS, none of which run here.
        iface_config.random_seed = u64::from_le_bytes([
            seed[0], seed[1], seed[2], seed[3], seed[4], seed[5], seed[6], seed[7],
        ]);
        let mut iface = Interface::new(iface_config, &mut nic, smoltcp_now(&clock));
        let mut pushed = Ok(());
        iface.update_ip_addrs(|addrs| {
            let cidr = IpCidr::new(
                Ipv4Address::from(settings.address).into(),
                settings.prefix_len,
            );
            pushed = addrs.push(cidr).map_err(|_| BootError::AddressTable);
        });
        pushed?;
        iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Address::from(settings.gateway))
            .map_err(|_| BootError::AddressTable)?;

        let rx = udp::PacketBuffer::new(
            &mut RX_META.try_take().ok_or(BootError::StaticTaken)?[..],
            &mut RX_DATA.try_take().ok_or(BootError::StaticTaken)?[..],
        );
        let tx = udp::PacketBuffer::new(
            &mut TX_META.try_take().ok_or(BootError::StaticTaken)?[..],
            &mut TX_DATA.try_take().ok_or(BootError::StaticTaken)?[..],
        );
        let mut sockets =
            SocketSet::new(&mut SOCKETS.try_take().ok_or(BootError::StaticTaken)?[..]);
        // The set has exactly one free slot for exactly one socket: `add` cannot run out.
        sockets.add(udp::Socket::new(rx, tx));

        let stack = cells
            .stack
            .try_init_with(|| SmoltcpStack::new(iface, nic, sockets, clock))
            .ok_or(BootError::StaticTaken)?;
        // Driver::bind's steps, so the driver's 2 KiB of buffers are built in their static
        // rather than on the stack and then copied.
        let mut socket = stack.socket().map_err(BootError::Bind)?;
        stack
            .bind(&mut socket, settings.port)
            .map_err(BootError::Bind)?;

        // The keys: what the build gave wins over what the board kept, which wins over a
        // new secret drawn now (and kept, so the board's identity survives a reboot).
        let kept = if B::Keys::KEEPS { keys.load() } else { None };
        let stored = boot_keys(settings, kept, || {
            let mut secret = [0u8; 32];
            board.fill_random(&mut secret);
            secret
        });
        let secret = stored.secret;
        let greeted = stored.peer_socket();
        if B::Keys::KEEPS
            && kept != Some(stored)
            && let Err(e) = keys.save(&stored)
        {
            warn!("keys not kept: {}", e);
        }

        if greeted.is_none() {
            // Nothing else leaves the board until someone pairs with it, and QEMU's slirp
            // holds the host's first datagram for about a second until it has seen the
            // board's Ethernet address (a LAN's hosts likewise wait on ARP). One empty
            // datagram to the discard port of the gateway lets both sides learn each
            // other's address now. Failure only costs that second, so it is not fatal.
            let discard = SocketAddr::from((settings.gateway, DISCARD_PORT));
            if stack.send_to(&mut socket, discard, &[]).is_err() {
                warn!("boot announcement not sent");
            }
        }
        let driver = cells
            .driver
            .try_init_with(|| Driver::new(socket))
            .ok_or(BootError::StaticTaken)?;
        // The key pair is made inside the closure: it wipes its secret when dropped, and
        // made outside, every early return would carry a copy of that wipe.
        let session = SESSION
            .try_init_with(|| {
                Secure::new_sized(
                    clock.now(),
                    SecureConfig::default(),
                    StaticKeys::from_secret(secret),
                    &[],
                    greeted,
                    seed,
                )
            })
            .ok_or(BootError::StaticTaken)?;
        let public_key = session.public_key();
        info!(
            "duet up: {}:{} epoch {=u32:#x}, peer {}",
            Ipv4Addr::from(settings.address),
            settings.port,
            session.session().epoch(),
            greeted.map_or(settings.default_peer(), |(_, addr)| addr)
        );
        Ok(Chat {
            stack,
            driver,
            session,
            clock,
            keys,
            stored,
            network_errors: 0,
            public_key,
        })
    }

    /// The loop: network, then events, then typed input, then the outbox's record, then
    /// sleep until the next tick.
    fn run(
        mut self,
        mut board: B,
        console: &mut Console<'static, B::Console>,
        mut outbox_record: OutboxRecord,
    ) -> Infallible {
        // With a peer to greet, the first poll sends the handshake to it; without one, the
        // boot announcement queued in `boot` goes out. Either makes smoltcp resolve the
        // gateway and the other side learn the board's Ethernet address, so the peer's
        // first datagram is not held up by ARP.
        self.session
            .set_unix_time(self.clock.now(), outbox_record.handshake_clock());
        self.poll_network();
        console.show_id(self.public_key);
        if let Some(lost) = outbox_record.lost() {
            warn!("{} message(s) lost across a reset", lost.messages);
            console.show_lost(lost.messages, &lost.first);
        }
        let settings = &B::SETTINGS;
        let greeted = self.stored.peer;
        console.say(|out| {
            out.text("duet ready at ")
                .ipv4(settings.address)
                .text(":")
                .decimal(settings.port);
            match greeted {
                Some((_, addr)) => out.text(", peer ").socket_addr(SocketAddr::V4(addr)),
                None => out.text(", no peer yet: /pair KEY IP:PORT"),
            }
            .text(" (type /help)");
        });
        loop {
            let next = self.poll_network();
            console.show_events(self.session);
            let uart_overruns = console.io().overruns();
            let now = self.clock.now();
            let Chat {
                stack,
                driver,
                session,
                network_errors,
                ..
            } = &mut self;
            let request = console.poll_input(session, now, || BoardStatus {
                address: settings.address,
                prefix_len: settings.prefix_len,
                gateway: settings.gateway,
                port: settings.port,
                mac: stack.device().mac(),
                uptime_ms: now.as_millis(),
                nic: stack.device().stats(),
                send_would_block: driver.stats().send_would_block,
                network_errors: *network_errors,
                uart_overruns,
                stack_used: board.stack_used(),
                static_ram: board.static_ram(),
            });
            // Cheap when nothing changed: a count and an id compared. Kept after the input,
            // so lines typed just before `/reset` are in the record the reset leaves.
            outbox_record.update(session.session().pending(), console.oldest_undelivered());
            match request {
                Some(Request::Reset) => {
                    console.flush();
                    board.reset();
                }
                Some(Request::PeerChanged) => self.keep_peer(),
                None => {}
            }
            if next.is_some_and(|at| at <= self.clock.now()) {
                // The driver hit its per-call budget: there is more to do right away.
                continue;
            }
            // Until an interrupt: the clock's tick, at the latest 1 ms from now. The NIC
            // and console are polled, so this tick is what bounds their latency; a board
            // with their interrupts wired could sleep until the session's next deadline.
            board.sleep();
        }
    }

    /// Keep the peer `/pair` or `/peer` just set, so a reboot greets it again. Only the
    /// console's commands land here, never a peer's roaming, so the flash is written as
    /// often as someone types those.
    fn keep_peer(&mut self) {
        if !B::Keys::KEEPS {
            return;
        }
        let peer = match (self.session.peer_key(), self.session.peer_addr()) {
            (Some(key), Some(SocketAddr::V4(addr))) => Some((key, addr)),
            _ => None,
        };
        let stored = StoredKeys {
            peer,
            ..self.stored
        };
        if stored == self.stored {
            return;
        }
        match self.keys.save(&stored) {
            Ok(()) => self.stored = stored,
            Err(e) => warn!("peer not kept: {}", e),
        }
    }

    /// One pass of the driver loop; the next deadline it reports.
    fn poll_network(&mut self) -> Option<duet_core::Instant> {
        match self.driver.poll(self.stack, &self.clock, self.session) {
            Ok(next) => next,
            Err(error) => {
                self.network_errors = self.network_errors.wrapping_add(1);
                warn!("network: {}", error);
                None
            }
        }
    }
}

/// The clock's reading as smoltcp's timestamp.
fn smoltcp_now(clock: &impl Clock) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_millis(i64::try_from(clock.now().as_millis()).unwrap_or(i64::MAX))
}
