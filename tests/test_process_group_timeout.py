"""The process group's collective timeout (psftlib.runtime): barriers wait while rank 0 evaluates, longer than
torch.distributed's default 30 minutes. One process: the timeout is read back from the group or the init call."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
import torch

from psftlib import runtime
from psftlib.post.common import device_args


def paper(seconds):
    return {"paper": {"launcher": {"kind": "accelerate", "process_group_timeout_s": seconds}}}


@pytest.fixture(autouse=True)
def default_timeout():
    runtime.set_process_group_timeout(None)
    yield
    runtime.set_process_group_timeout(None)


def test_the_timeout_comes_from_the_profile_or_the_default():
    assert runtime.process_group_timeout() == timedelta(seconds=runtime.DEFAULT_PROCESS_GROUP_TIMEOUT_S)
    assert (
        runtime.DEFAULT_PROCESS_GROUP_TIMEOUT_S > 1800
    )  # torch's default, shorter than the paper's evaluation
    assert runtime.set_process_group_timeout(paper(7200)) == timedelta(hours=2)
    assert runtime.process_group_timeout() == timedelta(hours=2)
    assert runtime.set_process_group_timeout({"paper": {"launcher": {}}}) == timedelta(hours=12)
    assert runtime.set_process_group_timeout({"world": {"kind": "small"}}) == timedelta(hours=12)
    for bad in (0, -5, "2h", True, float("inf")):
        with pytest.raises(ValueError, match="paper.launcher.process_group_timeout_s"):
            runtime.set_process_group_timeout(paper(bad))


def test_init_distributed_creates_the_group_with_the_timeout(monkeypatch):
    """A real one-process gloo group, made by init_distributed as under a launcher: its timeout is the setting."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": "0",
        "WORLD_SIZE": "1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(
        runtime, "launched_processes", lambda: 2
    )  # as if launched (the group itself has one rank)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not torch.distributed.is_initialized()
    runtime.set_process_group_timeout(paper(5400))
    runtime.init_distributed()
    try:
        group = torch.distributed.distributed_c10d._get_default_group()
        assert group._get_backend(torch.device("cpu")).options._timeout == timedelta(seconds=5400)
    finally:
        torch.distributed.destroy_process_group()


def test_init_distributed_passes_the_timeout(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime, "launched_processes", lambda: 8)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda *a, **kw: calls.append((a, kw)))
    runtime.set_process_group_timeout(paper(43210))
    runtime.init_distributed()
    assert calls == [(("gloo",), {"timeout": timedelta(seconds=43210)})]


@pytest.mark.parametrize("gpu", [False, True])
def test_trl_runs_get_the_timeout_as_ddp_timeout(monkeypatch, gpu):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    runtime.set_process_group_timeout(paper(7200.5))
    assert device_args()["ddp_timeout"] == 7201  # an int for transformers, never shorter than asked


def test_transformers_hands_ddp_timeout_to_the_process_group(monkeypatch, tmp_path):
    """On GPUs TrainingArguments (GRPOConfig, DPOConfig) creates accelerate's PartialState, which initialises the
    process group, with ``timeout=ddp_timeout``: read from the PartialState call (a stand-in, no group is made)."""
    import transformers.training_args as targs
    from accelerate.utils import DistributedType

    seen = {}

    class PartialState:
        def __init__(self, **kwargs):
            seen.update(kwargs)
            self.device, self.distributed_type = torch.device("cpu"), DistributedType.NO

    monkeypatch.setattr(targs, "PartialState", PartialState)
    runtime.set_process_group_timeout(paper(9000))
    with monkeypatch.context() as gpu:
        gpu.setattr(torch.cuda, "is_available", lambda: True)
        args = device_args()  # the GPU branch (no use_cpu); bf16 and activation checkpointing need a GPU here
    args = targs.TrainingArguments(output_dir=str(tmp_path), ddp_timeout=args["ddp_timeout"], report_to=[])
    assert not args.use_cpu
    assert seen["timeout"] == timedelta(seconds=9000)


def test_dpo_and_grpo_configs_carry_the_timeout(tmp_path):
    from psftlib.post.dpo import DPOSettings
    from psftlib.post.grpo import GRPOSettings

    runtime.set_process_group_timeout(paper(3 * 3600))
    small = dict(train_batch_size=2, mini_batch_size=2, micro_batch_size=2, num_generations=2)
    for config in (DPOSettings(batch_size=2, micro_batch_size=2).trl_config(tmp_path / "dpo"),
                   GRPOSettings(**small).trl_config(tmp_path / "grpo")):  # fmt: skip
        assert config.ddp_timeout == 3 * 3600
