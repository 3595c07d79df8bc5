#!/usr/bin/env python3
"""Two harness binaries (or two environments) compared on `harness profile`, alternating
runs so that a VM's drift from minute to minute falls on both alike (issue 16): prints, per
shape, the median p50 latency of each side and the median of the per-round ratios B/A with
their range.

    scripts/ab-profile.py --rounds 6 --model ../shared/models/all-MiniLM-L6-v2 \\
        --batch-sizes 1,32 --seq-lens 16,32 --a /tmp/harness-old --b target/release/harness
    scripts/ab-profile.py --model M --a target/release/harness --b target/release/harness \\
        --b-env HARNESS_POOL=rayon
"""
import argparse
import json
import os
import statistics as st
import subprocess
import tempfile


def run(binary, env_kv, args, out):
    env = dict(os.environ)
    for kv in env_kv:
        k, v = kv.split("=", 1)
        env[k] = v
    subprocess.run([binary, "profile", "--model", args.model, "--batch-sizes", args.batch_sizes,
                    "--seq-lens", args.seq_lens, "--min-iterations", "15", "--min-time-s",
                    str(args.min_time_s), "--warmup", "2", "--out", out, "--quiet"]
                   + (["--quantize", args.quantize] if args.quantize else []),
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    doc = json.load(open(os.path.join(out, "profile.json")))
    return {f"{p['batch_size']}x{p['seq_len']}": p["latency_ms"]["p50"]
            for p in doc["models"][0]["points"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--seq-lens", default="16,32")
    ap.add_argument("--min-time-s", type=float, default=0.7)
    ap.add_argument("--quantize", help="both sides' linear layers in this format (e.g. q8_0)")
    ap.add_argument("--a", required=True, help="binary A (the baseline)")
    ap.add_argument("--b", required=True, help="binary B")
    ap.add_argument("--a-env", action="append", default=[], help="KEY=VALUE for A's runs")
    ap.add_argument("--b-env", action="append", default=[], help="KEY=VALUE for B's runs")
    args = ap.parse_args()
    out = tempfile.mkdtemp(prefix="ab-profile-")
    a, b = [], []
    for _ in range(args.rounds):
        a.append(run(args.a, args.a_env, args, out))
        b.append(run(args.b, args.b_env, args, out))
    print("| shape | A p50 ms (min) | B p50 ms (min) | B / A, median of rounds [range] |")
    print("|---|---:|---:|---:|")
    for k in a[0]:
        ratios = [y[k] / x[k] for x, y in zip(a, b)]
        print(f"| {k} | {st.median(x[k] for x in a):.2f} ({min(x[k] for x in a):.2f}) "
              f"| {st.median(y[k] for y in b):.2f} ({min(y[k] for y in b):.2f}) "
              f"| {st.median(ratios):.3f} [{min(ratios):.2f}-{max(ratios):.2f}] |")


if __name__ == "__main__":
    main()
