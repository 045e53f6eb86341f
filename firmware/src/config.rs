//! Network and key settings fixed when the firmware is built (see `build.rs` for the
//! environment variables that set them and their defaults).

include!(concat!(env!("OUT_DIR"), "/config.rs"));
