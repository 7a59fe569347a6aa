"""Worlds: where a profile's base model and data come from.

small.py      the small world's generators: skills, format instructions, long-CoT target chains (offline)
pretrain.py   pretraining the small world's tiny base model
build.py      building the small world (tokenizer, data, base model); loading and saving checkpoints
rows.py       reading hub datasets or local files of their schema into checked rows
loaders.py    the paper's datasets by public id, with the paper's filters (paper profile)
models.py     the paper's hub models: loading in bf16, attention kernels, a VLM's frozen vision tower
"""
