"""The `midas` command line: one thin command per job, each over an importable function.

Errors a user can fix (`MidasError`) are caught once, here, and printed as one line on stderr
with a non-zero exit; anything else is a bug and shows its traceback under `--debug`.
"""

from __future__ import annotations

import functools
from typing import Annotated

import typer

from midas_cli.cli.common import console_err
from midas_cli.errors import MidasError

app = typer.Typer(
    name="midas",
    help="MIDAS: a talking digital human from a voice and one photo, in real time.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",  # docstrings reflow (typer's "rich" mode keeps every line break)
)
_state = {"debug": False}


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False):
    _state["debug"] = debug


def _user_errors(fn):
    """Run a command; a MidasError becomes one line on stderr and exit code 1 (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MidasError as e:
            if _state["debug"]:
                raise
            console_err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def command(name: str, fn) -> None:
    app.command(name)(_user_errors(fn))


def _register():
    from midas_cli.cli.info import info

    from midas_cli.cli.download_cmd import download
    from midas_cli.cli.generate_cmd import generate

    command("generate", generate)
    command("info", info)
    command("download", download)
    from midas_cli.cli.bench_cmd import bench

    command("bench", bench)
    from midas_cli.cli.ae_cmd import decode_ae, encode_ae

    command("encode-ae", encode_ae)
    command("decode-ae", decode_ae)
    from midas_cli.cli.batch_cmd import batch

    command("batch", batch)
    from midas_cli.cli.serve_cmd import serve_cmd
    from midas_cli.cli.stream_cmd import stream_cmd

    command("serve", serve_cmd)
    command("stream", stream_cmd)
    from midas_cli.cli.train_cmd import train_cmd

    command("train", train_cmd)
    from midas_cli.cli.prepare_cmd import prepare_cmd

    command("prepare", prepare_cmd)
    from midas_cli.cli.encode_cmd import encode_dataset_cmd

    command("encode-dataset", encode_dataset_cmd)
    try:  # commands whose modules may not exist in every build of the tree
        from midas_cli.cli.synth_cmd import synth

        command("synth", synth)
    except ImportError:
        pass
    try:
        from midas_cli.cli.eval_cmd import eval_cmd

        command("eval", eval_cmd)
    except ImportError:
        pass


_register()


def main():
    app()
