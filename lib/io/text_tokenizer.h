#pragma once
// SentencePiece text tokenizer for Moshi's inner monologue (docs/moshi.md §6.1: tokenizer
// `tokenizer_spm_32k_3.model`; §9: tokens 0 and 3 are non-printing, "▁" means a space).
// Built on the sentencepiece C++ library when CMake finds it; otherwise load() throws.
#include <memory>
#include <string>
#include <vector>

namespace mtt::io {

class TextTokenizer {
 public:
  // Throws mtt::Error naming the file when it is missing or not a SentencePiece model.
  static TextTokenizer load(const std::string& model_path);
  TextTokenizer(TextTokenizer&&) noexcept;
  TextTokenizer& operator=(TextTokenizer&&) noexcept;
  ~TextTokenizer();

  std::vector<int> encode(const std::string& text) const;
  std::string decode(const std::vector<int>& ids) const;
  std::string piece(int id) const;  // raw piece ("▁hello"); Error when id is out of range
  int vocab_size() const;

  // What run_inference prints for one sampled text token (run_inference.py:171-201): "" for the
  // non-printing ids 0 (end of padding) and 3 (padding), else the piece with "▁" -> " ".
  std::string stream_text(int id) const;
  static bool is_printing(int id) { return id != 0 && id != 3; }

  static bool available();  // compiled with sentencepiece
  const std::string& path() const { return path_; }

 private:
  TextTokenizer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
};

}  // namespace mtt::io
