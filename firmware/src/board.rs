//! The MPS2-AN385 board: its memory map, the one place that turns addresses into register
//! blocks, and what it brings to the shared application ([`An385`], a
//! `duet_firmware_app::Board`).
//!
//! [`Peripherals::take`] hands out each peripheral once, as an owned value (the `Peripherals::take`
//! pattern of PACs): whoever holds the [`Mmio`] of a device is the only code touching it, so
//! the drivers need no `static mut` and no locks. All the firmware's `unsafe` for registers
//! is in [`Mmio`].

use core::marker::PhantomData;
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m::peripheral::SYST;
use duet_firmware_app::print::Print;
use duet_firmware_app::systick::SysTickClock;
use duet_firmware_app::{Board, Cells, NoKeyStore, Parts, Settings};
use static_cell::ConstStaticCell;

use crate::config::SETTINGS;
use crate::lan9118::{Frames, Lan9118};
use crate::uart::CmsdkUart;
use crate::{entropy, logging};

/// The CPU clock of the AN385 image (and of QEMU's model of it): SysTick counts at this rate.
pub const CPU_HZ: u32 = 25_000_000;
/// CMSDK APB UART 0: QEMU connects its first `-serial` to it; the console lives here.
pub const UART0_BASE: usize = 0x4000_4000;
/// The SMSC LAN9118 Ethernet controller (on the real board: behind the FPGA's static
/// memory interface; IRQ 13, unused here because the driver is polled).
pub const LAN9118_BASE: usize = 0x4020_0000;

/// External interrupts of the AN385's NVIC (QEMU's model has the same 32).
const IRQS: usize = 32;

/// The interrupt half of the vector table, sized for this board: cortex-m-rt's generic one
/// has 240 entries (960 bytes of flash, 832 of them for interrupts this chip lacks). No
/// interrupt is enabled (the drivers poll), so every entry is cortex-m-rt's
/// `DefaultHandler`. With cortex-m-rt's `device` feature the table is the firmware's to
/// give, as a PAC's is; a port to a chip with a PAC drops this and takes the PAC's.
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
pub static __INTERRUPTS: [unsafe extern "C" fn(); IRQS] = {
    unsafe extern "C" {
        fn DefaultHandler();
    }
    [DefaultHandler; IRQS]
};

/// A block of 32-bit memory-mapped registers that one owner drives.
///
/// Not `Send`/`Sync` and not `Clone`: a register block has one owner at a time.
pub struct Mmio {
    base: usize,
    _not_sync: PhantomData<*mut u32>,
}

impl Mmio {
    /// The register block at `base`.
    ///
    /// # Safety
    /// `base` must be the start of a device's 32-bit register block on this board, and no
    /// other `Mmio` for it may exist while this one lives.
    const unsafe fn new(base: usize) -> Self {
        Mmio {
            base,
            _not_sync: PhantomData,
        }
    }

    /// Read the register at byte offset `offset`. Reading some registers (FIFOs) consumes data.
    #[inline]
    pub fn read(&self, offset: usize) -> u32 {
        // SAFETY: `new`'s contract makes `base + offset` a register of the owned device; the
        // drivers only pass offsets from their register maps, all 4-byte aligned.
        unsafe { ptr::read_volatile((self.base + offset) as *const u32) }
    }

    /// Write the register at byte offset `offset`.
    #[inline]
    pub fn write(&mut self, offset: usize, value: u32) {
        // SAFETY: as in `read`; `&mut self` keeps writes to one device in one place.
        unsafe { ptr::write_volatile((self.base + offset) as *mut u32, value) }
    }
}

/// The LAN9118's FREE_RUN register: a 25 MHz counter that only counts. Reading it changes
/// nothing in the chip, so this handle can live beside the driver's [`Mmio`] of the same
/// chip (the entropy source samples it while the driver runs).
pub struct FreeRun {
    _not_sync: PhantomData<*mut u32>,
}

impl FreeRun {
    /// The counter's value.
    #[inline]
    pub fn read(&self) -> u32 {
        // SAFETY: FREE_RUN is a read-only register of the LAN9118 in the AN385 memory map,
        // 4-byte aligned; reading it has no side effect on the chip or on the driver.
        unsafe { ptr::read_volatile((LAN9118_BASE + LAN9118_FREE_RUN) as *const u32) }
    }
}

/// FREE_RUN's offset in the LAN9118's register block (lan9118.rs lists the others).
const LAN9118_FREE_RUN: usize = 0x9c;

/// The board's peripherals, each handed out once.
pub struct Peripherals {
    /// The console's UART.
    pub uart0: Mmio,
    /// The Ethernet controller.
    pub lan9118: Mmio,
    /// The Ethernet controller's free-running counter.
    pub free_run: FreeRun,
    /// The core's SysTick timer: the firmware's clock.
    pub syst: SYST,
}

static TAKEN: AtomicBool = AtomicBool::new(false);

impl Peripherals {
    /// The peripherals, the first time only; `None` afterwards.
    pub fn take() -> Option<Peripherals> {
        if TAKEN.swap(true, Ordering::AcqRel) {
            return None;
        }
        let core = cortex_m::Peripherals::take()?;
        // SAFETY: the addresses are the AN385 memory map's, and TAKEN guarantees this runs
        // once, so each block gets exactly one owner.
        let (uart0, lan9118) = unsafe { (Mmio::new(UART0_BASE), Mmio::new(LAN9118_BASE)) };
        Some(Peripherals {
            uart0,
            lan9118,
            free_run: FreeRun {
                _not_sync: PhantomData,
            },
            syst: core.SYST,
        })
    }
}

/// The board as the application sees it.
pub struct An385 {
    random: entropy::Jitter,
}

impl Board for An385 {
    type Nic = Lan9118<'static>;
    type Clock = SysTickClock;
    type Console = CmsdkUart;
    // QEMU loads the image, keys and all, afresh at every start: nowhere to keep others.
    type Keys = NoKeyStore;

    const NAME: &'static str = "mps2-an385 (LAN9118, CMSDK UART)";
    const SETTINGS: Settings = SETTINGS;

    fn fill_random(&mut self, buf: &mut [u8]) {
        self.random.fill(buf);
    }

    fn sleep(&mut self) {
        cortex_m::asm::wfi();
    }

    /// Reset the whole board as its reset button would (SYSRESETREQ): the core and the
    /// peripherals start over and the firmware boots again; RAM keeps what it held, which
    /// is what lets `.uninit` statics (the outbox's record) outlive the reset.
    fn reset(&mut self) -> ! {
        cortex_m::peripheral::SCB::sys_reset()
    }

    fn halt(&mut self) -> ! {
        logging::stop(1)
    }

    fn stack_used(&self) -> usize {
        duet_firmware_app::memory::stack_high_water()
    }

    fn static_ram(&self) -> usize {
        duet_firmware_app::memory::static_ram()
    }
}

static CELLS: Cells<An385> = Cells::new();
static FRAMES: ConstStaticCell<Frames> = ConstStaticCell::new(Frames::new());

/// Bring the board up and run the application on it.
pub fn start() -> ! {
    let Some(board) = Peripherals::take() else {
        defmt::error!("board peripherals taken twice");
        logging::stop(1);
    };
    let clock = SysTickClock::start(board.syst, CPU_HZ);
    let mut uart = CmsdkUart::new(board.uart0, CPU_HZ);
    let Some(frames) = FRAMES.try_take() else {
        defmt::error!("frame buffers taken twice");
        logging::stop(1);
    };
    let nic = match Lan9118::new(board.lan9118, SETTINGS.mac, frames) {
        Ok(nic) => nic,
        Err(error) => {
            defmt::error!("boot failed: Ethernet: {}", error);
            error.print(uart.text("boot failed: Ethernet: "));
            uart.text("\r\n");
            logging::stop(1);
        }
    };
    let random = entropy::Jitter::new(board.free_run);
    duet_firmware_app::run(
        An385 { random },
        Parts {
            nic,
            clock,
            console: uart,
            keys: NoKeyStore,
        },
        &CELLS,
    )
}
