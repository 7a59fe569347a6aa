"""The paper profile (issue 8), offline: config against the appendix tables, loaders on fixtures of each hub
schema, multi-GPU/SLURM configs, the GPU lock, the VLM vision-tower freeze (the judge: tests/test_judge.py)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from psftlib.config import Profile, load_profile
from psftlib.worlds import loaders

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "paper"
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
words = lambda text: len(text.split())  # noqa: E731 - a stand-in token counter (no hub tokenizer offline)


# ---- the profile ------------------------------------------------------------------------------------------------


def test_paper_profile_validates_against_the_schema():
    prof = load_profile("paper")
    assert prof.name == "paper" and prof["world"]["kind"] == "hub"
    for run in prof.runs:
        prof.run_config(run)


def test_base_models_and_restricted_task_sets_are_checked_and_resolved():
    import copy

    from psftlib.config import ConfigError, validate_profile

    prof = load_profile("paper")
    assert (
        prof.base_runs == ["base", "llama_base", "align_base", "vlm_base"]
        and prof.all_runs[:4] == prof.base_runs
    )
    bases = {"psft": "base", "code_psft": "base", "llama_sft+grpo": "llama_base", "align_psft_prolong+dpo": "align_base",
             "vlm_base+grpo": "vlm_base", "psft@selected": "base"}  # fmt: skip
    assert {run: prof.base_of(run) for run in bases} == bases and load_profile("mini").base_of(
        "psft+dpo"
    ) == "base"
    assert "alignment_tax" in prof.task_sets_of("align_sft+dpo") and "alignment_tax" not in prof.task_sets_of(
        "sft"
    )
    assert prof.base_model_id("vlm_base") == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert "vlm_text_ood" in prof.task_sets_of("vlm_psft+grpo") and "vlm_text_ood" not in prof.task_sets_of(
        "psft"
    )
    assert "vlm_text_ood" not in prof.task_sets_of("vlm_psft@selected")
    settings, data = prof.post_stage("grpo", "vlm_base")  # the cold start's own grpo updates (§4.4)
    assert data.name == "geometry3k.jsonl" and settings["max_completion_length"] == 5120
    assert "cold_starts" not in settings and "dataset" not in settings
    settings, data = prof.post_stage("grpo", "sft")
    assert (
        data.name == "dapo_math_17k.jsonl"
        and settings["max_completion_length"] == PAPER["grpo"]["max_completion_length"]
    )
    bad = [
        (
            ("paper", "base_models", "vlm_base", "model"),
            "no_such_role",
            "paper.base_models.vlm_base.model: 'no_such_role'",
        ),
        (
            ("eval", "task_set_runs", "vlm_text_ood"),
            ["vlm_base", "nope"],
            "eval.task_set_runs.vlm_text_ood: 'nope'",
        ),
        (("eval", "task_set_runs", "curves"), ["sft"], "eval.task_set_runs.curves: not a final task set"),
        (("paper", "base_models", "psft"), {"model": "qwen25_7b"}, "paper.base_models.psft: also a run"),
        (("grpo", "cold_starts"), ["llama_base", "nope"], "grpo.cold_starts: 'nope' is not defined"),
    ]
    for path, value, message in bad:
        data = copy.deepcopy(PAPER)
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate_profile(data, "config/paper.yaml")
    mini = yaml.safe_load((ROOT / "config" / "mini.yaml").read_text())
    mini["eval"]["task_set_runs"] = {"in_domain": ["sft"]}
    with pytest.raises(ConfigError, match="eval.task_set_runs: hub profiles only"):
        validate_profile(mini, "config/mini.yaml")


def _profile() -> Profile:
    return Profile(name="paper", path=Path("config/paper.yaml"), data=PAPER)


def test_paper_hyperparameters_match_the_appendix_tables():
    prof = _profile()
    psft, sft = prof.run_config("psft"), prof.run_config("sft")  # Table 11
    assert (psft.train_batch_size, psft.mini_batch_size, psft.lr, psft.epochs, psft.clip_high) == (
        256,
        32,
        1e-6,
        10,
        0.28,
    )
    assert (sft.train_batch_size, sft.mini_batch_size, sft.lr, sft.epochs) == (256, 256, 2e-5, 10)
    assert psft.max_length == sft.max_length == 10240 and psft.weight_decay == sft.weight_decay == 0.1
    assert prof.run_config("sft_kl").kl_coef == 0.5
    assert (prof.run_config("iw_sft").iw_clip_low, prof.run_config("iw_sft").iw_clip_high) == (0.2, 1.8)
    assert math.isinf(prof.run_config("psft_noclip").clip_high)
    for run, epochs in (("align_sft", 5), ("align_psft", 5), ("align_psft_prolong", 10)):  # Table 13
        cfg = prof.run_config(run)
        assert (cfg.epochs, cfg.max_length) == (epochs, 6144)
    assert prof.run_config("align_sft").lr == 2e-5 and prof.run_config("align_psft").lr == 1e-6
    for run in ("vlm_sft", "vlm_psft"):  # Table 17
        assert prof.run_config(run).max_length == 6144 and prof.run_config(run).epochs == 10
    g = PAPER["grpo"]  # Table 12
    assert (g["lr"], g["kl_coef"], g["max_prompt_length"], g["max_completion_length"], g["overlong_buffer"]) == (
        1e-6, 0.0, 2048, 10240, 2048)  # fmt: skip
    assert (g["train_batch_size"], g["mini_batch_size"], g["clip_low"], g["clip_high"]) == (
        256,
        32,
        0.2,
        0.28,
    )
    assert (g["temperature"], g["num_generations"], g["train_batches"]) == (1.0, 8, 100)
    d = PAPER["dpo"]  # Table 14
    assert (d["batch_size"], d["beta"], d["lr"], d["epochs"], d["max_length"]) == (64, 0.01, 5e-7, 1.0, 4096)
    ev = PAPER["eval"]  # §4.1 inference
    assert (ev["temperature"], ev["top_p"], ev["max_gen_toks"]) == (0.7, 0.95, 10240)
    bench = PAPER["paper"]["judge"]["benchmarks"]  # Table 15
    assert bench["mt_bench"]["temperature"] == 0.0
    assert (bench["alpaca_eval"]["temperature"], bench["alpaca_eval"]["top_p"]) == (0.7, 0.95)
    assert (bench["arena_hard"]["temperature"], bench["arena_hard"]["top_p"]) == (1.0, 0.7)
    prompts = PAPER["paper"]["system_prompts"]  # App. C.8
    assert prompts["reasoning"] == loaders.REASONING_SYSTEM_PROMPT
    assert prompts["alignment"] == loaders.ALIGNMENT_SYSTEM_PROMPT


def test_every_run_has_a_model_and_dataset_and_every_number_a_source():
    paper = PAPER["paper"]
    assert set(paper["run_sources"]) == set(PAPER["runs"])
    for run, src in paper["run_sources"].items():
        assert src["model"] in paper["models"], run
        assert src["data"] in paper["datasets"], run
    for spec in paper["datasets"].values():
        assert spec["loader"] in loaders.LOADERS
        if spec.get("max_tokens"):
            assert spec["tokenizer"] in paper["models"]
    # each line of train:/runs:/grpo:/dpo: that sets a number says where it comes from
    text = (ROOT / "config" / "paper.yaml").read_text()
    block = text[text.index("\ntrain:") : text.index("\nfigures:")]
    for line in block.splitlines():
        if re.match(r"^\s+\w+: [-\d.]", line) and "micro_batch_size" not in line:
            assert "#" in line, f"no source comment: {line}"


# ---- loaders ------------------------------------------------------------------------------------------------------

SFT_KEYS = {"id", "system", "prompt", "response", "answer"}


def test_openr1_math_keeps_correct_traces_within_the_token_budget():
    got = loaders.openr1_math(FIX / "openr1_math.jsonl", max_tokens=400, count_tokens=words)
    assert [r["id"] for r in got.records] == ["7c1d3f0e-0001", "7c1d3f0e-0002"]
    assert all(set(r) == SFT_KEYS for r in got.records)
    assert got.records[0]["system"] == loaders.REASONING_SYSTEM_PROMPT
    assert "\\boxed{55}" in got.records[1]["response"]  # the math-verify-correct generation, not the first
    assert got.records[1]["answer"] == "55"
    assert got.dropped == {"no correct complete trace": 1, "longer than 400 tokens": 1}
    assert len(loaders.openr1_math(FIX / "openr1_math.jsonl", max_tokens=None).records) == 3


def test_dapo_math_strips_the_answer_wrapper_and_duplicates():
    got = loaders.dapo_math(FIX / "dapo_math.jsonl")
    assert [set(r) for r in got.records] == [{"id", "system", "prompt", "answer"}] * 3
    first = got.records[0]
    assert first["prompt"] == "What is the remainder when $2^{10}$ is divided by 7?"
    assert (first["answer"], first["id"]) == ("2", "a0f1c2d3-0001")
    assert got.dropped == {"duplicate prompt": 1}
    raw = loaders.dapo_math(FIX / "dapo_math.jsonl", strip_instruction=False)
    assert raw.records[0]["prompt"].startswith("Solve the following math problem")


def test_ultrafeedback_chosen_responses_and_preference_pairs():
    sft = loaders.ultrafeedback_sft(FIX / "ultrafeedback_binarized.jsonl", max_tokens=300, count_tokens=words)
    assert [r["id"] for r in sft.records] == ["5c0a4e-01", "5c0a4e-02", "5c0a4e-03"]
    assert (
        sft.records[1]["response"] == "Bonjour."
        and sft.records[0]["system"] == loaders.ALIGNMENT_SYSTEM_PROMPT
    )
    prefs = loaders.ultrafeedback_prefs(
        FIX / "ultrafeedback_binarized.jsonl", max_tokens=300, count_tokens=words
    )
    assert [set(r) for r in prefs.records] == [{"id", "system", "prompt", "chosen", "rejected"}] * 2
    assert prefs.records[1]["chosen"] == "Bonjour." and prefs.records[1]["rejected"] == "Bonsoir."
    assert prefs.dropped == {"tie": 1, "empty response": 1, "longer than 300 tokens": 1}


def test_geometry3k_images_from_paths_and_parquet_bytes(tmp_path):
    got = loaders.geometry3k(FIX / "geometry3k.jsonl")
    assert [r["answer"] for r in got.records] == ["5", "70"]
    assert all(Path(r["images"][0]).exists() for r in got.records)
    assert got.records[0]["prompt"].startswith("<image>")
    # the hub's Parquet stores images as {"bytes", "path"}
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (FIX / "geometry3k.jsonl").read_text().splitlines()]
    for r in rows:
        name = r["images"][0] if isinstance(r["images"][0], str) else r["images"][0]["path"]
        r["images"] = [{"bytes": (FIX / name).read_bytes(), "path": None}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "geo.parquet")
    from_parquet = loaders.geometry3k(tmp_path / "geo.parquet")
    assert from_parquet.records[0]["images"][0]["bytes"].startswith(b"\x89PNG")
    loaders.write_records(tmp_path / "rl.jsonl", from_parquet.records)
    written = [json.loads(line) for line in (tmp_path / "rl.jsonl").read_text().splitlines()]
    assert (tmp_path / written[0]["images"][0]).read_bytes().startswith(b"\x89PNG")


def test_openr1_code_drops_unfinished_and_long_traces():
    got = loaders.openr1_code(FIX / "codeforces_cots.jsonl", max_tokens=400, count_tokens=words)
    assert [r["id"] for r in got.records] == ["1850/A-0"]
    assert set(got.records[0]) == SFT_KEYS and "```python" in got.records[0]["response"]
    assert got.dropped == {"finish_reason length": 1, "longer than 400 tokens": 1}


def test_loaders_read_parquet_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = loaders.read_table(FIX / "dapo_math.jsonl")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "dapo.parquet")
    assert (
        loaders.dapo_math(tmp_path / "dapo.parquet").records
        == loaders.dapo_math(FIX / "dapo_math.jsonl").records
    )


def test_loader_errors_name_file_row_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"solution": "x", "answer": "1"}) + "\n")
    with pytest.raises(loaders.LoaderError, match=r"bad.jsonl: row 0: field 'problem' is missing"):
        loaders.openr1_math(bad, max_tokens=None)
    with pytest.raises(loaders.LoaderError, match=r"nope.jsonl: no such file"):
        loaders.dapo_math(tmp_path / "nope.jsonl")
    with pytest.raises(loaders.LoaderError, match="needs a token counter"):
        loaders.openr1_math(FIX / "openr1_math.jsonl", max_tokens=10)
    bad.write_text(
        json.dumps({"prompt": [{"role": "user", "content": "q"}], "reward_model": {"style": "x"}}) + "\n"
    )
    with pytest.raises(loaders.LoaderError, match=r"row 0: field 'reward_model.ground_truth'"):
        loaders.dapo_math(bad)


def test_every_profile_dataset_loads_from_its_fixture():
    fixture = {"openr1_math": "openr1_math.jsonl", "dapo_math": "dapo_math.jsonl",
               "ultrafeedback_sft": "ultrafeedback_binarized.jsonl",
               "ultrafeedback_prefs": "ultrafeedback_binarized.jsonl", "geometry3k": "geometry3k.jsonl",
               "openr1_code": "codeforces_cots.jsonl"}  # fmt: skip
    paper = PAPER["paper"]
    for name, spec in paper["datasets"].items():
        got = loaders.load_dataset_spec(spec, paper["system_prompts"], words, FIX / fixture[spec["loader"]])
        assert got.records, name
        assert got.records[0]["system"] == paper["system_prompts"][spec["system_prompt"]], name


# ---- scale-out configs and the GPU lock ---------------------------------------------------------------------------


def test_accelerate_fsdp_and_deepspeed_configs_parse_as_accelerate_reads_them():
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    launch_args = {a.dest for a in launch_command_parser()._actions}
    fsdp = ClusterConfig.from_yaml_file(str(ROOT / "config/accelerate/fsdp.yaml"))
    assert fsdp.distributed_type.value == "FSDP" and fsdp.mixed_precision == "bf16"
    assert fsdp.fsdp_config["fsdp_version"] == 2 and set(fsdp.fsdp_config) <= launch_args
    ds = ClusterConfig.from_yaml_file(str(ROOT / "config/accelerate/deepspeed_zero3.yaml"))
    assert ds.distributed_type.value == "DEEPSPEED" and set(ds.deepspeed_config) <= launch_args
    ds_json = json.loads((ROOT / ds.deepspeed_config["deepspeed_config_file"]).read_text())
    assert ds_json["zero_optimization"]["stage"] == 3 and ds_json["bf16"]["enabled"] == "auto"
    assert PAPER["paper"]["launcher"]["accelerate_config"] == "config/accelerate/fsdp.yaml"


def test_slurm_profile_asks_gpus_for_gpu_rules():
    prof = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    assert prof["executor"] == "slurm"
    for rule in ("train", "grpo", "dpo", "eval"):
        res = prof["set-resources"][rule]
        assert res["gpu"] >= 1 and res["runtime"] > 0 and res["mem_mb"] > 0
        assert res["gpu"] == PAPER["paper"]["resources"][rule]["gpu"]
    assert "gpu" not in prof["set-resources"]["world"]


def _pins(lines):
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def test_gpu_lock_and_its_conda_form_agree_and_keep_the_cpu_pins():
    gpu = _pins((ROOT / "requirements-gpu.lock").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.gpu.lock.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    assert _pins(next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))) == gpu
    assert (gpu["vllm"], gpu["torch"], gpu["trl"]) == ("0.31.0", "2.13.0", "1.16.0")
    assert tuple(map(int, gpu["transformers"].split(".")[:2])) < (5, 18)  # vllm 0.31.0: transformers<5.18
    cpu = _pins((ROOT / "requirements.lock").read_text().splitlines())
    differing = {k for k in cpu if gpu.get(k) != cpu[k]}
    assert differing == {"transformers", "huggingface-hub", "numpy"}  # each explained in the lock's header


# ---- models: the VLM's vision tower stays frozen ------------------------------------------------------------------


def _word_tokenizer(extra: str = ""):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    corpus = ["system user assistant the answer is 1 2 3 4 5 6 7 8 9 10 so", extra]
    special = ["<|endoftext|>", "<|unk|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=special, min_frequency=1))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<|unk|>", pad_token="<|endoftext|>",
                                   eos_token="<|im_end|>")  # fmt: skip
    fast.chat_template = (
        "{% for m in messages %}{{ '<|im_start|> ' + m['role'] + ' ' + m['content'] + ' <|im_end|> ' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|> assistant ' }}{% endif %}"
    )
    return fast


def _tiny_qwen25_vl(vocab: int):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = dict(vocab_size=vocab + 3, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=128, bos_token_id=None, eos_token_id=3, pad_token_id=0,
                rope_parameters={"rope_type": "default", "mrope_section": [4, 2, 2], "rope_theta": 10000.0})  # fmt: skip
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=16, fullatt_block_indexes=[0])  # fmt: skip
    config = Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=vocab,
                              video_token_id=vocab + 1, vision_start_token_id=vocab + 2)  # fmt: skip
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(config).float()


def test_vlm_freeze_trains_only_the_language_model(tmp_path):
    from psftlib.config import TrainConfig
    from psftlib.data import encode_all
    from psftlib.train import train
    from psftlib.worlds.models import freeze_vision_tower, vision_modules

    tok = _word_tokenizer()
    model = _tiny_qwen25_vl(len(tok))
    counts = freeze_vision_tower(model)
    assert list(vision_modules(model)) == ["model.visual"] and counts["frozen"] > 0
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("model.visual.") for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = [
        {"system": "so", "prompt": f"{a} {b}", "response": f"the answer is {a + b}"}
        for a in (1, 2)
        for b in (3, 4)
    ]
    examples, _ = encode_all(tok, rows)
    cfg = TrainConfig(objective="psft", train_batch_size=4, mini_batch_size=2, micro_batch_size=2, epochs=1.0,
                      lr=1e-2, weight_decay=0.0, logprob_chunk_size=8, save_checkpoint=False)  # fmt: skip
    metrics = train(cfg, model, examples, tmp_path / "run", tok.pad_token_id, tokenizer=tok, progress=False)
    assert len(metrics) == 2
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and changed <= trainable  # only language-model parameters moved
    assert any(n.startswith("model.language_model.") for n in changed)
    assert all(
        torch.equal(p, before[n]) for n, p in model.named_parameters() if n.startswith("model.visual.")
    )


def test_qwen2_vl_freeze_and_causal_lm_refusal():
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from psftlib.worlds.models import (
        attn_implementation,
        freeze_vision_tower,
        is_vision_language,
        prepare_for_training,
    )

    text = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, bos_token_id=None, eos_token_id=1, pad_token_id=0,
                rope_parameters={"rope_type": "default", "mrope_section": [4, 2, 2], "rope_theta": 10000.0})  # fmt: skip
    vision = dict(depth=1, embed_dim=32, hidden_size=32, mlp_ratio=2, num_heads=2, patch_size=4, spatial_merge_size=2,
                  temporal_patch_size=2)  # fmt: skip
    vlm = Qwen2VLForConditionalGeneration(Qwen2VLConfig(vision_config=vision, text_config=text, image_token_id=60,
                                                        video_token_id=61, vision_start_token_id=62))  # fmt: skip
    assert is_vision_language(vlm)
    counts = freeze_vision_tower(vlm)
    assert counts["frozen"] == sum(p.numel() for p in vlm.model.visual.parameters())
    assert counts["trainable"] == sum(p.numel() for p in vlm.parameters()) - counts["frozen"]
    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1))  # fmt: skip
    assert not is_vision_language(lm)
    with pytest.raises(ValueError, match="Qwen2ForCausalLM: no vision module"):
        freeze_vision_tower(lm)
    prepare_for_training(lm)
    assert lm.is_gradient_checkpointing and lm.config.use_cache is False
    assert (
        attn_implementation("auto") in ("sdpa", "flash_attention_2")
        and attn_implementation("eager") == "eager"
    )


# the judge (templates, parsing, scores, the judge run on a tiny random model): tests/test_judge.py


def test_gpu_check_imports_and_refuses_without_cuda(capsys):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--help"], capture_output=True,
                         text=True, check=True, timeout=120)  # fmt: skip
    assert "--vocab" in out.stdout and "--seq" in out.stdout
    if not torch.cuda.is_available():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import gpu_check

        assert gpu_check.main([]) == 2
        assert "no CUDA device" in capsys.readouterr().out
        tok = gpu_check.build_tokenizer(2000)
        examples = gpu_check.make_examples(tok, 2, 256)
        assert [len(e.input_ids) for e in examples] == [256, 256]


def test_load_model_from_a_local_checkpoint_freezes_a_vlm(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from psftlib.worlds.models import load_model

    tok = _word_tokenizer()
    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1))  # fmt: skip
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    model, tokenizer = load_model(str(tmp_path / "lm"), dtype="float32")
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.is_gradient_checkpointing
    assert model.config._attn_implementation == "sdpa" and tokenizer.pad_token_id is not None
    _tiny_qwen25_vl(len(tok)).save_pretrained(tmp_path / "vlm")
    tok.save_pretrained(tmp_path / "vlm")
    vlm, _ = load_model(str(tmp_path / "vlm"))
    assert vlm.dtype == torch.bfloat16
    assert not any(p.requires_grad for p in vlm.model.visual.parameters())
    assert all(p.requires_grad for p in vlm.model.language_model.parameters())


# ---- the hub DAG and training entry point --------------------------------------------------------------------------


def test_paper_dag_dry_run_lists_every_table_and_figure_rule():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--configfile", "config/paper.yaml"],
                         cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    stats = res.stdout[res.stdout.index("Job stats:") :]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.M))
    prof = load_profile("paper")
    for rule in ("world", "train", "eval", "grpo", "dpo", "findings", "report", *prof["figures"],
                 "table2_grpo", "table3_dpo"):  # fmt: skip
        assert rule in counts, f"{rule} missing from the paper DAG: {sorted(counts)}"
    assert int(counts["train"]) == len(prof.runs)
    post_data = {
        prof.post_stage(stage, cold)[1].stem for stage in ("grpo", "dpo") for cold in prof.cold_starts(stage)
    }
    assert "geometry3k" in post_data  # §4.4: the VLM's GRPO reads Geometry-3k (paper.run_sources.<run>.grpo)
    assert int(counts["world"]) == len(
        {s["data"] for s in PAPER["paper"]["run_sources"].values()} | post_data
    )
    # every run gets the common task sets; a restricted set (eval.task_set_runs) only its runs and their post runs
    assert int(counts["eval"]) == len(prof.all_runs) + len(prof.selected_runs)
    restricted = [(r, s) for r, s in prof.evaluations(prof.all_runs) if s in prof.task_set_runs]
    assert int(counts["eval_only"]) == len(restricted) > 0
    assert ("vlm_base", "vlm_text_ood") in restricted and ("vlm_base+grpo", "vlm_text_ood") in restricted
    assert {r for r, s in restricted if s == "code"} == {"base", "code_sft", "code_psft"}  # App. C.6
    assert not [r for r, s in restricted if s != "code" and not r.startswith(("vlm_", "align_"))]
    assert (
        "HF_ALLOW_CODE_EVAL=1 python -m psftlib.eval --profile paper --checkpoint results/runs/paper/code_psft"
        in (res.stdout)
    )  # eval.allow_code_execution: LiveCodeBench runs the generated programs
    assert (
        "--checkpoint Qwen/Qwen2.5-VL-7B-Instruct --task-sets vlm_text_ood --out-dir results/eval/paper/vlm_base"
        in res.stdout
    )  # a base model is evaluated by its hub id
    assert "--stage grpo --cold-start vlm_base" in res.stdout  # Table 5's "Base -> GRPO"
    lint = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--configfile", "config/paper.yaml"],
                          cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert ("accelerate launch --config_file config/accelerate/fsdp.yaml --num_processes 8 -m psftlib.train.hub "
            "--profile paper --run psft") in res.stdout  # fmt: skip


def test_hub_run_trains_a_local_model_on_loaded_data(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from psftlib.train.hub import train_hub_run

    prof = load_profile("paper")
    assert prof.run_source("psft")["model_id"] == "Qwen/Qwen2.5-7B-Instruct"
    loaded = loaders.load_dataset_spec(PAPER["paper"]["datasets"]["openr1_math_8192"],
                                       PAPER["paper"]["system_prompts"], words, FIX / "openr1_math.jsonl")  # fmt: skip
    loaders.write_records(tmp_path / "data.jsonl", loaded.records)
    text = " ".join(f"{r.get('system', '')} {r['prompt']} {r['response']}" for r in loaded.records)
    tok = _word_tokenizer(text)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "base")  # fmt: skip
    tok.save_pretrained(tmp_path / "base")
    cfg = tmp_path / "paper_tiny.yaml"
    data = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    data["train"].update(train_batch_size=2, mini_batch_size=1, micro_batch_size=1, epochs=1.0, bf16=False,
                         gradient_checkpointing=False, max_length=None)  # fmt: skip
    data["runs"] = {"psft": data["runs"]["psft"]}  # the others' own batch sizes do not fit two examples
    data["eval"].pop("task_set_runs")  # it names the VLM runs, gone here
    data["figures"], data["grpo"]["cold_starts"], data["dpo"]["cold_starts"] = {}, [], []
    data["eval"]["during_training"]["every_train_batches"] = (
        0  # no curves: they need the paper's tasks on vLLM
    )
    cfg.write_text(yaml.safe_dump(data))
    hist = train_hub_run(cfg, "psft", base=str(tmp_path / "base"), data=tmp_path / "data.jsonl",
                         out_dir=tmp_path / "out", progress=False)  # fmt: skip
    assert len(hist) == 2 * (len(loaded.records) // 2) and all(math.isfinite(h["loss"]) for h in hist)
    assert (tmp_path / "out" / "metrics.jsonl").exists() and (
        tmp_path / "out" / "checkpoint" / "config.json"
    ).exists()


@pytest.mark.parametrize("name", ["mini", "paper"])
def test_both_profiles_configure_table6_warmup_and_baselines_by_one_rule(name):
    """§5.3 varies the steps per refresh through the mini batch at a fixed train batch and lr; the warm-up (length and
    lr unstated) takes half and one epoch at SFT lr / steps per train batch; DFT and iw-SFT (unstated) run as SFT."""
    prof = load_profile(name)
    psft, sft = prof.run_config("psft"), prof.run_config("sft")
    for k in (4, 16):
        cfg = prof.run_config(f"psft_refresh{k}")
        assert (cfg.steps_per_train_batch, cfg.old_policy_refresh) == (k, "train_batch")
        assert (cfg.train_batch_size, cfg.lr) == (psft.train_batch_size, psft.lr)

    def warmup_epochs(
        cfg,
    ) -> float:  # the small world knows its size upfront; the hub's is known after filtering
        per_epoch = (
            prof["world"]["n_train"] // cfg.train_batch_size if prof["world"]["kind"] == "small" else None
        )
        return cfg.sft_warmup_epochs or cfg.sft_warmup_train_batches / per_epoch

    warmups = [prof.run_config(r) for r in prof.runs if prof.run_config(r).sft_warmup_train_batches
               or prof.run_config(r).sft_warmup_epochs]  # fmt: skip
    assert sorted(map(warmup_epochs, warmups)) == [0.5, 1.0]
    for cfg in warmups:
        assert cfg.sft_warmup_lr * cfg.steps_per_train_batch == pytest.approx(sft.lr)
    for run in ("dft", "iw_sft"):
        cfg = prof.run_config(run)
        assert (cfg.steps_per_train_batch, cfg.lr) == (sft.steps_per_train_batch, sft.lr)


def test_a_warmup_in_epochs_is_rounded_to_whole_train_batches():
    from psftlib.config import ConfigError, TrainConfig
    from psftlib.train.plan import Plan

    cfg = TrainConfig(
        objective="psft", train_batch_size=4, mini_batch_size=2, micro_batch_size=2, sft_warmup_epochs=0.5
    )
    plan = Plan(cfg, n_examples=22)  # 5 train batches per epoch: half an epoch is 2 (round half to even)
    assert plan.first_psft_step == 2 * 2 and plan.objective(3) == "sft" and plan.objective(4) == "psft"
    with pytest.raises(ConfigError, match="sft_warmup_epochs: set it or sft_warmup_train_batches, not both"):
        TrainConfig(objective="psft", sft_warmup_epochs=0.5, sft_warmup_train_batches=2)


def test_paper_dag_builds_the_vlm_moe_code_and_llama_tables_only_in_the_paper_profile():
    """Tables 4-5 / Figures 9, 19-20 (§4.4), Table 8 (App. C.3), App. C.6 and Table 1's Llama rows are rules of the
    paper DAG that need their runs (and the VLM's GRPO runs); the small-world profiles do not build them."""
    import subprocess
    import sys

    from psftlib.artifacts import present

    new = ["table1_llama", "table4_vlm", "table8_moe", "table_c6_code"]
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", *new, "--configfile", "config/paper.yaml"],
                         cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", res.stdout[res.stdout.index("Job stats:") :], flags=re.M))
    assert all(stats.get(rule) == "1" for rule in new), stats
    prof = load_profile("paper")
    runs = [r for name in new for r in prof.figure_runs(name) if r not in prof.base_runs]
    assert (
        int(stats["train"]) == len(runs) and int(stats["grpo"]) == 3
    )  # vlm_base+grpo, vlm_sft+grpo, vlm_psft+grpo
    for run in runs:
        assert f"-m psftlib.train.hub --profile paper --run {run} " in res.stdout, run
    assert "vlm_psft+grpo/metrics.jsonl" in res.stdout and "vlm_psft+grpo/eval.jsonl" in res.stdout
    for name in ("mini", "smoke"):
        assert not {a.name for a in present(load_profile(name))} & set(new), name
    # the VLM's GRPO stage: Geometry-3k prompts and 5k response tokens (§4.4, App. C.7.6), a dataset of the profile
    for run in ("vlm_sft", "vlm_psft"):
        assert run in prof.cold_starts("grpo")
        assert prof.run_source(run)["grpo"] == {"dataset": "geometry3k", "max_completion_length": 5 * 1024}
    for run, src in PAPER["paper"]["run_sources"].items():
        assert (src.get("grpo") or {}).get("dataset", "geometry3k") in PAPER["paper"]["datasets"], run
