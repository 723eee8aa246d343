"""The seed tour (`make demo`): runs every ported seed example in examples/seed/ on real
bundled data and prints its results. Each capability adds its script to STEPS."""

import os
import pathlib
import runpy
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

# (script, what it shows). Order follows SEED.md.
STEPS = [
    ("eager_linear_regression.py", "SEED 3.1 math in eager autograd"),
    ("tensorflow_linear_regression.py", "SEED 3.1: TF1 graph, Session, GradientDescentOptimizer"),
    ("pytorch_mlp.py", "SEED 3.2: MLP on MNIST with nn, optim"),
    ("huggingface_classification.py", "SEED 3.3: BERT tokenizer and sequence classification"),
    ("tf_data_pipeline.py", "SEED 4.1: tf.data-style image pipeline"),
    ("pytorch_dataloader.py", "SEED 4.2: ImageFolder + DataLoader with transforms"),
    ("trainer.py", "SEED 4.3: Trainer fine-tuning"),
]


def main():
    ran = 0
    for script, what in STEPS:
        path = HERE / script
        if not path.exists():
            print(f"\n== {script}: not part of this build yet ({what})")
            continue
        print(f"\n== {script}: {what}")
        start = time.perf_counter()
        runpy.run_path(str(path), run_name="__main__")
        print(f"-- {script} finished in {time.perf_counter() - start:.1f} s")
        ran += 1
    print(f"\nseed tour: {ran} of {len(STEPS)} seed examples ran")


if __name__ == "__main__":
    os.chdir(HERE)
    main()
