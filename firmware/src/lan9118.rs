//! A polled driver for the SMSC LAN9118 Ethernet controller, as smoltcp's `phy::Device`.
//!
//! The chip is a MAC+PHY with on-chip FIFOs behind 32-bit registers; software moves whole
//! frames through FIFO ports, word by word. No interrupts and no DMA: `receive` looks at
//! the RX status FIFO and copies one frame out; `transmit` writes a frame's two command
//! words and its data into the TX FIFO, which the chip sends on its own.
//!
//! Contract: nothing here panics; every wait is bounded by [`SPIN_LIMIT`] register reads;
//! frames the chip marks as bad or that are longer than [`FRAME_MAX`] are dropped and
//! counted, never handed to smoltcp.
//!
//! Register map (byte offsets from the chip's base; SMSC LAN9118 datasheet rev. 1.5, §5):
//!
//! | offset | register        | use here                                               |
//! |--------|-----------------|--------------------------------------------------------|
//! | 0x00   | RX_DATA_FIFO    | frame data, one 32-bit word per read                   |
//! | 0x20   | TX_DATA_FIFO    | TX command A, command B, then the frame's words        |
//! | 0x40   | RX_STATUS_FIFO  | one word per frame: length (29:16), error summary (15) |
//! | 0x48   | TX_STATUS_FIFO  | one word per sent frame: error summary (15)            |
//! | 0x50   | ID_REV          | chip id (31:16) = 0x0118, revision (15:0)               |
//! | 0x54   | IRQ_CFG         | 0: the IRQ pin stays off (polled driver)               |
//! | 0x5c   | INT_EN          | 0: no interrupt sources                                |
//! | 0x64   | BYTE_TEST       | reads 0x8765_4321 when the bus works                   |
//! | 0x70   | TX_CFG          | bit 1 TX_ON: the transmitter takes frames              |
//! | 0x74   | HW_CFG          | bit 0 SRST: soft reset, self-clearing                  |
//! | 0x7c   | RX_FIFO_INF     | RX status words waiting (23:16)                        |
//! | 0x80   | TX_FIFO_INF     | TX status words waiting (23:16), free data bytes (15:0) |
//! | 0x84   | PMT_CTRL        | bit 0 READY: the chip has come out of reset            |
//! | 0x9c   | FREE_RUN        | a free-running 25 MHz counter (`board::FreeRun`)       |
//! | 0xa0   | RX_DROP         | frames the chip dropped (FIFO full), clears on read    |
//! | 0xa4   | MAC_CSR_CMD     | indirect MAC register access: busy (31), read (30), index (7:0) |
//! | 0xa8   | MAC_CSR_DATA    | the MAC register's value                               |
//!
//! MAC registers (indirect, through MAC_CSR_CMD/DATA): MAC_CR = 1 (bit 3 TXEN, bit 2
//! RXEN), ADDRH = 2 (MAC bytes 5:4), ADDRL = 3 (MAC bytes 3:0), least significant byte
//! first on the wire.

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::board::Mmio;
use duet_firmware_app::print::Print;
use duet_firmware_app::{Nic, NicStats};

/// Register offsets and bits; see the module docs' table.
mod reg {
    pub const RX_DATA_FIFO: usize = 0x00;
    pub const TX_DATA_FIFO: usize = 0x20;
    pub const RX_STATUS_FIFO: usize = 0x40;
    pub const TX_STATUS_FIFO: usize = 0x48;
    pub const ID_REV: usize = 0x50;
    pub const IRQ_CFG: usize = 0x54;
    pub const INT_EN: usize = 0x5c;
    pub const BYTE_TEST: usize = 0x64;
    pub const TX_CFG: usize = 0x70;
    pub const HW_CFG: usize = 0x74;
    pub const RX_FIFO_INF: usize = 0x7c;
    pub const TX_FIFO_INF: usize = 0x80;
    pub const PMT_CTRL: usize = 0x84;
    pub const RX_DROP: usize = 0xa0;
    pub const MAC_CSR_CMD: usize = 0xa4;
    pub const MAC_CSR_DATA: usize = 0xa8;

    pub const BYTE_TEST_VALUE: u32 = 0x8765_4321;
    pub const CHIP_ID: u32 = 0x0118;
    pub const HW_CFG_SRST: u32 = 1 << 0;
    pub const PMT_CTRL_READY: u32 = 1 << 0;
    pub const TX_CFG_TX_ON: u32 = 1 << 1;
    pub const MAC_CSR_BUSY: u32 = 1 << 31;
    pub const MAC_CSR_READ: u32 = 1 << 30;

    pub const RX_STS_LEN_SHIFT: u32 = 16;
    pub const RX_STS_LEN_MASK: u32 = 0x3fff;
    pub const RX_STS_ERROR: u32 = 1 << 15;
    pub const TX_STS_ERROR: u32 = 1 << 15;
    pub const TX_CMD_A_FIRST: u32 = 1 << 13;
    pub const TX_CMD_A_LAST: u32 = 1 << 12;

    /// MAC control register index.
    pub const MAC_CR: u32 = 1;
    pub const MAC_CR_TXEN: u32 = 1 << 3;
    pub const MAC_CR_RXEN: u32 = 1 << 2;
    /// Ethernet address, bytes 5:4.
    pub const ADDRH: u32 = 2;
    /// Ethernet address, bytes 3:0.
    pub const ADDRL: u32 = 3;
}

/// The longest frame moved through the FIFOs: 1514 bytes of Ethernet frame, the 4-byte FCS
/// the chip appends on receive, rounded up to whole words.
pub const FRAME_MAX: usize = 1520;
/// The largest frame smoltcp may hand to `transmit` (no FCS: the chip adds it).
const MTU: usize = 1514;
/// Bytes of TX FIFO a frame takes besides its data: the two command words.
const TX_OVERHEAD: usize = 8;
/// Register reads any wait may take before giving up.
pub const SPIN_LIMIT: u32 = 1_000_000;

/// Why the chip could not be brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum Error {
    /// BYTE_TEST or ID_REV did not read as a LAN9118's: wrong address or no chip.
    NotFound {
        /// What ID_REV read.
        id_rev: u32,
    },
    /// The chip did not finish a reset or a MAC register access in time.
    Timeout,
}

impl Error {
    /// Say what went wrong, in words, on `out` (the console: no `core::fmt` there).
    pub fn print(self, out: &mut impl Print) {
        match self {
            Error::NotFound { id_rev } => {
                out.text("no LAN9118 found (ID_REV 0x")
                    .hex(id_rev, 8)
                    .text(")");
            }
            Error::Timeout => {
                out.text("LAN9118 did not answer in time");
            }
        }
    }
}

/// Frame counters, for the console's `/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, defmt::Format)]
pub struct Stats {
    /// Frames handed to smoltcp.
    pub rx_frames: u32,
    /// Frames the chip flagged (CRC, runt, too long) or longer than [`FRAME_MAX`].
    pub rx_errors: u32,
    /// Frames the chip dropped because its RX FIFO was full.
    pub rx_dropped: u32,
    /// Frames written to the TX FIFO.
    pub tx_frames: u32,
    /// Frames the chip reported as failed to send.
    pub tx_errors: u32,
    /// Times smoltcp had to wait because the TX FIFO had no room.
    pub tx_busy: u32,
}

/// One frame's room each way: the driver copies frames between these and the FIFOs.
pub struct Frames {
    rx: [u8; FRAME_MAX],
    tx: [u8; FRAME_MAX],
}

impl Frames {
    /// Zeroed buffers (a `const fn`, so a static of them lands in `.bss`).
    pub const fn new() -> Self {
        Frames {
            rx: [0; FRAME_MAX],
            tx: [0; FRAME_MAX],
        }
    }
}

/// The LAN9118, brought up and ready for smoltcp.
pub struct Lan9118<'a> {
    regs: Mmio,
    mac: [u8; 6],
    stats: Stats,
    frames: &'a mut Frames,
}

impl<'a> Lan9118<'a> {
    /// Reset the chip, set its Ethernet address (`mac`, or the one it loaded from its
    /// EEPROM when `None`) and turn on the transmitter and receiver; frames pass through
    /// `frames`.
    pub fn new(
        mut regs: Mmio,
        mac: Option<[u8; 6]>,
        frames: &'a mut Frames,
    ) -> Result<Self, Error> {
        wait(|| regs.read(reg::PMT_CTRL) & reg::PMT_CTRL_READY != 0)?;
        let id_rev = regs.read(reg::ID_REV);
        if regs.read(reg::BYTE_TEST) != reg::BYTE_TEST_VALUE || id_rev >> 16 != reg::CHIP_ID {
            return Err(Error::NotFound { id_rev });
        }
        regs.write(reg::HW_CFG, reg::HW_CFG_SRST);
        wait(|| regs.read(reg::HW_CFG) & reg::HW_CFG_SRST == 0)?;
        wait(|| regs.read(reg::PMT_CTRL) & reg::PMT_CTRL_READY != 0)?;
        // Polled: the IRQ pin stays deasserted and no source is enabled.
        regs.write(reg::IRQ_CFG, 0);
        regs.write(reg::INT_EN, 0);

        let mut nic = Lan9118 {
            regs,
            mac: [0; 6],
            stats: Stats::default(),
            frames,
        };
        let mac = match mac {
            Some(mac) => mac,
            None => {
                let low = nic.mac_read(reg::ADDRL)?.to_le_bytes();
                let high = nic.mac_read(reg::ADDRH)?.to_le_bytes();
                let loaded = [low[0], low[1], low[2], low[3], high[0], high[1]];
                // No EEPROM (all ones or zeros) or a group address: use a locally
                // administered unicast one rather than one the MAC would never match.
                if loaded == [0; 6] || loaded[0] & 1 != 0 {
                    FALLBACK_MAC
                } else {
                    loaded
                }
            }
        };
        nic.mac_write(
            reg::ADDRL,
            u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
        )?;
        nic.mac_write(reg::ADDRH, u32::from_le_bytes([mac[4], mac[5], 0, 0]))?;
        nic.mac = mac;
        // Not promiscuous: the MAC filters on our address and broadcast (ARP needs both).
        nic.mac_write(reg::MAC_CR, reg::MAC_CR_TXEN | reg::MAC_CR_RXEN)?;
        nic.regs.write(reg::TX_CFG, reg::TX_CFG_TX_ON);
        Ok(nic)
    }

    fn mac_wait(&self) -> Result<(), Error> {
        wait(|| self.regs.read(reg::MAC_CSR_CMD) & reg::MAC_CSR_BUSY == 0)
    }

    fn mac_read(&mut self, index: u32) -> Result<u32, Error> {
        self.mac_wait()?;
        self.regs.write(
            reg::MAC_CSR_CMD,
            reg::MAC_CSR_BUSY | reg::MAC_CSR_READ | index,
        );
        self.mac_wait()?;
        Ok(self.regs.read(reg::MAC_CSR_DATA))
    }

    fn mac_write(&mut self, index: u32, value: u32) -> Result<(), Error> {
        self.mac_wait()?;
        self.regs.write(reg::MAC_CSR_DATA, value);
        self.regs.write(reg::MAC_CSR_CMD, reg::MAC_CSR_BUSY | index);
        self.mac_wait()
    }

    /// Copy the next good frame out of the RX FIFO into `self.rx`; its length without FCS.
    fn receive_frame(&mut self) -> Option<usize> {
        // Bounded: each round consumes one frame from the FIFO, good or bad.
        for _ in 0..RX_FRAMES_PER_CALL {
            if (self.regs.read(reg::RX_FIFO_INF) >> 16) & 0xff == 0 {
                return None;
            }
            let status = self.regs.read(reg::RX_STATUS_FIFO);
            let len = ((status >> reg::RX_STS_LEN_SHIFT) & reg::RX_STS_LEN_MASK) as usize;
            let words = len.div_ceil(4);
            let good = status & reg::RX_STS_ERROR == 0 && (4..=FRAME_MAX).contains(&len);
            if good {
                for chunk in self.frames.rx.chunks_exact_mut(4).take(words) {
                    chunk.copy_from_slice(&self.regs.read(reg::RX_DATA_FIFO).to_le_bytes());
                }
                self.stats.rx_frames = self.stats.rx_frames.wrapping_add(1);
                return Some(len - 4);
            }
            // Drain the bad frame's words so the next status word lines up with its data.
            for _ in 0..words {
                self.regs.read(reg::RX_DATA_FIFO);
            }
            self.stats.rx_errors = self.stats.rx_errors.wrapping_add(1);
        }
        None
    }

    /// Collect finished transmissions' status words, counting failures.
    fn drain_tx_status(&mut self) {
        let waiting = (self.regs.read(reg::TX_FIFO_INF) >> 16) & 0xff;
        for _ in 0..waiting {
            if self.regs.read(reg::TX_STATUS_FIFO) & reg::TX_STS_ERROR != 0 {
                self.stats.tx_errors = self.stats.tx_errors.wrapping_add(1);
            }
        }
    }

    fn tx_room(&mut self) -> bool {
        self.drain_tx_status();
        let free = (self.regs.read(reg::TX_FIFO_INF) & 0xffff) as usize;
        let room = free >= MTU + TX_OVERHEAD;
        if !room {
            self.stats.tx_busy = self.stats.tx_busy.wrapping_add(1);
        }
        room
    }
}

/// Frames (good or bad) one `receive` may look at before giving up for this call.
const RX_FRAMES_PER_CALL: usize = 8;
/// Used when neither the build nor the chip's EEPROM gives an address: locally
/// administered, unicast.
const FALLBACK_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

/// Spin until `done`, at most [`SPIN_LIMIT`] times.
fn wait(mut done: impl FnMut() -> bool) -> Result<(), Error> {
    for _ in 0..SPIN_LIMIT {
        if done() {
            return Ok(());
        }
    }
    Err(Error::Timeout)
}

/// A received frame, already copied out of the FIFO.
pub struct RxToken<'a> {
    frame: &'a [u8],
}

/// Room to build one frame; consuming it sends the frame.
pub struct TxToken<'a> {
    regs: &'a mut Mmio,
    buffer: &'a mut [u8; FRAME_MAX],
    stats: &'a mut Stats,
    /// The TX FIFO had room when the token was made; without it the frame is dropped.
    room: bool,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // smoltcp never asks for more than the MTU from `capabilities`, which fits.
        let len = len.min(MTU);
        let frame = &mut self.buffer[..len];
        let result = f(frame);
        if !self.room {
            // Lost like a frame on a busy wire; smoltcp's protocols retry what matters.
            return result;
        }
        let len32 = len as u32;
        self.regs.write(
            reg::TX_DATA_FIFO,
            reg::TX_CMD_A_FIRST | reg::TX_CMD_A_LAST | len32,
        );
        // Command B: a packet tag (the length again, for debugging) and the frame length.
        self.regs.write(reg::TX_DATA_FIFO, (len32 << 16) | len32);
        for chunk in self.buffer[..len].chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            self.regs.write(reg::TX_DATA_FIFO, u32::from_le_bytes(word));
        }
        self.stats.tx_frames = self.stats.tx_frames.wrapping_add(1);
        result
    }
}

impl<'d> phy::Device for Lan9118<'d> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let dropped = self.regs.read(reg::RX_DROP);
        self.stats.rx_dropped = self.stats.rx_dropped.wrapping_add(dropped);
        let len = self.receive_frame()?;
        // smoltcp wants a TX token with every RX token, to answer (ARP) at once. The frame
        // is already out of the FIFO, so it is handed over even when the TX FIFO is full;
        // the answer is then dropped and the asker retries.
        let room = self.tx_room();
        let Lan9118 {
            regs,
            stats,
            frames,
            ..
        } = self;
        Some((
            RxToken {
                frame: &frames.rx[..len],
            },
            TxToken {
                regs,
                buffer: &mut frames.tx,
                stats,
                room,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken<'_>> {
        if !self.tx_room() {
            return None;
        }
        Some(TxToken {
            regs: &mut self.regs,
            buffer: &mut self.frames.tx,
            stats: &mut self.stats,
            room: true,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        // One frame per poll round: the FIFO holds several, but smoltcp need not know.
        caps.max_burst_size = Some(1);
        caps
    }
}

impl Nic for Lan9118<'_> {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn stats(&self) -> NicStats {
        let s = self.stats;
        NicStats {
            rx_frames: s.rx_frames,
            rx_errors: s.rx_errors,
            rx_dropped: s.rx_dropped,
            tx_frames: s.tx_frames,
            tx_errors: s.tx_errors,
            tx_busy: s.tx_busy,
        }
    }
}
