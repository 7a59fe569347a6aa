"""Tables for people (psftlib.report.analysis.markdown_table): the paper's scale, words for ids, integers, ±."""

import numpy as np
import pandas as pd

from psftlib.report.analysis import column_label, markdown_table


def test_scores_in_percent_integers_as_integers_ids_in_words():
    df = pd.DataFrame(
        {"selected_epoch": [10.0], "world_target_3": [0.595], "world_skill_reverse": [0.55], "lr": [3e-4],
         "out_of_domain": [np.nan]},
        index=["sft"],
    )  # fmt: skip
    text = markdown_table(df, "run")
    assert "| run | selected epoch | 3 terms | reverse | lr | out-of-domain |" in text
    assert "| sft | 10 | 59.5 | 55.0 | 0.0003 | — |" in text
    assert text.startswith("*Accuracy in %")


def test_mean_and_sd_columns_become_one_column_with_a_spread():
    df = pd.DataFrame(
        {"in_domain_mean": [0.351], "in_domain_sd": [0.053], "seeds": [3.0], "entropy": [0.482],
         "entropy_sd": [0.01]},
        index=["sft"],
    )  # fmt: skip
    text = markdown_table(df, "run")
    assert "| run | in-domain | seeds | entropy |" in text
    assert "| sft | 35.1 ± 5.3 | 3 | 0.482 ± 0.010 |" in text


def test_paper_numbers_are_left_on_their_scale_and_no_note_without_scores():
    df = pd.DataFrame({"aime24": [11.25], "avg_in_domain": [37.98]}, index=["base"])
    text = markdown_table(df, "method")
    assert "| base | 11.25 | 37.98 |" in text and "Accuracy" not in text


def test_column_labels():
    assert column_label("world_target_5") == "5 terms"
    assert column_label("target_4") == "4 terms"
    assert column_label("world_skill_format") == "format"
    assert column_label("steps_per_train_batch") == "steps per train batch"
