import os

import pytest
import torch

from psftlib.config import load_profile
from psftlib.layout import Layout
from psftlib.worlds.build import build_world

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def smoke_profile():
    return load_profile("smoke")


@pytest.fixture(scope="session")
def smoke_world(smoke_profile, tmp_path_factory):
    """The smoke world (data, tokenizer, base model), built once into a temp folder."""
    root = tmp_path_factory.mktemp("smoke_world")
    build_world(smoke_profile.data, root / "data", root / "world")
    return root


@pytest.fixture(scope="session")
def smoke_world_in_results(smoke_profile):
    """The smoke world where the pipeline expects it (results/.../smoke, git-ignored)."""
    lay = Layout("smoke")
    build_world(smoke_profile.data, lay.data, lay.base.parent)
    return lay


@pytest.fixture()
def tiny_model_and_examples(smoke_world):
    from transformers import AutoModelForCausalLM

    from psftlib.data import encode_all, read_jsonl
    from psftlib.worlds.build import load_tokenizer

    tok = load_tokenizer(smoke_world / "world" / "base")
    model = AutoModelForCausalLM.from_pretrained(str(smoke_world / "world" / "base"), dtype=torch.float32)
    examples, _ = encode_all(tok, read_jsonl(smoke_world / "data" / "train.jsonl"))
    return model, tok, examples
