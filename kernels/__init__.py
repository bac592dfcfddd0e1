"""Triton kernels of fastlift, installed as ``fastlift.kernels``.

Each module holds one op's ``@triton.jit`` kernels and the Python launchers that take and return
torch tensors. They run on CUDA tensors, and on CPU tensors when ``TRITON_INTERPRET=1`` is set
before triton is first imported (that is how they are tested without a GPU). Most users call
``fastlift.ops`` instead, which chooses a backend; import from here to use a kernel directly::

    from fastlift.kernels.normalize import normalize_2d_forward
"""
