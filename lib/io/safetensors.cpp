#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "io/strict_json.h"

namespace mtt::io {

namespace {

using json = nlohmann::json;

// The deepest a valid header nests: root object -> tensor entry -> shape array. A little slack
// for unknown fields; anything deeper is hostile (and would only cost memory).
constexpr int kMaxJsonDepth = 16;

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

// Strict UTF-8 (as Rust's str::from_utf8, which the reference uses): no overlong forms, no
// surrogates, nothing above U+10FFFF. Returns the offset of the first bad byte, or npos.
std::size_t first_invalid_utf8(const uint8_t* s, std::size_t n) {
  std::size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (std::size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string::npos;
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A JSON value that is a non-negative integer fitting in uint64 (the reference decodes these
// fields as usize: floats, negatives and strings are rejected).
bool as_u64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    int64_t x = v.get<int64_t>();
    if (x < 0) return false;
    *out = static_cast<uint64_t>(x);
    return true;
  }
  return false;
}

TensorInfo parse_entry(const std::string& file, const std::string& name, const json& e) {
  if (!e.is_object()) throw Error(file, name, "tensor entry is not a JSON object");
  TensorInfo t;
  t.name = name;

  auto dt = e.find("dtype");
  if (dt == e.end()) throw Error(file, name, "missing \"dtype\"");
  if (!dt->is_string()) throw Error(file, name, "\"dtype\" is not a string");
  auto parsed = parse_dtype(dt->get_ref<const std::string&>());
  if (!parsed) throw Error(file, name, "unknown dtype " + quoted(dt->get<std::string>()));
  t.dtype = *parsed;

  auto sh = e.find("shape");
  if (sh == e.end()) throw Error(file, name, "missing \"shape\"");
  if (!sh->is_array()) throw Error(file, name, "\"shape\" is not an array");
  uint64_t numel = 1;
  for (const auto& d : *sh) {
    if (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0)
      throw Error(file, name, "negative dimension " + std::to_string(d.get<int64_t>()) + " in shape");
    uint64_t v;
    if (!as_u64(d, &v)) throw Error(file, name, "shape dimension " + d.dump() + " is not a non-negative integer");
    if (v > static_cast<uint64_t>(INT64_MAX) || !checked_mul(numel, v, &numel))
      throw Error(file, name, "shape " + sh->dump() + " overflows: element count does not fit in 64 bits");
    t.shape.push_back(static_cast<int64_t>(v));
  }

  auto off = e.find("data_offsets");
  if (off == e.end()) throw Error(file, name, "missing \"data_offsets\"");
  uint64_t b = 0, en = 0;
  if (!off->is_array() || off->size() != 2 || !as_u64((*off)[0], &b) || !as_u64((*off)[1], &en))
    throw Error(file, name, "\"data_offsets\" must be [begin, end] of non-negative integers, got " + off->dump());
  if (b > en)
    throw Error(file, name,
                "data_offsets [" + std::to_string(b) + ", " + std::to_string(en) + "]: begin > end");
  t.begin = b;
  t.end = en;

  uint64_t want;
  if (!checked_mul(numel, dtype_size(t.dtype), &want))
    throw Error(file, name, "shape " + shape_str(t.shape) + " overflows: byte size does not fit in 64 bits");
  if (want != t.nbytes())
    throw Error(file, name,
                "byte size " + std::to_string(t.nbytes()) + " from data_offsets does not match shape " +
                    shape_str(t.shape) + " x " + dtype_name(t.dtype) + " = " + std::to_string(want) + " bytes");
  return t;
}

}  // namespace

uint64_t TensorInfo::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

Header parse_header(const uint8_t* bytes, std::size_t available, uint64_t file_size, const std::string& file) {
  // Layout checks first, in the reference implementation's order (safetensors
  // `read_metadata`): length word, header size cap, header inside the file.
  if (file_size == 0) throw Error(file, "", "empty file: not a safetensors file");
  if (file_size < 8)
    throw Error(file, "",
                "file too small (" + std::to_string(file_size) + " bytes) to hold the 8-byte header length");
  if (available < 8) throw Error(file, "", "truncated: fewer than 8 bytes readable");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little-endian regardless of host
  if (n > kMaxHeaderSize)
    throw Error(file, "",
                "header length " + std::to_string(n) + " exceeds the " + std::to_string(kMaxHeaderSize) +
                    "-byte limit");
  if (8 + n > file_size)
    throw Error(file, "",
                "header length " + std::to_string(n) + " exceeds the file size (" + std::to_string(file_size) +
                    " bytes): truncated header");
  if (available < 8 + n) throw Error(file, "", "truncated header: only " + std::to_string(available) + " bytes readable");
  if (n == 0) throw Error(file, "", "empty header (length 0)");

  const uint8_t* h = bytes + 8;
  std::size_t bad = first_invalid_utf8(h, n);
  if (bad != std::string::npos)
    throw Error(file, "", "header is not valid UTF-8 (byte " + std::to_string(bad) + " of the header)");
  if (h[0] != '{') throw Error(file, "", "header does not start with '{': not a JSON object");
  // Linear-time parse that rejects duplicate keys (nlohmann alone keeps the last one), NUL
  // bytes and deep nesting. Trailing spaces (the writers' padding to 8 bytes) are whitespace.
  json root = parse_json_strict(reinterpret_cast<const char*>(h), reinterpret_cast<const char*>(h) + n, file,
                                "header", kMaxJsonDepth);
  if (!root.is_object()) throw Error(file, "", "header root is not a JSON object");

  Header out;
  out.data_start = 8 + n;
  const uint64_t data_size = file_size - out.data_start;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& key = it.key();
    if (key == "__metadata__") {
      if (it->is_null()) continue;
      if (!it->is_object()) throw Error(file, key, "__metadata__ is not a JSON object of string values");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          throw Error(file, "__metadata__." + m.key(), "metadata value is not a string (got " +
                                                           std::string(m->type_name()) + ")");
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    TensorInfo t = parse_entry(file, key, *it);
    if (t.end > data_size)
      throw Error(file, key,
                  "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                      "] past the end of the data area (" + std::to_string(data_size) + " bytes): truncated data?");
    out.tensors.push_back(std::move(t));
  }

  // The reference's `validate`: sorted by offsets, every tensor starts where the previous one
  // ended (no gaps, no overlaps), and the last one ends exactly at the end of the file.
  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : (a.end != b.end ? a.end < b.end : a.name < b.name);
  });
  uint64_t pos = 0;
  const TensorInfo* prev = nullptr;
  for (const auto& t : out.tensors) {
    if (t.begin < pos)
      throw Error(file, t.name,
                  "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] overlap tensor " +
                      quoted(prev->name) + " ending at " + std::to_string(pos));
    if (t.begin > pos)
      throw Error(file, t.name,
                  "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] leave a gap of " +
                      std::to_string(t.begin - pos) + " bytes after offset " + std::to_string(pos) +
                      ": tensors must be contiguous");
    pos = t.end;
    prev = &t;
  }
  if (pos != data_size)
    throw Error(file, "",
                std::to_string(data_size - pos) + " bytes of trailing data after the last tensor (data area " +
                    std::to_string(data_size) + " bytes, tensors end at " + std::to_string(pos) + ")");
  return out;
}

// ---------------------------------------------------------------------------------------------

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is rejected below as not a regular file).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw Error(path, "", std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw Error(path, "", std::string("cannot stat: ") + std::strerror(err));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw Error(path, "", "is a directory, not a safetensors file");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path, "", "not a regular file");
  }
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ > 0) {
    // Private copy-on-write mapping: tensors viewing it (nn::to_tensor) may be modified in place
    // without touching the file and without faulting; read-only as a fallback.
    void* p = ::mmap(nullptr, f->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED) p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      throw Error(path, "", std::string("cannot mmap: ") + std::strerror(err));
    }
    f->base_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
  // On error the shared_ptr's destructor unmaps.
  f->header_ = parse_header(f->base_, f->size_, f->size_, path);
  for (std::size_t i = 0; i < f->header_.tensors.size(); ++i) f->index_[f->header_.tensors[i].name] = i;
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (base_) ::munmap(const_cast<uint8_t*>(base_), size_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

TensorView SafetensorsFile::view(const TensorInfo& info) const {
  // Re-resolve by name so the view points at our own (stable) TensorInfo, not a caller's copy.
  const TensorInfo* own = find(info.name);
  if (!own || own->begin != info.begin || own->end != info.end)
    throw Error(path_, info.name, "tensor does not belong to this file");
  TensorView v;
  v.info = own;
  v.data = base_ + header_.data_start + own->begin;
  v.file = shared_from_this();
  return v;
}

TensorView SafetensorsFile::view(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (!info) throw Error(path_, name, "no such tensor in the file");
  return view(*info);
}

void SafetensorsFile::release(const TensorInfo& info) const {
  if (!base_ || info.nbytes() == 0) return;
  // Only whole pages inside the tensor: neighbours may still be in use.
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t start = header_.data_start + info.begin;
  uint64_t stop = header_.data_start + info.end;
  uint64_t a = (start + page - 1) / page * page;
  uint64_t b = stop / page * page;
  if (b > a) ::madvise(const_cast<uint8_t*>(base_) + a, b - a, MADV_DONTNEED);
}

void SafetensorsFile::prefetch(uint64_t from, uint64_t to) const {
  if (!base_) return;
  to = std::min(to, size_);
  if (to <= from) return;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t a = from / page * page;
  ::madvise(const_cast<uint8_t*>(base_) + a, to - a, MADV_WILLNEED);
}

// ---------------------------------------------------------------------------------------------

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorToWrite*> order;
  order.reserve(tensors.size());
  for (const auto& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) { return a->name < b->name; });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  std::vector<uint64_t> sizes;
  uint64_t pos = 0;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const TensorToWrite& t = *order[i];
    if (t.name == "__metadata__") throw Error(path, t.name, "reserved name cannot be a tensor");
    if (i > 0 && order[i - 1]->name == t.name) throw Error(path, t.name, "duplicate tensor name");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) throw Error(path, t.name, "negative dimension in shape " + shape_str(t.shape));
      if (!checked_mul(numel, static_cast<uint64_t>(d), &numel)) throw Error(path, t.name, "shape overflows");
    }
    uint64_t nbytes;
    if (!checked_mul(numel, dtype_size(t.dtype), &nbytes)) throw Error(path, t.name, "shape overflows");
    if (nbytes > 0 && !t.data) throw Error(path, t.name, "no data for a non-empty tensor", ErrorKind::Internal);
    nlohmann::ordered_json e;
    e["dtype"] = dtype_name(t.dtype);
    e["shape"] = t.shape;
    e["data_offsets"] = {pos, pos + nbytes};
    header[t.name] = std::move(e);
    sizes.push_back(nbytes);
    pos += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // names/metadata must be valid UTF-8
    throw Error(path, "", std::string("cannot encode header: ") + e.what());
  }
  // Pad with spaces so the data area starts 8-byte aligned (as the reference writer does).
  text.append((8 - text.size() % 8) % 8, ' ');
  if (text.size() > kMaxHeaderSize)
    throw Error(path, "", "header would be " + std::to_string(text.size()) + " bytes, over the limit");

  AtomicFile out(path);
  uint8_t len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  out.write(len, 8);
  out.write(text);
  for (std::size_t i = 0; i < order.size(); ++i)
    if (sizes[i]) out.write(order[i]->data, sizes[i]);
  out.commit();
}

}  // namespace mtt::io
