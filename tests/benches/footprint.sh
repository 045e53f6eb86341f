#!/usr/bin/env bash
# duet's footprint: the firmware's flash and static RAM per feature set, the host binary's
# size, and the resident memory of two release duets chatting in line mode.
#
# Usage (from anywhere in the repository):
#   bash tests/benches/footprint.sh
# Environment: FW_TARGET_DIR (default /tmp/target-fw-bench) and HOST_TARGET_DIR (default
# /tmp/target-bench) keep these builds apart from everyone else's; MESSAGES (default 200)
# is how many lines the chat sends before memory is read.
#
# Flash = .vector_table + .text + .rodata + .data (the initial values are stored in flash);
# static RAM = .data + .bss + .uninit. The stack (32 KiB reserved at the top of RAM by
# firmware/memory.x) is not static RAM and is not counted.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
fw_target=${FW_TARGET_DIR:-/tmp/target-fw-bench}
host_target=${HOST_TARGET_DIR:-/tmp/target-bench}
messages=${MESSAGES:-200}
llvm_size="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/llvm-size"
[ -x "$llvm_size" ] || { echo "llvm-size missing: rustup component add llvm-tools" >&2; exit 1; }

kib() { awk -v b="$1" 'BEGIN { printf "%.1f KiB", b / 1024 }'; }

# section sizes of an ELF: "flash ram"
sizes() {
    "$llvm_size" -A "$1" | awk '
        $1 == ".vector_table" || $1 == ".text" || $1 == ".rodata" { flash += $2 }
        $1 == ".data" { flash += $2; ram += $2 }
        $1 == ".bss" || $1 == ".uninit" { ram += $2 }
        END { print flash + 0, ram + 0 }'
}

echo "## Firmware (thumbv7m-none-eabi, release: opt-level z, LTO, panic abort)"
echo
echo "| feature set | flash | static RAM |"
echo "|---|---:|---:|"
firmware() {
    local name=$1; shift
    (cd "$root/firmware" && cargo build --release --quiet --target-dir "$fw_target" "$@") >&2
    local elf="$fw_target/thumbv7m-none-eabi/release/duet-firmware"
    read -r flash ram < <(sizes "$elf")
    echo "| $name | $flash B ($(kib "$flash")) | $ram B ($(kib "$ram")) |"
}
# Every firmware build is sealed (Secure): there is no unencrypted firmware to measure.
firmware "sealed, defmt over semihosting (default)"
firmware "sealed, defmt over RTT" --no-default-features --features log-rtt
firmware "sealed + GBK in duet-core (default + duet-core/gbk)" --features duet-core/gbk
echo

echo "## Host binary (x86_64, release)"
echo
(cd "$root" && cargo build --release --quiet -p duet-host --bin duet --target-dir "$host_target") >&2
duet="$host_target/release/duet"
stripped=$(mktemp)
"$(dirname "$llvm_size")/llvm-strip" -o "$stripped" "$duet"
echo "| binary | bytes |"
echo "|---|---:|"
echo "| target/release/duet (with the workspace's debug = 1 line tables) | $(stat -c %s "$duet") ($(kib "$(stat -c %s "$duet")")) |"
echo "| the same, stripped | $(stat -c %s "$stripped") ($(kib "$(stat -c %s "$stripped")")) |"
rm -f "$stripped"
echo

echo "## Host memory while chatting (two release duets, line mode, $messages messages)"
echo
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    exec 3>&- 4>&- 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pa=$(free_port); pb=$(free_port)
"$duet" --config-dir "$work/a" id > "$work/a.key"
"$duet" --config-dir "$work/b" id > "$work/b.key"
"$duet" --config-dir "$work/a" pair add b "$(head -1 "$work/b.key")" --addr "127.0.0.1:$pb" > /dev/null
"$duet" --config-dir "$work/b" pair add a "$(head -1 "$work/a.key")" --addr "127.0.0.1:$pa" > /dev/null
mkfifo "$work/a.in" "$work/b.in"
"$duet" --config-dir "$work/b" chat a --bind "127.0.0.1:$pb" --name bob < "$work/b.in" > "$work/b.out" 2>&1 &
pids+=($!); pid_b=$!
"$duet" --config-dir "$work/a" chat b --bind "127.0.0.1:$pa" --name alice < "$work/a.in" > "$work/a.out" 2>&1 &
pids+=($!); pid_a=$!
exec 3> "$work/a.in" 4> "$work/b.in"
sleep 0.5
status() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
rss_idle_a=$(status "$pid_a" VmRSS)
started=$(date +%s.%N)
for i in $(seq "$messages"); do
    echo "message $i: the quick brown fox jumps over the lazy dog, 你好世界" >&3
done
for _ in $(seq 600); do
    delivered=$(grep -c " delivered: " "$work/a.out" || true)
    [ "$delivered" -ge "$messages" ] && break
    sleep 0.1
done
delivered=$(grep -c " delivered: " "$work/a.out" || true)
took=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "$delivered of $messages messages reported delivered after $took s."
echo
echo "| process | VmRSS after start | VmRSS after the chat | VmHWM (peak) |"
echo "|---|---:|---:|---:|"
echo "| sender (alice) | $rss_idle_a kB | $(status "$pid_a" VmRSS) kB | $(status "$pid_a" VmHWM) kB |"
echo "| receiver (bob) | – | $(status "$pid_b" VmRSS) kB | $(status "$pid_b" VmHWM) kB |"
echo "/quit" >&3
echo "/quit" >&4
exec 3>&- 4>&-
wait "$pid_a" "$pid_b" 2>/dev/null || true
pids=()
