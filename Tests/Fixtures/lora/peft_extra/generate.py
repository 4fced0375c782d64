"""How the peft_extra cases were made (PEFT 0.21.2, torch CPU, transformers 5.23); not run by the tests.

usage: python generate.py OUT_DIR   (needs torch, transformers, peft, safetensors;
       reads the reference cases in ../../../../../shared/refdata/models)

Each case is BASE (base/), ADAPTER (adapter/) and PEFT's merge_and_unload() of them (merged/),
written by shared/peers/peft_merge.py:
- f16base_f16ad:    lora_llama_basic with the base cast to F16 and the adapter (x3) to F16
- bf16base_bf16ad:  the same in BF16
- emb_bf16base:     lora_llama_embedding_modules_to_save, BF16 base, F32 adapter: the embedding
                    delta and the replaced base_layer.weight are rounded to BF16 before the add
- dora_bf16base:    dora_llama, BF16 base, F32 adapter (x3, magnitude kept)
- gpt2_lorabias_f16: GPT-2 (fan_in_fan_out) in F16 with lora_bias=True and bias="all"
"""
import json, os, shutil, subprocess, sys
import torch
from safetensors.torch import load_file, save_file

R = os.path.join(os.path.dirname(__file__), *[".."] * 5, "shared", "refdata", "models")
MERGE = os.path.join(R, "..", "..", "peers", "peft_merge.py")


def merge(d):
    subprocess.run([sys.executable, MERGE, d + "/base", d + "/adapter", d + "/merged"], check=True)


def variant(out, case, name, base_dtype, adapter_dtype):
    d = os.path.join(out, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d + "/base"); os.makedirs(d + "/adapter")
    b = load_file(f"{R}/{case}/base/model.safetensors")
    save_file({k: v.to(base_dtype).contiguous() for k, v in b.items()}, d + "/base/model.safetensors", metadata={"format": "pt"})
    cfg = json.load(open(f"{R}/{case}/base/config.json")); cfg["dtype"] = str(base_dtype).split(".")[1]
    json.dump(cfg, open(d + "/base/config.json", "w"), indent=2)
    a = load_file(f"{R}/{case}/adapter/adapter_model.safetensors")
    # scaled up so that the deltas matter against the weights
    a = {k: (v * 3 if "lora_" in k and "magnitude" not in k else v).to(adapter_dtype).contiguous() for k, v in a.items()}
    save_file(a, d + "/adapter/adapter_model.safetensors", metadata={"format": "pt"})
    shutil.copy(f"{R}/{case}/adapter/adapter_config.json", d + "/adapter/")
    merge(d)


def lora_bias_case(out):
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(0)
    d = os.path.join(out, "gpt2_lorabias_f16")
    shutil.rmtree(d, ignore_errors=True)
    m = AutoModelForCausalLM.from_pretrained(f"{R}/lora_gpt2_fan_in_fan_out_bias/base", torch_dtype=torch.float16)
    m.save_pretrained(d + "/base")
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, lora_bias=True,
                     bias="all", init_lora_weights=False)
    pm = get_peft_model(m, cfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n and n.endswith("bias"): p.copy_(torch.randn_like(p) * 0.1)
            if n.endswith("bias") and "lora" not in n: p.add_(torch.randn_like(p) * 0.01)
    pm.save_pretrained(d + "/adapter")
    merge(d)


if __name__ == "__main__":
    out = sys.argv[1]
    variant(out, "lora_llama_basic", "f16base_f16ad", torch.float16, torch.float16)
    variant(out, "lora_llama_basic", "bf16base_bf16ad", torch.bfloat16, torch.bfloat16)
    variant(out, "lora_llama_embedding_modules_to_save", "emb_bf16base", torch.bfloat16, torch.float32)
    variant(out, "dora_llama", "dora_bf16base", torch.bfloat16, torch.float32)
    lora_bias_case(out)
