"""The CPU's hot paths compiled from C, built on first use: the power iteration (`power_iteration.c`) for
float32 weights, the certificate margin (`margin.c`) for float32 logits, and the check that frozen weights
are unchanged (`unchanged.c`).

At batch size 1 a PyTorch op costs more in dispatch than in arithmetic, so on the CPU the compiled loop
often advances an iterate faster than the PyTorch loops in `lipschitz.py`; where it does is measured on each
machine (`power_path.py`). Likewise one call certifies a batch where `margin.certify_logits` takes eight
small ops. The PyTorch code computes the same numbers and remains the path on GPUs, in other precisions, and
wherever no C compiler is found. The library is built with $CC (else `cc`) for this machine's processor
(-march=native, or the target that $GLORO_MARCH names, e.g. x86-64-v3 for AVX2 without AVX-512), in about
a second, into the data cache folder (~/.cache/gloro-bench) under a name keyed by the sources, the compiler,
the flags and the processor, so a home folder shared by different machines never loads a build made for
another.
GLORO_NATIVE=0 turns it off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

SOURCES = tuple(Path(__file__).with_name(name) for name in ("power_iteration.c", "margin.c", "unchanged.c"))
# gnu11 rather than c11: the ISO modes stop the compiler from fusing a·b + c into one multiply-add
FLAGS = ("-O3", "-std=gnu11", "-shared", "-fPIC")
POINTER, INT = ctypes.c_void_p, ctypes.c_int64
CONV_ARGUMENTS = (POINTER,) * 4 + (INT, INT, POINTER, INT, POINTER, INT, INT, INT, INT, INT)
SIGNATURES = {  # argument types of the library's entry points (see the C sources)
    "gloro_linear_advance": (POINTER, POINTER, POINTER, INT, INT, INT, INT),
    "gloro_conv_advance": CONV_ARGUMENTS,
    "gloro_certify": (POINTER, INT, INT, POINTER, POINTER, ctypes.c_double, POINTER, POINTER, POINTER),
    "gloro_unchanged": (POINTER, POINTER, POINTER, INT),
}


def cache_dir() -> Path:
    """Where built libraries are kept: the folder of the data caches (~/.cache/gloro-bench, or $XDG_CACHE_HOME)."""
    from gloro.data.prepare import default_cache_dir  # imported here: the data modules are not needed until now

    return default_cache_dir()


@functools.cache
def cpuinfo_lines() -> tuple[str, ...]:
    """The lines of /proc/cpuinfo, read once per process (none where the file does not exist)."""
    try:
        return tuple(Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        return ()


def processor() -> str:
    """What -march=native compiles for: the CPU's model and instruction-set flags."""
    lines = cpuinfo_lines()
    if not lines:
        return f"{platform.machine()} {platform.processor()}"
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(dict.fromkeys(line for line in lines if line.startswith(wanted)))


def flags() -> tuple[str, ...]:
    """The compiler flags: FLAGS and the target processor, this one's unless $GLORO_MARCH names another."""
    return (*FLAGS, f"-march={os.environ.get('GLORO_MARCH') or 'native'}")


def build() -> Path:
    """Compile the library unless a build for these sources, compiler, flags and processor exists; its path."""
    compiler = os.environ.get("CC") or "cc"
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True, timeout=60).stdout
    key = "\0".join((*(source.read_text() for source in SOURCES), compiler, version, " ".join(flags()), processor()))
    target = cache_dir() / f"gloro-native-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, partial = tempfile.mkstemp(dir=target.parent, prefix=".building-", suffix=".so")
    os.close(descriptor)
    try:
        command = [compiler, *flags(), "-o", partial, *map(str, SOURCES), "-lm"]
        subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
        os.replace(partial, target)  # atomic: concurrent jobs each build, and one of the identical files wins
    finally:
        Path(partial).unlink(missing_ok=True)
    return target


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled library, or None (turned off, or it could not be built: a warning says why)."""
    if os.environ.get("GLORO_NATIVE", "1") == "0":
        return None
    try:
        lib = ctypes.CDLL(str(build()))
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", None) or error
        warnings.warn(
            f"gloro: could not build the compiled power iteration and margin ({str(detail).strip()[:500]}); "
            "using the PyTorch code, which gives the same numbers more slowly on the CPU. Install a C compiler "
            "(or set CC) to build them, or set GLORO_NATIVE=0 to silence this warning.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    for name, arguments in SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = arguments, INT
    return lib


def runs(weight: torch.Tensor, iterate: torch.Tensor) -> bool:
    """Whether the compiled loop applies: float32 weight and iterate on the CPU, and the library built."""
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and iterate.dtype == torch.float32
        and library() is not None
    )


def store_direction(status: int, direction: torch.Tensor, iterate: torch.Tensor) -> None:
    """Store the new unit direction in `iterate` when one was written (status 1); see power_iteration.c."""
    if status < 0:
        raise MemoryError("the compiled power iteration could not allocate its work space")
    if status:
        iterate.copy_(direction)


def linear_advance(iterate: torch.Tensor, weight: torch.Tensor, iterations: int, rescale_every: int) -> None:
    """`iterations` steps of x ← WᵀWx / ‖WᵀWx‖ on `iterate` (in place) for a Linear weight W."""
    start, w = iterate.contiguous(), weight.contiguous()
    direction = torch.empty(iterate.shape, dtype=torch.float32)
    rows, cols = w.shape
    status = library().gloro_linear_advance(
        start.data_ptr(), direction.data_ptr(), w.data_ptr(), rows, cols, iterations, rescale_every
    )
    store_direction(status, direction, iterate)


def conv_advance(
    iterate: torch.Tensor,
    weight: torch.Tensor,
    columns: torch.Tensor,
    fold: torch.Tensor,
    through_gram: bool,
    iterations: int,
    rescale_every: int,
) -> torch.Tensor | None:
    """`iterations` steps of x ← AᵀAx / ‖AᵀAx‖ on `iterate` (in place) for a conv given by `native_indices`.

    Returns u xᵀ in the weight's shape (u = Ax/‖Ax‖ at the new x): the gradient of ‖Ax‖ in the weight, whose
    inner product with the weight is ‖Ax‖; None where the iterate had no direction to move to.
    """
    start, w = iterate.contiguous(), weight.contiguous()
    direction = torch.empty(iterate.shape, dtype=torch.float32)
    gradient = torch.empty(weight.shape, dtype=torch.float32)
    positions, patch = columns.shape
    status = library().gloro_conv_advance(
        start.data_ptr(),
        direction.data_ptr(),
        gradient.data_ptr(),
        w.data_ptr(),
        len(w),
        patch,
        columns.data_ptr(),
        positions,
        fold.data_ptr(),
        len(fold),
        iterate.numel(),
        through_gram,
        iterations,
        rescale_every,
    )
    store_direction(status, direction, iterate)
    return gradient if status else None


def native_indices(columns: torch.Tensor, fold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`im2col_indices`' gathers in the layout the C loop reads: columns as (positions × patch) int32, and
    fold pointing into that layout (its padding at positions·patch, the zero after the last entry)."""
    patch, positions = columns.shape
    entries = patch * positions
    remapped = torch.where(fold < entries, (fold % positions) * patch + fold // positions, entries)
    return columns.t().contiguous().int(), remapped.int()


def certify(
    logits: torch.Tensor, margin_lipschitz: torch.Tensor, offsets: torch.Tensor, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Predictions, certified mask and radii as `margin.certify_logits` defines them, for float32 logits and
    float64 m×m K_ij and O_ij on the CPU; None where this does not apply (other dtypes or devices, or no
    library), so the caller computes them with PyTorch."""
    plan = certify_plan(margin_lipschitz, offsets, copy=False)
    return None if plan is None else plan(logits, epsilon)


def certify_plan(margin_lipschitz: torch.Tensor, offsets: torch.Tensor, copy: bool = True):
    """`certify` with K_ij and O_ij checked once: a function of (logits, ε) giving the same result (None for
    logits it does not take), or None where K_ij and O_ij do not apply. A frozen net keeps one, since after
    a large forward pass every check of a tensor's attributes costs microseconds. With `copy` it reads
    private copies, so that nothing outside can resize or overwrite what the compiled loop reads."""
    classes = margin_lipschitz.shape[0] if margin_lipschitz.dim() == 2 else -1
    if not (
        margin_lipschitz.shape == offsets.shape == (classes, classes)
        and margin_lipschitz.device.type == offsets.device.type == "cpu"
        and margin_lipschitz.dtype == offsets.dtype == torch.float64
        and library() is not None
    ):
        return None
    k, o = (t.detach().clone() if copy else t.detach().contiguous() for t in (margin_lipschitz, offsets))
    k_pointer, o_pointer, compiled = k.data_ptr(), o.data_ptr(), library().gloro_certify
    cpu, float32 = torch.device("cpu"), torch.float32

    def run(logits: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        if logits.dtype != float32 or logits.device != cpu or logits.dim() != 2 or logits.shape[1] != classes:
            return None
        y = logits if logits.is_contiguous() else logits.contiguous()  # data_ptr needs no detach
        count = len(y)
        top = torch.empty(count, dtype=torch.int64)
        radius = torch.empty(count, dtype=torch.float64)
        certified = torch.empty(count, dtype=torch.bool)
        status = compiled(
            y.data_ptr(), count, classes, k_pointer, o_pointer, epsilon, top.data_ptr(), radius.data_ptr(),
            certified.data_ptr(),
        )  # fmt: skip
        if status:
            raise ValueError(f"certify needs logits with at least one class, got {classes}")
        return top, certified, radius

    run.tensors = (k, o)  # kept alive with the function
    return run


def unchanged_plan(current: list[torch.Tensor], frozen: list[torch.Tensor]):
    """A function that says whether each CPU tensor in `current` still has the bytes of its copy in `frozen`
    (its storage must stay where it is: the pointers are taken now); None where this does not apply (no
    library, or a pair not laid out alike in one dense block on the CPU)."""

    def dense(t: torch.Tensor) -> bool:
        if t.device.type != "cpu":
            return False
        return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))

    same_layout = all(p.stride() == q.stride() and p.dtype == q.dtype for p, q in zip(current, frozen))
    if library() is None or not same_layout or not all(dense(t) for t in (*current, *frozen)):
        return None
    count = len(current)
    pointers = (ctypes.c_void_p * count)(*(t.data_ptr() for t in current))
    copies = (ctypes.c_void_p * count)(*(t.data_ptr() for t in frozen))
    sizes = (ctypes.c_int64 * count)(*(t.numel() * t.element_size() for t in current))
    compare = library().gloro_unchanged
    return lambda: bool(compare(pointers, copies, sizes, count))
