"""pytorch/examples `time_sequence_prediction` (two stacked LSTMCells in float64 learn sine
waves with LBFGS, then predict 1,000 steps into the future), with only its imports changed:
`import ember as torch`. The example's two scripts are one here: `generate_sine_wave.py`'s data
(seeded, as there) is made in memory and handed to training through `torch.save` /
`torch.load` of a file in a temporary folder, as the original hands it through traindata.pt.

Arguments added so that it runs in seconds: `--length` (L, the points per wave; 1000 in the
original), `--waves` (N, 100), `--future` (1000); the plots (matplotlib) only with `--plot`.

    python examples/pytorch_examples/time_sequence_prediction.py            # L=100, 2 steps
    python examples/pytorch_examples/time_sequence_prediction.py --length 1000 --steps 15
"""

import argparse
import os
import tempfile

import numpy as np

import ember as torch
import ember.nn as nn
import ember.optim as optim


def generate_sine_wave(path, T=20, L=1000, N=100):
    """generate_sine_wave.py: N sine waves of L points, each shifted at random."""
    np.random.seed(2)
    x = np.empty((N, L), "int64")
    x[:] = np.array(range(L)) + np.random.randint(-4 * T, 4 * T, N).reshape(N, 1)
    data = np.sin(x / 1.0 / T).astype("float64")
    torch.save(torch.from_numpy(data), open(path, "wb"))


class Sequence(nn.Module):
    def __init__(self):
        super(Sequence, self).__init__()
        self.lstm1 = nn.LSTMCell(1, 51)
        self.lstm2 = nn.LSTMCell(51, 51)
        self.linear = nn.Linear(51, 1)

    def forward(self, input, future=0):
        outputs = []
        h_t = torch.zeros(input.size(0), 51, dtype=torch.double)
        c_t = torch.zeros(input.size(0), 51, dtype=torch.double)
        h_t2 = torch.zeros(input.size(0), 51, dtype=torch.double)
        c_t2 = torch.zeros(input.size(0), 51, dtype=torch.double)

        for input_t in input.split(1, dim=1):
            h_t, c_t = self.lstm1(input_t, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        for i in range(future):  # noqa: B007  (if we should predict the future)
            h_t, c_t = self.lstm1(output, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        outputs = torch.cat(outputs, dim=1)
        return outputs


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2, help="steps to run")
    parser.add_argument("--length", type=int, default=100, help="points per sine wave")
    parser.add_argument("--waves", type=int, default=100, help="number of sine waves")
    parser.add_argument("--future", type=int, default=1000, help="points predicted")
    parser.add_argument("--plot", action="store_true", help="save predict%%d.pdf (matplotlib)")
    opt = parser.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="ember_sine_")
    generate_sine_wave(os.path.join(folder, "traindata.pt"), L=opt.length, N=opt.waves)
    # set random seed to 0
    np.random.seed(0)
    torch.manual_seed(0)
    # load data and make training set
    data = torch.load(os.path.join(folder, "traindata.pt")).numpy()
    input = torch.from_numpy(data[3:, :-1])
    target = torch.from_numpy(data[3:, 1:])
    test_input = torch.from_numpy(data[:3, :-1])
    test_target = torch.from_numpy(data[:3, 1:])
    # build the model
    seq = Sequence()
    seq.double()
    criterion = nn.MSELoss()
    # use LBFGS as optimizer since we can load the whole data to train
    optimizer = optim.LBFGS(seq.parameters(), lr=0.8)
    # begin to train
    losses, test_losses = [], []
    for i in range(opt.steps):
        print("STEP: ", i)

        def closure():
            optimizer.zero_grad()
            out = seq(input)
            loss = criterion(out, target)
            print("loss:", loss.item())
            losses.append(loss.item())
            loss.backward()
            return loss

        optimizer.step(closure)
        # begin to predict, no need to track gradient here
        with torch.no_grad():
            future = opt.future
            pred = seq(test_input, future=future)
            loss = criterion(pred[:, :-future], test_target)
            print("test loss:", loss.item())
            test_losses.append(loss.item())
            y = pred.detach().numpy()
        if opt.plot:  # draw the result
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            plt.figure(figsize=(30, 10))
            plt.title("Predict future values for time sequences\n(Dashlines are predicted values)")
            plt.xlabel("x")
            plt.ylabel("y")
            plt.xticks(fontsize=20)
            plt.yticks(fontsize=20)

            def draw(yi, color):
                plt.plot(np.arange(input.size(1)), yi[: input.size(1)], color, linewidth=2.0)
                plt.plot(
                    np.arange(input.size(1), input.size(1) + future),  # noqa: B023
                    yi[input.size(1) :],
                    color + ":",
                    linewidth=2.0,
                )

            draw(y[0], "r")
            draw(y[1], "g")
            draw(y[2], "b")
            plt.savefig(os.path.join(folder, "predict%d.pdf" % i))
            plt.close()
    return losses, test_losses, y


if __name__ == "__main__":
    main()
