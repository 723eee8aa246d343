"""SEED.md 4.2, ported: a DataLoader with transforms over an ImageFolder, on ember.

Only the imports, the data paths and the prints are new; the pipeline is the seed's.
Run: python examples/seed/pytorch_dataloader.py
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from _photos import build_photo_folder

import ember.data
from ember.vision import datasets, transforms

base = tempfile.mkdtemp(prefix="ember-seed-imagefolder-")
build_photo_folder(os.path.join(base, "train"), per_class=24, seed=0)
build_photo_folder(os.path.join(base, "test"), per_class=8, seed=1)

# data transformation
transform = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ]
)

# load data
train_data = datasets.ImageFolder(os.path.join(base, "train"), transform=transform)
test_data = datasets.ImageFolder(os.path.join(base, "test"), transform=transform)

# create data loader
train_loader = ember.data.DataLoader(train_data, batch_size=32, shuffle=True)
test_loader = ember.data.DataLoader(test_data, batch_size=32, shuffle=False)

print(f"classes: {train_data.class_to_idx}")
print(f"train: {len(train_data)} images, test: {len(test_data)} images")
for name, loader in (("train", train_loader), ("test", test_loader)):
    start = time.perf_counter()
    count = 0
    for images, labels in loader:
        count += images.shape[0]
        print(
            f"{name} batch images {tuple(images.shape)} {images.dtype} range "
            f"[{float(images.min()):.2f}, {float(images.max()):.2f}], labels "
            f"{tuple(labels.shape)} {labels.dtype}"
        )
    elapsed = time.perf_counter() - start
    print(f"{name}: {count / elapsed:.0f} images/s with num_workers=0 (as in the seed)")

# The seed's best practice at work: the same loader with 2 worker processes, kept between
# epochs (the first epoch also pays for starting them).
fast_loader = ember.data.DataLoader(
    train_data, batch_size=32, shuffle=True, num_workers=2, persistent_workers=True
)
for epoch in (1, 2):
    start = time.perf_counter()
    count = sum(images.shape[0] for images, _ in fast_loader)
    print(
        f"train with num_workers=2, epoch {epoch}: "
        f"{count / (time.perf_counter() - start):.0f} images/s"
    )

# "Handles large data": workers read a dataset's big Python lists as shared packed columns
# instead of copying them (Note [Copy-on-read] in ember/data/_packed.py). A million strings,
# 0 vs 2 workers, memory as PSS (shared pages split between the processes that map them) of
# all processes.


class Strings(ember.data.Dataset):
    def __init__(self, strings):
        self.strings = strings

    def __len__(self):
        return len(self.strings)

    def __getitem__(self, index):
        return self.strings[index]


def total_pss_mb():
    import multiprocessing

    def pss(pid):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                return next(int(line.split()[1]) for line in handle if line.startswith("Pss:"))
        except (OSError, StopIteration):
            return 0

    pids = [os.getpid()] + [child.pid for child in multiprocessing.active_children()]
    return sum(pss(pid) for pid in pids) / 1024


if os.path.exists("/proc/self/smaps_rollup"):
    strings = [f"review-{i:07d}: " + "good " * (i % 9) for i in range(1_000_000)]
    memory = {}
    for workers in (0, 2):
        loader = ember.data.DataLoader(
            Strings(strings), batch_size=1000, shuffle=True, num_workers=workers
        )
        start, peak, count = time.perf_counter(), 0.0, 0
        for step, batch in enumerate(loader):
            count += len(batch)
            if step % 100 == 0:
                peak = max(peak, total_pss_mb())
        memory[workers] = max(peak, total_pss_mb())
        print(
            f"1M strings, num_workers={workers}: {count} samples in "
            f"{time.perf_counter() - start:.1f} s, memory {memory[workers]:.0f} MB"
        )
    print(f"memory with 2 workers / 0 workers: {memory[2] / memory[0]:.2f}x")
