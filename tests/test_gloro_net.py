"""GloroNet: the ⊥ logit, the Lipschitz constants it rests on, certificates, and its errors."""

import math

import pytest
import torch
from conftest import U32, float32_estimate_slack, gamma32
from torch import nn

import gloro
from gloro.layers import UnsupportedLayerError
from gloro.losses import gloro_cross_entropy
from gloro.margin import bottom_logit, head_distances


def small_conv_net(seed: int = 0, activation: str = "relu") -> gloro.GloroNet:
    model = gloro.create_model("2C2F", (1, 8, 8), 10, activation=activation, seed=seed)
    return gloro.GloroNet(model, epsilon=0.3, power_iterations=5, seed=seed)


def test_bottom_logit_matches_its_closed_form_on_a_hand_built_net():
    first, head = nn.Linear(2, 2, bias=False), nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.5]]))  # ‖W1‖ = 2
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    net = gloro.GloroNet(nn.Sequential(first, nn.ReLU(), head), epsilon=0.1, input_range=(0, 2)).freeze()
    x = torch.tensor([[1.0, 2.0]])  # hidden (2, 1) → y = (2, 1, 3), j = 2
    # K_2,0 = 2·‖(0,1)‖ = 2 and K_2,1 = 2·‖(1,0)‖ = 2, so y_⊥ = max(2 + 0.2, 1 + 0.2) = 2.2
    logits = net(x)
    assert logits[0, :3].tolist() == pytest.approx([2.0, 1.0, 3.0])
    # after freeze() y_⊥ also carries the rounding offsets O_ij: a few float32 ulps of these logits, never 0
    assert 2.2 < float(logits[0, 3].detach()) < 2.2 + 1e-5
    certificate = net.certify(x, epsilon=0.1)
    assert 0.5 - 1e-5 < float(certificate.radius[0]) < min((3 - 2) / 2, (3 - 1) / 2)
    assert bool(certificate.certified[0])
    assert not bool(net.certify(x, epsilon=0.51).certified[0])


def test_bottom_logit_is_max_over_other_classes_of_shifted_logits():
    torch.manual_seed(0)
    logits, margin = torch.randn(64, 7), torch.rand(7, 7) + 0.1
    expected = []
    for row in logits:
        j = int(row.argmax())
        expected.append(max(float(row[i] + 0.3 * margin[j, i]) for i in range(7) if i != j))
    assert bottom_logit(logits, margin, 0.3).tolist() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("rows", [12, 40])  # cdist switches to a Gram matmul past 25 rows
def test_head_distances_training_form_matches_exact_differences(rows):
    weight = torch.randn(rows, 30, generator=torch.Generator().manual_seed(rows))
    off_diagonal = ~torch.eye(rows, dtype=torch.bool)
    fast, exact = head_distances(weight).double(), head_distances(weight, exact=True)
    # The Gram form ‖a‖² + ‖b‖² − 2a·b in float32 is off by at most γ₆₃·(‖a‖² + ‖b‖² + 2|a|·|b|), which moves
    # the distance by that over itself; the square root rounds once more.
    w = weight.double()
    squares = w.square().sum(1)
    magnitude = squares[:, None] + squares[None, :] + 2 * w.abs() @ w.abs().T
    allowed = gamma32(63) * magnitude / exact.clamp_min(1e-300) + 2 * U32 * exact
    assert bool(((fast - exact).abs() <= allowed)[off_diagonal].all())
    assert torch.all(exact.diagonal() == 0)
    brute = torch.stack([torch.stack([(a.double() - b.double()).norm() for b in weight]) for a in weight])
    assert torch.allclose(exact, brute, rtol=1e-12, atol=0)


@pytest.mark.parametrize("rows", [12, 40])
def test_coincident_head_rows_give_finite_gradients(rows):
    """A zero-initialised or collapsed head has equal rows: their distance is 0 and must not yield NaN."""
    weight = torch.zeros(rows, 8, requires_grad=True)
    logits = torch.randn(16, rows)
    loss = bottom_logit(logits, 2.0 * head_distances(weight), 0.3).sum()
    loss.backward()
    assert torch.isfinite(weight.grad).all()


@pytest.mark.parametrize("activation", ["relu", "minmax"])
def test_sampled_pairs_never_exceed_the_sound_sub_lipschitz_constant(activation):
    net = small_conv_net(1, activation).eval()
    body = nn.Sequential(*net.layers[:-1])
    k = float(net.sub_lipschitz(sound=True))
    torch.manual_seed(1)
    x1 = torch.rand(512, 1, 8, 8)
    x2 = (x1 + 1e-2 * torch.randn_like(x1)).clamp(0, 1)
    with torch.no_grad():
        ratios = (body(x1) - body(x2)).norm(dim=1) / (x1 - x2).flatten(1).norm(dim=1)
    assert float(ratios.max()) <= k
    random_best = float(ratios.max())
    # optimise pairs to push the ratio towards K: the bound still holds, and the search is not toothless
    delta = (1e-2 * torch.randn(64, 1, 8, 8)).requires_grad_()
    anchor = torch.rand(64, 1, 8, 8)
    optimizer = torch.optim.Adam([delta], lr=1e-3)
    for _ in range(100):
        ratio = (body(anchor + delta) - body(anchor)).norm(dim=1) / delta.flatten(1).norm(dim=1)
        optimizer.zero_grad()
        (-ratio.sum()).backward()
        optimizer.step()
    assert random_best < float(ratio.detach().max()) <= k


def test_margin_gradient_norms_never_exceed_k_ij():
    net = small_conv_net(2).eval()
    k_ij = net.lipschitz_constant(sound=True)
    torch.manual_seed(2)
    for x in torch.rand(8, 1, 1, 8, 8):
        x.requires_grad_(True)
        y = net.predict_clean(x)[0]
        j = int(y.argmax())
        for i in range(10):
            if i == j:
                continue
            (gradient,) = torch.autograd.grad(y[j] - y[i], x, retain_graph=True)
            assert float(gradient.norm()) <= float(k_ij[j, i])


def test_power_iteration_converges_to_the_sound_value_on_a_dense_net():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(20, 32), gloro.MinMax(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 5))
    net = gloro.GloroNet(model, epsilon=0.1)
    net.converge(tol=1e-9)
    estimate = float(net.sub_lipschitz(sound=False).detach())
    assert estimate == pytest.approx(float(net.sub_lipschitz(sound=True)), rel=1e-3)
    # a float32 estimate ‖Wx‖ may exceed ‖W‖₂ by its rounding (activations: both are 1)
    for row, layer, bound in zip(net.bound_report(), net.layers, net.bounds):
        assert row["ratio"] >= 1 / (1 + float32_estimate_slack(layer, bound))


def test_training_forwards_advance_iterates_and_eval_forwards_do_not():
    net = small_conv_net()
    iterative = [b for b in net.bounds if hasattr(b, "iterate")]
    assert len(iterative) == 3  # two convs and the hidden dense layer
    start = [b.iterate.clone() for b in iterative]
    net.eval()(torch.rand(4, 1, 8, 8))
    assert all(torch.equal(a, b.iterate) for a, b in zip(start, iterative))
    net.train()(torch.rand(4, 1, 8, 8))
    assert not any(torch.equal(a, b.iterate) for a, b in zip(start, iterative))


def test_autocast_training_keeps_the_lipschitz_estimates_in_full_precision():
    """Under mixed precision the power iteration and K stay float32: the same iterates and K as without it."""
    plain, mixed = small_conv_net(2), small_conv_net(2)
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    gloro_cross_entropy(plain(x), y).backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = mixed(x)
    gloro_cross_entropy(logits.float(), y).backward()
    for a, b in zip(plain.bounds, mixed.bounds):
        if hasattr(a, "iterate"):
            assert b.iterate.dtype == torch.float32 and torch.equal(a.iterate, b.iterate)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed_k = mixed.eval().sub_lipschitz(sound=False)
    assert mixed_k.dtype == torch.float32
    assert torch.equal(mixed_k, plain.eval().sub_lipschitz(sound=False))


def test_frozen_net_predicts_and_certifies_like_the_live_one():
    net = small_conv_net(4)
    x = torch.rand(200, 1, 8, 8)
    net.eval()
    live = net.certify(x)
    live_logits = net(x)
    net.freeze()
    frozen = net.certify(x)
    assert torch.equal(live.predictions, frozen.predictions)
    assert torch.equal(live.certified, frozen.certified)
    assert torch.allclose(live.radius, frozen.radius)
    assert torch.equal(net(x)[:, :10], live_logits[:, :10])
    with pytest.raises(RuntimeError, match="unfreeze"):
        net.train()(x)
    net.unfreeze().train()(x)


def test_vra_never_exceeds_clean_accuracy():
    net = small_conv_net(5)
    x, y = torch.rand(300, 1, 8, 8), torch.randint(0, 10, (300,))
    for epsilon in (0.0, 1e-3, 0.1, 1.0):
        report = gloro.evaluate(net, x, y, epsilon=epsilon)
        assert report["vra"] <= report["clean_accuracy"]


def test_the_bottom_logit_wins_exactly_when_the_box_wide_allowance_does_not_certify():
    """forward's y_⊥ takes the box-wide offsets O_ij in one pass; `certify` starts from the same decision and
    only adds points, where each point's own allowance is smaller."""
    net = small_conv_net(6).freeze()  # forward then uses the same sound constants as certify
    x = torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    epsilon = float(net.certify(x, epsilon=0.0).radius.median())  # about half of the points certified
    net.epsilon = epsilon
    with torch.no_grad():
        certificate = net.sound_constants().certifier(net.predict_clean(x), epsilon)
    refined = net.certify(x, epsilon=epsilon)
    assert (refined.radius >= certificate.radius).all() and (refined.certified >= certificate.certified).all()
    rejected = net(x).argmax(1) == 10
    # The float32 y_⊥ rounds ε·K_ij + O_ij and its sum with y_i, each by at most an ulp of the result: the two
    # decisions may differ only where y_j − y_i − O_ij lies within those ulps of ε·K_ij.
    k, offsets = net.lipschitz_constant(), net.margin_offsets()
    others = ~torch.eye(k.shape[0], dtype=torch.bool)
    largest = net.predict_clean(x).abs().amax(1).double() + float((epsilon * k + offsets)[others].max())
    ulps = 8 * U32 * largest
    boundary = (certificate.radius - epsilon).abs() * float(k[others].min()) <= ulps
    assert torch.equal(rejected[~boundary], ~certificate.certified[~boundary])
    assert bool(rejected[~boundary].any()) and not bool(rejected[~boundary].all())  # both decisions are tested


def test_epsilon_validation():
    net = small_conv_net()
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="epsilon must be"):
            net.epsilon = bad
        with pytest.raises(ValueError, match="epsilon must be"):
            gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8)), bad)
    with pytest.raises(ValueError, match="epsilon must be"):
        net.certify(torch.rand(2, 1, 8, 8), epsilon=-1)
    net.epsilon, net.eval_epsilon = 0.45, 0.3
    assert (net.epsilon, net.eval_epsilon) == (0.45, 0.3)


def test_bad_models_and_inputs_raise_errors_that_say_what_to_fix():
    with pytest.raises(TypeError, match="last layer is nn.Linear"):
        gloro.GloroNet(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), 0.1)
    with pytest.raises(TypeError, match="nn.Sequential"):
        gloro.GloroNet(nn.Linear(4, 4), 0.1)
    with pytest.raises(UnsupportedLayerError, match="Tanh"):
        gloro.GloroNet(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)), 0.1)
    with pytest.raises(ValueError, match="input_shape"):
        gloro.GloroNet(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)), 0.1)
    with pytest.raises(ValueError, match="does not fit"):
        gloro.GloroNet(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)), 0.1, input_shape=(1, 5, 5))
    net = small_conv_net()
    with pytest.raises(ValueError, match=r"expected inputs of shape \(batch, 1, 8, 8\)"):
        net(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="expected inputs"):
        net.certify(torch.rand(2, 3, 8, 8))


def test_nested_sequentials_are_flattened():
    inner = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
    net = gloro.GloroNet(nn.Sequential(inner, nn.Sequential(nn.Linear(8, 8), nn.ReLU()), nn.Linear(8, 3)), 0.1)
    assert len(net.layers) == 5 and len(net.bounds) == 4
