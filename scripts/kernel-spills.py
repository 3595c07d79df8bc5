#!/usr/bin/env python3
"""Vector registers spilled to the stack, per compiled kernel instantiation, against a
committed table (issue 16): a guard for the speed regressions that no test sees.

Why: the kernels' speed rests on their accumulators staying in registers. A tile of 12 rows
in the AVX-512 VNNI kernel filled all 32 zmm registers and spilled 9 accumulators every block
(10-15% of its speed), and the AVX-VNNI kernel's chain count spilled its sums (2.5x); both
were found only by counting stack references in `objdump`. This script does that count for
every function under `harness::kernels::` that touches xmm/ymm/zmm registers, one row per
instantiation (`kernel_512::<8, false, true>`: the build uses v0 symbol mangling, which names
const generics), and compares it with `scripts/kernel-spills.tsv`.

    scripts/kernel-spills.py             # build (target/spills), compare; exit 1 on growth
    scripts/kernel-spills.py --update    # write the table from this build
    scripts/kernel-spills.py --binary B  # a binary built with -C symbol-mangling-version=v0

Each row counts the instructions, the vector instructions that address the stack, and those
of them inside innermost loops (a backward jump's range holding no other): a kernel's hot
loop; accumulators loaded before it and stored after it are by design. A row fails when its
in-loop count grew by more than max(4, 25%) over the table, and so does any `harness::`
function that calls a `core::core_arch` intrinsic out of line (vector code in a function
compiled without its target feature: every `_mm256_*` a call).
Counts depend on the compiler: the table records the rustc that made it, and a different one
is reported (the comparison still runs). The binary does not depend on the host's CPU
(features are per function), so any x86-64 host gives the same counts. Not part of CI: it
needs a second release build (~3.5 minutes on 2 cores) and `objdump`.
Exit codes: 0 no growth, 1 growth found, 2 error.
"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, "scripts", "kernel-spills.tsv")
PREFIX = "harness::kernels::"
# The kernels' functions, trait methods included (`<harness::kernels::... as ...>::...`).
OURS = re.compile(r"^<?" + re.escape(PREFIX))
FUNCTION = re.compile(r"^[0-9a-f]+ <(.*)>:$")
VECTOR = re.compile(r"%[xyz]mm\d+")
STACK = re.compile(r"\(%r[sb]p")
# A conditional or unconditional jump within the function: `jne    6e45c0 <...>`.
BRANCH = re.compile(r"\tj[a-z]+\s+([0-9a-f]+) <")
# A call to an intrinsic that was not inlined: vector code in a function compiled without
# the target feature (each `_mm256_*` a call; found in the decoder's softmax in session 23).
INTRINSIC_CALL = re.compile(r"\tcall\s+[0-9a-f]+ <core::core_arch::")


def build():
    env = dict(os.environ)
    env["RUSTFLAGS"] = (env.get("RUSTFLAGS", "") + " -C symbol-mangling-version=v0").strip()
    cmd = ["cargo", "build", "--release", "--locked", "-p", "harness", "--bin", "harness",
           "--target-dir", os.path.join(ROOT, "target", "spills")]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return os.path.join(ROOT, "target", "spills", "release", "harness")


def innermost_loops(branches):
    """Address ranges of the loops that hold no other loop: a backward branch's target to
    the branch."""
    loops = sorted({(t, a) for a, t in branches if t <= a})
    return [(t, a) for t, a in loops
            if not any((t2, a2) != (t, a) and t <= t2 and a2 <= a for t2, a2 in loops)]


def count(binary):
    """{function: (instructions, vector stack references, of them in innermost loops)} for
    the kernels' functions."""
    try:
        dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", binary],
                             capture_output=True, text=True, check=True).stdout
    except FileNotFoundError:
        sys.exit("error: objdump not found (binutils)")
    counts, outlined = {}, {}
    name, insns, vector, spills, branches = None, 0, False, [], []

    def close():
        if not (name and OURS.match(name) and vector):
            return
        loops = innermost_loops(branches)
        in_loops = sum(1 for a in spills if any(t <= a <= e for t, e in loops))
        row = (insns, len(spills), in_loops)
        # Several copies of one instantiation (`.llvm.` suffixes): the one that spills more.
        counts[name] = max(counts.get(name, row), row, key=lambda c: (c[2], c[1]))

    for line in dis.splitlines():
        m = FUNCTION.match(line)
        if m:
            close()
            name = re.sub(r"\.llvm\.\d+$", "", m.group(1))
            insns, vector, spills, branches = 0, False, [], []
        elif name and "\t" in line:
            insns += 1
            addr = int(line.split(":", 1)[0], 16)
            if VECTOR.search(line):
                vector = True
                if STACK.search(line):
                    spills.append(addr)
            j = BRANCH.search(line)
            if j:
                branches.append((addr, int(j.group(1), 16)))
            if name.lstrip("<").startswith("harness::") and INTRINSIC_CALL.search(line):
                outlined[name] = outlined.get(name, 0) + 1
    close()
    if not counts:
        sys.exit(f"error: no {PREFIX} functions in {binary}: built with "
                 "-C symbol-mangling-version=v0 and debug symbols?")
    return counts, outlined


def rustc():
    return subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()


def read_table():
    if not os.path.exists(TABLE):
        sys.exit(f"error: {TABLE} is missing: run with --update to write it")
    made_by, rows = None, {}
    with open(TABLE) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# rustc:"):
                made_by = line.split(":", 1)[1].strip()
            elif line and not line.startswith("#") and not line.startswith("function\t"):
                name, *numbers = line.split("\t")
                rows[name] = tuple(int(v) for v in numbers)
    return made_by, rows


def write_table(counts):
    with open(TABLE, "w") as f:
        f.write("# Vector stack references per kernel instantiation, in all and inside innermost\n")
        f.write("# loops (the hot ones): scripts/kernel-spills.py --update\n")
        f.write(f"# rustc: {rustc()}\n")
        f.write("function\tinstructions\tvector_stack_refs\tin_innermost_loops\n")
        for name in sorted(counts):
            f.write(name + "".join(f"\t{v}" for v in counts[name]) + "\n")
    print(f"wrote {TABLE}: {len(counts)} functions")


def grew(old, new, floor):
    return new > old + max(floor, old // 4)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", help="a harness binary built with v0 symbol mangling")
    ap.add_argument("--update", action="store_true", help="write the table from this build")
    args = ap.parse_args()
    counts, outlined = count(args.binary or build())
    if outlined:
        print("harness functions calling intrinsics out of line (compile them with the target "
              "feature):")
        for name, calls in sorted(outlined.items()):
            print(f"  {name}: {calls} calls")
    if args.update:
        write_table(counts)
        return 1 if outlined else 0
    made_by, table = read_table()
    if made_by != rustc():
        print(f"note: the table was made by {made_by}, this is {rustc()}: counts may move")
    grown, other, shrunk = [], [], []
    for name in sorted(set(counts) & set(table)):
        (_, old_all, old_loop), (_, new_all, new_loop) = table[name], counts[name]
        change = (name, f"{old_all} -> {new_all} in all, {old_loop} -> {new_loop} in loops")
        if grew(old_loop, new_loop, 4):
            grown.append(change)
        elif grew(old_all, new_all, 8):
            other.append(change)
        elif (new_all, new_loop) < (old_all, old_loop):
            shrunk.append(change)
    for title, rows in [("fewer stack references (update the table)", shrunk),
                        ("more stack references outside the loops", other),
                        ("MORE stack references in innermost loops (spills?)", grown)]:
        if rows:
            print(f"{title}:")
            for name, change in rows:
                print(f"  {name}: {change}")
    for title, names in [("new (not in the table)", set(counts) - set(table)),
                         ("gone (in the table only)", set(table) - set(counts))]:
        if names:
            shown = sorted(names)[:10]
            more = f", and {len(names) - 10} more" if len(names) > 10 else ""
            print(f"{title}: " + ", ".join(shown) + more)
    print(f"{len(counts)} functions; {len(grown)} with more stack references in their "
          f"innermost loops than the table's + max(4, 25%); {len(outlined)} calling "
          "intrinsics out of line")
    return 1 if grown or outlined else 0


if __name__ == "__main__":
    sys.exit(main())
