"""SQL generation: policy views substituted for governed tables, as pglast trees.

What it does: for one parsed statement and the decisions of its relations,
runs small passes in a fixed order (passes.py): govern, fence proof, qualify,
substitute policy views (view.py: masks.py, filters.py, keys.py,
templates.py), seal with OFFSET 0. Every node is built with build.py; no SQL
text is ever formatted from values.

What it must not touch: the policy model (it receives TableDecision objects),
the database, sockets, ``proxy``.
"""
