"""Launch files: they compile, declare the documented arguments with descriptions, and name
executables, packages and config files that exist (``launch`` itself is not installable here)."""

from __future__ import annotations

import ast
import pathlib
import py_compile
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAUNCH = sorted((ROOT / "launch").glob("*.launch.py"))
REQUIRED = {
    "controller.launch.py": {"params_file", "model", "namespace", "use_sim_time", "autostart"},
    "sim.launch.py": {"robot", "params_file", "model", "namespace", "autostart"},
    "gazebo.launch.py": {"world", "params_file", "model", "namespace", "autostart"},
}


def declared_args(tree: ast.AST) -> dict[str, ast.Call]:
    out: dict[str, ast.Call] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
            assert isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
            out[node.args[0].value] = node
    return out


def kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_all_launch_files_present() -> None:
    assert {p.name for p in LAUNCH} == set(REQUIRED)


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_launch_file(path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    py_compile.compile(str(path), cfile=str(tmp_path / "x.pyc"), doraise=True)
    tree = ast.parse(path.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    args = declared_args(tree)
    assert REQUIRED[path.name] <= set(args), f"missing launch arguments {REQUIRED[path.name] - set(args)}"
    for name, call in args.items():
        d = kw(call, "description")
        assert isinstance(d, ast.Constant) and len(str(d.value)) > 10, f"{name}: needs a description"
        assert kw(call, "default_value") is not None or name == "model", f"{name}: needs a default"
    # every LaunchConfiguration used is declared here
    configs = [
        n.args[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "LaunchConfiguration"
    ]
    assert all(isinstance(a, ast.Constant) for a in configs), "LaunchConfiguration names must be literals"
    used = {a.value for a in configs if isinstance(a, ast.Constant)}
    assert used <= set(args), f"undeclared launch arguments {used - set(args)}"
    # our executables exist and are installed to lib/lnn_control by CMake
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) in ("Node", "LifecycleNode"):
            pkg, exe = kw(n, "package"), kw(n, "executable")
            assert isinstance(pkg, ast.Constant) and isinstance(exe, ast.Constant)
            if pkg.value == "lnn_control":
                assert isinstance(exe.value, str)
                assert (ROOT / "scripts" / exe.value).is_file()
                assert f"scripts/{exe.value}" in cmake
    # default config / launch files named in os.path.join(share, "<dir>", "<file>") exist in the repo
    src = path.read_text()
    for d, f in re.findall(r'os\.path\.join\(share, "(config|launch)", "([^"]+)"\)', src):
        assert (ROOT / d / f).is_file(), f"{d}/{f} referenced by {path.name} does not exist"
    assert re.search(r"install\(DIRECTORY launch config", cmake)


def test_controller_launch_drives_lifecycle() -> None:
    src = (ROOT / "launch" / "controller.launch.py").read_text()
    # configure on start, activate on reaching 'inactive', both only with autostart
    assert "TRANSITION_CONFIGURE" in src and "TRANSITION_ACTIVATE" in src
    assert 'goal_state="inactive"' in src and src.count("IfCondition(autostart)") == 2
    assert 'name="lnn_controller"' in src  # params file section name
