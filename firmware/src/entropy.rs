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

use crate::lan9118::Lan9118;

/// FREE_RUN ticks (25 MHz) spent counting loop rounds per sample: about 160 µs.
const SPAN_TICKS: u32 = 4096;
/// Upper bound on a counting loop, in case the counter does not run.
const MAX_ROUNDS: u32 = 100_000;

/// The boot's samples, handed out as random bytes: the first 32 are the samples' mix as
/// they are, any more are SplitMix64's continuation of it (the application asks for 32, the
/// session's seed, because this board's secret key comes with its image).
pub struct Jitter {
    seed: [u8; 32],
    state: u64,
    drawn: bool,
}

impl Jitter {
    /// Sample the timing jitter; takes about a millisecond.
    pub fn sample(nic: &Lan9118<'_>) -> Jitter {
        let seed = boot_seed(nic);
        let state = u64::from_le_bytes([
            seed[24], seed[25], seed[26], seed[27], seed[28], seed[29], seed[30], seed[31],
        ]);
        Jitter {
            seed,
            state,
            drawn: false,
        }
    }

    /// Fill `buf` with the next random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let (first, rest) = if self.drawn {
            buf.split_at_mut(0)
        } else {
            self.drawn = true;
            let n = buf.len().min(self.seed.len());
            buf.split_at_mut(n)
        };
        first.copy_from_slice(&self.seed[..first.len()]);
        for chunk in rest.chunks_mut(8) {
            self.state = splitmix64(self.state);
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// 32 bytes that differ from boot to boot.
fn boot_seed(nic: &Lan9118<'_>) -> [u8; 32] {
    let mut seed = [0u8; 32];
    let mut state = 0u64;
    for chunk in seed.chunks_exact_mut(8) {
        let start = nic.free_run();
        let mut rounds = 0u32;
        while nic.free_run().wrapping_sub(start) < SPAN_TICKS && rounds < MAX_ROUNDS {
            rounds += 1;
        }
        state = splitmix64(state ^ (u64::from(start) << 32 | u64::from(rounds)));
        state = splitmix64(state ^ u64::from(SYST::get_current()));
        state = splitmix64(state ^ u64::from(nic.free_run()));
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    seed
}

/// SplitMix64's output function: every input bit affects every output bit.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
