//! defmt logging, kept off the console: frames go to the debugger, never to the UART.
//!
//! - `log-semihosting` (default, for QEMU): frames go out byte by byte through
//!   semihosting's console call (SYS_WRITEC), which QEMU sends to the chardev that
//!   `qemu-run.sh` points at a file (`DUET_DEFMT_OUT`); decode it with
//!   `defmt-print -e ELF < FILE`. Not `defmt-semihosting`: it writes to the `:tt` stdout
//!   handle, which QEMU 7.2 maps to its own stdout, where the console is. Semihosting stops
//!   a real board that has no debugger attached, so this is for QEMU (or a board on a
//!   probe) only.
//! - `log-rtt` (for real boards): frames go into an RTT ring buffer in RAM that a debug
//!   probe reads while the firmware runs (`probe-rs run --chip ... ELF` decodes them).
//!
//! A panic is logged (its message only with the `panic-message` feature: see [`panic`])
//! and ends in a HardFault, as panic-probe's would; under QEMU the HardFault handler ends
//! QEMU with exit status 101 so a test sees it, on a board it halts.

#[cfg(all(feature = "log-semihosting", feature = "log-rtt"))]
compile_error!("features `log-semihosting` and `log-rtt` are mutually exclusive: pick one");
#[cfg(not(any(feature = "log-semihosting", feature = "log-rtt")))]
compile_error!("pick a defmt transport: feature `log-semihosting` (QEMU) or `log-rtt`");

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m_rt::{ExceptionFrame, exception};
#[cfg(feature = "log-rtt")]
use defmt_rtt as _;

defmt::timestamp!("{=u64:ms}", duet_firmware_app::systick::millis());

/// Log the panic, then fault.
///
/// By default the log says only that the firmware panicked: reading anything from `info`
/// (even just its location) keeps every panic site's message and the `core::fmt` code that
/// formats its arguments (bounds, `unwrap` errors' `Debug`, ...) in flash, about 22 KB of
/// this firmware. Unread, the compiler drops them all. The HardFault log line that follows
/// gives the address, and a debugger the backtrace; for the message itself, build with the
/// `panic-message` feature (what panic-probe's `print-defmt` logged).
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    static PANICKED: AtomicBool = AtomicBool::new(false);
    cortex_m::interrupt::disable();
    // A panic while logging a panic must not recurse: the second one only faults.
    if !PANICKED.swap(true, Ordering::Relaxed) {
        #[cfg(feature = "panic-message")]
        defmt::error!("{}", defmt::Display2Format(info));
        #[cfg(not(feature = "panic-message"))]
        {
            let _ = info;
            defmt::error!("panicked (build with feature `panic-message` to log where and why)");
        }
    }
    // UsageFault is never enabled here, so the undefined instruction escalates to the
    // HardFault handler below, as with panic-probe; a debugger sees the fault too.
    cortex_m::asm::udf()
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("hard fault at pc {=u32:#010x}", frame.pc());
    stop(101)
}

/// Stop the firmware: under QEMU, end QEMU with `code`; on a board, sleep for good.
pub fn stop(code: i32) -> ! {
    #[cfg(feature = "log-semihosting")]
    semihosting::process::exit(code);
    #[cfg(not(feature = "log-semihosting"))]
    {
        let _ = code;
        loop {
            cortex_m::asm::wfi();
        }
    }
}

/// defmt's global logger over semihosting SYS_WRITEC, in the shape of `defmt-semihosting`.
#[cfg(feature = "log-semihosting")]
mod semihosting_logger {
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, Ordering};

    use critical_section::RestoreState;
    use semihosting::sys::arm_compat::sys_writec;

    #[defmt::global_logger]
    struct Logger;

    /// The encoder and the critical section it runs in, between `acquire` and `release`.
    struct State {
        taken: AtomicBool,
        restore: UnsafeCell<RestoreState>,
        encoder: UnsafeCell<defmt::Encoder>,
    }

    // SAFETY: `restore` and `encoder` are touched only between `acquire` and `release`,
    // inside a critical section, by the one context that holds `taken`.
    unsafe impl Sync for State {}

    static STATE: State = State {
        taken: AtomicBool::new(false),
        restore: UnsafeCell::new(RestoreState::invalid()),
        encoder: UnsafeCell::new(defmt::Encoder::new()),
    };

    fn emit(bytes: &[u8]) {
        for &byte in bytes {
            sys_writec(byte);
        }
    }

    // SAFETY: acquire/release bracket every use of the encoder in a critical section, and
    // a nested acquire is refused, as defmt's `Logger` contract requires.
    unsafe impl defmt::Logger for Logger {
        fn acquire() {
            // SAFETY: released in `release`, which defmt calls exactly once per acquire.
            let restore = unsafe { critical_section::acquire() };
            if STATE.taken.swap(true, Ordering::Relaxed) {
                panic!("defmt logger taken reentrantly");
            }
            // SAFETY: inside the critical section, holding `taken`.
            unsafe {
                STATE.restore.get().write(restore);
                (*STATE.encoder.get()).start_frame(emit);
            }
        }

        unsafe fn flush() {
            // Semihosting calls return once the host has the bytes: nothing is buffered.
        }

        unsafe fn release() {
            // SAFETY: defmt calls release only after acquire, so we hold `taken` and the
            // critical section whose state `acquire` stored.
            unsafe {
                (*STATE.encoder.get()).end_frame(emit);
                let restore = STATE.restore.get().read();
                STATE.taken.store(false, Ordering::Relaxed);
                critical_section::release(restore);
            }
        }

        unsafe fn write(bytes: &[u8]) {
            // SAFETY: defmt calls write only between acquire and release.
            unsafe { (*STATE.encoder.get()).write(bytes, emit) }
        }
    }
}
