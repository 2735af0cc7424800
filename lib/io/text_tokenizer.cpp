#include "io/text_tokenizer.h"

#include <filesystem>

#include "core/error.h"

#if __has_include(<sentencepiece_processor.h>)
#include <sentencepiece_processor.h>
#define MTT_HAVE_SENTENCEPIECE 1
#else
#define MTT_HAVE_SENTENCEPIECE 0
#endif

namespace mtt::io {

#if MTT_HAVE_SENTENCEPIECE
struct TextTokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
};
#else
struct TextTokenizer::Impl {};
#endif

TextTokenizer::TextTokenizer(TextTokenizer&&) noexcept = default;
TextTokenizer& TextTokenizer::operator=(TextTokenizer&&) noexcept = default;
TextTokenizer::~TextTokenizer() = default;

bool TextTokenizer::available() { return MTT_HAVE_SENTENCEPIECE != 0; }

TextTokenizer TextTokenizer::load(const std::string& model_path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(model_path, ec)) throw Error(model_path, "", "no such tokenizer model file");
#if MTT_HAVE_SENTENCEPIECE
  TextTokenizer t;
  t.impl_ = std::make_unique<Impl>();
  t.path_ = model_path;
  auto st = t.impl_->sp.Load(model_path);
  if (!st.ok()) throw Error(model_path, "", "not a SentencePiece model: " + st.ToString());
  if (t.impl_->sp.GetPieceSize() <= 0) throw Error(model_path, "", "SentencePiece model has no pieces");
  return t;
#else
  throw Error(model_path, "", "built without sentencepiece (install libsentencepiece-dev and reconfigure)",
              ErrorKind::Usage);
#endif
}

#if MTT_HAVE_SENTENCEPIECE
std::vector<int> TextTokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  auto st = impl_->sp.Encode(text, &ids);
  if (!st.ok()) throw Error(path_, "", "encode failed: " + st.ToString(), ErrorKind::Internal);
  return ids;
}

std::string TextTokenizer::decode(const std::vector<int>& ids) const {
  for (int id : ids) {
    if (id < 0 || id >= vocab_size()) {
      throw Error(path_, "token " + std::to_string(id), "id out of range [0, " + std::to_string(vocab_size()) + ")",
                  ErrorKind::Usage);
    }
  }
  std::string out;
  auto st = impl_->sp.Decode(ids, &out);
  if (!st.ok()) throw Error(path_, "", "decode failed: " + st.ToString(), ErrorKind::Internal);
  return out;
}

std::string TextTokenizer::piece(int id) const {
  if (id < 0 || id >= vocab_size()) {
    throw Error(path_, "token " + std::to_string(id), "id out of range [0, " + std::to_string(vocab_size()) + ")",
                ErrorKind::Usage);
  }
  return impl_->sp.IdToPiece(id);
}

int TextTokenizer::vocab_size() const { return impl_->sp.GetPieceSize(); }
#else
// Unreachable: load() throws when sentencepiece is missing, so no instance exists.
namespace {
[[noreturn]] void no_spm() { throw Error("", "", "built without sentencepiece", ErrorKind::Internal); }
}  // namespace
std::vector<int> TextTokenizer::encode(const std::string&) const { no_spm(); }
std::string TextTokenizer::decode(const std::vector<int>&) const { no_spm(); }
std::string TextTokenizer::piece(int) const { no_spm(); }
int TextTokenizer::vocab_size() const { no_spm(); }
#endif

std::string TextTokenizer::stream_text(int id) const {
  if (!is_printing(id)) return "";
  std::string p = piece(id);
  static const std::string kSpace = "\xE2\x96\x81";  // U+2581 "▁"
  std::string out;
  for (size_t i = 0; i < p.size();) {
    if (p.compare(i, kSpace.size(), kSpace) == 0) {
      out += ' ';
      i += kSpace.size();
    } else {
      out += p[i++];
    }
  }
  return out;
}

}  // namespace mtt::io
