"""`sc-imagenet …`: wiring only. Every command validates its configuration before any work starts."""


from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from sc_imagenet import __version__
from sc_imagenet.config import ConfigError, load_config, parse_overrides

DESCRIPTION = ("Build SC-ImageNet, a semantic-correspondence pre-training dataset mined from category-labelled "
               "images (ImageNet, or the synthetic demo), and check, report and evaluate the build.")


def _plan(args: argparse.Namespace, profile: str):
    from sc_imagenet.build import plan_build
    from sc_imagenet.flows.build_sc_imagenet import default_out

    overrides = parse_overrides(args.set)
    cfg = load_config(profile, overrides, args.data_root)
    out = args.out or default_out(profile)
    return plan_build(cfg, profile, out, args.stages, args.force, args.verify), overrides


def _runner_options(args: argparse.Namespace):
    from sc_imagenet.orchestration.scale_out import RunnerOptions

    options = RunnerOptions(args.runner, args.dask_address, args.dask_workers).checked()
    if options.runner != "sequential" and getattr(args, "no_prefect", False):
        raise ConfigError("--runner dask: runs the categories as Prefect tasks; drop --no-prefect")
    return options


def _run_flow(args: argparse.Namespace, profile: str) -> int:
    options = _runner_options(args)
    plan, overrides = _plan(args, profile)  # fail fast, before Prefect starts
    if args.no_prefect:
        from sc_imagenet.build import run_build_locally

        run_build_locally(plan, progress=sys.stderr.isatty())
    else:
        from sc_imagenet.flows.build_sc_imagenet import build_sc_imagenet

        build_sc_imagenet(config=profile, data_root=args.data_root, out=str(plan.out_dir),
                          stages=plan.stages, force=args.force, overrides=overrides or None, verify=args.verify,
                          runner=options.runner, dask_address=options.dask_address,
                          dask_workers=options.dask_workers)
    from sc_imagenet.build_summary import print_status

    print_status(plan.out_dir)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    return _run_flow(args, args.config)


def cmd_demo(args: argparse.Namespace) -> int:
    if not args.via_deployment:
        return _run_flow(args, "demo")
    from sc_imagenet.orchestration.demo import run_demo_deployment

    options = _runner_options(args)
    params = ({"runner": options.runner, "dask_address": options.dask_address, "dask_workers": options.dask_workers}
              if options.runner != "sequential" else {})
    return run_demo_deployment(out=args.out, params={k: v for k, v in params.items() if v is not None})


def cmd_status(args: argparse.Namespace) -> int:
    from sc_imagenet.build import stage_states

    out = Path(args.out)
    if not out.exists():
        raise ConfigError(f"--out {out} does not exist")
    if args.json:
        states = stage_states(out, verify=args.verify)
        print(json.dumps(states, indent=2))
    else:
        from sc_imagenet.build_summary import print_status

        states = print_status(out.resolve(), verify=args.verify)
    return 3 if any(s["damage"] for s in states) else 0


def cmd_synth(args: argparse.Namespace) -> int:
    from sc_imagenet.synth import SynthConfig, generate_dataset

    fields = {"seed": args.seed}
    if args.images_per_category is not None:
        fields["images_per_category"] = args.images_per_category
    summary = generate_dataset(Path(args.out), SynthConfig(**fields), progress=sys.stderr.isatty())
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from sc_imagenet.evaluate.benchmarks.command import run

    return run(args)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from sc_imagenet.matcher.command import run

    return run(args)


def cmd_report(args: argparse.Namespace) -> int:
    """Regenerate the build report from whatever the build folder holds (partial builds included)."""
    from sc_imagenet.build import artifact_dir, resolve_data_root, stage_states
    from sc_imagenet.config import BuildConfig, read_resolved_config
    from sc_imagenet.stages.report import write_build_report

    out = Path(args.out).resolve()
    if not out.is_dir():
        raise ConfigError(f"--out {out} does not exist")
    cfg = read_resolved_config(out) or BuildConfig()
    if args.data_root:
        cfg.data.root = Path(args.data_root).expanduser().resolve()
    states = {s["stage"]: s["state"] for s in stage_states(out, cfg)}
    dest = Path(args.dest).resolve() if args.dest else artifact_dir(out, "report")
    try:
        data_root = resolve_data_root(cfg, out)
    except ConfigError:  # a folder build without a saved config: no images to draw anyway
        data_root = out
    page, files = write_build_report(out, cfg, data_root, dest, states)
    size = sum(f.bytes for f in files)
    print(f"report: {page} ({size / 1e6:.2f} MB in {len(files)} files; open {page.as_uri()})")
    if args.open:
        import webbrowser

        webbrowser.open(page.as_uri())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from sc_imagenet.flows.build_sc_imagenet import serve_deployments

    serve_deployments()
    return 0


def _add_build_args(p: argparse.ArgumentParser, with_config: bool) -> None:
    if with_config:
        p.add_argument("--config", required=True, help="profile name (demo, imagenet) or YAML path")
    p.add_argument("--data-root", help="<root>/<category>/<image> folder (overrides data.root)")
    p.add_argument("--out", help="output folder (default ./builds/<profile>, or $SC_IMAGENET_BUILDS/<profile>)")
    p.add_argument("--stages", help="comma-separated subset of stages (default: all)")
    p.add_argument("--force", help="rerun this stage and everything downstream")
    p.add_argument("--verify", action="store_true",
                   help="before skipping a finished stage, recompute its files' checksums (default: sizes and "
                   "Parquet footers only); damaged files are rebuilt")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, e.g. index.workers=8")
    p.add_argument("--no-prefect", action="store_true", help="run the stages without the Prefect flow")
    p.add_argument("--runner", default="sequential",
                   help="sequential (default) or dask: the categories of every category-sharded stage as Prefect "
                   "tasks on a Dask cluster")
    p.add_argument("--dask-address", metavar="tcp://HOST:8786",
                   help="scheduler of a running Dask cluster (with --runner dask; default: a LocalCluster)")
    p.add_argument("--dask-workers", type=int, default=2, metavar="N",
                   help="worker processes of the LocalCluster --runner dask starts (default 2)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sc-imagenet", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"sc-imagenet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="build SC-ImageNet (direct Prefect flow call)")
    _add_build_args(p, with_config=True)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("demo", help="build the synthetic demo end to end")
    _add_build_args(p, with_config=False)
    p.add_argument("--via-deployment", action="store_true",
                   help="go through a local Prefect server, `serve` and `prefect deployment run` (make demo)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("status", help="per-stage state of a build")
    p.add_argument("--out", required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--verify", action="store_true",
                   help="also recompute every recorded checksum (reads every byte; by default only sizes and "
                   "Parquet footers are checked)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("synth", help="generate the synthetic demo dataset")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images-per-category", type=int)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("eval", help="PCK of evaluation methods on PF-WILLOW, PF-PASCAL, SPair-71k or synthetic data")
    p.add_argument("--benchmark", required=True, help="pf-willow, pf-pascal, spair or synthetic")
    p.add_argument("--root", required=True, type=Path, help="the benchmark folder as downloaded (nothing is fetched)")
    p.add_argument("--method", nargs="+", default=["nn"], help="registered method(s): nn, mnn, nn-rhm, generator, ...")
    p.add_argument("--reference", help="with several methods, print each one's PCK minus this one's on the same pairs "
                   "with a paired bootstrap interval (default: the first --method)")
    p.add_argument("--generator", type=Path, help="trained generator (<out>/artifacts/train/generator.pt); "
                   "its backbone and input size become the default for every method")
    p.add_argument("--matcher", type=Path, help="trained matcher (<DIR>/matcher.pt from `sc-imagenet pretrain`) for "
                   "--method matcher")
    p.add_argument("--backbone", help="backbone registry name (default: the generator's, else dense-sift)")
    p.add_argument("--input-size", type=int, help="backbone input side (default: the generator's, else the backbone's)")
    p.add_argument("--backbone-checkpoint", type=Path, help="backbone weights (ViT backbones)")
    p.add_argument("--split", help="split to score (default test; pf-pascal and spair also have val and trn)")
    p.add_argument("--limit", type=int, help="only the first N pairs (synthetic: N sampled pairs, default 100)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed, and the synthetic pair sample's")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.05, 0.1, 0.15], help="PCK thresholds α")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--predictions", type=Path, help="write one row per keypoint here (Parquet)")
    p.add_argument("--json", type=Path, help="write the summary (every figure, skipped pairs) here")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "pretrain", help="train the reference matcher (CATs family) on a release, or fine-tune it on a labelled set",
        description="Train the reference matcher (docs/matcher.md) on an SC-ImageNet release's trn split "
        "(--release), or fine-tune it (--init) on a labelled set: the trn split of SPair-71k or PF-PASCAL, or a "
        "synthetic dataset with ground truth (--benchmark … --data DIR). Writes OUT/matcher.pt and "
        "OUT/train_log.parquet; rerunning with the same --out resumes an interrupted run, and more --epochs "
        "continue a finished one.")
    p.add_argument("--release", type=Path, help="an SC-ImageNet release, e.g. <out>/export/SC-ImageNet (its trn "
                   "split; val, when not empty, is scored after every epoch)")
    p.add_argument("--benchmark", help="fine-tune on a labelled set instead: spair, pf-pascal (their trn split; val "
                   "scored when present) or synthetic (sc-imagenet synth output)")
    p.add_argument("--data", type=Path, help="the --benchmark's folder, as `sc-imagenet eval --root` reads it")
    p.add_argument("--split", help="split to train on (default trn; synthetic: all)")
    p.add_argument("--limit", type=int, help="only the first N pairs (synthetic: N pairs sampled with --seed, "
                   "default 100)")
    p.add_argument("--out", required=True, type=Path, help="folder for matcher.pt and train_log.parquet")
    p.add_argument("--init", type=Path, help="start from this matcher.pt (fine-tuning; its architecture is kept)")
    p.add_argument("--epochs", type=int, help="epochs over the training pairs (default 10)")
    p.add_argument("--max-steps", type=int, help="stop after N steps in all")
    p.add_argument("--batch-size", type=int, help="pairs per step (default 8)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 3e-4, after 50 warm-up steps)")
    p.add_argument("--seed", type=int, help="weights, pair order and augmentation seed (default 0)")
    p.add_argument("--no-augment", action="store_true", help="no crop or photometric augmentation")
    p.add_argument("--features", help="cnn (default: a small CNN trained from scratch) or a backbone registry name "
                   "(frozen, with the learned projection on top)")
    p.add_argument("--backbone-checkpoint", type=Path, help="weights of a ViT --features backbone")
    p.add_argument("--grid", type=int, help="cost-volume side (default 16: a 16×16 grid on the 256×256 input)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 50, and every epoch's end)")
    p.add_argument("--val-pairs", type=int, help="validation pairs scored after each epoch (default 200; 0: none)")
    p.add_argument("--workers", type=int, help="image-loading processes (default 0: in the main process)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("report", help="write the build report (HTML) for a build folder, complete or not")
    p.add_argument("--out", required=True, help="the build folder")
    p.add_argument("--data-root", help="where the build's images are (default: from its config.resolved.yaml)")
    p.add_argument("--dest", help="folder for index.html and its images (default <out>/artifacts/report)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("serve", help="serve the `demo` and `imagenet` deployments (needs PREFECT_API_URL)")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Prefect's telemetry service races the SQLite writes of a temporary server; nothing is lost
    # by switching it off, and nothing may phone home from an offline cluster anyway.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from sc_imagenet.build import StageInputError
        from sc_imagenet.io.locks import BuildLockedError
        from sc_imagenet.io.storage import StorageError

        if isinstance(exc, BuildLockedError | StageInputError | StorageError):
            print(f"error: {exc}", file=sys.stderr)
            return 3
        raise


if __name__ == "__main__":
    sys.exit(main())
