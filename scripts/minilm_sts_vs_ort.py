"""ONNX Runtime's side of the real-model comparison of issue 16: a sentence-transformers
MiniLM (BertModel + mean pooling) on the STS-B dev set, as a user deploying it with ONNX Runtime
would run it. Called by scripts/minilm-sts-vs-ort.sh, which runs the harness on the same data.

- The graph is built with onnx.helper from the checkpoint's own model.safetensors (the builder
  of bench_vs_ort.py, no torch), tokenisation by `tokenizers` from its tokenizer.json
  (truncated at sentence_bert_config.json's max_seq_length), mean pooling over the attention
  mask and cosine similarity in numpy. The Spearman correlation against the gold scores is
  printed, so a graph that is not the model shows at once (it must equal the harness's).
- Batch 1: each pair's two sentences encoded one at a time, end to end (tokenise, run, pool,
  cosine), summed over the dev set: the harness's batch-1 pass.
- Batch 32: all sentences sorted by token count, padded per batch, laps over the set until 10 s
  have passed; pairs/s per lap (min / median / max).
- Peak RSS of the process (ru_maxrss).

    python3 scripts/minilm_sts_vs_ort.py --model ../shared/models/all-MiniLM-L6-v2 \
        --data ../shared/data/glue/STS-B/dev.tsv [--threads 2] [--json OUT.json]
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vs_ort import onnx_graph  # noqa: E402


def load_pairs(path):
    """STS-B dev.tsv: sentence1, sentence2 and score by header name (GLUE files are unquoted)."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        a, b, s = header.index("sentence1"), header.index("sentence2"), header.index("score")
        rows = [line.rstrip("\r\n").split("\t") for line in f if line.strip()]
    return [r[a] for r in rows], [r[b] for r in rows], np.array([float(r[s]) for r in rows])


def spearman(x, y):
    """Spearman's rho with average ranks for ties (SciPy's default)."""
    def ranks(v):
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        vs = np.asarray(v)[order]
        i = 0
        while i < len(vs):
            j = i
            while j + 1 < len(vs) and vs[j + 1] == vs[i]:
                j += 1
            r[order[i:j + 1]] = (i + j) / 2.0
            i = j + 1
        return r
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def build_session(model_dir, threads, work):
    import onnx
    import onnxruntime as ort
    from safetensors.numpy import load_file

    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    t = {k.removeprefix("bert."): v for k, v in load_file(os.path.join(model_dir, "model.safetensors")).items()}
    model = onnx_graph(t, cfg, cfg["hidden_size"], cfg["num_hidden_layers"],
                       cfg["num_attention_heads"], False, cfg.get("layer_norm_eps", 1e-12))
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, os.path.basename(os.path.normpath(model_dir)) + ".onnx")
    onnx.save(model, path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--min-time-s", type=float, default=10.0)
    ap.add_argument("--work", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "minilm-vs-ort"))
    ap.add_argument("--json")
    args = ap.parse_args()

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    sb = os.path.join(args.model, "sentence_bert_config.json")
    max_len = json.load(open(sb)).get("max_seq_length", 512) if os.path.exists(sb) else 512
    tok.enable_truncation(max_len)
    tok.no_padding()
    sess = build_session(args.model, args.threads, args.work)
    s1, s2, gold = load_pairs(args.data)

    def run(ids_rows):
        n = max(len(r) for r in ids_rows)
        ids = np.zeros((len(ids_rows), n), np.int64)
        mask = np.zeros((len(ids_rows), n), np.int64)
        for i, r in enumerate(ids_rows):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        h = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        m = mask[:, :, None].astype(np.float32)
        return (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)

    def cosine(u, v):
        return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))

    # Warm-up, then the batch-1 pass end to end.
    for s in s1[:3]:
        run([tok.encode(s).ids])
    started = time.perf_counter()
    latencies = []
    sims = []
    for a, b in zip(s1, s2):
        t0 = time.perf_counter()
        u = run([tok.encode(a).ids])[0]
        v = run([tok.encode(b).ids])[0]
        sims.append(cosine(u, v))
        latencies.append((time.perf_counter() - t0) * 1e3)
    batch1_s = time.perf_counter() - started
    rho = spearman(np.array(sims), gold)

    # Batch 32: sorted by length, laps until min-time.
    sentences = s1 + s2
    laps = []
    total = time.perf_counter()
    while not laps or time.perf_counter() - total < args.min_time_s:
        t0 = time.perf_counter()
        enc = [e.ids for e in tok.encode_batch(sentences)]
        order = sorted(range(len(enc)), key=lambda i: (-len(enc[i]), i))
        emb = [None] * len(enc)
        for k in range(0, len(order), args.batch_size):
            idx = order[k:k + args.batch_size]
            for i, row in zip(idx, run([enc[i] for i in idx])):
                emb[i] = row
        laps.append(len(s1) / (time.perf_counter() - t0))
    n = len(s1)
    batched = [cosine(emb[i], emb[n + i]) for i in range(n)]
    rho32 = spearman(np.array(batched), gold)
    out = {
        "model": args.model,
        "pairs": n,
        "spearman_batch1": rho,
        "spearman_batch32": rho32,
        "batch1_pass_s": batch1_s,
        "batch1_p50_ms": float(np.percentile(latencies, 50)),
        "batch32_pairs_per_s_laps": laps,
        "batch32_pairs_per_s_median": float(np.median(laps)),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    print(json.dumps(out, indent=1))
    if args.json:
        json.dump(out, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
