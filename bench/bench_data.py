"""Input-pipeline benchmarks: ember against tf.data and PyTorch's DataLoader, in one run.

1. images/s for decode -> resize (shorter side 256) -> centre crop 224 -> normalize -> batch 32
   over 512 JPEGs (crops of the bundled photos, re-encoded into a temporary folder):
   ember Pipeline (AUTOTUNE), tf.data (AUTOTUNE), PyTorch DataLoader (2 workers, Pillow),
   ember DataLoader (2 workers, ImageFolder + transforms, the seed's 4.2).
2. per-element overhead of an in-memory Pipeline against a plain Python generator.
3. memory (PSS of the main process plus its workers) of a 2-worker DataLoader over a million
   strings against 0 workers: a Python list (PyTorch's copy-on-read problem) with the
   DataLoader's default columns (borrowed reads on CPython, Note [Borrowed reads] in
   ember/data/_packed.py), with the packed fallback, without either (pack_dataset=False), and
   a StringArray. Each line also gives the epoch's seconds.

Prints ratios and one JSON line per workload. Run: python bench/bench_data.py [--quick | --memory]

Figures, images/s (one run each; 2 CPUs; absolute rates swing by up to 2x between runs on
this shared machine, and other jobs' load favours whichever side runs more threads):
    earlier, loaded machine: ember Pipeline 259, tf.data 161, PyTorch 2 workers 108
    quiet machine, NumPy resize, 4 map threads: ember 421, tf.data 750 (0.56), PyTorch 507
    quiet machine, compiled resize (Note [Compiled resampling]), bilinear tables in a few NumPy
    calls, one map thread per CPU: ember 750, tf.data 774 (0.97), PyTorch 523 (1.43); ember's
    DataLoader (ImageFolder + transforms, 2 workers) 613.
    and JPEGs decoded by simplejpeg (Note [JPEG decoders]): ember 772, tf.data 614 (1.26),
    PyTorch 487 (1.59); three more interleaved rounds: ember 715-741, tf.data 392-694,
    PyTorch 439-495.
Per-element overhead against a generator: 1.04-1.48 with NumPy elements, 1.66-1.97 with
Tensors (four runs).
Memory, 1M strings in a list, 2 workers vs 0 (PSS, 161 MB with 0 workers): 2.16x with the
lists themselves, 1.39x with packed columns, 1.07x with borrowed reads (the default); a
StringArray 1.11x. Epoch over the million strings with 2 workers: 1.08 s with the list, 1.40 s
packed (0.3 s of it packing), 1.63 s borrowed (about 1.4 us per string read in place).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples", "seed"))

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
RESULTS = []


def report(workload: str, **values):
    line = {"workload": workload, **values}
    RESULTS.append(line)
    print(json.dumps(line), flush=True)


def short_side_size(height, width, short=256):
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def timed(make_iterator, images: int, repeats: int = 2) -> float:
    """Best images/s over `repeats` full passes (the first pass also warms caches)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        seen = 0
        total = images
        for batch in make_iterator():
            first = batch[0] if isinstance(batch, (list, tuple)) else batch
            seen += int(first.shape[0])
        elapsed = time.perf_counter() - start
        assert seen == total, (seen, total)
        best = max(best, seen / elapsed)
    return best


def bench_ember_pipeline(files):
    import ember.io.files as io
    from ember import data
    from ember.vision import image

    # Normalize on [224, 224 * 3] rows (a free reshape of the crop): NumPy broadcasting over a
    # trailing axis of 3 runs its inner loop 3 elements at a time, about 10x slower.
    mean_row, std_row = np.tile(MEAN, 224), np.tile(STD, 224)
    scale = np.float32(1 / 255.0)

    def load(filename):
        decoded = image.decode_jpeg(io.read_file(filename), channels=3).numpy()
        height, width = short_side_size(*decoded.shape[:2])
        resized = image.resize(decoded, [height, width]).numpy()
        top, left = (height - 224) // 2, (width - 224) // 2
        rows = resized[top : top + 224, left : left + 224].reshape(224, 224 * 3)
        return ((rows * scale - mean_row) / std_row).reshape(224, 224, 3)

    pipeline = (
        data.Pipeline.from_tensor_slices(files)
        .map(load, num_parallel_calls=data.AUTOTUNE)
        .batch(32)
        .prefetch(data.AUTOTUNE)
    )
    return timed(lambda: pipeline, len(files))


def bench_tf_data(files):
    import tensorflow as tf

    def load(filename):
        decoded = tf.io.decode_jpeg(tf.io.read_file(filename), channels=3)
        shape = tf.cast(tf.shape(decoded)[:2], tf.float32)
        scale = 256.0 / tf.reduce_min(shape)
        size = tf.cast(shape * scale, tf.int32)
        resized = tf.image.resize(decoded, size)
        crop = tf.image.resize_with_crop_or_pad(resized, 224, 224)
        return (crop / 255.0 - MEAN) / STD

    dataset = (
        tf.data.Dataset.from_tensor_slices(files)
        .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(32)
        .prefetch(tf.data.AUTOTUNE)
    )
    return timed(lambda: dataset, len(files))


class _PillowDataset:
    """The plain-Pillow dataset for PyTorch's DataLoader (torchvision is not installable)."""

    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        from PIL import Image

        image = Image.open(self.files[index]).convert("RGB")
        height, width = short_side_size(image.height, image.width)
        image = image.resize((width, height), Image.BILINEAR)
        top, left = (height - 224) // 2, (width - 224) // 2
        crop = np.asarray(image.crop((left, top, left + 224, top + 224)), np.float32)
        return ((crop / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def bench_torch_dataloader(files):
    import torch

    torch.set_num_threads(1)
    loader = torch.utils.data.DataLoader(_PillowDataset(files), batch_size=32, num_workers=2)
    return timed(lambda: loader, len(files))


def bench_ember_dataloader(root, images):
    from ember import data
    from ember.vision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(MEAN.tolist(), STD.tolist()),
        ]
    )
    loader = data.DataLoader(
        datasets.ImageFolder(root, transform=transform), batch_size=32, num_workers=2
    )
    return timed(lambda: loader, images)


def bench_overhead(n=200_000):
    from ember import data

    features = np.random.default_rng(0).random((n, 4)).astype(np.float32)

    def scale(row):
        return row * 2.0

    def generator():
        for row in features:
            yield scale(row)

    pipeline = data.Pipeline.from_tensor_slices(features).map(scale)

    def per_element(make):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in make():
                pass
            best = min(best, (time.perf_counter() - start) / n)
        return best * 1e9

    plain = per_element(generator)
    ours = per_element(pipeline.as_numpy_iterator)
    ours_tensors = per_element(lambda: iter(pipeline))
    return plain, ours, ours_tensors


MEMORY_CHILD = r"""
import os, sys, json, time
sys.path.insert(0, {root!r})
import numpy as np
import ember.data as data
kind, workers = sys.argv[1], int(sys.argv[2])
strings = [f"sample-{{i:07d}}-" + "x" * (i % 40) for i in range(1_000_000)]
column = data.StringArray(strings) if kind == "stringarray" else strings
pack = kind != "list-unpacked"
if kind == "list-packed":  # the fallback where objects cannot be read in place
    import ember.data._packed as packed
    packed._supported = False
del strings
class Strings(data.Dataset):
    def __init__(self, column): self.column = column
    def __len__(self): return len(self.column)
    def __getitem__(self, i): return self.column[i]
    def __getitems__(self, indices):
        if kind == "stringarray":
            return self.column[indices]
        return [self.column[i] for i in indices]
def pss(pid):
    try:
        with open(f"/proc/{{pid}}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0
def total():
    import multiprocessing
    return pss(os.getpid()) + sum(pss(p.pid) for p in multiprocessing.active_children())
loader = data.DataLoader(Strings(column), batch_size=1000, shuffle=True, num_workers=workers,
                         pack_dataset=pack)
peak = 0
start = time.perf_counter()
for step, batch in enumerate(loader):
    if step % 50 == 0:
        peak = max(peak, total())
seconds = time.perf_counter() - start
peak = max(peak, total())
print(json.dumps({{"pss_bytes": peak, "epoch_s": seconds}}))
"""


def bench_memory():
    script = MEMORY_CHILD.format(root=ROOT)
    results = {}
    for kind in ("list", "list-packed", "list-unpacked", "stringarray"):
        for workers in (0, 2):
            out = subprocess.run(
                [sys.executable, "-c", script, kind, str(workers)],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if out.returncode:
                raise RuntimeError(out.stderr)
            results[(kind, workers)] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def main():
    quick = "--quick" in sys.argv
    if "--memory" in sys.argv:  # only part 3
        return report_memory()
    from _photos import build_photo_folder

    with tempfile.TemporaryDirectory(prefix="ember-bench-jpegs-") as root:
        per_class = 16 if quick else -(-512 // 6)
        build_photo_folder(root, per_class=per_class, seed=0)
        files = sorted(glob.glob(os.path.join(root, "*", "*.jpg")))
        if not quick:
            for path in files[512:]:
                os.unlink(path)
            files = files[:512]
        n = len(files)
        print(f"# {n} JPEGs, {os.cpu_count()} CPUs", flush=True)
        ember_rate = bench_ember_pipeline(files)
        report("images ember Pipeline AUTOTUNE", images_per_s=round(ember_rate, 1), images=n)
        try:
            tf_rate = bench_tf_data(files)
            report(
                "images tf.data AUTOTUNE",
                images_per_s=round(tf_rate, 1),
                images=n,
                ember_over_tf=round(ember_rate / tf_rate, 2),
            )
        except ImportError:
            print("# tensorflow not installed: tf.data skipped")
        try:
            torch_rate = bench_torch_dataloader(files)
            report(
                "images PyTorch DataLoader 2 workers (Pillow)",
                images_per_s=round(torch_rate, 1),
                images=n,
                ember_over_torch=round(ember_rate / torch_rate, 2),
            )
        except ImportError:
            print("# torch not installed: PyTorch DataLoader skipped")
        loader_rate = bench_ember_dataloader(root, n)
        report(
            "images ember DataLoader 2 workers (ImageFolder + transforms)",
            images_per_s=round(loader_rate, 1),
            images=n,
        )

    plain, ours, ours_tensors = bench_overhead(50_000 if quick else 200_000)
    report(
        "per-element overhead in-memory Pipeline vs generator",
        generator_ns=round(plain),
        pipeline_numpy_ns=round(ours),
        pipeline_tensor_ns=round(ours_tensors),
        ratio=round(ours / plain, 2),
        ratio_tensors=round(ours_tensors / plain, 2),
    )

    if not quick:
        report_memory()


def report_memory():
    memory = bench_memory()
    for kind in ("list", "list-packed", "list-unpacked", "stringarray"):
        base, two = memory[(kind, 0)], memory[(kind, 2)]
        report(
            f"memory 1M strings ({kind}) DataLoader 2 workers vs 0",
            pss_0_workers_mb=round(base["pss_bytes"] / 2**20, 1),
            pss_2_workers_mb=round(two["pss_bytes"] / 2**20, 1),
            ratio=round(two["pss_bytes"] / base["pss_bytes"], 2),
            epoch_s_0_workers=round(base["epoch_s"], 2),
            epoch_s_2_workers=round(two["epoch_s"], 2),
        )


if __name__ == "__main__":
    main()
