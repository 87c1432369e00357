"""VoxCPM's text tokenizer: the checkpoint's `tokenizer.json`, with CJK words split into characters.

The reference wraps MiniCPM-4's Llama tokenizer so that any token made only of two or more CJK
ideographs (after dropping the SentencePiece word marker) is replaced by its single characters,
and it adds no BOS/EOS. This reproduces that with the `tokenizers` library alone.
"""

from __future__ import annotations

import os

from tokenizers import Tokenizer

_WORD_MARKER = "\u2581"  # SentencePiece's "▁"


def _is_cjk_word(token: str) -> bool:
  return len(token) >= 2 and all("\u4e00" <= ch <= "\u9fff" for ch in token)


class VoxCPMTokenizer:

  def __init__(self, tokenizer: Tokenizer, source: str = "<tokenizer>"):
    self._tokenizer = tokenizer
    self.source = source
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    self._cjk_words = {token for token in vocab if _is_cjk_word(token)}
    unk = getattr(tokenizer.model, "unk_token", None)
    self._unk_id = vocab.get(unk) if unk is not None else None

  @classmethod
  def from_dir(cls, model_dir: str) -> "VoxCPMTokenizer":
    path = os.path.join(model_dir, "tokenizer.json")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{model_dir} has no tokenizer.json (VoxCPM model folders ship one)")
    try:
      return cls(Tokenizer.from_file(path), source=path)
    except Exception as e:  # the Rust library raises plain Exceptions for malformed files
      raise ValueError(f"could not read {path} as a tokenizers JSON file: {e}") from None

  @property
  def vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size(with_added_tokens=True)

  def tokenize(self, text: str) -> list[str]:
    if not isinstance(text, str):
      raise TypeError(f"text must be a str, got {type(text).__name__}")
    tokens = []
    for token in self._tokenizer.encode(text, add_special_tokens=False).tokens:
      word = token.replace(_WORD_MARKER, "")
      tokens.extend(list(word) if word in self._cjk_words else [token])
    return tokens

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without BOS/EOS."""
    ids = []
    for token in self.tokenize(text):
      index = self._tokenizer.token_to_id(token)
      if index is None:
        if self._unk_id is None:
          raise ValueError(f"token {token!r} of {text!r} is not in the vocabulary of {self.source}, "
                           "which has no unknown token")
        index = self._unk_id
      ids.append(index)
    return ids

  __call__ = encode
