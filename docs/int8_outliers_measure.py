"""Measures plain int8 vs int8 + FP16 outlier columns on real weights.

Replicates qconv's Int8Vectorwise kernel (bitsandbytes' int8_vectorwise_quant
with a per-tensor threshold) in numpy, for several outlier criteria.

usage: python int8_outliers_measure.py MODEL.safetensors [--check-bnb]
Needs numpy and safetensors (and torch + bitsandbytes for --check-bnb, which
first verifies the numpy kernel against bitsandbytes bit for bit).
See docs/INT8_OUTLIERS.md.
"""
import sys
import numpy as np
from safetensors.numpy import load_file

F32 = np.float32
INV127 = F32(7.874015718698502e-3)


def selected(name, t):
    # qconv's default selection: 2-D weights, not embeddings or norms.
    return t.ndim == 2 and name.endswith(".weight") and "embed" not in name and "norm" not in name.lower()


def quantize(a, threshold, whole_columns=False):
    """a: float32 matrix of float16 values. Returns the reconstruction and the
    outlier column indices (bnb semantics: elements with |a| >= threshold are
    outliers, their columns are outlier columns)."""
    absa = np.abs(a)
    outlier = absa >= threshold
    cols = np.flatnonzero(outlier.any(axis=0))
    excluded = outlier.copy()
    if whole_columns:
        excluded[:, cols] = True
    masked = np.where(excluded, F32(0), a)
    scb = np.abs(masked).max(axis=1).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # torch evaluates 127.0 / row_stats as reciprocal(row_stats) * 127.
        scale = ((F32(1) / scb).astype(F32) * F32(127)).astype(F32)
        cb = np.rint(masked * scale[:, None])
    cb = np.nan_to_num(cb, nan=0.0).astype(np.int8)
    cb[:, cols] = 0
    rec = (cb.astype(F32) * scb[:, None]).astype(F32) * INV127
    rec[:, cols] = a[:, cols]
    return rec.astype(F32), cols


def rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


CRITERIA = [("none", None)] + [(f"rms x {k}", ("rms", k)) for k in (4, 6, 8, 10, 12, 16, 24, 32)] \
    + [(f"rowabsmax-median x {k}", ("med", k)) for k in (1.5, 2, 3)]


def threshold_for(a, rule):
    """The element threshold, rounded to float16 as torch compares a half
    tensor with a Python float (and as qconv does)."""
    if rule is None:
        return np.inf
    kind, k = rule
    if kind == "rms":
        t = F32(k * rms(a))
    else:
        t = F32(k * np.median(np.abs(a).max(axis=1)))
    return F32(np.float16(t))


def check_against_bitsandbytes(weights, rule):
    """The numpy kernel above equals bitsandbytes' int8_vectorwise_quant with
    the resolved threshold, tensor by tensor (needs torch and bitsandbytes)."""
    import torch
    import bitsandbytes.functional as F
    for name, w in sorted(weights.items()):
        a = w.astype(np.float16).astype(F32)
        t = threshold_for(a, rule)
        rec, cols = quantize(a, t)
        cb, scb, oc = F.int8_vectorwise_quant(torch.from_numpy(a).half(), threshold=float(t))
        ref = F.int8_vectorwise_dequant(cb, scb).numpy()
        ref_cols = np.array([], dtype=np.int64) if oc is None else oc.numpy()
        ref[:, ref_cols] = a[:, ref_cols]
        assert np.array_equal(cols, ref_cols), name
        assert np.array_equal(rec.view(np.uint32), ref.view(np.uint32)), name
    print(f"numpy kernel == bitsandbytes for {len(weights)} tensors with {rule}")


def main(path, check=False):
    weights = {k: v for k, v in load_file(path).items() if selected(k, v)}
    if check:
        check_against_bitsandbytes(weights, ("rms", 10))
        check_against_bitsandbytes(weights, ("rms", 4))
    names = sorted(weights)
    print(f"{len(names)} tensors, {sum(v.size for v in weights.values())} elements")
    show = ["encoder.layer.0.output.dense.weight", "encoder.layer.3.intermediate.dense.weight",
            "encoder.layer.5.attention.self.query.weight"]
    for whole in (False, True):
        print("\nabsmax exclusion:", "whole outlier columns" if whole else "outlier elements (bnb)")
        print("| criterion | columns split | most split tensor | extra bytes | rel. RMSE overall | worst tensor rel. RMSE | " + " | ".join(s.split("encoder.")[1] for s in show) + " |")
        for label, rule in CRITERIA:
            sse = ssq = 0.0
            n = 0
            split = total_cols = 0
            worst = (0.0, "")
            extra = 0
            per = {}
            for name in names:
                w = weights[name]
                a = w.astype(np.float16).astype(F32)
                rec, cols = quantize(a, threshold_for(a, rule), whole)
                err = (rec.astype(np.float64) - w.astype(np.float64))
                sse += float(np.sum(err * err))
                ssq += float(np.sum(np.square(w, dtype=np.float64)))
                n += w.size
                split += len(cols)
                total_cols += w.shape[1]
                frac = len(cols) / w.shape[1]
                worst = max(worst, (frac, name))
                extra += len(cols) * w.shape[0]  # one more byte per element kept as fp16
                per[name] = np.sqrt(np.mean(err * err)) / rms(w)
            overall = np.sqrt(sse / n) / np.sqrt(ssq / n)
            print(f"| {label} | {split}/{total_cols} = {100*split/total_cols:.2f}% | {100*worst[0]:.2f}% ({worst[1].replace('encoder.layer.', 'L').replace('.weight','')}) "
                  f"| {100*extra/n:.2f}% | {overall:.5f} | {max(per.values()):.5f} | " + " | ".join(f"{per[s]:.5f}" for s in show) + " |")


if __name__ == "__main__":
    main(sys.argv[1], check="--check-bnb" in sys.argv[2:])
