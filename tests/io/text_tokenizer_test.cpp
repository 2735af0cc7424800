// SentencePiece wrapper (lib/io/text_tokenizer.h) against the Python sentencepiece package on a
// model that package trains here (tests/io/text_tokenizer_ref.py, reference venv).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "io/text_tokenizer.h"
#include "test_util.h"

namespace {

std::string ref_python() {
  if (const char* p = std::getenv("MTT_REF_PYTHON")) return p;
  return MTT_REF_PYTHON;
}

TEST(TextTokenizer, MatchesPythonSentencePiece) {
  if (!mtt::io::TextTokenizer::available()) GTEST_SKIP() << "built without sentencepiece";
  const std::string py = ref_python();
  if (py.empty() || !std::filesystem::exists(py)) MTT_REFERENCE_UNAVAILABLE("MTT_REF_PYTHON missing: " + py);
  if (mtt::test::run_command(py + " -c 'import sentencepiece'").status != 0)
    MTT_REFERENCE_UNAVAILABLE("no sentencepiece Python package in " + py);
  mtt::test::TempDir dir;
  auto r = mtt::test::run_command(py + " " + (mtt::test::source_dir() / "tests/io/text_tokenizer_ref.py").string() +
                                  " " + dir.path().string());
  ASSERT_EQ(r.status, 0) << r.err;
  auto ref = nlohmann::json::parse(mtt::read_file((dir / "ref.json").string()));

  auto tok = mtt::io::TextTokenizer::load((dir / "spm.model").string());
  ASSERT_EQ(tok.vocab_size(), ref["vocab_size"].get<int>());
  for (int i = 0; i < tok.vocab_size(); ++i) EXPECT_EQ(tok.piece(i), ref["pieces"][i].get<std::string>()) << i;
  for (size_t s = 0; s < ref["sentences"].size(); ++s) {
    const std::string text = ref["sentences"][s].get<std::string>();
    SCOPED_TRACE(text);
    std::vector<int> ids = tok.encode(text);
    EXPECT_EQ(ids, ref["ids"][s].get<std::vector<int>>());
    EXPECT_EQ(tok.decode(ids), ref["decoded"][s].get<std::string>());
  }
  // Streaming print (run_inference.py): pieces with "▁" become spaces, 0 and 3 print nothing.
  std::string printed;
  for (int id : tok.encode("hello world")) printed += tok.stream_text(id);
  EXPECT_EQ(printed, " hello world");
  EXPECT_EQ(tok.stream_text(0), "");
  EXPECT_EQ(tok.stream_text(3), "");
  EXPECT_THROW(tok.piece(tok.vocab_size()), mtt::Error);
  EXPECT_THROW(tok.decode({-1}), mtt::Error);
}

TEST(TextTokenizer, BadModelFilesAreErrorsNamingTheFile) {
  mtt::test::TempDir dir;
  const std::string missing = (dir / "none.model").string();
  const std::string junk = (dir / "junk.model").string();
  mtt::write_file_atomic(junk, "definitely not a protobuf \x01\x02\x03");
  for (const auto& p : {missing, junk}) {
    try {
      mtt::io::TextTokenizer::load(p);
      ADD_FAILURE() << "no error for " << p;
    } catch (const mtt::Error& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  }
}

}  // namespace
