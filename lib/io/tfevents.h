#pragma once
// TensorBoard event files (what torch.utils.tensorboard.SummaryWriter writes and `tensorboard
// --logdir` reads): a sequence of TFRecords, each
//   uint64 length (little endian) | uint32 masked CRC32C of those 8 bytes | data | uint32 masked CRC32C of data
// where data is a serialized tensorflow.Event protobuf; the first one carries file_version
// "brain.Event:2", the others one scalar summary each (Summary.Value tag + simple_value), as
// SummaryWriter.add_scalar writes them. Torch-free, no protobuf dependency: the few fields are
// encoded by hand.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mtt::io {

// CRC-32C (Castagnoli), and TFRecord's mask of it: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t crc32c(const void* data, std::size_t n, uint32_t crc = 0);
uint32_t masked_crc32c(const void* data, std::size_t n);

struct TfEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::optional<std::string> file_version;
  // Scalar summary values (tag, simple_value).
  std::vector<std::pair<std::string, float>> scalars;
};

// Serialized Event protobuf (proto3: zero fields left out, as protobuf does).
std::string encode_event(const TfEvent& e);
// One framed record around `data`.
std::string tf_record(const std::string& data);

// Parses an event file. A torn last record (a write cut short by a kill) ends the list and sets
// `torn`; a CRC mismatch anywhere else throws mtt::Error naming the file and the byte offset.
struct TfEventFile {
  std::vector<TfEvent> events;
  std::vector<std::string> records;  // the raw record bytes of each event, framing included
  bool torn = false;
};
TfEventFile read_tf_events(const std::string& path);

// Appends records to RUN/tb/events.out.tfevents.<unix time>.<host>.<pid>.<uid><suffix> (the name
// SummaryWriter gives it) and flushes after each, so a killed run loses at most the record being
// written. The file is created, with its file_version record, on construction.
class TfEventWriter {
 public:
  TfEventWriter(const std::string& log_dir, const std::string& filename_suffix);
  ~TfEventWriter();
  TfEventWriter(const TfEventWriter&) = delete;
  TfEventWriter& operator=(const TfEventWriter&) = delete;

  void add_scalar(const std::string& tag, double value, int64_t step, double wall_time);
  const std::string& path() const { return path_; }

 private:
  void append(const std::string& bytes);
  std::string path_;
  int fd_ = -1;
};

}  // namespace mtt::io
