# LibTorch from the PyPI torch wheel, without TorchConfig.cmake: the wheel is a CUDA build and its
# config insists on probing a CUDA toolkit/GPU that matches it (it fails with nvcc 13 and no GPU).
# We need only headers and the shared libraries; our CUDA kernels never include LibTorch.
#
# Input: MTT_TORCH_ROOT (the wheel's torch/ folder) or CMAKE_PREFIX_PATH = torch.utils.cmake_prefix_path.
# Output: interface targets mtt_torch (c10 + torch_cpu) and mtt_torch_cuda (c10_cuda + torch_cuda when
# the wheel has them; linked --no-as-needed so CUDA tensors are registered at load time).
set(MTT_TORCH_ROOT "" CACHE PATH "torch/ folder of the PyPI wheel")
if(NOT MTT_TORCH_ROOT)
  foreach(p ${CMAKE_PREFIX_PATH})
    if(EXISTS "${p}/../../include/torch/csrc/api/include/torch/torch.h")
      get_filename_component(MTT_TORCH_ROOT "${p}/../.." ABSOLUTE)
      break()
    endif()
  endforeach()
endif()
if(NOT MTT_TORCH_ROOT AND MTT_PYTHON)
  execute_process(COMMAND ${MTT_PYTHON} -c "import torch, os; print(os.path.dirname(torch.__file__))"
                  OUTPUT_VARIABLE _torch_dir OUTPUT_STRIP_TRAILING_WHITESPACE WORKING_DIRECTORY /)
  set(MTT_TORCH_ROOT "${_torch_dir}")
endif()
if(NOT EXISTS "${MTT_TORCH_ROOT}/include/torch/csrc/api/include/torch/torch.h")
  message(FATAL_ERROR "LibTorch not found: run scripts/setup.sh, or pass -DMTT_TORCH_ROOT=<site-packages>/torch")
endif()
message(STATUS "moshi-ttt: LibTorch at ${MTT_TORCH_ROOT}")

find_library(MTT_C10 c10 PATHS ${MTT_TORCH_ROOT}/lib NO_DEFAULT_PATH REQUIRED)
find_library(MTT_TORCH_CPU torch_cpu PATHS ${MTT_TORCH_ROOT}/lib NO_DEFAULT_PATH REQUIRED)
find_library(MTT_C10_CUDA c10_cuda PATHS ${MTT_TORCH_ROOT}/lib NO_DEFAULT_PATH)
find_library(MTT_TORCH_CUDA torch_cuda PATHS ${MTT_TORCH_ROOT}/lib NO_DEFAULT_PATH)

add_library(mtt_torch INTERFACE)
target_include_directories(mtt_torch SYSTEM INTERFACE
  ${MTT_TORCH_ROOT}/include ${MTT_TORCH_ROOT}/include/torch/csrc/api/include)
target_link_libraries(mtt_torch INTERFACE ${MTT_TORCH_CPU} ${MTT_C10})
target_link_options(mtt_torch INTERFACE "LINKER:-rpath,${MTT_TORCH_ROOT}/lib")
target_compile_definitions(mtt_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=1)

add_library(mtt_torch_cuda INTERFACE)
set(MTT_TORCH_CUDA_FOUND OFF)
if(MTT_TORCH_CUDA AND MTT_C10_CUDA)
  set(MTT_TORCH_CUDA_FOUND ON)
  target_link_libraries(mtt_torch_cuda INTERFACE -Wl,--no-as-needed ${MTT_TORCH_CUDA} ${MTT_C10_CUDA} -Wl,--as-needed)
  target_compile_definitions(mtt_torch_cuda INTERFACE MTT_TORCH_HAS_CUDA=1)
endif()

# One precompiled header for every torch-using target: <ATen/ATen.h> costs ~15 s of CPU per
# translation unit, ~2 s through the PCH (measured with g++ 12). Targets reuse mtt_pch's PCH; the
# -D macros that differ between targets (MTT_SOURCE_DIR, ...) do not appear in ATen, which keeps
# the PCH valid for them (GCC's rule for macros defined before a PCH).
option(MTT_PCH "Precompile <ATen/ATen.h> once and reuse it" ON)
function(mtt_torch_pch target)
  if(NOT MTT_PCH)
    return()
  endif()
  if(NOT TARGET mtt_pch)
    file(WRITE ${PROJECT_BINARY_DIR}/mtt_pch.cpp "// translation unit that owns the shared precompiled header\n")
    add_library(mtt_pch OBJECT ${PROJECT_BINARY_DIR}/mtt_pch.cpp)
    target_link_libraries(mtt_pch PRIVATE mtt_torch)
    target_precompile_headers(mtt_pch PRIVATE <ATen/ATen.h> <nlohmann/json.hpp> <map> <string> <vector>)
  endif()
  # Executables would get -fPIE, which GCC refuses to mix with the PCH's -fPIC: compile them
  # with -fPIC too (position-independent objects link into a PIE executable all the same).
  get_target_property(_type ${target} TYPE)
  if(_type STREQUAL "EXECUTABLE")
    set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE OFF)
    target_compile_options(${target} PRIVATE -fPIC)
  endif()
  target_precompile_headers(${target} REUSE_FROM mtt_pch)
endfunction()
