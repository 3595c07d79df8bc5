#!/usr/bin/env bash
# Runs COMMAND as if this host's CPU had AVX2 + FMA and no AVX-512 or AVX-VNNI: every `cpuid`
# the process (and its children) executes is trapped and answered without those bits (see
# scripts/avx2-only.c), so the harness and ONNX Runtime's MLAS both choose their AVX2 kernels.
# For the AVX2 half of issue 16 on a host that has more. Needs `cpuid_fault` in /proc/cpuinfo
# (KVM guests have it) and a C compiler.
#
#   scripts/avx2-only.sh [--avx-vnni] COMMAND [ARGS...]
#
# --avx-vnni hides AVX-512 only: what Intel's client cores since Alder Lake have (AVX2, FMA,
# AVX-VNNI), where ORT and the harness take their AVX-VNNI integer kernels.
#   e.g. scripts/avx2-only.sh scripts/bench-vs-ort.sh --rounds 3 --models bert-base --quantize q8_0 --ort-int8
#
# The cores are still this host's: timings tell AVX2 code from AVX2 code on this
# microarchitecture, not what an older AVX2-only CPU would run.
set -euo pipefail
keep_vnni=0
if [[ "${1:-}" == --avx-vnni ]]; then
    keep_vnni=1
    shift
fi
if [[ $# -eq 0 ]]; then
    echo "usage: scripts/avx2-only.sh [--avx-vnni] COMMAND [ARGS...]" >&2
    exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
so="$root/target/avx2-only.so"
if [[ ! -f "$so" || "$root/scripts/avx2-only.c" -nt "$so" ]]; then
    mkdir -p "$root/target"
    "${CC:-cc}" -O2 -Wall -shared -fPIC -o "$so" "$root/scripts/avx2-only.c"
fi
if ! grep -qw cpuid_fault /proc/cpuinfo; then
    echo "avx2-only.sh: no cpuid_fault in /proc/cpuinfo: this host cannot hide its AVX-512" >&2
    exit 2
fi
# glibc chose its string functions in ld.so, before the shim's constructor: tell it too.
export GLIBC_TUNABLES="glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD${GLIBC_TUNABLES:+:$GLIBC_TUNABLES}"
export AVX2_ONLY_KEEP_AVX_VNNI=$keep_vnni
export LD_PRELOAD="$so${LD_PRELOAD:+:$LD_PRELOAD}"
# The benchmarks print the host's flags from /proc/cpuinfo, which the shim cannot change.
export AVX2_ONLY=$([[ $keep_vnni == 1 ]] && echo avx-vnni || echo avx2)
exec "$@"
