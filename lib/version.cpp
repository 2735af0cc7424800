// The shared library's own translation unit: everything else, the version too (core/version.h),
// comes from the component archives.
#include "core/version.h"
