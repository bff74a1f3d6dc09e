"""Attacks that must fail: hostile names in the generated device script, and report.json fields
that try to pull files from outside the build directories into report.html or to inject
Markdown/HTML into report.md."""

from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
from pathlib import Path

import pytest
from edgeprune.engine import make_engine
from edgeprune.engine.docker import engine_run_command, image_build_command
from edgeprune.errors import EdgepruneError
from edgeprune.targets import load_target
from onnx_graphs import conv_relu

# Each name runs `touch` if any part of the script lets the shell read it as code.
HOSTILE = ["$(touch pwned1)", "`touch pwned2`", "a;touch pwned3;b", "sp ace", "q'uo\"te",
           "new\nline&&touch pwned4", "$ROOT", "-dash", "*", "x|touch pwned5", "tab\tend\n"]


def _hostile_target(base: str, **software) -> object:
    """A real target file's document with hostile values in what the script interpolates."""
    t = load_target(base)
    raw = copy.deepcopy(t.raw)
    raw["software"].update(software)
    return dataclasses.replace(t, name=f"{t.name}$(touch pwned6)\ntouch pwned7", raw=raw)


def _stand_in(path: Path) -> Path:
    """An executable that records its argv (NUL-separated, so newlines survive) and its cwd."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "$ARGS_FILE"\n'
                    'pwd > "$ARGS_FILE.cwd"\n')
    path.chmod(0o755)
    return path


def _run(script: Path, tmp_path: Path, bin_dir: Path | None = None) -> list[str]:
    """bash -n, then run the script from an unrelated folder; returns the stand-in's argv."""
    subprocess.run(["bash", "-n", str(script)], check=True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    path = f"{bin_dir}:{os.environ['PATH']}" if bin_dir else os.environ["PATH"]
    env = {**os.environ, "PATH": path, "ARGS_FILE": str(tmp_path / "args")}
    out = subprocess.run(["bash", str(script)], cwd=cwd, env=env, capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert not list(tmp_path.rglob("pwned?")), "an injected command ran"
    assert not list(cwd.iterdir())
    return (tmp_path / "args").read_bytes().decode().split("\0")[:-1]


def _hostile_build(tmp_path: Path, target, **kw):
    """An ONNX, an out folder and a calibration cache whose names are all hostile."""
    root = tmp_path / "".join(HOSTILE[:6]).replace("/", "_")
    root.mkdir()
    onnx = conv_relu(root / f"m{HOSTILE[0]}{HOSTILE[4]}.onnx")
    cache = root / f"c{HOSTILE[2]}{HOSTILE[1]}.cache"
    cache.write_text("TRT-8502-EntropyCalibration2\ninput: 3c010204\n")
    out = root / f"e{HOSTILE[5]}" / f"{HOSTILE[9]}{HOSTILE[10]}"
    return root, make_engine(onnx, target, "int8", out, calib_cache=cache, build=False, **kw)


def test_script_runs_trtexec_with_exactly_the_hostile_names(tmp_path):
    trtexec = _stand_in(tmp_path / "bin $(touch pwned8)" / "trt`touch pwned9`exec")
    target = _hostile_target("jetson-xavier-nx", trtexec=str(trtexec))
    root, result = _hostile_build(tmp_path, target)
    args = _run(result.path, tmp_path)
    assert args == result.plan["trtexec"][1:]
    assert f"--onnx=m{HOSTILE[0]}{HOSTILE[4]}.onnx" in args
    assert f"--calib=c{HOSTILE[2]}{HOSTILE[1]}.cache" in args
    assert (tmp_path / "args.cwd").read_text()[:-1] == str(root)  # ran in the plan's root


def test_script_runs_docker_with_exactly_the_hostile_names(tmp_path):
    bin_dir = tmp_path / "bin"
    _stand_in(bin_dir / "docker")
    # the device trtexec is absent here, so the script takes the docker branch
    target = _hostile_target("jetson-xavier-nx", trtexec=f"/nonexistent/{HOSTILE[0]}/trtexec")
    root, result = _hostile_build(tmp_path, target)
    args = _run(result.path, tmp_path, bin_dir)
    container = target.section("software")["container"]
    assert args == ["run", "--rm", "--runtime", "nvidia", "-v", f"{root}:/build", "-w",
                    "/build", container, *result.plan["trtexec"]]
    assert result.plan["docker"][6] == "$ROOT:/build"


@pytest.mark.parametrize("image", ["img$(touch pwned)", "img\nrm -rf x", "a b", "`id`", "",
                                   "-v/:/host"])
def test_a_container_image_that_is_not_an_image_reference_is_refused(tmp_path, image):
    target = _hostile_target("jetson-nano", container=image)
    onnx = conv_relu(tmp_path / "model.onnx")
    with pytest.raises(EdgepruneError, match="not a docker image reference"):
        make_engine(onnx, target, "fp16", tmp_path / "engine", build=False)
    assert not (tmp_path / "engine" / "build_engine.sh").exists()
    with pytest.raises(EdgepruneError, match="not a docker image reference"):
        image_build_command(target)


def test_docker_readme_lines_quote_target_values(tmp_path):
    target = _hostile_target("jetson-nano")
    line = engine_run_command(target, precision="fp16;touch pwned")
    out = subprocess.run(["bash", "-c", f"docker() {{ printf '%s\\0' \"$@\"; }}; {line}"],
                         cwd=tmp_path, capture_output=True, text=True, check=True)
    args = out.stdout.split("\0")[:-1]
    assert args[args.index("--target") + 1] == target.name
    assert args[args.index("--precision") + 1] == "fp16;touch pwned"
    assert not list(tmp_path.iterdir())


# --- report: files only from inside the build directories, names only as text ---------------

NASTY = ("v|x `code` <script>alert(1)</script>\n# heading [link](http://evil.example/a) "
         "![img](http://evil.example/i.png) *em* _u_ $\\frac{1}{0$ &amp; www.evil.example [/x]")


@pytest.fixture(scope="module")
def small_report(tmp_path_factory):
    from edgeprune import __version__
    from edgeprune.profile import profile_variant

    onnx = conv_relu(tmp_path_factory.mktemp("onnx") / "model.onnx")
    target = load_target("jetson-nano")
    variant = profile_variant(onnx, target, name="original", precision="fp32", accuracy=0.9,
                              measure_host=False)
    return {"target": {"name": target.name, "display_name": target.display_name},
            "edgeprune_version": __version__, "variants": [variant], "pruning": None}


def _build_dir(path: Path, report: dict, png: bytes | None = None) -> Path:
    from edgeprune.report import write_reports

    if png is not None:
        path.mkdir(parents=True)
        (path / "mspic.png").write_bytes(png)
        report = dict(report, mi_plot="mspic.png")
    write_reports(report, path)
    return path


def _set_mi_plot(build: Path, value: str) -> None:
    import json

    doc = json.loads((build / "report.json").read_text())
    doc["mi_plot"] = value
    (build / "report.json").write_text(json.dumps(doc))


def _report_cli(*args: str):
    import edgeprune.cli  # noqa: F401  (registers the commands)
    from edgeprune.cli.app import app
    from typer.testing import CliRunner

    return CliRunner().invoke(app, ["report", *args])


SECRET = b"\x89PNG\r\n\x1a\n top secret bytes"


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "inner-dotdot", "dir-symlink"])
def test_report_refuses_an_mi_plot_outside_the_build_dir(tmp_path, small_report, how):
    import base64

    secret = tmp_path / "secret.png"
    secret.write_bytes(SECRET)
    build = _build_dir(tmp_path / "b" / "build", small_report)
    value = {"dotdot": "../../secret.png", "absolute": str(secret), "symlink": "link.png",
             "inner-dotdot": "sub/../../../secret.png", "dir-symlink": "d/secret.png"}[how]
    (build / "sub").mkdir()
    (build / "link.png").symlink_to(secret)
    (build / "d").symlink_to(tmp_path)
    _set_mi_plot(build, value)
    result = _report_cli(str(build), "--out", str(tmp_path / "cmp"))
    assert result.exit_code == 2, result.output
    assert "refusing to read it" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "cmp").exists()
    # and a single build's own report refuses it the same way when re-rendered
    import json

    from edgeprune.report import write_reports
    with pytest.raises(EdgepruneError, match="refusing to read it"):
        write_reports(json.loads((build / "report.json").read_text()), build)
    assert base64.b64encode(SECRET).decode()[:20] not in (build / "report.html").read_text()


def test_report_embeds_a_plot_inside_the_build_dir_and_the_comparison_is_self_contained(
        tmp_path, small_report):
    import base64

    png = SECRET + b" but ours"
    build = _build_dir(tmp_path / "build", small_report, png)
    (build / "same.png").symlink_to(build / "mspic.png")  # a link that stays inside is fine
    _set_mi_plot(build, "same.png")
    assert _report_cli(str(build), "--out", str(tmp_path / "cmp")).exit_code == 0
    cmp = tmp_path / "cmp"
    assert (cmp / "mspic.png").read_bytes() == png
    assert base64.b64encode(png).decode() in (cmp / "report.html").read_text()
    assert "![MI per unit](mspic.png)" in (cmp / "report.md").read_text()
    # the comparison is itself a valid build directory for another comparison
    again = _report_cli(str(cmp), str(build), "--out", str(tmp_path / "cmp2"))
    assert again.exit_code == 0, again.output
    assert (tmp_path / "cmp2" / "mspic.png").read_bytes() == png


def _hostile_report(report: dict) -> dict:
    doc = copy.deepcopy(report)
    doc["target"]["display_name"] = NASTY
    doc["model"] = {"arch": NASTY, "path": NASTY}
    variant = doc["variants"][0]
    variant.update(name=NASTY, target=NASTY)
    for layer in variant["layers"]:
        layer.update(name=NASTY, op_type=NASTY)
    doc["pruning"] = {"method": NASTY, "units_before": 2, "units_after": 1,
                      "stage_log": [{NASTY: NASTY, "unit": NASTY}]}
    return doc


def _literal_texts(node) -> list[str]:
    out = []
    for child in node.children or []:
        if child.type == "text":
            out.append(child.content)
        out += _literal_texts(child)
    return out


def test_report_md_shows_hostile_names_as_text(tmp_path, small_report):
    """Render report.md with a real Markdown parser: no link, image, code, raw HTML or extra
    cell comes from a name, and each name reads back literally (newlines become spaces)."""
    from edgeprune.report import write_reports
    from markdown_it import MarkdownIt
    from markdown_it.tree import SyntaxTreeNode

    md = write_reports(_hostile_report(small_report), tmp_path)["report.md"].read_text()
    parser = MarkdownIt("commonmark").enable("table").enable("strikethrough")
    tokens = parser.parse(md)
    kinds = {t.type for t in tokens} | {c.type for t in tokens for c in t.children or []}
    assert not kinds & {"link_open", "image", "code_inline", "html_inline", "html_block",
                        "code_block", "fence", "em_open", "strong_open", "s_open"}, kinds
    headings = [t for t in tokens if t.type == "heading_open"]
    assert len(headings) == len([line for line in md.splitlines() if line.startswith("#")])
    html = parser.render(md)
    assert "<script" not in html and "<a " not in html and "<img" not in html
    # every row of every table has as many cells as its header
    for table in SyntaxTreeNode(tokens).walk():
        if table.type == "table":
            rows = [r for r in table.walk() if r.type == "tr"]
            assert len({len(r.children) for r in rows}) == 1
    flat = NASTY.replace("\n", " ")
    texts = _literal_texts(SyntaxTreeNode(tokens))
    assert any(flat in t for t in texts)
    assert "http://evil" not in md and "www.evil" not in md  # no bare URL for GFM to link


def test_report_html_and_plots_take_hostile_names(tmp_path, small_report):
    from edgeprune.report import write_reports

    html = write_reports(_hostile_report(small_report), tmp_path)["report.html"].read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "[link](http://evil" in html  # as text: no <a> element
    assert "<a " not in html and html.count("<img") == 4  # our four plots, no other image
    # the CLI's summary table prints the names without reading them as rich markup
    result = _report_cli(str(tmp_path), "--out", str(tmp_path / "cmp"))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("text, message", [
    (b'{"a": NaN}', "holds NaN"),
    (b'{"a": -Infinity}', "holds -Infinity"),
    (b"\xff\xfe{}", "not a report written by edgeprune"),
    (b"[" * 100000 + b"]" * 100000, "not a report written by edgeprune"),
    (b"[1, 2]", "report schema at (top level)"),
])
def test_report_refuses_a_report_json_that_is_not_ours(tmp_path, text, message):
    build = tmp_path / "build"
    build.mkdir()
    (build / "report.json").write_bytes(text)
    result = _report_cli(str(build), "--out", str(tmp_path / "cmp"))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "cmp").exists()


def test_report_refuses_nan_in_a_real_report(tmp_path, small_report):
    build = _build_dir(tmp_path / "build", small_report)
    text = (build / "report.json").read_text()
    (build / "report.json").write_text(text.replace('"accuracy": 0.9', '"accuracy": NaN'))
    result = _report_cli(str(build), "--out", str(tmp_path / "cmp"))
    assert result.exit_code == 2 and "holds NaN" in result.output


def test_engine_cli_prints_hostile_names_as_text_and_a_quoted_command(tmp_path):
    import shlex

    import edgeprune.cli  # noqa: F401
    from edgeprune.cli.app import app
    from typer.testing import CliRunner

    (tmp_path / "m[").mkdir()  # the path reads "m[/x] ...": a closing tag to rich markup
    onnx = conv_relu(tmp_path / "m[/x] $(touch pwned1).onnx")
    result = CliRunner().invoke(app, ["engine", str(onnx), "--target", "jetson-xavier-nx",
                                      "--out", str(tmp_path / "e[bold]")])
    assert result.exit_code == 0, result.output
    command = result.output.strip().splitlines()[-1]
    assert shlex.split(command)[1] == "--onnx=m[/x] $(touch pwned1).onnx"
    assert "e[bold]" in result.output


def test_script_refuses_to_mount_a_folder_with_a_colon(tmp_path):
    """docker -v splits at ':': "/a:/etc" would mount /a at /etc. The script stops instead."""
    bin_dir = tmp_path / "bin"
    _stand_in(bin_dir / "docker")
    root = tmp_path / "x:" / "etc"
    root.mkdir(parents=True)
    result = make_engine(conv_relu(root / "m.onnx"), load_target("jetson-nano"), "fp16",
                         root / "engine", build=False)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "ARGS_FILE": str(tmp_path / "args")}
    out = subprocess.run(["bash", str(result.path)], env=env, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 2 and "docker cannot mount" in out.stderr
    assert not (tmp_path / "args").exists()


def test_report_embeds_only_a_png_from_the_build_dir(tmp_path, small_report):
    build = _build_dir(tmp_path / "build", small_report)
    (build / "model.pt").write_bytes(b"PK\x03\x04 weights")
    _set_mi_plot(build, "model.pt")
    result = _report_cli(str(build), "--out", str(tmp_path / "cmp"))
    assert result.exit_code == 2 and "is not a PNG image" in result.output
    assert not (tmp_path / "cmp").exists()
