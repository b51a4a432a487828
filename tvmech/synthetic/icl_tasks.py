"""Synthetic in-context tasks and their prompt formats (Yang et al. 2025, "Task Vectors in In-Context
Learning: Emergence, Formation, and Benefit").

Every prompt holds ``n_demos`` demonstrations ``(x_i, y_i)`` of one task drawn per prompt, then a query
``x_q``. Three tasks:

* ``offset`` (discrete): ``y = (x + k) mod V`` with ``x`` uniform in ``0..V-1`` and the offset ``k``
  uniform in ``0..n_offsets-1``, one ``k`` per prompt;
* ``linear`` (continuous): ``y = w·x`` with ``x ~ N(0, I_dim)`` and ``w ~ N(0, I_dim / dim)``;
* ``sinusoid`` (continuous): ``y = a sin(b x + c)`` with ``x ~ U(-x_range, x_range)``,
  ``a ~ U(0.5, 2)``, ``b ~ U(0.5, 2)``, ``c ~ U(0, π)``.

Prompt format.

* Discrete: ordinary token ids. Token ``0`` is padding, ``1`` is the arrow ``→`` that marks "an output
  follows", ``2`` is the separator ``,`` that marks "an input follows", and value ``v`` is token
  ``v + 3``. A prompt reads ``x1 → y1 , x2 → y2 , … , xq →`` (in text: ``"3 → 5 , 7 → 9 , 2 →"``);
  ``y_i`` is predicted at the arrow before it (position ``4 i + 1``).
* Continuous: one input vector per x and per y, ``[x (dim), y, is_x, is_y]``: an x token is
  ``[x, 0, 1, 0]`` and a y token ``[0, y, 0, 1]``, so the two indicator channels mark inputs and
  outputs. A prompt reads ``x1 y1 x2 y2 … xq``; ``y_i`` is predicted at ``x_i`` (position ``2 i``).

In both formats the *query position* (where the task vector is read and written) is the position that
predicts ``y_q``: the last arrow (discrete) or the last x (continuous). The *query-only* prompt holds
the query alone: ``xq →`` (two tokens) or ``xq`` (one vector).

Robustness options of :meth:`SyntheticTask.sample`: ``label_noise`` replaces that fraction of the
demonstration outputs (never the query's) by random ones (a uniform value, or ``N(0, Var y)``);
``ood`` draws the query input from outside the demonstrations' input range (offset: demonstrations
from the lower half of the values, the query from the upper half; linear: query inputs scaled by 3;
sinusoid: demonstrations from ``[-x_range, 0]``, the query from ``[0, x_range]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

TASKS = ("offset", "linear", "sinusoid")
PAD, ARROW, SEP, VALUE0 = 0, 1, 2, 3


@dataclass
class SyntheticBatch:
    """Sampled prompts: ``n_demos`` demonstrations then one query per row.

    ``xs`` is ``[batch, n_demos + 1]`` (long) for the discrete task, ``[batch, n_demos + 1, dim]``
    otherwise; ``ys`` is ``[batch, n_demos + 1]`` (long or float); ``params`` the task parameters per
    row (``k``; ``w``; ``(a, b, c)``); ``clean_ys`` the outputs before label noise.
    """

    xs: Tensor
    ys: Tensor
    params: Float[Tensor, "batch n_params"]
    clean_ys: Tensor

    def __len__(self) -> int:
        return self.xs.shape[0]

    @property
    def n_demos(self) -> int:
        """Demonstrations per row (the last position is the query)."""
        return self.xs.shape[1] - 1

    def to(self, device) -> SyntheticBatch:
        """The batch with every tensor on ``device``."""
        return SyntheticBatch(*(t.to(device) for t in (self.xs, self.ys, self.params, self.clean_ys)))


@dataclass(frozen=True)
class SyntheticTask:
    """One synthetic task family; see the module docstring for the tasks and their prompt format."""

    name: str = "offset"
    """The family: ``"offset"`` (discrete), ``"linear"`` or ``"sinusoid"``."""
    n_values: int = 16
    """offset: V, the number of values."""
    n_offsets: int = 8
    """offset: the offset k is drawn from ``0..n_offsets-1``."""
    dim: int = 4
    """linear: the input dimension."""
    x_range: float = 5.0
    """sinusoid: x ~ U(-x_range, x_range)."""

    def __post_init__(self) -> None:
        if self.name not in TASKS:
            raise ValueError(f"unknown synthetic task {self.name!r}; valid: {', '.join(TASKS)}")
        if self.n_values < 2 or not 1 <= self.n_offsets <= self.n_values:
            raise ValueError(f"need n_values >= 2 and 1 <= n_offsets <= n_values "
                             f"(got {self.n_values}, {self.n_offsets})")
        if self.dim < 1 or self.x_range <= 0:
            raise ValueError(f"dim must be >= 1 and x_range > 0 (got {self.dim}, {self.x_range})")

    # ----------------------------------------------------------------- shapes
    @property
    def discrete(self) -> bool:
        """Whether inputs and outputs are tokens (the offset task)."""
        return self.name == "offset"

    @property
    def x_dim(self) -> int:
        """The width of one input ``x``."""
        return {"offset": 1, "linear": self.dim, "sinusoid": 1}[self.name]

    @property
    def d_in(self) -> int:
        """Width of one continuous input vector ``[x, y, is_x, is_y]`` (0 for the discrete task)."""
        return 0 if self.discrete else self.x_dim + 3

    @property
    def vocab_size(self) -> int:
        """Tokens of the discrete task: the special tokens then the ``n_values`` values."""
        return VALUE0 + self.n_values

    @property
    def param_names(self) -> tuple[str, ...]:
        """The names of a row's task parameters (``params`` columns)."""
        names = {"offset": ("k",), "linear": tuple(f"w{i}" for i in range(self.dim)), "sinusoid": ("a", "b", "c")}
        return names[self.name]

    # ----------------------------------------------------------------- sampling
    def sample(self, batch_size: int, n_demos: int, generator: torch.Generator | None = None, *,
               label_noise: float = 0.0, ood: bool = False, params: Tensor | None = None) -> SyntheticBatch:
        """``batch_size`` prompts of ``n_demos`` demonstrations and a query (seeded by ``generator``).

        ``params`` fixes the task parameters of every row (``[batch, n_params]``) instead of drawing them.
        """
        check_n_demos(n_demos)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= label_noise <= 1.0:
            raise ValueError(f"label_noise must be in [0, 1], got {label_noise}")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        B, n = batch_size, n_demos + 1
        if self.name == "offset":
            V = self.n_values
            k = torch.randint(0, self.n_offsets, (B, 1), generator=g) if params is None else params[:, :1].long()
            if ood:
                lo, hi = V // 2, V - V // 2
                xs = torch.cat([torch.randint(0, lo, (B, n - 1), generator=g),
                                lo + torch.randint(0, hi, (B, 1), generator=g)], 1)
            else:
                xs = torch.randint(0, V, (B, n), generator=g)
            clean = (xs + k) % V
            noisy = torch.randint(0, V, (B, n), generator=g)
            par = k.float()
        elif self.name == "linear":
            w = torch.randn(B, self.dim, generator=g) / math.sqrt(self.dim) if params is None else params.float()
            xs = torch.randn(B, n, self.dim, generator=g)
            if ood:
                xs[:, -1] *= 3.0
            clean = torch.einsum("bnd,bd->bn", xs, w)
            noisy = torch.randn(B, n, generator=g)  # Var(w·x) = 1
            par = w
        else:
            if params is None:
                u = torch.rand(B, 3, generator=g)
                par = torch.stack([0.5 + 1.5 * u[:, 0], 0.5 + 1.5 * u[:, 1], math.pi * u[:, 2]], 1)
            else:
                par = params.float()
            u = torch.rand(B, n, 1, generator=g)
            if ood:
                xs = torch.cat([-self.x_range * u[:, :-1], self.x_range * u[:, -1:]], 1)
            else:
                xs = self.x_range * (2 * u - 1)
            clean = par[:, :1] * torch.sin(par[:, 1:2] * xs[..., 0] + par[:, 2:3])
            noisy = torch.randn(B, n, generator=g) * math.sqrt(1.75 / 2)  # Var y = E[a^2] / 2
        corrupt = torch.rand(B, n, generator=g) < label_noise
        corrupt[:, -1] = False
        ys = torch.where(corrupt, noisy, clean)
        return SyntheticBatch(xs, ys, par, clean)

    def fixed_params(self, value: float | Tensor, batch_size: int) -> Tensor:
        """A ``[batch, n_params]`` parameter tensor with the same task for every row."""
        v = torch.as_tensor(value, dtype=torch.float32).reshape(1, -1)
        if v.shape[1] != len(self.param_names):
            raise ValueError(f"task {self.name!r} has parameters {self.param_names}; got {v.shape[1]} values")
        return v.expand(batch_size, -1).clone()

    def param_classes(self, params: Tensor, n_bins: int = 8) -> Int[Tensor, " batch"]:
        """Integer class of each row's task: ``k`` for ``offset``; otherwise the quantile bin of the
        first parameter (``w0`` or the amplitude ``a``), for cluster scores and colours."""
        if self.discrete:
            return params[:, 0].long()
        p = params[:, 0].contiguous()
        edges = torch.quantile(p, torch.linspace(0, 1, n_bins + 1)[1:-1])
        return torch.bucketize(p, edges)

    # ----------------------------------------------------------------- formats
    def sequence(self, batch: SyntheticBatch, *, with_query_label: bool = False) -> Tensor:
        """The prompt of each row (tokens ``[batch, seq]`` or vectors ``[batch, seq, d_in]``)."""
        xs, ys = batch.xs, batch.ys
        B, n = ys.shape
        dev = xs.device
        if self.discrete:
            cols = []
            for i in range(n):
                cols += [xs[:, i] + VALUE0, torch.full((B,), ARROW, device=dev)]
                if i < n - 1 or with_query_label:
                    cols.append(ys[:, i] + VALUE0)
                if i < n - 1:
                    cols.append(torch.full((B,), SEP, device=dev))
            return torch.stack(cols, 1)
        xv = torch.zeros(B, n, self.d_in, device=dev)
        xv[..., : self.x_dim] = xs
        xv[..., -2] = 1.0
        yv = torch.zeros(B, n, self.d_in, device=dev)
        yv[..., self.x_dim] = ys.float()
        yv[..., -1] = 1.0
        seq = torch.stack([xv, yv], 2).reshape(B, 2 * n, self.d_in)
        return seq if with_query_label else seq[:, :-1]

    def query_sequence(self, batch: SyntheticBatch) -> Tensor:
        """The query-only prompt of each row: ``xq →`` or the vector of ``xq``."""
        q = SyntheticBatch(batch.xs[:, -1:], batch.ys[:, -1:], batch.params, batch.clean_ys[:, -1:])
        return self.sequence(q)

    def pred_positions(self, n_examples: int) -> Int[Tensor, " n_examples"]:
        """Position that predicts ``y_i`` for each of ``n_examples`` examples (the last is the query)."""
        step = 4 if self.discrete else 2
        return torch.arange(n_examples) * step + (1 if self.discrete else 0)

    def token_text(self, token: int) -> str:
        """A token of the discrete task as text: ``<pad>``, ``→``, ``,`` or the value it stands for."""
        return {PAD: "<pad>", ARROW: "→", SEP: ","}.get(token, str(token - VALUE0))


def check_n_demos(n_demos: int) -> int:
    if not isinstance(n_demos, int) or n_demos < 1:
        raise ValueError(f"a context must hold at least one complete example (x, y); got n_demos={n_demos!r}")
    return n_demos


def offset_tokenizer(n_values: int):
    """Word-level tokenizer of the discrete format: ``<pad>``, ``→``, ``,`` then ``"0" .. "V-1"``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "→": ARROW, ",": SEP, **{str(v): VALUE0 + v for v in range(n_values)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<pad>")


def offset_text_task(task: SyntheticTask, k: int):
    """The offset task with a fixed ``k`` as a text :class:`tvmech.Task` (one example per input value),
    so that tvmech's prompt, evaluation, extraction and LTV tools apply to a discrete synthetic model."""
    from tvmech.data.tasks import Example, Task, Template

    if not task.discrete:
        raise ValueError(f"only the discrete task has a text form; {task.name!r} is continuous")
    if not 0 <= k < task.n_values:
        raise ValueError(f"offset k={k} is out of range: valid 0..{task.n_values - 1}")
    V = task.n_values
    ex = tuple(Example(str(x), str((x + k) % V)) for x in range(V))
    return Task(name=f"offset_k{k}", examples=ex, template=Template(query="{input} →", answer=" {output}",
                separator=" , "), description=f"y = (x + {k}) mod {V}")
