"""Reference for tests/io/text_tokenizer_test.cpp: trains a small SentencePiece model with the
`sentencepiece` Python package (reference venv) on a generated corpus, and records what the Python
processor returns (ids, pieces, decodes) so the C++ wrapper can be compared with it.
Usage: python text_tokenizer_ref.py OUT_DIR   (writes spm.model and ref.json). Test-only."""
import json
import os
import random
import sys

import sentencepiece as spm

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = random.Random(5)
words = ("test time training layers moshi speech model inner monologue audio codec mimi "
         "stream frame token text hello world bonjour la parole est un signal").split()
corpus = os.path.join(out, "corpus.txt")
with open(corpus, "w", encoding="utf-8") as f:
    for _ in range(3000):
        f.write(" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + "\n")
# Moshi's tokenizer reserves 3 as padding (spec §9); mirror that layout: unk 0, bos 1, eos 2, pad 3.
spm.SentencePieceTrainer.train(input=corpus, model_prefix=os.path.join(out, "spm"), vocab_size=50,
                               model_type="unigram", unk_id=0, bos_id=1, eos_id=2, pad_id=3,
                               character_coverage=1.0, num_threads=1, minloglevel=2)
sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "spm.model"))
sentences = ["hello world", "the inner monologue of moshi", "la parole est un signal audio",
             "zebra! unseen words, 123 and ünïcode", ""]
ref = {
    "vocab_size": sp.get_piece_size(),
    "pieces": [sp.id_to_piece(i) for i in range(sp.get_piece_size())],
    "sentences": sentences,
    "ids": [sp.encode(s) for s in sentences],
    "decoded": [sp.decode(sp.encode(s)) for s in sentences],
}
with open(os.path.join(out, "ref.json"), "w", encoding="utf-8") as f:
    json.dump(ref, f, ensure_ascii=False)
print("ok", ref["vocab_size"])
