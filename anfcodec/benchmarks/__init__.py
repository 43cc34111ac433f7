"""The measurements behind ``anfcodec bench`` (docs/RESULTS.md quotes them); no codec path imports these.

rd           RD curves and BD-rates against the classical codecs (the default bench)
generations  re-encoding: decode and re-encode N times, PSNR after each generation
highrate     the top qualities and the near-lossless layer against JPEG XL, AVIF, WebP, PNG
speed        time and peak memory per image size, against mbt2018-mean at equal width
memorybound  where whole-image coding would pass the 2 GB bound (tiling starts there)
tilecost     the rate that coding as tiles costs against whole-image coding
floor        the work of coding and the least time the machine's arithmetic allows
"""


def machine() -> dict:
    """Where a figure was measured: CPU model, the ISA torch runs (and any caps set to emulate a
    smaller one), threads. Every speed figure carries this, since the CPU classes differ tenfold."""
    import os
    import platform

    import torch
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    caps = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                                       "ANFCODEC_ARITH") if os.environ.get(k)}
    return {"cpu": cpu, "capability": torch.backends.cpu.get_cpu_capability(), "caps": caps,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def describe_machine(m: dict) -> str:
    caps = ", ".join(f"{k}={v}" for k, v in m.get("caps", {}).items())
    return (f"{m['cpu']}, torch {m['torch']} running {m['capability']} kernels, {m['threads']} threads"
            + (f" (emulated: {caps})" if caps else ""))
