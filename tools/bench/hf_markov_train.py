# Is a loss curve ours or the setting's? Hugging Face's Qwen3 trained on one of our HDF5 datasets with the settings
# tools/bench/fp8_session.sh gives qwen3-pretrain (global batch of whole documents, AdamW β 0.9/0.95, weight decay on
# 2-D weights, clipping at 1.0, linear warm-up then cosine decay, bf16 autocast over fp32 weights) — its own
# initialisation and document order, so the curves compare in shape (a spike, a plateau), not step for step.
# Usage: hf_markov_train.py DATA.h5 MODEL [--steps N --lr X --min-lr X --warmup N --batch B --eps X --seed S]
# Prints one JSON line per step ({"step", "loss", "grad_norm", "lr"}) on stdout. Needs torch, transformers, h5py.
import argparse
import json
import math
import sys

import h5py
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

# The presets' shapes (model/presets in the C++ tree; the same table as hf_qwen3_train.py).
CFG = {
    "0.6B": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "1.7B": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
}


def lr_at(step, a):
    """qwen3-pretrain's schedule at 1-based `step` (train/lr_schedule.cpp, 0-based there): linear warm-up to lr over
    the first `warmup` steps, then cosine to min_lr at the last step."""
    s = step - 1
    if s < a.warmup:
        return a.lr * (s + 1) / a.warmup
    decay = a.steps - a.warmup - 1
    if decay <= 0:
        return a.lr
    t = min(1.0, (s - a.warmup) / decay)
    return a.min_lr + 0.5 * (a.lr - a.min_lr) * (1 + math.cos(math.pi * t))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("model", choices=sorted(CFG))
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--min-lr", type=float, default=3e-5)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--seed", type=int, default=5)
    a = p.parse_args()
    with h5py.File(a.data, "r") as f:
        bucket = next(iter(f["buckets"].values()))
        tokens = torch.from_numpy(bucket["tokens"][()].astype("int64"))
    torch.manual_seed(a.seed)
    c = Qwen3Config(vocab_size=151936, rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=40960,
                    attn_implementation="sdpa", **CFG[a.model])
    with torch.device("cuda"):
        m = Qwen3ForCausalLM(c)
    m.train()
    decay = [q for q in m.parameters() if q.dim() >= 2]
    rest = [q for q in m.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=a.eps, fused=True)
    order = torch.randperm(len(tokens))
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(), "documents": len(tokens),
                      "seq": tokens.shape[1]}), file=sys.stderr, flush=True)
    for step in range(1, a.steps + 1):
        lr = lr_at(step, a)
        for g in opt.param_groups:
            g["lr"] = lr
        k = (step - 1) * a.batch % len(tokens)
        x = tokens[order[k:k + a.batch]].cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(input_ids=x, labels=x).loss
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        print(json.dumps({"step": step, "loss": round(float(loss), 4), "grad_norm": round(float(norm), 4),
                          "lr": lr}), flush=True)


if __name__ == "__main__":
    main()
