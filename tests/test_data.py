"""Demonstration records: malformed input is refused with file and line; EOS ends every response; the unknown-token
rate of every committed data file is within the limit."""

import pytest

from psftlib.config import ROOT
from psftlib.data import (
    DEFAULT_MAX_UNK_RATE,
    DataError,
    check_unknown_rate,
    collate,
    encode,
    read_json,
    read_jsonl,
    text_token_ids,
    unknown_tokens,
    write_jsonl,
)
from psftlib.worlds.build import build_tokenizer, load_tokenizer
from psftlib.worlds.small import vocabulary_corpus


def test_malformed_records_name_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a", "response": ""}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: field 'response'"):
        read_jsonl(path)
    path.write_text('{"prompt": "a", "response": "b"}\n\n{not json}\n')
    with pytest.raises(DataError, match=r"d.jsonl:3: not valid JSON"):
        read_jsonl(path)
    path.write_text("")
    with pytest.raises(DataError, match="no records"):
        read_jsonl(path)
    with pytest.raises(DataError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")
    path.write_bytes(b'{"prompt": "a", "response": "b"}\n{"prompt": "\xe9t\xe9", "response": "b"}\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: not UTF-8 text \(byte 0xe9 at column 13\)"):
        read_jsonl(path)
    path.write_text('{"prompt": "a", "response": 123}\n')
    with pytest.raises(DataError, match=r"d.jsonl:1: field 'response' is int 123, expected a string"):
        read_jsonl(path)


def test_a_truncated_json_file_is_named_with_its_line(tmp_path):
    path = tmp_path / "in_domain.json"
    path.write_text('{\n  "scores": {\n    "a": 1')
    with pytest.raises(
        DataError, match=r"in_domain.json:3: not valid JSON .* expected an evaluation summary"
    ):
        read_json(path, "an evaluation summary")
    path.write_text('{"scores": {}}')
    assert read_json(path) == {"scores": {}}


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    def rows():
        yield {"prompt": "a", "response": "b"}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl(tmp_path / "out.jsonl", rows())
    assert list(tmp_path.iterdir()) == []


def test_encoding_masks_prompt_and_ends_with_eos(smoke_world):
    tok = load_tokenizer(smoke_world / "world" / "base")
    assert type(tok).__name__ in ("PreTrainedTokenizerFast", "TokenizersBackend")
    row = read_jsonl(smoke_world / "data" / "train.jsonl")[0]
    ex = encode(tok, row)
    assert ex.input_ids[-1] == tok.eos_token_id and ex.loss_mask[-1] == 1
    n_resp = sum(ex.loss_mask)
    assert tok.decode(ex.input_ids[-n_resp:-1]) == row["response"]
    assert ex.loss_mask == [0] * (len(ex.input_ids) - n_resp) + [1] * n_resp
    assert tok.unk_token_id not in ex.input_ids
    batch = collate(
        [ex, encode(tok, {"prompt": "compute 1 + 2", "response": "answer : 3"})], tok.pad_token_id
    )
    assert batch["input_ids"].shape == batch["loss_mask"].shape == batch["attention_mask"].shape
    assert batch["loss_mask"][1, batch["attention_mask"][1] == 0].sum() == 0


def test_tokenizer_round_trips_its_ids_after_save(smoke_world, tmp_path):
    tok = load_tokenizer(smoke_world / "world" / "base")
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    text = "compute 3 + 4 wait , let me check : 7"
    assert again(text)["input_ids"] == tok(text)["input_ids"]


def test_unknown_token_rate_is_counted_and_limited():
    tok = build_tokenizer(vocabulary_corpus())
    ids = text_token_ids(tok, [{"prompt": "compute 1 + 2", "response": "answer : 3 zebra"}])
    assert unknown_tokens(tok, ids) == (1, 8, 1)
    with pytest.raises(DataError, match=r"x.jsonl: 1 of 8 tokens \(12.500%, in 1 sequences\)"):
        check_unknown_rate(tok, ids, "x.jsonl")
    assert check_unknown_rate(tok, ids, "x.jsonl", max_rate=0.2) == 1 / 8


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "results" / "data" / "mini").glob("*.jsonl")))
def test_committed_mini_data_is_within_the_unknown_token_limit(name):
    """Every committed split of the mini world, tokenized as the world's tokenizer does (one for every profile):
    no unknown token at all (the limit is DEFAULT_MAX_UNK_RATE)."""
    tok = build_tokenizer(vocabulary_corpus())
    path = ROOT / "results" / "data" / "mini" / name
    rows = read_jsonl(path, required=())
    assert check_unknown_rate(tok, text_token_ids(tok, rows), str(path)) == 0.0 <= DEFAULT_MAX_UNK_RATE
