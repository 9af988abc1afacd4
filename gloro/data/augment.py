"""Training-time augmentations per recipe: batched, on the images' device, seeded by an explicit generator.

Each augmentation maps a float batch (B, C, H, W) in [0, 1] and a `torch.Generator` to a batch of the same
shape. Random draws are made on the generator's device and moved to the images' device, so a CPU generator
with a given seed gives the same draws whether training runs on CPU or GPU. Geometric operations use one
`grid_sample` per operation with pixel-centre coordinates (align_corners=True), as TF and SciPy do.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(generator: torch.Generator, size: tuple[int, ...], low: float, high: float, device) -> torch.Tensor:
    draw = torch.rand(size, generator=generator, device=generator.device)
    return draw.mul_(high - low).add_(low).to(device)


def _per_image(value: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """A scalar or a (B,) tensor as (B or 1, 1, 1, 1), for broadcasting over a batch."""
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    return value.reshape(-1, 1, 1, 1)


def _warp(x: torch.Tensor, matrix: torch.Tensor, mode: str, padding: str) -> torch.Tensor:
    """Sample each image at input (row, col) = matrix[b] @ (row, col, 1) of each output pixel.

    `matrix` is (B, 2, 3) in pixel-centre coordinates, mapping output to input (as scipy.ndimage's
    affine_transform and TF's projective transforms do).
    """
    batch, _, height, width = x.shape
    rows = torch.arange(height, dtype=torch.float32, device=x.device)
    cols = torch.arange(width, dtype=torch.float32, device=x.device)
    row, col = torch.meshgrid(rows, cols, indexing="ij")
    points = torch.stack([row, col, torch.ones_like(row)], dim=-1).reshape(1, height * width, 3)
    source = points @ matrix.to(device=x.device, dtype=torch.float32).transpose(1, 2)
    grid = torch.stack(
        [source[..., 1] * (2.0 / (width - 1)) - 1.0, source[..., 0] * (2.0 / (height - 1)) - 1.0], dim=-1
    ).reshape(batch, height, width, 2)
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode=padding, align_corners=True)


def flip_horizontal(x: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images whose flag is True."""
    return torch.where(flags.to(x.device).reshape(-1, 1, 1, 1), x.flip(-1), x)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Scale HSV saturation by `factor` (clipped at 1), keeping hue and value: tf.image.adjust_saturation.

    With value V = max channel and S = (V − min)/V, keeping hue and value makes every channel
    c' = V − f·(V − c), where f = min(factor, 1/S) applies the clip at S = 1.
    """
    value = x.amax(dim=1, keepdim=True)
    chroma = value - x.amin(dim=1, keepdim=True)
    limit = torch.where(chroma > 0, value / chroma.clamp_min(torch.finfo(x.dtype).tiny), torch.inf)
    effective = torch.minimum(_per_image(factor, x).expand_as(limit), limit)
    return value - effective * (value - x)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """(x − mean)·factor + mean, with the mean of each channel of each image: tf.image.adjust_contrast."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return (x - mean) * _per_image(factor, x) + mean


def rotate(x: torch.Tensor, angles: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """Rotate each image counterclockwise by `angles` (radians) about its centre, zeros outside.

    tfa.image.rotate with its defaults (nearest neighbour, constant 0). An angle of π/2 equals
    torch.rot90(x, 1, dims=(-2, -1)).
    """
    height, width = x.shape[-2:]
    cos, sin = angles.cos().float(), angles.sin().float()
    cy, cx = (height - 1) / 2, (width - 1) / 2
    matrix = torch.zeros(len(angles), 2, 3, device=angles.device)
    matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 0, 2] = cos, sin, cy - cos * cy - sin * cx
    matrix[:, 1, 0], matrix[:, 1, 1], matrix[:, 1, 2] = -sin, cos, cx + sin * cy - cos * cx
    return _warp(x, matrix, mode, "zeros")


def crop_and_resize(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Crop each image to its box (y1, x1, y2, x2) in [0, 1] and resize it back, bilinear: tf.image.crop_and_resize."""
    height, width = x.shape[-2:]
    boxes = boxes.float()
    matrix = torch.zeros(len(boxes), 2, 3, device=boxes.device)
    matrix[:, 0, 0], matrix[:, 0, 2] = boxes[:, 2] - boxes[:, 0], boxes[:, 0] * (height - 1)
    matrix[:, 1, 1], matrix[:, 1, 2] = boxes[:, 3] - boxes[:, 1], boxes[:, 1] * (width - 1)
    return _warp(x, matrix, "bilinear", "zeros")


def keras_affine(
    x: torch.Tensor,
    theta: torch.Tensor,
    tx: torch.Tensor,
    ty: torch.Tensor,
    shear: torch.Tensor,
    zx: torch.Tensor,
    zy: torch.Tensor,
    flip: torch.Tensor,
) -> torch.Tensor:
    """Keras' ImageDataGenerator.apply_transform on each image, with fill_mode 'nearest' and bilinear sampling.

    theta and shear in degrees; tx (rows) and ty (columns) in pixels; zx, zy zoom factors. The transform
    rotation·shift·shear·zoom is taken about the image centre and maps output pixels to input pixels, as in
    Keras (scipy.ndimage.affine_transform, order 1). The horizontal flip comes last, as in Keras.
    """
    height, width = x.shape[-2:]
    device = x.device
    theta, shear = torch.deg2rad(theta.float()).to(device), torch.deg2rad(shear.float()).to(device)
    tx, ty, zx, zy = (value.float().to(device) for value in (tx, ty, zx, zy))
    batch = len(theta)

    def matrices() -> torch.Tensor:
        return torch.eye(3, device=device).repeat(batch, 1, 1)

    rotation, shift, shearing, zoom = matrices(), matrices(), matrices(), matrices()
    rotation[:, 0, 0], rotation[:, 0, 1] = theta.cos(), -theta.sin()
    rotation[:, 1, 0], rotation[:, 1, 1] = theta.sin(), theta.cos()
    shift[:, 0, 2], shift[:, 1, 2] = tx, ty
    shearing[:, 0, 1], shearing[:, 1, 1] = -shear.sin(), shear.cos()
    zoom[:, 0, 0], zoom[:, 1, 1] = zx, zy
    centre, back = matrices(), matrices()
    centre[:, 0, 2], centre[:, 1, 2] = height / 2 - 0.5, width / 2 - 0.5
    back[:, 0, 2], back[:, 1, 2] = -(height / 2 - 0.5), -(width / 2 - 0.5)
    transform = centre @ rotation @ shift @ shearing @ zoom @ back
    mirror = matrices()
    mirror[:, 1, 1], mirror[:, 1, 2] = -1.0, width - 1.0
    flipped = flip.to(device).reshape(-1, 1, 1)
    transform = torch.where(flipped, transform @ mirror, transform)
    return _warp(x, transform[:, :2], "bilinear", "border")


def no_augmentation(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The identity (MNIST and the test sets are never augmented)."""
    return x


def augment_cifar10(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    flip: bool = True,
    saturation: tuple[float, float] | None = (0.5, 1.2),
    contrast: tuple[float, float] | None = (0.8, 1.2),
    rotation: float | None = 0.157,
    crop_width: tuple[float, float] | None = (0.8, 1.0),
    noise: float | None = 0.01,
) -> torch.Tensor:
    """The paper's CIFAR-10 pipeline, in its order; `None` (or False) switches a step off.

    Random left-right flip; saturation and contrast factors drawn once per batch (tf.image.random_saturation
    and random_contrast draw a scalar); rotation U(−0.157, 0.157) rad per image (nearest, zeros outside);
    a square crop of width U(0.8, 1.0) at a uniform position, resized back (bilinear); Gaussian noise
    σ = 0.01; finally a clamp to [0, 1], the domain on which ε is defined.
    """
    batch, device = len(x), x.device
    if flip:
        x = flip_horizontal(x, _uniform(generator, (batch,), 0.0, 1.0, device) < 0.5)
    if saturation is not None and x.shape[1] == 3:
        x = adjust_saturation(x, _uniform(generator, (), *saturation, device))
    if contrast is not None:
        x = adjust_contrast(x, _uniform(generator, (), *contrast, device))
    if rotation:
        x = rotate(x, _uniform(generator, (batch,), -rotation, rotation, device))
    if crop_width is not None:
        widths = _uniform(generator, (batch, 1), *crop_width, device)
        corners = _uniform(generator, (batch, 2), 0.0, 1.0, device) * (1.0 - widths)
        x = crop_and_resize(x, torch.cat([corners, corners + widths], dim=1))
    if noise:
        draw = torch.randn(x.shape, generator=generator, device=generator.device, dtype=torch.float32)
        x = x + noise * draw.to(device=device, dtype=x.dtype)
    return x.clamp(0.0, 1.0)


def augment_tiny_imagenet(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    rotation: float = 20.0,
    width_shift: float = 0.2,
    height_shift: float = 0.2,
    shear: float = 0.1,
    zoom: float = 0.1,
    flip: bool = True,
) -> torch.Tensor:
    """The paper's Tiny-ImageNet pipeline: Keras ImageDataGenerator(rotation_range=20, width_shift_range=0.2,
    height_shift_range=0.2, horizontal_flip=True, shear_range=0.1, zoom_range=0.1), fill_mode 'nearest'.

    Per image: θ ~ U(±20°); shifts ~ U(±0.2) of the height (rows) and width (columns); shear ~ U(±0.1°)
    (Keras takes shear_range in degrees); zoom factors zx, zy ~ U(0.9, 1.1) independently; flip with p 1/2.
    """
    batch, height, width = len(x), x.shape[-2], x.shape[-1]
    device = x.device
    theta = _uniform(generator, (batch,), -rotation, rotation, device)
    tx = _uniform(generator, (batch,), -height_shift, height_shift, device) * height
    ty = _uniform(generator, (batch,), -width_shift, width_shift, device) * width
    shear_angle = _uniform(generator, (batch,), -shear, shear, device)
    zx, zy = _uniform(generator, (2, batch), 1.0 - zoom, 1.0 + zoom, device)
    flips = _uniform(generator, (batch,), 0.0, 1.0, device) < (0.5 if flip else 0.0)
    return keras_affine(x, theta, tx, ty, shear_angle, zx, zy, flips)


AUGMENTATIONS: dict[str, Augmentation] = {
    "none": no_augmentation,
    "cifar10": augment_cifar10,
    "tiny-imagenet": augment_tiny_imagenet,
}


def augmentations() -> tuple[str, ...]:
    """Names accepted by `augmentation`."""
    return tuple(AUGMENTATIONS)


def augmentation(name: str) -> Augmentation:
    """The augmentation `name` ('none', 'cifar10', 'tiny-imagenet'); an unknown name lists the known ones."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]
