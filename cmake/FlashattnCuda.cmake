# CUDA configuration: finds nvcc and CUTLASS, derives per-code-path gencode flags, and builds the generated
# kernel TUs each for its own architectures only, in a memory-bounded ninja job pool.

function(flashattn_find_cutlass out_var)
  set(_candidates ${CUTLASS_DIR} $ENV{CUTLASS_DIR} ${CMAKE_CURRENT_SOURCE_DIR}/.deps/cutlass/include)
  foreach(c ${_candidates})
    if(EXISTS "${c}/cute/tensor.hpp")
      set(${out_var} "${c}" PARENT_SCOPE)
      return()
    endif()
    if(EXISTS "${c}/include/cute/tensor.hpp")
      set(${out_var} "${c}/include" PARENT_SCOPE)
      return()
    endif()
  endforeach()
  set(${out_var} "" PARENT_SCOPE)
endfunction()

macro(flashattn_configure_cuda)
  set(FLASHATTN_WITH_CUDA OFF)
  set(FLASHATTN_ARCHS_BUILT "")
  set(FLASHATTN_CUDA_PATHS "")
  if(NOT FLASHATTN_CUDA STREQUAL "OFF")
    include(CheckLanguage)
    check_language(CUDA)
    flashattn_find_cutlass(FLASHATTN_CUTLASS_INCLUDE)
    if(CMAKE_CUDA_COMPILER AND FLASHATTN_CUTLASS_INCLUDE)
      set(FLASHATTN_WITH_CUDA ON)
    elseif(FLASHATTN_CUDA STREQUAL "ON")
      message(FATAL_ERROR "FLASHATTN_CUDA=ON but nvcc (${CMAKE_CUDA_COMPILER}) or CUTLASS "
                          "(${FLASHATTN_CUTLASS_INCLUDE}) is missing: run tools/setup.sh or pass -DCUTLASS_DIR=")
    else()
      message(STATUS "flashattn: no nvcc or no CUTLASS headers: building the CPU backend only")
    endif()
  endif()
  if(FLASHATTN_WITH_CUDA)
    # Each TU sets its own -gencode flags; CMake must not add any.
    set(CMAKE_CUDA_ARCHITECTURES OFF)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(FLASHATTN_ARCHS_BUILT "${FLASHATTN_ARCHS}")
    math(EXPR FLASHATTN_CUDA_VERSION_NUMBER "${CUDAToolkit_VERSION_MAJOR} * 1000 + ${CUDAToolkit_VERSION_MINOR} * 10")
    set(FLASHATTN_CUDA_PATHS "sm80")
  endif()
endmacro()

# -gencode flags of a code path, restricted to FLASHATTN_ARCHS. OWN_SM90_PASS (sm80 path): the TU has
# sm_90-only instructions (programmatic launch, cuda/common/pdl.cuh), so its sm_90 SASS comes from a
# compute_90 device pass of its own.
function(flashattn_path_gencode path out_var)
  cmake_parse_arguments(PARSE_ARGV 2 _arg "OWN_SM90_PASS" "" "")
  set(flags "")
  if(path STREQUAL "sm80")
    # sm80 path: sm_80 SASS (runs on sm86/89 too), sm_90 SASS (Hopper), compute_80 PTX for later GPUs.
    # Both SASS come from one compute_80 front-end pass where possible: cicc (the front end and NVVM) is
    # ~85% of a kernel TU's compile time and ptxas ~8%, and the sm_90 SASS ptxas makes from compute_80
    # PTX is the one a compute_90 pass gives, instruction for instruction (docs/kernels_sm80.md, Instantiations).
    if("80" IN_LIST FLASHATTN_ARCHS AND "90" IN_LIST FLASHATTN_ARCHS AND NOT _arg_OWN_SM90_PASS)
      list(APPEND flags "-gencode=arch=compute_80,code=[sm_80,sm_90,compute_80]")
    else()
      if("80" IN_LIST FLASHATTN_ARCHS)
        list(APPEND flags "-gencode=arch=compute_80,code=[sm_80,compute_80]")
      endif()
      if("90" IN_LIST FLASHATTN_ARCHS)
        list(APPEND flags "-gencode=arch=compute_90,code=sm_90")
      endif()
    endif()
  elseif(path STREQUAL "sm75")
    list(APPEND flags "-gencode=arch=compute_75,code=sm_75")
  elseif(path STREQUAL "sm90")
    # wgmma/setmaxnreg exist only on sm_90a; plain sm_90 would compile them into a trap.
    list(APPEND flags "-gencode=arch=compute_90a,code=sm_90a")
  endif()
  set(${out_var} "${flags}" PARENT_SCOPE)
endfunction()

function(flashattn_add_cuda_objects target)
  # src/cuda/common/*.cu: path-independent kernels; src/cuda/host/*.cpp: host-side GPU planning and
  # launching (plain C++ with the CUDA runtime API, no kernel headers).
  file(GLOB _common CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/common/*.cu)
  file(GLOB _host CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/cuda/host/*.cpp)
  set(_sources ${_common} ${_host} ${FLASHATTN_GENERATED_SM75} ${FLASHATTN_GENERATED_SM80} ${FLASHATTN_GENERATED_SM90})
  add_library(${target} OBJECT ${_sources})
  target_include_directories(${target} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR}/include
                                               ${FLASHATTN_CUTLASS_INCLUDE} ${CUDAToolkit_INCLUDE_DIRS})
  # FLASHATTN_SM80_CODE: the sm80 path has sm_80 SASS + compute_80 PTX (any sm80+ GPU); without it only
  # sm_90 SASS, so only sm_90 devices (the 227 KB shared-memory class) can run it.
  if("80" IN_LIST FLASHATTN_ARCHS)
    set(_sm80_code 1)
  else()
    set(_sm80_code 0)
  endif()
  target_compile_definitions(${target} PRIVATE FLASHATTN_WITH_CUDA=1 FLASHATTN_SM80_CODE=${_sm80_code})
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr --use_fast_math -O3 -lineinfo -Xptxas=-v --threads=1
      -DCUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL=0 -Xcudafe=--diag_suppress=177>)
  set_target_properties(${target} PROPERTIES CUDA_STANDARD 17 CUDA_SEPARABLE_COMPILATION OFF
                                             POSITION_INDEPENDENT_CODE ON CUDA_ARCHITECTURES OFF)
  foreach(path sm75 sm80 sm90)
    flashattn_path_gencode(${path} _flags)
    string(TOUPPER ${path} _P)
    if(FLASHATTN_GENERATED_${_P})
      set_source_files_properties(${FLASHATTN_GENERATED_${_P}} PROPERTIES COMPILE_OPTIONS "${_flags}")
    endif()
  endforeach()
  flashattn_path_gencode(sm80 _flags80_own OWN_SM90_PASS)
  if(FLASHATTN_GENERATED_OWN_SM90_PASS)
    set_source_files_properties(${FLASHATTN_GENERATED_OWN_SM90_PASS} PROPERTIES COMPILE_OPTIONS "${_flags80_own}")
  endif()
  # Path-independent CUDA code (combine, metadata checks, rotary/append) runs on every GPU: sm80 path flags,
  # with an sm_90 pass of its own (the combine waits on a programmatic launch there).
  if(_common)
    set_source_files_properties(${_common} PROPERTIES COMPILE_OPTIONS "${_flags80_own}")
  endif()
  set_property(GLOBAL APPEND PROPERTY JOB_POOLS flashattn_nvcc=${FLASHATTN_CUDA_JOBS})
  set_property(TARGET ${target} PROPERTY JOB_POOL_COMPILE flashattn_nvcc)
endfunction()
