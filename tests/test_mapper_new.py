"""`mapper new`: a generated project passes its own tests, lints and type-checks, reports through the agent, and its
manifests validate against the Kubernetes schema; bad input is refused with nothing written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def mapper(*args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mapper_cli.main", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


def fresh_venv(folder: Path, *beside: Path) -> Path:
    """A new virtualenv that sees our installed package (and ``beside``) through a .pth file."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    Path(purelib, "beside.pth").write_text("\n".join([ours, str(ROOT), *map(str, beside)]) + "\n")
    return python


def test_generated_project_runs_its_tests_lints_and_validates(tmp_path: Path) -> None:
    project = tmp_path / "acme-sensor-mapper"
    made = mapper("new", "acme-sensor-mapper", "--no-input", "--output", str(project))
    assert made.returncode == 0, made.stderr
    assert "acme_sensor_mapper/driver.py" in made.stdout and "next:" in made.stdout

    python = fresh_venv(tmp_path / "venv", project)
    tests = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, capture_output=True, text=True
    )
    # Includes the project's own end-to-end test: agent + this mapper, until the simulated device reports a twin.
    assert tests.returncode == 0 and "3 passed" in tests.stdout, tests.stdout + tests.stderr

    for tool in (["ruff", "check", "."], ["ruff", "format", "--check", "."]):
        result = subprocess.run([str(BIN / tool[0]), *tool[1:]], cwd=project, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    # MYPYPATH: an editable install of kubeedge-mapper is invisible to mypy; a wheel install needs nothing.
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    typed = subprocess.run([str(BIN / "mypy")], cwd=project, capture_output=True, text=True, env=env)
    assert typed.returncode == 0, typed.stdout

    manifests = sorted((project / "deploy").glob("*.yaml"))
    assert [m.name for m in manifests] == ["configmap.yaml", "deployment.yaml"]
    checked = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", "1.30.0", *map(str, manifests)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    deployment = yaml.safe_load((project / "deploy" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"node-role.kubernetes.io/edge": ""}
    assert pod["volumes"][0]["hostPath"]["path"] == "/etc/kubeedge"
    assert pod["containers"][0]["resources"]["requests"]
    dockerfile = (project / "Dockerfile").read_text().splitlines()
    instructions = [line.split()[0] for line in dockerfile if line and not line.startswith("#")]
    assert instructions[0] == "FROM" and "python:3.11-slim" in dockerfile[1]
    assert "USER" in instructions and 'VOLUME ["/etc/kubeedge"]' in dockerfile
    assert yaml.safe_load(next(x for x in dockerfile if x.startswith("ENTRYPOINT"))[len("ENTRYPOINT ") :])[:2] == [
        "mapper",
        "run",
    ]
    validated = mapper("validate", "-f", str(project / "crds"))
    assert validated.returncode == 0, validated.stdout + validated.stderr


def test_our_own_pi_manifest_validates() -> None:
    checked = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", "1.30.0", str(ROOT / "deploy" / "dht11-mapper-pi.yaml")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("My_Mapper", "is not a DNS-1123 label"),
        ("mapper-", "is not a DNS-1123 label"),
        ("x" * 64, "at most 63 characters"),
        ("9lives", "must start with a letter"),
        ("class", "a Python keyword"),
        ("yaml", "which is already a module here"),  # a dependency: the project could not import it
        ("mapper-framework", "which is already a module here"),  # the SDK itself
        ("json", "which is already a module here"),  # the standard library
        ("tests", "which the project already has as a folder"),
    ],
)
def test_bad_names_are_refused_and_nothing_is_written(tmp_path: Path, name: str, rule: str) -> None:
    result = mapper("new", name, "--no-input", "--output", str(tmp_path / "out"))
    assert result.returncode == 1
    assert rule in result.stderr and result.stderr.startswith("error: ")
    assert list(tmp_path.iterdir()) == []


def test_bad_protocol_existing_folder_and_unknown_template(tmp_path: Path) -> None:
    bad = mapper("new", "good-name", "--protocol", "Mod Bus", "--no-input", "--output", str(tmp_path / "a"))
    assert bad.returncode == 1 and "protocol 'Mod Bus': expected lower-case letters" in bad.stderr

    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    taken = mapper("new", "good-name", "--no-input", "--output", str(target))
    assert taken.returncode == 1 and "already exists. Hint: --force replaces it" in taken.stderr
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    forced = mapper("new", "good-name", "--no-input", "--output", str(target), "--force")
    assert forced.returncode == 0 and not (target / "keep.txt").exists() and (target / "good_name").is_dir()

    unknown = mapper("new", "good-name", "--no-input", "--template", str(tmp_path / "nope"), "-o", str(tmp_path / "b"))
    assert unknown.returncode == 1 and "is not a template (no template.yaml)" in unknown.stderr
    assert not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left behind


def test_prompts_list_templates_stream_and_a_team_template(tmp_path: Path) -> None:
    listed = mapper("new", "--list-templates")
    assert listed.returncode == 0 and listed.stdout.startswith("mapper ")

    prompted = mapper("new", "--output", str(tmp_path / "p"), "--with-stream", stdin="thermo-mapper\nthermo\nAda\n")
    assert prompted.returncode == 0, prompted.stderr
    assert 'authors = [{ name = "Ada" }]' in (tmp_path / "p" / "pyproject.toml").read_text()
    model = yaml.safe_load((tmp_path / "p" / "crds" / "model.yaml").read_text())
    assert model["spec"]["protocol"] == "thermo"
    assert [p["type"] for p in model["spec"]["properties"]][-1] == "STREAM"

    team = tmp_path / "team-template"
    (team / "{{ package }}").mkdir(parents=True)
    (team / "template.yaml").write_text("description: ours\n")
    (team / "{{ package }}" / "NOTES.md.j2").write_text("{{ name }} speaks {{ protocol }}\n")
    own = mapper("new", "team-mapper", "--no-input", "--template", str(team), "-o", str(tmp_path / "t"))
    assert own.returncode == 0, own.stderr
    assert (tmp_path / "t" / "team_mapper" / "NOTES.md").read_text() == "team-mapper speaks team\n"


def test_force_never_removes_the_folder_you_are_in_nor_a_file(tmp_path: Path) -> None:
    here = tmp_path / "work" / "project"
    here.mkdir(parents=True)
    (here / "notes.txt").write_text("mine")
    for output in (".", "..", str(here)):
        result = mapper("new", "foo-mapper", "--no-input", "--output", output, "--force", cwd=here)
        assert result.returncode == 1, result.stdout
        assert "is (or holds) the folder you are in" in result.stderr and "Traceback" not in result.stderr
    assert [p.name for p in here.iterdir()] == ["notes.txt"]

    (here / "afile").write_text("")
    for output, said in (("afile", "exists and is not a folder"), ("afile/sub", "is a file, not a folder")):
        result = mapper("new", "foo-mapper", "--no-input", "--output", output, "--force", cwd=here)
        assert result.returncode == 1 and said in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert sorted(p.name for p in here.iterdir()) == ["afile", "notes.txt"]


def test_the_project_folder_has_the_usual_permissions(tmp_path: Path) -> None:
    made = mapper("new", "perm-mapper", "--no-input", "--output", str(tmp_path / "p"))
    assert made.returncode == 0, made.stderr
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "p").stat().st_mode & 0o777 == 0o777 & ~mask


def test_the_generated_readme_quick_start_shows_twins(tmp_path: Path) -> None:
    """The two commands the generated README gives (and `mapper new` prints), run as written in the project."""
    project = tmp_path / "quick-mapper"
    made = mapper("new", "quick-mapper", "--no-input", "--output", str(project))
    assert made.returncode == 0, made.stderr
    block = (project / "README.md").read_text().split("```sh\n", 1)[1].split("```", 1)[0]
    up_line = next(line for line in block.splitlines() if line.startswith("mapper up"))
    run_line = next(line for line in block.splitlines() if line.startswith("mapper run"))
    assert run_line in made.stdout  # the printed next step is the README's
    env = {**os.environ, "PYTHONPATH": str(project)}
    me = [sys.executable, "-m", "mapper_cli.main"]
    up = subprocess.Popen([*me, *up_line.rstrip(" &").split()[1:]], cwd=project, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    run = subprocess.Popen([*me, *run_line.split()[1:]], cwd=project, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 40
        seen = ""
        while time.monotonic() < deadline:
            got = mapper("get", "devicestatus", "quick-mapper-device", "-o", "json", cwd=project)
            seen = got.stdout + got.stderr
            if got.returncode == 0 and json.loads(got.stdout)["status"].get("twins"):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no twins after 40 s: {seen}")
    finally:
        for proc in (run, up):
            proc.send_signal(signal.SIGINT)
        for proc in (run, up):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
