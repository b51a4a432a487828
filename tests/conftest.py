"""Shared fixtures: a tiny random Llama with a character-level tokenizer (fast, offline), and the real
default model (slow tests, marked ``slow``)."""

from __future__ import annotations

import string

import pytest
import torch

import tvmech as tv
from tvmech.core.models import wrap

torch.set_num_threads(2)


def char_tokenizer():
    """A character-level fast tokenizer: every character is one token, no special tokens added."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = string.printable + "éèàçâêîôûœëïüßáíóúñãõ"
    vocab = {"<pad>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate(dict.fromkeys(chars))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")


def tiny_hf(n_layers: int = 3, d_model: int = 64, n_heads: int = 4, n_kv: int = 2, vocab: int = 128, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=2 * d_model,
                      num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv,
                      max_position_embeddings=512, tie_word_embeddings=False, attn_implementation="eager")
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger weights than the default init, so that layers matter
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
    return model.eval()


@pytest.fixture(scope="session")
def tiny():
    tok = char_tokenizer()
    return wrap(tiny_hf(vocab=len(tok)), tok, "tiny-llama")


@pytest.fixture(scope="session")
def default_model():
    return tv.load_model()
