# vene's CMake package, in-tree form: use the repository's include/ and the libraries cargo
# built, without installing anything.
#
#   cargo build --release
#   cmake -S your_project -B build -Dvene_DIR=<vene repo>/bindings/cpp/cmake
#
#   find_package(vene 0.1 CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE vene::vene)          # libvene.so (rpath set)
#   target_link_libraries(app PRIVATE vene::vene_static)   # or libvene.a
#
# vene::vene carries the include directories of vene.h, vene_plugin.h and vene/vene.hpp.
# Set VENE_LIBRARY_DIR to look for the libraries elsewhere than <repo>/target/release.
# (`cmake --install` of bindings/cpp installs a relocatable version of this package.)
get_filename_component(_vene_root "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(VENE_LIBRARY_DIR "${_vene_root}/target/release" CACHE PATH "Directory holding libvene")
set(_vene_includes "${_vene_root}/include;${_vene_root}/bindings/cpp/include")
include("${CMAKE_CURRENT_LIST_DIR}/veneTargets.cmake")
_vene_add_targets("${VENE_LIBRARY_DIR}" "${_vene_includes}")
