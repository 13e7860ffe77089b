import torch

from geo3d.nn.activations import trunc_exp


def test_trunc_exp_forward_is_exp_and_backward_is_clamped():
    x = torch.tensor([-3.0, 0.0, 2.0, 15.0, 40.0], dtype=torch.float64, requires_grad=True)
    y = trunc_exp(x)
    torch.testing.assert_close(y, torch.exp(x.detach()))
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.exp(x.detach().clamp(max=15.0)))
    assert torch.isfinite(x.grad).all()
