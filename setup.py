"""Build script for fastlift and its compiled extension ``fastlift._C``.

Install with the torch that is already in the environment::

    pip install --no-build-isolation .

Environment switches:

* ``FASTLIFT_NO_EXTENSION=1`` skips the compiled extension; fastlift then runs on its pure-torch
  (and Triton) paths.
* ``FASTLIFT_CUDA=1`` forces the CUDA sources (``csrc/**/*.cu`` and ``csrc/**/*_cuda.cpp``) into the
  build, ``FASTLIFT_CUDA=0`` keeps them out. By default they are built when the installed torch is a
  CUDA build and nvcc is found.
"""
import glob
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def _extensions():
    if _flag("FASTLIFT_NO_EXTENSION"):
        print("fastlift: FASTLIFT_NO_EXTENSION=1, building without the compiled extension")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        sys.stderr.write(
            "fastlift: torch is not importable in the build environment, so the compiled extension "
            "is skipped. Install torch first and use `pip install --no-build-isolation .`\n"
        )
        return [], {}

    cpp = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    cu = sorted(glob.glob("csrc/**/*.cu", recursive=True))
    cuda_glue = [f for f in cpp if f.endswith("_cuda.cpp")]
    cpu_sources = [f for f in cpp if not f.endswith("_cuda.cpp")]

    forced = _flag("FASTLIFT_CUDA")
    torch_has_cuda = torch.version.cuda is not None
    if forced is None:
        with_cuda = torch_has_cuda and CUDA_HOME is not None
    else:
        with_cuda = forced
    if with_cuda and not torch_has_cuda:
        raise RuntimeError(
            "FASTLIFT_CUDA=1 but the installed torch is a CPU build (torch.version.cuda is None); "
            "the CUDA glue needs a CUDA build of torch. Unset FASTLIFT_CUDA to build the CPU extension."
        )

    include_dirs = [os.path.join(HERE, "csrc")]
    cxx = ["-O3", "-std=c++17"]
    link = []
    if sys.platform.startswith("linux"):
        # OpenMP drives at::parallel_for inside the CPU kernels; -fno-math-errno lets sqrt vectorise.
        cxx += ["-fopenmp", "-fno-math-errno"]
        link += ["-fopenmp"]
    if with_cuda:
        ext = CUDAExtension(
            "fastlift._C",
            sources=cpu_sources + cuda_glue + cu,
            include_dirs=include_dirs,
            define_macros=[("FASTLIFT_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17", "-lineinfo"]},
            extra_link_args=link,
        )
    else:
        ext = CppExtension(
            "fastlift._C",
            sources=cpu_sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx},
            extra_link_args=link,
        )
    print(f"fastlift: building fastlift._C ({'C++ and CUDA' if with_cuda else 'C++'})")
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
packages = find_packages(include=["fastlift", "fastlift.*"]) + ["fastlift.kernels"]

setup(
    packages=packages,
    package_dir={"fastlift": "fastlift", "fastlift.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    include_package_data=False,
)
