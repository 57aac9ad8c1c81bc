"""Decoding an image folder of large photos: JPEG's reduced-scale decode against the full one.

`leanfit.data.sources._decode_one` asks libjpeg for a reduced decode (`Image.draft`) of at least
twice the wanted size before it resizes. This writes `--files` phone-sized JPEGs (4032x3024, made
from scikit-learn's two sample photos, cropped and scaled so each differs), decodes each one with
the draft on and with it off (a no-op in its place), alternating which goes first, and prints and
saves the seconds a file each way, their ratio, and how far apart the pixels are.

    python benchmarks/decode.py                 # 40 files at 32 px
    python benchmarks/decode.py --quick         # 4 files
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_throughput import cpu_model, provenance  # noqa: E402

from leanfit.data.sources import _decode_one  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PHOTO = (4032, 3024)  # a 12-megapixel phone photo


def write_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    sources = load_sample_images().images
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        image = sources[i % len(sources)]
        h, w = image.shape[:2]
        y, x = int(rng.integers(0, h // 4)), int(rng.integers(0, w // 4))
        crop = Image.fromarray(image[y : y + 3 * h // 4, x : x + 3 * w // 4])
        path = folder / f"photo{i:03d}.jpg"
        crop.resize(PHOTO, Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> dict:
    from PIL.JpegImagePlugin import JpegImageFile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--size", type=int, default=32, help="image_size decoded to")
    parser.add_argument("--quick", action="store_true", help="4 files")
    parser.add_argument("--out", type=Path, default=RESULTS / "decode.json")
    args = parser.parse_args(argv)
    count = 4 if args.quick else args.files
    seconds: dict[str, list[float]] = {"reduced": [], "full": []}
    differences = []
    with tempfile.TemporaryDirectory(prefix="leanfit-decode-") as folder:
        paths = write_photos(Path(folder), count)
        for i, path in enumerate(paths):
            decoded = {}
            order = ("reduced", "full") if i % 2 == 0 else ("full", "reduced")
            for way in order:
                off = mock.patch.object(JpegImageFile, "draft", lambda *a: None)
                started = time.perf_counter()
                if way == "full":
                    with off:
                        decoded[way] = _decode_one(path, args.size, 3)
                else:
                    decoded[way] = _decode_one(path, args.size, 3)
                seconds[way].append(time.perf_counter() - started)
            differences.append(np.abs(decoded["reduced"].astype(int) - decoded["full"].astype(int)))
    every = np.stack(differences)
    result = {
        **provenance("decode"),
        "machine": cpu_model(),
        "files": count,
        "photo": list(PHOTO),
        "image_size": args.size,
        "seconds_per_file_median": {k: statistics.median(v) for k, v in seconds.items()},
        "full_over_reduced": statistics.median(seconds["full"])
        / statistics.median(seconds["reduced"]),
        "pixel_difference_mean": float(every.mean()),
        "pixel_difference_max": int(every.max()),
    }
    median = result["seconds_per_file_median"]
    print(
        f"{count} photos of {PHOTO[0]}x{PHOTO[1]} to {args.size} px: full decode "
        f"{median['full'] * 1e3:.1f} ms a file, reduced {median['reduced'] * 1e3:.1f} ms "
        f"({result['full_over_reduced']:.1f}x); pixels differ by "
        f"{result['pixel_difference_mean']:.3f} on average, {result['pixel_difference_max']} at "
        "most (of 255)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"saved {args.out}")
    return result


if __name__ == "__main__":
    main()
