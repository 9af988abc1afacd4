"""Training: the cost of each epoch in the history, best-eval-VRA selection, seeded per-batch augmentation."""

import json
import math

import pytest
import torch
from torch import nn

import gloro
from gloro.bench.stages import write_csv
from gloro.data import augment, load_digits
from gloro.history import TrainingHistory
from gloro.training_cost import training_cost

DETERMINISTIC = ("epoch", "loss", "clean_accuracy", "vra", "epsilon", "lr")


@pytest.fixture(scope="module")
def digits():
    return load_digits("train"), load_digits("test")


def dense_net(seed: int = 0) -> gloro.GloroNet:
    """A small dense GloroNet on the (1, 8, 8) digits: quick to train, and image-shaped for augmentations."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return gloro.GloroNet(model, 0.3, input_shape=(1, 8, 8), eval_epsilon=0.3, seed=seed)


def test_history_rows_carry_the_cost_of_training(digits):
    (x, y), _ = digits
    history = gloro.train(dense_net(), x, y, gloro.TrainingRecipe(epochs=3, batch_size=128), progress=False)
    assert isinstance(history, list) and isinstance(history, TrainingHistory) and history.best is None
    for row in history:
        assert row["seconds"] > 0
        assert row["images_per_second"] == pytest.approx(len(y) / row["seconds"])
        assert row["peak_mem_source"] == "cpu_process_max_rss" and row["peak_mem_mb"] > 10
        assert not any(key.startswith("eval_") for key in row)
    peaks = [row["peak_mem_mb"] for row in history]
    assert peaks == sorted(peaks)  # a process-lifetime peak never goes down
    json.dumps(history, allow_nan=False)
    cost = training_cost(history)
    assert cost == history.cost()
    assert cost["epochs"] == 3 and cost["first_epoch_seconds"] == history[0]["seconds"]
    assert cost["later_epochs_mean_seconds"] == pytest.approx((history[1]["seconds"] + history[2]["seconds"]) / 2)
    assert cost["later_epochs_images_per_second"] > 0
    later = sorted(row["seconds"] for row in history[1:])
    assert (cost["later_epochs_min_seconds"], cost["later_epochs_max_seconds"]) == (later[0], later[-1])
    assert cost["later_epochs_median_seconds"] == pytest.approx(sum(later) / 2)  # two later epochs
    assert cost["total_seconds"] == pytest.approx(sum(row["seconds"] for row in history))
    assert cost["peak_mem_mb"] == max(peaks)
    single = training_cost(history[:1])
    assert single["later_epochs_mean_seconds"] is None and single["later_epochs_images_per_second"] is None
    assert single["later_epochs_median_seconds"] is None and single["later_epochs_min_seconds"] is None
    with pytest.raises(ValueError, match="no epochs"):
        training_cost([])


def test_best_on_the_eval_set_keeps_that_epochs_weights(digits):
    (x, y), (x_test, y_test) = digits
    net = dense_net(1)
    # a learning rate that wrecks the model after four good epochs, so the best epoch is not the last
    recipe = gloro.TrainingRecipe(epochs=7, batch_size=64, learning_rate=lambda epoch: 3e-3 if epoch < 4 else 0.5)
    history = gloro.train(net, x, y, recipe, eval_images=x_test, eval_labels=y_test, progress=False)
    vras = [row["eval_vra"] for row in history]
    best = history.best
    assert best.epoch == vras.index(max(vras)) < len(history) - 1
    assert best.vra == max(vras) and best.clean_accuracy == history[best.epoch]["eval_clean_accuracy"]
    assert best.epsilon == 0.3 and all(row["eval_epsilon"] == 0.3 for row in history)
    assert all(row["eval_seconds"] > 0 for row in history)
    assert "test set" in best.selection
    # the final model is the net as training left it; the best is a separate copy, restored on demand
    final = gloro.evaluate(net, x_test, y_test)
    assert final["vra"] == history[-1]["eval_vra"] and final["vra"] < best.vra
    assert all(tensor.device.type == "cpu" for tensor in best.state_dict.values())
    net.load_state_dict(best.state_dict)
    restored = gloro.evaluate(net, x_test, y_test)
    assert (restored["vra"], restored["clean_accuracy"]) == (best.vra, best.clean_accuracy)


def test_eval_at_another_epsilon_and_argument_checks(digits):
    (x, y), (x_test, y_test) = digits
    recipe = gloro.TrainingRecipe(epochs=1, batch_size=256)
    history = gloro.train(
        dense_net(), x, y, recipe, eval_images=x_test, eval_labels=y_test, eval_epsilon=0.1, progress=False
    )
    assert history[0]["eval_epsilon"] == 0.1 and history.best.epsilon == 0.1
    with pytest.raises(ValueError, match="together"):
        gloro.train(dense_net(), x, y, recipe, eval_images=x_test, progress=False)


def test_evaluating_every_k_epochs_certifies_those_and_the_last_and_says_so_in_the_others(digits, tmp_path):
    (x, y), (x_test, y_test) = digits
    recipe = gloro.TrainingRecipe(epochs=7, batch_size=64, learning_rate=lambda epoch: 3e-3 if epoch < 4 else 0.5)
    every = gloro.train(dense_net(1), x, y, recipe, eval_images=x_test, eval_labels=y_test, progress=False)
    sparse = gloro.train(
        dense_net(1), x, y, recipe, eval_images=x_test, eval_labels=y_test, eval_every=3, progress=False
    )
    evaluated = [row["epoch"] for row in sparse if row["eval_vra"] is not None]
    assert evaluated == [2, 5, 6]  # every third epoch, and the last
    for row, full in zip(sparse, every, strict=True):
        assert row.keys() == full.keys()  # one CSV header for every row
        assert row["loss"] == full["loss"]  # monitoring never changes training
        if row["epoch"] in evaluated:
            assert row["eval_vra"] == full["eval_vra"] and row["eval_bounds"] == full["eval_bounds"]
        else:
            assert row["eval_bounds"] == "not evaluated (every 3 epochs)"
            assert all(row[key] is None for key in ("eval_vra", "eval_seconds", "eval_points"))
    assert sparse.best.epoch == max(evaluated, key=lambda epoch: (every[epoch]["eval_vra"], -epoch))
    write_csv(tmp_path / "history.csv", list(sparse))
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 8
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="eval_every"):
            gloro.train(dense_net(), x, y, recipe, eval_images=x_test, eval_labels=y_test, eval_every=bad)


def test_augmentation_is_applied_to_training_batches_only(digits, monkeypatch):
    (x, y), (x_test, y_test) = digits
    calls = []

    def spy(images, generator):
        calls.append((tuple(images.shape), images.device.type, generator))
        return images.flip(-1)

    monkeypatch.setitem(augment.AUGMENTATIONS, "spy", spy)
    recipe = gloro.TrainingRecipe(epochs=2, batch_size=128, augmentation="spy")
    gloro.train(dense_net(), x, y, recipe, eval_images=x_test, eval_labels=y_test, progress=False)
    assert len(calls) == 2 * math.ceil(len(y) / 128)  # every training batch, and no evaluation batch
    assert sum(shape[0] for shape, _, _ in calls) == 2 * len(y)
    assert all(device == "cpu" and isinstance(generator, torch.Generator) for _, device, generator in calls)
    assert len({id(generator) for _, _, generator in calls}) == 1  # the recipe's one seeded generator


def test_augmentation_is_seeded_and_changes_training(digits):
    (x, y), _ = digits

    def run(seed: int, name: str):
        net = dense_net()
        recipe = gloro.TrainingRecipe(epochs=2, batch_size=128, seed=seed, augmentation=name)
        history = gloro.train(net, x, y, recipe, progress=False)
        return [tuple(row[key] for key in DETERMINISTIC) for row in history], net.state_dict()

    first, weights = run(0, "cifar10")
    again, weights_again = run(0, "cifar10")
    assert first == again
    assert all(torch.equal(weights[key], weights_again[key]) for key in weights)
    assert run(1, "cifar10")[0] != first
    assert run(0, "none")[0] != first


def test_recipes_check_their_augmentation(digits):
    with pytest.raises(ValueError, match="unknown augmentation 'flip'; known: none"):
        gloro.TrainingRecipe(epochs=1, augmentation="flip")
    net = gloro.GloroNet(nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)), 0.3)
    (x, y), _ = digits
    with pytest.raises(ValueError, match=r"needs image batches \(N, C, H, W\)"):
        gloro.train(net, x.flatten(1), y, gloro.TrainingRecipe(epochs=1, augmentation="cifar10"), progress=False)


def test_a_killed_run_resumes_from_its_scratch_file_and_matches_an_uninterrupted_one(tmp_path):
    x, y = load_digits("train")
    x, y = x[:256], y[:256]
    recipe = gloro.TrainingRecipe(epochs=4, batch_size=64, seed=3)

    def fresh() -> gloro.GloroNet:
        return gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=3), 0.3, power_iterations=2, seed=3)

    reference = fresh()
    expected = gloro.train(reference, x, y, recipe, progress=False)

    class KilledError(Exception):
        pass

    def kill_after_second_epoch(row):
        if row["epoch"] == 1:
            raise KilledError

    scratch = tmp_path / "scratch.pt"
    with pytest.raises(KilledError):
        gloro.train(fresh(), x, y, recipe, progress=False, scratch=scratch, on_epoch=kill_after_second_epoch)
    resumed_net = fresh()
    resumed = gloro.train(resumed_net, x, y, recipe, progress=False, scratch=scratch)
    assert [row["epoch"] for row in resumed] == [0, 1, 2, 3]
    assert [row["loss"] for row in resumed] == pytest.approx([row["loss"] for row in expected], rel=1e-5)
    for key, value in reference.state_dict().items():
        assert torch.allclose(value, resumed_net.state_dict()[key], atol=1e-5), key
    other = gloro.TrainingRecipe(epochs=4, batch_size=32, seed=3)
    with pytest.warns(UserWarning, match="another recipe"):
        restarted = gloro.train(fresh(), x, y, other, progress=False, scratch=scratch)
    assert len(restarted) == 4


def test_per_epoch_evaluation_uses_sound_circulant_bounds_no_tighter_than_the_final_ones(digits):
    """The per-epoch K of a conv net takes circulant bounds (sound, cheaper): each epoch's eval VRA is then
    a conservative monitor, never above what the final certification with explicit operators gives."""
    (x, y), (x_test, y_test) = digits
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=0), epsilon=0.3)
    recipe = gloro.TrainingRecipe(epochs=2, batch_size=64)
    history = gloro.train(net, x, y, recipe, eval_images=x_test, eval_labels=y_test, progress=False)
    assert all(row["eval_bounds"] == "circulant conv bounds" for row in history)
    fast, tight = net.sound_constants(fast=True), net.sound_constants()
    assert fast.sub_lipschitz >= tight.sub_lipschitz
    assert gloro.evaluate(net, x_test, y_test)["vra"] >= history[-1]["eval_vra"] > 0
