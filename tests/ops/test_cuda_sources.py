"""Compile check of cuda/ with nvcc (no GPU needed): every kernel source must compile against torch's headers."""
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "cuda").glob("*.cu"))


def test_every_kernel_source_has_a_header_and_bindings():
    """Each ``.cu`` has its ``.cuh``; every host entry point (``*_cuda`` at the start of a line, whatever it returns)
    is bound in ext.cpp, and every binding is called by the autograd wrappers of kinfield/ops/_cuda.py."""
    ext = (ROOT / "cuda" / "ext.cpp").read_text()
    wrappers = (ROOT / "kinfield" / "ops" / "_cuda.py").read_text()
    entry_points = []
    for cu in SOURCES:
        assert cu.with_suffix(".cuh").is_file(), f"{cu.name} has no {cu.stem}.cuh"
        entry_points += re.findall(r"^[A-Za-z_:<>]+(?:<[A-Za-z_:]+>)? (\w+_cuda)\(", cu.read_text(), flags=re.M)
    assert {"hash_grid_fwd_cuda", "hash_grid_bwd_cuda", "composite_blended_fwd_cuda",
            "composite_blended_bwd_cuda"} <= set(entry_points)
    bound = dict(re.findall(r'm\.def\("(\w+)", &(\w+)', ext))
    assert sorted(bound.values()) == sorted(entry_points), "ext.cpp binds exactly the entry points of cuda/*.cu"
    for name in bound:
        assert f"_ext().{name}(" in wrappers, f"binding {name} is not used by kinfield/ops/_cuda.py"


# sm_75 (nvcc's default) and sm_90 (H100 / H200: the vector atomics of hash_grid.cuh's atomic_add_row), in one call
ARCHES = ["-gencode", "arch=compute_75,code=sm_75", "-gencode", "arch=compute_90,code=sm_90"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("source", SOURCES, ids=[p.name for p in SOURCES])
def test_nvcc_compiles(source, tmp_path):
    from torch.utils.cpp_extension import include_paths

    cmd = ["nvcc", "-c", str(source), "-o", str(tmp_path / "out.o"), "-std=c++17",
           "-I" + str(ROOT / "cuda" / "include"), "-I" + sysconfig.get_paths()["include"],
           "-DTORCH_EXTENSION_NAME=kinfield_C", "-diag-suppress", "3306"] + ARCHES
    cmd += ["-I" + p for p in include_paths()]
    # A CPU build of torch ships c10's CUDA headers but not the one cmake generates for CUDA builds
    # (cuda_cmake_macros.h, a single define); supply it so the kernels compile-check without a CUDA torch.
    generated = Path(include_paths()[0]) / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    if not generated.exists():
        stub = tmp_path / "stub" / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
        stub.parent.mkdir(parents=True)
        stub.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        cmd.append("-I" + str(tmp_path / "stub"))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
