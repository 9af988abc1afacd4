"""LiResNet and EMMA: a LiRes block is bounded by the sound bound of the conv it computes, never below that
conv's exact norm (also where power iteration's estimate is below it); the EMMA loss is the authors'; the
rounding model covers a LiResNet; a digits LiResNet trained with EMMA keeps its certificates under attack."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from test_floating_point import box_points
from test_residual import assert_box_offsets_cover_the_rounding, assert_trained_certificates_survive_pgd

import gloro
from gloro.conv_norms import explicit_conv_matrix
from gloro.families.liresnet import LiResConv
from gloro.layer_bounds import bound_for
from gloro.methods.emma import emma_loss


def exact_norm(block: LiResConv, input_shape) -> float:
    """The spectral norm of the computed kernel's conv at `input_shape`, from a float64 SVD of its explicit
    matrix, less that SVD's own slack (a few n·u)."""
    matrix = explicit_conv_matrix(block.kernel(), input_shape, (1, 1), (1, 1))
    return float(torch.linalg.matrix_norm(matrix, 2)) / (1 + 16 * max(matrix.shape) * 2.0**-53)


def perturbed_block(channels: int, depth: int, seed: int, spread: float) -> LiResConv:
    block = LiResConv(channels, depth)
    generator = torch.Generator().manual_seed(seed)
    block.draw(generator)
    with torch.no_grad():
        block.direction.mul_(1 + spread * 9 * channels)  # far from the identity, as training can leave it
        block.scale.uniform_(-2, 2, generator=generator)
    return block


@settings(max_examples=15, deadline=None)
@given(
    channels=st.integers(1, 5),
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    depth=st.integers(1, 20),
    seed=st.integers(0, 2**16),
    spread=st.sampled_from([0.0, 0.1, 1.0]),
)
def test_a_blocks_sound_bound_is_never_below_its_convs_exact_norm(channels, height, width, depth, seed, spread):
    block = perturbed_block(channels, depth, seed, spread)
    shape = (channels, height, width)
    assert exact_norm(block, shape) <= float(bound_for(block, shape).sound(block))


def test_the_sound_bound_holds_where_power_iterations_estimate_falls_short():
    """A few power-iteration steps from a fixed start give less than the norm; the certificate never uses them."""
    block = perturbed_block(4, 2, seed=3, spread=1.0)
    shape = (4, 5, 5)
    bound = bound_for(block, shape, torch.Generator().manual_seed(0))
    with torch.no_grad():
        estimate = float(bound.estimate(block, 1))
    exact = exact_norm(block, shape)
    assert estimate < exact <= float(bound.sound(block))


def test_a_block_computes_the_identity_plus_its_scaled_residual_conv():
    block = perturbed_block(3, 4, seed=1, spread=0.1)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    block.double()
    residual = 4**-0.5 * block.scale[:, None, None, None] * block.direction
    expected = x + F.conv2d(x, residual, block.bias, padding=1)
    assert torch.allclose(block(x), expected, rtol=1e-12, atol=1e-12)


def test_a_liresnet_is_drawn_from_its_seed():
    first, again, other = (gloro.create_model("LiResNet-L6W32", (1, 8, 8), 10, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters()))
    blocks = [(a, b) for a, b in zip(first, other) if isinstance(a, LiResConv)]
    assert blocks and not any(torch.equal(a.direction, b.direction) for a, b in blocks)


def test_emma_without_adaptive_radii_is_cross_entropy_with_each_logit_raised_by_its_reach():
    """The NeurIPS code's loss: CE(z + ε·K_y·) (z_y itself raised by K_yy = 0)."""
    generator = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(16, 5, generator=generator), torch.randint(0, 5, (16,), generator=generator)
    lipschitz = torch.rand(5, 5, generator=generator) + 0.5
    lipschitz = (lipschitz + lipschitz.T).fill_diagonal_(0)
    expected = F.cross_entropy(logits + 0.3 * lipschitz[labels], labels)
    assert torch.allclose(emma_loss(logits, labels, lipschitz, 0.3, adaptive=False), expected)


def test_emma_pushes_each_class_at_the_radius_its_margin_reaches_without_a_gradient_through_it():
    """ρ_j = clip(margin_j/(ε·K_yj), 0.01, 1): 1 where the margin already reaches ε, 0.01 where the point is
    misclassified; the gradient is that of the cross-entropy with ρ held fixed."""
    lipschitz = torch.tensor([[0.0, 2.0, 4.0], [2.0, 0.0, 1.0], [4.0, 1.0, 0.0]])
    logits = torch.tensor([[3.0, 2.0, -2.0]], requires_grad=True)  # margins 1 (ρ = 1/(0.5·2)) and 5 (ρ ≥ 1)
    labels = torch.tensor([0])
    emma_loss(logits, labels, lipschitz, 0.5).backward()
    radius = torch.tensor([[0.01, 1.0, 1.0]])  # ρ_y is 0.01, but K_yy = 0
    fixed = logits.detach().requires_grad_()
    F.cross_entropy(fixed - fixed[:, :1] + radius * 0.5 * lipschitz[labels], labels).backward()
    assert torch.allclose(logits.grad, fixed.grad)
    wrong = torch.tensor([[1.0, 2.0, 0.0]])  # class 1 ahead: its radius is the floor
    floor = F.cross_entropy(wrong - wrong[:, :1] + torch.tensor([[0.0, 0.01, 0.5]]) * 0.5 * lipschitz[labels], labels)
    assert torch.allclose(emma_loss(wrong, labels, lipschitz, 0.5), floor)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_box_offsets_cover_a_liresnets_rounding(dtype):
    net = gloro.GloroNet(gloro.create_model("LiResNet-L6W32", (1, 8, 8), 10, seed=3, init="orthogonal"), 0.3)
    points = box_points(200, 100, torch.Generator().manual_seed(4))[:, :, :8, :8]
    assert_box_offsets_cover_the_rounding(net, points, dtype)


def test_a_liresnet_trained_with_emma_on_digits_is_certified_soundly():
    net = gloro.GloroNet(gloro.create_model("LiResNet-L6W32", (1, 8, 8), 10, seed=0, init="orthogonal"), 0.3, seed=0)
    assert_trained_certificates_survive_pgd(net, "emma", epochs=6, certified=20)
