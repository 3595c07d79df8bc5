#!/usr/bin/env python3
"""Cross-check `harness run ... --task stsb` (cosine mode) against Python transformers.

Computes mean-pooled, L2-normalised sentence embeddings (as sentence-transformers does for the
MiniLM models) of the STS-B dev set with transformers' BertModel, then Pearson and Spearman
(average ranks for ties) of their cosine similarity against the gold scores.

    pyenv/bin/python scripts/reference-stsb-cosine.py ../shared/models/all-MiniLM-L6-v2 ../shared/data/glue
"""
import sys

import torch
from transformers import AutoModel, AutoTokenizer


def ranks(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in order[i : j + 1]:
            r[k] = (i + j) / 2 + 1
        i = j + 1
    return r


def pearson(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / (sxx * syy) ** 0.5


def main(model_dir, glue_dir):
    rows = [l.rstrip("\n").split("\t") for l in open(f"{glue_dir}/STS-B/dev.tsv", encoding="utf-8")][1:]
    a, b, gold = [r[7] for r in rows], [r[8] for r in rows], [float(r[9]) for r in rows]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    torch.set_num_threads(2)

    def embed(texts):
        out = []
        for i in range(0, len(texts), 64):
            batch = tok(texts[i : i + 64], padding=True, truncation=True, max_length=512, return_tensors="pt")
            with torch.no_grad():
                h = model(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).float()
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(e, dim=-1))
        return torch.cat(out)

    ea, eb = embed(a), embed(b)
    cos = (ea * eb).sum(-1).tolist()
    print(f"pearson={pearson(cos, gold):.6f} spearman={pearson(ranks(cos), ranks(gold)):.6f} n={len(gold)}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
