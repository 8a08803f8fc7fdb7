"""Prompt datasets read the way ``vllm bench serve`` reads them, so a user's own files replay here.

- ``sharegpt`` (``--dataset-path`` a ShareGPT JSON file: a list of ``{"conversations": [{"from":
  "human", "value": ...}, {"from": "gpt", "value": ...}, ...]}``): entries with at least two
  turns, shuffled with the seed; the prompt is the first turn, the output length the second
  turn's token count (or ``--sharegpt-output-len``). As in vLLM, pairs with a prompt or output
  under 4 tokens, a prompt over 1024 tokens or a total over 2048 are skipped.
- ``custom`` (``--dataset-path`` a JSONL file with a ``"prompt"`` field per line): prompts in
  file order, each answered with ``--custom-output-len`` tokens.

Both need a tokenizer (``encode``: text -> token ids) and repeat their prompts when the file has
fewer than ``num_prompts`` usable ones. Requests carry the prompt's real token ids, so prefix
caching and prompt lengths are the dataset's.

Example::

    from revati.workload.datasets import read_sharegpt
    pairs = read_sharegpt("ShareGPT_V3.json", encode, num_prompts=100, seed=0)
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable

from revati.errors import BadInput

Encode = Callable[[str], list[int]]
MIN_TOKENS = 4           # vLLM's ShareGPT filter: shorter prompts or outputs are skipped
MAX_PROMPT_TOKENS = 1024
MAX_TOTAL_TOKENS = 2048


def _load_json(path: Path, what: str):
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BadInput(path, f"not a text file (a {what} file is JSON)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(path, f"not JSON ({exc.msg} at line {exc.lineno})") from None


def _repeat(pairs: list[tuple[list[int], int]], num_prompts: int, path: Path) -> list[tuple[list[int], int]]:
    if not pairs:
        raise BadInput(path, "no usable prompt in it")
    return [pairs[i % len(pairs)] for i in range(num_prompts)]


def read_sharegpt(path: str | Path, encode: Encode, num_prompts: int, seed: int = 0,
                  output_len: int | None = None) -> list[tuple[list[int], int]]:
    """(prompt token ids, output tokens) for ``num_prompts`` requests, vllm bench serve's way."""
    path = Path(path)
    data = _load_json(path, "ShareGPT")
    if not isinstance(data, list):
        raise BadInput(path, "a ShareGPT file is a JSON list of {\"conversations\": [...]} entries")
    entries = [e for e in data if isinstance(e, dict) and len(e.get("conversations") or []) >= 2]
    random.Random(seed).shuffle(entries)
    pairs: list[tuple[list[int], int]] = []
    for entry in entries:
        if len(pairs) == num_prompts:
            break
        first, second = entry["conversations"][0], entry["conversations"][1]
        try:
            prompt_ids = list(encode(str(first["value"])))
            out_len = output_len if output_len is not None else len(encode(str(second["value"])))
        except (KeyError, TypeError):
            continue
        too_short = len(prompt_ids) < MIN_TOKENS or (output_len is None and out_len < MIN_TOKENS)
        too_long = len(prompt_ids) > MAX_PROMPT_TOKENS or len(prompt_ids) + out_len > MAX_TOTAL_TOKENS
        if not too_short and not too_long:
            pairs.append((prompt_ids, out_len))
    return _repeat(pairs, num_prompts, path)


def read_custom(path: str | Path, encode: Encode, num_prompts: int, output_len: int = 256) -> list[tuple[list[int], int]]:
    """(prompt token ids, ``output_len``) per line of a JSONL file with a ``prompt`` field."""
    path = Path(path)
    pairs: list[tuple[list[int], int]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise BadInput(path, "not a text file (a custom dataset is JSONL)") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(path, f"line {number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise BadInput(path, f"line {number}: no \"prompt\" string")
        ids = list(encode(row["prompt"]))
        if ids:
            pairs.append((ids, output_len))
        if len(pairs) == num_prompts:
            break
    return _repeat(pairs, num_prompts, path)
