"""Figure steps of the high-level mechanism (issue 5): logit lens, the linear map W_TV(l), rotation vs scaling.

* ``lens``: logit lens at the query position over all layers, for zero-shot, ICL and LTV-injected
  prompts of ``--lens-tasks`` (the LTVs at ``--lens-tv-layer``, cached under ``<out>/vectors``);
  ``logit_lens.{html,png,json,csv}``.
* ``linear``: for every task of ``--linear-tasks`` and layer of ``--linear-layers``, the LTV at that layer
  (:func:`tvmech.figures.cache.layer_vectors` trains and caches missing ones: about 1.5–4 min each on a
  CPU), the noise fit of W_TV(l) on the ``--map-prompts`` shortest training prompts, its exact Jacobian,
  the polar decomposition, and the reconstructed TV on the test split; ``linear_map.{html,png,json,csv}``
  (the reconstructed-TV figure and every number), ``rotation_scaling`` (the rotation-to-scaling
  transition) and ``rotation_alignment`` (alignment before and after the rotation). The default subset
  (3 tasks × every 6th layer from 3, 2 fit prompts) keeps a CPU run to about half an hour.

Each step only orchestrates: compute (or reuse saved numbers), build the figure, save it.
"""

from __future__ import annotations

import argparse
import time

from tvmech.analysis.lens import lens_conditions
from tvmech.analysis.linear_map import MapConfig, compare_maps, exact_jacobian, fit_prompts, fit_tv_map, reconstruction_report
from tvmech.analysis.polar import polar_report
from tvmech.data.tasks import BUILTIN, builtin_tasks
from tvmech.figures import lens_plots
from tvmech.figures.cache import cached, layer_vectors, per_task_rows
from tvmech.figures.export import save_figure


def step_lens(ctx: dict, args: argparse.Namespace) -> None:
    settings = {"tasks": args.lens_tasks, "tv_layer": args.lens_tv_layer, "ltv_steps": args.ltv_steps, "k": 5,
                "n_test": args.lens_n_test, "seed": args.seed, "model": ctx["model_name"]}
    rows, meta = cached(args.out / "logit_lens.json", settings, args.force, ctx)
    if rows is None:
        def compute(name: str) -> list[dict]:
            task = builtin_tasks((name,))[0]
            vec = layer_vectors(ctx, args, [name], args.lens_tv_layer)[name]
            sp = task.splits(args.seed)
            test = sp.test[: args.lens_n_test] if args.lens_n_test else sp.test
            return lens_conditions(ctx["model"](), task, test, vec, k=5, demos=sp.train, seed=args.seed)

        rows = per_task_rows(args.out / "logit_lens.json", settings, args.lens_tasks, compute)
    paths = save_figure(lens_plots.lens_heatmap(rows, ctx["model_name"]), args.out, "logit_lens", rows, meta,
                        png=not args.no_png)
    print(f"logit_lens: {', '.join(str(p) for p in paths.values() if p)}")


def _linear_rows(ctx: dict, args: argparse.Namespace, name: str) -> list[dict]:
    model = ctx["model"]()
    task = builtin_tasks((name,))[0]
    sp = task.splits(args.seed)
    test = sp.test[: args.n_test] if args.n_test else sp.test
    shortest = sorted(sp.train, key=lambda e: len(task.template.prompt([], e.input)))[: args.map_prompts]
    batch = fit_prompts(model, task, shortest)
    config = MapConfig(n_samples=args.map_samples, n_heldout=args.map_heldout, noise_scales=tuple(args.map_noise),
                       solver=args.map_solver, ridge=args.map_ridge, seed=args.seed)
    rows = []
    for layer in args.linear_layers:
        theta = layer_vectors(ctx, args, [name], layer)[name].vectors.reshape(-1)
        fit = fit_tv_map(model, batch, theta, layer, config, progress=True)
        t0 = time.perf_counter()
        jac = compare_maps(exact_jacobian(model, batch, theta, layer), fit.W, theta)
        row = {"task": name, **fit.summary(), "theta_norm": float(theta.norm()), **jac,
               "seconds_jacobian": time.perf_counter() - t0,
               **reconstruction_report(model, task, test, fit), **polar_report(model, task, fit.W, theta)}
        print(f"  {name} L{layer}: R² held-out {row['r2_heldout']:.3f}, ‖J−W‖/‖J‖ {row['jac_rel_frobenius']:.3f}, "
              f"acc θ {row['acc_original']:.2f} → Wθ {row['acc_reconstructed']:.2f}, "
              f"‖Q−I‖/√d {row['rotation_distance']:.3f}, gain {row['gain']:.1f}", flush=True)
        rows.append(row)
    return rows


def step_linear(ctx: dict, args: argparse.Namespace) -> None:
    settings = {"tasks": args.linear_tasks, "layers": args.linear_layers, "ltv_steps": args.ltv_steps,
                "map_prompts": args.map_prompts, "map_samples": args.map_samples, "map_heldout": args.map_heldout,
                "map_noise": args.map_noise, "map_solver": args.map_solver, "map_ridge": args.map_ridge,
                "n_test": args.n_test, "seed": args.seed, "model": ctx["model_name"]}
    rows, meta = cached(args.out / "linear_map.json", settings, args.force, ctx)
    if rows is None:
        rows = per_task_rows(args.out / "linear_map.json", settings, args.linear_tasks,
                             lambda name: _linear_rows(ctx, args, name))
    png = not args.no_png
    # linear_map.{html,png} is the reconstructed-TV figure; its json/csv hold every number of the step
    paths = [*save_figure(lens_plots.reconstruction_figure(rows, ctx["model_name"]), args.out, "linear_map", rows,
                          meta, png=png).values(),
             *save_figure(lens_plots.transition_figure(rows, ctx["model_name"]), args.out, "rotation_scaling",
                          png=png).values(),
             *save_figure(lens_plots.alignment_figure(rows, ctx["model_name"]), args.out, "rotation_alignment",
                          png=png).values()]
    print(f"linear: {', '.join(str(p) for p in paths if p)}")


STEPS = {"lens": step_lens, "linear": step_linear}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("logit lens and linear propagation (steps lens, linear)")
    g.add_argument("--lens-tasks", nargs="+", default=list(BUILTIN), choices=list(BUILTIN), metavar="TASK",
                   help="tasks of the logit-lens heatmap (default: all built-in)")
    g.add_argument("--lens-tv-layer", type=int, default=15, help="layer of the LTV in the lens's TV condition")
    g.add_argument("--lens-n-test", type=int, default=40, help="test queries per task for the lens (0: all)")
    g.add_argument("--linear-tasks", nargs="+", default=["antonym", "country_capital", "question_type"],
                   choices=list(BUILTIN), metavar="TASK", help="tasks of the linear-map step")
    g.add_argument("--linear-layers", type=int, nargs="+", default=[3, 9, 15, 21, 27],
                   help="injection layers of the linear-map step (default: every 6th from 3)")
    g.add_argument("--map-prompts", type=int, default=2, help="fit prompts (the shortest training prompts)")
    g.add_argument("--map-samples", type=int, default=None, help="perturbed vectors per fit (default: 2 x d_model)")
    g.add_argument("--map-heldout", type=int, default=128, help="held-out perturbed vectors for R²")
    g.add_argument("--map-noise", type=float, nargs="+", default=[0.05, 0.1, 0.2],
                   help="noise scales λ, relative to ‖θ‖")
    g.add_argument("--map-solver", choices=["lstsq", "ridge"], default="lstsq")
    g.add_argument("--map-ridge", type=float, default=1e-3, help="ridge strength α (relative to the perturbations' variance per direction)")
