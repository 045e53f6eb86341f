//! The CMSDK APB UART (ARM DDI 0479C, section 4.3): the console's byte stream, behind
//! `embedded-io`'s `Read`, `ReadReady`, `Write` and `WriteReady`.
//!
//! The UART has a one-byte holding register each way and no FIFO. `read_ready` lets the
//! main loop take input without blocking; `write` waits while the transmit register is
//! full, which on QEMU is never long (the byte goes straight to the host's terminal).

use core::convert::Infallible;

use embedded_io::{ErrorType, Read, ReadReady, Write, WriteReady};

use duet_firmware_app::{ConsoleIo, polled};

use crate::board::Mmio;

/// Register offsets and bits.
mod reg {
    /// Received byte on read, byte to send on write (bits 7:0).
    pub const DATA: usize = 0x00;
    /// Status; bits 3:2 are sticky overrun flags, cleared by writing 1.
    pub const STATE: usize = 0x04;
    /// The transmit holding register is full.
    pub const STATE_TX_FULL: u32 = 1 << 0;
    /// A received byte waits in DATA.
    pub const STATE_RX_FULL: u32 = 1 << 1;
    /// A received byte was lost because DATA was not read in time.
    pub const STATE_RX_OVERRUN: u32 = 1 << 3;
    /// Control: enables and interrupt enables.
    pub const CTRL: usize = 0x08;
    /// Transmitter enable.
    pub const CTRL_TX_EN: u32 = 1 << 0;
    /// Receiver enable.
    pub const CTRL_RX_EN: u32 = 1 << 1;
    /// Baud rate divider: the APB clock divided by the baud rate, at least 16.
    pub const BAUDDIV: usize = 0x10;
}

/// The console's baud rate on a real board (QEMU ignores it).
pub const BAUD: u32 = 115_200;

/// A polled CMSDK APB UART.
pub struct CmsdkUart {
    regs: Mmio,
    overruns: u32,
}

impl CmsdkUart {
    /// Program the divider for [`BAUD`] on a `clock_hz` APB clock and enable both
    /// directions, interrupts off.
    pub fn new(mut regs: Mmio, clock_hz: u32) -> Self {
        regs.write(reg::CTRL, 0);
        regs.write(reg::BAUDDIV, (clock_hz / BAUD).max(16));
        regs.write(reg::STATE, reg::STATE_RX_OVERRUN);
        regs.write(reg::CTRL, reg::CTRL_TX_EN | reg::CTRL_RX_EN);
        CmsdkUart { regs, overruns: 0 }
    }

    fn take_byte(&mut self) -> Option<u8> {
        let state = self.regs.read(reg::STATE);
        if state & reg::STATE_RX_OVERRUN != 0 {
            self.overruns = self.overruns.wrapping_add(1);
            self.regs.write(reg::STATE, reg::STATE_RX_OVERRUN);
        }
        (state & reg::STATE_RX_FULL != 0).then(|| self.regs.read(reg::DATA) as u8)
    }
}

impl ErrorType for CmsdkUart {
    type Error = Infallible;
}

impl ReadReady for CmsdkUart {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.regs.read(reg::STATE) & reg::STATE_RX_FULL != 0)
    }
}

impl Read for CmsdkUart {
    /// Waits for the first byte (as `Read` requires), then takes what else is ready.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        Ok(polled::read(buf, || self.take_byte()))
    }
}

impl WriteReady for CmsdkUart {
    fn write_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.regs.read(reg::STATE) & reg::STATE_TX_FULL == 0)
    }
}

impl Write for CmsdkUart {
    /// Waits until the first byte fits, then writes while the holding register has room.
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        Ok(polled::write(buf, |byte| {
            let room = self.regs.read(reg::STATE) & reg::STATE_TX_FULL == 0;
            if room {
                self.regs.write(reg::DATA, u32::from(byte));
            }
            room
        }))
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        // The CMSDK UART has no "transmitter idle" flag; an empty holding register is as
        // far as software can see.
        while self.regs.read(reg::STATE) & reg::STATE_TX_FULL != 0 {}
        Ok(())
    }
}

/// The console's stream; it counts received bytes lost because the loop did not read them
/// in time.
impl ConsoleIo for CmsdkUart {
    fn overruns(&self) -> u32 {
        self.overruns
    }
}
