"""Every FP8 code and torch's float32 value for it, for qconv's tests (torch 2.15):
codes.safetensors holds e4m3 / e5m2 (U8 [256]: the codes 0..255) and e4m3_f32 / e5m2_f32
(F32 [256]: torch's .float() of each code viewed as float8_e4m3fn / float8_e5m2).
Beside it: copies of ../shared/refdata/interop/fp8 (made by shared/peers/make_interop_refs.py)."""
import torch
from safetensors.torch import save_file
codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
save_file({"e4m3": codes, "e5m2": codes.clone(),
           "e4m3_f32": codes.view(torch.float8_e4m3fn).float(), "e5m2_f32": codes.view(torch.float8_e5m2).float()},
          "codes.safetensors")
