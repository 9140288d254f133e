#!/usr/bin/env python3
"""Prefill attention benchmark on one GPU: Elastic's fused hybrid kernel beside PyTorch SDPA
(cuDNN backend) and FlexAttention, on the same bf16 tensors [1, H, N, d], causal.

Configurations: FA-only, SSA-only (sink 128, local 2048, block 128), hybrid at
Omega_MSR in {0.25, 0.5, 0.75} (that share of KV heads SSA, one launch), XA-only (estimation +
attention), and the XA estimation alone. TFLOP/s use the causal dense count 4*N^2*d*Hq/2 for
every row (dense-equivalent), so sparse rows show their speed-up as a higher number.
The ideal hybrid time is (1-r)*T_FA + r*T_SSA from our own FA and SSA times (SPEC §9).
Prints a table last; --json writes every number.
"""
import argparse
import ctypes
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

P = ctypes.c_void_p
I64 = ctypes.c_int64
I32 = ctypes.c_int


def load_lib(path):
    lib = ctypes.CDLL(path)
    lib.ea_create.restype = P
    lib.ea_create.argtypes = [I64]
    lib.ea_destroy.argtypes = [P]
    lib.ea_last_error.restype = ctypes.c_char_p
    lib.ea_plan.argtypes = [P, I64, I32, I32, I32, ctypes.POINTER(ctypes.c_uint8), I64, I64, I64,
                            I64, I64, ctypes.c_double, P]
    run_args = [P, P, P, P, P, I64, I64, I64, I64, I64, I64, I32, P]
    lib.ea_run.argtypes = run_args
    lib.ea_xa_estimate.argtypes = run_args
    lib.ea_xa_kept_fraction.argtypes = [P]
    lib.ea_xa_kept_fraction.restype = ctypes.c_double
    lib.ea_set_variant.argtypes = [I32]
    return lib


def check(lib, rc, what):
    if rc != 0:
        raise RuntimeError(f"{what}: {lib.ea_last_error().decode()}")


def time_ms(fn, reps, warmup=1):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def rel_l2(a, b):
    a = a.float()
    b = b.float()
    return ((a - b).norm() / b.norm()).item()


class Ours:
    def __init__(self, lib, q, k, v, out):
        self.lib = lib
        self.h = lib.ea_create(4 << 30)  # XA at 128K: ~1.3 GB of estimation buffers
        if not self.h:
            raise RuntimeError(lib.ea_last_error().decode())
        self.q, self.k, self.v, self.out = q, k, v, out
        _, self.hq, self.n, self.d = q.shape
        self.hkv = k.shape[1]

    def plan(self, modes, xa_block=128, xa_stride=16):
        arr = (ctypes.c_uint8 * len(modes))(*modes)
        stream = P(torch.cuda.current_stream().cuda_stream)
        check(self.lib, self.lib.ea_plan(self.h, self.n, self.hq, self.hkv, self.d, arr, 128, 128,
                                         2048, xa_block, xa_stride, 0.9, stream), "plan")

    def _args(self):
        n, d = self.n, self.d
        return (P(self.q.data_ptr()), P(self.k.data_ptr()), P(self.v.data_ptr()),
                P(self.out.data_ptr()), d, n * d, d, n * d, d, n * d, 0,
                P(torch.cuda.current_stream().cuda_stream))

    def run(self):
        check(self.lib, self.lib.ea_run(self.h, *self._args()), "run")

    def xa_estimate(self):
        check(self.lib, self.lib.ea_xa_estimate(self.h, *self._args()), "xa_estimate")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--sizes", default="8192,32768,131072")
    ap.add_argument("--json", default="")
    ap.add_argument("--no-flex", action="store_true")
    args = ap.parse_args()
    lib = load_lib(args.lib)
    torch.manual_seed(0)
    hq, hkv, d = 32, 8, 128
    rows = []
    dev = torch.cuda.get_device_name()
    print(f"device: {dev}; torch {torch.__version__}", flush=True)

    for n in [int(x) for x in args.sizes.split(",")]:
        reps = 20 if n <= 8192 else 10 if n <= 32768 else 4
        flops = 4.0 * n * n * d * hq / 2
        q = torch.randn(1, hq, n, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(1, hq, n, d, device="cuda", dtype=torch.bfloat16)
        res = {"n": n}

        def add(name, ms, note=""):
            rows.append({"n": n, "config": name, "ms": ms, "tflops": flops / (ms * 1e-3) / 1e12,
                         "note": note})
            print(f"  N={n:6d} {name:22s} {ms:9.3f} ms {flops / (ms * 1e-3) / 1e12:7.1f} TFLOP/s {note}",
                  flush=True)

        # cuDNN SDPA (GQA through enable_gqa, else K/V expanded to Hq heads: same FLOPs).
        from torch.nn.attention import SDPBackend, sdpa_kernel
        ref = None
        try:
            def cudnn():
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            ref = cudnn()
            note = "enable_gqa"
        except Exception as e:  # noqa: BLE001
            ke = k.repeat_interleave(hq // hkv, dim=1)
            ve = v.repeat_interleave(hq // hkv, dim=1)

            def cudnn():
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    return F.scaled_dot_product_attention(q, ke, ve, is_causal=True)
            ref = cudnn()
            note = f"expanded K/V ({type(e).__name__})"
        t_cudnn = time_ms(cudnn, reps)
        res["cudnn"] = t_cudnn
        add("cuDNN SDPA", t_cudnn, note)

        if not args.no_flex:
            try:
                from torch.nn.attention.flex_attention import create_block_mask, flex_attention
                bm = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, n, n, device="cuda",
                                       _compile=True)  # no dense N x N mask at 128K
                flex = torch.compile(flex_attention, dynamic=False)
                fx = lambda: flex(q, k, v, block_mask=bm, enable_gqa=True)  # noqa: E731
                t0 = time.time()
                fx()
                torch.cuda.synchronize()
                t_flex = time_ms(fx, reps)
                res["flex"] = t_flex
                add("FlexAttention", t_flex, f"compile {time.time() - t0:.0f}s")
            except Exception as e:  # noqa: BLE001
                print(f"  FlexAttention failed: {type(e).__name__}: {str(e)[:200]}", flush=True)

        ours = Ours(lib, q, k, v, out)
        # Kernel variants, FA only: mma.sync tile shapes (32K only) and the wgmma kernels.
        variants = []
        if n == 32768:
            variants = [(1, "mma 128x64"), (2, "mma 64x64"), (4, "mma 128x32"),
                        (3, "wgmma 2 blocks live"), (5, "wgmma 1 block live")]
        for variant, name in variants:
            lib.ea_set_variant(variant)
            try:
                ours.plan([0] * hkv)
                ours.run()
                torch.cuda.synchronize()
                e = rel_l2(out, ref)
                t = time_ms(ours.run, reps)
                add(f"ours FA {name}", t, f"rel_l2 {e:.1e}; x{t_cudnn / t:.2f} of cuDNN speed")
            except Exception as ex:  # noqa: BLE001
                print(f"  variant {name} failed: {ex}", flush=True)
        lib.ea_set_variant(0)
        ours.plan([0] * hkv)
        ours.run()
        torch.cuda.synchronize()
        err = rel_l2(out, ref)
        t_fa = time_ms(ours.run, reps)
        res["fa"] = t_fa
        add("ours FA", t_fa, f"rel_l2 vs cuDNN {err:.1e}; x{t_cudnn / t_fa:.2f} of cuDNN speed")
        ours.plan([1] * hkv)
        t_ssa = time_ms(ours.run, reps)
        res["ssa"] = t_ssa
        add("ours SSA", t_ssa, f"{t_fa / t_ssa:.1f}x faster than our FA")
        for r in (0.25, 0.5, 0.75):
            n_ssa = round(r * hkv)
            modes = [1 if (i * n_ssa) // hkv != ((i + 1) * n_ssa) // hkv else 0 for i in range(hkv)]
            ours.plan(modes)
            t = time_ms(ours.run, reps)
            ideal = (1 - r) * t_fa + r * t_ssa
            res[f"hybrid{r}"] = t
            add(f"ours hybrid r={r}", t, f"ideal {ideal:.3f} ms, ratio {t / ideal:.3f}")
        ours.plan([2] * hkv)
        t_est = time_ms(ours.xa_estimate, max(2, reps // 2))
        res["xa_est"] = t_est
        kept = lib.ea_xa_kept_fraction(ours.h)
        t_xa = time_ms(ours.run, max(2, reps // 2))
        res["xa"] = t_xa
        add("ours XA estimate only", t_est, f"{100 * t_est / t_fa:.1f}% of our FA, {100 * t_est / t_cudnn:.1f}% of cuDNN")
        add("ours XA (est+attn)", t_xa, f"kept {100 * kept:.1f}% of causal blocks")
        lib.ea_destroy(ours.h)
        del q, k, v, out, ref
        torch.cuda.empty_cache()

    print("\n| N | config | ms | TFLOP/s (dense-equiv.) | note |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['config']} | {r['ms']:.3f} | {r['tflops']:.1f} | {r['note']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
