# Writes Hugging Face Qwen3 golden files (float64 on CPU) in the schema of tests/data/README.md.
# Usage (on a machine with torch and transformers, e.g. the GPU host): python3 make_golden.py OUTDIR [NAME ...]
# Derived from the project's shared generator; adds variants so that the checker is proven on more than one file.
# Writes reference numerics of HF transformers' Qwen3 (float64 on CPU) to HDF5, for checking an independent implementation.
import sys, json, h5py, numpy as np, torch, transformers
from transformers import Qwen3Config, Qwen3ForCausalLM
torch.set_num_threads(8)
def make(path, seed, cfg, B, S, steps=5, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, wd=0.1):
    torch.manual_seed(seed)
    c = Qwen3Config(attn_implementation="eager", max_position_embeddings=4096, **cfg)
    m = Qwen3ForCausalLM(c).double(); m.train()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.dim() == 1: p.copy_(1.0 + 0.1*torch.randn_like(p))
            else: p.copy_(0.05*torch.randn_like(p))
            p.copy_(p.float().double())          # every weight exactly representable in float32
    ids = torch.randint(0, c.vocab_size, (B, S+1))
    x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    names = [n for n, _ in m.named_parameters()]
    w0 = {n: p.detach().clone() for n, p in m.named_parameters()}
    def loss_fn():
        logits = m(input_ids=x).logits
        return logits, torch.nn.functional.cross_entropy(logits.reshape(-1, c.vocab_size), y.reshape(-1))
    logits, loss = loss_fn(); loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in m.named_parameters()}
    decay = [p for n, p in m.named_parameters() if p.dim() > 1]; nodecay = [p for n, p in m.named_parameters() if p.dim() == 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": nodecay, "weight_decay": 0.0}], lr=lr, betas=betas, eps=eps)
    opt.step(); opt.zero_grad()
    w1 = {n: p.detach().clone() for n, p in m.named_parameters()}
    losses = [float(loss)]
    for i in range(steps-1):
        _, l = loss_fn(); l.backward(); opt.step(); opt.zero_grad(); losses.append(float(l))
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "qwen3-golden"; f.attrs["format_version"] = 1
        f.attrs["generator"] = f"transformers {transformers.__version__}, torch {torch.__version__}, float64 on CPU"
        g = f.create_group("config")
        for k, v in cfg.items(): g.attrs[k] = v
        f["inputs/input_ids"] = x.numpy().astype(np.int32); f["inputs/labels"] = y.numpy().astype(np.int32)
        f["outputs/logits"] = logits.detach().numpy().astype(np.float32); f["outputs/loss"] = float(loss)
        a = f.create_group("adamw")
        for k, v in dict(lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=wd, decay_1d_params=0).items(): a.attrs[k] = v
        for n in names:
            f[f"weights/{n}"] = w0[n].numpy().astype(np.float32)
            f[f"grads/{n}"] = grads[n].numpy().astype(np.float32)
            f[f"after_step/{n}"] = w1[n].numpy().astype(np.float32)
        f["train/losses"] = np.array(losses)
    print(path, "loss", losses, "params", len(names), flush=True)

TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=192, num_hidden_layers=4, num_attention_heads=8,
            num_key_value_heads=4, head_dim=16, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True)
VARIANTS = {
    "qwen3-tiny": (1234, TINY, 2, 64),
    # untied output projection, 3:1 grouped-query ratio, head_dim != hidden/heads, other theta and eps, odd sizes
    "qwen3-small-untied": (77, dict(vocab_size=300, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                                    num_attention_heads=6, num_key_value_heads=2, head_dim=8, rope_theta=10000.0,
                                    rms_norm_eps=1e-5, tie_word_embeddings=False), 3, 37),
    # one KV head (multi-query): every tensor-parallel rank replicates it; sizes divide by tp 2, 4 and 8
    "qwen3-mqa": (4242, dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=8, num_key_value_heads=1, head_dim=16, rope_theta=1e6,
                             rms_norm_eps=1e-6, tie_word_embeddings=False), 2, 32),
    # the tiny model on sequences of 40 tokens: context parallelism at cp 2 splits them into chunks of 10, whose
    # attention statistics are not 16-byte aligned unless the engine pads them (issue: any length the CPU takes)
    "qwen3-tiny-s40": (4040, TINY, 2, 40),
}
if __name__ == "__main__":
    names = sys.argv[2:] or list(VARIANTS)
    for n in names:
        seed, cfg, B, S = VARIANTS[n]
        make(sys.argv[1] + "/" + n + ".h5", seed, cfg, B=B, S=S)
