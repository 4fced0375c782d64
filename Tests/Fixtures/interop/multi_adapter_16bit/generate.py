"""PEFT's add_weighted_adapter + merge_and_unload on 16-bit bases, with
embedding adapters (which PEFT saves with their `base_layer.weight`) and
GPT-2's fan_in_fan_out layers: the cases the F32 fixture of
../multi_adapter does not cover. PEFT makes the combined adapter in the base
layer's dtype, so `cat` rounds the factors and the delta to 16 bits there.

usage: python generate.py OUT_DIR   (transformers 5.25, peft 0.21.2, torch 2.15, CPU)
Each case: base/, b1/, b2/, merges.json, and merged_<method>.safetensors with
the tensors of PEFT's merge that differ from the base's.
"""
import json, os, shutil, sys, torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, GPT2Config, GPT2LMHeadModel
from peft import LoraConfig, get_peft_model, PeftModel

out = sys.argv[1]
seed = 5


def llama(dtype):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=32, tie_word_embeddings=False)
    m = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 0.05)
    return m.to(dtype)


def gpt2(dtype):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=128, n_positions=32, n_embd=64, n_layer=2, n_head=4)).to(dtype)


cases = {
    "f16": (lambda: llama(torch.float16),
            {"b1": LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "embed_tokens"], init_lora_weights=False),
             "b2": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "embed_tokens", "down_proj"], init_lora_weights=False)},
            [("cat", [0.7, 0.5], {}), ("svd", [1.0, 0.5], {"svd_rank": 6}), ("ties_svd", [1.0, 0.7], {"density": 0.5, "svd_rank": 6})]),
    "bf16": (lambda: llama(torch.bfloat16),
             {"b1": LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "embed_tokens"], init_lora_weights=False),
              "b2": LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "k_proj", "embed_tokens", "down_proj"], use_rslora=True,
                               init_lora_weights=False)},
             [("cat", [0.7, 0.5], {}), ("linear", [0.6, 0.4], {}), ("ties", [1.0, 0.8], {"density": 0.5, "majority_sign_method": "total"}),
              ("magnitude_prune", [0.8, 0.6], {"density": 0.6}), ("svd", [1.0, 0.5], {"svd_rank": 6})]),
    "gpt2": (lambda: gpt2(torch.float32),
             {"b1": LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True, init_lora_weights=False),
              "b2": LoraConfig(r=4, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)},
             [("cat", [0.7, 0.5], {}), ("svd", [1.0, 0.5], {"svd_rank": 6})]),
}
for name, (make, specs, merges) in cases.items():
    d = os.path.join(out, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    make().save_pretrained(os.path.join(d, "base"))
    for n, c in specs.items():
        torch.manual_seed(seed + ord(n[-1]))
        pm = get_peft_model(make(), c)
        with torch.no_grad():
            for pn, p in pm.named_parameters():
                if "lora_" in pn:
                    p.normal_(0, 0.1)
        pm.save_pretrained(os.path.join(d, n))
    base = load_file(os.path.join(d, "base", "model.safetensors"))
    manifest = []
    for ctype, weights, extra in merges:
        m = PeftModel.from_pretrained(make(), os.path.join(d, "b1"), adapter_name="b1")
        m.load_adapter(os.path.join(d, "b2"), adapter_name="b2")
        m.add_weighted_adapter(["b1", "b2"], weights, "merged", combination_type=ctype, **extra)
        m.set_adapter("merged")
        tmp = os.path.join(d, "tmp")
        m.merge_and_unload(adapter_names=["merged"]).save_pretrained(tmp)
        merged = load_file(os.path.join(tmp, "model.safetensors"))
        shutil.rmtree(tmp)
        save_file({k: v for k, v in merged.items() if not torch.equal(v.view(torch.uint8) if v.dtype != torch.bool else v, base[k].view(torch.uint8))},
                  os.path.join(d, f"merged_{ctype}.safetensors"), metadata={"format": "pt"})
        manifest.append({"method": ctype, "adapters": ["b1", "b2"], "weights": weights, **extra, "merged": f"merged_{ctype}"})
    json.dump(manifest, open(os.path.join(d, "merges.json"), "w"), indent=1)
    for f in ("generation_config.json",):
        p = os.path.join(d, "base", f)
        if os.path.exists(p):
            os.remove(p)
    for n in specs:
        p = os.path.join(d, n, "README.md")
        if os.path.exists(p):
            os.remove(p)
    print(name, "done")
