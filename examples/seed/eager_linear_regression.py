"""SEED.md 3.1's linear regression, written in ember's eager (PyTorch-style) autograd:
the same model W*x + b, loss and 1000 steps of gradient descent at 0.01."""

import ember

W = ember.tensor([0.3], requires_grad=True)
b = ember.tensor([-0.3], requires_grad=True)
x_train = ember.tensor([1.0, 2.0, 3.0, 4.0])
y_train = ember.tensor([0.0, -1.0, -2.0, -3.0])

for _i in range(1000):
    linear_model = W * x_train + b
    loss = ((linear_model - y_train) ** 2).sum()  # sum of the squares
    W.grad = b.grad = None
    loss.backward()
    with ember.no_grad():
        W -= 0.01 * W.grad
        b -= 0.01 * b.grad

print("W: %s b: %s loss: %s" % (W.detach().numpy(), b.detach().numpy(), loss.item()))
