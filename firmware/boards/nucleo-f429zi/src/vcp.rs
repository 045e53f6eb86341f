//! The console's byte stream: USART3, which the NUCLEO-144 boards wire to the ST-LINK's
//! virtual COM port (the USB serial device the host sees, e.g. /dev/ttyACM0), behind
//! `embedded-io`'s `Read`, `ReadReady` and `Write`, as the QEMU board's UART is.
//!
//! Polled: `read_ready` lets the loop take input without blocking; `write` waits while the
//! transmit register is full (about 87 µs a byte at 115200 baud).

use core::convert::Infallible;

use duet_firmware_app::{ConsoleIo, polled};
use embedded_io::{ErrorType, Read, ReadReady, Write};
use stm32f4xx_hal::hal_02::serial::{Read as _, Write as _};
use stm32f4xx_hal::nb;
use stm32f4xx_hal::pac::USART3;
use stm32f4xx_hal::serial::{self, RxISR as _, Serial, TxISR as _};

/// The console's baud rate: what a terminal on the ST-LINK's port must use.
pub const BAUD: u32 = 115_200;

/// The virtual COM port.
pub struct Vcp {
    serial: Serial<USART3>,
    overruns: u32,
}

impl Vcp {
    /// The console on a configured USART3.
    pub fn new(serial: Serial<USART3>) -> Self {
        Vcp {
            serial,
            overruns: 0,
        }
    }

    fn take_byte(&mut self) -> Option<u8> {
        match self.serial.read() {
            Ok(byte) => Some(byte),
            Err(nb::Error::WouldBlock) => None,
            Err(nb::Error::Other(serial::Error::Overrun)) => {
                self.overruns = self.overruns.wrapping_add(1);
                None
            }
            // Noise, framing or parity: the byte is garbage; drop it.
            Err(nb::Error::Other(_)) => None,
        }
    }

    fn put_byte(&mut self, byte: u8) -> bool {
        self.serial.write(byte).is_ok()
    }
}

impl ErrorType for Vcp {
    type Error = Infallible;
}

impl ReadReady for Vcp {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(self.serial.is_rx_not_empty())
    }
}

impl Read for Vcp {
    /// Waits for the first byte (as `Read` requires), then takes what else is ready.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        Ok(polled::read(buf, || self.take_byte()))
    }
}

impl Write for Vcp {
    /// Waits until the first byte fits, then writes while the transmit register has room.
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        Ok(polled::write(buf, |byte| {
            self.serial.is_tx_empty() && self.put_byte(byte)
        }))
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        while self.serial.flush().is_err() {}
        Ok(())
    }
}

impl ConsoleIo for Vcp {
    fn overruns(&self) -> u32 {
        self.overruns
    }
}
