#!/usr/bin/env python3
"""Build the tiny random parity checkpoints under tests/fixtures/ with Python `transformers`.

Each fixture is a folder laid out exactly like a Hugging Face Hub snapshot, plus `expected.json`:
the inputs, the token ids the reference tokenizer produced, and the reference outputs (logits, or
pooled sentence embeddings) computed on ONE PADDED BATCH, so the Rust side is checked on padding
and masking too. Rust tests (harness/tests/parity.rs) load these through the same code path as a
real run and require max |diff| <= 1e-4 in f32.

Weights are drawn with a larger spread than the models' own initialisers (std 0.2 instead of 0.02)
so that outputs differ clearly between inputs and a wrong mask or a swapped tensor cannot hide.

Usage (CI never runs this; the fixtures are committed):
    python3 -m venv pyenv && pyenv/bin/pip install torch transformers gguf pyarrow
    pyenv/bin/python scripts/make-parity-fixtures.py            # every fixture
    pyenv/bin/python scripts/make-parity-fixtures.py qwen3 phi3 # just these
"""
import json
import os
import shutil
import sys

import torch
import transformers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizerFast,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    DistilBertTokenizer,
    MPNetConfig,
    MPNetModel,
    MPNetTokenizerFast,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
SEED = 1234

WORDS = (
    "the a an is was are of and to in it movie film good bad great terrible fun boring "
    "man woman child dog cat horse riding dancing playing hat hard wearing said not very "
    "company growth strategy business pie does fit our long term he she they we this that "
    "what how why question answer yes no i you"
).split()
PIECES = ["##s", "##ing", "##ed", "##ly", "##er", "##est", "##y", "##n", "##t"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
PUNCT = list(".,!?'\"-")

SINGLE = [
    "It was a great movie, very fun.",
    "A terrible, boring film!",
    "The child is riding a horse while the dog is playing and the cat is dancing in the hat.",
    "Zebras?",
]
PAIRS = [
    ("A man is dancing.", "A man wearing a hard hat is dancing."),
    ("He said the pie business does not fit.", "Our long-term growth strategy?"),
    ("What is this?", "This is not a question, it is an answer that is very long indeed."),
]


def bert_vocab():
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + PUNCT + WORDS + PIECES + LETTERS


def mpnet_vocab():
    return ["<s>", "<pad>", "</s>", "<unk>"] + PUNCT + WORDS + PIECES + LETTERS + ["<mask>"]


def spread_weights(model):
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight") or name.endswith("layer_norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


def write_vocab(path, vocab):
    with open(os.path.join(path, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    # transformers 5 takes the vocabulary as a mapping (`vocab=`); `vocab_file=` is ignored there.
    return {tok: i for i, tok in enumerate(vocab)}


def encode(tok, texts):
    if isinstance(texts[0], tuple):
        a, b = zip(*texts)
        return tok(list(a), list(b), padding=True, return_tensors="pt")
    return tok(texts, padding=True, return_tensors="pt")


def unpadded_ids(batch):
    return [
        [int(t) for t, m in zip(ids, mask) if m == 1]
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"])
    ]


def mean_pool(hidden, mask):
    m = mask.unsqueeze(-1).float()
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def save_expected(path, inputs, batch, key, values, extra=None):
    doc = {
        "generated_by": "scripts/make-parity-fixtures.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "inputs": [
            {"text_a": x[0], "text_b": x[1]} if isinstance(x, tuple) else {"text_a": x, "text_b": None}
            for x in inputs
        ],
        "input_ids": unpadded_ids(batch),
        key: [[round(float(v), 7) for v in row] for row in values],
    }
    doc.update(extra or {})
    with open(os.path.join(path, "expected.json"), "w") as f:
        json.dump(doc, f, indent=1)


def sentence_transformers_layout(path, pooling="mean"):
    os.makedirs(os.path.join(path, "1_Pooling"))
    with open(os.path.join(path, "1_Pooling", "config.json"), "w") as f:
        json.dump(
            {
                "word_embedding_dimension": 32,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            },
            f,
            indent=1,
        )
    with open(os.path.join(path, "modules.json"), "w") as f:
        json.dump(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ],
            f,
            indent=1,
        )


def bert_config(**kw):
    return BertConfig(
        vocab_size=len(bert_vocab()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        **kw,
    )


def make_bert_classifier():
    path = os.path.join(ROOT, "bert-sst2-tiny")
    fresh(path)
    tok = BertTokenizerFast(vocab=write_vocab(path, bert_vocab()), do_lower_case=True)
    cfg = bert_config(num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    cfg.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(cfg).eval()
    spread_weights(model)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    inputs = SINGLE + PAIRS
    # Singles and pairs in separate padded batches, as a run never mixes them.
    logits = []
    ids = []
    for group in (SINGLE, PAIRS):
        batch = encode(tok, group)
        with torch.no_grad():
            logits += model(**batch).logits.tolist()
        ids += unpadded_ids(batch)
    doc_batch = {"input_ids": [], "attention_mask": []}
    save_expected(path, inputs, doc_batch, "logits", logits, {"input_ids": ids})


def make_bert_regression():
    path = os.path.join(ROOT, "bert-stsb-tiny")
    fresh(path)
    tok = BertTokenizerFast(vocab=write_vocab(path, bert_vocab()), do_lower_case=True)
    cfg = bert_config(num_labels=1)
    cfg.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(SEED + 1)
    model = BertForSequenceClassification(cfg).eval()
    spread_weights(model)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    batch = encode(tok, PAIRS)
    with torch.no_grad():
        logits = model(**batch).logits
    save_expected(path, PAIRS, batch, "logits", logits.tolist())


def make_bert_encoder():
    """A BertModel sentence encoder in sentence-transformers layout, with the tokenizer file's own
    fixed padding switched on (as the MiniLM files in shared/ have it): the harness must ignore it."""
    path = os.path.join(ROOT, "bert-encoder-tiny")
    fresh(path)
    tok = BertTokenizerFast(vocab=write_vocab(path, bert_vocab()), do_lower_case=True)
    cfg = bert_config()
    cfg.architectures = ["BertModel"]
    torch.manual_seed(SEED + 2)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    spread_weights(model)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    tj = os.path.join(path, "tokenizer.json")
    with open(tj) as f:
        doc = json.load(f)
    doc["padding"] = {
        "strategy": {"Fixed": 40},
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": 0,
        "pad_type_id": 0,
        "pad_token": "[PAD]",
    }
    doc["truncation"] = {"direction": "Right", "max_length": 40, "strategy": "LongestFirst", "stride": 0}
    with open(tj, "w") as f:
        json.dump(doc, f)
    sentence_transformers_layout(path, "mean")
    batch = encode(tok, SINGLE)
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    save_expected(path, SINGLE, batch, "embeddings", mean_pool(hidden, batch["attention_mask"]).tolist())


def make_distilbert_textattack_layout():
    """DistilBertForSequenceClassification saved as textattack's checkpoints are: pytorch_model.bin,
    vocab.txt and tokenizer_config.json only (no tokenizer.json, no safetensors). Its MNLI label
    order differs from the GLUE order, so label mapping by name is exercised too."""
    path = os.path.join(ROOT, "distilbert-mnli-tiny")
    fresh(path)
    tok = DistilBertTokenizer(vocab=write_vocab(path, bert_vocab()), do_lower_case=True)
    id2label = {0: "CONTRADICTION", 1: "ENTAILMENT", 2: "NEUTRAL"}
    cfg = DistilBertConfig(
        vocab_size=len(bert_vocab()),
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=48,
        max_position_embeddings=64,
        num_labels=3,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    cfg.architectures = ["DistilBertForSequenceClassification"]
    torch.manual_seed(SEED + 3)
    model = DistilBertForSequenceClassification(cfg).eval()
    spread_weights(model)
    model.save_pretrained(path)
    # transformers 5 always writes safetensors; write the legacy pickle the way old checkpoints have it.
    os.remove(os.path.join(path, "model.safetensors"))
    torch.save(model.state_dict(), os.path.join(path, "pytorch_model.bin"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "model_max_length": 64}, f)
    assert os.path.exists(os.path.join(path, "pytorch_model.bin")), os.listdir(path)
    batch = encode(tok, PAIRS)
    # DistilBERT takes no token type ids.
    batch.pop("token_type_ids", None)
    with torch.no_grad():
        logits = model(**batch).logits
    save_expected(path, PAIRS, batch, "logits", logits.tolist())


def make_distilbert_sharded_bin():
    """The textattack-style DistilBERT above, its state dict cut into three `pytorch_model-0000N-of-00003.bin`
    shards with a `pytorch_model.bin.index.json`, as `save_pretrained(safe_serialization=False,
    max_shard_size=...)` lays out older large checkpoints. Built from distilbert-mnli-tiny's own
    file (made first when missing), so both folders hold the same weights and expected outputs."""
    src = os.path.join(ROOT, "distilbert-mnli-tiny")
    if not os.path.exists(os.path.join(src, "pytorch_model.bin")):
        make_distilbert_textattack_layout()
    path = os.path.join(ROOT, "distilbert-mnli-tiny-sharded")
    fresh(path)
    state = torch.load(os.path.join(src, "pytorch_model.bin"), weights_only=True)
    names = list(state)
    parts = [names[i::3] for i in range(3)]
    weight_map, total = {}, 0
    for i, part in enumerate(parts):
        shard = f"pytorch_model-{i + 1:05d}-of-00003.bin"
        torch.save({n: state[n].contiguous() for n in part}, os.path.join(path, shard))
        for n in part:
            weight_map[n] = shard
            total += state[n].numel() * state[n].element_size()
    with open(os.path.join(path, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    for f in ("config.json", "vocab.txt", "tokenizer_config.json", "expected.json"):
        shutil.copy(os.path.join(src, f), os.path.join(path, f))


def make_mpnet_encoder():
    path = os.path.join(ROOT, "mpnet-encoder-tiny")
    fresh(path)
    tok = MPNetTokenizerFast(vocab=write_vocab(path, mpnet_vocab()), do_lower_case=True, unk_token="<unk>")
    cfg = MPNetConfig(
        vocab_size=len(mpnet_vocab()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=80,
        relative_attention_num_buckets=32,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    cfg.architectures = ["MPNetModel"]
    torch.manual_seed(SEED + 4)
    model = MPNetModel(cfg).eval()
    spread_weights(model)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    sentence_transformers_layout(path, "mean")
    # Long inputs push relative distances past the exact buckets into the logarithmic ones.
    inputs = SINGLE + [" ".join(WORDS[:30])]
    batch = encode(tok, inputs)
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    save_expected(path, inputs, batch, "embeddings", mean_pool(hidden, batch["attention_mask"]).tolist())


def make_mpnet_classifier():
    """MPNetForSequenceClassification (classifier.dense + tanh + classifier.out_proj on <s>),
    two named labels, on sentence pairs."""
    from transformers import MPNetForSequenceClassification

    path = os.path.join(ROOT, "mpnet-rte-tiny")
    fresh(path)
    tok = MPNetTokenizerFast(vocab=write_vocab(path, mpnet_vocab()), do_lower_case=True, unk_token="<unk>")
    id2label = {0: "entailment", 1: "not_entailment"}
    cfg = MPNetConfig(
        vocab_size=len(mpnet_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=80, relative_attention_num_buckets=32,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=2, id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    cfg.architectures = ["MPNetForSequenceClassification"]
    torch.manual_seed(SEED + 9)
    model = MPNetForSequenceClassification(cfg).eval()
    spread_weights(model)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    batch = encode(tok, PAIRS)
    with torch.no_grad():
        logits = model(**batch).logits
    save_expected(path, PAIRS, batch, "logits", logits.tolist())


def decoder_reference(model, gen, low, vocab, lengths):
    """Random token ids in [low, vocab) for sequences of `lengths`, right-padded with 0 into one
    batch, and the logits of every real position: [sequence][position][vocab]."""
    width = max(lengths)
    ids = torch.randint(low, vocab, (len(lengths), width), generator=gen)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids = ids * mask  # padding positions hold token 0; they are masked
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    return {
        "generated_by": "scripts/make-parity-fixtures.py",
        "transformers_version": transformers.__version__,
        "input_ids": [row[:n].tolist() for row, n in zip(ids, lengths)],
        "logits": [[[round(float(v), 6) for v in pos] for pos in row[:n]] for row, n in zip(logits, lengths)],
    }


def decoder_fixture(name, model_cls, cfg, seed, low, lengths):
    """A tiny random causal LM saved as `name`: weights drawn under torch seed `seed` and
    spread, the reference logits of a right-padded batch (`lengths`, token ids from `low`)
    drawn from a generator seeded `seed + 1`. Returns the folder, the model, the generator
    (for more inputs) and the expected.json document, still to be saved."""
    path = os.path.join(ROOT, name)
    fresh(path)
    cfg.architectures = [model_cls.__name__]
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    spread_weights(model)
    model.save_pretrained(path, safe_serialization=True)
    gen = torch.Generator().manual_seed(seed + 1)
    return path, model, gen, decoder_reference(model, gen, low, cfg.vocab_size, lengths)


def save_json(path, doc):
    with open(os.path.join(path, "expected.json"), "w") as f:
        json.dump(doc, f)


def make_gpt2_lm():
    """GPT2LMHeadModel (DistilGPT-2 shares it), tiny and random, with the logits of every
    position for a right-padded batch of token ids (the tokenizer is exercised elsewhere)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    path, model, gen, doc = decoder_fixture("gpt2-tiny", GPT2LMHeadModel, cfg, SEED + 5, 0, [11, 7, 3])
    # Sliding-window perplexity with the Hugging Face guide's windows (context, stride, each
    # window scoring the tokens after the previous window's end), summing each scored token's
    # log-probability directly. (The guide multiplies the mean loss by valid - 1 tokens, which
    # undercounts by one in every overlapping window; summing per token is exact.)
    text_ids = torch.randint(0, cfg.vocab_size, (1, 40), generator=gen)
    context, stride = 16, 6
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    n = text_ids.size(1)
    for begin in range(0, n, stride):
        end = min(begin + context, n)
        with torch.no_grad():
            logp = torch.log_softmax(model(text_ids[:, begin:end]).logits[0].double(), dim=-1)
        for pos in range(max(prev_end, begin + 1), end):
            nll_sum -= logp[pos - begin - 1, text_ids[0, pos]].item()
            n_tokens += 1
        prev_end = end
        if end == n:
            break
    doc["perplexity"] = {
        "ids": text_ids[0].tolist(),
        "context": context,
        "stride": stride,
        "nll_sum": nll_sum,
        "tokens_scored": n_tokens,
        "token_perplexity": float(torch.exp(torch.tensor(nll_sum / n_tokens))),
    }
    save_json(path, doc)
    write_word_tokenizer(path, cfg.vocab_size, ["[UNK]", "<|endoftext|>"])


def write_word_tokenizer(path, vocab_size, specials, fill=False):
    """A word-level tokenizer.json that fits a tiny decoder's vocabulary: the special tokens,
    then the commonest English words, lower-cased; anything else is [UNK]. It only lets the
    command-line tests run text through the tiny decoders; parity is checked on token ids.
    With `fill`, `[unusedN]` tokens take the rest of the ids, so that the tokenizer covers the
    whole embedding table as a real one does (llama.cpp's Gemma 3 converter trims embedding
    rows past the tokenizer's last id)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, decoders

    words = ("the of and to in a is was for on as with by he at from his an were are which "
             "it be this that or had first one their its new after who they have her she two "
             "been other when there all during into school time may years more most only over "
             "city some world would where later up such used many can state about national "
             "out known university united then made game season".split())
    vocab = {tok: i for i, tok in enumerate(specials)}
    for w in words:
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(w, len(vocab))
    while fill and len(vocab) < vocab_size:
        vocab[f"[unused{len(vocab)}]"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.save(os.path.join(path, "tokenizer.json"))


def make_llama_lm():
    """LlamaForCausalLM, tiny and random, with grouped-query attention (4 query heads, 2 KV
    heads), RoPE and untied embeddings; logits of every position for a right-padded batch."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    path, model, _, doc = decoder_fixture("llama-tiny", LlamaForCausalLM, cfg, SEED + 7, 3, [13, 5, 9])
    save_json(path, doc)
    write_llama_gguf(model, cfg, os.path.join(path, "model-f32.gguf"))
    write_word_tokenizer(path, cfg.vocab_size, ["[UNK]", "<s>", "</s>"])


def make_qwen2_lm():
    """Qwen2ForCausalLM (Qwen2 / Qwen2.5), tiny and random: Llama with biases on q, k, v;
    grouped-query attention, tied embeddings as the small Qwen2.5 models have them."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=103, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, use_sliding_window=False,
    )
    path, model, _, doc = decoder_fixture("qwen2-tiny", Qwen2ForCausalLM, cfg, SEED + 9, 3, [12, 6, 9])
    assert model.model.layers[0].self_attn.q_proj.bias.abs().sum() > 0, "biases are random too"
    save_json(path, doc)
    write_word_tokenizer(path, cfg.vocab_size, ["[UNK]", "<s>", "</s>"])
    write_qwen2_gguf(model, cfg, os.path.join(path, "model-f32.gguf"))


def make_mistral_lm():
    """MistralForCausalLM, tiny and random, with a sliding window (4) shorter than the test's
    sequences, on every layer as Mistral 7B v0.1 has it: the harness masks it exactly."""
    from transformers import MistralConfig, MistralForCausalLM

    cfg = MistralConfig(
        vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=64,
        rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=4, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, attn_implementation="eager",
    )
    path, _, _, doc = decoder_fixture("mistral-tiny", MistralForCausalLM, cfg, SEED + 11, 3, [14, 4, 8])
    save_json(path, doc)
    write_word_tokenizer(path, cfg.vocab_size, ["[UNK]", "<s>", "</s>"])


def make_qwen2_window_lm():
    """Qwen2ForCausalLM with use_sliding_window and max_window_layers 1: the second of its two
    layers attends through a window of 4, the first sees everything (Qwen's rule)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=103, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True,
        use_sliding_window=True, sliding_window=4, max_window_layers=1,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, attn_implementation="eager",
    )
    path, model, _, doc = decoder_fixture("qwen2-window-tiny", Qwen2ForCausalLM, cfg, SEED + 29, 3, [12, 6, 9])
    assert model.config.layer_types == ["full_attention", "sliding_attention"], model.config.layer_types
    save_json(path, doc)
    write_word_tokenizer(path, cfg.vocab_size, ["[UNK]", "<s>", "</s>"])


def make_qwen3_lm():
    """Qwen3ForCausalLM, tiny and random: Llama with an RMSNorm over each head of q and k, no
    q/k/v biases, and a head_dim (16) that is not hidden / heads (8), as Qwen3's configs have."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=103, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, use_sliding_window=False,
    )
    path, model, _, doc = decoder_fixture("qwen3-tiny", Qwen3ForCausalLM, cfg, SEED + 13, 3, [12, 6, 9])
    assert model.model.layers[0].self_attn.q_norm.weight.abs().sum() > 0
    save_json(path, doc)
    write_word_tokenizer(path, cfg.vocab_size, ["[UNK]", "<s>", "</s>"])
    write_qwen2_gguf(model, cfg, os.path.join(path, "model-f32.gguf"), arch="qwen3")


def make_phi3_lm():
    """Phi3ForCausalLM, tiny and random: q, k, v in one qkv_proj, gate and up in one
    gate_up_proj, RoPE over half of each head (partial_rotary_factor 0.5, as Phi-4-mini has
    0.75), grouped-query attention, no sliding window."""
    from transformers import Phi3Config, Phi3ForCausalLM

    cfg = Phi3Config(
        vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        original_max_position_embeddings=64, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        tie_word_embeddings=False, sliding_window=None,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    path, model, _, doc = decoder_fixture("phi3-tiny", Phi3ForCausalLM, cfg, SEED + 15, 3, [13, 5, 9])
    assert model.model.rotary_emb.inv_freq.numel() == 2, "a quarter of the head's 8 dimensions pairs"
    save_json(path, doc)
    write_word_tokenizer(path, cfg.vocab_size, ["[UNK]", "<s>", "</s>"])


def make_llama3_rope_lm():
    """LlamaForCausalLM with Llama 3's RoPE scaling (rope_type llama3, as Llama 3.1 / 3.2 / 3.3
    have it), with an original length (64) that puts the 8-dimension heads' four frequencies in
    every band: one kept (wavelength 6 < 16), one blended (63), two divided by the factor. Also
    written as llama.cpp's converter writes Llama 3: the scaling as a `rope_freqs` tensor."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64},
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    path, model, _, doc = decoder_fixture("llama3-rope-tiny", LlamaForCausalLM, cfg, SEED + 21, 3, [13, 5, 9])
    inv = model.model.rotary_emb.inv_freq
    plain = 1.0 / (10000.0 ** (torch.arange(0, 8, 2).float() / 8))
    assert torch.allclose(inv[0], plain[0]) and not torch.allclose(inv[1:], plain[1:]), inv
    save_json(path, doc)
    write_word_tokenizer(path, cfg.vocab_size, ["[UNK]", "<s>", "</s>"])
    # llama.cpp's LlamaModel.generate_extra_tensors: one divisor per pair of dimensions.
    rp = cfg.rope_parameters
    factor, low, high, old = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"], rp["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    factors = []
    for freq in plain.tolist():
        wavelen = 2 * 3.141592653589793 / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    write_llama_gguf(model, cfg, os.path.join(path, "model-f32.gguf"), rope_freqs=factors)


def make_qwen2_yarn_lm():
    """Qwen2ForCausalLM with yarn RoPE scaling (as Qwen2.5's long-context configs enable it):
    interpolated and extrapolated frequencies blended by a ramp, cos and sin scaled."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=103, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64},
        bos_token_id=1, eos_token_id=2, pad_token_id=0, use_sliding_window=False,
    )
    path, model, _, doc = decoder_fixture("qwen2-yarn-tiny", Qwen2ForCausalLM, cfg, SEED + 23, 3, [12, 6, 9])
    assert model.model.rotary_emb.attention_scaling != 1.0
    save_json(path, doc)
    write_word_tokenizer(path, cfg.vocab_size, ["[UNK]", "<s>", "</s>"])


def make_phi3_longrope_lm():
    """Phi3ForCausalLM with longrope scaling (Phi-3 128k, Phi-3.5, Phi-4-mini): per-frequency
    factors, short up to original_max_position_embeddings (4 here) and long past it, and
    attention scaled by sqrt(1 + ln(max / original) / ln(original)). The main batch (13, 5, 9
    tokens) runs on the long factors; `short` holds sequences of 4 and 3 tokens, which run on
    the short ones."""
    from transformers import Phi3Config, Phi3ForCausalLM

    cfg = Phi3Config(
        vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        original_max_position_embeddings=4, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                         "short_factor": [1.0, 1.5, 2.0, 3.0], "long_factor": [2.0, 5.0, 11.0, 23.0]},
        tie_word_embeddings=False, sliding_window=None,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    path, model, gen, doc = decoder_fixture("phi3-longrope-tiny", Phi3ForCausalLM, cfg, SEED + 25, 3, [13, 5, 9])
    short = decoder_reference(model, gen, 3, cfg.vocab_size, [4, 3])
    doc["short"] = {"input_ids": short["input_ids"], "logits": short["logits"]}
    save_json(path, doc)
    write_word_tokenizer(path, cfg.vocab_size, ["[UNK]", "<s>", "</s>"])


def make_gemma2_lm():
    """Gemma2ForCausalLM, tiny and random: scaled embeddings, (1 + weight) RMSNorms before and
    after both sublayers, GELU (tanh) gating, query_pre_attn_scalar, soft-capped scores and
    logits (caps low enough to bend them), and sliding-window layers with a window (4) shorter
    than the sequences, so the exact window mask is checked."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(
        vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
        rms_norm_eps=1e-6, rope_theta=10000.0, query_pre_attn_scalar=24,
        attn_logit_softcapping=2.0, final_logit_softcapping=3.0, sliding_window=4,
        hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, attn_implementation="eager",
    )
    path, model, _, doc = decoder_fixture("gemma2-tiny", Gemma2ForCausalLM, cfg, SEED + 17, 3, [13, 5, 9])
    assert model.config.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]
    save_json(path, doc)
    write_word_tokenizer(path, cfg.vocab_size, ["[UNK]", "<s>", "</s>"])


def make_gemma3_lm():
    """Gemma3ForCausalLM (model_type gemma3_text), tiny and random: Gemma 2's layout plus
    q/k norms, its own RoPE base for the sliding layers and linear RoPE scaling on the full
    ones (as the 4B+ models have), no score softcap; window 4."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(
        vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=64,
        rms_norm_eps=1e-6, query_pre_attn_scalar=16, sliding_window=4,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        rope_parameters={
            "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 8.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
        final_logit_softcapping=None, attn_logit_softcapping=None,
        hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, attn_implementation="eager",
    )
    path, model, _, doc = decoder_fixture("gemma3-tiny", Gemma3ForCausalLM, cfg, SEED + 19, 3, [13, 5, 9])
    assert model.config.model_type == "gemma3_text"
    save_json(path, doc)
    write_word_tokenizer(path, cfg.vocab_size, ["[UNK]", "<s>", "</s>"], fill=True)


def make_gemma3_multimodal_lm():
    """Gemma3ForConditionalGeneration (model_type gemma3: Gemma 3 4B / 12B / 27B as published),
    tiny and random, with a tiny SigLIP vision tower: the harness runs its language model on
    text alone. The text half is gemma3-tiny's settings with a final-logit softcap; weights are
    saved as transformers 5.25 writes them to disk: language_model.model.* as on
    the Hub (the Rust test renames them to its in-memory model.language_model.* to check both)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(
        vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
        rms_norm_eps=1e-6, query_pre_attn_scalar=16, sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={
            "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 8.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
        final_logit_softcapping=5.0, attn_logit_softcapping=None,
        hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, image_size=28, patch_size=14)
    cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                       image_token_index=100, boi_token_index=98, eoi_token_index=99,
                       attn_implementation="eager")
    cfg.vocab_size = text.vocab_size
    path, model, _, doc = decoder_fixture("gemma3-multimodal-tiny", Gemma3ForConditionalGeneration, cfg, SEED + 27, 3, [13, 5, 9])
    assert model.config.model_type == "gemma3"
    # Text only: no id reaches the image token (100), which the vision tower would replace.
    assert max(max(r) for r in doc["input_ids"]) < 100
    save_json(path, doc)
    write_word_tokenizer(path, text.vocab_size, ["[UNK]", "<s>", "</s>"], fill=True)


def write_llama_gguf(model, cfg, out, rope_freqs=None):
    """The same tiny Llama as a GGUF file written the way llama.cpp's convert_hf_to_gguf.py
    writes it (tensor names, metadata, and the Q/K row permutation for its RoPE layout), in F32
    so the GGUF loader is checked against the very logits of expected.json. Needs `pip install gguf`."""
    import gguf
    import numpy as np

    def permute(w, n_head):
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    writer = gguf.GGUFWriter(out, "llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, dtype=np.float32))
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for name, t in model.state_dict().items():
        w = t.detach().float().numpy()
        if name in names:
            gname = names[name]
        else:
            parts = name.split(".")  # model.layers.N.<module...>.weight
            layer, module = parts[2], ".".join(parts[3:-1])
            gname = f"blk.{layer}.{per_layer[module]}.weight"
            if module == "self_attn.q_proj":
                w = permute(w, cfg.num_attention_heads)
            elif module == "self_attn.k_proj":
                w = permute(w, cfg.num_key_value_heads)
        writer.add_tensor(gname, np.ascontiguousarray(w, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_qwen2_gguf(model, cfg, out, arch="qwen2"):
    """The tiny Qwen2 as a GGUF file the way convert_hf_to_gguf.py writes Qwen2: architecture
    `qwen2`, `qwen2.*` metadata, no Q/K permutation (NEOX RoPE), the q/k/v biases as
    `blk.N.attn_{q,k,v}.bias`, no `output.weight` when the embeddings are tied. F32.
    With arch="qwen3", Qwen3 the same way: `attention.key_length` for its head width and
    the per-head norms as `blk.N.attn_{q,k}_norm.weight`."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(out, arch)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"] if getattr(cfg, "rope_parameters", None) else cfg.rope_theta)
    if arch == "qwen3":
        writer.add_key_length(cfg.head_dim)
        writer.add_value_length(cfg.head_dim)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if not cfg.tie_word_embeddings:
        names["lm_head.weight"] = "output.weight"
    per_layer = {
        "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    }
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        w = t.detach().float().numpy()
        if name in names:
            gname = names[name]
        else:
            parts = name.split(".")  # model.layers.N.<module...>.{weight,bias}
            layer, module, kind = parts[2], ".".join(parts[3:-1]), parts[-1]
            gname = f"blk.{layer}.{per_layer[module]}.{kind}"
        writer.add_tensor(gname, np.ascontiguousarray(w, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def make_hub_glue_parquet():
    """A slice of `nyu-mll/glue` as the Hub stores it (parquet, snappy; `label` int64, `idx`
    int32), for the offline test of the Hub data path. Needs `pip install pyarrow`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = os.path.join(ROOT, "hub-glue")
    shutil.rmtree(root, ignore_errors=True)
    rows = {
        "validation": [("it was a great movie, very fun.", 1), ("a terrible, boring film!", 0),
                       ("a good film.", 1), ("the movie was bad.", 0)],
        "train": [("great fun!", 1), ("boring and terrible.", 0), ("the film was very good.", 1),
                  ("a very bad film.", 0), ("good, very good.", 1), ("bad, bad, bad.", 0)],
    }
    for split, data in rows.items():
        os.makedirs(os.path.join(root, "sst2"), exist_ok=True)
        table = pa.table({
            "sentence": pa.array([t for t, _ in data], pa.string()),
            "label": pa.array([l for _, l in data], pa.int64()),
            "idx": pa.array(list(range(len(data))), pa.int32()),
        })
        pq.write_table(table, os.path.join(root, "sst2", f"{split}-00000-of-00001.parquet"), compression="snappy")


def make_hub_wikitext_parquet():
    """A slice of `Salesforce/wikitext` (config wikitext-2-raw-v1, split test) as the Hub stores
    it: one row per line of the raw file, line ends kept, blank lines as empty rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = os.path.join(ROOT, "hub-wikitext", "wikitext-2-raw-v1")
    shutil.rmtree(os.path.dirname(root), ignore_errors=True)
    os.makedirs(root)
    lines = ["", " = The city = \n", "", " The city was known for its school and the university .\n",
             " It was one of the most known in the world .\n", "", " = = Later years = = \n", "",
             " After the season , the city had two more . \n"]
    table = pa.table({"text": pa.array(lines, pa.string())})
    pq.write_table(table, os.path.join(root, "test-00000-of-00001.parquet"), compression="snappy")


MAKERS = {
    "bert-sst2": make_bert_classifier,
    "bert-stsb": make_bert_regression,
    "bert-encoder": make_bert_encoder,
    "distilbert-mnli": make_distilbert_textattack_layout,
    "distilbert-sharded-bin": make_distilbert_sharded_bin,
    "mpnet-encoder": make_mpnet_encoder,
    "mpnet-rte": make_mpnet_classifier,
    "gpt2": make_gpt2_lm,
    "llama": make_llama_lm,
    "qwen2": make_qwen2_lm,
    "mistral": make_mistral_lm,
    "qwen2-window": make_qwen2_window_lm,
    "qwen3": make_qwen3_lm,
    "phi3": make_phi3_lm,
    "llama3-rope": make_llama3_rope_lm,
    "qwen2-yarn": make_qwen2_yarn_lm,
    "phi3-longrope": make_phi3_longrope_lm,
    "gemma2": make_gemma2_lm,
    "gemma3": make_gemma3_lm,
    "gemma3-multimodal": make_gemma3_multimodal_lm,
    "hub-glue": make_hub_glue_parquet,
    "hub-wikitext": make_hub_wikitext_parquet,
}


def main():
    # `make-parity-fixtures.py qwen3 phi3` rebuilds just those (the others stay as committed);
    # no argument rebuilds every fixture.
    wanted = sys.argv[1:] or list(MAKERS)
    unknown = [w for w in wanted if w not in MAKERS]
    if unknown:
        sys.exit(f"unknown fixture(s) {unknown}; known: {', '.join(MAKERS)}")
    os.makedirs(ROOT, exist_ok=True)
    torch.set_num_threads(1)
    for name in wanted:
        MAKERS[name]()
    # hub-* hold parquet files; choice-lm-eval is scripts/make-choice-fixture.py's.
    ours = (n for n in os.listdir(ROOT) if not n.startswith("hub-") and n != "choice-lm-eval")
    for name in sorted(ours):
        with open(os.path.join(ROOT, name, "expected.json")) as f:
            ids = [t for row in json.load(f)["input_ids"] for t in row]
        unk = sum(1 for t in ids if t in (1, 3)) / len(ids)
        assert name.startswith(("gpt2", "llama", "qwen", "mistral", "phi3", "gemma")) or unk < 0.2, f"{name}: {unk:.0%} of tokens are unknown or padding; the vocabulary did not load"
        size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(ROOT, name)) for f in fs)
        print(f"{name}: {size / 1024:.0f} KiB")


if __name__ == "__main__":
    sys.exit(main())
