# Helpers shared by the Snakefile and the rule files (Snakemake's lint wants functions apart from rules).


def slice_of(*keys):
    """The part of the profile a job depends on, as a stable string (params trigger re-runs)."""
    return json.dumps({k: P.data.get(k) for k in keys}, sort_keys=True)


def run_data(wc):
    return f"{DATA}/{P.run_source(wc.run)['data']}.jsonl"


def post_data(stage):
    """The dataset a post-training stage reads: grpo.dataset / dpo.dataset, or the paper's default."""
    default = {"grpo": "dapo_math_17k", "dpo": "ultrafeedback_prefs"}[stage]
    return f"{DATA}/{(P.data.get(stage) or {}).get('dataset', default)}.jsonl"


def selected_of(run):
    """``<run>`` for an evaluation of ``<run>@selected`` (Table 1's selected checkpoint), else None."""
    return run.removesuffix("@selected") if run.endswith("@selected") else None


def train_priority(run):
    """Snakemake priority of a training run: the long jobs first, so the short ones (evaluations, notebooks) fill
    the cores at the end. 2 for a run with more epochs than the profile's shortest (`psft_prolong`, which heads
    DPO -> eval -> Table 3 -> report), 1 for the others; post-training 1, everything else 0."""
    epochs = {r: P.run_config(r).epochs for r in P.runs}
    return 1 + int(epochs[run] > min(epochs.values()))
