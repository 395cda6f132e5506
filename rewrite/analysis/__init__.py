"""Analysis: parse once with PostgreSQL's own grammar and find every relation reference.

What it does: splits SQL text into statements (pglast), resolves each relation
name as PostgreSQL would (case folding and quoting are already done by the
parser; schema- and database-qualified names; a pinned search_path; CTE names
shadowing tables and the reverse) and records where each reference sits in the
tree, so the engine can replace it. It also lists node types it does not know,
so a statement touching a governed table fails closed on them.

What it must not touch: policies, SQL generation, the database, ``proxy``.
"""
from .parse import ParseFailure, parse_statements, print_node, print_spliced, reparse_check
from .refs import Analysis, RelationRef, analyze

__all__ = ["ParseFailure", "parse_statements", "print_node", "print_spliced", "reparse_check", "Analysis", "RelationRef", "analyze"]
