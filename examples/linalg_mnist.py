"""Linear algebra and distances on the bundled MNIST digits (issue 18's ember.linalg, cdist,
mode, cosine_similarity, pixel_unshuffle, instance_norm).

1. PCA: the covariance of 5,000 training images, its eigenvectors by `ember.linalg.eigh`, and
   the same spectrum from `ember.linalg.svdvals` of the centred data (they must agree).
2. A ridge-regression classifier on the top 50 components, solved with a Cholesky factor
   (`ember.linalg.cholesky` + `cholesky_solve`), checked against `ember.linalg.solve`.
3. A 5-nearest-neighbour classifier: `ember.cdist` distances, `topk`, and `mode` for the vote.
4. Nearest class mean by `cosine_similarity`, on features from `pixel_unshuffle` +
   `instance_norm`.
It prints the accuracies on 1,000 test images and the agreement checks.

    python examples/linalg_mnist.py
"""

from __future__ import annotations

import os
import sys


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed"))

import ember  # noqa: E402
from _mnist import load_mnist, normalized  # noqa: E402

F = ember.nn.functional
TRAIN, TEST, COMPONENTS = 5000, 1000, 50


def accuracy(predicted, labels) -> float:
    return float((predicted == labels).float().mean())


def main() -> None:
    images, labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    x = ember.tensor(normalized(images[:TRAIN]).reshape(TRAIN, -1), dtype=ember.float64)
    y = ember.tensor(labels[:TRAIN])
    xt = ember.tensor(normalized(test_images[:TEST]).reshape(TEST, -1), dtype=ember.float64)
    yt = ember.tensor(test_labels[:TEST])

    # 1. PCA two ways
    mean = x.mean(0, keepdim=True)
    centred = x - mean
    covariance = centred.mT @ centred / (TRAIN - 1)
    eigenvalues, eigenvectors = ember.linalg.eigh(covariance)
    singular = ember.linalg.svdvals(centred)
    from_svd = singular**2 / (TRAIN - 1)
    top = eigenvalues.flip(0)[:COMPONENTS]
    gap = float((top - from_svd[:COMPONENTS]).abs().max() / top[0])
    explained = float(top.sum() / eigenvalues.sum())
    print(f"PCA: top {COMPONENTS} components explain {explained:.1%} of the variance;")
    print(f"     eigh(covariance) vs svdvals(data)^2/(n-1): max relative gap {gap:.1e}")
    assert gap < 1e-8

    basis = eigenvectors.flip(-1)[:, :COMPONENTS]
    features = centred @ basis
    test_features = (xt - mean) @ basis

    # 2. ridge regression by a Cholesky solve
    design = ember.cat([features, ember.ones(TRAIN, 1, dtype=ember.float64)], 1)
    targets = F.one_hot(y, 10).to(ember.float64)
    gram = design.mT @ design + 1e-3 * ember.eye(COMPONENTS + 1, dtype=ember.float64)
    factor = ember.linalg.cholesky(gram)
    weights = ember.cholesky_solve(design.mT @ targets, factor)
    check = float((weights - ember.linalg.solve(gram, design.mT @ targets)).abs().max())
    test_design = ember.cat([test_features, ember.ones(TEST, 1, dtype=ember.float64)], 1)
    ridge = accuracy((test_design @ weights).argmax(1), yt)
    print(f"ridge classifier on {COMPONENTS} PCA features: test accuracy {ridge:.1%};")
    print(f"     cholesky_solve vs linalg.solve: max difference {check:.1e}")
    assert ridge > 0.75 and check < 1e-8

    # 3. k nearest neighbours: cdist, topk and mode
    distances = ember.cdist(test_features, features)
    nearest = distances.topk(5, dim=1, largest=False).indices
    votes = y[nearest]
    knn = accuracy(votes.mode(1).values, yt)
    print(f"5-nearest-neighbour vote (cdist + topk + mode): test accuracy {knn:.1%}")
    assert knn > 0.85

    # 4. nearest class mean by cosine similarity on pixel_unshuffle + instance_norm features
    def pooled(flat):
        planes = F.pixel_unshuffle(flat.reshape(-1, 1, 28, 28).float(), 4)  # (N, 16, 7, 7)
        return F.instance_norm(planes).reshape(flat.shape[0], -1)

    train_pooled, test_pooled = pooled(x), pooled(xt)
    means = ember.stack([train_pooled[y == c].mean(0) for c in range(10)])
    similarity = F.cosine_similarity(test_pooled.unsqueeze(1), means.unsqueeze(0), dim=-1)
    centroid = accuracy(similarity.argmax(1), yt)
    print(f"nearest class mean by cosine similarity: test accuracy {centroid:.1%}")
    assert centroid > 0.6


if __name__ == "__main__":
    main()
