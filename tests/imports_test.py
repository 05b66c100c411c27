"""fcn_jax has no import cycle, counting imports inside functions too (a
lazy import only hides a cycle: ``readers._common`` <-> ``caffemodel`` was
one)."""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]


def _module_graph():
  files = {}
  for path in (REPO / "fcn_jax").rglob("*.py"):
    parts = path.relative_to(REPO).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    files[".".join(parts)] = path

  def owner(name):  # The fcn_jax module that ``name`` is or is in.
    while name and name not in files:
      name = name.rpartition(".")[0]
    return name or None

  graph = {}
  for module, path in files.items():
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        deps |= {owner(a.name) for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and (
          node.module or "").startswith("fcn_jax"):
        deps |= {owner(f"{node.module}.{a.name}") for a in node.names}
    graph[module] = deps - {None, module}
  return graph


def _cycles(graph):
  """Strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def test_the_cycle_finder_finds_a_cycle():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
      ["a", "b", "c"]]


def test_fcn_jax_has_no_import_cycle():
  graph = _module_graph()
  assert "fcn_jax.readers._common" in graph  # The walk found the package.
  assert _cycles(graph) == []
