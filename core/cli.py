"""The ``infoscope`` command line: score, runs, export, app, demo.

Errors a person can fix (bad input, a half-written run, an export outside its folder) print one clear line
and exit with status 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.errors import InfoscopeError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="infoscope: score every image of a labelled dataset with per-sample information measures, "
                       "then curate it in a dashboard.")
console = Console(stderr=True)

RunsDir = Annotated[Path | None, typer.Option("--runs-dir", help="Folder holding the runs (default: $INFOSCOPE_RUNS or ./runs).")]


def _fail(e: Exception) -> None:
    console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _os_message(e: OSError) -> str:
    where = f" {e.filename}" if e.filename else ""
    return f"{e.strerror or e}:{where}" if where else str(e)


class _Reporter:
    """A rich progress bar per pipeline step."""

    def __init__(self, progress: Progress):
        self.p = progress
        self.tasks: dict[str, int] = {}

    def __call__(self, step: str, msg: str, frac: float | None) -> None:
        if step not in self.tasks:
            self.tasks[step] = self.p.add_task(step, total=1.0)
        task = self.tasks[step]
        desc = f"{step}: {msg}" if msg and msg != "done" else step
        self.p.update(task, description=desc, completed=frac if frac is not None else None)


class LineReporter:
    """Progress as plain lines, for a stderr that is not a terminal (a log file, a pipe, CI): a line when a step
    starts, when it finishes (with its wall time), and when its message changes or its fraction passes the next
    ``every`` (default 10 %) — never carriage returns or a redrawn bar."""

    def __init__(self, write: Callable[[str], None], every: float = 0.1,
                 clock: Callable[[], float] = time.perf_counter):
        self.write, self.every, self.clock = write, every, clock
        self.started: dict[str, float] = {}
        self.last: dict[str, tuple[str, float]] = {}

    def __call__(self, step: str, msg: str, frac: float | None) -> None:
        if step not in self.started:
            self.started[step] = self.clock()
            self.last[step] = ("", -1.0)
            self.write(f"[{step}] started")
            if not msg:
                return
        if msg == "done":
            self.write(f"[{step}] done in {self.clock() - self.started[step]:.1f} s")
            return
        last_msg, last_frac = self.last[step]
        f = -1.0 if frac is None else float(frac)
        if msg != last_msg or (f >= 0 and f >= last_frac + self.every):
            self.last[step] = (msg, f if f >= 0 else last_frac)
            pct = f" {f:.0%}" if f >= 0 else ""
            self.write(f"[{step}]{pct} {msg}".rstrip())


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def _set_flag_params(params: dict[str, dict], flags: list[tuple[str, str, object]]) -> None:
    """Put each given score flag (``--cg-features``, ``--si-method`` …) into ``params[score][key]``."""
    for score_name, key, value in flags:
        if value is not None:
            params.setdefault(score_name, {})[key] = value


def _run_pipeline(cfg, resume: str | None = None, runs_dir: Path | None = None, given: dict | None = None) -> Path:
    """Score ``cfg`` (or, with ``resume``, continue that partial run) with a progress display."""
    from core.pipeline import resume_run, score_run

    def go(report) -> Path:
        if resume is not None:
            return resume_run(resume, runs_dir=runs_dir, given=given, report=report)
        return score_run(cfg, report)

    if not console.is_terminal:  # a log file or a pipe: one line per event, no redrawn bar
        path = go(LineReporter(lambda line: print(line, file=sys.stderr, flush=True)))
    else:
        with _progress() as p:
            path = go(_Reporter(p))
    _warn_quality(path)
    return path


def _warn_quality(run_dir: Path) -> None:
    """Print the model-quality guardrail's verdict; a loud WARNING line when the flags cannot be trusted."""
    import json

    try:
        quality = json.loads((Path(run_dir) / "manifest.json").read_text())["model"]["quality"]
    except (OSError, KeyError, ValueError):
        return
    if quality.get("trust_flags", True):
        console.print(f"model: {quality.get('message', '')}")
    else:
        console.print(f"[bold yellow]{quality.get('message', 'WARNING: the model is too weak to trust its flags')}[/]")


@app.command()
def score(
    source: Annotated[list[str], typer.Option("--source", "-s", help="A data source NAME=SPEC, repeatable. SPEC: "
                      "mnist5k | digits | folder:PATH (one sub-folder per class) | csv:PATH (path,label[,source]) | "
                      "npz:PATH (arrays x, y) | parquet:PATH (image bytes or path, label[, source]) | hf:PATH (a Hugging Face "
                      "dataset saved with save_to_disk; needs `pip install datasets`).")] = None,  # type: ignore[assignment]
    label_noise: Annotated[float | None, typer.Option(help="Flip this fraction of labels to a uniformly chosen other class (ground truth kept).")] = None,
    label_noise_pairs: Annotated[str | None, typer.Option(help="Class-pair flips, e.g. '4:9,3:5': flip --pair-noise-rate of each class to its partner.")] = None,
    pair_noise_rate: Annotated[float | None, typer.Option(help="Fraction flipped within each pair of --label-noise-pairs.")] = None,
    undersample: Annotated[str | None, typer.Option(help="Keep only a fraction of a class, e.g. '3:0.15'.")] = None,
    adversarial: Annotated[float | None, typer.Option(help="Append this fraction of adversarially attacked copies (is_adversarial ground truth).")] = None,
    attack: Annotated[str | None, typer.Option(help="Attack for --adversarial: fgsm or pgd.")] = None,
    eps: Annotated[float | None, typer.Option(help="L-infinity budget of the attack (pixels in [0, 1]).")] = None,
    model: Annotated[str | None, typer.Option(help="Network: cnn (small CNN), mlp, resnet18_small (trained from scratch, default image size = the sources' most common size), or an ImageNet backbone: resnet18, resnet50, convnext_tiny, efficientnet_b0, vit_b_16, timm:NAME (default image size 224).")] = None,
    weights: Annotated[str | None, typer.Option(help="Local state dict to initialise the network from (loaded with weights_only=True; a classifier with another class count is skipped), or 'torchvision' for torchvision's own pretrained weights (its download/cache; needs the network the first time).")] = None,
    freeze_backbone: Annotated[bool | None, typer.Option("--freeze-backbone/--no-freeze-backbone", help="Train only the classifier on the backbone's features (computed once). Default: on for ImageNet backbones on CPU or with pretrained weights.")] = None,
    features: Annotated[str | None, typer.Option(help="Your own model's features, a .npy array n×d (row i = sample i in load order): no network is trained; uniqueness, neighbours, map and CG on them; a linear head gives the outputs unless --pred-probs is given.")] = None,
    pred_probs: Annotated[str | None, typer.Option(help="Your own model's predicted probabilities, a .npy array n×k (rows sum to 1, column j = class j), like cleanlab's pred_probs: loss, margin, confidence from them; scores that need the network are NaN with the reason in the manifest.")] = None,
    image_size: Annotated[int | None, typer.Option(help="Resize every image (shorter side) to N and center-crop N×N. Default: 224 for ImageNet backbones, else the most common size among the sources.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default: from the dataset size, a budget of about 400 optimiser steps with early stopping on held-out loss).")] = None,
    flag_train_adversarial: Annotated[bool, typer.Option("--flag-train-adversarial", help="Also judge training rows for the adversarial flag (default: held-out rows only).")] = False,
    holdout: Annotated[float | None, typer.Option(help="Fraction held out as the test split (stratified).")] = None,
    scores: Annotated[str | None, typer.Option(help="Comma-separated scores, or 'all'. Known: loss, margin, el2n, forgetting, confidence, variability, uniqueness, si_weights, si_function, cg_score, prediction_depth.")] = None,
    cg_features: Annotated[str | None, typer.Option(help="CG score features: auto (pixels up to 3×64×64 values per image, else embeddings), pixels (the paper's setting) or embeddings.")] = None,
    depth_models: Annotated[int | None, typer.Option(help="Networks averaged for prediction depth.")] = None,
    si_method: Annotated[str | None, typer.Option(help="SI method: head (default: a wide ReLU head on features that did not see the row, exact, finite t) or network (the whole network linearized, projected: an approximation).")] = None,
    si_features: Annotated[str | None, typer.Option(help="Features of the head SI: auto (pretrained with --weights, else crossfit), crossfit, pretrained or trained.")] = None,
    si_head: Annotated[str | None, typer.Option(help="Head of the SI: auto (a wide ReLU head up to 5,000 rows per problem, a linear head above: exact at any n), relu (split into parts above 5,000 rows) or linear.")] = None,
    linearize_at: Annotated[str | None, typer.Option(help="Only with --si-method network: linearisation point trained, init, or a local checkpoint PATH.")] = None,
    map_method: Annotated[str | None, typer.Option("--map", help="2-D map of the features: umap or pca.")] = None,
    device: Annotated[str | None, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for corruptions, split, initialisation and batch order.")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip unreadable images / missing labels (counted in the manifest) instead of failing.")] = False,
    runs_dir: RunsDir = None,
    name: Annotated[str | None, typer.Option(help="A name for the run (part of its folder name).")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with any of these options ([scores.<name>] tables for score parameters); flags override it.")] = None,
    executor: Annotated[str | None, typer.Option(help="Where the parallel steps run (features, kNN search, CG problems, SI head problems): local (default, this process) or ray (a Ray cluster; needs pip install 'infoscope[ray]'). Same numbers, same run folder either way.")] = None,
    ray_address: Annotated[str | None, typer.Option(help="With --executor ray: the cluster to join, auto (the one `ray start` made on this node), HOST:PORT or ray://HOST:PORT; default: start a Ray instance in this process.")] = None,
    resume: Annotated[str | None, typer.Option(help="Continue a killed run (its folder, or its name in --runs-dir) from its last finished stage, with the options stored in it (options given must agree with them).")] = None,
) -> None:
    """Score a dataset and write a run; prints the run's path at the end."""
    from core.pipeline import RunConfig

    overrides = dict(sources=list(source) if source else None, label_noise=label_noise,
                     label_noise_pairs=label_noise_pairs, pair_noise_rate=pair_noise_rate, undersample=undersample,
                     adversarial=adversarial, attack=attack, eps=eps, model=model, weights=weights, epochs=epochs,
                     freeze_backbone=freeze_backbone, image_size=image_size, features=features, pred_probs=pred_probs,
                     holdout=holdout, scores=scores, map_method=map_method, device=device, seed=seed,
                     skip_bad=skip_bad or None, runs_dir=str(runs_dir) if runs_dir else None, name=name,
                     flag_train_adversarial=flag_train_adversarial or None, executor=executor,
                     ray_address=ray_address)
    try:
        if resume is not None:  # the run's own config; what is given here must agree with it
            given = {**(RunConfig.toml_values(config) if config else {}),
                     **{k: v for k, v in overrides.items() if v is not None and k != "runs_dir"}}
            params = {s: dict(p) for s, p in given.get("score_params", {}).items()}
            flag_params = [("cg_score", "features", cg_features), ("prediction_depth", "models", depth_models),
                           ("si_function", "method", si_method), ("si_function", "features", si_features),
                           ("si_function", "head", si_head), ("si_function", "linearize_at", linearize_at)]
            _set_flag_params(params, flag_params)
            if params:
                given["score_params"] = params
            path = _run_pipeline(None, resume=resume, runs_dir=runs_dir, given=given)
            _report_skipped(path)
            console.print(f"[green]run complete[/]: {path}")
            typer.echo(str(path))
            return
        cfg = RunConfig.from_toml(config, **overrides) if config else RunConfig(
            **{k: v for k, v in overrides.items() if v is not None})
        if linearize_at is not None and si_method not in (None, "network"):
            raise InfoscopeError("--linearize-at applies to --si-method network only")
        if linearize_at is not None:
            si_method = "network"
        if si_method is not None and si_method not in ("head", "network"):
            raise InfoscopeError(f"--si-method must be head or network, got {si_method!r}")
        _set_flag_params(cfg.score_params, [("cg_score", "features", cg_features),
                                            ("prediction_depth", "models", depth_models),
                                            ("si_function", "method", si_method),
                                            ("si_function", "features", si_features),
                                            ("si_function", "head", si_head),
                                            ("si_function", "linearize_at", linearize_at)])
        path = _run_pipeline(cfg)
    except (InfoscopeError, ValueError) as e:
        _fail(e)
    except OSError as e:  # a file the user named cannot be read or written (permissions, disk full...)
        _fail(InfoscopeError(_os_message(e)))
    _report_skipped(path)
    console.print(f"[green]run complete[/]: {path}")
    typer.echo(str(path))


def _report_skipped(path: Path) -> None:
    """Say how many rows or files were skipped (bad rows with --skip-bad, links out of a dataset folder)."""
    import json

    try:
        skipped = json.loads((Path(path) / "manifest.json").read_text()).get("skipped", {})
        count, rows = int(skipped.get("count", 0)), skipped.get("rows", [])
    except (OSError, ValueError, AttributeError, TypeError):
        return
    if count:
        first = f" e.g. {rows[0][0]}: {rows[0][1]}" if rows and len(rows[0]) == 2 else ""
        console.print(f"[yellow]skipped {count} file(s) or row(s)[/]{escape(first)} (all listed in the "
                      "manifest's 'skipped')", highlight=False, soft_wrap=True)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@app.command()
def runs(runs_dir: RunsDir = None) -> None:
    """List the runs with their status, size, sample count and scores."""
    from core.store import list_runs

    if runs_dir is not None and runs_dir.exists() and not runs_dir.is_dir():
        _fail(InfoscopeError(f"--runs-dir {runs_dir} is a file, not a folder"))
    infos = list_runs(runs_dir)
    if not infos:
        console.print(f"no runs under {runs_dir or 'the runs dir'}; create one with `infoscope score` or `infoscope demo`")
        return
    t = Table("run", "status", "n", "size", "scores", "path", title="infoscope runs")
    for r in infos:
        colour = {"complete": "green", "failed": "red"}.get(r.status, "yellow")
        # every text from a run's files is escaped: a "[/]" in an error message must not break the listing
        status = f"[{colour}]{r.status}[/]" + (f" ({escape(r.reason)})" if r.reason else "")
        t.add_row(escape(r.run_id), status, str(r.n_samples or "-"), _human(r.size_bytes),
                  escape(", ".join(r.scores)), escape(str(r.path)))
    Console().print(t)


@app.command()
def export(
    run: Annotated[Path, typer.Option("--run", help="The run directory.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write into (must be empty or new); nothing is written outside it.")],
    where: Annotated[str | None, typer.Option(help="SQL predicate over the samples columns (and decision, relabel_to, tags), e.g. \"cg_score > 0.5 AND source = 'mnist'\".")] = None,
    curated: Annotated[bool, typer.Option("--curated", help="All samples minus those decided 'remove', with relabels applied.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="csv, parquet, or folder (image copies, one sub-folder per class).")] = "csv",
) -> None:
    """Export a selection (--where) or the curated dataset (--curated)."""
    from core.export import export_curated, export_where
    from core.store import open_run

    if (where is None) == (not curated):
        _fail(InfoscopeError("give exactly one of --where or --curated"))
    try:
        r = open_run(run)
        path = export_curated(r, fmt, out) if curated else export_where(r, where, fmt, out)
    except InfoscopeError as e:
        _fail(e)
    except OSError as e:
        _fail(InfoscopeError(_os_message(e)))
    console.print(f"[green]exported[/] to {path}")
    typer.echo(str(path))


@app.command("verify-si")
def verify_si_cmd(
    run: Annotated[Path, typer.Option("--run", help="The run directory.")],
    samples: Annotated[int, typer.Option(help="Rows to retrain without (stratified over the SI range).")] = 30,
    seed: Annotated[int, typer.Option(help="Seed for choosing the rows.")] = 0,
) -> None:
    """Retrain the run's SI model without --samples rows and compare the real change of weights and of
    held-out predictions with the run's SI; stores the figures in the run and prints them as the last line."""
    from core.verify_si import fidelity_line, verify_si

    try:
        with _progress() as p:
            task = p.add_task("verify-si", total=1.0)
            res = verify_si(run, samples=samples, seed=seed,
                            progress=lambda msg, frac: p.update(task, description=f"verify-si: {msg}", completed=frac))
    except InfoscopeError as e:
        _fail(e)
    if res.get("stored"):
        console.print(f"stored in {res['stored']}")
    else:
        console.print(f"[yellow]warning:[/] could not store the figures in the run: {res.get('store_error')}")
    typer.echo(fidelity_line(res))


@app.command("evaluate-summary")
def evaluate_summary(
    run: Annotated[Path, typer.Option("--run", help="The run directory.")],
    ids: Annotated[Path, typer.Option("--ids", help="Text file with the summary's sample ids, one per line.")],
    random: Annotated[int, typer.Option("--random", help="Number of random subsets of the same size.")] = 5,
    model: Annotated[str, typer.Option(help="logistic or ridge (a head on the run's embeddings), or network "
                                            "(a fresh network on the images).")] = "logistic",
    seed: Annotated[int, typer.Option(help="Seed of the random subsets.")] = 0,
    include_flagged: Annotated[bool, typer.Option("--include-flagged", help="Keep flagged rows in the pool and the evaluation rows.")] = False,
    include_removed: Annotated[bool, typer.Option("--include-removed", help="Keep rows decided 'remove'.")] = False,
) -> None:
    """Held-out accuracy of a model fitted on a summary vs on random subsets of the same size.

    Prints one ``progress DONE/TOTAL MESSAGE`` line per fitted model, then ``result {json}``."""
    import json

    from core.summary_eval import evaluate_run_summary

    try:
        if not ids.is_file():
            raise InfoscopeError(f"no ids file at {ids}")
        wanted = [line.strip() for line in ids.read_text().splitlines() if line.strip()]
        if random < 1:
            raise InfoscopeError("--random must be at least 1")

        def report(done: int, total: int, msg: str) -> None:
            typer.echo(f"progress {done}/{total} {msg}")
            sys.stdout.flush()

        res = evaluate_run_summary(str(run), wanted, k_random=random, model=model, seed=seed,
                                   exclude_flagged=not include_flagged, exclude_removed=not include_removed,
                                   progress=report)
    except InfoscopeError as e:
        _fail(e)
    typer.echo("result " + json.dumps(res.to_dict()))


@app.command("app")
def app_cmd(
    run: Annotated[Path | None, typer.Option("--run", help="Open this run (default: pick one in the sidebar).")] = None,
    runs_dir: RunsDir = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8501,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a browser tab.")] = False,
) -> None:
    """Start the dashboard (bound to 127.0.0.1)."""
    from core.store.layout import default_runs_dir
    from dashboard.launch import launch

    raise typer.Exit(launch(str(run) if run else None, str(runs_dir or default_runs_dir()), port, not no_browser))


@app.command()
def demo(
    no_app: Annotated[bool, typer.Option("--no-app", help="Only score the demo; do not start the dashboard.")] = False,
    runs_dir: RunsDir = None,
    port: Annotated[int, typer.Option(help="Dashboard port on 127.0.0.1.")] = 8501,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Score the bundled demo (MNIST-5k + sklearn digits, 10% label noise, class 3 at 15%, 2% FGSM copies,
    every score) and open the dashboard on it."""
    from core.pipeline import demo_config
    from core.store.layout import default_runs_dir

    cfg = demo_config(runs_dir=str(runs_dir) if runs_dir else None, device=device)
    try:
        path = _run_pipeline(cfg)
    except InfoscopeError as e:
        _fail(e)
    console.print(f"[green]demo run complete[/]: {path}")
    typer.echo(str(path))
    if not no_app:
        from dashboard.launch import launch

        raise typer.Exit(launch(str(path), str(runs_dir or default_runs_dir()), port, True))


def main() -> None:  # pragma: no cover
    app(prog_name="infoscope")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
