"""Prompt tokens for workload requests: token-id lists or text of the right length.

A serving benchmark needs prompts of a given token count, not meaningful text. Two forms:

- token ids (``prompt`` as a list of ints, which vLLM's ``/v1/completions`` accepts): exact
  lengths, no tokenizer needed. Ids are drawn uniformly from ``[low_id, vocab_size)``.
- text (any OpenAI-compatible server): ids from the tokenizer's ordinary vocabulary are
  decoded, re-encoded and trimmed until the text encodes to the wanted count (or the closest
  count a few rounds reach; the server's reported ``prompt_tokens`` is what metrics use). The
  count includes the special tokens the server's tokenizer adds (``added_special_tokens``, a
  BOS for Llama), as `vllm bench serve` counts them: the same flags give both clients the same
  prompt lengths.

Mooncake ``hash_ids`` become real shared prefixes: block ``h`` is always the same
``block_size`` ids (drawn from a generator seeded by ``(seed, h)``), so requests naming the same
blocks share those prompt tokens and a prefix cache can hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from revati.workload.request import WorkloadRequest
from revati.workload.traces import MOONCAKE_BLOCK_SIZE

_TEXT_FIT_ROUNDS = 8


@dataclass
class PromptBuilder:
    vocab_size: int = 32000
    low_id: int = 10            # skip the first ids, where most tokenizers keep special tokens
    seed: int = 0
    block_size: int = MOONCAKE_BLOCK_SIZE
    tokenizer: Any = None       # a transformers tokenizer; enables text prompts
    added_special_tokens: int = 0   # text prompts: what the server's tokenizer adds (a BOS)

    def __post_init__(self) -> None:
        if self.tokenizer is not None:
            special = set(getattr(self.tokenizer, "all_special_ids", []) or [])
            vocab = sorted(set(self.tokenizer.get_vocab().values()) - special)
            if not vocab:
                raise ValueError("the tokenizer has no ordinary tokens")
            self._ids = np.asarray(vocab, dtype=np.int64)
        else:
            if not 0 <= self.low_id < self.vocab_size:
                raise ValueError(f"need 0 <= low_id < vocab_size, got {self.low_id}, {self.vocab_size}")
            self._ids = None
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")

    def _draw(self, n: int, rng: np.random.Generator) -> list[int]:
        if self._ids is not None:
            return self._ids[rng.integers(0, len(self._ids), size=n)].tolist()
        return rng.integers(self.low_id, self.vocab_size, size=n).tolist()

    def token_ids(self, request: WorkloadRequest) -> list[int]:
        """The request's prompt as token ids, deterministic in (seed, request)."""
        if request.prompt_token_ids is not None:
            return list(request.prompt_token_ids)
        rng = np.random.default_rng([self.seed, 1, request.request_id])
        if not request.prefix_hash_ids:
            return self._draw(request.prompt_tokens, rng)
        ids: list[int] = []
        for h in request.prefix_hash_ids:
            if len(ids) >= request.prompt_tokens:
                break
            ids.extend(self._draw(self.block_size, np.random.default_rng([self.seed, 2, int(h)])))
        if len(ids) < request.prompt_tokens:
            ids.extend(self._draw(request.prompt_tokens - len(ids), rng))
        return ids[: request.prompt_tokens]

    def text(self, request: WorkloadRequest) -> str:
        """The request's prompt as text that the tokenizer encodes to ``prompt_tokens`` tokens
        (as near as a few decode/encode rounds get; exact for word-level vocabularies)."""
        if self.tokenizer is None:
            raise ValueError("text prompts need a tokenizer")
        want = max(1, request.prompt_tokens - self.added_special_tokens)
        ids = self.token_ids(request)[:want]
        rng = np.random.default_rng([self.seed, 3, request.request_id])
        best_text, best_err = "", None
        for _ in range(_TEXT_FIT_ROUNDS):
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            got = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            err = abs(len(got) - want)
            if best_err is None or err < best_err:
                best_text, best_err = text, err
            if err == 0:
                break
            ids = got[:want] if len(got) > want else got + self._draw(want - len(got), rng)
        return best_text
