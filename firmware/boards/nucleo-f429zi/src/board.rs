//! The NUCLEO-F429ZI: clocks, pins and peripherals brought up for the application, and what
//! the board brings to it ([`Nucleo`], a `duet_firmware_app::Board`).
//!
//! - Clock: the ST-LINK's 8 MHz (MCO, HSE bypass) through the PLL to 168 MHz, which also
//!   gives the RNG its exact 48 MHz; SysTick counts milliseconds on it.
//! - Ethernet: RMII on PA1, PA2, PA7, PB13, PC1, PC4, PC5, PG11, PG13 (the board's wiring)
//!   to a LAN8742A PHY at MII address 0.
//! - Console: USART3 on PD8/PD9, the ST-LINK's virtual COM port, 115200 8N1.
//! - Entropy: the on-chip true RNG.
//! - Keys: the last flash sector (`flash`).

use duet_firmware_app::keys::FlashKeyStore;
use duet_firmware_app::systick::SysTickClock;
use duet_firmware_app::{Board, Cells, Parts, Settings};
use ieee802_3_miim::Phy as _;
use ieee802_3_miim::phy::{LAN8742A, PhySpeed};
use rand_core::RngCore as _;
use static_cell::ConstStaticCell;
use stm32_eth::dma::{RxRingEntry, TxRingEntry};
use stm32_eth::mac::Speed;
use stm32_eth::{EthPins, PartsIn};
use stm32f4xx_hal::gpio::{GpioExt as _, Speed as PinSpeed};
use stm32f4xx_hal::pac;
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rng::Rng;
use stm32f4xx_hal::signature::Uid;

use crate::config::SETTINGS;
use crate::eth::Eth;
use crate::flash::{Flash, KEYS_OFFSET};
use crate::vcp::{BAUD, Vcp};

/// The core clock.
const SYSCLK_HZ: u32 = 168_000_000;
/// How long boot waits for the Ethernet link before going on without it.
const LINK_WAIT_MS: u64 = 5_000;
/// Attempts at a random word before the RNG counts as broken.
const RNG_ATTEMPTS: usize = 8;
/// Receive and transmit descriptors (each with a 1.5 KiB buffer).
const RX_DESCRIPTORS: usize = 4;
const TX_DESCRIPTORS: usize = 2;

defmt::timestamp!("{=u64:ms}", duet_firmware_app::systick::millis());

/// The board as the application sees it.
pub struct Nucleo {
    rng: Rng,
}

impl Board for Nucleo {
    type Nic = Eth;
    type Clock = SysTickClock;
    type Console = Vcp;
    type Keys = FlashKeyStore<Flash>;

    const NAME: &'static str = "NUCLEO-F429ZI (STM32F429ZI Ethernet, ST-LINK serial)";
    const SETTINGS: Settings = SETTINGS;

    fn fill_random(&mut self, buf: &mut [u8]) {
        // The RNG reports a seed or clock error rather than weak output; it recovers on
        // its own from a passing one. Keys are never made without it.
        for _ in 0..RNG_ATTEMPTS {
            if self.rng.try_fill_bytes(buf).is_ok() {
                return;
            }
        }
        defmt::error!("the hardware RNG keeps failing: no keys without it");
        self.halt()
    }

    fn sleep(&mut self) {
        cortex_m::asm::wfi();
    }

    fn reset(&mut self) -> ! {
        cortex_m::peripheral::SCB::sys_reset()
    }

    fn halt(&mut self) -> ! {
        loop {
            cortex_m::asm::wfi();
        }
    }

    fn stack_used(&self) -> usize {
        duet_firmware_app::memory::stack_high_water()
    }

    fn static_ram(&self) -> usize {
        duet_firmware_app::memory::static_ram()
    }
}

static CELLS: Cells<Nucleo> = Cells::new();
static RX_RING: ConstStaticCell<[RxRingEntry; RX_DESCRIPTORS]> =
    ConstStaticCell::new([RxRingEntry::RX_INIT; RX_DESCRIPTORS]);
static TX_RING: ConstStaticCell<[TxRingEntry; TX_DESCRIPTORS]> =
    ConstStaticCell::new([TxRingEntry::INIT; TX_DESCRIPTORS]);

/// Stop at boot with `message` in the log.
fn fail(message: &str) -> ! {
    defmt::error!("boot failed: {=str}", message);
    loop {
        cortex_m::asm::wfi();
    }
}

/// Bring the board up and run the application on it.
pub fn start() -> ! {
    let (Some(dp), Some(cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        fail("peripherals taken twice");
    };
    let clocks = dp
        .RCC
        .constrain()
        .cfgr
        .use_hse(8.MHz())
        .bypass_hse_oscillator()
        .sysclk(SYSCLK_HZ.Hz())
        .hclk(SYSCLK_HZ.Hz())
        .require_pll48clk()
        .freeze();
    let clock = SysTickClock::start(cp.SYST, clocks.sysclk().raw());

    let gpioa = dp.GPIOA.split();
    let gpiob = dp.GPIOB.split();
    let gpioc = dp.GPIOC.split();
    let gpiod = dp.GPIOD.split();
    let gpiog = dp.GPIOG.split();

    let Ok(serial) = dp
        .USART3
        .serial((gpiod.pd8, gpiod.pd9), BAUD.bps(), &clocks)
    else {
        fail("USART3 configuration");
    };
    let console = Vcp::new(serial);
    let rng = dp.RNG.constrain(&clocks);

    let pins = EthPins {
        ref_clk: gpioa.pa1.into_floating_input(),
        crs: gpioa.pa7.into_floating_input(),
        tx_en: gpiog.pg11.into_floating_input(),
        tx_d0: gpiog.pg13.into_floating_input(),
        tx_d1: gpiob.pb13.into_floating_input(),
        rx_d0: gpioc.pc4.into_floating_input(),
        rx_d1: gpioc.pc5.into_floating_input(),
    };
    let mut mdio = gpioa.pa2.into_alternate();
    mdio.set_speed(PinSpeed::VeryHigh);
    let mut mdc = gpioc.pc1.into_alternate();
    mdc.set_speed(PinSpeed::VeryHigh);
    let ethernet = PartsIn {
        mac: dp.ETHERNET_MAC,
        mmc: dp.ETHERNET_MMC,
        dma: dp.ETHERNET_DMA,
    };
    let (Some(rx_ring), Some(tx_ring)) = (RX_RING.try_take(), TX_RING.try_take()) else {
        fail("descriptor rings taken twice");
    };
    let Ok(parts) = stm32_eth::new_with_mii(
        ethernet,
        &mut rx_ring[..],
        &mut tx_ring[..],
        clocks,
        pins,
        mdio,
        mdc,
    ) else {
        fail("the Ethernet MAC needs HCLK of at least 25 MHz");
    };

    let mut phy = LAN8742A::new(parts.mac, 0);
    phy.phy_init();
    let deadline = duet_firmware_app::systick::millis() + LINK_WAIT_MS;
    while !phy.phy_link_up() && duet_firmware_app::systick::millis() < deadline {}
    match phy.link_speed() {
        Some(speed) => {
            defmt::info!("Ethernet link up");
            phy.get_miim().set_speed(match speed {
                PhySpeed::HalfDuplexBase10T => Speed::HalfDuplexBase10T,
                PhySpeed::FullDuplexBase10T => Speed::FullDuplexBase10T,
                PhySpeed::HalfDuplexBase100Tx => Speed::HalfDuplexBase100Tx,
                PhySpeed::FullDuplexBase100Tx => Speed::FullDuplexBase100Tx,
            });
        }
        // The PHY keeps negotiating; the MAC stays at 100 Mbit/s full duplex, what nearly
        // every switch offers.
        None => defmt::warn!("no Ethernet link yet: is the cable plugged in?"),
    }
    let nic = Eth::new(parts.dma, SETTINGS.mac.unwrap_or_else(mac_from_uid));

    let Some(keys) = FlashKeyStore::new(Flash::new(dp.FLASH), KEYS_OFFSET) else {
        fail("the keys' flash sector is not there: is this an STM32F429ZI with 2 MiB?");
    };

    duet_firmware_app::run(
        Nucleo { rng },
        Parts {
            nic,
            clock,
            console,
            keys,
        },
        &CELLS,
    )
}

/// A locally administered unicast Ethernet address made from the chip's unique id, so two
/// boards on one LAN differ without anyone choosing addresses.
fn mac_from_uid() -> [u8; 6] {
    let uid = Uid::get();
    let mut hash: u32 = 0x811c_9dc5;
    let mut mix = |bytes: &[u8]| {
        for &b in bytes {
            hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    };
    mix(&uid.x().to_le_bytes());
    mix(&uid.y().to_le_bytes());
    mix(&[uid.waf_num()]);
    mix(uid.lot_num().as_bytes());
    let h = hash.to_le_bytes();
    // 0x02: locally administered, unicast; the fifth byte keeps a little more of the id.
    [0x02, 0x00, h[0], h[1], h[2], h[3] ^ uid.waf_num()]
}
