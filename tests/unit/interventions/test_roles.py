"""Positions named by role ("query", "input_first", "before_input"), resolved per prompt: where the batch puts
them, injection there equal to injection at the same absolute index (every architecture, both paths, padded
batches), LTV training at a role (eager, static shapes, frozen prefix), and the clear errors."""

from dataclasses import replace

import pytest
import torch

import tvmech as tv
from tvmech.analysis.evaluation import final_residual
from tvmech.core.fast import fast_path
from tvmech.data.prompts import encode, make_prompts, prompt_roles
from tvmech.data.tasks import Example, Task, Template
from tvmech.interventions.injection import Injection
from tvmech.interventions.sites import ROLES, Context, as_positions, resolve_positions
from tvmech.interventions.task_vector import TaskVector
from tvmech.methods.learned import LTVConfig, learn_task_vector, ltv_objective
from tvmech.methods.training import prepare_data, row_nll, take_rows

WORDS = Task("antonym", tv.builtin_task("antonym").examples[:40])  # "Q: {input}\nA:"
# the input starts the query: no token before it in a zero-shot prompt
PAIRS = Task("pairs", tuple(Example(f"{a} and {b}", "same" if a == b else "other")
                            for a in ("red", "blue", "tall") for b in ("red", "blue", "tall", "big")),
             Template("{input}\nRelation:"), labels=("same", "other"))


def _check_roles(tokenizer, task, prompts, batch):
    for r, p in enumerate(prompts):
        first, before = int(batch.roles["input_first"][r]), int(batch.roles["before_input"][r])
        assert tokenizer.decode(batch.tokens[r, first : first + 1]) == p.query[0]  # one character per token
        assert before == first - 1 and first <= int(batch.query_pos[r])
        assert p.text[p.span[0] : p.span[1]] == p.query and first == p.span[0]


def test_role_positions_of_zero_and_k_shot_prompts(tiny):
    tok = tv.adapt(tiny).tokenizer
    for task in (WORDS, PAIRS):
        for k in (0, 2):
            prompts = make_prompts(task, task.examples[:6], k, task.examples[6:], seed=1)
            batch = encode(tok, task, prompts)
            assert set(batch.roles) == set(ROLES) - {"query"}
            _check_roles(tok, task, prompts, batch)
            if k == 0 and task is PAIRS:  # the input starts the prompt: undefined
                assert (batch.roles["before_input"] == -1).all() and (batch.roles["input_first"] == 0).all()
                with pytest.raises(ValueError, match="role 'before_input' is undefined for prompt 0"):
                    resolve_positions(("before_input",), batch.query_pos, batch.tokens.shape[1], batch.roles)
            if k == 0 and task is WORDS:  # "Q: x": Q, :, space, x
                assert batch.roles["input_first"].tolist() == [3] * 6


class _NoOffsets:
    """A tokenizer that gives no character offsets (as a slow tokenizer): the prefix-encoding fallback."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, text, **kw):
        if kw.get("return_offsets_mapping"):
            raise NotImplementedError("no offsets")
        return self.tok(text, **kw)


def test_decoding_fallback_gives_the_offsets_answer(tiny):
    tok = tv.adapt(tiny).tokenizer
    for task in (WORDS, PAIRS):
        for p in make_prompts(task, task.examples[:6], 2, task.examples[6:], seed=1):
            ids = tok(p.text, add_special_tokens=False)["input_ids"]
            assert prompt_roles(_NoOffsets(tok), p, ids) == prompt_roles(tok, p, ids)


def _final(model, batch, inj):
    with torch.no_grad():
        return final_residual(model, batch, inj)


def test_injection_at_a_role_equals_injection_at_its_index_on_every_architecture(arch, make_arch):
    model, _ = make_arch(arch)
    ad = tv.adapt(model)
    torch.manual_seed(0)
    v = torch.randn(ad.d_model) * 3
    prompts = make_prompts(WORDS, WORDS.examples[:4], 1, WORDS.examples[4:], seed=3)
    batch = encode(ad.tokenizer, WORDS, prompts)
    assert len(set(batch.roles["input_first"].tolist())) > 1  # rows differ: per-row resolution in play
    for fast in (True, False):
        with fast_path(fast):
            for role in ("input_first", "before_input", "query"):
                padded = _final(model, batch, Injection.single(v, 1, role))
                for r, p in enumerate(prompts):  # each prompt alone, unpadded: the role's absolute index
                    one = encode(ad.tokenizer, WORDS, [p])
                    at = int(one.query_pos[0]) if role == "query" else int(one.roles[role][0])
                    by_role = _final(model, one, Injection.single(v, 1, role))
                    by_index = _final(model, one, Injection.single(v, 1, at))
                    assert torch.equal(by_role, by_index)
                    clean = _final(model, one, Injection.single(torch.zeros_like(v), 1, at))
                    assert torch.equal(by_role[0, :at], clean[0, :at])  # causal: nothing before the site moves
                    assert not torch.allclose(by_role[0, at], clean[0, at], atol=1e-4)
                    q = int(one.query_pos[0]) + 1  # padding-safe: the padded row is the unpadded prompt
                    torch.testing.assert_close(padded[r, :q], by_role[0], rtol=1e-5, atol=1e-5)


def test_ltv_loss_at_a_role_is_each_prompt_s_loss_at_its_index(tiny):
    """The training objective at a role (per-row positions, the prefix before the first written position
    frozen, static shapes as in a CUDA graph) equals, row by row, the loss with the vector at that row's own
    absolute index."""
    ad = tv.adapt(tiny)
    examples = WORDS.examples[:8]
    data = prepare_data(ad, WORDS, examples, 1, k=1, demos=WORDS.examples[8:], seed=2)
    firsts = data.batch.roles["input_first"]
    assert len(set(firsts.tolist())) > 1 and int(firsts.min()) > 0  # per-row positions, a prefix to freeze
    for positions in (("input_first",), ("before_input", "input_first", "query"), ("input_first", -2)):
        obj, _ = ltv_objective(ad, data, [(1, 2)], positions, config=LTVConfig())
        torch.manual_seed(1)
        with torch.no_grad():
            obj.groups[0][0].normal_(0, 1.0)
        theta = obj.values()[0]
        idx = torch.arange(len(examples))
        with torch.no_grad():
            eager = obj.row_loss(data, idx)[0]
            static = obj.row_loss(replace(data, static=True), idx)[0]
            for r in range(len(examples)):
                resid, batch = take_rows(data, idx[r : r + 1])
                at = resolve_positions(positions, batch.query_pos, resid.shape[1], batch.roles)[0].tolist()
                want = row_nll(ad, resid, batch, 1, Injection(theta, (1, 2), at))
                torch.testing.assert_close(eager[r], want[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(static, eager, rtol=1e-5, atol=1e-6)


def test_ltv_trained_at_a_role_equals_ltv_at_the_same_index(tiny):
    """Zero-shot "Q: x" prompts put every input's first token at index 3: the two trainings are one."""
    cfg = LTVConfig(steps=4, batch_size=4, eval_every=2, lr=1e-2)
    a = learn_task_vector(tiny, WORDS, layers=(1,), positions=("before_input", "input_first"), config=cfg,
                          progress=False)
    b = learn_task_vector(tiny, WORDS, layers=(1,), positions=(2, 3), config=cfg, progress=False)
    assert a.positions == ("before_input", "input_first")
    torch.testing.assert_close(a.vectors, b.vectors, rtol=1e-5, atol=1e-7)
    assert a.vectors.norm() > 0


def test_role_vectors_save_and_load(tiny, tmp_path):
    vec = TaskVector.for_model(tiny, torch.randn(1, 2, 64), (1,), ("input_first", "query"))
    vec.save(tmp_path / "v")
    back = TaskVector.load(tmp_path / "v", tiny)
    assert back.positions == ("input_first", "query") and torch.equal(back.vectors, vec.vectors)


def test_clear_errors(tiny):
    assert as_positions("input_first") == ("input_first",) and as_positions((-1, "query")) == (-1, "query")
    with pytest.raises(ValueError, match="position 'first' is not a role: valid roles are query, input_first"):
        as_positions(("first",))
    with pytest.raises(ValueError, match="must not repeat"):
        Injection(torch.zeros(1, 2, 64), (1,), ("query", -1))
    batch = encode(tv.adapt(tiny).tokenizer, WORDS, make_prompts(WORDS, WORDS.examples[:2], 0))
    inj = Injection.single(torch.ones(64), 1, "input_first")
    with pytest.raises(ValueError, match="'input_first' names a role of the prompt, but this pass has no role"):
        with torch.no_grad(), inj.apply(tiny, batch.query_pos):
            tv.adapt(tiny).residual(batch.tokens, 2)
    with torch.no_grad(), tv.adapt(tiny).hooks(inj.hooks(tiny, ctx=Context.of(batch))):  # with them: fine
        tv.adapt(tiny).residual(batch.tokens, 2)


@pytest.mark.slow
def test_input_first_on_the_default_model_for_every_builtin_task(default_model):
    """A BPE tokenizer merges the space before the input into its first word: that token is the input's first."""
    tok = tv.adapt(default_model).tokenizer
    for task in tv.builtin_tasks():
        sp = task.splits(0)
        for k in (0, 5):
            prompts = make_prompts(task, sp.test[:8], k, sp.train, seed=0)
            batch = encode(tok, task, prompts)
            for r, p in enumerate(prompts):
                first = int(batch.roles["input_first"][r])
                piece = tok.decode(batch.tokens[r, first : first + 1]).lstrip()
                assert piece and p.query.startswith(piece), (task.name, k, piece, p.query)
                before = tok.decode(batch.tokens[r, : first])  # the tokens before hold the text before the input
                assert p.text[: p.span[0]].startswith(before) and len(before) >= len(p.text[: p.span[0]].rstrip())
                ids = batch.tokens[r, : int(batch.query_pos[r]) + 1].tolist()
                assert prompt_roles(_NoOffsets(tok), p, ids) == prompt_roles(tok, p, ids)
            undefined = (batch.roles["before_input"] < 0).any()
            assert bool(undefined) == (k == 0 and task.template.query.startswith("{input}")), task.name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ltv_at_roles_in_a_cuda_graph_equals_the_eager_run(make_tiny_hf, make_tokenizer):
    """Per-row role positions inside the captured step (k-shot prompts: the input moves from row to row)."""
    from tvmech.core.models import wrap

    tok = make_tokenizer()
    model = wrap(make_tiny_hf(vocab=len(tok)), tok, "tiny-cuda", device="cuda")
    cfg = LTVConfig(steps=8, batch_size=4, eval_every=4, lr=1e-2, k=1)
    roles, got = ("before_input", "input_first", "query"), {}
    for graphs in (True, False):
        with fast_path(True, cuda_graphs=graphs):
            got[graphs] = learn_task_vector(model, WORDS, layers=(1, 2), positions=roles, config=cfg,
                                            progress=False).vectors
    torch.testing.assert_close(got[True], got[False], rtol=1e-4, atol=1e-6)
