#!/usr/bin/env python3
"""Reference scores for the multiple-choice tasks, computed the way lm-evaluation-harness
computes them, on the tiny random GPT-2 of tests/fixtures/gpt2-tiny (made by
make-parity-fixtures.py) and a small ARC-layout file written here.

For every choice: lm-eval's request (context "Question: {stem}\\nAnswer:", continuation
" {choice}"), its `_encode_pair` (trailing context whitespace moved to the continuation,
continuation tokens = tokens of context + continuation past the context's), the summed
log-softmax of transformers' logits over the continuation and whether it is greedy; then
`process_results` (acc, acc_norm by characters, acc_bytes by UTF-8 bytes, numpy argmax) and
`mean_stderr`. Writes tests/fixtures/choice-lm-eval/{ARC-Easy-Test.jsonl,expected.json}.

    pip install torch transformers tokenizers numpy
    python3 scripts/make-choice-fixture.py
"""
import json
import math
import os

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import GPT2LMHeadModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
MODEL = os.path.join(ROOT, "gpt2-tiny")
OUT = os.path.join(ROOT, "choice-lm-eval")

# Questions and choices from the tiny tokenizer's words (anything else is [UNK]); choices of
# different lengths in words and characters so that acc and acc_norm can differ. One choice
# has a non-ASCII character so that acc_bytes differs from acc_norm in length.
DOCS = [
    ("q1", "which city was the first", ["the city", "a new school of the world", "one", "his state"], "B"),
    ("q2", "who made the game", ["he", "they have been", "the university of the state", "she"], "A"),
    ("q3", "where is the school", ["in the city", "on the world", "at national", "over two years"], "C"),
    ("q4", "when was the season", ["after the first game", "during the time", "later", "then"], "D"),
    ("q5", "what can be used", ["some", "many of the other", "such as this", "more"], "B"),
    ("q6", "what is known about the world", ["it was", "that is new", "all of them", "up to two"], "A"),
    ("q7", "which one is more", ["this one", "that one é", "the first one of all", "two"], "C"),
    ("q8", "who was at the university", ["his", "her", "their", "its"], "C"),
]


def encode(tok, text):
    return tok.encode(text).ids


def loglikelihood(model, tok, context, continuation):
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(tok, context + continuation)
    ctx = encode(tok, context)
    cont = whole[len(ctx):]
    inp = torch.tensor([(ctx + cont)[:-1]])
    with torch.no_grad():
        logp = torch.log_softmax(model(inp).logits[0].double(), dim=-1)
    rows = logp[len(ctx) - 1:]
    ll = sum(rows[i, t].item() for i, t in enumerate(cont))
    greedy = all(rows[i].argmax().item() == t for i, t in enumerate(cont))
    return ll, greedy, len(cont)


def mean_stderr(xs):
    xs = np.asarray(xs, dtype=float)
    return float(np.std(xs, ddof=1) / math.sqrt(len(xs)))


def main():
    model = GPT2LMHeadModel.from_pretrained(MODEL).eval()
    tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    os.makedirs(OUT, exist_ok=True)
    rows, docs = [], []
    acc, acc_norm, acc_bytes = [], [], []
    for qid, stem, choices, key in DOCS:
        labels = ["A", "B", "C", "D"]
        rows.append({
            "id": qid,
            "question": {"stem": stem, "choices": [{"text": c, "label": l} for c, l in zip(choices, labels)]},
            "answerKey": key,
        })
        ctx = f"Question: {stem}\nAnswer:"
        out = [loglikelihood(model, tok, ctx, f" {c}") for c in choices]
        lls = np.array([o[0] for o in out])
        gold = labels.index(key)
        completion_len = np.array([float(len(c)) for c in choices])
        byte_length = np.array([float(len(c.encode("utf-8"))) for c in choices])
        acc.append(1.0 if np.argmax(lls) == gold else 0.0)
        acc_norm.append(1.0 if np.argmax(lls / completion_len) == gold else 0.0)
        acc_bytes.append(1.0 if np.argmax(lls / byte_length) == gold else 0.0)
        docs.append({
            "id": qid,
            "logprobs": [o[0] for o in out],
            "greedy": [o[1] for o in out],
            "tokens": [o[2] for o in out],
        })
    with open(os.path.join(OUT, "ARC-Easy-Test.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    metrics = {
        "acc": float(np.mean(acc)),
        "acc_stderr": mean_stderr(acc),
        "acc_norm": float(np.mean(acc_norm)),
        "acc_norm_stderr": mean_stderr(acc_norm),
        "acc_bytes": float(np.mean(acc_bytes)),
        "acc_bytes_stderr": mean_stderr(acc_bytes),
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"docs": docs, "metrics": metrics}, f, indent=1)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
