"""Weightless model directories: real shapes, a locally built tokenizer with the model's vocabulary."""
from __future__ import annotations

import json

import pytest

from revati.errors import BadInput
from revati.models_zoo import config, model_dir, names, write_model_dir

transformers = pytest.importorskip("transformers", reason="needs transformers to load the tokenizer")

# name -> (layers, hidden, kv heads, vocab): the published configs' numbers
SHAPES = {
    "llama-2-7b": (32, 4096, 32, 32000),
    "llama-2-13b": (40, 5120, 40, 32000),
    "llama-2-70b": (80, 8192, 8, 32000),
    "llama-3-8b": (32, 4096, 8, 128256),
    "qwen2.5-7b": (28, 3584, 4, 152064),
    "mistral-7b": (32, 4096, 8, 32000),
}


def test_the_issue_s_model_shapes_are_shipped():
    assert set(SHAPES) <= set(names())
    for name, (layers, hidden, kv, vocab) in SHAPES.items():
        c = config(name)
        assert (c["num_hidden_layers"], c["hidden_size"], c["num_key_value_heads"], c["vocab_size"]) == \
            (layers, hidden, kv, vocab)


@pytest.mark.parametrize("name", sorted(SHAPES) + ["tiny-llama"])
def test_tokenizer_has_the_model_vocabulary_and_round_trips(tmp_path, name):
    path = write_model_dir(name, tmp_path / name)
    cfg = json.loads((path / "config.json").read_text())
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    assert len(tok) == cfg["vocab_size"]
    assert tok.eos_token_id == cfg["eos_token_id"]
    ids = [300, 301, cfg["vocab_size"] // 2, cfg["vocab_size"] - 1]
    text = tok.decode(ids)
    again = tok(text, add_special_tokens=False)["input_ids"]
    assert again == ids, (text, again)   # N decoded tokens re-encode to exactly N tokens


def test_overrides_and_unknown_names(tmp_path):
    path = write_model_dir("llama-2-7b", tmp_path / "two", num_hidden_layers=2)
    assert json.loads((path / "config.json").read_text())["num_hidden_layers"] == 2
    with pytest.raises(BadInput):
        write_model_dir("llama-2-7b", tmp_path / "bad", hidden_layers=2)
    with pytest.raises(BadInput):
        config("gpt-5")


def test_model_dir_is_built_once_under_revati_home(isolated_home):
    first = model_dir("tiny-llama")
    assert first.is_relative_to(isolated_home)
    stamp = (first / "tokenizer.json").stat().st_mtime_ns
    assert model_dir("tiny-llama") == first
    assert (first / "tokenizer.json").stat().st_mtime_ns == stamp
