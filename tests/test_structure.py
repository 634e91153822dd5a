"""The package's shape: no import circle, no oversized module, and the
backbone's input range passed explicitly wherever it matters."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "quickdraw"
MAX_LINES = 550


def _modules() -> dict[str, pathlib.Path]:
  """{dotted name: file} for every module of the package."""
  modules = {}
  for path in PACKAGE.rglob("*.py"):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts.pop()
    modules[".".join(parts)] = path
  return modules


def _imports(name: str, path: pathlib.Path, modules) -> set[str]:
  """The package's modules that `name` imports anywhere in its file: at the
  top, inside functions (lazy imports) and under `if` blocks alike."""
  found = set()
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.rsplit(".", node.level - 1)[0]
        base = f"{anchor}.{base}" if base else anchor
      # `from a import b` imports the module a.b when there is one.
      targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules
                 else base for alias in node.names]
    else:
      continue
    found.update(t for t in targets if t in modules and t != name)
  return found


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import circle in `graph`, as the modules around it, or None."""
  state = {}  # 1: on the current path, 2: done

  def visit(module, path):
    state[module] = 1
    for child in sorted(graph[module]):
      if state.get(child) == 1:
        return path[path.index(child):] + [child]
      if child not in state:
        found = visit(child, path + [child])
        if found:
          return found
    state[module] = 2
    return None

  for module in sorted(graph):
    if module not in state:
      found = visit(module, [module])
      if found:
        return found
  return None


def test_the_scan_finds_a_circle():
  assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _circle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_circle_lazy_imports_included():
  modules = _modules()
  graph = {name: _imports(name, path, modules)
           for name, path in modules.items()}
  assert "quickdraw.training" in graph  # the scan sees the package
  assert "quickdraw.losses" in graph["quickdraw.inference"]  # and lazy ones
  circle = _circle(graph)
  assert circle is None, " -> ".join(circle)


def test_training_and_the_app_side_do_not_import_the_export_flow():
  modules = _modules()
  graph = {name: _imports(name, path, modules)
           for name, path in modules.items()}

  def reach(start):
    seen, todo = set(), [start]
    while todo:
      for child in graph[todo.pop()] - seen:
        seen.add(child)
        todo.append(child)
    return seen

  heavy = {"quickdraw.export.flow", "quickdraw.export.convert",
           "quickdraw.training"}
  assert not reach("quickdraw.training") & heavy
  for light in ("quickdraw.cli.predict", "quickdraw.cli.demo",
                "quickdraw.inference"):
    assert not reach(light) & heavy, light


def test_no_module_is_oversized():
  sizes = {name: len(path.read_text().splitlines())
           for name, path in _modules().items()}
  assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}


def _defaults(function: ast.FunctionDef) -> dict[str, ast.expr | None]:
  args = function.args
  positional = args.posonlyargs + args.args
  defaults = dict(zip([a.arg for a in positional][
      len(positional) - len(args.defaults):], args.defaults))
  defaults.update((a.arg, d) for a, d in zip(args.kwonlyargs,
                                             args.kw_defaults) if d)
  return defaults


def test_the_input_range_is_a_required_keyword_outside_preprocessing():
  """A default range would silently mis-scale the families that take
  0..255 (V3, EfficientNet): callers must say which range they mean."""
  offenders = []
  for module, path in _modules().items():
    if module == "quickdraw.preprocessing":
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        positional = [a.arg for a in node.args.posonlyargs + node.args.args]
        if "value_range" in positional or "value_range" in _defaults(node):
          offenders.append(f"{module}.{node.name}")
  assert offenders == []


def test_the_suites_work_units_keep_module_fixtures_together():
  """conftest.MODULE_UNITS names every test module with a module-scoped
  fixture, so that xdist builds each such fixture on one worker, once."""
  from conftest import FAMILY_UNITS, MODULE_UNITS
  tests = pathlib.Path(__file__).resolve().parent
  with_module_fixtures = set()
  for path in tests.glob("test_*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if (isinstance(node, ast.keyword) and node.arg == "scope"
          and isinstance(node.value, ast.Constant)
          and node.value.value == "module"):
        with_module_fixtures.add(path.name)
  # test_families' module fixture is per family: a unit per family.
  assert with_module_fixtures - {"test_families.py"} == set(MODULE_UNITS)
  from test_families import FAMILIES
  assert set(FAMILIES) == set(FAMILY_UNITS)
