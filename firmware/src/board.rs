//! The MPS2-AN385 board: its memory map, and the one place that turns addresses into
//! register blocks.
//!
//! [`Board::take`] hands out each peripheral once, as an owned value (the `Peripherals::take`
//! pattern of PACs): whoever holds the [`Mmio`] of a device is the only code touching it, so
//! the drivers need no `static mut` and no locks. All the firmware's `unsafe` for registers
//! is in [`Mmio`].

use core::marker::PhantomData;
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m::peripheral::SYST;

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

/// The board's peripherals, each handed out once.
pub struct Board {
    /// The console's UART.
    pub uart0: Mmio,
    /// The Ethernet controller.
    pub lan9118: Mmio,
    /// The core's SysTick timer: the firmware's clock.
    pub syst: SYST,
}

static TAKEN: AtomicBool = AtomicBool::new(false);

impl Board {
    /// The peripherals, the first time only; `None` afterwards.
    pub fn take() -> Option<Board> {
        if TAKEN.swap(true, Ordering::AcqRel) {
            return None;
        }
        let core = cortex_m::Peripherals::take()?;
        // SAFETY: the addresses are the AN385 memory map's, and TAKEN guarantees this runs
        // once, so each block gets exactly one owner.
        let (uart0, lan9118) = unsafe { (Mmio::new(UART0_BASE), Mmio::new(LAN9118_BASE)) };
        Some(Board {
            uart0,
            lan9118,
            syst: core.SYST,
        })
    }
}

/// Reset the whole board as its reset button would (SYSRESETREQ): the core and the
/// peripherals start over and the firmware boots again; RAM keeps what it held, which is
/// what lets `.uninit` statics (`outbox_record`) outlive the reset.
pub fn reset() -> ! {
    cortex_m::peripheral::SCB::sys_reset()
}

/// Bytes of RAM the statics take (`.data` and `.bss`), from cortex-m-rt's section symbols.
pub fn static_ram() -> usize {
    unsafe extern "C" {
        static __sdata: u32;
        static __ebss: u32;
    }
    // Only the symbols' addresses are used, never their contents.
    ((&raw const __ebss) as usize).saturating_sub((&raw const __sdata) as usize)
}

/// Bytes of stack the firmware has used at most since reset: the part of the painted region
/// (`memory.x`) whose paint was scrubbed off. The whole region's size means "at least".
pub fn stack_high_water() -> usize {
    unsafe extern "C" {
        // Bounds of the painted stack region, from cortex-m-rt's link.x and memory.x.
        static _stack_start: u32;
        static _stack_end: u32;
    }
    let top = (&raw const _stack_start) as usize;
    let bottom = (&raw const _stack_end) as usize;
    let mut addr = bottom;
    // The stack grows down, so the lowest scrubbed word marks the deepest use.
    while addr < top {
        // SAFETY: [bottom, top) is RAM reserved for the stack by the linker script, 4-byte
        // aligned (link.x asserts it); reading it cannot fault, and words below the stack
        // pointer belong to no live Rust object.
        let word = unsafe { ptr::read_volatile(addr as *const u32) };
        if word != cortex_m_rt::STACK_PAINT_VALUE {
            break;
        }
        addr += 4;
    }
    top - addr
}
