"""vLLM where the paper's scale needs it, without vllm installed: GRPO's ``grpo.use_vllm`` options (checked by the
schema, handed to TRL's ``GRPOConfig``, refused with the profile key when vllm is missing) and the in-training
evaluation under the vLLM backend (the current weights saved and evaluated by a child process; HF stands in here)."""

import copy
import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

from psftlib.config import ConfigError, load_profile, validate_profile
from psftlib.post.grpo import GRPOSettings

PAPER_KEYS = ("use_vllm", "vllm_mode", "vllm_gpu_memory_utilization", "vllm_tensor_parallel_size")


def grpo_settings(profile: str, **changes) -> GRPOSettings:
    """The profile's ``grpo:`` section as the post-training command builds it (``psftlib.post.__main__``)."""
    section = {
        k: v for k, v in load_profile(profile)["grpo"].items() if k not in ("cold_starts", "eval_every")
    }
    return GRPOSettings(**{**section, **changes})


@pytest.mark.parametrize(
    ("path", "value", "allowed"),
    [
        (("grpo", "use_vllm"), "yes", "true or false"),
        (("grpo", "vllm_mode"), "remote", "one of ['colocate', 'server']"),
        (("grpo", "vllm_gpu_memory_utilization"), 1.5, "a number > 0 and <= 1, finite"),
        (("grpo", "vllm_gpu_memory_utilization"), 0, "a number > 0 and <= 1, finite"),
        (("grpo", "vllm_tensor_parallel_size"), 0, "an integer >= 1"),
        (("grpo", "vllm_server_port"), 70000, "an integer >= 1 and <= 65535"),
        (("eval", "during_training", "backend"), "sglang", "one of ['hf', 'vllm']"),
        (("eval", "during_training", "vllm_gpu_memory_utilization"), 2.0, "a number > 0 and <= 1, finite"),
    ],
)
def test_bad_vllm_values_are_refused_naming_the_key(path, value, allowed):
    data = copy.deepcopy(load_profile("paper").data)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        validate_profile(data, "paper.yaml")
    assert str(err.value) == f"paper.yaml: {'.'.join(path)}: got {value!r}; allowed: {allowed}"


def test_the_papers_rollout_settings_reach_trls_grpo_config():
    settings = grpo_settings("paper")
    assert [getattr(settings, k) for k in PAPER_KEYS] == [True, "colocate", 0.5, 1]
    cfg = settings.trl_config(Path("/tmp/psft-test-trl"))  # constructed, not trained
    assert [getattr(cfg, k) for k in PAPER_KEYS] == [True, "colocate", 0.5, 1]
    assert (
        cfg.vllm_max_model_length == 2048 + 10240
    )  # Table 12: max_prompt_length 2k + max_response_length 10k
    assert cfg.num_generations == 8 and cfg.temperature == 1.0 and cfg.max_completion_length == 10240


def test_server_mode_hands_trl_the_server_address():
    cfg = grpo_settings(
        "paper", vllm_mode="server", vllm_server_host="10.0.0.7", vllm_server_port=8123
    ).trl_config(Path("/tmp/psft-test-trl"))
    assert (cfg.use_vllm, cfg.vllm_mode, cfg.vllm_server_host, cfg.vllm_server_port) == (
        True,
        "server",
        "10.0.0.7",
        8123,
    )


def test_by_default_grpo_generates_with_hf_and_trls_config_is_unchanged():
    from trl import GRPOConfig

    settings = grpo_settings("smoke")
    assert settings.use_vllm is False and settings.vllm_args() == {"use_vllm": False}
    cfg = settings.trl_config(Path("/tmp/psft-test-trl"))
    default = GRPOConfig(output_dir="/tmp/psft-test-trl", use_cpu=True)  # TRL's own vLLM settings, untouched
    fields = [f.name for f in dataclasses.fields(GRPOConfig) if f.name.startswith("vllm_")]
    assert cfg.use_vllm is False and fields
    assert {f: getattr(cfg, f) for f in fields} == {f: getattr(default, f) for f in fields}


def test_use_vllm_without_vllm_is_refused_with_the_profile_key_before_any_work(tmp_path, monkeypatch):
    from psftlib.post.grpo import run_grpo

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )
    # the cold start does not exist: refused before it is looked for (a missing one raises FileNotFoundError)
    with pytest.raises(
        ConfigError, match=r"^grpo\.use_vllm: true needs the vllm package.*grpo\.use_vllm: false"
    ):
        run_grpo(tmp_path / "missing", [], GRPOSettings(use_vllm=True), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError):  # without use_vllm, the same call goes on to the cold start
        run_grpo(tmp_path / "missing", [], GRPOSettings(), tmp_path / "out")


def test_in_training_eval_under_vllm_evaluates_the_current_weights_saved_by_a_child(
    smoke_world_in_results, monkeypatch
):
    """``eval.during_training.backend: vllm``: the weights handed over are the in-memory model's current ones, and
    the child's evaluation of them (HF standing in for vLLM) scores what evaluating the model in memory scores."""
    from safetensors.torch import load_file

    from psftlib.eval import harness, make_training_evaluator
    from psftlib.worlds.build import load_checkpoint

    model, tokenizer = load_checkpoint(smoke_world_in_results.base)
    with torch.no_grad():  # weights that are no saved checkpoint's: what training would have made of them
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    model.train()
    seen = []
    real_child = harness.evaluate_in_child

    def hf_child(checkpoint, tasks, cfg, data_dir, out):
        saved = {}
        for f in sorted(Path(checkpoint).glob("*.safetensors")):
            saved.update(load_file(f))
        current = model.state_dict()
        assert cfg.backend == "vllm" and cfg.vllm_gpu_memory_utilization == 0.25
        assert set(saved) <= set(current) and "model.embed_tokens.weight" in saved
        assert all(torch.equal(saved[k], current[k]) for k in saved)
        seen.append(Path(checkpoint))
        return real_child(checkpoint, tasks, dataclasses.replace(cfg, backend="hf"), data_dir, out)

    monkeypatch.setattr(harness, "evaluate_in_child", hf_child)
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))  # the child computes as this process
    prof = load_profile("smoke")
    in_memory = make_training_evaluator(prof, tokenizer)(model)
    prof.data["eval"]["during_training"].update(backend="vllm", vllm_gpu_memory_utilization=0.25)
    saved_and_loaded = make_training_evaluator(prof, tokenizer)(model)
    assert len(seen) == 1 and not seen[0].parent.exists()  # the temporary folder is removed
    assert model.training  # handed back in the mode it came in
    assert saved_and_loaded == in_memory
    assert {"world_target_3/avg_at_k", "heldout_nll"} <= set(in_memory)


def test_a_sharded_model_is_refused_not_saved_in_pieces(monkeypatch, tmp_path):
    """Shards are refused (the callers gather the weights on every rank first); a whole model in a job of several
    processes (the SFT loop's copy gathered on rank 0) is not."""
    from psftlib.eval.harness import EvalConfig, EvalError, evaluate_saved, is_sharded

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a: 8)
    model = torch.nn.Linear(2, 2)
    assert not is_sharded(model)
    model.weight.ds_id = 0  # how DeepSpeed ZeRO-3 marks a partitioned parameter
    assert is_sharded(model)
    with pytest.raises(EvalError, match="sharded over processes; gather them first"):
        evaluate_saved(model, None, ["t"], EvalConfig(backend="vllm"), scratch=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing saved
