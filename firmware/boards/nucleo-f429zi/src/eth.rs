//! The STM32's Ethernet MAC as smoltcp 0.14's `phy::Device`, over `stm32-eth`'s DMA
//! descriptor rings (that crate's own smoltcp support is for smoltcp 0.12).
//!
//! Contract: nothing here panics. A receive token is handed out only with a transmit token
//! whose descriptor is free, and a transmit token only when a descriptor is free; should
//! the ring refuse anyway, the frame is built in a scratch buffer and dropped, and counted.

use duet_firmware_app::{Nic, NicStats};
use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use stm32_eth::dma::{EthernetDMA, RxRing, TxRing};

/// The largest Ethernet frame smoltcp builds, without its FCS (the MAC adds it).
const FRAME_MAX: usize = 1514;

/// The Ethernet device: the DMA rings, the board's Ethernet address and counters.
pub struct Eth {
    dma: EthernetDMA<'static, 'static>,
    mac: [u8; 6],
    rx: RxCounters,
    tx: TxCounters,
    /// Where a frame goes that the TX ring refused after all (see the module's contract).
    scratch: [u8; FRAME_MAX],
}

#[derive(Default)]
struct RxCounters {
    frames: u32,
    errors: u32,
}

#[derive(Default)]
struct TxCounters {
    frames: u32,
    busy: u32,
    dropped: u32,
}

impl Eth {
    /// The device over a started DMA, answering to `mac` (the MAC itself is promiscuous;
    /// smoltcp drops frames for other addresses).
    pub fn new(dma: EthernetDMA<'static, 'static>, mac: [u8; 6]) -> Self {
        Eth {
            dma,
            mac,
            rx: RxCounters::default(),
            tx: TxCounters::default(),
            scratch: [0; FRAME_MAX],
        }
    }
}

impl Nic for Eth {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn stats(&self) -> NicStats {
        NicStats {
            rx_frames: self.rx.frames,
            rx_errors: self.rx.errors,
            rx_dropped: 0,
            tx_frames: self.tx.frames,
            tx_errors: self.tx.dropped,
            tx_busy: self.tx.busy,
        }
    }
}

/// A received frame, read from the ring when smoltcp consumes the token.
pub struct RxToken<'a> {
    ring: &'a mut RxRing<'static>,
    counters: &'a mut RxCounters,
}

/// Room for one frame in the TX ring.
pub struct TxToken<'a> {
    ring: &'a mut TxRing<'static>,
    counters: &'a mut TxCounters,
    scratch: &'a mut [u8; FRAME_MAX],
}

impl phy::Device for Eth {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let Eth {
            dma,
            rx,
            tx,
            scratch,
            ..
        } = self;
        let (rx_ring, tx_ring) = dma.split();
        if !rx_ring.next_entry_available() {
            return None;
        }
        if !tx_ring.next_entry_available() {
            // smoltcp may answer a frame at once (ARP): wait for room rather than lose it.
            tx.busy = tx.busy.wrapping_add(1);
            return None;
        }
        Some((
            RxToken {
                ring: rx_ring,
                counters: rx,
            },
            TxToken {
                ring: tx_ring,
                counters: tx,
                scratch,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        let Eth {
            dma, tx, scratch, ..
        } = self;
        let (_, tx_ring) = dma.split();
        if !tx_ring.next_entry_available() {
            tx.busy = tx.busy.wrapping_add(1);
            return None;
        }
        Some(TxToken {
            ring: tx_ring,
            counters: tx,
            scratch,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME_MAX;
        caps.max_burst_size = Some(1);
        // stm32-eth has the MAC insert the IPv4 and UDP checksums on send and check them on
        // receipt (the sealed session would reject a corrupted datagram anyway).
        caps.checksum = ChecksumCapabilities::ignored();
        caps
    }
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        match self.ring.recv_next(None) {
            Ok(packet) => {
                self.counters.frames = self.counters.frames.wrapping_add(1);
                let result = f(&packet);
                packet.free();
                result
            }
            Err(_) => {
                // A frame the MAC flagged, or none after all: smoltcp drops an empty one.
                self.counters.errors = self.counters.errors.wrapping_add(1);
                f(&[])
            }
        }
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(FRAME_MAX);
        match self.ring.send_next(len, None) {
            Ok(mut packet) => {
                let result = f(&mut packet);
                packet.send();
                self.counters.frames = self.counters.frames.wrapping_add(1);
                result
            }
            Err(_) => {
                self.counters.dropped = self.counters.dropped.wrapping_add(1);
                f(&mut self.scratch[..len])
            }
        }
    }
}
