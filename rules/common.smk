# Helpers shared by the Snakefile and the rule files (Snakemake's lint wants functions apart from rules).


def slice_of(*keys):
    """The part of the profile a job depends on, as a stable string (params trigger re-runs)."""
    return json.dumps({k: P.data.get(k) for k in keys}, sort_keys=True)


def run_data(wc):
    return f"{DATA}/{P.run_source(wc.run)['data']}.jsonl"


def post_data(stage):
    """The dataset a post-training stage reads (psftlib.config.Profile.post_data)."""
    return LAY.rel(P.post_data(stage))


def eval_checkpoint(run):
    """The checkpoint folder an evaluation (or a post-training run) of ``run`` reads; none for a hub base model."""
    if run in P.base_runs and P["world"]["kind"] == "hub":
        return []
    return f"{RUNS}/{selected_of(run)}/selected" if selected_of(run) else f"{RUNS}/{run}/checkpoint"


def eval_model(run):
    """What ``python -m psftlib.eval --checkpoint`` gets for ``run``: a hub base model's id, else its checkpoint."""
    return P.base_model_id(run) if run in P.base_runs and P["world"]["kind"] == "hub" else eval_checkpoint(run)


def selected_of(run):
    """``<run>`` for an evaluation of ``<run>@selected`` (Table 1's selected checkpoint), else None."""
    return run.removesuffix("@selected") if run.endswith("@selected") else None


def train_priority(run):
    """Snakemake priority of a training run: the long jobs first, so the short ones (evaluations, notebooks) fill
    the cores at the end. 2 for a run with more epochs than the profile's shortest (`psft_prolong`, which heads
    DPO -> eval -> Table 3 -> report), 1 for the others; post-training 1, everything else 0."""
    epochs = {r: P.run_config(r).epochs for r in P.runs}
    return 1 + int(epochs[run] > min(epochs.values()))


def reported_outputs(art):
    """An artifact's outputs, its figures (PNG) and tables (Markdown) marked for Snakemake's own report
    (`snakemake --report`) with the registry's caption and the paper's numbering as category."""
    captions = {**{f"{stem}_png": c for stem, c in art.figures.items()}, **{f"{stem}_md": c for stem, c in art.tables.items()}}
    return {
        key: report(path, caption=caption_file(key, captions[key]), category=art.paper) if key in captions else path
        for key, path in art.outputs(P).items()
    }


def caption_file(key, text):
    """Snakemake reads a report caption from a file: the registry's caption, written under .snakemake/captions/."""
    path = Path(workflow.basedir) / ".snakemake" / "captions" / f"{key}.rst"
    if not path.exists() or path.read_text() != text + "\n":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return str(path)
