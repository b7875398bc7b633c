"""``voidvm image …``: disk, ISO and kernel images (importing, uploading and deleting are
for admins)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Annotated, cast

import typer

from .._errors import ValidationError
from .._models import Operation
from ._complete import complete_image
from ._output import Column, human_size
from ._params import ImageArg, JsonOpt, QuietOpt, YesOpt
from ._state import begin
from .operation import follow

__all__ = ["IMAGE_COLUMNS", "app"]

app = typer.Typer(help="Disk, ISO and kernel images.", no_args_is_help=True, rich_markup_mode=None)

IMAGE_COLUMNS = (
    Column("ID", lambda i: i.get("id")),
    Column("NAME", lambda i: i.get("name"), shrink=True),
    Column("FORMAT", lambda i: i.get("format")),
    Column("STATUS", lambda i: i.get("status"), status=True),
    Column("SIZE", lambda i: human_size(i.get("virtual_size_bytes") or i.get("size_bytes"))),
    Column("DEFAULT", lambda i: "yes" if i.get("is_default") else ""),
    Column("ALIASES", lambda i: i.get("aliases"), shrink=True),
)

_FORMATS = {".qcow2": "qcow2", ".img": "raw", ".raw": "raw", ".iso": "iso"}
FormatOpt = Annotated[
    str | None, typer.Option("--format", help="qcow2, raw or iso (default: from the file name).")
]


@app.command("list")
def list_images(ctx: typer.Context, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """List the images VMs can be created from (alias: ls)."""
    state = begin(ctx, json_, quiet)
    state.output.table(state.client().images.list(), IMAGE_COLUMNS, noun="image")


app.command("ls", hidden=True)(list_images)


@app.command("show")
def show(
    ctx: typer.Context, image: ImageArg, json_: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """Show one image."""
    state = begin(ctx, json_, quiet)
    state.output.record(state.client().images.get(image))


@app.command("import")
def import_image(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The new image's name.")],
    url: Annotated[str | None, typer.Option(help="Download it from this http(s) URL.")] = None,
    path: Annotated[
        str | None, typer.Option(help="A file inside the server's image import directory.")
    ] = None,
    format_: FormatOpt = None,
    alias: Annotated[
        list[str] | None, typer.Option("--alias", help="Another name (repeat).")
    ] = None,
    default: Annotated[bool, typer.Option("--default", help="Make it the default image.")] = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Import an image the server fetches itself: from a URL (with the download's progress)
    or its import directory. To send a file from this machine, use `voidvm image upload`."""
    state = begin(ctx, json_, quiet)
    if (url is None) == (path is None):
        raise ValidationError("give exactly one of --url and --path", code="VALIDATION_ERROR")
    fmt = format_ or _format_from_name(url or path or "")
    client = state.client()
    if url is not None and not default:  # the server takes --default only with waiting
        image = client.images.create(
            name=name, format=fmt, url=url, aliases=alias or None, wait=False
        )
        accepted = image.get("operation")
        if isinstance(accepted, Operation):
            done = follow(state, accepted, f"Importing {name}").raise_for_failure()
            image = client.images.get(str((done.get("result") or {}).get("image_id") or image.id))
    else:
        with state.output.spinner(f"Importing {name} (the server is fetching it)…"):
            image = client.images.create(
                name=name,
                format=fmt,
                url=url,
                path=path,
                aliases=alias or None,
                default=default or None,
            )
    state.output.message(f"Imported {image.get('name')} ({image.get('id')})")
    state.output.record(image)


@app.command("upload")
def upload(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="The image file.", exists=True, dir_okay=False, readable=True)
    ],
    name: Annotated[str | None, typer.Option(help="Image name (default: the file's).")] = None,
    format_: FormatOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Upload an image file from this machine, with a progress bar."""
    state = begin(ctx, json_, quiet)
    fmt = format_ or _format_from_name(file.name)
    image_name = name or file.name.rsplit(".", 1)[0]
    total = file.stat().st_size
    with file.open("rb") as handle, state.output.transfer(f"Uploading {file.name}", total) as step:
        image = state.client().images.upload(
            cast(IO[bytes], _Counted(handle, step)), name=image_name, format=fmt
        )
    state.output.message(f"Uploaded {image.get('name')} ({image.get('id')})")
    state.output.record(image)


@app.command("delete")
def delete(
    ctx: typer.Context,
    images: Annotated[
        list[str], typer.Argument(help="Image names or ids.", autocompletion=complete_image)
    ],
    yes: YesOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Delete images no VM uses (alias: rm)."""
    state = begin(ctx, json_, quiet)
    if not yes and not typer.confirm(f"Delete {', '.join(images)}?", default=False):
        raise typer.Exit(1)
    client = state.client()
    for image in images:
        client.images.delete(image)
        state.output.message(f"Deleted {image}")
    if state.output.json_mode:
        state.output.json([{"image": image, "deleted": True} for image in images])


app.command("rm", hidden=True)(delete)


@app.command("default")
def set_default(ctx: typer.Context, image: ImageArg, json_: JsonOpt = False) -> None:
    """Make an image the default for VMs created without --os (admin)."""
    state = begin(ctx, json_)
    client = state.client()
    name = client.images.get(image).name
    client.system.update_config({"default_image": name})
    state.output.message(f"{name} is now the default image")
    if state.output.json_mode:
        state.output.json({"default_image": name})


def _format_from_name(name: str) -> str:
    suffix = os.path.splitext(name.split("?", 1)[0])[1].lower()
    if suffix not in _FORMATS:
        raise ValidationError(
            f"cannot tell the format of {name!r} from its name: give --format qcow2, raw or iso",
            code="VALIDATION_ERROR",
        )
    return _FORMATS[suffix]


class _Counted:
    """A binary file that reports every chunk read from it (the progress bar's feed). It keeps
    ``fileno`` so the upload is sent with its Content-Length."""

    def __init__(self, handle: IO[bytes], step: Callable[[int], None]) -> None:
        self._handle = handle
        self._step = step

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        self._step(len(chunk))
        return chunk

    def fileno(self) -> int:
        return self._handle.fileno()

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(1024 * 1024):
            yield chunk
