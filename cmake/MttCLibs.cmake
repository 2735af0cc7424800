# mtt_c_library(<PREFIX> <pkg-config module> <header> <library> [REQUIRED]): the imported target
# PkgConfig::<PREFIX> and <PREFIX>_FOUND for a C library: through pkg-config when it knows the
# module, else through find_path / find_library on CMAKE_PREFIX_PATH and <PREFIX>_INCLUDE_DIR /
# <PREFIX>_LIBRARY (the GPU machines have no such packages; scripts/gpu_check.sh brings them as
# unpacked Debian packages, whose .pc files name /usr).
find_package(PkgConfig QUIET)
macro(mtt_c_library prefix module header lib)
  cmake_parse_arguments(_mcl "REQUIRED" "" "" ${ARGN})
  set(${prefix}_FOUND FALSE)
  if(PKG_CONFIG_FOUND AND NOT ${prefix}_LIBRARY)
    pkg_check_modules(${prefix} QUIET IMPORTED_TARGET GLOBAL ${module})
  endif()
  if(NOT ${prefix}_FOUND)
    find_path(${prefix}_INCLUDE_DIR ${header} PATH_SUFFIXES ${module})
    find_library(${prefix}_LIBRARY ${lib})
    if(${prefix}_INCLUDE_DIR AND ${prefix}_LIBRARY)
      add_library(PkgConfig::${prefix} INTERFACE IMPORTED GLOBAL)
      target_include_directories(PkgConfig::${prefix} INTERFACE ${${prefix}_INCLUDE_DIR})
      target_link_libraries(PkgConfig::${prefix} INTERFACE ${${prefix}_LIBRARY})
      set(${prefix}_FOUND TRUE)
      message(STATUS "moshi-ttt: ${module} without pkg-config: ${${prefix}_LIBRARY}")
    elseif(_mcl_REQUIRED)
      message(FATAL_ERROR "${module} not found (pkg-config module ${module}, or ${header} and lib${lib} on "
                          "CMAKE_PREFIX_PATH): install its -dev package")
    endif()
  endif()
endmacro()
