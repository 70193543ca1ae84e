"""``mapper new``: scaffold a whole mapper project from a Jinja template folder."""

from __future__ import annotations

import importlib.util
import keyword
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
import yaml

from mapper_cli.common import fail

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PROTOCOL = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# Folders the template itself creates beside the package: a package of that name would be merged into them.
TEMPLATE_FOLDERS = frozenset(("tests", "crds", "deploy"))


class NewProjectError(ValueError):
    """A name, template or folder that cannot be used; nothing has been written."""


@dataclass(frozen=True)
class Answers:
    name: str
    protocol: str
    author: str
    with_stream: bool

    @property
    def package(self) -> str:
        return self.name.replace("-", "_")

    @property
    def class_name(self) -> str:
        return "".join(part.capitalize() for part in re.split(r"[-_]", self.protocol))


def builtin_templates() -> Path:
    return Path(str(resources.files("templates")))


def list_templates(root: Path) -> list[tuple[str, str]]:
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / "template.yaml").exists()):
        meta = yaml.safe_load((folder / "template.yaml").read_text()) or {}
        out.append((folder.name, str(meta.get("description", ""))))
    return out


def check_answers(answers: Answers, target: Path | None = None) -> None:
    """Each rule that fails says which one. ``target``: the project folder (a module found there is this very
    project, installed before, and does not count as taken)."""
    name = answers.name
    if len(name) > 63 or not DNS_1123_LABEL.match(name):
        raise NewProjectError(
            f"name {name!r} is not a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a"
            " letter or digit, at most 63 characters): it names the Kubernetes objects. Hint: e.g. my-sensor-mapper"
        )
    if not name[0].isalpha():
        raise NewProjectError(f"name {name!r} must start with a letter: it also names the Python package")
    package = answers.package
    if keyword.iskeyword(package):
        raise NewProjectError(
            f"name {name!r} gives the package {package!r}, a Python keyword. Hint: e.g. {name}-mapper"
        )
    if not package.isidentifier():
        raise NewProjectError(f"name {name!r} gives the package {package!r}, not a valid Python identifier")
    if package in TEMPLATE_FOLDERS:
        raise NewProjectError(
            f"name {name!r} gives the package {package!r}, which the project already has as a folder."
            f" Hint: e.g. {name}-mapper"
        )
    taken = _module_origin(package)
    if taken is not None and target is not None and Path(taken).resolve().is_relative_to(target.resolve()):
        taken = None
    if taken is not None:
        raise NewProjectError(
            f"name {name!r} gives the package {package!r}, which is already a module here ({taken}): one of the two"
            f" would hide the other when the mapper imports it. Hint: e.g. {name}-mapper"
        )
    if not PROTOCOL.match(answers.protocol):
        raise NewProjectError(
            f"protocol {answers.protocol!r}: expected lower-case letters, digits, '-' or '_', starting with a letter"
            " (it is the CRs' protocolName)"
        )


def _module_origin(package: str) -> str | None:
    """Where an importable top-level module of this name lives (the standard library, the SDK, a dependency)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.origin is None:
        locations = list(spec.submodule_search_locations or [])
        return locations[0] if locations else "a namespace package"
    return spec.origin if spec.origin not in ("built-in", "frozen") else "built into Python"


def _check_target(target: Path, force: bool) -> Path:
    """The absolute folder to create; refuses what --force must never remove."""
    absolute = target.expanduser().absolute()
    resolved = absolute.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise NewProjectError(
            f"{target} is (or holds) the folder you are in: a new project needs a folder of its own, and --force"
            " would delete everything in it. Hint: --output my-project"
        )
    if resolved.exists() and not resolved.is_dir():
        raise NewProjectError(f"{target} exists and is not a folder. Hint: choose another --output")
    if resolved.exists() and not force:
        raise NewProjectError(f"{target} already exists. Hint: --force replaces it, or choose another --output")
    for parent in resolved.parents:
        if parent.exists() and not parent.is_dir():
            raise NewProjectError(f"{target}: {parent} is a file, not a folder. Hint: choose another --output")
    return absolute


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def render(template: Path, answers: Answers, target: Path, force: bool) -> list[Path]:
    """Render ``template`` into ``target``: all in a temporary folder first, moved into place at the end."""
    from jinja2 import Environment, StrictUndefined, TemplateError

    if not (template / "template.yaml").exists():
        raise NewProjectError(f"{template} is not a template (no template.yaml). Hint: mapper new --list-templates")
    shown = target
    target = _check_target(target, force)
    env = Environment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
    values = {
        "name": answers.name,
        "protocol": answers.protocol,
        "author": answers.author,
        "with_stream": answers.with_stream,
        "package": answers.package,
        "class_name": answers.class_name,
    }
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{answers.name}-", dir=target.parent))
    except OSError as exc:
        raise NewProjectError(f"cannot create {shown}: {exc.strerror or exc}. Hint: choose another --output") from None
    made: list[Path] = []
    source = template
    try:
        for source in sorted(template.rglob("*")):
            relative = source.relative_to(template)
            if source.is_dir() or relative.name == "template.yaml" or "__pycache__" in relative.parts:
                continue
            rel_text = env.from_string(str(relative)).render(values)
            out = staging / rel_text
            out.parent.mkdir(parents=True, exist_ok=True)
            if source.suffix == ".j2":
                out = out.with_suffix("")
                out.write_text(env.from_string(source.read_text(encoding="utf-8")).render(values))
            else:
                shutil.copyfile(source, out)
            made.append(out.relative_to(staging))
        # mkdtemp makes a private folder; the project gets the usual permissions.
        staging.chmod(0o777 & ~_umask())
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except TemplateError as exc:
        raise NewProjectError(f"template file {source}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise NewProjectError(f"template file {source} is not UTF-8 text ({exc.reason}); nothing was written") from None
    except OSError as exc:
        raise NewProjectError(f"cannot write {shown}: {exc.strerror or exc}; nothing was written") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return made


def new(
    name: Annotated[str | None, typer.Argument(help="Project name (DNS-1123 label, e.g. my-sensor-mapper).")] = None,
    protocol: Annotated[str | None, typer.Option("--protocol", "-p", help="protocolName in the CRs.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Folder to create (default ./NAME).")] = None,
    author: Annotated[str | None, typer.Option("--author", help="Author in pyproject.toml.")] = None,
    with_stream: Annotated[
        bool, typer.Option("--with-stream", help="Add a STREAM property to the sample model.")
    ] = False,
    template: Annotated[
        Path | None, typer.Option("--template", help="A template folder of your own (with a template.yaml).")
    ] = None,
    no_input: Annotated[bool, typer.Option("--no-input", help="Ask nothing: defaults for what is not given.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output folder.")] = False,
    list_: Annotated[bool, typer.Option("--list-templates", help="List the shipped templates and exit.")] = False,
) -> None:
    """Scaffold a runnable mapper project: driver to fill, configs, sample CRs, tests, Dockerfile, manifests."""
    root = builtin_templates()
    if list_:
        for tname, description in list_templates(root):
            typer.echo(f"{tname:12} {description}")
        return
    if name is None:
        if no_input:
            fail("give NAME with --no-input. Hint: mapper new my-sensor-mapper --no-input")
        name = typer.prompt("Project name (DNS-1123)", default="my-mapper")
    assert name is not None
    target = output if output is not None else Path(name)
    try:  # the name first: a prompt session must not end on a name refused after every other answer
        check_answers(Answers(name, "custom", "", with_stream), target)
    except NewProjectError as exc:
        fail(str(exc))
    if protocol is None:
        default = name.removesuffix("-mapper") or "custom"
        protocol = default if no_input else typer.prompt("Protocol (protocolName in the CRs)", default=default)
    if author is None:
        author = "KubeEdge user" if no_input else typer.prompt("Author", default="KubeEdge user")
    answers = Answers(name, protocol, author, with_stream)
    try:
        check_answers(answers, target)
        made = render(template if template is not None else root / "mapper", answers, target, force)
    except NewProjectError as exc:
        fail(str(exc))
        return
    typer.echo(f"created {target}/")
    for path in made:
        typer.echo(f"  {path}")
    typer.echo(
        f"next:\n  cd {target} && pip install -e '.[dev]'\n"
        f"  mapper up --devices crds --no-mappers & {local_run_command(answers)}"
    )


def local_run_command(answers: Answers) -> str:
    """The mapper run beside ``mapper up`` (sockets in its .mapper folder; config.yaml keeps edgecore's paths)."""
    return (
        f"mapper run --driver {answers.package}:driver_factory -c config.yaml"
        f" --edgecore-sock .mapper/dmi.sock --socket .mapper/{answers.name}.sock"
    )


def register(app: typer.Typer) -> None:
    app.command("new")(new)
