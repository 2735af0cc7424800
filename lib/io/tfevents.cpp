#include "io/tfevents.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "core/atomic_file.h"
#include "core/error.h"

namespace mtt::io {

namespace {

const std::array<uint32_t, 256>& crc_table() {
  static const std::array<uint32_t, 256> t = [] {
    std::array<uint32_t, 256> a{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // reflected Castagnoli
      a[i] = c;
    }
    return a;
  }();
  return t;
}

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

void put_fixed(std::string& out, const void* p, int n) { out.append(static_cast<const char*>(p), static_cast<size_t>(n)); }

void put_bytes(std::string& out, uint32_t field, const std::string& s) {
  put_varint(out, (field << 3) | 2);
  put_varint(out, s.size());
  out += s;
}

// A protobuf reader over [p, end): just enough for Event / Summary / Summary.Value.
struct Reader {
  const unsigned char* p;
  const unsigned char* end;
  bool ok = true;
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) {
        ok = false;
        return 0;
      }
      const unsigned char b = *p++;
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    ok = false;
    return v;
  }
  std::string bytes() {
    const uint64_t n = varint();
    if (!ok || n > static_cast<uint64_t>(end - p)) {
      ok = false;
      return {};
    }
    std::string s(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
    p += n;
    return s;
  }
  template <class T>
  T fixed() {
    T v{};
    if (static_cast<size_t>(end - p) < sizeof(T)) {
      ok = false;
      return v;
    }
    std::memcpy(&v, p, sizeof(T));
    p += sizeof(T);
    return v;
  }
  void skip(uint32_t wire) {
    if (wire == 0) varint();
    else if (wire == 1) fixed<uint64_t>();
    else if (wire == 2) bytes();
    else if (wire == 5) fixed<uint32_t>();
    else ok = false;
  }
};

bool decode_value(const std::string& s, std::pair<std::string, float>& out, bool& has_simple) {
  Reader r{reinterpret_cast<const unsigned char*>(s.data()), reinterpret_cast<const unsigned char*>(s.data()) + s.size()};
  while (r.ok && r.p < r.end) {
    const uint64_t key = r.varint();
    const uint32_t field = static_cast<uint32_t>(key >> 3), wire = static_cast<uint32_t>(key & 7);
    if (field == 1 && wire == 2) out.first = r.bytes();
    else if (field == 2 && wire == 5) {
      out.second = r.fixed<float>();
      has_simple = true;
    } else r.skip(wire);
  }
  return r.ok;
}

bool decode_event(const std::string& s, TfEvent& e) {
  Reader r{reinterpret_cast<const unsigned char*>(s.data()), reinterpret_cast<const unsigned char*>(s.data()) + s.size()};
  while (r.ok && r.p < r.end) {
    const uint64_t key = r.varint();
    const uint32_t field = static_cast<uint32_t>(key >> 3), wire = static_cast<uint32_t>(key & 7);
    if (field == 1 && wire == 1) {
      e.wall_time = r.fixed<double>();
    } else if (field == 2 && wire == 0) {
      e.step = static_cast<int64_t>(r.varint());
    } else if (field == 3 && wire == 2) {
      e.file_version = r.bytes();
    } else if (field == 5 && wire == 2) {
      const std::string summary = r.bytes();
      Reader sr{reinterpret_cast<const unsigned char*>(summary.data()),
                reinterpret_cast<const unsigned char*>(summary.data()) + summary.size()};
      while (sr.ok && sr.p < sr.end) {
        const uint64_t k = sr.varint();
        if ((k >> 3) == 1 && (k & 7) == 2) {
          std::pair<std::string, float> v;
          bool simple = false;
          if (!decode_value(sr.bytes(), v, simple)) return false;
          if (simple) e.scalars.push_back(v);
        } else {
          sr.skip(static_cast<uint32_t>(k & 7));
        }
      }
      if (!sr.ok) return false;
    } else {
      r.skip(wire);
    }
  }
  return r.ok;
}

std::atomic<int> g_writer_uid{0};  // SummaryWriter's _global_uid: distinct names within a process

}  // namespace

uint32_t crc32c(const void* data, std::size_t n, uint32_t crc) {
  const auto& t = crc_table();
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) crc = t[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(const void* data, std::size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string encode_event(const TfEvent& e) {
  std::string out;
  if (e.wall_time != 0) {
    put_varint(out, (1 << 3) | 1);
    put_fixed(out, &e.wall_time, 8);
  }
  if (e.step != 0) {
    put_varint(out, (2 << 3) | 0);
    put_varint(out, static_cast<uint64_t>(e.step));
  }
  if (e.file_version) put_bytes(out, 3, *e.file_version);
  if (!e.scalars.empty()) {
    std::string summary;
    for (const auto& [tag, v] : e.scalars) {
      std::string value;
      put_bytes(value, 1, tag);
      put_varint(value, (2 << 3) | 5);
      put_fixed(value, &v, 4);
      put_bytes(summary, 1, value);
    }
    put_bytes(out, 5, summary);
  }
  return out;
}

std::string tf_record(const std::string& data) {
  std::string out;
  const uint64_t len = data.size();  // little endian on every platform we build for
  put_fixed(out, &len, 8);
  const uint32_t len_crc = masked_crc32c(&len, 8);
  put_fixed(out, &len_crc, 4);
  out += data;
  const uint32_t data_crc = masked_crc32c(data.data(), data.size());
  put_fixed(out, &data_crc, 4);
  return out;
}

TfEventFile read_tf_events(const std::string& path) {
  const std::string bytes = read_file(path);
  TfEventFile f;
  size_t off = 0;
  while (off < bytes.size()) {
    if (bytes.size() - off < 12) {
      f.torn = true;
      break;
    }
    uint64_t len = 0;
    uint32_t len_crc = 0;
    std::memcpy(&len, bytes.data() + off, 8);
    std::memcpy(&len_crc, bytes.data() + off + 8, 4);
    if (masked_crc32c(&len, 8) != len_crc)
      throw Error(path, "byte " + std::to_string(off), "TFRecord length fails its CRC32C check (corrupt event file)");
    if (len > bytes.size() - off - 12 || bytes.size() - off - 12 - len < 4) {
      f.torn = true;
      break;
    }
    const std::string data = bytes.substr(off + 12, len);
    uint32_t data_crc = 0;
    std::memcpy(&data_crc, bytes.data() + off + 12 + len, 4);
    if (masked_crc32c(data.data(), data.size()) != data_crc)
      throw Error(path, "byte " + std::to_string(off), "TFRecord data fails its CRC32C check (corrupt event file)");
    TfEvent e;
    if (!decode_event(data, e)) throw Error(path, "byte " + std::to_string(off), "malformed Event protobuf");
    f.events.push_back(std::move(e));
    f.records.push_back(bytes.substr(off, 12 + len + 4));
    off += 12 + len + 4;
  }
  return f;
}

TfEventWriter::TfEventWriter(const std::string& log_dir, const std::string& suffix) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(log_dir, ec);
  if (ec) throw Error(log_dir, "", "cannot create the TensorBoard log dir: " + ec.message());
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  char name[512];
  std::snprintf(name, sizeof name, "events.out.tfevents.%010lld.%s.%d.%d%s", static_cast<long long>(std::time(nullptr)),
                host, static_cast<int>(getpid()), g_writer_uid++, suffix.c_str());
  path_ = (fs::path(log_dir) / name).string();
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(path_, "", std::string("cannot create: ") + std::strerror(errno));
  struct timespec ts {};
  clock_gettime(CLOCK_REALTIME, &ts);
  TfEvent first;
  first.wall_time = static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
  first.file_version = "brain.Event:2";
  append(tf_record(encode_event(first)));
}

TfEventWriter::~TfEventWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void TfEventWriter::add_scalar(const std::string& tag, double value, int64_t step, double wall_time) {
  TfEvent e;
  e.wall_time = wall_time;
  e.step = step;
  e.scalars.push_back({tag, static_cast<float>(value)});
  append(tf_record(encode_event(e)));
}

void TfEventWriter::append(const std::string& bytes) {
  // One write per record: O_APPEND keeps records whole between writers, and a kill leaves at most
  // the tail of this one (read_tf_events reports it as torn).
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(path_, "", std::string("write failed: ") + std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
}

}  // namespace mtt::io
