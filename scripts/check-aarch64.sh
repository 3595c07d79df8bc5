#!/usr/bin/env bash
# Type-check and lint the workspace for 64-bit ARM Linux from an x86-64 host, so that code
# behind `cfg(target_arch = "x86_64")` (the harness's own kernels) cannot break the build for
# everyone else: Apple silicon, Graviton. The kernels are chosen at run time, so an ARM build
# must compile with none of them and fall back to candle's matmul.
#
#     scripts/check-aarch64.sh                    # cargo clippy ... -D warnings for aarch64
#     PYTHON=/path/to/python scripts/check-aarch64.sh
#
# Needs the Rust target (`rustup target add aarch64-unknown-linux-gnu`) and a C compiler for
# it, which some dependencies' build scripts call (ring, onig, esaxx): Zig's, from PyPI
# (`pip install ziglang`), unless CC_aarch64_unknown_linux_gnu is set already. Nothing is
# linked or run; it checks that the code compiles and is warning-free there.
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
if ! rustup target list --installed | grep -qx "$target"; then
    echo "error: the Rust target $target is not installed: rustup target add $target" >&2
    exit 2
fi

if [[ -z "${CC_aarch64_unknown_linux_gnu:-}" ]]; then
    python=${PYTHON:-python3}
    if ! "$python" -m ziglang version >/dev/null 2>&1; then
        echo "error: no C compiler for $target: pip install ziglang (for $python), or set" \
            "CC_aarch64_unknown_linux_gnu, CXX_aarch64_unknown_linux_gnu and" \
            "AR_aarch64_unknown_linux_gnu" >&2
        exit 2
    fi
    wrappers=$(mktemp -d)
    trap 'rm -rf "$wrappers"' EXIT
    # cc-rs passes `--target=...` in clang's spelling; zig takes its own `-target`.
    for tool in cc c++; do
        cat >"$wrappers/$tool" <<EOF
#!/usr/bin/env bash
args=()
for a in "\$@"; do case "\$a" in --target=*) ;; *) args+=("\$a") ;; esac; done
exec "$python" -m ziglang $tool -target aarch64-linux-gnu "\${args[@]}"
EOF
    done
    printf '#!/usr/bin/env bash\nexec "%s" -m ziglang ar "$@"\n' "$python" >"$wrappers/ar"
    chmod +x "$wrappers"/*
    export CC_aarch64_unknown_linux_gnu="$wrappers/cc"
    export CXX_aarch64_unknown_linux_gnu="$wrappers/c++"
    export AR_aarch64_unknown_linux_gnu="$wrappers/ar"
fi

cargo clippy --locked --target "$target" --workspace --all-targets -- -D warnings
echo "aarch64: the workspace compiles, warning-free"
