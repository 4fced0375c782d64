# How Tests/Fixtures/foundation/torch_mean.json was made: torch 2.15 (CPU), ATEN_CPU_CAPABILITY=avx2,
# one thread: float32 mean() of LCG values (the test regenerates them the same way).
# usage: ATEN_CPU_CAPABILITY=avx2 python torch_mean_generate.py torch_mean.json
import torch, json, numpy as np, sys
torch.set_num_threads(1)
print(torch.backends.cpu.get_cpu_capability(), file=sys.stderr)
M=2**64
def values(n, seed):
    s=seed; out=np.empty(n, dtype=np.float32)
    for i in range(n):
        s=(s*6364136223846793005+1442695040888963407)%M
        out[i]=np.float32(s>>40)*np.float32(2.0**-24)
    return out
cases=[]
for n in [1,2,3,7,8,9,15,16,17,31,32,33,63,64,65,100,127,128,129,255,256,257,511,512,513,592,1000,1023,1024,1025,4095,4096,4097,5000,16383,16384,16385,20000,32767,32768,40000,65536,100003]:
    v=values(n, n)
    m=torch.from_numpy(v).mean().item()
    cases.append({"n":n,"seed":n,"mean_bits":int(np.float32(m).view(np.uint32))})
json.dump(cases, open(sys.argv[1],'w'), indent=1)
