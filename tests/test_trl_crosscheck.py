"""Our token-mean SFT loss equals TRL 1.16 SFTTrainer's loss on the same batch and model."""

import pytest
import torch


@pytest.mark.slow
def test_sft_loss_equals_trl_sft_loss(smoke_world, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from psftlib.data import collate, encode, read_jsonl
    from psftlib.logprobs import token_logprobs
    from psftlib.objectives import sft_loss
    from psftlib.worlds.build import load_tokenizer

    tok = load_tokenizer(smoke_world / "world" / "base")
    model = AutoModelForCausalLM.from_pretrained(str(smoke_world / "world" / "base"), dtype=torch.float32)
    rows = read_jsonl(smoke_world / "data" / "train.jsonl")[:8]
    conversational = [
        {"prompt": [{"role": "system", "content": r["system"]}, {"role": "user", "content": r["prompt"]}],
         "completion": [{"role": "assistant", "content": r["response"]}]}
        for r in rows
    ]  # fmt: skip
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], save_strategy="no",
                     per_device_train_batch_size=8, bf16=False, activation_checkpointing=False, seed=0,
                     dataloader_num_workers=0, logging_strategy="no")  # fmt: skip
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(conversational), processing_class=tok
    )
    batch = next(iter(trainer.get_train_dataloader()))

    # TRL tokenized exactly what we do: chat-templated prompt, response, EOS; loss on response + EOS
    ours = {tuple(e.input_ids): e.loss_mask for e in (encode(tok, r) for r in rows)}
    for ids, labels, att in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        n = int(att.sum())
        key = tuple(ids[:n].tolist())
        assert key in ours
        assert [int(label != -100) for label in labels[:n]] == ours[key]

    model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, dict(batch))
    ours_batch = collate([encode(tok, r) for r in rows], tok.pad_token_id)
    for chunk in (None, 16):
        out = token_logprobs(model, ours_batch["input_ids"], ours_batch["attention_mask"], with_stats=False,
                             score_mask=ours_batch["loss_mask"][:, 1:], chunk_size=chunk)  # fmt: skip
        loss, _ = sft_loss(out.logprobs, ours_batch["loss_mask"][:, 1:])
        assert loss.item() == pytest.approx(trl_loss.item(), rel=1e-5)
