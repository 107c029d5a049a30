"""MkDocs hook that generates the reference pages from the code at every build.

Nothing in ``docs/reference/`` is written by hand, so it cannot drift from the code: each
build runs one child process (``python docs/hooks.py collect OUT``, with the work tree's
``src/`` and root first on ``PYTHONPATH``) that reads

- every ``params.yaml`` key: its pydantic model in ``marketplace.core.config`` (type and bounds
  from the JSON schema, the comment beside the field), its value and comment in
  ``params.yaml`` (ruamel.yaml keeps comments) and the DVC stages that list it;
- the HTTP API: ``serving.app.create_app().openapi()``, without the lifespan, so no model
  or registry is touched (the child checks that ``Marketplace.from_registry`` never ran);
- the service's environment settings (``serving.settings.Settings``) and databases, and the
  Prometheus metrics its ``/metrics`` declares (read through a test client, no lifespan);
- every command's ``--help``: each DVC stage (a module with a ``__main__`` block under
  ``pipeline/``), the ``marketplace`` console script and each of its commands
  (``marketplace.cli.COMMANDS``). They run in that one process with ``parse_args``
  stopped before any work, so torch is imported once rather than once per command.

Hand-written pages take generated tables through markers: ``<!-- generated: dvc stages -->``
(the stage table, from ``dvc.yaml``, in this process) and ``<!-- generated: metrics -->``.
Anything the collector cannot read is a warning, which ``mkdocs build --strict`` (``make
docs``, ``tests/docs/test_site.py``) turns into a failed build.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import inspect
import io
import json
import logging
import os
import re
import runpy
import subprocess
import sys
import tempfile
import tokenize
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGE_ROOT = "pipeline"
MAIN_BLOCK = re.compile(r"^if __name__ == ['\"]__main__['\"]:", re.MULTILINE)
STAGES_MARKER = "<!-- generated: dvc stages -->"
METRICS_MARKER = "<!-- generated: metrics -->"
HELP_WIDTH = "100"

log = logging.getLogger("mkdocs.hooks.reference")


# --------------------------------------------------------------------------------------
# The collector: runs in a child process, imports the project, writes JSON.
# --------------------------------------------------------------------------------------


def _comments(source: str) -> dict[int, str]:
    """Comment text by line number (1-based) of a Python source."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string.lstrip("#").strip()
    return found


def _class_field_notes(source: str) -> dict[str, dict[str, str]]:
    """For each class of a module: its annotated fields' comments (the comment lines right
    above a field, then the one on its own line), e.g. ``{"Settings": {"max_k": "..."}}``."""
    comments = _comments(source)
    lines = source.splitlines()
    notes: dict[str, dict[str, str]] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        fields = notes.setdefault(node.name, {})
        for item in node.body:
            if not isinstance(item, ast.AnnAssign) or not isinstance(item.target, ast.Name):
                continue
            above = []
            line = item.lineno - 1
            while line >= 1 and lines[line - 1].strip().startswith("#"):
                above.insert(0, comments.get(line, ""))
                line -= 1
            beside = [comments[n] for n in range(item.lineno, item.end_lineno + 1) if n in comments]
            text = " ".join(part for part in above + beside if part)
            if text:
                fields[item.target.id] = text
    return notes


def _yaml_comment(token: Any) -> str:
    """The text of a ruamel comment token (one line, or a line and its continuations)."""
    if token is None:
        return ""
    parts = [line.strip().lstrip("#").strip() for line in token.value.splitlines()]
    return " ".join(part for part in parts if part)


def _params() -> dict[str, Any]:
    """Every params.yaml key: schema, value, comments; sections with their YAML text."""
    from ruamel.yaml import YAML

    import marketplace.core.config as config

    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    data = YAML().load(text)
    config.params_from_dict(json.loads(json.dumps(data)))  # the file itself must validate
    notes = _class_field_notes(Path(config.__file__).read_text(encoding="utf-8"))
    schema = config.Params.model_json_schema()
    lines = text.splitlines()

    def note(model: type, field: str) -> str:
        for cls in model.__mro__:
            if field in notes.get(cls.__name__, {}):
                return notes[cls.__name__][field]
        return ""

    def walk(model: type, node: Any, mapping: Any, prefix: str) -> Iterator[dict[str, Any]]:
        for field, info in model.model_fields.items():
            key = f"{prefix}{field}"
            prop = node["properties"][field]
            ref = prop.get("$ref")
            items = getattr(mapping, "ca", None)
            token = items.items.get(field, [None] * 3)[2] if items is not None else None
            value = mapping.get(field) if hasattr(mapping, "get") else None
            if ref is not None:
                sub = info.annotation
                yield {
                    "key": key,
                    "section": True,
                    "doc": inspect.cleandoc(sub.__doc__ or ""),
                    "comment": _yaml_comment(token),
                }
                yield from walk(sub, schema["$defs"][ref.split("/")[-1]], value, key + ".")
                continue
            yield {
                "key": key,
                "section": False,
                "schema": prop,
                "required": field in node.get("required", []),
                "value": json.loads(json.dumps(value)),
                "comment": _yaml_comment(token),
                "note": note(model, field),
            }

    keys = list(walk(config.Params, schema, data, ""))
    sections = {}
    starts = [(data.lc.key(name)[0], name) for name in data]
    for index, (start, name) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else len(lines)
        block = lines[start:end]
        while block and not block[-1].strip():
            block.pop()
        sections[name] = "\n".join(block)
    return {"keys": keys, "sections": sections, "header": _yaml_comment_block(data)}


def _yaml_comment_block(data: Any) -> str:
    """The comment lines at the top of params.yaml."""
    tokens = (data.ca.comment or [None, None])[1] or []
    return " ".join(_yaml_comment(token) for token in tokens).strip()


def _settings() -> dict[str, Any]:
    """The service's environment settings and the live databases' variables."""
    import serving.settings as settings_module
    from marketplace.core import db

    cls = settings_module.Settings
    notes = _class_field_notes(Path(settings_module.__file__).read_text(encoding="utf-8"))
    schema = cls.model_json_schema()
    prefix = cls.model_config.get("env_prefix", "")
    fields = []
    for name, info in cls.model_fields.items():
        default = info.get_default()
        if hasattr(default, "get_secret_value"):
            default = "(secret)"
        fields.append(
            {
                "env": f"{prefix}{name}".upper(),
                "schema": schema["properties"][name],
                "default": json.loads(json.dumps(default, default=str)),
                "note": next(
                    (
                        notes[c.__name__][name]
                        for c in cls.__mro__
                        if name in notes.get(c.__name__, {})
                    ),
                    "",
                ),
            }
        )
    databases = [
        {"name": name, "env": env, "file": str(db.LIVE_DIR / filename)}
        for name, (env, filename) in db.DATABASES.items()
    ]
    return {"doc": inspect.cleandoc(cls.__doc__ or ""), "fields": fields, "databases": databases}


def _openapi() -> dict[str, Any]:
    """The app's OpenAPI schema, built without its lifespan (no model, no registry)."""
    from marketplace.inference import Marketplace
    from serving.app import create_app

    loads: list[str] = []
    original = Marketplace.__dict__["from_registry"]

    def record(*args: Any, **kwargs: Any) -> Any:
        loads.append(repr(args))
        raise RuntimeError("the OpenAPI schema must not load a model")

    Marketplace.from_registry = classmethod(record)  # type: ignore[method-assign, assignment]
    try:
        schema = create_app().openapi()
    finally:
        Marketplace.from_registry = original  # type: ignore[method-assign]
    return {"schema": schema, "model_loads": loads}


def _metrics() -> list[dict[str, str]]:
    """The Prometheus metrics ``GET /metrics`` exposes (name, type, help), read from an app
    without its lifespan: no model is loaded, every metric is declared."""
    from fastapi.testclient import TestClient

    from serving.app import create_app

    text = TestClient(create_app()).get("/metrics").text
    found: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        match = re.match(r"# (HELP|TYPE) (\S+) ?(.*)", line)
        if match and not match.group(2).endswith("_created"):
            entry = found.setdefault(match.group(2), {"name": match.group(2)})
            entry["help" if match.group(1) == "HELP" else "type"] = match.group(3).strip()
    return list(found.values())


class _StopParsingError(Exception):
    """Raised in place of parsing: the command's parser has been captured."""


def _parsers_of(run: Callable[[], Any], argv0: str) -> tuple[list[argparse.ArgumentParser], str]:
    """Run a command's entry point with ``--help``; the parser it builds (``parse_args``
    stops before any work), or, for a command without argparse, what it printed."""
    captured: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.parse_known_args

    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        captured.append(self)
        raise _StopParsingError

    printed = io.StringIO()
    saved_argv = sys.argv
    argparse.ArgumentParser.parse_known_args = capture  # type: ignore[method-assign]
    sys.argv = [argv0, "--help"]
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
            run()
    except (_StopParsingError, SystemExit):
        pass
    finally:
        argparse.ArgumentParser.parse_known_args = original  # type: ignore[method-assign]
        sys.argv = saved_argv
    return captured, printed.getvalue()


def _helps(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str]]:
    """``(prog, help)`` of a parser and of each of its subcommands, depth first."""
    yield parser.prog, parser.format_help()
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield from _helps(sub)


def command_modules(root: Path = ROOT) -> list[str]:
    """The stage modules (``python -m pipeline.<stage>``): those with a ``__main__`` block."""
    modules = []
    for path in sorted((root / STAGE_ROOT).rglob("*.py")):
        if "__pycache__" in path.parts or not MAIN_BLOCK.search(path.read_text("utf-8")):
            continue
        modules.append(".".join(path.relative_to(root).with_suffix("").parts))
    return modules


def marketplace_commands() -> list[str]:
    """The ``marketplace`` console script's commands (``marketplace.cli.COMMANDS``)."""
    from marketplace.cli import COMMANDS

    return list(COMMANDS)


def _commands() -> list[dict[str, Any]]:
    """Every command's help: the stages' modules, then each ``[project.scripts]`` entry,
    then each ``marketplace <command>``."""
    os.environ["COLUMNS"] = HELP_WIDTH
    targets: list[tuple[str, str, Callable[[], Any]]] = []
    for module in command_modules():
        targets.append(
            (
                module,
                f"python -m {module}",
                lambda m=module: runpy.run_module(m, run_name="__main__"),
            )
        )
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for name, target in pyproject.get("project", {}).get("scripts", {}).items():
        module, _, function = target.partition(":")

        def call(module: str = module, function: str = function) -> Any:
            entry: Any = __import__(module, fromlist=["_"])
            for part in function.split("."):
                entry = getattr(entry, part)
            return entry()

        targets.append((name, name, call))
    from marketplace.cli import load_command

    for name in marketplace_commands():
        targets.append(
            (f"marketplace {name}", f"marketplace {name}", lambda n=name: load_command(n)(None))
        )
    found = []
    for ident, argv0, run in targets:
        try:
            parsers, printed = _parsers_of(run, argv0)
        except Exception as exc:  # reported as a warning; strict builds fail on it
            found.append({"id": ident, "command": argv0, "error": f"{type(exc).__name__}: {exc}"})
            continue
        helps = list(_helps(parsers[0])) if parsers else [(argv0, printed)]
        if not helps[0][1].strip():
            found.append({"id": ident, "command": argv0, "error": "printed no --help"})
            continue
        found.append({"id": ident, "command": argv0, "helps": helps})
    return found


def collect(out: Path) -> None:
    """Everything the reference pages need, as JSON in ``out``."""
    for name in [name for name in os.environ if name.startswith("MARKETPLACE_")]:
        del os.environ[name]  # document the defaults, not this shell's settings
    result: dict[str, Any] = {}
    for name, part in (
        ("openapi", _openapi),
        ("metrics", _metrics),
        ("settings", _settings),
        ("params", _params),
        ("commands", _commands),
    ):
        try:
            result[name] = part()
        except Exception as exc:
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
    out.write_text(json.dumps(result, default=str), encoding="utf-8")


# --------------------------------------------------------------------------------------
# Rendering: runs in the mkdocs process.
# --------------------------------------------------------------------------------------


CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def _cell(text: Any) -> str:
    """A value made safe for one Markdown table cell: pipes outside code spans escaped
    (inside them Python-Markdown keeps a pipe as it is), line breaks as ``<br>``."""
    paragraphs = re.split(r"\n\s*\n", str(text).strip())
    text = "<br>".join(" ".join(paragraph.split()) for paragraph in paragraphs)
    parts, last = [], 0
    for span in CODE_SPAN.finditer(text):
        parts += [text[last : span.start()].replace("|", "\\|"), span.group(0)]
        last = span.end()
    parts.append(text[last:].replace("|", "\\|"))
    return "".join(parts)


def _code(value: Any) -> str:
    if value is None:
        return "`null`"
    return f"`{value if isinstance(value, str) else json.dumps(value)}`"


def _schema_type(schema: dict[str, Any], link: Callable[[str], str] | None = None) -> str:
    """A JSON schema as a short type: ``integer``, ``one of `a`, `b```, ``Schema or null``."""
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        return link(name) if link else name
    if "enum" in schema:
        return "one of " + ", ".join(_code(v) for v in schema["enum"])
    if "const" in schema:
        return _code(schema["const"])
    for combiner in ("anyOf", "oneOf", "allOf"):
        if combiner in schema:
            parts = [_schema_type(part, link) for part in schema[combiner]]
            return " or ".join(dict.fromkeys(parts))
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        items = schema.get("items") or schema.get("prefixItems") or {}
        if isinstance(items, list):
            items = items[0] if items else {}
        return f"list of {_schema_type(items, link)}" if items else "list"
    if kind == "string" and (schema.get("format") == "binary" or "contentMediaType" in schema):
        return "file"
    if kind == "object" and "additionalProperties" in schema:
        inner = schema["additionalProperties"]
        return f"map of {_schema_type(inner, link)}" if isinstance(inner, dict) else "object"
    if kind and schema.get("format") and kind == "string":
        return f"string ({schema['format']})"
    return kind or "any"


def _bounds(schema: dict[str, Any]) -> str:
    """The constraints a JSON schema states: ranges, lengths, patterns."""
    parts = []
    for key, sign in (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
    ):
        if key in schema:
            parts.append(f"{sign} {schema[key]}")
    for key, label in (
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
        ("minItems", "items ≥"),
        ("maxItems", "items ≤"),
    ):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    if "pattern" in schema:
        parts.append(f"matches `{schema['pattern']}`")
    items = schema.get("items")
    if isinstance(items, dict) and (inner := _bounds(items)):
        parts.append(f"each {inner}")
    for combiner in ("anyOf", "oneOf"):
        for part in schema.get(combiner, []):
            if inner := _bounds(part):
                parts.append(inner)
    return ", ".join(parts)


def _stages(dvc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The stages of dvc.yaml; a ``foreach``/``matrix`` stage as its ``do`` template
    (named ``<stage>@…``), every ``cmd`` as a list of commands."""
    stages = {}
    for name, spec in (dvc.get("stages") or {}).items():
        if "do" in spec:
            name, spec = f"{name}@…", spec["do"]
        cmd = spec.get("cmd", [])
        stages[name] = {**spec, "cmd": [str(c) for c in (cmd if isinstance(cmd, list) else [cmd])]}
    return stages


def _param_keys(entries: list[Any]) -> list[str]:
    """A stage's ``params`` as keys: ``key``, or ``{file: [keys]}`` (``file`` itself when it
    lists none: the whole file)."""
    keys = []
    for entry in entries:
        if isinstance(entry, dict):
            for file, listed in entry.items():
                keys += [str(k) for k in listed] if listed else [str(file)]
        else:
            keys.append(str(entry))
    return keys


def _stage_params(dvc: dict[str, Any]) -> dict[str, list[str]]:
    """Params key (or section) -> the stages that list it in dvc.yaml."""
    readers: dict[str, list[str]] = {}
    for stage, spec in _stages(dvc).items():
        for key in _param_keys(spec.get("params", [])):
            readers.setdefault(key, []).append(stage)
    return readers


def render_params(data: dict[str, Any], dvc: dict[str, Any]) -> str:
    readers = _stage_params(dvc)

    def read_by(key: str) -> list[str]:
        parts = key.split(".")
        stages: list[str] = []
        for depth in range(1, len(parts) + 1):
            stages += readers.get(".".join(parts[:depth]), [])
        return sorted(set(stages))

    out = [
        "# `params.yaml`",
        "",
        "Every tunable of the pipeline, generated at build time from its typed model "
        "(`marketplace.core.config`, pydantic) and from `params.yaml` itself. The file is "
        "checked when a stage starts: an unknown key (usually a typo), a missing key, a "
        "value of the wrong type or out of range stops it with a message naming the key, "
        "e.g. `clean_images.sise: unknown key`.",
        "",
        f"> {data['header']}" if data.get("header") else "",
        "",
        "**Read by** lists the DVC stages whose `params` in `dvc.yaml` name the key or its "
        "section: changing the key reruns exactly those stages (and what depends on their "
        "outputs). A key no stage lists is read by a command outside DVC, or does not "
        "change any stage's outputs.",
        "",
    ]
    keys = data["keys"]
    for index, item in enumerate(keys):
        if not item["section"] or "." in item["key"]:
            continue
        name = item["key"]
        out += [f"## `{name}` {{#{name}}}", ""]
        if item["doc"]:
            out += [item["doc"], ""]
        if item["comment"]:
            out += [f"In `params.yaml`: {item['comment']}", ""]
        members = [sub for sub in keys[index + 1 :] if sub["key"].startswith(name + ".")]
        stages = sorted({s for sub in [item, *members] for s in read_by(sub["key"])})
        out += [
            "Read by: "
            + (
                ", ".join(f"`{s}`" for s in stages)
                if stages
                else "no DVC stage (not a DVC param: changing it reruns nothing)"
            )
            + ".",
            "",
            "| key | type | range | value | in `params.yaml` | notes | read by |",
            "|---|---|---|---|---|---|---|",
        ]
        for sub in members:
            if sub["section"]:
                doc = sub["doc"].split("\n\n")[0]
                readers_of = sorted(
                    {
                        s
                        for m in members
                        if m["key"].startswith(sub["key"] + ".")
                        for s in read_by(m["key"])
                    }
                )
                out.append(
                    f"| **`{sub['key']}`** | section | | | {_cell(sub['comment'])} | "
                    f"{_cell(doc)} | {', '.join(f'`{s}`' for s in readers_of)} |"
                )
                continue
            out.append(
                f"| `{sub['key']}` | {_cell(_schema_type(sub['schema']))} "
                f"| {_cell(_bounds(sub['schema']))} | {_code(sub['value'])} "
                f"| {_cell(sub['comment'])} | {_cell(sub['note'])} "
                f"| {_cell(', '.join(f'`{s}`' for s in read_by(sub['key'])))} |"
            )
        out += ["", f'??? note "The `{name}` section of `params.yaml`"', "", "    ```yaml"]
        out += [f"    {line}" if line else "" for line in data["sections"][name].splitlines()]
        out += ["    ```", ""]
    return "\n".join(out)


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def render_api(data: dict[str, Any]) -> str:
    schema = data["schema"]
    components = schema.get("components", {}).get("schemas", {})

    def link(name: str) -> str:
        return f"[{name}](#schema-{_anchor(name)})"

    info = schema.get("info", {})
    out = [
        "# HTTP API",
        "",
        f"{info.get('summary', '')}. Generated at build time from the service's OpenAPI "
        f"schema (`serving.app.create_app().openapi()`, OpenAPI {schema.get('openapi')}); a "
        "running service publishes the same document at `/openapi.json` and an interactive "
        "page at `/docs`. The schema of this build: [openapi.json](openapi.json).",
        "",
        'Every error answers JSON `{"detail", "status"}`. How to call it: '
        "[Serve and query](../guides/serve.md).",
        "",
        "| method | path | what |",
        "|---|---|---|",
    ]
    operations = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            anchor = _anchor(f"{method} {path}")
            operations.append((path, method, op, anchor))
            out.append(
                f"| `{method.upper()}` | [`{path}`](#{anchor}) | {_cell(op.get('summary', ''))} |"
            )
    out.append("")
    for path, method, op, anchor in operations:
        out += [f"## `{method.upper()} {path}` {{#{anchor}}}", ""]
        if op.get("summary"):
            out += [
                f"**{op['summary']}**"
                + (f" · tags: {', '.join(op.get('tags', []))}" if op.get("tags") else ""),
                "",
            ]
        if op.get("description"):
            out += [op["description"], ""]
        if op.get("security"):
            schemes = ", ".join(name for entry in op["security"] for name in entry)
            out += [f"Authentication: {schemes}.", ""]
        if op.get("parameters"):
            out += [
                "**Parameters**",
                "",
                "| name | in | type | required | range | description |",
                "|---|---|---|---|---|---|",
            ]
            for param in op["parameters"]:
                pschema = param.get("schema", {})
                out.append(
                    f"| `{param['name']}` | {param['in']} | {_cell(_schema_type(pschema, link))} "
                    f"| {'yes' if param.get('required') else 'no'} | {_cell(_bounds(pschema))}"
                    f"{_cell(_default(pschema))} | "
                    f"{_cell(param.get('description', pschema.get('description', '')))} |"
                )
            out.append("")
        body = op.get("requestBody")
        if body:
            for media, content in body.get("content", {}).items():
                required = "required" if body.get("required") else "optional"
                body_schema = content.get("schema", {})
                out += [
                    f"**Request body** (`{media}`, {required}): {_schema_type(body_schema, link)}",
                    "",
                ]
                if "$ref" in body_schema:
                    out += _fields(components[body_schema["$ref"].split("/")[-1]], link)
        if op.get("responses"):
            out += ["**Responses**", "", "| status | description | body |", "|---|---|---|"]
            for status, response in op["responses"].items():
                bodies = [
                    f"`{media}` {_schema_type(c.get('schema', {}), link)}"
                    for media, c in response.get("content", {}).items()
                ]
                out.append(
                    f"| {status} | {_cell(response.get('description', ''))} | "
                    f"{_cell('; '.join(bodies))} |"
                )
            out.append("")
    out += ["## Schemas", ""]
    for name, component in components.items():
        out += [f"### {name} {{#schema-{_anchor(name)}}}", ""]
        out += _fields(component, link)
    return "\n".join(out)


def _fields(component: dict[str, Any], link: Callable[[str], str]) -> list[str]:
    """A schema's description and its fields as a table (or its type, if it has none)."""
    out = [component["description"], ""] if component.get("description") else []
    properties = component.get("properties")
    if not properties:
        return [*out, f"Type: {_schema_type(component, link)}.", ""]
    alternatives = [alt["required"] for alt in component.get("anyOf", []) if "required" in alt]
    if alternatives:
        choices = " or ".join(", ".join(f"`{f}`" for f in names) for names in alternatives)
        out += [f"Needs at least {choices}.", ""]
    required = set(component.get("required", []))
    out += ["| field | type | required | range | description |", "|---|---|---|---|---|"]
    for field, prop in properties.items():
        out.append(
            f"| `{field}` | {_cell(_schema_type(prop, link))} | "
            f"{'yes' if field in required else 'no'} | "
            f"{_cell(_bounds(prop))}{_cell(_default(prop))} | "
            f"{_cell(prop.get('description', ''))} |"
        )
    return [*out, ""]


def _default(schema: dict[str, Any]) -> str:
    if "default" not in schema:
        return ""
    return f"{'; ' if _bounds(schema) else ''}default {_code(schema['default'])}"


def render_environment(data: dict[str, Any]) -> str:
    out = [
        "# Environment",
        "",
        "The API reads its settings from the environment once, at start-up "
        "(`serving/settings.py`). Generated at build time from that class; the defaults "
        "below are what an empty environment gives.",
        "",
        "| variable | type | range | default | what |",
        "|---|---|---|---|---|",
    ]
    for field in data["fields"]:
        out.append(
            f"| `{field['env']}` | {_cell(_schema_type(field['schema']))} | "
            f"{_cell(_bounds(field['schema']))} | {_code(field['default'])} | "
            f"{_cell(field['note'])} |"
        )
    out += [
        "",
        "## Live databases",
        "",
        "What the service acknowledges or answers is written to a database "
        "(`marketplace.core.db`): SQLite files under `live/` by default (in WAL mode with "
        "full sync: a committed row is on disk before the answer), or the URL a variable "
        "names (`marketplace stack env` prints the team stack's PostgreSQL URLs).",
        "",
        "| database | variable | default file |",
        "|---|---|---|",
    ]
    for database in data["databases"]:
        out.append(f"| {database['name']} | `{database['env']}` | `{database['file']}` |")
    out += [
        "",
        "`MARKETPLACE_LIVE_DIR` moves the folder of the default files.",
        "",
        "## Read by the pipeline and the commands",
        "",
        "| variable | what |",
        "|---|---|",
        "| `MLFLOW_TRACKING_URI` | the tracking server or store every stage, command and (unless "
        "`MARKETPLACE_TRACKING_URI` is set) the API uses; unset: `sqlite:///mlflow.db` "
        "with artifacts in `mlartifacts/`, in the project |",
        "| `RAY_ADDRESS` | the Ray cluster of `compute.backend: ray`; unset: a local Ray |",
        "| `STACK_DIR` | the team stack's state folder (`marketplace stack`); unset: `.stack` |",
        "",
    ]
    return "\n".join(out)


def render_cli(commands: list[dict[str, Any]], dvc: dict[str, Any]) -> str:
    stage_of: dict[str, list[str]] = {}
    for stage, spec in _stages(dvc).items():
        for cmd in spec["cmd"]:
            match = re.match(r"python -m (\S+)", cmd)
            if match:
                stage_of.setdefault(match.group(1), []).append(stage)
    out = [
        "# Commands",
        "",
        "Every command's `--help`, generated at build time from the code: the DVC stages "
        "(`python -m pipeline.<stage>`, which `dvc repro` runs) and the `marketplace` "
        "console script with each of its commands (`marketplace <command>`, or "
        "`python -m marketplace <command>`). Run them from the project root with the "
        "project's environment (`.venv/bin` first on `PATH`). `make help` lists the "
        "Makefile's shortcuts to them.",
        "",
        "An expected failure (a bad `params.yaml`, a malformed export, a refused promotion) "
        "ends with one line on stderr and exit code 2; anything else is a bug and keeps its "
        "traceback.",
        "",
    ]
    groups = (
        (
            "DVC stages",
            "Run by `dvc repro` as `dvc.yaml` declares them; runnable alone too.",
            [c for c in commands if c["id"] in stage_of],
        ),
        (
            "The marketplace command",
            "Not stages: they read or change the registry, the data or the service.",
            [c for c in commands if c["id"] not in stage_of],
        ),
    )
    for title, text, members in groups:
        out += [f"## {title}", "", text, ""]
        for command in members:
            out += [f"### `{command['command']}` {{#{_anchor(command['id'])}}}", ""]
            if command["id"] in stage_of:
                stages = ", ".join(f"`{s}`" for s in stage_of[command["id"]])
                out += [
                    f"DVC stage{'s' if len(stage_of[command['id']]) > 1 else ''}: "
                    f"{stages} ([the pipeline](../concepts/pipeline.md)).",
                    "",
                ]
            for prog, text_help in command["helps"]:
                if prog != command["command"]:
                    out += [f"`{prog}`", ""]
                out += ["```text", text_help.rstrip(), "```", ""]
    return "\n".join(out)


def render_metrics(metrics: list[dict[str, str]]) -> str:
    out = ["| metric | type | what |", "|---|---|---|"]
    for metric in metrics:
        out.append(
            f"| `{metric['name']}` | {metric.get('type', '')} | {_cell(metric.get('help', ''))} |"
        )
    return "\n".join(out)


def _data_deps(spec: dict[str, Any]) -> list[str]:
    return [d for d in spec.get("deps", []) if not d.startswith(("pipeline/", "src/"))]


def _paths(entries: list[Any]) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else str(e) for e in entries]


def render_stages(dvc: dict[str, Any]) -> str:
    """The stage table of ``dvc.yaml``: reads, params, writes, and the stages before."""
    stages = _stages(dvc)
    producer = {}
    for name, spec in stages.items():
        for path in _paths(spec.get("outs", [])):
            producer[path] = name
    out = [
        "| stage | runs after | reads | params | writes | metrics and plots |",
        "|---|---|---|---|---|---|",
    ]
    for name, spec in stages.items():
        after = []
        for dep in _data_deps(spec):
            for path, stage in producer.items():
                if (dep == path or dep.startswith(path + "/")) and stage not in after:
                    after.append(stage)
        params = _param_keys(spec.get("params", []))
        reports = _paths(spec.get("metrics", [])) + _paths(spec.get("plots", []))
        out.append(
            f"| `{name}` | {', '.join(f'`{s}`' for s in after)} "
            f"| {'<br>'.join(f'`{d}`' for d in _data_deps(spec))} "
            f"| {', '.join(f'`{p}`' for p in params)} "
            f"| {'<br>'.join(f'`{o}`' for o in _paths(spec.get('outs', [])))} "
            f"| {'<br>'.join(f'`{r}`' for r in reports)} |"
        )
    commands = sorted({cmd for spec in stages.values() for cmd in spec["cmd"]})
    out += [
        "",
        "Commands: " + ", ".join(f"`{c}`" for c in commands) + " "
        "([their options](../reference/cli.md)).",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# MkDocs events.
# --------------------------------------------------------------------------------------

_generated: dict[str, str] = {}  # site path -> content, added as files
_generated_tables: dict[str, str] = {}  # marker name -> Markdown, put into hand-written pages
_dvc: dict[str, Any] = {}


def _run_collector() -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    with tempfile.TemporaryDirectory(prefix="docs-reference-") as folder:
        out = Path(folder) / "reference.json"
        result = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "collect", str(out)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not out.exists():
            log.warning(
                "the reference collector failed (exit %s):\n%s",
                result.returncode,
                result.stderr[-4000:],
            )
            return {}
        return json.loads(out.read_text(encoding="utf-8"))


def on_pre_build(config: Any) -> None:
    """Collect once per build and render the reference pages."""
    import yaml

    _generated.clear()
    _generated_tables.clear()
    _dvc.clear()
    _dvc.update(yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8")))
    data = _run_collector()
    parts = {
        "reference/params.md": ("params", lambda d: render_params(d, _dvc)),
        "reference/api.md": ("openapi", render_api),
        "reference/environment.md": ("settings", render_environment),
    }
    for page, (name, render) in parts.items():
        part = data.get(name, {"error": "collector failed"})
        if "error" in part:
            log.warning("%s: could not read %s: %s", page, name, part["error"])
            continue
        _generated[page] = render(part)
    metrics = data.get("metrics", {"error": "collector failed"})
    if isinstance(metrics, dict):
        log.warning("could not read the metrics: %s", metrics["error"])
    else:
        _generated_tables["reference/metrics"] = render_metrics(metrics)
    openapi = data.get("openapi", {})
    if openapi.get("model_loads"):
        log.warning("building the OpenAPI schema loaded a model: %s", openapi["model_loads"])
    if "schema" in openapi:
        _generated["reference/openapi.json"] = json.dumps(openapi["schema"], indent=2) + "\n"
    commands = data.get("commands")
    if isinstance(commands, dict):
        log.warning("reference/cli.md: could not list the commands: %s", commands["error"])
    elif commands is not None:
        for command in commands:
            if "error" in command:
                log.warning("%s --help failed: %s", command["command"], command["error"])
        _generated["reference/cli.md"] = render_cli([c for c in commands if "error" not in c], _dvc)


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the site (they exist only in memory)."""
    from mkdocs.structure.files import File

    for uri, content in _generated.items():
        if files.get_file_from_path(uri) is not None:
            log.warning("docs/%s is generated; remove the hand-written file", uri)
            continue
        files.append(File.generated(config, uri, content=content))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the markers of generated tables: the stages of dvc.yaml, the metrics."""
    if STAGES_MARKER in markdown:
        markdown = markdown.replace(STAGES_MARKER, render_stages(_dvc))
    if METRICS_MARKER in markdown:
        if "reference/metrics" not in _generated_tables:
            log.warning("%s: the metrics could not be read", page.file.src_uri)
        markdown = markdown.replace(METRICS_MARKER, _generated_tables.get("reference/metrics", ""))
    return markdown


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "collect":
        collect(Path(sys.argv[2]))
    else:
        sys.exit("usage: python docs/hooks.py collect OUT.json")
