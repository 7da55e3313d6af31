"""The last step of the GPU install (`make install-gpu`, docker/Dockerfile's GPU variant): the environment is the
lock, exactly. Every pin of recipe/gpu/requirements.lock installed at its version, flash-attn at its pin
(recipe/gpu/flash-attn.txt), the project installed, and torch a CUDA build of the lock's CUDA (cuda-toolkit,
torch's own dependency). Exits 1 naming what differs; pip could otherwise leave a floating version in place (a
package installed before, a local wheel folder) without a word.

    python recipe/gpu/check_installed.py [--lock PATH] [--flash-attn PATH]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
from collections.abc import Callable
from pathlib import Path

from packaging.version import Version

HERE = Path(__file__).resolve().parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def read_pins(path: Path) -> dict[str, str]:
    """name (normalised: lower case, runs of -_. as -) -> version of every `name==version` line of a pin file."""
    pins = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    if not pins:
        raise SystemExit(f"check_installed.py: {path} holds no name==version pin")
    return pins


def installed_version(name: str) -> str | None:
    """The installed version of distribution `name`, None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def differences(pins: dict[str, str], version_of: Callable[[str], str | None]) -> list[str]:
    """One line per pin whose installed version differs (or that is missing)."""
    out = []
    for name, want in sorted(pins.items()):
        have = version_of(name)
        if have is None or Version(have) != Version(want):  # 2.11.0+cpu is not 2.11.0
            out.append(f"{name}: pinned {want}, installed {have or 'nothing'}")
    return out


def torch_cuda_difference(toolkit: str) -> str | None:
    """None when the installed torch is a CUDA build of the lock's CUDA major.minor (e.g. 13.0), else why not."""
    import torch

    want = ".".join(toolkit.split(".")[:2])
    if torch.version.cuda is None or not torch.version.cuda.startswith(want):
        return f"torch {torch.__version__} is built for CUDA {torch.version.cuda}, the lock's cuda-toolkit is {toolkit}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Check the environment against the lock and the flash-attn pin; print the verdict; 0 when it matches."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=HERE / "requirements.lock")
    parser.add_argument("--flash-attn", type=Path, default=HERE / "flash-attn.txt")
    args = parser.parse_args(argv)
    pins = read_pins(args.lock)
    extra = read_pins(args.flash_attn)
    problems = differences(pins | extra, installed_version)
    if installed_version("sspo-verl") is None:
        problems.append("sspo-verl: not installed (pip install --no-deps -e .)")
    if "cuda-toolkit" not in pins:
        problems.append(f"{args.lock} pins no cuda-toolkit (torch's CUDA): not a lock of the GPU environment")
    elif not any(p.startswith("torch:") for p in problems):
        problem = torch_cuda_difference(pins["cuda-toolkit"])
        problems += [problem] if problem else []
    if problems:
        print(f"check_installed.py: the environment is not {args.lock}:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    print(f"check_installed.py: {len(pins) + len(extra)} pins as locked; torch {pins.get('torch')} "
          f"for CUDA {pins['cuda-toolkit']}, flash-attn {extra.get('flash-attn')}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
