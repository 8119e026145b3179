"""The floor of shapes-fid: FID of real held-out images, and of their VQ reconstructions.

A generator can not be expected to beat either row: "real" is the metric's own noise at this n
(held-out 'test' images scored like samples against the 'ref' statistics), "vq" is the best a
model that emits the zoo tokenizer's codes can reach. Reading a method's FID against these rows
says how much room there was to improve. Writes results/floor-shapes-fid.csv.

    .venv/bin/python scripts/shapes_fid_floor.py [--n 1000] [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vapi_bench.hashing import file_digest
from vapi_bench.imageio import to_uint8
from vapi_bench.metrics import frechet_distance, gaussian_stats
from vapi_bench.plugins.shapes.data import class_dataset
from vapi_bench.plugins.shapes.features import DEFAULT_WEIGHTS, extract, load_feature_net
from vapi_bench.plugins.shapes.zoo.files import load_vq, read_manifest, zoo_dir_or_default
from vapi_bench.plugins.shapes.zoo.train import images_to_float
from vapi_bench.store import write_csv
from vapi_bench.tasks.shapes.reference import load_reference

OUT = Path(__file__).resolve().parent.parent / "results" / "floor-shapes-fid.csv"


@torch.no_grad()
def reconstruct(vq, images: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(images), 256):
        batch = images_to_float(torch.from_numpy(images[start:start + 256]).permute(0, 3, 1, 2))
        out.append(to_uint8(vq.decode_indices(vq.encode_indices(batch))))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images per row (the evidence uses task.n=1000)")
    parser.add_argument("--seeds", default="0,1,2", help="data seeds of the held-out images")
    parser.add_argument("--reference-n", type=int, default=5000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    net = load_feature_net(DEFAULT_WEIGHTS)
    reference = load_reference(net, file_digest(DEFAULT_WEIGHTS), args.reference_n, 32, 0)
    root = zoo_dir_or_default(None)
    vq = load_vq(root, read_manifest(root))
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        data = class_dataset("test", args.n, 32, seed)
        real = np.stack([data.scene(i).image for i in range(args.n)])
        for kind, images in (("real", real), ("vq", reconstruct(vq, real))):
            features, logits = extract(net, images, 256)
            fid = frechet_distance(*gaussian_stats(features), reference.mu, reference.sigma)
            accuracy = float((logits.argmax(1) == np.array(data.labels()[:args.n])).mean())
            rows.append({"images": kind, "seed": seed, "n": args.n, "reference_n": args.reference_n,
                         "fid": round(fid, 4), "class_accuracy": round(accuracy, 4)})
            print(rows[-1], flush=True)
    OUT.parent.mkdir(exist_ok=True)
    write_csv(OUT, rows)
    for kind in ("real", "vq"):
        fids = [r["fid"] for r in rows if r["images"] == kind]
        print(f"{kind}: FID {np.mean(fids):.3f} ± {np.std(fids, ddof=1) if len(fids) > 1 else 0:.3f}")


if __name__ == "__main__":
    main()
