"""Compare another implementation's outputs against a centermask2 reference folder.

    from compare import compare
    report = compare("shared/parity/A_...", "/path/to/other/A_...")   # or a dict, see below
    python compare.py REF_DIR OUT_DIR [--json report.json] [--quiet]

`outputs` is either a folder holding files in the reference format (features_small.npz,
head_small.npz, instances.npz, losses.json; any subset), or a dict
{"features_small": {name: array}, "head_small": {...}, "instances": {...}, "losses": {...}}.
Only numpy / json are needed (no torch, no detectron2, no pycocotools).

Reported:
  tensors   : per array, max |out-ref|, max|ref|, rel_to_max = max|out-ref| / max|ref|,
              and pass/fail against the reference's meta.json tolerances.
  detections: per image (prefix like 'single__img0__'), final and raw (pre-postprocess)
              detections are matched greedily in reference score order: same class and
              (box IoU > 0.99 or every box coordinate within 0.05 px; the latter matters for the
              many zero-area / sub-pixel-thin boxes these synthetic weights produce).
              For matched pairs: max |score diff|, max box-coordinate diff, mask IoU
              (final masks; a pair passes if IoU >= mask_iou_min or <= mask_pixel_slack pixels differ),
              max |mask prob diff| (raw 28x28 probabilities), max |mask_score diff|.
  losses    : per section ('batch', 'single_img0', 'single_img1') and loss name: relative diff.
"""

import json
import os
import sys

import numpy as np

REQUIRED_TENSORS = {
    "features_small": ["p3", "p4", "p5", "p6", "p7"],
    "head_small": [
        f"{k}_{p}"
        for p in ["p3", "p4", "p5", "p6", "p7"]
        for k in ["logits", "bbox_reg", "ctrness"]
    ],
}
DEFAULT_TOL = {  # used when the reference meta.json carries no "tolerances" entry
    "tensor_rel_to_max": 1e-4,
    "det_match_rate_min": 1.0,
    "det_box_iou_min": 0.99,
    "det_box_coord_abs_px": 0.05,
    "det_score_abs": 5e-4,
    "mask_score_abs": 1e-3,
    "mask_iou_min": 0.98,
    "mask_pixel_slack": 2,
    "mask_prob_abs": 5e-4,
    "loss_rel": 1e-4,
}


def _load(x):
    if isinstance(x, dict):
        return x
    out = {}
    for name in ["features_small", "head_small", "instances"]:
        p = os.path.join(x, name + ".npz")
        if os.path.exists(p):
            with np.load(p) as z:
                out[name] = {k: z[k] for k in z.files}
    p = os.path.join(x, "losses.json")
    if os.path.exists(p):
        out["losses"] = json.load(open(p))
    return out


def _tensor_cmp(r, o):
    r = np.asarray(r, np.float64)
    o = np.asarray(o, np.float64)
    if r.shape != o.shape:
        return {"shape_mismatch": [list(r.shape), list(o.shape)], "ok": False}
    if r.size == 0:
        return {"max_abs": 0.0, "ref_max_abs": 0.0, "rel_to_max": 0.0, "nonfinite_out": 0}
    d = np.abs(r - o)
    nf = int((~np.isfinite(o)).sum())
    m = float(np.nanmax(d)) if nf < o.size else float("inf")
    rm = float(np.abs(r).max())
    return {
        "max_abs": m if nf == 0 else float("inf"),
        "ref_max_abs": rm,
        "rel_to_max": (m / max(rm, 1e-30)) if nf == 0 else float("inf"),
        "mean_abs": float(np.nanmean(d)),
        "nonfinite_out": nf,
    }


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    ua = (
        max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
        + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
        - inter
    )
    return inter / ua if ua > 0 else float("nan")


BOX_COORD_ABS = (
    0.05  # px; lets (near-)degenerate boxes match, where IoU is undefined or hypersensitive
)


def _box_match(a, b, iou_min, coord_abs=BOX_COORD_ABS):
    """IoU > iou_min, or every coordinate within BOX_COORD_ABS px (for zero-area / sub-pixel-thin
    boxes, e.g. height 0.015 px, a 1e-4 px change moves IoU by ~1%). Returns (ok, sort_key_value).
    """
    v = _iou(a, b)
    d = float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
    if np.isfinite(v) and v > iou_min:
        return True, v
    if d <= coord_abs:
        return True, (v if np.isfinite(v) else 1.0) if d > 0 else 1.0
    return False, 0.0


def match_detections(rb, rc, ob, oc, iou_min=0.99, rs=None, os_=None, coord_abs=BOX_COORD_ABS):
    """Greedy in reference order. Returns list of (ref_idx, out_idx, iou)."""
    used = np.zeros(len(ob), bool)
    pairs = []
    for i in range(len(rb)):
        best, best_key = None, None
        for j in range(len(ob)):
            if used[j] or int(oc[j]) != int(rc[i]):
                continue
            ok, v = _box_match(rb[i], ob[j], iou_min, coord_abs)
            if not ok:
                continue
            key = (-v, abs(float(rs[i]) - float(os_[j])) if rs is not None else 0.0)
            if best is None or key < best_key:
                best, best_key = j, key
        if best is not None:
            used[best] = True
            pairs.append((i, best, -best_key[0]))
    return pairs


def _unpack(inst, p):
    shp = tuple(int(x) for x in inst[p + "masks_shape"])
    return np.unpackbits(inst[p + "masks_packed"], axis=-1, count=shp[2]).astype(bool).reshape(shp)


def _mask_iou(a, b):
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u > 0 else 1.0


def _det_cmp(R, O, p, tol):
    rep = {}
    for kind, bk, sk, ck in [
        ("final", "boxes", "scores", "classes"),
        ("raw", "raw_boxes", "raw_scores", "raw_classes"),
    ]:
        if p + bk not in R:
            continue
        if p + bk not in O:
            rep[kind] = {"missing_in_output": True, "ok": False}
            continue
        rb, rs, rc = R[p + bk], R[p + sk], R[p + ck]
        ob, os_, oc = O[p + bk], O[p + sk], O[p + ck]
        pairs = match_detections(
            rb,
            rc,
            ob,
            oc,
            tol["det_box_iou_min"],
            rs,
            os_,
            tol.get("det_box_coord_abs_px", BOX_COORD_ABS),
        )
        n = max(len(rb), len(ob))
        r = {
            "n_ref": int(len(rb)),
            "n_out": int(len(ob)),
            "n_matched": len(pairs),
            "match_rate": (len(pairs) / n) if n else 1.0,
        }
        if pairs:
            ri = np.array([a for a, _, _ in pairs])
            oi = np.array([b for _, b, _ in pairs])
            r["max_score_diff"] = float(np.abs(rs[ri].astype(np.float64) - os_[oi]).max())
            r["max_box_coord_diff"] = float(np.abs(rb[ri].astype(np.float64) - ob[oi]).max())
            ious = [v for _, _, v in pairs]
            r["min_box_iou"] = float(np.nanmin(ious)) if np.isfinite(ious).any() else None
            msk = "mask_scores" if kind == "final" else "raw_mask_scores"
            if p + msk in R and p + msk in O:
                r["max_mask_score_diff"] = float(
                    np.abs(R[p + msk][ri].astype(np.float64) - O[p + msk][oi]).max()
                )
            if kind == "final" and p + "masks_packed" in R and p + "masks_packed" in O:
                rm, om = _unpack(R, p), _unpack(O, p)
                mi = [_mask_iou(rm[a], om[b]) for a, b, _ in pairs]
                xd = [int(np.logical_xor(rm[a], om[b]).sum()) for a, b, _ in pairs]
                r["mask_iou_min"] = float(min(mi))
                r["mask_iou_mean"] = float(np.mean(mi))
                r["mask_xor_pixels_max"] = int(max(xd))
                r["mask_pixels_ref_mean"] = float(rm[ri].sum((1, 2)).mean())
                r["masks_ok"] = bool(
                    all(
                        m >= tol["mask_iou_min"] or x <= tol["mask_pixel_slack"]
                        for m, x in zip(mi, xd)
                    )
                )
            if kind == "raw" and p + "raw_mask_probs" in R and p + "raw_mask_probs" in O:
                r["max_mask_prob_diff"] = float(
                    np.abs(
                        R[p + "raw_mask_probs"][ri].astype(np.float64) - O[p + "raw_mask_probs"][oi]
                    ).max()
                )
        ok = r["match_rate"] >= tol["det_match_rate_min"]
        ok &= r.get("max_score_diff", 0.0) <= tol["det_score_abs"]
        ok &= r.get("masks_ok", True)
        ok &= r.get("max_mask_prob_diff", 0.0) <= tol["mask_prob_abs"]
        ok &= r.get("max_mask_score_diff", 0.0) <= tol["mask_score_abs"]
        r["ok"] = bool(ok)
        rep[kind] = r
    return rep


def compare(ref_dir, outputs, prefixes=None, tol=None, verbose=True):
    R = _load(ref_dir)
    O = _load(outputs)
    if tol is None:
        tol = dict(DEFAULT_TOL)
        mp = os.path.join(ref_dir, "meta.json") if isinstance(ref_dir, str) else None
        if mp and os.path.exists(mp):
            tol.update(json.load(open(mp)).get("tolerances", {}).get("compare_thresholds", {}))
    report = {"tolerances_used": tol, "tensors": {}, "detections": {}, "losses": {}}
    for grp in ["features_small", "head_small"]:
        if grp not in R:
            continue
        if grp not in O:
            report.setdefault("groups_absent_in_output", []).append(grp)
            continue
        for k, rv in R[grp].items():
            if k.startswith("locations"):
                continue
            if k not in O[grp]:
                if k in REQUIRED_TENSORS[grp]:
                    report["tensors"][f"{grp}/{k}"] = {"missing_in_output": True, "ok": False}
                continue
            c = _tensor_cmp(rv, O[grp][k])
            c["ok"] = bool(c.get("rel_to_max", float("inf")) <= tol["tensor_rel_to_max"])
            report["tensors"][f"{grp}/{k}"] = c
    for grp in ["instances", "losses"]:
        if grp in R and grp not in O:
            report.setdefault("groups_absent_in_output", []).append(grp)
    if "instances" in R and "instances" in O:
        RI, OI = R["instances"], O["instances"]
        allp = sorted({k.split("__")[0] + "__" + k.split("__")[1] + "__" for k in RI})
        for p in prefixes or allp:
            if any(k.startswith(p) for k in OI):
                report["detections"][p.rstrip("_")] = _det_cmp(RI, OI, p, tol)
    if "losses" in R and "losses" in O:
        for sec in ["batch", "single_img0", "single_img1"]:
            if sec not in R["losses"]:
                continue
            rsec, osec = R["losses"][sec], O["losses"].get(sec, {})
            for name, rv in rsec.items():
                if name not in osec:
                    report["losses"][f"{sec}/{name}"] = {"missing_in_output": True, "ok": False}
                    continue
                rel = abs(float(osec[name]) - rv) / max(abs(rv), 1e-12)
                report["losses"][f"{sec}/{name}"] = {
                    "ref": rv,
                    "out": float(osec[name]),
                    "rel_diff": rel,
                    "ok": bool(rel <= tol["loss_rel"]),
                }
            for name in osec:
                if name not in rsec:
                    report["losses"][f"{sec}/{name}"] = {"extra_in_output": True, "ok": False}
    oks = (
        [v.get("ok", True) for v in report["tensors"].values()]
        + [vv.get("ok", True) for v in report["detections"].values() for vv in v.values()]
        + [v.get("ok", True) for v in report["losses"].values()]
    )
    report["all_ok"] = bool(all(oks))
    report["n_checks"] = len(oks)
    report["n_failed"] = int(sum(1 for x in oks if not x))
    if verbose:
        print(summarize(report))
    return report


def summarize(rep):
    lines = []
    t = rep["tensors"]
    if t:
        worst = max(t.items(), key=lambda kv: kv[1].get("rel_to_max", float("inf")))
        lines.append(
            f"tensors: {len(t)} compared, max abs diff {max(v.get('max_abs', float('inf')) for v in t.values()):.3g}, "
            f"worst rel_to_max {worst[1].get('rel_to_max', float('inf')):.3g} ({worst[0]}), "
            f"failed {sum(not v['ok'] for v in t.values())}"
        )
    for p, d in rep["detections"].items():
        for kind, r in d.items():
            if r.get("missing_in_output"):
                lines.append(f"det {p}/{kind}: MISSING")
                continue
            s = f"det {p}/{kind}: ref {r['n_ref']} out {r['n_out']} matched {r['n_matched']}"
            for k in [
                "max_score_diff",
                "max_box_coord_diff",
                "mask_iou_min",
                "mask_xor_pixels_max",
                "max_mask_prob_diff",
                "max_mask_score_diff",
            ]:
                if k in r:
                    s += f" {k}={r[k]:.3g}"
            lines.append(s + ("" if r["ok"] else "  <-- FAIL"))
    ls = rep["losses"]
    if ls:
        worst = max(ls.items(), key=lambda kv: kv[1].get("rel_diff", float("inf")))
        lines.append(
            f"losses: {len(ls)} compared, worst rel diff {worst[1].get('rel_diff', float('inf')):.3g} ({worst[0]}), "
            f"failed {sum(not v['ok'] for v in ls.values())}"
        )
    if rep.get("groups_absent_in_output"):
        lines.append(
            "not compared (absent in output): " + ", ".join(rep["groups_absent_in_output"])
        )
    lines.append(f"ALL OK: {rep['all_ok']}  ({rep['n_failed']} of {rep['n_checks']} checks failed)")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("ref")
    ap.add_argument("out")
    ap.add_argument("--json")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    rep = compare(a.ref, a.out, verbose=not a.quiet)
    if a.json:
        json.dump(rep, open(a.json, "w"), indent=1)
    sys.exit(0 if rep["all_ok"] else 1)
