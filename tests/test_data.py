"""Demonstration records: malformed input is refused with file and line; EOS ends every response."""

import pytest

from psftlib.data import DataError, collate, encode, read_jsonl, write_jsonl
from psftlib.worlds.build import load_tokenizer


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
