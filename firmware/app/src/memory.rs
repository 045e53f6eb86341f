//! RAM figures of a cortex-m-rt image, for `/status`: the statics' size and the stack's
//! deepest use, from the linker script's symbols.

use core::ptr;

/// Bytes of RAM the statics take (`.data` and `.bss`), from cortex-m-rt's section symbols.
pub fn static_ram() -> usize {
    unsafe extern "C" {
        static __sdata: u32;
        static __ebss: u32;
    }
    // Only the symbols' addresses are used, never their contents.
    ((&raw const __ebss) as usize).saturating_sub((&raw const __sdata) as usize)
}

/// Bytes of stack used at most since reset: the part of the painted region (cortex-m-rt's
/// `paint-stack` feature, between `_stack_end` and `_stack_start` of the board's
/// `memory.x`) whose paint was scrubbed off. The whole region's size means "at least".
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
