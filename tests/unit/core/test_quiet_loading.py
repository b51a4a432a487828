"""Loading is quiet by default (TransformerLens's "Moving model to device", the "Loading weights" bar);
``verbose=True`` shows what the libraries print."""

from tvmech.core.models import wrap


def test_wrap_prints_nothing_unless_verbose(capfd, make_tokenizer, make_tiny_hf):
    tok = make_tokenizer()
    wrap(make_tiny_hf(vocab=len(tok)), tok, "tiny-quiet")
    out, err = capfd.readouterr()
    assert "Moving model" not in out + err and "Loading weights" not in out + err
    wrap(make_tiny_hf(vocab=len(tok)), tok, "tiny-verbose", verbose=True)
    out, _ = capfd.readouterr()
    assert "Moving model to device" in out


def test_copy_tokenizer_false_hands_the_tokenizer_over(make_tokenizer, make_tiny_hf):
    tok, mine = make_tokenizer(), make_tokenizer()
    assert wrap(make_tiny_hf(vocab=len(tok)), mine, "t").tokenizer is not mine
    assert wrap(make_tiny_hf(vocab=len(tok)), tok, "t", copy_tokenizer=False).tokenizer is tok
