"""Per-stage times of one encode (kodim01, q4) in a warm process: analysis, the exact synthesis,
the refinement (both), and quantization with the exact entropy parameters. Usage: encode_stages.py [model]."""
import sys
import time, numpy as np, torch
from PIL import Image
from anfcodec import zoo
torch.set_num_threads(2)
m = zoo.load_model(sys.argv[1] if len(sys.argv) > 1 else "anfic-ckbd-n64-m256-int8")
x = torch.from_numpy(np.array(Image.open("../shared/data/kodak/kodim01.png"))).permute(2,0,1)[None].float()/255
m.requires_grad_(False); torch.set_grad_enabled(False)
q = 4.0; steps = m.default_refine(q); print("refine steps", steps)
def t(f, n=4):
    f(); ts=[]
    for _ in range(n):
        a=time.perf_counter(); r=f(); ts.append(time.perf_counter()-a)
    return r, sorted(ts)[n//2]
z2, ta = t(lambda: m.analyze(x))
qq = torch.tensor([q]); 
rec, ts = t(lambda: m.synthesize_exact((z2*m.gain(qq)).double(), q).float())
zr, tr = t(lambda: m.refine(x, z2, q, steps))
_, tq = t(lambda: m.quantize(zr, q))
print(f"analyze {ta:.3f}  exact int8 synthesis {ts:.3f}  refine {tr:.3f}  quantize (hyper+exact params) {tq:.3f}")
