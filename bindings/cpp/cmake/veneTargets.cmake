# Defines the imported targets vene::vene (shared) and vene::vene_static for a library
# directory and include directories. Shared by the in-tree and the installed package config.
function(_vene_add_targets libdir includes)
  if(TARGET vene::vene)
    return()
  endif()
  find_library(VENE_SHARED_LIBRARY NAMES vene PATHS "${libdir}" NO_DEFAULT_PATH)
  find_file(VENE_STATIC_LIBRARY NAMES libvene.a vene.lib PATHS "${libdir}" NO_DEFAULT_PATH)
  if(NOT VENE_SHARED_LIBRARY)
    set(vene_FOUND FALSE PARENT_SCOPE)
    set(vene_NOT_FOUND_MESSAGE
        "libvene not found in ${libdir}: build it with `cargo build --release`, or set VENE_LIBRARY_DIR"
        PARENT_SCOPE)
    return()
  endif()
  add_library(vene::vene SHARED IMPORTED)
  set_target_properties(vene::vene PROPERTIES
    IMPORTED_LOCATION "${VENE_SHARED_LIBRARY}"
    IMPORTED_NO_SONAME TRUE
    INTERFACE_INCLUDE_DIRECTORIES "${includes}"
    INTERFACE_COMPILE_FEATURES cxx_std_17)
  if(VENE_STATIC_LIBRARY)
    add_library(vene::vene_static STATIC IMPORTED)
    set_target_properties(vene::vene_static PROPERTIES
      IMPORTED_LOCATION "${VENE_STATIC_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${includes}"
      INTERFACE_LINK_LIBRARIES "m;pthread;dl;gcc_s"
      INTERFACE_COMPILE_FEATURES cxx_std_17)
  endif()
endfunction()
