#!/usr/bin/env bash
# Boots a duet firmware ELF on QEMU's mps2-an385 board: the cargo runner for this crate
# (`cargo run --release` calls it with the ELF's path), usable by hand as
#   ./qemu-run.sh target/thumbv7m-none-eabi/release/duet-firmware
#
# The board's console (CMSDK UART0) is this terminal: type a line to send it, /help for
# commands; Ctrl-C quits QEMU. The board's duet port (7789, see DUET_PORT in build.rs) is
# forwarded from a UDP port on the host's loopback, so once paired (docs/FIRMWARE.md) a
# host duet reaches it with
#   duet pair add board KEY --addr 127.0.0.1:$DUET_BOARD_PORT   (KEY: the board's "duet id")
#   duet send --to board hello
#
# Environment:
#   DUET_BOARD_PORT  host UDP port forwarded to the board's duet port (default 7789);
#                    give each board its own to run several at once.
#   DUET_GUEST_PORT  the board's duet port, if it was built with another DUET_PORT.
#   DUET_DEFMT_OUT   where QEMU writes the raw defmt log frames (default: beside the ELF,
#                    duet-firmware.defmt); decode with `defmt-print -e ELF < FILE`.
#                    The frames never mix with the console's text.
#   DUET_NIC         replaces the whole -nic option, e.g. for a tap device (root):
#                    tap,ifname=tap0,script=no,downscript=no,model=lan9118
#   QEMU             the QEMU binary (default qemu-system-arm).
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 ELF [extra qemu arguments...]" >&2
    exit 2
fi
elf=$1
shift

board_port=${DUET_BOARD_PORT:-7789}
guest_port=${DUET_GUEST_PORT:-7789}
defmt_out=${DUET_DEFMT_OUT:-${elf}.defmt}
qemu=${QEMU:-qemu-system-arm}
nic=${DUET_NIC:-user,model=lan9118,hostfwd=udp:127.0.0.1:${board_port}-:${guest_port}}

if ! command -v "$qemu" >/dev/null 2>&1; then
    echo "$0: $qemu not found; install it with" >&2
    echo "  apt-get install -y --no-install-recommends qemu-system-arm" >&2
    exit 127
fi

# -serial stdio: UART0 <-> this terminal. Semihosting output (defmt) goes to its own
# chardev, a file, so the console stays clean text. User networking needs no root; the
# guest is 10.0.2.15 and the host is 10.0.2.2 as seen from the board.
exec "$qemu" \
    -machine mps2-an385 \
    -display none \
    -monitor none \
    -serial stdio \
    -chardev "file,id=defmt,path=${defmt_out}" \
    -semihosting-config "enable=on,target=native,chardev=defmt" \
    -nic "$nic" \
    -kernel "$elf" \
    "$@"
