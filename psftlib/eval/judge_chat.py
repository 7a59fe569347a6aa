"""Chat backends of the judge (psftlib.eval.judge): a model served by vLLM (:class:`VLLMChat`, GPU; ``vllm`` imported
only there) or by transformers (:class:`HFChat`, any in-memory model; tests use a tiny random one). Both generate
(the judged model's answers, the judge's judgments) and give next-token probabilities of a few options
(AlpacaEval's ``m`` / ``M``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

# torch and vllm are imported by the chat backend that uses them

Messages = list[dict[str, str]]


class JudgeError(RuntimeError):
    """A bad template, question file or backend; names the file, benchmark or field."""


class Chat(Protocol):
    def chat(
        self, conversations: Sequence[Messages], temperature: float, top_p: float | None, max_new_tokens: int
    ) -> list[str]: ...

    def choice_probs(
        self, conversations: Sequence[Messages], options: Sequence[str]
    ) -> list[dict[str, float]]: ...


class HFChat:
    """A transformers model + tokenizer with a chat template; greedy when ``temperature == 0``."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, seed: int = 0):
        self.model, self.tokenizer, self.batch_size, self.seed = model, tokenizer, batch_size, seed

    def _prompt_ids(self, messages: Messages) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def _batch(self, rows: list[list[int]]):
        import torch

        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding for generation
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
        device = next(self.model.parameters()).device
        return ids.to(device), mask.to(device)

    def chat(self, conversations, temperature=0.0, top_p=None, max_new_tokens=512) -> list[str]:
        import torch

        torch.manual_seed(self.seed)
        out: list[str] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for s in range(0, len(conversations), self.batch_size):
                rows = [self._prompt_ids(m) for m in conversations[s : s + self.batch_size]]
                ids, mask = self._batch(rows)
                sample = temperature > 0
                kwargs = {"do_sample": sample, "max_new_tokens": max_new_tokens,
                          "pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": self.tokenizer.eos_token_id}  # fmt: skip
                if sample:
                    kwargs.update(temperature=temperature, top_p=top_p if top_p is not None else 1.0)
                with torch.no_grad():
                    gen = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
                out += self.tokenizer.batch_decode(gen[:, ids.shape[1] :], skip_special_tokens=True)
        finally:
            self.model.train(was_training)
        return out

    def choice_probs(self, conversations, options) -> list[dict[str, float]]:
        """Next-token probabilities of each option's first token, renormalised over the options."""
        import torch

        option_ids = [self.tokenizer(o, add_special_tokens=False)["input_ids"][0] for o in options]
        if len(set(option_ids)) != len(options):
            raise JudgeError(f"options {list(options)} do not start with distinct tokens")
        out = []
        with torch.no_grad():
            for s in range(0, len(conversations), self.batch_size):
                ids, mask = self._batch([self._prompt_ids(m) for m in conversations[s : s + self.batch_size]])
                logits = self.model(input_ids=ids, attention_mask=mask).logits[:, -1].float()
                probs = torch.softmax(logits[:, option_ids], dim=-1)
                out += [dict(zip(options, map(float, row), strict=True)) for row in probs]
        return out


class VLLMChat:
    """A model served by vLLM in this process (GPU); ``vllm`` is imported here only."""

    def __init__(self, model_id: str, tensor_parallel_size: int = 1, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.85, seed: int = 0):  # fmt: skip
        try:
            from vllm import LLM
        except ImportError as err:
            raise JudgeError("the vllm backend needs the 'vllm' package (requirements-gpu.lock)") from err
        self.llm = LLM(model=model_id, tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
                       gpu_memory_utilization=gpu_memory_utilization, seed=seed, dtype="bfloat16")  # fmt: skip
        self.seed = seed

    def chat(self, conversations, temperature=0.0, top_p=None, max_new_tokens=512) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=temperature, top_p=top_p if top_p else 1.0,
                                max_tokens=max_new_tokens, seed=self.seed)  # fmt: skip
        return [o.outputs[0].text for o in self.llm.chat(list(conversations), params, use_tqdm=False)]

    def choice_probs(self, conversations, options) -> list[dict[str, float]]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=20)
        out = []
        for o in self.llm.chat(list(conversations), params, use_tqdm=False):
            top = o.outputs[0].logprobs[0] if o.outputs[0].logprobs else {}
            by_text = {lp.decoded_token.strip(): math.exp(lp.logprob) for lp in top.values()}
            raw = {opt: by_text.get(opt, 0.0) for opt in options}
            total = sum(raw.values())
            out.append({k: (v / total if total else 1.0 / len(options)) for k, v in raw.items()})
        return out
