"""Checkpoints: exact round trips of a GloroNet, and clear errors for corrupt, foreign or mismatched files."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

import gloro
import gloro.checkpoint as checkpoint
from gloro.checkpoint import CheckpointError

SHAPE = (1, 8, 8)
METADATA = {"dataset": "digits", "epochs": 3, "vra": 0.5, "notes": ["a", "b"]}


def test_save_then_load_out_of_the_box(tmp_path):
    net = gloro.GloroNet(gloro.create_model("2C2F", SHAPE, 10), 0.45)
    gloro.save(net, tmp_path / "m.pt", input_divisor=1.0)
    assert gloro.load(tmp_path / "m.pt").epsilon == 0.45


def iterates(net: gloro.GloroNet) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in net.state_dict().items() if key.endswith("iterate")}


@pytest.fixture
def trained_net(trained_once) -> gloro.GloroNet:
    """A private copy of the trained net (tests may train it further)."""
    net = copy.deepcopy(trained_once)
    assert net.layers[0] is net.model[0] and net.head is net.model[-1]  # layers still alias the copied model
    assert net.model[0] is not trained_once.model[0]
    return net


@pytest.fixture(scope="module")
def trained_once() -> gloro.GloroNet:
    torch.manual_seed(0)
    net = gloro.GloroNet(gloro.create_model("2C2F", SHAPE, 10), 0.45, eval_epsilon=0.3, power_iterations=3)
    start = iterates(net)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, *SHAPE))
        # Move the weights too, so that a freshly built model would differ from the saved one.
        for parameter in net.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
        net(torch.rand(4, *SHAPE))
    moved = iterates(net)
    assert start.keys() == moved.keys() and len(moved) == 3  # two convs and the hidden dense layer (not the head)
    assert all(not torch.equal(start[key], moved[key]) for key in start)
    return net.eval()


@pytest.fixture
def saved(trained_net, tmp_path):
    path = tmp_path / "m.pt"
    assert gloro.save(trained_net, path, input_divisor=16.0, metadata=METADATA) == path
    return path


def test_round_trip_is_exact(trained_net, saved):
    loaded = gloro.load(saved)
    assert isinstance(loaded, gloro.GloroNet)
    assert not loaded.training
    x = torch.rand(16, *SHAPE, generator=torch.Generator().manual_seed(1))

    with torch.no_grad():
        assert torch.equal(loaded(x), trained_net(x))
        assert torch.equal(loaded.predict_clean(x), trained_net.predict_clean(x))
    mine, theirs = trained_net.certify(x), loaded.certify(x)
    assert torch.equal(mine.predictions, theirs.predictions)
    assert torch.equal(mine.certified, theirs.certified)
    assert torch.equal(mine.radius, theirs.radius)

    assert iterates(loaded).keys() == iterates(trained_net).keys()
    assert all(torch.equal(iterates(loaded)[k], v) for k, v in iterates(trained_net).items())
    mine_state, theirs_state = trained_net.state_dict(), loaded.state_dict()
    assert mine_state.keys() == theirs_state.keys()
    assert all(torch.equal(mine_state[k], theirs_state[k]) for k in mine_state)


def test_round_trip_restores_settings_and_metadata(trained_net, saved):
    loaded = gloro.load(saved)
    assert loaded.epsilon == 0.45
    assert loaded.eval_epsilon == 0.3
    assert loaded.power_iterations == 3
    assert loaded.input_shape == SHAPE
    assert loaded.architecture == trained_net.architecture
    assert loaded.metadata == {"input_divisor": 16.0, **METADATA}


def test_loaded_iterates_continue_from_the_saved_ones(trained_net, saved):
    """Training resumes from the stored iterates: one more training forward moves both nets identically."""
    loaded = gloro.load(saved)
    x = torch.rand(4, *SHAPE)
    with torch.no_grad():
        trained_net.train()(x)
        loaded.train()(x)
    assert all(torch.equal(iterates(loaded)[k], v) for k, v in iterates(trained_net).items())


def test_save_leaves_no_temporary_files(trained_net, tmp_path):
    gloro.save(trained_net, tmp_path / "m.pt", input_divisor=16.0)
    gloro.save(trained_net, tmp_path / "m.pt", input_divisor=16.0)  # overwrite
    gloro.save(trained_net, tmp_path / "sub" / "n.pt", input_divisor=1.0)  # creates the folder
    assert sorted(os.listdir(tmp_path)) == ["m.pt", "sub"]
    assert os.listdir(tmp_path / "sub") == ["n.pt"]


def test_failed_save_keeps_the_existing_checkpoint(trained_net, saved, monkeypatch):
    good = saved.read_bytes()

    def broken_save(payload, target, *args, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"PK\x03\x04 half-written")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        gloro.save(trained_net, saved, input_divisor=255.0)
    monkeypatch.undo()
    assert saved.read_bytes() == good
    assert os.listdir(saved.parent) == [saved.name]
    assert gloro.load(saved).metadata["input_divisor"] == 16.0


def test_truncated_file_raises_checkpoint_error(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        gloro.load(saved)
    assert str(saved) in str(error.value)


def test_random_bytes_raise_checkpoint_error(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(
        torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).byte().numpy().tobytes()
    )
    with pytest.raises(CheckpointError) as error:
        gloro.load(path)
    assert str(path) in str(error.value)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


@pytest.mark.parametrize("payload", [{"state_dict": {}}, {"format": "something else"}, [1, 2, 3]])
def test_foreign_torch_file_raises_checkpoint_error(tmp_path, payload):
    path = tmp_path / "foreign.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="gloro.save") as error:
        gloro.load(path)
    assert str(path) in str(error.value)


def test_missing_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here.pt"):
        gloro.load(tmp_path / "nothing-here.pt")


def test_a_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError):
        gloro.load(tmp_path)


def tamper(path, change) -> None:
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


def test_wrong_shaped_tensor_raises_checkpoint_error(saved):
    def change(payload):
        key = "model.0.weight"
        assert key in payload["state_dict"]
        payload["state_dict"][key] = torch.zeros(17, 1, 4, 4)

    tamper(saved, change)
    with pytest.raises(CheckpointError, match="model.0.weight") as error:
        gloro.load(saved)
    assert str(saved) in str(error.value)


def test_missing_state_dict_key_raises_checkpoint_error(saved):
    tamper(saved, lambda payload: payload["state_dict"].pop("bounds.0.iterate"))
    with pytest.raises(CheckpointError, match="bounds.0.iterate"):
        gloro.load(saved)


def test_unknown_architecture_raises_checkpoint_error(saved):
    tamper(saved, lambda payload: payload["architecture"].update(name="3C3F"))
    with pytest.raises(CheckpointError, match="3C3F"):
        gloro.load(saved)


def test_tampered_untouched_file_still_loads(saved):
    """The tampering helper itself keeps a good file good (so the failures above come from the changes)."""
    tamper(saved, lambda payload: None)
    assert gloro.load(saved).epsilon == 0.45


@pytest.mark.parametrize("key", ["input_divisor", "metadata"])
def test_missing_top_level_field_raises_checkpoint_error(saved, key):
    tamper(saved, lambda payload: payload.pop(key))
    with pytest.raises(CheckpointError):
        gloro.load(saved)


def test_input_divisor_argument_wins_over_metadata(trained_net, tmp_path):
    path = tmp_path / "m.pt"
    gloro.save(trained_net, path, input_divisor=255.0)
    loaded = gloro.load(path)
    gloro.save(loaded, path, input_divisor=1.0, metadata=loaded.metadata)
    assert gloro.load(path).metadata["input_divisor"] == 1.0


def test_saving_a_hand_built_model_raises(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    net = gloro.GloroNet(model, 0.3, input_shape=SHAPE)
    with pytest.raises(ValueError, match="create_model"):
        gloro.save(net, tmp_path / "hand.pt", input_divisor=1.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("divisor", [0.0, -1.0, float("nan")])
def test_save_rejects_a_bad_input_divisor(trained_net, tmp_path, divisor):
    with pytest.raises(ValueError, match="input_divisor"):
        gloro.save(trained_net, tmp_path / "m.pt", input_divisor=divisor)
    assert list(tmp_path.iterdir()) == []
