#pragma once
// The outputs of one command, created all or none (issue 15): `ttt-infer OUT.wav --stereo-output
// --stats-json`, the WAVs and data.jsonl of `ttt-sweep data speech`, a sweep's summary files.
// Each output is an AtomicFile opened when it is added (an unwritable one fails before the work);
// nothing is renamed into place until every output is complete, and a failure before or during
// commit() leaves none of the new files (an existing file a failed commit had replaced is put
// back) and no temporary. Devices and FIFOs are written in place as they are written: they
// cannot be taken back, so a command writes them last where it can.
#include <memory>
#include <string>
#include <vector>

#include "core/atomic_file.h"

namespace mtt {

class OutputSet {
 public:
  OutputSet() = default;
  OutputSet(const OutputSet&) = delete;
  OutputSet& operator=(const OutputSet&) = delete;
  ~OutputSet();  // without commit(): every temporary removed

  // `what` names the flag or role in the error when two outputs are the same file.
  AtomicFile& add(const std::string& path, const std::string& what = "");
  void commit();
  std::size_t size() const { return files_.size(); }
  AtomicFile& operator[](std::size_t i) { return *files_[i]; }

 private:
  std::vector<std::unique_ptr<AtomicFile>> files_;
  std::vector<std::string> whats_;
  bool committed_ = false;
};

// Creates `dir` and its parents for outputs; an mtt::Error naming `dir` (not a filesystem_error)
// when a component is a file or cannot be created. Returns true when `dir` did not exist before.
bool make_output_dir(const std::string& dir, const std::string& what = "");

}  // namespace mtt
