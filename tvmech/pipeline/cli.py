"""``python -m tvmech.pipeline`` (alias ``python -m tvmech.figures``): recompute and draw every figure. This
module builds the command line from the registered steps (:mod:`tvmech.pipeline.steps`) and hands them to the
scheduler (:mod:`tvmech.pipeline.scheduler`).

Each step's numbers are kept in ``<out>/<name>.json`` together with the settings that produced them
(:mod:`tvmech.pipeline.store`); a later run with the same settings redraws from that file instead of recomputing
(``--force`` to recompute). Steps run in order; an interrupted run resumes at the first step (and task) without
numbers.

The options of each experiment are generated from its config dataclass in :mod:`tvmech.experiments`
(``--<prefix>-<field>``, or the flag named in the field's metadata), with the dataclass's default and
help; ``--tasks``, ``--n-test``, ``--seed`` and ``--ltv-steps`` set that field of every selected
experiment that has it (an experiment's own flag wins). ``--seeds 0 1 2`` runs each step once per seed and
draws mean ± sd over the runs; without ``--seed``/``--seeds`` a step whose saved numbers are multi-seed keeps
their seeds. A default "derived from the model" is resolved from the loaded model (e.g. the middle layer
``n_layers // 2``).

Under ``torchrun --nproc-per-node N -m tvmech.pipeline ...`` the N ranks share each step's tasks and seeds
(``--device cuda``: one GPU per rank); rank 0 alone draws, writes the gallery and prints
(:mod:`tvmech.pipeline.distributed`).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import shutil
import sys
import typing
from pathlib import Path
from types import NoneType, UnionType

import torch

from tvmech.core.models import load_model
from tvmech.core.progress import tqdm
from tvmech.data.tasks import BUILTIN
from tvmech.experiments.common import flag_of, with_flags
from tvmech.pipeline.gallery import key_text, write_index
from tvmech.pipeline.presets import PRESETS, Preset
from tvmech.pipeline.registry import Session, Step
from tvmech.pipeline.scheduler import leads, ranks, run_steps
from tvmech.pipeline.steps import STEPS
from tvmech.pipeline.store import ResultStore

log = logging.getLogger("tvmech.pipeline")
PROG = "python -m tvmech.pipeline"
DEFAULT_MODEL = "SmolLM2-135M-Instruct"
# the common flags: each sets the field of its name in every selected experiment that has it
COMMON: tuple[str, ...] = ("--tasks", "--n-test", "--seed", "--ltv-steps")


def _none_or(kind: type):
    def parse(text: str):
        return None if text.lower() in ("none", "all") else kind(text)
    parse.__name__ = kind.__name__
    return parse


def field_spec(cls: type, f: dataclasses.Field) -> dict:
    """The argparse keywords of a config field: type, nargs, choices, metavar and help with the default.

    Args:
        cls: the config class.
        f: one of its fields.

    Returns:
        Keyword arguments for :meth:`argparse.ArgumentParser.add_argument` (without the flag).
    """
    hint = typing.get_type_hints(cls)[f.name]
    args = typing.get_args(hint)
    optional = isinstance(hint, UnionType) and NoneType in args
    if optional:
        hint = next(a for a in args if a is not NoneType)
    kw: dict = {"default": argparse.SUPPRESS}
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        kw["nargs"] = "+"
    else:
        item = hint
    if item not in (int, float, str):
        raise TypeError(f"{cls.__qualname__}.{f.name}: type {hint} has no command-line form")
    kw["type"] = _none_or(item) if optional and item is not str else item
    if f.metadata.get("choices"):
        kw["choices"] = list(f.metadata["choices"])
        kw["metavar"] = f.name.upper().rstrip("S") if kw.get("nargs") else None
    default = f.default
    shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
    if default is None:
        shown = "derived from the model" if f.name in getattr(cls, "DERIVED", ()) else "None"
    help_ = f.metadata.get("help", "")
    none = "; 'none' for None" if optional and default is not None else ""
    kw["help"] = f"{help_} (default: {shown}{none})"
    kw["help"] = kw["help"].replace("%", "%%")
    if kw.get("metavar") is None:
        kw.pop("metavar", None)
    return kw


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def common_dest(cls: type, f: dataclasses.Field) -> str | None:
    """The dest of the common flag that sets field ``f`` (``--tasks`` sets every ``tasks`` field; a field whose
    metadata names a common flag, e.g. the PEFT ``steps`` with ``--ltv-steps``, is set by that one)."""
    flag = flag_of(cls, f)
    if flag in COMMON:
        return _dest(flag)
    own = f"--{f.name.replace('_', '-')}"
    return _dest(own) if own in COMMON else None


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, list[tuple[str, str]]]]:
    """The parser, and for each generated flag's dest the (step, field) pairs it sets."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, usage="%(prog)s [options]",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), default="quick",
                   help="quick: every step recomputed at reduced scale into figures/quick (minutes on a CPU); "
                        "paper: the committed paper-scale figures in figures/ (a GPU). Flags given win. "
                        "(default: quick)")
    p.add_argument("--list", action="store_true", help="list the steps with their cost per preset, and exit")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: the preset's)")
    p.add_argument("--only", nargs="+", choices=list(STEPS), help="run only these steps (default: all)")
    p.add_argument("--model", default=None, help=f"model source (default: the embedded {DEFAULT_MODEL})")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--force", action="store_true", help="recompute even where saved numbers match the settings")
    p.add_argument("--no-png", action="store_true", help="skip static PNG export")
    g = p.add_argument_group("common experiment settings (default: each experiment's own)")
    g.add_argument("--tasks", nargs="+", choices=list(BUILTIN), metavar="TASK", default=argparse.SUPPRESS,
                   help="built-in tasks of every experiment that has tasks")
    g.add_argument("--n-test", type=_none_or(int), default=argparse.SUPPRESS,
                   help="cap on test queries per task (none: the whole test split)")
    g.add_argument("--seed", type=int, default=argparse.SUPPRESS, help="seed of every experiment")
    g.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="run every step with a seed once per seed (runs kept in <out>/runs/seed<s>) and draw "
                        "mean ± sd over them; not with --seed")
    g.add_argument("--ltv-steps", type=int, default=argparse.SUPPRESS,
                   help="training steps per learned task vector (and of every PEFT method)")
    targets: dict[str, list[tuple[str, str]]] = {}
    seen: dict[str, tuple[str, tuple, argparse.Action]] = {}
    for step, cls in ((name, s.config) for name, s in STEPS.items()):
        group = None
        for f in dataclasses.fields(cls):
            flag = flag_of(cls, f)
            if flag in COMMON:
                continue
            spec = field_spec(cls, f)
            sig = (f.default, spec.get("nargs"), spec["type"].__name__, spec.get("choices"))
            if flag in seen:  # one flag shared by several experiments (e.g. --geometry-layer, --mech-*)
                first, first_sig, action = seen[flag]
                if first_sig != sig:
                    raise TypeError(f"{flag} is shared by {first} and {step} with different defaults or types")
                if step not in action.help:
                    action.help = action.help.replace(" (default:", f" [also {step}] (default:", 1)
            else:
                group = group or p.add_argument_group(f"{step} ({cls.__module__})")
                seen[flag] = (step, sig, group.add_argument(flag, dest=_dest(flag), **spec))
            targets.setdefault(_dest(flag), []).append((step, f.name))
    return p, targets


def configs_from_args(args: argparse.Namespace, targets: dict[str, list[tuple[str, str]]], steps,
                      preset: Preset | None = None) -> dict:
    """Step name -> its experiment config, from the parsed flags and the preset. A field takes, in this order:
    the step's own flag, the common flag (``--tasks``, ...), the preset's value for the step, the preset's common
    value, the config's default.

    Raises:
        ValueError: from a config's validation, naming the bad value (by the flag that set it) and what is valid.
    """
    given: dict[str, dict] = {s: {} for s in steps}
    for dest, pairs in targets.items():
        if hasattr(args, dest):
            for step, name in pairs:
                if step in given:
                    given[step][name] = getattr(args, dest)
    out = {}
    for step in steps:
        cls = STEPS[step].config
        own = preset.values(STEPS[step]) if preset else {}
        common_values = preset.common if preset else {}
        values, by_common = {}, {}
        for f in dataclasses.fields(cls):
            common = common_dest(cls, f)
            if f.name in given[step]:
                values[f.name] = given[step][f.name]
            elif common and hasattr(args, common):
                values[f.name] = getattr(args, common)
                by_common[f.name] = "--" + common.replace("_", "-")
            elif f.name in own:
                values[f.name] = own[f.name]
            elif common in common_values:
                values[f.name] = common_values[common]
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        try:
            out[step] = cls(**values)
        except ValueError as err:
            raise ValueError(with_flags(cls, str(err), by_common)) from err
    return out


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    """Exit with a one-line error when ``device`` is not a torch device this machine has."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        parser.error(f"--device {device!r} is not a torch device ({err}); e.g. cpu, cuda, cuda:1")
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        parser.error(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s); use cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        parser.error(f"--device {device}: only cpu, cuda[:i] and mps are supported")


def check_out(parser: argparse.ArgumentParser, out: Path) -> None:
    """Exit with a one-line error when ``out`` cannot be created or written."""
    try:
        ResultStore(out).check_writable()
    except OSError as err:
        parser.error(f"--out {out}: cannot write there ({err.strerror or err})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; ``args.configs`` holds each selected step's experiment config."""
    p, targets = build_parser()
    args = p.parse_args(argv)
    preset = PRESETS[args.preset]
    args.out = args.out if args.out is not None else preset.out
    if args.seeds is not None and hasattr(args, "seed"):
        p.error(f"--seed {args.seed} and --seeds {' '.join(map(str, args.seeds))}: give one of them")
    check_device(p, args.device)
    check_out(p, args.out)
    # steps whose seed the command line names (--seed, or the step's own seed flag)
    args.seed_named = {step for dest, pairs in targets.items() if hasattr(args, dest) for step, f in pairs
                       if f == "seed"} | (set(STEPS) if hasattr(args, "seed") else set())
    try:
        args.configs = configs_from_args(args, targets, args.only or list(STEPS), preset)
    except ValueError as err:
        p.error(str(err))
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("kaleido", "choreographer", "logistro"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    if args.list:
        print(step_list())
        return 0
    try:
        with ranks(args.device) as device:  # under torchrun: this rank's device
            args.device = device
            if not leads():
                logging.getLogger("tvmech").setLevel(logging.WARNING)
            return _main(args)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; {RESUMES.format(out=args.out, todo='rerun')}", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"{PROG}: error: {disk_full(err, args.out)}", file=sys.stderr)
        return 1


# what an interrupted or failed run leaves: its finished steps and tasks, each file whole (atomic writes)
RESUMES = "nothing half-written is left in {out}: {todo} the same command to resume at the first step (and task) " \
          "without numbers"


def disk_full(err: OSError, out: Path) -> str:
    """The one-line message of a write that found the disk full (``ENOSPC``) or the quota spent (``EDQUOT``):
    the folder written to, its free space, and how to resume.

    Args:
        err: the error (its ``filename`` is the file being written, when known).
        out: the output folder (named when the error names no file).
    """
    folder = Path(err.filename).parent if err.filename else Path(out)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    what = "no space left" if err.errno == errno.ENOSPC else "disk quota exceeded"
    then = RESUMES.format(out=out, todo="free some space and rerun")
    return f"{what} writing to {folder} ({_size(free)} free there); {then}"


def _size(n: int) -> str:
    """``n`` bytes in B, KiB, MiB, GiB or TiB, e.g. ``'1016 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.0f} TiB"


def _main(args: argparse.Namespace) -> int:
    loaded: list = []

    def model():  # loaded lazily: a redraw from saved numbers needs no model
        if not loaded:
            loaded.append(load_model(args.model, device=args.device))
        return loaded[0]

    store = ResultStore(args.out)
    for left in store.remove_partials() if leads() else ():  # what a killed earlier run was writing
        log.info("removed %s, left half-written by an interrupted run", left)
    session = Session(store=store, model=model, model_name=args.model or DEFAULT_MODEL, device=args.device,
                      force=args.force, png=not args.no_png, preset=args.preset)
    steps = [STEPS[name] for name in args.only or STEPS]
    try:
        run_steps(steps, args.configs, session, lambda step: seeds_of(step, args, session),
                  lambda it, **kw: tqdm(it, desc=f"figures ({args.preset})", unit="step", **kw))
        if leads():
            index = write_index(store, f"tvmech figures — {session.model_name} (preset {args.preset})")
            print(summary(session.report))
            print(f"gallery: {index}")
    except ValueError as err:  # a setting the loaded model rejects (e.g. a layer past its depth)
        message = str(err)
        for config in args.configs.values():
            message = with_flags(type(config), message)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    return 0


def seeds_of(step: Step, args: argparse.Namespace, session: Session) -> list[int] | None:
    """The seeds of a step: ``--seeds``; else a seed named on the command line (``None``: the config's); else the
    preset's seeds for the step; else those of its saved multi-seed numbers; else ``None`` (the config's seed)."""
    if args.seeds is not None:
        return args.seeds
    if step.name in args.seed_named or not step.seeded:
        return None
    preset = PRESETS[args.preset].seeds(step)
    if preset:
        return list(preset)
    return None if session.force else session.store.saved_seeds(step.tables[0])


def summary(report: list[dict]) -> str:
    """The table printed at the end of a run: step, computed or reused, seconds, one key number."""
    lines = [f"{'step':<12} {'numbers':<9} {'seconds':>8}  key number", "-" * 72]
    for r in report:
        lines.append(f"{r['step']:<12} {'computed' if r['computed'] else 'reused':<9} {r['seconds']:>8.1f}  "
                     f"{key_number(STEPS[r['step']], r['tables'])}")
    return "\n".join(lines)


def key_number(step: Step, tables: dict[str, list[dict]]) -> str:
    """The key number of the step's first figure that has one, from its table's rows (``""`` when none, or the
    rows are of an older format)."""
    fig = next((f for f in step.figures if f.key_number is not None and f.table in tables), None)
    return "" if fig is None else key_text(fig, tables[fig.table])


def step_list() -> str:
    """``--list``: every step, what it computes, and its cost per preset."""
    lines = [f"{'step':<12} " + " ".join(f"{p:<22}" for p in PRESETS) + " experiment", "-" * 90]
    for name, step in STEPS.items():
        cost = " ".join(f"{step.cost.get(p, '?'):<22}" for p in PRESETS)
        lines.append(f"{name:<12} {cost} {step.experiment.__name__}")
    lines.append("")
    lines += [f"--preset {p.name}: {p.description}; writes {p.out}/" for p in PRESETS.values()]
    return "\n".join(lines)
