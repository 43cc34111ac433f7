# anfcodec developer tasks. Everything runs inside .venv (created by `make install`).
PY      ?= python3
VENV    ?= .venv
BIN      = $(VENV)/bin
DATA    ?= ../shared/data
MINUTES ?= 60

.PHONY: install demo test test-sweep test-fast bench bench-generations bench-high-rate bench-speed bench-speed-fast bench-speed-int8 bench-speed-768 bench-speed-avx2 bench-decode bench-decode-avx2 bench-memory bench-floor train train-fast export export-fast decoder-programs clean fuzz determinism ablation-ms

$(BIN)/anfcodec: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e '.[dev]'
	touch $@

install: $(BIN)/anfcodec  ## create .venv and install anfcodec with its dev tools

demo: install  ## encode, inspect and decode the shipped sample image
	$(BIN)/anfcodec encode examples/sample.png -o examples/sample.anf --quality 3 -f
	$(BIN)/anfcodec info examples/sample.anf
	$(BIN)/anfcodec decode examples/sample.anf -o examples/sample-decoded.png -f

test: install  ## the test suite with a representative Kodak subset (Kodak tests skip when $(DATA)/kodak is absent)
	$(BIN)/python -m pytest -q -m "not sweep"

test-sweep: install  ## the rest of the Kodak sweeps: every image's round trip, every rate-control target
	$(BIN)/python -m pytest -q -m sweep

test-fast: install  ## everything but the Kodak tests
	$(BIN)/python -m pytest -q -m "not kodak"

RUN     ?= anfic-ckbd-n128-m256
# The CPU stage of the first release. Continuing the shipped (GPU-annealed) weights on the CPU has raised the
# validation loss at every rate tried, down to 2.5e-6 at batch 8 (docs/RESULTS.md, session 5 section).
TRAIN_ARGS ?= --lr 1e-4

train: install  ## resume runs/$(RUN), or start it from the shipped weights; nice'd, MINUTES budget
	nice -n 10 $(BIN)/anfcodec train --run-dir runs/$(RUN) --data $(DATA)/train --minutes $(MINUTES) $(TRAIN_ARGS) \
	  $$(test -f runs/$(RUN)/last.pt || echo --init $(RUN))

export: install  ## ship the best checkpoint of runs/$(RUN) as weights/
	$(BIN)/anfcodec export runs/$(RUN)/best.pt

# The narrow (fast) model: the shipped default's flow branches narrowed to N=64 and its post-filter to 16
# channels (anfcodec/training/narrow.py), then fine-tuned with a cosine 1e-4 -> 1e-5 over 128 minutes.
train-fast: install  ## resume runs/$(FAST_MODEL), or narrow the default into it; nice'd
	nice -n 10 $(BIN)/anfcodec train --run-dir runs/$(FAST_MODEL) --data $(DATA)/train --minutes 128 --batch 8 \
	  --lr 1e-4 --lr-final 1e-5 $$(test -f runs/$(FAST_MODEL)/last.pt || echo --init $(RUN) --width 64 --qe-width 16)

decoder-programs: install  ## write the torch-free decoder's program beside every shipped weights file (weights/*.decoder.npz)
	$(BIN)/python -c "from anfcodec.training.export import export_decoder_programs; print(*export_decoder_programs(), sep='\n')"

export-fast: install  ## ship the best checkpoint of runs/$(FAST_MODEL) beside the default
	$(BIN)/anfcodec export runs/$(FAST_MODEL)/best.pt --model-id $(FAST_MODEL) --no-default

clean:
	rm -rf examples/sample.anf examples/sample-decoded.png .pytest_cache

bench: install  ## Kodak RD curves + BD-rates vs JPEG/WebP/AVIF/JPEG XL, generations, high rate -> docs/bench/
	$(BIN)/anfcodec bench $(DATA)/kodak --out docs/bench $(BENCH_ARGS)
	$(MAKE) bench-generations bench-high-rate

bench-high-rate: install  ## near-lossless/lossless on 3 Kodak images vs JPEG XL, AVIF, WebP, PNG -> docs/bench/highrate.*
	$(BIN)/anfcodec bench $(DATA)/kodak --out docs/bench --high-rate --limit 3

bench-speed: install  ## time and peak memory from 768x512 to 24 MP, vs mbt2018-mean -> docs/bench/speed.*
	$(BIN)/anfcodec bench $(DATA)/kodak --out docs/bench --speed --qualities 4

FAST_MODEL ?= anfic-ckbd-n64-m256
bench-speed-fast: install  ## the narrow model at 768x512 and 2 MP, vs mbt2018-mean at its width -> docs/bench/fast/speed.*
	$(BIN)/anfcodec bench $(DATA)/kodak --out docs/bench/fast --speed --qualities 4 --max-mp 2.1 --model $(FAST_MODEL)
	$(BIN)/anfcodec bench $(DATA)/kodak --out docs/bench/fast --floor --qualities 4 --model $(FAST_MODEL)

INT8_MODEL ?= anfic-ckbd-n64-m256-int8
bench-speed-int8: install  ## the fast model with the int8 synthesis at 768x512 and 2 MP, and its work -> docs/bench/int8/speed.*
	$(BIN)/anfcodec bench $(DATA)/kodak --out docs/bench/int8 --speed --qualities 4 --max-mp 2.1 --model $(INT8_MODEL)
	$(BIN)/anfcodec bench $(DATA)/kodak --out docs/bench/int8 --floor --qualities 4 --model $(INT8_MODEL)

# One folder per machine class: the ISA torch runs here (avx512, avx2, ...), emulated where caps are set.
ISA = $$($(BIN)/python -c "import torch; print(torch.backends.cpu.get_cpu_capability().lower())")
ISA_TAG ?=
bench-speed-768: install  ## 768x512 only, the default and the int8 fast model, on this CPU -> docs/bench/cpu-<isa>/<model>/
	for m in $(RUN) $(INT8_MODEL); do $(BIN)/anfcodec bench $(DATA)/kodak --out docs/bench/cpu-$(ISA)$(ISA_TAG)/$$m --speed \
	  --qualities 4 --max-mp 0.5 --settle 10 --model $$m || exit 1; done

# An AVX-512 machine emulating the AVX2 class: torch, oneDNN and MKL capped at AVX2, numpy's
# dispatch without its AVX-512 targets and OpenBLAS on its Haswell (AVX2) kernels. Lowering caps
# only: never raise them above what the CPU has (SIGILL).
AVX2_CAPS = ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 OPENBLAS_CORETYPE=Haswell \
  NPY_DISABLE_CPU_FEATURES="AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL"
bench-speed-avx2: install  ## bench-speed-768 with AVX2_CAPS (an AVX-512 machine emulating the other class) -> docs/bench/cpu-avx2-emulated/
	$(AVX2_CAPS) $(MAKE) bench-speed-768 ISA_TAG=-emulated

bench-decode: install  ## one-off whole-process decodes (torch-free and torch decoder) of kodim01 q4, and a 24 MP decode's peak memory
	$(BIN)/python bench/decode_whole_process.py --mp 24

bench-decode-avx2: install  ## bench-decode without its 24 MP run, with AVX2_CAPS
	$(AVX2_CAPS) $(BIN)/python bench/decode_whole_process.py

bench-memory: install  ## peak memory of untiled coding from 0.4 to 2.7 MP: where tiling must start -> docs/bench/memory.*
	$(BIN)/anfcodec bench $(DATA)/kodak --out docs/bench --memory --qualities 4

bench-floor: install  ## work per network of a 768x512 image vs mbt2018-mean, and its least time at peak GEMM speed -> docs/bench/floor.*
	$(BIN)/anfcodec bench $(DATA)/kodak --out docs/bench --floor --qualities 4

bench-generations: install  ## 10 re-encoding generations on 4 Kodak images vs JPEG/WebP -> docs/bench/generations.*
	$(BIN)/anfcodec bench $(DATA)/kodak --out docs/bench --generations 10 --qualities 2,4,5,6,8,10 --limit 4

fuzz: install  ## the long hostile-input run (issue: reliability): 20000 cases per mutation strategy
	FUZZ_EXAMPLES=20000 $(BIN)/python -m pytest -q tests/test_fuzz.py --hypothesis-show-statistics

determinism: install  ## encode/decode across thread counts and ISA paths on all of $(DATA)/kodak, q 1,4,8
	$(BIN)/python tests/test_determinism.py $(DATA)/kodak

# The redone multiscale ablation (issue 22), both arms from the shipped checkerboard release
# (step 33129), same data, crops and seed. Arm 0: the base continued 3000 steps, lr 1e-5 -> 1e-6.
# MS-ANFIC (fix c): first its new parts alone, the base frozen (6000 cheap steps, lr 1e-4 -> 1e-5:
# the release ms-anfic-ckbd-n128-m256), then a joint fine-tune on arm 0's schedule (3000 steps,
# 1e-5 -> 1e-6). Row (a): the joint stage again with the auxiliary term's pre-fix gradient to the gains
# (--set aux_gain_gradient=true). Each arm's final weights are benchmarked on Kodak (ABL3_BENCH: extra bench options,
# e.g. --limit 4 --qualities 1,2,4,6,8). Each run trains to its step count however long that takes;
# an interrupted run resumes where it stopped.
ABL3_BASE  ?= anfic-ckbd-n128-m256
ABL3_WDIR  ?= runs/abl3-weights
ABL3_BENCH ?=
ABL3_RD     = --classical-from ../shared/anchors/kodak_measured.json $(ABL3_BENCH)
ablation-ms: install  ## the MS-ANFIC ablation against the checkerboard base continued -> docs/bench/ablation3-*/
	nice -n 10 $(BIN)/anfcodec train --run-dir runs/abl3-ckbd --arch anfic-ckbd --init $(ABL3_BASE) --data $(DATA)/train \
	  --lr 1e-5 --lr-final 1e-6 --max-steps 36129 --minutes 100000 --seed 0 --threads 1
	nice -n 10 $(BIN)/anfcodec train --run-dir runs/abl3-ms-frozen --arch ms-anfic --init $(ABL3_BASE) --data $(DATA)/train \
	  --lr 1e-4 --lr-final 1e-5 --max-steps 39129 --minutes 100000 --seed 0 --threads 1 --freeze-base
	$(BIN)/anfcodec export runs/abl3-ckbd/last.pt --weights-dir $(ABL3_WDIR) --model-id abl3-ckbd --no-default
	$(BIN)/anfcodec export runs/abl3-ms-frozen/last.pt --weights-dir $(ABL3_WDIR) --model-id abl3-ms-frozen --no-default
	ANFCODEC_WEIGHTS=$(ABL3_WDIR) nice -n 10 $(BIN)/anfcodec train --run-dir runs/abl3-ms-joint --arch ms-anfic --init abl3-ms-frozen \
	  --data $(DATA)/train --lr 1e-5 --lr-final 1e-6 --max-steps 42129 --minutes 100000 --seed 0 --threads 1
	$(BIN)/anfcodec export runs/abl3-ms-joint/last.pt --weights-dir $(ABL3_WDIR) --model-id abl3-ms-joint --no-default
	ANFCODEC_WEIGHTS=$(ABL3_WDIR) nice -n 10 $(BIN)/anfcodec train --run-dir runs/abl3-ms-joint-a --arch ms-anfic \
	  --init abl3-ms-frozen --data $(DATA)/train --lr 1e-5 --lr-final 1e-6 --max-steps 42129 --minutes 100000 --seed 0 \
	  --threads 1 --set aux_gain_gradient=true
	$(BIN)/anfcodec export runs/abl3-ms-joint-a/last.pt --weights-dir $(ABL3_WDIR) --model-id abl3-ms-joint-a --no-default
	nice -n 10 $(BIN)/anfcodec train --run-dir runs/abl3-ms-linear --arch ms-anfic --init $(ABL3_BASE) --data $(DATA)/train \
	  --lr 1e-4 --lr-final 1e-5 --max-steps 39129 --minutes 100000 --seed 0 --threads 1 --freeze-base --set split_branches=false
	$(BIN)/anfcodec export runs/abl3-ms-linear/last.pt --weights-dir $(ABL3_WDIR) --model-id abl3-ms-linear --no-default
	ANFCODEC_WEIGHTS=$(ABL3_WDIR) $(BIN)/anfcodec bench $(DATA)/kodak --out docs/bench/ablation3-ckbd --model abl3-ckbd $(ABL3_RD)
	for arm in ms-frozen ms-joint ms-joint-a ms-linear; do \
	  ANFCODEC_WEIGHTS=$(ABL3_WDIR) $(BIN)/anfcodec bench $(DATA)/kodak --out docs/bench/ablation3-$$arm --model abl3-$$arm \
	    $(ABL3_RD) --compare "arm 0, the base continued=docs/bench/ablation3-ckbd/bench.json" || exit 1; \
	done

