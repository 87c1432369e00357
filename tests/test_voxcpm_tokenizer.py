"""Our tokenizer (tokenizers library only) equals the reference's wrapped LlamaTokenizerFast."""

from __future__ import annotations

import pytest

from tts_jax.data.voxcpm_tokenizer import VoxCPMTokenizer
from voxcpm_reference import import_reference, write_tokenizer_files

TEXTS = [
    "hello world this is a test",
    "你好世界",
    "今天天气很好，我们是好朋友。",
    "Hello 你好 World 世界!",
    "  leading and  double spaces ",
    "(A warm, calm female voice)The quick brown fox.",
    "语音合成模型 ok",
    "unknown chars: ß∂ƒ 😀 Ω",
    "",
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  folder = str(tmp_path_factory.mktemp("tok"))
  write_tokenizer_files(folder)
  return folder


def test_matches_reference_wrapper(tokenizer_dir):
  import_reference()
  from transformers import LlamaTokenizerFast
  from voxcpm.model.utils import mask_multichar_chinese_tokens

  reference = mask_multichar_chinese_tokens(LlamaTokenizerFast.from_pretrained(tokenizer_dir))
  ours = VoxCPMTokenizer.from_dir(tokenizer_dir)
  split_something = False
  for text in TEXTS:
    assert ours.encode(text) == reference(text), text
    assert ours.tokenize(text) == reference.tokenize(text), text
    split_something |= len(ours.tokenize(text)) > len(ours._tokenizer.encode(text, add_special_tokens=False).tokens)
  assert split_something, "the test vocabulary should contain multi-character CJK tokens to split"


def test_no_bos_eos_and_cjk_split(tokenizer_dir):
  tok = VoxCPMTokenizer.from_dir(tokenizer_dir)
  ids = tok.encode("你好")
  assert 1 not in ids and 2 not in ids  # <s>, </s>
  # No output token is a multi-character CJK word of the vocabulary (those are split into characters).
  for text in TEXTS:
    assert not any(t.replace("\u2581", "") in tok._cjk_words for t in tok.tokenize(text))
  assert "世界" in tok._cjk_words and tok.tokenize("世界")[-2:] == ["世", "界"]


def test_missing_tokenizer_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="has no tokenizer.json"):
    VoxCPMTokenizer.from_dir(str(tmp_path))
  (tmp_path / "tokenizer.json").write_text("{broken")
  with pytest.raises(ValueError, match="could not read"):
    VoxCPMTokenizer.from_dir(str(tmp_path))
