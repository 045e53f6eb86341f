//! The STM32F4's flash as `embedded-storage`'s `NorFlash`, unlocked only for the length of
//! an erase or a write, for `duet_firmware_app::keys::FlashKeyStore`.

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use stm32f4xx_hal::flash::{Error, FlashExt, LockedFlash};

/// Where the keys live: the last 128 KiB sector of the 2 MiB (sector 23, 0x081E_0000),
/// which memory.x keeps the image out of.
pub const KEYS_OFFSET: u32 = 0x1E_0000;

/// The chip's flash, locked between operations.
pub struct Flash(LockedFlash);

impl Flash {
    /// The flash controller.
    pub fn new(flash: stm32f4xx_hal::pac::FLASH) -> Self {
        Flash(LockedFlash::new(flash))
    }
}

impl ErrorType for Flash {
    type Error = Error;
}

impl ReadNorFlash for Flash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Error> {
        ReadNorFlash::read(&mut self.0, offset, bytes)
    }

    fn capacity(&self) -> usize {
        ReadNorFlash::capacity(&self.0)
    }
}

impl NorFlash for Flash {
    const WRITE_SIZE: usize = 1;
    // The largest sector: the HAL erases every sector the range touches.
    const ERASE_SIZE: usize = 128 * 1024;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Error> {
        // Locked again when the unlocked handle drops.
        NorFlash::erase(&mut self.0.unlocked(), from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Error> {
        NorFlash::write(&mut self.0.unlocked(), offset, bytes)
    }
}
