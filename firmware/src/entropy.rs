//! The board's random bytes: the per-boot seed of the sealed session's generator (its
//! epoch, handshake indices and ephemeral keys) and of smoltcp.
//!
//! It must differ on every boot. The session's epoch comes from it, and a repeated epoch
//! would make the peer take the new session's first sequence numbers for duplicates it
//! already has, and drop them. QEMU boots the same instructions every time, so nothing in
//! RAM differs; what differs is *when* things happen on the host. The LAN9118's 25 MHz
//! FREE_RUN counter, read after the chip's reset and network bring-up, and the number of
//! register reads that fit in a fixed span of it both depend on host scheduling, and
//! SysTick's current count adds the phase of the 1 ms tick. A real board adds more jitter
//! (PHY reset, oscillator start-up).
//!
//! This is timing jitter, not a cryptographic source: on this board the ephemeral keys of
//! the sealed session are only as unpredictable as these samples. A real board takes its
//! random bytes from a TRNG (the NUCLEO-F429ZI's from the STM32's `RNG`); see
//! docs/FIRMWARE.md. The board's secret key never comes from here: QEMU's is in the image.

use cortex_m::peripheral::SYST;

use crate::board::FreeRun;

/// FREE_RUN ticks (25 MHz) spent counting loop rounds per sample: about 160 µs.
const SPAN_TICKS: u32 = 4096;
/// Upper bound on a counting loop, in case the counter does not run.
const MAX_ROUNDS: u32 = 100_000;

/// Random bytes from timing jitter: 8 bytes per sample of about 160 µs.
pub struct Jitter {
    counter: FreeRun,
    state: u64,
}

impl Jitter {
    /// A source on the LAN9118's counter. Sample it after the chip's reset and network
    /// bring-up, whose duration varies with the host.
    pub fn new(counter: FreeRun) -> Jitter {
        Jitter { counter, state: 0 }
    }

    /// Fill `buf` with bytes that differ from boot to boot.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let counter = &self.counter;
        for chunk in buf.chunks_mut(8) {
            let start = counter.read();
            let mut rounds = 0u32;
            while counter.read().wrapping_sub(start) < SPAN_TICKS && rounds < MAX_ROUNDS {
                rounds += 1;
            }
            let mut state = splitmix64(self.state ^ (u64::from(start) << 32 | u64::from(rounds)));
            state = splitmix64(state ^ u64::from(SYST::get_current()));
            state = splitmix64(state ^ u64::from(counter.read()));
            self.state = state;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// SplitMix64's output function: every input bit affects every output bit.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
