#!/usr/bin/env python3
"""Convert the tiny decoder parity fixtures to GGUF with llama.cpp's own converter.

`make-parity-fixtures.py` writes some GGUF twins by hand (the Llama, Qwen2, Qwen3 layouts as
the converter writes them); this script runs the converter itself, `convert_hf_to_gguf.py`
from the llama.cpp tree vendored in the PyPI package `llama-cpp-python` (pinned below, with
its sha256), on each fixture folder and writes `FIXTURE/llamacpp-f32.gguf`. The Rust tests
(harness/tests/parity_decoders.rs) load those files and require transformers' logits
(`expected.json`) within 1e-4, so the GGUF loaders are checked against llama.cpp's actual
tensor names, row orders, norm shifts and metadata, not against our reading of them.

The fixtures' word-level tokenizers are not ones llama.cpp can convert, so the vocabulary step
is skipped (the tests tokenize with the fixture's tokenizer.json); everything else is the
converter's code, unchanged.

Usage (CI never runs this; the GGUF files are committed):
    python3 -m venv pyenv && pyenv/bin/pip install torch transformers numpy sentencepiece
    pyenv/bin/python scripts/make-gguf-fixtures.py            # every fixture below
    pyenv/bin/python scripts/make-gguf-fixtures.py gemma2-tiny
"""
import hashlib
import importlib
import io
import json
import os
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
PACKAGE, VERSION = "llama-cpp-python", "0.3.36"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
FIXTURES = [
    "llama-tiny", "llama3-rope-tiny", "qwen2-tiny", "qwen2-yarn-tiny", "qwen3-tiny",
    "phi3-tiny", "phi3-longrope-tiny", "gemma2-tiny", "gemma3-tiny",
]


def fetch_converter(dest):
    """The package's sdist from PyPI (its JSON API names the file), checked by sha256, with
    vendor/llama.cpp's converter, its conversion/ package and gguf-py extracted into dest."""
    cache = os.path.join(tempfile.gettempdir(), f"{PACKAGE}-{VERSION}.tar.gz")
    if not os.path.exists(cache):
        index = f"https://pypi.org/pypi/{PACKAGE}/json"
        with urllib.request.urlopen(index) as r:
            meta = json.load(r)
        sdist = next(u for u in meta["releases"][VERSION] if u["packagetype"] == "sdist")
        # A mirror may give the file's address relative to the index.
        url = urllib.parse.urljoin(index, sdist["url"])
        with urllib.request.urlopen(url) as r, open(cache + ".part", "wb") as out:
            out.write(r.read())
        os.replace(cache + ".part", cache)
    with open(cache, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != SHA256:
        sys.exit(f"{cache}: sha256 {digest}, expected {SHA256}")
    prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    with tarfile.open(cache) as tar:
        members = [m for m in tar.getmembers()
                   if m.name.startswith(prefix) and m.name[len(prefix):].startswith(wanted)]
        for m in members:
            m.name = m.name[len(prefix):]
        tar.extractall(dest, members=members)
    return dest, digest


def main():
    wanted = sys.argv[1:] or FIXTURES
    with tempfile.TemporaryDirectory() as tmp:
        tree, digest = fetch_converter(tmp)
        print(f"{PACKAGE} {VERSION} sdist sha256 {digest}")
        sys.path.insert(0, os.path.join(tree, "gguf-py"))
        sys.path.insert(0, tree)
        convert = importlib.import_module("convert_hf_to_gguf")
        base = importlib.import_module("conversion.base")
        # The modules of the fixtures' architectures, so that their classes exist to patch.
        for module in ("llama", "qwen", "phi", "gemma"):
            importlib.import_module(f"conversion.{module}")
        # Skip the vocabulary (see the module doc): every model class's set_vocab.
        stack = [base.ModelBase]
        while stack:
            c = stack.pop()
            if "set_vocab" in c.__dict__:
                c.set_vocab = lambda self: None
            stack.extend(c.__subclasses__())
        for name in wanted:
            folder = os.path.join(ROOT, name)
            out = os.path.join(folder, "llamacpp-f32.gguf")
            sys.argv = ["convert_hf_to_gguf.py", folder, "--outfile", out, "--outtype", "f32"]
            convert.main()
            print(f"{name}: {os.path.getsize(out) / 1024:.0f} KiB")


if __name__ == "__main__":
    sys.exit(main())
