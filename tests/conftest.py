"""Fixtures, all as factories: tiny random models of every architecture tvmech claims (norm weights
randomised too), a character-level tokenizer, and the real default model (slow tests, marked ``slow``).

A test that takes an ``arch`` argument runs once per architecture of :data:`ARCHS`.
"""

from __future__ import annotations

import copy
import string

import pytest
import torch

import tvmech as tv
from tvmech.core.models import wrap

torch.set_num_threads(2)

# architecture -> (transformers config class name, config overrides on top of COMMON)
ARCHS: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", {"num_key_value_heads": 2}),
    "qwen2": ("Qwen2Config", {"num_key_value_heads": 2}),
    "qwen3": ("Qwen3Config", {"num_key_value_heads": 2, "head_dim": 16}),
    "mistral": ("MistralConfig", {"num_key_value_heads": 2}),
    "gemma2": ("Gemma2Config", {"num_key_value_heads": 2, "head_dim": 16, "sliding_window": 4}),
    "gemma3": ("Gemma3TextConfig", {"num_key_value_heads": 1, "head_dim": 16, "sliding_window": 4,
                                    "layer_types": ["sliding_attention", "sliding_attention", "full_attention"]}),
    "phi3": ("Phi3Config", {"num_key_value_heads": 2, "pad_token_id": 0}),
    "olmo2": ("Olmo2Config", {"num_key_value_heads": 2}),
    "gpt2": ("GPT2Config", {"n_embd": 64, "n_layer": 3, "n_head": 4, "n_positions": 256}),
    "gpt_neox": ("GPTNeoXConfig", {"num_key_value_heads": 4}),
}
COMMON = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
          "max_position_embeddings": 256, "tie_word_embeddings": False}


def pytest_generate_tests(metafunc):
    if "arch" in metafunc.fixturenames:
        metafunc.parametrize("arch", list(ARCHS))


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
    """A tiny random Llama (weights N(0, 0.2), so that layers matter; norm gains 1)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=2 * d_model,
                      num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv,
                      max_position_embeddings=512, tie_word_embeddings=False, attn_implementation="eager")
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
    return model.eval()


def arch_hf(arch: str, vocab: int, seed: int = 0):
    """A tiny random model of ``arch``: matrices N(0, 0.2), norm gains N(1, 0.3), biases N(0, 0.1)."""
    import transformers

    cls_name, extra = ARCHS[arch]
    kw = {"vocab_size": vocab, **extra} if arch == "gpt2" else {"vocab_size": vocab, **COMMON, **extra}
    cfg = getattr(transformers, cls_name)(**kw)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.normal_(0, 0.2)
            else:
                p.normal_(0, 0.1) if name.endswith("bias") else p.normal_(1.0, 0.3)
    return model.eval()


@pytest.fixture(scope="session")
def make_tokenizer():
    return char_tokenizer


@pytest.fixture(scope="session")
def make_tiny_hf():
    """``make_tiny_hf(**kw)``: the tiny random Hugging Face Llama (see :func:`tiny_hf`)."""
    return tiny_hf


@pytest.fixture(scope="session")
def make_arch():
    """``make_arch(arch) -> (bridge, hf_reference)``: a wrapped tiny model of ``arch`` and an untouched
    Hugging Face copy of the same weights (the reference); cached per architecture."""
    cache: dict[str, tuple] = {}

    def make(arch: str):
        if arch not in cache:
            tok = char_tokenizer()
            hf = arch_hf(arch, len(tok))
            ref = copy.deepcopy(hf)
            cache[arch] = (wrap(hf, tok, f"tiny-{arch}"), ref)
        return cache[arch]

    return make


@pytest.fixture(scope="session")
def make_arch64():
    """``make_arch64(arch) -> bridge``: the tiny model of ``arch`` (same weights as ``make_arch``'s) in float64,
    for identities checked to rounding; cached per architecture."""
    cache: dict[str, object] = {}

    def make(arch: str):
        if arch not in cache:
            tok = char_tokenizer()
            cache[arch] = wrap(arch_hf(arch, len(tok)).double(), tok, f"tiny-{arch}-f64", dtype=torch.float64)
        return cache[arch]

    return make


@pytest.fixture(scope="session")
def tiny():
    tok = char_tokenizer()
    return wrap(tiny_hf(vocab=len(tok)), tok, "tiny-llama")


@pytest.fixture(scope="session")
def default_model():
    return tv.load_model()
