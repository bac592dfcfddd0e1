// The Python module object of fastlift._C. The kernels register themselves as torch operators in
// the "fastlift_C" namespace (TORCH_LIBRARY_FRAGMENT in each op folder) when this library is
// loaded; Python reaches them as torch.ops.fastlift_C.<name>, wrapped by fastlift.ops.
#include <Python.h>

#ifdef FASTLIFT_WITH_CUDA
static const int kWithCuda = 1;
#else
static const int kWithCuda = 0;
#endif

static struct PyModuleDef fastlift_c_module = {PyModuleDef_HEAD_INIT, "_C",
                                               "Compiled kernels of fastlift (use fastlift.ops).", -1,
                                               nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&fastlift_c_module);
  if (module == nullptr) return nullptr;
  if (PyModule_AddIntConstant(module, "compiled_with_cuda", kWithCuda) < 0) return nullptr;
  return module;
}
