"""The ``derive`` command: parse the arguments, run the pipeline's stages, report.

Exit status: 0 success, 1 a check failed, 2 bad usage or a bad spec, 3 an internal error
(one line asking for a report; the traceback with --verbose), 130 stopped by Ctrl-C (the
whole command, after training saved what it reached).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser", "build_predict_parser"]

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="derive",
        description="Derive backpropagation for a declared network with SymPy, prove it, "
                    "and generate a NumPy module (forward, backward, trainer).",
        usage="%(prog)s --spec NET.yaml [options]\n       %(prog)s predict --model MODEL.npz "
              "--data SOURCE [--proba] [--keep COLUMN] [--output PREDS.csv]",
        epilog=f"Exit status: {EXIT_OK} success, {EXIT_CHECK_FAILED} a check failed (or "
               f"training diverged), {EXIT_USAGE} bad usage, spec or data, {EXIT_INTERNAL} an "
               f"internal error (please report it), {EXIT_INTERRUPTED} stopped by Ctrl-C "
               "(training saves what it reached first).\n\n"
               "commands:\n  predict   apply a model file that --train saved to raw data "
               "(derive predict --help)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--spec", nargs="+", required=True, metavar="NET.yaml",
                        help="network spec(s) in YAML (see docs/spec.md for the format)")
    parser.add_argument("--out", default="generated", metavar="DIR",
                        help="folder for the generated <name>.py (default: generated/)")
    parser.add_argument("--backend", choices=("numpy", *_backends()), default="numpy",
                        help="also write DIR/<name>_torch.py (a torch.nn.Module whose backward "
                             "is the derived one) or DIR/<name>_jax.py (jax.custom_vjp, a "
                             "lax.scan epoch); with --train, train on that framework")
    parser.add_argument("--check", action="store_true",
                        help="prove the derivation against SymPy's diff of the expanded loss "
                             "and check the written module by central finite differences")
    parser.add_argument("--proof-budget", metavar="SECONDS",
                        type=_bounded(float, 0, 10**6, "a number of seconds >= 0"),
                        help="with --check: stop the proof after SECONDS, report what it "
                             "covered and exit 1 (default: no limit)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite a file at the target that this tool did not generate")
    parser.add_argument("--no-module", action="store_true",
                        help="write no module: only what else is asked (--latex, --claims, "
                             "--check, which checks a module in a temporary folder)")
    parser.add_argument("--claims", metavar="CLAIMS.yaml",
                        help="check a document's formulas against the derivation: each claim "
                             "proven or refuted with a counterexample (see examples/errata/); "
                             "exit 1 when a verdict is not the one the file expects")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print only problems (with --train: and the final report)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _add_training_arguments(parser)
    _add_latex_arguments(parser)
    return parser


def build_predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="derive predict",
        description="Apply a model file that `derive --train` wrote to raw data: the rows "
                    "are scaled as in training, the answers are in the data's own terms "
                    "(class names, values in the target's units).")
    parser.add_argument("--model", required=True, metavar="MODEL.npz",
                        help="the model file (runs/<name>/<name>.npz)")
    parser.add_argument("--data", required=True, metavar="SOURCE",
                        help="csv:PATH (the model's feature columns, by name; other columns "
                             "are ignored) or a bundled data set's name (digits, iris, ...)")
    parser.add_argument("--output", metavar="PREDS.csv",
                        help="write the predictions as CSV (row, prediction); default: print them")
    parser.add_argument("--proba", action="store_true",
                        help="also write each class's probability, P(CLASS) columns")
    parser.add_argument("--keep", action="append", default=[], metavar="COLUMN",
                        help="pass the data's COLUMN (an id) through beside the predictions; "
                             "may be given more than once")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --output")
    return parser


def _predict(argv: list[str]) -> int:
    """``derive predict``: the library's predict_file, written or printed."""
    args = build_predict_parser().parse_args(argv)
    import codegen.files
    from codegen.files import WriteRefused, writable

    from .errors import DataError
    from .training.predict import predict_file

    output = Path(args.output) if args.output else None
    try:
        if output is not None:
            writable(output, args.force)
    except WriteRefused as err:
        plain = output.is_file() and not output.is_symlink()  # predictions carry no signature
        print(f"derive predict: {f'{output} exists; add --force to replace it' if plain else err}",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        result = predict_file(args.model, args.data, proba=args.proba, keep=tuple(args.keep))
    except DataError as err:
        print(f"derive predict: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if output is None:
            sys.stdout.write(result.csv_text())
            sys.stdout.flush()
        else:
            codegen.files.atomic_write(output, result.csv_text())
            print(f"{result.rows} predictions of {result.name} -> {output}")
    except BrokenPipeError:  # piped into a reader that closed early (| head): quietly
        _PipeSafe(sys.stdout).flush()
        return EXIT_OK
    except WriteRefused as err:
        print(f"derive predict: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        print(f"derive predict: cannot write {output}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    if result.accuracy is not None:
        print(f"accuracy against the data's own {result.name} column: {result.accuracy:.4f}",
              file=sys.stderr)
    return EXIT_OK


def _version() -> str:
    from . import __version__

    return __version__


def _backends() -> tuple[str, ...]:
    from codegen.emit import BACKENDS

    return BACKENDS


def parse_command(argv: list[str]) -> argparse.Namespace:
    """The arguments of ``derive ARGV`` (or ``derive predict ARGV``) parsed and checked as
    ``main`` checks them before doing anything; a bad command exits 2 (``SystemExit``) with
    argparse's message. Reads nothing but ``--out``'s kind."""
    if argv[:1] == ["predict"]:
        return build_predict_parser().parse_args(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_training_arguments(parser, args)
    _check_latex_arguments(parser, args)
    if args.claims and len(args.spec) > 1:
        parser.error("--claims names the formulas of one network: use it with one --spec "
                     "(or give each spec a claims: key)")
    if args.proof_budget is not None and not args.check:
        parser.error("--proof-budget goes with --check")
    if args.no_module and (args.train or args.backend != "numpy"):
        parser.error(f"--no-module writes no module, but {'--train' if args.train else '--backend'}"
                     " needs one: drop --no-module")
    _check_out_argument(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["predict"]:
        return _predict(argv[1:])
    args = parse_command(argv)
    from .errors import SpecError

    status = EXIT_OK
    stdout, sys.stdout = sys.stdout, _PipeSafe(sys.stdout)
    try:
        if (clash := _refused_command_targets(args)):
            print(f"derive: {clash}", file=sys.stderr)
            return EXIT_USAGE
        for path in args.spec:
            try:
                status = max(status, _run(path, args))
            except SpecError as err:
                print(f"derive: {err}", file=sys.stderr)
                status = max(status, EXIT_USAGE)
            if status == EXIT_INTERRUPTED:  # Ctrl-C during training stops every spec
                return status
    except KeyboardInterrupt:
        print("derive: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into a reader that closed early (| head)
        sys.stderr.close()
        return status
    except Exception as err:  # anything else is a bug of the tool
        return _internal_error(err, args)
    finally:
        sys.stdout = stdout
    return status


class _PipeSafe:
    """Standard output that outlives its reader (``derive ... --train | head -1``): the first
    BrokenPipeError points it at the null device, so that training goes on, saves its run and
    the command ends quietly with the run's own status."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed()

    def _closed(self) -> None:
        try:  # the process's own descriptor too: nothing is lost or reported at exit
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError):
            import io

            self._stream = io.StringIO()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _internal_error(err: Exception, args) -> int:
    """One line asking for a report; the traceback too with --verbose."""
    if args.verbose:
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    where = "" if args.verbose else "; run it again with --verbose for the traceback"
    detail = " ".join(str(err).split())[:200]
    print(f"derive: internal error, please report it: {type(err).__name__}"
          f"{': ' + detail if detail else ''}{where}", file=sys.stderr)
    return EXIT_INTERNAL


def _check_out_argument(parser: argparse.ArgumentParser, args) -> None:
    if not args.out.strip():
        parser.error("--out needs a folder name (it was empty); the default is generated")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {args.out}: is a file, not a folder; give the folder where the "
                     "generated modules go")


def _command_targets(spec, args) -> list[tuple[Path, str, bool]]:
    """Every file the command writes for one spec: (path, what it is, shared by the specs of
    the folder)."""
    from codegen.emit import module_targets

    targets = []
    if not args.no_module:
        own, shared = module_targets(spec.name, args.out, args.backend)
        targets += [(own[0], "module", False)]
        targets += [(path, f"{args.backend} module", False) for path in own[1:]]
        targets += [(path, "shared module file", True) for path in shared]
    return targets + [(path, what, False) for path, what in _user_targets(spec, args)]


def _refused_command_targets(args) -> str | None:
    """Why the command may not write its files, before anything is written (None when it
    may): two targets that are the same file (two specs with one name; a network named
    ``x_torch`` beside ``x``'s torch module; a plot on the model file), or a target that is a
    folder, a FIFO or a device, or a file or symbolic link this tool did not write (without
    --force).  A spec that cannot be read is reported later."""
    from codegen.files import WriteRefused, writable

    from .errors import SpecError
    from .spec import load_spec

    first: dict[str, tuple[str, str, bool]] = {}
    for path in args.spec:
        try:
            spec = load_spec(path)
        except SpecError:
            continue
        for target, what, shared in _command_targets(spec, args):
            key = os.path.normcase(os.path.abspath(target))
            if key in first:
                where, was, was_shared = first[key]
                if shared and was_shared:
                    continue
                if shared or was_shared:
                    return (f"{path}: the network name {spec.name!r} is taken by a file every "
                            f"generated module in {args.out} shares ({target.name}); choose "
                            "another name (nothing was written)")
                if what == was == "module":
                    return (f"{path}: network name {spec.name!r} is also the name in {where}: "
                            f"both would write {target.name}; give each spec its own name "
                            "(nothing was written)")
                return (f"{path}: {target} would be written twice, as the {was} of {where} "
                        f"and as the {what} of {path}; give them different names (nothing "
                        "was written)")
            first[key] = (path, what, shared)
            try:
                writable(target, args.force)
            except WriteRefused as err:
                return f"{path}: {err}"
    return None


def _say(args, message: str) -> None:
    if not args.quiet:
        print(message, flush=True)


def _run(path: str, args) -> int:
    """Every stage for one spec; returns its exit status."""
    from codegen.emit import Unprintable, write_backend, write_module
    from codegen.files import WriteRefused

    from .derivation import derive
    from .spec import load_spec

    started = time.perf_counter()
    spec = load_spec(path)
    for notice in spec.notices:
        print(f"derive: note: {notice}", file=sys.stderr)
    refused = _not_yet(spec, args) or _refused_targets(spec, args)  # before anything is written
    if refused:
        print(f"derive: {path}: {refused}", file=sys.stderr)
        return EXIT_USAGE
    data = None
    auto = spec.auto_sizes
    if not auto:
        _check_memory(spec, args)  # before anything is written, allocated or loaded
    if args.train or auto:  # sizes written auto are the data's
        data = _training_data(spec)  # data that cannot be used: nothing is written
        if isinstance(data, int):
            return data
        from .training.runner import sized

        spec = sized(spec, *data)
    if auto:
        _check_memory(spec, args)  # the data's sizes: before anything is written
    derivation = derive(spec)
    example = _latex_example(derivation, args)  # a bad values file: nothing is written
    checking = time.perf_counter()
    claims = _claims(derivation, args)  # nor with a bad claims file
    started += time.perf_counter() - checking  # the module line times the module alone
    if args.no_module:
        target = None
    else:
        try:
            target = write_module(derivation, args.out, force=args.force)
            written = target
            if args.backend != "numpy":
                written = write_backend(derivation, args.backend, args.out, force=args.force)
        except WriteRefused as err:
            print(f"derive: {path}: {err}", file=sys.stderr)
            return EXIT_USAGE
        except Unprintable as err:
            print(f"derive: {path}: cannot generate code: {err}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as err:
            print(f"derive: {path}: cannot write to {args.out}: {err.strerror or err}",
                  file=sys.stderr)
            return EXIT_USAGE
        sizes = "-".join(map(str, spec.layer_sizes))
        also = f" and {written}" if written != target else ""
        _say(args, f"{path}: {spec.name} ({sizes}, {spec.loss}) -> {target}{also} "
                   f"in {time.perf_counter() - started:.2f} s")
    if claims is not None and not (args.quiet and claims.ok):
        brief = args.claims is None  # the spec's own claims, checked along: the outcome
        print(claims.summary(brief), file=sys.stdout if claims.ok else sys.stderr, flush=True)
    proof = _proof(derivation, args) if args.check else None
    if args.latex and (failed := _latex(derivation, example, args, claims, proof)):
        return failed
    status = _check(derivation, target, args, proof) if args.check else EXIT_OK
    if claims is not None and not claims.ok:
        status = max(status, EXIT_CHECK_FAILED)
    if args.train and status == EXIT_OK:
        status = _train(spec, target, args, data)
    return status


def _training_data(spec):
    """The spec's data, loaded, checked against the spec and split before anything is
    written; or the exit status of a data error (reported)."""
    from .errors import DataError
    from .training.runner import load_prepared

    try:
        return load_prepared(spec)
    except DataError as err:  # located at the spec's field, or at the spec
        print(f"derive: {err if err.location else f'{spec.source or spec.name}: {err}'}",
              file=sys.stderr)
        return EXIT_USAGE


def _check_memory(spec, args) -> None:
    """A SpecError (exit 2) when --check or --train would need more memory than is free."""
    from .resources import check_fits

    if args.check:
        from codegen.fdcheck import EXAMPLES

        check_fits(spec, EXAMPLES, "float64", "the finite-difference check")
    if args.train:
        from .optimizers import FULL_BATCH

        batch = args.batch_size or spec.training.batch_size
        # a full batch is the data's size, not known yet: the parameters and a batch of 1024
        # (the run checks the data against the spec before training)
        check_fits(spec, 1024 if batch == FULL_BATCH else batch, spec.dtype, "training")


def _claims(derivation, args):
    """The claims of --claims, or of the spec's claims: key with --check or --latex, checked
    (None when there are none)."""
    from .claims import check_claims, load_claims

    path = args.claims or (derivation.spec.claims if args.check or args.latex else None)
    if path is None:
        return None
    return check_claims(derivation, load_claims(path))


def _not_yet(spec, args) -> str | None:
    """What a stack of layer kinds cannot have yet: the stages that still read dense layers
    only (the module, its NumPy Trainer, --train, --check, --claims, --latex and the torch
    and JAX backends have every kind)."""
    if spec.plain_dense:
        return None
    asked = [flag for flag, given in (("--example", args.example),)
             if given]
    if not asked:
        return None
    kinds = sorted({layer.kind for layer in spec.layers} - {"dense"}
                   | ({"skip"} if any(layer.skip is not None for layer in spec.layers) else set())
                   | ({"dense without bias"} if any(layer.kind == "dense" and not
                                                     layer.option_dict.get("bias", True)
                                                     for layer in spec.layers) else set()))
    return (f"{', '.join(asked)} {'is' if len(asked) == 1 else 'are'} not available yet for "
            f"layer kinds ({', '.join(kinds)}): the module (its derived backward checked "
            "against torch.autograd in the tests), --train, --check, --latex and --backend are; "
            "leave out "
            f"{', '.join(asked)}")


def _proof(derivation, args):
    from .proof import prove_spec

    with _TerminalLine(sys.stderr, quiet=args.quiet) as line:
        proof = prove_spec(derivation.spec, budget=args.proof_budget, progress=line.show)
    print(proof.summary(), file=sys.stdout if proof.ok else sys.stderr, flush=True)
    return proof


def _check(derivation, target: Path, args, proof) -> int:
    from codegen.fdcheck import finite_difference_check
    from codegen.lower import switches
    from codegen.files import import_module_from

    if target is None:  # --no-module: the module checked is written to a temporary folder
        import tempfile

        from codegen.emit import write_module

        with tempfile.TemporaryDirectory(prefix="derive_check_") as folder:
            return _check(derivation, write_module(derivation, folder), args, proof)
    fd = finite_difference_check(import_module_from(target), switches=switches(derivation))
    print(fd.summary(), file=sys.stdout if fd.ok else sys.stderr, flush=True)
    return EXIT_OK if proof.ok and fd.ok else EXIT_CHECK_FAILED


class _TerminalLine:
    """One line of progress, rewritten in place, on a terminal only (never in a log or pipe);
    cleared when the block ends."""

    def __init__(self, stream, quiet: bool = False):
        try:
            self.stream = stream if not quiet and stream.isatty() else None
        except (AttributeError, ValueError):
            self.stream = None
        self.width = 0

    def show(self, text: str) -> None:
        if self.stream is not None:
            text = text[:119]
            self.stream.write("\r" + text.ljust(self.width))
            self.stream.flush()
            self.width = len(text)

    def __enter__(self) -> "_TerminalLine":
        return self

    def __exit__(self, *exc) -> None:
        if self.stream is not None and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


# ----------------------------------------------------------------------------- --train

_TRAINING_FLAGS = ("epochs", "learning_rate", "batch_size", "optimizer", "schedule", "patience",
                   "seed", "resume", "save_dir", "plot", "device", "workers")


def _bounded(kind, low, high, what: str):
    """An argparse type: a number of ``kind`` in [low, high] (a finite one)."""
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (low <= value <= high):  # also refuses NaN
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return convert


def _batch_size(text: str):
    """An argparse type: a whole number >= 1, or ``full``."""
    from .optimizers import FULL_BATCH

    if text == FULL_BATCH:
        return text
    return _bounded(int, 1, 10**7, f"a whole number >= 1 or {FULL_BATCH!r}")(text)


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    from .optimizers import LEGACY_OPTIMIZERS, OPTIMIZERS, SCHEDULES

    group = parser.add_argument_group(
        "training", "--train trains the generated network on the spec's data (digits when the "
                    "spec has no data: section); the options after it override the spec's "
                    "training: settings")
    group.add_argument("--train", action="store_true",
                       help="train on the spec's data, report validation and test figures, save "
                            "the model (.npz) and a JSON summary")
    group.add_argument("--epochs", metavar="N",
                       type=_bounded(int, 1, 10**6, "a whole number from 1 to 10^6"),
                       help="overrides training.epochs: passes over the training data (with "
                            "--resume: how many more)")
    group.add_argument("--learning-rate", metavar="RATE",
                       type=_bounded(float, 1e-12, 1e3, "a number > 0 and <= 1000"),
                       help="overrides training.learning_rate: the (initial) step size eta")
    group.add_argument("--batch-size", metavar="N|full", type=_batch_size,
                       help="overrides training.batch_size: examples per update; 1 is the "
                            "documents' stochastic, 'full' their batch gradient descent")
    group.add_argument("--optimizer", metavar="RULE",
                       choices=[*OPTIMIZERS.names(), *LEGACY_OPTIMIZERS],
                       help="overrides training.optimizer, the update rule: "
                            + "; ".join(f"{name}: {OPTIMIZERS[name].title} "
                                        f"({OPTIMIZERS[name].source})" for name in OPTIMIZERS)
                            + f" ({', '.join(LEGACY_OPTIMIZERS)}: older spellings of sgd)")
    group.add_argument("--schedule", metavar="NAME", choices=SCHEDULES.names(),
                       help="overrides training.schedule, the learning rate per epoch: "
                            + ", ".join(f"{name} ({SCHEDULES[name].source})" for name in SCHEDULES)
                            + "; with its default parameters")
    group.add_argument("--patience", metavar="N",
                       type=_bounded(int, 1, 10**6, "a whole number >= 1"),
                       help="early stopping: stop when the validation loss has not improved for "
                            "N epochs, and keep the best epoch's model (overrides "
                            "training.early_stopping.patience)")
    group.add_argument("--resume", metavar="MODEL.npz",
                       help="continue the run saved in MODEL.npz (its parameters, optimizer "
                            "state, epoch and shuffling) for --epochs more epochs")
    group.add_argument("--seed", metavar="N",
                       type=_bounded(int, 0, 2**32 - 1, "a whole number >= 0"),
                       help="overrides training.seed: the initial weights and the shuffling "
                            "(the split has its own data.split_seed)")
    group.add_argument("--save-dir", metavar="DIR",
                       help="where the model file and summary.json go (default: a new "
                            "runs/<name>/<n>/ for each run); files there that this tool did not "
                            "write are not replaced without --force")
    group.add_argument("--plot", metavar="OUT.png",
                       help="draw the loss and accuracy curves (and OUT_confusion.png); "
                            "needs matplotlib: pip install 'backprop-derive[plot]'")
    group.add_argument("--verbose", action="store_true",
                       help="also print per-epoch and per-stage times (with --train), and the "
                            "traceback of an internal error")
    group.add_argument("--device", choices=("cpu", "cuda"),
                       help="--backend torch: where the tensors live (default: cpu)")
    group.add_argument("--workers", metavar="N", type=_bounded(int, 1, 256, "a whole number from 1 to 256"),
                       help="--backend torch: data-parallel processes under DistributedDataParallel "
                            "(gloo on CPU, NCCL on CUDA), launched by torch.distributed.run on "
                            "this machine's loopback (default: 1, no launcher)")


def _check_training_arguments(parser: argparse.ArgumentParser, args) -> None:
    if not args.train:
        given = [name for name in _TRAINING_FLAGS if getattr(args, name) not in (None, False)]
        if given:
            flag = "--" + given[0].replace("_", "-")
            parser.error(f"{flag} is a training option: add --train")
    for flag, given in (("--device", args.device), ("--workers", args.workers)):
        if given is not None and args.backend != "torch":
            parser.error(f"{flag} goes with --backend torch")


def _train(spec, target: Path, args, data=None) -> int:
    """Train the module just written on the spec's data; report and save."""
    from .errors import DataError
    from .training import PlotUnavailable, TrainingFailed, TrainOptions, run

    save_dir, plot = _save_dir(spec, args), _plot_path(spec, args)
    options = TrainOptions(epochs=args.epochs, learning_rate=args.learning_rate,
                           batch_size=args.batch_size, optimizer=args.optimizer,
                           schedule=args.schedule, patience=args.patience, seed=args.seed,
                           resume=args.resume, save_dir=save_dir, plot=plot, quiet=args.quiet,
                           verbose=args.verbose, backend=args.backend,
                           device=args.device or "cpu", workers=args.workers or 1)
    where = spec.source or spec.name
    try:
        if args.backend != "numpy":
            from .training.backends import require

            require(args.backend, options.device)
            if args.backend == "jax":
                how = "one lax.scan per epoch, sharded over the available devices"
            elif options.workers > 1:
                how = (f"{options.device}, {options.workers} processes under "
                       "DistributedDataParallel")
            else:
                how = f"{options.device}, one process"
            _say(args, f"training on {args.backend} ({how})")
        result = run(spec, target, options, data=data)
    except (DataError, PlotUnavailable) as err:
        print(f"derive: {where}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingFailed as err:
        print(f"derive: {where}: {err}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except OSError as err:
        print(f"derive: {where}: cannot write {err.filename or 'the results'}: "
              f"{err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_INTERRUPTED if result.interrupted else EXIT_OK


# ----------------------------------------------------------------------------- --latex

def _add_latex_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "LaTeX", "--latex writes the derivation as a LaTeX document, printed from the same "
                 "symbolic derivation as the code")
    group.add_argument("--latex", metavar="FILE.tex",
                       help="write the derivation to FILE.tex (with several specs: a folder, "
                            "one <name>.tex each)")
    group.add_argument("--latex-body", action="store_true",
                       help="write a fragment without preamble, to paste into a paper or notes")
    group.add_argument("--pdf", action="store_true",
                       help="also compile it with pdflatex, next to FILE.tex")
    group.add_argument("--notation", choices=("bracket", "subscript"), default="bracket",
                       help="W^{[1]}, a^{[1]} (bracket, the default) or W_1, a_1 (subscript)")
    group.add_argument("--example", metavar="VALUES.yaml",
                       help="add a worked numeric example with these weights, biases, input "
                            "and target (see examples/values/)")


def _check_latex_arguments(parser: argparse.ArgumentParser, args) -> None:
    if not args.latex:
        for flag, given in (("--latex-body", args.latex_body), ("--pdf", args.pdf),
                            ("--example", args.example)):
            if given:
                parser.error(f"{flag} goes with --latex FILE.tex")
    if args.pdf and args.latex_body:
        parser.error("--pdf compiles a standalone document: a --latex-body fragment has no "
                     "preamble; drop one of them")
    if args.example and len(args.spec) > 1:
        parser.error("--example gives the values of one network: use it with one --spec")
    if args.latex and len(args.spec) > 1 and Path(args.latex).suffix.lower() == ".tex":
        parser.error(f"with several specs --latex names a folder (one <name>.tex each), not the "
                     f"file {args.latex}: e.g. --latex {Path(args.latex).stem}/")


def _latex_example(derivation, args):
    """The checked values of --example (SpecError names the file, line and field)."""
    if not args.example:
        return None
    from .latex import load_example

    return load_example(args.example, derivation)


def _user_targets(spec, args) -> list[tuple[Path, str]]:
    """Every file the command will write besides the module, with what it is: the LaTeX and
    its PDF, the plots, and with --save-dir the model file and summary (a default run folder
    is always new)."""
    targets = []
    if args.latex:
        tex = _latex_target(spec.name, args)
        targets += [(tex, "LaTeX")] + ([(tex.with_suffix(".pdf"), "PDF")] if args.pdf else [])
    if args.train and args.plot:
        from .training.plot import confusion_path

        plot = _plot_path(spec, args)
        targets += [(plot, "plot"), (confusion_path(plot), "confusion plot")]
    if args.train and args.save_dir:
        folder = _save_dir(spec, args)
        targets += [(folder / f"{spec.name}.npz", "model file"),
                    (folder / "summary.json", "summary")]
    return targets


def _refused_targets(spec, args) -> str | None:
    """Why the command would replace an earlier run's model (None when it will not): a
    --save-dir that holds one is refused without --force, before anything is written (every
    other target is checked with the command's targets)."""
    if args.train and args.save_dir and not args.force:
        folder = _save_dir(spec, args)
        model = folder / f"{spec.name}.npz"
        resumed = args.resume is not None and Path(args.resume).resolve() == model.resolve()
        held = [path.name for path in (model, folder / "summary.json") if path.exists()]
        if held and not resumed:
            return (f"--save-dir {folder} holds the model of an earlier run "
                    f"({', '.join(held)}); add --force to replace it, or give another folder "
                    "(without --save-dir each run gets a new runs/<name>/<n>/)")
    return None


def _save_dir(spec, args) -> Path | None:
    """--save-dir, or DIR/<name>/ with several specs."""
    if not args.save_dir:
        return None
    return Path(args.save_dir) / spec.name if len(args.spec) > 1 else Path(args.save_dir)


def _plot_path(spec, args) -> Path | None:
    """--plot, or OUT_<name>.png with several specs."""
    if not args.plot:
        return None
    plot = Path(args.plot)
    if len(args.spec) > 1:
        plot = plot.with_name(f"{plot.stem}_{spec.name}{plot.suffix or '.png'}")
    return plot


def _latex_target(name: str, args) -> Path:
    """The .tex file to write: FILE (with .tex added when it has no suffix), or
    FOLDER/<name>.tex for a folder or several specs."""
    target = Path(args.latex)
    if len(args.spec) > 1 or target.is_dir() or args.latex.endswith(("/", "\\")):
        return target / f"{name}.tex"
    return target if target.suffix else target.with_suffix(".tex")


def _latex(derivation, example, args, claims=None, proof=None) -> int:
    """Write (and with --pdf compile) the LaTeX of one derivation; 0 or an exit status."""
    from .latex import CompileError, EngineMissing, write_latex

    where = derivation.spec.source or derivation.spec.name
    target = _latex_target(derivation.spec.name, args)
    try:
        out = write_latex(derivation, target, body_only=args.latex_body, notation=args.notation,
                          example=example, pdf=args.pdf, claims=claims, proof=proof)
    except EngineMissing as err:
        print(f"derive: {where}: --pdf: {err} ({target} was written)", file=sys.stderr)
        return EXIT_USAGE
    except CompileError as err:
        print(f"derive: {where}: pdflatex failed: {err}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except OSError as err:
        print(f"derive: {where}: cannot write {err.filename or target}: {err.strerror or err}",
              file=sys.stderr)
        return EXIT_USAGE
    pdf = f", {out.pdf} ({out.pages} pages)" if out.pdf else ""
    _say(args, f"{where}: LaTeX -> {out.tex}{pdf}")
    return EXIT_OK
