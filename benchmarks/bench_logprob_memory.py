"""Peak memory of the chunked log-prob/entropy head against the naive full-logits path, forward + backward.

Each configuration runs in a fresh subprocess; peak resident memory above the inputs (hidden states [T, H] and
LM-head weight [V, H], allocated before the measurement starts) is read from getrusage. Prints the ratios.

    python benchmarks/bench_logprob_memory.py [--seq 4096] [--hidden 896] [--vocabs 32000 151936]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def _child(path: str, seq: int, hidden: int, vocab: int, chunk: int) -> None:
    import torch

    from psftlib.logprobs import ChunkedLMHead

    torch.set_num_threads(1)
    torch.manual_seed(0)
    h = torch.randn(seq, hidden, requires_grad=True)
    w = (torch.randn(vocab, hidden) * 0.02).requires_grad_(True)
    t = torch.randint(0, vocab, (seq,))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if path == "naive":
        logp = torch.log_softmax((h @ w.t()).float(), -1)  # [T, V]
        lp = logp.gather(-1, t[:, None]).squeeze(-1)
        with torch.no_grad():
            ent = -(logp.exp() * logp).sum(-1)
    else:
        lp, ent, _ = ChunkedLMHead.apply(h, w, t, chunk, True)
    lp.sum().backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mib": (peak - base) / 1024, "entropy": float(ent.mean())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--vocabs", type=int, nargs="+", default=[32000, 151936])
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, seq, hidden, vocab, chunk = args.child
        _child(path, int(seq), int(hidden), int(vocab), int(chunk))
        return
    from common import machine

    print(f"machine: {machine()}; sequence {args.seq} tokens, hidden {args.hidden}, chunk {args.chunk}")
    for vocab in args.vocabs:
        res = {}
        for path in ("naive", "chunked"):
            out = subprocess.run([sys.executable, __file__, "--child", path, str(args.seq), str(args.hidden),
                                  str(vocab), str(args.chunk)], capture_output=True, text=True, check=True)  # fmt: skip
            res[path] = json.loads(out.stdout.strip().splitlines()[-1])
        ratio = res["chunked"]["peak_mib"] / res["naive"]["peak_mib"]
        print(f"vocab {vocab}: naive {res['naive']['peak_mib']:,.0f} MiB, chunked {res['chunked']['peak_mib']:,.0f} MiB,"
              f" ratio {ratio:.3f}x (target <= 0.3x); entropy agrees: "
              f"{abs(res['naive']['entropy'] - res['chunked']['entropy']) < 1e-4}")  # fmt: skip


if __name__ == "__main__":
    main()
