"""Extra PyTorch checkpoints for qconv's tests, beside the copies of
../shared/refdata/interop/torch_bin (made by shared/peers/make_interop_refs.py).
Made with torch 2.15 and safetensors: python make_extra.py (from this folder).

 - module_state/: an nn.Module's state_dict() in F16 (an OrderedDict with _metadata, set by BUILD);
 - new_dtypes/: a Parameter, float8 and uint16 tensors (_rebuild_tensor_v3 over untyped storages);
 - fp8_block/: the block-scaled FP8 tensors of ../fp8/block_scaled saved by torch.save, with its config.
Each has reference.safetensors: safetensors.torch.save_file of the same tensors made contiguous.
"""
import json, os, shutil
import torch
from safetensors.torch import save_file, load_file

torch.manual_seed(5)
os.makedirs("module_state", exist_ok=True)
m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)).half()
sd = m.state_dict()
torch.save(sd, "module_state/pytorch_model.bin")
save_file({k: v.contiguous() for k, v in sd.items()}, "module_state/reference.safetensors")

os.makedirs("new_dtypes", exist_ok=True)
nd = {"param": torch.nn.Parameter(torch.randn(2, 3)),
      "f8": (torch.randn(4, 5) * 10).to(torch.float8_e4m3fn),
      "f8_t": (torch.randn(5, 4) * 10).to(torch.float8_e5m2).t(),
      "u16": torch.arange(6, dtype=torch.int32).reshape(2, 3).to(torch.uint16)}
torch.save(nd, "new_dtypes/pytorch_model.bin")
save_file({k: v.detach().contiguous() for k, v in nd.items()}, "new_dtypes/reference.safetensors")

os.makedirs("fp8_block", exist_ok=True)
blk = load_file("../fp8/block_scaled/model.safetensors")
torch.save(blk, "fp8_block/pytorch_model.bin")
shutil.copy("../fp8/block_scaled/config.json", "fp8_block/config.json")
