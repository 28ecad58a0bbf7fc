# How far Hugging Face's own bf16-mixed training (the baseline's recipe: fp32 weights, torch.autocast bf16, SDPA,
# AdamW in fp32) lands from a golden file's float64 numbers, per tensor, with the golden checker's metric
# ‖out − ref‖/‖ref‖. This is the yardstick for the CUDA backend's bf16 tolerances (docs/golden.md).
# Usage (GPU host, torch + transformers): python3 hf_bf16_error.py FILE.h5 [FILE.h5 ...]
import sys, h5py, numpy as np, torch
from transformers import Qwen3Config, Qwen3ForCausalLM

def rel(a, b):
    a = np.asarray(a, dtype=np.float64); b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))

def check(path):
    f = h5py.File(path, "r")
    cfg = {k: (v.item() if hasattr(v, "item") else v) for k, v in f["config"].attrs.items()}
    c = Qwen3Config(attn_implementation="sdpa", max_position_embeddings=4096, **cfg)
    m = Qwen3ForCausalLM(c).float().cuda(); m.train()
    with torch.no_grad():
        for n, p in m.named_parameters(): p.copy_(torch.from_numpy(f["weights/" + n][...]))
    x = torch.from_numpy(f["inputs/input_ids"][...]).long().cuda()
    y = torch.from_numpy(f["inputs/labels"][...]).long().cuda()
    a = dict(f["adamw"].attrs)
    decay = [p for n, p in m.named_parameters() if p.dim() > 1]; nodecay = [p for n, p in m.named_parameters() if p.dim() == 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": float(a["weight_decay"])}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=float(a["lr"]), betas=(float(a["beta1"]), float(a["beta2"])), eps=float(a["eps"]))
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = m(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, c.vocab_size), y.reshape(-1), ignore_index=-100)
        loss.backward()
        return logits, loss
    rows = []
    logits, loss = step()
    rows.append(("logits", rel(logits.detach().float().cpu(), f["outputs/logits"][...])))
    rows.append(("loss", rel(float(loss), float(f["outputs/loss"][()]))))
    for n, p in m.named_parameters(): rows.append(("grad " + n, rel(p.grad.cpu(), f["grads/" + n][...])))
    opt.step(); opt.zero_grad()
    for n, p in m.named_parameters(): rows.append(("after_step " + n, rel(p.detach().cpu(), f["after_step/" + n][...])))
    ref = f["train/losses"][...]
    losses = [float(loss)]
    for i in range(len(ref) - 1):
        _, l = step(); opt.step(); opt.zero_grad(); losses.append(float(l))
    for i, l in enumerate(losses): rows.append((f"train loss {i}", rel(l, ref[i])))
    print(f"== {path} (HF {c.model_type}, torch {torch.__version__}, autocast bf16)")
    for n, e in rows: print(f"  {e:10.3e}  {n}")
    for cls in ("logits", "loss", "grad", "after_step", "train loss"):
        es = [e for n, e in rows if n.startswith(cls)]
        print(f"  max {cls:<11} {max(es):10.3e}")

torch.manual_seed(0)
for p in sys.argv[1:]: check(p)
