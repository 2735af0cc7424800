// The shared library's own translation unit: everything else comes from the component archives.
namespace mtt {
const char* version() { return "0.1.0"; }
}  // namespace mtt
