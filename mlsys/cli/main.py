"""``mlsys``: the command line. Every subcommand takes Hydra overrides.

    mlsys run [--cfg job] [key=value ...]   run the pipeline (cached steps are reused)
    mlsys run --explain [key=value ...]     per step: would it be reused or run, and why (runs nothing)
    mlsys run -m model=lr,deepfm [...]      a sweep: one run per combination (shared steps reused), then a table
    mlsys serve [key=value ...]             serve serve.model on 127.0.0.1:8000 until Ctrl-C
    mlsys demo [key=value ...]              run, serve, send a few requests, stop
    mlsys lineage [key=value ...]           walk serve.model back to its data
    mlsys predict --model M --input P --output O [key=value ...]
                                            score a Parquet/CSV file of (user, item) rows on Ray Data
    mlsys release canary --model ctr --version N --percent P   a share of users (sticky) to version N
    mlsys release canary --model ctr --version N --shadow      version N scores a copy of every request
    mlsys release status|promote|rollback [--model ctr]        (docs/releases.md)
    mlsys model history [ctr]                  versions, aliases, metrics, blessing decisions, pushes
    mlsys model push [ctr] --version N         push a version by hand, through infra validation
    mlsys model rollback [ctr] [--to N]        move the alias back (docs/release.md)
    mlsys monitor tick|run|start|stop|status   skew, drift, alerts, retrains (docs/monitoring.md)
    mlsys monitor spans --feature gender       a feature across every ingested span
    mlsys monitor report [--out page.html]     drift, quality, alerts, retrains and online updates as one HTML page
    mlsys stats compute PATH --out F.json   statistics of any Parquet/CSV path
    mlsys stats show F.json|RUN_ID          a compact table
    mlsys schema infer F.json --out S.yaml  a schema from training statistics
    mlsys validate F.json --schema S.yaml [--previous P.json] [--report R.html]
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlsys", description="Ray-native ML system: pipeline, registry, serving.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline (pipeline=ctr by default)")
    run.add_argument("--cfg", choices=["job"], help="print the composed config and exit")
    run.add_argument("--explain", action="store_true", help="print, per step, whether it would be reused or run and why; run nothing")
    run.add_argument("-m", "--multirun", action="store_true",
                     help="a sweep: one pipeline run per combination of the overrides' values (model=lr,deepfm,din), then a table")
    sub.add_parser("serve", help="serve a registered model over HTTP until Ctrl-C")
    sub.add_parser("demo", help="run the pipeline, serve it, send a few ranking requests, stop")
    sub.add_parser("lineage", help="walk a registered model (serve.model) back to the data it came from")
    sub.add_parser("ui", help="the dashboard: runs, lineage, data, features, models, releases, monitoring (ui.port, default 8600; on a cluster a Serve app at ui.route_prefix)")
    predict = sub.add_parser("predict", help="score a Parquet/CSV file of (user, item[, context]) rows with a registered model")
    predict.add_argument("--model", help="a registered model (name@alias, name/version) or a package folder; "
                                         "default predict.model (ctr@champion)")
    predict.add_argument("--input", help="Parquet file or folder, or CSV file, of user_id, item_id[, context] rows")
    predict.add_argument("--output", help="folder for the scored rows (Parquet: the input's columns, row_id, score)")
    release = sub.add_parser("release", help="canary or shadow release of a model version; status, promote, rollback")
    actions = release.add_subparsers(dest="action", required=True)
    canary = actions.add_parser("canary", help="release --version on --percent of users (sticky), or as a --shadow")
    canary.add_argument("--version", required=True, help="the registered version to release")
    share = canary.add_mutually_exclusive_group(required=True)
    share.add_argument("--percent", type=float, help="the share of users (by a hash of the user id) it answers")
    share.add_argument("--shadow", action="store_true", help="mirror every request to it; the champion answers")
    for action, text in (("status", "the release in progress, its last window, past releases"),
                         ("promote", "the candidate becomes the champion"),
                         ("rollback", "end the release; with none, move the alias back to the previous champion")):
        actions.add_parser(action, help=text)
    for parser in actions.choices.values():
        parser.add_argument("--model", help="the registered model's name (default: serve.model's, ctr)")
        parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. home.root=/data/mlsys")
    model = sub.add_parser("model", help="a registered model: history; push or roll back its serving alias")
    verbs = model.add_subparsers(dest="action", required=True)
    verbs.add_parser("history", help="versions, aliases, metrics, blessing decisions, infra validation, pushes")
    verbs.add_parser("push", help="move the alias to --version, after infra validation in a sandbox app").add_argument(
        "--version", required=True, help="the registered version to push")
    verbs.add_parser("rollback", help="move the alias back to the previous champion, or --to N").add_argument(
        "--to", help="the version to roll back to (default: the champion before the current one)")
    for parser in verbs.choices.values():
        parser.add_argument("model", nargs="?", help="the registered model's name (default registry.model_name, ctr)")
        parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. home.root=/data/mlsys")
    monitor = sub.add_parser("monitor", help="skew, drift and alerts over what serving scored; continuous training")
    steps = monitor.add_subparsers(dest="action", required=True)
    for action, text in (("tick", "one pass: merge the windows serving wrote, judge them, evaluate the alert rules"),
                         ("run", "the monitor in the foreground, a pass every monitor.interval_s, until Ctrl-C"),
                         ("start", "the monitor as a detached actor on a Ray cluster (cluster.address=auto)"),
                         ("stop", "stop the cluster's monitor"),
                         ("status", "alerts, each version's last window, retrains (from the monitor's files)"),
                         ("spans", "a feature's statistics across every ingested span (--feature F)"),
                         ("report", "an HTML page: drift per feature over time, online quality, alerts, retrains, online updates")):
        steps.add_parser(action, help=text)
    steps.choices["spans"].add_argument("--feature", required=True, help="a feature of the data set, e.g. gender")
    steps.choices["report"].add_argument("--out", help="the HTML file (default <monitor dir>/<model>/report.html)")
    for parser in steps.choices.values():
        parser.add_argument("--model", help="the registered model's name (default registry.model_name, ctr)")
        parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. home.root=/data/mlsys")
    for name in ("run", "serve", "demo", "lineage", "predict", "ui"):
        sub.choices[name].add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.embed_dim=32")
    from mlsys.cli import data_commands

    data_commands.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]  # overrides after an option (`model push ctr --version 3 home.root=H`)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "model" and args.model and "=" in args.model:  # `mlsys model history home.root=H`: no name given
        args.overrides, args.model = [args.model, *args.overrides], None
    from mlsys.errors import ConfigError, MlsysError

    try:
        from mlsys import api
        from mlsys.api.config import compose_config, compose_raw
        from mlsys.cli import commands, data_commands

        if args.command in ("stats", "schema", "validate"):
            return data_commands.run(args)

        if args.command == "run" and args.multirun:
            from mlsys.api.sweep import sweep

            if args.cfg or args.explain:
                raise ConfigError("-m runs the sweep; --cfg and --explain take one combination (without -m)")
            sweep(args.overrides, lambda combo, tags: commands.execute_pipeline(compose_config(combo), combo, tags=tags))
            return 0
        if args.command == "run" and args.cfg == "job":
            from omegaconf import OmegaConf

            print(OmegaConf.to_yaml(compose_raw(args.overrides), resolve=True), end="")
            return 0
        if args.command == "run" and args.explain:
            print(api.explain_pipeline(args.overrides))
            return 0
        cfg = compose_config(args.overrides)
        if args.command == "run":
            commands.execute_pipeline(cfg, args.overrides)
        elif args.command == "serve":
            commands.serve_forever(cfg)
        elif args.command == "demo":
            commands.demo(cfg, args.overrides)
        elif args.command == "lineage":
            from mlsys.api.serving import lineage

            print(lineage(cfg))
        elif args.command == "ui":
            commands.ui(cfg)
        elif args.command == "predict":
            commands.predict(cfg, args.model, args.input, args.output)
        elif args.command == "release":
            print(commands.release(cfg, args))
        elif args.command == "model":
            print(commands.model(cfg, args))
        elif args.command == "monitor":
            commands.monitor(cfg, args)
        return 0
    except MlsysError as e:
        print(f"mlsys: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mlsys: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
