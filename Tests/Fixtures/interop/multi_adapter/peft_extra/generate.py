"""Extra references for merge-lora with several adapters: PEFT 0.21.2's add_weighted_adapter +
merge_and_unload on the CPU for methods and options interop/multi_adapter/merges.json does not cover.
usage: python generate.py MULTI_ADAPTER_DIR OUT_DIR   (torch, transformers, peft, safetensors, numpy)"""
import json, os, sys
import numpy as np, torch
from safetensors.numpy import load_file, save_file
from transformers import AutoModelForCausalLM
from peft import PeftModel

src, out = sys.argv[1:3]
os.makedirs(out, exist_ok=True)
# svd_clamp is left out: its quantile depends on the signs LAPACK gives the singular vectors.
merges = [
    ("ties_svd", ["a1", "a2"], [1.0, 0.8], {"density": 0.5, "majority_sign_method": "total"}),
    ("magnitude_prune_svd", ["a1", "a2", "a3"], [0.8, 0.6, 1.0], {"density": 0.6, "svd_rank": 8}),
    ("svd", ["a1", "a2", "a3"], [1.0, -0.5, 0.7], {}),
    ("svd", ["a2", "a3"], [0.5, 1.5], {}),
    ("cat", ["a3", "a1"], [-0.4, 0.9], {}),
    ("linear", ["a2", "a1"], [-0.6, 0.4], {}),
    ("ties", ["a1", "a2"], [0.7, -0.9], {"density": 0.3, "majority_sign_method": "frequency"}),
]
base = load_file(os.path.join(src, "base", "model.safetensors"))
manifest = []
for i, (ctype, names, weights, extra) in enumerate(merges):
    m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(os.path.join(src, "base")), os.path.join(src, names[0]), adapter_name=names[0])
    for n in names[1:]:
        m.load_adapter(os.path.join(src, n), adapter_name=n)
    m.add_weighted_adapter(names, weights, "merged", combination_type=ctype, **extra)
    m.set_adapter("merged")
    sd = m.merge_and_unload(adapter_names=["merged"]).state_dict()
    name = f"merged_{i}_{ctype}.safetensors"
    changed = {k: v.detach().numpy().copy() for k, v in sd.items() if k in base and not np.array_equal(v.detach().numpy(), base[k])}
    save_file(changed, os.path.join(out, name), metadata={"format": "pt"})
    manifest.append({"method": ctype, "adapters": names, "weights": weights, **extra, "merged": name})
    print(name, len(changed))
json.dump(manifest, open(os.path.join(out, "merges.json"), "w"), indent=1)
