//! The application: bring the board up, then run duet's one driver loop with the console
//! beside it.
//!
//! Everything large lives in statics handed out once (`StaticCell`/`ConstStaticCell`), so
//! `llvm-size` shows the firmware's whole RAM use and the stack stays small. The chat
//! itself is `duet_core`: the same sealed session (`Secure`, a `Session` inside a Noise
//! handshake), `Driver` and smoltcp adapter as the host's; this file only wires them to the
//! board.

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

use crate::board::{self, Board, CPU_HZ, Mmio};
use crate::clock::{self, SysTickClock};
use crate::config;
use crate::console::{BoardStatus, Console, LINE_MAX, Request};
use crate::entropy;
use crate::lan9118::{self, Frames, Lan9118};
use crate::logging;
use crate::outbox_record::OutboxRecord;
use crate::print::Print;
use crate::uart::CmsdkUart;

/// Bytes of text the session queues for sending: the console's longest line twice.
pub const OUTBOX_BYTES: usize = 2 * LINE_MAX;
/// Bytes of text the session holds on receipt: the longest message a peer may send, and
/// room to hold a few short parts that arrive ahead of a missing one.
pub const INBOX_BYTES: usize = 4096;
/// The sealed session at the board's sizes (the host's defaults hold ~64 KiB of text).
pub type Secure = duet_core::Secure<OUTBOX_BYTES, INBOX_BYTES>;

/// The network stack the driver loop runs on.
type Stack = SmoltcpStack<'static, Lan9118<'static>, SysTickClock>;

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
static FRAMES: ConstStaticCell<Frames> = ConstStaticCell::new(Frames::new());
static LINE: ConstStaticCell<Vec<u8, LINE_MAX>> = ConstStaticCell::new(Vec::new());
static STACK: StaticCell<Stack> = StaticCell::new();
static DRIVER: StaticCell<Driver<Stack>> = StaticCell::new();
static SESSION: StaticCell<Secure> = StaticCell::new();
static CONSOLE: StaticCell<Console<'static, CmsdkUart>> = StaticCell::new();

/// Why the board could not start chatting.
#[derive(Clone, Copy, Debug, defmt::Format)]
pub enum BootError {
    /// The Ethernet chip did not come up.
    Nic(lan9118::Error),
    /// The build-time address or route did not fit smoltcp's tables.
    AddressTable,
    /// A static buffer was already handed out: `boot` ran twice.
    StaticTaken,
    /// duet's UDP port could not be bound.
    Bind(smoltcp_stack::Error),
}

impl BootError {
    /// Say what went wrong, in words, on `out` (the console: no `core::fmt` there).
    fn print(self, out: &mut impl Print) {
        match self {
            BootError::Nic(e) => {
                out.text("Ethernet: ");
                e.print(out);
            }
            BootError::AddressTable => {
                out.text("address or route table full");
            }
            BootError::StaticTaken => {
                out.text("static buffers already in use");
            }
            BootError::Bind(e) => {
                out.text("cannot bind UDP port ")
                    .decimal(config::PORT)
                    .text(": ")
                    .text(e.as_str());
            }
        }
    }
}

/// Start the board and chat until power-off. Returns only by halting on a boot error.
pub fn run() -> ! {
    // First, before anything overwrites it: what the run before a warm reset left undelivered.
    let Some(outbox_record) = OutboxRecord::take() else {
        defmt::error!("outbox record taken twice");
        logging::stop(1);
    };
    let Some(board) = Board::take() else {
        defmt::error!("board peripherals taken twice");
        logging::stop(1);
    };
    let clock = SysTickClock::start(board.syst, CPU_HZ);
    let uart = CmsdkUart::new(board.uart0, CPU_HZ);
    let Some(console) = LINE
        .try_take()
        .and_then(|line| CONSOLE.try_init(Console::new(uart, line)))
    else {
        defmt::error!("console taken twice");
        logging::stop(1);
    };
    console.say(|out| {
        out.text(concat!(
            "duet firmware ",
            env!("CARGO_PKG_VERSION"),
            " on mps2-an385 (LAN9118, CMSDK UART)"
        ));
    });
    match Chat::boot(board.lan9118, clock) {
        Ok(chat) => match chat.run(console, outbox_record) {},
        Err(error) => {
            defmt::error!("boot failed: {}", error);
            console.say(|out| error.print(out.text("boot failed: ")));
            logging::stop(1);
        }
    }
}

/// The chat's parts, each in its static.
struct Chat {
    stack: &'static mut Stack,
    driver: &'static mut Driver<Stack>,
    session: &'static mut Secure,
    clock: SysTickClock,
    network_errors: u32,
    /// The board's public key, for the console.
    public_key: [u8; 32],
}

impl Chat {
    // Never inlined: the boot's locals (the session is built on the stack before it moves
    // into its static, ~6 KB) would otherwise stay in the caller's frame under the chat loop
    // for as long as the board runs.
    #[inline(never)]
    fn boot(nic: Mmio, clock: SysTickClock) -> Result<Chat, BootError> {
        let frames = FRAMES.try_take().ok_or(BootError::StaticTaken)?;
        let mut nic = Lan9118::new(nic, config::MAC, frames).map_err(BootError::Nic)?;
        let seed = entropy::boot_seed(&nic);

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
                Ipv4Address::from(config::ADDRESS).into(),
                config::PREFIX_LEN,
            );
            pushed = addrs.push(cidr).map_err(|_| BootError::AddressTable);
        });
        pushed?;
        iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Address::from(config::GATEWAY))
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

        let stack = STACK
            .try_init_with(|| SmoltcpStack::new(iface, nic, sockets, clock))
            .ok_or(BootError::StaticTaken)?;
        // Driver::bind's steps, so the driver's 2 KiB of buffers are built in their static
        // rather than on the stack and then copied.
        let mut socket = stack.socket().map_err(BootError::Bind)?;
        stack
            .bind(&mut socket, config::PORT)
            .map_err(BootError::Bind)?;
        if config::PEER_KEY.is_none() {
            // Nothing else leaves the board until someone pairs with it, and QEMU's slirp
            // holds the host's first datagram for about a second until it has seen the
            // board's Ethernet address. One empty datagram to the discard port of the
            // gateway (the host, through slirp) lets both sides learn each other's address
            // now. Failure only costs that second, so it is not fatal.
            let discard = SocketAddr::from((config::GATEWAY, DISCARD_PORT));
            if stack.send_to(&mut socket, discard, &[]).is_err() {
                defmt::warn!("boot announcement not sent");
            }
        }
        let driver = DRIVER
            .try_init_with(|| Driver::new(socket))
            .ok_or(BootError::StaticTaken)?;
        let peer = config::default_peer();
        // The greeted peer needs its key (DUET_PEER_KEY); without one the board waits
        // for `/pair` on the console, and nobody can reach it before.
        let greeted = config::PEER_KEY.map(|key| (key, peer));
        // The key pair is made inside the closure: it wipes its secret when dropped, and
        // made outside, every early return would carry a copy of that wipe.
        let session = SESSION
            .try_init_with(|| {
                Secure::new_sized(
                    clock.now(),
                    SecureConfig::default(),
                    StaticKeys::from_secret(config::BOARD_SECRET),
                    &[],
                    greeted,
                    seed,
                )
            })
            .ok_or(BootError::StaticTaken)?;
        let public_key = session.public_key();
        defmt::info!(
            "duet up: {}:{} epoch {=u32:#x}, peer {}",
            Ipv4Addr::from(config::ADDRESS),
            config::PORT,
            session.session().epoch(),
            peer
        );
        Ok(Chat {
            stack,
            driver,
            session,
            clock,
            network_errors: 0,
            public_key,
        })
    }

    /// The loop: network, then events, then typed input, then the outbox's record, then
    /// sleep until the next tick.
    fn run(
        mut self,
        console: &mut Console<'static, CmsdkUart>,
        mut outbox_record: OutboxRecord,
    ) -> Infallible {
        // With a peer key built in, the first poll sends the handshake to the default peer;
        // without one, the boot announcement queued in `boot` goes out. Either makes
        // smoltcp resolve the gateway and QEMU's slirp learn the board's Ethernet address,
        // so the host's first datagram is not held up by ARP.
        self.session
            .set_unix_time(self.clock.now(), outbox_record.handshake_clock());
        self.poll_network();
        console.show_id(self.public_key);
        if let Some(lost) = outbox_record.lost() {
            defmt::warn!("{} message(s) lost across a reset", lost.messages);
            console.show_lost(lost.messages, &lost.first);
        }
        console.say(|out| {
            out.text("duet ready at ")
                .ipv4(config::ADDRESS)
                .text(":")
                .decimal(config::PORT);
            match config::PEER_KEY {
                Some(_) => out.text(", peer ").socket_addr(config::default_peer()),
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
                address: config::ADDRESS,
                prefix_len: config::PREFIX_LEN,
                gateway: config::GATEWAY,
                port: config::PORT,
                mac: stack.device().mac(),
                uptime_ms: clock::millis(),
                nic: stack.device().stats(),
                send_would_block: driver.stats().send_would_block,
                network_errors: *network_errors,
                uart_overruns,
                stack_used: board::stack_high_water(),
                static_ram: board::static_ram(),
            });
            // Cheap when nothing changed: a count and an id compared. Kept after the input,
            // so lines typed just before `/reset` are in the record the reset leaves.
            outbox_record.update(session.session().pending(), console.oldest_undelivered());
            if request == Some(Request::Reset) {
                console.flush();
                board::reset();
            }
            if next.is_some_and(|at| at <= self.clock.now()) {
                // The driver hit its per-call budget: there is more to do right away.
                continue;
            }
            // Sleep until an interrupt: SysTick's, at the latest 1 ms from now. The NIC and
            // UART are polled, so this tick is what bounds their latency; a board with their
            // interrupts wired (LAN9118 IRQ 13, UART RX) could sleep until the session's
            // next deadline instead.
            cortex_m::asm::wfi();
        }
    }

    /// One pass of the driver loop; the next deadline it reports.
    fn poll_network(&mut self) -> Option<duet_core::Instant> {
        match self.driver.poll(self.stack, &self.clock, self.session) {
            Ok(next) => next,
            Err(error) => {
                self.network_errors = self.network_errors.wrapping_add(1);
                defmt::warn!("network: {}", error);
                None
            }
        }
    }
}

/// The clock's reading as smoltcp's timestamp.
fn smoltcp_now(clock: &SysTickClock) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_millis(i64::try_from(clock.now().as_millis()).unwrap_or(i64::MAX))
}
