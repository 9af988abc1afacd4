"""Augmentations: shapes and ranges, seeding, and each step against an independent reference."""

from __future__ import annotations

import colorsys
import math
import re

import numpy as np
import pytest
import torch
from scipy import ndimage

from gloro.data import augment_cifar10, augment_tiny_imagenet, augmentation, augmentations
from gloro.data.augment import adjust_contrast, adjust_saturation, crop_and_resize, keras_affine, rotate

OFF = {"flip": False, "saturation": None, "contrast": None, "rotation": None, "crop_width": None, "noise": None}


def batch(shape=(8, 3, 32, 32), seed=0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_names_and_unknown_name():
    assert augmentations()[0] == "none" and {"cifar10", "tiny-imagenet"} <= set(augmentations())
    known = ", ".join(augmentations())  # the error lists every registered one, whatever a plugin added
    with pytest.raises(ValueError, match=re.escape(f"unknown augmentation 'mixup'; known: {known}")):
        augmentation("mixup")


def test_none_is_the_identity():
    x = batch()
    assert torch.equal(augmentation("none")(x, seeded(0)), x)


@pytest.mark.parametrize(("name", "shape"), [("cifar10", (16, 3, 32, 32)), ("tiny-imagenet", (6, 3, 64, 64))])
def test_augmentations_keep_shape_and_range_and_follow_the_seed(name, shape):
    x = batch(shape)
    before = x.clone()
    augment = augmentation(name)
    first, again, other = augment(x, seeded(1)), augment(x, seeded(1)), augment(x, seeded(2))
    assert first.shape == x.shape and first.dtype == x.dtype
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert torch.equal(first, again) and not torch.allclose(first, other)
    assert not torch.allclose(first, x) and torch.equal(x, before)  # changed the images, not the input


def test_cifar_flip_mirrors_some_images_and_leaves_the_others():
    x = batch((64, 3, 32, 32))
    out = augment_cifar10(x, seeded(0), **{**OFF, "flip": True})
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 16 < sum(mirrored) < 48


@pytest.mark.parametrize("factor", [0.5, 0.83, 1.2, 3.0])
def test_saturation_matches_hsv_arithmetic(factor):
    x = batch((2, 3, 5, 5), seed=4)
    out = adjust_saturation(x, factor)
    for b, i, j in [(0, 0, 0), (0, 2, 3), (1, 4, 4), (1, 1, 2)]:
        hue, saturation, value = colorsys.rgb_to_hsv(*x[b, :, i, j].tolist())
        expected = colorsys.hsv_to_rgb(hue, min(saturation * factor, 1.0), value)
        assert out[b, :, i, j].tolist() == pytest.approx(expected, abs=1e-6)


def test_saturation_leaves_grey_pixels_alone():
    grey = batch((2, 1, 6, 6)).expand(2, 3, 6, 6)
    assert torch.allclose(adjust_saturation(grey, 1.2), grey) and torch.allclose(adjust_saturation(grey, 0.5), grey)


def test_contrast_scales_deviations_from_each_channels_mean():
    x = batch((3, 3, 8, 8))
    out = adjust_contrast(x, 0.8)
    mean = x.mean(dim=(-2, -1), keepdim=True)
    assert torch.allclose(out.mean(dim=(-2, -1), keepdim=True), mean, atol=1e-6)
    assert torch.allclose(out - mean, 0.8 * (x - mean), atol=1e-6)


def test_rotation_by_a_quarter_turn_is_rot90_and_by_zero_the_identity():
    x = batch((2, 3, 9, 9))
    quarter = torch.full((2,), math.pi / 2)
    assert torch.equal(rotate(x, quarter), torch.rot90(x, 1, dims=(-2, -1)))
    assert torch.equal(rotate(x, torch.zeros(2)), x)


def test_rotation_fills_the_corners_with_zeros():
    out = rotate(torch.ones(1, 1, 16, 16), torch.tensor([math.pi / 4]))
    assert out[0, 0, 0, 0] == 0.0 and out[0, 0, 8, 8] == 1.0


def test_crop_and_resize_samples_the_box_like_tensorflow():
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    ramp = (rows + 2 * cols).reshape(1, 1, 32, 32)  # bilinear sampling reproduces a linear ramp exactly
    box = torch.tensor([[0.25, 0.1, 0.75, 0.6]])
    out = crop_and_resize(ramp, box)
    expected = (0.25 * 31 + 0.5 * rows) + 2 * (0.1 * 31 + 0.5 * cols)  # in_y = y1 (H-1) + i (y2-y1) (H-1)/(H-1)
    assert torch.allclose(out[0, 0], expected, atol=1e-4)
    assert torch.allclose(crop_and_resize(ramp, torch.tensor([[0.0, 0.0, 1.0, 1.0]])), ramp, atol=1e-4)


def test_cifar_noise_has_the_stated_deviation():
    x = torch.full((64, 3, 32, 32), 0.5)
    out = augment_cifar10(x, seeded(0), **{**OFF, "noise": 0.01})
    assert abs(float((out - x).std()) - 0.01) < 0.0005 and abs(float((out - x).mean())) < 0.0005


def test_cifar_steps_off_is_the_identity():
    x = batch()
    assert torch.equal(augment_cifar10(x, seeded(0), **OFF), x)


def keras_matrix(theta, tx, ty, shear, zx, zy, height, width) -> np.ndarray:
    """Keras' transform written out on its own: rotation·shift·shear·zoom, about the centre (degrees in)."""
    t, s = np.deg2rad(theta), np.deg2rad(shear)
    rotation = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shearing = np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    ox, oy = height / 2 - 0.5, width / 2 - 0.5
    centre = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]])
    back = np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]])
    return centre @ rotation @ shift @ shearing @ zoom @ back


@pytest.mark.parametrize("flip", [False, True])
def test_keras_affine_matches_scipy_ndimage_as_keras_calls_it(flip):
    """Keras applies scipy.ndimage.affine_transform(order=1, mode='nearest') per channel, then the flip."""
    x = batch((3, 3, 20, 24), seed=5).double()
    params = [(17.0, 3.2, -4.1, 0.1, 0.93, 1.08), (-8.0, -2.0, 4.8, -0.07, 1.1, 0.9), (0.0, 0.0, 0.0, 0.0, 1.0, 1.0)]
    columns = [torch.tensor(column, dtype=torch.float64) for column in zip(*params)]
    out = keras_affine(x, *columns, flip=torch.full((3,), flip))
    for b, p in enumerate(params):
        matrix = keras_matrix(*p, 20, 24)
        for c in range(3):
            reference = ndimage.affine_transform(
                x[b, c].numpy(), matrix[:2, :2], matrix[:2, 2], order=1, mode="nearest"
            )
            if flip:
                reference = reference[:, ::-1]
            assert np.allclose(out[b, c].numpy(), reference, atol=2e-5)


def test_tiny_imagenet_with_no_ranges_is_the_identity():
    x = batch((4, 3, 64, 64))
    out = augment_tiny_imagenet(x, seeded(0), rotation=0, width_shift=0, height_shift=0, shear=0, zoom=0, flip=False)
    assert torch.allclose(out, x, atol=1e-5)


def test_tiny_imagenet_flip_only_mirrors():
    x = batch((32, 3, 64, 64))
    out = augment_tiny_imagenet(x, seeded(3), rotation=0, width_shift=0, height_shift=0, shear=0, zoom=0)
    mirrored = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, x)]
    kept = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 4 < sum(mirrored) < 28


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", ["cifar10", "tiny-imagenet"])
def test_a_cpu_generator_gives_the_same_augmentation_on_the_gpu(name):
    x = batch((16, 3, 64, 64) if name == "tiny-imagenet" else (16, 3, 32, 32))
    on_cpu = augmentation(name)(x, seeded(7))
    on_gpu = augmentation(name)(x.cuda(), seeded(7))
    assert on_gpu.device.type == "cuda"
    assert (on_gpu.cpu() - on_cpu).abs().max() < 1e-4 or (on_gpu.cpu() != on_cpu).float().mean() < 1e-3
