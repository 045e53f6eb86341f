//! The clock of a Cortex-M board: SysTick interrupts every millisecond and counts.
//!
//! The same interrupt is what wakes the main loop from `wfi`, so the loop polls the
//! network chip and the UART at least once a millisecond without busy-spinning.
//! The count is a `u64` behind a critical section (the Cortex-M3 has no 64-bit atomics);
//! it does not wrap in the board's lifetime.

use core::cell::Cell;

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use critical_section::Mutex;
use duet_core::{Clock, Instant};

/// Ticks per second.
const TICK_HZ: u32 = 1000;

/// Milliseconds since [`SysTickClock::start`].
static MILLIS: Mutex<Cell<u64>> = Mutex::new(Cell::new(0));

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let millis = MILLIS.borrow(cs);
        millis.set(millis.get().wrapping_add(1));
    });
}

/// Milliseconds since the clock started (for log timestamps and `/status`).
pub fn millis() -> u64 {
    critical_section::with(|cs| MILLIS.borrow(cs).get())
}

/// The core's [`Clock`] on SysTick. A zero-sized handle: the driver loop and the smoltcp
/// stack each hold a copy of the same clock.
#[derive(Clone, Copy, Debug)]
pub struct SysTickClock {
    _started: (),
}

impl SysTickClock {
    /// Start SysTick on the CPU clock, interrupting every millisecond. Taking `SYST` by
    /// value makes this the only code that programs it.
    pub fn start(mut syst: SYST, cpu_hz: u32) -> Self {
        syst.set_clock_source(SystClkSource::Core);
        // The reload value is 24 bits wide: any CPU up to 16.7 GHz fits a 1 kHz tick.
        syst.set_reload(cpu_hz / TICK_HZ - 1);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        SysTickClock { _started: () }
    }
}

impl Clock for SysTickClock {
    fn now(&self) -> Instant {
        Instant::from_millis(millis())
    }
}
