# Writes a golden file's weights as Hugging Face checkpoints, saved by transformers itself, so the project's
# safetensors reader and --init-from-hf are tested against the real format: FOLDER/fp32 (one model.safetensors,
# float32) and FOLDER/bf16-sharded (bfloat16, split into several model-0000i-of-0000n.safetensors with an index).
# Also prints HF's own float64 loss of the reloaded fp32 folder against the golden loss.
# Usage (a host with torch + transformers): python3 hf_save_golden.py GOLDEN.h5 FOLDER
import sys, h5py, torch
from transformers import Qwen3Config, Qwen3ForCausalLM

golden, folder = sys.argv[1], sys.argv[2]
f = h5py.File(golden, "r")
cfg = {k: (v.item() if hasattr(v, "item") else v) for k, v in f["config"].attrs.items()}
c = Qwen3Config(attn_implementation="eager", max_position_embeddings=4096, **cfg)
m = Qwen3ForCausalLM(c).float()
with torch.no_grad():
    for n, p in m.named_parameters():
        p.copy_(torch.from_numpy(f["weights/" + n][...]))
m.save_pretrained(folder + "/fp32", safe_serialization=True)
m.to(torch.bfloat16).save_pretrained(folder + "/bf16-sharded", safe_serialization=True, max_shard_size="40KB")
r = Qwen3ForCausalLM.from_pretrained(folder + "/fp32", torch_dtype=torch.float64, attn_implementation="eager")
x = torch.from_numpy(f["inputs/input_ids"][...]).long()
y = torch.from_numpy(f["inputs/labels"][...]).long()
with torch.no_grad():
    logits = r(input_ids=x).logits
loss = torch.nn.functional.cross_entropy(logits.reshape(-1, c.vocab_size), y.reshape(-1))
print("reloaded loss", float(loss), "golden", float(f["outputs/loss"][()]))
