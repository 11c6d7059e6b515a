"""`midas download`: a checkpoint into the Hugging Face cache (or a folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midas_cli.cli.common import console_err
from midas_cli.errors import MidasError


def download_checkpoint(repo_id: str, revision: str | None = None, local_dir: Path | None = None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    from midas_cli.model.checkpoint import CHECKPOINT_FILES

    try:
        path = snapshot_download(repo_id, revision=revision, local_dir=local_dir, allow_patterns=CHECKPOINT_FILES)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        raise MidasError(f"{repo_id}: cannot download: offline (HF_HUB_OFFLINE is set or the Hub cannot be reached) "
                         "and not in the cache") from None
    except HfHubHTTPError as e:
        raise MidasError(f"{repo_id}: download failed ({str(e).splitlines()[0]})") from None
    except ValueError as e:
        raise MidasError(f"{repo_id}: {e}") from None
    return Path(path)


def download(
    repo_id: Annotated[str, typer.Argument(help="Hub repository id, e.g. org/midas-3b.")],
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit.")] = None,
    local_dir: Annotated[Path | None, typer.Option("--local-dir", help="Write the files here instead of the cache.")] = None,
):
    """Download the files a checkpoint needs (config, weights, component folders)."""
    path = download_checkpoint(repo_id, revision, local_dir)
    console_err.print(f"{repo_id} → {path}", highlight=False)
    print(path)
