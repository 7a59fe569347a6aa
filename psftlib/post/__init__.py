"""Post-training from a cold start through TRL: GRPO (Table 2, Figure 5) and DPO (Table 3, Figures 6-7).

common.py     cold-start loading, TRL plumbing, metrics.jsonl / eval.jsonl in the SFT trainer's shape
grpo.py       GRPO with the paper's DAPO settings
dpo.py        DPO
__main__.py   python -m psftlib.post
"""
