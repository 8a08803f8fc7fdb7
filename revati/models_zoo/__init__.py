"""Model directories without weights: a real model's config.json plus a tokenizer built locally.

Serving engines need a model directory (config.json, tokenizer files); with
``load_format="dummy"`` (vLLM) they never read weights, so a directory holding the shapes of
a real model is all an emulation needs. The shapes are shipped as small JSON files in
``configs/`` (copied from the public configs named in ``SOURCES``); the tokenizer is built
here, offline, with exactly the model's vocabulary size:

- a word-level vocabulary ``w<id>`` for every id, with the model's special tokens (BOS, EOS)
  at their real ids, so any token id the engine samples decodes;
- whitespace pre-tokenisation, so a prompt of N distinct words ``w5 w6 ...`` is exactly N
  tokens (plus BOS where the real tokenizer adds one) -- workloads get the lengths they ask for.

Usage::

    from revati.models_zoo import model_dir
    path = model_dir("llama-2-7b")        # built once under $REVATI_HOME/models_zoo/
    # vllm.LLM(model=str(path), load_format="dummy", ...)

    python -m revati.models_zoo llama-3-8b [DEST]   # prints the directory
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from revati.errors import BadInput
from revati.paths import revati_home

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Where each shape comes from (the public config.json the numbers were read from).
SOURCES = {
    "tiny-llama": "(revati test model: 2 layers, hidden 256; not a released model)",
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "llama-2-13b": "meta-llama/Llama-2-13b-hf",
    "llama-2-70b": "meta-llama/Llama-2-70b-hf",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B",
    "mistral-7b": "mistralai/Mistral-7B-v0.1",
}

# Model types whose tokenizer transformers rebuilds as a byte-level BPE from vocab + merges,
# whatever tokenizer_config.json says: they get a BPE vocabulary (see _bpe_vocab).
_BPE_MODEL_TYPES = {"qwen2": {"special": "<|endoftext|>", "adds_bos": False}}
_TOKENIZER_VERSION = "1"   # bump when the built files change: cached directories are rebuilt
_CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% if not loop.last %} {% endif %}{% endfor %}"


def names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def config(name: str) -> dict:
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise BadInput(name, f"unknown model shape; known: {', '.join(names())}")
    return json.loads(path.read_text())


def _eos_ids(cfg: dict) -> list[int]:
    eos = cfg.get("eos_token_id")
    return [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]


def _special_tokens(cfg: dict, bos_name: str = "<s>", eos_name: str = "</s>") -> dict[int, str]:
    special = {}
    if cfg.get("bos_token_id") is not None:
        special[int(cfg["bos_token_id"])] = bos_name
    for i, tok in enumerate(_eos_ids(cfg)):
        special.setdefault(tok, eos_name if i == 0 else f"{eos_name[:-1]}{i}>")
    return special


def _word_level(cfg: dict, dest: Path) -> dict:
    """One token per word ``w<id>``: a prompt of N words is N tokens (plus BOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab_size = int(cfg["vocab_size"])
    special = _special_tokens(cfg)
    unk_id = next(i for i in range(vocab_size) if i not in special)
    vocab = {special.get(i, f"w{i}"): i for i in range(vocab_size)}
    del vocab[f"w{unk_id}"]
    vocab["<unk>"] = unk_id
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    bos_id = cfg.get("bos_token_id")
    if bos_id is not None:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", int(bos_id))])
    tok.add_special_tokens(list(special.values()))
    tok.save(str(dest / "tokenizer.json"))
    eos = _eos_ids(cfg)
    return {"unk_token": "<unk>", "eos_token": special[eos[0]] if eos else None,
            "bos_token": "<s>" if bos_id is not None else None, "add_bos_token": bos_id is not None}


def _bpe_vocab(vocab_size: int, special: dict[int, str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE whose words are 'Ġ' + up to 4 lowercase letters, built by a merge trie.

    Every merge joins a 'Ġ'-prefix with one more letter and prefixes merge before longer ones,
    so ' abcd' (one pre-token under the usual byte-level split) becomes exactly one token when
    'Ġabcd' is in the vocabulary. The 256 byte symbols come first, so any text encodes.
    """
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens: list[str] = list(alphabet)
    merges: list[tuple[str, str]] = []
    level = ["Ġ"]
    while len(tokens) < vocab_size - len(special):
        nxt = []
        for prefix in level:
            for ch in letters:
                if len(tokens) >= vocab_size - len(special):
                    break
                tokens.append(prefix + ch)
                merges.append((prefix, ch))
                nxt.append(prefix + ch)
        level = nxt
    ids = iter(i for i in range(vocab_size) if i not in special)
    vocab = {t: next(ids) for t in tokens}
    vocab.update({name: i for i, name in special.items()})
    return vocab, merges


def _byte_level_bpe(cfg: dict, dest: Path, kind: dict) -> dict:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    name = kind["special"]
    special = _special_tokens(cfg, bos_name=name, eos_name=name)
    vocab, merges = _bpe_vocab(int(cfg["vocab_size"]), special)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s+"),
                             behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(sorted(set(special.values())))
    tok.save(str(dest / "tokenizer.json"))
    return {"unk_token": None, "eos_token": name, "bos_token": None, "pad_token": name,
            "add_bos_token": kind["adds_bos"]}


def build_tokenizer(cfg: dict, dest: Path) -> None:
    """Write tokenizer.json / tokenizer_config.json for ``cfg``'s vocabulary into ``dest``."""
    bpe = _BPE_MODEL_TYPES.get(cfg.get("model_type", ""))
    extra = _byte_level_bpe(cfg, dest, bpe) if bpe else _word_level(cfg, dest)
    tok_cfg = {
        "tokenizer_class": "TokenizersBackend",
        "model_max_length": int(cfg.get("max_position_embeddings", 4096)),
        "clean_up_tokenization_spaces": False,
        "chat_template": _CHAT_TEMPLATE,
        **extra,
    }
    (dest / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")


def write_model_dir(name: str, dest: Path, **overrides) -> Path:
    """Build the directory for ``name`` at ``dest`` (atomically: a temp folder, then rename).

    ``overrides`` replace config.json fields, e.g. ``num_hidden_layers=2`` for a model as wide
    as the real one but quicker to emulate.
    """
    cfg = config(name)
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise BadInput(name, f"no config fields {sorted(unknown)} to override")
    cfg.update(overrides)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        gen = {k: cfg[k] for k in ("bos_token_id", "eos_token_id") if k in cfg}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        build_tokenizer(cfg, tmp)
        changed = f" with {overrides}" if overrides else ""
        (tmp / "REVATI.md").write_text(
            f"Shapes of {SOURCES.get(name, name)}{changed}; no weights (load with load_format='dummy').\n"
            f"Tokenizer built by revati.models_zoo (version {_TOKENIZER_VERSION}): word-level, "
            f"one token per word w<id>.\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def model_dir(name: str, root: Path | None = None) -> Path:
    """The directory for ``name``, built on first use under ``root`` (default: REVATI_HOME)."""
    root = Path(root) if root is not None else revati_home() / "models_zoo"
    dest = root / f"{name}-v{_TOKENIZER_VERSION}"
    stamp = dest / "config.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == config(name):
        return dest
    return write_model_dir(name, dest)
