#!/usr/bin/env python
"""Convert a checkpoint between formats: .pkl / .pth / .safetensors in, .safetensors or .pth out.

    python tools/convert/convert_checkpoint.py model_final.pth model_final.safetensors
    python tools/convert/convert_checkpoint.py R-50.pkl R-50.safetensors

The input is read by the package's safe loader (``centermask.checkpoint.loading``: nothing in it
can run code) and its model weights (``model``, or the whole file when it is a plain state dict;
the Caffe2 blobs of a Detectron ``.pkl``) are written by ``save_converted_checkpoint``, in the
format of the output's suffix: ``.safetensors`` (tensors only, with ``__author__`` /
``matching_heuristics`` as metadata) or ``.pth`` (``{"model": ..., "__author__": ...,
"matching_heuristics": ...}``). Optimizer and trainer state are not converted. ``MODEL.WEIGHTS``
accepts either output.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from centermask.checkpoint import load_detectron2_checkpoint, save_converted_checkpoint

OUTPUT_SUFFIXES = (".safetensors", ".pth")


def convert(source: str, output: str) -> int:
    """Write the weights of ``source`` to ``output``; returns the number of tensors."""
    if Path(output).suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"{output}: the output must end with one of {OUTPUT_SUFFIXES}")
    loaded = load_detectron2_checkpoint(source)
    weights = loaded["model"]
    if not isinstance(weights, dict) or not weights:
        raise ValueError(f"{source} holds no model weights (a dict of tensors under 'model')")
    weights = {
        k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in weights.items()
    }
    author = str(loaded.get("__author__", Path(source).name))
    heuristics = bool(loaded.get("matching_heuristics", False))
    save_converted_checkpoint(weights, output, author, matching_heuristics=heuristics)
    return len(weights)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="checkpoint to read (.pkl, .pth, .safetensors)")
    parser.add_argument("output", help="file to write (.safetensors or .pth)")
    args = parser.parse_args(argv)
    count = convert(args.source, args.output)
    print(f"wrote {count} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
